//! All partitions this broker hosts, their directories (`<data>/<topic>-<partition>`), the
//! recovery-point checkpoint and the clean-shutdown marker. Which partitions it hosts, and which
//! of them it leads, is the metadata image's to say: `open` opens what the image at start names,
//! `apply` follows each later image's local changes.
//!
//! Invariants:
//! - a partition directory exists only for a partition the image says this broker hosts; leftovers
//!   of a deletion (or of a topic removed while the broker was down) are removed at start (a data
//!   directory that lost its metadata never gets here: `MetadataStore::open_existing` refuses it,
//!   so nothing is deleted on a guess);
//! - requests reach only partitions this broker leads (`HostedTopic::get`); a follower replica is
//!   open (its directory made) but serves nothing until replication lands;
//! - the recovery checkpoint never names an offset above what is flushed; the high-watermark
//!   checkpoint (`replication-offset-checkpoint`) is written with it, and read back at start;
//! - the `clean-shutdown` marker exists only between a clean close and the next start; without it
//!   every partition recovers from its checkpointed recovery point.
//!
//! The map from topic to partitions is read-locked for a lookup per request (not per record) and
//! write-locked only when topics are created, grown or deleted.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use super::flusher::Flushers;
use super::{Checkpointed, Partition, PartitionSettings};
use crate::config::{self, BrokerConfig, LogSettings, TopicOverrides};
use crate::controller::image::{LocalChanges, MetadataImage};
use crate::error::BrokerError;
use crate::ids::{BrokerId, Offset, PartitionId};
use crate::storage::{checkpoint, OpenSegments};

const RECOVERY_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
/// Each partition's stored high watermark (Kafka's name), written with the recovery points.
const HW_CHECKPOINT: &str = "replication-offset-checkpoint";
const CLEAN_SHUTDOWN: &str = "clean-shutdown";
const DELETED_SUFFIX: &str = ".deleted";

/// One hosted replica: the partition, the topic id it belongs to, and whether this broker leads
/// it. (Names are reused: a topic deleted and created again is another topic, with another id.)
#[derive(Clone)]
struct Hosted {
    partition: Arc<Partition>,
    topic_id: Uuid,
    leader: bool,
}

/// The partitions of one topic this broker hosts, by partition number (`None`: not hosted here).
#[derive(Clone, Default)]
pub struct HostedTopic {
    slots: Vec<Option<Hosted>>,
}

impl HostedTopic {
    /// Partition `i` if this broker leads it (what requests may use).
    pub fn get(&self, i: usize) -> Option<&Arc<Partition>> {
        match self.slots.get(i) {
            Some(Some(h)) if h.leader => Some(&h.partition),
            _ => None,
        }
    }

    /// Every hosted partition, led or followed.
    fn all(&self) -> impl Iterator<Item = &Arc<Partition>> {
        self.slots.iter().flatten().map(|h| &h.partition)
    }

    fn set(&mut self, i: usize, hosted: Option<Hosted>) {
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        self.slots[i] = hosted;
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
    }
}

pub type TopicPartitions = Arc<HostedTopic>;

/// What start-up found.
#[derive(Debug, Default)]
pub struct StartupReport {
    pub clean_shutdown: bool,
    pub partitions: usize,
    pub tails_cut: usize,
    pub segments_scanned: usize,
}

pub struct PartitionManager {
    data_dir: PathBuf,
    /// For each topic's settings, which its overrides resolve against by key name.
    config: Arc<BrokerConfig>,
    log: LogSettings,
    flushers: Arc<Flushers>,
    topics: RwLock<HashMap<String, TopicPartitions>>,
    /// Partitions opened by [`PartitionManager::prepare`] for a change not yet committed, with
    /// their topic id: `apply` serves these instead of opening them again. Held while a discarded
    /// one is removed, so `apply` never opens a directory that is being deleted.
    prepared: std::sync::Mutex<PreparedMap>,
}

/// Prepared partitions by (topic name, partition), with the topic id they were made for.
type PreparedMap = HashMap<(String, i32), (Uuid, Arc<Partition>)>;

