//! What a store knows about a stored object, the buffers bodies are read
//! into, and the deadline every call carries.

use std::any::Any;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::attributes::Attributes;
use crate::error::StoreError;

/// Metadata of one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// An opaque tag that changes whenever the content changes, without quotes.
    pub etag: String,
    /// Last modification time, in nanoseconds since the Unix epoch.
    pub last_modified_ns: i128,
    /// Content type, other headers and user metadata.
    pub attributes: Attributes,
}

/// The point in time after which an operation gives up with `Timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Deadline(Instant::now() + timeout)
    }

    /// Fails with `Timeout` once the deadline has passed.
    pub fn check(&self) -> Result<(), StoreError> {
        if Instant::now() >= self.0 {
            Err(StoreError::Timeout)
        } else {
            Ok(())
        }
    }

    /// A deadline no transfer reaches (a year away): for calls bounded
    /// per step rather than as a whole.
    pub fn far() -> Self {
        Deadline::after(Duration::from_secs(365 * 24 * 3600))
    }

    /// The earlier of two deadlines.
    pub fn min(self, other: Deadline) -> Self {
        Deadline(self.0.min(other.0))
    }

    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Strips the quotes S3 puts around ETags, so all backends report bare tags.
pub fn bare_etag(etag: &str) -> &str {
    let e = etag.strip_prefix("W/").unwrap_or(etag);
    e.trim_matches('"')
}

/// A buffer a GET body is read into. Stores fill it in place: S3 appends
/// chunks as they arrive, the local store sizes it and reads the file into
/// it. The NIF layer supplies one backed by a BEAM binary, so a body reaches
/// Elixir without another copy.
pub trait BodyBuf: Send + 'static {
    /// Appends bytes.
    fn push(&mut self, chunk: &[u8]);
    /// Makes room for `total` bytes in all, so the pushes up to it do not
    /// regrow. Readers call it as bytes arrive, never from a peer's word.
    fn reserve_total(&mut self, total: usize);
    /// Resizes to exactly `len` bytes. New bytes may hold anything: the
    /// caller overwrites them (a file read into place).
    fn resize(&mut self, len: usize);
    /// The bytes, for filling in place.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// The bytes so far.
    fn as_slice(&self) -> &[u8];
    /// For the caller that made the buffer to take its own type back.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
    /// The content as `Bytes` (a copy unless the buffer can hand it over).
    fn into_bytes(self: Box<Self>) -> Bytes {
        Bytes::copy_from_slice(self.as_slice())
    }
}

/// Makes an empty body buffer expecting about `size_hint` bytes.
pub type BodyAlloc = fn(size_hint: usize) -> Box<dyn BodyBuf>;

impl BodyBuf for Vec<u8> {
    fn push(&mut self, chunk: &[u8]) {
        self.extend_from_slice(chunk);
    }
    fn reserve_total(&mut self, total: usize) {
        self.reserve_exact(total.saturating_sub(self.len()));
    }
    fn resize(&mut self, len: usize) {
        Vec::resize(self, len, 0);
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
    fn as_slice(&self) -> &[u8] {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
    fn into_bytes(self: Box<Self>) -> Bytes {
        Bytes::from(*self)
    }
}

/// The default body buffer: a `Vec`, which becomes `Bytes` without a copy.
pub fn vec_body(size_hint: usize) -> Box<dyn BodyBuf> {
    Box::new(Vec::<u8>::with_capacity(size_hint))
}

/// A value of a caller's own type that a store hands back as a body (the
/// tiered store's cached copies, which the NIF layer keeps as BEAM-ready
/// resources).
pub trait NativeBody: Send + 'static {
    /// The content.
    fn as_slice(&self) -> &[u8];
    /// For the caller to take its own type back.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// The content of a GET.
pub enum Body {
    /// Read into a buffer made by the request's `BodyAlloc`.
    Buf(Box<dyn BodyBuf>),
    /// Shared bytes that were already in memory.
    Bytes(Bytes),
    /// A cached value of the caller's own type.
    Native(Box<dyn NativeBody>),
}

impl Body {
    /// The content.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Body::Buf(b) => b.as_slice(),
            Body::Bytes(b) => b,
            Body::Native(n) => n.as_slice(),
        }
    }

    /// The content as `Bytes`: no copy for `Vec` buffers and shared bytes.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Body::Buf(b) => b.into_bytes(),
            Body::Bytes(b) => b,
            Body::Native(n) => Bytes::copy_from_slice(n.as_slice()),
        }
    }
}

/// An object's content and metadata, as a GET returns them.
pub struct Object {
    /// The content.
    pub body: Body,
    /// The metadata, read in the same step as the content.
    pub meta: ObjectMeta,
}

impl Object {
    /// The content as `Bytes`, and the metadata.
    pub fn into_bytes(self) -> (Bytes, ObjectMeta) {
        (self.body.into_bytes(), self.meta)
    }
}
