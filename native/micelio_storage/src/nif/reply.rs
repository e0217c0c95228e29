//! What async store tasks answer with, and how arguments cross into a task:
//! shared by the S3 and tiered NIFs.

use std::time::Duration;

use bytes::Bytes;
use micelio_storage_core::error::StoreError;
use micelio_storage_core::key::Key;
use micelio_storage_core::object::ObjectMeta;
use rustler::env::OwnedEnv;
use rustler::{Binary, Encoder, Env, OwnedBinary, Term};

use super::{bytes_term, guarded, meta_term, ok, ok_atom};
use crate::nif::tiered::{value_term, BeamValue};
use crate::runtime::{spawn_reply, Reply};

/// The success of an async store task.
pub enum StoreReply {
    Done,
    Body(Bytes, Option<ObjectMeta>),
    Binary(OwnedBinary, Option<ObjectMeta>),
    Cached(BeamValue, Option<ObjectMeta>),
    Meta(ObjectMeta),
    Keys(Vec<String>),
    Text(String),
}

impl Reply for StoreReply {
    fn encode_reply<'a>(self, env: Env<'a>) -> Term<'a> {
        match self {
            StoreReply::Done => ok_atom(env),
            StoreReply::Body(body, meta) => body_reply(env, bytes_term(env, body), meta),
            StoreReply::Binary(bin, meta) => body_reply(env, bin.release(env).to_term(env), meta),
            StoreReply::Cached(value, meta) => body_reply(env, value_term(env, &value), meta),
            StoreReply::Meta(meta) => ok(env, meta_term(env, &meta)),
            StoreReply::Keys(keys) => ok(env, keys),
            StoreReply::Text(text) => ok(env, text),
        }
    }
}

/// `{:ok, body}` or `{:ok, body, meta}`.
pub fn body_reply<'a>(env: Env<'a>, body: Term<'a>, meta: Option<ObjectMeta>) -> Term<'a> {
    match meta {
        None => ok(env, body),
        Some(meta) => (ok_atom(env), body, meta_term(env, &meta)).encode(env),
    }
}

/// Bodies from this size on are read into a BEAM binary; smaller ones into
/// a `Vec` (copied into the process heap at reply, which is cheaper for them).
const BEAM_BODY_FROM: usize = 64 * 1024;

/// A response body. A large one is read straight into a BEAM binary: the
/// VM's allocator reuses its memory (no fresh pages to fault in for every
/// request) and the VM accounts for it, so a GC frees it soon.
pub enum BeamBody {
    Small(Vec<u8>),
    Large { bin: OwnedBinary, len: usize },
}

impl micelio_storage_core::s3::BodyBuf for BeamBody {
    fn with_capacity(n: usize) -> Self {
        if n >= BEAM_BODY_FROM {
            BeamBody::Large {
                bin: OwnedBinary::new(n),
                len: 0,
            }
        } else {
            BeamBody::Small(Vec::with_capacity(n))
        }
    }
    fn push(&mut self, chunk: &[u8]) {
        match self {
            BeamBody::Small(v) => v.extend_from_slice(chunk),
            BeamBody::Large { bin, len } => {
                let need = *len + chunk.len();
                if need > bin.len() {
                    let grown = need.max(bin.len() * 2);
                    bin.realloc_or_copy(grown);
                }
                bin.as_mut_slice()[*len..need].copy_from_slice(chunk);
                *len = need;
            }
        }
    }
    fn as_slice(&self) -> &[u8] {
        match self {
            BeamBody::Small(v) => v,
            BeamBody::Large { bin, len } => &bin.as_slice()[..*len],
        }
    }
}

impl BeamBody {
    /// The reply carrying this body.
    pub fn into_reply(self, meta: Option<ObjectMeta>) -> StoreReply {
        match self {
            BeamBody::Small(v) => StoreReply::Body(Bytes::from(v), meta),
            BeamBody::Large { mut bin, len } => {
                if len != bin.len() {
                    bin.realloc_or_copy(len);
                }
                StoreReply::Binary(bin, meta)
            }
        }
    }
}

/// A BEAM binary kept alive by its own env, seen as `Bytes` without a copy.
struct EnvBinary {
    _env: OwnedEnv,
    ptr: *const u8,
    len: usize,
}

// The env owns a reference to the binary; its bytes never move or change.
unsafe impl Send for EnvBinary {}

impl AsRef<[u8]> for EnvBinary {
    fn as_ref(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The bytes of a binary argument as `Bytes` a task can own, without a copy.
pub fn borrow_bytes(env: Env, content: Binary) -> Bytes {
    let owned = OwnedEnv::new();
    let saved = owned.save(content.to_term(env));
    let (ptr, len) = owned.run(|env| {
        let bin: Binary = saved.load(env).decode().expect("saved a binary");
        (bin.as_slice().as_ptr(), bin.len())
    });
    Bytes::from_owner(EnvBinary {
        _env: owned,
        ptr,
        len,
    })
}

/// A checked key, owned so it can move into a task.
pub fn key_string(raw: Binary) -> Result<String, StoreError> {
    Key::parse(raw.as_slice()).map(|k| k.as_str().to_string())
}

/// Runs the checks of a NIF, then spawns; check failures return at once.
pub fn spawn_checked<'a, F, Fut>(
    env: Env<'a>,
    reply_ref: Term<'a>,
    timeout_ms: u64,
    check: impl FnOnce() -> Result<F, StoreError>,
) -> Term<'a>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<StoreReply, StoreError>> + Send + 'static,
{
    guarded(env, || {
        let make = check()?;
        let timeout = Duration::from_millis(timeout_ms);
        Ok(spawn_reply(env, reply_ref, timeout, make()).encode(env))
    })
}
