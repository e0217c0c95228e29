//! Uploads to S3: one PUT below `multipart_threshold`, a multipart upload
//! above. The parts go out `parts_in_flight` at a time, each bounded by its
//! own deadline, retried on its own and sent with its CRC-32 (the server
//! refuses a damaged part); the upload completes with the part ETags and the
//! whole object's CRC-32 (`FULL_OBJECT`). Any failure, and the caller's
//! death, aborts the upload: `AbortGuard` sends the abort even when the
//! future is dropped, so no orphaned parts stay on the server.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;

use super::xml::{self, CompletedPart};
use super::{error, malformed, S3Store, MAX_PARTS, MIN_PART};
use crate::error::StoreError;
use crate::key::Key;
use crate::object::{Deadline, ObjectMeta};
use crate::store::{PutCondition, PutOptions};
use crate::transfer::{crc32_header, read_part, ByteSource, Transfer};

/// What one UploadPart task gives: the part, its CRC-32 and its length.
type PartResult = Result<(CompletedPart, u32, u64), StoreError>;

/// Aborts a multipart upload unless disarmed: explicitly on a failure, or
/// from `Drop` (a detached task) when the upload's future is dropped.
///
/// It owns the part uploads in flight, and lets them finish before the
/// abort is sent. A part the server is still writing when an abort lands
/// can outlive the abort (the S3 docs say to abort again; s3s-fs keeps such
/// a part on its disk for good, where no S3 call can reach it), so the
/// abort waits until no part request is outstanding. That costs at most
/// `parts_in_flight` parts, each bounded by its own deadline.
struct AbortGuard {
    armed: Option<(S3Store, String, String)>,
    in_flight: tokio::task::JoinSet<PartResult>,
}

impl AbortGuard {
    fn new(store: &S3Store, path: &str, id: &str) -> Self {
        AbortGuard {
            armed: Some((store.clone(), path.to_string(), id.to_string())),
            in_flight: tokio::task::JoinSet::new(),
        }
    }

    fn disarm(&mut self) {
        self.armed = None;
    }

    /// Ends the upload with its outcome: a success disarms the guard, a
    /// failure aborts (after the parts in flight) before it is returned.
    async fn settle(mut self, done: Result<(), StoreError>) -> Result<(), StoreError> {
        match done {
            Ok(()) => self.disarm(),
            Err(_) => self.abort_now().await,
        }
        done
    }

    /// Waits for the parts in flight, then aborts and waits for the answer.
    async fn abort_now(&mut self) {
        while self.in_flight.join_next().await.is_some() {}
        if let Some((store, path, id)) = self.armed.take() {
            store.abort_upload(&path, &id).await;
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some((store, path, id)) = self.armed.take() {
            let mut in_flight = std::mem::take(&mut self.in_flight);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    while in_flight.join_next().await.is_some() {}
                    store.abort_upload(&path, &id).await
                });
            }
        }
    }
}

/// S3's largest part.
const MAX_PART: u64 = 5 << 30;

/// How many bytes part `number` (from 1) of an upload holds when its
/// parts are `base` bytes to start with. With `grow` (an upload of unknown
/// size where the provider takes unequal parts), the size doubles every
/// 1,000 parts, up to S3's 5 GiB: 8 MiB parts reach about 8 TiB in 10,000
/// parts, beyond S3's 5 TiB object, where equal parts stop at 78 GiB.
fn part_len(base: usize, number: u32, grow: bool) -> usize {
    if !grow {
        return base;
    }
    let doublings = ((number.saturating_sub(1)) / 1000).min(20);
    (base as u64)
        .saturating_mul(1 << doublings)
        .min(MAX_PART.max(base as u64)) as usize
}

