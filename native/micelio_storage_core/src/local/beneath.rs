//! Safe path lookup: every path is resolved from a descriptor of the root
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or, where the
//! kernel lacks it, one component at a time with `O_NOFOLLOW`; either way
//! nothing outside the root is reachable, not even through a symlink.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::sweep::is_symlink_at;
use super::LocalStore;
use crate::error::StoreError;
use crate::key::Key;

impl LocalStore {
    pub(super) fn open_file(&self, key: &Key) -> Result<OwnedFd, StoreError> {
        self.open_path(key.as_str(), OFlags::RDONLY)
    }

    /// Opens a path under the root without following any symlink.
    pub(super) fn open_path(&self, rel: &str, mode: OFlags) -> Result<OwnedFd, StoreError> {
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

    pub(super) fn open_path_by_components(
        &self,
        rel: &str,
        flags: OFlags,
    ) -> Result<OwnedFd, StoreError> {
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
    pub(super) fn open_root_again(&self) -> Result<OwnedFd, StoreError> {
        Ok(rfs::openat(
            &self.root_fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// Opens the directory `dir` (the root when `None`), creating it if asked.
    pub(super) fn open_dir(&self, dir: Option<&str>, create: bool) -> Result<OwnedFd, StoreError> {
        let Some(dir) = dir else {
            return self.open_root_again();
        };
        match self.open_path(dir, OFlags::RDONLY | OFlags::DIRECTORY) {
            Err(StoreError::NotFound) if create => self.make_dirs(dir),
            other => other,
        }
    }

    pub(super) fn make_dirs(&self, dir: &str) -> Result<OwnedFd, StoreError> {
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

fn resolve_error(e: Errno, rel: &str) -> StoreError {
    match e {
        Errno::LOOP | Errno::XDEV => StoreError::UnsafePath(rel.as_bytes().to_vec()),
        other => StoreError::from_errno(other),
    }
}
