//! A partition replica: its log plus the state replication needs (high watermark, leader epoch,
//! leader-epoch cache), the wake-ups of waiting fetches, and its flusher.
//!
//! Concurrency by ownership: all state changes happen under this partition's own lock, held only
//! for the in-memory work of an append or a read (validation and flushing happen outside it).
//! There is no lock shared between partitions on the produce or fetch path.
//!
//! Invariants:
//! - `log_start_offset <= high_watermark <= log_end_offset` (one node: the ISR is this broker,
//!   so the high watermark is the log end offset);
//! - every appended batch carries the current leader epoch;
//! - `durable` (the flushed offset) only grows and never passes the log end offset;
//! - a partition that saw a fatal storage error (a failed sync, see `storage::fatal`) is
//!   `failed`: it refuses writes and never marks anything durable again; the error goes to the
//!   broker's `Fatal` handle, and `main` halts;
//! - `closed` and `failed` are checked under the lock before a write, so no produce reaches a
//!   log that a close (DeleteTopics, shutdown) sealed;
//! - an `acks=-1` append is answered only once `durable` covers it, when the policy says so;
//! - idempotent batches are checked against the producer state (`producer_state`) under the same
//!   lock as their append, all batches of a record set before any is written; the state always
//!   describes exactly the batches in the log (rebuilt on open from the newest usable snapshot
//!   plus the batches after it; snapshotted at each segment roll and on clean close);
//! - a roll's producer-state snapshot is taken under the lock and written by the flush thread
//!   before `durable` passes the roll.

pub mod epoch_cache;
pub mod flusher;
pub mod manager;
pub mod producer_state;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use strata_protocol::record_batch::{
    validate_batches_with, BatchError, BatchHeader, BatchIter, RecordLimits,
};
use tokio::sync::{watch, Notify};

use flusher::Flushers;

use crate::config::FlushPolicy;
use crate::error::BrokerError;
use crate::ids::{LeaderEpoch, Offset, PartitionId};
use crate::storage::segment::first_record_at_or_after;
use crate::storage::{fatal, Log, LogConfig, LogReadError, RecoveryReport};
use epoch_cache::EpochCache;
use producer_state::{Check, ProducerBatch, ProducerStates, Staged};

/// How producer state was rebuilt when the partition opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerRecovery {
    /// The snapshot it started from, if one was usable.
    pub snapshot: Option<Offset>,
    /// Batches read from the log after it.
    pub batches_scanned: usize,
}

/// Bytes read per step when rebuilding producer state from the log.
const PRODUCER_SCAN_CHUNK_BYTES: usize = 4 << 20;

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub log_start_offset: Offset,
    /// Whether an `acks=-1` answer waits for these records to be flushed (the policy, read
    /// under the same lock as the append).
    pub flush_before_ack: bool,
}