/// Partitions a proposer opened before proposing the change that names them; dropped without
/// [`Prepared::keep`] (the change failed), they are closed and their directories removed.
pub struct Prepared<'a> {
    manager: &'a PartitionManager,
    keys: Vec<(String, i32)>,
}

impl Prepared<'_> {
    /// The change was committed: `apply` serves them.
    pub fn keep(mut self) {
        self.keys.clear();
    }
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        // Under the lock throughout: `apply` must not open one of these directories anew while
        // it is being removed.
        let mut prepared = self.manager.lock_prepared();
        let discarded: Vec<Arc<Partition>> = self
            .keys
            .iter()
            .filter_map(|k| prepared.remove(k).map(|(_, p)| p))
            .collect();
        for partition in discarded {
            if let Err(e) = partition.close() {
                tracing::warn!(topic = partition.topic(), partition = %partition.id(), error = %e, "closing a discarded partition");
            }
            if let Err(e) = std::fs::remove_dir_all(partition.dir()) {
                tracing::warn!(dir = %partition.dir().display(), error = %e, "removing a discarded partition");
            }
        }
    }
}

/// The settings a partition of a topic with `overrides` runs with.
pub fn settings_for(config: &BrokerConfig, overrides: &TopicOverrides) -> PartitionSettings {
    PartitionSettings {
        log: config::log_config(config, overrides),
        flush: config::flush_policy(config, overrides),
        max_message_bytes: config::max_message_bytes(config, overrides),
    }
}

fn partition_dir(data_dir: &Path, topic: &str, p: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{p}"))
}

/// The file in a partition directory naming the topic id it belongs to (as Kafka's
/// `partition.metadata`): data left by an earlier topic of the same name is told apart.
const TOPIC_ID_FILE: &str = "partition.metadata";
const TOPIC_ID_KEY: &str = "topic_id ";

fn storage_error(e: checkpoint::CheckpointError) -> BrokerError {
    BrokerError::Storage(std::io::Error::other(e))
}

/// The topic id a partition directory was made for (`None`: not recorded, from before ids were).
fn read_topic_id(dir: &Path) -> Result<Option<Uuid>, BrokerError> {
    let path = dir.join(TOPIC_ID_FILE);
    let Some(body) = checkpoint::read(&path).map_err(storage_error)? else {
        return Ok(None);
    };
    body.trim()
        .strip_prefix(TOPIC_ID_KEY)
        .and_then(|id| Uuid::parse_str(id).ok())
        .map(Some)
        .ok_or_else(|| {
            BrokerError::Storage(std::io::Error::other(format!(
                "{}: unreadable topic id {body:?}",
                path.display()
            )))
        })
}

/// The one topic that can never be deleted, so never shares its name with an earlier topic: its
/// (many) partitions need no topic id file. (Named here as `group::offsets::TOPIC`, which this
/// layer does not import.)
pub(crate) const UNDELETABLE_TOPIC: &str = "__consumer_offsets";

fn write_topic_id(dir: &Path, id: Uuid) -> Result<(), BrokerError> {
    let undeletable = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('-'))
        .is_some_and(|(topic, _)| topic == UNDELETABLE_TOPIC);
    if undeletable || read_topic_id(dir)? == Some(id) {
        return Ok(());
    }
    checkpoint::write(&dir.join(TOPIC_ID_FILE), &format!("{TOPIC_ID_KEY}{id}\n"))
        .map_err(storage_error)
}

