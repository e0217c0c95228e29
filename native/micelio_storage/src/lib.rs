//! NIF bindings of `Micelio.Storage`: decode terms, call the engine in
//! `micelio_storage_core`, reply. The engine does the I/O.

pub mod encode;
pub mod nif;
pub mod runtime;

rustler::init!("Elixir.Micelio.Storage.Native");
