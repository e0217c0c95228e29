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

use crate::attributes::Attributes;
use crate::error::StoreError;
use crate::key::{Key, Prefix, TEMP_PREFIX};
use crate::object::{Body, BodyBuf, Deadline, Object, ObjectMeta};
use crate::store::{
    offload, ByteRange, CopyOptions, DeleteManyOutcome, DeleteOptions, GetOptions, HeadOptions,
    Level, ListOptions, Page, PageOptions, PutCondition, PutOptions, Store, HEALTH_PROBE,
};
use crate::transfer::{self, ByteSource, ByteStream, DestFile, FileSource, Transfer};

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
            attributes: stored_attributes(&source),
            ..PutOptions::default()
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

/// A temp file in a key's directory, on its way to becoming the object.
pub struct Staged {
    dir_fd: OwnedFd,
    temp: String,
    name: String,
    file: OwnedFd,
    done: bool,
    /// The store and the key's directory, pruned if the write fails: a
    /// failed put leaves no directory behind (one left would make the
    /// key `"a"` unwritable after a failed put of `"a/b"`).
    store: LocalStore,
    dir: Option<String>,
}

impl Staged {
    /// Appends `data` (blocking).
    pub fn write(&self, data: &[u8]) -> Result<(), StoreError> {
        write_all(&self.file, data, Deadline::far())
    }

    /// Sets the attributes, stamps (and fsyncs, when durable) the file, and
    /// renames it over the key if the put condition holds, under the
    /// directory lock.
    pub fn commit(mut self, opts: &PutOptions) -> Result<(), StoreError> {
        if !opts.attributes.is_empty() {
            write_attributes(&self.file, &opts.attributes)?;
        }
        finish_file(&self.file, opts.durable)?;
        let _lock = DirLock::acquire(&self.dir_fd)?;
        replace(&self.dir_fd, &self.temp, &self.name, &opts.condition)?;
        self.done = true;
        if opts.durable {
            rfs::fsync(&self.dir_fd)?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = rfs::unlinkat(&self.dir_fd, self.temp.as_str(), AtFlags::empty());
            if let Some(dir) = &self.dir {
                self.store.prune_empty_dirs(dir);
            }
        }
    }
}

/// The attributes stored with a file, as given at its put (none when the
/// filesystem has none for it).
fn stored_attributes(fd: &impl AsFd) -> Attributes {
    let mut buf = [0u8; 4096];
    match rfs::fgetxattr(fd, ATTRIBUTES_XATTR, &mut buf) {
        Ok(n) => Attributes::decode(&buf[..n]).unwrap_or_default(),
        Err(_) => Attributes::default(),
    }
}

/// The attributes a read reports: the stored ones, the content type guessed
/// from the key when none was given.
fn read_attributes(fd: &OwnedFd, key: &Key) -> Attributes {
    let stored = match rfs::fgetxattr(fd, ATTRIBUTES_XATTR, &mut [0u8; 4096]) {
        // O_PATH descriptors take no fgetxattr: go through /proc/self/fd,
        // which names this very inode (no path lookup under the root).
        Err(Errno::BADF) => {
            use std::os::fd::AsRawFd;
            let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
            let mut buf = [0u8; 4096];
            match rfs::getxattr(proc_path.as_str(), ATTRIBUTES_XATTR, &mut buf) {
                Ok(n) => Attributes::decode(&buf[..n]).unwrap_or_default(),
                Err(_) => Attributes::default(),
            }
        }
        _ => stored_attributes(fd),
    };
    stored.for_key(key.as_str())
}