impl PartitionManager {
    /// Opens every partition `image` says broker `me` hosts, recovering where the last run did
    /// not shut down cleanly, and removes the directories of partitions it no longer hosts.
    pub fn open(
        data_dir: &Path,
        config: Arc<BrokerConfig>,
        log: LogSettings,
        image: &MetadataImage,
        me: BrokerId,
    ) -> Result<(PartitionManager, StartupReport), BrokerError> {
        let marker = data_dir.join(CLEAN_SHUTDOWN);
        let clean_shutdown = marker.exists();
        let recovery_points = read_offsets_checkpoint(data_dir, RECOVERY_CHECKPOINT)?;
        let high_watermarks = read_offsets_checkpoint(data_dir, HW_CHECKPOINT)?;
        let mut report = StartupReport {
            clean_shutdown,
            ..Default::default()
        };
        let flushers =
            Flushers::start_with(log.flush_threads, OpenSegments::new(log.segments_open_max))?;
        let mut topics = HashMap::new();
        for topic in image.topics() {
            let overrides = topic.overrides();
            let mut hosted = HostedTopic::default();
            for (i, p) in topic.partitions.iter().enumerate() {
                if !p.hosted_by(me) {
                    continue;
                }
                let dir = partition_dir(data_dir, &topic.name, i as i32);
                // Left by a topic of the same name deleted while this broker was down: its data
                // is not this topic's.
                if dir.exists() && read_topic_id(&dir)?.is_some_and(|id| id != topic.id) {
                    tracing::info!(dir = %dir.display(), "removing the data of an earlier topic of the same name");
                    std::fs::remove_dir_all(&dir)?;
                }
                // A partition first named while this broker was down has no directory yet.
                let rp = if dir.exists() {
                    recovery_points
                        .get(&(topic.name.clone(), i as i32))
                        .copied()
                } else {
                    Some(Offset(0))
                };
                // No checkpointed high watermark: nothing is known committed past the log start
                // (a follower must stay free to truncate). One replica reads to its log end
                // whatever this says.
                let checkpointed = Checkpointed {
                    recovery_point: rp,
                    high_watermark: Some(
                        high_watermarks
                            .get(&(topic.name.clone(), i as i32))
                            .copied()
                            .unwrap_or(Offset(0)),
                    ),
                };
                let (partition, r) = Partition::open_checkpointed(
                    &dir,
                    Arc::from(topic.name.as_str()),
                    PartitionId(i as i32),
                    settings_for(&config, &overrides),
                    checkpointed,
                    clean_shutdown,
                    &flushers,
                )?;
                // Directories from before topic ids were written get theirs now.
                write_topic_id(&dir, topic.id)?;
                report.partitions += 1;
                report.tails_cut += r.tails_cut;
                report.segments_scanned += r.segments_scanned;
                hosted.set(
                    i,
                    Some(Hosted {
                        partition,
                        topic_id: topic.id,
                        leader: p.leader == Some(me),
                    }),
                );
            }
            if !hosted.slots.is_empty() {
                topics.insert(topic.name.clone(), Arc::new(hosted));
            }
        }
        remove_orphans(data_dir, &topics)?;
        // From here on a crash must be detected as unclean.
        if clean_shutdown {
            std::fs::remove_file(&marker)?;
        }
        let manager = PartitionManager {
            data_dir: data_dir.to_path_buf(),
            config,
            log,
            flushers,
            topics: RwLock::new(topics),
            prepared: Default::default(),
        };
        manager.write_recovery_checkpoint()?;
        Ok((manager, report))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, TopicPartitions>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, TopicPartitions>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_prepared(&self) -> std::sync::MutexGuard<'_, PreparedMap> {
        self.prepared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens (creating their directories) partitions `numbers` of topic `name` (id `topic_id`)
    /// before the change that names them is proposed, so that a change this broker cannot serve
    /// is refused before it is committed (no disk, no file descriptors, a file in the way). All or
    /// nothing: if one fails, the ones opened are closed and removed. Refused (TOPIC_ALREADY_EXISTS,
    /// clients retry) while an earlier topic of the name still has that partition open here (its
    /// deletion not yet applied) or another creation prepared it.
    pub fn prepare(
        &self,
        name: &str,
        topic_id: Uuid,
        overrides: &TopicOverrides,
        numbers: &[i32],
    ) -> Result<Prepared<'_>, BrokerError> {
        let mut prepared = Prepared {
            manager: self,
            keys: Vec::with_capacity(numbers.len()),
        };
        let still_open = self.topic(name);
        for &p in numbers {
            // Held from the check to the insert: two creations of one name cannot both pass.
            let mut held = self.lock_prepared();
            let busy = still_open
                .as_ref()
                .is_some_and(|t| matches!(t.slots.get(p as usize), Some(Some(_))))
                || held.contains_key(&(name.to_string(), p));
            if busy {
                return Err(BrokerError::TopicAlreadyExists(format!(
                    "{name} (partition {p} of an earlier or concurrent topic of that name is still \
                     open on this broker; retry)"
                )));
            }
            let dir = partition_dir(&self.data_dir, name, p);
            let opened = Partition::open(
                &dir,
                Arc::from(name),
                PartitionId(p),
                settings_for(&self.config, overrides),
                Some(Offset(0)),
                false,
                &self.flushers,
            )
            .and_then(|(partition, _)| {
                write_topic_id(&dir, topic_id)?;
                Ok(partition)
            });
            match opened {
                Ok(partition) => {
                    held.insert((name.to_string(), p), (topic_id, partition));
                    prepared.keys.push((name.to_string(), p));
                }
                Err(e) => {
                    // This one may have made its directory before failing; `prepared` removes
                    // the others as it drops (after `held` is released).
                    let _ = std::fs::remove_dir_all(&dir);
                    drop(held);
                    return Err(e);
                }
            }
        }
        Ok(prepared)
    }

