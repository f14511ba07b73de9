//! The replication rules of one partition replica, as a pure state machine: no I/O, no clock of
//! its own, no locks. The replica layer feeds it events (this broker became leader or follower,
//! the leader appended, a follower fetched from offset X at time T, the controller committed an
//! ISR, time passed) and carries out the `Effects` it returns (publish a new high watermark,
//! propose an ISR change, answer waiting `acks=-1` produces). Tested as stories in `state_tests.rs`.
//!
//! The rules are Kafka's:
//! - a follower's fetch offset is its log end offset (everything below it is in its log, and on
//!   its disk under the default flush policy: the fetcher flushes before fetching past it);
//! - HW = the lowest log end offset in the maximal ISR (the committed ISR plus a pending
//!   addition; a pending removal still counts), the leader's included; a follower whose log end is
//!   not yet known since this leadership began holds the HW where it is;
//! - a follower is caught up at time T if it fetched the leader's log end as of T, or as of its
//!   previous fetch (at that fetch's time); an ISR member not caught up for
//!   `replica_lag_time_max_ms` is proposed out of the ISR; a replica outside it whose log end
//!   reaches the HW (and the start of this leadership's epoch) is proposed in;
//! - one ISR change is in flight at a time; it takes effect only when the controller commits it
//!   (`isr_committed`), fenced there by the partition epoch;
//! - a waiting `acks=-1` produce completes when the HW reaches its end: acknowledged if the
//!   maximal ISR still has `min_insync_replicas` members, NOT_ENOUGH_REPLICAS_AFTER_APPEND if not;
//!   losing leadership answers every waiting produce NOT_LEADER_OR_FOLLOWER.
//!
//! Invariants (asserted): the HW never decreases; HW <= the leader's log end; the leader is in
//! every ISR it proposes or accepts; a follower's HW <= its own log end.

use std::collections::BTreeMap;

use crate::ids::{BrokerId, LeaderEpoch, Offset, PartitionEpoch};

/// The broker settings the rules read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: i64,
    /// The topic's `min.insync.replicas`.
    pub min_insync_replicas: usize,
}

/// The partition's state in the metadata image as this broker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
}

/// An ISR change for the controller to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub isr: Vec<BrokerId>,
    /// Whether it removes replicas (a shrink) or adds one (an expansion).
    pub shrink: bool,
}

/// How a waiting `acks=-1` produce ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    Acknowledged,
    /// The maximal ISR had `isr` members when the HW reached the produce, fewer than `required`.
    NotEnoughReplicasAfterAppend {
        isr: usize,
        required: usize,
    },
    NotLeader,
}

/// Why a produce is refused before it is appended, or a follower's fetch is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotLeader,
    /// The committed ISR is smaller than `min.insync.replicas` (`acks=-1` only).
    NotEnoughReplicas {
        isr: usize,
        required: usize,
    },
    /// A fetch from a broker that is not one of the partition's replicas.
    NotAReplica(BrokerId),
    /// A follower fetched past the leader's log end (its log diverged; it must truncate).
    PastLogEnd,
}

/// What the replica layer must do after an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Effects {
    /// The HW moved to this offset.
    pub high_watermark: Option<Offset>,
    /// An ISR change to send to the controller.
    pub propose_isr: Option<IsrProposal>,
    /// Waiting produces that are done (their ids, in the order they were registered).
    pub completed: Vec<(u64, AckOutcome)>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        *self == Effects::default()
    }
}

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// Its log end (its last fetch offset); `None` until it fetches in this leadership.
    pub log_end: Option<Offset>,
    /// The last time it was caught up with the leader's log end.
    pub last_caught_up_ms: i64,
    /// The leader's log end and the time at its previous fetch.
    previous_fetch: Option<(Offset, i64)>,
}

