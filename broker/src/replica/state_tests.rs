//! The replication rules as stories: a leader and its followers, fed events with an explicit clock.

use super::*;

const LAG_MS: i64 = 10_000;
const L: BrokerId = BrokerId(1);
const F2: BrokerId = BrokerId(2);
const F3: BrokerId = BrokerId(3);

fn settings(min_isr: usize) -> ReplicationSettings {
    ReplicationSettings {
        replica_lag_time_max_ms: LAG_MS,
        min_insync_replicas: min_isr,
    }
}

fn assignment(epoch: i32, partition_epoch: i32, isr: &[BrokerId]) -> Assignment {
    Assignment {
        leader: Some(L),
        leader_epoch: LeaderEpoch(epoch),
        partition_epoch: PartitionEpoch(partition_epoch),
        replicas: vec![L, F2, F3],
        isr: isr.to_vec(),
    }
}

/// Broker 1 leading a 3-replica partition with a full ISR, at time 0, with `end` records.
fn leader(min_isr: usize, end: i64) -> ReplicaState {
    let mut s = ReplicaState::new(L, settings(min_isr), Offset(end), Offset(0));
    let e = s.become_leader(&assignment(1, 0, &[L, F2, F3]), 0);
    assert!(e.is_empty(), "followers not heard from hold the HW: {e:?}");
    s
}

fn fetched(s: &mut ReplicaState, f: BrokerId, offset: i64, now: i64) -> Effects {
    s.follower_fetched(f, Offset(offset), now).unwrap()
}

#[test]
fn the_high_watermark_is_the_lowest_log_end_in_the_isr() {
    let mut s = leader(2, 10);
    assert_eq!(s.high_watermark(), Offset(0));
    // One follower at 10 is not enough: broker 3 is in the ISR and unheard of.
    assert_eq!(fetched(&mut s, F2, 10, 1).high_watermark, None);
    assert_eq!(fetched(&mut s, F3, 4, 2).high_watermark, Some(Offset(4)));
    assert_eq!(fetched(&mut s, F3, 10, 3).high_watermark, Some(Offset(10)));
    // The leader appends: its own end now bounds nothing until the followers copy it.
    assert_eq!(s.log_end_moved(Offset(15)).high_watermark, None);
    assert_eq!(fetched(&mut s, F2, 15, 4).high_watermark, None);
    assert_eq!(fetched(&mut s, F3, 12, 5).high_watermark, Some(Offset(12)));
    // A smaller fetch offset (a follower that lost an unflushed tail) never moves the HW back,
    // and holds it until the follower is past it again.
    assert_eq!(fetched(&mut s, F3, 11, 6).high_watermark, None);
    assert_eq!(s.high_watermark(), Offset(12));
    assert_eq!(fetched(&mut s, F3, 14, 7).high_watermark, Some(Offset(14)));
}

#[test]
fn an_acks_all_produce_completes_when_every_isr_member_has_it() {
    let mut s = leader(2, 0);
    s.check_produce(true).unwrap();
    assert!(s.log_end_moved(Offset(5)).is_empty());
    assert!(s.wait_for_ack(7, Offset(5)).is_empty(), "nobody has it yet");
    assert!(s.log_end_moved(Offset(9)).is_empty());
    assert!(s.wait_for_ack(8, Offset(9)).is_empty());
    assert!(fetched(&mut s, F2, 9, 1).completed.is_empty());
    let e = fetched(&mut s, F3, 5, 2);
    assert_eq!(e.completed, vec![(7, AckOutcome::Acknowledged)]);
    let e = fetched(&mut s, F3, 9, 3);
    assert_eq!(e.completed, vec![(8, AckOutcome::Acknowledged)]);
    // Already under the HW: answered at once.
    assert_eq!(
        s.wait_for_ack(9, Offset(9)).completed,
        vec![(9, AckOutcome::Acknowledged)]
    );
}

#[test]
fn a_follower_that_stops_fetching_leaves_the_isr_and_writes_go_on() {
    let mut s = leader(2, 0);
    let _ = fetched(&mut s, F2, 0, 100);
    let _ = fetched(&mut s, F3, 0, 100);
    let _ = s.log_end_moved(Offset(3));
    let _ = s.wait_for_ack(1, Offset(3));
    // Broker 2 keeps up; broker 3 is paused (SIGSTOP) and fetches nothing more.
    let _ = fetched(&mut s, F2, 3, 200);
    assert!(
        s.tick(LAG_MS).propose_isr.is_none(),
        "lag is not past the limit yet"
    );
    let e = s.tick(LAG_MS + 101);
    let proposal = e.propose_isr.expect("broker 3 is proposed out");
    assert_eq!(proposal.isr, vec![L, F2]);
    assert!(proposal.shrink);
    assert_eq!(proposal.partition_epoch, PartitionEpoch(0));
    // One change in flight at a time; the HW waits for the committed ISR.
    assert!(s.tick(LAG_MS + 200).propose_isr.is_none());
    assert_eq!(s.high_watermark(), Offset(0));
    let e = s.isr_committed(&assignment(1, 1, &[L, F2]), LAG_MS + 300);
    assert_eq!(e.high_watermark, Some(Offset(3)));
    assert_eq!(e.completed, vec![(1, AckOutcome::Acknowledged)]);
    assert!(s.under_replicated());
    // min.insync.replicas=2 still holds with two.
    s.check_produce(true).unwrap();
}

