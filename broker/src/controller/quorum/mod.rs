//! The controller quorum: `openraft` replicating opaque batches of metadata records between the
//! controller voters (and learners), durable under `<data>/controller/`.
//!
//! - `settings` — the quorum's config keys (`node.id`, `process.roles`, `controller.quorum.voters`,
//!   `controller.listener`, timeouts), parsed and validated.
//! - `log_store` — the Raft log and vote on disk (CRC-32C records, fsync before "durable").
//! - `state_machine` — drives a [`MetadataStateMachine`], writes and loads snapshots.
//! - `wire` — RPC messages and the length-prefixed frame; `network` (client side, pooled
//!   connections) and `server` (the controller listener).
//!
//! Invariants:
//! - openraft is told an append is durable only after it is fsynced; a vote is on disk (atomic
//!   checkpoint) before it is used; truncation and purge are on disk before they return.
//! - The state machine sees each committed batch once, in index order; after a restart it is rebuilt
//!   from the newest snapshot plus the committed log entries after it.
//! - Nothing read from the network or disk panics the node: bad frames close their connection, a
//!   torn or corrupt log tail is cut at open, a corrupt vote or snapshot refuses the start.
//! - A committed batch the state machine rejects is a no-op on every member (the proposer gets
//!   `Rejected`); only a failure of a node's own storage stops Raft on that node.
//! - `<data>/controller/` and the files in it are fsynced into their directories when created.
//! - A proposal answered `Ok(index)` is committed by a majority of voters at `index`; a proposal
//!   that times out may still commit later (as in any Raft: the outcome is unknown).

mod log_store;
mod network;
mod server;
pub mod settings;
mod state_machine;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use settings::{QuorumSettings, Voter};

/// One entry's application data: a batch of encoded metadata records, opaque to the quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Vec<u8>);

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch of {} bytes", self.0.len())
    }
}

/// Why the state machine refused a committed batch; the batch changed nothing. Deterministic: every
/// member refuses the same batch for the same reason, on every replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Why applying a batch failed in a way the node cannot go on from (its own storage broke).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// The answer to one applied entry: `Err` when the state machine refused the batch.
pub type Applied = Result<(), Rejected>;

openraft::declare_raft_types!(
    /// The quorum's openraft types: node ids are `u64`, a node is its controller address.
    pub TypeConfig:
        D = Batch,
        R = Applied,
        Node = BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// The replicated state the quorum drives (the metadata image, later). Calls come one at a time.
pub trait MetadataStateMachine: Send + Sync + 'static {
    /// Applies one committed batch at `index`.
    ///
    /// A batch that does not decode or contradicts the state is `Ok(Err(Rejected))`: the state must
    /// be left unchanged and the answer must depend only on the state and the batch (every member
    /// replays the same committed batch and must skip it alike). The proposer gets the rejection;
    /// the entry still counts as applied. `Err(Fatal)` only for a failure of this node itself (its
    /// storage): Raft stops on this node.
    fn apply(&mut self, index: u64, batch: &[u8]) -> Result<Applied, Fatal>;
    /// The whole state, for Raft snapshots.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state by a snapshot taken at `index`; on Err the state is unchanged.
    /// An installed snapshot is checked with [`MetadataStateMachine::fresh`] first.
    fn install(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String>;
    /// An empty state of the same kind: a received snapshot is installed into it before it
    /// replaces this one, so a snapshot that does not install leaves the good state in place.
    fn fresh(&self) -> Box<dyn MetadataStateMachine>;
}

/// The quorum as this node sees it (`Quorum::status`).
#[derive(Debug, Clone, Default)]
pub struct QuorumStatus {
    pub leader: Option<u64>,
    pub term: u64,
    /// The highest index applied to this node's state machine.
    pub applied: Option<u64>,
    pub voters: std::collections::BTreeSet<u64>,
    pub learners: std::collections::BTreeSet<u64>,
    /// On the leader: the highest index each member is known to hold (`None` inside: not yet
    /// known). Empty elsewhere.
    pub matched: BTreeMap<u64, Option<u64>>,
}

/// Why a quorum operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    #[error("not the controller leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error(
        "no answer within {0:?}: no controller majority reachable? (the change may still commit)"
    )]
    Timeout(Duration),
    #[error("controller {node} unreachable: {reason}")]
    Unreachable { node: u64, reason: String },
    #[error("controller refused: {0}")]
    Refused(String),
    /// Committed at `index`, but the state machine refused it: it changed nothing.
    #[error("metadata batch at {index} rejected: {reason}")]
    Rejected { index: u64, reason: String },
    /// Larger than a controller frame can carry (with room for the request around it).
    #[error("batch of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("controller stopped: {0}")]
    Stopped(String),
    #[error("controller start: {0}")]
    Start(String),
}

