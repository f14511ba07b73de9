//! How a node keeps `__consumer_offsets`: created once at first start, never deleted or grown,
//! and its retention pinned off, so neither the broker's retention nor an older data dir can
//! make it forget a committed offset. (The offset store itself is tested in `group/offsets`.)

use super::*;
use crate::group::offsets::tests::commit;
use crate::group::offsets::TOPIC;

async fn open(dir: &Path, settings: &[(&str, &str)]) -> Node {
    let node = open_for_test(dir, settings).await;
    node.offsets.load().unwrap();
    node
}

/// A node whose `__consumer_offsets` has 4 partitions of 1 MiB segments.
async fn open_four(dir: &Path) -> Node {
    open(
        dir,
        &[
            ("log.segment.bytes", "1048576"),
            ("offsets.topic.num.partitions", "4"),
        ],
    )
    .await
}

fn offsets_of(node: &Node, group: &str) -> Vec<(String, i32, i64)> {
    node.offsets
        .group_offsets(group)
        .into_iter()
        .map(|(t, p, c)| (t, p, c.offset))
        .collect()
}

#[tokio::test]
async fn the_internal_topic_is_created_once_and_cannot_be_deleted_or_grown() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_four(dir.path()).await;
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
    let node = open_four(dir.path()).await;
    assert_eq!(
        node.image().topic_by_name(TOPIC).unwrap().partitions.len(),
        4
    );
}

#[tokio::test]
async fn size_retention_of_the_broker_never_deletes_group_offsets() {
    let dir = tempfile::tempdir().unwrap();
    // A broker that keeps 1 byte of any partition, and rolls the offsets topic at 1 MiB.
    let open_small = || {
        open(
            dir.path(),
            &[
                ("log.retention.bytes", "1"),
                ("offsets.topic.num.partitions", "1"),
                ("offsets.topic.segment.bytes", "1048576"),
            ],
        )
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
        let mut store = MetadataStore::open(dir.path()).unwrap();
        let old = TopicOverrides::parse([("retention.ms", "-1")]).unwrap();
        store
            .create_topic(crate::controller::TopicMeta {
                name: TOPIC.into(),
                id: random_uuid(),
                partitions: 4,
                overrides: old,
            })
            .unwrap();
    }
    let node = open(
        dir.path(),
        &[
            ("log.retention.bytes", "1"),
            ("log.segment.bytes", "1048576"),
            ("offsets.topic.num.partitions", "4"),
        ],
    )
    .await;
    let overrides = node.image().topic_by_name(TOPIC).unwrap().overrides();
    assert_eq!(
        overrides.0.get("retention.bytes").map(String::as_str),
        Some("-1"),
        "pinned, and written to the metadata"
    );
    // And the partitions run with it: 2 MiB over 1 MiB segments, nothing deleted.
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