#[test]
fn below_min_insync_acks_all_is_refused_before_appending_and_acks_1_is_not() {
    let mut s = leader(2, 0);
    let _ = s.isr_committed(&assignment(1, 1, &[L]), 0);
    assert_eq!(
        s.check_produce(true),
        Err(Refusal::NotEnoughReplicas {
            isr: 1,
            required: 2
        })
    );
    s.check_produce(false).unwrap();
}

#[test]
fn an_isr_that_shrinks_below_min_insync_while_waiting_fails_the_produce_after_append() {
    let mut s = leader(3, 0);
    let _ = fetched(&mut s, F2, 0, 0);
    let _ = fetched(&mut s, F3, 0, 0);
    let _ = s.log_end_moved(Offset(1));
    assert!(s.wait_for_ack(5, Offset(1)).is_empty());
    let _ = fetched(&mut s, F2, 1, 10);
    let e = s.tick(LAG_MS + 1);
    assert_eq!(e.propose_isr.map(|p| p.isr), Some(vec![L, F2]));
    let e = s.isr_committed(&assignment(1, 1, &[L, F2]), LAG_MS + 2);
    assert_eq!(
        e.completed,
        vec![(
            5,
            AckOutcome::NotEnoughReplicasAfterAppend {
                isr: 2,
                required: 3
            }
        )]
    );
}

#[test]
fn a_follower_that_catches_up_is_proposed_back_and_counts_once_proposed() {
    let mut s = leader(1, 0);
    let _ = s.isr_committed(&assignment(1, 1, &[L, F2]), 0);
    let _ = s.log_end_moved(Offset(10));
    let _ = fetched(&mut s, F2, 10, 1);
    assert_eq!(s.high_watermark(), Offset(10));
    // Broker 3 comes back behind: not in sync until it reaches the HW.
    let e = fetched(&mut s, F3, 4, 2);
    assert!(e.propose_isr.is_none(), "{e:?}");
    let e = fetched(&mut s, F3, 10, 3);
    let p = e.propose_isr.expect("broker 3 rejoins");
    assert_eq!(p.isr, vec![L, F2, F3]);
    assert!(!p.shrink);
    // While the addition is pending, broker 3 already holds the HW back (so the ISR the
    // controller commits never contains a replica below the HW).
    let _ = s.log_end_moved(Offset(12));
    let _ = fetched(&mut s, F2, 12, 4);
    assert_eq!(s.high_watermark(), Offset(10));
    let _ = fetched(&mut s, F3, 12, 5);
    assert_eq!(s.high_watermark(), Offset(12));
    let e = s.isr_committed(&assignment(1, 2, &[L, F2, F3]), 6);
    assert!(e.propose_isr.is_none());
    assert!(!s.under_replicated());
}

#[test]
fn a_refused_proposal_is_tried_again_at_the_next_tick() {
    let mut s = leader(1, 0);
    let _ = fetched(&mut s, F2, 0, 0);
    let _ = fetched(&mut s, F3, 0, 0);
    let _ = s.log_end_moved(Offset(1));
    let first = s.tick(LAG_MS + 1).propose_isr.expect("a shrink");
    assert!(s.tick(LAG_MS + 2).propose_isr.is_none(), "one in flight");
    // The controller did not answer: the same proposal goes again, once.
    s.isr_change_failed(&first, false);
    assert_eq!(s.tick(LAG_MS + 3).propose_isr.as_ref(), Some(&first));
    assert!(s.tick(LAG_MS + 4).propose_isr.is_none());
    // A failure of some other (older) proposal leaves this one in flight.
    let mut older = first.clone();
    older.partition_epoch = PartitionEpoch(-1);
    s.isr_change_failed(&older, true);
    assert!(s.tick(LAG_MS + 5).propose_isr.is_none());
    // Refused: forgotten, and proposed anew from the committed ISR.
    s.isr_change_failed(&first, true);
    assert!(s.tick(LAG_MS + 6).propose_isr.is_some());
}

