//! BEAM binaries that bodies are read into, and cached values served as
//! binaries, so content crosses the boundary without a copy where rustler
//! allows.

use std::any::Any;

use bytes::Bytes;
use micelio_storage_core::buffer_pool::{BufferPool, Lent};
use micelio_storage_core::object::{Body, BodyBuf};
use micelio_storage_core::tiered::{CachedBody, Value};
use rustler::env::OwnedEnv;
use rustler::{Binary, Env, OwnedBinary, ResourceArc, Term};

use crate::terms::bin;

/// Bodies from this size on are read by the network path into a buffer
/// reused from GET to GET; smaller ones into a `Vec` (copied onto the
/// process heap at reply, which measured cheaper for them).
const POOLED_BODY_FROM: usize = 64 * 1024;

/// A response body.
pub enum BeamBody {
    /// A small body.
    Small(Vec<u8>),
    /// A file read: a BEAM binary of capacity `bin.len()`, `len` bytes
    /// used, sized from the file's length (ours, not a peer's).
    Large { bin: OwnedBinary, len: usize },
    /// A large network body, in a buffer from `BODY_POOL`, handed to the
    /// BEAM as a resource binary and back to the pool once the BEAM lets go.
    Pooled(PooledBody),
}

/// Buffers of large network bodies, kept for the next GET: idle, at most
/// 4 of up to 16 MiB each.
///
/// Why: a body's buffer may only grow with the bytes that arrived (never
/// from the peer's `Content-Length`), so a fresh one doubles from 64 KiB,
/// and every growth either copies (into a new buffer) or maps fresh pages
/// that fault in and are zeroed (in place): an 8 MiB GET faulted in all of
/// its 2,048 pages on every call, or copied its body twice. A kept buffer
/// has already grown, so the next GET only copies each chunk in once.
static BODY_POOL: BufferPool = BufferPool::new(4, 16 << 20);

/// A buffer of `BODY_POOL`'s, given back when dropped.
pub type PooledBody = Lent<&'static BufferPool>;

impl BeamBody {
    fn large(capacity: usize) -> Self {
        BeamBody::Large {
            bin: OwnedBinary::new(capacity),
            len: 0,
        }
    }

    /// The buffer for network reads: a pooled one once the size hint is
    /// large.
    pub fn for_network(size_hint: usize) -> Box<dyn BodyBuf> {
        Box::new(if size_hint >= POOLED_BODY_FROM {
            BeamBody::Pooled(Lent::take(&BODY_POOL, size_hint))
        } else {
            BeamBody::Small(Vec::with_capacity(size_hint))
        })
    }

    /// The buffer for file reads: always a binary, filled in place.
    pub fn for_files(size_hint: usize) -> Box<dyn BodyBuf> {
        Box::new(BeamBody::large(size_hint))
    }

    /// The body as a term: the binary released without a copy.
    pub fn into_term<'a>(self, env: Env<'a>) -> Term<'a> {
        match self {
            BeamBody::Small(v) => bytes_term(env, Bytes::from(v)),
            BeamBody::Large { mut bin, len } => {
                if len != bin.len() {
                    bin.realloc_or_copy(len);
                }
                bin.release(env).to_term(env)
            }
            // A buffer much larger than its body (a small body in a kept
            // buffer) goes back now, its body copied into a binary of its
            // own: what the BEAM holds is never more than twice its size.
            BeamBody::Pooled(body) if body.buffer().capacity() > 2 * body.buffer().len() => {
                bin(env, body.buffer())
            }
            BeamBody::Pooled(body) => bytes_term(env, Bytes::from_owner(body)),
        }
    }
}

