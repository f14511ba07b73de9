//! The fuzz targets' bodies on stable, a few thousand inputs each, so CI checks what the fuzzers
//! check without nightly. Inputs are real batches in every codec, mutated; set
//! `STRATA_FUZZ_SEEDS_DIR` to also write the unmutated ones there as a seed corpus for
//! `cargo fuzz run record_batch`.

#[path = "../fuzz/bodies/record_batch.rs"]
mod body;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;

fn seed_batches() -> Vec<Vec<u8>> {
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    codecs
        .iter()
        .flat_map(|&compression| {
            [1usize, 3].map(move |n| {
                let records: Vec<Record> = (0..n)
                    .map(|i| Record {
                        transactional: false,
                        control: false,
                        partition_leader_epoch: 0,
                        producer_id: -1,
                        producer_epoch: -1,
                        timestamp_type: TimestampType::Creation,
                        offset: i as i64,
                        sequence: i as i32,
                        timestamp: 1_000 + i as i64,
                        key: (i % 2 == 0).then(|| Bytes::from(format!("k{i}"))),
                        value: Some(Bytes::from(vec![b'v'; 20 + i])),
                        headers: Default::default(),
                        delete_horizon: false,
                    })
                    .collect();
                let mut buf = BytesMut::new();
                let opts = RecordEncodeOptions {
                    version: 2,
                    compression,
                };
                RecordBatchEncoder::encode(&mut buf, &records, &opts).expect("encodes");
                // First byte of a fuzz input: 1 = fix the CRCs (see the body).
                let mut input = vec![1u8];
                input.extend_from_slice(&buf);
                input
            })
        })
        .collect()
}

#[test]
fn seed_batches_pass_the_record_batch_body() {
    let seeds = seed_batches();
    if let Some(dir) = std::env::var_os("STRATA_FUZZ_SEEDS_DIR") {
        std::fs::create_dir_all(&dir).expect("seed dir");
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(std::path::Path::new(&dir).join(format!("seed-{i}")), s)
                .expect("seed written");
        }
    }
    for s in &seeds {
        body::check(&s[1..]); // as given: the first byte of a batch is 0 (base offset)
        body::check(s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Real batches with a few bytes changed, cut or extended: the fuzz body's invariants hold.
    #[test]
    fn mutated_batches_keep_the_record_batch_invariants(
        which in 0usize..10,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let seeds = seed_batches();
        let mut input = seeds[which % seeds.len()].clone();
        for (at, b) in edits {
            let at = 1 + at % (input.len() - 1);
            input[at] ^= b;
        }
        input.truncate(1 + cut % input.len());
        input.extend_from_slice(&tail);
        body::check(&input);
    }
}
