//! Group membership as a client sees it: finding the group's coordinator, the JoinGroup /
//! SyncGroup round trip (running the assignor when this member leads), the heartbeat task,
//! LeaveGroup, and committed offsets (OffsetCommit / OffsetFetch). The consumer drives it; it
//! never fetches records itself.
//!
//! Invariants:
//! - the coordinator is reached on a connection of its own, so a long-polling fetch to the same
//!   broker never delays a heartbeat, and a JoinGroup the coordinator holds for the whole
//!   rebalance never delays a fetch;
//! - `member_id` is the coordinator's word: set from JoinGroup answers (MEMBER_ID_REQUIRED hands
//!   it out on the first try, KIP-394), cleared on UNKNOWN_MEMBER_ID; `generation` is -1 outside
//!   a completed SyncGroup;
//! - the heartbeat task only reports: it sends one Heartbeat per `heartbeat.interval.ms` for the
//!   generation it was started with and, on an error that needs the consumer, records a
//!   [`RejoinReason`] (and stops, except on REBALANCE_IN_PROGRESS, where its heartbeats still
//!   keep the session alive until the consumer rejoins). The consumer acts on it in its next
//!   `poll`; nothing here changes the assignment behind the consumer's back;
//! - a consumer that has not polled for `max.poll.interval.ms` (the rebalance timeout) is
//!   taken out of the group by its heartbeat task (LeaveGroup, unless static; then `Lost`), as
//!   Java's is, so a stuck application does not hold its partitions forever;
//! - every request field that exists only in some versions is set only at those versions;
//! - every wait is bounded: retries of coordinator errors back off by `retry.backoff.ms` and give
//!   up after the rebalance timeout (join) or a fixed number of attempts (commits, fetches).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::assignor::{self, Assignor, Member, RebalanceProtocol};
use super::protocol::{Assignment, Subscription, Tp, PROTOCOL_TYPE};
use crate::cluster::Cluster;
use crate::connection::Connection;
use crate::error::{ClientError, Result};

/// How many times a commit or an offset fetch is tried before its error is returned.
const OFFSET_ATTEMPTS_MAX: u32 = 5;
/// FindCoordinator key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;

/// Group settings of a consumer (Kafka's names in the field docs).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id`: static membership (KIP-345); such a member keeps its partitions
    /// across restarts within the session timeout and does not send LeaveGroup on close.
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `max.poll.interval.ms`, sent as the rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `partition.assignment.strategy`, in order of preference.
    pub assignment_strategy: Vec<String>,
    /// `enable.auto.commit`.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval_ms: u64,
    /// `metadata.max.age.ms`: how often a pattern subscription re-reads the topic list.
    pub metadata_max_age_ms: u64,
    /// `retry.backoff.ms`.
    pub retry_backoff_ms: u64,
}

impl GroupConfig {
    pub fn new(group_id: impl Into<String>) -> GroupConfig {
        GroupConfig {
            group_id: group_id.into(),
            group_instance_id: None,
            session_timeout_ms: 45_000,
            rebalance_timeout_ms: 300_000,
            heartbeat_interval_ms: 3_000,
            assignment_strategy: vec!["range".into(), "cooperative-sticky".into()],
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            metadata_max_age_ms: 300_000,
            retry_backoff_ms: 100,
        }
    }
}

/// Why the consumer must act on its membership (set by the heartbeat task or a commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejoinReason {
    /// The group is rebalancing: rejoin, keeping the partitions (they are still ours).
    Rebalance,
    /// The coordinator no longer knows this generation (ILLEGAL_GENERATION) or member
    /// (UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID): the partitions are lost, then rejoin.
    Lost,
    /// The coordinator moved or stopped answering: find it again; membership is kept.
    CoordinatorLost,
}

/// Where the heartbeat task leaves its news; taken by the consumer.
#[derive(Debug, Default)]
pub struct Signal(Mutex<Option<RejoinReason>>);

