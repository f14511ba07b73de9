//! The body of the `partition_append` fuzz target, shared with the stable test
//! `broker/tests/fuzz_bodies.rs` (included by `#[path]` from both).
//!
//! The input is a script of record sets for one partition (small segments, so it rolls): each
//! step is either bytes as the client sent them (CRCs fixed so the fuzzer reaches the record walk)
//! or a well-formed batch of records whose sizes the input chooses, possibly with its record count
//! changed afterwards; some steps close and reopen the partition (cleanly, or dropped without a
//! close: recovery).
//!
//! Must hold: no panic; an accepted set lands at the log end with dense offsets and moves the end
//! by exactly its record count; a refused one moves nothing; reading from the first and last offset
//! of every acknowledged batch finds that batch (the offset index is in order); and a reopen holds
//! exactly the acknowledged batches, byte for byte past the fields the broker patches.
//!
//! Speed (the fuzzer needs millions of inputs): one partition lives across inputs on this thread,
//! on tmpfs (`/dev/shm`) when there is one, with a model of what it acknowledged. An input checks
//! the batches it appended; the whole log is read back at each reopen the input asks for and when
//! the log is retired (after [`RETIRE_AFTER_INPUTS`] inputs or [`RETIRE_AFTER_BYTES`], with a
//! crash reopen first), so every log is recovered and compared at least once. Because a failure
//! may depend on earlier inputs, the fuzz target records the inputs since the log was created and
//! writes them out on a panic ([`record_history_on_panic`]); [`check_from_fresh`] replays them.

use std::cell::RefCell;
use std::path::Path;
use std::sync::{Arc, Once, OnceLock};

use bytes::Bytes;
use strata_broker::config::{BrokerConfig, TopicOverrides};
use strata_broker::ids::{Offset, PartitionId};
use strata_broker::partition::flusher::Flushers;
use strata_broker::partition::manager::settings_for;
use strata_broker::partition::{Partition, PartitionSettings};
use strata_protocol::record_batch::{build_batch, BatchIter};

/// A log is retired (recovered, compared, deleted) after this many inputs...
const RETIRE_AFTER_INPUTS: usize = 256;
/// ... or once it holds this many acknowledged bytes, which bounds a reopen's full comparison.
const RETIRE_AFTER_BYTES: usize = 64 << 10;
/// Reopens one input may ask for; later reopen steps are skipped (they bound an input's cost).
const REOPENS_PER_INPUT_MAX: usize = 1;

fn flushers() -> &'static Arc<Flushers> {
    static FLUSHERS: OnceLock<Arc<Flushers>> = OnceLock::new();
    FLUSHERS.get_or_init(|| Flushers::start(1).expect("flush thread"))
}

fn settings() -> PartitionSettings {
    static SETTINGS: OnceLock<PartitionSettings> = OnceLock::new();
    *SETTINGS.get_or_init(|| {
        let mut config = BrokerConfig::default();
        for (k, v) in [
            ("log.segment.bytes", "4096"),
            ("log.index.size.max.bytes", "4096"),
            ("log.index.interval.bytes", "256"),
            ("message.max.bytes", "4096"),
        ] {
            config.set(k, v).expect("config key");
        }
        settings_for(&config, &TopicOverrides::default())
    })
}

fn open(dir: &Path, clean: bool) -> Arc<Partition> {
    let (p, _) = Partition::open(
        dir,
        Arc::from("fuzz"),
        PartitionId(0),
        settings(),
        None,
        clean,
        flushers(),
    )
    .expect("partition opens");
    p
}

/// A temp dir on tmpfs when the machine has one: no input waits on a disk.
fn temp_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("strata-fuzz-partition-");
        b
    };
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder.tempdir().expect("temp dir")
}

/// One acknowledged batch as the model knows it.
struct Acked {
    base: i64,
    last: i64,
    /// The batch's bytes past the base offset and partition leader epoch (which the broker
    /// patches).
    unpatched: Vec<u8>,
}

