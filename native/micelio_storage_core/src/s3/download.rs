//! Downloads from S3 in ranges. A download first asks for the object's
//! metadata and checksum, then reads `part_size` ranges with `If-Match` on
//! the ETag (a replaced object fails with `Changed` instead of mixing two
//! versions). A range that breaks off is resumed where it stopped.
//! `get_file` reads ranges in parallel into their place in the file; the
//! ranges' CRC-32s are combined and compared with the server's.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::Method;

use super::{full_object_crc32, S3Store};
use crate::buffer_pool::{BufferPool, Lent};
use crate::error::StoreError;
use crate::key::Key;
use crate::object::{Deadline, ObjectMeta};
use crate::store::{offload, GetOptions, Store};
use crate::transfer::{channel_stream, crc32_header, ByteStream, DestFile, Transfer, CHUNK};

/// Where a range's bytes go: taken chunk by chunk as the connection gives
/// them, then flushed about every `CHUNK`.
#[async_trait]
trait Sink: Send {
    /// What was taken since the last flush.
    fn taken(&mut self) -> &mut Taken;
    /// Hands on what was taken, which starts at `offset` in the object.
    async fn flush(&mut self, offset: u64) -> Result<(), StoreError>;
}

/// A download's buffers for the bytes its sinks take: each holds a flush's
/// worth and the read that passes it, and comes back here when its bytes
/// are written (a file) or let go of by their reader (a stream).
///
/// Why copy the connection's chunks into these at all: a chunk held until
/// it is written (or until the BEAM collects its binary) keeps hyper's
/// 412 KiB read buffer shared, so hyper takes a fresh one for each read,
/// and glibc maps each with `mmap`: 2,162 `mmap`s per GiB, their page
/// faults and `munmap`s were a third to a half of a download's CPU.
/// Dropped as soon as it is copied, the read buffer is reused in place;
/// the copy costs far less.
type Buffers = Arc<BufferPool>;

/// A new download's `Buffers`: at most 8 wait for reuse; more are freed.
fn download_buffers() -> Buffers {
    Arc::new(BufferPool::new(8, usize::MAX))
}

/// The capacity of a download's buffer: a flush's worth and the read
/// that passes it.
const BUFFER: usize = CHUNK + READ_BUFFER;

/// The bytes a sink took since its last flush, in a buffer of its
/// download's `Buffers` (given back when the sink is dropped).
struct Taken {
    /// No capacity until the first chunk.
    buffer: Vec<u8>,
    buffers: Buffers,
}

impl Taken {
    fn new(buffers: Buffers) -> Self {
        Taken {
            buffer: Vec::new(),
            buffers,
        }
    }

    /// Copies one of the connection's chunks, which is dropped here.
    fn push(&mut self, chunk: Bytes) {
        if self.buffer.capacity() == 0 {
            self.buffer = self.buffers.take(BUFFER);
        }
        self.buffer.extend_from_slice(&chunk);
    }

    fn len(&self) -> usize {
        self.buffer.len()
    }

    /// The bytes taken, as one `Bytes` whose buffer goes back to the
    /// download's `Buffers` once every slice of it is dropped.
    fn lend(&mut self) -> Bytes {
        Bytes::from_owner(Lent::of(
            std::mem::take(&mut self.buffer),
            self.buffers.clone(),
        ))
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if self.buffer.capacity() > 0 {
            self.buffers.give(std::mem::take(&mut self.buffer));
        }
    }
}

/// Into a stream's channel, in order, as one binary per flush.
struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, StoreError>>,
    taken: Taken,
}

impl ChannelSink {
    fn new(tx: tokio::sync::mpsc::Sender<Result<Bytes, StoreError>>) -> Self {
        ChannelSink {
            tx,
            taken: Taken::new(download_buffers()),
        }
    }
}

#[async_trait]
impl Sink for ChannelSink {
    fn taken(&mut self) -> &mut Taken {
        &mut self.taken
    }

    async fn flush(&mut self, _offset: u64) -> Result<(), StoreError> {
        let mut chunk = self.taken.lend();
        // At most `CHUNK` (1 MiB) per item, as the docs promise: what is
        // buffered can pass it by the connection's last read. Slices of one
        // buffer, no copy.
        while !chunk.is_empty() {
            let piece = chunk.split_to(chunk.len().min(CHUNK));
            // A dropped stream ends the download.
            self.tx
                .send(Ok(piece))
                .await
                .map_err(|_| StoreError::Timeout)?;
        }
        Ok(())
    }
}

