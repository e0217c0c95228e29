//! Listing walks: whole listings, pages in byte order, one level.

use super::*;

/// The regular files and directories of a directory (temp files and names
/// that are not UTF-8 left out; only names starting with `partial` when
/// given), sorted as their keys sort: a directory as its name plus `/`.
pub(super) fn sorted_entries(
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
pub(super) fn dir_entries(
    dir_fd: &OwnedFd,
    partial: Option<&str>,
) -> Result<Vec<(String, bool)>, StoreError> {
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
pub(super) fn open_subdir(dir_fd: &OwnedFd, name: &str) -> Result<Option<OwnedFd>, StoreError> {
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
pub(super) fn holds_objects(dir_fd: &OwnedFd, depth: usize) -> bool {
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
pub(super) struct PageWalk<'a> {
    pub(super) after: Option<&'a str>,
    pub(super) limit: usize,
    pub(super) deadline: Deadline,
}

impl PageWalk<'_> {
    /// Adds keys under `dir_fd` to `keys`; true once the page is full.
    pub(super) fn run(
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
pub(super) fn walk(
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
