//! Committed offsets and group metadata, kept in memory and written to the internal topic
//! `__consumer_offsets` as Kafka does (record formats in [`super::records`]).
//!
//! A group lives in one partition of `__consumer_offsets` ([`OffsetStore::partition_for`], Kafka's
//! rule) and its in-memory state in the shard of that partition: one lock per shard, no lock
//! shared between shards, so commits of groups in different partitions never wait on each other.
//!
//! Invariants:
//! - Under a shard's lock, a write appends its batch to the partition and then updates the map:
//!   the map always equals "the log replayed in order", so a reload gives back the same state
//!   (last writer wins, a tombstone deletes).
//! - A write goes through the partition's [`Replica`] (leader only) and is acknowledged by the
//!   same [`Ack`] an `acks=-1` produce gets: on disk by the flush policy and held by every ISR
//!   member (many commits share one flush), or told COORDINATOR_NOT_AVAILABLE after
//!   `offsets.commit.timeout.ms`. Bypassing the replica would leave its state machine
//!   with a stale log end, and followers fetching past it would be refused. Between append and
//!   acknowledgement a commit is already visible to OffsetFetch; a leader lost in that window
//!   loses only commits that were never acknowledged.
//! - The store follows leadership ([`OffsetStore::follow_roles`]): a partition this broker comes
//!   to lead is replayed from its log into its shard before its slot is set, under the shard's
//!   lock (its requests wait for the load); one it stops leading has its shard emptied and its
//!   slot cleared under the same lock (its groups get NOT_COORDINATOR).
//! - One request's offsets for a group are one batch: they survive a crash together or not at all.
//!   A group delete too large for one batch is several, the group's own tombstone last, so a
//!   delete cut short leaves the group with its remaining offsets (and can be retried).
//! - A commit is written only if its partition still exists when the shard's lock is held, so
//!   no live offset of a deleted topic is left behind.
//! - A delete chooses its tombstones under the same lock as it appends them and updates the map:
//!   what it forgets in memory is exactly what it tombstones in the log, so a commit racing it is
//!   either deleted in both or kept in both (never dropped from memory yet replayed at a reload).
//! - Loading never panics on bad bytes: a corrupt batch or record is skipped with a warning.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_protocol::record_batch::{build_batch_nullable, records, BatchIter, NullableRecord};

use super::records::{
    decode_group_value, decode_key, decode_offset_value, encode_group_key, encode_group_value,
    encode_offset_key, encode_offset_value, RecordKey,
};
pub use super::records::{CommittedOffset, GroupMetadata};
use crate::error::BrokerError;
use crate::ids::Offset;
use crate::partition::Partition;
use crate::replica::{Ack, Replica};

/// The internal topic's name.
pub const TOPIC: &str = "__consumer_offsets";

/// How much of a partition one read of the loader takes.
const LOAD_READ_BYTES: usize = 16 << 20;
/// Corrupt-data warnings logged per partition while loading (the rest are only counted).
const LOAD_WARNINGS_MAX: usize = 10;

/// group -> topic -> partition -> committed offset.
type GroupOffsets = HashMap<String, BTreeMap<i32, CommittedOffset>>;

/// Records to append: key, and value (`None`: a tombstone).
type Records = Vec<(Vec<u8>, Option<Vec<u8>>)>;

#[derive(Default)]
struct Shard {
    offsets: HashMap<String, GroupOffsets>,
}

/// What loading found.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub partitions: usize,
    pub batches: u64,
    pub records: u64,
    /// Batches and records skipped as corrupt or unreadable.
    pub skipped: u64,
    pub groups: usize,
    pub offsets: usize,
    pub elapsed: Duration,
}

impl LoadReport {
    fn add(&mut self, loaded: &Loaded) {
        self.batches += loaded.batches;
        self.records += loaded.records;
        self.skipped += loaded.skipped;
        self.offsets += loaded
            .shard
            .offsets
            .values()
            .flat_map(|g| g.values())
            .map(BTreeMap::len)
            .sum::<usize>();
        let mut names: std::collections::HashSet<&String> = loaded.shard.offsets.keys().collect();
        names.extend(loaded.groups.keys());
        self.groups += names.len();
    }
}

/// What [`OffsetStore::follow_roles`] changed.
#[derive(Debug, Default)]
pub struct RoleChanges {
    /// What the partitions newly led held.
    pub report: LoadReport,
    /// Their groups' metadata (last record per group, tombstones applied).
    pub groups: Vec<(String, GroupMetadata)>,
    /// Partitions no longer led: their groups have another coordinator.
    pub unloaded: Vec<usize>,
}

