//! Placement: which brokers hold the replicas of new partitions, and the checks a CreateTopics or
//! CreatePartitions request passes before anything is written. Pure: brokers come in as a list,
//! assignments go out as lists; the caller writes them.
//!
//! Invariants:
//! - only live (unfenced) brokers receive replicas; a replication factor above their number is
//!   INVALID_REPLICATION_FACTOR, never a partition with fewer replicas than asked;
//! - the replicas of one partition are distinct brokers; when brokers name racks, they are in
//!   distinct racks as long as there are at least as many racks as replicas (Kafka's
//!   rack-alternating assignment), otherwise every rack holds one before any holds two; when any
//!   live broker names no rack, racks are ignored altogether (Kafka refuses rack-aware placement
//!   over such a mix unless told otherwise; we place as if no broker named one, rather than
//!   count "no rack" as a rack that would then hold a replica of every partition);
//! - leaders (first replicas) go round-robin over the brokers, followers are shifted by a step
//!   that changes every full round, so leaders and replicas spread evenly;
//! - an explicit assignment is taken as given only if partitions are numbered in order, each
//!   names distinct, registered brokers (at least one live), and all have the same count.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::BrokerError;
use crate::ids::BrokerId;

/// A topic to create, as CreateTopics (or auto-creation) asks.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: `num.partitions`.
    pub partitions: i32,
    /// -1: `default.replication.factor`.
    pub replication_factor: i16,
    /// Explicit assignment: for each partition, its replicas.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: Vec<(String, String)>,
}

/// A registered broker as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementBroker {
    pub id: BrokerId,
    pub rack: Option<String>,
    pub fenced: bool,
}

/// What a request's -1s stand for (`num.partitions`, `default.replication.factor`).
#[derive(Debug, Clone, Copy)]
pub struct TopicDefaults {
    pub partitions: i32,
    pub replication_factor: i16,
}

/// A new topic's validated shape. Cheap to compute: the replicas of a computed placement are
/// only chosen by [`NewTopicPlan::assignment`], after the caller's limits passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopicPlan {
    pub partitions: i32,
    pub replication_factor: i16,
    /// The request's own assignment, checked.
    pub explicit: Option<Vec<Vec<BrokerId>>>,
}

impl NewTopicPlan {
    /// The replicas of every partition: the explicit ones, or a fresh placement from `start`.
    pub fn assignment(
        &self,
        brokers: &[PlacementBroker],
        start: usize,
    ) -> Result<Vec<Vec<BrokerId>>, BrokerError> {
        match &self.explicit {
            Some(a) => Ok(a.clone()),
            None => assign_replicas(brokers, 0, self.partitions, self.replication_factor, start),
        }
    }
}

/// Checks the partition count, replication factor and any explicit assignment of `t` against
/// the registered `brokers`. The name and its uniqueness are the caller's (it holds the topics).
pub fn plan_new_topic(
    t: &NewTopic,
    defaults: TopicDefaults,
    brokers: &[PlacementBroker],
) -> Result<NewTopicPlan, BrokerError> {
    if !t.assignments.is_empty() {
        if t.partitions != -1 || t.replication_factor != -1 {
            return Err(BrokerError::InvalidRequest(
                "both a replica assignment and a partition count or replication factor were given"
                    .into(),
            ));
        }
        let explicit = check_assignments(brokers, 0, &t.assignments, None)?;
        return Ok(NewTopicPlan {
            partitions: explicit.len() as i32,
            replication_factor: explicit.first().map_or(0, |r| r.len() as i16),
            explicit: Some(explicit),
        });
    }
    let partitions = match t.partitions {
        -1 => defaults.partitions,
        p if p < 1 => {
            return Err(BrokerError::InvalidPartitions(format!(
                "number of partitions must be at least 1, not {p}"
            )))
        }
        p => p,
    };
    let replication_factor = match t.replication_factor {
        -1 => defaults.replication_factor,
        rf => rf,
    };
    check_replication_factor(brokers, replication_factor)?;
    Ok(NewTopicPlan {
        partitions,
        replication_factor,
        explicit: None,
    })
}

fn live(brokers: &[PlacementBroker]) -> Vec<&PlacementBroker> {
    let mut live: Vec<_> = brokers.iter().filter(|b| !b.fenced).collect();
    live.sort_by_key(|b| b.id);
    live
}