impl S3Store {
    /// The part size for an object of `size` bytes: the configured one, or
    /// larger when it would take more than S3's 10,000 parts.
    pub(super) fn part_size_for(&self, size: Option<u64>) -> u64 {
        let needed = size.map_or(0, |s| s.div_ceil(MAX_PARTS));
        let mib = 1 << 20;
        self.part_size.max(needed.div_ceil(mib) * mib).max(MIN_PART)
    }

    /// Writes what `source` yields under `key`: one PUT below the
    /// threshold, a multipart upload above it.
    pub(super) async fn upload(
        &self,
        key: &Key,
        mut source: Box<dyn ByteSource>,
        opts: &PutOptions,
        xfer: &Transfer,
    ) -> Result<(), StoreError> {
        let total = source.size();
        let part = self.part_size_for(total);
        // The first parts are read whole before deciding, so the threshold
        // is a multiple of the part size.
        let threshold = self.multipart_threshold.max(part).div_ceil(part) * part;
        let head = read_part(&mut *source, threshold as usize, xfer)
            .await?
            .unwrap_or_default();
        if (head.len() as u64) < threshold {
            let len = head.len() as u64;
            self.write(key, head, opts, xfer.step()).await?;
            xfer.report(len, Some(len));
            return Ok(());
        }
        let path = self.object_path(key);
        let id = self.create_upload(key, opts, xfer.step()).await?;
        let mut guard = AbortGuard::new(self, &path, &id);
        let sent = self
            .send_parts(
                &path,
                &id,
                head,
                &mut *source,
                part as usize,
                total,
                xfer,
                &mut guard.in_flight,
            )
            .await;
        let done = match sent {
            Ok((parts, crc)) => self.complete(&path, &id, &parts, crc, opts, xfer).await,
            Err(e) => Err(e),
        };
        guard.settle(done).await
    }

    /// A server-side copy of an object too large for one CopyObject (over
    /// 5 GB, or over `s3_copy_multipart_threshold`): an UploadPartCopy per
    /// range, `parts_in_flight` at a time, then the completion. No byte
    /// passes through this client; a failure aborts the upload. With
    /// `if_absent`, the completion carries `If-None-Match: *`.
    pub(super) async fn copy_in_parts(
        &self,
        from: &Key,
        to: &Key,
        source_meta: &ObjectMeta,
        if_absent: bool,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        use futures_util::stream::{self, StreamExt, TryStreamExt};

        let path = self.object_path(to);
        // The copy keeps the source's content type, headers and metadata,
        // as CopyObject does.
        let headers = self.object_headers(to, &source_meta.attributes);
        let query = vec![("uploads".to_string(), String::new())];
        let ans = self
            .send(Method::POST, &path, query, headers, None, true, deadline)
            .await?;
        let id = xml::parse_upload_id(&ans.body).map_err(|e| malformed(ans.status, e))?;
        let guard = AbortGuard::new(self, &path, &id);
        let source = self.copy_source(from);
        let size = source_meta.size;
        let part = self.part_size_for(Some(size));
        let ranges: Vec<(u32, u64, u64)> = (1u32..)
            .zip((0..size).step_by(part as usize))
            .map(|(n, start)| (n, start, (start + part).min(size) - 1))
            .collect();
        let copied: Result<Vec<CompletedPart>, StoreError> = stream::iter(ranges)
            .map(|(n, first, last)| {
                let (path, id, source) = (&path, &id, &source);
                async move {
                    self.copy_part(path, id, n, source, first, last, deadline)
                        .await
                }
            })
            .buffered(self.parts_in_flight.max(1))
            .try_collect()
            .await;
        let done = match copied {
            Ok(parts) => {
                let body = Bytes::from(xml::complete_request(&parts));
                let mut headers = vec![("content-type".to_string(), "application/xml".to_string())];
                if if_absent {
                    headers.push(("if-none-match".to_string(), "*".to_string()));
                }
                let query = vec![("uploadId".to_string(), id.clone())];
                self.send_document(
                    Method::POST,
                    &path,
                    query,
                    headers,
                    Some(body),
                    true,
                    "CompleteMultipartUploadResult",
                    deadline,
                )
                .await
                .map(|_| ())
            }
            Err(e) => Err(e),
        };
        guard.settle(done).await
    }

