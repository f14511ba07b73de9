//! The offset store against a real node in a temp dir: commits are durable, reload after a
//! restart gives back the same state, and bad records in the log are skipped, not fatal.

use std::sync::Arc;

use bytes::Bytes;
use strata_protocol::record_batch::build_batch_nullable;

use super::*;
use crate::config::BrokerConfig;
use crate::group::records::{self, MemberMetadata};
use crate::node::{Endpoint, Node};

async fn open(dir: &std::path::Path) -> Node {
    let mut config = BrokerConfig::default();
    config.set("log.segment.bytes", "1048576").unwrap();
    config.set("offsets.topic.num.partitions", "4").unwrap();
    let (node, _) = Node::open(
        Arc::new(config),
        Endpoint {
            host: "127.0.0.1".into(),
            port: 9092,
        },
        dir,
    )
    .await
    .unwrap();
    let report = node.offsets.load().unwrap();
    assert_eq!(report.partitions, 4);
    node
}

fn commit(topic: &str, partition: i32, offset: i64, metadata: &str) -> Commit {
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

fn offsets_of(node: &Node, group: &str) -> Vec<(String, i32, i64)> {
    node.offsets
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
    let node = open(dir.path()).await;
    let offsets = &node.offsets;
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
        offsets_of(&node, "g"),
        vec![("t".into(), 0, 11), ("t".into(), 1, 20)]
    );
    offsets
        .delete_offsets("g", &[("t".into(), 1), ("t".into(), 9)])
        .await
        .unwrap();
    assert_eq!(offsets_of(&node, "g"), vec![("t".into(), 0, 11)]);
    assert_eq!(offsets.groups_with_offsets(), vec!["g".to_string()]);
    offsets.delete_group("g").await.unwrap();
    assert!(offsets.group_offsets("g").is_empty());
    assert!(offsets.groups_with_offsets().is_empty());
}

#[tokio::test]
async fn a_commit_is_on_disk_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    node.offsets
        .commit("g", vec![commit("t", 0, 1, "")])
        .await
        .unwrap();
    let p = node.offsets.partition_for("g");
    let partition = node.partitions.partition(TOPIC, p).unwrap();
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
        let node = open(dir.path()).await;
        for i in 0..50 {
            node.offsets
                .commit(
                    &format!("g{}", i % 7),
                    vec![commit("t", i % 3, i64::from(i), "m")],
                )
                .await
                .unwrap();
        }
        node.offsets.store_group("g1", &group).await.unwrap();
        node.offsets.store_group("gone", &group).await.unwrap();
        node.offsets.delete_group("gone").await.unwrap();
        node.offsets
            .delete_offsets("g2", &[("t".into(), 0)])
            .await
            .unwrap();
        node.offsets.delete_group("g3").await.unwrap();
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
    let node = open(dir.path()).await;
    for (g, want) in expected.iter().enumerate() {
        assert_eq!(&offsets_of(&node, &format!("g{g}")), want, "group g{g}");
    }
    assert_eq!(node.offsets.fetch("g1", "t", 1).unwrap().metadata, "m");
    assert_eq!(node.offsets.fetch("g1", "t", 1).unwrap().leader_epoch, 3);
    let groups = node.offsets.take_loaded_groups();
    assert_eq!(groups, vec![("g1".to_string(), group)]);
    assert!(
        node.offsets.take_loaded_groups().is_empty(),
        "handed out once"
    );
}

#[tokio::test]
async fn bad_records_in_the_log_are_skipped_with_a_warning_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = open(dir.path()).await;
        node.offsets
            .commit("g", vec![commit("t", 0, 5, "")])
            .await
            .unwrap();
        let p = node.offsets.partition_for("g");
        let partition = node.partitions.partition(TOPIC, p).unwrap();
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
    let node = open(dir.path()).await;
    assert_eq!(
        offsets_of(&node, "g"),
        vec![("t".into(), 0, 5), ("t".into(), 1, 6)]
    );
    let report = node.offsets.load().unwrap();
    assert_eq!(report.skipped, 4);
    assert_eq!(report.records, 6);
}

