//! Arbitrary bytes as a request frame (what follows the 4-byte size prefix): decoding must
//! return `Ok` or `Err`, never panic, abort or allocate without bound.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = strata_protocol::api::decode_request(Bytes::copy_from_slice(data));
});
