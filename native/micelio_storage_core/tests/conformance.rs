//! The store contract, run against every backend: local, memory, S3 (a
//! SeaweedFS this binary starts), and tiered over local and S3. A backend passes when every
//! case below passes on it unchanged.

mod support;

use std::time::Duration;

use bytes::Bytes;
use micelio_storage_core::attributes::Attributes;
use micelio_storage_core::error::StoreError;
use micelio_storage_core::key::{Key, Prefix};
use micelio_storage_core::object::Deadline;
use micelio_storage_core::store::{
    ByteRange, CopyOptions, DeleteOptions, GetOptions, HeadOptions, ListOptions, PutCondition,
    PutOptions, Store,
};
use micelio_storage_core::transfer::{ChunksSource, Transfer};

fn k(s: &str) -> Key {
    Key::parse(s.as_bytes()).unwrap()
}

fn soon() -> Deadline {
    Deadline::after(Duration::from_secs(60))
}

async fn put(s: &dyn Store, key: &str, body: &'static [u8]) {
    s.put(
        &k(key),
        Bytes::from_static(body),
        &PutOptions::default(),
        soon(),
    )
    .await
    .unwrap();
}

async fn get(s: &dyn Store, key: &str) -> Result<Vec<u8>, StoreError> {
    let (body, _) = s
        .get(&k(key), &GetOptions::default(), soon())
        .await?
        .into_bytes();
    Ok(body.to_vec())
}

async fn list(s: &dyn Store, prefix: &str) -> Vec<String> {
    s.list(
        &Prefix::parse(prefix.as_bytes()).unwrap(),
        &ListOptions::default(),
        soon(),
    )
    .await
    .unwrap()
}

const ODD_KEYS: &[&str] = &[
    "with space/file name.txt",
    "plus+and&amp/100%/x",
    "unicodé/日本語/файл.txt",
    "q?=#/semi;colon",
];

mod cases {
    use super::*;

    pub async fn round_trip(s: &dyn Store) {
        put(s, "a/b.txt", b"hello").await;
        assert_eq!(get(s, "a/b.txt").await.unwrap(), b"hello");
        put(s, "empty", b"").await;
        assert_eq!(get(s, "empty").await.unwrap(), b"");
        put(s, "a/b.txt", b"replaced, longer").await;
        assert_eq!(get(s, "a/b.txt").await.unwrap(), b"replaced, longer");
        let meta = s
            .head(&k("a/b.txt"), &HeadOptions::default(), soon())
            .await
            .unwrap();
        assert_eq!(meta.size, 16);
        assert!(!meta.etag.is_empty());
    }

    pub async fn missing_is_not_found(s: &dyn Store) {
        assert_eq!(get(s, "nope").await.unwrap_err(), StoreError::NotFound);
        let head = s.head(&k("nope"), &HeadOptions::default(), soon()).await;
        assert_eq!(head.unwrap_err(), StoreError::NotFound);
    }

    pub async fn etags_change_with_content(s: &dyn Store) {
        let (key, opts) = (k("m"), HeadOptions::default());
        put(s, "m", b"one").await;
        let first = s.head(&key, &opts, soon()).await.unwrap().etag;
        put(s, "m", b"two!").await;
        let second = s.head(&key, &opts, soon()).await.unwrap();
        assert_ne!(first, second.etag);
        assert_eq!(second.size, 4);
    }

    pub async fn lists_sorted_by_plain_prefix(s: &dyn Store) {
        for key in ["s/1/b", "s/1/a", "s/1/deep/x", "s/10/a", "t"] {
            put(s, key, b"x").await;
        }
        assert_eq!(list(s, "s/1/").await, ["s/1/a", "s/1/b", "s/1/deep/x"]);
        assert_eq!(list(s, "s/1").await.len(), 4);
        assert!(list(s, "missing/").await.is_empty());
    }

    pub async fn deletes_are_idempotent(s: &dyn Store) {
        let opts = DeleteOptions::default();
        put(s, "d/x", b"x").await;
        s.delete(&k("d/x"), &opts, soon()).await.unwrap();
        assert_eq!(get(s, "d/x").await.unwrap_err(), StoreError::NotFound);
        s.delete(&k("d/x"), &opts, soon()).await.unwrap();
        assert!(list(s, "d/").await.is_empty());
    }