/// One offset to commit.
#[derive(Debug, Clone)]
pub struct Commit {
    pub topic: String,
    pub partition: i32,
    pub value: CommittedOffset,
}

/// An appended write of the store, acknowledged once [`Durable::acknowledged`] returns.
/// Most writes touch one partition; deleting a topic's offsets touches every partition that
/// holds a group with offsets on it.
#[must_use = "a write is acknowledged only after it is durable"]
pub struct Durable(Vec<Wait>, Option<Duration>);

enum Wait {
    /// A write of the store: the `acks=-1` answer of its replica.
    Ack(Ack),
    /// Everything appended to a partition up to an offset, on disk here.
    Flushed(Arc<Partition>, Offset),
}

impl Durable {
    /// Nothing to wait for.
    pub fn none() -> Durable {
        Durable(Vec::new(), None)
    }

    fn acks(acks: Vec<Wait>, timeout: Duration) -> Durable {
        Durable(acks, Some(timeout))
    }

    /// Resolves once every write is acknowledged as an `acks=-1` produce is (group commit:
    /// every write appended before a flush starts is covered by it), or with the error a
    /// committer gets (Kafka's mapping: a lost leadership is NOT_COORDINATOR, a shrunk ISR
    /// COORDINATOR_NOT_AVAILABLE).
    pub async fn acknowledged(self) -> Result<(), BrokerError> {
        let Durable(waits, timeout) = self;
        let all = Self::all_acknowledged(waits);
        match timeout {
            None => all.await,
            // Dropping the waits on a timeout forgets them (the write may still be acknowledged).
            Some(t) => tokio::time::timeout(t, all).await.unwrap_or_else(|_| {
                Err(BrokerError::CoordinatorNotAvailable(format!(
                    "a write to {TOPIC} was not acknowledged within offsets.commit.timeout.ms ({} ms)",
                    t.as_millis()
                )))
            }),
        }
    }

    async fn all_acknowledged(waits: Vec<Wait>) -> Result<(), BrokerError> {
        let mut result = Ok(());
        for w in waits {
            match w {
                Wait::Ack(ack) => {
                    if let Err(e) = ack.wait().await {
                        result = result.and(Err(append_error(e)));
                    }
                }
                Wait::Flushed(partition, end) => partition.wait_durable(end).await,
            }
        }
        result
    }

    /// [`Durable::acknowledged`] for callers that answer the same either way (a failure is
    /// logged).
    pub async fn wait(self) {
        if let Err(e) = self.acknowledged().await {
            tracing::warn!(error = %e, "a write to {TOPIC} was not acknowledged");
        }
    }
}

pub struct OffsetStore {
    /// The replicas of `__consumer_offsets` partitions, by index, where this broker leads them;
    /// `None` where it does not (its groups have another coordinator: NOT_COORDINATOR). The
    /// length is fixed at creation; a slot changes only under its shard's lock.
    partitions: RwLock<Vec<Option<Arc<Replica>>>>,
    /// Partitions being loaded after this broker came to lead them: their groups get
    /// COORDINATOR_LOAD_IN_PROGRESS until the slot is set.
    loading: Vec<AtomicBool>,
    shards: Vec<Mutex<Shard>>,
    loaded_groups: Mutex<Vec<(String, GroupMetadata)>>,
    /// `offsets.commit.timeout.ms`.
    commit_timeout: Duration,
}

