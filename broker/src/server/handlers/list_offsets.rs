//! ListOffsets (key 2): earliest (-2), latest (-1), max timestamp (-3, v7+), or the first offset
//! whose record timestamp is at least the given one, all below the high watermark. Nothing
//! found: offset and timestamp -1. Only the leader answers (as in Kafka; consumers reading from
//! a follower ask the leader for offsets).

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::error::BrokerError;
use crate::node::Node;

pub fn handle(node: &Node, request: &ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let result = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let outcome =
                        node.leader_replica(&t.name, p.partition_index)
                            .and_then(|replica| {
                                let partition = replica.partition();
                                partition.check_leader_epoch(p.current_leader_epoch)?;
                                if p.timestamp < -3 || (p.timestamp == -3 && version < 7) {
                                    return Err(BrokerError::InvalidRequest(format!(
                                        "timestamp {} is not valid at v{version}",
                                        p.timestamp
                                    )));
                                }
                                // The leader epoch field exists from v4.
                                let epoch = if version >= 4 {
                                    partition.leader_epoch().0
                                } else {
                                    -1
                                };
                                Ok((partition.list_offset(p.timestamp)?, epoch))
                            });
                    match outcome {
                        Ok((Some((offset, timestamp)), epoch)) => result
                            .with_offset(offset.0)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(epoch),
                        Ok((None, epoch)) => result
                            .with_offset(-1)
                            .with_timestamp(-1)
                            .with_leader_epoch(epoch),
                        Err(e) => result
                            .with_error_code(e.code())
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
