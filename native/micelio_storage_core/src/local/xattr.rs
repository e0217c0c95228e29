//! The attributes stored with a file, in an extended attribute set before
//! the rename.

use super::*;

/// The attributes stored with a file, as given at its put (none when the
/// filesystem has none for it).
pub(super) fn stored_attributes(fd: &impl AsFd) -> Attributes {
    let mut buf = [0u8; 4096];
    match rfs::fgetxattr(fd, ATTRIBUTES_XATTR, &mut buf) {
        Ok(n) => Attributes::decode(&buf[..n]).unwrap_or_default(),
        Err(_) => Attributes::default(),
    }
}

/// The attributes a read reports: the stored ones, the content type guessed
/// from the key when none was given.
pub(super) fn read_attributes(fd: &OwnedFd, key: &Key) -> Attributes {
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

pub(super) fn write_attributes(fd: &OwnedFd, attributes: &Attributes) -> Result<(), StoreError> {
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
