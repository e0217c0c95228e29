//! Fixtures of the Rust conformance suite: a fresh, empty store of each
//! backend, and a real SeaweedFS (started once per test binary, on its own
//! loopback ports, stopped when the binary exits).

#![allow(dead_code)]

pub mod skeleton;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use micelio_storage_core::local::LocalStore;
use micelio_storage_core::s3::credentials::CredentialSource;
use micelio_storage_core::s3::signer::{AmzDate, Credentials, Signer, EMPTY_SHA256};
use micelio_storage_core::s3::{S3Config, S3Store};
use micelio_storage_core::store::SharedStore;
use micelio_storage_core::tiered::{TieredConfig, TieredStore};

pub const ACCESS_KEY: &str = "micelio-cargo-access";
pub const SECRET_KEY: &str = "micelio-cargo-secret-61c0";
pub const BUCKET: &str = "micelio-cargo-test";
/// Ports apart from the ExUnit suite's server, so both can run at once.
pub const S3_PORT: u16 = 8433;

/// A store and what keeps its directories alive.
pub struct Fixture {
    pub store: SharedStore,
    _dir: tempfile::TempDir,
}

pub fn local() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(&dir.path().join("root")).unwrap());
    Fixture { store, _dir: dir }
}

fn cache_config(dir: &tempfile::TempDir) -> TieredConfig {
    TieredConfig {
        memory_max_bytes: 16 << 20,
        memory_max_object_bytes: 4 << 20,
        disk_path: dir.path().join("cache"),
        disk_max_bytes: 64 << 20,
        disk_max_object_bytes: 16 << 20,
        cdn_base_url: None,
        cdn_timeout: Duration::from_secs(1),
        revalidate_after: None,
    }
}

pub fn memory() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(micelio_storage_core::memory::MemoryStore::new(256 << 20));
    Fixture { store, _dir: dir }
}

/// The skeleton backend (tests/support/skeleton.rs): only the required
/// operations, everything else from the contract's defaults.
pub fn skeleton() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(skeleton::SkeletonStore::default());
    Fixture { store, _dir: dir }
}

/// The skeleton as the origin of a tiered cache: a new backend gets the
/// cache with no code of its own.
pub fn tiered_skeleton() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let origin = Arc::new(skeleton::SkeletonStore::default());
    let store = TieredStore::<bytes::Bytes>::new(cache_config(&dir), origin).unwrap();
    Fixture { store, _dir: dir }
}

pub fn tiered_local() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let origin = Arc::new(LocalStore::open(&dir.path().join("origin")).unwrap());
    let store = TieredStore::<bytes::Bytes>::new(cache_config(&dir), origin).unwrap();
    Fixture { store, _dir: dir }
}

pub fn s3() -> Fixture {
    seaweed();
    let dir = tempfile::tempdir().unwrap();
    Fixture {
        store: Arc::new(s3_store()),
        _dir: dir,
    }
}

pub fn tiered_s3() -> Fixture {
    seaweed();
    let dir = tempfile::tempdir().unwrap();
    let origin = Arc::new(s3_store());
    let store = TieredStore::<bytes::Bytes>::new(cache_config(&dir), origin).unwrap();
    Fixture { store, _dir: dir }
}

/// An S3 store over an area of the bucket no other test uses.
fn s3_store() -> S3Store {
    let area = format!("{:x}-{:x}/", std::process::id(), rand_u64());
    S3Store::new(S3Config {
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        endpoint: Some(format!("http://127.0.0.1:{S3_PORT}")),
        url_style: None,
        prefix: area,
        credentials: CredentialSource::Static(credentials()),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(60),
        max_retries: 3,
        pool_size: 16,
        unsigned_payload: false,
        list_page_size: 1000,
        ca_cert_file: None,
        // Small parts, so the conformance objects (12 MiB) go multipart.
        multipart_threshold: 5 << 20,
        part_size: 5 << 20,
        parts_in_flight: 2,
        copy_multipart_threshold: 5 << 30,
        sse: None,
        switches: micelio_storage_core::s3::provider::Provider::Other.switches(),
    })
    .unwrap()
}

fn rand_u64() -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    t ^ N
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn credentials() -> Credentials {
    Credentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
    }
}

fn weed_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("MICELIO_WEED_BIN") {
        return bin.into();
    }
    let local =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../_build/seaweedfs-venv/bin/weed");
    if local.exists() {
        return local;
    }
    panic!("SeaweedFS not found: run bin/test (it installs it) or set MICELIO_WEED_BIN");
}

/// Starts SeaweedFS once for this test binary. A shell watchdog kills it
/// when this process exits, so no server outlives the tests.
pub fn seaweed() {
    // The outcome of the one start, kept: a failed start must not be
    // retried by every test (each would start another server).
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    let started = STARTED.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("micelio-cargo-weed")
            .tempdir()
            .unwrap()
            .keep();
        // One launcher for the Rust and the Elixir suites (bin/seaweed):
        // the same flags and identity file; its watchdog stops the server
        // when this process exits. Other internal ports than the Elixir
        // suite's server, so both can run at once.
        let launcher = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bin/seaweed");
        let status = Command::new(launcher)
            .arg(&dir)
            .arg(S3_PORT.to_string())
            .arg(ACCESS_KEY)
            .arg(SECRET_KEY)
            .arg(std::process::id().to_string())
            .args([
                "-master.port=9433",
                "-volume.port=9440",
                "-filer.port=8988",
                "-admin.port=23746",
            ])
            .env("MICELIO_WEED_BIN", weed_bin())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("cannot run bin/seaweed");
        assert!(status.success(), "bin/seaweed failed: {status}");
        // Its own thread: callers are inside a tokio runtime already.
        std::thread::spawn(move || wait_ready(&dir))
            .join()
            .map_err(|e| match e.downcast::<String>() {
                Ok(msg) => *msg,
                Err(_) => "SeaweedFS did not become ready".to_string(),
            })
    });
    if let Err(msg) = started {
        panic!("{msg}");
    }
}

fn wait_ready(dir: &std::path::Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..120 {
        let ready = rt.block_on(signed(reqwest::Method::GET, "/"));
        if ready == Some(200) {
            let created = rt.block_on(signed(reqwest::Method::PUT, &format!("/{BUCKET}")));
            assert!(
                matches!(created, Some(200) | Some(409)),
                "cannot create the bucket: {created:?}"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "SeaweedFS did not start:\n{}",
        std::fs::read_to_string(dir.join("weed.log")).unwrap_or_default()
    );
}

/// A request signed by our own signer; the status, or `None` if unreachable.
async fn signed(method: reqwest::Method, path: &str) -> Option<u16> {
    let host = format!("127.0.0.1:{S3_PORT}");
    let signer = Signer::new(credentials(), "us-east-1", "s3");
    let mut headers = vec![("host".to_string(), host.clone())];
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    signer.sign_headers(
        method.as_str(),
        path,
        &[],
        &mut headers,
        EMPTY_SHA256,
        &AmzDate::from_unix(now),
    );
    let client = reqwest::Client::new();
    let mut req = client.request(method, format!("http://{host}{path}"));
    for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
        req = req.header(k.as_str(), v.as_str());
    }
    req.send().await.ok().map(|r| r.status().as_u16())
}
