//! The membership state machine driven event by event, with an explicit clock. Waiters are
//! numbers: each test names the request it expects an answer for.

use bytes::Bytes;

use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn limits() -> Limits {
    Limits {
        initial_rebalance_delay_ms: 0,
        ..Limits::default()
    }
}

fn join_req(member_id: &str, instance: Option<&str>, metadata: &'static [u8]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        group_instance_id: instance.map(str::to_string),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(metadata))],
        require_known_member_id: true,
        supports_skip_assignment: true,
    }
}

fn sync_req(
    member_id: &str,
    generation: i32,
    assignments: &[(&str, &'static [u8])],
) -> SyncRequest {
    SyncRequest {
        member_id: member_id.into(),
        group_instance_id: None,
        generation,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::from_static(a)))
            .collect(),
    }
}

/// The join answer for `waiter` in `out` (panics when there is none).
fn join_answer(out: &mut Output<u32>, waiter: u32) -> JoinReply {
    let i = out
        .replies
        .iter()
        .position(|(w, _)| *w == waiter)
        .unwrap_or_else(|| panic!("no answer for join {waiter}: {:?}", out.replies));
    match out.replies.remove(i).1 {
        Reply::Join(r) => r,
        other => panic!("join {waiter} got {other:?}"),
    }
}

fn sync_answer(out: &mut Output<u32>, waiter: u32) -> SyncReply {
    let i = out
        .replies
        .iter()
        .position(|(w, _)| *w == waiter)
        .unwrap_or_else(|| panic!("no answer for sync {waiter}: {:?}", out.replies));
    match out.replies.remove(i).1 {
        Reply::Sync(r) => r,
        other => panic!("sync {waiter} got {other:?}"),
    }
}

fn code(e: &Option<BrokerError>) -> i16 {
    e.as_ref().map_or(0, BrokerError::code)
}

/// A dynamic member's full entry: MEMBER_ID_REQUIRED, then the join with its id.
/// Returns its member id; the second join's answer is left in the output for the caller.
fn member_id_round_trip(g: &mut Group<u32>, waiter: u32, now: i64) -> (String, Output<u32>) {
    let mut out = g.join(join_req("", None, b"m"), waiter, now);
    let first = join_answer(&mut out, waiter);
    assert_eq!(code(&first.error), 79, "MEMBER_ID_REQUIRED");
    assert!(!first.member_id.is_empty());
    let out = g.join(join_req(&first.member_id, None, b"m"), waiter, now);
    (first.member_id, out)
}

#[test]
fn a_lone_member_joins_syncs_and_heartbeats() {
    let mut g = Group::new("g", limits(), 0);
    let (id, mut out) = member_id_round_trip(&mut g, 1, 0);
    let joined = join_answer(&mut out, 1);
    assert_eq!(code(&joined.error), 0);
    assert_eq!(joined.generation, 1);
    assert_eq!(joined.leader, id, "the only member leads");
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(
        joined.members.len(),
        1,
        "the leader gets every member's metadata"
    );
    assert_eq!(g.state(), GroupState::CompletingRebalance);

    let mut out = g.sync(sync_req(&id, 1, &[(&id, b"all of it")]), 2, 10);
    let synced = sync_answer(&mut out, 2);
    assert_eq!(code(&synced.error), 0);
    assert_eq!(&synced.assignment[..], b"all of it");
    assert!(out.persist.is_some(), "a completed generation is persisted");
    assert_eq!(g.state(), GroupState::Stable);

    assert!(g.heartbeat(&id, None, 1, 20).is_ok());
    assert_eq!(
        g.heartbeat(&id, None, 0, 20).unwrap_err().code(),
        22,
        "ILLEGAL_GENERATION"
    );
    assert_eq!(
        g.heartbeat("stranger", None, 1, 20).unwrap_err().code(),
        25,
        "UNKNOWN_MEMBER_ID"
    );
}

