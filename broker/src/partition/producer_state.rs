//! The idempotent producers of one partition: for each producer id, its current epoch, the last
//! five batches it wrote (sequence range and offsets) and when it last wrote. The partition checks
//! every idempotent batch against this state under its lock, in the same critical section as the
//! append, so a check and the write it allows cannot be separated by another append.
//!
//! The rules are Kafka's (`ProducerAppendInfo`):
//! - a batch from an epoch older than the producer's current one is a zombie: INVALID_PRODUCER_EPOCH;
//! - a batch with the current epoch whose (first, last) sequence equals one of the last five is a
//!   retry: it is answered with its original offsets and not written again;
//! - a batch with the current epoch must start one past the last sequence (wrapping from
//!   `i32::MAX` to 0), a batch with a newer epoch must start at 0, else OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - an unknown producer (new, expired, or whose state was lost with its records) may start at any
//!   sequence, as Kafka accepts since KIP-360.
//!
//! Invariants:
//! - an entry holds at most [`BATCHES_KEPT`] batches, oldest first, all from its current epoch;
//! - state changes only after the append they describe succeeded ([`Staged::commit`]);
//! - a snapshot `<offset>.snapshot` holds the state of every batch below `offset` and nothing else;
//!   it is written atomically with a checksum (`storage::checkpoint`), so a reader sees a whole
//!   snapshot or detects a corrupt one and ignores it.
//!
//! Cost: one hash-map lookup per batch; nothing per record.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use strata_protocol::record_batch::{next_sequence, BatchHeader};

use crate::error::BrokerError;
use crate::ids::Offset;
use crate::storage::checkpoint;

/// How many recent batches per producer are kept for duplicate detection (Kafka's
/// `ProducerStateEntry.NUM_BATCHES_TO_RETAIN`; producers keep at most 5 requests in flight).
pub const BATCHES_KEPT: usize = 5;

/// How many snapshot files a partition keeps (the newest ones).
pub const SNAPSHOTS_KEPT: usize = 2;

const SNAPSHOT_SUFFIX: &str = ".snapshot";
const SNAPSHOT_HEADER: &str = "producer-state v1";

/// One batch a producer wrote: its sequence range and where it landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

/// The state of one producer id in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    batches: [BatchMeta; BATCHES_KEPT],
    len: usize,
    pub last_append_ms: i64,
}

impl ProducerEntry {
    fn new(epoch: i16, last_append_ms: i64) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: [BatchMeta::default(); BATCHES_KEPT],
            len: 0,
            last_append_ms,
        }
    }

    /// The kept batches, oldest first.
    pub fn batches(&self) -> &[BatchMeta] {
        &self.batches[..self.len]
    }

    fn last_seq(&self) -> Option<i32> {
        self.batches().last().map(|b| b.last_seq)
    }

    fn push(&mut self, b: BatchMeta) {
        if self.len == BATCHES_KEPT {
            self.batches.rotate_left(1);
            self.batches[BATCHES_KEPT - 1] = b;
        } else {
            self.batches[self.len] = b;
            self.len += 1;
        }
    }
}

/// The producer fields of one batch about to be appended (or found in the log on recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    /// `first_seq + last_offset_delta`, wrapping past `i32::MAX` to 0 as Kafka's sequences do.
    pub last_seq: i32,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

impl ProducerBatch {
    /// The batch's last sequence: `first_seq + last_offset_delta`, wrapped.
    pub fn last_seq_of(first_seq: i32, last_offset_delta: i32) -> i32 {
        next_sequence(first_seq, last_offset_delta)
    }

    /// The batch `header` describes, at offsets `first_offset..=last_offset`.
    pub fn from_header(
        header: &BatchHeader<'_>,
        first_offset: Offset,
        last_offset: Offset,
    ) -> ProducerBatch {
        ProducerBatch {
            producer_id: header.producer_id(),
            epoch: header.producer_epoch(),
            first_seq: header.base_sequence(),
            last_seq: ProducerBatch::last_seq_of(
                header.base_sequence(),
                header.last_offset_delta(),
            ),
            first_offset,
            last_offset,
        }
    }

    fn meta(&self) -> BatchMeta {
        BatchMeta {
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            first_offset: self.first_offset,
            last_offset: self.last_offset,
        }
    }
}