/// `offsets.commit.timeout.ms` until [`OffsetStore::with_commit_timeout`] says otherwise.
const COMMIT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Java's `String.hashCode` (over UTF-16 code units), as Kafka partitions group ids.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic under the lock leaves the map as the last completed write left it.
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a failed append means to a committer (Kafka's mapping in its group coordinator).
fn append_error(e: BrokerError) -> BrokerError {
    match e {
        BrokerError::MessageTooLarge { .. } | BrokerError::RecordListTooLarge { .. } => {
            BrokerError::InvalidCommitOffsetSize
        }
        BrokerError::NotLeaderOrFollower => BrokerError::NotCoordinator,
        e @ (BrokerError::NotCoordinator | BrokerError::CoordinatorLoadInProgress) => e,
        e => {
            tracing::warn!(error = %e, "write to {TOPIC} failed");
            BrokerError::CoordinatorNotAvailable(format!("write to {TOPIC} failed"))
        }
    }
}

impl OffsetStore {
    /// A store over the replicas of `__consumer_offsets` this broker leads (index = partition
    /// id); empty until [`OffsetStore::load`].
    pub fn new(partitions: Vec<Option<Arc<Replica>>>) -> OffsetStore {
        let shards = partitions.iter().map(|_| Mutex::default()).collect();
        OffsetStore {
            loading: partitions.iter().map(|_| AtomicBool::new(false)).collect(),
            partitions: RwLock::new(partitions),
            shards,
            loaded_groups: Mutex::default(),
            commit_timeout: COMMIT_TIMEOUT_DEFAULT,
        }
    }

    /// The store with writes answered COORDINATOR_NOT_AVAILABLE after `timeout` unacknowledged.
    pub fn with_commit_timeout(mut self, timeout: Duration) -> OffsetStore {
        self.commit_timeout = timeout;
        self
    }

    fn slots(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<Arc<Replica>>>> {
        // Slots are replaced whole; a panic cannot leave one half-written.
        self.partitions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn led_replicas(&self) -> Vec<(usize, Arc<Replica>)> {
        self.slots()
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, Arc::clone(r.as_ref()?))))
            .collect()
    }

    /// Waits for everything appended so far to every partition this broker leads (the tombstones
    /// of a deleted topic, whoever appended them) to be on disk here.
    pub fn everything_appended(&self) -> Durable {
        Durable(
            self.led_replicas()
                .into_iter()
                .map(|(_, r)| {
                    let p = Arc::clone(r.partition());
                    let end = p.log_end_offset();
                    p.request_flush();
                    Wait::Flushed(p, end)
                })
                .collect(),
            None,
        )
    }

    /// Brings the store in line with the replicas' roles: `leads[i]` is the replica of partition
    /// `i` if this broker leads it. A partition newly led (or led by a new replica) is loaded
    /// from its log; one no longer led is forgotten. Each change happens under its shard's
    /// lock, so no write of the shard runs meanwhile. Returns what the loads found and the
    /// group metadata they read (Kafka's coordinator loads groups the same way on election).
    pub fn follow_roles(&self, leads: &[Option<Arc<Replica>>]) -> RoleChanges {
        let started = Instant::now();
        let mut report = LoadReport::default();
        let mut groups = Vec::new();
        let mut unloaded = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let new = leads.get(i).cloned().flatten();
            let old = self.slots().get(i).cloned().flatten();
            let same = match (&old, &new) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            if new.is_some() {
                self.loading[i].store(true, Ordering::Release);
            }
            let mut shard = lock(shard);
            let loaded = match &new {
                Some(r) => match load_partition(r.partition()) {
                    Ok(loaded) => Some(loaded),
                    Err(e) => {
                        // Not led then: its groups get NOT_COORDINATOR rather than a partial map.
                        tracing::error!(partition = i, error = %e, "loading {TOPIC} failed");
                        None
                    }
                },
                None => None,
            };
            let new = new.filter(|_| loaded.is_some());
            match loaded {
                Some(loaded) => {
                    report.partitions += 1;
                    report.add(&loaded);
                    groups.extend(loaded.groups);
                    *shard = loaded.shard;
                    tracing::info!(partition = i, "now coordinating the groups of {TOPIC}");
                }
                None => {
                    *shard = Shard::default();
                    if old.is_some() {
                        unloaded.push(i);
                        tracing::info!(
                            partition = i,
                            "no longer coordinating the groups of {TOPIC}"
                        );
                    }
                }
            }
            if let Some(slot) = self
                .partitions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(i)
            {
                *slot = new;
            }
            self.loading[i].store(false, Ordering::Release);
        }
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        report.elapsed = started.elapsed();
        RoleChanges {
            report,
            groups,
            unloaded,
        }
    }

    /// Whether this broker coordinates `group_id` (leads its partition and has loaded it).
    pub fn coordinates(&self, group_id: &str) -> Result<(), BrokerError> {
        self.led(self.shard_of(group_id)).map(|_| ())
    }

    /// The replica of partition `i` in the store (unit tests driving roles).
    #[cfg(test)]
    pub(crate) fn replica_for_test(&self, i: usize) -> Option<Arc<Replica>> {
        self.slots().get(i).cloned().flatten()
    }

    /// The replica of partition `i`, if this broker leads it.
    fn led(&self, i: usize) -> Result<Arc<Replica>, BrokerError> {
        match self.slots().get(i) {
            Some(Some(p)) => Ok(Arc::clone(p)),
            Some(None) if self.loading[i].load(Ordering::Acquire) => {
                Err(BrokerError::CoordinatorLoadInProgress)
            }
            Some(None) => Err(BrokerError::NotCoordinator),
            None => Err(BrokerError::CoordinatorNotAvailable(format!(
                "{TOPIC} is not loaded"
            ))),
        }
    }

    /// Partition of `__consumer_offsets` that holds `group_id` (Java String.hashCode, abs, mod count).
    pub fn partition_for(&self, group_id: &str) -> i32 {
        let n = self.shards.len().max(1) as i32;
        // Kafka's Utils.abs: i32::MIN maps to 0.
        let h = java_hash(group_id);
        let h = if h == i32::MIN { 0 } else { h.abs() };
        h % n
    }

    fn shard_of(&self, group_id: &str) -> usize {
        self.partition_for(group_id) as usize
    }

    /// Appends one batch of `(key, value)` records to the group's partition and applies `update`
    /// to its shard under the shard's lock. Synchronous, so handlers append in request order
    /// (and many appends share one flush); the returned [`Durable`] waits for the ISR. The batch
    /// is built before the lock is taken: records that do not depend on the map (commits) need
    /// not make other writers of the shard wait.
    fn append(
        &self,
        group_id: &str,
        kvs: Records,
        update: impl FnOnce(&mut Shard),
    ) -> Result<Durable, BrokerError> {
        let batch = (!kvs.is_empty()).then(|| batch_of(&kvs));
        self.append_planned(
            self.shard_of(group_id),
            |_| (batch, ()),
            |shard, ()| update(shard),
        )
    }

    /// Appends to partition `i` what `plan` chooses from its shard, then applies `update`, all
    /// under the shard's lock: deletes choose their tombstones from the map this way, so no
    /// write can slip between the choice and the append. `plan` returns the batch (`None`:
    /// nothing to write) and what `update` needs.
    fn append_planned<P>(
        &self,
        i: usize,
        plan: impl FnOnce(&Shard) -> (Option<Bytes>, P),
        update: impl FnOnce(&mut Shard, P),
    ) -> Result<Durable, BrokerError> {
        let not_loaded = || BrokerError::CoordinatorNotAvailable(format!("{TOPIC} is not loaded"));
        let shard = self.shards.get(i).ok_or_else(not_loaded)?;
        let mut shard = lock(shard);
        let (batch, planned) = plan(&shard);
        let Some(batch) = batch else {
            update(&mut shard, planned);
            return Ok(Durable::none());
        };
        let replica = self.led(i)?;
        let now = crate::clock::now_ms();
        let (_, ack) = replica.append(&batch, -1, now).map_err(append_error)?;
        update(&mut shard, planned);
        Ok(Durable::acks(vec![Wait::Ack(ack)], self.commit_timeout))
    }

    /// Appends `commits` for `group_id` as one batch (see [`OffsetStore::commit`]); await the
    /// result to know they are on disk.
    pub fn append_commits(
        &self,
        group_id: &str,
        commits: Vec<Commit>,
    ) -> Result<Durable, BrokerError> {
        self.append_existing_commits(group_id, commits, |_, _| true)
            .map(|(durable, _)| durable)
    }

    /// [`OffsetStore::append_commits`] of the commits whose partition still `exists`, asked
    /// under the shard's lock: a topic deleted since the caller checked it has its offsets
    /// tombstoned by [`OffsetStore::append_topic_deletes`] under the same lock, so a commit
    /// either lands before that (and is tombstoned with the rest) or is refused here, never
    /// left as a live offset of a deleted topic. Returns the indexes (in `commits`) of the
    /// refused ones.
    pub fn append_existing_commits(
        &self,
        group_id: &str,
        commits: Vec<Commit>,
        exists: impl Fn(&str, i32) -> bool,
    ) -> Result<(Durable, Vec<usize>), BrokerError> {
        let kvs: Records = commits
            .iter()
            .map(|c| {
                (
                    encode_offset_key(group_id, &c.topic, c.partition),
                    Some(encode_offset_value(&c.value)),
                )
            })
            .collect();
        // Built before the lock: commits need not make the shard's other writers wait, and a
        // refused commit (a topic deleted meanwhile) is rare enough to build again for.
        let batch = (!kvs.is_empty()).then(|| batch_of(&kvs));
        let mut refused_out = Vec::new();
        let durable = self.append_planned(
            self.shard_of(group_id),
            |_| {
                let refused: Vec<usize> = commits
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !exists(&c.topic, c.partition))
                    .map(|(i, _)| i)
                    .collect();
                if refused.is_empty() {
                    return (batch, (refused, commits));
                }
                let kept: Records = kvs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !refused.contains(i))
                    .map(|(_, kv)| kv.clone())
                    .collect();
                (
                    (!kept.is_empty()).then(|| batch_of(&kept)),
                    (refused, commits),
                )
            },
            |shard, (refused, commits)| {
                let group = shard.offsets.entry(group_id.to_string()).or_default();
                for (i, c) in commits.into_iter().enumerate() {
                    if !refused.contains(&i) {
                        group
                            .entry(c.topic)
                            .or_default()
                            .insert(c.partition, c.value);
                    }
                }
                if group.is_empty() {
                    shard.offsets.remove(group_id);
                }
                refused_out = refused;
            },
        )?;
        Ok((durable, refused_out))
    }

    /// Durably commits `commits` for `group_id`, all in one batch.
    #[cfg(test)]
    pub async fn commit(&self, group_id: &str, commits: Vec<Commit>) -> Result<(), BrokerError> {
        self.append_commits(group_id, commits)?.acknowledged().await
    }

    /// The committed offset of one partition, if any.
    pub fn fetch(&self, group_id: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        lock(&self.shards[self.shard_of(group_id)])
            .offsets
            .get(group_id)?
            .get(topic)?
            .get(&partition)
            .cloned()
    }

    /// Committed offsets of a group: (topic, partition) -> (offset, leader_epoch, metadata, commit_ts).
    /// Sorted by topic, then partition.
    pub fn group_offsets(&self, group_id: &str) -> Vec<(String, i32, CommittedOffset)> {
        let shard = lock(&self.shards[self.shard_of(group_id)]);
        let Some(group) = shard.offsets.get(group_id) else {
            return Vec::new();
        };
        let mut out: Vec<_> = group
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(|(p, c)| (t.clone(), *p, c.clone())))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// Whether the group has any committed offset.
    pub fn has_offsets(&self, group_id: &str) -> bool {
        lock(&self.shards[self.shard_of(group_id)])
            .offsets
            .contains_key(group_id)
    }

    /// Groups that have committed offsets (for ListGroups/DescribeGroups of offset-only groups).
    pub fn groups_with_offsets(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .shards
            .iter()
            .flat_map(|s| lock(s).offsets.keys().cloned().collect::<Vec<_>>())
            .collect();
        out.sort();
        out
    }

    /// Appends tombstones for the given committed offsets; offsets that do not exist are
    /// ignored. Await the result to know they are on disk.
    pub fn append_deletes(
        &self,
        group_id: &str,
        targets: &[(String, i32)],
    ) -> Result<Durable, BrokerError> {
        // The tombstones are chosen under the lock of their append, like every delete's.
        self.append_planned(
            self.shard_of(group_id),
            |shard| {
                let group = shard.offsets.get(group_id);
                let existing: Vec<(String, i32)> = targets
                    .iter()
                    .filter(|(t, p)| {
                        group
                            .and_then(|g| g.get(t))
                            .is_some_and(|ps| ps.contains_key(p))
                    })
                    .cloned()
                    .collect();
                let kvs: Records = existing
                    .iter()
                    .map(|(t, p)| (encode_offset_key(group_id, t, *p), None))
                    .collect();
                ((!kvs.is_empty()).then(|| batch_of(&kvs)), existing)
            },
            |shard, existing| remove_offsets(shard, group_id, &existing),
        )
    }

    /// Durably deletes the given committed offsets (tombstones); offsets that do not exist are
    /// ignored.
    #[cfg(test)]
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        targets: &[(String, i32)],
    ) -> Result<(), BrokerError> {
        self.append_deletes(group_id, targets)?.acknowledged().await
    }

    /// Durably writes the group's metadata record (returns once flushed, like acks=-1).
    pub async fn store_group(
        &self,
        group_id: &str,
        metadata: &GroupMetadata,
    ) -> Result<(), BrokerError> {
        let kvs = vec![(
            encode_group_key(group_id),
            Some(encode_group_value(metadata)),
        )];
        self.append(group_id, kvs, |_| {})?.acknowledged().await
    }

    /// Appends tombstones for the group and all its offsets, and forgets them. The offsets are
    /// listed under the lock of the append: a commit that lands just before is tombstoned with
    /// the rest, one that lands after stays (see the invariants). A group with more offsets than
    /// one batch of the partition holds (`max.message.bytes`, `segment.bytes`) is deleted in as
    /// many batches as needed, all under the one lock, the group's own tombstone last: a delete
    /// cut short by a failed write leaves the group with its remaining offsets (the map
    /// forgets exactly what was written), and DeleteGroups can be retried. Await the result to
    /// know the tombstones are on disk.
    pub fn append_group_delete(&self, group_id: &str) -> Result<Durable, BrokerError> {
        let not_loaded = || BrokerError::CoordinatorNotAvailable(format!("{TOPIC} is not loaded"));
        let i = self.shard_of(group_id);
        let shard = self.shards.get(i).ok_or_else(not_loaded)?;
        let mut shard = lock(shard);
        let replica = self.led(i)?;
        let targets: Vec<(String, i32)> = shard
            .offsets
            .get(group_id)
            .into_iter()
            .flat_map(|g| g.iter())
            .flat_map(|(t, ps)| ps.keys().map(|p| (t.clone(), *p)))
            .collect();
        let mut kvs: Records = targets
            .iter()
            .map(|(t, p)| (encode_offset_key(group_id, t, *p), None))
            .collect();
        kvs.push((encode_group_key(group_id), None));
        let now = crate::clock::now_ms();
        // One batch unless the partition says it is too large; then batches of its limit.
        let batches = match replica.append(&batch_of(&kvs), -1, now) {
            Ok((_, ack)) => {
                shard.offsets.remove(group_id);
                return Ok(Durable::acks(vec![Wait::Ack(ack)], self.commit_timeout));
            }
            Err(
                BrokerError::MessageTooLarge { limit_bytes, .. }
                | BrokerError::RecordListTooLarge { limit_bytes, .. },
            ) => chunks_within(&kvs, limit_bytes),
            Err(e) => return Err(append_error(e)),
        };
        let mut acks = Vec::new();
        let mut written = 0;
        let mut result = Ok(());
        for chunk in batches {
            let Some(batch) = chunk.as_ref().map(|c| batch_of(&kvs[c.clone()])) else {
                result = Err(BrokerError::CoordinatorNotAvailable(format!(
                    "a tombstone of group {group_id} does not fit in a batch of {TOPIC}"
                )));
                break;
            };
            match replica.append(&batch, -1, now) {
                Ok((_, ack)) => {
                    acks.push(Wait::Ack(ack));
                    // The last range holds the group's tombstone: `targets` ends before it.
                    let done = chunk.map_or(written, |c| c.end.min(targets.len()));
                    remove_offsets(&mut shard, group_id, &targets[written..done]);
                    written = done;
                }
                Err(e) => {
                    result = Err(append_error(e));
                    break;
                }
            }
        }
        if result.is_ok() {
            shard.offsets.remove(group_id);
        }
        drop(shard);
        result.map(|()| Durable::acks(acks, self.commit_timeout))
    }

    /// Durably writes tombstones for the group and all its offsets, and forgets them.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), BrokerError> {
        self.append_group_delete(group_id)?.acknowledged().await
    }

    /// Appends tombstones for every group's committed offsets on `topic` (the topic was
    /// deleted: Kafka's GroupMetadataManager drops the offsets of deleted partitions too, so a
    /// topic created again under the name starts with none). One batch per partition of
    /// `__consumer_offsets` that holds such offsets, chosen under its lock as any delete.
    /// Returns how many offsets were deleted; await the [`Durable`] to know they are on disk.
    pub fn append_topic_deletes(&self, topic: &str) -> Result<(usize, Durable), BrokerError> {
        let mut deleted = 0;
        let mut durable = Vec::new();
        for i in 0..self.shards.len() {
            let written = self.append_planned(
                i,
                |shard| {
                    let targets: Vec<(String, i32)> = shard
                        .offsets
                        .iter()
                        .flat_map(|(g, ts)| {
                            ts.get(topic)
                                .into_iter()
                                .flat_map(|ps| ps.keys().map(|p| (g.clone(), *p)))
                        })
                        .collect();
                    let kvs: Records = targets
                        .iter()
                        .map(|(g, p)| (encode_offset_key(g, topic, *p), None))
                        .collect();
                    ((!kvs.is_empty()).then(|| batch_of(&kvs)), targets)
                },
                |shard, targets| {
                    deleted += targets.len();
                    for (g, p) in targets {
                        remove_offsets(shard, &g, &[(topic.to_string(), p)]);
                    }
                },
            )?;
            durable.extend(written.0);
        }
        Ok((deleted, Durable::acks(durable, self.commit_timeout)))
    }

    /// Group metadata loaded at start (last record per group, tombstones applied), handed out once.
    pub fn take_loaded_groups(&self) -> Vec<(String, GroupMetadata)> {
        std::mem::take(&mut *self.loaded_groups.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads every partition from its log start to its end and rebuilds the maps: last record
    /// wins, tombstones delete. Partitions are read in parallel, one thread per core.
    pub fn load(&self) -> Result<LoadReport, BrokerError> {
        let started = Instant::now();
        let led = self.led_replicas();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(led.len().max(1));
        let results: Vec<Result<(usize, Loaded), BrokerError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let led = &led;
                    s.spawn(move || {
                        led.iter()
                            .skip(t)
                            .step_by(threads)
                            .map(|(i, r)| load_partition(r.partition()).map(|l| (*i, l)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(BrokerError::Storage(std::io::Error::other(
                            "a loader thread panicked",
                        )))]
                    })
                })
                .collect()
        });
        let mut report = LoadReport {
            partitions: led.len(),
            ..LoadReport::default()
        };
        let mut groups = Vec::new();
        for r in results {
            let (i, loaded) = r?;
            report.add(&loaded);
            let mut shard = lock(&self.shards[i]);
            groups.extend(loaded.groups);
            *shard = loaded.shard;
        }
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        *self.loaded_groups.lock().unwrap_or_else(|p| p.into_inner()) = groups;
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

