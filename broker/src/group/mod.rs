//! The group coordinator: every consumer group this node coordinates (all of them, on one
//! node). Membership rules live in the pure state machine [`state::Group`]; this module owns the
//! groups, delivers answers to waiting JoinGroup/SyncGroup requests, persists group metadata and
//! runs the timers. It depends on its offset store (where group metadata is written), never on
//! the node that hosts it: its tasks hold the coordinator, not the node.
//!
//! Invariants:
//! - Groups sit in a sharded map (read-locked to find a group, write-locked only to add or remove
//!   one); each group has its own mutex. A request locks only its group: Heartbeat of one group
//!   never waits on another. Events that can bring a deadline earlier (join, sync, leave, timer)
//!   also take the timer queue's lock briefly (so does a commit); heartbeats, which only push
//!   deadlines later, do not. No lock is held across an `.await`.
//! - A commit's membership check and its append to the offset store run under the group's
//!   lock (lock order: group, then offset-store shard; nothing takes them the other way).
//! - A failed metadata write is never answered as stored: the JoinGroup/SyncGroup answers of
//!   that change carry the error and the group rebalances if still in that generation.
//! - A waiting JoinGroup/SyncGroup is a oneshot sender held by the state machine; it is answered
//!   when the state machine says so (rebalance complete, leader synced, member fenced...).
//! - Persisting (`OffsetStore::store_group`) happens after the state change, outside the group
//!   lock, before the answers of that change are sent. Each snapshot carries a per-group sequence
//!   number, and an older snapshot is never written after a newer one.
//! - Timers are event-driven: one task sleeps until the earliest group deadline, and is woken by
//!   a `Notify` when an earlier one appears. Never sleep-and-poll. The timer task never awaits
//!   a group's persisting: each group's effects run in their own task.
//! - Shutdown ([`GroupCoordinator::stop`]) ends the timer task and waits (bounded) for every
//!   effects task, so no group write reaches `__consumer_offsets` after its partitions close.

pub mod offsets;
pub mod records;

pub mod state;

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use tokio::sync::{oneshot, Notify};

use self::offsets::OffsetStore;
use self::records::GroupMetadata;
use self::state::{
    Group, GroupState, GroupSummary, JoinReply, JoinRequest, Limits, Output, Reply, SyncReply,
    SyncRequest,
};
use crate::clock::now_ms;
use crate::config::GroupSettings;
use crate::error::BrokerError;

/// The handle of a waiting JoinGroup or SyncGroup.
pub type Waiter = oneshot::Sender<Reply>;

const SHARDS: usize = 16;

struct Entry {
    group: Group<Waiter>,
    /// Sequence number of the last metadata snapshot taken (under the group lock).
    snapshot_seq: u64,
    /// Taken out of the map: requests that still hold the slot must look the group up again.
    removed: bool,
}

struct Slot {
    entry: Mutex<Entry>,
    /// Sequence number of the last snapshot written; serializes this group's writes.
    persisted_seq: tokio::sync::Mutex<u64>,
}

/// (deadline, group) for every group with something due, and each group's current deadline.
type DeadlineQueue = (BTreeSet<(i64, String)>, HashMap<String, i64>);

#[derive(Default)]
struct Timers {
    queue: Mutex<DeadlineQueue>,
    notify: Notify,
}

pub struct GroupCoordinator {
    /// Read-locked to find a group (so lookups never wait on each other), write-locked to add
    /// or remove one.
    shards: Vec<RwLock<HashMap<String, Arc<Slot>>>>,
    limits: Limits,
    timers: Arc<Timers>,
    timer_started: AtomicBool,
    timer_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// How many effects tasks are running (each holds an [`EffectsRunning`]).
    effects_running: Arc<tokio::sync::watch::Sender<usize>>,
    /// Where group metadata and tombstones are written, and which groups hold offsets.
    offsets: Arc<OffsetStore>,
}

