//! The offset store over real `__consumer_offsets` partitions in a temp dir: commits are
//! durable, reload after a restart gives back the same state, and bad records in the log are
//! skipped, not fatal. (How a node creates the topic and pins its retention is tested in
//! `node/offsets_topic_tests.rs`.)

use std::sync::Arc;

use bytes::Bytes;
use strata_protocol::record_batch::build_batch_nullable;

use super::*;
use crate::config::BrokerConfig;
use crate::group::records::{self, MemberMetadata};

/// The store over 4 partitions in `dir`, loaded: what a broker restarted on `dir` has.
fn open(dir: &std::path::Path) -> OffsetStore {
    let mut config = BrokerConfig::default();
    config.set("log.segment.bytes", "1048576").unwrap();
    config.set("offsets.topic.num.partitions", "4").unwrap();
    let store = open_for_test(dir, &config);
    let report = store.load().unwrap();
    assert_eq!(report.partitions, 4);
    store
}

/// The partition of `__consumer_offsets` that holds `group`.
fn partition_of(store: &OffsetStore, group: &str) -> Arc<Partition> {
    let led = store.led(store.partition_for(group) as usize);
    Arc::clone(
        led.expect("the test store leads every partition")
            .partition(),
    )
}

/// A commit of `offset` to `topic`/`partition` (leader epoch 3, at 1,000 ms), for tests here and
/// in `node`.
pub(crate) fn commit(topic: &str, partition: i32, offset: i64, metadata: &str) -> Commit {
    Commit {
        topic: topic.into(),
        partition,
        value: CommittedOffset {
            offset,
            leader_epoch: 3,
            metadata: metadata.into(),
            commit_timestamp_ms: 1_000,
        },
    }
}

fn offsets_of(store: &OffsetStore, group: &str) -> Vec<(String, i32, i64)> {
    store
        .group_offsets(group)
        .into_iter()
        .map(|(t, p, c)| (t, p, c.offset))
        .collect()
}

#[test]
fn groups_are_placed_as_kafka_places_them() {
    let store = OffsetStore::new(Vec::new());
    // Java: "hello".hashCode() is 99162322; "my-group".hashCode() is -1906497762, so Kafka
    // keeps my-group in partition abs(-1906497762) % 50 = 12 of 50.
    assert_eq!(java_hash("hello"), 99_162_322);
    assert_eq!(java_hash("my-group"), -1_906_497_762);
    assert_eq!((1_906_497_762 % 50), 12);
    assert_eq!(java_hash(""), 0);
    assert_eq!(
        store.partition_for("x"),
        0,
        "no partitions: never a division by zero"
    );
}

#[tokio::test]
async fn committed_offsets_are_fetched_replaced_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let offsets = &store;
    offsets
        .commit("g", vec![commit("t", 0, 10, "a"), commit("t", 1, 20, "")])
        .await
        .unwrap();
    assert_eq!(offsets.fetch("g", "t", 0).unwrap().metadata, "a");
    assert_eq!(
        offsets.fetch("other", "t", 0),
        None,
        "groups do not see each other"
    );
    offsets
        .commit("g", vec![commit("t", 0, 11, "b")])
        .await
        .unwrap();
    assert_eq!(
        offsets_of(&store, "g"),
        vec![("t".into(), 0, 11), ("t".into(), 1, 20)]
    );
    offsets
        .delete_offsets("g", &[("t".into(), 1), ("t".into(), 9)])
        .await
        .unwrap();
    assert_eq!(offsets_of(&store, "g"), vec![("t".into(), 0, 11)]);
    assert_eq!(offsets.groups_with_offsets(), vec!["g".to_string()]);
    offsets.delete_group("g").await.unwrap();
    assert!(offsets.group_offsets("g").is_empty());
    assert!(offsets.groups_with_offsets().is_empty());
}

#[tokio::test]
async fn a_commit_is_on_disk_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit("g", vec![commit("t", 0, 1, "")])
        .await
        .unwrap();
    let partition = partition_of(&store, "g");
    assert_eq!(
        partition.high_watermark(),
        Offset(1),
        "one batch of one record"
    );
    assert!(
        partition.recovery_point() >= Offset(1),
        "flushed before the answer"
    );
}