#[test]
fn a_second_member_triggers_a_rebalance_that_completes_as_soon_as_both_have_joined() {
    let mut g = Group::new("g", limits(), 0);
    let (a, mut out) = member_id_round_trip(&mut g, 1, 0);
    join_answer(&mut out, 1);
    let mut out = g.sync(sync_req(&a, 1, &[(&a, b"p0,p1")]), 2, 0);
    sync_answer(&mut out, 2);

    // B arrives: the group prepares a rebalance; A learns of it through its heartbeat.
    let (b, out) = member_id_round_trip(&mut g, 3, 100);
    assert!(out.replies.is_empty(), "B waits for A to rejoin");
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&a, None, 1, 200).unwrap_err().code(),
        27,
        "REBALANCE_IN_PROGRESS"
    );

    // A rejoins at 300 ms: the rebalance completes right then, not at the 30 s timeout.
    let mut out = g.join(join_req(&a, None, b"m"), 4, 300);
    let ja = join_answer(&mut out, 4);
    let jb = join_answer(&mut out, 3);
    assert_eq!((ja.generation, jb.generation), (2, 2));
    assert_eq!(ja.leader, a, "the first member keeps leading");
    assert_eq!(ja.members.len(), 2);
    assert!(jb.members.is_empty(), "followers get no metadata");

    // B (a follower) waits in SyncGroup until the leader's assignments arrive.
    let out = g.sync(sync_req(&b, 2, &[]), 5, 400);
    assert!(out.replies.is_empty());
    let mut out = g.sync(sync_req(&a, 2, &[(&a, b"p0"), (&b, b"p1")]), 6, 410);
    assert_eq!(&sync_answer(&mut out, 5).assignment[..], b"p1");
    assert_eq!(&sync_answer(&mut out, 6).assignment[..], b"p0");
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let mut g = Group::new("g", limits(), 0);
    let (a, mut out) = member_id_round_trip(&mut g, 1, 0);
    join_answer(&mut out, 1);
    g.sync(sync_req(&a, 1, &[]), 2, 0);
    let (b, out) = member_id_round_trip(&mut g, 3, 1_000);
    assert!(out.replies.is_empty());
    // A stays alive (it heartbeats every 5 s) but never rejoins: only the rebalance timeout
    // ends the wait.
    let deadline = 1_000 + i64::from(REBALANCE_MS);
    for t in (2_000..deadline).step_by(5_000) {
        assert_eq!(g.heartbeat(&a, None, 1, t).unwrap_err().code(), 27);
        let out = g.on_timer(t);
        assert!(out.replies.is_empty(), "still waiting for A at {t}");
    }
    assert_eq!(g.next_deadline_ms(), Some(deadline));
    let mut out = g.on_timer(deadline);
    let jb = join_answer(&mut out, 3);
    assert_eq!(code(&jb.error), 0);
    assert_eq!(jb.leader, b, "A is gone: B leads");
    assert_eq!(g.member_count(), 1);
    assert_eq!(g.summary().members[0].member_id, b);
}

#[test]
fn a_silent_member_expires_after_its_session_timeout_and_the_group_rebalances() {
    let mut g = Group::new("g", limits(), 0);
    let (a, mut out) = member_id_round_trip(&mut g, 1, 0);
    join_answer(&mut out, 1);
    let (b, mut out) = member_id_round_trip(&mut g, 2, 0);
    // A joined first and is waiting? No: A's join was answered; B's arrival rebalances.
    let mut out2 = g.join(join_req(&a, None, b"m"), 3, 0);
    out.replies.append(&mut out2.replies);
    join_answer(&mut out, 2);
    join_answer(&mut out, 3);
    let mut out = g.sync(sync_req(&a, 2, &[(&a, b"x"), (&b, b"y")]), 4, 0);
    sync_answer(&mut out, 4);
    let out = g.sync(sync_req(&b, 2, &[]), 5, 0);
    assert_eq!(out.replies.len(), 1);

    // Only B heartbeats from now on.
    for t in (1_000..=9_000).step_by(1_000) {
        g.heartbeat(&b, None, 2, t).unwrap();
    }
    assert_eq!(
        g.next_deadline_ms(),
        Some(i64::from(SESSION_MS)),
        "A's session ends first"
    );
    let out = g.on_timer(i64::from(SESSION_MS));
    assert!(out.replies.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&a, None, 2, 10_001).unwrap_err().code(),
        25,
        "A was expired"
    );
    // B rejoins and the rebalance completes with B alone.
    let mut out = g.join(join_req(&b, None, b"m"), 6, 10_100);
    let jb = join_answer(&mut out, 6);
    assert_eq!(
        (jb.generation, jb.leader.as_str(), jb.members.len()),
        (3, b.as_str(), 1)
    );
}

