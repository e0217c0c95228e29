//! Provider profiles: what each S3-compatible service does differently, as
//! switches. A profile is picked by `s3_provider` or guessed from the
//! endpoint's host; each switch can also be set alone, and wins.

use crate::error::StoreError;
use crate::settings::{Setting, Settings};

/// The services we know the differences of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Aws,
    R2,
    B2,
    Gcs,
    Minio,
    Spaces,
    Wasabi,
    Seaweedfs,
    Other,
}

/// How a copy that must not replace its destination is made atomic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyIfAbsent {
    /// `If-None-Match: *` on CopyObject (AWS since 2024).
    IfNoneMatch,
    /// R2's own header, `cf-copy-destination-if-none-match: *`.
    R2Header,
    /// UploadPartCopy into a multipart upload completed with
    /// `If-None-Match: *`, for services that take the condition on
    /// CompleteMultipartUpload but not on CopyObject.
    Multipart,
    /// No atomic way: such a copy is refused rather than made racy.
    Unsupported,
}

impl CopyIfAbsent {
    /// The setting's spelling.
    pub fn name(self) -> &'static str {
        match self {
            CopyIfAbsent::IfNoneMatch => "if_none_match",
            CopyIfAbsent::R2Header => "r2_header",
            CopyIfAbsent::Multipart => "multipart",
            CopyIfAbsent::Unsupported => "none",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "if_none_match" => CopyIfAbsent::IfNoneMatch,
            "r2_header" => CopyIfAbsent::R2Header,
            "multipart" => CopyIfAbsent::Multipart,
            "none" => CopyIfAbsent::Unsupported,
            other => {
                return Err(StoreError::InvalidConfig(
                    "s3_copy_if_absent",
                    format!("expected if_none_match, r2_header, multipart or none, got {other:?}"),
                ))
            }
        })
    }
}

/// The switches a profile sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switches {
    /// Send `x-amz-checksum-*` headers (CRC-32) on writes and ask for them
    /// on reads; off, writes carry `Content-MD5` (B2 refuses the headers,
    /// GCS ignores them).
    pub checksum_headers: bool,
    /// Keys per DeleteObjects request (R2 fails over 700).
    pub delete_batch: usize,
    /// Whether DeleteObjects exists at all (GCS answers NotImplemented);
    /// without it, keys are deleted one by one. A NotImplemented answer
    /// also falls back, whatever this says.
    pub delete_objects: bool,
    /// Whether the service takes browser uploads by POST policy (R2: no).
    pub post_uploads: bool,
    /// All parts but the last of a multipart upload have one size (R2
    /// requires it). Off, an upload of unknown size doubles its part size
    /// every 1,000 parts, so a stream is not stopped at 10,000 parts.
    pub equal_parts: bool,
    /// How `copy` with `if_absent` is made atomic.
    pub copy_if_absent: CopyIfAbsent,
    /// The region to sign with when none is set (R2: `auto`).
    pub default_region: &'static str,
    /// Whether the service addresses buckets by host (`bucket.host`) by
    /// default.
    pub virtual_hosts: bool,
}

impl Provider {
    /// The provider named by `s3_provider`, else the one the endpoint's host
    /// belongs to.
    pub fn of(named: Option<&str>, endpoint: Option<&str>) -> Result<Self, StoreError> {
        Ok(match named {
            Some("aws") => Provider::Aws,
            Some("r2") => Provider::R2,
            Some("b2") => Provider::B2,
            Some("gcs") => Provider::Gcs,
            Some("minio") => Provider::Minio,
            Some("spaces") => Provider::Spaces,
            Some("wasabi") => Provider::Wasabi,
            Some("seaweedfs") => Provider::Seaweedfs,
            Some("other") => Provider::Other,
            Some(other) => {
                return Err(StoreError::InvalidConfig(
                    "s3_provider",
                    format!("unknown provider {other:?}"),
                ))
            }
            None => Self::guess(endpoint),
        })
    }

