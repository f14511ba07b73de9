//! A partition replica: its log plus the state replication needs (high watermark, leader epoch,
//! leader-epoch cache), the wake-ups of waiting fetches, and its flusher.
//!
//! Concurrency by ownership: all state changes happen under this partition's own lock, held only
//! for the in-memory work of an append or a read (validation and flushing happen outside it).
//! There is no lock shared between partitions on the produce or fetch path.
//!
//! Invariants:
//! - `log_start_offset <= high_watermark <= log_end_offset`; a partition not `replicated` (one
//!   replica: the ISR is this broker) reads to its log end and keeps its stored high watermark
//!   there on every append; a replicated one moves it only through `advance_high_watermark`, and
//!   never down (`truncate_fully_and_start_at` starts it afresh); it is checkpointed, and taken
//!   back at open clamped to the log;
//! - every batch a producer appends carries the current leader epoch; a follower appends its
//!   leader's batches byte for byte (`append_as_follower`), contiguous with its log end, never
//!   with an epoch older than its epoch cache's latest;
//! - a truncation never cuts below the high watermark (readers other than followers never see
//!   bytes that a truncation can rewrite); it cuts the log, the epoch cache and the producer
//!   state together, under the lock, with no flush in flight (`flush_running`);
//! - `durable` (the flushed offset) only grows, except that a truncation lowers it to the cut,
//!   and never passes the log end offset;
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
    validate_batches_with, BatchError, BatchHeader, BatchIter, BatchSpan, RecordLimits,
    RecordSetInfo,
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
    /// The log end right after the append (a retried duplicate writes nothing: then it is past
    /// `last_offset`).
    pub log_end_offset: Offset,
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
    pub log_end_offset: Offset,
}

/// One fetch of this partition, answered under one lock ([`Partition::read_for_fetch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRead {
    /// The fetcher's idea of the leader epoch (`-1`: it does not know), checked as
    /// [`Partition::check_leader_epoch`] does.
    pub current_leader_epoch: i32,
    pub offset: Offset,
    pub max_bytes: usize,
    pub upper: ReadUpper,
}

/// How far a fetch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadUpper {
    /// A consumer: records below the high watermark only.
    HighWatermark,
    /// A follower: up to the log end.
    LogEnd,
}

/// Where a follower's append of its leader's batches landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerAppended {
    pub first_offset: Offset,
    pub last_offset: Offset,
    pub log_end_offset: Offset,
    /// Whether the policy wants these records flushed before the follower reports them to its
    /// leader (the fetcher waits `wait_durable(log_end_offset)` before fetching past them).
    pub flush_before_ack: bool,
}

/// What the broker's checkpoints say of a partition when it opens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpointed {
    /// The flushed offset (`recovery-point-offset-checkpoint`); `None` recovers every segment.
    pub recovery_point: Option<Offset>,
    /// The high watermark (`replication-offset-checkpoint`); `None` takes the log end.
    pub high_watermark: Option<Offset>,
}

struct State {
    log: Log,
    /// The stored high watermark (see the module invariants; [`State::high_watermark`] is what
    /// readers see).
    high_watermark: Offset,
    /// Whether other replicas exist: the high watermark then moves only by
    /// `advance_high_watermark` (set by the replica layer).
    replicated: bool,
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

impl State {
    /// The high watermark readers see: the log end while not replicated (one replica).
    fn high_watermark(&self) -> Offset {
        if self.replicated {
            self.high_watermark
        } else {
            self.log.log_end_offset()
        }
    }
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
    /// Held through each flush (taken before `state`), and by a truncation: a flush's targets,
    /// taken under the lock and synced outside it, never outlive the segments they name.
    flush_running: Mutex<()>,
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

/// One batch of a follower's append, read before the lock.
struct FollowerBatch {
    span: BatchSpan,
    base: Offset,
    last: Offset,
    epoch: LeaderEpoch,
    max_timestamp: i64,
    producer: Option<ProducerBatch>,
}

/// Wall-clock now, for `segment.ms` (a follower's append has no request time).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
    /// `flush.ms`, a timer on the current runtime asks for a flush that often. The high
    /// watermark starts at the log end (see [`Partition::open_checkpointed`]).
    pub fn open(
        dir: &Path,
        topic: Arc<str>,
        id: PartitionId,
        settings: PartitionSettings,
        recovery_point: Option<Offset>,
        clean_shutdown: bool,
        flushers: &Arc<Flushers>,
    ) -> Result<(Arc<Partition>, RecoveryReport), BrokerError> {
        let checkpointed = Checkpointed {
            recovery_point,
            high_watermark: None,
        };
        Partition::open_checkpointed(
            dir,
            topic,
            id,
            settings,
            checkpointed,
            clean_shutdown,
            flushers,
        )
    }

