//! What a put says about an object besides its bytes: the HTTP headers a
//! browser needs (content type, cache control, disposition, encoding) and
//! user metadata. Every backend keeps them and gives them back alike; the
//! rules below are checked once, before any backend sees them.

use crate::error::StoreError;

/// S3's limit on user metadata (names and values together), in bytes.
pub const MAX_METADATA_BYTES: usize = 2048;

/// The content type of an object stored without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Headers and user metadata of an object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// `Content-Type`; `None` on a put means "guess from the key".
    pub content_type: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// User metadata, names lowercase, sorted by name.
    pub metadata: Vec<(String, String)>,
    /// The storage class an object store keeps the object in
    /// (`STANDARD_IA`, `GLACIER_IR`, ...), as the provider names it.
    pub storage_class: Option<String>,
    /// A canned ACL (`private`, `public-read`, ...), on write only.
    pub acl: Option<String>,
    /// Object tags, on write only (read them with `BucketOps::get_tags`).
    pub tags: Vec<(String, String)>,
}

/// The content type a key's extension implies (`a.png` is `image/png`), or
/// `application/octet-stream`: what an object stored without one reports.
pub fn guess_content_type(key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => mime_guess::from_path(name)
            .first_raw()
            .unwrap_or(DEFAULT_CONTENT_TYPE)
            .to_string(),
        _ => DEFAULT_CONTENT_TYPE.to_string(),
    }
}

fn header_value(what: &'static str, value: &str) -> Result<(), StoreError> {
    // Values travel as HTTP header values: printable ASCII only, so no
    // header can be injected and every backend stores the same bytes.
    if value.is_empty() || value.len() > 1024 || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(StoreError::InvalidConfig(
            what,
            "expected 1 to 1024 printable ASCII characters".into(),
        ));
    }
    Ok(())
}

impl Attributes {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.content_type.is_none()
            && self.cache_control.is_none()
            && self.content_disposition.is_none()
            && self.content_encoding.is_none()
            && self.metadata.is_empty()
    }

    /// Checks every value and normalizes metadata names (lowercase,
    /// sorted). Names are `[a-z0-9._-]`, starting with a letter or digit,
    /// as S3 stores them as `x-amz-meta-<name>` headers.
    pub fn validate(mut self) -> Result<Self, StoreError> {
        for (what, value) in [
            ("content_type", &self.content_type),
            ("cache_control", &self.cache_control),
            ("content_disposition", &self.content_disposition),
            ("content_encoding", &self.content_encoding),
        ] {
            if let Some(v) = value {
                header_value(what, v)?;
            }
        }
        let mut total = 0;
        for (name, value) in self.metadata.iter_mut() {
            *name = name.to_ascii_lowercase();
            let ok_name = name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric());
            if !ok_name {
                return Err(StoreError::InvalidConfig(
                    "metadata",
                    format!("invalid name {name:?}: use letters, digits, '.', '_' and '-'"),
                ));
            }
            if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(StoreError::InvalidConfig(
                    "metadata",
                    format!("the value of {name:?} must be printable ASCII"),
                ));
            }
            // S3 carries metadata in headers: servers drop an empty value
            // and trim spaces at the ends, so every backend refuses them
            // rather than store what S3 would not give back.
            if value.is_empty() || value.starts_with(' ') || value.ends_with(' ') {
                return Err(StoreError::InvalidConfig(
                    "metadata",
                    format!(
                        "the value of {name:?} must not be empty nor start or end with a space (S3 headers lose them)"
                    ),
                ));
            }
            total += name.len() + value.len();
        }
        if total > MAX_METADATA_BYTES {
            return Err(StoreError::InvalidConfig(
                "metadata",
                format!("{total} bytes; at most {MAX_METADATA_BYTES} (S3's limit)"),
            ));
        }
        check_tags(&self.tags)?;
        self.metadata.sort();
        let before = self.metadata.len();
        self.metadata.dedup_by(|a, b| a.0 == b.0);
        if self.metadata.len() != before {
            return Err(StoreError::InvalidConfig(
                "metadata",
                "a name is given twice (names are case-insensitive)".into(),
            ));
        }
        Ok(self)
    }

    /// Whether any attribute only an object store keeps is set (storage
    /// class, ACL, tags).
    pub fn has_object_store_options(&self) -> bool {
        self.storage_class.is_some() || self.acl.is_some() || !self.tags.is_empty()
    }

    /// These attributes with the content type filled in from `key` when unset.
    pub fn for_key(mut self, key: &str) -> Self {
        if self.content_type.is_none() {
            self.content_type = Some(guess_content_type(key));
        }
        self
    }

    /// A compact text form (JSON), for backends that keep attributes beside
    /// the content (local xattrs, the disk tier's headers).
    pub fn encode(&self) -> String {
        let opt = |v: &Option<String>| match v {
            Some(s) => serde_json::Value::String(s.clone()),
            None => serde_json::Value::Null,
        };
        let meta: Vec<serde_json::Value> = self
            .metadata
            .iter()
            .map(|(k, v)| serde_json::json!([k, v]))
            .collect();
        serde_json::json!({
            "ct": opt(&self.content_type),
            "cc": opt(&self.cache_control),
            "cd": opt(&self.content_disposition),
            "ce": opt(&self.content_encoding),
            "m": meta,
        })
        .to_string()
    }

    /// Reads `encode`'s form; `None` when it is not that.
    pub fn decode(text: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(text).ok()?;
        let opt = |name: &str| v.get(name).and_then(|s| s.as_str()).map(str::to_string);
        let metadata = v
            .get("m")?
            .as_array()?
            .iter()
            .filter_map(|pair| {
                let pair = pair.as_array()?;
                Some((
                    pair.first()?.as_str()?.to_string(),
                    pair.get(1)?.as_str()?.to_string(),
                ))
            })
            .collect();
        Some(Attributes {
            content_type: opt("ct"),
            cache_control: opt("cc"),
            content_disposition: opt("cd"),
            content_encoding: opt("ce"),
            metadata,
            ..Attributes::default()
        })
    }
}

