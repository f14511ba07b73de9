//! The leader-epoch cache of a partition: for each leader epoch, the first offset written in it
//! (Kafka's `leader-epoch-checkpoint`). Followers will use it to truncate to the leader's log
//! (OffsetsForLeaderEpoch); on one node it records epoch 0 from offset 0.
//!
//! Invariants: epochs and start offsets are strictly increasing (callers check an epoch is not
//! older than [`EpochCache::latest`] before [`EpochCache::assign`]); the file is replaced
//! atomically, on every change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::ids::{LeaderEpoch, Offset};
use crate::storage::checkpoint::{self, CheckpointError};

const FILE_NAME: &str = "leader-epoch-checkpoint";

#[derive(Debug, thiserror::Error)]
pub enum EpochCacheError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}: malformed entry '{1}'")]
    Malformed(String, String),
}

pub struct EpochCache {
    path: PathBuf,
    entries: Vec<(LeaderEpoch, Offset)>,
}

impl EpochCache {
    pub fn open(partition_dir: &Path) -> Result<EpochCache, EpochCacheError> {
        let path = partition_dir.join(FILE_NAME);
        let mut entries = Vec::new();
        for line in checkpoint::read(&path)?.unwrap_or_default().lines() {
            let parsed = line
                .split_once(' ')
                .and_then(|(e, o)| Some((LeaderEpoch(e.parse().ok()?), Offset(o.parse().ok()?))));
            let entry = parsed.ok_or_else(|| {
                EpochCacheError::Malformed(path.display().to_string(), line.to_string())
            })?;
            entries.push(entry);
        }
        Ok(EpochCache { path, entries })
    }

    /// The latest epoch, if any was recorded.
    pub fn latest(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|(e, _)| *e)
    }

    /// Records that `epoch` starts at `start`; a no-op if it is already the latest.
    pub fn assign(&mut self, epoch: LeaderEpoch, start: Offset) -> Result<(), EpochCacheError> {
        if self.latest() == Some(epoch) {
            return Ok(());
        }
        if let Some(&(last_epoch, last_start)) = self.entries.last() {
            assert!(
                epoch > last_epoch && start >= last_start,
                "epochs only move forward"
            );
        }
        self.entries.push((epoch, start));
        self.persist()
    }

    fn persist(&self) -> Result<(), EpochCacheError> {
        let mut text = String::new();
        for (e, o) in &self.entries {
            let _ = writeln!(text, "{} {}", e.0, o.0);
        }
        checkpoint::write(&self.path, &text)?;
        Ok(())
    }

    /// A follower's truncation to `offset`: drops the epochs starting at or after it (their
    /// records are gone), persisted.
    pub fn truncate_at(&mut self, offset: Offset) -> Result<(), EpochCacheError> {
        let before = self.entries.len();
        self.entries.retain(|(_, start)| *start < offset);
        if self.entries.len() == before {
            return Ok(());
        }
        self.persist()
    }

    /// Forgets every epoch (a log started afresh at a new offset), persisted.
    pub fn clear(&mut self) -> Result<(), EpochCacheError> {
        self.entries.clear();
        self.persist()
    }

    /// OffsetsForLeaderEpoch, Kafka's rule: the latest epoch ends at the log end; an older one
    /// ends where the next higher known epoch starts, answered with the largest known epoch not
    /// above it, or with itself when it is below every known epoch (its data is gone: copy from
    /// the first known start). `None` (UNDEFINED): no epoch (-1), none known, or above the latest.
    pub fn end_offset_for(
        &self,
        epoch: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        if epoch.0 < 0 {
            return None;
        }
        if self.latest() == Some(epoch) {
            return Some((epoch, log_end));
        }
        let (_, next_start) = *self.entries.iter().find(|(e, _)| *e > epoch)?;
        let found = self
            .entries
            .iter()
            .rev()
            .find(|(e, _)| *e <= epoch)
            .map_or(epoch, |(e, _)| *e);
        Some((found, next_start))
    }

    /// Drops entries starting past the log end (after the log was truncated by recovery).
    pub fn truncate_from(&mut self, log_end: Offset) {
        self.entries.retain(|(_, start)| *start <= log_end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_persist_and_answer_end_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::open(dir.path()).unwrap();
        cache.assign(LeaderEpoch(0), Offset(0)).unwrap();
        cache.assign(LeaderEpoch(0), Offset(5)).unwrap(); // same epoch: no new entry
        cache.assign(LeaderEpoch(2), Offset(10)).unwrap();
        let cache = EpochCache::open(dir.path()).unwrap();
        assert_eq!(cache.latest(), Some(LeaderEpoch(2)));
        assert_eq!(
            cache.end_offset_for(LeaderEpoch(0), Offset(20)),
            Some((LeaderEpoch(0), Offset(10)))
        );
        assert_eq!(
            cache.end_offset_for(LeaderEpoch(1), Offset(20)),
            Some((LeaderEpoch(0), Offset(10)))
        );
        assert_eq!(
            cache.end_offset_for(LeaderEpoch(2), Offset(20)),
            Some((LeaderEpoch(2), Offset(20)))
        );
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor` at the edges: an epoch below every known one
    /// (its data was deleted) answers itself and the first known epoch's start, so a follower
    /// copies from there; one above the latest, or no epoch at all, is undefined.
    #[test]
    fn end_offsets_at_the_edges_follow_kafka() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::open(dir.path()).unwrap();
        assert_eq!(cache.end_offset_for(LeaderEpoch(0), Offset(0)), None);
        cache.assign(LeaderEpoch(3), Offset(100)).unwrap();
        cache.assign(LeaderEpoch(5), Offset(150)).unwrap();
        assert_eq!(
            cache.end_offset_for(LeaderEpoch(1), Offset(200)),
            Some((LeaderEpoch(1), Offset(100))),
            "older than anything known"
        );
        assert_eq!(
            cache.end_offset_for(LeaderEpoch(4), Offset(200)),
            Some((LeaderEpoch(3), Offset(150))),
            "between two known epochs"
        );
        assert_eq!(
            cache.end_offset_for(LeaderEpoch(5), Offset(200)),
            Some((LeaderEpoch(5), Offset(200))),
            "the latest ends at the log end"
        );
        assert_eq!(
            cache.end_offset_for(LeaderEpoch(6), Offset(200)),
            None,
            "newer than the latest"
        );
        assert_eq!(cache.end_offset_for(LeaderEpoch(-1), Offset(200)), None);
    }
}