#[tokio::test]
async fn the_internal_topic_is_created_once_and_cannot_be_deleted_or_grown() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    assert_eq!(
        node.image().topic_by_name(TOPIC).unwrap().partitions.len(),
        4
    );
    assert_eq!(
        node.delete_topic(TOPIC).await.err().map(|e| e.code()),
        Some(17)
    );
    assert!(node.create_partitions(TOPIC, 8, None, false).await.is_err());
    node.controller.shutdown().await;
    drop(node);
    let node = open(dir.path()).await;
    assert_eq!(
        node.image().topic_by_name(TOPIC).unwrap().partitions.len(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_racing_a_group_delete_is_never_lost_from_the_log_but_kept_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(open(dir.path()).await);
    // A committer that never stops writing new partitions of "g" while the group is deleted
    // over and over: each commit either lands before a delete (and is tombstoned with it) or
    // after it (and stays, in memory and in the log alike).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let committer = {
        let (node, stop) = (Arc::clone(&node), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut p = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let written = node
                    .offsets
                    .append_commits("g", vec![commit("t", p, 1, "")]);
                drop(written.unwrap());
                p += 1;
            }
        })
    };
    for _ in 0..200 {
        node.offsets.delete_group("g").await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    committer.join().unwrap();
    let in_memory = offsets_of(&node, "g");
    let partition = node
        .partitions
        .partition(TOPIC, node.offsets.partition_for("g"))
        .unwrap();
    partition.wait_durable(partition.high_watermark()).await;
    drop(partition);
    node.controller.shutdown().await;
    drop(node);
    let node = open(dir.path()).await;
    let reloaded = offsets_of(&node, "g");
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
async fn size_retention_of_the_broker_never_deletes_group_offsets() {
    let dir = tempfile::tempdir().unwrap();
    // A broker that keeps 1 byte of any partition, and rolls the offsets topic at 1 MiB.
    let open_small = || async {
        let mut config = BrokerConfig::default();
        config.set("log.retention.bytes", "1").unwrap();
        config.set("offsets.topic.num.partitions", "1").unwrap();
        config
            .set("offsets.topic.segment.bytes", "1048576")
            .unwrap();
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port: 9092,
        };
        let (node, _) = Node::open(Arc::new(config), endpoint, dir.path())
            .await
            .unwrap();
        node.offsets.load().unwrap();
        node
    };
    let node = open_small().await;
    // Some 2 MiB of commits, one batch each: the first segments are full and closed.
    let note = "n".repeat(3_000);
    for i in 0..700 {
        let written = node
            .offsets
            .append_commits("g", vec![commit("t", i % 4, i64::from(i), &note)]);
        drop(written.unwrap());
    }
    node.offsets
        .commit("g", vec![commit("t", 9, 1, "")])
        .await
        .unwrap();
    let now = crate::clock::now_ms();
    assert_eq!(
        node.partitions.apply_retention(now),
        0,
        "no segment deleted"
    );
    node.controller.shutdown().await;
    drop(node);

    let node = open_small().await;
    assert_eq!(
        offsets_of(&node, "g"),
        vec![
            ("t".into(), 0, 696),
            ("t".into(), 1, 697),
            ("t".into(), 2, 698),
            ("t".into(), 3, 699),
            ("t".into(), 9, 1)
        ],
        "every group offset is back after a restart"
    );
    let overrides = node.image().topic_by_name(TOPIC).unwrap().overrides();
    assert_eq!(
        overrides.0.get("retention.bytes").map(String::as_str),
        Some("-1")
    );
    assert_eq!(
        overrides.0.get("retention.ms").map(String::as_str),
        Some("-1")
    );
}

#[tokio::test]
async fn an_offsets_topic_created_before_retention_bytes_was_pinned_gets_it_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What an older version left in its single-node metadata file: retention.ms pinned,
        // retention.bytes not. The start upgrades the file into the metadata log, then pins.
        let mut store = crate::controller::MetadataStore::open(dir.path()).unwrap();
        let old = crate::config::TopicOverrides::parse([("retention.ms", "-1")]).unwrap();
        store
            .create_topic(crate::controller::TopicMeta {
                name: TOPIC.into(),
                id: crate::controller::random_uuid(),
                partitions: 4,
                overrides: old,
            })
            .unwrap();
    }
    let mut config = BrokerConfig::default();
    config.set("log.retention.bytes", "1").unwrap();
    config.set("log.segment.bytes", "1048576").unwrap();
    config.set("offsets.topic.num.partitions", "4").unwrap();
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: 9092,
    };
    let (node, _) = Node::open(Arc::new(config), endpoint, dir.path())
        .await
        .unwrap();
    let overrides = node.image().topic_by_name(TOPIC).unwrap().overrides();
    assert_eq!(
        overrides.0.get("retention.bytes").map(String::as_str),
        Some("-1"),
        "pinned, and written to the metadata"
    );
    // And the partitions run with it: 2 MiB over 1 MiB segments, nothing deleted.
    node.offsets.load().unwrap();
    let note = "n".repeat(3_000);
    for i in 0..700 {
        let written = node
            .offsets
            .append_commits("g", vec![commit("t", 0, i, &note)]);
        drop(written.unwrap());
    }
    let now = crate::clock::now_ms();
    assert_eq!(
        node.partitions.apply_retention(now),
        0,
        "no segment deleted"
    );
}

#[tokio::test]
async fn a_commit_to_a_topic_deleted_since_its_check_is_refused_not_kept_as_a_live_offset() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path()).await;
    // The handler checked "gone" before the delete; under the store's lock it is gone, so the
    // offset is refused, while the one for a topic that still exists is written.
    let (durable, refused) = node
        .offsets
        .append_existing_commits(
            "g",
            vec![commit("kept", 0, 5, ""), commit("gone", 0, 7, "")],
            |topic, _| topic != "gone",
        )
        .unwrap();
    durable.wait().await;
    assert_eq!(refused, vec![1]);
    assert_eq!(offsets_of(&node, "g"), vec![("kept".into(), 0, 5)]);

    // Every commit refused: nothing is written, and the group holds no offsets.
    let (durable, refused) = node
        .offsets
        .append_existing_commits("h", vec![commit("gone", 0, 7, "")], |_, _| false)
        .unwrap();
    durable.wait().await;
    assert_eq!(refused, vec![0]);
    assert!(!node.offsets.has_offsets("h"));

    // And a restart replays the same.
    node.controller.shutdown().await;
    drop(node);
    let node = open(dir.path()).await;
    assert_eq!(offsets_of(&node, "g"), vec![("kept".into(), 0, 5)]);
    assert!(!node.offsets.has_offsets("h"));
}