    /// One UploadPartCopy of bytes `first..=last` of the source.
    #[allow(clippy::too_many_arguments)]
    async fn copy_part(
        &self,
        path: &str,
        id: &str,
        number: u32,
        source: &str,
        first: u64,
        last: u64,
        deadline: Deadline,
    ) -> Result<CompletedPart, StoreError> {
        let headers = vec![
            ("x-amz-copy-source".to_string(), source.to_string()),
            (
                "x-amz-copy-source-range".to_string(),
                format!("bytes={first}-{last}"),
            ),
        ];
        let query = vec![
            ("partNumber".to_string(), number.to_string()),
            ("uploadId".to_string(), id.to_string()),
        ];
        let ans = self
            .send_document(
                Method::PUT,
                path,
                query,
                headers,
                None,
                true,
                "CopyPartResult",
                deadline,
            )
            .await?;
        let etag = xml::parse_copy_part_etag(&ans.body).map_err(|e| malformed(ans.status, e))?;
        Ok(CompletedPart {
            number,
            etag,
            crc32: String::new(),
        })
    }

    async fn create_upload(
        &self,
        key: &Key,
        opts: &PutOptions,
        deadline: Deadline,
    ) -> Result<String, StoreError> {
        let mut headers = self.object_headers(key, &opts.attributes);
        if self.switches.checksum_headers {
            headers.push(("x-amz-checksum-algorithm".into(), "CRC32".into()));
            headers.push(("x-amz-checksum-type".into(), "FULL_OBJECT".into()));
        }
        let query = vec![("uploads".to_string(), String::new())];
        let ans = self
            .send(
                Method::POST,
                &self.object_path(key),
                query,
                headers,
                None,
                true,
                deadline,
            )
            .await?;
        xml::parse_upload_id(&ans.body).map_err(|e| malformed(ans.status, e))
    }

    /// Sends every part, `parts_in_flight` at a time, each in its own task
    /// of `tasks` (the abort guard's, which lets them finish before it
    /// aborts). Returns the parts in order and the whole object's CRC-32.
    #[allow(clippy::too_many_arguments)]
    async fn send_parts(
        &self,
        path: &str,
        id: &str,
        head: Bytes,
        source: &mut dyn ByteSource,
        part_size: usize,
        total: Option<u64>,
        xfer: &Transfer,
        tasks: &mut tokio::task::JoinSet<PartResult>,
    ) -> Result<(Vec<CompletedPart>, u32), StoreError> {
        let mut first: std::collections::VecDeque<Bytes> = Default::default();
        let mut rest = head;
        while !rest.is_empty() {
            let n = rest.len().min(part_size);
            first.push_back(rest.split_to(n));
        }
        let mut parts: Vec<(CompletedPart, u32, u64)> = Vec::new();
        let (mut number, mut done, mut exhausted) = (0u32, 0u64, false);
        let grow = total.is_none() && !self.switches.equal_parts;
        loop {
            while tasks.len() < self.parts_in_flight && !exhausted {
                let body = match first.pop_front() {
                    Some(p) => Some(p),
                    None => read_part(source, part_len(part_size, number + 1, grow), xfer).await?,
                };
                let Some(body) = body else {
                    exhausted = true;
                    break;
                };
                number += 1;
                if u64::from(number) > MAX_PARTS {
                    return Err(StoreError::InvalidConfig(
                        "s3_part_size",
                        format!(
                            "the object needs more than {MAX_PARTS} parts: raise the part size"
                        ),
                    ));
                }
                let (store, path, id, deadline) =
                    (self.clone(), path.to_string(), id.to_string(), xfer.step());
                tasks.spawn(
                    async move { store.upload_part(&path, &id, number, body, deadline).await },
                );
            }
            match tasks.join_next().await {
                None => break,
                Some(joined) => {
                    let part = joined.map_err(|e| StoreError::Panic(e.to_string()))??;
                    done += part.2;
                    xfer.report(done, total);
                    parts.push(part);
                }
            }
        }
        parts.sort_by_key(|(p, _, _)| p.number);
        let mut whole = crc32fast::Hasher::new();
        for (_, crc, len) in &parts {
            whole.combine(&crc32fast::Hasher::new_with_initial_len(*crc, *len));
        }
        Ok((
            parts.into_iter().map(|(p, _, _)| p).collect(),
            whole.finalize(),
        ))
    }