fn write_attributes(fd: &OwnedFd, attributes: &Attributes) -> Result<(), StoreError> {
    let text = attributes.encode();
    match rfs::fsetxattr(
        fd,
        ATTRIBUTES_XATTR,
        text.as_bytes(),
        rfs::XattrFlags::empty(),
    ) {
        Ok(()) => Ok(()),
        Err(Errno::OPNOTSUPP) => Err(StoreError::InvalidConfig(
            "local_path",
            "the filesystem has no extended attributes, which content types and metadata need"
                .into(),
        )),
        Err(e) => Err(e.into()),
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
                Err(Errno::EXIST) => Err(taken(dir_fd, name)),
                // Filesystems without RENAME_NOREPLACE: link() also refuses to replace.
                Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                    match rfs::linkat(dir_fd, temp, dir_fd, name, AtFlags::empty()) {
                        Ok(()) => {
                            let _ = rfs::unlinkat(dir_fd, temp, AtFlags::empty());
                            Ok(())
                        }
                        Err(Errno::EXIST) => Err(taken(dir_fd, name)),
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

/// Why a name a conditional put wanted is taken: by an object (the
/// condition failed), or by a directory of other keys (no object is there,
/// and none can be: the same `{:io, :eisdir}` a plain put gives).
fn taken(dir_fd: &OwnedFd, name: &str) -> StoreError {
    match rfs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            StoreError::Io(Errno::ISDIR.raw_os_error())
        }
        _ => StoreError::PreconditionFailed,
    }
}

fn write_all(fd: &impl AsFd, content: &[u8], deadline: Deadline) -> Result<(), StoreError> {
    // Copying into the page cache is CPU work in the kernel: large writes
    // take turns, a chunk at a time, so the BEAM's own scheduler threads
    // keep a CPU.
    let large = content.len() > CHUNK;
    for chunk in content.chunks(CHUNK) {
        let _turn = if large {
            Some(crate::write_gate::turn(deadline)?)
        } else {
            None
        };
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
fn copy_contents(
    source: &impl AsFd,
    dest: &impl AsFd,
    deadline: Deadline,
    progress: &mut dyn FnMut(u64),
) -> Result<(), StoreError> {
    let mut offset = 0u64;
    loop {
        match rfs::copy_file_range(source, Some(&mut offset), dest, None, CHUNK) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                progress(offset);
                deadline.check()?
            }
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
        progress(offset);
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
        attributes: Default::default(),
    }
}

/// The regular files and directories of a directory (temp files and names
/// that are not UTF-8 left out; only names starting with `partial` when
/// given), sorted as their keys sort: a directory as its name plus `/`.
fn sorted_entries(
    dir_fd: &OwnedFd,
    partial: Option<&str>,
) -> Result<Vec<(String, bool)>, StoreError> {
    let mut entries = dir_entries(dir_fd, partial)?;
    let sort_name = |(n, d): &(String, bool)| if *d { format!("{n}/") } else { n.clone() };
    entries.sort_by_cached_key(sort_name);
    Ok(entries)
}

/// The regular files and directories of a directory, `(name, is_dir)`, in
/// the order the directory gives them (see `sorted_entries`).
fn dir_entries(dir_fd: &OwnedFd, partial: Option<&str>) -> Result<Vec<(String, bool)>, StoreError> {
    let mut entries = Vec::new();
    let mut dir = rfs::Dir::read_from(dir_fd)?;
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name_bytes = entry.file_name().to_bytes();
        if name_bytes == b"."
            || name_bytes == b".."
            || name_bytes.starts_with(TEMP_PREFIX.as_bytes())
        {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name_bytes) else {
            continue;
        };
        if partial.is_some_and(|p| !name.starts_with(p)) {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::Unknown => match rfs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => continue,
            },
            k => k,
        };
        match kind {
            FileType::RegularFile => entries.push((name.to_string(), false)),
            FileType::Directory => entries.push((name.to_string(), true)),
            _ => {}
        }
    }
    Ok(entries)
}

