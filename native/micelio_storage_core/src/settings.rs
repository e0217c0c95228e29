//! The resolved settings a store is built from, by name.
//!
//! Elixir resolves every setting (call options, app config, environment,
//! defaults; see `Micelio.Storage.Settings`) and passes the ones a backend
//! needs under the same names it documents: `s3_connect_timeout` is called
//! `s3_connect_timeout` everywhere. Each backend reads its own settings
//! here, so adding a setting touches the Elixir table and the one place
//! that uses it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::StoreError;

/// Every setting the engine reads, by the name Elixir's settings table
/// gives it (`Micelio.Storage.Settings`; a test checks each is there). A
/// misspelled name is a compile error, not a setting silently unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    CacheDiskMaxBytes,
    CacheDiskMaxObjectBytes,
    CacheDiskPath,
    CacheMemoryMaxBytes,
    CacheMemoryMaxObjectBytes,
    CacheRevalidateAfterMs,
    CdnBaseUrl,
    CdnTimeoutMs,
    LocalPath,
    MemoryMaxBytes,
    OriginBackend,
    S3AccessKeyId,
    S3Bucket,
    S3CaCertFile,
    S3Checksums,
    S3ConnectTimeout,
    S3ContainerAuthorizationToken,
    S3ContainerAuthorizationTokenFile,
    S3ContainerCredentialsUri,
    S3CopyIfAbsent,
    S3CopyMultipartThreshold,
    S3Credentials,
    S3DeleteBatchSize,
    S3DeleteObjects,
    S3Endpoint,
    S3EqualParts,
    S3ListPageSize,
    S3MaxRetries,
    S3MetadataEndpoint,
    S3MultipartThreshold,
    S3PartSize,
    S3PartsInFlight,
    S3PoolSize,
    S3PostUploads,
    S3Prefix,
    S3Provider,
    S3Region,
    S3RequestTimeout,
    S3RoleArn,
    S3RoleSessionName,
    S3SecretAccessKey,
    S3SessionToken,
    S3Sse,
    S3SseKmsKeyId,
    S3StsEndpoint,
    S3UnsignedPayload,
    S3UrlStyle,
    S3WebIdentityTokenFile,
}

impl Setting {
    /// Every name, for the check against the Elixir table.
    pub const ALL: &'static [Setting] = &[
        Setting::CacheDiskMaxBytes,
        Setting::CacheDiskMaxObjectBytes,
        Setting::CacheDiskPath,
        Setting::CacheMemoryMaxBytes,
        Setting::CacheMemoryMaxObjectBytes,
        Setting::CacheRevalidateAfterMs,
        Setting::CdnBaseUrl,
        Setting::CdnTimeoutMs,
        Setting::LocalPath,
        Setting::MemoryMaxBytes,
        Setting::OriginBackend,
        Setting::S3AccessKeyId,
        Setting::S3Bucket,
        Setting::S3CaCertFile,
        Setting::S3Checksums,
        Setting::S3ConnectTimeout,
        Setting::S3ContainerAuthorizationToken,
        Setting::S3ContainerAuthorizationTokenFile,
        Setting::S3ContainerCredentialsUri,
        Setting::S3CopyIfAbsent,
        Setting::S3CopyMultipartThreshold,
        Setting::S3Credentials,
        Setting::S3DeleteBatchSize,
        Setting::S3DeleteObjects,
        Setting::S3Endpoint,
        Setting::S3EqualParts,
        Setting::S3ListPageSize,
        Setting::S3MaxRetries,
        Setting::S3MetadataEndpoint,
        Setting::S3MultipartThreshold,
        Setting::S3PartSize,
        Setting::S3PartsInFlight,
        Setting::S3PoolSize,
        Setting::S3PostUploads,
        Setting::S3Prefix,
        Setting::S3Provider,
        Setting::S3Region,
        Setting::S3RequestTimeout,
        Setting::S3RoleArn,
        Setting::S3RoleSessionName,
        Setting::S3SecretAccessKey,
        Setting::S3SessionToken,
        Setting::S3Sse,
        Setting::S3SseKmsKeyId,
        Setting::S3StsEndpoint,
        Setting::S3UnsignedPayload,
        Setting::S3UrlStyle,
        Setting::S3WebIdentityTokenFile,
    ];

    /// The setting's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Setting::CacheDiskMaxBytes => "cache_disk_max_bytes",
            Setting::CacheDiskMaxObjectBytes => "cache_disk_max_object_bytes",
            Setting::CacheDiskPath => "cache_disk_path",
            Setting::CacheMemoryMaxBytes => "cache_memory_max_bytes",
            Setting::CacheMemoryMaxObjectBytes => "cache_memory_max_object_bytes",
            Setting::CacheRevalidateAfterMs => "cache_revalidate_after_ms",
            Setting::CdnBaseUrl => "cdn_base_url",
            Setting::CdnTimeoutMs => "cdn_timeout_ms",
            Setting::LocalPath => "local_path",
            Setting::MemoryMaxBytes => "memory_max_bytes",
            Setting::OriginBackend => "origin_backend",
            Setting::S3AccessKeyId => "s3_access_key_id",
            Setting::S3Bucket => "s3_bucket",
            Setting::S3CaCertFile => "s3_ca_cert_file",
            Setting::S3Checksums => "s3_checksums",
            Setting::S3ConnectTimeout => "s3_connect_timeout",
            Setting::S3ContainerAuthorizationToken => "s3_container_authorization_token",
            Setting::S3ContainerAuthorizationTokenFile => "s3_container_authorization_token_file",
            Setting::S3ContainerCredentialsUri => "s3_container_credentials_uri",
            Setting::S3CopyIfAbsent => "s3_copy_if_absent",
            Setting::S3CopyMultipartThreshold => "s3_copy_multipart_threshold",
            Setting::S3Credentials => "s3_credentials",
            Setting::S3DeleteBatchSize => "s3_delete_batch_size",
            Setting::S3DeleteObjects => "s3_delete_objects",
            Setting::S3Endpoint => "s3_endpoint",
            Setting::S3EqualParts => "s3_equal_parts",
            Setting::S3ListPageSize => "s3_list_page_size",
            Setting::S3MaxRetries => "s3_max_retries",
            Setting::S3MetadataEndpoint => "s3_metadata_endpoint",
            Setting::S3MultipartThreshold => "s3_multipart_threshold",
            Setting::S3PartSize => "s3_part_size",
            Setting::S3PartsInFlight => "s3_parts_in_flight",
            Setting::S3PoolSize => "s3_pool_size",
            Setting::S3PostUploads => "s3_post_uploads",
            Setting::S3Prefix => "s3_prefix",
            Setting::S3Provider => "s3_provider",
            Setting::S3Region => "s3_region",
            Setting::S3RequestTimeout => "s3_request_timeout",
            Setting::S3RoleArn => "s3_role_arn",
            Setting::S3RoleSessionName => "s3_role_session_name",
            Setting::S3SecretAccessKey => "s3_secret_access_key",
            Setting::S3SessionToken => "s3_session_token",
            Setting::S3Sse => "s3_sse",
            Setting::S3SseKmsKeyId => "s3_sse_kms_key_id",
            Setting::S3StsEndpoint => "s3_sts_endpoint",
            Setting::S3UnsignedPayload => "s3_unsigned_payload",
            Setting::S3UrlStyle => "s3_url_style",
            Setting::S3WebIdentityTokenFile => "s3_web_identity_token_file",
        }
    }
}