/// Into its place in a file, counting the bytes written for progress.
struct FileSink {
    file: Arc<std::fs::File>,
    /// One writer at a time: the file's inode lock serializes them anyway,
    /// and waiters spinning on it cost CPU the transfer needs.
    turn: Arc<std::sync::Mutex<()>>,
    written: Arc<AtomicU64>,
    total: u64,
    xfer: Transfer,
    /// Its buffer is kept from flush to flush.
    taken: Taken,
}

#[async_trait]
impl Sink for FileSink {
    fn taken(&mut self) -> &mut Taken {
        &mut self.taken
    }

    async fn flush(&mut self, offset: u64) -> Result<(), StoreError> {
        let data = std::mem::take(&mut self.taken.buffer);
        let len = data.len() as u64;
        let (file, turn) = (self.file.clone(), self.turn.clone());
        let mut data = offload(move || {
            let _turn = lock(&turn);
            DestFile::write_at(&file, &data, offset).map(|()| data)
        })
        .await?;
        data.clear();
        self.taken.buffer = data;
        let done = self.written.fetch_add(len, Ordering::Relaxed) + len;
        self.xfer.report(done, Some(self.total));
        Ok(())
    }
}

/// hyper's largest read buffer (8 KiB + 100 x 4 KiB): the most one chunk
/// of the connection's can hold.
const READ_BUFFER: usize = 8192 + 4096 * 100;