    pub async fn conditional_puts(s: &dyn Store) {
        let once = PutOptions {
            condition: PutCondition::IfNoneMatch,
            ..PutOptions::default()
        };
        let body = || Bytes::from_static(b"v1");
        s.put(&k("c"), body(), &once, soon()).await.unwrap();
        let again = s.put(&k("c"), body(), &once, soon()).await;
        assert_eq!(again.unwrap_err(), StoreError::PreconditionFailed);
        let etag = s
            .head(&k("c"), &HeadOptions::default(), soon())
            .await
            .unwrap()
            .etag;
        let cas = PutOptions {
            condition: PutCondition::IfMatch(etag),
            ..PutOptions::default()
        };
        s.put(&k("c"), Bytes::from_static(b"v2"), &cas, soon())
            .await
            .unwrap();
        let stale = s
            .put(&k("c"), Bytes::from_static(b"v3"), &cas, soon())
            .await;
        assert_eq!(stale.unwrap_err(), StoreError::PreconditionFailed);
        let absent = s.put(&k("none"), body(), &cas, soon()).await;
        assert_eq!(absent.unwrap_err(), StoreError::PreconditionFailed);
        assert_eq!(get(s, "c").await.unwrap(), b"v2");
    }

    pub async fn copy(s: &dyn Store) {
        let opts = CopyOptions::default();
        put(s, "src/a", b"content").await;
        put(s, "dst/a", b"old").await;
        s.copy(&k("src/a"), &k("dst/a"), &opts, soon())
            .await
            .unwrap();
        assert_eq!(get(s, "dst/a").await.unwrap(), b"content");
        assert_eq!(get(s, "src/a").await.unwrap(), b"content");
        let missing = s.copy(&k("src/none"), &k("dst/b"), &opts, soon()).await;
        assert_eq!(missing.unwrap_err(), StoreError::NotFound);
        assert_eq!(get(s, "dst/b").await.unwrap_err(), StoreError::NotFound);
        for (i, key) in ODD_KEYS.iter().enumerate() {
            let dest = format!("copied/{i}/{key}");
            s.put(
                &k(key),
                Bytes::from(key.as_bytes().to_vec()),
                &Default::default(),
                soon(),
            )
            .await
            .unwrap();
            s.copy(&k(key), &k(&dest), &opts, soon()).await.unwrap();
            assert_eq!(get(s, &dest).await.unwrap(), key.as_bytes(), "{key}");
        }
    }

    pub async fn health(s: &dyn Store) {
        s.health(soon()).await.unwrap();
        // The probe leaves nothing behind.
        assert!(list(s, "").await.is_empty());
    }

    pub async fn ranges(s: &dyn Store) {
        put(s, "r/ten", b"0123456789").await;
        let read = |offset, length| async move {
            let opts = GetOptions {
                range: Some(ByteRange { offset, length }),
                ..GetOptions::default()
            };
            let (body, meta) = s
                .get(&k("r/ten"), &opts, soon())
                .await
                .unwrap()
                .into_bytes();
            assert_eq!(meta.size, 10, "the metadata describes the whole object");
            body.to_vec()
        };
        assert_eq!(read(0, Some(3)).await, b"012");
        assert_eq!(read(4, Some(2)).await, b"45");
        assert_eq!(read(7, None).await, b"789");
        assert_eq!(read(8, Some(100)).await, b"89");
        assert_eq!(read(10, None).await, b"");
        assert_eq!(read(50, Some(5)).await, b"");
        assert_eq!(read(3, Some(0)).await, b"");
        let missing = GetOptions {
            range: Some(ByteRange {
                offset: 0,
                length: Some(1),
            }),
            ..GetOptions::default()
        };
        let err = s.get(&k("r/none"), &missing, soon()).await.err();
        assert_eq!(err, Some(StoreError::NotFound));
    }

    pub async fn attributes(s: &dyn Store) {
        let attributes = Attributes {
            content_type: Some("text/html; charset=utf-8".into()),
            cache_control: Some("max-age=60".into()),
            content_disposition: Some("attachment; filename=\"a.html\"".into()),
            content_encoding: None,
            metadata: vec![
                ("owner".into(), "ana".into()),
                ("team".into(), "forge".into()),
            ],
            ..Attributes::default()
        };
        let opts = PutOptions {
            attributes: attributes.clone(),
            ..PutOptions::default()
        };
        s.put(&k("m/page"), Bytes::from_static(b"<p>"), &opts, soon())
            .await
            .unwrap();
        let head = s
            .head(&k("m/page"), &HeadOptions::default(), soon())
            .await
            .unwrap();
        assert_eq!(head.attributes, attributes);
        let (_, meta) = s
            .get(&k("m/page"), &GetOptions::default(), soon())
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(meta.attributes, attributes);
        // A copy keeps them; a put without any stores the type the key implies.
        s.copy(&k("m/page"), &k("m/copy"), &CopyOptions::default(), soon())
            .await
            .unwrap();
        let copied = s
            .head(&k("m/copy"), &HeadOptions::default(), soon())
            .await
            .unwrap();
        assert_eq!(copied.attributes, attributes);
        put(s, "m/logo.png", b"png").await;
        let plain = s
            .head(&k("m/logo.png"), &HeadOptions::default(), soon())
            .await
            .unwrap();
        assert_eq!(plain.attributes.content_type.as_deref(), Some("image/png"));
        assert!(plain.attributes.metadata.is_empty());
        put(s, "m/blob", b"?").await;
        let blob = s
            .head(&k("m/blob"), &HeadOptions::default(), soon())
            .await
            .unwrap();
        assert_eq!(
            blob.attributes.content_type.as_deref(),
            Some("application/octet-stream")
        );
    }

