//! All partitions this broker hosts, their directories (`<data>/<topic>-<partition>`), the
//! recovery-point checkpoint and the clean-shutdown marker.
//!
//! Invariants:
//! - a partition directory exists only for a topic in the metadata; leftovers of an interrupted
//!   deletion are removed at start (a data directory that lost its metadata never gets here:
//!   `MetadataStore::open` refuses it, so nothing is deleted on a guess);
//! - the recovery checkpoint never names an offset above what is flushed;
//! - the `clean-shutdown` marker exists only between a clean close and the next start; without it
//!   every partition recovers from its checkpointed recovery point.
//!
//! The map from topic to partitions is read-locked for a lookup per request (not per record) and
//! write-locked only when topics are created, grown or deleted.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::flusher::Flushers;
use super::{Partition, PartitionSettings};
use crate::config::{self, BrokerConfig, TopicOverrides};
use crate::controller::{MetadataStore, TopicMeta};
use crate::error::BrokerError;
use crate::ids::{Offset, PartitionId};
use crate::storage::{checkpoint, OpenSegments};

const RECOVERY_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
const CLEAN_SHUTDOWN: &str = "clean-shutdown";
const DELETED_SUFFIX: &str = ".deleted";

pub type TopicPartitions = Arc<Vec<Arc<Partition>>>;

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
    config: Arc<BrokerConfig>,
    flushers: Arc<Flushers>,
    topics: RwLock<HashMap<String, TopicPartitions>>,
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

