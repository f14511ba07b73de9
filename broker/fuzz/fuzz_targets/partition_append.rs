//! Fuzzed record sets appended to a real partition on a temp dir; see
//! `../bodies/partition_append.rs` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../bodies/partition_append.rs"]
mod body;

fuzz_target!(|data: &[u8]| {
    body::record_history_on_panic();
    body::check(data)
});
