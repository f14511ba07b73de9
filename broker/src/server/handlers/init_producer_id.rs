//! InitProducerId (key 22), v0-4: a producer id and epoch for an idempotent producer.
//!
//! - No `transactional_id`: a new id from [`ProducerIds`](crate::producer_ids) with epoch 0.
//! - v3+ (KIP-360) with the producer's current id and epoch: the same id with the epoch bumped,
//!   so the producer can reset its sequences to 0 without losing its identity and batches of the
//!   old epoch still in flight are fenced (INVALID_PRODUCER_EPOCH). When the epoch would overflow,
//!   or the id is not one this broker handed out, a new id with epoch 0. (Kafka's coordinator hands
//!   a non-transactional producer a new id every time; both answers are valid for every client.)
//! - Id and epoch must both be -1 or both be set: otherwise INVALID_REQUEST, as Kafka answers.
//! - A `transactional_id`: transactions are not supported, so INVALID_REQUEST. This response has
//!   no message field, so the reason goes to the broker log. INVALID_REQUEST is what Kafka answers
//!   a request it cannot serve as asked; clients treat it as fatal and do not retry (retriable
//!   codes such as COORDINATOR_NOT_AVAILABLE would make them spin, and an authorization failure
//!   would send their users looking for missing ACLs).

use std::sync::Arc;

use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};

use crate::error::BrokerError;
use crate::node::Node;
use crate::producer_ids::ProducerIds;

/// The epoch above which a bump gives a new id instead (Kafka's `Short.MAX_VALUE - 1`).
const EPOCH_BUMP_MAX: i16 = i16::MAX - 1;

pub async fn handle(node: &Arc<Node>, r: &InitProducerIdRequest) -> InitProducerIdResponse {
    let outcome = init(node, r).await;
    let response = InitProducerIdResponse::default().with_throttle_time_ms(0);
    match outcome {
        Ok((id, epoch)) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(e) => {
            tracing::info!(error = %e, "InitProducerId refused");
            response
                .with_error_code(e.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}

async fn init(node: &Node, r: &InitProducerIdRequest) -> Result<(i64, i16), BrokerError> {
    if let Some(tid) = &r.transactional_id {
        return Err(BrokerError::InvalidRequest(format!(
            "transactional id '{}': transactions are not supported by this broker",
            tid.as_str()
        )));
    }
    let (id, epoch) = (r.producer_id.0, r.producer_epoch);
    if (id == -1) != (epoch == -1) {
        return Err(BrokerError::InvalidRequest(format!(
            "producer id {id} and epoch {epoch}: both or neither must be given"
        )));
    }
    if id >= 0
        && (0..EPOCH_BUMP_MAX).contains(&epoch)
        && ProducerIds::is_allocated(&node.image(), id)
    {
        return Ok((id, epoch + 1));
    }
    Ok((node.producer_ids.allocate(&node.controller).await?, 0))
}