/// A store over `__consumer_offsets` in `dir` (`offsets.topic.num.partitions` partitions, laid
/// out and configured as the broker lays them out, without a node), not yet loaded. Reopening the
/// same `dir` without a clean close is what a restart after kill -9 finds (unit tests).
#[cfg(test)]
pub(crate) fn open_for_test(
    dir: &std::path::Path,
    config: &crate::config::BrokerConfig,
) -> OffsetStore {
    use crate::config::{self, TopicOverrides};
    use crate::ids::PartitionId;
    use crate::partition::{flusher::Flushers, PartitionSettings};

    let overrides = TopicOverrides::parse([
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
        ("segment.bytes", config.get("offsets.topic.segment.bytes")),
    ])
    .unwrap();
    let settings = PartitionSettings {
        log: config::log_config(config, &overrides),
        flush: config::flush_policy(config, &overrides),
        max_message_bytes: config::max_message_bytes(config, &overrides),
    };
    let flushers = Flushers::start(1).unwrap();
    let partitions = (0..config.i64("offsets.topic.num.partitions") as i32)
        .map(|p| {
            let dir = dir.join(format!("{TOPIC}-{p}"));
            let topic = Arc::from(TOPIC);
            Partition::open(
                &dir,
                topic,
                PartitionId(p),
                settings,
                None,
                false,
                &flushers,
            )
            .unwrap()
            .0
        })
        .map(|p| Some(crate::replica::sole_leader_for_test(p)))
        .collect();
    OffsetStore::new(partitions)
}