#[derive(Debug, Clone)]
struct Leading {
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    /// The ISR proposed to the controller and not committed yet.
    pending: Option<IsrProposal>,
    /// Its fate is unknown (the controller did not answer): send it again at the next tick.
    resend_pending: bool,
    /// The log end when this leadership began: a follower joins the ISR only once it has
    /// everything written before it (so the HW cannot move back past what this epoch wrote).
    epoch_start: Offset,
    followers: BTreeMap<BrokerId, FollowerProgress>,
    /// Waiting `acks=-1` produces: (end offset they need, id), in order of registration.
    waiting: Vec<(Offset, u64)>,
}

#[derive(Debug, Clone)]
enum Role {
    Leader(Leading),
    Follower {
        leader: Option<BrokerId>,
        leader_epoch: LeaderEpoch,
    },
}

/// One partition replica's replication state.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    me: BrokerId,
    settings: ReplicationSettings,
    role: Role,
    log_end: Offset,
    high_watermark: Offset,
}

impl ReplicaState {
    /// A replica that leads nothing yet, with its log's end and checkpointed HW.
    pub fn new(
        me: BrokerId,
        settings: ReplicationSettings,
        log_end: Offset,
        high_watermark: Offset,
    ) -> ReplicaState {
        ReplicaState {
            me,
            settings,
            role: Role::Follower {
                leader: None,
                leader_epoch: LeaderEpoch(-1),
            },
            log_end,
            high_watermark: high_watermark.min(log_end),
        }
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    pub fn leader(&self) -> Option<BrokerId> {
        match &self.role {
            Role::Leader(_) => Some(self.me),
            Role::Follower { leader, .. } => *leader,
        }
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        match &self.role {
            Role::Leader(l) => l.leader_epoch,
            Role::Follower { leader_epoch, .. } => *leader_epoch,
        }
    }

    pub fn set_settings(&mut self, settings: ReplicationSettings) {
        self.settings = settings;
    }

    /// The committed ISR while leading (empty as a follower).
    pub fn isr(&self) -> &[BrokerId] {
        match &self.role {
            Role::Leader(l) => &l.isr,
            Role::Follower { .. } => &[],
        }
    }

    /// The replicas while leading (empty as a follower).
    pub fn replicas(&self) -> &[BrokerId] {
        match &self.role {
            Role::Leader(l) => &l.replicas,
            Role::Follower { .. } => &[],
        }
    }

    /// Each follower's progress while leading.
    pub fn followers(&self) -> impl Iterator<Item = (BrokerId, &FollowerProgress)> {
        let map = match &self.role {
            Role::Leader(l) => Some(&l.followers),
            Role::Follower { .. } => None,
        };
        map.into_iter().flatten().map(|(b, p)| (*b, p))
    }

    /// Whether the committed ISR is smaller than the replica set (leader's view).
    pub fn under_replicated(&self) -> bool {
        match &self.role {
            Role::Leader(l) => l.isr.len() < l.replicas.len(),
            Role::Follower { .. } => false,
        }
    }

    /// This broker leads the partition from now on (a new leadership, or new metadata for the
    /// same one). Progress of followers starts over; ISR members count as caught up now.
    pub fn become_leader(&mut self, a: &Assignment, now_ms: i64) -> Effects {
        assert_eq!(
            a.leader,
            Some(self.me),
            "become_leader on a replica that is not the leader"
        );
        if let Role::Leader(l) = &mut self.role {
            if l.leader_epoch == a.leader_epoch {
                // The same leadership: only the ISR or replicas changed.
                return self.isr_committed(a, now_ms);
            }
        }
        let followers = a
            .replicas
            .iter()
            .filter(|b| **b != self.me)
            .map(|b| {
                let progress = FollowerProgress {
                    log_end: None,
                    last_caught_up_ms: if a.isr.contains(b) { now_ms } else { 0 },
                    previous_fetch: None,
                };
                (*b, progress)
            })
            .collect();
        let mut effects = self.fail_waiting(AckOutcome::NotLeader);
        self.role = Role::Leader(Leading {
            leader_epoch: a.leader_epoch,
            partition_epoch: a.partition_epoch,
            replicas: a.replicas.clone(),
            isr: a.isr.clone(),
            pending: None,
            resend_pending: false,
            epoch_start: self.log_end,
            followers,
            waiting: Vec::new(),
        });
        effects.high_watermark = self.advance_high_watermark();
        effects
    }

    /// Another broker (or none) leads the partition: waiting produces fail.
    pub fn become_follower(&mut self, a: &Assignment) -> Effects {
        let effects = self.fail_waiting(AckOutcome::NotLeader);
        self.role = Role::Follower {
            leader: a.leader,
            leader_epoch: a.leader_epoch,
        };
        effects
    }

    /// The metadata for the current leadership changed (the controller committed an ISR change,
    /// ours or not, or the replicas changed). A change for another leader epoch is ignored here:
    /// the layer calls `become_leader`/`become_follower` for those.
    pub fn isr_committed(&mut self, a: &Assignment, now_ms: i64) -> Effects {
        let Role::Leader(l) = &mut self.role else {
            return Effects::default();
        };
        if a.leader_epoch != l.leader_epoch || a.partition_epoch < l.partition_epoch {
            return Effects::default();
        }
        assert!(
            a.isr.contains(&self.me),
            "a committed ISR without its leader"
        );
        l.partition_epoch = a.partition_epoch;
        l.isr = a.isr.clone();
        l.replicas = a.replicas.clone();
        l.pending = None;
        l.resend_pending = false;
        let me = self.me;
        l.followers.retain(|b, _| a.replicas.contains(b));
        for b in a.replicas.iter().filter(|b| **b != me) {
            l.followers.entry(*b).or_insert(FollowerProgress {
                log_end: None,
                last_caught_up_ms: now_ms,
                previous_fetch: None,
            });
        }
        let mut effects = Effects {
            high_watermark: self.advance_high_watermark(),
            ..Effects::default()
        };
        effects.completed = self.complete_waiting();
        // A change that arrived while one was pending may be due now.
        effects.propose_isr = self.next_isr_change(now_ms);
        effects
    }

    /// `proposal` did not commit. Refused (`definitive`): forgotten, so the next tick may
    /// propose again from the committed ISR. Unknown (a timeout: it may still commit): kept,
    /// and sent again at the next tick; the image settles it either way. A failure of an
    /// older proposal than the one in flight changes nothing.
    pub fn isr_change_failed(&mut self, proposal: &IsrProposal, definitive: bool) {
        if let Role::Leader(l) = &mut self.role {
            if l.pending.as_ref() != Some(proposal) {
                return;
            }
            if definitive {
                l.pending = None;
            } else {
                l.resend_pending = true;
            }
        }
    }

    /// The local log's end moved (an append as leader; an append or truncation as follower).
    pub fn log_end_moved(&mut self, log_end: Offset) -> Effects {
        if matches!(self.role, Role::Leader(_)) {
            assert!(
                log_end >= self.high_watermark,
                "a leader's log end below its HW"
            );
        }
        self.log_end = log_end;
        match &self.role {
            Role::Leader(_) => {
                let hw = self.advance_high_watermark();
                Effects {
                    high_watermark: hw,
                    completed: if hw.is_some() {
                        self.complete_waiting()
                    } else {
                        Vec::new()
                    },
                    ..Effects::default()
                }
            }
            Role::Follower { .. } => {
                // Truncation never goes below the HW, so this only guards the invariant.
                assert!(
                    self.high_watermark <= log_end,
                    "a follower truncated below its HW"
                );
                Effects::default()
            }
        }
    }

    /// Whether a produce may be appended now: only by the leader, and with `acks=-1` only while
    /// the committed ISR has `min.insync.replicas` members.
    pub fn check_produce(&self, acks_all: bool) -> Result<(), Refusal> {
        let Role::Leader(l) = &self.role else {
            return Err(Refusal::NotLeader);
        };
        if acks_all && l.isr.len() < self.settings.min_insync_replicas {
            return Err(Refusal::NotEnoughReplicas {
                isr: l.isr.len(),
                required: self.settings.min_insync_replicas,
            });
        }
        Ok(())
    }

    /// An `acks=-1` produce whose records end (exclusive) at `end` waits as `id`. It may be done
    /// at once (the HW is there already).
    pub fn wait_for_ack(&mut self, id: u64, end: Offset) -> Effects {
        let Role::Leader(l) = &mut self.role else {
            return Effects {
                completed: vec![(id, AckOutcome::NotLeader)],
                ..Effects::default()
            };
        };
        l.waiting.push((end, id));
        Effects {
            completed: self.complete_waiting(),
            ..Effects::default()
        }
    }

    /// A waiting produce gave up (its request timed out): forget it.
    pub fn forget_waiting(&mut self, id: u64) {
        if let Role::Leader(l) = &mut self.role {
            l.waiting.retain(|(_, w)| *w != id);
        }
    }

    /// A follower fetched from `fetch_offset` at `now_ms`: its log ends there.
    pub fn follower_fetched(
        &mut self,
        follower: BrokerId,
        fetch_offset: Offset,
        now_ms: i64,
    ) -> Result<Effects, Refusal> {
        let leader_end = self.log_end;
        let Role::Leader(l) = &mut self.role else {
            return Err(Refusal::NotLeader);
        };
        let Some(p) = l.followers.get_mut(&follower) else {
            return Err(Refusal::NotAReplica(follower));
        };
        if fetch_offset > leader_end {
            return Err(Refusal::PastLogEnd);
        }
        if fetch_offset >= leader_end {
            p.last_caught_up_ms = p.last_caught_up_ms.max(now_ms);
        } else if let Some((previous_end, previous_ms)) = p.previous_fetch {
            if fetch_offset >= previous_end {
                p.last_caught_up_ms = p.last_caught_up_ms.max(previous_ms);
            }
        }
        p.previous_fetch = Some((leader_end, now_ms));
        // Its latest word, even if smaller (it lost an unflushed tail in a restart): one fetch
        // per follower is in flight at a time, so the latest is the truth. The HW stays put.
        p.log_end = Some(fetch_offset);
        let hw = self.advance_high_watermark();
        let mut effects = Effects {
            high_watermark: hw,
            ..Effects::default()
        };
        if hw.is_some() {
            effects.completed = self.complete_waiting();
        }
        effects.propose_isr = self.next_isr_change(now_ms);
        Ok(effects)
    }

    /// Time passed: proposes removing ISR members that fell behind.
    pub fn tick(&mut self, now_ms: i64) -> Effects {
        Effects {
            propose_isr: self.next_isr_change(now_ms),
            ..Effects::default()
        }
    }

    /// As a follower: the log was emptied to start at `offset`, above its old end (the leader's
    /// log starts past it). Everything below is gone, so the HW is there too.
    pub fn reset_log(&mut self, offset: Offset) {
        assert!(!self.is_leader(), "a leader's log reset under it");
        assert!(offset >= self.high_watermark, "a log reset below the HW");
        self.log_end = offset;
        self.high_watermark = offset;
    }

    /// As a follower: the leader's HW from a fetch answer; ours is the lower of it and our end.
    pub fn leader_high_watermark(&mut self, leader_hw: Offset) -> Effects {
        if matches!(self.role, Role::Leader(_)) {
            return Effects::default();
        }
        let hw = leader_hw.min(self.log_end);
        if hw > self.high_watermark {
            self.high_watermark = hw;
            return Effects {
                high_watermark: Some(hw),
                ..Effects::default()
            };
        }
        Effects::default()
    }

    /// The ISR counted for the HW: the committed one plus a pending addition.
    fn maximal_isr(l: &Leading) -> impl Iterator<Item = &BrokerId> {
        let added = l
            .pending
            .iter()
            .flat_map(|p| p.isr.iter())
            .filter(|b| !l.isr.contains(b));
        l.isr.iter().chain(added)
    }

    fn maximal_isr_len(l: &Leading) -> usize {
        Self::maximal_isr(l).count()
    }

    /// Raises the HW to the lowest log end in the maximal ISR; returns it if it moved.
    fn advance_high_watermark(&mut self) -> Option<Offset> {
        let Role::Leader(l) = &self.role else {
            return None;
        };
        let mut candidate = self.log_end;
        for b in Self::maximal_isr(l).filter(|b| **b != self.me) {
            match l.followers.get(b).and_then(|p| p.log_end) {
                Some(end) => candidate = candidate.min(end),
                // Not heard from since this leadership began: the HW stays.
                None => return None,
            }
        }
        if candidate > self.high_watermark {
            assert!(candidate <= self.log_end, "HW past the leader's log end");
            self.high_watermark = candidate;
            Some(candidate)
        } else {
            None
        }
    }

    /// Waiting produces the HW has reached, in registration order.
    fn complete_waiting(&mut self) -> Vec<(u64, AckOutcome)> {
        let hw = self.high_watermark;
        let min_isr = self.settings.min_insync_replicas;
        let Role::Leader(l) = &mut self.role else {
            return Vec::new();
        };
        let isr = Self::maximal_isr_len(l);
        let mut done = Vec::new();
        l.waiting.retain(|(end, id)| {
            if *end <= hw {
                let outcome = if isr >= min_isr {
                    AckOutcome::Acknowledged
                } else {
                    AckOutcome::NotEnoughReplicasAfterAppend {
                        isr,
                        required: min_isr,
                    }
                };
                done.push((*id, outcome));
                false
            } else {
                true
            }
        });
        done
    }

    fn fail_waiting(&mut self, outcome: AckOutcome) -> Effects {
        let completed = match &mut self.role {
            Role::Leader(l) => l.waiting.drain(..).map(|(_, id)| (id, outcome)).collect(),
            Role::Follower { .. } => Vec::new(),
        };
        Effects {
            completed,
            ..Effects::default()
        }
    }

    /// The ISR change due now, if none is in flight: removing members that lag (first), else
    /// adding one replica that caught up.
    fn next_isr_change(&mut self, now_ms: i64) -> Option<IsrProposal> {
        let (me, hw, leader_end) = (self.me, self.high_watermark, self.log_end);
        let lag_max = self.settings.replica_lag_time_max_ms;
        let Role::Leader(l) = &mut self.role else {
            return None;
        };
        if let Some(pending) = &l.pending {
            return std::mem::take(&mut l.resend_pending).then(|| pending.clone());
        }
        let lagging: Vec<BrokerId> = l
            .isr
            .iter()
            .filter(|b| **b != me)
            .filter(|b| match l.followers.get(b) {
                Some(p) => p.log_end != Some(leader_end) && now_ms - p.last_caught_up_ms > lag_max,
                // An ISR member that is not a replica any more: the controller drops it.
                None => false,
            })
            .copied()
            .collect();
        let proposal = if !lagging.is_empty() {
            let isr = l
                .isr
                .iter()
                .filter(|b| !lagging.contains(b))
                .copied()
                .collect();
            IsrProposal {
                leader_epoch: l.leader_epoch,
                partition_epoch: l.partition_epoch,
                isr,
                shrink: true,
            }
        } else {
            let joining = l.followers.iter().find(|(b, p)| {
                !l.isr.contains(b)
                    && p.log_end
                        .is_some_and(|end| end >= hw && end >= l.epoch_start)
            });
            let (b, _) = joining?;
            let mut isr = l.isr.clone();
            isr.push(*b);
            IsrProposal {
                leader_epoch: l.leader_epoch,
                partition_epoch: l.partition_epoch,
                isr,
                shrink: false,
            }
        };
        assert!(
            proposal.isr.contains(&me),
            "an ISR proposal without its leader"
        );
        l.pending = Some(proposal.clone());
        Some(proposal)
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
