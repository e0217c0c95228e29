//! Streams from the first tier that holds the object, teeing an origin
//! stream into the disk tier.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::disk::{self, DiskTier};
use crate::error::StoreError;
use crate::key::Key;
use crate::object::ObjectMeta;
use crate::store::{ByteRange, GetOptions};
use crate::transfer::{self, ByteStream, Transfer};

use super::{lock, TieredStore, Value};

impl<V: Value> TieredStore<V> {
    /// A stream of the object from the first tier that holds it: RAM, the
    /// disk tier (its CRC checked at the end), else the origin. A whole
    /// object small enough for the disk tier fills it as it streams.
    pub(super) async fn stream(
        &self,
        key: &Key,
        opts: &GetOptions,
        xfer: &Transfer,
    ) -> Result<(ObjectMeta, ByteStream), StoreError> {
        let within = |meta: &ObjectMeta| {
            opts.range
                .unwrap_or(ByteRange {
                    offset: 0,
                    length: None,
                })
                .within(meta.size)
        };
        if let Some((value, Some(meta))) = self
            .memory
            .as_ref()
            .and_then(|m| m.lookup(key.as_str(), true, false))
        {
            let (start, end) = within(&meta);
            let body = Bytes::copy_from_slice(&value.as_bytes()[start as usize..end as usize]);
            return Ok((meta, transfer::chunked(body)));
        }
        let start_epoch = lock(&self.writes).epoch();
        if let Some(disk) = &self.disk {
            let (disk2, k) = (disk.clone(), key.as_str().to_string());
            let opened = tokio::task::spawn_blocking(move || disk2.open_body(&k))
                .await
                .ok()
                .flatten();
            if let Some((file, offset, meta, crc)) = opened {
                let range = within(&meta);
                let whole = range == (0, meta.size);
                let stream = disk_stream(
                    disk.clone(),
                    key.clone(),
                    file,
                    offset,
                    range,
                    whole.then_some(crc),
                );
                return Ok((meta, stream));
            }
        }
        self.origin_fetches.fetch_add(1, Ordering::Relaxed);
        let (meta, stream) = self.origin.get_stream(key, opts, xfer).await?;
        let fillable = opts.range.is_none()
            && self.disk.as_ref().is_some_and(|d| d.accepts(meta.size))
            && !lock(&self.pending).contains_key(key.as_str());
        if !fillable {
            return Ok((meta, stream));
        }
        let disk = self.disk.clone().expect("checked above");
        let (k, m) = (key.as_str().to_string(), meta.clone());
        let stage = tokio::task::spawn_blocking(move || disk.stage_stream(&k, &m))
            .await
            .ok()
            .flatten();
        let Some(stage) = stage else {
            return Ok((meta, stream));
        };
        Ok((meta, self.teeing(key.clone(), start_epoch, stream, stage)))
    }

    /// Passes `stream` on while writing it to a disk-tier stage, committed
    /// at the end unless the key was written since `start`.
    pub(super) fn teeing(
        &self,
        key: Key,
        start: u64,
        stream: ByteStream,
        stage: disk::StreamStage,
    ) -> ByteStream {
        let store = self.shared();
        let state = (stream, Some(stage), store, key);
        Box::pin(futures_util::stream::unfold(
            state,
            move |(mut stream, stage, store, key)| async move {
                use futures_util::StreamExt;
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        let stage = match stage {
                            Some(mut st) => {
                                let c = chunk.clone();
                                tokio::task::spawn_blocking(move || st.write(&c).then_some(st))
                                    .await
                                    .ok()
                                    .flatten()
                            }
                            None => None,
                        };
                        Some((Ok(chunk), (stream, stage, store, key)))
                    }
                    Some(Err(e)) => Some((Err(e), (stream, None, store, key))),
                    None => {
                        if let Some(st) = stage {
                            let (s2, k) = (store.clone(), key.clone());
                            let _ = tokio::task::spawn_blocking(move || {
                                if let Some(staged) = st.finish() {
                                    s2.fill_disk(k.as_str(), start, staged);
                                }
                            })
                            .await;
                        }
                        None
                    }
                }
            },
        ))
    }

    /// Commits a staged disk copy unless the key was written since `start`.
    pub(super) fn fill_disk(&self, key: &str, start: u64, staged: disk::Staged) {
        let Some(disk) = &self.disk else { return };
        let _stripe = self.stripe(key);
        let writing = lock(&self.pending).contains_key(key);
        if writing || lock(&self.writes).written_since(key, start) {
            disk.discard(staged);
        } else {
            disk.commit(staged);
        }
    }
}

/// A disk-tier copy read in chunks from `offset` (where its content starts);
/// with `crc`, the whole content is checked at the end and a bad copy is
/// dropped and reported `Corrupt`.
pub(super) fn disk_stream(
    disk: Arc<DiskTier>,
    key: Key,
    file: std::fs::File,
    offset: u64,
    (start, end): (u64, u64),
    crc: Option<u32>,
) -> ByteStream {
    let file = Arc::new(file);
    let state = (start, crc32fast::Hasher::new());
    Box::pin(futures_util::stream::try_unfold(
        state,
        move |(at, mut hasher)| {
            let (file, disk, key) = (file.clone(), disk.clone(), key.clone());
            async move {
                if at >= end {
                    if let Some(expected) = crc {
                        if hasher.finalize() != expected {
                            let k = key.as_str().to_string();
                            let _ = tokio::task::spawn_blocking(move || disk.drop_key(&k)).await;
                            return Err(StoreError::Corrupt);
                        }
                    }
                    return Ok(None);
                }
                let want = ((end - at) as usize).min(transfer::CHUNK);
                let chunk = crate::store::offload(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = bytes::BytesMut::zeroed(want);
                    file.read_exact_at(&mut buf, offset + at)
                        .map_err(|_| StoreError::Corrupt)?;
                    Ok(buf.freeze())
                })
                .await?;
                hasher.update(&chunk);
                let next = at + chunk.len() as u64;
                Ok(Some((chunk, (next, hasher))))
            }
        },
    ))
}