/// What the check decided for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Write it.
    Append,
    /// A retry of a batch already written: answer with these offsets, write nothing.
    Duplicate(BatchMeta),
}

/// `next` follows `last` (sequences wrap from `i32::MAX` to 0).
fn in_sequence(last: i32, next: i32) -> bool {
    next == next_sequence(last, 1)
}

/// Kafka's rules for one batch against the producer's entry (`None`: unknown producer).
pub fn check(entry: Option<&ProducerEntry>, b: &ProducerBatch) -> Result<Check, BrokerError> {
    let Some(e) = entry else {
        return Ok(Check::Append);
    };
    if b.epoch < e.epoch {
        return Err(BrokerError::InvalidProducerEpoch(format!(
            "producer {} epoch {} is older than its current epoch {}",
            b.producer_id, b.epoch, e.epoch
        )));
    }
    if b.epoch > e.epoch {
        if b.first_seq != 0 {
            return Err(BrokerError::OutOfOrderSequenceNumber(format!(
                "producer {} new epoch {} must start at sequence 0, not {}",
                b.producer_id, b.epoch, b.first_seq
            )));
        }
        return Ok(Check::Append);
    }
    if let Some(d) = e
        .batches()
        .iter()
        .find(|d| d.first_seq == b.first_seq && d.last_seq == b.last_seq)
    {
        return Ok(Check::Duplicate(*d));
    }
    match e.last_seq() {
        Some(last) if !in_sequence(last, b.first_seq) => {
            Err(BrokerError::OutOfOrderSequenceNumber(format!(
                "producer {} epoch {}: sequence {} does not follow {}",
                b.producer_id, b.epoch, b.first_seq, last
            )))
        }
        _ => Ok(Check::Append),
    }
}

/// The entry after `b` was appended.
fn updated(entry: Option<&ProducerEntry>, b: &ProducerBatch, now_ms: i64) -> ProducerEntry {
    let mut e = match entry {
        Some(e) if e.epoch == b.epoch => *e,
        // A new epoch forgets the old one's batches, as Kafka does.
        _ => ProducerEntry::new(b.epoch, now_ms),
    };
    e.push(b.meta());
    e.last_append_ms = now_ms;
    e
}

/// Checked batches of one record set, applied once the append succeeded. Multi-batch record
/// sets are checked batch after batch against the state including the earlier ones.
#[derive(Debug, Default)]
pub struct Staged {
    entries: Vec<(i64, ProducerEntry)>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Every producer of one partition.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Checks `b` against the state plus what `staged` already holds; stages it when it is to be
    /// appended.
    pub fn stage(
        &self,
        staged: &mut Staged,
        b: &ProducerBatch,
        now_ms: i64,
    ) -> Result<Check, BrokerError> {
        let pending = staged
            .entries
            .iter()
            .position(|(pid, _)| *pid == b.producer_id);
        let current = match pending {
            Some(i) => Some(&staged.entries[i].1),
            None => self.producers.get(&b.producer_id),
        };
        let outcome = check(current, b)?;
        if outcome == Check::Append {
            let next = updated(current, b, now_ms);
            match pending {
                Some(i) => staged.entries[i].1 = next,
                None => staged.entries.push((b.producer_id, next)),
            }
        }
        Ok(outcome)
    }

    /// Applies staged batches (their append succeeded).
    pub fn commit(&mut self, staged: Staged) {
        for (pid, entry) in staged.entries {
            self.producers.insert(pid, entry);
        }
    }

    /// Records a batch found in the log (recovery): no checks, the log is the truth.
    pub fn replay(&mut self, b: &ProducerBatch, timestamp_ms: i64) {
        let next = updated(self.producers.get(&b.producer_id), b, timestamp_ms);
        self.producers.insert(b.producer_id, next);
    }

