//! The S3 settings, read from the resolved `Settings`.

use crate::error::StoreError;
use crate::s3::credentials::CredentialSource;
use crate::s3::provider::Provider;
use crate::s3::signer::Credentials;
use crate::s3::{S3Config, Sse, UrlStyle};
use crate::settings::{Setting, Settings};

impl S3Config {
    /// Reads the `s3_*` settings. `s3_credentials` arrives resolved to
    /// `static`, `container` or `instance` (Elixir picks the source).
    pub fn from_settings(s: &Settings) -> Result<Self, StoreError> {
        let missing = |what: &str| StoreError::InvalidConfig("s3_credentials", what.to_string());
        let source = s
            .text(Setting::S3Credentials)?
            .unwrap_or_else(|| "static".into());
        let credentials = match source.as_str() {
            "static" => CredentialSource::Static(Credentials {
                access_key_id: s
                    .text(Setting::S3AccessKeyId)?
                    .ok_or_else(|| missing("no access key id"))?,
                secret_access_key: s
                    .text(Setting::S3SecretAccessKey)?
                    .ok_or_else(|| missing("no secret access key"))?,
                session_token: s.text(Setting::S3SessionToken)?,
            }),
            "container" => CredentialSource::Container {
                uri: s
                    .text(Setting::S3ContainerCredentialsUri)?
                    .ok_or_else(|| missing("no container credentials URI"))?,
                token: s.text(Setting::S3ContainerAuthorizationToken)?,
                token_file: s
                    .text(Setting::S3ContainerAuthorizationTokenFile)?
                    .map(Into::into),
            },
            "instance" => CredentialSource::Instance {
                endpoint: s.required_text(Setting::S3MetadataEndpoint)?,
            },
            "web_identity" => CredentialSource::WebIdentity {
                role_arn: s
                    .text(Setting::S3RoleArn)?
                    .ok_or_else(|| missing("no role ARN (AWS_ROLE_ARN)"))?,
                session_name: s
                    .text(Setting::S3RoleSessionName)?
                    .unwrap_or_else(|| "micelio-storage".into()),
                token_file: s
                    .text(Setting::S3WebIdentityTokenFile)?
                    .ok_or_else(|| missing("no web identity token file"))?
                    .into(),
                sts_endpoint: match s.text(Setting::S3StsEndpoint)? {
                    Some(url) => url,
                    None => format!(
                        "https://sts.{}.amazonaws.com",
                        s.required_text(Setting::S3Region)?
                    ),
                },
            },
            other => return Err(missing(&format!("unknown source {other:?}"))),
        };
        let url_style = match s.text(Setting::S3UrlStyle)?.as_deref() {
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
            bucket: s.text(Setting::S3Bucket)?.unwrap_or_default(),
            region: s.required_text(Setting::S3Region)?,
            endpoint: s.text(Setting::S3Endpoint)?,
            url_style,
            prefix: s.text(Setting::S3Prefix)?.unwrap_or_default(),
            credentials,
            connect_timeout: s.millis(Setting::S3ConnectTimeout)?,
            request_timeout: s.millis(Setting::S3RequestTimeout)?,
            max_retries: s.int(Setting::S3MaxRetries)? as u32,
            pool_size: s.int(Setting::S3PoolSize)? as usize,
            unsigned_payload: s.flag(Setting::S3UnsignedPayload)?,
            list_page_size: s.int(Setting::S3ListPageSize)? as u32,
            ca_cert_file: s.text(Setting::S3CaCertFile)?.map(Into::into),
            multipart_threshold: s.int(Setting::S3MultipartThreshold)?,
            part_size: s.int(Setting::S3PartSize)?,
            parts_in_flight: s.int(Setting::S3PartsInFlight)? as usize,
            copy_multipart_threshold: s.int(Setting::S3CopyMultipartThreshold)?,
            switches: Provider::switches_from(s)?,
            sse: match s.text(Setting::S3Sse)?.as_deref() {
                None => None,
                Some("aes256") => Some(Sse::Aes256),
                Some("kms") => Some(Sse::Kms(s.text(Setting::S3SseKmsKeyId)?)),
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