#[test]
fn leaving_members_are_removed_and_the_last_one_leaves_the_group_empty() {
    let mut g = Group::new("g", limits(), 0);
    let (a, mut out) = member_id_round_trip(&mut g, 1, 0);
    join_answer(&mut out, 1);
    g.sync(sync_req(&a, 1, &[]), 2, 0);
    let (results, out) = g.leave(&[(a.clone(), None), ("nobody".into(), None)], 50);
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().unwrap_err().code(), 25);
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.generation(), 2, "emptying is a generation");
    assert!(out.persist.is_some(), "the empty group is persisted");
    assert!(g.delete().is_ok(), "an Empty group can be deleted");
    assert_eq!(g.state(), GroupState::Dead);
}

#[test]
fn a_non_empty_group_cannot_be_deleted() {
    let mut g = Group::new("g", limits(), 0);
    let (_, mut out) = member_id_round_trip(&mut g, 1, 0);
    join_answer(&mut out, 1);
    assert_eq!(g.delete().unwrap_err().code(), 68, "NON_EMPTY_GROUP");
}

#[test]
fn a_static_member_that_returns_in_time_gets_its_assignment_back_without_a_rebalance() {
    let mut g = Group::new("g", limits(), 0);
    // Static members skip the member-id round trip.
    let mut out = g.join(join_req("", Some("pod-1"), b"m"), 1, 0);
    let j1 = join_answer(&mut out, 1);
    let mut out = g.join(join_req("", Some("pod-2"), b"m"), 2, 0);
    assert!(out.replies.is_empty(), "pod-2 waits for pod-1 to rejoin");
    let mut out2 = g.join(join_req(&j1.member_id, Some("pod-1"), b"m"), 3, 0);
    out.replies.append(&mut out2.replies);
    let j2 = join_answer(&mut out, 2);
    let j1 = join_answer(&mut out, 3);
    let old2 = j2.member_id.clone();
    let assign = [
        (j1.member_id.as_str(), &b"p0"[..]),
        (old2.as_str(), &b"p1"[..]),
    ];
    let mut out = g.sync(
        SyncRequest {
            group_instance_id: Some("pod-1".into()),
            ..sync_req(&j1.member_id, 2, &assign)
        },
        4,
        0,
    );
    sync_answer(&mut out, 4);
    let generation = g.generation();

    // pod-2 restarts: a new process, no member id, same instance id, within its session.
    let mut out = g.join(join_req("", Some("pod-2"), b"m"), 5, 5_000);
    let back = join_answer(&mut out, 5);
    assert_eq!(code(&back.error), 0);
    assert_ne!(back.member_id, old2, "a new member id");
    assert_eq!(back.generation, generation, "no rebalance");
    assert_eq!(g.state(), GroupState::Stable);
    assert!(out.persist.is_some(), "the new member id is persisted");
    let mut out = g.sync(
        SyncRequest {
            group_instance_id: Some("pod-2".into()),
            ..sync_req(&back.member_id, generation, &[])
        },
        6,
        5_010,
    );
    assert_eq!(
        &sync_answer(&mut out, 6).assignment[..],
        b"p1",
        "its old assignment"
    );

    // The old process is fenced.
    let fenced = g
        .heartbeat(&old2, Some("pod-2"), generation, 5_020)
        .unwrap_err();
    assert_eq!(fenced.code(), 82, "FENCED_INSTANCE_ID");
    let (results, _) = g.leave(&[(old2.clone(), Some("pod-2".into()))], 5_030);
    assert_eq!(results[0].as_ref().unwrap_err().code(), 82);
    // LeaveGroup v3+ by instance id alone removes the current member.
    let (results, _) = g.leave(&[(String::new(), Some("pod-2".into()))], 5_040);
    assert!(results[0].is_ok());
    assert_eq!(g.member_count(), 1);
}

#[test]
fn the_member_id_round_trip_holds_a_place_until_the_id_is_used_or_lapses() {
    let mut g = Group::new("g", limits(), 0);
    let mut out = g.join(join_req("", None, b"m"), 1, 0);
    let first = join_answer(&mut out, 1);
    assert_eq!(code(&first.error), 79);
    assert_eq!(g.next_deadline_ms(), Some(i64::from(SESSION_MS)));
    // Unused, the id lapses after a session timeout; then it is unknown.
    g.on_timer(i64::from(SESSION_MS));
    let mut out = g.join(
        join_req(&first.member_id, None, b"m"),
        2,
        i64::from(SESSION_MS) + 1,
    );
    assert_eq!(
        code(&join_answer(&mut out, 2).error),
        25,
        "UNKNOWN_MEMBER_ID"
    );
}

