//! The disk tier: one file per cached object under the cache directory,
//! bounded in bytes with least-recently-used eviction.
//!
//! A file is `<dir>/<2 hex>/<32 hex>`, named by the SHA-256 of the key, and
//! holds a header, the key, the ETag and the content. The header carries a
//! CRC-32 of itself (with key and ETag) and one of the content; a file that
//! fails either, or whose length is wrong, is deleted and read as a miss.
//! Files are written to a temp name and renamed, so a crash leaves a whole
//! file or a temp that the next start sweeps. On start the directory is
//! scanned (oldest first by mtime) and the budget enforced again. An `flock`
//! on `<dir>/.lock` keeps two OS processes from sharing one directory.
//!
//! Here: the tier, its reads and its budget; `file` is the format of one
//! file, `index` the sizes and order of use, `stage` the writes.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use rustix::fs::FlockOperation;

use super::memory::Counters;
use crate::error::StoreError;
use crate::object::BodyBuf;
use crate::object::ObjectMeta;

mod file;
mod index;
mod stage;

use file::{name_of, read_checked, read_header, HEADER_LEN};
use index::{scan, Index};
pub use stage::{Staged, StreamStage};
// The fuzz target reads cache files through this.
pub use file::parse_cache_file;

const TEMP_PREFIX: &str = ".tmp-";
/// An object above this share of the budget is not cached on disk.
const MAX_ENTRY_SHARE: u64 = 4;

type Name = [u8; 16];

