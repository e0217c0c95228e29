//! The NIF layer: decode terms, call a store, encode the reply. Nothing else.

pub mod debug;
pub mod local;
pub mod reply;
pub mod s3;
pub mod tiered;

pub use reply::{borrow_bytes, key_string, spawn_checked, StoreReply};

use std::panic::{catch_unwind, AssertUnwindSafe};

use rustler::{Binary, Encoder, Env, OwnedBinary, ResourceArc, Term};

use crate::encode::error_tuple;
use micelio_storage_core::error::{panic_message, StoreError};
use micelio_storage_core::object::{ObjectMeta, PutCondition};

mod atoms {
    rustler::atoms! { ok, always, if_none_match, if_match }
}

/// Runs a synchronous NIF body; a panic becomes `{:error, {:panic, msg}}`.
pub fn guarded<'a>(env: Env<'a>, body: impl FnOnce() -> Result<Term<'a>, StoreError>) -> Term<'a> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(term)) => term,
        Ok(Err(err)) => error_tuple(env, &err),
        Err(payload) => error_tuple(env, &StoreError::Panic(panic_message(payload))),
    }
}

/// `{:ok, value}`.
pub fn ok<'a>(env: Env<'a>, value: impl Encoder) -> Term<'a> {
    (atoms::ok(), value).encode(env)
}

/// `:ok`.
pub fn ok_atom<'a>(env: Env<'a>) -> Term<'a> {
    atoms::ok().encode(env)
}

/// Metadata as `{size, etag, last_modified_ns}`; Elixir builds the map.
pub fn meta_term<'a>(env: Env<'a>, meta: &ObjectMeta) -> Term<'a> {
    (meta.size, meta.etag.as_str(), meta.last_modified_ns as i64).encode(env)
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

/// A BEAM binary that a local read fills in place, so no copy follows.
pub struct BeamBuf(pub OwnedBinary);

impl micelio_storage_core::local::ReadBuf for BeamBuf {
    fn resize(&mut self, len: usize) {
        if len != self.0.len() {
            self.0.realloc_or_copy(len);
        }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }
}

/// Holds `bytes::Bytes` so a binary can point into it without a copy.
pub struct BytesResource(pub bytes::Bytes);

#[rustler::resource_impl]
impl rustler::Resource for BytesResource {}

/// Below this size a copy is cheaper than a resource binary.
pub const COPY_BELOW: usize = 4096;

/// Turns `Bytes` into a binary term, zero-copy for large payloads.
pub fn bytes_term<'a>(env: Env<'a>, bytes: bytes::Bytes) -> Term<'a> {
    if bytes.len() < COPY_BELOW {
        return crate::encode::bin(env, &bytes);
    }
    let res = ResourceArc::new(BytesResource(bytes));
    res.make_binary(env, |r| &r.0[..]).to_term(env)
}
