//! The replica layer (Kafka's ReplicaManager): between the handlers and the partitions. Produce,
//! Fetch, ListOffsets and OffsetForLeaderEpoch reach a partition only through a [`Replica`],
//! which knows its role (leader or follower, from the metadata image), runs the replication rules
//! (`state.rs`, a pure state machine) and carries out what they decide: publish the high
//! watermark to the partition, answer waiting `acks=-1` produces, send ISR changes to the
//! controller (through the channel [`ReplicaManager::take_isr_requests`] hands out), and start or
//! stop fetching from a leader (`fetcher.rs`).
//!
//! Invariants:
//! - a replica's state changes under its own lock only; the lock order is replica, then
//!   partition (an append holds the replica lock, so no produce slips into a log that has just
//!   become a follower's);
//! - only a leader takes produces and follower fetches; a follower's log changes only through
//!   its fetcher (`FollowerLog`);
//! - the partition's published HW is the state machine's: it never decreases, and no consumer
//!   reads at or above it;
//! - every waiting `acks=-1` produce is answered exactly once: by the HW reaching it, by the
//!   replica losing leadership or being removed, or by its request timing out (then forgotten).
//!
//! The map of replicas is swapped whole on metadata changes (`ArcSwap`): the produce and fetch
//! paths take no shared lock to find a replica.

pub mod fetcher;
pub mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::controller::image::{LocalChanges, MetadataImage};
use crate::controller::records::CLIENT_LISTENER;
use crate::error::BrokerError;
use crate::ids::{BrokerId, LeaderEpoch, Offset, PartitionId};
use crate::partition::manager::PartitionManager;
use crate::partition::{Appended, FetchRead, FetchView, Partition, ReadUpper};
use fetcher::{FetcherManager, FollowedPartition, FollowerLog};
use state::{
    AckOutcome, Assignment, Effects, IsrProposal, Refusal, ReplicaState, ReplicationSettings,
};

/// An ISR change a leader asks the controller to commit.
pub struct IsrRequest {
    pub topic_id: Uuid,
    pub partition: PartitionId,
    pub leader: BrokerId,
    pub proposal: IsrProposal,
    /// Told when the change fails, so its next tick may try again.
    pub replica: Weak<Replica>,
}

/// Who reads, for a fetch.
#[derive(Debug, Clone, Copy)]
pub enum Reader {
    /// A consumer; `from_follower_allowed` when its request version lets a follower answer
    /// (Fetch v11+, KIP-392).
    Consumer { from_follower_allowed: bool },
    /// A follower broker fetching to replicate, at this time.
    Follower { id: BrokerId, now_ms: i64 },
}

struct Inner {
    state: ReplicaState,
    /// Senders of waiting `acks=-1` produces, by the id the state machine knows them by.
    waiters: HashMap<u64, oneshot::Sender<AckOutcome>>,
    next_waiter: u64,
    /// The leader and epoch this replica fetches from, while following.
    following: Option<(BrokerId, LeaderEpoch)>,
    /// Whether the partition's HW is the state machine's (a sole replica's is its log end, kept
    /// by the partition itself).
    replicated: bool,
    /// The leader's high watermark in the latest fetch answer, while following (read only for
    /// DescribeLogDirs' offset lag).
    leader_high_watermark: Option<Offset>,
}

impl Inner {
    fn new(state: ReplicaState) -> Inner {
        Inner {
            state,
            waiters: HashMap::new(),
            next_waiter: 0,
            following: None,
            replicated: false,
            leader_high_watermark: None,
        }
    }
}

/// One partition replica this broker hosts.
pub struct Replica {
    topic_id: Uuid,
    partition: Arc<Partition>,
    inner: Mutex<Inner>,
    isr_requests: mpsc::UnboundedSender<IsrRequest>,
    me: Weak<Replica>,
}

/// How an `acks=-1` produce is answered: once durable here (when the flush policy says so)
/// and once the HW covers it.
#[must_use]
pub struct Ack {
    durable: Option<(Arc<Partition>, Offset)>,
    replicated: Option<Waiting>,
    outcome: Option<AckOutcome>,
}

