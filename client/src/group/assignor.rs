//! Partition assignors: the group leader's pure function from the members' subscriptions (and
//! what they own) and the topics' partition counts to one assignment per member. Kafka's names:
//! `range`, `roundrobin`, `cooperative-sticky`.
//!
//! Invariants (each checked by the tests below):
//! - every member of the input has an entry in the output (possibly empty), and a partition is
//!   given to at most one member, which subscribes to its topic;
//! - range and roundrobin give every subscribed partition to someone, balanced: within one
//!   topic (range) or overall (roundrobin, equal subscriptions), counts differ by at most one;
//! - cooperative-sticky first keeps what each member owns (up to its fair share), spreads the
//!   rest, then balances with as few moves as possible; and it never gives a member a
//!   partition another member still owns (KIP-429): such a partition is left out of this
//!   round, its owner sees it missing and revokes it, rejoins, and the next round hands it on;
//! - the output depends only on the input (members and partitions are visited sorted), so every
//!   leader computes the same answer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::protocol::{Subscription, Tp};

/// How members give partitions up in a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceProtocol {
    /// Every member revokes everything before it joins.
    Eager,
    /// Members keep their partitions through the rebalance and revoke only what moves.
    Cooperative,
}

/// One member as the leader sees it in the JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub subscription: Subscription,
}

impl Member {
    /// Static members sort by their instance id, so a restarted one gets the same partitions.
    fn sort_key(&self) -> (&str, &str) {
        (
            self.group_instance_id
                .as_deref()
                .unwrap_or(self.member_id.as_str()),
            self.member_id.as_str(),
        )
    }

    fn subscribes(&self, topic: &str) -> bool {
        self.subscription
            .topics
            .binary_search_by(|t| t.as_str().cmp(topic))
            .is_ok()
    }
}

/// Member id → its partitions (sorted).
pub type GroupAssignment = BTreeMap<String, Vec<Tp>>;

pub trait Assignor: Send + Sync + std::fmt::Debug {
    /// The protocol name sent in JoinGroup (`partition.assignment.strategy` value).
    fn name(&self) -> &'static str;
    fn protocol(&self) -> RebalanceProtocol;
    /// `partitions`: topic → partition count, for every topic some member subscribes to that
    /// exists. Topics missing there are ignored.
    fn assign(&self, partitions: &BTreeMap<String, i32>, members: &[Member]) -> GroupAssignment;
}

/// The assignor called `name`, if we have one.
pub fn by_name(name: &str) -> Option<Arc<dyn Assignor>> {
    match name {
        "range" => Some(Arc::new(Range)),
        "roundrobin" => Some(Arc::new(RoundRobin)),
        "cooperative-sticky" => Some(Arc::new(CooperativeSticky)),
        _ => None,
    }
}

/// The rebalance protocol of a list of assignors: cooperative only if all of them are (Java's
/// rule, so a group can move from eager to cooperative one rolling restart at a time).
pub fn common_protocol(assignors: &[Arc<dyn Assignor>]) -> RebalanceProtocol {
    if !assignors.is_empty()
        && assignors
            .iter()
            .all(|a| a.protocol() == RebalanceProtocol::Cooperative)
    {
        RebalanceProtocol::Cooperative
    } else {
        RebalanceProtocol::Eager
    }
}

fn sorted_members(members: &[Member]) -> Vec<&Member> {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    sorted
}

fn empty_assignment(members: &[Member]) -> GroupAssignment {
    members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect()
}

/// Every partition of every topic some member subscribes to, sorted.
fn subscribed_partitions(partitions: &BTreeMap<String, i32>, members: &[Member]) -> Vec<Tp> {
    partitions
        .iter()
        .filter(|(t, _)| members.iter().any(|m| m.subscribes(t)))
        .flat_map(|(t, &n)| (0..n.max(0)).map(move |p| (t.clone(), p)))
        .collect()
}

/// Per topic, consecutive ranges of partitions to the subscribed members in order; the first
/// `count % members` members get one more.
#[derive(Debug)]
pub struct Range;

impl Assignor for Range {
    fn name(&self) -> &'static str {
        "range"
    }
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }
    fn assign(&self, partitions: &BTreeMap<String, i32>, members: &[Member]) -> GroupAssignment {
        let mut out = empty_assignment(members);
        let sorted = sorted_members(members);
        for (topic, &count) in partitions {
            let subscribed: Vec<&&Member> = sorted.iter().filter(|m| m.subscribes(topic)).collect();
            if subscribed.is_empty() || count <= 0 {
                continue;
            }
            let n = subscribed.len() as i32;
            let (each, extra) = (count / n, count % n);
            let mut next = 0;
            for (i, m) in subscribed.iter().enumerate() {
                let take = each + i32::from((i as i32) < extra);
                if let Some(list) = out.get_mut(&m.member_id) {
                    list.extend((next..next + take).map(|p| (topic.clone(), p)));
                }
                next += take;
            }
        }
        out
    }
}

