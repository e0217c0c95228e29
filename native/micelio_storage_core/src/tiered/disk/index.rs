//! The disk tier's index: which files it holds, their sizes, and their
//! order of last use (for eviction), rebuilt from the directory on start.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Name, TEMP_PREFIX};
use crate::error::StoreError;

/// Files by name, with their size and last-use tick, and the total.
pub(super) struct Index {
    pub(super) entries: HashMap<Name, (u64, u64)>,
    pub(super) order: BTreeMap<u64, Name>,
    pub(super) bytes: u64,
    tick: u64,
}

impl Index {
    pub(super) fn insert(&mut self, name: Name, size: u64) {
        self.tick += 1;
        self.entries.insert(name, (size, self.tick));
        self.order.insert(self.tick, name);
        self.bytes += size;
    }

    pub(super) fn remove(&mut self, name: &Name) -> Option<(u64, u64)> {
        let (size, tick) = self.entries.remove(name)?;
        self.order.remove(&tick);
        self.bytes -= size;
        Some((size, tick))
    }
}

/// Builds the index from the files present, oldest first; sweeps temp files.
pub(super) fn scan(dir: &Path) -> Result<Index, StoreError> {
    let mut found: Vec<(i128, Name, u64)> = Vec::new();
    for sub in fs::read_dir(dir)?.flatten() {
        let sub_path = sub.path();
        if !sub.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        for file in fs::read_dir(&sub_path)?.flatten() {
            let fname = file.file_name();
            let fname = fname.to_string_lossy();
            if fname.starts_with(TEMP_PREFIX) {
                let _ = fs::remove_file(file.path());
                continue;
            }
            let mut name = [0u8; 16];
            if fname.len() != 32 || hex::decode_to_slice(fname.as_bytes(), &mut name).is_err() {
                continue;
            }
            if let Ok(md) = file.metadata() {
                let mtime = md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128;
                found.push((mtime, name, md.len()));
            }
        }
    }
    found.sort();
    let mut idx = Index {
        entries: HashMap::new(),
        order: BTreeMap::new(),
        bytes: 0,
        tick: 0,
    };
    for (_, name, size) in found {
        idx.insert(name, size);
    }
    Ok(idx)
}
