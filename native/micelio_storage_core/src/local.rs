//! The local filesystem backend: keys are relative paths under a root directory.
//!
//! Safety rests on three rules:
//! - every path is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//!   from a descriptor of the root, so nothing outside the root is reachable,
//!   not even through a symlink placed inside it;
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
use rustix::fs::{self as rfs, AtFlags, FileType, FlockOperation, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::key::{Key, Prefix, TEMP_PREFIX};
use crate::object::{Body, BodyBuf, Deadline, Object, ObjectMeta};
use crate::store::{
    offload, CopyOptions, DeleteManyOutcome, DeleteOptions, GetOptions, HeadOptions, ListOptions,
    PutCondition, PutOptions, Store, HEALTH_PROBE,
};

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
        sweep_stale_temps(&root_fd, SystemTime::now(), 0);
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
        let fd = self
            .open_path(key.as_str(), OFlags::PATH)
            .map_err(naming(key))?;
        Ok(meta_of(&regular_file_stat(&fd)?))
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
    /// or not at all.
    pub fn copy_file(
        &self,
        from: &Key,
        to: &Key,
        durable: bool,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        deadline.check()?;
        let source = self.open_file(from).map_err(naming(from))?;
        regular_file_stat(&source)?;
        let opts = PutOptions {
            durable,
            ..PutOptions::default()
        };
        self.write_with(to, &opts, deadline, &mut |fd| {
            copy_contents(&source, fd, deadline)
        })
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
        let (dir, name) = key.split_parent();
        let mut attempt = 0;
        loop {
            let dir_fd = self.open_dir(dir, true).map_err(naming(key))?;
            match self.put_in_dir(&dir_fd, name, fill, opts) {
                // The directory was pruned by a concurrent delete: make it again.
                Err(StoreError::NotFound) if attempt < PRUNE_RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    fn put_in_dir(
        &self,
        dir_fd: &OwnedFd,
        name: &str,
        fill: &mut dyn FnMut(&OwnedFd) -> Result<(), StoreError>,
        opts: &PutOptions,
    ) -> Result<(), StoreError> {
        let temp = format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>());
        let file = rfs::openat(
            dir_fd,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )
        .map_err(StoreError::from_errno)?;
        let written = fill(&file).and_then(|()| finish_file(&file, opts.durable));
        drop(file);
        let result = written.and_then(|()| {
            let _lock = DirLock::acquire(dir_fd)?;
            let replaced = replace(dir_fd, &temp, name, &opts.condition);
            if replaced.is_ok() && opts.durable {
                rfs::fsync(dir_fd)?;
            }
            replaced
        });
        if result.is_err() {
            let _ = rfs::unlinkat(dir_fd, temp.as_str(), AtFlags::empty());
        }
        result
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

    fn open_file(&self, key: &Key) -> Result<OwnedFd, StoreError> {
        self.open_path(key.as_str(), OFlags::RDONLY)
    }

    /// Opens a path under the root without following any symlink.
    fn open_path(&self, rel: &str, mode: OFlags) -> Result<OwnedFd, StoreError> {
        // openat2 rejects any flag O_PATH does not allow, NOCTTY included.
        let flags = if mode.contains(OFlags::PATH) {
            mode | OFlags::CLOEXEC
        } else {
            mode | OFlags::CLOEXEC | OFlags::NOCTTY
        };
        if self.use_openat2.load(Ordering::Relaxed) {
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
            loop {
                match rfs::openat2(&self.root_fd, rel, flags, Mode::empty(), resolve) {
                    Ok(fd) => return Ok(fd),
                    Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                    Err(Errno::NOSYS) => {
                        self.disable_openat2();
                        break;
                    }
                    Err(e) => return Err(resolve_error(e, rel)),
                }
            }
        }
        self.open_path_by_components(rel, flags)
    }

    fn open_path_by_components(&self, rel: &str, flags: OFlags) -> Result<OwnedFd, StoreError> {
        let mut segments = rel.split('/').peekable();
        let mut dir = self.open_root_again()?;
        while let Some(seg) = segments.next() {
            let last = segments.peek().is_none();
            let f = if last {
                flags | OFlags::NOFOLLOW
            } else {
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
            };
            let next = match rfs::openat(&dir, seg, f, Mode::empty()) {
                Ok(fd) => fd,
                // O_NOFOLLOW on a symlink gives ELOOP, or ENOTDIR with O_DIRECTORY.
                Err(Errno::NOTDIR) if is_symlink_at(&dir, seg) => {
                    return Err(StoreError::UnsafePath(rel.as_bytes().to_vec()))
                }
                Err(e) => return Err(resolve_error(e, rel)),
            };
            if last {
                // O_PATH | O_NOFOLLOW opens a symlink itself rather than failing.
                let st = rfs::fstat(&next)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                    return Err(StoreError::UnsafePath(rel.as_bytes().to_vec()));
                }
                return Ok(next);
            }
            dir = next;
        }
        Ok(dir)
    }

    /// A fresh descriptor of the root: `flock` needs its own open file description.
    fn open_root_again(&self) -> Result<OwnedFd, StoreError> {
        Ok(rfs::openat(
            &self.root_fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// Opens the directory `dir` (the root when `None`), creating it if asked.
    fn open_dir(&self, dir: Option<&str>, create: bool) -> Result<OwnedFd, StoreError> {
        let Some(dir) = dir else {
            return self.open_root_again();
        };
        match self.open_path(dir, OFlags::RDONLY | OFlags::DIRECTORY) {
            Err(StoreError::NotFound) if create => self.make_dirs(dir),
            other => other,
        }
    }

    fn make_dirs(&self, dir: &str) -> Result<OwnedFd, StoreError> {
        let mut cur = self.open_root_again()?;
        for seg in dir.split('/') {
            match rfs::mkdirat(&cur, seg, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(StoreError::from_errno(e)),
            }
            cur = rfs::openat(
                &cur,
                seg,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                Errno::LOOP => StoreError::UnsafePath(dir.as_bytes().to_vec()),
                Errno::NOTDIR => StoreError::Io(Errno::NOTDIR.raw_os_error()),
                other => StoreError::from_errno(other),
            })?;
        }
        Ok(cur)
    }
}

/// A temp file untouched this long has no live writer: writers write (and
/// so touch) their temp file at least every 1 MiB.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deepest directory level swept (keys nest at most 512 deep anyway).
const SWEEP_MAX_DEPTH: usize = 512;

/// Removes temp files left by writers that died (`kill -9`, power loss):
/// those unmodified for `STALE_TEMP_AGE`. A live writer in another OS
/// process touches its temp file on every write, so it is never swept.
/// Best effort: what cannot be read is left alone.
fn sweep_stale_temps(dir_fd: &OwnedFd, now: SystemTime, depth: usize) {
    if depth > SWEEP_MAX_DEPTH {
        return;
    }
    let Ok(mut dir) = rfs::Dir::read_from(dir_fd) else {
        return;
    };
    let mut subdirs = Vec::new();
    while let Some(Ok(entry)) = dir.read() {
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name).to_owned();
        let Ok(st) = rfs::statat(dir_fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => subdirs.push(name),
            FileType::RegularFile if name.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) => {
                let modified = SystemTime::UNIX_EPOCH
                    + std::time::Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
                let stale = now
                    .duration_since(modified)
                    .is_ok_and(|age| age >= STALE_TEMP_AGE);
                if stale {
                    let _ = rfs::unlinkat(dir_fd, name.as_os_str(), AtFlags::empty());
                }
            }
            _ => {}
        }
    }
    for sub in subdirs {
        if let Ok(fd) = rfs::openat(
            dir_fd,
            sub.as_os_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            sweep_stale_temps(&fd, now, depth + 1);
        }
    }
}

fn is_symlink_at(dir: &OwnedFd, name: &str) -> bool {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

/// Reports unsafe paths under the whole key, not the part that failed.
fn naming(key: &Key) -> impl Fn(StoreError) -> StoreError + '_ {
    move |err| match err {
        StoreError::UnsafePath(_) => StoreError::UnsafePath(key.as_str().as_bytes().to_vec()),
        other => other,
    }
}

fn resolve_error(e: Errno, rel: &str) -> StoreError {
    match e {
        Errno::LOOP | Errno::XDEV => StoreError::UnsafePath(rel.as_bytes().to_vec()),
        other => StoreError::from_errno(other),
    }
}

/// An exclusive `flock` on a directory, released on drop.
struct DirLock<'a>(BorrowedFd<'a>);

impl<'a> DirLock<'a> {
    fn acquire(fd: &'a OwnedFd) -> Result<Self, StoreError> {
        loop {
            match rfs::flock(fd, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(DirLock(fd.as_fd())),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for DirLock<'_> {
    fn drop(&mut self) {
        let _ = rfs::flock(self.0, FlockOperation::Unlock);
    }
}

/// Renames the temp file over `name` if the condition holds. Runs under the
/// directory lock.
fn replace(
    dir_fd: &OwnedFd,
    temp: &str,
    name: &str,
    condition: &PutCondition,
) -> Result<(), StoreError> {
    match condition {
        PutCondition::Always => Ok(rfs::renameat(dir_fd, temp, dir_fd, name)?),
        PutCondition::IfNoneMatch => {
            match rfs::renameat_with(dir_fd, temp, dir_fd, name, rfs::RenameFlags::NOREPLACE) {
                Ok(()) => Ok(()),
                Err(Errno::EXIST) => Err(StoreError::PreconditionFailed),
                // Filesystems without RENAME_NOREPLACE: link() also refuses to replace.
                Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                    match rfs::linkat(dir_fd, temp, dir_fd, name, AtFlags::empty()) {
                        Ok(()) => {
                            let _ = rfs::unlinkat(dir_fd, temp, AtFlags::empty());
                            Ok(())
                        }
                        Err(Errno::EXIST) => Err(StoreError::PreconditionFailed),
                        Err(e) => Err(e.into()),
                    }
                }
                Err(e) => Err(e.into()),
            }
        }
        PutCondition::IfMatch(expected) => {
            let current = match rfs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                    meta_of(&st).etag
                }
                Ok(_) | Err(Errno::NOENT) => return Err(StoreError::PreconditionFailed),
                Err(e) => return Err(e.into()),
            };
            if current != crate::object::bare_etag(expected) {
                return Err(StoreError::PreconditionFailed);
            }
            Ok(rfs::renameat(dir_fd, temp, dir_fd, name)?)
        }
    }
}

fn write_all(fd: &OwnedFd, content: &[u8], deadline: Deadline) -> Result<(), StoreError> {
    for chunk in content.chunks(CHUNK) {
        let mut rest = chunk;
        while !rest.is_empty() {
            match rustix::io::write(fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        deadline.check()?;
    }
    Ok(())
}

/// Copies a whole file from offset 0 (a retry starts over cleanly):
/// `copy_file_range` in chunks (no bytes through user space), or plain reads
/// and writes where the kernel cannot.
fn copy_contents(source: &OwnedFd, dest: &OwnedFd, deadline: Deadline) -> Result<(), StoreError> {
    let mut offset = 0u64;
    loop {
        match rfs::copy_file_range(source, Some(&mut offset), dest, None, CHUNK) {
            Ok(0) => return Ok(()),
            Ok(_) => deadline.check()?,
            Err(Errno::INTR) => {}
            Err(Errno::XDEV) | Err(Errno::NOSYS) | Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => {
                break
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match rustix::io::pread(source, &mut buf, offset) {
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(());
        }
        write_all(dest, &buf[..n], deadline)?;
        offset += n as u64;
    }
}

/// Stamps a freshly written file and fsyncs it when asked.
fn finish_file(fd: &OwnedFd, durable: bool) -> Result<(), StoreError> {
    // A unique, nanosecond mtime makes the ETag change on every write, even
    // when the filesystem clock is coarse and an inode number is reused.
    let ts = unique_timestamp();
    rfs::futimens(
        fd,
        &rfs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
    )?;
    if durable {
        rfs::fsync(fd)?;
    }
    Ok(())
}

fn unique_timestamp() -> rfs::Timespec {
    static LAST_NS: AtomicI64 = AtomicI64::new(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let prev = LAST_NS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    let ns = now.max(prev + 1);
    rfs::Timespec {
        tv_sec: ns / 1_000_000_000,
        tv_nsec: (ns % 1_000_000_000) as _,
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
    }
}

/// Collects regular files under `dir_fd`. At the top level only names that
/// start with `partial` count (the prefix may end inside a segment).
fn walk(
    dir_fd: OwnedFd,
    base: &str,
    partial: Option<&str>,
    deadline: Deadline,
    keys: &mut Vec<String>,
) -> Result<(), StoreError> {
    let mut subdirs = Vec::new();
    {
        let mut dir = rfs::Dir::read_from(&dir_fd)?;
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name_bytes = entry.file_name().to_bytes();
            if name_bytes == b"."
                || name_bytes == b".."
                || name_bytes.starts_with(TEMP_PREFIX.as_bytes())
            {
                continue;
            }
            // Names that are not UTF-8 cannot be keys; skip them.
            let Ok(name) = std::str::from_utf8(name_bytes) else {
                continue;
            };
            if partial.is_some_and(|p| !name.starts_with(p)) {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::Unknown => match rfs::statat(&dir_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(_) => continue,
                },
                k => k,
            };
            match kind {
                FileType::RegularFile => keys.push(format!("{base}{name}")),
                FileType::Directory => subdirs.push(name.to_string()),
                _ => {}
            }
        }
    }
    deadline.check()?;
    for sub in subdirs {
        let fd = match rfs::openat(
            &dir_fd,
            OsStr::from_bytes(sub.as_bytes()),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Removed or swapped for a symlink meanwhile: not part of the listing.
            Err(Errno::NOENT) | Err(Errno::LOOP) | Err(Errno::NOTDIR) => continue,
            Err(e) => return Err(e.into()),
        };
        walk(fd, &format!("{base}{sub}/"), None, deadline, keys)?;
    }
    Ok(())
}

/// The local store under the contract. Each operation is the blocking call
/// above, run in place on a dirty scheduler or on the blocking pool from
/// the async runtime (`offload`).
#[async_trait]
impl Store for LocalStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    fn blocking(&self) -> bool {
        true
    }

    async fn get(
        &self,
        key: &Key,
        opts: &GetOptions,
        deadline: Deadline,
    ) -> Result<Object, StoreError> {
        let (store, key, alloc) = (self.clone(), key.clone(), opts.alloc);
        let unchanged_if = opts.if_none_match.clone();
        offload(move || {
            if let Some(etag) = unchanged_if {
                if store.stat(&key, deadline)?.etag == crate::object::bare_etag(&etag) {
                    return Err(StoreError::NotModified);
                }
            }
            let mut body = alloc(0);
            let meta = store.get_into(&key, deadline, &mut *body)?;
            Ok(Object {
                body: Body::Buf(body),
                meta,
            })
        })
        .await
    }

    async fn head(
        &self,
        key: &Key,
        _opts: &HeadOptions,
        deadline: Deadline,
    ) -> Result<ObjectMeta, StoreError> {
        let (store, key) = (self.clone(), key.clone());
        offload(move || store.stat(&key, deadline)).await
    }

    async fn put(
        &self,
        key: &Key,
        body: Bytes,
        opts: &PutOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let (store, key, opts) = (self.clone(), key.clone(), opts.clone());
        offload(move || store.write(&key, &body, &opts, deadline)).await
    }

    async fn delete(
        &self,
        key: &Key,
        opts: &DeleteOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let (store, key, durable) = (self.clone(), key.clone(), opts.durable);
        offload(move || store.remove(&key, durable, deadline)).await
    }

    async fn list(
        &self,
        prefix: &Prefix,
        _opts: &ListOptions,
        deadline: Deadline,
    ) -> Result<Vec<String>, StoreError> {
        let (store, prefix) = (self.clone(), prefix.clone());
        offload(move || store.keys(&prefix, deadline)).await
    }

    async fn copy(
        &self,
        from: &Key,
        to: &Key,
        opts: &CopyOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let (store, from, to, durable) = (self.clone(), from.clone(), to.clone(), opts.durable);
        offload(move || store.copy_file(&from, &to, durable, deadline)).await
    }

    /// Writes, reads back and deletes a probe object under the reserved
    /// prefix `.micelio-health/`, with a name no other prober uses.
    async fn health(&self, deadline: Deadline) -> Result<(), StoreError> {
        let store = self.clone();
        offload(move || {
            let name = format!("{HEALTH_PROBE}-{:016x}", rand::random::<u64>());
            let key = Key::parse(name.as_bytes())?;
            let body = name.as_bytes();
            store.write(&key, body, &PutOptions::default(), deadline)?;
            let read = store.read(&key, deadline);
            store.remove(&key, false, deadline)?;
            if read?.0 == body {
                Ok(())
            } else {
                Err(StoreError::Corrupt)
            }
        })
        .await
    }

    async fn delete_many(
        &self,
        keys: &[Key],
        opts: &DeleteOptions,
        deadline: Deadline,
    ) -> Result<DeleteManyOutcome, StoreError> {
        let (store, keys, durable) = (self.clone(), keys.to_vec(), opts.durable);
        offload(move || {
            let mut outcome = DeleteManyOutcome::default();
            for key in keys {
                let result = deadline
                    .check()
                    .and_then(|()| store.remove(&key, durable, deadline));
                outcome.record(key, result);
            }
            Ok(outcome)
        })
        .await
    }
}
