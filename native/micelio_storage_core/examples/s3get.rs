use micelio_storage_core::key::Key;
use micelio_storage_core::s3::signer::Credentials;
use micelio_storage_core::s3::{S3Config, S3Store};
use std::time::{Duration, Instant};
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = std::env::args().nth(1).unwrap();
    let store = S3Store::new(S3Config {
        bucket: "micelio-test".into(),
        region: "us-east-1".into(),
        endpoint: Some("http://127.0.0.1:8333".into()),
        url_style: None,
        prefix,
        credentials: Credentials {
            access_key_id: "micelio-test-access".into(),
            secret_access_key: "micelio-test-secret-5b1f0c2e9d".into(),
            session_token: None,
        },
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
        max_retries: 0,
        pool_size: 8,
        unsigned_payload: false,
        list_page_size: 1000,
    })
    .unwrap();
    rt.block_on(async {
        for _ in 0..3 {
            let mut best = Duration::MAX;
            for _ in 0..10 {
                let t = Instant::now();
                let (b, _) = store.get(Key::parse(b"big").unwrap()).await.unwrap();
                let e = t.elapsed();
                assert_eq!(b.len(), 8 << 20);
                best = best.min(e);
            }
            println!("best get {:?}", best);
        }
    });
}
