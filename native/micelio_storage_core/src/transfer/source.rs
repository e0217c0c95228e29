//! Where upload bytes come from: a file read in parts into reused
//! buffers, chunks already in memory, or a caller pulled for more.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{io_error, Transfer};
use crate::blocking::offload;
use crate::error::StoreError;

/// Where the bytes of an upload come from, read in order.
#[async_trait]
pub trait ByteSource: Send {
    /// The total size, when known in advance (a file).
    fn size(&self) -> Option<u64>;
    /// Up to `max` bytes (fewer only at the end, or when the source hands
    /// out smaller chunks); `None` once it is exhausted.
    async fn read(&mut self, max: usize) -> Result<Option<Bytes>, StoreError>;
}

/// A file read from its start, a part at a time, on the blocking pool.
pub struct FileSource {
    file: Arc<File>,
    offset: u64,
    size: u64,
    /// Part buffers given back once their upload is done, reused by the
    /// next reads: a fresh 8 MiB buffer per part cost a page fault and a
    /// zeroing per 4 KiB, a sixth of an upload's CPU. Freed with the source.
    spare: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

/// At most this many idle buffers are kept per source (parts in flight
/// plus the one being read).
const SPARE_BUFFERS: usize = 8;

/// A part read into a reused buffer; the buffer goes back when the last
/// `Bytes` of it is dropped.
struct SpareBuffer {
    buf: Vec<u8>,
    len: usize,
    home: std::sync::Weak<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for SpareBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for SpareBuffer {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            let mut spare = home.lock().unwrap_or_else(|e| e.into_inner());
            if spare.len() < SPARE_BUFFERS {
                spare.push(std::mem::take(&mut self.buf));
            }
        }
    }
}

impl FileSource {
    /// Opens `path` for reading; it must be a regular file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        offload(move || {
            let file = File::open(&path).map_err(io_error)?;
            let md = file.metadata().map_err(io_error)?;
            if !md.is_file() {
                return Err(StoreError::Io(rustix::io::Errno::ISDIR.raw_os_error()));
            }
            Ok(FileSource {
                file: Arc::new(file),
                offset: 0,
                size: md.len(),
                spare: Arc::default(),
            })
        })
        .await
    }

    /// The open file (for backends that copy it in the kernel).
    pub fn file(&self) -> &File {
        &self.file
    }
}

#[async_trait]
impl ByteSource for FileSource {
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    async fn read(&mut self, max: usize) -> Result<Option<Bytes>, StoreError> {
        let (file, offset) = (self.file.clone(), self.offset);
        let want = max.min(self.size.saturating_sub(offset) as usize);
        if want == 0 {
            return Ok(None);
        }
        let spare = self.spare.clone();
        let buf = offload(move || {
            let reused = spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut buf = reused.unwrap_or_default();
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let mut filled = 0;
            while filled < want {
                match file.read_at(&mut buf[filled..want], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_error(e)),
                }
            }
            Ok(Bytes::from_owner(SpareBuffer {
                buf,
                len: filled,
                home: Arc::downgrade(&spare),
            }))
        })
        .await?;
        if buf.is_empty() {
            return Ok(None);
        }
        self.offset += buf.len() as u64;
        Ok(Some(buf))
    }
}

/// Chunks already in memory, as a source (tests, small bodies).
pub struct ChunksSource {
    chunks: std::collections::VecDeque<Bytes>,
}

impl ChunksSource {
    /// A source yielding `chunks` in order.
    pub fn new(chunks: Vec<Bytes>) -> Self {
        ChunksSource {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
        }
    }
}

#[async_trait]
impl ByteSource for ChunksSource {
    fn size(&self) -> Option<u64> {
        None
    }

    async fn read(&mut self, max: usize) -> Result<Option<Bytes>, StoreError> {
        Ok(split_front(&mut self.chunks, max))
    }
}

fn split_front(chunks: &mut std::collections::VecDeque<Bytes>, max: usize) -> Option<Bytes> {
    let front = chunks.front_mut()?;
    if front.len() <= max {
        chunks.pop_front()
    } else {
        Some(front.split_to(max))
    }
}

/// Chunks pulled on demand from a producer elsewhere (an Elixir process):
/// `ask` requests one chunk, which arrives on the channel (`None` at the
/// end, `Err` when the producer failed). One chunk is asked for at a time,
/// so memory holds the parts being sent plus the chunk being read.
pub struct PullSource {
    ask: Box<dyn Fn() + Send + Sync>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Result<Option<Bytes>, StoreError>>,
    pending: std::collections::VecDeque<Bytes>,
    done: bool,
    idle: Duration,
}