/// All partitions, sorted, dealt one at a time to the members in turn (skipping members not
/// subscribed to the partition's topic).
#[derive(Debug)]
pub struct RoundRobin;

impl Assignor for RoundRobin {
    fn name(&self) -> &'static str {
        "roundrobin"
    }
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }
    fn assign(&self, partitions: &BTreeMap<String, i32>, members: &[Member]) -> GroupAssignment {
        let mut out = empty_assignment(members);
        let sorted = sorted_members(members);
        if sorted.is_empty() {
            return out;
        }
        let mut cursor = 0usize;
        for tp in subscribed_partitions(partitions, members) {
            // At most one full turn: someone subscribes (subscribed_partitions checked).
            for _ in 0..sorted.len() {
                let m = sorted[cursor % sorted.len()];
                cursor += 1;
                if m.subscribes(&tp.0) {
                    if let Some(list) = out.get_mut(&m.member_id) {
                        list.push(tp.clone());
                    }
                    break;
                }
            }
        }
        out
    }
}

/// Sticky and balanced, revoking cooperatively (see the module invariants).
#[derive(Debug)]
pub struct CooperativeSticky;

impl Assignor for CooperativeSticky {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }
    fn assign(&self, partitions: &BTreeMap<String, i32>, members: &[Member]) -> GroupAssignment {
        let (target, owners) = sticky_target(partitions, members);
        // KIP-429: a partition still owned by another member is not handed over in this round.
        target
            .into_iter()
            .map(|(member, tps)| {
                let kept = tps
                    .into_iter()
                    .filter(|tp| owners.get(tp).is_none_or(|owner| *owner == member))
                    .collect();
                (member, kept)
            })
            .collect()
    }
}

