//! The coordinator with real tasks and clocks: waiting joins are answered through their
//! oneshots, and the timer task expires sessions without being polled. The coordinator runs on
//! its offset store alone, as the broker wires it (no node).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::offsets::{self, OffsetStore};
use super::state::{JoinRequest, SyncRequest};
use super::GroupCoordinator;
use crate::config::BrokerConfig;

/// What the coordinator needs of a broker: its configuration and `__consumer_offsets` in `dir`.
struct Broker {
    groups: Arc<GroupCoordinator>,
    offsets: Arc<OffsetStore>,
}

fn broker(dir: &std::path::Path, settings: &[(&str, &str)]) -> Broker {
    let mut config = BrokerConfig::default();
    for (k, v) in settings {
        config.set(k, v).unwrap();
    }
    let offsets = Arc::new(offsets::open_for_test(dir, &config));
    let settings = crate::config::BrokerSettings::from_config(&config).unwrap();
    let groups = Arc::new(GroupCoordinator::new(
        &settings.groups,
        Arc::clone(&offsets),
    ));
    Broker { groups, offsets }
}

fn join(member_id: &str, session_timeout_ms: i32) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "test".into(),
        client_host: String::new(),
        session_timeout_ms,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::new())],
        require_known_member_id: false,
        supports_skip_assignment: true,
    }
}

#[tokio::test]
async fn concurrent_joiners_of_a_new_group_share_one_generation_within_the_initial_delay() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), &[]);
    let started = Instant::now();
    let joins: Vec<_> = (0..3)
        .map(|_| {
            let groups = Arc::clone(&broker.groups);
            tokio::spawn(async move { groups.join("g", join("", 10_000)).await })
        })
        .collect();
    let mut generations = Vec::new();
    for j in joins {
        let reply = tokio::time::timeout(Duration::from_secs(5), j)
            .await
            .unwrap()
            .unwrap();
        assert!(reply.error.is_none(), "{:?}", reply.error);
        generations.push(reply.generation);
    }
    assert_eq!(generations, vec![1, 1, 1]);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1_000),
        "answered after {elapsed:?} (initial delay is 100 ms)"
    );
}

#[tokio::test]
async fn the_timer_task_expires_a_silent_member_at_its_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // A 300 ms session (allowed by lowering the minimum) keeps the test short.
    let broker = broker(
        dir.path(),
        &[
            ("group.min.session.timeout.ms", "100"),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    );
    let reply = broker.groups.join("g", join("", 300)).await;
    assert!(reply.error.is_none());
    let sync = SyncRequest {
        member_id: reply.member_id.clone(),
        group_instance_id: None,
        generation: reply.generation,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    };
    assert!(broker.groups.sync("g", sync).await.error.is_none());
    assert_eq!(broker.groups.describe("g").unwrap().state.name(), "Stable");
    let started = Instant::now();
    let mut state = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        state = broker
            .groups
            .describe("g")
            .unwrap()
            .state
            .name()
            .to_string();
        if state == "Empty" {
            break;
        }
    }
    assert_eq!(state, "Empty", "the member expired");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "expired after {:?}",
        started.elapsed()
    );
}

/// Joins `group` alone with a `session_ms` session and syncs: Stable, one member.
async fn stable_alone(broker: &Broker, group: &str, session_ms: i32) {
    let reply = broker.groups.join(group, join("", session_ms)).await;
    assert!(reply.error.is_none());
    let sync = SyncRequest {
        member_id: reply.member_id.clone(),
        group_instance_id: None,
        generation: reply.generation,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    };
    assert!(broker.groups.sync(group, sync).await.error.is_none());
}