struct Waiting {
    rx: oneshot::Receiver<AckOutcome>,
    id: u64,
    replica: Weak<Replica>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // Gave up (timed out) or done: the state machine forgets it either way.
        if let Some(r) = self.replica.upgrade() {
            r.lock().state.forget_waiting(self.id);
        }
    }
}

impl Ack {
    /// An answer that waits for nothing.
    pub fn now() -> Ack {
        Ack {
            durable: None,
            replicated: None,
            outcome: None,
        }
    }

    pub fn is_immediate(&self) -> bool {
        self.durable.is_none() && self.replicated.is_none() && self.outcome.is_none()
    }

    /// Resolves with the produce's answer; cancel-safe (dropping it forgets the wait).
    pub async fn wait(self) -> Result<(), BrokerError> {
        if let Some((partition, end)) = &self.durable {
            partition.wait_durable(*end).await;
        }
        let outcome = match self.replicated {
            Some(mut w) => (&mut w.rx).await.unwrap_or(AckOutcome::NotLeader),
            None => self.outcome.unwrap_or(AckOutcome::Acknowledged),
        };
        outcome_result(outcome)
    }
}

fn outcome_result(outcome: AckOutcome) -> Result<(), BrokerError> {
    match outcome {
        AckOutcome::Acknowledged => Ok(()),
        AckOutcome::NotEnoughReplicasAfterAppend { isr, required } => {
            Err(BrokerError::NotEnoughReplicasAfterAppend {
                isr,
                min_insync: required,
            })
        }
        AckOutcome::NotLeader => Err(BrokerError::NotLeaderOrFollower),
    }
}

fn refusal_error(r: Refusal) -> BrokerError {
    match r {
        Refusal::NotLeader | Refusal::NotAReplica(_) => BrokerError::NotLeaderOrFollower,
        Refusal::NotEnoughReplicas { isr, required } => BrokerError::NotEnoughReplicas {
            isr,
            min_insync: required,
        },
        Refusal::PastLogEnd => BrokerError::OffsetOutOfRange {
            log_start_offset: Offset(-1),
            log_end_offset: Offset(-1),
        },
    }
}

