//! The tiered store over a local origin: fills, invalidation, merged misses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use micelio_storage_core::key::Key;
use micelio_storage_core::local::LocalStore;
use micelio_storage_core::object::Deadline;
use micelio_storage_core::store::{DeleteOptions, PutOptions, Store};
use micelio_storage_core::tiered::{TieredConfig, TieredStore};

fn t() -> Deadline {
    Deadline::after(Duration::from_secs(10))
}

fn k(s: &str) -> Key {
    Key::parse(s.as_bytes()).unwrap()
}

fn store(dir: &tempfile::TempDir) -> Arc<TieredStore<Bytes>> {
    let origin = LocalStore::open(&dir.path().join("origin")).unwrap();
    let cfg = TieredConfig {
        memory_max_bytes: 1 << 20,
        memory_max_object_bytes: 1 << 20,
        disk_path: dir.path().join("cache"),
        disk_max_bytes: 1 << 20,
        disk_max_object_bytes: 1 << 20,
        cdn_base_url: None,
        cdn_timeout: Duration::from_secs(1),
        revalidate_after: None,
    };
    TieredStore::new(cfg, Arc::new(origin)).unwrap()
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
        &k("cold"),
        Bytes::from_static(b"value"),
        &PutOptions::default(),
        t(),
    )
    .await
    .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.fetch(&k("cold"), t()).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(&task.await.unwrap().unwrap().0[..], b"value");
    }
    assert_eq!(stat(&s, "origin", "fetches"), 1);
    assert_eq!(&s.get_memory("cold", false).unwrap().0[..], b"value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_invalidate_ram_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let put = PutOptions::default();
    s.put(&k("k"), Bytes::from_static(b"v1"), &put, t())
        .await
        .unwrap();
    assert_eq!(&s.fetch(&k("k"), t()).await.unwrap().0[..], b"v1");
    assert!(s.get_memory("k", false).is_some());
    s.put(&k("k"), Bytes::from_static(b"v2"), &put, t())
        .await
        .unwrap();
    assert!(s.get_memory("k", false).is_none());
    assert!(s.get_disk("k").is_none());
    assert_eq!(&s.fetch(&k("k"), t()).await.unwrap().0[..], b"v2");
    assert_eq!(&s.get_disk("k").unwrap().0[..], b"v2");
    s.delete(&k("k"), &DeleteOptions::default(), t())
        .await
        .unwrap();
    assert!(s.get_memory("k", false).is_none());
    assert!(s.get_disk("k").is_none());
    assert_eq!(
        s.fetch(&k("k"), t()).await.unwrap_err(),
        micelio_storage_core::error::StoreError::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_invalidates_the_destination() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let put = PutOptions::default();
    s.put(&k("src"), Bytes::from_static(b"new"), &put, t())
        .await
        .unwrap();
    s.put(&k("dst"), Bytes::from_static(b"old"), &put, t())
        .await
        .unwrap();
    assert_eq!(&s.fetch(&k("dst"), t()).await.unwrap().0[..], b"old");
    assert!(s.get_memory("dst", false).is_some());
    s.copy(&k("src"), &k("dst"), &Default::default(), t())
        .await
        .unwrap();
    assert!(s.get_memory("dst", false).is_none());
    assert!(s.get_disk("dst").is_none());
    assert_eq!(&s.fetch(&k("dst"), t()).await.unwrap().0[..], b"new");
}
