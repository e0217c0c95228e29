//! Which backends exist, and how each is built from its settings.
//!
//! Adding a backend: write its engine module (a type that implements
//! `Store`, with a constructor that reads its `Settings`), add an arm to
//! `open` below, and add its block of settings to `Micelio.Storage.Settings`
//! in Elixir. Everything else (NIFs, the Elixir call path, the tiered
//! cache's origin) works through the `Store` trait.

use std::sync::Arc;

use crate::error::StoreError;
use crate::local::LocalStore;
use crate::memory::MemoryStore;
use crate::s3::{S3Config, S3Store};
use crate::settings::{Setting, Settings};
use crate::store::SharedStore;
use crate::tiered::{TieredConfig, TieredStore, Value};

/// A built store, and its cache tiers when it has them (for the fast paths
/// that answer RAM hits inline).
pub struct Opened<V: Value> {
    /// The store, through the contract.
    pub store: SharedStore,
    /// The same store as a tiered cache, when it is one.
    pub cache: Option<Arc<TieredStore<V>>>,
}

/// Every backend `open` knows.
pub const BACKENDS: &[&str] = &["local", "s3", "tiered", "memory"];

/// Builds the store `backend` from `settings`.
pub fn open<V: Value>(backend: &str, settings: &Settings) -> Result<Opened<V>, StoreError> {
    let plain = |store: SharedStore| Opened { store, cache: None };
    match backend {
        "local" => Ok(plain(Arc::new(LocalStore::open(
            &settings.path(Setting::LocalPath)?,
        )?))),
        "s3" => Ok(plain(Arc::new(S3Store::new(S3Config::from_settings(
            settings,
        )?)?))),
        "memory" => Ok(plain(Arc::new(MemoryStore::from_settings(settings)?))),
        "tiered" => {
            let origin = settings.required_text(Setting::OriginBackend)?;
            if origin == "tiered" {
                return Err(StoreError::InvalidConfig(
                    "origin_backend",
                    "a tiered store cannot be its own origin".into(),
                ));
            }
            let origin = open::<V>(&origin, settings)?.store;
            let cache = TieredStore::new(TieredConfig::from_settings(settings)?, origin)?;
            Ok(Opened {
                store: cache.clone(),
                cache: Some(cache),
            })
        }
        other => Err(StoreError::InvalidConfig(
            "backend",
            format!("unknown backend {other:?}, expected one of {BACKENDS:?}"),
        )),
    }
}