impl Replica {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic under the lock is a broker bug; the state machine's last state is consistent
        // (it asserts before it changes anything).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn partition(&self) -> &Arc<Partition> {
        &self.partition
    }

    pub fn is_leader(&self) -> bool {
        self.lock().state.is_leader()
    }

    /// The leader as this replica knows it.
    pub fn leader(&self) -> Option<BrokerId> {
        self.lock().state.leader()
    }

    /// How far this replica's log end is behind the partition's high watermark as this broker
    /// knows it (Kafka's DescribeLogDirs `offset_lag`): 0 on the leader; on a follower, behind
    /// the leader's HW in its latest fetch answer (0 before the first).
    pub fn offset_lag(&self) -> i64 {
        // The partition's lock is not taken under ours.
        let end = self.partition.log_end_offset();
        let inner = self.lock();
        if inner.state.is_leader() {
            return 0;
        }
        inner
            .leader_high_watermark
            .map_or(0, |hw| (hw.0 - end.0).max(0))
    }

    /// The ISR and each follower's lag behind the leader's log end (records, and ms since it
    /// was last caught up), while leading.
    pub fn isr(&self) -> Vec<BrokerId> {
        self.lock().state.isr().to_vec()
    }

    /// The followers in the ISR whose log holds `offset` (KIP-392 read replicas), by id.
    pub fn in_sync_followers_having(&self, offset: Offset) -> Vec<BrokerId> {
        let inner = self.lock();
        let isr = inner.state.isr();
        inner
            .state
            .followers()
            .filter(|(b, p)| isr.contains(b) && p.log_end.is_some_and(|end| end >= offset))
            .map(|(b, _)| b)
            .collect()
    }

    pub fn under_replicated(&self) -> bool {
        self.lock().state.under_replicated()
    }

    /// While leading: the largest lag of a follower behind the leader's log end, in records,
    /// and in ms since a follower was last caught up (a follower not heard from in this
    /// leadership counts from its start).
    pub fn follower_lag_max(&self, now_ms: i64) -> Option<(i64, i64)> {
        let inner = self.lock();
        if !inner.state.is_leader() {
            return None;
        }
        let end = inner.state.log_end();
        let mut lag = (0i64, 0i64);
        for (_, p) in inner.state.followers() {
            let records = p.log_end.map_or(end.0, |e| end.0 - e.0);
            let ms = if p.log_end == Some(end) {
                0
            } else {
                now_ms - p.last_caught_up_ms
            };
            lag = (lag.0.max(records), lag.1.max(ms));
        }
        Some(lag)
    }

    /// Carries out what the rules decided. Called with the lock held, so effects happen in the
    /// order the events did.
    fn carry_out(&self, inner: &mut Inner, effects: Effects) {
        if let Some(hw) = effects.high_watermark {
            if inner.replicated {
                self.partition.advance_high_watermark(hw);
            }
        }
        for (id, outcome) in effects.completed {
            if let Some(tx) = inner.waiters.remove(&id) {
                // The producer may have given up; nothing to tell then.
                let _ = tx.send(outcome);
            }
        }
        if let Some(proposal) = effects.propose_isr {
            let request = IsrRequest {
                topic_id: self.topic_id,
                partition: self.partition.id(),
                leader: inner.state.leader().unwrap_or(BrokerId(-1)),
                proposal,
                replica: self.me.clone(),
            };
            if let Err(unsent) = self.isr_requests.send(request) {
                // Nobody sends ISR changes (a test without the controller task).
                inner.state.isr_change_failed(&unsent.0.proposal, true);
            }
        }
    }

    /// A producer's record set: refused unless this broker leads, and with `acks=-1` unless the
    /// ISR has `min.insync.replicas` members; then appended, with the answer to wait for.
    pub fn append(
        &self,
        records: &Bytes,
        acks: i16,
        now_ms: i64,
    ) -> Result<(Appended, Ack), BrokerError> {
        let mut inner = self.lock();
        inner
            .state
            .check_produce(acks == -1)
            .map_err(refusal_error)?;
        let appended = self.partition.append(records, now_ms)?;
        let effects = inner.state.log_end_moved(appended.log_end_offset);
        self.carry_out(&mut inner, effects);
        if acks != -1 {
            return Ok((appended, Ack::now()));
        }
        let durable = appended.flush_before_ack.then(|| {
            self.partition.request_flush();
            (
                Arc::clone(&self.partition),
                Offset(appended.last_offset.0 + 1),
            )
        });
        let id = inner.next_waiter;
        inner.next_waiter += 1;
        let effects = inner
            .state
            .wait_for_ack(id, Offset(appended.last_offset.0 + 1));
        let mut ack = Ack {
            durable,
            replicated: None,
            outcome: None,
        };
        if let Some((_, outcome)) = effects.completed.iter().find(|(w, _)| *w == id) {
            ack.outcome = Some(*outcome);
        } else {
            let (tx, rx) = oneshot::channel();
            inner.waiters.insert(id, tx);
            ack.replicated = Some(Waiting {
                rx,
                id,
                replica: self.me.clone(),
            });
        }
        self.carry_out(&mut inner, effects);
        Ok((appended, ack))
    }

    /// A fetch: a consumer reads below the HW (from the leader, or from a follower when its
    /// request allows it); a follower reads to the log end, and its fetch offset is its progress.
    pub fn read(&self, request: FetchRead, reader: Reader) -> Result<FetchView, BrokerError> {
        match reader {
            Reader::Consumer {
                from_follower_allowed,
            } => {
                if !from_follower_allowed && !self.is_leader() {
                    return Err(BrokerError::NotLeaderOrFollower);
                }
                self.partition.read_for_fetch(FetchRead {
                    upper: ReadUpper::HighWatermark,
                    ..request
                })
            }
            Reader::Follower { id, now_ms } => {
                let mut inner = self.lock();
                if !inner.state.is_leader() {
                    return Err(BrokerError::NotLeaderOrFollower);
                }
                let mut view = self.partition.read_for_fetch(FetchRead {
                    upper: ReadUpper::LogEnd,
                    ..request
                })?;
                let effects = inner
                    .state
                    .follower_fetched(id, request.offset, now_ms)
                    .map_err(refusal_error)?;
                self.carry_out(&mut inner, effects);
                view.high_watermark = inner.state.high_watermark();
                Ok(view)
            }
        }
    }

    fn tick(&self, now_ms: i64) {
        let mut inner = self.lock();
        let effects = inner.state.tick(now_ms);
        self.carry_out(&mut inner, effects);
    }

    fn isr_change_failed(&self, proposal: &IsrProposal, definitive: bool) {
        self.lock().state.isr_change_failed(proposal, definitive);
    }

    /// Takes the partition's state from the image: leads, follows (returns whether the fetcher
    /// must (re)start: a new leader or epoch), or neither.
    fn take_assignment(
        &self,
        a: &Assignment,
        settings: ReplicationSettings,
        me: BrokerId,
        now_ms: i64,
    ) -> Result<bool, BrokerError> {
        let mut inner = self.lock();
        inner.state.set_settings(settings);
        let replicated = a.replicas.len() > 1 || a.leader != Some(me);
        if replicated != inner.replicated {
            self.partition.set_replicated(replicated);
            inner.replicated = replicated;
        }
        if a.leader == Some(me) {
            if !inner.state.is_leader() || inner.state.leader_epoch() != a.leader_epoch {
                self.partition.become_leader(a.leader_epoch)?;
            }
            inner.following = None;
            inner.leader_high_watermark = None;
            let effects = inner.state.become_leader(a, now_ms);
            self.carry_out(&mut inner, effects);
            Ok(false)
        } else {
            if inner.state.is_leader() || inner.state.leader_epoch() != a.leader_epoch {
                self.partition.become_follower(a.leader_epoch);
            }
            let effects = inner.state.become_follower(a);
            self.carry_out(&mut inner, effects);
            let target = a.leader.map(|l| (l, a.leader_epoch));
            let restart = target.is_some() && inner.following != target;
            if inner.following != target {
                // The last leader's HW says nothing about the new one's.
                inner.leader_high_watermark = None;
            }
            inner.following = target;
            Ok(restart)
        }
    }

    /// Removed from this broker: every waiting produce is answered NOT_LEADER_OR_FOLLOWER.
    fn retire(&self) {
        let mut inner = self.lock();
        let effects = inner.state.become_follower(&Assignment {
            leader: None,
            leader_epoch: LeaderEpoch(-1),
            partition_epoch: Default::default(),
            replicas: Vec::new(),
            isr: Vec::new(),
        });
        inner.following = None;
        self.carry_out(&mut inner, effects);
    }
}