#[test]
fn concurrent_joiners_are_answered_together_once_every_known_member_has_joined() {
    let mut g = Group::new("g", limits(), 0);
    // Three members get their ids (none has joined with it yet).
    let ids: Vec<String> = (1..=3)
        .map(|w| {
            let mut out = g.join(join_req("", None, b"m"), w, 0);
            join_answer(&mut out, w).member_id
        })
        .collect();
    // The first two join: the outstanding third id keeps the rebalance open.
    let out = g.join(join_req(&ids[0], None, b"m"), 11, 5);
    assert!(out.replies.is_empty());
    let out = g.join(join_req(&ids[1], None, b"m"), 12, 6);
    assert!(out.replies.is_empty());
    // The third one completes it at once, for all three, in one generation.
    let mut out = g.join(join_req(&ids[2], None, b"m"), 13, 7);
    let answers: Vec<JoinReply> = [11, 12, 13]
        .iter()
        .map(|w| join_answer(&mut out, *w))
        .collect();
    assert!(answers
        .iter()
        .all(|a| a.generation == 1 && a.error.is_none()));
    assert_eq!(
        answers.iter().filter(|a| !a.members.is_empty()).count(),
        1,
        "one leader"
    );
}

#[test]
fn a_new_groups_first_rebalance_waits_the_initial_delay_then_completes() {
    let mut g = Group::new(
        "g",
        Limits {
            initial_rebalance_delay_ms: 100,
            ..Limits::default()
        },
        0,
    );
    let (_, out) = member_id_round_trip(&mut g, 1, 0);
    assert!(out.replies.is_empty(), "waiting for more members");
    assert_eq!(g.next_deadline_ms(), Some(100));
    let mut out = g.on_timer(100);
    assert_eq!(join_answer(&mut out, 1).generation, 1);
}

#[test]
fn protocols_are_chosen_by_vote_and_an_incompatible_member_is_refused() {
    let mut g = Group::new("g", limits(), 0);
    let both = |id: &str, first: &str, second: &str| JoinRequest {
        protocols: vec![(first.into(), Bytes::new()), (second.into(), Bytes::new())],
        require_known_member_id: false,
        ..join_req(id, None, b"")
    };
    let mut out = g.join(both("", "range", "roundrobin"), 1, 0);
    let a = join_answer(&mut out, 1);
    g.sync(sync_req(&a.member_id, 1, &[]), 2, 0);
    let out = g.join(both("", "roundrobin", "range"), 3, 0);
    assert!(out.replies.is_empty());
    let mut out = g.join(both(&a.member_id, "roundrobin", "range"), 4, 0);
    assert_eq!(
        join_answer(&mut out, 4).protocol_name.as_deref(),
        Some("roundrobin"),
        "2 votes to 0"
    );

    let mut out = g.join(both("", "sticky", "cooperative"), 5, 0);
    assert_eq!(
        code(&join_answer(&mut out, 5).error),
        23,
        "INCONSISTENT_GROUP_PROTOCOL"
    );
    let mut other_type = join_req("", None, b"");
    other_type.protocol_type = "connect".into();
    let mut out = g.join(other_type, 6, 0);
    assert_eq!(code(&join_answer(&mut out, 6).error), 23);
}

#[test]
fn limits_are_enforced_with_their_kafka_errors() {
    let mut g = Group::new(
        "g",
        Limits {
            group_size_max: 1,
            ..limits()
        },
        0,
    );
    let mut short = join_req("", None, b"");
    short.session_timeout_ms = 100;
    let mut out = g.join(short, 1, 0);
    assert_eq!(
        code(&join_answer(&mut out, 1).error),
        26,
        "INVALID_SESSION_TIMEOUT"
    );
    let (_, mut out) = member_id_round_trip(&mut g, 2, 0);
    join_answer(&mut out, 2);
    let mut out = g.join(join_req("", None, b""), 3, 0);
    assert_eq!(
        code(&join_answer(&mut out, 3).error),
        81,
        "GROUP_MAX_SIZE_REACHED"
    );
}

#[test]
fn commits_follow_kafkas_membership_rules() {
    let mut g = Group::new("g", limits(), 0);
    assert!(
        g.check_commit("", None, -1, 0).is_ok(),
        "a simple commit to an Empty group"
    );
    let (a, mut out) = member_id_round_trip(&mut g, 1, 0);
    join_answer(&mut out, 1);
    assert_eq!(
        g.check_commit(&a, None, 1, 0).unwrap_err().code(),
        27,
        "CompletingRebalance"
    );
    g.sync(sync_req(&a, 1, &[]), 2, 0);
    assert!(g.check_commit(&a, None, 1, 0).is_ok());
    assert_eq!(g.check_commit(&a, None, 0, 0).unwrap_err().code(), 22);
    assert_eq!(
        g.check_commit("", None, -1, 0).unwrap_err().code(),
        25,
        "not Empty any more"
    );
    assert_eq!(
        g.check_commit(&a, Some("nobody"), 1, 0).unwrap_err().code(),
        25,
        "an instance id the group does not know"
    );
}