/// S3's limits on object tags: at most 10, keys up to 128 characters and
/// values up to 256, no key twice, no `aws:` key, and only letters,
/// digits, spaces and `+ - = . _ : / @` (servers refuse the rest with
/// `InvalidTag`; checking here says which tag, before any request).
fn check_tags(tags: &[(String, String)]) -> Result<(), StoreError> {
    let bad = |msg: String| Err(StoreError::InvalidConfig("tags", msg));
    if tags.len() > 10 {
        return bad(format!("{} tags; at most 10", tags.len()));
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
            return bad(format!(
                "tag {k:?}: keys are 1 to 128 characters, values at most 256"
            ));
        }
        let allowed = |c: char| c.is_alphanumeric() || " +-=._:/@".contains(c);
        if !k.chars().all(allowed) || !v.chars().all(allowed) {
            return bad(format!(
                "tag {k:?}: names and values take letters, digits, spaces and + - = . _ : / @"
            ));
        }
        if k.starts_with("aws:") {
            return bad(format!("tag {k:?}: the aws: prefix is reserved"));
        }
        if tags[..i].iter().any(|(other, _)| other == k) {
            return bad(format!("tag {k:?} is given twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_take_only_what_s3_takes() {
        let one = |k: &str, v: &str| check_tags(&[(k.to_string(), v.to_string())]);
        assert!(one("build id", "x=y/z@é:1.0_a+b-c").is_ok());
        for (k, v) in [
            ("a&b", "x"),
            ("a", "<c>"),
            ("aws:x", "y"),
            ("", "v"),
            ("a", "a,b"),
        ] {
            assert!(
                matches!(one(k, v), Err(StoreError::InvalidConfig("tags", _))),
                "{k:?}={v:?}"
            );
        }
    }

    #[test]
    fn guesses_from_the_extension_only() {
        assert_eq!(guess_content_type("a/b/logo.png"), "image/png");
        assert_eq!(guess_content_type("notes.txt"), "text/plain");
        assert_eq!(guess_content_type("a.b/README"), DEFAULT_CONTENT_TYPE);
        assert_eq!(guess_content_type(".hidden"), DEFAULT_CONTENT_TYPE);
        assert_eq!(guess_content_type("x.unknownext"), DEFAULT_CONTENT_TYPE);
    }

    #[test]
    fn validates_and_normalizes() {
        let a = Attributes {
            content_type: Some("text/html; charset=utf-8".into()),
            metadata: vec![("Z-Name".into(), "1".into()), ("a".into(), "2".into())],
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(
            a.metadata,
            vec![("a".into(), "2".into()), ("z-name".into(), "1".into())]
        );
        let bad = |a: Attributes| a.validate().is_err();
        assert!(bad(Attributes {
            content_type: Some("text/html\r\nx-evil: 1".into()),
            ..Default::default()
        }));
        assert!(bad(Attributes {
            metadata: vec![("bad name".into(), "v".into())],
            ..Default::default()
        }));
        assert!(bad(Attributes {
            metadata: vec![("n".into(), "é".into())],
            ..Default::default()
        }));
        assert!(bad(Attributes {
            metadata: vec![("a".into(), "1".into()), ("A".into(), "2".into())],
            ..Default::default()
        }));
        assert!(bad(Attributes {
            metadata: vec![("n".into(), "x".repeat(3000))],
            ..Default::default()
        }));
    }

    #[test]
    fn encodes_and_decodes() {
        let a = Attributes {
            content_type: Some("image/png".into()),
            cache_control: None,
            content_disposition: Some("attachment; filename=\"a.png\"".into()),
            content_encoding: None,
            metadata: vec![("owner".into(), "ana".into())],
            ..Attributes::default()
        };
        assert_eq!(Attributes::decode(a.encode().as_bytes()), Some(a));
        assert_eq!(Attributes::decode(b"not json"), None);
    }
}