impl PartitionManager {
    /// Opens every partition of every topic in `metadata`, recovering where the last run did
    /// not shut down cleanly.
    pub fn open(
        data_dir: &Path,
        config: Arc<BrokerConfig>,
        metadata: &MetadataStore,
    ) -> Result<(PartitionManager, StartupReport), BrokerError> {
        let marker = data_dir.join(CLEAN_SHUTDOWN);
        let clean_shutdown = marker.exists();
        let recovery_points = read_recovery_points(data_dir)?;
        let mut report = StartupReport {
            clean_shutdown,
            ..Default::default()
        };
        let flushers = Flushers::start_with(
            config.i64("log.flush.threads") as usize,
            OpenSegments::new(config.i64("log.segment.open.max") as usize),
        )?;
        let mut topics = HashMap::new();
        for meta in metadata.topics() {
            let mut partitions = Vec::with_capacity(meta.partitions as usize);
            for p in 0..meta.partitions {
                let rp = recovery_points.get(&(meta.name.clone(), p)).copied();
                let (partition, r) = Partition::open(
                    &partition_dir(data_dir, &meta.name, p),
                    Arc::from(meta.name.as_str()),
                    PartitionId(p),
                    settings_for(&config, &meta.overrides),
                    rp,
                    clean_shutdown,
                    &flushers,
                )?;
                report.partitions += 1;
                report.tails_cut += r.tails_cut;
                report.segments_scanned += r.segments_scanned;
                partitions.push(partition);
            }
            topics.insert(meta.name.clone(), Arc::new(partitions));
        }
        remove_orphans(data_dir, metadata)?;
        // From here on a crash must be detected as unclean.
        if clean_shutdown {
            std::fs::remove_file(&marker)?;
        }
        let manager = PartitionManager {
            data_dir: data_dir.to_path_buf(),
            config,
            flushers,
            topics: RwLock::new(topics),
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

    pub fn topic(&self, name: &str) -> Option<TopicPartitions> {
        self.read().get(name).cloned()
    }

    pub fn partition(&self, topic: &str, p: i32) -> Option<Arc<Partition>> {
        let partitions = self.topic(topic)?;
        usize::try_from(p)
            .ok()
            .and_then(|i| partitions.get(i).cloned())
    }

    /// Adds partitions `[existing, meta.partitions)` of a topic (a new topic starts at 0): opens
    /// them, then runs `record` (the durable metadata write that names them), then serves them.
    /// If either step fails, what was opened is closed and removed, so the metadata never names
    /// a partition that could not be opened.
    pub fn add_partitions<E: Into<BrokerError>>(
        &self,
        meta: &TopicMeta,
        record: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), BrokerError> {
        let opened = self.open_new_partitions(meta)?;
        if let Err(e) = record() {
            self.discard_partitions(opened);
            return Err(e.into());
        }
        self.install_partitions(meta, opened);
        Ok(())
    }

    /// Creates the directories of partitions `[existing, meta.partitions)` of a topic and opens
    /// them, without serving them yet. All or nothing: if one fails (no disk, no file
    /// descriptors) the ones opened are closed and their directories removed, so a failed
    /// creation leaves no half-made partition behind. Until the metadata names them they are
    /// orphans, removed at start after a crash.
    fn open_new_partitions(&self, meta: &TopicMeta) -> Result<Vec<Arc<Partition>>, BrokerError> {
        let existing = self.topic(&meta.name).map_or(0, |t| t.len()) as i32;
        let mut opened = Vec::with_capacity((meta.partitions - existing).max(0) as usize);
        for p in existing..meta.partitions {
            let dir = partition_dir(&self.data_dir, &meta.name, p);
            let result = Partition::open(
                &dir,
                Arc::from(meta.name.as_str()),
                PartitionId(p),
                settings_for(&self.config, &meta.overrides),
                Some(Offset(0)),
                false,
                &self.flushers,
            );
            match result {
                Ok((partition, _)) => opened.push(partition),
                Err(e) => {
                    // This one may have made its directory before failing.
                    let _ = std::fs::remove_dir_all(&dir);
                    self.discard_partitions(opened);
                    return Err(e);
                }
            }
        }
        Ok(opened)
    }

    /// Closes partitions from `open_new_partitions` that will not be served
    /// (their creation failed) and removes their directories.
    fn discard_partitions(&self, partitions: Vec<Arc<Partition>>) {
        for partition in partitions {
            if let Err(e) = partition.close() {
                tracing::warn!(topic = partition.topic(), partition = %partition.id(), error = %e, "closing a discarded partition");
            }
            if let Err(e) = std::fs::remove_dir_all(partition.dir()) {
                tracing::warn!(dir = %partition.dir().display(), error = %e, "removing a discarded partition");
            }
        }
    }

    /// Serves partitions opened by `open_new_partitions`, once the metadata
    /// names them.
    fn install_partitions(&self, meta: &TopicMeta, opened: Vec<Arc<Partition>>) {
        let mut topics = self.write();
        let mut partitions = topics
            .get(&meta.name)
            .map(|t| t.as_ref().clone())
            .unwrap_or_default();
        partitions.extend(opened);
        topics.insert(meta.name.clone(), Arc::new(partitions));
    }

    /// Partitions of every topic together (what `max.partitions` limits).
    pub fn count(&self) -> usize {
        self.read().values().map(|t| t.len()).sum()
    }

    /// Closes a topic's partitions and removes their data. In-flight reads keep their slices
    /// (the mappings outlive the files).
    pub fn remove_topic(&self, name: &str) -> Result<(), BrokerError> {
        let Some(partitions) = self.write().remove(name) else {
            return Ok(());
        };
        let removed = self.on_close_threads(&partitions, |partition| {
            if let Err(e) = partition.close() {
                tracing::warn!(topic = name, partition = %partition.id(), error = %e, "closing a deleted partition");
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
        // Every partition was tried; the first failure is the answer (a restart removes what a
        // failed removal left, as an orphan or a `.deleted` directory).
        removed.into_iter().collect::<std::io::Result<Vec<()>>>()?;
        Ok(())
    }

    /// The broker's fatal signal: set by the first failed sync of any partition (`main` halts).
    pub fn fatal(&self) -> &crate::storage::fatal::Fatal {
        self.flushers.fatal()
    }

    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.read()
            .values()
            .flat_map(|t| t.iter().cloned())
            .collect()
    }

    /// Writes every partition's recovery point (what is flushed) atomically.
    pub fn write_recovery_checkpoint(&self) -> Result<(), BrokerError> {
        let mut text = String::new();
        for p in self.all_partitions() {
            let _ = writeln!(text, "{} {} {}", p.topic(), p.id().0, p.recovery_point().0);
        }
        checkpoint::write(&self.data_dir.join(RECOVERY_CHECKPOINT), &text).map_err(|e| {
            if e.is_fatal() {
                self.fatal().report(format!("recovery checkpoint: {e}"));
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
        let threads = usize::try_from(self.config.i64("num.recovery.threads.per.data.dir"))
            .unwrap_or(1)
            .clamp(1, partitions.len().max(1));
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

fn read_recovery_points(data_dir: &Path) -> Result<HashMap<(String, i32), Offset>, BrokerError> {
    let path = data_dir.join(RECOVERY_CHECKPOINT);
    let text = match checkpoint::read(&path) {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => {
            // Losing the checkpoint only costs time: every segment gets scanned.
            tracing::warn!(error = %e, "recovery checkpoint unreadable; recovering every segment");
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

/// Removes partition directories of topics no longer in the metadata, and half-deleted ones.
fn remove_orphans(data_dir: &Path, metadata: &MetadataStore) -> Result<(), BrokerError> {
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        if name == "meta" {
            continue;
        }
        let orphan = name.ends_with(DELETED_SUFFIX)
            || match name.rsplit_once('-') {
                Some((topic, p)) => match (metadata.topic(topic), p.parse::<i32>()) {
                    (Some(t), Ok(p)) => p >= t.partitions,
                    (None, Ok(_)) => true,
                    _ => false,
                },
                None => false,
            };
        if orphan {
            tracing::info!(dir = %entry.path().display(), "removing data of a deleted topic");
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}