#[tokio::test]
async fn a_group_whose_metadata_write_is_stuck_does_not_delay_other_groups_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(
        dir.path(),
        &[
            ("group.min.session.timeout.ms", "100"),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    );
    // "slow" expires first, and its write cannot finish (its write lock is held here, as a
    // stuck fsync would hold it); "fast" expires a little later.
    stable_alone(&broker, "slow", 200).await;
    stable_alone(&broker, "fast", 400).await;
    let slot = broker.groups.find("slow").unwrap();
    let stuck = slot.persisted_seq.lock().await;

    let started = Instant::now();
    let mut state = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        state = broker
            .groups
            .describe("fast")
            .unwrap()
            .state
            .name()
            .to_string();
        if state == "Empty" {
            break;
        }
    }
    assert_eq!(
        state, "Empty",
        "fast expired although slow's write is stuck"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        broker.groups.describe("slow").unwrap().state.name(),
        "Empty"
    );
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_checked_and_written_in_one_step_so_a_fenced_member_cannot_rewind() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), &[("group.initial.rebalance.delay.ms", "0")]);
    let reply = broker.groups.join("g", join("", 10_000)).await;
    let member = reply.member_id.clone();
    let sync = SyncRequest {
        member_id: member.clone(),
        group_instance_id: None,
        generation: reply.generation,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    };
    assert!(broker.groups.sync("g", sync).await.error.is_none());

    // While the member's commit is being written, its removal (here a LeaveGroup, as a
    // rebalance or fencing would) waits: it cannot slip between the check and the write.
    let (left_tx, left_rx) = std::sync::mpsc::channel();
    let written = broker
        .groups
        .commit("g", &member, None, reply.generation, || {
            let leaver = Arc::clone(&broker.groups);
            let who = member.clone();
            tokio::spawn(async move {
                let results = leaver.leave("g", vec![(who, None)]).await;
                let _ = left_tx.send(results);
            });
            left_rx.recv_timeout(Duration::from_millis(300)).is_err()
        });
    assert_eq!(written.ok(), Some(true), "the leave waited for the commit");
    let left = tokio::task::spawn_blocking(move || left_rx.recv_timeout(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("the leave completes after the commit");
    assert!(left.iter().all(Result::is_ok));

    // Now the old member is fenced: its commit is refused before anything is written.
    let mut wrote = false;
    let refused = broker
        .groups
        .commit("g", &member, None, reply.generation, || wrote = true);
    assert_eq!(refused.unwrap_err().code(), 25, "UNKNOWN_MEMBER_ID");
    assert!(!wrote);
}

/// A broker whose `__consumer_offsets` batches hold at most `bytes` (`message.max.bytes`).
fn broker_with_small_batches(dir: &std::path::Path, bytes: &str) -> Broker {
    let broker = broker(
        dir,
        &[
            ("group.initial.rebalance.delay.ms", "0"),
            ("message.max.bytes", bytes),
        ],
    );
    broker.offsets.load().unwrap();
    broker
}

#[tokio::test]
async fn a_sync_whose_group_cannot_be_stored_is_refused_and_the_group_rebalances() {
    let dir = tempfile::tempdir().unwrap();
    // Group metadata with a 4 KB subscription does not fit a 2 KB batch: storing it fails.
    let broker = broker_with_small_batches(dir.path(), "2000");
    let mut req = join("", 10_000);
    req.protocols = vec![("range".into(), Bytes::from(vec![7u8; 4096]))];
    let reply = broker.groups.join("g", req).await;
    assert!(reply.error.is_none(), "{:?}", reply.error);
    let sync = SyncRequest {
        member_id: reply.member_id.clone(),
        group_instance_id: None,
        generation: reply.generation,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(reply.member_id.clone(), Bytes::from_static(b"p0"))],
    };
    let synced = broker.groups.sync("g", sync).await;
    assert_eq!(
        synced.error.as_ref().map(|e| e.code()),
        Some(15),
        "COORDINATOR_NOT_AVAILABLE, not an assignment that was never stored"
    );
    // The group does not stay Stable on a generation a restart would not find.
    let mut state = String::new();
    for _ in 0..100 {
        state = broker
            .groups
            .describe("g")
            .unwrap()
            .state
            .name()
            .to_string();
        if state == "PreparingRebalance" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state, "PreparingRebalance");
    let heartbeat = broker
        .groups
        .heartbeat("g", &reply.member_id, None, reply.generation);
    assert_eq!(heartbeat.unwrap_err().code(), 27, "REBALANCE_IN_PROGRESS");
}

