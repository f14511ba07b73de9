//! Fetch (key 1): reads whole batches from each partition's replica (`replica::Replica::read`): a
//! consumer below the high watermark (from a follower too with v11+, KIP-392), a follower broker
//! (`replica_id` >= 0) up to the log end, its fetch offset counting as its progress. Within
//! `partition_max_bytes` and the response's `max_bytes`, itself capped by the broker's
//! `fetch.max.bytes` (a `max_bytes` of 0 or less means that cap). KIP-74 exactly: only the first
//! partition that returns data may pass either limit, by its first batch (so a consumer is never
//! stuck behind a batch larger than its limits); every later partition gets only whole batches
//! that fit the budget left, and none when its first batch does not. The records of one response
//! are therefore at most `fetch.max.bytes` plus one batch, which a request frame bounds.
//! With fewer than `min_bytes` available it waits up to `max_wait_ms`, woken by appends to the
//! fetched partitions, never by polling. Fetch sessions (KIP-227) are declined: every answer has
//! session id 0, so clients send full fetch requests, which the protocol allows.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};

use super::{encode, Pending};
use crate::clock::now_ms;
use crate::error::BrokerError;
use crate::ids::{BrokerId, Offset};
use crate::node::Node;
use crate::partition::{FetchRead, ReadUpper};
use crate::replica::{Reader, Replica};

struct Target {
    request: FetchPartition,
    /// The replica, or why there is none to read.
    replica: Result<Arc<Replica>, BrokerError>,
    /// A follower in the consumer's rack to read from instead (KIP-392).
    preferred: Option<BrokerId>,
}

pub fn handle(
    node: &Arc<Node>,
    request: FetchRequest,
    correlation_id: i32,
    version: i16,
) -> Pending {
    let node = Arc::clone(node);
    Box::pin(async move {
        let response = fetch(&node, request, version).await;
        encode(correlation_id, version, &response).map(Some)
    })
}

async fn fetch(node: &Node, request: FetchRequest, version: i16) -> FetchResponse {
    if request.session_id != 0 {
        let e = BrokerError::FetchSessionIdNotFound(request.session_id);
        return FetchResponse::default().with_error_code(e.code());
    }
    // A consumer that names its rack (v11+) may be sent to a follower in it.
    let rack = Some(request.rack_id.as_str())
        .filter(|r| request.replica_id.0 < 0 && version >= 11 && !r.is_empty());
    let topics: Vec<(TopicName, Vec<Target>)> = request
        .topics
        .into_iter()
        .map(|t| {
            let targets = t
                .partitions
                .into_iter()
                .map(|p| {
                    let replica = node.replica(&t.topic, p.partition);
                    let preferred = match (&replica, rack) {
                        (Ok(r), Some(rack)) => {
                            preferred_read_replica(node, r, rack, Offset(p.fetch_offset))
                        }
                        _ => None,
                    };
                    Target {
                        replica,
                        request: p,
                        preferred,
                    }
                })
                .collect();
            (t.topic, targets)
        })
        .collect();
    let min_bytes = request.min_bytes.max(0) as usize;
    let cap = node.request_limits.fetch_bytes_max;
    let max_bytes = match usize::try_from(request.max_bytes) {
        Ok(asked) if asked > 0 => asked.min(cap),
        _ => cap,
    };
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let reader = match request.replica_id.0 {
        id if id >= 0 => Reader::Follower {
            id: BrokerId(id),
            now_ms: 0,
        },
        _ => Reader::Consumer {
            from_follower_allowed: version >= 11,
        },
    };
    let watched: Vec<&Arc<Replica>> = topics
        .iter()
        .flat_map(|(_, ts)| ts.iter().filter_map(|t| t.replica.as_ref().ok()))
        .collect();
    let response = loop {
        // Register for wake-ups before reading, so an append between the read and the wait is
        // not missed.
        let mut appended: Vec<_> = watched
            .iter()
            .map(|r| Box::pin(r.partition().appended()))
            .collect();
        for n in appended.iter_mut() {
            n.as_mut().enable();
        }
        let (response, bytes, errors) = read_all(&topics, max_bytes, reader);
        if bytes >= min_bytes
            || errors
            || appended.is_empty()
            || tokio::time::Instant::now() >= deadline
        {
            break response;
        }
        if tokio::time::timeout_at(deadline, select_all(appended))
            .await
            .is_err()
        {
            break read_all(&topics, max_bytes, reader).0;
        }
    };
    if matches!(reader, Reader::Consumer { .. }) {
        count_fetched(&topics, &response);
    } else if let Some(m) = crate::metrics::ReplicationMetrics::get() {
        let bytes = response
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records.as_ref().map_or(0, Bytes::len))
            .sum();
        m.bytes_out(bytes);
    }
    response
}