    /// The provider of an endpoint URL (`None`: AWS itself).
    pub fn guess(endpoint: Option<&str>) -> Self {
        let Some(endpoint) = endpoint else {
            return Provider::Aws;
        };
        let host = endpoint
            .split("://")
            .nth(1)
            .unwrap_or(endpoint)
            .split(['/', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let ends = |suffix: &str| host == suffix.trim_start_matches('.') || host.ends_with(suffix);
        if ends(".amazonaws.com") {
            Provider::Aws
        } else if ends(".r2.cloudflarestorage.com") {
            Provider::R2
        } else if ends(".backblazeb2.com") {
            Provider::B2
        } else if ends("storage.googleapis.com") {
            Provider::Gcs
        } else if ends(".digitaloceanspaces.com") {
            Provider::Spaces
        } else if ends(".wasabisys.com") {
            Provider::Wasabi
        } else {
            Provider::Other
        }
    }

    /// The profile's switches.
    pub fn switches(self) -> Switches {
        let base = Switches {
            checksum_headers: true,
            delete_batch: 1000,
            delete_objects: true,
            post_uploads: true,
            equal_parts: false,
            copy_if_absent: CopyIfAbsent::Multipart,
            default_region: "us-east-1",
            virtual_hosts: false,
        };
        match self {
            Provider::Aws => Switches {
                virtual_hosts: true,
                copy_if_absent: CopyIfAbsent::IfNoneMatch,
                ..base
            },
            Provider::R2 => Switches {
                delete_batch: 700,
                post_uploads: false,
                equal_parts: true,
                copy_if_absent: CopyIfAbsent::R2Header,
                default_region: "auto",
                ..base
            },
            Provider::B2 => Switches {
                checksum_headers: false,
                ..base
            },
            Provider::Gcs => Switches {
                checksum_headers: false,
                delete_objects: false,
                default_region: "auto",
                ..base
            },
            // Checked against SeaweedFS in the suite: it honours
            // If-None-Match on CopyObject, one request instead of three.
            Provider::Seaweedfs => Switches {
                copy_if_absent: CopyIfAbsent::IfNoneMatch,
                ..base
            },
            Provider::Minio | Provider::Spaces | Provider::Wasabi | Provider::Other => base,
        }
    }

    /// The profile's switches, each overridden by its own setting when set.
    pub fn switches_from(s: &Settings) -> Result<Switches, StoreError> {
        let endpoint = s.text(Setting::S3Endpoint)?;
        let provider = Provider::of(s.text(Setting::S3Provider)?.as_deref(), endpoint.as_deref())?;
        let mut switches = provider.switches();
        match s.text(Setting::S3Checksums)?.as_deref() {
            None => {}
            Some("when_supported") => switches.checksum_headers = true,
            Some("when_required") => switches.checksum_headers = false,
            Some(other) => {
                return Err(StoreError::InvalidConfig(
                    "s3_checksums",
                    format!("expected when_supported or when_required, got {other:?}"),
                ))
            }
        }
        if let Some(n) = s.optional_int(Setting::S3DeleteBatchSize)? {
            if !(1..=1000).contains(&n) {
                return Err(StoreError::InvalidConfig(
                    "s3_delete_batch_size",
                    format!("expected 1..1000 keys, got {n}"),
                ));
            }
            switches.delete_batch = n as usize;
        }
        if let Some(flag) = s.optional_flag(Setting::S3DeleteObjects)? {
            switches.delete_objects = flag;
        }
        if let Some(flag) = s.optional_flag(Setting::S3PostUploads)? {
            switches.post_uploads = flag;
        }
        if let Some(flag) = s.optional_flag(Setting::S3EqualParts)? {
            switches.equal_parts = flag;
        }
        if let Some(text) = s.text(Setting::S3CopyIfAbsent)? {
            switches.copy_if_absent = CopyIfAbsent::parse(&text)?;
        }
        Ok(switches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_from_the_host() {
        assert_eq!(Provider::guess(None), Provider::Aws);
        let cases = [
            ("https://s3.eu-west-1.amazonaws.com", Provider::Aws),
            ("https://acct.r2.cloudflarestorage.com", Provider::R2),
            ("https://s3.us-west-004.backblazeb2.com", Provider::B2),
            ("https://storage.googleapis.com", Provider::Gcs),
            ("https://fra1.digitaloceanspaces.com", Provider::Spaces),
            ("https://s3.wasabisys.com", Provider::Wasabi),
            ("http://127.0.0.1:9000", Provider::Other),
            ("https://evil-amazonaws.com.example.org", Provider::Other),
        ];
        for (endpoint, provider) in cases {
            assert_eq!(Provider::guess(Some(endpoint)), provider, "{endpoint}");
        }
    }

    #[test]
    fn profiles_set_the_switches() {
        assert!(!Provider::B2.switches().checksum_headers);
        assert_eq!(Provider::R2.switches().delete_batch, 700);
        assert!(!Provider::R2.switches().post_uploads);
        assert_eq!(Provider::R2.switches().default_region, "auto");
        assert!(!Provider::Gcs.switches().delete_objects);
        assert!(Provider::Aws.switches().virtual_hosts);
    }
}
