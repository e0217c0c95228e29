//! object_store's side of the benches, timed in process (startup excluded):
//!   object_store_baseline put|get <endpoint> <bucket> <key> <file> <access> <secret>
//!     multipart upload / parallel ranged download of a file (bench/large.exs);
//!     prints `seconds max_rss_kib`;
//!   object_store_baseline ops put|get <endpoint> <bucket> <prefix> <access> <secret> <size> <count> <concurrency>
//!     `count` PUTs (or GETs of keys it puts first, untimed) of `size` bytes,
//!     `concurrency` at a time (bench/s3.exs); prints `seconds cpu_seconds`, the CPU
//!     (user + system, all threads) the timed part cost this process.

use std::io::{Read, Write};
use std::time::Instant;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};

const PART: usize = 8 << 20;
const IN_FLIGHT: usize = 4;

/// CPU seconds (user + system, all threads) this process has used, from
/// `/proc/self/stat` (clock ticks of 1/100 s, Linux's `CLK_TCK`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces): utime
    // and stime are the 12th and 13th.
    let fields: Vec<u64> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace())
        .into_iter()
        .flatten()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    fields.iter().sum::<u64>() as f64 / 100.0
}

fn max_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("ops") {
        return ops(&args[2..]).await;
    }
    let [_, op, endpoint, bucket, key, file, access, secret] = &args[..] else {
        panic!("usage: put|get <endpoint> <bucket> <key> <file> <access> <secret>");
    };
    let store = build(endpoint, bucket, access, secret);
    let path = Path::from(key.as_str());
    let started = Instant::now();
    match op.as_str() {
        "put" => {
            let upload = store.put_multipart(&path).await.expect("create");
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
            let mut f = std::fs::File::open(file).expect("open");
            let mut buf = vec![0u8; PART];
            loop {
                let mut filled = 0;
                while filled < PART {
                    let n = f.read(&mut buf[filled..]).expect("read");
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                writer.wait_for_capacity(IN_FLIGHT).await.expect("part");
                writer.write(&buf[..filled]);
                if filled < PART {
                    break;
                }
            }
            writer.finish().await.expect("complete");
        }
        "get" => {
            let size = store.head(&path).await.expect("head").size;
            let ranges: Vec<std::ops::Range<u64>> = (0..size.div_ceil(PART as u64))
                .map(|i| i * PART as u64..((i + 1) * PART as u64).min(size))
                .collect();
            let mut out = std::fs::File::create(file).expect("create");
            let store = &store;
            let path = &path;
            let mut parts = futures::stream::iter(ranges)
                .map(|r| async move { store.get_range(path, r).await })
                .buffered(IN_FLIGHT);
            while let Some(part) = parts.next().await {
                out.write_all(&part.expect("range")).expect("write");
            }
        }
        other => panic!("unknown op {other}"),
    }
    println!("{} {}", started.elapsed().as_secs_f64(), max_rss_kib());
}

fn build(endpoint: &str, bucket: &str, access: &str, secret: &str) -> object_store::aws::AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id(access)
        .with_secret_access_key(secret)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .expect("store")
}

async fn ops(args: &[String]) {
    let [op, endpoint, bucket, prefix, access, secret, size, count, concurrency] = args else {
        panic!("usage: ops put|get <endpoint> <bucket> <prefix> <access> <secret> <size> <count> <concurrency>");
    };
    let store = build(endpoint, bucket, access, secret);
    let size: usize = size.parse().expect("size");
    let count: usize = count.parse().expect("count");
    let concurrency: usize = concurrency.parse().expect("concurrency");
    let body = bytes::Bytes::from(vec![7u8; size]);
    let keys: Vec<Path> = (0..count)
        .map(|i| Path::from(format!("{prefix}os/{i}")))
        .collect();
    let store = &store;
    let put_all = |keys: &[Path]| {
        let body = body.clone();
        futures::stream::iter(keys.to_vec())
            .map(move |k| {
                let body = body.clone();
                async move { store.put(&k, body.into()).await.expect("put") }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
    };
    // Warm: connections open, keys exist (GETs read them).
    put_all(&keys[..concurrency.min(count)]).await;
    if op == "get" {
        put_all(&keys).await;
    }
    let (started, cpu_before) = (Instant::now(), cpu_seconds());
    match op.as_str() {
        "put" => {
            put_all(&keys).await;
        }
        "get" => {
            futures::stream::iter(keys.clone())
                .map(|k| async move {
                    store
                        .get(&k)
                        .await
                        .expect("get")
                        .bytes()
                        .await
                        .expect("body")
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await;
        }
        other => panic!("unknown op {other}"),
    }
    println!(
        "{} {}",
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu_before
    );
}
