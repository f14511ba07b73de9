//! What the active controller (the quorum's leader) does on its own, besides committing what
//! brokers propose: it adds every registered broker that is not a voter to the quorum as a learner
//! (so it follows the metadata log), fences a broker whose heartbeats stopped for
//! `broker.session.timeout.ms`, and unfences one that heartbeats again with the incarnation it
//! registered with. And what every broker does for it: heartbeat every
//! `broker.heartbeat.interval.ms`.
//!
//! The task also keeps the controller metrics current (active or not, applied metadata offset,
//! elections seen), once per tick.
//!
//! The rules are a pure function ([`decide`]) of the image, the heartbeats heard and the clock,
//! tested without sockets; [`run`] feeds it and carries out what it returns.
//!
//! Invariants:
//! - only the leader acts; a node that just became leader heard no heartbeat yet, so every broker
//!   gets a full session from that moment before it can be fenced;
//! - a heartbeat counts only for the incarnation the image holds: a zombie of an earlier run
//!   keeps nobody alive;
//! - this issue only records liveness: fencing moves no leader (the failover issue does).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::image::MetadataImage;
use super::member::Controller;
use super::records::{MetadataRecord, CONTROLLER_LISTENER};
use crate::ids::BrokerId;

/// The settings the duties run with.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat_interval: Duration,
    pub session_timeout: Duration,
}

/// One thing the leader should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Duty {
    AddLearner { id: BrokerId, addr: SocketAddr },
    Fence(MetadataRecord),
    Unfence(MetadataRecord),
}

/// What the leader should do now. `last_heard(broker, incarnation)` is when that broker last
/// heartbeat as that incarnation; `first_seen(broker, incarnation)` when this leader first saw that
/// registration; `leader_since` when this node became leader. The last two only delay fencing (a
/// full session of grace); unfencing takes a real heartbeat.
pub fn decide(
    image: &MetadataImage,
    members: &BTreeSet<u64>,
    last_heard: impl Fn(BrokerId, u128) -> Option<Instant>,
    first_seen: impl Fn(BrokerId, u128) -> Option<Instant>,
    leader_since: Instant,
    now: Instant,
    session_timeout: Duration,
) -> Vec<Duty> {
    let mut duties = Vec::new();
    let recent = |at: Instant| now.saturating_duration_since(at) < session_timeout;
    for b in image.brokers().values() {
        if !members.contains(&(b.id.0 as u64)) {
            let addr = b
                .endpoint(CONTROLLER_LISTENER)
                .and_then(|e| format!("{}:{}", e.host, e.port).parse().ok());
            if let Some(addr) = addr {
                duties.push(Duty::AddLearner { id: b.id, addr });
            }
        }
        let incarnation = b.incarnation.as_u128();
        let heard = last_heard(b.id, incarnation);
        // Silent since the latest of its last heartbeat, its registration as this leader saw
        // it, and this leadership's start.
        let grace = first_seen(b.id, incarnation).map_or(leader_since, |s| s.max(leader_since));
        let since = heard.map_or(grace, |h| h.max(grace));
        let change = |fenced| MetadataRecord::BrokerChange {
            id: b.id,
            incarnation: b.incarnation,
            fenced,
        };
        if !b.fenced && !recent(since) {
            duties.push(Duty::Fence(change(true)));
        } else if b.fenced && heard.is_some_and(recent) {
            duties.push(Duty::Unfence(change(false)));
        }
    }
    duties
}

