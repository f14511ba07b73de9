//! One consumer group's membership under the classic group protocol, as a pure state machine:
//! no sockets, no tasks, no clock. Each event (join, sync, heartbeat, leave, timer, delete) takes
//! the time `now_ms` explicitly and returns an [`Output`]: answers for the requests that were
//! waiting (`W` is the caller's handle for a waiting request, a oneshot sender in the broker, a
//! number in tests), the group metadata to persist, or a tombstone to write. The caller asks
//! [`Group::next_deadline_ms`] when to call [`Group::on_timer`] next.
//!
//! Kafka semantics (GroupCoordinator / GroupMetadata of the classic protocol):
//! - States: Empty -> PreparingRebalance -> CompletingRebalance -> Stable, any -> Dead (deleted).
//! - A rebalance completes as soon as every known member has rejoined and no member id handed out
//!   by MEMBER_ID_REQUIRED is outstanding (never a fixed wait), or at the rebalance timeout (the
//!   largest of the members' `rebalance_timeout_ms`), which drops the dynamic members that did not
//!   rejoin. Only a new group's first rebalance also waits `initial_rebalance_delay_ms`.
//!   A generation is always led by a member that rejoined for it; when no member rejoined by
//!   the timeout (only static members are left), the rebalance waits another timeout.
//! - The leader's JoinGroup answer carries every member's metadata; followers get none. SyncGroup
//!   from the leader stores the assignments and answers every member waiting in SyncGroup.
//! - Once a join completes, every member must send SyncGroup within the rebalance timeout
//!   (in CompletingRebalance, or Stable after the leader's): the members that did not are
//!   removed and the group rebalances (Kafka 3.2+ pending-sync expiry). `sync_deadline_ms` is
//!   set exactly while some member is `pending_sync`, and only outside PreparingRebalance.
//! - Invariants: `leader` is a member (or None when there are none); `static_members` maps each
//!   static member's instance id to its current member id and nothing else; a member has at most
//!   one waiting JoinGroup and one waiting SyncGroup; waiting JoinGroups exist only in
//!   PreparingRebalance and waiting SyncGroups only in CompletingRebalance; a member waiting in
//!   JoinGroup or SyncGroup is not expired by its session (the rebalance timeout, or the leader's
//!   own session, bounds the wait).
//! - Sizes are bounded: members plus outstanding member ids <= `group_size_max`, each protocol
//!   metadata <= `metadata_bytes_max`, each assignment <= `assignment_bytes_max`.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::records::{GroupMetadata, MemberMetadata, STRING_BYTES_MAX};
use crate::error::BrokerError;

/// Broker limits and settings that shape every group: the broker's group settings, read once.
pub use crate::config::GroupSettings as Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in ListGroups / DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup as the state machine sees it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// "" for a member that has no id yet.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata), most preferred first.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED and its id (KIP-394).
    pub require_known_member_id: bool,
    /// JoinGroup v9+: the answer can tell a returning static leader to skip its assignor
    /// (KIP-814); older clients must instead be told another member leads.
    pub supports_skip_assignment: bool,
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// From the leader only: (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

/// A member as the leader sees it in its JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug)]
pub struct JoinReply {
    pub error: Option<BrokerError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// KIP-814: a static leader that rejoined without a rebalance must not reassign.
    pub skip_assignment: bool,
    pub members: Vec<JoinedMember>,
}

