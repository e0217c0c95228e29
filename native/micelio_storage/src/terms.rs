//! How values cross the NIF boundary: settings, conditions and content in;
//! metadata and errors out. Each error kind becomes an atom or a small
//! tagged tuple, so callers can pattern-match. Never a bare string.

use micelio_storage_core::attributes::Attributes;
use micelio_storage_core::error::{errno_name, StoreError};
use micelio_storage_core::object::ObjectMeta;
use micelio_storage_core::settings::{SettingValue, Settings};
use micelio_storage_core::store::{ByteRange, PutCondition};
use rustler::{Binary, Encoder, Env, Term};

mod atoms {
    rustler::atoms! {
        ok,
        nil,
        always,
        if_none_match,
        if_match,
        error,
        not_found,
        precondition_failed,
        invalid_key,
        invalid_prefix,
        unsafe_path,
        timeout,
        io,
        errno,
        forbidden,
        network,
        credentials,
        panic,
        invalid_config,
        corrupt,
        no_such_bucket,
        checksum_mismatch,
        changed,
    }
}

/// A new binary holding a copy of `bytes`.
pub fn bin<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut out = rustler::NewBinary::new(env, bytes.len());
    out.as_mut_slice().copy_from_slice(bytes);
    out.into()
}

fn string<'a>(env: Env<'a>, s: &str) -> Term<'a> {
    bin(env, s.as_bytes())
}

/// Encodes the reason term of an error.
pub fn error_reason<'a>(env: Env<'a>, err: &StoreError) -> Term<'a> {
    match err {
        StoreError::NotFound => atoms::not_found().encode(env),
        StoreError::PreconditionFailed => atoms::precondition_failed().encode(env),
        StoreError::InvalidKey(k) => (atoms::invalid_key(), bin(env, k)).encode(env),
        StoreError::InvalidPrefix(p) => (atoms::invalid_prefix(), bin(env, p)).encode(env),
        StoreError::UnsafePath(k) => (atoms::unsafe_path(), bin(env, k)).encode(env),
        StoreError::Timeout => atoms::timeout().encode(env),
        StoreError::Io(code) => match errno_name(*code) {
            Some(name) => (atoms::io(), rustler::Atom::from_str(env, name).unwrap()).encode(env),
            None => (atoms::io(), (atoms::errno(), *code)).encode(env),
        },
        StoreError::NoSuchBucket(bucket) => {
            (atoms::no_such_bucket(), string(env, bucket)).encode(env)
        }
        StoreError::Forbidden(code) => (atoms::forbidden(), string(env, code)).encode(env),
        StoreError::Service {
            service,
            status,
            code,
            message,
        } => (
            // `service` is a backend's static name: the atoms are bounded.
            rustler::Atom::from_str(env, &format!("{service}_error")).unwrap(),
            *status,
            string(env, code),
            string(env, message),
        )
            .encode(env),
        StoreError::Network(reason) => (atoms::network(), string(env, reason)).encode(env),
        StoreError::Credentials(msg) => (atoms::credentials(), string(env, msg)).encode(env),
        StoreError::Panic(msg) => (atoms::panic(), string(env, msg)).encode(env),
        StoreError::Unsupported(msg) => (
            atoms::invalid_config(),
            rustler::Atom::from_str(env, "backend").unwrap(),
            string(env, msg),
        )
            .encode(env),
        StoreError::InvalidConfig(setting, msg) => (
            atoms::invalid_config(),
            rustler::Atom::from_str(env, setting).unwrap(),
            string(env, msg),
        )
            .encode(env),
        StoreError::Corrupt => atoms::corrupt().encode(env),
        StoreError::ChecksumMismatch(expected, got) => (
            atoms::checksum_mismatch(),
            string(env, expected),
            string(env, got),
        )
            .encode(env),
        StoreError::Changed => atoms::changed().encode(env),
        _ => (atoms::error(), string(env, &err.to_string())).encode(env),
    }
}

/// Encodes `{:error, reason}`.
pub fn error_tuple<'a>(env: Env<'a>, err: &StoreError) -> Term<'a> {
    (atoms::error(), error_reason(env, err)).encode(env)
}

/// `{:ok, value}`.
pub fn ok<'a>(env: Env<'a>, value: impl Encoder) -> Term<'a> {
    (atoms::ok(), value).encode(env)
}

/// `:ok`.
pub fn ok_atom<'a>(env: Env<'a>) -> Term<'a> {
    atoms::ok().encode(env)
}

/// Metadata as Elixir receives it: a map with these keys (rustler encodes
/// the struct field by field), which `Micelio.Storage.Metadata` turns into
/// the public map.
#[derive(rustler::NifMap)]
struct MetaTerm {
    size: u64,
    etag: String,
    last_modified_ns: i64,
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    metadata: Vec<(String, String)>,
    storage_class: Option<String>,
}