/// Bytes of a frame around a proposed batch (the request's framing, an entry's log id): a batch
/// must leave this much of `controller.socket.request.max.bytes` free, so that it fits one
/// AppendEntries on its own.
const FRAME_HEADROOM_BYTES: usize = 1024;

/// Election timeouts a controller connection may stay silent before the listener closes it (the
/// leader heartbeats many times per election timeout; pooled connections are reused within one).
const CONNECTION_IDLE_ELECTIONS: u64 = 3;

/// The brokers' heartbeats as the leader heard them: broker id -> (incarnation, when). Only the
/// leader's table is used (for fencing); what it heard in an earlier leadership is older than the
/// grace a new leadership gives every broker, so it never fences anyone sooner.
#[derive(Default)]
pub struct Liveness {
    heard: std::sync::Mutex<std::collections::HashMap<i32, (u128, std::time::Instant)>>,
}

impl Liveness {
    fn heard(&self, hb: wire::BrokerHeartbeat) {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.insert(hb.broker, (hb.incarnation, std::time::Instant::now()));
    }

    /// When `broker` last said it is alive as `incarnation`, if it did to this node.
    pub fn last_heard(&self, broker: i32, incarnation: u128) -> Option<std::time::Instant> {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard
            .get(&broker)
            .filter(|(i, _)| *i == incarnation)
            .map(|(_, at)| *at)
    }
}