/// One resolved value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SettingValue {
    /// Unset (`nil`).
    Nil,
    /// A string (enums arrive as their name).
    Text(String),
    /// A non-negative integer.
    Int(u64),
    /// A boolean.
    Bool(bool),
}

/// The settings of one store, by name.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Settings(BTreeMap<String, SettingValue>);

// Values may be secrets: only the names are printed.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Settings {
    /// Settings from `(name, value)` pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, SettingValue)>) -> Self {
        Settings(pairs.into_iter().collect())
    }

    /// The value of `name`, `Nil` when absent.
    pub fn value(&self, name: Setting) -> &SettingValue {
        self.0.get(name.as_str()).unwrap_or(&SettingValue::Nil)
    }

    /// An optional string.
    pub fn text(&self, name: Setting) -> Result<Option<String>, StoreError> {
        match self.value(name) {
            SettingValue::Nil => Ok(None),
            SettingValue::Text(s) => Ok(Some(s.clone())),
            _ => Err(wrong(name, "a string")),
        }
    }

    /// A string that must be set.
    pub fn required_text(&self, name: Setting) -> Result<String, StoreError> {
        self.text(name)?
            .ok_or_else(|| StoreError::InvalidConfig(name.as_str(), "must be set".into()))
    }

    /// A path that must be set.
    pub fn path(&self, name: Setting) -> Result<PathBuf, StoreError> {
        self.required_text(name).map(PathBuf::from)
    }

    /// An integer that must be set.
    pub fn int(&self, name: Setting) -> Result<u64, StoreError> {
        match self.value(name) {
            SettingValue::Int(n) => Ok(*n),
            _ => Err(wrong(name, "a non-negative integer")),
        }
    }

    /// An integer that may be unset.
    pub fn optional_int(&self, name: Setting) -> Result<Option<u64>, StoreError> {
        match self.value(name) {
            SettingValue::Nil => Ok(None),
            SettingValue::Int(n) => Ok(Some(*n)),
            _ => Err(wrong(name, "a non-negative integer")),
        }
    }

    /// A boolean that may be unset.
    pub fn optional_flag(&self, name: Setting) -> Result<Option<bool>, StoreError> {
        match self.value(name) {
            SettingValue::Nil => Ok(None),
            SettingValue::Bool(b) => Ok(Some(*b)),
            _ => Err(wrong(name, "a boolean")),
        }
    }

    /// Milliseconds, as a duration.
    pub fn millis(&self, name: Setting) -> Result<Duration, StoreError> {
        self.int(name).map(Duration::from_millis)
    }

    /// A boolean; unset is `false`.
    pub fn flag(&self, name: Setting) -> Result<bool, StoreError> {
        match self.value(name) {
            SettingValue::Nil => Ok(false),
            SettingValue::Bool(b) => Ok(*b),
            _ => Err(wrong(name, "a boolean")),
        }
    }
}

fn wrong(name: Setting, expected: &str) -> StoreError {
    StoreError::InvalidConfig(name.as_str(), format!("expected {expected}"))
}
