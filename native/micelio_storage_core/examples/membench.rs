use bytes::Bytes;
use micelio_storage_core::key::Key;
use micelio_storage_core::object::ObjectMeta;
use micelio_storage_core::tiered::memory::MemoryTier;
use std::time::Instant;
fn main() {
    let t = MemoryTier::<Bytes>::new(64_000_000);
    let meta = ObjectMeta {
        size: 4096,
        etag: "e".into(),
        last_modified_ns: 0,
    };
    t.insert("ram/4096", Bytes::from(vec![1u8; 4096]), meta);
    for _ in 0..3 {
        let n = 1_000_000;
        let i = Instant::now();
        for _ in 0..n {
            std::hint::black_box(t.get(std::hint::black_box("ram/4096"), false));
        }
        println!("hit: {:?}", i.elapsed() / n);
        let i = Instant::now();
        for _ in 0..n {
            std::hint::black_box(t.get(std::hint::black_box("ram/nope"), false));
        }
        println!("miss: {:?}", i.elapsed() / n);
        let i = Instant::now();
        for _ in 0..n {
            std::hint::black_box(Key::parse(std::hint::black_box(b"ram/4096")).is_ok());
        }
        println!("parse: {:?}", i.elapsed() / n);
    }
}
