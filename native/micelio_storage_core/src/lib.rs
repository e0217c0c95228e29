//! The storage engine behind `Micelio.Storage`, free of BEAM types so it can be
//! tested with plain `cargo test`: key rules, the local, S3 and tiered stores.

pub mod error;
pub mod key;
pub mod local;
pub mod object;
pub mod s3;
pub mod threads;
pub mod tiered;
