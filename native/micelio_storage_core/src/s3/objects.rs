//! The S3 calls behind the store's operations: reads, writes, listings,
//! copies, presigning, the bucket check and batch deletes.

use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use reqwest::{Method, StatusCode};

use super::provider::CopyIfAbsent;
use super::signer::{uri_encode, AmzDate};
use crate::error::StoreError;
use crate::http::headers::meta_from_headers;
use crate::key::{Key, Prefix};
use crate::object::{bare_etag, Body, BodyAlloc, Deadline, Object};
use crate::store::{
    ByteRange, DeleteManyOutcome, HeadOptions, PresignOptions, PutCondition, PutOptions, Store,
};

use super::requests::range_header;
use super::response::{content_range_total, malformed, verify_whole};
use super::{error, xml, S3Store};

/// The largest object one CopyObject copies (5 GB).
pub(super) const COPY_OBJECT_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

/// Keys per DeleteObjects request: the API's limit.
pub(super) const DELETE_BATCH: usize = 1000;

impl S3Store {
    /// Reads an object into a buffer from `alloc`; with `if_none_match`,
    /// a 304 is `NotModified`.
    pub(super) async fn read(
        &self,
        key: &Key,
        alloc: BodyAlloc,
        if_none_match: Option<&str>,
        range: Option<ByteRange>,
        deadline: Deadline,
    ) -> Result<Object, StoreError> {
        let path = self.object_path(key);
        let mut headers = match if_none_match {
            Some(etag) => vec![(
                "if-none-match".to_string(),
                format!("\"{}\"", bare_etag(etag)),
            )],
            None => vec![],
        };
        match range {
            // Nothing to read: only whether the object exists.
            Some(ByteRange {
                length: Some(0), ..
            }) => {
                let meta = self.head(key, &HeadOptions::default(), deadline).await?;
                return Ok(Object {
                    body: Body::Buf(alloc(0)),
                    meta,
                });
            }
            Some(r) => headers.push(("range".into(), range_header(r))),
            None if self.asks_checksums() => {
                headers.push(("x-amz-checksum-mode".into(), "ENABLED".into()))
            }
            None => {}
        }
        let ans = match self
            .send_into(
                Method::GET,
                &path,
                vec![],
                headers,
                None,
                true,
                alloc,
                true,
                deadline,
            )
            .await
        {
            // A range that starts past the end: empty, as on every backend.
            Err(StoreError::Service { status: 416, .. }) if range.is_some() => {
                let meta = self.head(key, &HeadOptions::default(), deadline).await?;
                return Ok(Object {
                    body: Body::Buf(alloc(0)),
                    meta,
                });
            }
            other => other?,
        };
        let mut meta = meta_from_headers(&ans.headers);
        if ans.status == StatusCode::PARTIAL_CONTENT {
            meta.size = content_range_total(&ans.headers).unwrap_or(meta.size);
        } else {
            meta.size = ans.body.as_slice().len() as u64;
        }
        let body = if range.is_none() {
            verify_whole(&ans.headers, ans.body).await?
        } else {
            ans.body
        };
        Ok(Object {
            body: Body::Buf(body),
            meta,
        })
    }

    /// Writes an object, with `If-None-Match: *` or `If-Match` when asked.
    pub(super) async fn write(
        &self,
        key: &Key,
        body: Bytes,
        opts: &PutOptions,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let path = self.object_path(key);
        let condition = &opts.condition;
        let mut headers = self.object_headers(key, &opts.attributes);
        // The server checks it and refuses a body damaged on the way.
        headers.extend(self.body_digests(&body).await.headers);
        match condition {
            PutCondition::Always => {}
            PutCondition::IfNoneMatch => headers.push(("if-none-match".into(), "*".into())),
            PutCondition::IfMatch(etag) => {
                headers.push(("if-match".into(), format!("\"{}\"", bare_etag(etag))))
            }
        }
        // A conditional put that reached the server must not be replayed: a
        // lost answer would turn its own success into a 412.
        let idempotent = *condition == PutCondition::Always;
        self.send(
            Method::PUT,
            &path,
            vec![],
            headers,
            Some(body),
            idempotent,
            deadline,
        )
        .await
        .map(|_| ())
        .map_err(|e| if_match_on_missing(condition, e))
    }

    /// Every key under `prefix`, following continuation tokens, sorted.
    pub(super) async fn list_all(
        &self,
        prefix: &Prefix,
        deadline: Deadline,
    ) -> Result<Vec<String>, StoreError> {
        let mut keys = self.list_pages(prefix, false, deadline).await?.keys;
        keys.sort_unstable();
        Ok(keys)
    }