#[test]
fn a_persisted_group_comes_back_stable_with_fresh_sessions() {
    let mut g = Group::new("g", limits(), 0);
    let (a, mut out) = member_id_round_trip(&mut g, 1, 0);
    join_answer(&mut out, 1);
    let mut out = g.sync(sync_req(&a, 1, &[(&a, b"p0")]), 2, 0);
    let meta = out.persist.take().unwrap();
    let mut loaded: Group<u32> = Group::load("g", &meta, limits(), 1_000_000);
    assert_eq!(loaded.state(), GroupState::Stable);
    assert_eq!(
        loaded.next_deadline_ms(),
        Some(1_000_000 + i64::from(SESSION_MS))
    );
    assert!(loaded.heartbeat(&a, None, 1, 1_000_001).is_ok());
    let mut out = loaded.sync(sync_req(&a, 1, &[]), 3, 1_000_002);
    assert_eq!(&sync_answer(&mut out, 3).assignment[..], b"p0");
}

#[test]
fn subscriptions_are_read_from_the_consumer_protocol() {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let sub = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("orders")]);
    let mut buf = bytes::BytesMut::new();
    bytes::BufMut::put_i16(&mut buf, 1);
    sub.encode(&mut buf, 1).unwrap();
    assert_eq!(
        subscription_topics(&buf.freeze()),
        Some(vec!["orders".to_string()])
    );
    assert_eq!(subscription_topics(&Bytes::from_static(b"\x00")), None);
}