    /// One UploadPart with its CRC-32, retried on its own.
    async fn upload_part(
        &self,
        path: &str,
        id: &str,
        number: u32,
        body: Bytes,
        deadline: Deadline,
    ) -> PartResult {
        let len = body.len() as u64;
        let digests = self.body_digests(&body).await;
        let (crc, headers) = (digests.crc, digests.headers);
        let query = vec![
            ("partNumber".to_string(), number.to_string()),
            ("uploadId".to_string(), id.to_string()),
        ];
        let ans = self
            .send(
                Method::PUT,
                path,
                query,
                headers,
                Some(body),
                true,
                deadline,
            )
            .await?;
        let etag = ans
            .headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| malformed(ans.status, "UploadPart answered no ETag".into()))?;
        Ok((
            CompletedPart {
                number,
                etag: etag.to_string(),
                // Named in the completion only where checksums are sent.
                crc32: if self.switches.checksum_headers {
                    crc32_header(crc)
                } else {
                    String::new()
                },
            },
            crc,
            len,
        ))
    }

    async fn complete(
        &self,
        path: &str,
        id: &str,
        parts: &[CompletedPart],
        crc: u32,
        opts: &PutOptions,
        xfer: &Transfer,
    ) -> Result<(), StoreError> {
        let body = Bytes::from(xml::complete_request(parts));
        let mut headers = vec![("content-type".to_string(), "application/xml".to_string())];
        if self.switches.checksum_headers {
            headers.push(("x-amz-checksum-crc32".to_string(), crc32_header(crc)));
            headers.push(("x-amz-checksum-type".to_string(), "FULL_OBJECT".to_string()));
        }
        match &opts.condition {
            PutCondition::Always => {}
            PutCondition::IfNoneMatch => headers.push(("if-none-match".into(), "*".into())),
            PutCondition::IfMatch(etag) => headers.push((
                "if-match".into(),
                format!("\"{}\"", crate::object::bare_etag(etag)),
            )),
        }
        let query = vec![("uploadId".to_string(), id.to_string())];
        let ans = self
            .send_document(
                Method::POST,
                path,
                query,
                headers,
                Some(body),
                opts.condition == PutCondition::Always,
                "CompleteMultipartUploadResult",
                xfer.step(),
            )
            .await
            .map_err(|e| super::objects::if_match_on_missing(&opts.condition, e))?;
        let result = xml::parse_complete(&ans.body)
            .map_err(|e| error::from_code(ans.status.as_u16(), e, &self.bucket))?;
        if let Some(server) = result.crc32 {
            if server != crc32_header(crc) {
                return Err(StoreError::ChecksumMismatch(crc32_header(crc), server));
            }
        }
        Ok(())
    }

    /// AbortMultipartUpload, best effort; asked twice, since a part still
    /// in flight when the first abort lands may leave data (the S3 docs say
    /// to abort again).
    pub(super) async fn abort_upload(&self, path: &str, id: &str) {
        for round in 0..2 {
            if round > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            let query = vec![("uploadId".to_string(), id.to_string())];
            let deadline = Deadline::after(self.request_timeout);
            let _ = self
                .send(Method::DELETE, path, query, vec![], None, true, deadline)
                .await;
        }
    }

    /// The multipart uploads in progress under the store's prefix, as
    /// `(key, upload id)`: what a crashed process may have left.
    pub async fn list_uploads(
        &self,
        deadline: Deadline,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .uploads_under("", deadline)
            .await?
            .into_iter()
            .map(|u| (u.key, u.id))
            .collect())
    }

    /// Every upload in progress under the store's prefix and `prefix`, page
    /// after page; keys without the store's prefix.
    async fn uploads_under(
        &self,
        prefix: &str,
        deadline: Deadline,
    ) -> Result<Vec<xml::Upload>, StoreError> {
        let full = format!("{}{}", self.prefix, prefix);
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = vec![
                ("uploads".to_string(), String::new()),
                ("prefix".to_string(), full.clone()),
            ];
            if let Some((key, id)) = markers.take() {
                query.push(("key-marker".to_string(), key));
                query.push(("upload-id-marker".to_string(), id));
            }
            let ans = self
                .send(
                    Method::GET,
                    &self.bucket_root(),
                    query,
                    vec![],
                    None,
                    true,
                    deadline,
                )
                .await?;
            let page = xml::parse_uploads(&ans.body).map_err(|e| malformed(ans.status, e))?;
            uploads.extend(page.uploads.into_iter().filter_map(|mut u| {
                u.key = u.key.strip_prefix(&self.prefix)?.to_string();
                Some(u)
            }));
            match page.next {
                Some(next) => markers = Some(next),
                None => return Ok(uploads),
            }
        }
    }

    /// Aborts the uploads under `prefix` started more than `older_than`
    /// ago (by the server's `Initiated`, against our clock corrected for
    /// skew); returns how many were aborted. An upload whose start cannot
    /// be read is left alone: it may be in progress.
    pub async fn abort_uploads_older_than(
        &self,
        prefix: &str,
        older_than: Duration,
        deadline: Deadline,
    ) -> Result<u64, StoreError> {
        let now_ms = self.now_unix() as i128 * 1000;
        let cutoff = now_ms - older_than.as_millis() as i128;
        let mut aborted = 0;
        for upload in self.uploads_under(prefix, deadline).await? {
            let started = super::credentials::parse_rfc3339(&upload.initiated)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i128);
            let Some(started) = started else { continue };
            if started > cutoff {
                continue;
            }
            let path = self.object_path_of(&upload.key);
            let query = vec![("uploadId".to_string(), upload.id.clone())];
            match self
                .send(Method::DELETE, &path, query, vec![], None, true, deadline)
                .await
            {
                Ok(_) => aborted += 1,
                // Completed or aborted by someone else meanwhile.
                Err(StoreError::Service { code, .. }) if code == "NoSuchUpload" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(aborted)
    }
}

#[cfg(test)]
mod tests {
    use super::part_len;

    #[test]
    fn equal_parts_stay_equal() {
        assert_eq!(part_len(8 << 20, 1, false), 8 << 20);
        assert_eq!(part_len(8 << 20, 9_999, false), 8 << 20);
    }

    #[test]
    fn parts_of_unknown_uploads_double_every_thousand_up_to_5_gib() {
        let mib = 1usize << 20;
        assert_eq!(part_len(8 * mib, 1, true), 8 * mib);
        assert_eq!(part_len(8 * mib, 1_000, true), 8 * mib);
        assert_eq!(part_len(8 * mib, 1_001, true), 16 * mib);
        assert_eq!(part_len(8 * mib, 2_001, true), 32 * mib);
        assert_eq!(part_len(8 * mib, 10_000, true), 4096 * mib);
        assert_eq!(part_len(64 * mib, 10_000, true), 5 << 30);
        let total: u64 = (1..=10_000u32)
            .map(|n| part_len(8 * mib, n, true) as u64)
            .sum();
        assert!(
            total > 5 << 40,
            "10,000 parts hold more than S3's 5 TiB object"
        );
    }
}