/// A lock that a panicked holder did not spoil (the guarded data is a
/// turn, whole either way).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl S3Store {
    /// Metadata and the server's whole-object CRC-32 (when it keeps one).
    async fn head_checksum(
        &self,
        key: &Key,
        deadline: Deadline,
    ) -> Result<(ObjectMeta, Option<String>), StoreError> {
        let path = self.object_path(key);
        let mut headers = Vec::new();
        if self.asks_checksums() {
            headers.push(("x-amz-checksum-mode".to_string(), "ENABLED".to_string()));
        }
        match self
            .send(Method::HEAD, &path, vec![], headers, None, true, deadline)
            .await
        {
            Ok(ans) => Ok((
                super::meta_from_headers(&ans.headers),
                full_object_crc32(&ans.headers),
            )),
            // Tells a missing key from a missing bucket, as `head` does.
            Err(StoreError::NotFound) => Err(self
                .head(key, &Default::default(), deadline)
                .await
                .err()
                .unwrap_or(StoreError::NotFound)),
            Err(e) => Err(e),
        }
    }

    /// Reads `[*at, end)` of the object into `sink` in `CHUNK`s, resuming
    /// where it stopped when the connection breaks (retries as `send`).
    /// Returns the CRC-32 of the bytes read.
    async fn fetch_range(
        &self,
        path: &str,
        etag: &str,
        start: u64,
        end: u64,
        sink: &mut dyn Sink,
        xfer: &Transfer,
    ) -> Result<crc32fast::Hasher, StoreError> {
        let mut crc = crc32fast::Hasher::new();
        // `flushed`: bytes handed on by the sink; `received`: also those
        // it holds.
        let (mut flushed, mut received) = (start, start);
        let mut attempt = 0;
        while received < end {
            let before = received;
            let headers = vec![
                (
                    "range".to_string(),
                    format!("bytes={}-{}", received, end - 1),
                ),
                ("if-match".to_string(), format!("\"{etag}\"")),
            ];
            let read = async {
                let mut resp = match self.open_body(path, headers, xfer.step()).await {
                    Err(StoreError::PreconditionFailed) => return Err(StoreError::Changed),
                    other => other?,
                };
                loop {
                    let chunk = tokio::time::timeout(xfer.idle, resp.chunk())
                        .await
                        .map_err(|_| StoreError::Timeout)?
                        .map_err(|e| super::network_error(e, &self.endpoint))?;
                    let Some(mut chunk) = chunk else { break };
                    // In place: a second handle would keep the connection's
                    // buffer shared until the end of this turn (see FileSink).
                    chunk.truncate((end - received) as usize);
                    crc.update(&chunk);
                    received += chunk.len() as u64;
                    sink.taken().push(chunk);
                    if sink.taken().len() >= CHUNK || received == end {
                        let taken = sink.taken().len() as u64;
                        sink.flush(flushed).await?;
                        flushed += taken;
                    }
                    if received == end {
                        break;
                    }
                }
                Ok::<(), StoreError>(())
            };
            let outcome = read.await;
            // A connection that made progress before it broke (a server
            // that closed it while a slow consumer held the stream) starts
            // the count of retries afresh: only failures in a row give up.
            if received > before {
                attempt = 0;
            }
            match outcome {
                Ok(()) if received < end => {
                    // The body ended early: ask for the rest.
                    attempt += 1;
                    if attempt > self.policy.max_retries {
                        return Err(StoreError::Network(format!(
                            "{}: the body ended {} bytes early",
                            self.endpoint,
                            end - received
                        )));
                    }
                }
                Ok(()) => {}
                Err(e)
                    if attempt < self.policy.max_retries
                        && matches!(e, StoreError::Network(_) | StoreError::Timeout)
                        && !xfer.limit.remaining().is_zero() =>
                {
                    attempt += 1;
                    crate::observe::retried();
                    tokio::time::sleep(self.policy.backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(crc)
    }

    /// A stream of the object (or `opts.range` of it): one GET of the whole
    /// range, read by a producer task a chunk or two ahead of the consumer.
    ///
    /// Why one request and not a range per part, as `download_file` makes:
    /// a stream is read in order, so parts would run one after another and
    /// every part would wait out a request's first-byte latency with the
    /// consumer idle (1 GiB from SeaweedFS in 8 MiB parts took 1.5-1.6 s,
    /// in one request 0.9-1.4 s). The socket's buffer is the read-ahead,
    /// and a connection that breaks part-way resumes where it stopped with
    /// a Range request that asks `If-Match` on the ETag (`fetch_range`).
    pub(super) async fn download_stream(
        &self,
        key: &Key,
        opts: &GetOptions,
        xfer: &Transfer,
    ) -> Result<(ObjectMeta, ByteStream), StoreError> {
        let (meta, server_crc) = self.head_checksum(key, xfer.step()).await?;
        let (start, end) = match opts.range {
            Some(r) => r.within(meta.size),
            None => (0, meta.size),
        };
        let expected = server_crc.filter(|_| opts.range.is_none());
        let (tx, stream) = channel_stream(2);
        let (store, path, etag, xfer) = (
            self.clone(),
            self.object_path(key),
            meta.etag.clone(),
            xfer.clone(),
        );
        tokio::spawn(async move {
            let mut sink = ChannelSink::new(tx.clone());
            let crc = match store
                .fetch_range(&path, &etag, start, end, &mut sink, &xfer)
                .await
            {
                Ok(crc) => crc,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if let Some(expected) = expected {
                let got = crc32_header(crc.finalize());
                if got != expected {
                    let _ = tx
                        .send(Err(StoreError::ChecksumMismatch(expected, got)))
                        .await;
                }
            }
        });
        Ok((meta, stream))
    }

    /// Writes the object to `path`, its ranges fetched `parts_in_flight` at
    /// a time into their place; checked against the server's CRC-32.
    pub(super) async fn download_file(
        &self,
        key: &Key,
        path: &Path,
        opts: &GetOptions,
        xfer: &Transfer,
    ) -> Result<ObjectMeta, StoreError> {
        if opts.range.is_some() {
            return Err(StoreError::InvalidConfig(
                "range",
                "get_file copies whole objects; use stream/2 for a range".into(),
            ));
        }
        let (meta, expected) = self.head_checksum(key, xfer.step()).await?;
        let owned = path.to_path_buf();
        let dest = offload(move || DestFile::create(&owned)).await?;
        let written = Arc::new(AtomicU64::new(0));
        let turn = Arc::new(std::sync::Mutex::new(()));
        let buffers = download_buffers();
        // Ranges stream to the file and hold 1 MiB each, whatever their
        // length: twice the part size halves the requests (measured 30%
        // faster on SeaweedFS than 8 MiB ranges) at no cost in memory.
        let part = self.part_size * 2;
        let ranges: Vec<(u64, u64)> = (0..meta.size.div_ceil(part))
            .map(|i| (i * part, ((i + 1) * part).min(meta.size)))
            .collect();
        let mut crcs: Vec<Option<crc32fast::Hasher>> = vec![None; ranges.len()];
        let mut tasks = tokio::task::JoinSet::new();
        let mut next = 0;
        loop {
            while tasks.len() < self.parts_in_flight && next < ranges.len() {
                let (start, end) = ranges[next];
                let (store, obj_path, etag, xfer) = (
                    self.clone(),
                    self.object_path(key),
                    meta.etag.clone(),
                    xfer.clone(),
                );
                let mut sink = FileSink {
                    file: dest.file().clone(),
                    turn: turn.clone(),
                    written: written.clone(),
                    total: meta.size,
                    xfer: xfer.clone(),
                    taken: Taken::new(buffers.clone()),
                };
                let index = next;
                tasks.spawn(async move {
                    let crc = store
                        .fetch_range(&obj_path, &etag, start, end, &mut sink, &xfer)
                        .await?;
                    Ok::<_, StoreError>((index, crc))
                });
                next += 1;
            }
            match tasks.join_next().await {
                None => break,
                Some(joined) => {
                    let (index, crc) = joined.map_err(|e| StoreError::Panic(e.to_string()))??;
                    crcs[index] = Some(crc);
                }
            }
        }
        if let Some(expected) = expected {
            let mut whole = crc32fast::Hasher::new();
            for crc in crcs.iter().flatten() {
                whole.combine(crc);
            }
            let got = crc32_header(whole.finalize());
            if got != expected {
                // `dest` is dropped: the partial file is removed.
                return Err(StoreError::ChecksumMismatch(expected, got));
            }
        }
        offload(move || dest.commit(false)).await?;
        xfer.report(meta.size, Some(meta.size));
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use futures_util::StreamExt;
    use std::time::Duration;

    fn file_sink(file: Arc<std::fs::File>, buffers: &Buffers) -> FileSink {
        FileSink {
            file,
            turn: Arc::new(std::sync::Mutex::new(())),
            written: Arc::new(AtomicU64::new(0)),
            total: 0,
            xfer: Transfer::new(Duration::from_secs(5), None),
            taken: Taken::new(buffers.clone()),
        }
    }

    #[tokio::test]
    async fn a_file_sink_frees_the_connections_buffer_and_reuses_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let file = Arc::new(std::fs::File::create(&path).unwrap());
        let buffers = download_buffers();
        // A read buffer as hyper keeps one: chunks are split off and frozen.
        let mut read_buf = BytesMut::with_capacity(64 * 1024);
        let mut sink = file_sink(file.clone(), &buffers);
        for round in 0..3u8 {
            read_buf.extend_from_slice(&[round; 64 * 1024]);
            sink.taken().push(read_buf.split().freeze());
            // Nothing holds the chunk: the next read fills the same memory
            // instead of a fresh allocation.
            assert!(read_buf.try_reclaim(64 * 1024), "round {round}");
        }
        let own = sink.taken.buffer.as_ptr();
        sink.flush(0).await.unwrap();
        assert_eq!(sink.taken.buffer.as_ptr(), own);
        drop(sink);
        // The next range of the download takes the same buffer.
        let mut next = file_sink(file, &buffers);
        next.taken().push(Bytes::from_static(b"tail"));
        assert_eq!(next.taken.buffer.as_ptr(), own);
        next.flush(3 * 64 * 1024).await.unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written.len(), 3 * 64 * 1024 + 4);
        assert!(written[..64 * 1024].iter().all(|&b| b == 0));
        assert!(written[2 * 64 * 1024..3 * 64 * 1024]
            .iter()
            .all(|&b| b == 2));
        assert_eq!(&written[3 * 64 * 1024..], b"tail");
    }

    #[tokio::test]
    async fn a_stream_sink_frees_the_connections_buffer_and_reuses_items_let_go_of() {
        let (tx, mut stream) = channel_stream(4);
        let mut sink = ChannelSink::new(tx);
        let mut read_buf = BytesMut::with_capacity(64 * 1024);
        read_buf.extend_from_slice(&[1; 64 * 1024]);
        sink.taken().push(read_buf.split().freeze());
        assert!(read_buf.try_reclaim(64 * 1024));
        sink.flush(0).await.unwrap();
        let item = stream.next().await.unwrap().unwrap();
        assert_eq!(&item[..], &[1; 64 * 1024][..]);
        let first = item.as_ptr();
        // Held by the reader: the next flush takes another buffer.
        sink.taken().push(Bytes::from_static(b"two"));
        sink.flush(0).await.unwrap();
        let second = stream.next().await.unwrap().unwrap();
        assert_ne!(second.as_ptr(), first);
        assert_eq!(&item[..3], &[1, 1, 1]);
        // Let go of: its buffer serves a later flush.
        drop(item);
        sink.taken().push(Bytes::from_static(b"three"));
        sink.flush(0).await.unwrap();
        let third = stream.next().await.unwrap().unwrap();
        assert_eq!(third.as_ptr(), first);
        assert_eq!(&third[..], b"three");
        assert_eq!(&second[..], b"two");
    }
}
