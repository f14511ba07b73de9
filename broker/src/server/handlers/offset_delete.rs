//! OffsetDelete (key 47, v0): deletes a group's committed offsets for some partitions (writes
//! tombstones, answered once they are on disk). The group coordinator refuses topics the group
//! is subscribed to (GROUP_SUBSCRIBED_TO_TOPIC, per partition) and unknown groups
//! (GROUP_ID_NOT_FOUND, for the whole request); unknown topics get UNKNOWN_TOPIC_OR_PARTITION.
//! The coordinator's check and the tombstones' append happen under the group's lock, as a
//! commit's do: a member that joins and commits meanwhile is seen by the check or commits after
//! the tombstones.

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
    // Which partitions exist is settled first; whether the group lets them go, and the write of
    // their tombstones, happen under the group's lock (see `GroupCoordinator::delete_offsets`).
    let exists: Vec<Vec<bool>> = request
        .topics
        .iter()
        .map(|t| {
            let known = node
                .image()
                .topic_by_name(&t.name)
                .map(|t| t.partitions.len());
            t.partitions
                .iter()
                .map(|p| {
                    known
                        .as_ref()
                        .is_some_and(|k| usize::try_from(p.partition_index).is_ok_and(|i| i < *k))
                })
                .collect()
        })
        .collect();
    let names: Vec<&str> = request.topics.iter().map(|t| t.name.as_str()).collect();
    let decided = node.groups.delete_offsets(&group, &names, |verdicts| {
        let mut targets = Vec::new();
        let mut codes = Vec::with_capacity(request.topics.len());
        let mut accepted = Vec::new();
        let topics = request.topics.iter().zip(verdicts).zip(&exists);
        for (ti, ((t, verdict), exists)) in topics.enumerate() {
            let mut topic_codes = Vec::with_capacity(t.partitions.len());
            for (pi, (p, exists)) in t.partitions.iter().zip(exists).enumerate() {
                let code = if !exists {
                    BrokerError::UnknownTopicOrPartition.code()
                } else {
                    match verdict {
                        Ok(()) => {
                            targets.push((t.name.to_string(), p.partition_index));
                            accepted.push((ti, pi));
                            0
                        }
                        Err(e) => e.code(),
                    }
                };
                topic_codes.push(code);
            }
            codes.push(topic_codes);
        }
        // Appended now, in request order; only the wait for the disk happens in the future.
        let durable = match node.offsets.append_deletes(&group, &targets) {
            Ok(d) => Some(d),
            Err(e) => {
                for (ti, pi) in accepted {
                    if let Some(code) = codes.get_mut(ti).and_then(|c| c.get_mut(pi)) {
                        *code = e.code();
                    }
                }
                None
            }
        };
        (codes, durable)
    });
    let (codes, durable) = match decided {
        Ok(decided) => decided,
        Err(e) => {
            let response = OffsetDeleteResponse::default().with_error_code(e.code());
            return ready(correlation_id, version, &response);
        }
    };
    let topics = request
        .topics
        .iter()
        .zip(codes)
        .map(|(t, codes)| {
            let partitions = t
                .partitions
                .iter()
                .zip(codes)
                .map(|(p, code)| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let response = OffsetDeleteResponse::default().with_topics(topics);
    Box::pin(async move {
        if let Some(d) = durable {
            d.wait().await;
        }
        encode(correlation_id, version, &response).map(Some)
    })
}