impl Signal {
    fn set(&self, reason: RejoinReason) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A loss outranks a rebalance, which outranks a coordinator move.
        let rank = |r: &RejoinReason| match r {
            RejoinReason::Lost => 2,
            RejoinReason::Rebalance => 1,
            RejoinReason::CoordinatorLost => 0,
        };
        if slot.as_ref().is_none_or(|old| rank(old) < rank(&reason)) {
            *slot = Some(reason);
        }
    }

    pub fn take(&self) -> Option<RejoinReason> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The outcome of a completed join + sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub generation: i32,
    pub member_id: String,
    pub protocol: RebalanceProtocol,
    pub assignment: Assignment,
}

/// One consumer's membership of one group.
pub struct Coordinator {
    cluster: Arc<Cluster>,
    config: GroupConfig,
    assignors: Vec<Arc<dyn Assignor>>,
    protocol: RebalanceProtocol,
    conn: Option<Arc<Connection>>,
    member_id: String,
    generation: i32,
    signal: Arc<Signal>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    /// When the consumer last polled, shared with the heartbeat task (`max.poll.interval.ms`).
    last_poll: Arc<Mutex<Instant>>,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// LeaveGroup for `member_id` at `version`: batched members from v3, with a reason from v5.
fn leave_request(group_id: &str, member_id: &str, reason: &str, version: i16) -> LeaveGroupRequest {
    let mut request = LeaveGroupRequest::default().with_group_id(GroupId(str_bytes(group_id)));
    if version >= 3 {
        let mut me = MemberIdentity::default().with_member_id(str_bytes(member_id));
        if version >= 5 {
            me.reason = Some(str_bytes(reason));
        }
        request.members = vec![me];
    } else {
        request.member_id = str_bytes(member_id);
    }
    request
}

fn error_of(code: i16) -> Option<ResponseError> {
    (code != 0).then(|| ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)))
}

fn is_coordinator_error(e: &ClientError) -> bool {
    match e {
        ClientError::Kafka { error, .. } => matches!(
            error,
            ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress
        ),
        ClientError::ConnectionLost { .. }
        | ClientError::Connect { .. }
        | ClientError::Timeout { .. }
        | ClientError::NoBrokerReachable { .. } => true,
        _ => false,
    }
}

impl Coordinator {
    /// Refuses an empty group id and unknown assignor names (with the name).
    pub fn new(cluster: Arc<Cluster>, config: GroupConfig) -> Result<Coordinator> {
        if config.group_id.is_empty() {
            return Err(ClientError::Invalid("group.id must not be empty".into()));
        }
        let mut assignors = Vec::new();
        for name in &config.assignment_strategy {
            let a = assignor::by_name(name).ok_or_else(|| {
                ClientError::Invalid(format!(
                    "unknown partition.assignment.strategy '{name}' \
                     (range, roundrobin, cooperative-sticky)"
                ))
            })?;
            assignors.push(a);
        }
        if assignors.is_empty() {
            return Err(ClientError::Invalid(
                "partition.assignment.strategy must name at least one assignor".into(),
            ));
        }
        let protocol = assignor::common_protocol(&assignors);
        Ok(Coordinator {
            cluster,
            config,
            assignors,
            protocol,
            conn: None,
            member_id: String::new(),
            generation: -1,
            signal: Arc::default(),
            heartbeat: None,
            last_poll: Arc::new(Mutex::new(Instant::now())),
        })
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }
    pub fn protocol(&self) -> RebalanceProtocol {
        self.protocol
    }
    pub fn member_id(&self) -> &str {
        &self.member_id
    }
    pub fn generation(&self) -> i32 {
        self.generation
    }
    /// The consumer is polling: it is alive for `max.poll.interval.ms` more.
    pub fn polled(&self) {
        *self.last_poll.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }

    fn backoff(&self) -> Duration {
        Duration::from_millis(self.config.retry_backoff_ms.max(1))
    }