#[tokio::test]
async fn a_group_with_more_offsets_than_one_batch_holds_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_small_batches(dir.path(), "2000");
    // 200 offsets: their tombstones take several 2 KB batches.
    for p in 0..200 {
        let commit = offsets::Commit {
            topic: format!("orders-{p:03}"),
            partition: 0,
            value: offsets::CommittedOffset {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            },
        };
        broker.offsets.commit("g", vec![commit]).await.unwrap();
    }
    assert_eq!(broker.offsets.group_offsets("g").len(), 200);
    broker.groups.delete("g").await.unwrap();
    assert!(broker.offsets.group_offsets("g").is_empty());

    // And it stays deleted after a restart.
    drop(broker);
    let broker = broker_with_small_batches(dir.path(), "2000");
    assert!(broker.offsets.group_offsets("g").is_empty());
}

#[tokio::test]
async fn a_static_member_whose_return_cannot_be_stored_is_refused_and_the_group_rebalances() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_small_batches(dir.path(), "2000");
    let mut first = join("", 10_000);
    first.group_instance_id = Some("pod-1".into());
    let reply = broker.groups.join("g", first).await;
    assert!(reply.error.is_none(), "{:?}", reply.error);
    let sync = SyncRequest {
        member_id: reply.member_id.clone(),
        group_instance_id: Some("pod-1".into()),
        generation: reply.generation,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(reply.member_id.clone(), Bytes::from_static(b"p0"))],
    };
    assert!(broker.groups.sync("g", sync).await.error.is_none());

    // The pod restarts with a subscription too large to store: its new member id was never
    // stored, so it must not be handed out as if it were.
    let mut back = join("", 10_000);
    back.group_instance_id = Some("pod-1".into());
    back.protocols = vec![("range".into(), Bytes::from(vec![7u8; 4096]))];
    let rejoined = broker.groups.join("g", back).await;
    assert_eq!(
        rejoined.error.as_ref().map(|e| e.code()),
        Some(15),
        "COORDINATOR_NOT_AVAILABLE"
    );
    let mut state = String::new();
    for _ in 0..100 {
        state = broker
            .groups
            .describe("g")
            .unwrap()
            .state
            .name()
            .to_string();
        if state == "PreparingRebalance" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state, "PreparingRebalance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_delete_is_checked_and_written_in_one_step_so_a_joining_member_waits() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), &[("group.initial.rebalance.delay.ms", "0")]);

    // Nobody is in the group, so its offsets of "t" may go. While their tombstones are being
    // written, a consumer's JoinGroup waits: it cannot join (and commit) between the check and
    // the write, only to have the delete remove what it committed.
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
    let decided = broker.groups.delete_offsets("g", &["t"], |verdicts| {
        let joiner = Arc::clone(&broker.groups);
        tokio::spawn(async move {
            let reply = joiner.join("g", join("", 10_000)).await;
            let _ = joined_tx.send(reply);
        });
        let join_waited = joined_rx.recv_timeout(Duration::from_millis(300)).is_err();
        (verdicts.iter().all(Result::is_ok), join_waited)
    });
    assert_eq!(
        decided.ok(),
        Some((true, true)),
        "the join waited for the delete"
    );
    let joined =
        tokio::task::spawn_blocking(move || joined_rx.recv_timeout(Duration::from_secs(5)))
            .await
            .unwrap()
            .expect("the join completes after the delete");
    assert!(joined.error.is_none(), "{:?}", joined.error);

    // Now a member subscribes to "t" (its subscription cannot be read, which counts as
    // subscribed): the next delete is refused before anything is written.
    let mut wrote = false;
    let refused = broker.groups.delete_offsets("g", &["t"], |verdicts| {
        wrote = verdicts.iter().any(Result::is_ok);
        verdicts
            .iter()
            .map(|v| v.as_ref().map_err(|e| e.code()).err())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        refused.ok(),
        Some(vec![Some(86)]),
        "GROUP_SUBSCRIBED_TO_TOPIC"
    );
    assert!(!wrote);
}

#[tokio::test]
async fn stopping_ends_the_timers_and_waits_for_the_group_writes_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(
        dir.path(),
        &[
            ("group.min.session.timeout.ms", "100"),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    );
    // The member's session expires while the group's write cannot finish (its write lock is
    // held here, as a slow fsync would hold it): the expiry's write is in flight.
    stable_alone(&broker, "g", 200).await;
    let slot = broker.groups.find("g").unwrap();
    let stuck = slot.persisted_seq.lock().await;
    let mut state = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        state = broker
            .groups
            .describe("g")
            .unwrap()
            .state
            .name()
            .to_string();
        if state == "Empty" {
            break;
        }
    }
    assert_eq!(state, "Empty");

    // A shutdown waits for that write, up to its bound.
    assert!(
        !broker.groups.stop(Duration::from_millis(200)).await,
        "stopped with a group write in flight"
    );
    drop(stuck);
    assert!(broker.groups.stop(Duration::from_secs(5)).await);

    // No timer runs any more: a member that joins now is not expired.
    stable_alone(&broker, "late", 200).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        broker.groups.describe("late").unwrap().state.name(),
        "Stable"
    );
}

