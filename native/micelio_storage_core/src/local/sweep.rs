//! Removing temp files that dead writers left behind.

use super::*;

/// A temp file untouched this long has no live writer: writers write (and
/// so touch) their temp file at least every 1 MiB.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deepest directory level swept (keys nest at most 512 deep anyway).
pub(super) const SWEEP_MAX_DEPTH: usize = 512;

/// Removes temp files left by writers that died (`kill -9`, power loss):
/// those unmodified for `STALE_TEMP_AGE`. A live writer in another OS
/// process touches its temp file on every write, so it is never swept.
/// Best effort: what cannot be read is left alone.
pub(super) fn sweep_stale_temps(dir_fd: &OwnedFd, now: SystemTime, depth: usize) {
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

pub(super) fn is_symlink_at(dir: &OwnedFd, name: &str) -> bool {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}
