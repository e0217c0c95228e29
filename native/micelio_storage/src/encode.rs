//! How store errors reach Elixir: an atom or a small tagged tuple per kind,
//! so callers can pattern-match. Never a bare string.

use micelio_storage_core::error::{errno_name, StoreError};
use rustler::{Encoder, Env, Term};

mod atoms {
    rustler::atoms! {
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
        s3_error,
        network,
        credentials,
        panic,
        invalid_config,
        corrupt,
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
        StoreError::Forbidden(code) => (atoms::forbidden(), string(env, code)).encode(env),
        StoreError::S3 {
            status,
            code,
            message,
        } => (
            atoms::s3_error(),
            *status,
            string(env, code),
            string(env, message),
        )
            .encode(env),
        StoreError::Network(reason) => (atoms::network(), string(env, reason)).encode(env),
        StoreError::Credentials(msg) => (atoms::credentials(), string(env, msg)).encode(env),
        StoreError::Panic(msg) => (atoms::panic(), string(env, msg)).encode(env),
        StoreError::InvalidConfig(setting, msg) => (
            atoms::invalid_config(),
            rustler::Atom::from_str(env, setting).unwrap(),
            string(env, msg),
        )
            .encode(env),
        StoreError::Corrupt => atoms::corrupt().encode(env),
        _ => (atoms::error(), string(env, &err.to_string())).encode(env),
    }
}

/// Encodes `{:error, reason}`.
pub fn error_tuple<'a>(env: Env<'a>, err: &StoreError) -> Term<'a> {
    (atoms::error(), error_reason(env, err)).encode(env)
}