    /// The partitions of `name` this broker hosts (requests use the ones it leads).
    pub fn topic(&self, name: &str) -> Option<TopicPartitions> {
        self.read().get(name).cloned()
    }

    /// Partition `p` of `topic`, if this broker leads it.
    pub fn partition(&self, topic: &str, p: i32) -> Option<Arc<Partition>> {
        let partitions = self.topic(topic)?;
        usize::try_from(p)
            .ok()
            .and_then(|i| partitions.get(i).cloned())
    }

    /// Partition `p` of `topic` and its topic id, if this broker hosts it (leads or follows).
    pub fn hosted(&self, topic: &str, p: i32) -> Option<(Arc<Partition>, Uuid)> {
        let partitions = self.topic(topic)?;
        let i = usize::try_from(p).ok()?;
        let h = partitions.slots.get(i)?.as_ref()?;
        Some((Arc::clone(&h.partition), h.topic_id))
    }

    /// Follows one image's local changes: closes and removes the partitions this broker no
    /// longer hosts (and any still held for an earlier topic of the same name), then opens
    /// (creating their directories) the ones it hosts from now on and updates which it leads.
    /// Removals come first, so a topic deleted and created again under the same name gets fresh
    /// partitions. Every change is tried; the first failure is the answer (a partition that could
    /// not be opened is not served, and its directory is removed).
    pub fn apply(&self, changes: &LocalChanges, image: &MetadataImage) -> Result<(), BrokerError> {
        let mut first_error = None;
        let hosts = changes
            .leads
            .iter()
            .map(|l| (l, true))
            .chain(changes.follows.iter().map(|l| (l, false)));
        // 1. What goes: removed partitions, and slots held by another topic id than the new one.
        let mut removed = Vec::new();
        {
            let mut topics = self.write();
            let mut take = |topics: &mut HashMap<String, TopicPartitions>, name: &str, i: usize| {
                let Some(topic) = topics.get(name) else {
                    return;
                };
                let mut hosted = topic.as_ref().clone();
                if let Some(Some(h)) = hosted.slots.get(i) {
                    removed.push(Arc::clone(&h.partition));
                }
                hosted.set(i, None);
                if hosted.slots.is_empty() {
                    topics.remove(name);
                } else {
                    topics.insert(name.to_string(), Arc::new(hosted));
                }
            };
            for (_, name, p) in &changes.removes {
                take(&mut topics, name, p.0 as usize);
            }
            for (local, _) in hosts.clone() {
                let i = local.partition.0 as usize;
                let other_topic = topics
                    .get(&local.topic_name)
                    .and_then(|t| t.slots.get(i).cloned().flatten())
                    .is_some_and(|h| h.topic_id != local.topic_id);
                if other_topic {
                    take(&mut topics, &local.topic_name, i);
                }
            }
        }
        // Out of the lock: closing waits on syncs. In-flight reads keep their slices (the
        // mappings outlive the files).
        let results = self.on_close_threads(&removed, |partition| {
            if let Err(e) = partition.close() {
                tracing::warn!(topic = partition.topic(), partition = %partition.id(), error = %e, "closing a removed partition");
            }
            let dir = partition.dir();
            let doomed = dir.with_file_name(format!(
                "{}{DELETED_SUFFIX}",
                dir.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
            ));
            std::fs::rename(dir, &doomed)?;
            std::fs::remove_dir_all(&doomed)
        });
        for r in results {
            // A restart removes what a failed removal left, as an orphan or a `.deleted` directory.
            if let Err(e) = r {
                first_error.get_or_insert(BrokerError::Storage(e));
            }
        }
        // 2. What comes: new replicas opened (or taken from `prepare`), roles updated.
        let mut topics = self.write();
        let mut prepared = self.lock_prepared();
        for (local, leader) in hosts {
            let i = local.partition.0 as usize;
            let mut hosted = topics
                .get(&local.topic_name)
                .map(|t| t.as_ref().clone())
                .unwrap_or_default();
            let existing = hosted.slots.get(i).cloned().flatten().map(|h| h.partition);
            let mine = prepared
                .remove(&(local.topic_name.clone(), i as i32))
                .and_then(|(id, p)| (id == local.topic_id).then_some(p));
            let partition = match existing.or(mine) {
                Some(p) => p,
                None => {
                    let overrides = image
                        .topic(local.topic_id)
                        .map(|t| t.overrides())
                        .unwrap_or_default();
                    let dir = partition_dir(&self.data_dir, &local.topic_name, i as i32);
                    let opened = Partition::open(
                        &dir,
                        Arc::from(local.topic_name.as_str()),
                        local.partition,
                        settings_for(&self.config, &overrides),
                        Some(Offset(0)),
                        false,
                        &self.flushers,
                    )
                    .and_then(|(partition, _)| {
                        write_topic_id(&dir, local.topic_id)?;
                        Ok(partition)
                    });
                    match opened {
                        Ok(partition) => partition,
                        Err(e) => {
                            // It may have made its directory before failing.
                            let _ = std::fs::remove_dir_all(&dir);
                            tracing::error!(topic = %local.topic_name, partition = i, error = %e, "opening a new partition failed");
                            first_error.get_or_insert(e);
                            continue;
                        }
                    }
                }
            };
            hosted.set(
                i,
                Some(Hosted {
                    partition,
                    topic_id: local.topic_id,
                    leader,
                }),
            );
            topics.insert(local.topic_name.clone(), Arc::new(hosted));
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Partitions hosted, led or followed.
    pub fn count(&self) -> usize {
        self.read().values().map(|t| t.all().count()).sum()
    }

    /// The broker's fatal signal: set by the first failed sync of any partition (`main` halts).
    pub fn fatal(&self) -> &crate::storage::fatal::Fatal {
        self.flushers.fatal()
    }

    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.read()
            .values()
            .flat_map(|t| t.all().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Writes every partition's recovery point (what is flushed) atomically, then every
    /// partition's stored high watermark (`replication-offset-checkpoint`).
    pub fn write_recovery_checkpoint(&self) -> Result<(), BrokerError> {
        let partitions = self.all_partitions();
        let mut text = String::new();
        for p in &partitions {
            let _ = writeln!(text, "{} {} {}", p.topic(), p.id().0, p.recovery_point().0);
        }
        self.write_checkpoint(RECOVERY_CHECKPOINT, &text)?;
        let mut text = String::new();
        for p in &partitions {
            let hw = p.stored_high_watermark();
            let _ = writeln!(text, "{} {} {}", p.topic(), p.id().0, hw.0);
        }
        self.write_checkpoint(HW_CHECKPOINT, &text)
    }

    fn write_checkpoint(&self, name: &str, text: &str) -> Result<(), BrokerError> {
        checkpoint::write(&self.data_dir.join(name), text).map_err(|e| {
            if e.is_fatal() {
                self.fatal().report(format!("{name}: {e}"));
            }
            BrokerError::Storage(std::io::Error::other(e))
        })
    }

    /// Applies retention to every partition; returns the number of segments deleted.
    pub fn apply_retention(&self, now_ms: i64) -> usize {
        let mut deleted = 0;
        for p in self.all_partitions() {
            match p.apply_retention(now_ms) {
                Ok(n) => deleted += n,
                Err(e) => {
                    tracing::error!(topic = p.topic(), partition = %p.id(), error = %e, "retention failed")
                }
            }
        }
        deleted
    }

    /// Forgets producers idle for `expiration_ms` in every partition; returns how many.
    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.all_partitions()
            .iter()
            .map(|p| p.remove_expired_producers(now_ms, expiration_ms))
            .sum()
    }

    /// Runs `work` (a close, and what follows it) for each of `partitions` on up to
    /// `num.recovery.threads.per.data.dir` threads: each close waits on its own syncs, so
    /// thousands of them one after another take many seconds. One result per partition, in order.
    fn on_close_threads(
        &self,
        partitions: &[Arc<Partition>],
        work: impl Fn(&Arc<Partition>) -> std::io::Result<()> + Sync,
    ) -> Vec<std::io::Result<()>> {
        let threads = self.log.recovery_threads.clamp(1, partitions.len().max(1));
        if threads == 1 {
            return partitions.iter().map(&work).collect();
        }
        // Threads take the next partition from a shared counter, so a slow close holds up
        // only its own thread.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut results: Vec<Option<std::io::Result<()>>> =
            partitions.iter().map(|_| None).collect();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (next, work) = (&next, &work);
                    scope.spawn(move || {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(p) = partitions.get(i) else { break };
                            done.push((i, work(p)));
                        }
                        done
                    })
                })
                .collect();
            for worker in workers {
                // A close that panicked leaves its partition without a result (an error below).
                if let Ok(done) = worker.join() {
                    for (i, r) in done {
                        results[i] = Some(r);
                    }
                }
            }
        });
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(std::io::Error::other("closing the partition panicked")))
            })
            .collect()
    }

    /// Clean shutdown: close every partition (flushed, trimmed), checkpoint, leave the marker.
    pub fn shutdown(&self) -> Result<(), BrokerError> {
        for closed in self.on_close_threads(&self.all_partitions(), |p| p.close()) {
            closed?;
        }
        self.write_recovery_checkpoint()?;
        checkpoint::write(&self.data_dir.join(CLEAN_SHUTDOWN), "")
            .map_err(|e| BrokerError::Storage(std::io::Error::other(e)))
    }
}

