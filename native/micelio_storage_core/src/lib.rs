//! The storage engine behind `Micelio.Storage`, free of BEAM types so it can be
//! tested with plain `cargo test`.
//!
//! - `store`: the contract every backend implements (`Store`), its options;
//! - `bucket`: what stores that have a bucket add (`BucketOps`);
//! - `key`, `object`, `error`: validated keys, metadata and bodies, errors;
//! - `local`, `s3`, `memory`, `tiered`: the backends;
//! - `settings`, `registry`: building a backend from its resolved settings.

pub mod attributes;
pub mod blocking;
pub mod bucket;
pub mod buffer_pool;
pub mod clock;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod key;
pub mod local;
pub mod memory;
pub mod object;
pub mod observe;
pub mod registry;
pub mod s3;
pub mod settings;
pub mod store;
pub mod threads;
pub mod tiered;
pub mod transfer;
pub mod write_gate;