impl PullSource {
    /// A source that calls `ask` for each chunk and reads it from `rx`,
    /// waiting at most `idle` for it.
    pub fn new(
        ask: Box<dyn Fn() + Send + Sync>,
        rx: tokio::sync::mpsc::UnboundedReceiver<Result<Option<Bytes>, StoreError>>,
        idle: Duration,
    ) -> Self {
        PullSource {
            ask,
            rx,
            pending: Default::default(),
            done: false,
            idle,
        }
    }
}

#[async_trait]
impl ByteSource for PullSource {
    fn size(&self) -> Option<u64> {
        None
    }

    async fn read(&mut self, max: usize) -> Result<Option<Bytes>, StoreError> {
        while self.pending.is_empty() && !self.done {
            (self.ask)();
            match tokio::time::timeout(self.idle, self.rx.recv()).await {
                Err(_) => return Err(StoreError::Timeout),
                Ok(None) | Ok(Some(Ok(None))) => self.done = true,
                Ok(Some(Ok(Some(chunk)))) => {
                    if !chunk.is_empty() {
                        self.pending.push_back(chunk)
                    }
                }
                Ok(Some(Err(e))) => return Err(e),
            }
        }
        Ok(split_front(&mut self.pending, max))
    }
}

/// Reads exactly `size` bytes from `source`, fewer only at its end; `None`
/// when it is already exhausted. One buffer, no copy when the source hands
/// out the whole part at once (a file).
pub async fn read_part(
    source: &mut dyn ByteSource,
    size: usize,
    xfer: &Transfer,
) -> Result<Option<Bytes>, StoreError> {
    let Some(first) = xfer.within(source.read(size)).await? else {
        return Ok(None);
    };
    if first.len() >= size {
        return Ok(Some(first));
    }
    let mut part = BytesMut::with_capacity(size);
    part.extend_from_slice(&first);
    drop(first);
    while part.len() < size {
        match xfer.within(source.read(size - part.len())).await? {
            Some(chunk) => part.extend_from_slice(&chunk),
            None => break,
        }
    }
    Ok(Some(part.freeze()))
}

/// Reads the whole source into memory (for stores that hold objects in
/// memory anyway).
pub async fn gather(source: &mut dyn ByteSource, xfer: &Transfer) -> Result<Bytes, StoreError> {
    let mut all = BytesMut::new();
    while let Some(chunk) = xfer.within(source.read(usize::MAX)).await? {
        all.extend_from_slice(&chunk);
    }
    Ok(all.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_parts_reuse_their_buffers_and_keep_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src");
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let mut src = FileSource::open(&path).await.unwrap();
        let first = src.read(30_000).await.unwrap().unwrap();
        let kept = first.clone();
        drop(first);
        // `kept` still holds the first buffer: the next read gets another.
        let second = src.read(30_000).await.unwrap().unwrap();
        assert_eq!(&kept[..], &content[..30_000]);
        drop(kept);
        drop(second);
        let mut rest = Vec::new();
        while let Some(part) = src.read(30_000).await.unwrap() {
            rest.extend_from_slice(&part);
        }
        assert_eq!(&rest[..], &content[60_000..]);
        assert!(src.spare.lock().unwrap().len() <= 2);
    }
    #[tokio::test]
    async fn read_part_joins_small_chunks_and_stops_at_the_end() {
        let xfer = Transfer::new(Duration::from_secs(5), None);
        let chunks = (0..10).map(|i| Bytes::from(vec![i as u8; 3])).collect();
        let mut src = ChunksSource::new(chunks);
        let a = read_part(&mut src, 7, &xfer).await.unwrap().unwrap();
        assert_eq!(&a[..], &[0, 0, 0, 1, 1, 1, 2]);
        let mut total = a.len();
        while let Some(p) = read_part(&mut src, 7, &xfer).await.unwrap() {
            assert!(p.len() <= 7);
            total += p.len();
        }
        assert_eq!(total, 30);
    }
    #[tokio::test]
    async fn a_missing_source_file_is_an_io_error_not_not_found() {
        let err = FileSource::open(Path::new("/nonexistent/micelio/x"))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    }
}
