//! Produce (key 0): validates each partition's record set and appends it, in request order.
//! `acks=0` gets no answer (an error closes the connection, as in Kafka, so the producer learns
//! of it); `acks=1` is answered after the append; `acks=-1` after the group-commit flush covers
//! the records (when `log.flush.acks.all.enable`), or `REQUEST_TIMED_OUT` past `timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{encode, ready, str_bytes, Pending};
use crate::error::BrokerError;
use crate::group::offsets;
use crate::ids::Offset;
use crate::node::Node;
use crate::partition::Partition;

struct DurableWait {
    topic: usize,
    partition: usize,
    target: Arc<Partition>,
    end: Offset,
}

use crate::clock::now_ms;

pub fn handle(
    node: &Arc<Node>,
    request: ProduceRequest,
    correlation_id: i32,
    version: i16,
) -> Pending {
    let acks = request.acks;
    let now = now_ms();
    let mut waits = Vec::new();
    let mut failed = None;
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for (ti, t) in request.topic_data.into_iter().enumerate() {
        let partitions = node.partitions.topic(&t.name);
        let mut results = Vec::with_capacity(t.partition_data.len());
        for (pi, pd) in t.partition_data.into_iter().enumerate() {
            let outcome = (|| {
                if !matches!(acks, -1..=1) {
                    return Err(BrokerError::InvalidRequiredAcks(acks));
                }
                if request.transactional_id.is_some() {
                    return Err(BrokerError::UnsupportedForMessageFormat(
                        "transactions are not supported yet".into(),
                    ));
                }
                if &*t.name == offsets::TOPIC {
                    return Err(BrokerError::InvalidTopic(format!(
                        "Cannot append to internal topic {}",
                        offsets::TOPIC
                    )));
                }
                let partition = usize::try_from(pd.index)
                    .ok()
                    .and_then(|i| partitions.as_ref()?.get(i).cloned())
                    .ok_or(BrokerError::UnknownTopicOrPartition)?;
                let records = pd
                    .records
                    .as_ref()
                    .ok_or_else(|| BrokerError::InvalidRecord("null record set".into()))?;
                let appended = partition.append(records, now)?;
                let count = appended.last_offset.0 - appended.base_offset.0 + 1;
                partition.metrics().produced(records.len(), count);
                Ok((partition, appended))
            })();
            let result = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_log_append_time_ms(-1);
            results.push(match outcome {
                Ok((partition, appended)) => {
                    if acks == -1 && appended.flush_before_ack {
                        partition.request_flush();
                        waits.push(DurableWait { topic: ti, partition: pi, target: partition, end: Offset(appended.last_offset.0 + 1) });
                    }
                    result.with_base_offset(appended.base_offset.0).with_log_start_offset(appended.log_start_offset.0)
                }
                Err(e) => {
                    if !matches!(e, BrokerError::UnknownTopicOrPartition) {
                        tracing::debug!(topic = %&*t.name, partition = pd.index, error = %e, "produce refused");
                    }
                    let message = e.message();
                    failed.get_or_insert(message.clone());
                    result.with_error_code(e.code()).with_base_offset(-1).with_log_start_offset(-1).with_error_message(Some(str_bytes(message)))
                }
            });
        }
        topics.push(
            TopicProduceResponse::default()
                .with_name(t.name)
                .with_partition_responses(results),
        );
    }
    let mut response = ProduceResponse::default().with_responses(topics);
    if acks == 0 {
        let outcome = match failed {
            Some(reason) => Err(format!(
                "acks=0 produce failed ({reason}); closing the connection as Kafka does"
            )),
            None => Ok(None),
        };
        return Box::pin(std::future::ready(outcome));
    }
    if waits.is_empty() {
        return ready(correlation_id, version, &response);
    }
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    Box::pin(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        for w in waits {
            if tokio::time::timeout_at(deadline, w.target.wait_durable(w.end))
                .await
                .is_err()
            {
                let e = BrokerError::RequestTimedOut;
                let p = &mut response.responses[w.topic].partition_responses[w.partition];
                p.error_code = e.code();
                p.error_message = Some(str_bytes(e.message()));
            }
        }
        encode(correlation_id, version, &response).map(Some)
    })
}