struct Shared {
    id: u64,
    liveness: Arc<Liveness>,
    raft: Raft<TypeConfig>,
    pool: Arc<network::Pool>,
    state_machine: state_machine::StateMachineStore,
    settings: QuorumSettings,
    /// Where the controller listener is bound (its port, when configured as 0).
    local_addr: std::net::SocketAddr,
    listener: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// A running quorum member (voter or learner). Cheap to clone.
#[derive(Clone)]
pub struct Quorum {
    shared: Arc<Shared>,
}

impl Quorum {
    /// Opens `<data_dir>/controller/`, binds the controller listener and starts Raft. A voter of a
    /// quorum that has never been formed proposes the initial membership (every voter does the
    /// same; openraft makes that safe). A node that is not a voter waits to be added as a learner.
    pub async fn start(
        settings: QuorumSettings,
        data_dir: &Path,
        state_machine: impl MetadataStateMachine,
    ) -> Result<Quorum, QuorumError> {
        let start_err = |e: String| QuorumError::Start(e);
        let dir = data_dir.join("controller");
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| start_err(format!("{}: {e}", dir.display())))?;
            // The new directory's entry is durable before anything in it is trusted.
            crate::storage::sync_dir(data_dir)
                .map_err(|e| start_err(format!("{}: {e}", data_dir.display())))?;
        }
        let log = log_store::LogStore::open(&dir).map_err(|e| start_err(e.to_string()))?;
        let sm = state_machine::StateMachineStore::open(&dir, Box::new(state_machine))
            .map_err(|e| start_err(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| start_err(format!("controller listener {}: {e}", settings.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| start_err(format!("controller listener {}: {e}", settings.listen)))?;
        let pool = Arc::new(network::Pool::new(&settings));
        let config = openraft::Config {
            cluster_name: "strata".into(),
            // openraft 0.9 waits out the dead leader's lease (its `election_timeout_max`) plus a
            // random election timeout before standing: a silent leader is replaced after between
            // half and three quarters of `controller.quorum.election.timeout.ms`; a node that saw
            // a longer log in a vote answer waits twice `election_timeout_max` more (openraft's
            // rule, kept until it next stands), which is why the maximum is only 3/8 of it: that
            // wait made fail-over take 2 s at a 1 s timeout. The random part is drawn once per
            // node and checked on ticks of 1.5 heartbeats: a wide window keeps two survivors from
            // standing in the same tick. The heartbeat is at most an eighth of the timeout, so the
            // minimum stays above it, as openraft requires.
            election_timeout_min: settings.election_timeout_ms / 8 + 1,
            election_timeout_max: settings.election_timeout_ms * 3 / 8,
            heartbeat_interval: settings.heartbeat_interval_ms,
            install_snapshot_timeout: settings.rpc_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                settings.snapshot_interval_entries,
            ),
            // Keep only what a snapshot does not cover: the log stays bounded by the policy.
            max_in_snapshot_log_to_keep: 0,
            // Snapshot chunks must fit a frame, with room for the request around them.
            snapshot_max_chunk_size: (settings.request_bytes_max / 2) as u64,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| start_err(e.to_string()))?);
        let raft = Raft::new(
            settings.node_id,
            config,
            network::Factory::new(pool.clone()),
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| start_err(e.to_string()))?;
        let timeouts = server::Timeouts {
            idle: Duration::from_millis(settings.election_timeout_ms * CONNECTION_IDLE_ELECTIONS),
            frame: Duration::from_millis(settings.rpc_timeout_ms),
        };
        let liveness = Arc::new(Liveness::default());
        let server = server::spawn(
            listener,
            raft.clone(),
            Arc::clone(&liveness),
            settings.request_bytes_max,
            timeouts,
        );
        let quorum = Quorum {
            shared: Arc::new(Shared {
                id: settings.node_id,
                liveness,
                raft,
                pool,
                state_machine: sm,
                settings,
                local_addr,
                listener: std::sync::Mutex::new(Some(server)),
            }),
        };
        if let Err(e) = quorum.initialize_if_new().await {
            // Nothing keeps running after a failed start.
            quorum.shutdown().await;
            return Err(start_err(e));
        }
        Ok(quorum)
    }

