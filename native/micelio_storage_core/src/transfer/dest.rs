//! A destination file that appears whole or not at all: written to a
//! temp name beside it, chunk by chunk at their offsets, and renamed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

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

    /// Writes `chunks`, one after the other, at `offset` with vectored
    /// writes: no copy into one buffer first (blocking).
    pub fn write_chunks_at(file: &File, chunks: &[Bytes], offset: u64) -> Result<(), StoreError> {
        // (chunk index, bytes of it already written)
        let (mut index, mut skip, mut at) = (0usize, 0usize, offset);
        while index < chunks.len() {
            let slices: Vec<std::io::IoSlice<'_>> = chunks[index..]
                .iter()
                .take(512)
                .enumerate()
                .map(|(i, c)| std::io::IoSlice::new(if i == 0 { &c[skip..] } else { c }))
                .collect();
            let mut n = match rustix::io::pwritev(file, &slices, at) {
                Ok(0) => return Err(StoreError::Io(rustix::io::Errno::IO.raw_os_error())),
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            at += n as u64;
            while n > 0 {
                let left = chunks[index].len() - skip;
                if n >= left {
                    n -= left;
                    index += 1;
                    skip = 0;
                } else {
                    skip += n;
                    n = 0;
                }
            }
            // Empty chunks are passed over.
            while index < chunks.len() && chunks[index].len() == skip {
                index += 1;
                skip = 0;
            }
        }
        Ok(())
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
    fn chunks_are_written_in_order_at_their_offset() {
        let dir = tempfile::tempdir().unwrap();
        let dest = DestFile::create(&dir.path().join("out")).unwrap();
        // More chunks than one vectored write takes, some empty.
        let chunks: Vec<Bytes> = (0..1500u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; (i % 7) as usize]))
            .collect();
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        DestFile::write_chunks_at(dest.file(), &chunks, 5).unwrap();
        DestFile::write_at(dest.file(), b"head!", 0).unwrap();
        dest.commit(false).unwrap();
        let written = std::fs::read(dir.path().join("out")).unwrap();
        assert_eq!(&written[..5], b"head!");
        assert_eq!(&written[5..], &expected[..]);
    }
}