/// pod-1 (leader) and pod-2, static members, Stable in generation 2 with pod-1 holding "p0" and
/// pod-2 "p1". Returns their member ids.
fn stable_static_pair(g: &mut Group<u32>) -> (String, String) {
    let mut out = g.join(join_req("", Some("pod-1"), b"m"), 901, 0);
    let first = join_answer(&mut out, 901);
    let out = g.join(join_req("", Some("pod-2"), b"m"), 902, 0);
    assert!(out.replies.is_empty(), "pod-2 waits for pod-1 to rejoin");
    let mut out = g.join(join_req(&first.member_id, Some("pod-1"), b"m"), 903, 0);
    let j1 = join_answer(&mut out, 903);
    let mut out2 = out;
    let j2 = join_answer(&mut out2, 902);
    assert_eq!(j1.leader, j1.member_id, "pod-1 leads");
    let (id1, id2) = (j1.member_id, j2.member_id);
    let sync = |id: &str, instance: &str, assignments: &[(&str, &'static [u8])]| SyncRequest {
        group_instance_id: Some(instance.into()),
        ..sync_req(id, 2, assignments)
    };
    let mut out = g.sync(sync(&id1, "pod-1", &[(&id1, b"p0"), (&id2, b"p1")]), 904, 0);
    sync_answer(&mut out, 904);
    let mut out = g.sync(sync(&id2, "pod-2", &[]), 905, 0);
    assert_eq!(&sync_answer(&mut out, 905).assignment[..], b"p1");
    assert_eq!(g.state(), GroupState::Stable);
    (id1, id2)
}

#[test]
fn a_restarted_static_member_with_new_subscription_bytes_keeps_its_assignment_without_a_rebalance()
{
    let mut g = Group::new("g", limits(), 0);
    let (_, old2) = stable_static_pair(&mut g);
    // A Java 3.4+ client puts its generation and owned partitions in the subscription, so the
    // bytes differ after every restart; the protocol the group would choose does not.
    let mut out = g.join(join_req("", Some("pod-2"), b"m, owned p1"), 1, 5_000);
    let back = join_answer(&mut out, 1);
    assert_eq!(code(&back.error), 0);
    assert_ne!(back.member_id, old2);
    assert_eq!(back.generation, 2, "no rebalance");
    assert_eq!(g.state(), GroupState::Stable);
    let stored = out.persist.expect("the new member id is persisted");
    let m = stored
        .members
        .iter()
        .find(|m| m.member_id == back.member_id)
        .expect("stored under its new id");
    assert_eq!(
        &m.subscription[..],
        b"m, owned p1",
        "the new metadata is kept"
    );
    let mut out = g.sync(
        SyncRequest {
            group_instance_id: Some("pod-2".into()),
            ..sync_req(&back.member_id, 2, &[])
        },
        2,
        5_010,
    );
    assert_eq!(&sync_answer(&mut out, 2).assignment[..], b"p1");
}

#[test]
fn a_restarted_static_leader_is_told_to_skip_the_assignment_or_before_v9_not_told_it_leads() {
    // JoinGroup v9+: the leader is named, with the members, and told not to assign (KIP-814).
    let mut g = Group::new("g", limits(), 0);
    stable_static_pair(&mut g);
    let mut out = g.join(join_req("", Some("pod-1"), b"m"), 1, 5_000);
    let back = join_answer(&mut out, 1);
    assert_eq!(code(&back.error), 0);
    assert_eq!(
        back.leader, back.member_id,
        "it still leads, under its new id"
    );
    assert!(back.skip_assignment);
    assert_eq!(back.members.len(), 2);
    assert_eq!(g.state(), GroupState::Stable);

    // Before v9 there is no skip flag: the answer names the leader's old id, so the client does
    // not believe it leads and runs no assignor over an empty member list.
    let mut g = Group::new("g", limits(), 0);
    let (old1b, _) = stable_static_pair(&mut g);
    let mut old_client = join_req("", Some("pod-1"), b"m");
    old_client.supports_skip_assignment = false;
    let mut out = g.join(old_client, 1, 5_000);
    let back = join_answer(&mut out, 1);
    assert_eq!(code(&back.error), 0);
    assert_eq!(back.leader, old1b, "the id from before the restart");
    assert_ne!(back.leader, back.member_id);
    assert!(!back.skip_assignment);
    assert!(back.members.is_empty());
    // The group itself knows the new id leads.
    assert_eq!(
        g.metadata(5_000).leader.as_deref(),
        Some(back.member_id.as_str())
    );
    // A returning follower before v9 is told the current leader, as always.
    let mut g = Group::new("g", limits(), 0);
    let (id1c, _) = stable_static_pair(&mut g);
    let mut old_follower = join_req("", Some("pod-2"), b"m");
    old_follower.supports_skip_assignment = false;
    let mut out = g.join(old_follower, 1, 5_000);
    assert_eq!(join_answer(&mut out, 1).leader, id1c);
}

/// A static member with a long session (static members outlive restarts that way).
fn long_lived(member_id: &str, instance: &str) -> JoinRequest {
    JoinRequest {
        session_timeout_ms: 120_000,
        ..join_req(member_id, Some(instance), b"m")
    }
}

#[test]
fn a_static_leader_that_does_not_rejoin_hands_the_lead_to_a_member_that_did() {
    let mut g = Group::new("g", limits(), 0);
    let mut out = g.join(long_lived("", "pod-1"), 1, 0);
    let pod1 = join_answer(&mut out, 1).member_id;
    let mut out = g.sync(
        SyncRequest {
            group_instance_id: Some("pod-1".into()),
            ..sync_req(&pod1, 1, &[(&pod1, b"p0,p1")])
        },
        2,
        0,
    );
    sync_answer(&mut out, 2);

    // pod-2 arrives; pod-1, the leader, is down (its session is longer than the rebalance).
    let out = g.join(long_lived("", "pod-2"), 3, 1_000);
    assert!(out.replies.is_empty());
    let deadline = 1_000 + i64::from(REBALANCE_MS);
    assert_eq!(g.next_deadline_ms(), Some(deadline));
    let mut out = g.on_timer(deadline);
    let pod2 = join_answer(&mut out, 3);
    assert_eq!(code(&pod2.error), 0);
    assert_eq!(
        pod2.leader, pod2.member_id,
        "pod-2 rejoined, so it leads; pod-1 would never assign"
    );
    assert_eq!(
        pod2.members.len(),
        2,
        "the leader sees pod-1 too (it stays)"
    );
    assert_eq!(g.member_count(), 2);

    // The new leader's SyncGroup completes the generation.
    let mut out = g.sync(
        SyncRequest {
            group_instance_id: Some("pod-2".into()),
            ..sync_req(
                &pod2.member_id,
                2,
                &[(&pod1, b"p0"), (&pod2.member_id, b"p1")],
            )
        },
        4,
        deadline + 10,
    );
    assert_eq!(&sync_answer(&mut out, 4).assignment[..], b"p1");
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn a_rebalance_nobody_rejoined_is_postponed_until_the_silent_members_expire() {
    let mut g = Group::new("g", limits(), 0);
    let mut out = g.join(long_lived("", "pod-1"), 1, 0);
    let pod1 = join_answer(&mut out, 1).member_id;
    g.sync(
        SyncRequest {
            group_instance_id: Some("pod-1".into()),
            ..sync_req(&pod1, 1, &[])
        },
        2,
        0,
    );
    let out = g.join(long_lived("", "pod-2"), 3, 0);
    assert!(out.replies.is_empty());
    g.join(long_lived(&pod1, "pod-1"), 4, 0);
    assert_eq!(g.generation(), 2);

    // pod-2 leaves for good and pod-1 goes silent: nobody rejoins the rebalance that follows.
    let (results, _) = g.leave(&[(String::new(), Some("pod-2".into()))], 1_000);
    assert!(results[0].is_ok());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    let deadline = 1_000 + i64::from(REBALANCE_MS);
    let out = g.on_timer(deadline);
    assert!(out.replies.is_empty());
    assert_eq!(
        (g.state(), g.generation()),
        (GroupState::PreparingRebalance, 2),
        "no generation without a member to lead it"
    );
    assert_eq!(
        g.next_deadline_ms(),
        Some(deadline + i64::from(REBALANCE_MS)),
        "another rebalance timeout"
    );

    // More rebalance timeouts pass without a generation, until pod-1's session (120 s from its
    // last join) ends the wait: the group empties.
    let mut now = deadline;
    let mut emptied = None;
    while emptied.is_none() {
        now = g.next_deadline_ms().expect("a deadline while rebalancing");
        let out = g.on_timer(now);
        if g.state() == GroupState::PreparingRebalance {
            assert_eq!(g.generation(), 2, "still no generation at {now}");
        } else {
            emptied = Some(out);
        }
    }
    assert_eq!(now, 120_000);
    assert!(emptied.is_some_and(|out| out.persist.is_some()));
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.member_count(), 0);
}

/// A leads generation 1 alone; B joins and both are answered generation 2 at `at`, A leading.
/// Returns (A, B).
fn generation_two_of_a_and_b(g: &mut Group<u32>, at: i64) -> (String, String) {
    let (a, mut out) = member_id_round_trip(g, 801, 0);
    join_answer(&mut out, 801);
    let mut out = g.sync(sync_req(&a, 1, &[(&a, b"p0,p1")]), 802, 0);
    sync_answer(&mut out, 802);
    let (b, out) = member_id_round_trip(g, 803, at);
    assert!(out.replies.is_empty());
    let mut out = g.join(join_req(&a, None, b"m"), 804, at);
    let ja = join_answer(&mut out, 804);
    let jb = join_answer(&mut out, 803);
    assert_eq!((ja.generation, jb.generation), (2, 2));
    assert_eq!(jb.leader, a, "A leads generation 2");
    (a, b)
}

#[test]
fn a_leader_that_never_syncs_is_removed_at_the_rebalance_timeout_and_the_others_rejoin() {
    let mut g = Group::new("g", limits(), 0);
    let (a, b) = generation_two_of_a_and_b(&mut g, 1_000);
    // B waits in SyncGroup for A's assignments; A keeps heartbeating but never syncs (stuck in
    // its assignor, say).
    let out = g.sync(sync_req(&b, 2, &[]), 1, 1_100);
    assert!(out.replies.is_empty(), "B waits for the leader");
    let deadline = 1_000 + i64::from(REBALANCE_MS);
    for t in (5_000..deadline).step_by(5_000) {
        assert!(g.heartbeat(&a, None, 2, t).is_ok());
        assert!(g.on_timer(t).replies.is_empty(), "still waiting at {t}");
    }
    assert_eq!(g.next_deadline_ms(), Some(deadline), "the sync deadline");

    let mut out = g.on_timer(deadline);
    assert_eq!(
        code(&sync_answer(&mut out, 1).error),
        27,
        "B's SyncGroup: REBALANCE_IN_PROGRESS"
    );
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&a, None, 2, deadline + 1).unwrap_err().code(),
        25,
        "A was removed"
    );
    // B rejoins and leads generation 3 alone.
    let mut out = g.join(join_req(&b, None, b"m"), 2, deadline + 100);
    let jb = join_answer(&mut out, 2);
    assert_eq!(code(&jb.error), 0);
    assert_eq!(
        (jb.generation, jb.leader.as_str(), jb.members.len()),
        (3, b.as_str(), 1)
    );
}

