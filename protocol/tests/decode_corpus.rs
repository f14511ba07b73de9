//! A small, always-run, stable-Rust cousin of the cargo-fuzz targets in `protocol/fuzz/`: every
//! captured real-client frame (`tests/captured/*.bin`, see `captured.rs`) is decoded with each
//! single byte replaced (several ways) and at every truncation length. Nothing may panic; what
//! decodes is checked no further, except that Produce record sets also go through
//! `validate_batches` and `BatchIter`, as the broker would.

use std::path::Path;

use bytes::Bytes;
use strata_protocol::api::{decode_request, Request};
use strata_protocol::record_batch::{validate_batches, BatchIter};

/// Replacements tried at each byte: the bit flips and the values length fields fear most.
const MUTATIONS: [fn(u8) -> u8; 6] = [
    |b| b ^ 0xff,
    |b| b ^ 0x80,
    |b| b ^ 0x01,
    |_| 0x00,
    |_| 0x7f,
    |_| 0xff,
];
/// A bound on the work: the corpus is about 2.4 KB, so this is never reached today; a much
/// larger corpus makes the test fail rather than slow.
const CASES_MAX: usize = 200_000;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captured");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("tests/captured exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read a captured frame"))
        })
        .collect();
    files.sort();
    files
}

/// Decodes `frame`; for a Produce, walks its record sets too. Returns whether it decoded.
fn exercise(frame: Vec<u8>) -> bool {
    let Ok(req) = decode_request(Bytes::from(frame)) else {
        return false;
    };
    if let Request::Produce(produce) = &req.body {
        for topic in &produce.topic_data {
            for p in &topic.partition_data {
                if let Some(records) = &p.records {
                    let _ = validate_batches(records);
                    for (_, batch) in BatchIter::new(records) {
                        let _ = batch.validate();
                        let _ = (
                            batch.compression(),
                            batch.last_offset(),
                            batch.max_timestamp(),
                        );
                    }
                }
            }
        }
    }
    true
}

#[test]
fn mutated_and_truncated_captured_frames_never_panic() {
    let corpus = corpus();
    assert!(!corpus.is_empty(), "no captured frames in tests/captured");
    let cases: usize = corpus
        .iter()
        .map(|(_, f)| f.len() * (MUTATIONS.len() + 1))
        .sum();
    assert!(
        cases <= CASES_MAX,
        "{cases} cases: the corpus outgrew this test"
    );
    let (mut decoded, mut total) = (0usize, 0usize);
    for (name, frame) in &corpus {
        for i in 0..frame.len() {
            for m in MUTATIONS {
                let mut f = frame.clone();
                f[i] = m(f[i]);
                if f == *frame {
                    continue;
                }
                total += 1;
                let r = std::panic::catch_unwind(|| exercise(f));
                let ok = r.unwrap_or_else(|_| panic!("{name}: byte {i} mutated: panicked"));
                decoded += usize::from(ok);
            }
        }
        for len in 0..frame.len() {
            total += 1;
            let f = frame[..len].to_vec();
            let r = std::panic::catch_unwind(|| exercise(f));
            let ok = r.unwrap_or_else(|_| panic!("{name}: truncated to {len} bytes: panicked"));
            decoded += usize::from(ok);
        }
    }
    // Most single-byte changes land in strings or values and still decode; make sure the test
    // is exercising the decoders rather than bouncing off the header check.
    assert!(
        decoded > total / 10,
        "only {decoded} of {total} cases decoded"
    );
    eprintln!("{total} mutated or truncated frames, {decoded} decoded, none panicked");
}