    /// The coordinator's connection, finding the coordinator first if it is not known.
    pub async fn coordinator(&mut self) -> Result<Arc<Connection>> {
        if let Some(c) = self.conn.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        let conn = find_coordinator(&self.cluster, &self.config.group_id).await?;
        self.conn = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// The coordinator's connection if it is known and open (no request is sent).
    pub fn known_connection(&self) -> Option<Arc<Connection>> {
        self.conn.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// Forgets the coordinator (it moved or stopped answering); the next request finds it.
    pub fn mark_coordinator_unknown(&mut self) {
        if let Some(c) = self.conn.take() {
            c.close("coordinator changed");
        }
    }

    /// After the coordinator moved: find it again and resume heartbeats (membership is kept;
    /// if the new coordinator does not know us, its heartbeat answer says so).
    pub async fn rediscover(&mut self) -> Result<()> {
        self.mark_coordinator_unknown();
        self.coordinator().await?;
        if self.generation >= 0 {
            self.start_heartbeat();
        }
        Ok(())
    }

    /// Forgets the generation (the partitions are lost); with `forget_member`, the member id too.
    pub fn reset_generation(&mut self, forget_member: bool) {
        self.stop_heartbeat();
        self.generation = -1;
        if forget_member {
            self.member_id.clear();
        }
    }

    /// Joins the group (JoinGroup, then SyncGroup) subscribed to `topics` and owning `owned`;
    /// retries until it has an assignment or the rebalance timeout passes.
    pub async fn join(&mut self, topics: &[String], owned: &[Tp]) -> Result<Joined> {
        self.stop_heartbeat();
        let deadline = Instant::now()
            + Duration::from_millis(self.config.rebalance_timeout_ms.max(0) as u64)
            + Duration::from_millis(self.config.session_timeout_ms.max(0) as u64);
        let mut last_error: Option<ClientError> = None;
        // Bounded by the deadline; the count is a guard against a coordinator that answers
        // instantly with a retriable error forever.
        for attempt in 0..10_000u32 {
            if Instant::now() >= deadline {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(self.backoff()).await;
            }
            match self.join_once(topics, owned).await {
                Ok(Some(joined)) => {
                    self.start_heartbeat();
                    return Ok(joined);
                }
                Ok(None) => continue, // the protocol asked for another round at once
                Err(e) if is_coordinator_error(&e) => {
                    tracing::debug!(error = %e, "group coordinator unavailable; finding it again");
                    self.mark_coordinator_unknown();
                    last_error = Some(e);
                }
                Err(e) if e.is_retriable() => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(ClientError::Timeout {
            api: "JoinGroup",
            timeout_ms: self.config.rebalance_timeout_ms.max(0) as u64,
        }))
    }

    /// One JoinGroup (+ SyncGroup); `Ok(None)` when the answer asks for another JoinGroup.
    async fn join_once(&mut self, topics: &[String], owned: &[Tp]) -> Result<Option<Joined>> {
        let conn = self.coordinator().await?;
        let mut subscription = Subscription::new(topics.iter().cloned());
        if self.protocol == RebalanceProtocol::Cooperative {
            subscription.owned_partitions = owned.to_vec();
            subscription.generation = self.generation;
        }
        let metadata = subscription.encode()?;
        let protocols = self
            .assignors
            .iter()
            .map(|a| {
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(a.name()))
                    .with_metadata(metadata.clone())
            })
            .collect();
        let version = conn
            .version_for(
                kafka_protocol::messages::ApiKey::JoinGroup,
                <JoinGroupRequest as kafka_protocol::protocol::Message>::VERSIONS,
            )
            .ok_or(ClientError::Unsupported { api: "JoinGroup" })?;
        let mut request = JoinGroupRequest::default()
            .with_group_id(GroupId(str_bytes(&self.config.group_id)))
            .with_session_timeout_ms(self.config.session_timeout_ms)
            .with_member_id(str_bytes(&self.member_id))
            .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
            .with_protocols(protocols);
        if version >= 1 {
            request.rebalance_timeout_ms = self.config.rebalance_timeout_ms;
        }
        if version >= 5 {
            request.group_instance_id = self.config.group_instance_id.as_deref().map(str_bytes);
        } else if self.config.group_instance_id.is_some() {
            return Err(ClientError::Unsupported {
                api: "JoinGroup with group.instance.id (v5+)",
            });
        }
        let response = conn.send_at(&request, version).await?;
        match error_of(response.error_code) {
            None => {}
            Some(ResponseError::MemberIdRequired) => {
                // KIP-394: the coordinator hands out our id; join again with it, at once.
                self.member_id = response.member_id.to_string();
                return Ok(None);
            }
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                return Ok(None);
            }
            Some(ResponseError::RebalanceInProgress) => return Ok(None),
            Some(_) => {
                return Err(ClientError::from_code(
                    response.error_code,
                    format!("JoinGroup of group '{}'", self.config.group_id),
                )
                .unwrap_or(ClientError::Invalid("JoinGroup failed".into())))
            }
        }
        self.member_id = response.member_id.to_string();
        let generation = response.generation_id;
        let protocol_name = response
            .protocol_name
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let chosen = self
            .assignors
            .iter()
            .find(|a| a.name() == protocol_name)
            .cloned()
            .ok_or_else(|| ClientError::Malformed {
                api: "JoinGroup",
                reason: format!("the coordinator chose protocol '{protocol_name}', not ours"),
            })?;

        let mut assignments = Vec::new();
        if *response.leader == *self.member_id && !response.skip_assignment {
            let members: Vec<Member> = response
                .members
                .iter()
                .map(|m| Member {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
                    // A member whose metadata we cannot read gets nothing rather than failing
                    // the whole group.
                    subscription: Subscription::decode(&m.metadata).unwrap_or_else(|e| {
                        tracing::warn!(member = %m.member_id, error = %e, "unreadable subscription");
                        Subscription::new(Vec::new())
                    }),
                })
                .collect();
            let partitions = self.partition_counts(&members).await?;
            let plan = chosen.assign(&partitions, &members);
            for (member, tps) in plan {
                assignments.push(
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(member))
                        .with_assignment(Assignment::new(tps).encode()?),
                );
            }
        }

        let version = conn
            .version_for(
                kafka_protocol::messages::ApiKey::SyncGroup,
                <SyncGroupRequest as kafka_protocol::protocol::Message>::VERSIONS,
            )
            .ok_or(ClientError::Unsupported { api: "SyncGroup" })?;
        let mut sync = SyncGroupRequest::default()
            .with_group_id(GroupId(str_bytes(&self.config.group_id)))
            .with_generation_id(generation)
            .with_member_id(str_bytes(&self.member_id))
            .with_assignments(assignments);
        if version >= 3 {
            sync.group_instance_id = self.config.group_instance_id.as_deref().map(str_bytes);
        }
        if version >= 5 {
            sync.protocol_type = Some(StrBytes::from_static_str(PROTOCOL_TYPE));
            sync.protocol_name = Some(str_bytes(&protocol_name));
        }
        let answer = conn.send_at(&sync, version).await?;
        match error_of(answer.error_code) {
            None => {}
            Some(ResponseError::RebalanceInProgress) | Some(ResponseError::IllegalGeneration) => {
                return Ok(None)
            }
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                return Ok(None);
            }
            Some(_) => {
                return Err(ClientError::from_code(
                    answer.error_code,
                    format!("SyncGroup of group '{}'", self.config.group_id),
                )
                .unwrap_or(ClientError::Invalid("SyncGroup failed".into())))
            }
        }
        let assignment = Assignment::decode(&answer.assignment)?;
        self.generation = generation;
        Ok(Some(Joined {
            generation,
            member_id: self.member_id.clone(),
            protocol: chosen.protocol(),
            assignment,
        }))
    }

    /// Partition counts of every topic the members subscribe to (fresh metadata; topics that do
    /// not exist are left out, as Kafka's leader does).
    async fn partition_counts(&self, members: &[Member]) -> Result<BTreeMap<String, i32>> {
        let topics: BTreeSet<String> = members
            .iter()
            .flat_map(|m| m.subscription.topics.iter().cloned())
            .collect();
        if topics.is_empty() {
            return Ok(BTreeMap::new());
        }
        let topics: Vec<String> = topics.into_iter().collect();
        let metadata = self.cluster.refresh(&topics).await?;
        Ok(topics
            .iter()
            .filter_map(|t| {
                let info = metadata.topics.get(t).filter(|i| i.error_code == 0)?;
                Some((t.clone(), info.partitions.len() as i32))
            })
            .collect())
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    fn start_heartbeat(&mut self) {
        self.stop_heartbeat();
        let Some(conn) = self.conn.clone() else {
            self.signal.set(RejoinReason::CoordinatorLost);
            return;
        };
        let mut request = HeartbeatRequest::default()
            .with_group_id(GroupId(str_bytes(&self.config.group_id)))
            .with_generation_id(self.generation)
            .with_member_id(str_bytes(&self.member_id));
        let instance = self.config.group_instance_id.as_deref().map(str_bytes);
        let interval = Duration::from_millis(self.config.heartbeat_interval_ms.max(1));
        let signal = Arc::clone(&self.signal);
        self.polled();
        let last_poll = Arc::clone(&self.last_poll);
        let poll_interval_max =
            Duration::from_millis(self.config.rebalance_timeout_ms.max(0) as u64);
        // Sent when the consumer stopped polling (static members just stop heartbeating).
        let leave = self
            .config
            .group_instance_id
            .is_none()
            .then(|| self.config.group_id.clone());
        let member_id = self.member_id.clone();
        self.heartbeat = Some(tokio::spawn(async move {
            let version = conn.version_for(
                kafka_protocol::messages::ApiKey::Heartbeat,
                <HeartbeatRequest as kafka_protocol::protocol::Message>::VERSIONS,
            );
            let Some(version) = version else {
                signal.set(RejoinReason::CoordinatorLost);
                return;
            };
            if version >= 3 {
                request.group_instance_id = instance;
            }
            let mut next = Instant::now() + interval;
            loop {
                tokio::time::sleep_until(next).await;
                next = Instant::now() + interval;
                let polled_at = *last_poll.lock().unwrap_or_else(|p| p.into_inner());
                if polled_at.elapsed() > poll_interval_max {
                    // Java's rule: a consumer that stops polling for max.poll.interval.ms
                    // leaves the group so its partitions move on; it rejoins on its next poll.
                    tracing::warn!("no poll within max.poll.interval.ms; leaving the group");
                    if let Some(group_id) = leave {
                        if let Some(v) = conn.version_for(
                            kafka_protocol::messages::ApiKey::LeaveGroup,
                            <LeaveGroupRequest as kafka_protocol::protocol::Message>::VERSIONS,
                        ) {
                            let reason = "consumer poll timeout has expired";
                            let request = leave_request(&group_id, &member_id, reason, v);
                            let _ = conn.send_at(&request, v).await;
                        }
                    }
                    signal.set(RejoinReason::Lost);
                    return;
                }
                let answer = conn.send_at(&request, version).await;
                let code = match answer {
                    Ok(r) => r.error_code,
                    Err(e) => {
                        tracing::debug!(error = %e, "heartbeat failed");
                        signal.set(RejoinReason::CoordinatorLost);
                        return;
                    }
                };
                match error_of(code) {
                    None => {}
                    Some(ResponseError::RebalanceInProgress) => {
                        // Keep heartbeating until the consumer rejoins (its next poll): these
                        // heartbeats still keep the session alive while the application works.
                        signal.set(RejoinReason::Rebalance);
                    }
                    Some(
                        ResponseError::IllegalGeneration
                        | ResponseError::UnknownMemberId
                        | ResponseError::FencedInstanceId,
                    ) => {
                        signal.set(RejoinReason::Lost);
                        return;
                    }
                    Some(
                        ResponseError::NotCoordinator
                        | ResponseError::CoordinatorNotAvailable
                        | ResponseError::CoordinatorLoadInProgress,
                    ) => {
                        signal.set(RejoinReason::CoordinatorLost);
                        return;
                    }
                    Some(other) => tracing::warn!(error = ?other, "heartbeat error"),
                }
            }
        }));
    }

    /// Leaves the group (LeaveGroup), unless this is a static member: those keep their place
    /// for the session timeout so a restart does not rebalance. Errors are logged, not returned:
    /// the coordinator drops us after the session timeout anyway.
    pub async fn leave(&mut self, reason: &str) {
        self.stop_heartbeat();
        let static_member = self.config.group_instance_id.is_some();
        if self.member_id.is_empty() || static_member {
            self.generation = -1;
            return;
        }
        if let Ok(conn) = self.coordinator().await {
            let version = conn.version_for(
                kafka_protocol::messages::ApiKey::LeaveGroup,
                <LeaveGroupRequest as kafka_protocol::protocol::Message>::VERSIONS,
            );
            if let Some(version) = version {
                let request =
                    leave_request(&self.config.group_id, &self.member_id, reason, version);
                match conn.send_at(&request, version).await {
                    Ok(r) => {
                        let code = r
                            .members
                            .iter()
                            .map(|m| m.error_code)
                            .find(|c| *c != 0)
                            .unwrap_or(r.error_code);
                        if code != 0 {
                            tracing::debug!(code, "LeaveGroup answered with an error");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "LeaveGroup failed"),
                }
            }
        }
        self.generation = -1;
        self.member_id.clear();
    }

    /// Who a commit is made as: this member in its generation, or a "simple" commit
    /// (generation -1, no member id) when not in the group.
    pub fn commit_as(&self) -> CommitAs {
        CommitAs {
            generation: self.generation,
            member_id: if self.generation >= 0 {
                self.member_id.clone()
            } else {
                String::new()
            },
            group_instance_id: self.config.group_instance_id.clone(),
        }
    }

    /// Commits `offsets` (the next offset to read per partition) for this member's generation
    /// (or as a "simple" commit, generation -1, when not in the group). ILLEGAL_GENERATION /
    /// UNKNOWN_MEMBER_ID mean the partitions are no longer ours: the signal says so.
    pub async fn commit(&mut self, offsets: &BTreeMap<Tp, i64>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut last = None;
        for attempt in 0..OFFSET_ATTEMPTS_MAX {
            if attempt > 0 {
                tokio::time::sleep(self.backoff()).await;
            }
            let conn = match self.coordinator().await {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let member = self.commit_as();
            match commit_offsets(&conn, &self.config.group_id, &member, offsets).await {
                Ok(()) => return Ok(()),
                Err(e) if is_coordinator_error(&e) => {
                    self.mark_coordinator_unknown();
                    last = Some(e);
                }
                Err(e) => {
                    if let ClientError::Kafka { error, .. } = &e {
                        match error {
                            ResponseError::IllegalGeneration
                            | ResponseError::UnknownMemberId
                            | ResponseError::FencedInstanceId => {
                                self.signal.set(RejoinReason::Lost)
                            }
                            ResponseError::RebalanceInProgress => {
                                self.signal.set(RejoinReason::Rebalance)
                            }
                            _ => {}
                        }
                    }
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or(ClientError::Invalid("commit failed".into())))
    }

    /// The committed offsets of `partitions` (absent: nothing committed).
    pub async fn committed(&mut self, partitions: &[Tp]) -> Result<BTreeMap<Tp, i64>> {
        let mut last = None;
        for attempt in 0..OFFSET_ATTEMPTS_MAX {
            if attempt > 0 {
                tokio::time::sleep(self.backoff()).await;
            }
            let conn = match self.coordinator().await {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match fetch_offsets(&conn, &self.config.group_id, Some(partitions)).await {
                Ok(offsets) => return Ok(offsets),
                Err(e) if is_coordinator_error(&e) => {
                    self.mark_coordinator_unknown();
                    last = Some(e);
                }
                Err(e) if e.is_retriable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::Invalid("offset fetch failed".into())))
    }
}

/// Finds the coordinator of `group_id` (FindCoordinator at any broker, retried while the
/// coordinator is not available, up to the connect timeout) and opens a connection of its own.
pub async fn find_coordinator(cluster: &Cluster, group_id: &str) -> Result<Arc<Connection>> {
    let deadline = Instant::now() + cluster.config().connection.connect_timeout;
    let mut last = None;
    for attempt in 0..1_000u32 {
        if attempt > 0 {
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match find_coordinator_once(cluster, group_id).await {
            Ok(addr) => {
                return Connection::connect(&addr, cluster.config().connection.clone())
                    .await
                    .map(Arc::new)
            }
            Err(e) if e.is_retriable() => last = Some(e),
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(last.unwrap_or(ClientError::Timeout {
        api: "FindCoordinator",
        timeout_ms: cluster.config().connection.connect_timeout.as_millis() as u64,
    }))
}

async fn find_coordinator_once(cluster: &Cluster, group_id: &str) -> Result<String> {
    let conn = cluster.any_connection().await?;
    let version = conn
        .version_for(
            kafka_protocol::messages::ApiKey::FindCoordinator,
            <FindCoordinatorRequest as kafka_protocol::protocol::Message>::VERSIONS,
        )
        .ok_or(ClientError::Unsupported {
            api: "FindCoordinator",
        })?;
    let mut request = FindCoordinatorRequest::default();
    if version >= 4 {
        request.coordinator_keys = vec![str_bytes(group_id)];
        request.key_type = KEY_TYPE_GROUP;
    } else {
        request.key = str_bytes(group_id);
        if version >= 1 {
            request.key_type = KEY_TYPE_GROUP;
        }
    }
    let response = conn.send_at(&request, version).await?;
    let context = format!("FindCoordinator of group '{group_id}'");
    let (code, host, port) = if version >= 4 {
        let c = response
            .coordinators
            .iter()
            .find(|c| *c.key == *group_id)
            .ok_or_else(|| ClientError::Malformed {
                api: "FindCoordinator",
                reason: format!("no answer for group '{group_id}'"),
            })?;
        (c.error_code, c.host.to_string(), c.port)
    } else {
        (
            response.error_code,
            response.host.to_string(),
            response.port,
        )
    };
    if let Some(e) = ClientError::from_code(code, context) {
        return Err(e);
    }
    if !(1..=i32::from(u16::MAX)).contains(&port) || host.is_empty() {
        return Err(ClientError::Malformed {
            api: "FindCoordinator",
            reason: format!("coordinator address '{host}:{port}'"),
        });
    }
    Ok(format!("{host}:{port}"))
}

/// Who a commit is made as: a member of a generation, or (generation -1, empty member id) a
/// "simple" commit from outside the group, as the admin client and assign()-mode consumers do.
#[derive(Debug, Clone)]
pub struct CommitAs {
    pub generation: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

impl CommitAs {
    pub fn simple() -> CommitAs {
        CommitAs {
            generation: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }
}

/// One OffsetCommit; the first per-partition error (or a missing answer) is the result.
pub async fn commit_offsets(
    conn: &Connection,
    group_id: &str,
    member: &CommitAs,
    offsets: &BTreeMap<Tp, i64>,
) -> Result<()> {
    let version = conn
        .version_for(
            kafka_protocol::messages::ApiKey::OffsetCommit,
            <OffsetCommitRequest as kafka_protocol::protocol::Message>::VERSIONS,
        )
        .ok_or(ClientError::Unsupported {
            api: "OffsetCommit",
        })?;
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for ((topic, partition), offset) in offsets {
        let mut p = OffsetCommitRequestPartition::default()
            .with_partition_index(*partition)
            .with_committed_offset(*offset)
            .with_committed_metadata(Some(StrBytes::default()));
        if version >= 6 {
            p.committed_leader_epoch = -1;
        }
        match topics.last_mut().filter(|t| *t.name.0 == **topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let mut request = OffsetCommitRequest::default()
        .with_group_id(GroupId(str_bytes(group_id)))
        .with_generation_id_or_member_epoch(member.generation)
        .with_member_id(str_bytes(&member.member_id))
        .with_topics(topics);
    if version <= 4 {
        request.retention_time_ms = -1;
    }
    if version >= 7 {
        request.group_instance_id = member.group_instance_id.as_deref().map(str_bytes);
    }
    let response = conn.send_at(&request, version).await?;
    let mut answered = BTreeSet::new();
    for t in &response.topics {
        for p in &t.partitions {
            let tp = (t.name.0.to_string(), p.partition_index);
            let context = format!("commit of {}/{} for group '{group_id}'", tp.0, tp.1);
            if let Some(e) = ClientError::from_code(p.error_code, context) {
                return Err(e);
            }
            answered.insert(tp);
        }
    }
    if let Some(missing) = offsets.keys().find(|tp| !answered.contains(*tp)) {
        return Err(ClientError::Malformed {
            api: "OffsetCommit",
            reason: format!("no answer for {}/{}", missing.0, missing.1),
        });
    }
    Ok(())
}

/// One OffsetFetch: committed offsets of `partitions` (`None`: every partition the group has
/// offsets for). Partitions with nothing committed (offset -1) are left out.
pub async fn fetch_offsets(
    conn: &Connection,
    group_id: &str,
    partitions: Option<&[Tp]>,
) -> Result<BTreeMap<Tp, i64>> {
    let version = conn
        .version_for(
            kafka_protocol::messages::ApiKey::OffsetFetch,
            <OffsetFetchRequest as kafka_protocol::protocol::Message>::VERSIONS,
        )
        .ok_or(ClientError::Unsupported { api: "OffsetFetch" })?;
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions.unwrap_or_default() {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    if partitions.is_some_and(<[Tp]>::is_empty) {
        return Ok(BTreeMap::new());
    }
    let mut request = OffsetFetchRequest::default();
    if version >= 8 {
        let topics = partitions.map(|_| {
            by_topic
                .iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopics::default()
                        .with_name(TopicName(str_bytes(t)))
                        .with_partition_indexes(ps.clone())
                })
                .collect()
        });
        request.groups = vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(str_bytes(group_id)))
            .with_topics(topics)];
    } else {
        if partitions.is_none() && version < 2 {
            return Err(ClientError::Unsupported {
                api: "OffsetFetch of all partitions (v2+)",
            });
        }
        request.group_id = GroupId(str_bytes(group_id));
        request.topics = partitions.map(|_| {
            by_topic
                .iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(str_bytes(t)))
                        .with_partition_indexes(ps.clone())
                })
                .collect()
        });
    }
    let response = conn.send_at(&request, version).await?;
    let context = format!("offsets of group '{group_id}'");
    let mut out = BTreeMap::new();
    if version >= 8 {
        let g = response
            .groups
            .iter()
            .find(|g| *g.group_id.0 == *group_id)
            .ok_or_else(|| ClientError::Malformed {
                api: "OffsetFetch",
                reason: format!("no answer for group '{group_id}'"),
            })?;
        if let Some(e) = ClientError::from_code(g.error_code, context.clone()) {
            return Err(e);
        }
        for t in &g.topics {
            for p in &t.partitions {
                take_fetched(
                    &mut out,
                    &t.name,
                    p.partition_index,
                    p.error_code,
                    p.committed_offset,
                )?;
            }
        }
    } else {
        if let Some(e) = ClientError::from_code(response.error_code, context) {
            return Err(e);
        }
        for t in &response.topics {
            for p in &t.partitions {
                take_fetched(
                    &mut out,
                    &t.name,
                    p.partition_index,
                    p.error_code,
                    p.committed_offset,
                )?;
            }
        }
    }
    Ok(out)
}

/// One partition of an OffsetFetch answer (v8 groups and v1-7 topics have distinct types):
/// its error, or its committed offset when there is one.
fn take_fetched(
    out: &mut BTreeMap<Tp, i64>,
    topic: &str,
    partition: i32,
    error_code: i16,
    committed_offset: i64,
) -> Result<()> {
    if error_code != 0 {
        let ctx = format!("committed offset of {topic}/{partition}");
        if let Some(e) = ClientError::from_code(error_code, ctx) {
            return Err(e);
        }
    }
    if committed_offset >= 0 {
        out.insert((topic.to_string(), partition), committed_offset);
    }
    Ok(())
}

/// Decodes a member's assignment bytes for display; unreadable bytes show as no partitions.
pub fn decode_assignment_lenient(bytes: &Bytes) -> Vec<Tp> {
    Assignment::decode(bytes)
        .map(|a| a.partitions)
        .unwrap_or_default()
}