#[test]
fn a_follower_that_never_syncs_is_removed_even_after_the_leader_did() {
    let mut g = Group::new("g", limits(), 0);
    let (a, b) = generation_two_of_a_and_b(&mut g, 1_000);
    let mut out = g.sync(sync_req(&a, 2, &[(&a, b"p0"), (&b, b"p1")]), 1, 1_100);
    sync_answer(&mut out, 1);
    assert_eq!(g.state(), GroupState::Stable);
    // B heartbeats but never fetches its assignment: p1 would go unread forever.
    let deadline = 1_000 + i64::from(REBALANCE_MS);
    for t in (5_000..deadline).step_by(5_000) {
        g.heartbeat(&a, None, 2, t).unwrap();
        g.heartbeat(&b, None, 2, t).unwrap();
    }
    assert_eq!(g.next_deadline_ms(), Some(deadline));
    g.on_timer(deadline);
    assert_eq!(g.member_count(), 1, "B is gone");
    assert_eq!(
        g.heartbeat(&a, None, 2, deadline + 1).unwrap_err().code(),
        27
    );

    // Once every member has synced, there is no sync deadline.
    let mut g = Group::new("g", limits(), 0);
    let (a, b) = generation_two_of_a_and_b(&mut g, 1_000);
    g.sync(sync_req(&a, 2, &[(&a, b"p0"), (&b, b"p1")]), 1, 1_100);
    g.sync(sync_req(&b, 2, &[]), 2, 1_200);
    assert_eq!(
        g.next_deadline_ms(),
        Some(1_100 + i64::from(SESSION_MS)),
        "only A's session, from its SyncGroup, is due"
    );
}

