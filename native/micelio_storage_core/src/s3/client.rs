//! The store's construction: its HTTP client (pool, timeouts, TLS roots)
//! and what a failure to build one means.

use std::time::Duration;

use super::credentials::Signers;
use super::retry::RetryPolicy;
use super::signer::uri_encode;
use crate::error::StoreError;

use super::{S3Config, S3Inner, S3Store, UrlStyle, MIN_PART};

impl S3Store {
    /// Builds the store and its HTTP client (no request is sent).
    pub fn new(cfg: S3Config) -> Result<Self, StoreError> {
        let invalid = |setting, msg: String| StoreError::InvalidConfig(setting, msg);
        if cfg.bucket.is_empty() {
            return Err(invalid("s3_bucket", "must not be empty".into()));
        }
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", cfg.region));
        let url = reqwest::Url::parse(&endpoint)
            .map_err(|e| invalid("s3_endpoint", format!("{endpoint:?}: {e}")))?;
        let scheme = url.scheme().to_string();
        let host_only = url
            .host_str()
            .ok_or_else(|| invalid("s3_endpoint", format!("{endpoint:?} has no host")))?;
        let host = match url.port() {
            Some(port) => format!("{host_only}:{port}"),
            None => host_only.to_string(),
        };
        let style = cfg.url_style.unwrap_or(if cfg.switches.virtual_hosts {
            UrlStyle::Virtual
        } else {
            UrlStyle::Path
        });
        if cfg.unsigned_payload && scheme != "https" {
            return Err(invalid(
                "s3_unsigned_payload",
                "is only allowed over https".into(),
            ));
        }
        let (host, bucket_path) = match style {
            UrlStyle::Virtual => (format!("{}.{host}", cfg.bucket), String::new()),
            UrlStyle::Path => (host, format!("/{}", uri_encode(&cfg.bucket, false))),
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &cfg.ca_cert_file {
            builder = add_ca_certs(builder, path)?;
        }
        // S3 clients never follow redirects: a 301 or 307 names another
        // endpoint or region, and following it would send the request to a
        // host nobody configured.
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .pool_max_idle_per_host(cfg.pool_size)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| client_build_error("s3_endpoint", e))?;
        // Credential endpoints are on the local link or loopback: a short
        // bound, so a missing one fails fast instead of holding every call.
        let credentials_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| client_build_error("s3_credentials", e))?;
        if cfg.part_size < MIN_PART || cfg.part_size > (5 << 30) {
            return Err(invalid(
                "s3_part_size",
                format!("must be 5 MiB to 5 GiB, got {}", cfg.part_size),
            ));
        }
        if cfg.parts_in_flight == 0 {
            return Err(invalid("s3_parts_in_flight", "must be at least 1".into()));
        }
        Ok(S3Store(std::sync::Arc::new(S3Inner {
            bucket: cfg.bucket.clone(),
            region: cfg.region.clone(),
            endpoint: format!("{scheme}://{host}"),
            bucket_seen: std::sync::atomic::AtomicBool::new(false),
            clock_offset: std::sync::atomic::AtomicI64::new(0),
            skew_logged: std::sync::atomic::AtomicBool::new(false),
            no_delete_objects: std::sync::atomic::AtomicBool::new(false),
            scheme,
            host,
            bucket_path,
            prefix: cfg.prefix,
            signers: Signers::new(cfg.credentials, &cfg.region, "s3", credentials_client),
            client,
            policy: RetryPolicy {
                max_retries: cfg.max_retries,
                ..RetryPolicy::default()
            },
            unsigned_payload: cfg.unsigned_payload,
            list_page_size: cfg.list_page_size.clamp(1, 1000),
            request_timeout: cfg.request_timeout,
            multipart_threshold: cfg.multipart_threshold.max(MIN_PART),
            part_size: cfg.part_size,
            parts_in_flight: cfg.parts_in_flight,
            copy_multipart_threshold: cfg.copy_multipart_threshold,
            sse: cfg.sse,
            switches: cfg.switches,
        })))
    }
}

/// Why an HTTP client could not be built. Running out of descriptors or
/// memory is what it is (`{:io, :emfile}`), not a configuration error: the
/// store is built again on a later call, when the load has dropped.
pub(crate) fn client_build_error(setting: &'static str, e: reqwest::Error) -> StoreError {
    if let Some(code) = exhaustion_errno(&e).or_else(descriptors_exhausted) {
        return StoreError::Io(code);
    }
    StoreError::InvalidConfig(setting, format!("cannot build the HTTP client: {e}"))
}

/// EMFILE or ENFILE when the process cannot open one more descriptor now.
/// The TLS setup behind reqwest's builder reads certificate files and
/// reports a failure without its I/O cause ("builder error"); asking the
/// kernel tells whether running out of descriptors is why.
pub(super) fn descriptors_exhausted() -> Option<i32> {
    use rustix::io::Errno;
    match rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(_fd) => None,
        Err(e) if e == Errno::MFILE || e == Errno::NFILE => Some(e.raw_os_error()),
        Err(_) => None,
    }
}

/// The errno of a resource exhaustion (EMFILE, ENFILE, ENOMEM) anywhere in
/// an error's chain of sources.
pub(crate) fn exhaustion_errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    use rustix::io::Errno;
    let exhausted = [Errno::MFILE, Errno::NFILE, Errno::NOMEM].map(|e| e.raw_os_error());
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(code) = io.raw_os_error().filter(|c| exhausted.contains(c)) {
                return Some(code);
            }
        }
        cause = err.source();
    }
    None
}

/// Trusts the certificates of a PEM bundle as roots, beside the defaults.
pub(super) fn add_ca_certs(
    builder: reqwest::ClientBuilder,
    path: &std::path::Path,
) -> Result<reqwest::ClientBuilder, StoreError> {
    let invalid = |msg: String| StoreError::InvalidConfig("s3_ca_cert_file", msg);
    let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot read {path:?}: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| invalid(format!("{path:?} is not a PEM bundle: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(format!("{path:?} holds no certificate")));
    }
    Ok(certs
        .into_iter()
        .fold(builder, |b, cert| b.add_root_certificate(cert)))
}
