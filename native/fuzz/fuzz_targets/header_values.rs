//! Fuzz target: see `micelio_storage_core::fuzzing::header_values`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    micelio_storage_core::fuzzing::header_values(data);
});