    /// A voter of a quorum never formed proposes the initial membership (all voters do the same).
    async fn initialize_if_new(&self) -> Result<(), String> {
        let voters = self.voter_nodes();
        if !voters.contains_key(&self.shared.id)
            || self
                .shared
                .raft
                .is_initialized()
                .await
                .map_err(|e| e.to_string())?
        {
            return Ok(());
        }
        match self.shared.raft.initialize(voters).await {
            Ok(()) => Ok(()),
            // Another voter's initial membership reached us first: the same one.
            Err(RaftError::APIError(e)) => {
                tracing::debug!("controller quorum already initialised: {e}");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn voter_nodes(&self) -> BTreeMap<u64, BasicNode> {
        self.shared
            .settings
            .voters
            .iter()
            .map(|v| (v.id, BasicNode::new(v.addr.to_string())))
            .collect()
    }

    /// Whether this node is one of the configured voters.
    pub fn votes(&self) -> bool {
        self.is_voter()
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Where this node's controller listener is bound.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.shared.local_addr
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        self.shared.raft.metrics().borrow().current_leader
    }

    /// Waits until this node knows a leader, and answers it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, QuorumError> {
        let metrics = self
            .shared
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "wait_for_leader")
            .await
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => QuorumError::Timeout(timeout),
                other => QuorumError::Stopped(other.to_string()),
            })?;
        metrics
            .current_leader
            .ok_or(QuorumError::NotLeader { leader: None })
    }

    /// The highest index applied to this node's state machine.
    pub fn applied_index(&self) -> Option<u64> {
        self.shared
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
    }

    /// Replicates `batch` and answers its index once a majority has it; a non-leader forwards it to
    /// the leader. Bounded by `controller.quorum.request.timeout.ms`.
    /// A batch too large for one frame is refused at once (`TooLarge`); one the state machine
    /// rejects is committed, changes nothing and is answered `Rejected`.
    pub async fn propose(&self, batch: Vec<u8>) -> Result<u64, QuorumError> {
        let max = self
            .shared
            .settings
            .request_bytes_max
            .saturating_sub(FRAME_HEADROOM_BYTES);
        if batch.len() > max {
            return Err(QuorumError::TooLarge {
                len: batch.len(),
                max,
            });
        }
        let timeout = Duration::from_millis(self.shared.settings.request_timeout_ms);
        match tokio::time::timeout(timeout, self.propose_unbounded(batch)).await {
            Ok(r) => r,
            Err(_) => Err(QuorumError::Timeout(timeout)),
        }
    }

    async fn propose_unbounded(&self, batch: Vec<u8>) -> Result<u64, QuorumError> {
        let timeout = Duration::from_millis(self.shared.settings.request_timeout_ms);
        match propose_local(&self.shared.raft, batch.clone()).await {
            Err(QuorumError::NotLeader {
                leader: Some(leader),
            }) if leader != self.shared.id => match self.node_addr(leader) {
                Some(addr) => self.shared.pool.propose(leader, addr, batch, timeout).await,
                None => Err(QuorumError::NotLeader {
                    leader: Some(leader),
                }),
            },
            // A node that is not yet a member (a broker registering before it is made a
            // learner) knows no leader: it asks the configured voters.
            Err(QuorumError::NotLeader { leader: None }) if !self.is_voter() => {
                self.propose_via_voters(batch, timeout).await
            }
            r => r,
        }
    }

    fn is_voter(&self) -> bool {
        self.shared
            .settings
            .voters
            .iter()
            .any(|v| v.id == self.shared.id)
    }

    /// Offers `batch` to the configured voters in turn until the leader takes it; a voter that
    /// is not the leader refuses it unwritten and names the leader, which is asked next.
    async fn propose_via_voters(
        &self,
        batch: Vec<u8>,
        timeout: Duration,
    ) -> Result<u64, QuorumError> {
        let voters = &self.shared.settings.voters;
        let addr_of = |id: u64| voters.iter().find(|v| v.id == id).map(|v| v.addr);
        let mut last = QuorumError::NotLeader { leader: None };
        for voter in voters {
            match self
                .shared
                .pool
                .propose(voter.id, voter.addr, batch.clone(), timeout)
                .await
            {
                Err(QuorumError::NotLeader {
                    leader: Some(leader),
                }) => {
                    if let Some(addr) = addr_of(leader) {
                        return self.shared.pool.propose(leader, addr, batch, timeout).await;
                    }
                }
                Err(e @ (QuorumError::NotLeader { .. } | QuorumError::Unreachable { .. })) => {
                    last = e
                }
                other => return other,
            }
        }
        Err(last)
    }

    /// Tells the leader that broker `broker` (this process, as `incarnation`) is alive; the leader
    /// records it at once if that is this node.
    pub async fn heartbeat(&self, broker: i32, incarnation: u128) -> Result<(), QuorumError> {
        let hb = wire::BrokerHeartbeat {
            broker,
            incarnation,
        };
        let timeout = Duration::from_millis(self.shared.settings.rpc_timeout_ms);
        match self.leader() {
            None => Err(QuorumError::NotLeader { leader: None }),
            Some(leader) if leader == self.shared.id => {
                self.shared.liveness.heard(hb);
                Ok(())
            }
            Some(leader) => match self.node_addr(leader) {
                Some(addr) => self.shared.pool.heartbeat(leader, addr, hb, timeout).await,
                None => Err(QuorumError::NotLeader {
                    leader: Some(leader),
                }),
            },
        }
    }

    /// The heartbeats this node heard as leader.
    pub fn liveness(&self) -> &Liveness {
        &self.shared.liveness
    }

    /// The quorum as this node sees it: leader, term, members and (on the leader) how far each
    /// member has the log.
    pub fn status(&self) -> QuorumStatus {
        let m = self.shared.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let learners = membership
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| !voters.contains(id))
            .collect();
        let mut matched: BTreeMap<u64, Option<u64>> = m
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
            .unwrap_or_default();
        if m.current_leader == Some(self.shared.id) {
            matched.insert(self.shared.id, m.last_log_index);
        }
        QuorumStatus {
            leader: m.current_leader,
            term: m.current_term,
            applied: m.last_applied.map(|l| l.index),
            voters,
            learners,
            matched,
        }
    }

    /// On the leader: waits until everything committed before now is applied here (the log of a
    /// restarted node is applied only once its leader commits again). Elsewhere: nothing.
    pub async fn catch_up_if_leader(&self, timeout: Duration) -> Result<(), QuorumError> {
        if self.leader() != Some(self.shared.id) {
            return Ok(());
        }
        match tokio::time::timeout(timeout, self.shared.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(QuorumError::NotLeader {
                leader: match e {
                    RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                        f,
                    )) => f.leader_id,
                    _ => None,
                },
            }),
            Err(_) => Err(QuorumError::Timeout(timeout)),
        }
    }

    /// Waits until this node applied `index` (or later).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), QuorumError> {
        self.shared
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "wait_applied")
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => QuorumError::Timeout(timeout),
                other => QuorumError::Stopped(other.to_string()),
            })
    }

    /// Adds a non-voting member that follows the log (leader only); returns once it has caught up
    /// or `timeout` passed (it keeps catching up after that).
    pub async fn add_learner(
        &self,
        id: u64,
        addr: std::net::SocketAddr,
    ) -> Result<(), QuorumError> {
        let node = BasicNode::new(addr.to_string());
        self.shared
            .raft
            .add_learner(id, node, false)
            .await
            .map(|_| ())
            .map_err(write_error)
    }

    /// Removes a learner again (leader only).
    pub async fn remove_learner(&self, id: u64) -> Result<(), QuorumError> {
        let ids = std::collections::BTreeSet::from([id]);
        self.shared
            .raft
            .change_membership(ChangeMembers::RemoveNodes(ids), false)
            .await
            .map(|_| ())
            .map_err(write_error)
    }

    /// Stops Raft, the listener and its connections; awaited.
    pub async fn shutdown(&self) {
        let listener = self.shared.listener.lock().ok().and_then(|mut l| l.take());
        if let Some(listener) = listener {
            listener.abort();
            let _ = listener.await;
        }
        if let Err(e) = self.shared.raft.shutdown().await {
            tracing::warn!("controller {}: shutdown: {e}", self.shared.id);
        }
        self.shared.state_machine.close();
        self.shared.pool.clear();
    }
}

/// Proposes on this node's Raft, answering `NotLeader` when it is not the leader.
async fn propose_local(raft: &Raft<TypeConfig>, batch: Vec<u8>) -> Result<u64, QuorumError> {
    let written = raft.client_write(Batch(batch)).await.map_err(write_error)?;
    let index = written.log_id.index;
    written
        .data
        .map(|()| index)
        .map_err(|Rejected(reason)| QuorumError::Rejected { index, reason })
}

fn write_error(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> QuorumError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => QuorumError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(e) => QuorumError::Refused(e.to_string()),
        RaftError::Fatal(e) => QuorumError::Stopped(e.to_string()),
    }
}
