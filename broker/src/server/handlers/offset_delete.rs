//! OffsetDelete (key 47, v0): deletes a group's committed offsets for some partitions (writes
//! tombstones, answered once they are on disk). The group coordinator refuses topics the group
//! is subscribed to (GROUP_SUBSCRIBED_TO_TOPIC, per partition) and unknown groups
//! (GROUP_ID_NOT_FOUND, for the whole request); unknown topics get UNKNOWN_TOPIC_OR_PARTITION.

use std::sync::Arc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::{encode, ready, Pending};
use crate::error::BrokerError;
use crate::node::Node;

pub fn handle(
    node: &Arc<Node>,
    request: OffsetDeleteRequest,
    correlation_id: i32,
    version: i16,
) -> Pending {
    let group = request.group_id.to_string();
    if !node.groups.is_known(&group) && !node.offsets.has_offsets(&group) {
        let response = OffsetDeleteResponse::default()
            .with_error_code(BrokerError::GroupIdNotFound(group).code());
        return ready(correlation_id, version, &response);
    }
    let mut targets = Vec::new();
    let mut accepted = Vec::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for (ti, t) in request.topics.iter().enumerate() {
        let known = node.partitions.topic(&t.name);
        let check = node.groups.check_offset_delete(&group, &t.name);
        if let Err(e @ BrokerError::GroupIdNotFound(_)) = &check {
            let response = OffsetDeleteResponse::default().with_error_code(e.code());
            return ready(correlation_id, version, &response);
        }
        let check = check.map_err(|e| e.code());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let exists = known
                .as_ref()
                .is_some_and(|k| usize::try_from(p.partition_index).is_ok_and(|i| i < k.len()));
            let code = if !exists {
                BrokerError::UnknownTopicOrPartition.code()
            } else {
                match check {
                    Ok(()) => {
                        targets.push((t.name.to_string(), p.partition_index));
                        accepted.push((ti, pi));
                        0
                    }
                    Err(code) => code,
                }
            };
            partitions.push(
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    let mut response = OffsetDeleteResponse::default().with_topics(topics);
    // Appended now, in request order; only the wait for the disk happens in the future.
    let durable = match node.offsets.append_deletes(&group, &targets) {
        Ok(d) => Some(d),
        Err(e) => {
            for (ti, pi) in accepted {
                response.topics[ti].partitions[pi].error_code = e.code();
            }
            None
        }
    };
    Box::pin(async move {
        if let Some(d) = durable {
            d.wait().await;
        }
        encode(correlation_id, version, &response).map(Some)
    })
}