    /// Forgets producers idle for longer than `expiration_ms`; returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_append_ms) <= expiration_ms);
        before - self.producers.len()
    }

    /// The snapshot text: one line per producer,
    /// `pid epoch last_append_ms n (first_seq last_seq first_offset last_offset){n}`.
    pub fn to_snapshot(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(32 + self.producers.len() * 64);
        s.push_str(SNAPSHOT_HEADER);
        s.push('\n');
        for (pid, e) in &self.producers {
            let _ = write!(s, "{pid} {} {} {}", e.epoch, e.last_append_ms, e.len);
            for b in e.batches() {
                let _ = write!(
                    s,
                    " {} {} {} {}",
                    b.first_seq, b.last_seq, b.first_offset.0, b.last_offset.0
                );
            }
            s.push('\n');
        }
        s
    }

    /// Parses [`to_snapshot`](Self::to_snapshot) text; `None` if it is not well formed.
    pub fn from_snapshot(text: &str) -> Option<ProducerStates> {
        let mut lines = text.lines();
        if lines.next()? != SNAPSHOT_HEADER {
            return None;
        }
        let mut producers = HashMap::new();
        for line in lines {
            let mut f = line.split(' ');
            let mut num = || f.next()?.parse::<i64>().ok();
            let pid = num()?;
            let epoch = i16::try_from(num()?).ok()?;
            let last_append_ms = num()?;
            let n = usize::try_from(num()?)
                .ok()
                .filter(|n| *n <= BATCHES_KEPT)?;
            let mut e = ProducerEntry::new(epoch, last_append_ms);
            for _ in 0..n {
                e.push(BatchMeta {
                    first_seq: i32::try_from(num()?).ok()?,
                    last_seq: i32::try_from(num()?).ok()?,
                    first_offset: Offset(num()?),
                    last_offset: Offset(num()?),
                });
            }
            if num().is_some() || pid < 0 {
                return None;
            }
            producers.insert(pid, e);
        }
        Some(ProducerStates { producers })
    }
}

/// The snapshot file for `offset` in `dir`.
pub fn snapshot_path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{:020}{SNAPSHOT_SUFFIX}", offset.0))
}

/// Offsets of the snapshot files in `dir`, ascending.
pub fn snapshot_offsets(dir: &Path) -> io::Result<Vec<Offset>> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(SNAPSHOT_SUFFIX) {
            if let Ok(o) = stem.parse::<i64>() {
                offsets.push(Offset(o));
            }
        }
    }
    offsets.sort();
    Ok(offsets)
}

/// Writes the snapshot for `offset` (the state of every batch below it), then keeps only the
/// newest [`SNAPSHOTS_KEPT`] and none below `log_start` except the newest.
pub fn write_snapshot(
    dir: &Path,
    offset: Offset,
    text: &str,
    log_start: Offset,
) -> Result<(), BrokerError> {
    checkpoint::write(&snapshot_path(dir, offset), text).map_err(|e| {
        let io = io::Error::other(e.to_string());
        // A failed sync stays recognisable as fatal (see `storage::fatal`).
        BrokerError::Storage(if e.is_fatal() {
            crate::storage::fatal::sync_failed(io)
        } else {
            io
        })
    })?;
    prune_snapshots(dir, log_start)?;
    Ok(())
}

