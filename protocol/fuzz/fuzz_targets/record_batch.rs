//! Arbitrary bytes as a produced record set: validation and batch iteration must never panic,
//! and whatever `validate_batches` accepts, `BatchIter` walks the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_protocol::record_batch::{validate_batches, BatchIter};

fuzz_target!(|data: &[u8]| {
    let validated = validate_batches(data);
    let mut iter = BatchIter::new(data);
    let mut batches = 0usize;
    for (position, batch) in iter.by_ref() {
        let _ = batch.validate();
        let _ = (
            batch.compression(),
            batch.last_offset(),
            batch.max_timestamp(),
        );
        assert!(position + batch.total_bytes() <= data.len());
        batches += 1;
    }
    if let Ok(info) = validated {
        assert_eq!(info.batch_count, batches);
        assert_eq!(iter.position(), data.len());
    }
});