/// What a fetch of this partition sees.
#[derive(Debug, Clone)]
pub struct FetchView {
    pub records: Option<Bytes>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

struct State {
    log: Log,
    leader_epoch: LeaderEpoch,
    epoch_cache: EpochCache,
    unflushed_records: i64,
    policy: FlushPolicy,
    max_message_bytes: usize,
    producers: ProducerStates,
    /// Producer-state snapshots taken at rolls, written by the next flush before it advances
    /// `durable` (a file and a directory fsync would block the produce's runtime thread).
    pending_snapshots: Vec<PendingSnapshot>,
}

pub struct Partition {
    topic: Arc<str>,
    id: PartitionId,
    dir: PathBuf,
    state: Mutex<State>,
    /// Woken on every append: fetches waiting for `min_bytes` re-read.
    appended: Notify,
    /// Set while this partition waits in its flush thread's queue.
    flush_queued: AtomicBool,
    flushers: Arc<Flushers>,
    flush_slot: usize,
    me: Weak<Partition>,
    /// Offset below which everything is on disk.
    durable: watch::Sender<Offset>,
    closed: AtomicBool,
    failed: AtomicBool,
    /// The `flush.ms` task, if any: stopped by a close, awaited by a clean shutdown.
    flush_timer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    producer_recovery: ProducerRecovery,
    /// Bounds every walk of this partition's records (validation, ListOffsets by timestamp):
    /// derived from `message.max.bytes`, fixed at open like it.
    record_limits: RecordLimits,
    /// This topic's produce and fetch counters (inert unless the metrics recorder is installed).
    metrics: crate::metrics::TopicMetrics,
}

/// A producer-state snapshot taken under the lock at a roll, not yet on disk.
struct PendingSnapshot {
    at: Offset,
    text: String,
    log_start: Offset,
}

/// Per-partition settings derived from the topic's configuration.
#[derive(Debug, Clone, Copy)]
pub struct PartitionSettings {
    pub log: LogConfig,
    pub flush: FlushPolicy,
    pub max_message_bytes: usize,
}

impl Partition {
    /// Opens (or creates) the partition in `dir`; its flushes run on `flushers`. With a finite
    /// `flush.ms`, a timer on the current runtime asks for a flush that often.
    pub fn open(
        dir: &Path,
        topic: Arc<str>,
        id: PartitionId,
        settings: PartitionSettings,
        recovery_point: Option<Offset>,
        clean_shutdown: bool,
        flushers: &Arc<Flushers>,
    ) -> Result<(Arc<Partition>, RecoveryReport), BrokerError> {
        let (log, report) = Log::open_shared(
            dir,
            settings.log,
            recovery_point,
            clean_shutdown,
            flushers.open_segments(),
        )
        .inspect_err(|e| {
            if fatal::is_fatal(e) {
                flushers
                    .fatal()
                    .report(format!("opening {}: {e}", dir.display()));
            }
        })?;
        let mut epoch_cache = EpochCache::open(dir)?;
        epoch_cache.truncate_from(log.log_end_offset());
        // One node: leadership never moves, so the epoch stays where it is (0 on creation).
        let leader_epoch = epoch_cache.latest().unwrap_or(LeaderEpoch(0));
        epoch_cache.assign(leader_epoch, log.log_end_offset())?;
        let (producers, producer_recovery) = recover_producers(dir, &log)?;
        let durable = watch::Sender::new(log.recovery_point());
        let metrics = crate::metrics::TopicMetrics::new(&topic);
        let partition = Arc::new_cyclic(|me| Partition {
            topic,
            id,
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                log,
                leader_epoch,
                epoch_cache,
                unflushed_records: 0,
                policy: settings.flush,
                max_message_bytes: settings.max_message_bytes,
                producers,
                pending_snapshots: Vec::new(),
            }),
            appended: Notify::new(),
            flush_queued: AtomicBool::new(false),
            flushers: Arc::clone(flushers),
            flush_slot: flushers.assign_slot(),
            me: me.clone(),
            durable,
            closed: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            flush_timer: Mutex::new(None),
            producer_recovery,
            record_limits: RecordLimits::for_batch_bytes(settings.max_message_bytes),
            metrics,
        });
        if settings.flush.flush_ms < i64::MAX {
            let timer = tokio::spawn(flush_periodically(
                Arc::downgrade(&partition),
                settings.flush.flush_ms,
            ));
            *partition
                .flush_timer
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(timer);
        }
        Ok((partition, report))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a broker bug; the state is still the last consistent
        // one (appends commit their fields after the copy), so carry on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// This topic's produce and fetch counters.
    pub fn metrics(&self) -> &crate::metrics::TopicMetrics {
        &self.metrics
    }

    pub fn id(&self) -> PartitionId {
        self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.lock().leader_epoch
    }