fn check_replication_factor(brokers: &[PlacementBroker], rf: i16) -> Result<(), BrokerError> {
    if rf < 1 {
        return Err(BrokerError::InvalidReplicationFactor(
            "Replication factor must be larger than 0, or -1 to use the default value.".into(),
        ));
    }
    let available = live(brokers).len();
    if rf as usize > available {
        let s = if available == 1 { "" } else { "s" };
        return Err(BrokerError::InvalidReplicationFactor(format!(
            "replication factor {rf} is larger than the {available} available broker{s}"
        )));
    }
    Ok(())
}

/// Replicas for partitions `first_partition ..first_partition + partitions`, over the live
/// brokers. `start` picks the first leader and the first follower shift: callers pass a random
/// one (as Kafka does) so that topics do not all lead on the same broker.
pub fn assign_replicas(
    brokers: &[PlacementBroker],
    first_partition: i32,
    partitions: i32,
    rf: i16,
    start: usize,
) -> Result<Vec<Vec<BrokerId>>, BrokerError> {
    check_replication_factor(brokers, rf)?;
    let live = live(brokers);
    let unracked: Vec<PlacementBroker>;
    let live = if live.iter().any(|b| b.rack.is_none()) {
        unracked = live
            .iter()
            .map(|b| PlacementBroker {
                rack: None,
                ..(*b).clone()
            })
            .collect();
        unracked.iter().collect()
    } else {
        live
    };
    let arranged = rack_alternated(&live);
    let n = arranged.len();
    let racks = arranged
        .iter()
        .map(|b| &b.rack)
        .collect::<BTreeSet<_>>()
        .len();
    let rf = rf as usize;
    let start_index = start % n;
    let mut shift = start / n.max(1) % n;
    let mut out = Vec::with_capacity(partitions.max(0) as usize);
    for p in first_partition.max(0)..first_partition.max(0).saturating_add(partitions.max(0)) {
        let p = p as usize;
        if p > 0 && p.is_multiple_of(n) {
            shift += 1;
        }
        let first = (p + start_index) % n;
        let leader = arranged[first];
        let mut replicas = vec![leader.id];
        let mut racks_used = BTreeSet::from([&leader.rack]);
        let mut k = 0;
        while replicas.len() < rf {
            // Each replica is found within one pass over the other n-1 brokers: there is always
            // an unused broker, in an unused rack while one is left. The bound keeps it total.
            if k >= n * rf {
                return Err(BrokerError::InvalidReplicationFactor(format!(
                    "could not place {rf} replicas on {n} brokers"
                )));
            }
            let step = 1 + (shift * racks + k) % (n - 1);
            let candidate = arranged[(first + step) % n];
            k += 1;
            if replicas.contains(&candidate.id) {
                continue;
            }
            if racks_used.contains(&candidate.rack) && racks_used.len() < racks {
                continue;
            }
            racks_used.insert(&candidate.rack);
            replicas.push(candidate.id);
        }
        out.push(replicas);
    }
    Ok(out)
}

/// The brokers ordered so that consecutive ones are in different racks: the first broker of each
/// rack, then the second of each, ... (racks and brokers in id order). Without racks: by id.
fn rack_alternated<'a>(live: &[&'a PlacementBroker]) -> Vec<&'a PlacementBroker> {
    let mut by_rack: BTreeMap<&Option<String>, Vec<&PlacementBroker>> = BTreeMap::new();
    for b in live {
        by_rack.entry(&b.rack).or_default().push(b);
    }
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| {
            by_rack
                .values()
                .filter_map(move |list| list.get(i).copied())
        })
        .collect()
}