    /// [`Partition::open`] with what the broker's checkpoints hold for it: the recovery point,
    /// and the high watermark (clamped to the recovered log; the log end if none).
    pub fn open_checkpointed(
        dir: &Path,
        topic: Arc<str>,
        id: PartitionId,
        settings: PartitionSettings,
        checkpointed: Checkpointed,
        clean_shutdown: bool,
        flushers: &Arc<Flushers>,
    ) -> Result<(Arc<Partition>, RecoveryReport), BrokerError> {
        let recovery_point = checkpointed.recovery_point;
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
        let log_end = log.log_end_offset();
        let high_watermark = checkpointed
            .high_watermark
            .map_or(log_end, |hw| hw.min(log_end).max(log.log_start_offset()));
        let durable = watch::Sender::new(log.recovery_point());
        let metrics = crate::metrics::TopicMetrics::new(&topic);
        let partition = Arc::new_cyclic(|me| Partition {
            topic,
            id,
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                log,
                high_watermark,
                replicated: false,
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
            flush_running: Mutex::new(()),
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

    /// The high watermark consumers read below (the log end while not replicated).
    pub fn high_watermark(&self) -> Offset {
        self.lock().high_watermark()
    }

    /// The stored high watermark, what the checkpoint keeps: for a partition not (yet)
    /// replicated, the one it opened with until its first append.
    pub fn stored_high_watermark(&self) -> Offset {
        self.lock().high_watermark
    }

    pub fn log_end_offset(&self) -> Offset {
        self.lock().log.log_end_offset()
    }

    /// Whether other replicas exist (the replica layer says): when on, the high watermark
    /// moves only through [`Partition::advance_high_watermark`]; when off, it is the log end.
    pub fn set_replicated(&self, on: bool) {
        let mut st = self.lock();
        st.replicated = on;
        if !on {
            st.high_watermark = st.log.log_end_offset();
        }
    }

    /// Raises the high watermark to `hw`, clamped to the log end; it never moves down. Wakes
    /// the fetches waiting for records when it moves; returns whether it did.
    pub fn advance_high_watermark(&self, hw: Offset) -> bool {
        let moved = {
            let mut st = self.lock();
            let target = hw.min(st.log.log_end_offset());
            let moved = target > st.high_watermark;
            if moved {
                st.high_watermark = target;
            }
            moved
        };
        if moved {
            self.appended.notify_waiters();
        }
        moved
    }

    /// The latest leader epoch in the epoch cache (`None` if it is empty).
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.lock().epoch_cache.latest()
    }

    /// This replica leads from `epoch` on: new appends carry it, and the epoch cache records
    /// that it starts at the log end. An epoch older than the cache's latest is refused.
    pub fn become_leader(&self, epoch: LeaderEpoch) -> Result<(), BrokerError> {
        let mut st = self.lock();
        if let Some(latest) = st.epoch_cache.latest().filter(|l| epoch < *l) {
            return Err(BrokerError::ReplicaLog(format!(
                "leader epoch {} is older than the log's latest {}",
                epoch.0, latest.0
            )));
        }
        let end = st.log.log_end_offset();
        st.epoch_cache.assign(epoch, end)?;
        st.leader_epoch = epoch;
        Ok(())
    }

    /// This replica follows a leader of `epoch`: fetches are checked against it. The epoch
    /// cache follows the leader's batches (`append_as_follower`), not this.
    pub fn become_follower(&self, epoch: LeaderEpoch) {
        self.lock().leader_epoch = epoch;
    }

    pub fn log_start_offset(&self) -> Offset {
        self.lock().log.log_start_offset()
    }

    /// The bytes of the log's batches (not the preallocated segment files' lengths).
    pub fn size_bytes(&self) -> u64 {
        self.lock().log.size_bytes()
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
        let info = self.validate(records)?;
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
                    log_end_offset: st.log.log_end_offset(),
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
            if !st.replicated {
                st.high_watermark = st.log.log_end_offset();
            }
            st.unflushed_records += info.record_count;
            if st.unflushed_records >= st.policy.flush_messages {
                self.request_flush();
            }
            let appended = Appended {
                base_offset,
                last_offset: Offset(base_offset.0 + info.record_count - 1),
                log_start_offset: st.log.log_start_offset(),
                log_end_offset: st.log.log_end_offset(),
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

    /// CRC and structure of every batch, outside the lock.
    fn validate(&self, records: &[u8]) -> Result<RecordSetInfo, BrokerError> {
        validate_batches_with(records, &self.record_limits).map_err(|e| match e {
            e if e.is_corruption() => BrokerError::CorruptMessage(e.to_string()),
            BatchError::Empty => BrokerError::InvalidRecord("empty record set".into()),
            e => BrokerError::InvalidRecord(e.to_string()),
        })
    }

    /// Appends the leader's batches exactly as they are (offsets, leader epochs, timestamps):
    /// validated as [`Partition::append`] does, they must start at the log end and be
    /// contiguous, and carry no leader epoch older than the epoch cache's latest; else nothing
    /// is written. Newer epochs enter the epoch cache; producer state is replayed from the
    /// batches without sequence checks (the leader made them), so this replica checks
    /// sequences at once if it becomes leader. A record set larger than a segment is written
    /// in pieces (a failure part-way leaves the pieces before it: a contiguous log).
    pub fn append_as_follower(&self, records: &Bytes) -> Result<FollowerAppended, BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        let info = self.validate(records)?;
        let mut batches = Vec::with_capacity(info.batches.len());
        for (span, (_, batch)) in info.batches.iter().zip(BatchIter::new(records)) {
            let (base, last) = (Offset(batch.base_offset()), Offset(batch.last_offset()));
            if let Some(prev) = batches.last().map(|b: &FollowerBatch| b.last) {
                if base.0 != prev.0.saturating_add(1) {
                    return Err(BrokerError::ReplicaLog(format!(
                        "batch at offset {base} does not follow offset {prev}"
                    )));
                }
            }
            if batch.last_offset_delta() < 0 || batch.partition_leader_epoch() < 0 {
                return Err(BrokerError::ReplicaLog(format!(
                    "batch at offset {base} has last offset delta {} and leader epoch {}",
                    batch.last_offset_delta(),
                    batch.partition_leader_epoch()
                )));
            }
            let producer = (batch.producer_id() >= 0 && !batch.is_control())
                .then(|| ProducerBatch::from_header(&batch, base, last));
            batches.push(FollowerBatch {
                span: *span,
                base,
                last,
                epoch: LeaderEpoch(batch.partition_leader_epoch()),
                max_timestamp: batch.max_timestamp(),
                producer,
            });
        }
        let (Some(first), Some(last)) = (batches.first(), batches.last()) else {
            return Err(BrokerError::InvalidRecord("empty record set".into()));
        };
        let (first_offset, last_offset) = (first.base, last.last);
        let mut rolled = false;
        let appended = {
            let mut st = self.lock();
            if self.closed.load(Ordering::Acquire) {
                return Err(BrokerError::NotLeaderOrFollower);
            }
            if self.failed.load(Ordering::Acquire) {
                return Err(BrokerError::Storage(std::io::Error::other(
                    "the partition failed a sync and takes no writes",
                )));
            }
            let end = st.log.log_end_offset();
            if first_offset != end {
                return Err(BrokerError::ReplicaLog(format!(
                    "the leader's batches start at offset {first_offset}, the log ends at {end}"
                )));
            }
            let mut latest = st.epoch_cache.latest();
            for b in &batches {
                if let Some(l) = latest.filter(|l| b.epoch < *l) {
                    return Err(BrokerError::ReplicaLog(format!(
                        "batch at offset {} has leader epoch {}, older than {}",
                        b.base, b.epoch.0, l.0
                    )));
                }
                latest = Some(b.epoch);
            }
            let segment_bytes = st.log.config().limits.segment_bytes;
            if let Some(b) = batches.iter().find(|b| b.span.size_bytes > segment_bytes) {
                return Err(BrokerError::RecordListTooLarge {
                    size_bytes: b.span.size_bytes,
                    limit_bytes: segment_bytes,
                });
            }
            let mut rest = &batches[..];
            while !rest.is_empty() {
                // As many batches as fit one segment (at least one: checked above).
                let mut bytes = 0;
                let n = rest
                    .iter()
                    .take_while(|b| {
                        bytes += b.span.size_bytes;
                        bytes <= segment_bytes
                    })
                    .count()
                    .max(1);
                let (piece, after) = rest.split_at(n);
                rest = after;
                self.append_piece(&mut st, records, piece)?;
                if let Some(at) = st.log.take_rolled() {
                    let snapshot = PendingSnapshot {
                        at,
                        text: st.producers.to_snapshot(),
                        log_start: st.log.log_start_offset(),
                    };
                    st.pending_snapshots.push(snapshot);
                    rolled = true;
                }
                for b in piece {
                    if let Some(pb) = &b.producer {
                        st.producers.replay(pb, b.max_timestamp);
                    }
                }
            }
            if !st.replicated {
                st.high_watermark = st.log.log_end_offset();
            }
            st.unflushed_records += info.record_count;
            if st.unflushed_records >= st.policy.flush_messages {
                self.request_flush();
            }
            FollowerAppended {
                first_offset,
                last_offset,
                log_end_offset: st.log.log_end_offset(),
                flush_before_ack: st.policy.before_acks_all,
            }
        };
        if rolled {
            self.request_flush();
        }
        self.appended.notify_waiters();
        Ok(appended)
    }

    /// Writes `piece` (consecutive batches of `records`, within one segment's size) verbatim,
    /// recording first the leader epochs it starts.
    fn append_piece(
        &self,
        st: &mut State,
        records: &Bytes,
        piece: &[FollowerBatch],
    ) -> Result<(), BrokerError> {
        let (Some(first), Some(last)) = (piece.first(), piece.last()) else {
            return Ok(());
        };
        for b in piece {
            if st.epoch_cache.latest().is_none_or(|l| b.epoch > l) {
                st.epoch_cache.assign(b.epoch, b.base)?;
            }
        }
        let start = first.span.position;
        let end = last.span.position + last.span.size_bytes;
        let info = RecordSetInfo {
            batch_count: piece.len(),
            record_count: piece.iter().map(|b| i64::from(b.span.record_count)).sum(),
            max_timestamp: piece.iter().map(|b| b.max_timestamp).max().unwrap_or(-1),
            batches: piece
                .iter()
                .map(|b| BatchSpan {
                    position: b.span.position - start,
                    ..b.span
                })
                .collect(),
        };
        st.log
            .append_verbatim(&records[start..end], &info, last.last, now_ms())
            .inspect_err(|e| self.fail_if_fatal("follower append", e))?;
        Ok(())
    }

    /// Removes every record at or above `offset` (a no-op at or past the log end): the log
    /// (`offset` must start a batch), the epoch cache, the producer state (rebuilt from the
    /// newest snapshot at or below `offset`), the recovery point and `durable`. Refused, with
    /// nothing changed, below the high watermark. Everything is synced before it returns. A
    /// storage failure part-way fails the partition (recovery at the next start).
    pub fn truncate_to(&self, offset: Offset) -> Result<(), BrokerError> {
        let _no_flush = self.flush_running.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.lock();
        self.check_writable()?;
        if offset >= st.log.log_end_offset() {
            return Ok(());
        }
        if offset < st.high_watermark {
            return Err(BrokerError::ReplicaLog(format!(
                "truncation to {offset} below the high watermark {}",
                st.high_watermark
            )));
        }
        match st.log.truncate_to(offset) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Err(BrokerError::ReplicaLog(e.to_string()))
            }
            Err(e) => {
                self.fail(format!("truncation to {offset}: {e}"));
                return Err(e.into());
            }
        }
        self.after_truncation(&mut st, offset)?;
        let (producers, _) = recover_producers(&self.dir, &st.log)?;
        st.producers = producers;
        Ok(())
    }

    /// Deletes the whole log and starts an empty one at `offset` (a new replica whose leader's
    /// log starts past this one's end): log start, log end and high watermark are `offset`, the
    /// epoch cache and producer state empty.
    pub fn truncate_fully_and_start_at(&self, offset: Offset) -> Result<(), BrokerError> {
        let _no_flush = self.flush_running.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.lock();
        self.check_writable()?;
        if let Err(e) = st.log.truncate_fully_and_start_at(offset) {
            self.fail(format!("starting the log afresh at {offset}: {e}"));
            return Err(e.into());
        }
        st.epoch_cache.clear()?;
        producer_state::remove_snapshots_above(&self.dir, Offset(i64::MIN))?;
        st.producers = ProducerStates::default();
        // Snapshots not yet written describe the old log: none of it is left.
        st.pending_snapshots.clear();
        st.high_watermark = offset;
        self.after_truncation(&mut st, offset)?;
        // The new log is empty: everything below its start counts as on disk.
        self.durable.send_modify(|d| *d = offset);
        Ok(())
    }

    /// What every truncation to `offset` shares: the epoch cache, pending snapshots, counters
    /// and `durable` cut there.
    fn after_truncation(&self, st: &mut State, offset: Offset) -> Result<(), BrokerError> {
        st.epoch_cache.truncate_at(offset)?;
        st.pending_snapshots.retain(|s| s.at <= offset);
        st.unflushed_records = 0;
        st.high_watermark = st.high_watermark.min(offset);
        // Lowering wakes no one: waits are for `durable` to reach an offset.
        self.durable.send_if_modified(|d| {
            *d = (*d).min(offset);
            false
        });
        Ok(())
    }

    /// Refuses writes to a closed or failed partition (checked under the lock).
    fn check_writable(&self) -> Result<(), BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(BrokerError::Storage(std::io::Error::other(
                "the partition failed a sync and takes no writes",
            )));
        }
        Ok(())
    }