/// Counts what the answer carries per topic (a long poll's earlier reads were not sent).
fn count_fetched(topics: &[(TopicName, Vec<Target>)], response: &FetchResponse) {
    for ((_, targets), answer) in topics.iter().zip(&response.responses) {
        for (target, data) in targets.iter().zip(&answer.partitions) {
            if let (Ok(r), Some(records)) = (&target.replica, &data.records) {
                if !records.is_empty() {
                    r.partition().metrics().fetched(records);
                }
            }
        }
    }
}

/// The target's replica, or (again) the error that says why there is none.
fn replica_or_error(
    replica: &Result<Arc<Replica>, BrokerError>,
) -> Result<Arc<Replica>, BrokerError> {
    match replica {
        Ok(r) => Ok(Arc::clone(r)),
        Err(BrokerError::NotLeaderOrFollower) => Err(BrokerError::NotLeaderOrFollower),
        Err(_) => Err(BrokerError::UnknownTopicOrPartition),
    }
}

/// The replica a consumer in `rack` should read from instead of this leader: an in-sync
/// follower in its rack that has `offset`, on a broker that is not fenced. `None` when the
/// leader is in that rack itself, or no follower is.
fn preferred_read_replica(
    node: &Node,
    replica: &Replica,
    rack: &str,
    offset: Offset,
) -> Option<BrokerId> {
    if !replica.is_leader() || node.rack.as_deref() == Some(rack) {
        return None;
    }
    let image = node.image();
    replica
        .in_sync_followers_having(offset)
        .into_iter()
        .find(|b| {
            image
                .broker(*b)
                .is_some_and(|reg| !reg.fenced && reg.rack.as_deref() == Some(rack))
        })
}

