//! The tiered store over a local origin: fills, invalidation, merged misses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use micelio_storage_core::local::LocalStore;
use micelio_storage_core::object::PutOptions;
use micelio_storage_core::tiered::{Origin, TieredConfig, TieredStore};

const T: Duration = Duration::from_secs(10);

fn store(dir: &tempfile::TempDir) -> Arc<TieredStore<Bytes>> {
    let origin = LocalStore::open(&dir.path().join("origin")).unwrap();
    let cfg = TieredConfig {
        memory_max_bytes: 1 << 20,
        disk_path: dir.path().join("cache"),
        disk_max_bytes: 1 << 20,
        cdn_base_url: None,
        cdn_timeout: Duration::from_secs(1),
    };
    Arc::new(TieredStore::new(cfg, Origin::Local(Arc::new(origin))).unwrap())
}

fn stat(s: &TieredStore<Bytes>, tier: &str, name: &str) -> u64 {
    let stats = s.stats();
    let (_, list) = stats.iter().find(|(t, _)| *t == tier).unwrap();
    list.iter().find(|(n, _)| *n == name).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_make_one_origin_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.put(
        "cold",
        Bytes::from_static(b"value"),
        PutOptions::default(),
        T,
    )
    .await
    .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.fetch("cold", T).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(&t.await.unwrap().unwrap().0[..], b"value");
    }
    assert_eq!(stat(&s, "origin", "fetches"), 1);
    assert_eq!(&s.get_memory("cold", false).unwrap().0[..], b"value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_invalidate_ram_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.put("k", Bytes::from_static(b"v1"), PutOptions::default(), T)
        .await
        .unwrap();
    assert_eq!(&s.fetch("k", T).await.unwrap().0[..], b"v1");
    assert!(s.get_memory("k", false).is_some());
    s.put("k", Bytes::from_static(b"v2"), PutOptions::default(), T)
        .await
        .unwrap();
    assert!(s.get_memory("k", false).is_none());
    assert!(s.get_disk("k").is_none());
    assert_eq!(&s.fetch("k", T).await.unwrap().0[..], b"v2");
    assert_eq!(&s.get_disk("k").unwrap().0[..], b"v2");
    s.delete("k", false, T).await.unwrap();
    assert!(s.get_memory("k", false).is_none());
    assert!(s.get_disk("k").is_none());
    assert_eq!(
        s.fetch("k", T).await.unwrap_err(),
        micelio_storage_core::error::StoreError::NotFound
    );
}