/// Deletes all but the newest [`SNAPSHOTS_KEPT`] snapshots, and those below `log_start` (their
/// records are gone) unless it is the newest one.
pub fn prune_snapshots(dir: &Path, log_start: Offset) -> io::Result<()> {
    let offsets = snapshot_offsets(dir)?;
    let n = offsets.len();
    for (i, o) in offsets.iter().enumerate() {
        let newest = i + 1 == n;
        if i + SNAPSHOTS_KEPT < n || (*o < log_start && !newest) {
            match std::fs::remove_file(snapshot_path(dir, *o)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Deletes snapshots above `end` (the log was cut below them: they describe lost records).
pub fn remove_snapshots_above(dir: &Path, end: Offset) -> io::Result<()> {
    for o in snapshot_offsets(dir)? {
        if o > end {
            std::fs::remove_file(snapshot_path(dir, o))?;
        }
    }
    Ok(())
}

/// Loads the newest readable snapshot at or below `end`: (its offset, the state). A corrupt one is
/// logged and skipped in favour of an older one.
pub fn load_snapshot(dir: &Path, end: Offset) -> io::Result<Option<(Offset, ProducerStates)>> {
    for o in snapshot_offsets(dir)?.into_iter().rev() {
        if o > end {
            continue;
        }
        let path = snapshot_path(dir, o);
        let parsed = match checkpoint::read(&path) {
            Ok(Some(text)) => ProducerStates::from_snapshot(&text),
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable producer-state snapshot");
                continue;
            }
        };
        match parsed {
            Some(states) => return Ok(Some((o, states))),
            None => {
                tracing::warn!(file = %path.display(), "ignoring a malformed producer-state snapshot")
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: i64 = 7;

    /// A producer's batch of `count` records from `seq`, landing at `offset`.
    fn batch(epoch: i16, seq: i32, count: i32, offset: i64) -> ProducerBatch {
        ProducerBatch {
            producer_id: PID,
            epoch,
            first_seq: seq,
            last_seq: ProducerBatch::last_seq_of(seq, count - 1),
            first_offset: Offset(offset),
            last_offset: Offset(offset + i64::from(count) - 1),
        }
    }

    /// Checks then (if it is to be appended) commits, as the partition does.
    fn send(states: &mut ProducerStates, b: ProducerBatch) -> Result<Check, BrokerError> {
        let mut staged = Staged::default();
        let outcome = states.stage(&mut staged, &b, 1_000)?;
        states.commit(staged);
        Ok(outcome)
    }

    fn is_out_of_order(r: Result<Check, BrokerError>) -> bool {
        matches!(r, Err(BrokerError::OutOfOrderSequenceNumber(_)))
    }

    #[test]
    fn a_retry_of_any_of_the_last_five_batches_gets_its_original_offsets() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            assert_eq!(
                send(&mut s, batch(0, i * 10, 10, 100 + i64::from(i) * 10)).unwrap(),
                Check::Append
            );
        }
        // Batches 2..=6 are the last five; each retry is a duplicate with its offsets.
        for i in 2..7 {
            let retry = batch(0, i * 10, 10, 9_999);
            let Check::Duplicate(original) = send(&mut s, retry).unwrap() else {
                panic!("batch {i} should be a duplicate");
            };
            assert_eq!(original.first_offset, Offset(100 + i64::from(i) * 10));
            assert_eq!(original.last_offset, Offset(109 + i64::from(i) * 10));
        }
        // Batch 1 fell out of the window: it is not a duplicate any more, and out of sequence.
        assert!(is_out_of_order(send(&mut s, batch(0, 10, 10, 9_999))));
        // The state did not move: the next batch still follows sequence 69.
        assert_eq!(send(&mut s, batch(0, 70, 1, 170)).unwrap(), Check::Append);
    }

    #[test]
    fn a_gap_is_out_of_order_and_changes_nothing() {
        let mut s = ProducerStates::default();
        send(&mut s, batch(0, 0, 5, 0)).unwrap();
        assert!(is_out_of_order(send(&mut s, batch(0, 6, 1, 5))));
        assert!(is_out_of_order(send(&mut s, batch(0, 3, 1, 5))));
        assert_eq!(send(&mut s, batch(0, 5, 1, 5)).unwrap(), Check::Append);
    }

    #[test]
    fn an_older_epoch_is_fenced() {
        let mut s = ProducerStates::default();
        send(&mut s, batch(3, 0, 1, 0)).unwrap();
        assert!(matches!(
            send(&mut s, batch(2, 1, 1, 1)),
            Err(BrokerError::InvalidProducerEpoch(_))
        ));
        // Even a batch that looks like a retry of the current epoch's batch.
        assert!(matches!(
            send(&mut s, batch(2, 0, 1, 1)),
            Err(BrokerError::InvalidProducerEpoch(_))
        ));
    }

    #[test]
    fn a_new_epoch_must_start_at_zero_and_forgets_the_old_batches() {
        let mut s = ProducerStates::default();
        send(&mut s, batch(0, 0, 3, 0)).unwrap();
        assert!(is_out_of_order(send(&mut s, batch(1, 3, 1, 3))));
        assert_eq!(send(&mut s, batch(1, 0, 2, 3)).unwrap(), Check::Append);
        assert_eq!(s.get(PID).unwrap().epoch, 1);
        assert_eq!(s.get(PID).unwrap().batches().len(), 1);
        // The old epoch is now fenced, the new one continues.
        assert!(matches!(
            send(&mut s, batch(0, 3, 1, 5)),
            Err(BrokerError::InvalidProducerEpoch(_))
        ));
        assert_eq!(send(&mut s, batch(1, 2, 1, 5)).unwrap(), Check::Append);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(ProducerBatch::last_seq_of(i32::MAX, 0), i32::MAX);
        assert_eq!(ProducerBatch::last_seq_of(i32::MAX, 1), 0);
        assert_eq!(ProducerBatch::last_seq_of(i32::MAX - 1, 3), 1);
        let mut s = ProducerStates::default();
        send(&mut s, batch(0, i32::MAX - 1, 3, 0)).unwrap(); // MAX-1, MAX, 0
        assert_eq!(s.get(PID).unwrap().batches()[0].last_seq, 0);
        assert_eq!(send(&mut s, batch(0, 1, 1, 3)).unwrap(), Check::Append);
        let mut s = ProducerStates::default();
        send(&mut s, batch(0, i32::MAX, 1, 0)).unwrap();
        assert_eq!(send(&mut s, batch(0, 0, 1, 1)).unwrap(), Check::Append);
        assert!(matches!(
            send(&mut s, batch(0, i32::MAX, 1, 9)).unwrap(),
            Check::Duplicate(_)
        ));
    }

    #[test]
    fn an_unknown_producer_may_start_anywhere() {
        let mut s = ProducerStates::default();
        assert_eq!(send(&mut s, batch(4, 1234, 2, 0)).unwrap(), Check::Append);
        assert_eq!(send(&mut s, batch(4, 1236, 1, 2)).unwrap(), Check::Append);
    }

    #[test]
    fn batches_of_one_record_set_are_checked_in_order_before_any_is_committed() {
        let s = ProducerStates::default();
        let mut staged = Staged::default();
        assert_eq!(
            s.stage(&mut staged, &batch(0, 0, 2, 0), 1).unwrap(),
            Check::Append
        );
        assert_eq!(
            s.stage(&mut staged, &batch(0, 2, 2, 2), 1).unwrap(),
            Check::Append
        );
        assert!(s.stage(&mut staged, &batch(0, 9, 1, 4), 1).is_err());
        assert!(s.is_empty(), "nothing is applied before commit");
    }

    #[test]
    fn idle_producers_expire() {
        let mut s = ProducerStates::default();
        let mut staged = Staged::default();
        s.stage(&mut staged, &batch(0, 0, 1, 0), 1_000).unwrap();
        s.commit(staged);
        assert_eq!(s.remove_expired(1_500, 1_000), 0);
        assert_eq!(s.remove_expired(2_001, 1_000), 1);
        assert!(s.get(PID).is_none());
    }

    #[test]
    fn snapshots_round_trip_and_malformed_ones_are_refused() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            send(&mut s, batch(2, i, 1, i64::from(i))).unwrap();
        }
        let text = s.to_snapshot();
        let back = ProducerStates::from_snapshot(&text).unwrap();
        assert_eq!(back.get(PID), s.get(PID));
        assert!(ProducerStates::from_snapshot("producer-state v1\n7 1 2\n").is_none());
        assert!(ProducerStates::from_snapshot("something else\n").is_none());
    }

    #[test]
    fn a_corrupt_snapshot_is_skipped_for_an_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerStates::default();
        send(&mut s, batch(0, 0, 1, 0)).unwrap();
        write_snapshot(dir.path(), Offset(1), &s.to_snapshot(), Offset(0)).unwrap();
        send(&mut s, batch(0, 1, 1, 1)).unwrap();
        write_snapshot(dir.path(), Offset(2), &s.to_snapshot(), Offset(0)).unwrap();
        let newest = snapshot_path(dir.path(), Offset(2));
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&newest, bytes).unwrap();
        let (at, loaded) = load_snapshot(dir.path(), Offset(10)).unwrap().unwrap();
        assert_eq!(at, Offset(1));
        assert_eq!(loaded.get(PID).unwrap().batches().len(), 1);
    }

    #[test]
    fn old_snapshots_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let s = ProducerStates::default();
        for o in [10, 20, 30, 40] {
            write_snapshot(dir.path(), Offset(o), &s.to_snapshot(), Offset(0)).unwrap();
        }
        assert_eq!(
            snapshot_offsets(dir.path()).unwrap(),
            vec![Offset(30), Offset(40)]
        );
        prune_snapshots(dir.path(), Offset(35)).unwrap();
        assert_eq!(snapshot_offsets(dir.path()).unwrap(), vec![Offset(40)]);
    }
}
