//! A destination file that appears whole or not at all: written to a
//! temp name beside it, chunk by chunk at their offsets, and renamed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;

use super::{io_error, ByteStream, Transfer};
use crate::blocking::offload;
use crate::error::StoreError;

/// A file written next to its final path, renamed over it by `commit`, and
/// removed if dropped before: the destination appears whole or not at all.
pub struct DestFile {
    file: Arc<File>,
    temp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl DestFile {
    /// Creates the temp file in `path`'s directory (blocking). Its name is
    /// short whatever the destination's (a 250-byte name plus a suffix
    /// would pass the 255-byte limit), and an existing destination's mode
    /// is kept: a `0600` file stays `0600` once replaced.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        if path.file_name().is_none() {
            return Err(StoreError::Io(rustix::io::Errno::ISDIR.raw_os_error()));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let temp = dir.join(temp_file_name(rand::random::<u64>()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io_error)?;
        if let Ok(existing) = std::fs::metadata(path) {
            if existing.is_file() {
                if let Err(e) = file.set_permissions(existing.permissions()) {
                    let _ = std::fs::remove_file(&temp);
                    return Err(io_error(e));
                }
            }
        }
        Ok(DestFile {
            file: Arc::new(file),
            temp,
            path: path.to_path_buf(),
            committed: false,
        })
    }

    /// The open temp file.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Writes `data` at `offset` (blocking).
    pub fn write_at(file: &File, data: &[u8], offset: u64) -> Result<(), StoreError> {
        file.write_all_at(data, offset).map_err(io_error)
    }

    /// Renames the temp file over the destination (blocking).
    pub fn commit(mut self, durable: bool) -> Result<(), StoreError> {
        if durable {
            self.file.sync_all().map_err(io_error)?;
        }
        std::fs::rename(&self.temp, &self.path).map_err(io_error)?;
        self.committed = true;
        Ok(())
    }
}

/// The name of a download's temp file: 23 bytes, hidden, never a name a
/// store or a user would pick.
pub fn temp_file_name(nonce: u64) -> String {
    format!(".micelio-{nonce:016x}.part")
}

impl Drop for DestFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes a stream to `path` through a `DestFile`, each chunk within one
/// step, reporting progress. The file appears only once all of it is written.
pub async fn stream_to_file(
    mut stream: ByteStream,
    path: &Path,
    total: Option<u64>,
    xfer: &Transfer,
) -> Result<u64, StoreError> {
    let owned = path.to_path_buf();
    let dest = offload(move || DestFile::create(&owned)).await?;
    let mut offset = 0u64;
    loop {
        let next = tokio::time::timeout(xfer.step().remaining(), stream.next())
            .await
            .map_err(|_| StoreError::Timeout)?;
        let Some(chunk) = next else { break };
        let chunk = chunk?;
        let (file, at) = (dest.file().clone(), offset);
        offset += chunk.len() as u64;
        offload(move || DestFile::write_at(&file, &chunk, at)).await?;
        xfer.report(offset, total);
    }
    offload(move || dest.commit(false)).await?;
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_at_their_offsets_and_appear_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let dest = DestFile::create(&out).unwrap();
        let body: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        // Out of order, as parallel ranges finish.
        DestFile::write_at(dest.file(), &body[40_000..], 40_005).unwrap();
        DestFile::write_at(dest.file(), &body[..40_000], 5).unwrap();
        DestFile::write_at(dest.file(), b"head!", 0).unwrap();
        assert!(!out.exists());
        dest.commit(false).unwrap();
        let written = std::fs::read(&out).unwrap();
        assert_eq!(&written[..5], b"head!");
        assert_eq!(&written[5..], &body[..]);
    }
}
