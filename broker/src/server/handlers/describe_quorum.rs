//! DescribeQuorum (key 55), v0-1: the controller quorum as its leader sees it, in Kafka's shape
//! (one partition 0 of `__cluster_metadata`): the leader and its term, the highest applied
//! metadata offset, and per voter and observer (a learner broker) how far it has the metadata log
//! and (v1) when its broker last heartbeat. Answered by the active controller only; any other
//! node answers NOT_LEADER_OR_FOLLOWER, as Kafka's controllers do (clients ask the controller
//! that Metadata names).

use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};

use super::str_bytes;
use crate::error::BrokerError;
use crate::node::Node;

/// Kafka's name of the metadata log.
const METADATA_TOPIC: &str = "__cluster_metadata";

pub fn handle(node: &Node, _request: &DescribeQuorumRequest) -> DescribeQuorumResponse {
    let quorum = node.controller.quorum();
    let status = quorum.status();
    let partition = PartitionData::default().with_partition_index(0);
    let partition = if status.leader != Some(quorum.id()) {
        partition
            .with_error_code(BrokerError::NotLeaderOrFollower.code())
            .with_leader_id(BrokerId(status.leader.map_or(-1, |l| l as i32)))
    } else {
        let image = node.image();
        let now_ms = crate::clock::now_ms();
        let replica = |id: u64| {
            let heard_ms = image
                .broker(crate::ids::BrokerId(id as i32))
                .and_then(|b| {
                    quorum
                        .liveness()
                        .last_heard(b.id.0, b.incarnation.as_u128())
                })
                .map_or(-1, |at| now_ms - at.elapsed().as_millis() as i64);
            let end = status.matched.get(&id).copied().flatten();
            ReplicaState::default()
                .with_replica_id(BrokerId(id as i32))
                .with_log_end_offset(end.map_or(-1, |i| i as i64))
                .with_last_fetch_timestamp(heard_ms)
                .with_last_caught_up_timestamp(-1)
        };
        partition
            .with_leader_id(BrokerId(quorum.id() as i32))
            .with_leader_epoch(status.term as i32)
            .with_high_watermark(status.applied.map_or(-1, |i| i as i64))
            .with_current_voters(status.voters.iter().map(|id| replica(*id)).collect())
            .with_observers(status.learners.iter().map(|id| replica(*id)).collect())
    };
    DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(str_bytes(METADATA_TOPIC)))
        .with_partitions(vec![partition])])
}
