//! What a store knows about a stored object, and the deadline every call carries.

use std::time::{Duration, Instant};

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
}

/// The condition a put must meet before it replaces the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    /// Always write (last writer wins).
    Always,
    /// Write only if the key does not exist yet.
    IfNoneMatch,
    /// Write only if the current object has this ETag.
    IfMatch(String),
}

/// Options of a put.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// What must hold for the put to happen.
    pub condition: PutCondition,
    /// Also fsync the file and its directory (local backends).
    pub durable: bool,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            condition: PutCondition::Always,
            durable: false,
        }
    }
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