/// One pass over every requested partition: (response, record bytes, whether any had an error
/// or must be answered at once).
fn read_all(
    topics: &[(TopicName, Vec<Target>)],
    max_bytes: usize,
    reader: Reader,
) -> (FetchResponse, usize, bool) {
    let reader = match reader {
        Reader::Follower { id, .. } => Reader::Follower {
            id,
            now_ms: now_ms(),
        },
        consumer => consumer,
    };
    let mut total = 0usize;
    let mut errors = false;
    let responses = topics
        .iter()
        .map(|(name, targets)| {
            let partitions = targets
                .iter()
                .map(|t| {
                    let data = PartitionData::default().with_partition_index(t.request.partition);
                    if let (Some(preferred), Ok(r)) = (t.preferred, &t.replica) {
                        // Answered at once, without records: read from `preferred`.
                        errors = true;
                        let p = r.partition();
                        return data
                            .with_preferred_read_replica(kafka_protocol::messages::BrokerId(
                                preferred.0,
                            ))
                            .with_high_watermark(p.high_watermark().0)
                            .with_last_stable_offset(p.high_watermark().0)
                            .with_log_start_offset(p.log_start_offset().0)
                            .with_records(Some(Bytes::new()));
                    }
                    let outcome = replica_or_error(&t.replica).and_then(|r| {
                        let budget = max_bytes.saturating_sub(total);
                        let asked = usize::try_from(t.request.partition_max_bytes).unwrap_or(0);
                        // Nothing can fit: read nothing, but still check and report offsets
                        // (and a follower's progress).
                        let limit = if budget.min(asked) == 0 && total > 0 {
                            0
                        } else {
                            budget.min(asked)
                        };
                        let view = r.read(
                            FetchRead {
                                current_leader_epoch: t.request.current_leader_epoch,
                                offset: Offset(t.request.fetch_offset),
                                max_bytes: limit,
                                upper: ReadUpper::HighWatermark,
                            },
                            reader,
                        )?;
                        // A read returns at least one batch; past the first partition with
                        // data, one that does not fit is not sent (KIP-74).
                        let records = view.records.filter(|r| total == 0 || r.len() <= limit);
                        Ok((records, view.high_watermark, view.log_start_offset))
                    });
                    match outcome {
                        Ok((records, hw, start)) => {
                            total += records.as_ref().map_or(0, Bytes::len);
                            data.with_high_watermark(hw.0)
                                .with_last_stable_offset(hw.0)
                                .with_log_start_offset(start.0)
                                .with_records(Some(records.unwrap_or_default()))
                        }
                        Err(e) => {
                            errors = true;
                            let (hw, start) = match (&e, &t.replica) {
                                (
                                    BrokerError::OffsetOutOfRange {
                                        log_start_offset,
                                        log_end_offset,
                                    },
                                    _,
                                ) => (log_end_offset.0, log_start_offset.0),
                                (_, Ok(r)) => (
                                    r.partition().high_watermark().0,
                                    r.partition().log_start_offset().0,
                                ),
                                _ => (-1, -1),
                            };
                            data.with_error_code(e.code())
                                .with_high_watermark(hw)
                                .with_last_stable_offset(hw)
                                .with_log_start_offset(start)
                                .with_records(Some(Bytes::new()))
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(name.clone())
                .with_partitions(partitions)
        })
        .collect();
    (
        FetchResponse::default().with_responses(responses),
        total,
        errors,
    )
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use strata_protocol::record_batch::build_batch;

    use super::*;
    use crate::node::{NewTopic, Node};

    async fn node(dir: &std::path::Path, settings: &[(&str, &str)]) -> Arc<Node> {
        let mut all = vec![("log.segment.bytes", "4194304")];
        all.extend_from_slice(settings);
        Arc::new(crate::node::open_for_test(dir, &all).await)
    }

    /// A topic whose every partition holds `batches` batches of one ~`value_bytes` record each.
    async fn topic_with_big_batches(node: &Node, name: &str, partitions: i32, batches: usize) {
        node.create_topic(&NewTopic {
            name: name.into(),
            partitions,
            replication_factor: 1,
            assignments: vec![],
            configs: vec![],
        })
        .await
        .unwrap();
        let value = vec![b'x'; 900_000];
        for p in 0..partitions {
            let partition = node.partitions.partition(name, p).unwrap();
            for _ in 0..batches {
                partition
                    .append(&build_batch(0, 1_000, &[(None, &value)]), 1_000)
                    .unwrap();
            }
        }
    }

    fn request(
        topic: &str,
        partitions: i32,
        max_bytes: i32,
        partition_max_bytes: i32,
    ) -> FetchRequest {
        let parts = (0..partitions)
            .map(|p| {
                FetchPartition::default()
                    .with_partition(p)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(partition_max_bytes)
            })
            .collect();
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(parts)])
    }

    fn record_bytes(response: &FetchResponse) -> Vec<usize> {
        response.responses[0]
            .partitions
            .iter()
            .map(|p| p.records.as_ref().map_or(0, Bytes::len))
            .collect()
    }

    /// A long poll reads the partition again after each append; only what it finally answers
    /// counts as fetched.
    #[tokio::test]
    async fn a_long_poll_counts_only_the_records_it_answers_with() {
        let registry = crate::metrics::install();
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path(), &[]).await;
        let name = "long-poll-metrics";
        node.create_topic(&NewTopic {
            name: name.into(),
            partitions: 1,
            replication_factor: 1,
            assignments: vec![],
            configs: vec![],
        })
        .await
        .unwrap();
        let partition = node.partitions.partition(name, 0).unwrap();
        let batch = build_batch(0, 1_000, &[(None, &[b'x'; 100][..])]);
        partition.append(&batch, 1_000).unwrap();
        let waiting = request(name, 1, i32::MAX, i32::MAX)
            .with_max_wait_ms(10_000)
            .with_min_bytes(i32::try_from(batch.len() * 3).unwrap());
        let poll = tokio::spawn({
            let node = Arc::clone(&node);
            async move { fetch(&node, waiting, 12).await }
        });
        // Each append wakes the poll, which reads again until it has min_bytes. (One thread:
        // yielding lets the poll run up to its wait.)
        for _ in 0..2 {
            tokio::task::yield_now().await;
            partition.append(&batch, 1_000).unwrap();
        }
        let response = tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record_bytes(&response), vec![batch.len() * 3]);
        let text = registry.render();
        let series = format!("strata_topic_records_out_total{{topic=\"{name}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&series));
        assert_eq!(line, Some(format!("{series}3").as_str()), "{text}");
    }

    #[tokio::test]
    async fn only_the_first_partition_with_data_may_pass_max_bytes_kip_74() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path(), &[]).await;
        topic_with_big_batches(&node, "big", 2, 1).await;
        // librdkafka's fetch-max-bytes case: 1 MB asked, two partitions of ~0.9 MB batches.
        let response = fetch(&node, request("big", 2, 1_000_000, 1_000_000), 12).await;
        let sizes = record_bytes(&response);
        assert!(
            sizes[0] > 900_000,
            "the first partition gets its batch: {sizes:?}"
        );
        assert_eq!(sizes[1], 0, "the second would pass max_bytes: {sizes:?}");
        // A batch larger than partition_max_bytes still comes back from the first partition
        // (so a consumer never gets stuck), but not from a later one.
        let response = fetch(&node, request("big", 2, 1_000_000, 1_000), 12).await;
        let sizes = record_bytes(&response);
        assert!(sizes[0] > 900_000, "{sizes:?}");
        assert_eq!(sizes[1], 0, "{sizes:?}");
        // Room for both: both answer.
        let response = fetch(&node, request("big", 2, 2_000_000, 1_000_000), 12).await;
        assert!(record_bytes(&response).iter().all(|s| *s > 900_000));
    }

    #[tokio::test]
    async fn max_bytes_of_zero_or_less_means_the_brokers_cap_not_unlimited() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path(), &[("fetch.max.bytes", "2000000")]).await;
        topic_with_big_batches(&node, "capped", 1, 4).await;
        for max_bytes in [0, -1, i32::MIN, i32::MAX] {
            let response = fetch(&node, request("capped", 1, max_bytes, i32::MAX), 12).await;
            let sizes = record_bytes(&response);
            assert!(
                sizes[0] > 900_000 && sizes[0] <= 2_000_000,
                "max_bytes {max_bytes}: {sizes:?}"
            );
        }
    }

    #[tokio::test]
    async fn partition_max_bytes_of_zero_or_less_reads_at_most_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path(), &[]).await;
        topic_with_big_batches(&node, "small-asks", 2, 2).await;
        for partition_max_bytes in [0, -1, i32::MIN] {
            let response = fetch(
                &node,
                request("small-asks", 2, i32::MAX, partition_max_bytes),
                12,
            )
            .await;
            let sizes = record_bytes(&response);
            assert!(
                sizes[0] > 900_000 && sizes[0] < 1_800_000 && sizes[1] == 0,
                "partition_max_bytes {partition_max_bytes}: {sizes:?}"
            );
        }
    }
}