impl BodyBuf for BeamBody {
    fn push(&mut self, chunk: &[u8]) {
        match self {
            BeamBody::Small(v) => v.extend_from_slice(chunk),
            BeamBody::Pooled(body) => body.buffer_mut().extend_from_slice(chunk),
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

    fn reserve_total(&mut self, total: usize) {
        match self {
            BeamBody::Small(v) => v.reserve_exact(total.saturating_sub(v.len())),
            BeamBody::Pooled(body) => {
                let v = body.buffer_mut();
                v.reserve_exact(total.saturating_sub(v.len()))
            }
            BeamBody::Large { bin, .. } => {
                if total > bin.len() {
                    bin.realloc_or_copy(total);
                }
            }
        }
    }

    fn resize(&mut self, new_len: usize) {
        match self {
            BeamBody::Small(v) => v.resize(new_len, 0),
            BeamBody::Pooled(body) => body.buffer_mut().resize(new_len, 0),
            // Not zeroed: every caller fills what it grows (a file read), and
            // zeroing 1 MiB measured a third of a local 1 MiB read.
            BeamBody::Large { bin, len } => {
                if new_len > bin.len() {
                    bin.realloc_or_copy(new_len);
                }
                *len = new_len;
            }
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            BeamBody::Small(v) => v,
            BeamBody::Pooled(body) => body.buffer_mut(),
            BeamBody::Large { bin, len } => &mut bin.as_mut_slice()[..*len],
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            BeamBody::Small(v) => v,
            BeamBody::Pooled(body) => body.buffer(),
            BeamBody::Large { bin, len } => &bin.as_slice()[..*len],
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// Holds `bytes::Bytes` so a binary can point into it without a copy.
pub struct BytesResource(pub Bytes);

#[rustler::resource_impl]
impl rustler::Resource for BytesResource {}

/// Below this size a copy is cheaper than a resource binary.
const COPY_BELOW: usize = 4096;

/// Turns `Bytes` into a binary term, zero-copy for large payloads.
pub fn bytes_term<'a>(env: Env<'a>, bytes: Bytes) -> Term<'a> {
    if bytes.len() < COPY_BELOW {
        return bin(env, &bytes);
    }
    let res = ResourceArc::new(BytesResource(bytes));
    res.make_binary(env, |r| &r.0[..]).to_term(env)
}

/// A cached value, kept as a resource so every hit can hand out a binary
/// pointing at the same bytes.
#[derive(Clone)]
pub struct BeamValue(pub ResourceArc<BytesResource>);

impl Value for BeamValue {
    fn from_bytes(bytes: Bytes) -> Self {
        BeamValue(ResourceArc::new(BytesResource(bytes)))
    }
    fn as_bytes(&self) -> &[u8] {
        &self.0 .0
    }
    fn into_body(self) -> Body {
        Body::Native(Box::new(CachedBody(self)))
    }
}

/// Up to this size a binary lives on the process heap, and a copy is
/// cheaper than a reference; above it a copy would allocate.
const HEAP_BINARY_MAX: usize = 64;

/// The binary term of a cached value: tiny ones are copied onto the process
/// heap, others point into the cache (no copy, no allocation).
pub fn value_term<'a>(env: Env<'a>, value: &BeamValue) -> Term<'a> {
    let bytes = value.as_bytes();
    if bytes.len() <= HEAP_BINARY_MAX {
        return bin(env, bytes);
    }
    value.0.make_binary(env, |r| &r.0[..]).to_term(env)
}

/// The term of a GET body, without a copy for every kind this crate makes.
pub fn body_term<'a>(env: Env<'a>, body: Body) -> Term<'a> {
    match body {
        Body::Bytes(bytes) => bytes_term(env, bytes),
        Body::Buf(buf) => match buf.into_any().downcast::<BeamBody>() {
            Ok(beam) => beam.into_term(env),
            Err(other) => match other.downcast::<Vec<u8>>() {
                Ok(v) => bytes_term(env, Bytes::from(*v)),
                Err(_) => unreachable!("bodies are read into BeamBody or Vec buffers"),
            },
        },
        Body::Native(native) => match native.into_any().downcast::<CachedBody<BeamValue>>() {
            Ok(cached) => value_term(env, &cached.0),
            Err(_) => unreachable!("the only cached values here are BeamValues"),
        },
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

/// Content up to this size is copied rather than borrowed (see `body_bytes`).
const COPIED_BODY: usize = 64 * 1024;

/// The bytes of a body a task sends on: small ones copied, larger ones
/// borrowed. Borrowing keeps the binary in an env made on this scheduler,
/// and freeing that env on an I/O thread hands the memory back to the
/// scheduler, waking it if it sleeps; copying 64 KiB costs a few µs.
pub fn body_bytes(env: Env, content: Binary) -> Bytes {
    if content.len() <= COPIED_BODY {
        Bytes::copy_from_slice(content.as_slice())
    } else {
        borrow_bytes(env, content)
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