/// Reads a "topic partition offset" checkpoint (`name` in `data_dir`).
fn read_offsets_checkpoint(
    data_dir: &Path,
    name: &str,
) -> Result<HashMap<(String, i32), Offset>, BrokerError> {
    let path = data_dir.join(name);
    let text = match checkpoint::read(&path) {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => {
            // Losing the recovery points only costs time: every segment gets scanned. Losing
            // the high watermarks starts each at its log start until its leader raises it.
            tracing::warn!(error = %e, "{name} unreadable; ignoring it");
            String::new()
        }
    };
    let mut points = HashMap::new();
    for line in text.lines() {
        let mut f = line.rsplitn(3, ' ');
        let (Some(offset), Some(p), Some(topic)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if let (Ok(offset), Ok(p)) = (offset.parse(), p.parse()) {
            points.insert((topic.to_string(), p), Offset(offset));
        }
    }
    Ok(points)
}

/// Removes partition directories of partitions this broker does not host, and half-deleted ones.
fn remove_orphans(
    data_dir: &Path,
    hosted: &HashMap<String, TopicPartitions>,
) -> Result<(), BrokerError> {
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        let orphan = name.ends_with(DELETED_SUFFIX)
            || match name.rsplit_once('-') {
                Some((topic, p)) => match p.parse::<usize>() {
                    Ok(p) => !hosted
                        .get(topic)
                        .is_some_and(|t| matches!(t.slots.get(p), Some(Some(_)))),
                    Err(_) => false,
                },
                None => false,
            };
        if orphan {
            tracing::info!(dir = %entry.path().display(), "removing data of a partition this broker no longer hosts");
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}
