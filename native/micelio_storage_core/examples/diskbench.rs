use micelio_storage_core::object::ObjectMeta;
use micelio_storage_core::tiered::disk::DiskTier;
use std::time::Instant;
fn main() {
    let dir = std::env::temp_dir().join(format!("dbench-{}", std::process::id()));
    let tier = DiskTier::open(&dir, 1 << 30).unwrap();
    let body = vec![7u8; 1 << 20];
    let meta = ObjectMeta {
        size: body.len() as u64,
        etag: "e".into(),
        last_modified_ns: 0,
    };
    let s = tier.stage("k", &body, &meta).unwrap();
    tier.commit(s);
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..300 {
            let (b, _) = tier.get("k").unwrap();
            std::hint::black_box(b);
        }
        println!("get: {:?}/op", t.elapsed() / 300);
        let t = Instant::now();
        for _ in 0..300 {
            std::hint::black_box(crc32fast::hash(&body));
        }
        println!("crc: {:?}/op", t.elapsed() / 300);
        let t = Instant::now();
        for _ in 0..300 {
            let v = std::fs::read(dir.join(".lock")).unwrap();
            std::hint::black_box(v);
        }
        println!("tiny read: {:?}/op", t.elapsed() / 300);
    }
    std::fs::remove_dir_all(dir).unwrap();
}
