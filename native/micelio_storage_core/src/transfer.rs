//! Moving objects larger than memory: where upload bytes come from
//! (`ByteSource`), the chunk streams downloads produce (`ByteStream`), the
//! per-step deadlines and progress of a transfer (`Transfer`), and a
//! destination file that appears whole or not at all (`DestFile`).
//!
//! A transfer is bounded per step, not as a whole: each part or chunk must
//! make progress within `idle`, so a 5 GB upload needs no raised timeout,
//! while a stalled one ends within it. An optional overall `limit` bounds
//! the whole.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::blocking::offload;
use crate::error::StoreError;
use crate::object::Deadline;

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

/// A filesystem error on a path the caller named (not a key): always
/// `Io`, never `NotFound`, which is kept for missing keys.
pub fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Io(
        e.raw_os_error()
            .unwrap_or(rustix::io::Errno::IO.raw_os_error()),
    )
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

/// CRC-32 of `data` as S3 sends it in `x-amz-checksum-crc32`: the
/// big-endian bytes, in base64.
pub fn crc32_header(crc: u32) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
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

    #[tokio::test]
    async fn a_missing_source_file_is_an_io_error_not_not_found() {
        let err = FileSource::open(Path::new("/nonexistent/micelio/x"))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    }
}
