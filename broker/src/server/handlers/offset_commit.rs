//! OffsetCommit (key 8, v2-8): checks each partition (the topic must exist, the metadata fit
//! `offset.metadata.max.bytes`), then, under the group's lock, asks the group coordinator whether
//! this member may commit and writes every accepted offset of the request as one batch to
//! `__consumer_offsets`. The answer waits until that batch is on disk, like `acks=-1`.
//! A commit racing DeleteTopics either lands before the topic's offsets are tombstoned (and is
//! tombstoned with them) or is answered UNKNOWN_TOPIC_OR_PARTITION.
//!
//! v2-4 carry `retention_time_ms`; it is accepted and ignored (offset expiry is not built: offsets
//! are kept until their group deletes them), which Kafka also does from v5 on.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{encode, Pending};
use crate::clock::now_ms;
use crate::error::BrokerError;
use crate::group::offsets::{Commit, CommittedOffset};
use crate::group::records::STRING_BYTES_MAX;
use crate::node::Node;

pub fn handle(
    node: &Arc<Node>,
    request: OffsetCommitRequest,
    correlation_id: i32,
    version: i16,
) -> Pending {
    let group = request.group_id.to_string();
    // Metadata longer than a stored string can hold is refused whatever the setting says.
    let metadata_bytes_max = node
        .request_limits
        .offset_metadata_bytes_max
        .min(STRING_BYTES_MAX);
    // A group id that no stored record can hold names no group: refused, never cut short.
    let group_id_ok = group.len() <= STRING_BYTES_MAX;
    let now = now_ms();
    let mut commits = Vec::new();
    // (topic index, partition index) of each accepted commit, to fill in a write error.
    let mut accepted = Vec::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for (ti, t) in request.topics.into_iter().enumerate() {
        // The image, not this broker's partitions: a coordinator need not host the topic.
        let known = node
            .image()
            .topic_by_name(&t.name)
            .map(|t| t.partitions.len());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.into_iter().enumerate() {
            let metadata = p
                .committed_metadata
                .map(|m| m.to_string())
                .unwrap_or_default();
            let exists = known
                .as_ref()
                .is_some_and(|k| usize::try_from(p.partition_index).is_ok_and(|i| i < *k));
            let outcome = if !group_id_ok {
                Err(BrokerError::InvalidGroupId.code())
            } else if !exists {
                Err(BrokerError::UnknownTopicOrPartition.code())
            } else if metadata.len() > metadata_bytes_max {
                Err(BrokerError::OffsetMetadataTooLarge {
                    size_bytes: metadata.len(),
                    limit_bytes: metadata_bytes_max,
                }
                .code())
            } else {
                Ok(())
            };
            let code = match outcome {
                Ok(()) => {
                    accepted.push((ti, pi));
                    commits.push(Commit {
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                        value: CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: if version >= 6 {
                                p.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata,
                            commit_timestamp_ms: now,
                        },
                    });
                    0
                }
                Err(code) => code,
            };
            partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    let mut response = OffsetCommitResponse::default().with_topics(topics);
    // The coordinator's verdict covers the whole request, as in Kafka; it is given under the
    // group's lock together with the append, so a member fenced meanwhile cannot write. The
    // append happens now, in request order, so the requests in flight share a flush; only the
    // wait for the disk happens in the future. Each partition is checked again under the
    // offsets' lock: a topic deleted since the check above gets no live offset.
    let written = node.groups.commit(
        &group,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id_or_member_epoch,
        || {
            if commits.is_empty() {
                return Ok((None, Vec::new()));
            }
            let image = node.image();
            node.offsets
                .append_existing_commits(&group, commits, |t, p| {
                    image
                        .topic_by_name(t)
                        .is_some_and(|t| usize::try_from(p).is_ok_and(|p| p < t.partitions.len()))
                })
                .map(|(durable, refused)| (Some(durable), refused))
        },
    );
    let durable = match written {
        Ok(Ok((durable, refused))) => {
            for &i in &refused {
                if let Some((ti, pi)) = accepted.get(i) {
                    response.topics[*ti].partitions[*pi].error_code =
                        BrokerError::UnknownTopicOrPartition.code();
                }
            }
            // The written ones, told if the write is not acknowledged (the ISR shrank, the
            // leadership moved).
            accepted = accepted
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !refused.contains(i))
                .map(|(_, tp)| tp)
                .collect();
            durable
        }
        Ok(Err(e)) | Err(e) => {
            let code = e.code();
            for &(ti, pi) in &accepted {
                response.topics[ti].partitions[pi].error_code = code;
            }
            None
        }
    };
    Box::pin(async move {
        let mut response = response;
        if let Some(Err(e)) = match durable {
            Some(d) => Some(d.acknowledged().await),
            None => None,
        } {
            for (ti, pi) in accepted {
                response.topics[ti].partitions[pi].error_code = e.code();
            }
        }
        encode(correlation_id, version, &response).map(Some)
    })
}