/// Runs the leader's duties and this broker's heartbeat until the task is aborted.
pub async fn run(controller: Controller, broker: Option<BrokerId>, timing: Timing) {
    let quorum = controller.quorum().clone();
    let me = quorum.id();
    let mut leader_since: Option<Instant> = None;
    // The term whose election was last counted (metrics).
    let mut last_term = 0;
    // When this leader first saw each registration: a broker that registered (or restarted, with
    // a new incarnation) gets a full session from then, as a new leader gives everyone.
    let mut first_seen: std::collections::HashMap<(BrokerId, u128), Instant> = Default::default();
    // Checked a few times per heartbeat interval: fencing is late by at most one tick.
    let mut tick = tokio::time::interval(timing.heartbeat_interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(id) = broker {
            if let Err(e) = quorum
                .heartbeat(id.0, controller.incarnation().as_u128())
                .await
            {
                tracing::debug!(error = %e, "broker heartbeat not delivered");
            }
        }
        let status = quorum.status();
        if status.leader.is_some() && status.term != last_term {
            last_term = status.term;
            crate::metrics::controller_election();
        }
        crate::metrics::controller_state(
            status.leader == Some(me),
            status.applied.map_or(-1, |i| i as i64),
        );
        if status.leader != Some(me) {
            leader_since = None;
            first_seen.clear();
            continue;
        }
        let now = Instant::now();
        let since = *leader_since.get_or_insert_with(|| {
            tracing::info!("this node is the active controller");
            now
        });
        let image = controller.image();
        let registered: std::collections::HashSet<(BrokerId, u128)> = image
            .brokers()
            .values()
            .map(|b| (b.id, b.incarnation.as_u128()))
            .collect();
        first_seen.retain(|k, _| registered.contains(k));
        for k in registered {
            first_seen.entry(k).or_insert(now);
        }
        let members: BTreeSet<u64> = status.voters.union(&status.learners).copied().collect();
        let duties = decide(
            &image,
            &members,
            |b, i| quorum.liveness().last_heard(b.0, i),
            |b, i| first_seen.get(&(b, i)).copied(),
            since,
            now,
            timing.session_timeout,
        );
        tracing::debug!(
            brokers = image.brokers().len(),
            ?members,
            ?duties,
            "controller duties"
        );
        for duty in duties {
            match duty {
                Duty::AddLearner { id, addr } => {
                    tracing::info!(broker = id.0, %addr, "adding the broker to the quorum as a learner");
                    if let Err(e) = quorum.add_learner(id.0 as u64, addr).await {
                        tracing::warn!(broker = id.0, error = %e, "adding a learner failed");
                    }
                }
                Duty::Fence(record) | Duty::Unfence(record) => {
                    tracing::info!(?record, "broker liveness changed");
                    if let Err(e) = controller.propose(&[record]).await {
                        tracing::warn!(error = %e, "committing a broker's liveness failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::controller::records::{BrokerEndpoint, BrokerRegistration};
    use crate::ids::Offset;

    fn registered(ids: &[(i32, u128)]) -> MetadataImage {
        let records: Vec<MetadataRecord> = ids
            .iter()
            .map(|(id, inc)| {
                MetadataRecord::RegisterBroker(BrokerRegistration {
                    id: BrokerId(*id),
                    incarnation: Uuid::from_u128(*inc),
                    endpoints: vec![BrokerEndpoint {
                        listener: "CONTROLLER".into(),
                        host: "127.0.0.1".into(),
                        port: 9000 + *id as u16,
                    }],
                    rack: None,
                    fenced: false,
                })
            })
            .collect();
        MetadataImage::empty().apply(Offset(1), &records).unwrap().0
    }

    fn fence(image: &MetadataImage, id: i32) -> MetadataImage {
        let b = image.broker(BrokerId(id)).unwrap();
        let record = MetadataRecord::BrokerChange {
            id: b.id,
            incarnation: b.incarnation,
            fenced: true,
        };
        image
            .apply(Offset(image.offset().0 + 1), &[record])
            .unwrap()
            .0
    }

    const SESSION: Duration = Duration::from_secs(9);

    /// The story: brokers 1-3 register (1 and 2 vote, 3 is not yet a member); a new leader gives
    /// everyone a full session; broker 2 goes silent and is fenced; a zombie of broker 2's
    /// previous run keeps it fenced; broker 2 comes back as itself and is unfenced.
    #[test]
    fn silent_brokers_are_fenced_after_a_session_and_unfenced_when_they_return() {
        let image = registered(&[(1, 11), (2, 22), (3, 33)]);
        let members = BTreeSet::from([1, 2]);
        let start = Instant::now();
        let never = |_: BrokerId, _: u128| None;
        let heard_from = |list: Vec<(i32, u128, Instant)>| {
            move |b: BrokerId, inc: u128| {
                list.iter()
                    .find(|(id, i, _)| *id == b.0 && *i == inc)
                    .map(|(_, _, at)| *at)
            }
        };

        // A new leader: broker 3 is added as a learner, nobody is fenced yet.
        let duties = decide(
            &image,
            &members,
            heard_from(vec![]),
            never,
            start,
            start,
            SESSION,
        );
        assert_eq!(
            duties,
            vec![Duty::AddLearner {
                id: BrokerId(3),
                addr: "127.0.0.1:9003".parse().unwrap()
            }]
        );
        let members = BTreeSet::from([1, 2, 3]);

        // Just under a session, brokers 1 and 3 heartbeat, 2 does not: nothing yet.
        let t = start + SESSION - Duration::from_millis(1);
        let heard = vec![(1, 11, t), (3, 33, t)];
        assert!(decide(
            &image,
            &members,
            heard_from(heard.clone()),
            never,
            start,
            t,
            SESSION
        )
        .is_empty());

        // A session after the leadership began, broker 2 is fenced.
        let t = start + SESSION;
        let duties = decide(
            &image,
            &members,
            heard_from(heard.clone()),
            never,
            start,
            t,
            SESSION,
        );
        let expected = MetadataRecord::BrokerChange {
            id: BrokerId(2),
            incarnation: Uuid::from_u128(22),
            fenced: true,
        };
        assert_eq!(duties, vec![Duty::Fence(expected)]);
        let image = fence(&image, 2);

        // A zombie of broker 2 (another incarnation) heartbeats: still fenced, nothing to do.
        let t2 = t + Duration::from_secs(1);
        let zombie = vec![(1, 11, t2), (2, 99, t2), (3, 33, t2)];
        assert!(decide(
            &image,
            &members,
            heard_from(zombie),
            never,
            start,
            t2,
            SESSION
        )
        .is_empty());

        // Broker 2 itself heartbeats again: unfenced.
        let back = vec![(1, 11, t2), (2, 22, t2), (3, 33, t2)];
        let duties = decide(
            &image,
            &members,
            heard_from(back),
            never,
            start,
            t2,
            SESSION,
        );
        assert_eq!(
            duties,
            vec![Duty::Unfence(MetadataRecord::BrokerChange {
                id: BrokerId(2),
                incarnation: Uuid::from_u128(22),
                fenced: false,
            })]
        );

        // A new leader (a failover) sees every registration for the first time: that grace
        // keeps live brokers unfenced, but never unfences one that stays silent.
        let t3 = t2 + Duration::from_secs(1);
        let just_seen = |_: BrokerId, _: u128| Some(t3);
        let silent = vec![(1, 11, t3), (3, 33, t3)];
        assert!(
            decide(
                &image,
                &members,
                heard_from(silent),
                just_seen,
                t3,
                t3,
                SESSION
            )
            .is_empty(),
            "broker 2 stays fenced"
        );
    }
}