/// Counts one running effects task while it lives (aborted or not).
struct EffectsRunning(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for EffectsRunning {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

impl GroupCoordinator {
    /// A coordinator whose groups are stored in `offsets`.
    pub fn new(settings: &GroupSettings, offsets: Arc<OffsetStore>) -> GroupCoordinator {
        let limits: Limits = *settings;
        GroupCoordinator {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            limits,
            timers: Arc::default(),
            timer_started: AtomicBool::new(false),
            timer_task: Mutex::new(None),
            effects_running: Arc::new(tokio::sync::watch::Sender::new(0)),
            offsets,
        }
    }

    /// Forgets the groups of `__consumer_offsets` partitions this broker no longer leads
    /// ([`OffsetStore::follow_roles`]'s `unloaded`): their new coordinator loads them. Requests
    /// already holding one of them see it removed and answer as for an unknown group.
    pub fn unload(&self, partitions: &[usize]) -> usize {
        if partitions.is_empty() {
            return 0;
        }
        let mut gone = Vec::new();
        for shard in &self.shards {
            let mut shard = write(shard);
            shard.retain(|id, slot| {
                let keep = !partitions.contains(&(self.offsets.partition_for(id) as usize));
                if !keep {
                    lock(&slot.entry).removed = true;
                    gone.push(id.clone());
                }
                keep
            });
        }
        for id in &gone {
            self.schedule(id, None);
        }
        gone.len()
    }

    /// Installs the groups persisted before a restart; their members' sessions restart now.
    pub fn load(&self, groups: Vec<(String, GroupMetadata)>) {
        let now = now_ms();
        for (id, meta) in groups {
            let group = Group::load(&id, &meta, self.limits, now);
            let deadline = group.next_deadline_ms();
            let slot = Arc::new(Slot {
                entry: Mutex::new(Entry {
                    group,
                    snapshot_seq: 0,
                    removed: false,
                }),
                persisted_seq: tokio::sync::Mutex::new(0),
            });
            write(self.shard(&id)).insert(id.clone(), slot);
            self.schedule(&id, deadline);
        }
    }

    fn shard(&self, group_id: &str) -> &RwLock<HashMap<String, Arc<Slot>>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        group_id.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    fn find(&self, group_id: &str) -> Option<Arc<Slot>> {
        read(self.shard(group_id)).get(group_id).cloned()
    }

    fn find_or_create(&self, group_id: &str) -> Arc<Slot> {
        if let Some(slot) = self.find(group_id) {
            return slot;
        }
        let mut shard = write(self.shard(group_id));
        Arc::clone(shard.entry(group_id.to_string()).or_insert_with(|| {
            Arc::new(Slot {
                entry: Mutex::new(Entry {
                    group: Group::new(group_id, self.limits, now_ms()),
                    snapshot_seq: 0,
                    removed: false,
                }),
                persisted_seq: tokio::sync::Mutex::new(0),
            })
        }))
    }

    /// Runs one event on a group under its lock; returns what to carry out afterwards. With
    /// `create`, a missing group is created; without, a missing group is None.
    fn apply<R>(
        &self,
        group_id: &str,
        create: bool,
        event: impl FnOnce(&mut Group<Waiter>) -> (R, Output<Waiter>),
    ) -> Option<(R, Effects)> {
        // A slot found in the map may be removed before we lock it; then look again (each
        // retry means another request removed it, so a few suffice).
        let mut found = None;
        for _ in 0..8 {
            let slot = if create {
                self.find_or_create(group_id)
            } else {
                self.find(group_id)?
            };
            let removed = lock(&slot.entry).removed;
            if !removed {
                found = Some(slot);
                break;
            }
        }
        let slot = found?;
        let mut entry = lock(&slot.entry);
        if entry.removed {
            return None;
        }
        let generation = entry.group.generation();
        let (result, out) = event(&mut entry.group);
        if entry.group.generation() > generation {
            crate::metrics::group_rebalance();
        }
        let persist = out.persist.map(|m| {
            entry.snapshot_seq += 1;
            (entry.snapshot_seq, m)
        });
        let dead = entry.group.state() == GroupState::Dead;
        // Scheduled under the group lock, so deadlines are set in the order of the changes.
        self.schedule(
            group_id,
            if dead {
                None
            } else {
                entry.group.next_deadline_ms()
            },
        );
        let forget = dead || entry.group.is_unused();
        drop(entry);
        if forget {
            // A deleted group leaves the map; so does one nobody ever joined (failed joins,
            // lapsed member ids), so such requests cannot fill the map. Lock order: shard, then
            // group; `removed` tells requests that already hold the slot to look again.
            let mut shard = write(self.shard(group_id));
            if shard.get(group_id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                let mut entry = lock(&slot.entry);
                if entry.group.state() == GroupState::Dead || entry.group.is_unused() {
                    entry.removed = true;
                    shard.remove(group_id);
                }
            }
        }
        Some((
            result,
            Effects {
                slot,
                group_id: group_id.to_string(),
                replies: out.replies,
                persist,
                tombstone: out.tombstone,
            },
        ))
    }

    /// Starts the timer task once (it holds the coordinator weakly, and ends when the
    /// coordinator is gone).
    pub fn start_timers(self: &Arc<Self>) {
        if self.timer_started.load(Ordering::Acquire)
            || self.timer_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let timers = Arc::clone(&self.timers);
        let coordinator: Weak<GroupCoordinator> = Arc::downgrade(self);
        *lock(&self.timer_task) = Some(tokio::spawn(run_timers(timers, coordinator)));
    }

    /// Shutdown: ends the timer task (no timer starts again) and waits for every running effects
    /// task (metadata writes, tombstones) to finish, for at most `within`. Call once no request
    /// can reach the coordinator; false if some task was still running at the bound.
    pub async fn stop(&self, within: std::time::Duration) -> bool {
        self.timer_started.store(true, Ordering::Release);
        let timer = lock(&self.timer_task).take();
        if let Some(timer) = timer {
            timer.abort();
            let _ = timer.await;
        }
        let mut running = self.effects_running.subscribe();
        tokio::time::timeout(within, running.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn effects_started(&self) -> EffectsRunning {
        self.effects_running.send_modify(|n| *n += 1);
        EffectsRunning(Arc::clone(&self.effects_running))
    }

    fn schedule(&self, group_id: &str, deadline: Option<i64>) {
        let mut q = lock(&self.timers.queue);
        let (set, by_group) = &mut *q;
        if let Some(old) = by_group.remove(group_id) {
            set.remove(&(old, group_id.to_string()));
        }
        let Some(d) = deadline else { return };
        let earliest = set.first().map(|(t, _)| *t);
        set.insert((d, group_id.to_string()));
        by_group.insert(group_id.to_string(), d);
        if earliest.is_none_or(|e| d < e) {
            self.timers.notify.notify_one();
        }
    }

    /// One group's timer event. The state changes at once; its persisting and answers run in
    /// their own task, so a slow write for this group delays no other group's deadlines.
    fn on_timer(self: &Arc<Self>, group_id: &str) {
        let now = now_ms();
        if let Some(((), effects)) = self.apply(group_id, false, |g| ((), g.on_timer(now))) {
            effects.spawn(self);
        }
    }

    /// JoinGroup: answers when the rebalance completes (or at once, for errors and repeats).
    pub async fn join(self: &Arc<Self>, group_id: &str, req: JoinRequest) -> JoinReply {
        self.start_timers();
        let member_id = req.member_id.clone();
        if let Err(e) = self.offsets.coordinates(group_id) {
            return JoinReply::failed(e, &member_id);
        }
        let (tx, rx) = oneshot::channel();
        let now = now_ms();
        // Only a member without an id can create a group.
        let create = req.member_id.is_empty();
        match self.apply(group_id, create, |g| ((), g.join(req, tx, now))) {
            Some(((), effects)) => effects.run(self).await,
            None => {
                let e = BrokerError::UnknownMemberId(member_id.clone());
                return JoinReply::failed(e, &member_id);
            }
        }
        match rx.await {
            Ok(Reply::Join(r)) => r,
            _ => JoinReply::failed(BrokerError::RebalanceInProgress, &member_id),
        }
    }

    /// SyncGroup: followers wait for the leader's assignments.
    pub async fn sync(self: &Arc<Self>, group_id: &str, req: SyncRequest) -> SyncReply {
        self.start_timers();
        let (tx, rx) = oneshot::channel();
        let now = now_ms();
        let member_id = req.member_id.clone();
        if let Err(e) = self.offsets.coordinates(group_id) {
            return SyncReply::failed(e);
        }
        match self.apply(group_id, false, |g| ((), g.sync(req, tx, now))) {
            Some(((), effects)) => effects.run(self).await,
            None => return SyncReply::failed(BrokerError::UnknownMemberId(member_id)),
        }
        match rx.await {
            Ok(Reply::Sync(r)) => r,
            _ => SyncReply::failed(BrokerError::RebalanceInProgress),
        }
    }

    /// Heartbeat: touches only this group.
    pub fn heartbeat(
        self: &Arc<Self>,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), BrokerError> {
        self.start_timers();
        self.offsets.coordinates(group_id)?;
        let slot = self
            .find(group_id)
            .ok_or_else(|| BrokerError::UnknownMemberId(member_id.to_string()))?;
        let now = now_ms();
        let mut entry = lock(&slot.entry);
        let result = entry.group.heartbeat(member_id, instance, generation, now);
        // No rescheduling: this only moves a session deadline later, so the deadline queued
        // for the group is at worst early (the timer then finds nothing due and requeues the
        // real one). Heartbeats thus take no lock but their group's (and a shard read lock).
        drop(entry);
        result
    }

    /// LeaveGroup: each member's result, in order. Unknown group: every member is unknown.
    pub async fn leave(
        self: &Arc<Self>,
        group_id: &str,
        members: Vec<(String, Option<String>)>,
    ) -> Vec<Result<(), BrokerError>> {
        if self.offsets.coordinates(group_id).is_err() {
            return members
                .iter()
                .map(|_| self.offsets.coordinates(group_id))
                .collect();
        }
        let now = now_ms();
        match self.apply(group_id, false, |g| g.leave(&members, now)) {
            Some((results, effects)) => {
                effects.run(self).await;
                results
            }
            None => members
                .into_iter()
                .map(|(m, _)| Err(BrokerError::UnknownMemberId(m)))
                .collect(),
        }
    }

    /// DeleteGroups for one group: Empty groups and groups that only have offsets.
    pub async fn delete(self: &Arc<Self>, group_id: &str) -> Result<(), BrokerError> {
        self.offsets.coordinates(group_id)?;
        let deleted = self.apply(group_id, false, |g| match g.delete() {
            Ok(out) => (Ok(()), out),
            Err(e) => (Err(e), Output::default()),
        });
        match deleted {
            Some((result, effects)) => {
                result?;
                effects.run_reporting_tombstone(self).await
            }
            None if self
                .offsets
                .groups_with_offsets()
                .iter()
                .any(|g| g == group_id) =>
            {
                self.offsets.delete_group(group_id).await
            }
            None => Err(BrokerError::GroupIdNotFound(group_id.to_string())),
        }
    }

    /// Every group this coordinator knows (not Dead): (id, state, protocol type).
    pub fn list(&self) -> Vec<(String, GroupState, String)> {
        let slots: Vec<(String, Arc<Slot>)> = self
            .shards
            .iter()
            .flat_map(|s| {
                read(s)
                    .iter()
                    .map(|(k, v)| (k.clone(), Arc::clone(v)))
                    .collect::<Vec<_>>()
            })
            .collect();
        slots
            .into_iter()
            .filter_map(|(id, slot)| {
                let entry = lock(&slot.entry);
                let g = &entry.group;
                (g.state() != GroupState::Dead).then(|| {
                    (
                        id,
                        g.state(),
                        g.protocol_type().unwrap_or_default().to_string(),
                    )
                })
            })
            .collect()
    }

    /// DescribeGroups of one group; None when the coordinator does not know it.
    pub fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        let slot = self.find(group_id)?;
        let entry = lock(&slot.entry);
        Some(entry.group.summary())
    }

    /// OffsetCommit v2-8, Kafka's handleCommitOffsets rules: checks that this member may commit,
    /// then runs `append` (the write of its offsets) under the same group lock, so no rebalance
    /// or fencing can come between the check and the write: a zombie (old generation, fenced
    /// static member) can never land a commit after the new generation's and rewind an offset.
    /// generation -1 with member "" is a "simple" commit (admin, or a consumer using assign()):
    /// allowed when the group is unknown or Empty. A valid member's commit also counts as its
    /// heartbeat.
    pub fn commit<R>(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        append: impl FnOnce() -> R,
    ) -> Result<R, BrokerError> {
        self.offsets.coordinates(group_id)?;
        let now = now_ms();
        // A simple commit to an unknown group creates it for the time of the write (and the
        // group is dropped again as unused), so a first JoinGroup cannot slip in between.
        let create = generation_id < 0;
        let applied = self.apply(group_id, create, |g| {
            let result = g
                .check_commit(member_id, group_instance_id, generation_id, now)
                .map(|()| append());
            (result, Output::default())
        });
        match applied {
            Some((result, _)) => result,
            // Only when other requests kept removing the group: let the client retry.
            None if create => Err(BrokerError::CoordinatorNotAvailable(format!(
                "group '{group_id}' is being removed"
            ))),
            None => Err(BrokerError::IllegalGeneration {
                requested: generation_id,
                current: -1,
            }),
        }
    }

    /// Whether the group exists here with members or a rebalance history (not Dead).
    pub fn is_known(&self, group_id: &str) -> bool {
        self.find(group_id)
            .is_some_and(|slot| lock(&slot.entry).group.state() != GroupState::Dead)
    }

    /// OffsetDelete, Kafka's handleDeleteOffsets rules, checked per topic: GROUP_SUBSCRIBED_TO_TOPIC
    /// if the group has members and one of them subscribes to the topic; NON_EMPTY_GROUP for a
    /// non-empty group of another protocol type; Ok for an Empty group, or one unknown here
    /// (the caller, which owns the offsets, answers GROUP_ID_NOT_FOUND when it has none either).
    /// `append` (the write of the tombstones) gets one verdict per topic and runs under the same
    /// group lock, so no member can join and commit between the check and the write (a delete
    /// cannot remove the offset a new member just committed). GROUP_ID_NOT_FOUND for the whole
    /// request if the group is being deleted.
    pub fn delete_offsets<R>(
        &self,
        group_id: &str,
        topics: &[&str],
        append: impl FnOnce(&[Result<(), BrokerError>]) -> R,
    ) -> Result<R, BrokerError> {
        self.offsets.coordinates(group_id)?;
        // An unknown group is created for the time of the check and write (and dropped again as
        // unused), like a simple commit's, so a first JoinGroup cannot slip in between.
        let applied = self.apply(group_id, true, |g| {
            if g.state() == GroupState::Dead {
                let e = BrokerError::GroupIdNotFound(group_id.to_string());
                return (Err(e), Output::default());
            }
            let verdicts: Vec<Result<(), BrokerError>> = topics
                .iter()
                .map(|topic| match g.state() {
                    GroupState::Empty => Ok(()),
                    _ => match g.subscribes_to(topic) {
                        Some(true) => Err(BrokerError::GroupSubscribedToTopic(topic.to_string())),
                        Some(false) => Ok(()),
                        None => Err(BrokerError::NonEmptyGroup(group_id.to_string())),
                    },
                })
                .collect();
            (Ok(append(&verdicts)), Output::default())
        });
        match applied {
            Some((result, _)) => result,
            // Only when other requests kept removing the group: let the client retry.
            None => Err(BrokerError::CoordinatorNotAvailable(format!(
                "group '{group_id}' is being removed"
            ))),
        }
    }
}

/// What one event left to do outside the group lock.
struct Effects {
    slot: Arc<Slot>,
    group_id: String,
    replies: Vec<(Waiter, Reply)>,
    persist: Option<(u64, GroupMetadata)>,
    tombstone: bool,
}

impl Effects {
    /// Carries the effects out in their own task, so a requester that goes away (its connection
    /// closed) cannot cancel the persisting or the answers owed to the other members.
    async fn run(self, coordinator: &Arc<GroupCoordinator>) {
        // Only a delete writes a tombstone, and it reads the outcome itself.
        let _ = self.run_reporting_tombstone(coordinator).await;
    }

    /// Starts carrying the effects out; the caller may await the handle or not.
    fn spawn(
        self,
        coordinator: &Arc<GroupCoordinator>,
    ) -> tokio::task::JoinHandle<Result<(), BrokerError>> {
        let coordinator = Arc::clone(coordinator);
        let running = coordinator.effects_started();
        tokio::spawn(async move {
            let _running = running;
            self.carry_out(&coordinator).await
        })
    }

    /// [`Effects::run`], answering whether the tombstone (if any) was written: DeleteGroups
    /// must not report a group deleted that a restart would bring back.
    async fn run_reporting_tombstone(
        self,
        coordinator: &Arc<GroupCoordinator>,
    ) -> Result<(), BrokerError> {
        self.spawn(coordinator).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "group effects task failed");
            Err(BrokerError::CoordinatorNotAvailable(
                "group effects task failed".into(),
            ))
        })
    }

    async fn carry_out(mut self, coordinator: &Arc<GroupCoordinator>) -> Result<(), BrokerError> {
        let mut failure = None;
        if let Some((seq, meta)) = self.persist.take() {
            let mut written = self.slot.persisted_seq.lock().await;
            if seq > *written {
                match coordinator.offsets.store_group(&self.group_id, &meta).await {
                    Ok(()) => *written = seq,
                    Err(e) => {
                        tracing::error!(group = %self.group_id, error = %e, "storing group metadata failed");
                        failure = Some((e, meta.generation));
                    }
                }
            }
        }
        let mut tombstone = Ok(());
        if self.tombstone {
            // The last write for this group: no older snapshot may follow the tombstone.
            *self.slot.persisted_seq.lock().await = u64::MAX;
            if let Err(e) = coordinator.offsets.delete_group(&self.group_id).await {
                tracing::error!(group = %self.group_id, error = %e, "writing the group tombstone failed");
                tombstone = Err(e);
            }
        }
        for (waiter, mut reply) in self.replies {
            // A JoinGroup or SyncGroup answered from a change we could not store must not
            // succeed: the members retry, and rejoin the rebalance started below.
            if let Some((e, _)) = &failure {
                let error = match &mut reply {
                    Reply::Join(r) => &mut r.error,
                    Reply::Sync(r) => &mut r.error,
                };
                if error.is_none() {
                    *error = Some(store_error(e));
                }
            }
            // The requester may have gone (connection closed): nothing to do then.
            let _ = waiter.send(reply);
        }
        if let Some((_, generation)) = failure {
            // The group in memory is ahead of what a restart would find: rebalance, so the
            // next generation is stored (Kafka resets the assignments and rebalances too).
            let now = now_ms();
            if let Some(((), effects)) = coordinator.apply(&self.group_id, false, |g| {
                ((), g.store_failed(generation, now))
            }) {
                effects.spawn(coordinator);
            }
        }
        tombstone
    }
}