/// A broker that stops leading a group's `__consumer_offsets` partition stops coordinating the
/// group: its members are told NOT_COORDINATOR (so they look the coordinator up again), and the
/// group comes back from the log when the broker leads the partition again.
#[tokio::test]
async fn a_group_whose_offsets_partition_moves_away_gets_not_coordinator_and_comes_back() {
    use crate::error::BrokerError;
    use crate::ids::{BrokerId, LeaderEpoch};
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), &[("group.initial.rebalance.delay.ms", "0")]);
    let reply = broker.groups.join("g", join("", 10_000)).await;
    assert!(reply.error.is_none(), "{:?}", reply.error);
    let member = reply.member_id.clone();
    let sync = SyncRequest {
        member_id: member.clone(),
        group_instance_id: None,
        generation: reply.generation,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    };
    assert!(broker.groups.sync("g", sync).await.error.is_none());
    let p = broker.offsets.partition_for("g") as usize;
    // The test store leads every partition.
    let mut leads: Vec<_> = (0..)
        .map_while(|i| broker.offsets.replica_for_test(i).map(Some))
        .collect();
    let replica = leads[p].clone().unwrap();

    // Another broker now leads the partition.
    replica.set_leader_for_test(Some(BrokerId(7)), LeaderEpoch(1));
    leads[p] = None;
    let changes = broker.offsets.follow_roles(&leads);
    assert_eq!(broker.groups.unload(&changes.unloaded), 1);
    let beat = broker
        .groups
        .heartbeat("g", &member, None, reply.generation);
    assert!(matches!(beat, Err(BrokerError::NotCoordinator)), "{beat:?}");
    let rejoin = broker.groups.join("g", join(&member, 10_000)).await;
    assert!(
        matches!(rejoin.error, Some(BrokerError::NotCoordinator)),
        "{:?}",
        rejoin.error
    );
    assert!(broker.groups.describe("g").is_none(), "unloaded");

    // Leader again: the group's metadata is read back from the log.
    replica.set_leader_for_test(Some(BrokerId(0)), LeaderEpoch(2));
    leads[p] = Some(replica);
    let changes = broker.offsets.follow_roles(&leads);
    assert_eq!(changes.report.partitions, 1);
    broker.groups.load(changes.groups);
    let described = broker.groups.describe("g").expect("loaded");
    assert_eq!(described.state.name(), "Stable");
}
