//! The bucket's own configuration (creation, CORS, lifecycle) and object
//! tags: what apps that provision their own buckets need.

use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use reqwest::Method;

use super::response::malformed;
use super::{error, xml, S3Store};
use crate::error::StoreError;
use crate::key::Key;
use crate::object::Deadline;
use crate::store::CorsRule;

impl S3Store {
    /// CreateBucket in the store's region; a bucket that exists and is
    /// ours (`BucketAlreadyOwnedByYou`) is fine, one owned by another
    /// account (`BucketAlreadyExists`) is an error.
    pub(super) async fn create_bucket(&self, deadline: Deadline) -> Result<String, StoreError> {
        let body = xml::create_bucket_request(&self.region).map(Bytes::from);
        let root = self.bucket_root();
        let answer = self
            .send(Method::PUT, &root, vec![], vec![], body, true, deadline)
            .await;
        match answer {
            Ok(_) => {}
            Err(StoreError::S3 { code, .. }) if code == "BucketAlreadyOwnedByYou" => {}
            Err(e) => return Err(e),
        }
        self.bucket_seen
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(self.bucket.clone())
    }

    /// PutBucketCors.
    pub(super) async fn put_cors(
        &self,
        rules: &[CorsRule],
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let body = Bytes::from(xml::cors_request(rules));
        self.put_bucket_document("cors", body, deadline).await
    }

    /// GetBucketCors; a bucket without rules has none.
    pub(super) async fn get_cors(&self, deadline: Deadline) -> Result<Vec<CorsRule>, StoreError> {
        let query = vec![("cors".to_string(), String::new())];
        let root = self.bucket_root();
        match self
            .send(Method::GET, &root, query, vec![], None, true, deadline)
            .await
        {
            Ok(ans) => xml::parse_cors(&ans.body).map_err(|e| malformed(ans.status, e)),
            Err(StoreError::S3 { code, .. }) if code == "NoSuchCORSConfiguration" => Ok(vec![]),
            Err(e) => Err(e),
        }
    }

    /// PutBucketLifecycleConfiguration with one rule that aborts
    /// incomplete multipart uploads after `days` days.
    pub(super) async fn put_lifecycle_abort_incomplete(
        &self,
        days: u32,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let body = Bytes::from(xml::lifecycle_abort_request(days));
        self.put_bucket_document("lifecycle", body, deadline).await
    }

    /// GetObjectTagging.
    pub(super) async fn get_tags(
        &self,
        key: &Key,
        deadline: Deadline,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let query = vec![("tagging".to_string(), String::new())];
        let ans = self
            .send(
                Method::GET,
                &self.object_path(key),
                query,
                vec![],
                None,
                true,
                deadline,
            )
            .await?;
        xml::parse_tagging(&ans.body).map_err(|e| malformed(ans.status, e))
    }

    /// A PUT of a bucket subresource's XML document. S3 requires an
    /// integrity header on these; Content-MD5 is the one every
    /// S3-compatible server takes.
    async fn put_bucket_document(
        &self,
        subresource: &str,
        body: Bytes,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        let headers = vec![
            ("content-md5".to_string(), md5),
            ("content-type".to_string(), "application/xml".to_string()),
        ];
        let query = vec![(subresource.to_string(), String::new())];
        let root = self.bucket_root();
        self.send(
            Method::PUT,
            &root,
            query,
            headers,
            Some(body),
            true,
            deadline,
        )
        .await
        .map(|_| ())
        .map_err(|e| match e {
            StoreError::S3 {
                status,
                code,
                message,
            } if code.is_empty() => {
                error::from_code(status, xml::ErrorBody { code, message }, &self.bucket)
            }
            e => e,
        })
    }
}