    /// Queues this partition for a flush unless it is queued already.
    pub fn request_flush(&self) {
        if !self.flush_queued.swap(true, Ordering::AcqRel) {
            if let Some(me) = self.me.upgrade() {
                self.flushers.submit(self.flush_slot, me);
            }
        }
    }

    /// Whether `acks=-1` answers (and a follower's reported progress) wait for the flush
    /// (`log.flush.acks.all.enable`).
    pub fn flush_before_acks(&self) -> bool {
        self.lock().policy.before_acks_all
    }

    /// Checks a client's idea of the leader epoch against ours (`-1`: the client does not know).
    pub fn check_leader_epoch(&self, requested: i32) -> Result<(), BrokerError> {
        check_epoch(self.leader_epoch(), requested)
    }

    /// A fetch's view under one lock: the leader-epoch check, the records (below the high
    /// watermark for a consumer, to the log end for a follower), the high watermark, log start
    /// and log end. OFFSET_OUT_OF_RANGE only outside `[log start, log end]`: a consumer's offset
    /// between the high watermark and the log end reads no records.
    pub fn read_for_fetch(&self, req: FetchRead) -> Result<FetchView, BrokerError> {
        let st = self.lock();
        check_epoch(st.leader_epoch, req.current_leader_epoch)?;
        let hw = st.high_watermark();
        let end = st.log.log_end_offset();
        let upper = match req.upper {
            ReadUpper::HighWatermark => hw,
            ReadUpper::LogEnd => end,
        };
        let read = st
            .log
            .read(req.offset, req.max_bytes, upper)
            .map_err(|e| match e {
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
            log_end_offset: end,
        })
    }
}

