//! The consumer's side of group membership: subscribing (a topic list or a pattern), acting on
//! the heartbeat task's news in `poll`, rebalancing (eager or cooperative), committed offsets
//! on assignment, auto-commit and manual commits, the rebalance callbacks, and leaving on
//! close. The protocol work itself is `crate::group::coordinator`.
//!
//! Invariants:
//! - the assignment only changes here, inside `poll` (or `close`), never from the heartbeat
//!   task, so records a `poll` returns always belong to partitions assigned during that call;
//! - eager protocol: everything is revoked (callback, then commit if auto-commit is on) before
//!   JoinGroup; cooperative: only the partitions missing from the new assignment are revoked,
//!   after SyncGroup, and then the consumer rejoins at once so they can move (KIP-429);
//! - before partitions are revoked (or the consumer closes) their positions are committed when
//!   auto-commit is on; when they are *lost* (the coordinator dropped us) nothing is committed,
//!   since another member may own them already;
//! - a newly assigned partition starts at its committed offset; with none, `auto.offset.reset`.
//!   Until the committed offset is read, the partition is not fetched;
//! - a pattern subscription matches whole topic names (Java's `Pattern.matcher().matches()`),
//!   never internal topics (names starting with `__`), re-checked every `metadata.max.age.ms`.

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::{Duration, Instant};

use super::Consumer;
use crate::error::{ClientError, Result};
use crate::group::coordinator::{commit_offsets, Coordinator, RejoinReason};
use crate::group::{RebalanceProtocol, Tp};

/// What happened to some partitions, for closure listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned,
    Revoked,
    Lost,
}

/// Rebalance callbacks, called from inside `poll` (and `close`). Revocation comes after the
/// auto-commit of the revoked partitions' positions.
pub trait RebalanceListener: Send {
    /// Partitions newly given to this consumer (the cooperative protocol passes only additions,
    /// possibly none; the eager one the whole new assignment).
    fn on_partitions_assigned(&mut self, _partitions: &[Tp]) {}
    /// Partitions given up in an orderly way.
    fn on_partitions_revoked(&mut self, _partitions: &[Tp]) {}
    /// Partitions lost: the group moved on without us (another member may own them already).
    fn on_partitions_lost(&mut self, partitions: &[Tp]) {
        self.on_partitions_revoked(partitions)
    }
}

impl<F: FnMut(RebalanceEvent, &[Tp]) + Send> RebalanceListener for F {
    fn on_partitions_assigned(&mut self, partitions: &[Tp]) {
        self(RebalanceEvent::Assigned, partitions)
    }
    fn on_partitions_revoked(&mut self, partitions: &[Tp]) {
        self(RebalanceEvent::Revoked, partitions)
    }
    fn on_partitions_lost(&mut self, partitions: &[Tp]) {
        self(RebalanceEvent::Lost, partitions)
    }
}

enum Subscribed {
    /// `assign` mode: commits allowed (as simple commits), no membership.
    Nothing,
    Topics,
    Pattern(regex::Regex),
}

pub(super) struct GroupState {
    coordinator: Coordinator,
    subscribed: Subscribed,
    /// The topics joined with (the pattern's matches), sorted.
    topics: Vec<String>,
    listener: Option<Box<dyn RebalanceListener>>,
    needs_join: bool,
    next_auto_commit: Instant,
    next_pattern_check: Instant,
}

impl GroupState {
    fn auto_commit(&self) -> bool {
        self.coordinator.config().enable_auto_commit
    }
    fn auto_commit_interval(&self) -> Duration {
        Duration::from_millis(self.coordinator.config().auto_commit_interval_ms.max(1))
    }
    fn listen(&mut self, event: RebalanceEvent, partitions: &[Tp]) {
        if let Some(l) = self.listener.as_mut() {
            match event {
                RebalanceEvent::Assigned => l.on_partitions_assigned(partitions),
                RebalanceEvent::Revoked => l.on_partitions_revoked(partitions),
                RebalanceEvent::Lost => l.on_partitions_lost(partitions),
            }
        }
    }
}

impl Consumer {
    /// The group state, created on first use; an error without `config.group`.
    fn group_state(&mut self) -> Result<&mut GroupState> {
        if self.group.is_none() {
            let config = self.config.group.clone().ok_or_else(|| {
                ClientError::Invalid("this consumer has no group.id (ConsumerConfig::group)".into())
            })?;
            let now = Instant::now();
            let interval = Duration::from_millis(config.auto_commit_interval_ms.max(1));
            self.group = Some(GroupState {
                coordinator: Coordinator::new(std::sync::Arc::clone(&self.cluster), config)?,
                subscribed: Subscribed::Nothing,
                topics: Vec::new(),
                listener: None,
                needs_join: false,
                next_auto_commit: now + interval,
                next_pattern_check: now,
            });
        }
        self.group
            .as_mut()
            .ok_or_else(|| ClientError::Invalid("no group".into()))
    }

