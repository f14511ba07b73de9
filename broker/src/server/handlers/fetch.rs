//! Fetch (key 1): reads whole batches from each partition up to its high watermark, within
//! `partition_max_bytes` and the response's `max_bytes` (the first batch always, per KIP-74).
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
use crate::error::BrokerError;
use crate::ids::Offset;
use crate::node::Node;
use crate::partition::Partition;

struct Target {
    request: FetchPartition,
    partition: Option<Arc<Partition>>,
}

pub fn handle(
    node: &Arc<Node>,
    request: FetchRequest,
    correlation_id: i32,
    version: i16,
) -> Pending {
    let node = Arc::clone(node);
    Box::pin(async move {
        let response = fetch(&node, request).await;
        encode(correlation_id, version, &response).map(Some)
    })
}

async fn fetch(node: &Node, request: FetchRequest) -> FetchResponse {
    if request.session_id != 0 {
        let e = BrokerError::FetchSessionIdNotFound(request.session_id);
        return FetchResponse::default().with_error_code(e.code());
    }
    let topics: Vec<(TopicName, Vec<Target>)> = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = node.partitions.topic(&t.topic);
            let targets = t
                .partitions
                .into_iter()
                .map(|p| {
                    let partition = usize::try_from(p.partition)
                        .ok()
                        .and_then(|i| partitions.as_ref()?.get(i).cloned());
                    Target {
                        request: p,
                        partition,
                    }
                })
                .collect();
            (t.topic, targets)
        })
        .collect();
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes > 0 {
        request.max_bytes as usize
    } else {
        usize::MAX
    };
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let watched: Vec<&Arc<Partition>> = topics
        .iter()
        .flat_map(|(_, ts)| ts.iter().filter_map(|t| t.partition.as_ref()))
        .collect();
    loop {
        // Register for wake-ups before reading, so an append between the read and the wait is
        // not missed.
        let mut appended: Vec<_> = watched.iter().map(|p| Box::pin(p.appended())).collect();
        for n in appended.iter_mut() {
            n.as_mut().enable();
        }
        let (response, bytes, errors) = read_all(&topics, max_bytes);
        if bytes >= min_bytes
            || errors
            || appended.is_empty()
            || tokio::time::Instant::now() >= deadline
        {
            return response;
        }
        if tokio::time::timeout_at(deadline, select_all(appended))
            .await
            .is_err()
        {
            return read_all(&topics, max_bytes).0;
        }
    }
}

/// One pass over every requested partition: (response, record bytes, whether any had an error).
fn read_all(topics: &[(TopicName, Vec<Target>)], max_bytes: usize) -> (FetchResponse, usize, bool) {
    let mut total = 0usize;
    let mut errors = false;
    let responses = topics
        .iter()
        .map(|(name, targets)| {
            let partitions = targets
                .iter()
                .map(|t| {
                    let data = PartitionData::default().with_partition_index(t.request.partition);
                    let outcome = t
                        .partition
                        .as_ref()
                        .ok_or(BrokerError::UnknownTopicOrPartition)
                        .and_then(|p| {
                            p.check_leader_epoch(t.request.current_leader_epoch)?;
                            let budget = max_bytes.saturating_sub(total);
                            if budget == 0 && total > 0 {
                                // The response is full: report the partition's offsets, no records.
                                return Ok((None, p.high_watermark(), p.log_start_offset()));
                            }
                            let limit = budget.min(t.request.partition_max_bytes.max(1) as usize);
                            let view = p.read(Offset(t.request.fetch_offset), limit)?;
                            Ok((view.records, view.high_watermark, view.log_start_offset))
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
                            let (hw, start) = match (&e, &t.partition) {
                                (
                                    BrokerError::OffsetOutOfRange {
                                        log_start_offset,
                                        log_end_offset,
                                    },
                                    _,
                                ) => (log_end_offset.0, log_start_offset.0),
                                (_, Some(p)) => (p.high_watermark().0, p.log_start_offset().0),
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