/// Bytes one record of `kvs` adds to a batch at most, beyond its key and value: attributes,
/// timestamp and offset deltas, and the varint lengths.
const RECORD_OVERHEAD_BYTES: usize = 32;
/// Bytes of a batch's header (RecordBatch v2).
const BATCH_HEADER_BYTES: usize = 61;

/// Consecutive ranges of `kvs` whose batches fit in `limit_bytes` each; `None` for a record that
/// alone does not fit.
fn chunks_within(kvs: &Records, limit_bytes: usize) -> Vec<Option<std::ops::Range<usize>>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut size = BATCH_HEADER_BYTES;
    for (i, (k, v)) in kvs.iter().enumerate() {
        let bytes = k.len() + v.as_ref().map_or(0, Vec::len) + RECORD_OVERHEAD_BYTES;
        if BATCH_HEADER_BYTES + bytes > limit_bytes {
            if start < i {
                chunks.push(Some(start..i));
            }
            chunks.push(None);
            return chunks;
        }
        if size + bytes > limit_bytes {
            chunks.push(Some(start..i));
            start = i;
            size = BATCH_HEADER_BYTES;
        }
        size += bytes;
    }
    if start < kvs.len() {
        chunks.push(Some(start..kvs.len()));
    }
    chunks
}

/// One batch of the given records, stamped now.
fn batch_of(kvs: &[(Vec<u8>, Option<Vec<u8>>)]) -> Bytes {
    let refs: Vec<NullableRecord<'_>> = kvs
        .iter()
        .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
        .collect();
    build_batch_nullable(0, crate::clock::now_ms(), &refs)
}