/// Checks an explicit assignment of partitions `first..`: numbered in order, each naming
/// distinct registered brokers with at least one live, all with the same count (and that count
/// `replication_factor` when the topic already has one). Returns the replicas per partition.
pub fn check_assignments(
    brokers: &[PlacementBroker],
    first: i32,
    assignments: &[(i32, Vec<i32>)],
    replication_factor: Option<usize>,
) -> Result<Vec<Vec<BrokerId>>, BrokerError> {
    let bad = |m: String| Err(BrokerError::InvalidReplicaAssignment(m));
    let known: BTreeMap<BrokerId, &PlacementBroker> = brokers.iter().map(|b| (b.id, b)).collect();
    let mut expected_rf = replication_factor;
    let mut out = Vec::with_capacity(assignments.len());
    for (i, (p, replicas)) in assignments.iter().enumerate() {
        if i64::from(*p) != i64::from(first) + i as i64 {
            return bad(format!(
                "partitions must be assigned in order from {first}; got {p} at position {i}"
            ));
        }
        if replicas.is_empty() {
            return bad(format!("partition {p}: no replicas"));
        }
        let ids: Vec<BrokerId> = replicas.iter().copied().map(BrokerId).collect();
        if ids.iter().collect::<BTreeSet<_>>().len() != ids.len() {
            return bad(format!(
                "partition {p}: replicas {replicas:?} name a broker twice"
            ));
        }
        if let Some(unknown) = ids.iter().find(|b| !known.contains_key(b)) {
            return bad(format!(
                "partition {p}: replicas {replicas:?} name broker {}, which is not registered",
                unknown.0
            ));
        }
        if ids.iter().all(|b| known.get(b).is_some_and(|b| b.fenced)) {
            return bad(format!(
                "partition {p}: every broker of replicas {replicas:?} is fenced"
            ));
        }
        match expected_rf {
            Some(rf) if rf != ids.len() => {
                return bad(format!(
                    "partition {p} has {} replicas, but the topic's other partitions have {rf}",
                    ids.len()
                ))
            }
            _ => expected_rf = Some(ids.len()),
        }
        out.push(ids);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[Option<&str>]) -> Vec<PlacementBroker> {
        racks
            .iter()
            .enumerate()
            .map(|(i, rack)| PlacementBroker {
                id: BrokerId(i as i32 + 1),
                rack: rack.map(str::to_string),
                fenced: false,
            })
            .collect()
    }

    fn counts(assignment: &[Vec<BrokerId>], leaders_only: bool) -> BTreeMap<BrokerId, usize> {
        let mut out = BTreeMap::new();
        for replicas in assignment {
            let take = if leaders_only { 1 } else { replicas.len() };
            for b in &replicas[..take] {
                *out.entry(*b).or_insert(0) += 1;
            }
        }
        out
    }

    fn spread(counts: &BTreeMap<BrokerId, usize>) -> usize {
        counts.values().max().unwrap() - counts.values().min().unwrap()
    }

    #[test]
    fn replicas_and_leaders_spread_evenly_over_six_brokers() {
        let six = brokers(&[None; 6]);
        for start in [0, 1, 5, 17, 1000] {
            let a = assign_replicas(&six, 0, 100, 3, start).unwrap();
            assert_eq!(a.len(), 100);
            assert!(a
                .iter()
                .all(|r| r.len() == 3 && r.iter().collect::<BTreeSet<_>>().len() == 3));
            let leaders = counts(&a, true);
            let replicas = counts(&a, false);
            assert_eq!((leaders.len(), replicas.len()), (6, 6));
            assert!(spread(&leaders) <= 1, "start {start}: leaders {leaders:?}");
            assert!(
                spread(&replicas) <= 2,
                "start {start}: replicas {replicas:?}"
            );
        }
    }

    #[test]
    fn a_broker_without_a_rack_is_not_a_rack_of_its_own() {
        // Three brokers in rack a, one that names none: racks are ignored, so the one without
        // does not get a replica of every partition.
        let mixed = brokers(&[Some("a"), Some("a"), Some("a"), None]);
        let a = assign_replicas(&mixed, 0, 8, 2, 0).unwrap();
        let replicas = counts(&a, false);
        assert_eq!(replicas.len(), 4);
        assert!(spread(&replicas) <= 1, "replicas {replicas:?}");
    }

    #[test]
    fn with_racks_no_two_replicas_of_a_partition_share_one() {
        let racked = brokers(&[
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
            Some("c"),
        ]);
        // Uneven racks too: three in a, two in b, one in c.
        let uneven = brokers(&[
            Some("a"),
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
        ]);
        for list in [&racked, &uneven] {
            let rack_of: BTreeMap<BrokerId, &Option<String>> =
                list.iter().map(|b| (b.id, &b.rack)).collect();
            for start in [0, 3, 7] {
                let a = assign_replicas(list, 0, 60, 3, start).unwrap();
                for replicas in &a {
                    let racks: BTreeSet<_> = replicas.iter().map(|b| rack_of[b]).collect();
                    assert_eq!(racks.len(), 3, "{replicas:?}");
                }
                assert!(spread(&counts(&a, true)) <= 1);
            }
        }
        // More replicas than racks: every rack holds one, then they double up.
        let two_racks = brokers(&[Some("a"), Some("a"), Some("b"), Some("b")]);
        for replicas in assign_replicas(&two_racks, 0, 20, 3, 0).unwrap() {
            let racks: BTreeSet<_> = replicas
                .iter()
                .map(|b| &two_racks[b.0 as usize - 1].rack)
                .collect();
            assert_eq!(racks.len(), 2, "{replicas:?}");
        }
    }

    #[test]
    fn fenced_brokers_get_nothing_and_too_few_live_brokers_refuse_the_factor() {
        let mut list = brokers(&[None; 4]);
        list[1].fenced = true;
        let a = assign_replicas(&list, 0, 30, 3, 2).unwrap();
        assert!(a.iter().flatten().all(|b| *b != BrokerId(2)));
        let err = assign_replicas(&list, 0, 1, 4, 0).unwrap_err();
        assert_eq!(err.code(), 38, "{err}");
        assert!(err.to_string().contains("3 available brokers"), "{err}");
        let defaults = TopicDefaults {
            partitions: 1,
            replication_factor: 1,
        };
        let topic = |partitions, replication_factor| NewTopic {
            name: "t".into(),
            partitions,
            replication_factor,
            assignments: vec![],
            configs: vec![],
        };
        assert_eq!(
            plan_new_topic(&topic(-1, 0), defaults, &list)
                .unwrap_err()
                .code(),
            38
        );
        assert_eq!(
            plan_new_topic(&topic(0, 1), defaults, &list)
                .unwrap_err()
                .code(),
            37
        );
        let plan = plan_new_topic(&topic(-1, 3), defaults, &list).unwrap();
        assert_eq!((plan.partitions, plan.replication_factor), (1, 3));
        assert_eq!(plan.assignment(&list, 0).unwrap()[0].len(), 3);
        // Partitions added later continue the rotation instead of restarting it.
        let grown = assign_replicas(&list, 30, 3, 3, 2).unwrap();
        assert_eq!(grown.len(), 3);
    }

    #[test]
    fn explicit_assignments_are_checked_as_kafka_checks_them() {
        let mut list = brokers(&[None; 3]);
        list[2].fenced = true;
        let check = |a: &[(i32, Vec<i32>)]| check_assignments(&list, 0, a, None);
        let code = |r: Result<Vec<Vec<BrokerId>>, BrokerError>| r.unwrap_err().code();
        // INVALID_REPLICA_ASSIGNMENT (39) for each way an assignment can be wrong.
        assert_eq!(code(check(&[(0, vec![1, 1])])), 39, "a broker twice");
        assert_eq!(code(check(&[(0, vec![1, 7])])), 39, "an unknown broker");
        assert_eq!(code(check(&[(0, vec![3])])), 39, "only fenced brokers");
        assert_eq!(code(check(&[(0, vec![])])), 39, "no replicas");
        assert_eq!(
            code(check(&[(0, vec![1, 2]), (1, vec![1])])),
            39,
            "inconsistent replication factor"
        );
        assert_eq!(code(check(&[(1, vec![1])])), 39, "not numbered from 0");
        assert_eq!(
            code(check(&[(0, vec![1]), (0, vec![2])])),
            39,
            "numbered twice"
        );
        assert_eq!(
            code(check_assignments(&list, 4, &[(4, vec![1, 2])], Some(1))),
            39,
            "not the topic's replication factor"
        );
        let ok = check(&[(0, vec![2, 3]), (1, vec![1, 2])]).unwrap();
        assert_eq!(
            ok[0],
            [BrokerId(2), BrokerId(3)],
            "a fenced follower is allowed"
        );

        let defaults = TopicDefaults {
            partitions: 1,
            replication_factor: 1,
        };
        let both = NewTopic {
            name: "t".into(),
            partitions: 2,
            replication_factor: -1,
            assignments: vec![(0, vec![1])],
            configs: vec![],
        };
        let err = plan_new_topic(&both, defaults, &list).unwrap_err();
        assert_eq!(err.code(), 42, "INVALID_REQUEST: {err}");
        let explicit = NewTopic {
            partitions: -1,
            assignments: vec![(0, vec![1, 2]), (1, vec![2, 1])],
            ..both
        };
        let plan = plan_new_topic(&explicit, defaults, &list).unwrap();
        assert_eq!((plan.partitions, plan.replication_factor), (2, 2));
        assert_eq!(
            plan.assignment(&list, 9).unwrap()[1],
            [BrokerId(2), BrokerId(1)]
        );
    }
}