    /// Every page of a ListObjectsV2 under `prefix` (one level with
    /// `delimited`), keys and prefixes without the store's prefix.
    pub(super) async fn list_pages(
        &self,
        prefix: &Prefix,
        delimited: bool,
        deadline: Deadline,
    ) -> Result<crate::store::Level, StoreError> {
        let mut all = crate::store::Level::default();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .list_request(
                    prefix,
                    delimited,
                    None,
                    token.as_deref(),
                    self.list_page_size,
                    deadline,
                )
                .await?;
            all.keys.extend(page.keys);
            all.prefixes.extend(page.prefixes);
            match (page.is_truncated, page.next_token) {
                (true, Some(next)) => token = Some(next),
                _ => break,
            }
        }
        Ok(all)
    }

    /// One ListObjectsV2 request; keys and prefixes come back without the
    /// store's prefix.
    pub(super) async fn list_request(
        &self,
        prefix: &Prefix,
        delimited: bool,
        start_after: Option<&str>,
        token: Option<&str>,
        max_keys: u32,
        deadline: Deadline,
    ) -> Result<xml::ListPage, StoreError> {
        let full_prefix = format!("{}{}", self.prefix, prefix.as_str());
        let mut query = vec![
            ("list-type".to_string(), "2".to_string()),
            ("prefix".to_string(), full_prefix),
            ("max-keys".to_string(), max_keys.to_string()),
        ];
        if delimited {
            query.push(("delimiter".to_string(), "/".to_string()));
        }
        if let Some(after) = start_after {
            query.push(("start-after".to_string(), format!("{}{after}", self.prefix)));
        }
        if let Some(t) = token {
            query.push(("continuation-token".to_string(), t.to_string()));
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
        let mut page = xml::parse_list(&ans.body).map_err(|e| malformed(ans.status, e))?;
        let strip = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string))
                .collect()
        };
        // Only keys this library can name: a folder marker (`dir/`, or the
        // store's prefix itself, which SeaweedFS lists as an empty key once
        // the folder's last object is deleted) is no object, and handing
        // it out would give callers a key every call rejects.
        page.keys = strip(std::mem::take(&mut page.keys))
            .into_iter()
            .filter(|k| Key::parse(k.as_bytes()).is_ok())
            .collect();
        page.prefixes = strip(std::mem::take(&mut page.prefixes));
        Ok(page)
    }

    /// CopyObject of `from` to `to` (UploadPartCopy over the threshold).
    /// With `if_absent`, the copy happens only where nothing is, by the
    /// provider's mechanism (`s3_copy_if_absent`); an existing destination
    /// is `PreconditionFailed`.
    pub(super) async fn copy_object(
        &self,
        from: &Key,
        to: &Key,
        if_absent: bool,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        // S3 refuses to copy an object onto itself unchanged (400
        // InvalidRequest); every other backend answers with the object as
        // it was. The object is already where it should be: check that it
        // exists, as a copy would (and, if absent was asked, it is not).
        if from == to {
            self.head(from, &HeadOptions::default(), deadline).await?;
            return if if_absent {
                Err(StoreError::PreconditionFailed)
            } else {
                Ok(())
            };
        }
        let mechanism = if_absent.then_some(self.switches.copy_if_absent);
        if mechanism == Some(CopyIfAbsent::Unsupported) {
            return Err(StoreError::InvalidConfig(
                "s3_copy_if_absent",
                "this provider has no atomic copy-if-absent (s3_copy_if_absent: :none), \
                 and a HEAD before the copy would race; set the mechanism it supports"
                    .into(),
            ));
        }
        // Over the threshold (lowered, as in tests), or by the multipart
        // mechanism, the copy goes in parts.
        if self.copy_multipart_threshold < COPY_OBJECT_LIMIT
            || mechanism == Some(CopyIfAbsent::Multipart)
        {
            let meta = self.head(from, &HeadOptions::default(), deadline).await?;
            if meta.size > self.copy_multipart_threshold
                || mechanism == Some(CopyIfAbsent::Multipart)
            {
                return self
                    .copy_in_parts(from, to, &meta, if_absent, deadline)
                    .await;
            }
        }
        let mut headers = vec![("x-amz-copy-source".to_string(), self.copy_source(from))];
        match mechanism {
            Some(CopyIfAbsent::IfNoneMatch) => {
                headers.push(("if-none-match".to_string(), "*".to_string()))
            }
            Some(CopyIfAbsent::R2Header) => headers.push((
                "cf-copy-destination-if-none-match".to_string(),
                "*".to_string(),
            )),
            _ => {}
        }
        // A copy can fail after the 200 is sent: the error is then in the
        // body, and a body that is not a CopyObjectResult copied nothing
        // we can vouch for.
        let copied = self
            .send_document(
                Method::PUT,
                &self.object_path(to),
                vec![],
                headers,
                None,
                true,
                "CopyObjectResult",
                deadline,
            )
            .await
            .map(|_| ());
        match copied {
            // Over 5 GB, CopyObject is refused: the copy goes in parts.
            Err(refused @ StoreError::Service { .. })
                if matches!(&refused, StoreError::Service { code, .. }
                    if code == "InvalidRequest" || code == "EntityTooLarge") =>
            {
                let meta = self.head(from, &HeadOptions::default(), deadline).await?;
                if meta.size > COPY_OBJECT_LIMIT {
                    self.copy_in_parts(from, to, &meta, if_absent, deadline)
                        .await
                } else {
                    Err(refused)
                }
            }
            other => other,
        }
    }

    /// `x-amz-copy-source`: `/bucket/key`, each part URL-encoded (AWS S3
    /// API reference, CopyObject).
    pub(super) fn copy_source(&self, from: &Key) -> String {
        format!(
            "/{}/{}",
            uri_encode(&self.bucket, false),
            uri_encode(&self.full_key(from), true)
        )
    }

    /// A presigned URL for `method` on `key`, valid for `expires_in` seconds
    /// from `unix_time`. Fetches credentials first if the store has none
    /// that are current.
    pub async fn presign(&self, key: &Key, opts: &PresignOptions) -> Result<String, StoreError> {
        let path = self.object_path(key);
        let date = AmzDate::from_unix(opts.unix_time.unwrap_or_else(|| self.now_unix()));
        let signer = self.signers.current().await?;
        let mut query = Vec::new();
        if let Some(v) = &opts.response_content_type {
            query.push(("response-content-type".to_string(), v.clone()));
        }
        if let Some(v) = &opts.response_content_disposition {
            query.push(("response-content-disposition".to_string(), v.clone()));
        }
        let mut headers = Vec::new();
        if let Some(v) = &opts.content_type {
            headers.push(("content-type".to_string(), v.clone()));
        }
        let query = signer.presign_query(
            &opts.method,
            &self.host,
            &path,
            opts.expires_in,
            &date,
            &query,
            &headers,
        );
        Ok(format!("{}://{}{}?{}", self.scheme, self.host, path, query))
    }

    /// Whether the bucket exists: HEAD on the bucket. A yes is remembered;
    /// a no is asked again next time (the bucket may be created).
    pub(super) async fn bucket_exists(&self, deadline: Deadline) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering;
        if self.bucket_seen.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let root = self.bucket_root();
        let exists = match self
            .send(Method::HEAD, &root, vec![], vec![], None, true, deadline)
            .await
        {
            Ok(_) => true,
            Err(StoreError::NotFound) | Err(StoreError::NoSuchBucket(_)) => false,
            // Refused to say: it exists, or we could not tell a key from it.
            Err(StoreError::Forbidden(_)) => true,
            Err(e) => return Err(e),
        };
        if exists {
            self.bucket_seen.store(true, Ordering::Relaxed);
        }
        Ok(exists)
    }

    /// Deletes keys one request each (services without DeleteObjects).
    pub(super) async fn delete_each(
        &self,
        keys: &[Key],
        deadline: Deadline,
        outcome: &mut DeleteManyOutcome,
    ) {
        for key in keys {
            let result = self
                .send(
                    Method::DELETE,
                    &self.object_path(key),
                    vec![],
                    vec![],
                    None,
                    true,
                    deadline,
                )
                .await
                .map(|_| ());
            outcome.record(key.clone(), result);
        }
    }

    /// One DeleteObjects request for up to 1,000 keys.
    pub(super) async fn delete_batch(
        &self,
        keys: &[Key],
        deadline: Deadline,
        outcome: &mut DeleteManyOutcome,
    ) {
        let full: Vec<String> = keys.iter().map(|k| self.full_key(k)).collect();
        let body = Bytes::from(xml::delete_request(full.iter().map(String::as_str)));
        // DeleteObjects requires an integrity header; Content-MD5 is the
        // one every S3-compatible server takes.
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        let headers = vec![
            ("content-md5".to_string(), md5),
            ("content-type".to_string(), "application/xml".to_string()),
        ];
        let query = vec![("delete".to_string(), String::new())];
        let answer = self
            .send(
                Method::POST,
                &self.bucket_root(),
                query,
                headers,
                Some(body),
                true,
                deadline,
            )
            .await;
        // A service without DeleteObjects (GCS) says so: one by one, then.
        if let Err(StoreError::Service { code, .. }) = &answer {
            if code == "NotImplemented" {
                // Remembered: later calls go one by one without asking again.
                self.no_delete_objects
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return self.delete_each(keys, deadline, outcome).await;
            }
        }
        let failures = answer.and_then(|ans| {
            xml::parse_delete_result(&ans.body).map_err(|e| malformed(ans.status, e))
        });
        match failures {
            Err(e) => {
                for key in keys {
                    outcome.record(key.clone(), Err(e.clone()));
                }
            }
            Ok(failures) => {
                for (key, full) in keys.iter().zip(&full) {
                    // A missing key counts as deleted, as with `delete`.
                    let failure = failures
                        .iter()
                        .find(|f| &f.key == full && f.code != "NoSuchKey");
                    let result = match failure {
                        None => Ok(()),
                        Some(f) => Err(error::from_code(
                            0,
                            xml::ErrorBody {
                                code: f.code.clone(),
                                message: f.message.clone(),
                            },
                            &self.bucket,
                        )),
                    };
                    outcome.record(key.clone(), result);
                }
            }
        }
    }
}

/// AWS (and moto) answer an `If-Match` write to a missing key with 404
/// NoSuchKey; for our contract that is the precondition failing, as on
/// every other backend.
pub(super) fn if_match_on_missing(condition: &PutCondition, e: StoreError) -> StoreError {
    match (condition, e) {
        (PutCondition::IfMatch(_), StoreError::NotFound) => StoreError::PreconditionFailed,
        (_, e) => e,
    }
}
