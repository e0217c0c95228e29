//! The key rules in words, for error messages: the rule a key breaks, read
//! from the engine's own check (`key::broken_rule`), so the message and the
//! check never disagree.

use rustler::Binary;

/// The rule `key` breaks, or `nil` when it passes the rules on its own.
#[rustler::nif]
fn key_rule(key: Binary) -> Option<&'static str> {
    micelio_storage_core::key::broken_rule(key.as_slice())
}