/// Opens a subdirectory without following symlinks; `None` when it is gone
/// or was swapped for something else.
fn open_subdir(dir_fd: &OwnedFd, name: &str) -> Result<Option<OwnedFd>, StoreError> {
    match rfs::openat(
        dir_fd,
        OsStr::from_bytes(name.as_bytes()),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) | Err(Errno::LOOP) | Err(Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// True when a directory holds an object somewhere below it (stops at the
/// first one found).
fn holds_objects(dir_fd: &OwnedFd, depth: usize) -> bool {
    if depth > SWEEP_MAX_DEPTH {
        return false;
    }
    let Ok(entries) = sorted_entries(dir_fd, None) else {
        return false;
    };
    entries.iter().any(|(name, is_dir)| {
        !is_dir
            || open_subdir(dir_fd, name)
                .ok()
                .flatten()
                .is_some_and(|fd| holds_objects(&fd, depth + 1))
    })
}

/// A depth-first walk for one page of keys.
struct PageWalk<'a> {
    after: Option<&'a str>,
    limit: usize,
    deadline: Deadline,
}

impl PageWalk<'_> {
    /// Adds keys under `dir_fd` to `keys`; true once the page is full.
    fn run(
        &self,
        dir_fd: &OwnedFd,
        base: &str,
        partial: Option<&str>,
        keys: &mut Vec<String>,
    ) -> Result<bool, StoreError> {
        for (name, is_dir) in sorted_entries(dir_fd, partial)? {
            if is_dir {
                let sub = format!("{base}{name}/");
                // Every key below sorts before `after`: skip the subtree.
                if self
                    .after
                    .is_some_and(|a| sub.as_str() < a && !a.starts_with(sub.as_str()))
                {
                    continue;
                }
                let Some(fd) = open_subdir(dir_fd, &name)? else {
                    continue;
                };
                if self.run(&fd, &sub, None, keys)? {
                    return Ok(true);
                }
            } else {
                let key = format!("{base}{name}");
                if self.after.is_some_and(|a| key.as_str() <= a) {
                    continue;
                }
                keys.push(key);
                if keys.len() >= self.limit {
                    return Ok(true);
                }
            }
        }
        self.deadline.check()?;
        Ok(false)
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
    for (name, is_dir) in dir_entries(&dir_fd, partial)? {
        if is_dir {
            subdirs.push(name);
        } else {
            keys.push(format!("{base}{name}"));
        }
    }
    deadline.check()?;
    for sub in subdirs {
        // Removed or swapped for a symlink meanwhile: not part of the listing.
        if let Some(fd) = open_subdir(&dir_fd, &sub)? {
            walk(fd, &format!("{base}{sub}/"), None, deadline, keys)?;
        }
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
        let (unchanged_if, range) = (opts.if_none_match.clone(), opts.range);
        offload(move || {
            if let Some(etag) = unchanged_if {
                if store.stat(&key, deadline)?.etag == crate::object::bare_etag(&etag) {
                    return Err(StoreError::NotModified);
                }
            }
            let mut body = alloc(0);
            let meta = match range {
                Some(range) => store.get_range_into(&key, range, deadline, &mut *body)?,
                None => store.get_into(&key, deadline, &mut *body)?,
            };
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

    /// Each chunk is appended to the staged temp file as it arrives.
    async fn put_stream(
        &self,
        key: &Key,
        mut source: Box<dyn ByteSource>,
        opts: &PutOptions,
        xfer: &Transfer,
    ) -> Result<(), StoreError> {
        let (store, k) = (self.clone(), key.clone());
        let staged = Arc::new(offload(move || store.stage(&k)).await?);
        let mut done = 0u64;
        while let Some(chunk) = xfer.within(source.read(transfer::CHUNK)).await? {
            done += chunk.len() as u64;
            let staged = staged.clone();
            offload(move || staged.write(&chunk)).await?;
            xfer.report(done, None);
        }
        let opts = opts.clone();
        offload(move || {
            let staged = Arc::try_unwrap(staged)
                .map_err(|_| StoreError::Panic("staged file still shared".into()))?;
            staged.commit(&opts)
        })
        .await?;
        xfer.report(done, Some(done));
        Ok(())
    }

    /// A copy in the kernel (`copy_file_range`) into a temp file, renamed.
    async fn put_file(
        &self,
        key: &Key,
        path: &std::path::Path,
        opts: &PutOptions,
        xfer: &Transfer,
    ) -> Result<(), StoreError> {
        let source = FileSource::open(path).await?;
        let total = source.size();
        let (store, key, opts, xfer) = (self.clone(), key.clone(), opts.clone(), xfer.clone());
        offload(move || {
            let mut progress = |n| xfer.report(n, total);
            store.write_from_file(&key, source.file(), &opts, xfer.limit, &mut progress)?;
            xfer.report(total.unwrap_or(0), total);
            Ok(())
        })
        .await
    }

    async fn get_stream(
        &self,
        key: &Key,
        opts: &GetOptions,
        _xfer: &Transfer,
    ) -> Result<(ObjectMeta, ByteStream), StoreError> {
        let (store, k) = (self.clone(), key.clone());
        let (fd, meta) = offload(move || store.open_for_stream(&k)).await?;
        let (start, end) = opts
            .range
            .unwrap_or(ByteRange {
                offset: 0,
                length: None,
            })
            .within(meta.size);
        let fd = Arc::new(fd);
        let stream = futures_util::stream::try_unfold(start, move |at| {
            let fd = fd.clone();
            async move {
                if at >= end {
                    return Ok(None);
                }
                let want = ((end - at) as usize).min(transfer::CHUNK);
                let chunk = offload(move || {
                    let mut buf = bytes::BytesMut::zeroed(want);
                    let n = loop {
                        match rustix::io::pread(&*fd, &mut buf[..], at) {
                            Ok(n) => break n,
                            Err(Errno::INTR) => continue,
                            Err(e) => return Err(StoreError::from(e)),
                        }
                    };
                    buf.truncate(n);
                    Ok(buf.freeze())
                })
                .await?;
                if chunk.is_empty() {
                    // Truncated under us by an outside writer.
                    return Err(StoreError::Changed);
                }
                let next = at + chunk.len() as u64;
                Ok(Some((chunk, next)))
            }
        });
        Ok((meta, Box::pin(stream)))
    }

    /// A copy in the kernel into a temp file beside `path`, renamed.
    async fn get_file(
        &self,
        key: &Key,
        path: &std::path::Path,
        opts: &GetOptions,
        xfer: &Transfer,
    ) -> Result<ObjectMeta, StoreError> {
        if opts.range.is_some() {
            return Err(StoreError::InvalidConfig(
                "range",
                "get_file copies whole objects; use stream/2 for a range".into(),
            ));
        }
        let (store, key, path, xfer) =
            (self.clone(), key.clone(), path.to_path_buf(), xfer.clone());
        offload(move || {
            let dest = DestFile::create(&path)?;
            let mut progress = |n| xfer.report(n, None);
            let meta = store.read_to_file(&key, dest.file(), xfer.limit, &mut progress)?;
            dest.commit(false)?;
            xfer.report(meta.size, Some(meta.size));
            Ok(meta)
        })
        .await
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

    async fn list_page(
        &self,
        prefix: &Prefix,
        opts: &PageOptions,
        deadline: Deadline,
    ) -> Result<Page, StoreError> {
        let (store, prefix, opts) = (self.clone(), prefix.clone(), opts.clone());
        offload(move || store.page(&prefix, opts.cursor.as_deref(), opts.limit, deadline)).await
    }

    async fn list_level(&self, prefix: &Prefix, deadline: Deadline) -> Result<Level, StoreError> {
        let (store, prefix) = (self.clone(), prefix.clone());
        offload(move || store.level(&prefix, deadline)).await
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