impl JoinReply {
    pub fn failed(error: BrokerError, member_id: &str) -> JoinReply {
        JoinReply {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct SyncReply {
    pub error: Option<BrokerError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncReply {
    pub fn failed(error: BrokerError) -> SyncReply {
        SyncReply {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

#[derive(Debug)]
pub enum Reply {
    Join(JoinReply),
    Sync(SyncReply),
}

/// What an event produced, for the caller to carry out.
#[derive(Debug)]
pub struct Output<W> {
    /// Answers for waiting requests (including, often, the request that caused the event).
    pub replies: Vec<(W, Reply)>,
    /// The group's metadata changed in a way a restart must see: store it.
    pub persist: Option<GroupMetadata>,
    /// The group was deleted: write its tombstone.
    pub tombstone: bool,
}

impl<W> Default for Output<W> {
    fn default() -> Self {
        Output {
            replies: Vec::new(),
            persist: None,
            tombstone: false,
        }
    }
}

/// One member of the group, for DescribeGroups.
#[derive(Debug, Clone)]
pub struct MemberSummary {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupSummary {
    pub state: GroupState,
    pub protocol_type: String,
    /// The chosen protocol; "" unless Stable (as Kafka reports).
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

struct Member<W> {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// When the member is considered gone unless it heartbeats (or joins, syncs, commits).
    session_deadline_ms: i64,
    /// Order of arrival; the first member that joined leads.
    joined_seq: u64,
    awaiting_join: Option<W>,
    awaiting_sync: Option<W>,
    /// Given this generation in a JoinGroup answer (or kept from before it) but has not sent
    /// SyncGroup for it yet.
    pending_sync: bool,
}

impl<W> Member<W> {
    fn metadata_for(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|p| self.protocols.iter().find(|(n, _)| n == p))
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn is_waiting(&self) -> bool {
        self.awaiting_join.is_some() || self.awaiting_sync.is_some()
    }
}

pub struct Group<W> {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member<W>>,
    /// group.instance.id -> member id of the static member holding it.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, and when they lapse unless used.
    pending: HashMap<String, i64>,
    /// PreparingRebalance: when the rebalance completes even without every member.
    rebalance_deadline_ms: Option<i64>,
    /// PreparingRebalance of a new group: completes no earlier than this.
    initial_delay_until_ms: Option<i64>,
    /// CompletingRebalance or Stable while some member has not sent SyncGroup for the
    /// generation: when those members are removed (Kafka's pending-sync expiry).
    sync_deadline_ms: Option<i64>,
    state_timestamp_ms: i64,
    next_seq: u64,
    limits: Limits,
}

impl<W> Group<W> {
    pub fn new(id: &str, limits: Limits, now_ms: i64) -> Group<W> {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline_ms: None,
            initial_delay_until_ms: None,
            sync_deadline_ms: None,
            state_timestamp_ms: now_ms,
            next_seq: 0,
            limits,
        }
    }

    /// A group as persisted: Stable with its members if it had any (their sessions restart now,
    /// so members that come back, static ones with their old ids, keep their assignment),
    /// else Empty.
    pub fn load(id: &str, meta: &GroupMetadata, limits: Limits, now_ms: i64) -> Group<W> {
        let mut g = Group::new(id, limits, now_ms);
        g.generation = meta.generation;
        g.protocol_type = Some(meta.protocol_type.clone()).filter(|t| !t.is_empty());
        g.protocol = meta.protocol.clone();
        g.state_timestamp_ms = meta.current_state_timestamp_ms;
        for m in &meta.members {
            let protocol = meta.protocol.clone().unwrap_or_default();
            g.next_seq += 1;
            g.members.insert(
                m.member_id.clone(),
                Member {
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: vec![(protocol, m.subscription.clone())],
                    assignment: m.assignment.clone(),
                    session_deadline_ms: now_ms + i64::from(m.session_timeout_ms),
                    joined_seq: g.next_seq,
                    awaiting_join: None,
                    awaiting_sync: None,
                    pending_sync: false,
                },
            );
            if let Some(instance) = &m.group_instance_id {
                g.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
        }
        g.leader = meta.leader.clone().filter(|l| g.members.contains_key(l));
        if g.members.is_empty() {
            g.state = GroupState::Empty;
            g.leader = None;
        } else {
            g.state = GroupState::Stable;
            if g.leader.is_none() {
                g.leader = g.first_member(|_| true);
            }
        }
        g
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    /// Nobody ever joined (or holds a member id) and there is nothing to remember: a group
    /// created by requests that failed.
    pub fn is_unused(&self) -> bool {
        self.state == GroupState::Empty
            && self.generation == 0
            && self.members.is_empty()
            && self.pending.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// JoinGroup. The answer may come now (in the output) or when the rebalance completes.
    pub fn join(&mut self, req: JoinRequest, waiter: W, now_ms: i64) -> Output<W> {
        let mut out = Output::default();
        if let Err(e) = self.validate_join(&req) {
            out.replies
                .push((waiter, Reply::Join(JoinReply::failed(e, &req.member_id))));
            return out;
        }
        if req.member_id.is_empty() {
            self.join_unknown_member(req, waiter, now_ms, &mut out);
        } else {
            self.join_known_member(req, waiter, now_ms, &mut out);
        }
        out
    }

    fn validate_join(&self, req: &JoinRequest) -> Result<(), BrokerError> {
        // Strings a stored group holds must fit their record (refused, never cut short).
        if self.id.len() > STRING_BYTES_MAX {
            return Err(BrokerError::InvalidGroupId);
        }
        let too_long = [req.group_instance_id.as_deref(), Some(&req.protocol_type)]
            .into_iter()
            .flatten()
            .chain(req.protocols.iter().map(|(name, _)| name.as_str()))
            .any(|s| s.len() > STRING_BYTES_MAX);
        if too_long {
            return Err(BrokerError::InvalidRequest(format!(
                "a group instance id or protocol name is longer than {STRING_BYTES_MAX} bytes"
            )));
        }
        let session = i64::from(req.session_timeout_ms);
        if session < self.limits.session_timeout_min_ms
            || session > self.limits.session_timeout_max_ms
        {
            return Err(BrokerError::InvalidSessionTimeout {
                requested_ms: req.session_timeout_ms,
                min_ms: self.limits.session_timeout_min_ms,
                max_ms: self.limits.session_timeout_max_ms,
            });
        }
        if self.state == GroupState::Dead {
            return Err(BrokerError::CoordinatorNotAvailable(format!(
                "group '{}' is being deleted",
                self.id
            )));
        }
        if let Some((name, _)) = req
            .protocols
            .iter()
            .find(|(_, m)| m.len() > self.limits.metadata_bytes_max)
        {
            return Err(BrokerError::InvalidRequest(format!(
                "protocol '{name}' metadata exceeds group.member.metadata.bytes.max {}",
                self.limits.metadata_bytes_max
            )));
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(BrokerError::InconsistentGroupProtocol(
                "empty protocol type or protocol list".into(),
            ));
        }
        if self.state != GroupState::Empty {
            if self.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
                return Err(BrokerError::InconsistentGroupProtocol(format!(
                    "protocol type '{}' differs from the group's",
                    req.protocol_type
                )));
            }
            // The joiner itself (when known) is replaced, so it does not vote against itself.
            let candidates = self.candidate_protocols(Some(&req.member_id));
            let ok = req.protocols.iter().any(|(n, _)| {
                candidates
                    .as_ref()
                    .is_none_or(|c: &Vec<String>| c.contains(n))
            });
            if !ok {
                return Err(BrokerError::InconsistentGroupProtocol(
                    "no protocol in common with the group's members".into(),
                ));
            }
        }
        Ok(())
    }

    /// Protocols every member (but `except`) supports; None when there is no such member.
    fn candidate_protocols(&self, except: Option<&str>) -> Option<Vec<String>> {
        let mut candidates: Option<Vec<String>> = None;
        for (id, m) in &self.members {
            if Some(id.as_str()) == except {
                continue;
            }
            let names: Vec<String> = m.protocols.iter().map(|(n, _)| n.clone()).collect();
            candidates = Some(match candidates {
                None => names,
                Some(c) => c.into_iter().filter(|n| names.contains(n)).collect(),
            });
        }
        candidates
    }

    fn generate_member_id(&mut self, client_id: &str, instance: Option<&str>) -> String {
        let uuid = crate::controller::random_uuid().to_string();
        // The id must fit a stored string: a client id near the limit loses its tail.
        let mut prefix = instance.unwrap_or(client_id);
        let room = STRING_BYTES_MAX - 1 - uuid.len();
        if prefix.len() > room {
            let mut end = room;
            while !prefix.is_char_boundary(end) {
                end -= 1;
            }
            prefix = &prefix[..end];
        }
        format!("{prefix}-{uuid}")
    }

    fn is_full(&self) -> bool {
        self.members.len() + self.pending.len() >= self.limits.group_size_max
    }

    fn join_unknown_member(&mut self, req: JoinRequest, waiter: W, now: i64, out: &mut Output<W>) {
        if let Some(instance) = req.group_instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                self.replace_static_member(old_id, req, waiter, now, out);
                return;
            }
        }
        if self.is_full() {
            let e = BrokerError::GroupMaxSizeReached(self.limits.group_size_max);
            out.replies
                .push((waiter, Reply::Join(JoinReply::failed(e, ""))));
            return;
        }
        let id = self.generate_member_id(&req.client_id, req.group_instance_id.as_deref());
        if req.require_known_member_id && req.group_instance_id.is_none() {
            // KIP-394: the id is only valid once the member comes back with it; until then it
            // holds a place in the group for one session timeout.
            self.pending
                .insert(id.clone(), now + i64::from(req.session_timeout_ms));
            out.replies.push((
                waiter,
                Reply::Join(JoinReply::failed(BrokerError::MemberIdRequired, &id)),
            ));
            return;
        }
        self.add_member(id, req, waiter, now, out);
    }

    fn add_member(
        &mut self,
        id: String,
        req: JoinRequest,
        waiter: W,
        now: i64,
        out: &mut Output<W>,
    ) {
        self.next_seq += 1;
        if let Some(instance) = &req.group_instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                group_instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocols: req.protocols,
                assignment: Bytes::new(),
                session_deadline_ms: now + i64::from(req.session_timeout_ms),
                joined_seq: self.next_seq,
                awaiting_join: Some(waiter),
                awaiting_sync: None,
                pending_sync: false,
            },
        );
        if self.leader.is_none() {
            self.leader = Some(id);
        }
        self.prepare_rebalance(now, out);
        self.try_complete_join(now, false, out);
    }

    /// A static member came back with a new process (no member id): the new id replaces the old
    /// one, which is fenced, and the member's protocols are updated. In a Stable group whose
    /// chosen protocol would stay the same, it gets its assignment back without a rebalance
    /// (Kafka's updateStaticMemberAndRebalance): the subscription bytes themselves may differ,
    /// since Java clients >= 3.4 put their generation and owned partitions in them.
    fn replace_static_member(
        &mut self,
        old_id: String,
        req: JoinRequest,
        waiter: W,
        now: i64,
        out: &mut Output<W>,
    ) {
        let new_id = self.generate_member_id(&req.client_id, req.group_instance_id.as_deref());
        let Some(mut member) = self.members.remove(&old_id) else {
            return;
        };
        let fenced =
            || BrokerError::FencedInstanceId(req.group_instance_id.clone().unwrap_or_default());
        if let Some(w) = member.awaiting_join.take() {
            out.replies
                .push((w, Reply::Join(JoinReply::failed(fenced(), &old_id))));
        }
        if let Some(w) = member.awaiting_sync.take() {
            out.replies
                .push((w, Reply::Sync(SyncReply::failed(fenced()))));
        }
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.protocols = req.protocols;
        member.session_deadline_ms = now + i64::from(member.session_timeout_ms);
        if let Some(instance) = &member.group_instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        let leader_before = self.leader.clone();
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        let same_protocol = self.select_protocol() == self.protocol;
        match self.state {
            GroupState::Stable if same_protocol => {
                out.persist = Some(self.metadata(now));
                let is_leader = self.leader.as_deref() == Some(new_id.as_str());
                let reply = if req.supports_skip_assignment {
                    // KIP-814: the leader learns it leads (so it keeps watching metadata) but
                    // must not run its assignor: a Stable group would ignore the result.
                    JoinReply {
                        error: None,
                        generation: self.generation,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol.clone(),
                        leader: self.leader.clone().unwrap_or_default(),
                        member_id: new_id,
                        skip_assignment: is_leader,
                        members: if is_leader {
                            self.joined_members()
                        } else {
                            Vec::new()
                        },
                    }
                } else {
                    // Before v9 the leader id named is the one from before the replacement: a
                    // returning leader then sees someone else's id, does not think it leads, and
                    // runs no assignment on an empty member list.
                    JoinReply {
                        error: None,
                        generation: self.generation,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol.clone(),
                        leader: leader_before.unwrap_or_default(),
                        member_id: new_id,
                        skip_assignment: false,
                        members: Vec::new(),
                    }
                };
                out.replies.push((waiter, Reply::Join(reply)));
            }
            _ => {
                // CompletingRebalance: the leader may already be assigning with the old id, so
                // the new id would get nothing; rebalance (as Kafka does). PreparingRebalance:
                // the member simply takes part.
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.awaiting_join = Some(waiter);
                }
                self.prepare_rebalance(now, out);
                self.try_complete_join(now, false, out);
            }
        }
    }

    /// FENCED_INSTANCE_ID when the instance id belongs to another member id, else
    /// UNKNOWN_MEMBER_ID when the member id is not in the group.
    fn validate_member(&self, member_id: &str, instance: Option<&str>) -> Result<(), BrokerError> {
        if let Some(instance) = instance {
            if let Some(current) = self.static_members.get(instance) {
                if current != member_id {
                    return Err(BrokerError::FencedInstanceId(instance.to_string()));
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(BrokerError::UnknownMemberId(member_id.to_string()));
        }
        Ok(())
    }

    fn join_known_member(&mut self, req: JoinRequest, waiter: W, now: i64, out: &mut Output<W>) {
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            self.add_member(id, req, waiter, now, out);
            return;
        }
        if let Err(e) = self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            out.replies
                .push((waiter, Reply::Join(JoinReply::failed(e, &req.member_id))));
            return;
        }
        let id = req.member_id.clone();
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        let unchanged = member.protocols == req.protocols;
        member.session_deadline_ms = now + i64::from(req.session_timeout_ms);
        match self.state {
            GroupState::CompletingRebalance | GroupState::Stable
                if unchanged && (self.state == GroupState::CompletingRebalance || !is_leader) =>
            {
                // A repeated join (e.g. a lost answer): answer with the current generation.
                let members = if is_leader {
                    self.joined_members()
                } else {
                    Vec::new()
                };
                out.replies.push((
                    waiter,
                    Reply::Join(JoinReply {
                        error: None,
                        generation: self.generation,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol.clone(),
                        leader: self.leader.clone().unwrap_or_default(),
                        member_id: id,
                        skip_assignment: false,
                        members,
                    }),
                ));
            }
            GroupState::Empty | GroupState::Dead => {
                let e = BrokerError::UnknownMemberId(id.clone());
                out.replies
                    .push((waiter, Reply::Join(JoinReply::failed(e, &id))));
            }
            _ => {
                // PreparingRebalance, or a changed member / the leader rejoining: (re)join the
                // rebalance. A previous waiting join of the same member is superseded.
                member.session_timeout_ms = req.session_timeout_ms;
                member.rebalance_timeout_ms = req.rebalance_timeout_ms;
                member.protocols = req.protocols;
                member.client_id = req.client_id;
                member.client_host = req.client_host;
                if let Some(old) = member.awaiting_join.replace(waiter) {
                    let e = BrokerError::RebalanceInProgress;
                    out.replies
                        .push((old, Reply::Join(JoinReply::failed(e, &id))));
                }
                self.prepare_rebalance(now, out);
                self.try_complete_join(now, false, out);
            }
        }
    }

    fn joined_members(&self) -> Vec<JoinedMember> {
        self.members
            .iter()
            .map(|(id, m)| JoinedMember {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata_for(self.protocol.as_deref()),
            })
            .collect()
    }

    fn first_member(&self, pred: impl Fn(&Member<W>) -> bool) -> Option<String> {
        self.members
            .iter()
            .filter(|(_, m)| pred(m))
            .min_by_key(|(_, m)| m.joined_seq)
            .map(|(id, _)| id.clone())
    }

    /// The group's rebalance timeout: the largest of its members'.
    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms.max(0)))
            .max()
            .unwrap_or(0)
    }

    /// Enters PreparingRebalance (no-op when already there).
    fn prepare_rebalance(&mut self, now: i64, out: &mut Output<W>) {
        let was = self.state;
        match was {
            GroupState::PreparingRebalance | GroupState::Dead => return,
            GroupState::CompletingRebalance => {
                // The assignments of the generation that did not finish are void.
                for m in self.members.values_mut() {
                    m.assignment = Bytes::new();
                    if let Some(w) = m.awaiting_sync.take() {
                        out.replies.push((
                            w,
                            Reply::Sync(SyncReply::failed(BrokerError::RebalanceInProgress)),
                        ));
                    }
                }
            }
            GroupState::Empty | GroupState::Stable => {}
        }
        self.state = GroupState::PreparingRebalance;
        self.state_timestamp_ms = now;
        // The generation that waited for SyncGroups is over.
        self.sync_deadline_ms = None;
        for m in self.members.values_mut() {
            m.pending_sync = false;
        }
        let timeout = self.rebalance_timeout_ms();
        self.rebalance_deadline_ms = Some(now + timeout);
        self.initial_delay_until_ms = (was == GroupState::Empty)
            .then_some(now + self.limits.initial_rebalance_delay_ms.min(timeout));
    }

    fn try_complete_join(&mut self, now: i64, force: bool, out: &mut Output<W>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if !force && self.initial_delay_until_ms.is_some_and(|t| now < t) {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some());
        if all_joined || force {
            self.complete_join(now, out);
        }
    }

    /// Ends PreparingRebalance: drops dynamic members that did not rejoin, makes sure a member
    /// that rejoined leads, starts the next generation and answers every waiting JoinGroup. With
    /// members left but none rejoined, it stays in PreparingRebalance for another timeout.
    fn complete_join(&mut self, now: i64, out: &mut Output<W>) {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.members.remove(&id);
        }
        // Static members that did not rejoin stay, so the leader may be one of them: it would
        // never SyncGroup, and every member would wait for it. Lead with a member that rejoined
        // (Kafka's maybeElectNewJoinedLeader); if none did, there is nobody to answer yet, so
        // wait another rebalance timeout (their sessions expire them meanwhile).
        let leader_rejoined = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.awaiting_join.is_some());
        if !leader_rejoined && !self.members.is_empty() {
            match self.first_member(|m| m.awaiting_join.is_some()) {
                Some(joined) => self.leader = Some(joined),
                None => {
                    tracing::warn!(group = %self.id, "no member rejoined: rebalance postponed");
                    self.rebalance_deadline_ms = Some(now + self.rebalance_timeout_ms());
                    self.initial_delay_until_ms = None;
                    return;
                }
            }
        }
        self.rebalance_deadline_ms = None;
        self.initial_delay_until_ms = None;
        self.generation += 1;
        self.state_timestamp_ms = now;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            out.persist = Some(self.metadata(now));
            return;
        }
        self.state = GroupState::CompletingRebalance;
        self.protocol = self.select_protocol();
        let all = self.joined_members();
        let leader = self.leader.clone().unwrap_or_default();
        let protocol_type = self.protocol_type.clone();
        let protocol = self.protocol.clone();
        let generation = self.generation;
        // Every member must now SyncGroup within the rebalance timeout, static members that did
        // not rejoin included (a leader that never syncs would otherwise hold the group forever).
        self.sync_deadline_ms = Some(now + self.rebalance_timeout_ms());
        for (id, m) in self.members.iter_mut() {
            m.pending_sync = true;
            if let Some(w) = m.awaiting_join.take() {
                m.session_deadline_ms = now + i64::from(m.session_timeout_ms);
                let is_leader = *id == leader;
                out.replies.push((
                    w,
                    Reply::Join(JoinReply {
                        error: None,
                        generation,
                        protocol_type: protocol_type.clone(),
                        protocol_name: protocol.clone(),
                        leader: leader.clone(),
                        member_id: id.clone(),
                        skip_assignment: false,
                        members: if is_leader { all.clone() } else { Vec::new() },
                    }),
                ));
            }
        }
    }

    /// Each member votes for its most preferred protocol among those every member supports.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols(None)?;
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        let mut by_seq: Vec<&Member<W>> = self.members.values().collect();
        by_seq.sort_by_key(|m| m.joined_seq);
        for m in by_seq {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == name) {
                    v.1 += 1;
                }
            }
        }
        // Ties go to the protocol listed first by the candidates (the first member's order).
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes.into_iter().find(|(_, n)| *n == best).map(|(c, _)| c)
    }

    /// SyncGroup. Followers wait for the leader's assignments; the leader's completes the
    /// generation (Stable) and answers them all.
    pub fn sync(&mut self, req: SyncRequest, waiter: W, now: i64) -> Output<W> {
        let mut out = Output::default();
        match self.try_sync(req, waiter, now, &mut out) {
            Ok(()) => {}
            Err((w, e)) => out.replies.push((w, Reply::Sync(SyncReply::failed(e)))),
        }
        out
    }

    fn try_sync(
        &mut self,
        req: SyncRequest,
        waiter: W,
        now: i64,
        out: &mut Output<W>,
    ) -> Result<(), (W, BrokerError)> {
        if self.state == GroupState::Dead {
            return Err((
                waiter,
                BrokerError::CoordinatorNotAvailable(format!(
                    "group '{}' is being deleted",
                    self.id
                )),
            ));
        }
        if let Err(e) = self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            return Err((waiter, e));
        }
        if req.generation != self.generation {
            return Err((
                waiter,
                BrokerError::IllegalGeneration {
                    requested: req.generation,
                    current: self.generation,
                },
            ));
        }
        let type_mismatch = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_mismatch = req
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != self.protocol.as_ref());
        if type_mismatch || name_mismatch {
            return Err((
                waiter,
                BrokerError::InconsistentGroupProtocol(
                    "protocol type or name differs from the group's".into(),
                ),
            ));
        }
        if let Some((id, _)) = req
            .assignments
            .iter()
            .find(|(_, a)| a.len() > self.limits.assignment_bytes_max)
        {
            return Err((
                waiter,
                BrokerError::InvalidRequest(format!(
                    "assignment for '{id}' exceeds group.member.assignment.bytes.max {}",
                    self.limits.assignment_bytes_max
                )),
            ));
        }
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        let protocol_type = self.protocol_type.clone();
        let protocol = self.protocol.clone();
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                Err((waiter, BrokerError::UnknownMemberId(req.member_id)))
            }
            GroupState::PreparingRebalance => Err((waiter, BrokerError::RebalanceInProgress)),
            GroupState::Stable => {
                self.synced(&req.member_id);
                let Some(m) = self.members.get_mut(&req.member_id) else {
                    return Err((waiter, BrokerError::UnknownMemberId(req.member_id)));
                };
                m.session_deadline_ms = now + i64::from(m.session_timeout_ms);
                out.replies.push((
                    waiter,
                    Reply::Sync(SyncReply {
                        error: None,
                        protocol_type,
                        protocol_name: protocol,
                        assignment: m.assignment.clone(),
                    }),
                ));
                Ok(())
            }
            GroupState::CompletingRebalance => {
                self.synced(&req.member_id);
                let Some(m) = self.members.get_mut(&req.member_id) else {
                    return Err((waiter, BrokerError::UnknownMemberId(req.member_id)));
                };
                m.session_deadline_ms = now + i64::from(m.session_timeout_ms);
                if let Some(old) = m.awaiting_sync.replace(waiter) {
                    out.replies.push((
                        old,
                        Reply::Sync(SyncReply::failed(BrokerError::RebalanceInProgress)),
                    ));
                }
                if !is_leader {
                    return Ok(());
                }
                let mut given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                for (id, m) in self.members.iter_mut() {
                    m.assignment = given.remove(id).unwrap_or_default();
                }
                self.state = GroupState::Stable;
                self.state_timestamp_ms = now;
                out.persist = Some(self.metadata(now));
                for m in self.members.values_mut() {
                    if let Some(w) = m.awaiting_sync.take() {
                        m.session_deadline_ms = now + i64::from(m.session_timeout_ms);
                        out.replies.push((
                            w,
                            Reply::Sync(SyncReply {
                                error: None,
                                protocol_type: protocol_type.clone(),
                                protocol_name: protocol.clone(),
                                assignment: m.assignment.clone(),
                            }),
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// A member sent SyncGroup for the current generation; the sync deadline ends with the last.
    fn synced(&mut self, member_id: &str) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.pending_sync = false;
        }
        if !self.members.values().any(|m| m.pending_sync) {
            self.sync_deadline_ms = None;
        }
    }

    /// Heartbeat: keeps the member's session; REBALANCE_IN_PROGRESS tells it to rejoin.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Result<(), BrokerError> {
        if self.state == GroupState::Dead {
            return Err(BrokerError::CoordinatorNotAvailable(format!(
                "group '{}' is being deleted",
                self.id
            )));
        }
        self.validate_member(member_id, instance)?;
        if generation != self.generation {
            return Err(BrokerError::IllegalGeneration {
                requested: generation,
                current: self.generation,
            });
        }
        let state = self.state;
        let m = self
            .members
            .get_mut(member_id)
            .ok_or_else(|| BrokerError::UnknownMemberId(member_id.to_string()))?;
        m.session_deadline_ms = now + i64::from(m.session_timeout_ms);
        match state {
            GroupState::PreparingRebalance => Err(BrokerError::RebalanceInProgress),
            GroupState::Empty => Err(BrokerError::UnknownMemberId(member_id.to_string())),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for a batch of members: (member id, group instance id) each, and each one's
    /// result. By instance id (v3+), the member id may be "" or must match.
    pub fn leave(
        &mut self,
        members: &[(String, Option<String>)],
        now: i64,
    ) -> (Vec<Result<(), BrokerError>>, Output<W>) {
        let mut out = Output::default();
        let mut results = Vec::with_capacity(members.len());
        for (member_id, instance) in members {
            results.push(self.leave_one(member_id, instance.as_deref(), now, &mut out));
        }
        (results, out)
    }

    fn leave_one(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        now: i64,
        out: &mut Output<W>,
    ) -> Result<(), BrokerError> {
        if self.state == GroupState::Dead {
            return Err(BrokerError::CoordinatorNotAvailable(format!(
                "group '{}' is being deleted",
                self.id
            )));
        }
        let id = match instance {
            Some(instance) => {
                let current = self
                    .static_members
                    .get(instance)
                    .cloned()
                    .ok_or_else(|| BrokerError::UnknownMemberId(member_id.to_string()))?;
                if !member_id.is_empty() && member_id != current {
                    return Err(BrokerError::FencedInstanceId(instance.to_string()));
                }
                current
            }
            None => {
                if self.pending.remove(member_id).is_some() {
                    self.try_complete_join(now, false, out);
                    return Ok(());
                }
                if !self.members.contains_key(member_id) {
                    return Err(BrokerError::UnknownMemberId(member_id.to_string()));
                }
                member_id.to_string()
            }
        };
        self.remove_member(&id, now, out);
        Ok(())
    }

    fn remove_member(&mut self, id: &str, now: i64, out: &mut Output<W>) {
        if self.detach_member(id, out) {
            self.rebalance_after_removal(now, out);
        }
    }

    /// Takes a member out of the group (its waiting requests answered UNKNOWN_MEMBER_ID, the
    /// lead passed on) without the state change that must follow; false if it was not there.
    fn detach_member(&mut self, id: &str, out: &mut Output<W>) -> bool {
        let Some(mut m) = self.members.remove(id) else {
            return false;
        };
        if let Some(instance) = &m.group_instance_id {
            self.static_members.remove(instance);
        }
        if let Some(w) = m.awaiting_join.take() {
            out.replies.push((
                w,
                Reply::Join(JoinReply::failed(
                    BrokerError::UnknownMemberId(id.to_string()),
                    id,
                )),
            ));
        }
        if let Some(w) = m.awaiting_sync.take() {
            out.replies.push((
                w,
                Reply::Sync(SyncReply::failed(BrokerError::UnknownMemberId(
                    id.to_string(),
                ))),
            ));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self
                .first_member(|m| m.awaiting_join.is_some())
                .or_else(|| self.first_member(|_| true));
        }
        true
    }

    /// After members left: a settled group rebalances; a rebalancing one may now be complete.
    fn rebalance_after_removal(&mut self, now: i64, out: &mut Output<W>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, out);
                self.try_complete_join(now, false, out);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now, false, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// The earliest time `on_timer` has something to do, if any.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let sessions = self
            .members
            .values()
            .filter(|m| !m.is_waiting())
            .map(|m| m.session_deadline_ms);
        let pending = self.pending.values().copied();
        let rebalance = match self.state {
            GroupState::PreparingRebalance => {
                [self.rebalance_deadline_ms, self.initial_delay_until_ms]
            }
            GroupState::CompletingRebalance | GroupState::Stable => [self.sync_deadline_ms, None],
            GroupState::Empty | GroupState::Dead => [None, None],
        };
        sessions
            .chain(pending)
            .chain(rebalance.into_iter().flatten())
            .min()
    }

    /// Expires sessions and outstanding member ids, removes members that did not SyncGroup in
    /// time, ends the initial delay, and forces a rebalance that reached its timeout.
    pub fn on_timer(&mut self, now: i64) -> Output<W> {
        let mut out = Output::default();
        if self.state == GroupState::Dead {
            return out;
        }
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.is_waiting() && m.session_deadline_ms <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(&id, now, &mut out);
        }
        let settling = matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        );
        if settling && self.sync_deadline_ms.is_some_and(|d| d <= now) {
            self.expire_pending_syncs(now, &mut out);
        }
        if self.state == GroupState::PreparingRebalance {
            let timed_out = self.rebalance_deadline_ms.is_some_and(|d| d <= now);
            self.try_complete_join(now, timed_out, &mut out);
        }
        out
    }

    /// The rebalance timeout passed since the join completed: members that have not sent
    /// SyncGroup are removed and the group rebalances without them (Kafka's
    /// onExpirePendingSync). A leader that never syncs is one of them; the members waiting in
    /// SyncGroup for it are answered REBALANCE_IN_PROGRESS and rejoin.
    fn expire_pending_syncs(&mut self, now: i64, out: &mut Output<W>) {
        self.sync_deadline_ms = None;
        let late: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.pending_sync)
            .map(|(id, _)| id.clone())
            .collect();
        if late.is_empty() {
            return;
        }
        for id in &late {
            tracing::info!(group = %self.id, member = %id, "no SyncGroup within the rebalance timeout");
            self.detach_member(id, out);
        }
        self.rebalance_after_removal(now, out);
    }

    /// DeleteGroups: only an Empty group can be deleted.
    pub fn delete(&mut self) -> Result<Output<W>, BrokerError> {
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                self.state = GroupState::Dead;
                Ok(Output {
                    tombstone: true,
                    ..Output::default()
                })
            }
            _ => Err(BrokerError::NonEmptyGroup(self.id.clone())),
        }
    }

    /// Storing the metadata of `generation` failed (the write to `__consumer_offsets`): what
    /// was answered from it must not stand, since a restart would not find it. A group still in
    /// that generation forgets its assignments and rebalances (Kafka's SyncGroup store
    /// callback: reset the assignments, prepare a rebalance), so its members rejoin and the
    /// next generation is stored anew. A group that moved on since, or is Empty, keeps going:
    /// its next change is stored over the failed one.
    pub fn store_failed(&mut self, generation: i32, now: i64) -> Output<W> {
        let mut out = Output::default();
        let settled = matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        );
        if generation != self.generation || !settled {
            return out;
        }
        tracing::warn!(group = %self.id, generation, "group metadata not stored: rebalancing");
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
        }
        self.prepare_rebalance(now, &mut out);
        self.try_complete_join(now, false, &mut out);
        out
    }

    /// OffsetCommit's membership check (Kafka's classic-group offset-commit validation). A valid
    /// commit from a member also counts as its heartbeat.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Result<(), BrokerError> {
        if self.state == GroupState::Dead {
            return Err(BrokerError::CoordinatorNotAvailable(format!(
                "group '{}' is being deleted",
                self.id
            )));
        }
        // Generation -1: an admin client or a consumer using assign(); fine while nobody is in
        // the group.
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation >= 0 || !member_id.is_empty() || instance.is_some() {
            if let Some(instance) = instance {
                if !self.static_members.contains_key(instance) {
                    return Err(BrokerError::UnknownMemberId(member_id.to_string()));
                }
            }
            self.validate_member(member_id, instance)?;
            if generation != self.generation {
                return Err(BrokerError::IllegalGeneration {
                    requested: generation,
                    current: self.generation,
                });
            }
        } else if self.state != GroupState::Empty {
            // Without member id and generation, only an Empty group takes commits.
            return Err(BrokerError::UnknownMemberId(member_id.to_string()));
        }
        if self.state == GroupState::CompletingRebalance {
            // The member knows the new generation but has no assignment yet.
            return Err(BrokerError::RebalanceInProgress);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.session_deadline_ms = now + i64::from(m.session_timeout_ms);
        }
        Ok(())
    }

    /// Whether a member (of a non-empty "consumer" group) subscribes to `topic`, from its
    /// ConsumerProtocolSubscription; None for non-consumer protocol types.
    pub fn subscribes_to(&self, topic: &str) -> Option<bool> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        Some(self.members.values().any(|m| {
            // Undecodable: counted as subscribed (Kafka cannot tell either, so it protects the
            // offsets).
            subscription_topics(&m.metadata_for(self.protocol.as_deref()))
                .is_none_or(|topics| topics.iter().any(|t| t == topic))
        }))
    }

    pub fn summary(&self) -> GroupSummary {
        let stable = self.state == GroupState::Stable;
        GroupSummary {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                self.protocol.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberSummary {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata_for(self.protocol.as_deref())
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    /// What is persisted: the group as a restart should find it.
    pub fn metadata(&self, now: i64) -> GroupMetadata {
        GroupMetadata {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp_ms: now,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberMetadata {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(self.protocol.as_deref()),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

/// The topics of a ConsumerProtocolSubscription (any version: the topic array comes first);
/// None when the bytes do not decode.
pub fn subscription_topics(metadata: &Bytes) -> Option<Vec<String>> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut buf = metadata.clone();
    if buf.len() < 2 {
        return None;
    }
    // Skip the version: every version starts with version 0's fields (Kafka reads those too).
    bytes::Buf::advance(&mut buf, 2);
    ConsumerProtocolSubscription::decode(&mut buf, 0)
        .ok()
        .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
}

#[cfg(test)]
mod tests;
