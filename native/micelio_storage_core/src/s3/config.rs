//! The S3 settings, read from the resolved `Settings`.

use crate::error::StoreError;
use crate::s3::credentials::CredentialSource;
use crate::s3::provider::Provider;
use crate::s3::signer::Credentials;
use crate::s3::{S3Config, Sse, UrlStyle};
use crate::settings::Settings;

impl S3Config {
    /// Reads the `s3_*` settings. `s3_credentials` arrives resolved to
    /// `static`, `container` or `instance` (Elixir picks the source).
    pub fn from_settings(s: &Settings) -> Result<Self, StoreError> {
        let missing = |what: &str| StoreError::InvalidConfig("s3_credentials", what.to_string());
        let source = s.text("s3_credentials")?.unwrap_or_else(|| "static".into());
        let credentials = match source.as_str() {
            "static" => CredentialSource::Static(Credentials {
                access_key_id: s
                    .text("s3_access_key_id")?
                    .ok_or_else(|| missing("no access key id"))?,
                secret_access_key: s
                    .text("s3_secret_access_key")?
                    .ok_or_else(|| missing("no secret access key"))?,
                session_token: s.text("s3_session_token")?,
            }),
            "container" => CredentialSource::Container {
                uri: s
                    .text("s3_container_credentials_uri")?
                    .ok_or_else(|| missing("no container credentials URI"))?,
                token: s.text("s3_container_authorization_token")?,
                token_file: s
                    .text("s3_container_authorization_token_file")?
                    .map(Into::into),
            },
            "instance" => CredentialSource::Instance {
                endpoint: s.required_text("s3_metadata_endpoint")?,
            },
            "web_identity" => CredentialSource::WebIdentity {
                role_arn: s
                    .text("s3_role_arn")?
                    .ok_or_else(|| missing("no role ARN (AWS_ROLE_ARN)"))?,
                session_name: s
                    .text("s3_role_session_name")?
                    .unwrap_or_else(|| "micelio-storage".into()),
                token_file: s
                    .text("s3_web_identity_token_file")?
                    .ok_or_else(|| missing("no web identity token file"))?
                    .into(),
                sts_endpoint: match s.text("s3_sts_endpoint")? {
                    Some(url) => url,
                    None => format!(
                        "https://sts.{}.amazonaws.com",
                        s.required_text("s3_region")?
                    ),
                },
            },
            other => return Err(missing(&format!("unknown source {other:?}"))),
        };
        let url_style = match s.text("s3_url_style")?.as_deref() {
            Some("virtual") => Some(UrlStyle::Virtual),
            Some("path") => Some(UrlStyle::Path),
            None => None,
            Some(other) => {
                return Err(StoreError::InvalidConfig(
                    "s3_url_style",
                    format!("expected virtual or path, got {other:?}"),
                ))
            }
        };
        Ok(S3Config {
            bucket: s.text("s3_bucket")?.unwrap_or_default(),
            region: s.required_text("s3_region")?,
            endpoint: s.text("s3_endpoint")?,
            url_style,
            prefix: s.text("s3_prefix")?.unwrap_or_default(),
            credentials,
            connect_timeout: s.millis("s3_connect_timeout")?,
            request_timeout: s.millis("s3_request_timeout")?,
            max_retries: s.int("s3_max_retries")? as u32,
            pool_size: s.int("s3_pool_size")? as usize,
            unsigned_payload: s.flag("s3_unsigned_payload")?,
            list_page_size: s.int("s3_list_page_size")? as u32,
            ca_cert_file: s.text("s3_ca_cert_file")?.map(Into::into),
            multipart_threshold: s.int("s3_multipart_threshold")?,
            part_size: s.int("s3_part_size")?,
            parts_in_flight: s.int("s3_parts_in_flight")? as usize,
            copy_multipart_threshold: s.int("s3_copy_multipart_threshold")?,
            switches: Provider::switches_from(s)?,
            sse: match s.text("s3_sse")?.as_deref() {
                None => None,
                Some("aes256") => Some(Sse::Aes256),
                Some("kms") => Some(Sse::Kms(s.text("s3_sse_kms_key_id")?)),
                Some(other) => {
                    return Err(StoreError::InvalidConfig(
                        "s3_sse",
                        format!("expected aes256 or kms, got {other:?}"),
                    ))
                }
            },
        })
    }
}
