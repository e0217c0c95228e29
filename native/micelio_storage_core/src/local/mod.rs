//! The local filesystem backend: keys are relative paths under a root directory.
//!
//! Safety rests on three rules:
//! - every path is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//!   from a descriptor of the root, so nothing outside the root is reachable,
//!   not even through a symlink placed inside it (`beneath`);
//! - content is written to a temp file in the target directory and renamed
//!   over the key, so readers see the old or the new file, never a partial one;
//! - mutations take an `flock` on the parent directory, so a conditional put
//!   checks and replaces as one step, across threads and OS processes.

use std::ffi::OsStr;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use rustix::fs::{self as rfs, AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::attributes::Attributes;
use crate::error::StoreError;
use crate::key::{Key, Prefix, TEMP_PREFIX};
use crate::object::{Body, BodyBuf, Deadline, Object, ObjectMeta};
use crate::store::{
    offload, ByteRange, CopyOptions, DeleteManyOutcome, DeleteOptions, GetOptions, HeadOptions,
    Level, ListOptions, Page, PageOptions, PutCondition, PutOptions, Store, HEALTH_PROBE,
};
use crate::transfer::{self, ByteSource, ByteStream, DestFile, FileSource, Transfer};

mod beneath;
mod list;
mod stage;
mod store;
mod sweep;
mod xattr;

use list::*;
pub use stage::Staged;
use stage::*;
pub use sweep::STALE_TEMP_AGE;
use sweep::*;
use xattr::*;

/// The extended attribute holding an object's content type, headers and
/// metadata (`Attributes::encode`). Set on the temp file before the rename,
/// so it changes atomically with the content and survives restarts.
const ATTRIBUTES_XATTR: &str = "user.micelio.attributes";

/// I/O is done in chunks of this size so a deadline is checked between them.
const CHUNK: usize = 1 << 20;

/// How often a put retries when a concurrent delete pruned its directory.
const PRUNE_RETRIES: usize = 16;

/// A store rooted at one directory. Cheap to clone: clones share the root.
#[derive(Debug, Clone)]
pub struct LocalStore(Arc<Root>);

/// The root directory and how paths under it are resolved.
#[derive(Debug)]
pub struct Root {
    root: PathBuf,
    root_fd: OwnedFd,
    use_openat2: AtomicBool,
}

impl Deref for LocalStore {
    type Target = Root;
    fn deref(&self) -> &Root {
        &self.0
    }
}

impl LocalStore {
    /// Opens (and creates, if missing) the root directory.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        if !root.is_absolute() {
            return Err(StoreError::InvalidConfig(
                "local_path",
                format!("must be an absolute path, got {root:?}"),
            ));
        }
        // A root that cannot be made is an I/O error, never `NotFound`: a
        // missing root is not a missing key.
        std::fs::create_dir_all(root)
            .map_err(|e| StoreError::Io(e.raw_os_error().unwrap_or(Errno::IO.raw_os_error())))?;
        let root_fd = rfs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // The sweep walks the whole tree: it runs in the background, so
        // opening a store costs no walk (a deep root held every caller
        // waiting for its store). Temp names are reserved, so nothing a
        // caller does races with it.
        if let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(&root_fd, 0) {
            let now = SystemTime::now();
            let _ = std::thread::Builder::new()
                .name("micelio-sweep".into())
                .spawn(move || sweep_stale_temps(&fd, now, 0));
        }
        Ok(LocalStore(Arc::new(Root {
            root: root.to_path_buf(),
            root_fd,
            use_openat2: AtomicBool::new(true),
        })))
    }

    /// Forces the portable component-by-component resolver (kernels before 5.6).
    pub fn disable_openat2(&self) {
        self.use_openat2.store(false, Ordering::Relaxed);
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads the whole object into `buf`, returning its metadata.
    pub fn get_into<B: BodyBuf + ?Sized>(
        &self,
        key: &Key,
        deadline: Deadline,
        buf: &mut B,
    ) -> Result<ObjectMeta, StoreError> {
        self.read_into(key, deadline, buf).map_err(naming(key))
    }

    /// Reads `range` of the object into `buf`; the metadata describes the
    /// whole object.
    pub fn get_range_into<B: BodyBuf + ?Sized>(
        &self,
        key: &Key,
        range: ByteRange,
        deadline: Deadline,
        buf: &mut B,
    ) -> Result<ObjectMeta, StoreError> {
        deadline.check()?;
        let fd = self.open_file(key).map_err(naming(key))?;
        let stat = regular_file_stat(&fd)?;
        let mut meta = meta_of(&stat);
        meta.attributes = read_attributes(&fd, key);
        let (start, end) = range.within(meta.size);
        buf.resize((end - start) as usize);
        let mut filled = 0usize;
        while filled < buf.bytes_mut().len() {
            let end = buf.bytes_mut().len().min(filled + CHUNK);
            let n = loop {
                match rustix::io::pread(
                    &fd,
                    &mut buf.bytes_mut()[filled..end],
                    start + filled as u64,
                ) {
                    Ok(n) => break n,
                    Err(Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            if n == 0 {
                break;
            }
            filled += n;
            deadline.check()?;
        }
        buf.resize(filled);
        Ok(meta)
    }

    fn read_into<B: BodyBuf + ?Sized>(
        &self,
        key: &Key,
        deadline: Deadline,
        buf: &mut B,
    ) -> Result<ObjectMeta, StoreError> {
        deadline.check()?;
        let fd = self.open_file(key)?;
        let stat = regular_file_stat(&fd)?;
        let mut filled = 0usize;
        buf.resize(stat.st_size as usize);
        loop {
            let cap = buf.bytes_mut().len();
            if filled == cap {
                // The file may have grown under an external writer: probe for more.
                let mut probe = [0u8; 8192];
                let n = read_retrying(&fd, &mut probe)?;
                if n == 0 {
                    break;
                }
                buf.resize(cap + n.max(cap / 2));
                buf.bytes_mut()[filled..filled + n].copy_from_slice(&probe[..n]);
                filled += n;
                continue;
            }
            let end = cap.min(filled + CHUNK);
            let n = read_retrying(&fd, &mut buf.bytes_mut()[filled..end])?;
            if n == 0 {
                break;
            }
            filled += n;
            deadline.check()?;
        }
        buf.resize(filled);
        let mut meta = meta_of(&stat);
        meta.size = filled as u64;
        meta.attributes = read_attributes(&fd, key);
        Ok(meta)
    }

    /// Reads the whole object into a new `Vec`.
    pub fn read(&self, key: &Key, deadline: Deadline) -> Result<(Vec<u8>, ObjectMeta), StoreError> {
        let mut buf = Vec::new();
        let meta = self.get_into(key, deadline, &mut buf)?;
        Ok((buf, meta))
    }

    /// Metadata without reading the content.
    pub fn stat(&self, key: &Key, deadline: Deadline) -> Result<ObjectMeta, StoreError> {
        deadline.check()?;
        // Opened for reading, the file's attributes are one fgetxattr away;
        // an O_PATH descriptor (for a file we may not read) needs a second
        // lookup through /proc, which made a head cost 1.7x a File.stat.
        // O_NONBLOCK: a FIFO planted under the root does not block the open
        // (it is then refused as not a regular file).
        let fd = match self.open_path(key.as_str(), OFlags::RDONLY | OFlags::NONBLOCK) {
            Err(StoreError::Io(code)) if code == Errno::ACCESS.raw_os_error() => {
                self.open_path(key.as_str(), OFlags::PATH)
            }
            opened => opened,
        }
        .map_err(naming(key))?;
        let mut meta = meta_of(&regular_file_stat(&fd)?);
        meta.attributes = read_attributes(&fd, key);
        Ok(meta)
    }

    /// Writes `content` atomically under `key`, honouring the put condition.
    pub fn write(
        &self,
        key: &Key,
        content: &[u8],
        opts: &PutOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        self.write_with(key, opts, deadline, &mut |fd| {
            write_all(fd, content, deadline)
        })
    }

    /// Copies `from` to `to` in the kernel where it can (`copy_file_range`):
    /// the copy is staged in a temp file and renamed, so `to` appears whole
    /// or not at all (with `if_absent`, only where nothing is).
    pub fn copy_file(
        &self,
        from: &Key,
        to: &Key,
        copy: &CopyOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        deadline.check()?;
        let source = self.open_file(from).map_err(naming(from))?;
        regular_file_stat(&source)?;
        let opts = PutOptions {
            condition: if copy.if_absent {
                PutCondition::IfNoneMatch
            } else {
                PutCondition::Always
            },
            durable: copy.durable,
            attributes: stored_attributes(&source),
        };
        self.write_with(to, &opts, deadline, &mut |fd| {
            copy_contents(&source, fd, deadline, &mut |_| {})
        })
    }

    /// Copies the file `source` (outside the root) under `key`, in the
    /// kernel where it can, atomically; `progress` hears the bytes copied.
    pub fn write_from_file(
        &self,
        key: &Key,
        source: &std::fs::File,
        opts: &PutOptions,
        deadline: Deadline,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), StoreError> {
        self.write_with(key, opts, deadline, &mut |fd| {
            copy_contents(source, fd, deadline, progress)
        })
    }

    /// Copies the object under `key` into `dest` (a file outside the root),
    /// in the kernel where it can; returns its metadata.
    pub fn read_to_file(
        &self,
        key: &Key,
        dest: &std::fs::File,
        deadline: Deadline,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ObjectMeta, StoreError> {
        deadline.check()?;
        let source = self.open_file(key).map_err(naming(key))?;
        let stat = regular_file_stat(&source)?;
        let mut meta = meta_of(&stat);
        meta.attributes = read_attributes(&source, key);
        copy_contents(&source, dest, deadline, progress)?;
        Ok(meta)
    }

    /// Opens the object for reading in chunks: the descriptor and metadata.
    fn open_for_stream(&self, key: &Key) -> Result<(OwnedFd, ObjectMeta), StoreError> {
        let fd = self.open_file(key).map_err(naming(key))?;
        let stat = regular_file_stat(&fd)?;
        let mut meta = meta_of(&stat);
        meta.attributes = read_attributes(&fd, key);
        Ok((fd, meta))
    }

    /// Stages a file written by `fill` next to `key`, then renames it over
    /// the key if the put condition holds.
    fn write_with(
        &self,
        key: &Key,
        opts: &PutOptions,
        deadline: Deadline,
        fill: &mut dyn FnMut(&OwnedFd) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        deadline.check()?;
        let staged = match self.stage(key) {
            // A parent of the key is a file ("a" for "a/b"): the key cannot
            // exist, so a put that needs it to exist with some ETag lost.
            Err(StoreError::Io(code))
                if code == Errno::NOTDIR.raw_os_error()
                    && matches!(opts.condition, PutCondition::IfMatch(_)) =>
            {
                return Err(StoreError::PreconditionFailed)
            }
            other => other?,
        };
        fill(&staged.file)?;
        staged.commit(opts)
    }

    /// Creates a temp file in the key's directory (made if missing); it
    /// becomes the object on `Staged::commit`, and is removed if dropped.
    pub fn stage(&self, key: &Key) -> Result<Staged, StoreError> {
        let (dir, name) = key.split_parent();
        let mut attempt = 0;
        loop {
            let dir_fd = self.open_dir(dir, true).map_err(naming(key))?;
            let temp = format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>());
            match rfs::openat(
                &dir_fd,
                temp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o644),
            ) {
                Ok(file) => {
                    return Ok(Staged {
                        dir_fd,
                        temp,
                        name: name.to_string(),
                        file,
                        done: false,
                        store: self.clone(),
                        dir: dir.map(str::to_string),
                    })
                }
                // The directory was pruned by a concurrent delete: make it again.
                Err(Errno::NOENT) if attempt < PRUNE_RETRIES => attempt += 1,
                Err(e) => return Err(StoreError::from_errno(e)),
            }
        }
    }

    /// Removes the key; a missing key is not an error. Empty parent
    /// directories are pruned so deleted trees leave nothing behind.
    pub fn remove(&self, key: &Key, durable: bool, deadline: Deadline) -> Result<(), StoreError> {
        deadline.check()?;
        let (dir, name) = key.split_parent();
        let dir_fd = match self.open_dir(dir, false).map_err(naming(key)) {
            Err(StoreError::NotFound) => return Ok(()),
            other => other?,
        };
        {
            let _lock = DirLock::acquire(&dir_fd)?;
            match rfs::statat(&dir_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => return Ok(()),
                Err(e) => return Err(e.into()),
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    return Ok(())
                }
                Ok(_) => {}
            }
            match rfs::unlinkat(&dir_fd, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
            if durable {
                rfs::fsync(&dir_fd)?;
            }
        }
        if let Some(dir) = dir {
            self.prune_empty_dirs(dir);
        }
        Ok(())
    }

    fn prune_empty_dirs(&self, dir: &str) {
        let mut path = dir;
        loop {
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (Some(p), n),
                None => (None, path),
            };
            let Ok(parent_fd) = self.open_dir(parent, false) else {
                return;
            };
            // Fails with ENOTEMPTY as soon as a directory still holds something.
            if rfs::unlinkat(&parent_fd, name, AtFlags::REMOVEDIR).is_err() {
                return;
            }
            match parent {
                Some(p) => path = p,
                None => return,
            }
        }
    }

    /// Every key under `prefix`, recursively, sorted; regular files only.
    pub fn keys(&self, prefix: &Prefix, deadline: Deadline) -> Result<Vec<String>, StoreError> {
        deadline.check()?;
        let (dir, partial) = prefix.split_dir();
        let dir_fd = match self.open_dir(dir, false) {
            Err(StoreError::NotFound) => return Ok(Vec::new()),
            other => other?,
        };
        let mut keys = Vec::new();
        let base = dir.map(|d| format!("{d}/")).unwrap_or_default();
        walk(dir_fd, &base, Some(partial), deadline, &mut keys)?;
        keys.sort_unstable();
        Ok(keys)
    }

    /// One page of `keys`' order after `start_after`, at most `limit` keys:
    /// a depth-first walk that reads one directory at a time and skips the
    /// subtrees that sort before `start_after`.
    pub fn page(
        &self,
        prefix: &Prefix,
        start_after: Option<&str>,
        limit: usize,
        deadline: Deadline,
    ) -> Result<Page, StoreError> {
        deadline.check()?;
        let (dir, partial) = prefix.split_dir();
        let dir_fd = match self.open_dir(dir, false) {
            Err(StoreError::NotFound) => return Ok(Page::default()),
            other => other?,
        };
        let base = dir.map(|d| format!("{d}/")).unwrap_or_default();
        let mut keys = Vec::new();
        let walk = PageWalk {
            after: start_after,
            limit: limit.max(1),
            deadline,
        };
        let more = walk.run(&dir_fd, &base, Some(partial), &mut keys)?;
        let next = more.then(|| keys.last().cloned()).flatten();
        Ok(Page { keys, next })
    }

    /// One level under `prefix`: the files directly in its directory whose
    /// names start with its last segment, and the subdirectories that hold
    /// at least one object, as prefixes.
    pub fn level(&self, prefix: &Prefix, deadline: Deadline) -> Result<Level, StoreError> {
        deadline.check()?;
        let (dir, partial) = prefix.split_dir();
        let dir_fd = match self.open_dir(dir, false) {
            Err(StoreError::NotFound) => return Ok(Level::default()),
            other => other?,
        };
        let base = dir.map(|d| format!("{d}/")).unwrap_or_default();
        let mut level = Level::default();
        for (name, is_dir) in sorted_entries(&dir_fd, Some(partial))? {
            if !is_dir {
                level.keys.push(format!("{base}{name}"));
            } else if open_subdir(&dir_fd, &name)?.is_some_and(|fd| holds_objects(&fd, 0)) {
                level.prefixes.push(format!("{base}{name}/"));
            }
        }
        deadline.check()?;
        Ok(level)
    }
}

/// Reports unsafe paths under the whole key, not the part that failed.
fn naming(key: &Key) -> impl Fn(StoreError) -> StoreError + '_ {
    move |err| match err {
        StoreError::UnsafePath(_) => StoreError::UnsafePath(key.as_str().as_bytes().to_vec()),
        other => other,
    }
}

fn read_retrying(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize, StoreError> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn regular_file_stat(fd: &OwnedFd) -> Result<rfs::Stat, StoreError> {
    let st = rfs::fstat(fd)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
        Ok(st)
    } else {
        Err(StoreError::NotFound)
    }
}

/// Metadata from a stat. The ETag hashes the inode identity, size and
/// nanosecond mtime: each put makes a new inode with a unique mtime.
fn meta_of(st: &rfs::Stat) -> ObjectMeta {
    let mut h = Sha256::new();
    h.update(st.st_dev.to_le_bytes());
    h.update(st.st_ino.to_le_bytes());
    h.update(st.st_size.to_le_bytes());
    h.update(st.st_mtime.to_le_bytes());
    h.update((st.st_mtime_nsec as i64).to_le_bytes());
    let digest = h.finalize();
    ObjectMeta {
        size: st.st_size as u64,
        etag: hex::encode(&digest[..16]),
        last_modified_ns: st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128,
        attributes: Default::default(),
    }
}
