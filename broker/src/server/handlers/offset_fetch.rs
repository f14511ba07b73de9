//! OffsetFetch (key 9): v1-7 ask for one group, v8 for a batch of groups. `topics` null (v2+)
//! means every partition the group has committed. A partition without a commit gets offset -1
//! and empty metadata, as in Kafka. `require_stable` (v7+) waits for pending transactional
//! offsets; there are no transactions, so committed values are always stable. A group whose
//! `__consumer_offsets` partition this broker does not lead gets NOT_COORDINATOR
//! (COORDINATOR_LOAD_IN_PROGRESS while it loads it): per group in v8, for the request in v2-7,
//! per partition in v1.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::str_bytes;
use crate::group::offsets::CommittedOffset;
use crate::node::Node;

/// One partition's answer: (partition, committed offset if any).
type Answer = (i32, Option<CommittedOffset>);

/// The answers for one group: per topic, per partition, in request order (or sorted for "all").
fn lookup(
    node: &Node,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<Answer>)> {
    match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(t, ps)| {
                let answers = ps
                    .into_iter()
                    .map(|p| (p, node.offsets.fetch(group, &t, p)))
                    .collect();
                (t, answers)
            })
            .collect(),
        None => {
            let mut out: Vec<(String, Vec<Answer>)> = Vec::new();
            for (t, p, c) in node.offsets.group_offsets(group) {
                match out.last_mut() {
                    Some((last, answers)) if *last == t => answers.push((p, Some(c))),
                    _ => out.push((t, vec![(p, Some(c))])),
                }
            }
            out
        }
    }
}

fn parts(c: &Option<CommittedOffset>) -> (i64, i32, String) {
    match c {
        Some(c) => (c.offset, c.leader_epoch, c.metadata.clone()),
        None => (-1, -1, String::new()),
    }
}

pub fn handle(node: &Node, request: &OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|g| {
                if let Err(e) = node.offsets.coordinates(&g.group_id) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(e.code());
                }
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let topics = lookup(node, &g.group_id, wanted)
                    .into_iter()
                    .map(|(t, answers)| {
                        let partitions = answers
                            .iter()
                            .map(|(p, c)| {
                                let (offset, epoch, metadata) = parts(c);
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(str_bytes(metadata)))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(str_bytes(t)))
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = request.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect::<Vec<_>>()
    });
    if let Err(e) = node.offsets.coordinates(&request.group_id) {
        if version >= 2 {
            return OffsetFetchResponse::default().with_error_code(e.code());
        }
        let topics = wanted
            .unwrap_or_default()
            .into_iter()
            .map(|(t, ps)| {
                let partitions = ps
                    .into_iter()
                    .map(|p| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(-1)
                            .with_error_code(e.code())
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str_bytes(t)))
                    .with_partitions(partitions)
            })
            .collect();
        return OffsetFetchResponse::default().with_topics(topics);
    }
    let topics = lookup(node, &request.group_id, wanted)
        .into_iter()
        .map(|(t, answers)| {
            let partitions = answers
                .iter()
                .map(|(p, c)| {
                    let (offset, epoch, metadata) = parts(c);
                    let r = OffsetFetchResponsePartition::default()
                        .with_partition_index(*p)
                        .with_committed_offset(offset)
                        .with_metadata(Some(str_bytes(metadata)));
                    // The leader epoch exists from v5 on.
                    if version >= 5 {
                        r.with_committed_leader_epoch(epoch)
                    } else {
                        r
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(t)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