/// The follower side: what the fetcher does to this replica's log.
impl FollowerLog for Replica {
    fn log_end_offset(&self) -> Offset {
        self.partition.log_end_offset()
    }

    fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.partition.latest_epoch()
    }

    fn truncate_to(&self, offset: Offset) -> Result<(), BrokerError> {
        let mut inner = self.lock();
        if inner.state.is_leader() {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        self.partition.truncate_to(offset)?;
        let effects = inner.state.log_end_moved(self.partition.log_end_offset());
        self.carry_out(&mut inner, effects);
        Ok(())
    }

    fn truncate_fully_and_start_at(&self, offset: Offset) -> Result<(), BrokerError> {
        let mut inner = self.lock();
        if inner.state.is_leader() {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        self.partition.truncate_fully_and_start_at(offset)?;
        inner.state.reset_log(offset);
        Ok(())
    }

    fn append_as_follower(&self, records: &Bytes) -> Result<Offset, BrokerError> {
        let mut inner = self.lock();
        if inner.state.is_leader() {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        let appended = match self.partition.append_as_follower(records) {
            Ok(appended) => appended,
            Err(e) => {
                // Some of a large set may have landed before the failure.
                let effects = inner.state.log_end_moved(self.partition.log_end_offset());
                self.carry_out(&mut inner, effects);
                return Err(e);
            }
        };
        if let Some(m) = crate::metrics::ReplicationMetrics::get() {
            m.bytes_in(records.len());
        }
        let effects = inner.state.log_end_moved(appended.log_end_offset);
        self.carry_out(&mut inner, effects);
        Ok(appended.log_end_offset)
    }

    fn wait_flushed(&self, end: Offset) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.partition.flush_before_acks() {
                self.partition.wait_durable(end).await;
            }
        })
    }

    fn epoch_end_offset(&self, epoch: LeaderEpoch) -> Option<Offset> {
        self.partition
            .end_offset_for_epoch(epoch)
            .map(|(_, end)| end)
    }

    fn leader_progress(&self, high_watermark: Offset, _log_start: Offset) {
        let mut inner = self.lock();
        inner.leader_high_watermark = Some(high_watermark);
        let effects = inner.state.leader_high_watermark(high_watermark);
        self.carry_out(&mut inner, effects);
    }
}