/// The disk tier of one cache directory.
pub struct DiskTier {
    dir: PathBuf,
    capacity: u64,
    /// The largest object stored (`cache_disk_max_object_bytes`); never
    /// more than a quarter of the budget.
    max_object: u64,
    /// Copies older than this (ms) are revalidated before they are served.
    fresh_for_ms: std::sync::atomic::AtomicU64,
    index: Mutex<Index>,
    _lock: File,
    pub counters: Counters,
    /// Files dropped because they failed a check.
    pub corrupt: std::sync::atomic::AtomicU64,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<DiskTier>>> {
    static REG: OnceLock<Mutex<HashMap<PathBuf, Weak<DiskTier>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

impl DiskTier {
    /// Opens the tier at `dir`. One directory serves one live tier per VM
    /// (and per machine, by the lock file): two caches over one directory
    /// would not see each other's invalidations.
    pub fn open(dir: &Path, capacity: u64, max_object: u64) -> Result<Arc<DiskTier>, StoreError> {
        if !dir.is_absolute() {
            return Err(StoreError::InvalidConfig(
                "cache_disk_path",
                format!("must be an absolute path, got {dir:?}"),
            ));
        }
        fs::create_dir_all(dir)?;
        let dir = fs::canonicalize(dir)?;
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|_, w| w.strong_count() > 0);
        if reg.contains_key(&dir) {
            return Err(StoreError::InvalidConfig(
                "cache_disk_path",
                format!("{dir:?} is in use by a tiered store with other settings"),
            ));
        }
        let lock = File::create(dir.join(".lock"))?;
        // A tier of this process that is being dropped on another thread
        // may still hold the lock for a moment: wait a little for it.
        let mut tries = 0;
        while rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            tries += 1;
            if tries > 100 {
                return Err(StoreError::InvalidConfig(
                    "cache_disk_path",
                    format!("{dir:?} is in use by another OS process"),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let tier = Arc::new(DiskTier {
            index: Mutex::new(scan(&dir)?),
            dir: dir.clone(),
            capacity,
            max_object,
            fresh_for_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            _lock: lock,
            counters: Counters::default(),
            corrupt: Default::default(),
        });
        tier.enforce_budget();
        reg.insert(dir, Arc::downgrade(&tier));
        Ok(tier)
    }

    /// The byte budget.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn path_of(&self, name: &Name) -> PathBuf {
        let hex = hex::encode(name);
        self.dir.join(&hex[..2]).join(hex)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads and checks the cached object, counting a hit or a miss.
    pub fn get(&self, key: &str) -> Option<(Bytes, ObjectMeta)> {
        let mut buf = Vec::new();
        let meta = self.read_into(key, &mut buf, true, false)?;
        Some((Bytes::from(buf), meta))
    }

    /// Like `get`, but a miss is not counted (a re-check, not a read).
    pub fn probe(&self, key: &str) -> Option<(Bytes, ObjectMeta)> {
        let mut buf = Vec::new();
        let meta = self.read_into(key, &mut buf, false, false)?;
        Some((Bytes::from(buf), meta))
    }

    /// Like `probe`, also when the copy is due for revalidation.
    pub fn probe_any(&self, key: &str) -> Option<(Bytes, ObjectMeta)> {
        let mut buf = Vec::new();
        let meta = self.read_into(key, &mut buf, false, true)?;
        Some((Bytes::from(buf), meta))
    }

    /// Reads and checks the cached object straight into `buf` (a BEAM binary
    /// in the NIF layer, so the content is never copied), counting a hit or
    /// a miss.
    pub fn get_into<B: BodyBuf + ?Sized>(&self, key: &str, buf: &mut B) -> Option<ObjectMeta> {
        self.read_into(key, buf, true, false)
    }

    /// Copies older than `ms` (by their file's mtime) are not served until
    /// revalidated.
    pub fn set_freshness(&self, ms: u64) {
        self.fresh_for_ms.store(ms, Ordering::Relaxed);
    }

    fn fresh(&self, f: &File) -> bool {
        let limit = self.fresh_for_ms.load(Ordering::Relaxed);
        if limit == u64::MAX {
            return true;
        }
        let age = f
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .map_or(0, |d| d.as_millis() as u64);
        age < limit
    }

    /// Marks the copy of `key` as just revalidated (its mtime is its age).
    pub fn touch_fresh(&self, key: &str) {
        let path = self.path_of(&name_of(key));
        if let Ok(f) = File::options().write(true).open(path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    fn read_into<B: BodyBuf + ?Sized>(
        &self,
        key: &str,
        buf: &mut B,
        count_miss: bool,
        allow_stale: bool,
    ) -> Option<ObjectMeta> {
        let name = name_of(key);
        let checked = match File::open(self.path_of(&name)) {
            Ok(f) if !allow_stale && !self.fresh(&f) => None,
            Ok(mut f) => {
                let checked = read_checked(&mut f, key, buf);
                if checked.is_none() {
                    self.drop_corrupt(&name);
                }
                checked
            }
            Err(_) => {
                self.forget(&name);
                None
            }
        };
        match &checked {
            Some(_) => {
                self.touch(&name);
                self.counters.hit();
            }
            None if count_miss => self.counters.miss(),
            None => {}
        }
        checked
    }

    /// The metadata of a cached object: its header is checked, its content not read.
    pub fn head(&self, key: &str) -> Option<ObjectMeta> {
        let name = name_of(key);
        let mut f = File::open(self.path_of(&name)).ok()?;
        if !self.fresh(&f) {
            return None;
        }
        let file_len = f.metadata().ok()?.len();
        let parsed = read_header(&mut f, file_len, key).map(|(_, meta)| meta);
        if parsed.is_none() {
            self.drop_corrupt(&name);
        }
        parsed
    }

    /// Opens a cached object for reading in chunks: the file, where its
    /// content starts, its metadata and the content's CRC-32 (checked by
    /// the reader at the end; see `drop_key`). The header is checked here.
    pub fn open_body(&self, key: &str) -> Option<(File, u64, ObjectMeta, u32)> {
        let name = name_of(key);
        let mut f = File::open(self.path_of(&name)).ok()?;
        if !self.fresh(&f) {
            return None;
        }
        let file_len = f.metadata().ok()?.len();
        let parsed = read_header(&mut f, file_len, key)
            .map(|(h, meta)| (HEADER_LEN + h.key_len + h.etag_len, meta, h.body_crc));
        match parsed {
            Some((offset, meta, crc)) => {
                self.touch(&name);
                self.counters.hit();
                Some((f, offset as u64, meta, crc))
            }
            None => {
                self.drop_corrupt(&name);
                None
            }
        }
    }

    /// The cached file of `key`, for sending as it is (sendfile): a hard
    /// link to the very file whose content was just checked against its
    /// CRC-32, so neither a replacement nor an eviction of the entry can
    /// change what is sent. Returns the link, where the content starts and
    /// the metadata; the caller removes the link (a tier opened later
    /// sweeps any left behind). Blocking file I/O.
    pub fn link_for_sending(&self, key: &str) -> Option<(PathBuf, u64, ObjectMeta)> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::fd::AsRawFd;

        let (mut file, offset, meta, crc) = self.open_body(key)?;
        file.seek(SeekFrom::Start(offset)).ok()?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hasher.finalize() != crc {
            self.drop_key(key);
            return None;
        }
        let links = self.dir.join(".sendfile");
        fs::create_dir_all(&links).ok()?;
        let link = links.join(format!("{TEMP_PREFIX}send-{:016x}", rand::random::<u64>()));
        // Linking the open descriptor (not the path) names the file checked.
        let source = format!("/proc/self/fd/{}", file.as_raw_fd());
        rustix::fs::linkat(
            rustix::fs::CWD,
            source.as_str(),
            rustix::fs::CWD,
            &link,
            rustix::fs::AtFlags::SYMLINK_FOLLOW,
        )
        .ok()?;
        Some((link, offset, meta))
    }

    /// Drops the copy of `key` as corrupt (a streamed read found a bad CRC).
    pub fn drop_key(&self, key: &str) {
        self.drop_corrupt(&name_of(key));
    }

    /// Writes, reads back and removes a probe file in the cache directory.
    pub fn health(&self) -> Result<(), StoreError> {
        let path = self
            .dir
            .join(format!(".micelio-health-{:016x}", rand::random::<u64>()));
        let io = |e: std::io::Error| StoreError::Io(e.raw_os_error().unwrap_or(5));
        let probe = b"micelio disk tier health probe";
        fs::write(&path, probe).map_err(io)?;
        let read = fs::read(&path).map_err(io);
        let _ = fs::remove_file(&path);
        if read? == probe {
            Ok(())
        } else {
            Err(StoreError::Corrupt)
        }
    }

    /// Deletes the cached copy of `key`.
    pub fn remove(&self, key: &str) {
        let name = name_of(key);
        let _ = fs::remove_file(self.path_of(&name));
        self.forget(&name);
    }

    /// Deletes every cached object.
    pub fn clear(&self) {
        let names: Vec<Name> = self.index().entries.keys().copied().collect();
        for name in names {
            let _ = fs::remove_file(self.path_of(&name));
            self.forget(&name);
        }
    }

    /// Bytes the tier holds now, by its index.
    pub fn bytes(&self) -> u64 {
        self.index().bytes
    }

    /// Entries the tier holds now.
    pub fn entries(&self) -> u64 {
        self.index().entries.len() as u64
    }

    fn touch(&self, name: &Name) {
        let mut idx = self.index();
        if let Some((size, _)) = idx.remove(name) {
            idx.insert(*name, size);
        }
    }

    fn forget(&self, name: &Name) {
        self.index().remove(name);
    }

    fn drop_corrupt(&self, name: &Name) {
        let _ = fs::remove_file(self.path_of(name));
        self.forget(name);
        self.corrupt.fetch_add(1, Ordering::Relaxed);
    }

    fn enforce_budget(&self) {
        loop {
            let victim = {
                let mut idx = self.index();
                if idx.bytes <= self.capacity {
                    break;
                }
                let Some((_, name)) = idx.order.pop_first() else {
                    break;
                };
                let (size, _) = idx.entries.remove(&name).expect("index in step");
                idx.bytes -= size;
                name
            };
            let _ = fs::remove_file(self.path_of(&victim));
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::file::tests::meta;
    use super::*;

    fn put(tier: &DiskTier, key: &str, body: &[u8]) {
        let staged = tier.stage(key, body, &meta(body.len())).expect("staged");
        tier.commit(staged);
    }

    #[test]
    fn round_trip_and_head() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20, u64::MAX).unwrap();
        put(&tier, "a/b.txt", b"hello");
        let (body, m) = tier.get("a/b.txt").unwrap();
        assert_eq!(&body[..], b"hello");
        assert_eq!(m, meta(5));
        assert_eq!(tier.head("a/b.txt"), Some(meta(5)));
        let mut buf = Vec::new();
        assert_eq!(tier.get_into("a/b.txt", &mut buf), Some(meta(5)));
        assert_eq!(buf, b"hello");
        assert!(tier.get("other").is_none());
        tier.remove("a/b.txt");
        assert!(tier.get("a/b.txt").is_none());
        assert_eq!(tier.bytes(), 0);
    }

    #[test]
    fn corrupted_and_truncated_files_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20, u64::MAX).unwrap();
        put(&tier, "k1", &[7u8; 1000]);
        put(&tier, "k2", &[8u8; 1000]);
        let p1 = tier.path_of(&name_of("k1"));
        let mut bytes = fs::read(&p1).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&p1, bytes).unwrap();
        let p2 = tier.path_of(&name_of("k2"));
        let len = fs::metadata(&p2).unwrap().len();
        File::options()
            .write(true)
            .open(&p2)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        assert!(tier.get_into("k1", &mut Vec::new()).is_none());
        assert!(tier.head("k2").is_none());
        assert!(!p1.exists() && !p2.exists());
        assert_eq!(tier.corrupt.load(Ordering::Relaxed), 2);
        assert_eq!(tier.bytes(), 0);
    }

    #[test]
    fn budget_holds_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 64 * 1024;
        {
            let tier = DiskTier::open(dir.path(), cap, u64::MAX).unwrap();
            for i in 0..200 {
                put(
                    &tier,
                    &format!("k{i}"),
                    &vec![i as u8; 100 + (i * 37) % 4000],
                );
                assert!(tier.bytes() <= cap);
            }
            assert!(tier.counters.evictions.load(Ordering::Relaxed) > 0);
            // File times are coarse: leave a gap so "newest" is newest by mtime.
            std::thread::sleep(std::time::Duration::from_millis(50));
            put(&tier, "newest", b"n");
        }
        // A smaller budget after a restart is enforced on open.
        let tier = DiskTier::open(dir.path(), cap / 4, u64::MAX).unwrap();
        assert!(tier.bytes() <= cap / 4);
        assert!(tier.entries() > 0);
        assert!(tier.get("newest").is_some(), "the newest entry survives");
        let on_disk: u64 = walk(dir.path());
        assert_eq!(on_disk, tier.bytes());
    }

    fn walk(dir: &Path) -> u64 {
        let mut total = 0;
        for sub in fs::read_dir(dir).unwrap().flatten() {
            if sub.file_type().unwrap().is_dir() {
                for f in fs::read_dir(sub.path()).unwrap().flatten() {
                    total += f.metadata().unwrap().len();
                }
            }
        }
        total
    }
}
