//! NIF bindings of `Micelio.Storage`: decode terms, call a store of the
//! engine (`micelio_storage_core`) through its `Store` contract, reply.
//!
//! - `terms`: how values and errors cross into and out of the BEAM;
//! - `buffers`: BEAM binaries that bodies are read into or served from;
//! - `runtime`: the one tokio runtime and replying by message;
//! - `nif`: the NIF functions themselves.

pub mod buffers;
pub mod nif;
pub mod runtime;
pub mod terms;

rustler::init!("Elixir.Micelio.Storage.Native");
