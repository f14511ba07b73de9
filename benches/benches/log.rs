//! Criterion benches of the log through its public API: append, sequential read, and the CRC-32C
//! validation every produced record set goes through.
//!
//! Run with `cargo bench -p strata-benches` (about a minute on 2 cores). Under `cargo test
//! --benches` criterion runs each bench once, on a smaller log.
//!
//! Logs live in a temp dir with 64 MiB segments; an append bench reopens a fresh, empty log once
//! the current one passes [`APPEND_LOG_BYTES_MAX`], so a long run never fills the disk. Appends are
//! not flushed (no msync / fsync): they measure the copy into the segment, index upkeep and rolls.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata_broker::ids::{LeaderEpoch, Offset};
use strata_broker::storage::{Log, LogConfig, SegmentLimits};
use strata_protocol::record_batch::{build_batch, validate_batches, RecordSetInfo};
use tempfile::TempDir;

const SEGMENT_BYTES: usize = 64 << 20;
/// An append bench starts over on an empty log past this size (a few segments).
const APPEND_LOG_BYTES_MAX: u64 = 256 << 20;
/// Size of the log the read bench reads from: two segments and a bit.
const READ_LOG_BYTES: usize = 144 << 20;
/// Smaller log when criterion only runs each bench once (`cargo test --benches`).
const READ_LOG_BYTES_TEST_MODE: usize = 4 << 20;
const CHUNK_BYTES: usize = 1 << 20;
const NOW_MS: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig {
        limits: SegmentLimits {
            segment_bytes: SEGMENT_BYTES,
            // Kafka's defaults for segment.index.bytes and index.interval.bytes.
            index_bytes: 10 << 20,
            index_interval_bytes: 4096,
        },
        segment_ms: -1,
        retention_ms: -1,
        retention_bytes: -1,
    }
}

/// `cargo bench` passes `--bench`; without it criterion runs every bench once as a test.
fn test_mode() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// Deterministic, incompressible-looking bytes (xorshift64), so no bench depends on a RNG crate.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One v2 batch of `count` records of `value_bytes` each, with an 8-byte key.
fn batch(count: usize, value_bytes: usize) -> Bytes {
    let keys: Vec<Vec<u8>> = (0..count)
        .map(|i| format!("key{i:05}").into_bytes())
        .collect();
    let values: Vec<Vec<u8>> = (0..count)
        .map(|i| pseudo_random(value_bytes, i as u64 + 1))
        .collect();
    let records: Vec<(Option<&[u8]>, &[u8])> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| (Some(k.as_slice()), v.as_slice()))
        .collect();
    build_batch(0, NOW_MS, &records)
}

fn open_log(dir: &Path) -> Log {
    let (log, _) = Log::open(dir, config(), None, false).expect("open log");
    log
}

/// A log in its own temp dir, replaced by a fresh one on [`Self::reset`]. Fields drop in order:
/// the log (its mappings) before the directory.
struct BenchLog {
    log: Log,
    _dir: TempDir,
}

impl BenchLog {
    fn new() -> BenchLog {
        let dir = tempfile::Builder::new()
            .prefix("strata-bench-log")
            .tempdir()
            .expect("temp dir");
        let log = open_log(dir.path());
        BenchLog { log, _dir: dir }
    }

    fn reset(&mut self) {
        *self = BenchLog::new();
    }
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for (count, value_bytes) in [(100usize, 100usize), (16, 1024)] {
        let batch = batch(count, value_bytes);
        let info = validate_batches(&batch).expect("a valid batch");
        group.throughput(Throughput::Bytes(batch.len() as u64));
        let id = BenchmarkId::from_parameter(format!("{count}x{value_bytes}B"));
        group.bench_with_input(id, &(batch, info), |b, (batch, info)| {
            let mut bl = BenchLog::new();
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    if bl.log.size_bytes() >= APPEND_LOG_BYTES_MAX {
                        bl.reset(); // outside the timed part
                    }
                    let room = (APPEND_LOG_BYTES_MAX - bl.log.size_bytes()) / batch.len() as u64;
                    let n = room.clamp(1, iters - done);
                    let start = Instant::now();
                    for _ in 0..n {
                        black_box(append(&mut bl.log, batch, info));
                    }
                    elapsed += start.elapsed();
                    done += n;
                }
                elapsed
            });
        });
    }
    group.finish();
}

fn append(log: &mut Log, batch: &[u8], info: &RecordSetInfo) -> Offset {
    log.append(batch, info, LeaderEpoch(0), NOW_MS)
        .expect("append")
}

/// A log of about `bytes` made of 100 x 100 B batches.
fn filled_log(bytes: usize) -> BenchLog {
    let mut bl = BenchLog::new();
    let batch = batch(100, 100);
    let info = validate_batches(&batch).expect("a valid batch");
    while (bl.log.size_bytes() as usize) < bytes {
        append(&mut bl.log, &batch, &info);
    }
    bl
}

/// Reads `CHUNK_BYTES` at `*offset`, wrapping to the log start at the end; returns the size read.
fn read_chunk(log: &Log, offset: &mut Offset, copy_into: Option<&mut BytesMut>) -> usize {
    let end = log.log_end_offset();
    if *offset >= end {
        *offset = log.log_start_offset();
    }
    let read = log
        .read(*offset, CHUNK_BYTES, end)
        .expect("offset in range")
        .expect("records below the end");
    *offset = read.next_offset;
    if let Some(buf) = copy_into {
        // What the fetch response encoder does with the slice: one copy into its buffer.
        buf.clear();
        buf.extend_from_slice(&read.records);
    }
    black_box(&read.records);
    read.records.len()
}

fn bench_read(c: &mut Criterion) {
    let log_bytes = if test_mode() {
        READ_LOG_BYTES_TEST_MODE
    } else {
        READ_LOG_BYTES
    };
    let bl = filled_log(log_bytes);
    let log = &bl.log;
    // Whole batches only, so a chunk is a little under 1 MiB: measure the mean for the throughput.
    let mut offset = log.log_start_offset();
    let (mut chunks, mut total) = (0u64, 0u64);
    while offset < log.log_end_offset() {
        total += read_chunk(log, &mut offset, None) as u64;
        chunks += 1;
    }
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Bytes(total / chunks));
    // The zero-copy read hands out a slice of the mapping: it times finding the batches (index
    // lookup, header walk), not moving bytes, so its "throughput" is not a bandwidth.
    group.bench_function("1MiB_chunks_zero_copy", |b| {
        let mut offset = log.log_start_offset();
        b.iter(|| read_chunk(log, &mut offset, None));
    });
    group.bench_function("1MiB_chunks_copied", |b| {
        let mut offset = log.log_start_offset();
        let mut buf = BytesMut::with_capacity(2 * CHUNK_BYTES);
        b.iter(|| read_chunk(log, &mut offset, Some(&mut buf)));
    });
    group.finish();
    drop(bl);
}

fn bench_validate(c: &mut Criterion) {
    let one = batch(100, 100);
    let mut set = Vec::with_capacity(CHUNK_BYTES + one.len());
    while set.len() < CHUNK_BYTES {
        set.extend_from_slice(&one);
    }
    let info = validate_batches(&set).expect("a valid record set");
    assert_eq!(info.record_count, 100 * info.batch_count as i64);
    let mut group = c.benchmark_group("validate_batches");
    group.throughput(Throughput::Bytes(set.len() as u64));
    group.bench_function("1MiB_of_100x100B_batches", |b| {
        b.iter(|| validate_batches(black_box(&set)).expect("valid"));
    });
    group.finish();
}

fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = bench_append, bench_read, bench_validate
}
criterion_main!(benches);