    /// OffsetsForLeaderEpoch for this partition (followers truncate with it).
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let st = self.lock();
        st.epoch_cache
            .end_offset_for(epoch, st.log.log_end_offset())
    }

    pub fn high_watermark(&self) -> Offset {
        self.lock().log.log_end_offset()
    }

    pub fn log_start_offset(&self) -> Offset {
        self.lock().log.log_start_offset()
    }

    pub fn recovery_point(&self) -> Offset {
        self.lock().log.recovery_point()
    }

    /// Validates and appends a producer's record set. Validation (the CRC over every byte)
    /// runs before the lock is taken. Idempotent batches are checked against the producer state
    /// under the lock; a retry of batches already written is answered `Ok` with their original
    /// offsets and writes nothing.
    pub fn append(&self, records: &Bytes, now_ms: i64) -> Result<Appended, BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        let info = validate_batches_with(records, &self.record_limits).map_err(|e| match e {
            e if e.is_corruption() => BrokerError::CorruptMessage(e.to_string()),
            BatchError::Empty => BrokerError::InvalidRecord("empty record set".into()),
            e => BrokerError::InvalidRecord(e.to_string()),
        })?;
        // One pass over the headers before the lock: refusals, and the idempotent batches with
        // their offsets relative to the set (the lock adds the log end offset).
        let mut producer_batches = Vec::new();
        let mut plain_batches = 0usize;
        let mut next_relative = 0i64;
        for (_, batch) in BatchIter::new(records) {
            if batch.is_transactional() || batch.is_control() {
                return Err(BrokerError::UnsupportedForMessageFormat(
                    "transactional batches are not supported yet".into(),
                ));
            }
            if batch.producer_id() >= 0 && (batch.base_sequence() < 0 || batch.producer_epoch() < 0)
            {
                return Err(BrokerError::InvalidRecord(format!(
                    "producer {} sent epoch {} sequence {}",
                    batch.producer_id(),
                    batch.producer_epoch(),
                    batch.base_sequence()
                )));
            }
            let first = Offset(next_relative);
            next_relative += i64::from(batch.record_count());
            if batch.producer_id() < 0 {
                plain_batches += 1;
            } else {
                producer_batches.push(ProducerBatch::from_header(
                    &batch,
                    first,
                    Offset(next_relative - 1),
                ));
            }
        }
        let (appended, rolled) = {
            let mut st = self.lock();
            // Checked again under the lock: a close that ran since the first check sealed the log.
            if self.closed.load(Ordering::Acquire) {
                return Err(BrokerError::NotLeaderOrFollower);
            }
            if self.failed.load(Ordering::Acquire) {
                return Err(BrokerError::Storage(std::io::Error::other(
                    "the partition failed a sync and takes no writes",
                )));
            }
            if records.len() > st.max_message_bytes {
                return Err(BrokerError::MessageTooLarge {
                    size_bytes: records.len(),
                    limit_bytes: st.max_message_bytes,
                });
            }
            let segment_bytes = st.log.config().limits.segment_bytes;
            if records.len() > segment_bytes {
                // Kafka's rule too: a record set must fit in one segment.
                return Err(BrokerError::RecordListTooLarge {
                    size_bytes: records.len(),
                    limit_bytes: segment_bytes,
                });
            }
            let (staged, duplicate) = if producer_batches.is_empty() {
                (Staged::default(), None)
            } else {
                check_producers(&st, &producer_batches, plain_batches, now_ms)?
            };
            if let Some((base_offset, last_offset)) = duplicate {
                // A retry of batches already in the log: their original offsets, nothing written.
                return Ok(Appended {
                    base_offset,
                    last_offset,
                    log_start_offset: st.log.log_start_offset(),
                    flush_before_ack: st.policy.before_acks_all,
                });
            }
            let epoch = st.leader_epoch;
            let base_offset = st
                .log
                .append(records, &info, epoch, now_ms)
                .inspect_err(|e| self.fail_if_fatal("append", e))?;
            // A roll happened before these records: the state so far describes the log below it.
            let rolled = match st.log.take_rolled() {
                Some(at) => {
                    let snapshot = PendingSnapshot {
                        at,
                        text: st.producers.to_snapshot(),
                        log_start: st.log.log_start_offset(),
                    };
                    st.pending_snapshots.push(snapshot);
                    true
                }
                None => false,
            };
            if !staged.is_empty() {
                st.producers.commit(staged);
            }
            st.unflushed_records += info.record_count;
            if st.unflushed_records >= st.policy.flush_messages {
                self.request_flush();
            }
            let appended = Appended {
                base_offset,
                last_offset: Offset(base_offset.0 + info.record_count - 1),
                log_start_offset: st.log.log_start_offset(),
                flush_before_ack: st.policy.before_acks_all,
            };
            (appended, rolled)
        };
        if rolled {
            // The rolled segment is synced and trimmed, and its snapshot written, by the flush
            // thread, not under the lock or on this runtime thread.
            self.request_flush();
        }
        self.appended.notify_waiters();
        Ok(appended)
    }

    /// Queues this partition for a flush unless it is queued already.
    pub fn request_flush(&self) {
        if !self.flush_queued.swap(true, Ordering::AcqRel) {
            if let Some(me) = self.me.upgrade() {
                self.flushers.submit(self.flush_slot, me);
            }
        }
    }

    /// Checks a client's idea of the leader epoch against ours (`-1`: the client does not know).
    pub fn check_leader_epoch(&self, requested: i32) -> Result<(), BrokerError> {
        let current = self.leader_epoch().0;
        match requested {
            -1 => Ok(()),
            r if r < current => Err(BrokerError::FencedLeaderEpoch {
                requested: r,
                current,
            }),
            r if r > current => Err(BrokerError::UnknownLeaderEpoch {
                requested: r,
                current,
            }),
            _ => Ok(()),
        }
    }

    /// Resolves once every offset below `end` is on disk; asks the flusher to run.
    pub async fn wait_durable(&self, end: Offset) {
        let mut rx = self.durable.subscribe();
        if *rx.borrow() >= end {
            return;
        }
        self.request_flush();
        // The sender lives as long as `self`; an error cannot happen while we borrow it.
        let _ = rx.wait_for(|d| *d >= end).await;
    }

    /// A future that completes on the next append; create it before reading to not miss one.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    /// Reads from `offset` up to the high watermark, at most `max_bytes` (at least one batch).
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<FetchView, BrokerError> {
        let st = self.lock();
        let hw = st.log.log_end_offset();
        let read = st.log.read(offset, max_bytes, hw).map_err(|e| match e {
            LogReadError::OutOfRange(r) => BrokerError::OffsetOutOfRange {
                log_start_offset: r.log_start_offset,
                log_end_offset: r.log_end_offset,
            },
            LogReadError::Storage(e) => BrokerError::Storage(e),
        })?;
        Ok(FetchView {
            records: read.map(|r| r.records),
            high_watermark: hw,
            log_start_offset: st.log.log_start_offset(),
        })
    }

    /// ListOffsets: (offset, timestamp) for a target timestamp or the special values
    /// -2 (earliest), -1 (latest), -3 (max timestamp). A lookup by timestamp takes a candidate
    /// batch (a zero-copy slice) under the lock and walks its records outside it, bounded by
    /// `record_limits`: a compressed batch never decompresses under the lock. Fails only if a
    /// sealed segment's files cannot be opened again.
    pub fn list_offset(&self, timestamp: i64) -> Result<Option<(Offset, i64)>, BrokerError> {
        Ok(match timestamp {
            -2 => Some((self.lock().log.log_start_offset(), -1)),
            -1 => Some((self.lock().log.log_end_offset(), -1)),
            -3 => {
                let (batch, limit) = {
                    let st = self.lock();
                    (st.log.max_timestamp_batch()?, st.log.log_end_offset())
                };
                let Some(batch) = batch else {
                    return Ok(None);
                };
                let Ok(header) = BatchHeader::parse(&batch) else {
                    return Ok(None);
                };
                let (target, from) = (header.max_timestamp(), Offset(header.base_offset()));
                first_record_at_or_after(&batch, target, from, limit, &self.record_limits)
            }
            t if t >= 0 => {
                let mut from = Offset(0);
                // Each round moves `from` past one batch (a batch may claim a max timestamp its
                // records do not hold), so this ends at the end of the log.
                loop {
                    let (batch, limit) = {
                        let st = self.lock();
                        let limit = st.log.log_end_offset();
                        (st.log.batch_by_timestamp(t, from, limit)?, limit)
                    };
                    let Some(batch) = batch else {
                        return Ok(None);
                    };
                    let found =
                        first_record_at_or_after(&batch, t, from, limit, &self.record_limits);
                    if found.is_some() {
                        return Ok(found);
                    }
                    let Ok(header) = BatchHeader::parse(&batch) else {
                        return Ok(None);
                    };
                    let next = header.last_offset().saturating_add(1);
                    if next <= from.0 {
                        return Ok(None);
                    }
                    from = Offset(next);
                }
            }
            _ => None,
        })
    }

    pub fn apply_retention(&self, now_ms: i64) -> std::io::Result<usize> {
        let mut st = self.lock();
        if self.closed.load(Ordering::Acquire) || self.failed.load(Ordering::Acquire) {
            return Ok(0);
        }
        let deleted = st
            .log
            .apply_retention(now_ms)
            .inspect_err(|e| self.fail_if_fatal("retention", e))?;
        if st.log.has_pending_seal() {
            self.request_flush();
        }
        if let Some(at) = st.log.take_rolled() {
            let text = st.producers.to_snapshot();
            producer_state::write_snapshot(&self.dir, at, &text, st.log.log_start_offset())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        } else if deleted > 0 {
            producer_state::prune_snapshots(&self.dir, st.log.log_start_offset())?;
        }
        Ok(deleted)
    }

    /// Forgets producers that have not written for `expiration_ms` (`producer.id.expiration.ms`).
    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.lock().producers.remove_expired(now_ms, expiration_ms)
    }

    /// How producer state was rebuilt at open.
    pub fn producer_recovery(&self) -> ProducerRecovery {
        self.producer_recovery
    }

    /// Stops the flusher and closes the log cleanly (flushed, files trimmed).
    pub fn close(&self) -> std::io::Result<()> {
        self.closed.store(true, Ordering::Release);
        drop(self.stop_flush_timer());
        let mut st = self.lock();
        if self.failed.load(Ordering::Acquire) {
            // Syncing now could "succeed" over pages a failed sync lost: leave it to recovery.
            return Err(std::io::Error::other(
                "the partition failed a sync; not closed cleanly",
            ));
        }
        st.log
            .close()
            .inspect_err(|e| self.fail_if_fatal("close", e))?;
        let end = st.log.log_end_offset();
        // The next open starts from here and scans nothing. Without it (no space left for the
        // file) the next open rebuilds the producers from an older snapshot and the batches
        // after it: slower, as correct, so only a failed sync fails the close.
        let text = st.producers.to_snapshot();
        match producer_state::write_snapshot(&self.dir, end, &text, st.log.log_start_offset()) {
            Ok(()) => {}
            Err(BrokerError::Storage(e)) if !crate::storage::fatal::is_fatal(&e) => {
                tracing::warn!(topic = %self.topic, partition = %self.id, error = %e, "no producer snapshot at close; the next open rebuilds it from the log");
            }
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
        self.advance_durable(end);
        Ok(())
    }

    /// Stops the `flush.ms` task (if any) and hands it back, so a shutdown can wait for it.
    pub fn stop_flush_timer(&self) -> Option<tokio::task::JoinHandle<()>> {
        let timer = self
            .flush_timer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        timer.abort();
        Some(timer)
    }

    /// Everything below `end` is on disk: wakes the `acks=-1` waits it covers (never moves back).
    fn advance_durable(&self, end: Offset) {
        self.durable.send_if_modified(|d| {
            let moved = *d < end;
            *d = (*d).max(end);
            moved
        });
    }

    /// Flushes everything appended so far: the group commit of all waiting `acks=-1` produces.
    /// Runs on a flush thread; the partition lock is held only to snapshot and to record.
    fn flush_now(&self) {
        // Cleared first: an append from here on queues another flush.
        self.flush_queued.store(false, Ordering::Release);
        let Some(job) = self.flush_begin() else {
            return;
        };
        let timer = crate::metrics::FlushTimer::start();
        let ran = job.run();
        if let Some(timer) = timer {
            timer.finish();
        }
        if let Err(e) = ran {
            // After a failed msync the page cache may no longer match the disk; retrying could
            // acknowledge lost data. Kafka halts here too.
            self.fail(format!("flush: {e}"));
            return;
        }
        self.write_snapshots(&job.snapshots);
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        self.flush_finish(job);
    }

    /// Writes the producer-state snapshots taken at rolls. A snapshot only shortens recovery
    /// (the log holds every batch it describes), so a failed one is logged, unless fatal.
    fn write_snapshots(&self, snapshots: &[PendingSnapshot]) {
        for snap in snapshots {
            if let Err(e) =
                producer_state::write_snapshot(&self.dir, snap.at, &snap.text, snap.log_start)
            {
                if let BrokerError::Storage(io) = &e {
                    self.fail_if_fatal("producer-state snapshot", io);
                }
                tracing::warn!(topic = %self.topic, partition = %self.id, error = %e, "producer-state snapshot failed");
            }
        }
    }

    /// Reports a fatal error once this partition saw one (see `storage::fatal`).
    fn fail_if_fatal(&self, what: &str, e: &std::io::Error) {
        if fatal::is_fatal(e) {
            self.fail(format!("{what}: {e}"));
        }
    }

    /// This partition takes no more writes and marks nothing durable; the broker halts.
    fn fail(&self, what: String) {
        self.failed.store(true, Ordering::Release);
        self.flushers
            .fatal()
            .report(format!("partition {}-{}: {what}", self.topic, self.id));
    }

    /// The first step of a flush, under the lock: what to sync.
    fn flush_begin(&self) -> Option<FlushJob> {
        if self.closed.load(Ordering::Acquire) || self.failed.load(Ordering::Acquire) {
            return None;
        }
        let mut st = self.lock();
        Some(FlushJob {
            targets: st.log.unflushed(),
            end: st.log.log_end_offset(),
            snapshots: std::mem::take(&mut st.pending_snapshots),
        })
    }

    /// The last step of a flush whose syncs succeeded: records it and wakes the waits it covers.
    fn flush_finish(&self, job: FlushJob) {
        let end = job.end;
        let mut st = self.lock();
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = st.log.mark_flushed(end, &job.targets) {
            if fatal::is_fatal(&e) {
                self.fail(format!("sealing a segment: {e}"));
                return;
            }
            tracing::warn!(topic = %self.topic, partition = %self.id, error = %e, "sealing a segment failed");
        }
        if st.log.log_end_offset() == end {
            st.unflushed_records = 0;
        }
        drop(st);
        self.advance_durable(end);
    }
}

