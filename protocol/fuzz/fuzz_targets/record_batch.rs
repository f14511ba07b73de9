//! Arbitrary bytes as a produced record set; see `../bodies/record_batch.rs` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../bodies/record_batch.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::check(data));
