//! Moving objects larger than memory: where upload bytes come from
//! (`ByteSource`), the chunk streams downloads produce (`ByteStream`), the
//! per-step deadlines and progress of a transfer (`Transfer`), and a
//! destination file that appears whole or not at all (`DestFile`).
//!
//! A transfer is bounded per step, not as a whole: each part or chunk must
//! make progress within `idle`, so a 5 GB upload needs no raised timeout,
//! while a stalled one ends within it. An optional overall `limit` bounds
//! the whole.
//!
//! Here: `Transfer` and the download streams; `source` holds the upload
//! sources, `dest` the destination file.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use crate::error::StoreError;
use crate::object::Deadline;

mod dest;
mod source;

pub use dest::{stream_to_file, temp_file_name, DestFile};
pub use source::{gather, read_part, ByteSource, ChunksSource, FileSource, PullSource};

/// A filesystem error on a path the caller named (not a key): always
/// `Io`, never `NotFound`, which is kept for missing keys.
pub fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Io(
        e.raw_os_error()
            .unwrap_or(rustix::io::Errno::IO.raw_os_error()),
    )
}

/// The size of the chunks downloads are handed out in.
pub const CHUNK: usize = 1 << 20;

/// Told of a transfer's progress: bytes done, and the total when known.
pub type Progress = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

/// The bounds and the progress listener of one transfer.
#[derive(Clone)]
pub struct Transfer {
    /// Told after each part or chunk.
    pub progress: Option<Progress>,
    /// Each step (a part, a chunk, a request) must finish within this.
    pub idle: Duration,
    /// The whole transfer must end by then.
    pub limit: Deadline,
}

impl std::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfer")
            .field("idle", &self.idle)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Transfer {
    /// A transfer whose steps each take at most `idle`, with no overall
    /// limit unless `limit` is given.
    pub fn new(idle: Duration, limit: Option<Duration>) -> Self {
        Transfer {
            progress: None,
            idle,
            limit: limit.map_or_else(Deadline::far, Deadline::after),
        }
    }

    /// The deadline of a step starting now.
    pub fn step(&self) -> Deadline {
        Deadline::after(self.idle).min(self.limit)
    }

    /// Reports progress, if anyone listens.
    pub fn report(&self, done: u64, total: Option<u64>) {
        if let Some(p) = &self.progress {
            p(done, total);
        }
    }

    /// Waits for `work` at most one step (and never past the limit).
    pub async fn within<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.step().remaining(), work)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }
}

/// A download's content, chunk by chunk.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// Bytes in memory as a stream of `CHUNK`-sized slices (no copies).
pub fn chunked(body: Bytes) -> ByteStream {
    let mut rest = body;
    Box::pin(futures_util::stream::iter(std::iter::from_fn(move || {
        if rest.is_empty() {
            None
        } else {
            let n = rest.len().min(CHUNK);
            Some(Ok(rest.split_to(n)))
        }
    })))
}

/// A stream fed by a producer task through a small channel: the producer
/// waits while the consumer is behind, and stops once it is dropped.
pub fn channel_stream(
    capacity: usize,
) -> (
    tokio::sync::mpsc::Sender<Result<Bytes, StoreError>>,
    ByteStream,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(capacity.max(1));
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, Box::pin(stream))
}

/// CRC-32 of `data` as S3 sends it in `x-amz-checksum-crc32`: the
/// big-endian bytes, in base64.
pub fn crc32_header(crc: u32) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_source_reads_parts_and_dest_file_appears_whole() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src.bin");
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src_path, &data).unwrap();
        let xfer = Transfer::new(Duration::from_secs(5), None);
        let mut src = FileSource::open(&src_path).await.unwrap();
        assert_eq!(src.size(), Some(data.len() as u64));
        let mut parts = Vec::new();
        while let Some(p) = read_part(&mut src, CHUNK, &xfer).await.unwrap() {
            parts.push(p);
        }
        assert_eq!(parts.len(), 4);
        let joined: Vec<u8> = parts.concat();
        assert_eq!(joined, data);

        let dest = dir.path().join("out.bin");
        let stream = chunked(Bytes::from(data.clone()));
        stream_to_file(stream, &dest, None, &xfer).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        // A failed stream leaves neither the file nor a temp behind.
        let failing: ByteStream = Box::pin(futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(StoreError::Timeout),
        ]));
        let dest2 = dir.path().join("never.bin");
        assert!(stream_to_file(failing, &dest2, None, &xfer).await.is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.contains("never")), "{names:?}");
    }
}