fn remove_offsets(shard: &mut Shard, group_id: &str, targets: &[(String, i32)]) {
    let Some(group) = shard.offsets.get_mut(group_id) else {
        return;
    };
    for (t, p) in targets {
        if let Some(ps) = group.get_mut(t) {
            ps.remove(p);
            if ps.is_empty() {
                group.remove(t);
            }
        }
    }
    if group.is_empty() {
        shard.offsets.remove(group_id);
    }
}

#[derive(Default)]
struct Loaded {
    shard: Shard,
    groups: HashMap<String, GroupMetadata>,
    batches: u64,
    records: u64,
    skipped: u64,
}

impl Loaded {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        match decode_key(key).map_err(|e| format!("key: {e}"))? {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => match value {
                None => {
                    remove_offsets(&mut self.shard, group, &[(topic.to_string(), partition)]);
                }
                Some(v) => {
                    let value = decode_offset_value(v).map_err(|e| format!("offset value: {e}"))?;
                    // Look up by reference: most records update a key seen before, and
                    // allocating the names again for each would dominate the load time.
                    if !self.shard.offsets.contains_key(group) {
                        self.shard.offsets.insert(group.to_string(), HashMap::new());
                    }
                    let Some(g) = self.shard.offsets.get_mut(group) else {
                        return Ok(());
                    };
                    if !g.contains_key(topic) {
                        g.insert(topic.to_string(), BTreeMap::new());
                    }
                    if let Some(t) = g.get_mut(topic) {
                        t.insert(partition, value);
                    }
                }
            },
            RecordKey::Group { group } => match value {
                None => {
                    self.groups.remove(group);
                }
                Some(v) => {
                    let value = decode_group_value(v).map_err(|e| format!("group value: {e}"))?;
                    self.groups.insert(group.to_string(), value);
                }
            },
            RecordKey::Other { .. } => {}
        }
        Ok(())
    }
}

