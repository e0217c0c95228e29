//! Writing into the disk tier: an object goes to a temp file (whole, or
//! chunk by chunk as a download streams), and `commit` renames it into
//! place, so readers see a whole file or none.

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

use super::file::{encode_header, name_of, tag_field, HEADER_LEN};
use super::{DiskTier, Name, MAX_ENTRY_SHARE, TEMP_PREFIX};
use crate::object::ObjectMeta;

/// A cache file being written chunk by chunk; removed unless finished.
pub struct StreamStage {
    file: File,
    key: String,
    meta: ObjectMeta,
    crc: crc32fast::Hasher,
    written: u64,
    staged: Option<Staged>,
}

impl StreamStage {
    /// Appends a chunk; false (and the stage is void) when it fails or runs
    /// past the announced size.
    pub fn write(&mut self, chunk: &[u8]) -> bool {
        if self.staged.is_none()
            || self.written + chunk.len() as u64 > self.meta.size
            || self.file.write_all(chunk).is_err()
        {
            self.void();
            return false;
        }
        self.crc.update(chunk);
        self.written += chunk.len() as u64;
        true
    }

    /// Writes the real header once the whole body is in; `None` when the
    /// body fell short or a write failed.
    pub fn finish(mut self) -> Option<Staged> {
        if self.written != self.meta.size {
            return None;
        }
        let crc = self.crc.clone().finalize();
        let header = encode_header(&self.key, crc, self.written, &self.meta);
        use std::os::unix::fs::FileExt;
        if self.file.write_all_at(&header, 0).is_err() {
            return None;
        }
        self.staged.take()
    }
}

impl StreamStage {
    fn void(&mut self) {
        if let Some(staged) = self.staged.take() {
            let _ = fs::remove_file(&staged.temp);
        }
    }
}

impl Drop for StreamStage {
    fn drop(&mut self) {
        self.void();
    }
}

/// A written temp file, renamed into place by `commit`.
pub struct Staged {
    temp: PathBuf,
    name: Name,
    size: u64,
}

impl DiskTier {
    /// Writes the object to a temp file; `commit` makes it visible.
    /// Returns `None` when it is too big for this tier or the write fails.
    pub fn stage(&self, key: &str, body: &[u8], meta: &ObjectMeta) -> Option<Staged> {
        let mut meta = meta.clone();
        meta.size = body.len() as u64;
        let mut writer = self.stage_stream(key, &meta)?;
        writer.write(body).then_some(())?;
        writer.finish()
    }

    /// True when an object of `size` bytes may be cached here.
    pub fn accepts(&self, size: u64) -> bool {
        size <= self.max_object && size <= self.capacity / MAX_ENTRY_SHARE
    }

    /// Starts writing an object of `meta.size` bytes chunk by chunk (a
    /// download filling the tier as it streams); `None` when it is too big
    /// for this tier. `StreamStage::finish` gives what `commit` takes.
    pub fn stage_stream(&self, key: &str, meta: &ObjectMeta) -> Option<StreamStage> {
        let size = (HEADER_LEN + key.len() + tag_field(meta).len()) as u64 + meta.size;
        if !self.accepts(meta.size) || size > self.capacity / MAX_ENTRY_SHARE {
            return None;
        }
        let name = name_of(key);
        let final_path = self.path_of(&name);
        let parent = final_path.parent().expect("a cache file has a parent");
        fs::create_dir_all(parent).ok()?;
        let temp = parent.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
        let header = encode_header(key, 0, meta.size, meta);
        let file = File::create_new(&temp).and_then(|mut f| {
            // A placeholder header: the CRCs are known once the body is.
            f.write_all(&header)?;
            Ok(f)
        });
        match file {
            Ok(file) => Some(StreamStage {
                file,
                key: key.to_string(),
                meta: meta.clone(),
                crc: crc32fast::Hasher::new(),
                written: 0,
                staged: Some(Staged { temp, name, size }),
            }),
            Err(_) => {
                let _ = fs::remove_file(&temp);
                None
            }
        }
    }

    /// Renames a staged file into place and evicts down to the budget.
    pub fn commit(&self, staged: Staged) {
        if fs::rename(&staged.temp, self.path_of(&staged.name)).is_err() {
            let _ = fs::remove_file(&staged.temp);
            return;
        }
        {
            let mut idx = self.index();
            idx.remove(&staged.name);
            idx.insert(staged.name, staged.size);
        }
        self.enforce_budget();
    }

    /// Throws a staged file away.
    pub fn discard(&self, staged: Staged) {
        let _ = fs::remove_file(&staged.temp);
    }
}