#[test]
fn a_generation_whose_metadata_could_not_be_stored_is_dropped_and_the_group_rebalances() {
    let mut g = Group::new("g", limits(), 0);
    let (a, mut out) = member_id_round_trip(&mut g, 1, 0);
    join_answer(&mut out, 1);
    let mut out = g.sync(sync_req(&a, 1, &[(&a, b"p0")]), 2, 10);
    let stored = out
        .persist
        .take()
        .expect("a completed generation is persisted");
    assert_eq!(stored.generation, 1);
    assert_eq!(g.state(), GroupState::Stable);

    // The write failed: the generation must not stand as if a restart would find it.
    let out = g.store_failed(1, 20);
    assert!(out.replies.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&a, None, 1, 30).unwrap_err().code(),
        27,
        "REBALANCE_IN_PROGRESS: the member rejoins"
    );
    assert!(g.summary().members.iter().all(|m| m.assignment.is_empty()));
    let mut out = g.join(join_req(&a, None, b"m"), 3, 40);
    assert_eq!(join_answer(&mut out, 3).generation, 2);
    let mut out = g.sync(sync_req(&a, 2, &[(&a, b"p0")]), 4, 50);
    assert_eq!(code(&sync_answer(&mut out, 4).error), 0);
    assert!(out.persist.is_some(), "the new generation is stored anew");

    // A failure reported for a generation the group has left behind changes nothing.
    assert!(g.store_failed(1, 60).replies.is_empty());
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn ids_and_names_longer_than_a_stored_string_are_refused_not_cut_short() {
    let long = "x".repeat(STRING_BYTES_MAX + 1);
    let mut g: Group<u32> = Group::new(&long, limits(), 0);
    let mut out = g.join(join_req("", None, b"m"), 1, 0);
    assert_eq!(
        code(&join_answer(&mut out, 1).error),
        24,
        "INVALID_GROUP_ID"
    );
    assert!(g.is_unused());

    let mut g = Group::new("g", limits(), 0);
    let mut out = g.join(join_req("", Some(&long), b"m"), 1, 0);
    assert_eq!(code(&join_answer(&mut out, 1).error), 42, "INVALID_REQUEST");
    let mut req = join_req("", None, b"m");
    req.protocols = vec![(long.clone(), Bytes::new())];
    let mut out = g.join(req, 2, 0);
    assert_eq!(code(&join_answer(&mut out, 2).error), 42, "INVALID_REQUEST");
    assert!(g.is_unused());

    // A client id at the limit still gets a member id that fits.
    let mut req = join_req("", None, b"m");
    req.client_id = "c".repeat(STRING_BYTES_MAX);
    let mut out = g.join(req, 3, 0);
    let answer = join_answer(&mut out, 3);
    assert_eq!(code(&answer.error), 79, "MEMBER_ID_REQUIRED");
    assert!(answer.member_id.len() <= STRING_BYTES_MAX);
}
