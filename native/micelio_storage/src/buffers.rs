//! BEAM binaries that bodies are read into, and cached values served as
//! binaries, so content crosses the boundary without a copy where rustler
//! allows.

use std::any::Any;

use bytes::Bytes;
use micelio_storage_core::object::{Body, BodyBuf};
use micelio_storage_core::tiered::{CachedBody, Value};
use rustler::env::OwnedEnv;
use rustler::{Binary, Env, OwnedBinary, ResourceArc, Term};

use crate::terms::bin;

/// Bodies from this size on are read into a BEAM binary by the network
/// path; smaller ones into a `Vec` (copied onto the process heap at reply,
/// which measured cheaper for them).
const BEAM_BODY_FROM: usize = 64 * 1024;

/// A response body. A large one is read straight into a BEAM binary: the
/// VM's allocator reuses its memory (no fresh pages to fault in for every
/// request) and the VM accounts for it, so a GC frees it soon.
pub enum BeamBody {
    /// A small body.
    Small(Vec<u8>),
    /// A body in a BEAM binary of capacity `bin.len()`, `len` bytes used.
    Large { bin: OwnedBinary, len: usize },
}

impl BeamBody {
    fn large(capacity: usize) -> Self {
        BeamBody::Large {
            bin: OwnedBinary::new(capacity),
            len: 0,
        }
    }

    /// The buffer for network reads: a binary once the size hint is large.
    pub fn for_network(size_hint: usize) -> Box<dyn BodyBuf> {
        Box::new(if size_hint >= BEAM_BODY_FROM {
            BeamBody::large(size_hint)
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
        }
    }
}

impl BodyBuf for BeamBody {
    fn push(&mut self, chunk: &[u8]) {
        match self {
            BeamBody::Small(v) => v.extend_from_slice(chunk),
            BeamBody::Large { bin, len } => {
                let need = *len + chunk.len();
                if need > bin.len() {
                    let grown = need.max(bin.len() * 2);
                    grow(bin, *len, grown);
                }
                bin.as_mut_slice()[*len..need].copy_from_slice(chunk);
                *len = need;
            }
        }
    }

    fn reserve_total(&mut self, total: usize) {
        match self {
            BeamBody::Small(v) => v.reserve_exact(total.saturating_sub(v.len())),
            BeamBody::Large { bin, len } => {
                if total > bin.len() {
                    grow(bin, *len, total);
                }
            }
        }
    }

    fn resize(&mut self, new_len: usize) {
        match self {
            BeamBody::Small(v) => v.resize(new_len, 0),
            // Not zeroed: every caller fills what it grows (a file read), and
            // zeroing 1 MiB measured a third of a local 1 MiB read.
            BeamBody::Large { bin, len } => {
                if new_len > bin.len() {
                    grow(bin, *len, new_len);
                }
                *len = new_len;
            }
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            BeamBody::Small(v) => v,
            BeamBody::Large { bin, len } => &mut bin.as_mut_slice()[..*len],
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            BeamBody::Small(v) => v,
            BeamBody::Large { bin, len } => &bin.as_slice()[..*len],
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// Makes `bin` a binary of `capacity` bytes that starts with its first
/// `len`: a new one, filled by a copy, the old one freed.
///
/// Why not `realloc_or_copy`: the VM grows a large binary in place
/// (`mremap`), so every growth maps fresh pages that fault in and are
/// zeroed, and the grown block never matches a size the VM keeps cached.
/// A body read from the network doubles from 64 KiB to its length, and an
/// 8 MiB GET faulted in 2,030 pages (all of it) on every call. Binaries
/// allocated at each size come from the VM's cache of freed blocks of that
/// size; the copies cost less than the faults.
fn grow(bin: &mut OwnedBinary, len: usize, capacity: usize) {
    let mut grown = OwnedBinary::new(capacity);
    grown.as_mut_slice()[..len].copy_from_slice(&bin.as_slice()[..len]);
    *bin = grown;
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
