//! Fuzz target: see `micelio_storage_core::fuzzing::xml_answers`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    micelio_storage_core::fuzzing::xml_answers(data);
});