    pub async fn streams(s: &dyn Store) {
        use futures_util::StreamExt;
        let xfer = Transfer::new(Duration::from_secs(60), None);
        // Past the S3 fixture's 5 MiB threshold: a multipart upload.
        let data: Vec<u8> = (0..(12 << 20) + 77).map(|i| (i * 31 % 251) as u8).collect();
        let chunks: Vec<Bytes> = data.chunks(300_001).map(Bytes::copy_from_slice).collect();
        let opts = PutOptions {
            attributes: Attributes {
                metadata: vec![("kind".into(), "big".into())],
                ..Attributes::default()
            },
            ..PutOptions::default()
        };
        s.put_stream(
            &k("big/one"),
            Box::new(ChunksSource::new(chunks)),
            &opts,
            &xfer,
        )
        .await
        .unwrap();
        assert_eq!(get(s, "big/one").await.unwrap(), data);
        let (meta, mut stream) = s
            .get_stream(&k("big/one"), &GetOptions::default(), &xfer)
            .await
            .unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(
            meta.attributes.metadata,
            vec![("kind".into(), "big".into())]
        );
        let mut read = Vec::new();
        while let Some(chunk) = stream.next().await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(read, data);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let meta = s
            .get_file(&k("big/one"), &path, &GetOptions::default(), &xfer)
            .await
            .unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        std::fs::write(dir.path().join("in.bin"), &data[..1000]).unwrap();
        s.put_file(
            &k("big/two"),
            &dir.path().join("in.bin"),
            &PutOptions::default(),
            &xfer,
        )
        .await
        .unwrap();
        assert_eq!(get(s, "big/two").await.unwrap(), &data[..1000]);
        // A missing key leaves no file behind.
        let none = dir.path().join("none.bin");
        let err = s
            .get_file(&k("big/none"), &none, &GetOptions::default(), &xfer)
            .await
            .err();
        assert_eq!(err, Some(StoreError::NotFound));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    pub async fn delete_many(s: &dyn Store) {
        // More than one DeleteObjects batch (1,000 keys), written 32 at a time.
        let keys: Vec<Key> = (0..1_050).map(|i| k(&format!("many/{i:04}"))).collect();
        let opts = PutOptions::default();
        for chunk in keys.chunks(32) {
            let puts = chunk
                .iter()
                .map(|key| s.put(key, Bytes::from_static(b"x"), &opts, soon()));
            for result in futures_util::future::join_all(puts).await {
                result.unwrap();
            }
        }
        let mut asked = keys.clone();
        asked.push(k("many/never-was"));
        let outcome = s
            .delete_many(&asked, &DeleteOptions::default(), soon())
            .await
            .unwrap();
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        assert_eq!(outcome.deleted, asked);
        assert!(list(s, "many/").await.is_empty());
    }
}

macro_rules! conformance {
    ($backend:ident, $fixture:path) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($case:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        let fixture = $fixture();
                        cases::$case(&*fixture.store).await;
                    }
                };
            }

            case!(round_trip);
            case!(missing_is_not_found);
            case!(etags_change_with_content);
            case!(lists_sorted_by_plain_prefix);
            case!(deletes_are_idempotent);
            case!(conditional_puts);
            case!(copy);
            case!(delete_many);
            case!(health);
            case!(ranges);
            case!(attributes);
            case!(streams);
        }
    };
}

conformance!(local, support::local);
conformance!(memory, support::memory);
conformance!(skeleton, support::skeleton);
conformance!(tiered_over_skeleton, support::tiered_skeleton);
conformance!(tiered_over_local, support::tiered_local);
conformance!(s3, support::s3);
conformance!(tiered_over_s3, support::tiered_s3);