/// What a member is told when its group's metadata could not be stored (Kafka's mapping in
/// its group coordinator): not the coordinator any more, or try again.
fn store_error(e: &BrokerError) -> BrokerError {
    match e {
        BrokerError::NotCoordinator => BrokerError::NotCoordinator,
        e => BrokerError::CoordinatorNotAvailable(format!("storing the group failed: {e}")),
    }
}

/// The timer task: sleeps until the earliest group deadline (or until told an earlier one
/// exists), then runs each due group's timer event.
async fn run_timers(timers: Arc<Timers>, coordinator: Weak<GroupCoordinator>) {
    loop {
        let earliest = lock(&timers.queue).0.first().map(|(t, _)| *t);
        match earliest {
            None => timers.notify.notified().await,
            Some(t) => {
                let wait = std::time::Duration::from_millis((t - now_ms()).max(0) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = timers.notify.notified() => {}
                }
            }
        }
        let now = now_ms();
        let due: Vec<String> = {
            let mut q = lock(&timers.queue);
            let (set, by_group) = &mut *q;
            let mut due = Vec::new();
            while let Some((t, g)) = set.first().cloned() {
                if t > now {
                    break;
                }
                set.remove(&(t, g.clone()));
                by_group.remove(&g);
                due.push(g);
            }
            due
        };
        if due.is_empty() {
            continue;
        }
        let Some(coordinator) = coordinator.upgrade() else {
            return;
        };
        for g in due {
            coordinator.on_timer(&g);
        }
    }
}

#[cfg(test)]
mod tests;