type TopicReplicas = Arc<Vec<Option<Arc<Replica>>>>;

/// Every replica this broker hosts, by topic name and partition.
pub struct ReplicaManager {
    me: BrokerId,
    config: Arc<BrokerConfig>,
    replica_lag_time_max_ms: i64,
    replicas: ArcSwap<HashMap<Arc<str>, TopicReplicas>>,
    /// Serialises changes to the map (metadata changes, one at a time).
    changing: Mutex<()>,
    isr_requests: mpsc::UnboundedSender<IsrRequest>,
    isr_receiver: Mutex<Option<mpsc::UnboundedReceiver<IsrRequest>>>,
    fetchers: FetcherManager,
}

impl ReplicaManager {
    pub fn new(
        me: BrokerId,
        config: Arc<BrokerConfig>,
        replica_lag_time_max_ms: i64,
        fetchers: FetcherManager,
    ) -> ReplicaManager {
        let (tx, rx) = mpsc::unbounded_channel();
        ReplicaManager {
            me,
            config,
            replica_lag_time_max_ms,
            replicas: ArcSwap::from_pointee(HashMap::new()),
            changing: Mutex::new(()),
            isr_requests: tx,
            isr_receiver: Mutex::new(Some(rx)),
            fetchers,
        }
    }

    /// The ISR changes leaders propose, for the task that commits them (taken once).
    pub fn take_isr_requests(&self) -> Option<mpsc::UnboundedReceiver<IsrRequest>> {
        self.isr_receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Tells a replica its ISR change did not commit: refused by the controller
    /// (`definitive`), or of unknown fate (it may still commit).
    pub fn isr_change_failed(request: &IsrRequest, definitive: bool) {
        if let Some(r) = request.replica.upgrade() {
            r.isr_change_failed(&request.proposal, definitive);
        }
    }

    /// The replicas of `topic` hosted here, by partition number.
    pub fn topic(&self, topic: &str) -> Option<TopicReplicas> {
        self.replicas.load().get(topic).cloned()
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Replica>> {
        let i = usize::try_from(partition).ok()?;
        self.topic(topic)?.get(i).cloned().flatten()
    }

    /// Every hosted replica.
    pub fn all(&self) -> Vec<Arc<Replica>> {
        self.replicas
            .load()
            .values()
            .flat_map(|t| t.iter().flatten().cloned())
            .collect()
    }

    /// Lag checks of every partition this broker leads (Kafka runs them every half
    /// `replica.lag.time.max.ms`), and the replication gauges: partitions led here with an ISR
    /// smaller than their replicas, hosted partitions without a leader, the largest follower lag.
    pub fn tick(&self, now_ms: i64) {
        let mut under_replicated = 0;
        let mut offline = 0;
        let mut lag = (0i64, 0i64);
        for r in self.all() {
            r.tick(now_ms);
            under_replicated += usize::from(r.under_replicated());
            offline += usize::from(r.leader().is_none());
            if let Some((records, ms)) = r.follower_lag_max(now_ms) {
                lag = (lag.0.max(records), lag.1.max(ms));
            }
        }
        if let Some(m) = crate::metrics::ReplicationMetrics::get() {
            m.partitions(under_replicated, offline);
            m.follower_lag_max(lag.0, lag.1);
        }
    }

    pub fn tick_interval_ms(&self) -> i64 {
        (self.replica_lag_time_max_ms / 2).max(1)
    }

    /// Stops fetching the partitions `changes` removes from this broker, before
    /// `PartitionManager::apply` closes them (a fetcher must not append to a closing log).
    pub fn stop_fetching_removed(&self, changes: &LocalChanges) {
        for (_, name, p) in &changes.removes {
            self.fetchers.remove_partition(name, *p);
        }
    }

    /// Brings the replicas in line with `changes` (after `PartitionManager::apply` opened or
    /// closed their partitions): new roles, ISRs and settings; fetchers started or stopped.
    pub fn apply(
        &self,
        changes: &LocalChanges,
        image: &MetadataImage,
        partitions: &PartitionManager,
        now_ms: i64,
    ) -> Result<(), BrokerError> {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let mut map: HashMap<Arc<str>, TopicReplicas> = self.replicas.load().as_ref().clone();
        let mut retired = Vec::new();
        for (_, name, p) in &changes.removes {
            if let Some(r) = take(&mut map, name, p.0) {
                self.fetchers.remove_partition(name, *p);
                retired.push(r);
            }
        }
        let mut first_error = None;
        for local in changes.leads.iter().chain(&changes.follows) {
            let Some((partition, topic_id)) =
                partitions.hosted(&local.topic_name, local.partition.0)
            else {
                // It failed to open; `PartitionManager::apply` reported it.
                continue;
            };
            let Some(image_partition) = image.partition(local.topic_id, local.partition) else {
                continue;
            };
            let a = Assignment {
                leader: image_partition.leader,
                leader_epoch: image_partition.leader_epoch,
                partition_epoch: image_partition.partition_epoch,
                replicas: image_partition.replicas.clone(),
                isr: image_partition.isr.clone(),
            };
            let overrides = image
                .topic(local.topic_id)
                .map(|t| t.overrides())
                .unwrap_or_default();
            let settings = ReplicationSettings {
                replica_lag_time_max_ms: self.replica_lag_time_max_ms,
                min_insync_replicas: crate::config::min_insync_replicas(&self.config, &overrides),
            };
            let existing = get_in(&map, &local.topic_name, local.partition.0)
                .filter(|r| Arc::ptr_eq(&r.partition, &partition) && r.topic_id == topic_id);
            let replica = match existing {
                Some(r) => r,
                None => {
                    if let Some(old) = take(&mut map, &local.topic_name, local.partition.0) {
                        // Before the new replica's fetcher may be added under the same name.
                        self.fetchers
                            .remove_partition(&local.topic_name, local.partition);
                        retired.push(old);
                    }
                    // The checkpointed HW, not the log end a sole replica reports: a restarted
                    // follower may have to truncate below its log end.
                    let state = ReplicaState::new(
                        self.me,
                        settings,
                        partition.log_end_offset(),
                        partition.stored_high_watermark(),
                    );
                    let r = Arc::new_cyclic(|me| Replica {
                        topic_id,
                        partition: Arc::clone(&partition),
                        inner: Mutex::new(Inner::new(state)),
                        isr_requests: self.isr_requests.clone(),
                        me: me.clone(),
                    });
                    put(
                        &mut map,
                        &local.topic_name,
                        local.partition.0,
                        Arc::clone(&r),
                    );
                    r
                }
            };
            match replica.take_assignment(&a, settings, self.me, now_ms) {
                Ok(true) => {
                    let leader = a.leader.unwrap_or(BrokerId(-1));
                    match image
                        .broker(leader)
                        .and_then(|b| b.endpoint(CLIENT_LISTENER))
                    {
                        Some(e) => self.fetchers.add_partition(
                            leader,
                            format!("{}:{}", e.host, e.port),
                            FollowedPartition {
                                topic: local.topic_name.clone(),
                                topic_id,
                                partition: local.partition,
                                leader_epoch: a.leader_epoch,
                            },
                            Arc::clone(&replica) as Arc<dyn FollowerLog>,
                        ),
                        None => {
                            tracing::warn!(topic = %local.topic_name, partition = %local.partition, leader = leader.0, "the leader has no registered endpoint; not fetching");
                        }
                    }
                }
                Ok(false) => {
                    if a.leader == Some(self.me) || a.leader.is_none() {
                        self.fetchers
                            .remove_partition(&local.topic_name, local.partition);
                    }
                }
                Err(e) => {
                    tracing::error!(topic = %local.topic_name, partition = %local.partition, error = %e, "taking a new role failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        self.replicas.store(Arc::new(map));
        for r in retired {
            r.retire();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops every fetcher (shutdown).
    pub async fn shutdown(&self) {
        self.fetchers.shutdown().await;
    }
}

fn get_in(map: &HashMap<Arc<str>, TopicReplicas>, topic: &str, p: i32) -> Option<Arc<Replica>> {
    let i = usize::try_from(p).ok()?;
    map.get(topic)?.get(i).cloned().flatten()
}

fn take(map: &mut HashMap<Arc<str>, TopicReplicas>, topic: &str, p: i32) -> Option<Arc<Replica>> {
    let i = usize::try_from(p).ok()?;
    let slots = map.get(topic)?;
    let taken = slots.get(i).cloned().flatten()?;
    let mut slots = slots.as_ref().clone();
    slots[i] = None;
    while matches!(slots.last(), Some(None)) {
        slots.pop();
    }
    if slots.is_empty() {
        map.remove(topic);
    } else {
        map.insert(Arc::from(topic), Arc::new(slots));
    }
    Some(taken)
}

fn put(map: &mut HashMap<Arc<str>, TopicReplicas>, topic: &str, p: i32, r: Arc<Replica>) {
    let Ok(i) = usize::try_from(p) else {
        return;
    };
    let mut slots = map
        .get(topic)
        .map(|s| s.as_ref().clone())
        .unwrap_or_default();
    if slots.len() <= i {
        slots.resize(i + 1, None);
    }
    slots[i] = Some(r);
    map.insert(Arc::from(topic), Arc::new(slots));
}

/// Broker id of [`sole_leader_for_test`] replicas.
#[cfg(test)]
const TEST_BROKER: BrokerId = BrokerId(0);

/// A replica of `partition` that leads it alone, without a manager (unit tests of internal
/// writers such as the offset store).
#[cfg(test)]
pub(crate) fn sole_leader_for_test(partition: Arc<Partition>) -> Arc<Replica> {
    let settings = ReplicationSettings {
        replica_lag_time_max_ms: 30_000,
        min_insync_replicas: 1,
    };
    let state = ReplicaState::new(
        TEST_BROKER,
        settings,
        partition.log_end_offset(),
        partition.stored_high_watermark(),
    );
    let (isr_requests, _) = mpsc::unbounded_channel();
    let r = Arc::new_cyclic(|me| Replica {
        topic_id: Uuid::nil(),
        partition,
        inner: Mutex::new(Inner::new(state)),
        isr_requests,
        me: me.clone(),
    });
    r.set_leader_for_test(Some(TEST_BROKER), LeaderEpoch(0));
    r
}

#[cfg(test)]
impl Replica {
    /// Takes the role an image giving `leader` at `epoch` would (this broker is
    /// [`TEST_BROKER`]), as `ReplicaManager::apply` does.
    pub(crate) fn set_leader_for_test(&self, leader: Option<BrokerId>, epoch: LeaderEpoch) {
        self.set_assignment_for_test(leader, epoch, &[TEST_BROKER]);
    }

    /// [`Replica::set_leader_for_test`] with `replicas` (all in sync) instead of this broker
    /// alone: while leading, a write waits for the others to fetch it.
    pub(crate) fn set_assignment_for_test(
        &self,
        leader: Option<BrokerId>,
        epoch: LeaderEpoch,
        replicas: &[BrokerId],
    ) {
        let a = Assignment {
            leader,
            leader_epoch: epoch,
            partition_epoch: Default::default(),
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
        };
        let settings = ReplicationSettings {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
        };
        if let Err(e) = self.take_assignment(&a, settings, TEST_BROKER, 0) {
            panic!("taking a role failed: {e}");
        }
    }
}