#[tokio::test]
async fn everything_comes_back_after_a_restart_with_tombstones_applied() {
    let dir = tempfile::tempdir().unwrap();
    let group = GroupMetadata {
        protocol_type: "consumer".into(),
        generation: 4,
        protocol: Some("range".into()),
        leader: Some("m-1".into()),
        current_state_timestamp_ms: 77,
        members: vec![MemberMetadata {
            member_id: "m-1".into(),
            group_instance_id: Some("static".into()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 300_000,
            session_timeout_ms: 45_000,
            subscription: Bytes::from_static(b"sub"),
            assignment: Bytes::from_static(b"asg"),
        }],
    };
    {
        let store = open(dir.path());
        for i in 0..50 {
            store
                .commit(
                    &format!("g{}", i % 7),
                    vec![commit("t", i % 3, i64::from(i), "m")],
                )
                .await
                .unwrap();
        }
        store.store_group("g1", &group).await.unwrap();
        store.store_group("gone", &group).await.unwrap();
        store.delete_group("gone").await.unwrap();
        store
            .delete_offsets("g2", &[("t".into(), 0)])
            .await
            .unwrap();
        store.delete_group("g3").await.unwrap();
        // Dropped without a clean shutdown: what a kill -9 leaves.
    }
    let expected: Vec<Vec<(String, i32, i64)>> = {
        let mut model = std::collections::BTreeMap::new();
        for i in 0..50 {
            model.insert(
                (format!("g{}", i % 7), "t".to_string(), i % 3),
                i64::from(i),
            );
        }
        model.remove(&("g2".into(), "t".into(), 0));
        model.retain(|k, _| k.0 != "g3");
        (0..7)
            .map(|g| {
                model
                    .iter()
                    .filter(|(k, _)| k.0 == format!("g{g}"))
                    .map(|(k, v)| (k.1.clone(), k.2, *v))
                    .collect()
            })
            .collect()
    };
    let store = open(dir.path());
    for (g, want) in expected.iter().enumerate() {
        assert_eq!(&offsets_of(&store, &format!("g{g}")), want, "group g{g}");
    }
    assert_eq!(store.fetch("g1", "t", 1).unwrap().metadata, "m");
    assert_eq!(store.fetch("g1", "t", 1).unwrap().leader_epoch, 3);
    let groups = store.take_loaded_groups();
    assert_eq!(groups, vec![("g1".to_string(), group)]);
    assert!(store.take_loaded_groups().is_empty(), "handed out once");
}

#[tokio::test]
async fn bad_records_in_the_log_are_skipped_with_a_warning_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .commit("g", vec![commit("t", 0, 5, "")])
            .await
            .unwrap();
        let partition = partition_of(&store, "g");
        let good_key = records::encode_offset_key("g", "t", 1);
        let good_value = records::encode_offset_value(&commit("t", 1, 6, "").value);
        // Well-formed batches (valid CRC) holding records that are not: a garbage key, a value
        // cut short, a null key, an unknown value version; then a good record after them.
        let batch = build_batch_nullable(
            0,
            1_000,
            &[
                (Some(&b"\x00\x01\xff"[..]), Some(&b"x"[..])),
                (
                    Some(&good_key[..]),
                    Some(&good_value[..good_value.len() - 3]),
                ),
                (None, Some(&good_value[..])),
                (Some(&good_key[..]), Some(&b"\x00\x63rest"[..])),
                (Some(&good_key[..]), Some(&good_value[..])),
            ],
        );
        partition.append(&batch, 1_000).unwrap();
        partition.wait_durable(partition.high_watermark()).await;
    }
    let store = open(dir.path());
    assert_eq!(
        offsets_of(&store, "g"),
        vec![("t".into(), 0, 5), ("t".into(), 1, 6)]
    );
    let report = store.load().unwrap();
    assert_eq!(report.skipped, 4);
    assert_eq!(report.records, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_racing_a_group_delete_is_never_lost_from_the_log_but_kept_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    // A committer that never stops writing new partitions of "g" while the group is deleted
    // over and over: each commit either lands before a delete (and is tombstoned with it) or
    // after it (and stays, in memory and in the log alike).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let committer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut p = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let written = store.append_commits("g", vec![commit("t", p, 1, "")]);
                drop(written.unwrap());
                p += 1;
            }
        })
    };
    for _ in 0..200 {
        store.delete_group("g").await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    committer.join().unwrap();
    let in_memory = offsets_of(&store, "g");
    let partition = partition_of(&store, "g");
    partition.wait_durable(partition.high_watermark()).await;
    drop(partition);
    drop(store);
    let store = open(dir.path());
    let reloaded = offsets_of(&store, "g");
    assert_eq!(
        reloaded.len(),
        in_memory.len(),
        "no acknowledged commit comes back from the dead, none is lost"
    );
    assert_eq!(
        reloaded, in_memory,
        "the log replayed after a restart gives back exactly what memory held"
    );
}

#[tokio::test]
async fn a_commit_to_a_topic_deleted_since_its_check_is_refused_not_kept_as_a_live_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // The handler checked "gone" before the delete; under the store's lock it is gone, so the
    // offset is refused, while the one for a topic that still exists is written.
    let (durable, refused) = store
        .append_existing_commits(
            "g",
            vec![commit("kept", 0, 5, ""), commit("gone", 0, 7, "")],
            |topic, _| topic != "gone",
        )
        .unwrap();
    durable.wait().await;
    assert_eq!(refused, vec![1]);
    assert_eq!(offsets_of(&store, "g"), vec![("kept".into(), 0, 5)]);

    // Every commit refused: nothing is written, and the group holds no offsets.
    let (durable, refused) = store
        .append_existing_commits("h", vec![commit("gone", 0, 7, "")], |_, _| false)
        .unwrap();
    durable.wait().await;
    assert_eq!(refused, vec![0]);
    assert!(!store.has_offsets("h"));

    // And a restart replays the same.
    drop(store);
    let store = open(dir.path());
    assert_eq!(offsets_of(&store, "g"), vec![("kept".into(), 0, 5)]);
    assert!(!store.has_offsets("h"));
}