    /// Subscribes to `topics` through the group (needs `config.group`); the group's leader
    /// assigns the partitions, in the next `poll`.
    pub fn subscribe<S: AsRef<str>>(&mut self, topics: &[S]) -> Result<()> {
        let mut list: Vec<String> = topics.iter().map(|t| t.as_ref().to_string()).collect();
        list.sort();
        list.dedup();
        if list.iter().any(String::is_empty) {
            return Err(ClientError::Invalid("an empty topic name".into()));
        }
        let g = self.group_state()?;
        g.subscribed = Subscribed::Topics;
        g.topics = list;
        g.needs_join = true;
        Ok(())
    }

    /// Subscribes to every topic whose whole name matches `pattern` (a Rust regex), now and
    /// as topics appear or go (checked every `metadata.max.age.ms`).
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| ClientError::Invalid(format!("bad topic pattern '{pattern}': {e}")))?;
        let g = self.group_state()?;
        g.subscribed = Subscribed::Pattern(re);
        g.topics.clear();
        g.next_pattern_check = Instant::now();
        g.needs_join = true;
        Ok(())
    }

    /// Sets the rebalance callbacks (a [`RebalanceListener`] or a closure
    /// `FnMut(RebalanceEvent, &[Tp])`).
    pub fn set_rebalance_listener(
        &mut self,
        listener: impl RebalanceListener + 'static,
    ) -> Result<()> {
        self.group_state()?.listener = Some(Box::new(listener));
        Ok(())
    }

    /// This member's id and generation, once it has joined.
    pub fn group_membership(&self) -> Option<(String, i32)> {
        let c = &self.group.as_ref()?.coordinator;
        (c.generation() >= 0).then(|| (c.member_id().to_string(), c.generation()))
    }

    /// The positions of the assigned partitions that have one: what a commit commits.
    fn positions(&self) -> BTreeMap<Tp, i64> {
        self.partitions
            .iter()
            .filter(|(_, s)| !s.awaiting_committed)
            .filter_map(|(tp, s)| Some((tp.clone(), s.position?)))
            .collect()
    }

    /// Commits the current positions of every assigned partition, and waits for the answer.
    pub async fn commit_sync(&mut self) -> Result<()> {
        let offsets = self.positions();
        self.commit_offsets_sync(&offsets).await
    }

    /// Commits these offsets (the next offset to read, per partition) and waits.
    pub async fn commit_offsets_sync(&mut self, offsets: &BTreeMap<Tp, i64>) -> Result<()> {
        self.group_state()?.coordinator.commit(offsets).await
    }

    /// Commits the current positions in the background; the handle gives the outcome. Needs a
    /// known coordinator (after the first join or commit), else it fails at once.
    pub fn commit_async(&mut self) -> Result<tokio::task::JoinHandle<Result<()>>> {
        let offsets = self.positions();
        self.commit_offsets_async(offsets)
    }

    /// Commits these offsets in the background (see [`Consumer::commit_async`]).
    pub fn commit_offsets_async(
        &mut self,
        offsets: BTreeMap<Tp, i64>,
    ) -> Result<tokio::task::JoinHandle<Result<()>>> {
        let g = self.group_state()?;
        let group_id = g.coordinator.config().group_id.clone();
        let member = g.coordinator.commit_as();
        let conn = g.coordinator.known_connection().ok_or_else(|| {
            ClientError::Invalid("commit_async before the coordinator is known".into())
        })?;
        Ok(tokio::spawn(async move {
            commit_offsets(&conn, &group_id, &member, &offsets).await
        }))
    }

    /// The group's committed offsets of `partitions` (absent: none committed).
    pub async fn committed(&mut self, partitions: &[Tp]) -> Result<BTreeMap<Tp, i64>> {
        self.group_state()?.coordinator.committed(partitions).await
    }

    /// Commits (with auto-commit), revokes everything (callback), and leaves the group.
    /// Without a group this only drops the consumer.
    pub async fn close(mut self) -> Result<()> {
        let Some(mut g) = self.group.take() else {
            return Ok(());
        };
        let mut result = Ok(());
        if g.auto_commit() {
            let offsets = self.positions();
            result = g.coordinator.commit(&offsets).await;
        }
        let owned = self.assignment();
        if !owned.is_empty() {
            g.listen(RebalanceEvent::Revoked, &owned);
        }
        g.coordinator.leave("the consumer is being closed").await;
        result
    }

    /// Called at the top of each `poll` round: acts on heartbeat news, re-checks a pattern,
    /// rejoins when needed, fetches committed offsets, auto-commits when due.
    pub(super) async fn maintain_group(&mut self) -> Result<()> {
        let Some(mut g) = self.group.take() else {
            return Ok(());
        };
        let result = self.maintain(&mut g).await;
        self.group = Some(g);
        result
    }

    async fn maintain(&mut self, g: &mut GroupState) -> Result<()> {
        g.coordinator.polled();
        if let Some(reason) = g.coordinator.signal().take() {
            tracing::debug!(?reason, group = %g.coordinator.config().group_id, "heartbeat news");
            match reason {
                RejoinReason::CoordinatorLost => {
                    if let Err(e) = g.coordinator.rediscover().await {
                        tracing::debug!(error = %e, "coordinator not found yet; rejoining");
                        g.needs_join = true;
                    }
                }
                RejoinReason::Rebalance => g.needs_join = true,
                RejoinReason::Lost => {
                    let lost = self.assignment();
                    self.assign(&[]);
                    g.coordinator.reset_generation(false);
                    if !lost.is_empty() {
                        g.listen(RebalanceEvent::Lost, &lost);
                    }
                    g.needs_join = true;
                }
            }
        }

        if let Subscribed::Pattern(re) = &g.subscribed {
            let now = Instant::now();
            if now >= g.next_pattern_check {
                let metadata = self.cluster.refresh(&[]).await?;
                let mut matched: Vec<String> = metadata
                    .topics
                    .keys()
                    .filter(|t| !t.starts_with("__") && re.is_match(t))
                    .cloned()
                    .collect();
                matched.sort();
                if matched != g.topics {
                    g.topics = matched;
                    g.needs_join = true;
                }
                g.next_pattern_check =
                    now + Duration::from_millis(g.coordinator.config().metadata_max_age_ms.max(1));
            }
        }

        if g.needs_join && !matches!(g.subscribed, Subscribed::Nothing) {
            self.rebalance(g).await?;
        }

        let awaiting: Vec<Tp> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.awaiting_committed)
            .map(|(tp, _)| tp.clone())
            .collect();
        if !awaiting.is_empty() {
            let committed = g.coordinator.committed(&awaiting).await?;
            for tp in awaiting {
                if let Some(s) = self.partitions.get_mut(&tp) {
                    s.awaiting_committed = false;
                    s.position = committed.get(&tp).copied();
                }
            }
        }

        if g.auto_commit() && Instant::now() >= g.next_auto_commit {
            g.next_auto_commit = Instant::now() + g.auto_commit_interval();
            let offsets = self.positions();
            if let Err(e) = g.coordinator.commit(&offsets).await {
                // Not the caller's error: the next auto-commit tries again; a lost membership
                // was signalled and is handled next round.
                tracing::warn!(error = %e, "auto-commit failed");
            }
        }
        Ok(())
    }

    async fn rebalance(&mut self, g: &mut GroupState) -> Result<()> {
        let before = self.assignment();
        if g.coordinator.protocol() == RebalanceProtocol::Eager && !before.is_empty() {
            self.revoke(g, &before).await;
            self.assign(&[]);
        }
        let owned = self.assignment();
        let joined = g.coordinator.join(&g.topics, &owned).await?;
        g.needs_join = false;
        let new: BTreeSet<Tp> = joined.assignment.partitions.iter().cloned().collect();
        let old: BTreeSet<Tp> = owned.iter().cloned().collect();
        let revoked: Vec<Tp> = old.difference(&new).cloned().collect();
        let added: Vec<Tp> = new.difference(&old).cloned().collect();
        tracing::debug!(
            generation = joined.generation,
            assigned = ?new,
            ?revoked,
            "joined group"
        );
        if !revoked.is_empty() {
            // Cooperative: give up what moves, then rejoin at once so it can be handed on.
            self.revoke(g, &revoked).await;
            g.needs_join = true;
        }
        let list: Vec<Tp> = new.iter().cloned().collect();
        self.assign(&list);
        for tp in &added {
            if let Some(s) = self.partitions.get_mut(tp) {
                s.awaiting_committed = true;
                s.position = None;
            }
        }
        let event_partitions = match joined.protocol {
            RebalanceProtocol::Eager => list,
            RebalanceProtocol::Cooperative => added,
        };
        g.listen(RebalanceEvent::Assigned, &event_partitions);
        g.next_auto_commit = Instant::now() + g.auto_commit_interval();
        Ok(())
    }

    /// Commits the positions of `partitions` (auto-commit on), then the revoked callback.
    async fn revoke(&mut self, g: &mut GroupState, partitions: &[Tp]) {
        if g.auto_commit() {
            let positions = self.positions();
            let offsets: BTreeMap<Tp, i64> = partitions
                .iter()
                .filter_map(|tp| Some((tp.clone(), *positions.get(tp)?)))
                .collect();
            if let Err(e) = g.coordinator.commit(&offsets).await {
                tracing::warn!(error = %e, "commit before revocation failed");
            }
        }
        g.listen(RebalanceEvent::Revoked, partitions);
    }
}
