//! The body of the `record_batch` fuzz target, shared with the stable test
//! `protocol/tests/fuzz_bodies.rs` (included by `#[path]` from both).
//!
//! Arbitrary bytes as a produced record set. Each batch-shaped piece gets a correct CRC first, so
//! the fuzzer reaches the record walk instead of stopping at the checksum. Must hold: no panic;
//! whatever validates is walked whole by `BatchIter`, batch for batch, and each of its batches
//! walks exactly `recordCount` records with offset deltas 0, 1, 2, ...; a compressed batch never
//! costs more than the (small) decompression limit.

use std::ops::ControlFlow;

use strata_protocol::record_batch::{
    validate_batches_with, walk_records, BatchHeader, BatchIter, RecordLimits,
};

/// Small, so bombs are found (and cost) little.
const LIMITS: RecordLimits = RecordLimits {
    decompressed_bytes_max: 1 << 20,
};

/// Writes a correct CRC-32C into every batch header `BatchIter` finds in `data`.
pub fn fix_crcs(data: &mut [u8]) {
    let spans: Vec<(usize, usize)> = BatchIter::new(data)
        .map(|(at, b)| (at, b.total_bytes()))
        .collect();
    for (at, len) in spans {
        let batch = &mut data[at..at + len];
        let crc = crc32c_of(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

fn crc32c_of(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

pub fn check(input: &[u8]) {
    let mut data = input.to_vec();
    // The first byte chooses whether CRCs are fixed (mostly) or left as the fuzzer wrote them.
    if input.first().is_some_and(|b| b & 0x0f != 0) {
        fix_crcs(&mut data);
    }
    let validated = validate_batches_with(&data, &LIMITS);
    let mut iter = BatchIter::new(&data);
    let mut batches = 0usize;
    for (position, batch) in iter.by_ref() {
        let _ = batch.validate();
        let _ = (
            batch.compression(),
            batch.last_offset(),
            batch.max_timestamp(),
        );
        assert!(position + batch.total_bytes() <= data.len());
        // The walk alone (no CRC check) must never panic either.
        let _ = walk_records(&batch, &LIMITS, |_| ControlFlow::Continue(()));
        batches += 1;
    }
    if let Ok(info) = validated {
        assert_eq!(info.batch_count, batches);
        assert_eq!(iter.position(), data.len());
        for (span, (_, batch)) in info.batches.iter().zip(BatchIter::new(&data)) {
            let mut next = 0i32;
            walk_records(&batch, &LIMITS, |r| {
                assert_eq!(r.offset_delta, next);
                next += 1;
                ControlFlow::Continue(())
            })
            .expect("a validated batch walks");
            assert_eq!(next, span.record_count);
            assert_eq!(
                BatchHeader::parse(batch.bytes()).map(|b| b.record_count()),
                Ok(next)
            );
        }
    }
}