/// The leader-epoch rule of fetches and ListOffsets: `requested` against `current`.
fn check_epoch(current: LeaderEpoch, requested: i32) -> Result<(), BrokerError> {
    let current = current.0;
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

impl Partition {
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

    /// Reads from `offset` up to the high watermark, at most `max_bytes` (at least one batch):
    /// [`Partition::read_for_fetch`] for a consumer that does not name the leader epoch.
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<FetchView, BrokerError> {
        self.read_for_fetch(FetchRead {
            current_leader_epoch: -1,
            offset,
            max_bytes,
            upper: ReadUpper::HighWatermark,
        })
    }

    /// ListOffsets: (offset, timestamp) for a target timestamp or the special values
    /// -2 (earliest), -1 (latest: the high watermark), -3 (max timestamp), all below the high
    /// watermark (what consumers may read). A lookup by timestamp takes a candidate
    /// batch (a zero-copy slice) under the lock and walks its records outside it, bounded by
    /// `record_limits`: a compressed batch never decompresses under the lock. Fails only if a
    /// sealed segment's files cannot be opened again.
    pub fn list_offset(&self, timestamp: i64) -> Result<Option<(Offset, i64)>, BrokerError> {
        Ok(match timestamp {
            -2 => Some((self.lock().log.log_start_offset(), -1)),
            -1 => Some((self.lock().high_watermark(), -1)),
            -3 => {
                let (batch, limit) = {
                    let st = self.lock();
                    (st.log.max_timestamp_batch()?, st.high_watermark())
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
                        let limit = st.high_watermark();
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
        // Nothing at or above the high watermark goes: a follower may still need it, and a
        // new leader's log must hold what was acknowledged.
        let limit = if st.replicated {
            st.high_watermark
        } else {
            st.log.log_end_offset()
        };
        let deleted = st
            .log
            .apply_retention_below(now_ms, limit)
            .inspect_err(|e| self.fail_if_fatal("retention", e))?;
        st.high_watermark = st.high_watermark.max(st.log.log_start_offset());
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
        let _running = self.flush_running.lock().unwrap_or_else(|p| p.into_inner());
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

#[cfg(test)]
mod replica_log_tests;
