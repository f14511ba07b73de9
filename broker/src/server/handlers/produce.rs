//! Produce (key 0): each partition's record set goes to its replica (`replica::Replica::append`:
//! only a leader takes it; `acks=-1` needs `min.insync.replicas` in the ISR), in request order.
//! `acks=0` gets no answer (an error closes the connection, as in Kafka, so the producer learns
//! of it); `acks=1` is answered after the leader's append; `acks=-1` when the replica's
//! acknowledgement completes (every ISR member has the records, on disk under the default flush
//! policy), or `REQUEST_TIMED_OUT` past `timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{encode, ready, str_bytes, Pending};
use crate::error::BrokerError;
use crate::group::offsets;
use crate::node::Node;
use crate::replica::Ack;

struct AckWait {
    topic: usize,
    partition: usize,
    ack: Ack,
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
        let replicas = node.replicas.topic(&t.name);
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
                let replica = usize::try_from(pd.index)
                    .ok()
                    .and_then(|i| replicas.as_ref()?.get(i).cloned().flatten())
                    .ok_or(BrokerError::UnknownTopicOrPartition)?;
                let records = pd
                    .records
                    .as_ref()
                    .ok_or_else(|| BrokerError::InvalidRecord("null record set".into()))?;
                let (appended, ack) = replica.append(records, acks, now)?;
                let count = appended.last_offset.0 - appended.base_offset.0 + 1;
                replica.partition().metrics().produced(records.len(), count);
                Ok((ack, appended))
            })();
            let result = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_log_append_time_ms(-1);
            results.push(match outcome {
                Ok((ack, appended)) => {
                    if !ack.is_immediate() {
                        waits.push(AckWait { topic: ti, partition: pi, ack });
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
            let outcome = match tokio::time::timeout_at(deadline, w.ack.wait()).await {
                Ok(answer) => answer,
                Err(_) => Err(BrokerError::RequestTimedOut),
            };
            if let Err(e) = outcome {
                let p = &mut response.responses[w.topic].partition_responses[w.partition];
                p.error_code = e.code();
                p.error_message = Some(str_bytes(e.message()));
            }
        }
        encode(correlation_id, version, &response).map(Some)
    })
}