/// The balanced, sticky target assignment, and who owns each partition now (the claim of the
/// member with the highest generation wins when two claim one, as in Kafka).
fn sticky_target(
    partitions: &BTreeMap<String, i32>,
    members: &[Member],
) -> (GroupAssignment, BTreeMap<Tp, String>) {
    let all: BTreeSet<Tp> = subscribed_partitions(partitions, members)
        .into_iter()
        .collect();
    let mut by_generation: Vec<&Member> = sorted_members(members);
    by_generation.sort_by_key(|m| std::cmp::Reverse(m.subscription.generation));

    let mut owners: BTreeMap<Tp, String> = BTreeMap::new();
    for m in &by_generation {
        for tp in &m.subscription.owned_partitions {
            if all.contains(tp) && m.subscribes(&tp.0) && !owners.contains_key(tp) {
                owners.insert(tp.clone(), m.member_id.clone());
            }
        }
    }

    let member_count = members.len().max(1);
    let quota_max = all.len().div_ceil(member_count);
    let mut assigned: BTreeMap<String, BTreeSet<Tp>> = members
        .iter()
        .map(|m| (m.member_id.clone(), BTreeSet::new()))
        .collect();
    // 1. Keep what each member owns, up to the largest fair share.
    for (tp, owner) in &owners {
        if let Some(set) = assigned.get_mut(owner) {
            if set.len() < quota_max {
                set.insert(tp.clone());
            }
        }
    }
    let taken: BTreeSet<Tp> = assigned.values().flatten().cloned().collect();
    let sorted = sorted_members(members);
    // 2. Everything else to the least loaded subscribed member.
    for tp in all.difference(&taken) {
        let least = sorted
            .iter()
            .filter(|m| m.subscribes(&tp.0))
            .min_by_key(|m| assigned.get(&m.member_id).map_or(0, BTreeSet::len));
        if let Some(m) = least {
            if let Some(set) = assigned.get_mut(&m.member_id) {
                set.insert(tp.clone());
            }
        }
    }
    // 3. Balance: move one partition at a time from a member to a subscribed member holding at
    //    least two fewer. Each move lowers the sum of squared counts, so this ends; the bound
    //    is a guard.
    for _ in 0..=all.len() * member_count {
        let mut moved = false;
        let mut by_load: Vec<&Member> = sorted.clone();
        by_load.sort_by_key(|m| {
            std::cmp::Reverse(assigned.get(&m.member_id).map_or(0, BTreeSet::len))
        });
        'find: for giver in &by_load {
            let give_count = assigned.get(&giver.member_id).map_or(0, BTreeSet::len);
            let candidates: Vec<Tp> = assigned
                .get(&giver.member_id)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            // Give away what the giver did not own before, if it can: less churn.
            let mut candidates_ordered: Vec<Tp> = candidates
                .iter()
                .filter(|tp| owners.get(*tp) != Some(&giver.member_id))
                .cloned()
                .collect();
            candidates_ordered.extend(
                candidates
                    .into_iter()
                    .filter(|tp| owners.get(tp) == Some(&giver.member_id)),
            );
            for tp in candidates_ordered {
                let taker = by_load
                    .iter()
                    .rev()
                    .filter(|m| m.subscribes(&tp.0))
                    .map(|m| (m, assigned.get(&m.member_id).map_or(0, BTreeSet::len)))
                    .filter(|(_, count)| count + 2 <= give_count)
                    .min_by_key(|(m, count)| (*count, m.sort_key()));
                if let Some((taker, _)) = taker {
                    let taker_id = taker.member_id.clone();
                    if let Some(s) = assigned.get_mut(&giver.member_id) {
                        s.remove(&tp);
                    }
                    if let Some(s) = assigned.get_mut(&taker_id) {
                        s.insert(tp);
                    }
                    moved = true;
                    break 'find;
                }
            }
        }
        if !moved {
            break;
        }
    }
    let target = assigned
        .into_iter()
        .map(|(m, s)| (m, s.into_iter().collect()))
        .collect();
    (target, owners)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn member(id: &str, subscribed: &[&str], owned: &[(&str, i32)], generation: i32) -> Member {
        let mut subscription = Subscription::new(subscribed.iter().map(|t| t.to_string()));
        subscription.owned_partitions = owned.iter().map(|(t, p)| (t.to_string(), *p)).collect();
        subscription.generation = generation;
        Member {
            member_id: id.to_string(),
            group_instance_id: None,
            subscription,
        }
    }

    fn tps(list: &[(&str, i32)]) -> Vec<Tp> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    /// Checks the invariants every assignor keeps; returns the per-member counts.
    fn check_valid(
        out: &GroupAssignment,
        partitions: &BTreeMap<String, i32>,
        members: &[Member],
    ) -> Vec<usize> {
        assert_eq!(out.len(), members.len(), "every member has an entry");
        let mut seen = BTreeSet::new();
        for m in members {
            for tp in &out[&m.member_id] {
                assert!(
                    m.subscribes(&tp.0),
                    "{} got {tp:?} it does not want",
                    m.member_id
                );
                assert!(tp.1 < partitions[&tp.0], "{tp:?} does not exist");
                assert!(seen.insert(tp.clone()), "{tp:?} given twice");
            }
        }
        members.iter().map(|m| out[&m.member_id].len()).collect()
    }

    fn spread(counts: &[usize]) -> usize {
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
    }

    #[test]
    fn range_gives_consecutive_ranges_per_topic_first_members_one_more() {
        let parts = topics(&[("a", 5), ("b", 2)]);
        let members = [
            member("m2", &["a", "b"], &[], -1),
            member("m1", &["a"], &[], -1),
        ];
        let out = Range.assign(&parts, &members);
        check_valid(&out, &parts, &members);
        assert_eq!(out["m1"], tps(&[("a", 0), ("a", 1), ("a", 2)]));
        assert_eq!(out["m2"], tps(&[("a", 3), ("a", 4), ("b", 0), ("b", 1)]));
    }

    #[test]
    fn range_sorts_static_members_by_instance_id() {
        let parts = topics(&[("a", 2)]);
        let mut first = member("zzz", &["a"], &[], -1);
        first.group_instance_id = Some("instance-1".into());
        let mut second = member("aaa", &["a"], &[], -1);
        second.group_instance_id = Some("instance-2".into());
        let out = Range.assign(&parts, &[second, first]);
        assert_eq!(out["zzz"], tps(&[("a", 0)]));
        assert_eq!(out["aaa"], tps(&[("a", 1)]));
    }

    #[test]
    fn roundrobin_deals_in_turn_and_balances_overall() {
        let parts = topics(&[("a", 3), ("b", 4)]);
        let members = [
            member("m1", &["a", "b"], &[], -1),
            member("m2", &["a", "b"], &[], -1),
            member("m3", &["a", "b"], &[], -1),
        ];
        let out = RoundRobin.assign(&parts, &members);
        let counts = check_valid(&out, &parts, &members);
        assert_eq!(counts.iter().sum::<usize>(), 7);
        assert!(spread(&counts) <= 1, "{counts:?}");
        assert_eq!(out["m1"], tps(&[("a", 0), ("b", 0), ("b", 3)]));
        // A member not subscribed is skipped.
        let members = [
            member("m1", &["a"], &[], -1),
            member("m2", &["a", "b"], &[], -1),
        ];
        let out = RoundRobin.assign(&parts, &members);
        check_valid(&out, &parts, &members);
        assert!(out["m2"].contains(&("b".to_string(), 0)));
        assert_eq!(out["m1"].len() + out["m2"].len(), 7);
    }

    #[test]
    fn sticky_first_assignment_is_balanced_and_complete() {
        for (n_parts, n_members) in [(6, 3), (7, 3), (1, 4), (10, 1), (0, 2)] {
            let parts = topics(&[("t", n_parts)]);
            let members: Vec<Member> = (0..n_members)
                .map(|i| member(&format!("m{i}"), &["t"], &[], -1))
                .collect();
            let out = CooperativeSticky.assign(&parts, &members);
            let counts = check_valid(&out, &parts, &members);
            assert_eq!(counts.iter().sum::<usize>(), n_parts as usize);
            assert!(spread(&counts) <= 1, "{n_parts}/{n_members}: {counts:?}");
        }
    }

    #[test]
    fn cooperative_join_of_a_new_member_revokes_only_what_moves_then_hands_it_on() {
        let parts = topics(&[("t", 6)]);
        let a_owned = [("t", 0), ("t", 1), ("t", 2)];
        let b_owned = [("t", 3), ("t", 4), ("t", 5)];
        let round1 = [
            member("a", &["t"], &a_owned, 1),
            member("b", &["t"], &b_owned, 1),
            member("c", &["t"], &[], -1),
        ];
        let out = CooperativeSticky.assign(&parts, &round1);
        check_valid(&out, &parts, &round1);
        // Each old member keeps two of its three; the new one gets nothing yet.
        assert_eq!(out["c"], Vec::<Tp>::new());
        assert_eq!(out["a"].len(), 2);
        assert_eq!(out["b"].len(), 2);
        assert!(out["a"]
            .iter()
            .all(|tp| a_owned.contains(&(tp.0.as_str(), tp.1))));
        assert!(out["b"]
            .iter()
            .all(|tp| b_owned.contains(&(tp.0.as_str(), tp.1))));
        // What each revokes: owned minus assigned, one partition each.
        let revoked_a: Vec<Tp> = tps(&a_owned)
            .into_iter()
            .filter(|tp| !out["a"].contains(tp))
            .collect();
        let revoked_b: Vec<Tp> = tps(&b_owned)
            .into_iter()
            .filter(|tp| !out["b"].contains(tp))
            .collect();
        assert_eq!((revoked_a.len(), revoked_b.len()), (1, 1));

        // Second round: a and b rejoin owning what they kept; c receives the revoked two.
        let owned = |list: &Vec<Tp>| -> Vec<(String, i32)> { list.clone() };
        let mut a = member("a", &["t"], &[], 2);
        a.subscription.owned_partitions = owned(&out["a"]);
        let mut b = member("b", &["t"], &[], 2);
        b.subscription.owned_partitions = owned(&out["b"]);
        let round2 = [a, b, member("c", &["t"], &[], -1)];
        let out2 = CooperativeSticky.assign(&parts, &round2);
        let counts = check_valid(&out2, &parts, &round2);
        assert_eq!(counts, vec![2, 2, 2]);
        assert_eq!(out2["a"], out["a"], "sticky: a keeps what it kept");
        assert_eq!(out2["b"], out["b"]);
        let mut expect_c = [revoked_a, revoked_b].concat();
        expect_c.sort();
        assert_eq!(out2["c"], expect_c);
    }

    #[test]
    fn cooperative_leave_hands_the_orphans_out_at_once_and_moves_nothing_else() {
        let parts = topics(&[("t", 6)]);
        let members = [
            member("a", &["t"], &[("t", 0), ("t", 1)], 3),
            member("b", &["t"], &[("t", 2), ("t", 3)], 3),
        ];
        // c (owning 4 and 5) left.
        let out = CooperativeSticky.assign(&parts, &members);
        let counts = check_valid(&out, &parts, &members);
        assert_eq!(counts, vec![3, 3]);
        assert!(out["a"].starts_with(&tps(&[("t", 0), ("t", 1)])));
        assert!(out["b"].starts_with(&tps(&[("t", 2), ("t", 3)])));
    }

    #[test]
    fn conflicting_claims_go_to_the_newest_generation_and_bad_claims_are_dropped() {
        let parts = topics(&[("t", 2)]);
        let members = [
            member("old", &["t"], &[("t", 0), ("gone", 0), ("t", 9)], 1),
            member("new", &["t"], &[("t", 0)], 2),
        ];
        let out = CooperativeSticky.assign(&parts, &members);
        check_valid(&out, &parts, &members);
        assert_eq!(out["new"], tps(&[("t", 0)]));
        assert_eq!(out["old"], tps(&[("t", 1)]));
    }

    #[test]
    fn protocol_is_cooperative_only_when_every_assignor_is() {
        let range = by_name("range").unwrap();
        let coop = by_name("cooperative-sticky").unwrap();
        assert_eq!(
            common_protocol(&[range.clone(), coop.clone()]),
            RebalanceProtocol::Eager
        );
        assert_eq!(common_protocol(&[coop]), RebalanceProtocol::Cooperative);
        assert!(by_name("sticky-ish").is_none());
    }
}