/// A flush taken under the partition lock and synced outside it.
struct FlushJob {
    targets: Vec<crate::storage::segment::FlushTarget>,
    end: Offset,
    /// Taken from the state with the targets: written before `end` counts as durable.
    snapshots: Vec<PendingSnapshot>,
}

impl FlushJob {
    /// The slow part (msync), outside the partition lock.
    fn run(&self) -> std::io::Result<()> {
        self.targets.iter().try_for_each(|t| t.flush())
    }
}

/// Checks the idempotent batches of a validated record set (offsets relative to the set) against
/// the producer state, in order, at the offsets they would get after the log end; the set's
/// `plain_batches` (no producer id) count as new. Returns the staged state changes, or, when every idempotent
/// batch is a retry, the offsets they were first written at.
fn check_producers(
    st: &State,
    producer_batches: &[ProducerBatch],
    plain_batches: usize,
    now_ms: i64,
) -> Result<(Staged, Option<(Offset, Offset)>), BrokerError> {
    let mut staged = Staged::default();
    let mut duplicate: Option<(Offset, Offset)> = None;
    let mut fresh = plain_batches;
    let base = st.log.log_end_offset().0;
    for relative in producer_batches {
        let b = ProducerBatch {
            first_offset: Offset(base + relative.first_offset.0),
            last_offset: Offset(base + relative.last_offset.0),
            ..*relative
        };
        match st.producers.stage(&mut staged, &b, now_ms)? {
            Check::Append => fresh += 1,
            Check::Duplicate(m) => {
                duplicate = Some(match duplicate {
                    None => (m.first_offset, m.last_offset),
                    Some((first, _)) => (first, m.last_offset),
                })
            }
        }
    }
    match duplicate {
        Some(_) if fresh > 0 => Err(BrokerError::OutOfOrderSequenceNumber(
            "a record set mixes retried and new batches".into(),
        )),
        d => Ok((staged, d)),
    }
}