#[test]
fn caught_up_counts_from_the_previous_fetch_when_the_leader_moved_on_since() {
    let mut s = leader(1, 10);
    // At t=100 broker 2 fetches 10 = the leader's end: caught up at 100.
    let _ = fetched(&mut s, F2, 10, 100);
    let _ = fetched(&mut s, F3, 10, 100);
    // The leader appends steadily; each fetch reaches the end as of the previous one.
    let mut end = 10;
    let mut now = 100;
    for _ in 0..50 {
        now += 1_000;
        let before = end;
        end += 5;
        let _ = s.log_end_moved(Offset(end));
        let _ = fetched(&mut s, F2, before, now);
        let _ = fetched(&mut s, F3, before, now);
        assert!(
            s.tick(now).propose_isr.is_none(),
            "a follower one batch behind under steady load stays in sync (t={now})"
        );
    }
}

#[test]
fn losing_leadership_fails_waiting_produces_and_refuses_new_ones() {
    let mut s = leader(2, 0);
    let _ = s.log_end_moved(Offset(3));
    assert!(s.wait_for_ack(1, Offset(3)).is_empty());
    let mut moved = assignment(2, 1, &[F2, F3]);
    moved.leader = Some(F2);
    let e = s.become_follower(&moved);
    assert_eq!(e.completed, vec![(1, AckOutcome::NotLeader)]);
    assert_eq!(s.check_produce(false), Err(Refusal::NotLeader));
    assert_eq!(
        s.follower_fetched(F3, Offset(0), 1),
        Err(Refusal::NotLeader)
    );
    assert_eq!(s.leader(), Some(F2));
    assert_eq!(s.leader_epoch(), LeaderEpoch(2));
}

#[test]
fn a_follower_takes_the_leaders_high_watermark_up_to_its_own_log_end() {
    let mut s = ReplicaState::new(F2, settings(1), Offset(0), Offset(0));
    let mut a = assignment(1, 0, &[L, F2, F3]);
    a.leader = Some(L);
    let _ = s.become_follower(&a);
    let _ = s.log_end_moved(Offset(5));
    assert_eq!(
        s.leader_high_watermark(Offset(8)).high_watermark,
        Some(Offset(5))
    );
    let _ = s.log_end_moved(Offset(9));
    assert_eq!(
        s.leader_high_watermark(Offset(8)).high_watermark,
        Some(Offset(8))
    );
    assert!(s.leader_high_watermark(Offset(7)).is_empty(), "never back");
}

#[test]
fn an_isr_commit_for_an_older_state_or_another_leadership_is_ignored() {
    let mut s = leader(1, 0);
    let _ = s.isr_committed(&assignment(1, 3, &[L, F2]), 0);
    assert!(s.isr_committed(&assignment(1, 2, &[L]), 1).is_empty());
    assert_eq!(s.isr(), &[L, F2]);
    assert!(s.isr_committed(&assignment(0, 9, &[L]), 1).is_empty());
    assert_eq!(s.isr(), &[L, F2]);
}

#[test]
fn fetches_from_strangers_or_past_the_log_end_are_refused() {
    let mut s = leader(1, 5);
    assert_eq!(
        s.follower_fetched(BrokerId(9), Offset(0), 0),
        Err(Refusal::NotAReplica(BrokerId(9)))
    );
    assert_eq!(
        s.follower_fetched(F2, Offset(6), 0),
        Err(Refusal::PastLogEnd)
    );
}

#[test]
fn a_single_replica_partition_acknowledges_at_its_own_log_end() {
    let mut s = ReplicaState::new(L, settings(1), Offset(0), Offset(0));
    let a = Assignment {
        leader: Some(L),
        leader_epoch: LeaderEpoch(0),
        partition_epoch: PartitionEpoch(0),
        replicas: vec![L],
        isr: vec![L],
    };
    let _ = s.become_leader(&a, 0);
    assert!(s.wait_for_ack(1, Offset(2)).is_empty());
    let e = s.log_end_moved(Offset(2));
    assert_eq!(e.high_watermark, Some(Offset(2)));
    assert_eq!(e.completed, vec![(1, AckOutcome::Acknowledged)]);
}

#[test]
fn a_new_leader_keeps_its_high_watermark_until_the_followers_report() {
    // Broker 1 was a follower with HW 4 and log end 6, and is elected.
    let mut s = ReplicaState::new(L, settings(1), Offset(6), Offset(4));
    let e = s.become_leader(&assignment(2, 1, &[L, F2]), 0);
    assert!(e.is_empty());
    assert_eq!(s.high_watermark(), Offset(4));
    // Broker 2 has only 5: the HW moves to 5, not to the leader's 6.
    assert_eq!(fetched(&mut s, F2, 5, 1).high_watermark, Some(Offset(5)));
    // Broker 3, outside the ISR, must reach this epoch's start (6) to rejoin, not just the HW.
    assert!(fetched(&mut s, F3, 5, 2).propose_isr.is_none());
    assert!(fetched(&mut s, F3, 6, 3).propose_isr.is_some());
}