/// A partition and what it acknowledged, living across inputs.
struct Harness {
    p: Arc<Partition>,
    acked: Vec<Acked>,
    acked_bytes: usize,
    end: Offset,
    inputs: usize,
    /// Last: the files go after the partition that maps them.
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = temp_dir();
        let p = open(dir.path(), false);
        Harness {
            p,
            acked: Vec::new(),
            acked_bytes: 0,
            end: Offset(0),
            inputs: 0,
            dir,
        }
    }

    fn reopen(&mut self, clean: bool) {
        if clean {
            self.p.close().expect("close");
        }
        // Replaced before the old one is dropped: a drop without close is a crash.
        let old = std::mem::replace(&mut self.p, open(self.dir.path(), clean));
        drop(old);
        assert_eq!(
            self.p.high_watermark(),
            self.end,
            "reopen keeps every acknowledged record"
        );
        self.check_log();
    }

    /// A crash reopen and a full comparison, then the log is deleted.
    fn retire(mut self) {
        self.reopen(false);
        self.p.close().expect("close");
    }

    /// The whole log, read batch by batch from offset 0, is exactly the acknowledged batches.
    fn check_log(&self) {
        let mut next = 0i64;
        let mut expected = self.acked.iter();
        while next < self.end.0 {
            let view = self
                .p
                .read(Offset(next), 1 << 20)
                .expect("read below the end");
            let records = view.records.expect("a read below the end finds records");
            let mut moved = false;
            for (_, b) in BatchIter::new(&records) {
                if b.last_offset() < next {
                    continue;
                }
                let want = expected
                    .next()
                    .expect("no batch past the acknowledged ones");
                assert_eq!(b.base_offset(), next, "offsets are dense");
                assert_eq!((b.base_offset(), b.last_offset()), (want.base, want.last));
                assert_eq!(unpatched(b.bytes()), want.unpatched);
                self.check_index(want);
                next = b.last_offset() + 1;
                moved = true;
            }
            assert!(moved, "a read from {next} finds the batch that holds it");
        }
        assert_eq!(Offset(next), self.end);
        assert!(
            expected.next().is_none(),
            "every acknowledged batch is read back"
        );
    }

    /// A read from the first or last offset of a batch finds that batch, unchanged.
    fn check_index(&self, want: &Acked) {
        for inside in [want.base, want.last] {
            let hit = self
                .p
                .read(Offset(inside), 1)
                .expect("read")
                .records
                .expect("a read below the end finds records");
            let (_, h) = BatchIter::new(&hit).next().expect("at least one batch");
            assert_eq!(h.base_offset(), want.base, "read from {inside}");
            assert_eq!(unpatched(h.bytes()), want.unpatched);
        }
    }

    /// Runs one input's script.
    fn run(&mut self, input: &[u8]) {
        self.inputs += 1;
        let first_new = self.acked.len();
        let mut reopens = 0;
        let mut script = Script { data: input };
        // Bounded: every step takes at least one byte of the input.
        while let Some(op) = script.byte() {
            let set: Vec<u8> = match op % 4 {
                0 => {
                    let n = usize::from(script.byte().unwrap_or(0)) * 4;
                    let mut raw = script.take(n).to_vec();
                    fix_crcs(&mut raw);
                    raw
                }
                // Rare (2 op values of 256): a reopen costs far more than an append, and every
                // log gets a crash reopen when it is retired anyway.
                3 if op | 0x80 == 0xff => {
                    if reopens < REOPENS_PER_INPUT_MAX {
                        reopens += 1;
                        self.reopen(op & 0x80 != 0);
                    }
                    continue;
                }
                _ => {
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
            };
            self.append(Bytes::from(set));
        }
        // The index finds what this input appended (a reopen above checked everything).
        for want in &self.acked[first_new..] {
            self.check_index(want);
        }
    }

    fn append(&mut self, set: Bytes) {
        let before = self.p.high_watermark();
        assert_eq!(before, self.end);
        match self.p.append(&set, 0) {
            Ok(appended) => {
                let count: i64 = BatchIter::new(&set)
                    .map(|(_, b)| i64::from(b.record_count()))
                    .sum();
                assert_eq!(appended.base_offset, before);
                assert_eq!(appended.last_offset, Offset(before.0 + count - 1));
                self.end = Offset(appended.last_offset.0 + 1);
                assert_eq!(self.p.high_watermark(), self.end);
                let mut base = before.0;
                for (_, b) in BatchIter::new(&set) {
                    let last = base + i64::from(b.record_count()) - 1;
                    self.acked_bytes += b.bytes().len();
                    self.acked.push(Acked {
                        base,
                        last,
                        unpatched: unpatched(b.bytes()),
                    });
                    base = last + 1;
                }
            }
            Err(_) => assert_eq!(
                self.p.high_watermark(),
                before,
                "a refused set moves nothing"
            ),
        }
    }
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
    /// The inputs run on the current log, for [`record_history_on_panic`].
    static HISTORY: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// One fuzz input, on this thread's long-lived partition (created, or retired and replaced, as
/// needed first).
pub fn check(input: &[u8]) {
    let harness = HARNESS.with(|h| h.borrow_mut().take());
    let mut harness = match harness {
        Some(h) if h.inputs < RETIRE_AFTER_INPUTS && h.acked_bytes < RETIRE_AFTER_BYTES => h,
        old => {
            if let Some(old) = old {
                old.retire();
            }
            HISTORY.with(|h| h.borrow_mut().clear());
            Harness::new()
        }
    };
    HISTORY.with(|h| h.borrow_mut().push(input.to_vec()));
    harness.run(input);
    HARNESS.with(|h| *h.borrow_mut() = Some(harness));
}

/// Runs `inputs` in turn on a fresh partition, then retires it (a crash reopen and a full
/// comparison): what [`check`] does between two retirements, reproducibly.
#[allow(dead_code)] // The fuzz target runs inputs one by one with `check`.
pub fn check_from_fresh<I: AsRef<[u8]>>(inputs: &[I]) {
    let mut harness = Harness::new();
    for input in inputs {
        harness.run(input.as_ref());
    }
    harness.retire();
}

/// On a panic, writes the inputs run on the current log (oldest first, `000000`, `000001`, ...)
/// to a new directory under the system temp dir and names it on stderr: the crashing input alone
/// may not fail without the ones before it. Replay with [`check_from_fresh`] (see the
/// `replay_a_recorded_history` test in `broker/tests/fuzz_bodies.rs`).
#[allow(dead_code)] // The stable test replays histories but records none.
pub fn record_history_on_panic() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let history = HISTORY
                .try_with(|h| h.try_borrow().map(|h| h.clone()).unwrap_or_default())
                .unwrap_or_default();
            let dir = std::env::temp_dir().join(format!(
                "strata-fuzz-history-{}-{}",
                std::process::id(),
                history.len()
            ));
            let written = std::fs::create_dir_all(&dir).and_then(|()| {
                for (i, input) in history.iter().enumerate() {
                    std::fs::write(dir.join(format!("{i:06}")), input)?;
                }
                Ok(())
            });
            match written {
                Ok(()) => eprintln!(
                    "partition_append: the {} inputs on this log are in {}",
                    history.len(),
                    dir.display()
                ),
                Err(e) => eprintln!("partition_append: could not write the history: {e}"),
            }
            previous(info);
        }));
    });
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

/// A batch's bytes past the base offset and partition leader epoch (which the broker patches).
fn unpatched(batch: &[u8]) -> Vec<u8> {
    let mut v = batch[8..12].to_vec();
    v.extend_from_slice(&batch[16..]);
    v
}