/// The metadata map of an object.
pub fn meta_term<'a>(env: Env<'a>, meta: &ObjectMeta) -> Term<'a> {
    let a = &meta.attributes;
    MetaTerm {
        size: meta.size,
        etag: meta.etag.clone(),
        last_modified_ns: meta.last_modified_ns as i64,
        content_type: a.content_type.clone(),
        cache_control: a.cache_control.clone(),
        content_disposition: a.content_disposition.clone(),
        content_encoding: a.content_encoding.clone(),
        metadata: a.metadata.clone(),
        storage_class: a.storage_class.clone(),
    }
    .encode(env)
}

/// A write's attributes as Elixir sends them (`Micelio.Storage.ObjectOptions`):
/// `nil`, or a map with these keys.
#[derive(rustler::NifMap)]
struct AttributesTerm {
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    metadata: Vec<(String, String)>,
    storage_class: Option<String>,
    acl: Option<String>,
    tags: Vec<(String, String)>,
}

/// Decodes and checks a write's attributes.
pub fn decode_attributes(term: Term) -> Result<Attributes, StoreError> {
    if term
        .decode::<rustler::Atom>()
        .is_ok_and(|a| a == atoms::nil())
    {
        return Ok(Attributes::default());
    }
    let t: AttributesTerm = term.decode().map_err(|_| {
        StoreError::InvalidConfig("metadata", "expected string names and values".into())
    })?;
    Attributes {
        content_type: t.content_type,
        cache_control: t.cache_control,
        content_disposition: t.content_disposition,
        content_encoding: t.content_encoding,
        metadata: t.metadata,
        storage_class: t.storage_class,
        acl: t.acl,
        tags: t.tags,
    }
    .validate()
}

/// Decodes `nil` or `{offset, length | nil}`.
pub fn decode_range(term: Term) -> Result<Option<ByteRange>, StoreError> {
    if term
        .decode::<rustler::Atom>()
        .is_ok_and(|a| a == atoms::nil())
    {
        return Ok(None);
    }
    let (offset, length): (u64, Option<u64>) = term.decode().map_err(|_| {
        StoreError::InvalidConfig(
            "range",
            "expected {offset, length} with non-negative integers (length may be nil)".into(),
        )
    })?;
    Ok(Some(ByteRange { offset, length }))
}

/// `{:ok, body}` or `{:ok, body, meta}`.
pub fn body_reply<'a>(env: Env<'a>, body: Term<'a>, meta: Option<&ObjectMeta>) -> Term<'a> {
    match meta {
        None => ok(env, body),
        Some(meta) => (atoms::ok(), body, meta_term(env, meta)).encode(env),
    }
}

/// Decodes `:always | :if_none_match | {:if_match, etag}`.
pub fn decode_condition(term: Term) -> Result<PutCondition, StoreError> {
    if let Ok(atom) = term.decode::<rustler::Atom>() {
        if atom == atoms::always() {
            return Ok(PutCondition::Always);
        }
        if atom == atoms::if_none_match() {
            return Ok(PutCondition::IfNoneMatch);
        }
    }
    if let Ok((tag, etag)) = term.decode::<(rustler::Atom, String)>() {
        if tag == atoms::if_match() {
            return Ok(PutCondition::IfMatch(etag));
        }
    }
    Err(StoreError::InvalidConfig(
        "condition",
        "expected :always, :if_none_match or {:if_match, etag}".into(),
    ))
}

/// The bytes of a binary or an iolist. A binary is borrowed, not copied.
pub fn content_bytes<'a>(term: Term<'a>) -> Result<Binary<'a>, StoreError> {
    Binary::from_term(term)
        .or_else(|_| Binary::from_iolist(term))
        .map_err(|_| StoreError::InvalidConfig("content", "expected iodata".into()))
}

/// Decodes `[{name, value}]`, where a value is a binary, a non-negative
/// integer, a boolean or `nil`, into `Settings`.
pub fn decode_settings(term: Term) -> Result<Settings, StoreError> {
    let pairs: Vec<(String, Term)> = term.decode().map_err(|_| {
        StoreError::InvalidConfig("settings", "expected a list of {name, value}".into())
    })?;
    let mut values = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        let decoded = if let Ok(b) = value.decode::<bool>() {
            SettingValue::Bool(b)
        } else if let Ok(n) = value.decode::<u64>() {
            SettingValue::Int(n)
        } else if let Ok(s) = value.decode::<String>() {
            SettingValue::Text(s)
        } else if value
            .decode::<rustler::Atom>()
            .is_ok_and(|a| a == atoms::nil())
        {
            SettingValue::Nil
        } else {
            return Err(StoreError::InvalidConfig(
                "settings",
                format!("unsupported value for {name}"),
            ));
        };
        values.push((name, decoded));
    }
    Ok(Settings::new(values))
}