/// The coordinator follows leadership: a partition this broker stops leading is forgotten (its
/// groups get NOT_COORDINATOR), and one it comes to lead is loaded from its log first.
#[tokio::test]
async fn the_store_forgets_a_partition_it_stops_leading_and_loads_one_it_comes_to_lead() {
    use crate::ids::{BrokerId, LeaderEpoch};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit("g", vec![commit("orders", 0, 42, "m")])
        .await
        .unwrap();
    let meta = GroupMetadata {
        protocol_type: "consumer".into(),
        generation: 3,
        protocol: Some("range".into()),
        leader: None,
        current_state_timestamp_ms: 1_000,
        members: vec![],
    };
    store.store_group("g", &meta).await.unwrap();
    let p = store.partition_for("g") as usize;
    let mut leads: Vec<Option<Arc<crate::replica::Replica>>> =
        (0..4).map(|i| store.led(i).ok()).collect();
    let replica = leads[p].clone().unwrap();

    // Another broker is elected leader: the replica refuses writes at once, before the store
    // hears of it, and the store then forgets the partition.
    replica.set_leader_for_test(Some(BrokerId(7)), LeaderEpoch(1));
    let refused = store.commit("g", vec![commit("orders", 0, 43, "")]).await;
    assert!(
        matches!(refused, Err(BrokerError::NotCoordinator)),
        "{refused:?}"
    );
    leads[p] = None;
    let changes = store.follow_roles(&leads);
    assert_eq!(changes.report.partitions, 0, "nothing to load");
    assert_eq!(changes.unloaded, vec![p]);
    assert!(store.fetch("g", "orders", 0).is_none(), "unloaded");
    assert!(matches!(
        store.coordinates("g"),
        Err(BrokerError::NotCoordinator)
    ));
    // While a newly led partition is being read, its groups are told to retry.
    store.loading[p].store(true, Ordering::Release);
    assert!(matches!(
        store.coordinates("g"),
        Err(BrokerError::CoordinatorLoadInProgress)
    ));
    store.loading[p].store(false, Ordering::Release);
    let other = (0..4).find(|&i| i != p).unwrap();
    assert!(
        store.led(other).is_ok(),
        "the other partitions are untouched"
    );

    // Leader again: the commits and the group come back from the log before it answers.
    replica.set_leader_for_test(Some(BrokerId(0)), LeaderEpoch(2));
    leads[p] = Some(Arc::clone(&replica));
    let changes = store.follow_roles(&leads);
    let (report, groups) = (changes.report, changes.groups);
    assert_eq!((report.partitions, report.offsets), (1, 1));
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].0, "g");
    assert_eq!(groups[0].1.generation, 3);
    assert_eq!(store.fetch("g", "orders", 0).unwrap().offset, 42);
    assert!(store.coordinates("g").is_ok());
    store
        .commit("g", vec![commit("orders", 0, 44, "")])
        .await
        .unwrap();
    assert_eq!(store.fetch("g", "orders", 0).unwrap().offset, 44);
    // Same roles again: nothing reloads.
    assert_eq!(store.follow_roles(&leads).report.partitions, 0);
}

/// A commit is acknowledged as an `acks=-1` produce is: while a follower in the ISR has not
/// fetched it, the committer waits, and after `offsets.commit.timeout.ms` is told
/// COORDINATOR_NOT_AVAILABLE (it retries); the commit is already visible and stays in the log.
#[tokio::test]
async fn a_commit_waits_for_the_isr_and_times_out_as_coordinator_not_available() {
    use crate::ids::{BrokerId, LeaderEpoch};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).with_commit_timeout(std::time::Duration::from_millis(200));
    let p = store.partition_for("g") as usize;
    let replica = store.led(p).unwrap();
    // Broker 1 follows the partition and never fetches.
    replica.set_assignment_for_test(
        Some(BrokerId(0)),
        LeaderEpoch(1),
        &[BrokerId(0), BrokerId(1)],
    );
    let started = std::time::Instant::now();
    let answer = store.commit("g", vec![commit("orders", 0, 7, "")]).await;
    assert!(
        matches!(answer, Err(BrokerError::CoordinatorNotAvailable(_))),
        "{answer:?}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    assert_eq!(store.fetch("g", "orders", 0).unwrap().offset, 7);
    // Alone in the ISR again: commits are acknowledged at once.
    replica.set_leader_for_test(Some(BrokerId(0)), LeaderEpoch(2));
    store
        .commit("g", vec![commit("orders", 0, 8, "")])
        .await
        .unwrap();
}
