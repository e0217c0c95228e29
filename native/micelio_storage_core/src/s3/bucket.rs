//! The bucket's own configuration (creation, CORS, lifecycle) and object
//! tags: what apps that provision their own buckets need (`BucketOps`),
//! with the XML documents of those calls.

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use reqwest::Method;

use super::response::malformed;
use super::{error, xml, S3Store};
use crate::bucket::{BucketOps, CorsRule};
use crate::error::StoreError;
use crate::key::Key;
use crate::object::Deadline;

#[async_trait]
impl BucketOps for S3Store {
    /// CreateBucket in the store's region; a bucket that exists and is
    /// ours (`BucketAlreadyOwnedByYou`) is fine, one owned by another
    /// account (`BucketAlreadyExists`) is an error.
    async fn create_bucket(&self, deadline: Deadline) -> Result<String, StoreError> {
        let body = create_bucket_request(&self.region).map(Bytes::from);
        let root = self.bucket_root();
        let answer = self
            .send(Method::PUT, &root, vec![], vec![], body, true, deadline)
            .await;
        match answer {
            Ok(_) => {}
            Err(StoreError::Service { code, .. }) if code == "BucketAlreadyOwnedByYou" => {}
            Err(e) => return Err(e),
        }
        self.bucket_seen
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(self.bucket.clone())
    }

    /// PutBucketCors.
    async fn put_cors(&self, rules: &[CorsRule], deadline: Deadline) -> Result<(), StoreError> {
        let body = Bytes::from(cors_request(rules));
        self.put_document(&self.bucket_root(), "cors", body, deadline)
            .await
    }

    /// GetBucketCors; a bucket without rules has none.
    async fn get_cors(&self, deadline: Deadline) -> Result<Vec<CorsRule>, StoreError> {
        let query = vec![("cors".to_string(), String::new())];
        let root = self.bucket_root();
        match self
            .send(Method::GET, &root, query, vec![], None, true, deadline)
            .await
        {
            Ok(ans) => parse_cors(&ans.body).map_err(|e| malformed(ans.status, e)),
            Err(StoreError::Service { code, .. }) if code == "NoSuchCORSConfiguration" => {
                Ok(vec![])
            }
            Err(e) => Err(e),
        }
    }

    /// PutBucketLifecycleConfiguration with one rule that aborts
    /// incomplete multipart uploads after `days` days.
    async fn put_lifecycle_abort_incomplete(
        &self,
        days: u32,
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        let body = Bytes::from(lifecycle_abort_request(days));
        self.put_document(&self.bucket_root(), "lifecycle", body, deadline)
            .await
    }

    /// PutObjectTagging: the tag set replaces the object's. No tags is
    /// DeleteObjectTagging, which every server takes (moto answers an
    /// empty tag set with InternalError).
    async fn put_tags(
        &self,
        key: &Key,
        tags: &[(String, String)],
        deadline: Deadline,
    ) -> Result<(), StoreError> {
        if tags.is_empty() {
            let query = vec![("tagging".to_string(), String::new())];
            let path = self.object_path(key);
            self.send(Method::DELETE, &path, query, vec![], None, true, deadline)
                .await?;
            return Ok(());
        }
        let body = Bytes::from(tagging_request(tags));
        self.put_document(&self.object_path(key), "tagging", body, deadline)
            .await
    }

    /// GetObjectTagging.
    async fn get_tags(
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
        parse_tagging(&ans.body).map_err(|e| malformed(ans.status, e))
    }
}

impl S3Store {
    /// A PUT of a subresource's XML document, of the bucket (`path` its
    /// root) or of an object. S3 requires an integrity header on these;
    /// Content-MD5 is the one every S3-compatible server takes.
    async fn put_document(
        &self,
        path: &str,
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
        self.send(
            Method::PUT,
            path,
            query,
            headers,
            Some(body),
            true,
            deadline,
        )
        .await
        .map(|_| ())
        .map_err(|e| match e {
            StoreError::Service {
                status,
                code,
                message,
                ..
            } if code.is_empty() => {
                error::from_code(status, xml::ErrorBody { code, message }, &self.bucket)
            }
            e => e,
        })
    }
}

// The XML documents of these calls, written and read here because no
// other call uses them.

/// A PutBucketCors body.
fn cors_request(rules: &[CorsRule]) -> String {
    let mut body = String::from("<CORSConfiguration>");
    for rule in rules {
        body.push_str("<CORSRule>");
        let lists = [
            ("AllowedOrigin", &rule.allowed_origins),
            ("AllowedMethod", &rule.allowed_methods),
            ("AllowedHeader", &rule.allowed_headers),
            ("ExposeHeader", &rule.expose_headers),
        ];
        for (tag, values) in lists {
            for v in values {
                body.push_str(&format!("<{tag}>{}</{tag}>", quick_xml::escape::escape(v)));
            }
        }
        if let Some(age) = rule.max_age_seconds {
            body.push_str(&format!("<MaxAgeSeconds>{age}</MaxAgeSeconds>"));
        }
        body.push_str("</CORSRule>");
    }
    body.push_str("</CORSConfiguration>");
    body
}