/// Rebuilds producer state: the newest usable snapshot at or below the log end (snapshots above
/// it describe records a crash cut off, and are deleted), then every batch after it.
fn recover_producers(
    dir: &Path,
    log: &Log,
) -> Result<(ProducerStates, ProducerRecovery), BrokerError> {
    let end = log.log_end_offset();
    producer_state::remove_snapshots_above(dir, end)?;
    let (mut states, snapshot) = match producer_state::load_snapshot(dir, end)? {
        Some((at, states)) => (states, Some(at)),
        None => (ProducerStates::default(), None),
    };
    let mut offset = snapshot.unwrap_or(Offset(0)).max(log.log_start_offset());
    let mut batches_scanned = 0;
    while offset < end {
        let read = match log.read(offset, PRODUCER_SCAN_CHUNK_BYTES, end) {
            Ok(Some(read)) => read,
            Ok(None) | Err(LogReadError::OutOfRange(_)) => break,
            Err(LogReadError::Storage(e)) => return Err(e.into()),
        };
        for (_, batch) in BatchIter::new(&read.records) {
            if batch.last_offset() < offset.0 {
                continue; // the read starts at the batch holding `offset`
            }
            batches_scanned += 1;
            if batch.producer_id() >= 0 && !batch.is_control() {
                states.replay(
                    &ProducerBatch::from_header(
                        &batch,
                        Offset(batch.base_offset()),
                        Offset(batch.last_offset()),
                    ),
                    batch.max_timestamp(),
                );
            }
        }
        if read.next_offset <= offset {
            break;
        }
        offset = read.next_offset;
    }
    let recovery = ProducerRecovery {
        snapshot,
        batches_scanned,
    };
    if batches_scanned > 0 {
        // The next unclean open need not scan these again.
        producer_state::write_snapshot(dir, end, &states.to_snapshot(), log.log_start_offset())?;
    }
    Ok((states, recovery))
}

/// `flush.ms`: asks for a flush this often, until the partition is closed or dropped.
async fn flush_periodically(partition: Weak<Partition>, flush_ms: i64) {
    let period = Duration::from_millis(flush_ms.clamp(1, 86_400_000) as u64);
    loop {
        tokio::time::sleep(period).await;
        match partition.upgrade() {
            Some(p) if !p.closed.load(Ordering::Acquire) => p.request_flush(),
            _ => return,
        }
    }
}

#[cfg(test)]
mod power_cut;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod record_checks_tests;
