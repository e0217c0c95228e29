//! The resolved settings a store is built from, by name.
//!
//! Elixir resolves every setting (call options, app config, environment,
//! defaults; see `Micelio.Storage.Settings`) and passes the ones a backend
//! needs under the same names it documents: `s3_connect_timeout` is called
//! `s3_connect_timeout` everywhere. Each backend reads its own settings
//! here, so adding a setting touches the Elixir table and the one place
//! that uses it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::StoreError;

/// One resolved value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SettingValue {
    /// Unset (`nil`).
    Nil,
    /// A string (enums arrive as their name).
    Text(String),
    /// A non-negative integer.
    Int(u64),
    /// A boolean.
    Bool(bool),
}

/// The settings of one store, by name.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Settings(BTreeMap<String, SettingValue>);

// Values may be secrets: only the names are printed.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Settings {
    /// Settings from `(name, value)` pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, SettingValue)>) -> Self {
        Settings(pairs.into_iter().collect())
    }

    /// The value of `name`, `Nil` when absent.
    pub fn value(&self, name: &str) -> &SettingValue {
        self.0.get(name).unwrap_or(&SettingValue::Nil)
    }

    /// An optional string.
    pub fn text(&self, name: &'static str) -> Result<Option<String>, StoreError> {
        match self.value(name) {
            SettingValue::Nil => Ok(None),
            SettingValue::Text(s) => Ok(Some(s.clone())),
            _ => Err(wrong(name, "a string")),
        }
    }

    /// A string that must be set.
    pub fn required_text(&self, name: &'static str) -> Result<String, StoreError> {
        self.text(name)?
            .ok_or_else(|| StoreError::InvalidConfig(name, "must be set".into()))
    }

    /// A path that must be set.
    pub fn path(&self, name: &'static str) -> Result<PathBuf, StoreError> {
        self.required_text(name).map(PathBuf::from)
    }

    /// An integer that must be set.
    pub fn int(&self, name: &'static str) -> Result<u64, StoreError> {
        match self.value(name) {
            SettingValue::Int(n) => Ok(*n),
            _ => Err(wrong(name, "a non-negative integer")),
        }
    }

    /// An integer that may be unset.
    pub fn optional_int(&self, name: &'static str) -> Result<Option<u64>, StoreError> {
        match self.value(name) {
            SettingValue::Nil => Ok(None),
            SettingValue::Int(n) => Ok(Some(*n)),
            _ => Err(wrong(name, "a non-negative integer")),
        }
    }

    /// A boolean that may be unset.
    pub fn optional_flag(&self, name: &'static str) -> Result<Option<bool>, StoreError> {
        match self.value(name) {
            SettingValue::Nil => Ok(None),
            SettingValue::Bool(b) => Ok(Some(*b)),
            _ => Err(wrong(name, "a boolean")),
        }
    }

    /// Milliseconds, as a duration.
    pub fn millis(&self, name: &'static str) -> Result<Duration, StoreError> {
        self.int(name).map(Duration::from_millis)
    }

    /// A boolean; unset is `false`.
    pub fn flag(&self, name: &'static str) -> Result<bool, StoreError> {
        match self.value(name) {
            SettingValue::Nil => Ok(false),
            SettingValue::Bool(b) => Ok(*b),
            _ => Err(wrong(name, "a boolean")),
        }
    }
}

fn wrong(name: &'static str, expected: &str) -> StoreError {
    StoreError::InvalidConfig(name, format!("expected {expected}"))
}
