use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use micelio_storage_core::error::StoreError;
use micelio_storage_core::key::{Key, Prefix};
use micelio_storage_core::local::LocalStore;
use micelio_storage_core::object::Deadline;
use micelio_storage_core::store::{PutCondition, PutOptions};

fn k(s: &str) -> Key {
    Key::parse(s.as_bytes()).unwrap()
}

fn later() -> Deadline {
    Deadline::after(Duration::from_secs(30))
}

fn store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    (dir, store)
}

fn put(s: &LocalStore, key: &str, body: &[u8]) {
    s.write(&k(key), body, &PutOptions::default(), later())
        .unwrap();
}

fn list(s: &LocalStore, prefix: &str) -> Vec<String> {
    s.keys(&Prefix::parse(prefix.as_bytes()).unwrap(), later())
        .unwrap()
}

#[test]
fn put_get_head_delete_round_trip() {
    let (_d, s) = store();
    put(&s, "sessions/1/files/a.txt", b"hello");
    let (body, meta) = s.read(&k("sessions/1/files/a.txt"), later()).unwrap();
    assert_eq!(body, b"hello");
    assert_eq!(meta.size, 5);
    assert_eq!(s.stat(&k("sessions/1/files/a.txt"), later()).unwrap(), meta);
    s.remove(&k("sessions/1/files/a.txt"), false, later())
        .unwrap();
    assert_eq!(
        s.read(&k("sessions/1/files/a.txt"), later()).unwrap_err(),
        StoreError::NotFound
    );
    // Idempotent, and empty parents are pruned.
    s.remove(&k("sessions/1/files/a.txt"), false, later())
        .unwrap();
    assert_eq!(std::fs::read_dir(s.root()).unwrap().count(), 0);
}

#[test]
fn etag_changes_on_every_write_even_with_same_content() {
    let (_d, s) = store();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        put(&s, "k", b"same");
        assert!(seen.insert(s.stat(&k("k"), later()).unwrap().etag));
    }
}

#[test]
fn list_is_a_sorted_recursive_string_prefix_match() {
    let (_d, s) = store();
    for key in ["a/b/c", "a/bc", "a/b2/x", "ab", "z"] {
        put(&s, key, b"x");
    }
    assert_eq!(list(&s, ""), ["a/b/c", "a/b2/x", "a/bc", "ab", "z"]);
    assert_eq!(list(&s, "a/b"), ["a/b/c", "a/b2/x", "a/bc"]);
    assert_eq!(list(&s, "a/b/"), ["a/b/c"]);
    assert_eq!(list(&s, "a"), ["a/b/c", "a/b2/x", "a/bc", "ab"]);
    assert!(list(&s, "nope/").is_empty());
}

#[test]
fn temp_files_are_never_listed_or_readable() {
    let (d, s) = store();
    put(&s, "dir/real", b"x");
    std::fs::write(d.path().join("dir/.micelio-tmp-deadbeef"), b"partial").unwrap();
    assert_eq!(list(&s, ""), ["dir/real"]);
    assert!(Key::parse(b"dir/.micelio-tmp-deadbeef").is_err());
}

#[test]
fn symlinks_never_lead_outside_the_root() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"s3cr3t").unwrap();
    let (d, s) = store();
    std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), d.path().join("file")).unwrap();
    for store in [&s, &{
        let s2 = LocalStore::open(d.path()).unwrap();
        s2.disable_openat2();
        s2
    }] {
        assert!(matches!(
            store.read(&k("link/secret"), later()),
            Err(StoreError::UnsafePath(_))
        ));
        assert!(matches!(
            store.read(&k("file"), later()),
            Err(StoreError::UnsafePath(_))
        ));
        assert!(matches!(
            store.write(&k("link/new"), b"x", &PutOptions::default(), later()),
            Err(StoreError::UnsafePath(_))
        ));
    }
    assert!(!outside.path().join("new").exists());
    assert!(list(&s, "").is_empty());
}

#[test]
fn put_if_none_match_has_exactly_one_winner() {
    let (_d, s) = store();
    let s = Arc::new(s);
    let wins = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let (s, wins) = (s.clone(), wins.clone());
            std::thread::spawn(move || {
                let opts = PutOptions {
                    condition: PutCondition::IfNoneMatch,
                    durable: false,
                    ..PutOptions::default()
                };
                match s.write(&k("race/key"), format!("{i}").as_bytes(), &opts, later()) {
                    Ok(()) => {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(StoreError::PreconditionFailed) => {}
                    Err(e) => panic!("{e:?}"),
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(wins.load(Ordering::SeqCst), 1);
}

#[test]
fn put_if_match_is_a_compare_and_swap() {
    let (_d, s) = store();
    put(&s, "cas", b"0");
    let s = Arc::new(s);
    // 8 threads each add 25 increments through CAS loops; none may be lost.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    loop {
                        let (body, meta) = s.read(&k("cas"), later()).unwrap();
                        let n: u64 = std::str::from_utf8(&body).unwrap().parse().unwrap();
                        let opts = PutOptions {
                            condition: PutCondition::IfMatch(meta.etag),
                            durable: false,
                            ..PutOptions::default()
                        };
                        match s.write(&k("cas"), (n + 1).to_string().as_bytes(), &opts, later()) {
                            Ok(()) => break,
                            Err(StoreError::PreconditionFailed) => continue,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(s.read(&k("cas"), later()).unwrap().0, b"200");
}

#[test]
fn a_passed_deadline_times_out_without_writing() {
    let (_d, s) = store();
    let past = Deadline::after(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(1));
    assert_eq!(
        s.write(&k("x"), b"y", &PutOptions::default(), past)
            .unwrap_err(),
        StoreError::Timeout
    );
    assert!(list(&s, "").is_empty());
}

#[test]
fn durable_puts_and_deletes_work() {
    let (_d, s) = store();
    let opts = PutOptions {
        condition: PutCondition::Always,
        durable: true,
        ..PutOptions::default()
    };
    s.write(&k("d/x"), b"durable", &opts, later()).unwrap();
    assert_eq!(s.read(&k("d/x"), later()).unwrap().0, b"durable");
    s.remove(&k("d/x"), true, later()).unwrap();
}

#[test]
fn directories_are_not_objects() {
    let (_d, s) = store();
    put(&s, "dir/file", b"x");
    assert_eq!(
        s.read(&k("dir"), later()).unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        s.stat(&k("dir"), later()).unwrap_err(),
        StoreError::NotFound
    );
    s.remove(&k("dir"), false, later()).unwrap();
    assert_eq!(list(&s, ""), ["dir/file"]);
}

#[test]
fn relative_roots_are_rejected() {
    assert!(matches!(
        LocalStore::open(std::path::Path::new("relative/root")),
        Err(StoreError::InvalidConfig("local_path", _))
    ));
}

#[test]
fn a_fifo_under_the_root_is_no_object_and_does_not_block_a_head() {
    let (d, s) = store();
    put(&s, "pipes/real.txt", b"x");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.path().join("pipes/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    // A blocking open of a FIFO with no writer would never return.
    assert!(matches!(
        s.stat(&k("pipes/fifo"), later()),
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.stat(&k("pipes/real.txt"), later()).unwrap().size, 1);
}