/// Parses a GetBucketCors answer.
fn parse_cors(xml: &[u8]) -> Result<Vec<CorsRule>, String> {
    let mut rules = Vec::new();
    let mut rule = CorsRule::default();
    let mut root = None;
    xml::walk(xml, |path, text| {
        if path.len() == 1 {
            root = Some(path[0].to_string());
        }
        match path {
            ["CORSConfiguration", "CORSRule", "AllowedOrigin"] => rule.allowed_origins.push(text),
            ["CORSConfiguration", "CORSRule", "AllowedMethod"] => rule.allowed_methods.push(text),
            ["CORSConfiguration", "CORSRule", "AllowedHeader"] => rule.allowed_headers.push(text),
            ["CORSConfiguration", "CORSRule", "ExposeHeader"] => rule.expose_headers.push(text),
            ["CORSConfiguration", "CORSRule", "MaxAgeSeconds"] => {
                rule.max_age_seconds = text.trim().parse().ok()
            }
            ["CORSConfiguration", "CORSRule"] => rules.push(std::mem::take(&mut rule)),
            _ => {}
        }
    })?;
    match root.as_deref() {
        Some("CORSConfiguration") => Ok(rules),
        _ => Err("expected a CORSConfiguration document".into()),
    }
}

/// A PutBucketLifecycleConfiguration body with one rule: abort multipart
/// uploads left incomplete for `days` days, everywhere in the bucket.
fn lifecycle_abort_request(days: u32) -> String {
    format!(
        "<LifecycleConfiguration><Rule><ID>micelio-abort-incomplete-uploads</ID>\
         <Filter><Prefix></Prefix></Filter><Status>Enabled</Status>\
         <AbortIncompleteMultipartUpload><DaysAfterInitiation>{days}</DaysAfterInitiation>\
         </AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>"
    )
}

/// A CreateBucket body naming the region (none for `us-east-1`).
fn create_bucket_request(region: &str) -> Option<String> {
    (region != "us-east-1" && !region.is_empty()).then(|| {
        format!(
            "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint>\
             </CreateBucketConfiguration>",
            quick_xml::escape::escape(region)
        )
    })
}

/// A PutObjectTagging body.
fn tagging_request(tags: &[(String, String)]) -> String {
    let mut body = String::from("<Tagging><TagSet>");
    for (k, v) in tags {
        body.push_str(&format!(
            "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
            quick_xml::escape::escape(k),
            quick_xml::escape::escape(v)
        ));
    }
    body.push_str("</TagSet></Tagging>");
    body
}

/// Parses a GetObjectTagging answer, sorted by key.
fn parse_tagging(xml: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut tags = Vec::new();
    let (mut key, mut value) = (String::new(), String::new());
    let mut root = None;
    xml::walk(xml, |path, text| {
        if path.len() == 1 {
            root = Some(path[0].to_string());
        }
        match path {
            ["Tagging", "TagSet", "Tag", "Key"] => key = text,
            ["Tagging", "TagSet", "Tag", "Value"] => value = text,
            ["Tagging", "TagSet", "Tag"] => {
                tags.push((std::mem::take(&mut key), std::mem::take(&mut value)))
            }
            _ => {}
        }
    })?;
    if root.as_deref() != Some("Tagging") {
        return Err("expected a Tagging document".into());
    }
    tags.sort();
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_rules_survive_their_document() {
        let rules = vec![CorsRule {
            allowed_origins: vec!["https://a.example".into()],
            allowed_methods: vec!["GET".into(), "PUT".into()],
            allowed_headers: vec!["*".into()],
            expose_headers: vec!["ETag".into()],
            max_age_seconds: Some(600),
        }];
        assert_eq!(parse_cors(cors_request(&rules).as_bytes()), Ok(rules));
        assert!(parse_cors(b"<Error><Code>x</Code></Error>").is_err());
    }

    #[test]
    fn tags_come_sorted_and_only_from_a_tagging_document() {
        let xml = b"<Tagging><TagSet><Tag><Key>z</Key><Value>1</Value></Tag>\
            <Tag><Key>a</Key><Value>&amp;</Value></Tag></TagSet></Tagging>";
        assert_eq!(
            parse_tagging(xml),
            Ok(vec![("a".into(), "&".into()), ("z".into(), "1".into())])
        );
        assert!(parse_tagging(b"<TagSet></TagSet>").is_err());
        let tags = vec![("a <b>".to_string(), "x&y".to_string())];
        assert_eq!(parse_tagging(tagging_request(&tags).as_bytes()), Ok(tags));
        assert_eq!(parse_tagging(tagging_request(&[]).as_bytes()), Ok(vec![]));
    }

    #[test]
    fn us_east_1_creates_without_a_location() {
        assert_eq!(create_bucket_request("us-east-1"), None);
        assert!(create_bucket_request("eu-west-1")
            .unwrap()
            .contains("<LocationConstraint>eu-west-1</LocationConstraint>"));
    }
}
