//! OffsetForLeaderEpoch (key 23): where a leader epoch ends in this leader's log. A follower
//! asks it to find where its log and the leader's agree (it truncates there); a consumer asks it
//! to check that the position it holds was not truncated away.
//!
//! Invariants:
//! - only the partition's leader answers (a replica that hosts but does not lead it is
//!   NOT_LEADER_OR_FOLLOWER; one not hosted here, UNKNOWN_TOPIC_OR_PARTITION), after the request's
//!   `current_leader_epoch` is checked (-1: no check; older: FENCED_LEADER_EPOCH; newer:
//!   UNKNOWN_LEADER_EPOCH), as Kafka orders the checks;
//! - the answer follows Kafka's epoch-cache rule (`EpochCache::end_offset_for`); an epoch it
//!   cannot place is UNDEFINED: leader epoch -1, end offset -1, no error.

use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::error::BrokerError;
use crate::ids::{LeaderEpoch, PartitionId};
use crate::node::Node;

/// UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET.
const UNDEFINED: (i32, i64) = (-1, -1);

pub fn handle(node: &Node, request: &OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let result = EpochEndOffset::default().with_partition(p.partition);
                    match end_offset(node, &t.topic, p) {
                        Ok((epoch, end)) => result.with_leader_epoch(epoch).with_end_offset(end),
                        Err(e) => result
                            .with_error_code(e.code())
                            .with_leader_epoch(UNDEFINED.0)
                            .with_end_offset(UNDEFINED.1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// The (epoch, end offset) this leader answers for one partition.
fn end_offset(
    node: &Node,
    topic: &str,
    p: &OffsetForLeaderPartition,
) -> Result<(i32, i64), BrokerError> {
    let partition = node
        .partitions
        .partition(topic, p.partition)
        .ok_or(BrokerError::UnknownTopicOrPartition)?;
    partition.check_leader_epoch(p.current_leader_epoch)?;
    let leader = node
        .image()
        .topic_by_name(topic)
        .and_then(|t| t.partition(PartitionId(p.partition)))
        .and_then(|image| image.leader);
    if leader != Some(node.id) {
        return Err(BrokerError::NotLeaderOrFollower);
    }
    Ok(partition
        .end_offset_for_epoch(LeaderEpoch(p.leader_epoch))
        .map_or(UNDEFINED, |(epoch, end)| (epoch.0, end.0)))
}
