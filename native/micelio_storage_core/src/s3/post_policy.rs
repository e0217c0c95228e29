//! Browser uploads by HTML form: a SigV4-signed POST policy whose conditions
//! S3 enforces on the upload (the only way to cap an upload's size:
//! `content-length-range`). Built here, sent by the browser.

use base64::Engine;
use serde_json::{json, Value};

use super::signer::AmzDate;
use super::S3Store;
use crate::error::StoreError;
use crate::store::{PostPolicyOptions, PresignedPost};

impl S3Store {
    /// The form's URL and fields for an upload to `key_or_prefix`, under the
    /// store's `s3_prefix`. Fetches credentials first if the store has none
    /// that are current.
    pub async fn presign_post(
        &self,
        key_or_prefix: &str,
        opts: &PostPolicyOptions,
    ) -> Result<PresignedPost, StoreError> {
        if !self.switches.post_uploads {
            return Err(StoreError::InvalidConfig(
                "s3_post_uploads",
                "this provider takes no POST uploads (Cloudflare R2): sign a PUT URL with presigned_url(key, method: :put)".into(),
            ));
        }
        let signer = self.signers.current().await?;
        let now = opts.unix_time.unwrap_or_else(|| self.now_unix());
        let date = AmzDate::from_unix(now);
        let full = format!("{}{}", self.prefix, key_or_prefix);

        let mut fields: Vec<(String, String)> = Vec::new();
        let mut conditions: Vec<Value> = vec![json!({ "bucket": self.bucket })];

        if opts.key_starts_with {
            conditions.push(json!(["starts-with", "$key", full]));
            // S3 puts the uploaded file's name in place of `${filename}`;
            // the browser may also set another key under the prefix.
            fields.push(("key".into(), format!("{full}${{filename}}")));
        } else {
            conditions.push(json!({ "key": full }));
            fields.push(("key".into(), full));
        }
        if let Some((min, max)) = opts.content_length_range {
            conditions.push(json!(["content-length-range", min, max]));
        }
        if let Some(ct) = &opts.content_type {
            conditions.push(json!({ "Content-Type": ct }));
            fields.push(("Content-Type".into(), ct.clone()));
        } else if let Some(prefix) = &opts.content_type_starts_with {
            conditions.push(json!(["starts-with", "$Content-Type", prefix]));
        }
        if let Some(status) = opts.success_action_status {
            conditions.push(json!({ "success_action_status": status.to_string() }));
            fields.push(("success_action_status".into(), status.to_string()));
        }
        if let Some(cc) = &opts.cache_control {
            conditions.push(json!({ "Cache-Control": cc }));
            fields.push(("Cache-Control".into(), cc.clone()));
        }
        for (name, value) in &opts.metadata {
            let field = format!("x-amz-meta-{}", name.to_ascii_lowercase());
            conditions.push(json!({ field.clone(): value }));
            fields.push((field, value.clone()));
        }
        let credential = signer.credential(&date);
        conditions.push(json!({ "x-amz-algorithm": "AWS4-HMAC-SHA256" }));
        conditions.push(json!({ "x-amz-credential": credential }));
        conditions.push(json!({ "x-amz-date": date.datetime }));
        if let Some(token) = &signer.credentials().session_token {
            conditions.push(json!({ "x-amz-security-token": token }));
        }

        let expiration = AmzDate::from_unix(now.saturating_add(opts.expires_in as i64));
        let policy = json!({
            "expiration": iso8601(&expiration),
            "conditions": conditions,
        });
        let policy = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
        let signature = signer.sign_policy(&date, &policy);

        fields.push(("x-amz-algorithm".into(), "AWS4-HMAC-SHA256".into()));
        fields.push(("x-amz-credential".into(), credential));
        fields.push(("x-amz-date".into(), date.datetime.clone()));
        if let Some(token) = &signer.credentials().session_token {
            fields.push(("x-amz-security-token".into(), token.clone()));
        }
        fields.push(("policy".into(), policy));
        fields.push(("x-amz-signature".into(), signature));

        Ok(PresignedPost {
            url: format!("{}://{}{}", self.scheme, self.host, self.bucket_root()),
            fields,
        })
    }
}

/// `2026-12-07T10:00:00.000Z` from `20261207T100000Z`.
fn iso8601(date: &AmzDate) -> String {
    let d = &date.datetime;
    format!(
        "{}-{}-{}T{}:{}:{}.000Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_is_iso8601() {
        assert_eq!(
            iso8601(&AmzDate::from_unix(1_796_644_800)),
            "2026-12-07T12:00:00.000Z"
        );
    }
}
