//! HTTP helpers shared by every backend that speaks HTTP (S3, the CDN
//! tier, the credential endpoints), so none depends on another for them:
//!
//! - `body`: reading bodies from peers we do not control;
//! - `headers`: object metadata from answer headers;
//! - `encode`: percent-encoding of URL parts.

pub mod body;
pub mod encode;
pub mod headers;
