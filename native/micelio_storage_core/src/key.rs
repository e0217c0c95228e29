//! Key rules shared by every backend, so all backends accept and reject alike.
//!
//! A key is a relative, `/`-separated UTF-8 path. Rejected: empty keys, a
//! leading `/`, empty, `.` or `..` segments, control characters, backslashes,
//! and segments that start with the reserved temp-file prefix.
//!
//! `Key` and `Prefix` are owned and validated: a key is parsed once, where it
//! enters Rust, and then moves (cheaply: it is reference-counted) through
//! tasks, tiers and origins without being checked again.

use std::fmt;
use std::sync::Arc;

use crate::error::StoreError;

/// Names of in-flight temp files start with this; keys may not.
pub const TEMP_PREFIX: &str = ".micelio-tmp-";

/// S3's own limit on key length, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Most filesystems' limit on one name (NAME_MAX).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// A key that passed validation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(Arc<str>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", &*self.0)
    }
}

impl Key {
    /// Validates raw key bytes.
    pub fn parse(raw: &[u8]) -> Result<Self, StoreError> {
        match broken_rule(raw) {
            None => Ok(Key(Arc::from(
                std::str::from_utf8(raw).expect("checked by broken_rule"),
            ))),
            Some(_) => Err(StoreError::InvalidKey(raw.to_vec())),
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The directory part (without trailing `/`), if any, and the file name.
    pub fn split_parent(&self) -> (Option<&str>, &str) {
        match self.0.rsplit_once('/') {
            Some((dir, name)) => (Some(dir), name),
            None => (None, &self.0),
        }
    }
}

/// The key rule `raw` breaks, in words (the README's table says the same),
/// or `None` for a valid key. The one place the rules are written: `parse`
/// and the error messages both read it.
pub fn broken_rule(raw: &[u8]) -> Option<&'static str> {
    let Ok(key) = std::str::from_utf8(raw) else {
        return Some("a key must be valid UTF-8");
    };
    if key.is_empty() {
        return Some("a key must not be empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return Some("a key is at most 1024 bytes (S3's limit)");
    }
    key.split('/').find_map(segment_rule)
}

fn segment_rule(seg: &str) -> Option<&'static str> {
    if seg.is_empty() {
        Some("a key has no empty segment (no leading, trailing or doubled /)")
    } else if seg == "." || seg == ".." {
        Some("a key has no . or .. segment")
    } else if seg.len() > MAX_SEGMENT_BYTES {
        Some("a segment (the text between two /) is at most 255 bytes")
    } else if seg.starts_with(TEMP_PREFIX) {
        Some("a segment must not start with .micelio-tmp- (reserved for temp files)")
    } else if seg.chars().any(|c| c.is_control() || c == '\\') {
        Some("a key has no control characters and no backslash")
    } else {
        None
    }
}

fn valid_segment(seg: &str) -> bool {
    segment_rule(seg).is_none()
}

/// A validated list prefix: a plain string prefix of keys, possibly empty,
/// possibly ending inside a segment (`"sessions/ab"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(Arc<str>);

impl Prefix {
    /// Validates raw prefix bytes. Every complete segment must be a valid key
    /// segment; the trailing partial segment may be empty.
    pub fn parse(raw: &[u8]) -> Result<Self, StoreError> {
        let invalid = || StoreError::InvalidPrefix(raw.to_vec());
        let prefix = std::str::from_utf8(raw).map_err(|_| invalid())?;
        if prefix.len() > MAX_KEY_BYTES {
            return Err(invalid());
        }
        let (dirs, partial) = match prefix.rsplit_once('/') {
            Some((dirs, partial)) => (Some(dirs), partial),
            None => (None, prefix),
        };
        let dirs_ok = dirs.is_none_or(|d| d.split('/').all(valid_segment));
        let partial_ok = !(partial.chars().any(|c| c.is_control() || c == '\\')
            || partial.starts_with(TEMP_PREFIX));
        if dirs_ok && partial_ok {
            Ok(Prefix(Arc::from(prefix)))
        } else {
            Err(invalid())
        }
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The complete directories of the prefix (`"a/b"` for `"a/b/c"`) and the
    /// partial last segment (`"c"`).
    pub fn split_dir(&self) -> (Option<&str>, &str) {
        match self.0.rsplit_once('/') {
            Some((dir, partial)) => (Some(dir), partial),
            None => (None, &self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(k: &str) -> bool {
        Key::parse(k.as_bytes()).is_ok()
    }

    #[test]
    fn accepts_ordinary_and_odd_keys() {
        for k in [
            "a",
            "sessions/abc/files/main.ex",
            "with space/é ü/日本語.txt",
            "sym+bols%&#?=/x",
            ".hidden",
            "a/..b/c..",
        ] {
            assert!(ok(k), "{k}");
        }
    }

    #[test]
    fn rejects_keys_that_escape_or_are_malformed() {
        for k in [
            "",
            "/abs",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            "../a",
            "a/../../b",
            "..",
            "a\\b",
            "nul\0byte",
            "tab\there",
            "del\u{7f}",
            ".micelio-tmp-123",
            "a/.micelio-tmp-x/b",
        ] {
            assert!(!ok(k), "{k:?}");
        }
        assert!(Key::parse(&[0xff, 0xfe]).is_err());
        assert!(Key::parse("a".repeat(1025).as_bytes()).is_err());
        assert!(Key::parse("a".repeat(256).as_bytes()).is_err());
    }

    #[test]
    fn invalid_key_error_carries_the_key() {
        assert_eq!(
            Key::parse(b"../x").unwrap_err(),
            StoreError::InvalidKey(b"../x".to_vec())
        );
    }

    #[test]
    fn prefixes() {
        for p in ["", "a", "a/", "a/b", "sessions/ab", "x/.hid"] {
            assert!(Prefix::parse(p.as_bytes()).is_ok(), "{p}");
        }
        for p in ["/", "/a", "../", "a/../", "a//", "a\\b", "a/\0"] {
            assert!(Prefix::parse(p.as_bytes()).is_err(), "{p:?}");
        }
        let p = Prefix::parse(b"a/b/c").unwrap();
        assert_eq!(p.split_dir(), (Some("a/b"), "c"));
        assert_eq!(Prefix::parse(b"abc").unwrap().split_dir(), (None, "abc"));
    }
}