/// Replays one partition into a fresh shard.
fn load_partition(partition: &Partition) -> Result<Loaded, BrokerError> {
    let mut loaded = Loaded::default();
    let mut warnings = 0usize;
    let mut warn = |what: String| {
        warnings += 1;
        if warnings <= LOAD_WARNINGS_MAX {
            tracing::warn!(partition = %partition.id(), "{TOPIC}: skipping {what}");
        }
    };
    let end = partition.high_watermark();
    let mut offset = partition.log_start_offset();
    while offset < end {
        let view = partition.read(offset, LOAD_READ_BYTES)?;
        let Some(bytes): Option<Bytes> = view.records else {
            break;
        };
        let mut next = offset;
        for (_, batch) in BatchIter::new(&bytes) {
            if batch.last_offset() < offset.0 {
                continue; // a read may start at the batch holding `offset`
            }
            next = Offset(batch.last_offset().saturating_add(1));
            loaded.batches += 1;
            if let Err(e) = batch.validate() {
                loaded.skipped += 1;
                warn(format!("batch at offset {}: {e}", batch.base_offset()));
                continue;
            }
            let recs = match records(batch.bytes()) {
                Ok(r) => r,
                Err(e) => {
                    loaded.skipped += 1;
                    warn(format!("batch at offset {}: {e}", batch.base_offset()));
                    continue;
                }
            };
            for r in recs {
                loaded.records += 1;
                let Some(key) = r.key else {
                    loaded.skipped += 1;
                    warn(format!(
                        "record at offset {}: null key",
                        batch.base_offset() + i64::from(r.offset_delta)
                    ));
                    continue;
                };
                if let Err(e) = loaded.apply(key, r.value) {
                    loaded.skipped += 1;
                    warn(format!(
                        "record at offset {}: {e}",
                        batch.base_offset() + i64::from(r.offset_delta)
                    ));
                }
            }
        }
        if next <= offset {
            // Nothing readable past `offset` (should not happen below the high watermark).
            warn(format!("unreadable log from offset {offset}"));
            break;
        }
        offset = next;
    }
    if warnings > LOAD_WARNINGS_MAX {
        tracing::warn!(partition = %partition.id(), warnings, "{TOPIC}: more corrupt data skipped");
    }
    Ok(loaded)
}

#[cfg(test)]
pub(crate) mod tests;
