//! `__consumer_offsets` replicates like data: on a 3-broker cluster it is created with 3
//! replicas (`offsets.topic.replication.factor`, default 3), a group's commit is answered once
//! every in-sync replica holds it, and each replica of the group's partition serves the commit
//! back (Fetch v12 as a consumer, which a follower answers too, KIP-392). Only the partition's
//! leader coordinates the group: a follower answers its OffsetFetch NOT_COORDINATOR.

mod common;

use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, MetadataRequest,
    OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use strata_client::Connection;

use common::{connect, consumer_fetch, launch_cluster, str_bytes as name, unique_topic};

const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How long followers may take to copy the commit and learn the high watermark.
const SETTLE: Duration = Duration::from_secs(30);

/// Replicas of each partition of `topic`, by partition, as `c` reports them.
async fn replicas(c: &Connection, topic: &str) -> Vec<(i32, i32, Vec<i32>)> {
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(TopicName(name(topic)))),
    ]));
    let (response, _) = c.send(&request).await.expect("Metadata");
    let mut out: Vec<(i32, i32, Vec<i32>)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index,
                p.leader_id.0,
                p.replica_nodes.iter().map(|b| b.0).collect(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Kafka's partition of a group: Java's `String.hashCode`, abs, mod the partition count.
fn partition_of(group: &str, partitions: i32) -> i32 {
    let h = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let h = if h == i32::MIN { 0 } else { h.abs() };
    h % partitions
}

/// Everything below the high watermark of `topic`/`partition` that `c` serves as a consumer.
async fn read_all(c: &Connection, topic: &str, partition: i32) -> Vec<u8> {
    let p = consumer_fetch(c, topic, partition, 0).await;
    assert_eq!(p.error_code, 0, "Fetch from {}", c.addr());
    p.records.clone().unwrap_or_default().to_vec()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_groups_commit_is_held_by_every_replica_of_its_offsets_partition() {
    let nodes = launch_cluster(3, 0, &["replica.fetch.wait.max.ms=200"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = unique_topic("orders");
    let group = unique_topic("billing");
    rt.block_on(async {
        let first = connect(&nodes[0]).await;
        // 1. The internal topic got three replicas on every partition, though the brokers
        // started together.
        let layout = replicas(&first, OFFSETS_TOPIC).await;
        assert_eq!(
            layout.len(),
            6,
            "offsets.topic.num.partitions=6 in the harness"
        );
        for (p, _, r) in &layout {
            assert_eq!(
                r.len(),
                3,
                "partition {p} of {OFFSETS_TOPIC} has replicas {r:?}"
            );
        }

        // 2. A consumer commits through its coordinator, the leader of the group's partition.
        let create = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(name(&topic)))
                .with_num_partitions(1)
                .with_replication_factor(1)])
            .with_timeout_ms(20_000);
        let (created, _) = first.send(&create).await.expect("CreateTopics");
        assert_eq!(created.topics[0].error_code, 0, "CreateTopics");
        let found = first
            .send_at(&FindCoordinatorRequest::default().with_key(name(&group)), 2)
            .await
            .expect("FindCoordinator");
        assert_eq!(found.error_code, 0, "FindCoordinator");
        let partition = partition_of(&group, layout.len() as i32);
        let (_, leader, members) = layout[partition as usize].clone();
        assert_eq!(
            found.node_id.0, leader,
            "the coordinator leads the group's partition"
        );
        let coordinator = connect(&nodes[leader as usize - 1]).await;
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(name(&group)))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(name(""))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(name(&topic)))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(4242)])]);
        let committed = coordinator.send_at(&commit, 8).await.expect("OffsetCommit");
        assert_eq!(
            committed.topics[0].partitions[0].error_code, 0,
            "the commit is acknowledged"
        );

        // 3. The coordinator answers the commit back; a follower of the partition is not the
        // coordinator and says so (NOT_COORDINATOR), so a client looks it up again.
        let fetch = OffsetFetchRequest::default()
            .with_group_id(GroupId(name(&group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(name(&topic)))
                .with_partition_indexes(vec![0])]));
        let fetched = coordinator.send_at(&fetch, 6).await.expect("OffsetFetch");
        assert_eq!(fetched.error_code, 0);
        assert_eq!(fetched.topics[0].partitions[0].committed_offset, 4242);
        let follower = members.iter().copied().find(|m| *m != leader).unwrap();
        let not_coordinator = connect(&nodes[follower as usize - 1]).await;
        let fetched = not_coordinator
            .send_at(&fetch, 6)
            .await
            .expect("OffsetFetch");
        assert_eq!(fetched.error_code, 16, "NOT_COORDINATOR from a follower");
        let describe = DescribeGroupsRequest::default().with_groups(vec![GroupId(name(&group))]);
        let described = not_coordinator
            .send_at(&describe, 5)
            .await
            .expect("DescribeGroups");
        assert_eq!(described.groups[0].error_code, 16, "NOT_COORDINATOR");
        let described = coordinator
            .send_at(&describe, 5)
            .await
            .expect("DescribeGroups");
        assert_eq!(described.groups[0].error_code, 0);

        // 4. Every replica of the partition serves the commit below its high watermark.
        let start = Instant::now();
        for member in members {
            let c = connect(&nodes[member as usize - 1]).await;
            loop {
                let log = read_all(&c, OFFSETS_TOPIC, partition).await;
                if contains(&log, group.as_bytes()) && contains(&log, topic.as_bytes()) {
                    break;
                }
                assert!(
                    start.elapsed() < SETTLE,
                    "broker {member} does not hold the commit after {SETTLE:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
}
