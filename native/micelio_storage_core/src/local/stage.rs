//! Writes that appear whole or not at all: a temp file beside the key,
//! renamed over it under the directory lock when the put condition holds.

use super::*;

/// A temp file in a key's directory, on its way to becoming the object.
pub struct Staged {
    pub(super) dir_fd: OwnedFd,
    pub(super) temp: String,
    pub(super) name: String,
    pub(super) file: OwnedFd,
    pub(super) done: bool,
    /// The store and the key's directory, pruned if the write fails: a
    /// failed put leaves no directory behind (one left would make the
    /// key `"a"` unwritable after a failed put of `"a/b"`).
    pub(super) store: LocalStore,
    pub(super) dir: Option<String>,
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

/// An exclusive `flock` on a directory, released on drop.
pub(super) struct DirLock<'a>(BorrowedFd<'a>);

impl<'a> DirLock<'a> {
    pub(super) fn acquire(fd: &'a OwnedFd) -> Result<Self, StoreError> {
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
pub(super) fn replace(
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
pub(super) fn taken(dir_fd: &OwnedFd, name: &str) -> StoreError {
    match rfs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            StoreError::Io(Errno::ISDIR.raw_os_error())
        }
        _ => StoreError::PreconditionFailed,
    }
}

pub(super) fn write_all(
    fd: &impl AsFd,
    content: &[u8],
    deadline: Deadline,
) -> Result<(), StoreError> {
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
pub(super) fn copy_contents(
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
pub(super) fn finish_file(fd: &OwnedFd, durable: bool) -> Result<(), StoreError> {
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

pub(super) fn unique_timestamp() -> rfs::Timespec {
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
