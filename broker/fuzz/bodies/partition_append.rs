//! The body of the `partition_append` fuzz target, shared with the stable test
//! `broker/tests/fuzz_bodies.rs` (included by `#[path]` from both).
//!
//! The input is a script of record sets for one partition on a fresh temp dir (small segments,
//! so it rolls): each step is either bytes as the client sent them (CRCs fixed so the fuzzer
//! reaches the record walk) or a well-formed batch of records whose sizes the input chooses,
//! possibly with its record count changed afterwards; some steps close and reopen the partition.
//! Must hold: no panic; an accepted set lands at the log end with dense offsets and moves the end
//! by exactly its record count; a refused one moves nothing; reading from every acknowledged
//! offset finds the batch that holds it (the offset index is in order); and a reopen (clean, or
//! after a drop without close: recovery) holds exactly the acknowledged batches, byte for byte
//! past the fields the broker patches.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use strata_broker::config::{BrokerConfig, TopicOverrides};
use strata_broker::ids::{Offset, PartitionId};
use strata_broker::partition::flusher::Flushers;
use strata_broker::partition::manager::settings_for;
use strata_broker::partition::Partition;
use strata_protocol::record_batch::{build_batch, BatchIter};

fn flushers() -> &'static Arc<Flushers> {
    static FLUSHERS: OnceLock<Arc<Flushers>> = OnceLock::new();
    FLUSHERS.get_or_init(|| Flushers::start(1).expect("flush thread"))
}

fn open(dir: &Path, clean: bool) -> Arc<Partition> {
    let mut config = BrokerConfig::default();
    for (k, v) in [
        ("log.segment.bytes", "4096"),
        ("log.index.size.max.bytes", "4096"),
        ("log.index.interval.bytes", "256"),
        ("message.max.bytes", "4096"),
    ] {
        config.set(k, v).expect("config key");
    }
    let settings = settings_for(&config, &TopicOverrides::default());
    let (p, _) = Partition::open(
        dir,
        Arc::from("fuzz"),
        PartitionId(0),
        settings,
        None,
        clean,
        flushers(),
    )
    .expect("partition opens");
    p
}

/// Reads the input as a script, a step at a time.
struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(*b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (taken, rest) = self.data.split_at(n);
        self.data = rest;
        taken
    }
}

fn fix_crcs(data: &mut [u8]) {
    let spans: Vec<(usize, usize)> = BatchIter::new(data)
        .map(|(at, b)| (at, b.total_bytes()))
        .collect();
    for (at, len) in spans {
        let batch = &mut data[at..at + len];
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Each batch's bytes past the base offset and partition leader epoch (which the broker patches).
fn unpatched(set: &[u8]) -> Vec<Vec<u8>> {
    BatchIter::new(set)
        .map(|(_, b)| {
            let bytes = b.bytes();
            let mut v = bytes[8..12].to_vec();
            v.extend_from_slice(&bytes[16..]);
            v
        })
        .collect()
}

/// Every batch of the log from offset 0, checking offsets are dense and each acknowledged offset
/// is found by a read from it.
fn read_all(p: &Partition, end: Offset) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = 0i64;
    while next < end.0 {
        let view = p.read(Offset(next), 1 << 20).expect("read below the end");
        let records = view.records.expect("a read below the end finds records");
        let mut first = true;
        for (_, b) in BatchIter::new(&records) {
            if first {
                assert!(b.base_offset() <= next && next <= b.last_offset());
                first = false;
            }
            if b.last_offset() < next {
                continue;
            }
            assert_eq!(b.base_offset(), next, "offsets are dense");
            // The index finds a batch from any offset inside it.
            for inside in [b.base_offset(), b.last_offset()] {
                let hit = p
                    .read(Offset(inside), 1)
                    .expect("read")
                    .records
                    .expect("found");
                let (_, h) = BatchIter::new(&hit).next().expect("one batch");
                assert_eq!(h.base_offset(), b.base_offset());
            }
            let bytes = b.bytes();
            let mut v = bytes[8..12].to_vec();
            v.extend_from_slice(&bytes[16..]);
            out.push(v);
            next = b.last_offset() + 1;
        }
    }
    assert_eq!(Offset(next), end);
    out
}

pub fn check(input: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut script = Script { data: input };
    let mut p = open(dir.path(), false);
    let mut acked: Vec<Vec<u8>> = Vec::new();
    let mut end = Offset(0);
    // Bounded: every step takes at least one byte of the input.
    while let Some(op) = script.byte() {
        let set: Vec<u8> = match op % 4 {
            0 => {
                let n = usize::from(script.byte().unwrap_or(0)) * 4;
                let mut raw = script.take(n).to_vec();
                fix_crcs(&mut raw);
                raw
            }
            1 | 2 => {
                let count = usize::from(script.byte().unwrap_or(0) % 16) + 1;
                let sizes = script.take(count).to_vec();
                let values: Vec<Vec<u8>> =
                    sizes.iter().map(|s| vec![*s; usize::from(*s)]).collect();
                let records: Vec<(Option<&[u8]>, &[u8])> =
                    values.iter().map(|v| (None, v.as_slice())).collect();
                let mut b = build_batch(0, 1_000, &records).to_vec();
                if op % 4 == 2 {
                    // A claimed count that may lie.
                    let claimed = i32::from(script.byte().unwrap_or(1)) - 1;
                    b[57..61].copy_from_slice(&claimed.to_be_bytes());
                    b[23..27].copy_from_slice(&claimed.wrapping_sub(1).to_be_bytes());
                    fix_crcs(&mut b);
                }
                b
            }
            _ => {
                let clean = op & 0x10 != 0;
                if clean {
                    p.close().expect("close");
                }
                drop(p);
                p = open(dir.path(), clean);
                assert_eq!(
                    p.high_watermark(),
                    end,
                    "reopen keeps every acknowledged record"
                );
                continue;
            }
        };
        let before = p.high_watermark();
        let set = Bytes::from(set);
        match p.append(&set, 0) {
            Ok(appended) => {
                let count: i64 = BatchIter::new(&set)
                    .map(|(_, b)| i64::from(b.record_count()))
                    .sum();
                assert_eq!(appended.base_offset, before);
                assert_eq!(appended.last_offset, Offset(before.0 + count - 1));
                end = Offset(appended.last_offset.0 + 1);
                assert_eq!(p.high_watermark(), end);
                acked.extend(unpatched(&set));
            }
            Err(_) => assert_eq!(p.high_watermark(), before, "a refused set moves nothing"),
        }
    }
    assert_eq!(read_all(&p, end), acked);
    // Recovery after a crash (no close) holds exactly what was acknowledged.
    drop(p);
    let p = open(dir.path(), false);
    assert_eq!(p.high_watermark(), end);
    assert_eq!(read_all(&p, end), acked);
    p.close().expect("close");
}
