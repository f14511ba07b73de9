//! The idempotent producer's identity and sequence numbers (KIP-98, KIP-360).
//!
//! Invariants:
//! - a producer id and epoch come from InitProducerId (no transactional id: any broker answers)
//!   before the first batch is stamped; every batch of one partition under one identity carries
//!   base sequences 0, n0, n0+n1, ... (the records before it, wrapping from `i32::MAX` to 0 as
//!   Kafka's `incrementSequence` does), assigned when the batch is first sent and kept on retries;
//! - the identity changes only by a bump (`bump`, InitProducerId v3+ with the current id and
//!   epoch; a broker without v3 gives a new id) and each change has a new `generation`, so a
//!   partition that saw an old identity knows to restart its sequences at 0 (once nothing of it
//!   is in flight) and two partitions asking for a bump of the same identity cause one bump;
//! - `classify` is the one place that decides what a produce error means for a sequenced batch.

use std::time::{Duration, Instant};

use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};
use kafka_protocol::ResponseError;

use crate::cluster::Cluster;
use crate::error::{ClientError, Result};

/// The producer id and epoch batches are stamped with; `generation` counts changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub producer_id: i64,
    pub epoch: i16,
    pub generation: u64,
}

pub use strata_protocol::record_batch::next_sequence;

/// What a produce answer means for a sequenced batch (the rules of the Java producer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Written (or a duplicate of a batch already written: DUPLICATE_SEQUENCE_NUMBER).
    Delivered,
    /// Re-send it, with the same sequence, after the batches before it.
    Retry,
    /// Re-send it after an epoch bump (UNKNOWN_PRODUCER_ID: the broker forgot us; or an
    /// OUT_OF_ORDER_SEQUENCE_NUMBER caused by an earlier batch of this round).
    RetryAfterBump,
    /// It fails with this error; the partition's sequences restart under a bumped epoch
    /// (OUT_OF_ORDER_SEQUENCE_NUMBER on the oldest batch: the broker lost records we were
    /// told were written, delivery cannot be guaranteed).
    FailAndBump,
    /// Another producer took over or the epoch is stale: the producer cannot go on.
    Fatal,
    /// Not retriable: it fails with its error.
    Fail,
}

/// Classifies a produce error for an idempotent batch. `oldest`: no unanswered batch of the
/// partition precedes it (so an out-of-order answer is not caused by one of ours); `bumping`:
/// an epoch bump is already due for this partition.
pub fn classify(error: &ClientError, oldest: bool, bumping: bool) -> Verdict {
    let ClientError::Kafka { error: code, .. } = error else {
        return if error.is_retriable() {
            Verdict::Retry
        } else {
            Verdict::Fail
        };
    };
    match code {
        ResponseError::DuplicateSequenceNumber => Verdict::Delivered,
        ResponseError::UnknownProducerId => Verdict::RetryAfterBump,
        ResponseError::OutOfOrderSequenceNumber if bumping => Verdict::RetryAfterBump,
        ResponseError::OutOfOrderSequenceNumber if oldest => Verdict::FailAndBump,
        ResponseError::OutOfOrderSequenceNumber => Verdict::Retry,
        ResponseError::InvalidProducerEpoch | ResponseError::ProducerFenced => Verdict::Fatal,
        _ if error.is_retriable() => Verdict::Retry,
        _ => Verdict::Fail,
    }
}

/// InitProducerId (v0-4, non-transactional) on any broker: a new identity, or with `current`
/// (v3+) the same id with the next epoch. Retriable errors are retried until `timeout`.
pub async fn init_producer_id(
    cluster: &Cluster,
    current: Option<Identity>,
    backoff: Duration,
    timeout: Duration,
) -> Result<(i64, i16)> {
    let deadline = Instant::now() + timeout;
    loop {
        let error = match init_once(cluster, current).await {
            Ok(id) => return Ok(id),
            Err(e) => e,
        };
        if !error.is_retriable() || Instant::now() + backoff >= deadline {
            return Err(error);
        }
        tracing::debug!(%error, "InitProducerId failed, retrying");
        tokio::time::sleep(backoff).await;
    }
}

async fn init_once(cluster: &Cluster, current: Option<Identity>) -> Result<(i64, i16)> {
    let conn = cluster.any_connection().await?;
    let mut request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let v3 = conn
        .version_for(
            kafka_protocol::messages::ApiKey::InitProducerId,
            <InitProducerIdRequest as kafka_protocol::protocol::Message>::VERSIONS,
        )
        .is_some_and(|v| v >= 3);
    // Before v3 a bump is not possible: a fresh id does the same for sequences.
    if let (Some(id), true) = (current, v3) {
        request = request
            .with_producer_id(ProducerId(id.producer_id))
            .with_producer_epoch(id.epoch);
    }
    let (response, _) = conn.send(&request).await?;
    if let Some(e) = ClientError::from_code(response.error_code, "InitProducerId") {
        return Err(e);
    }
    if response.producer_id.0 < 0 || response.producer_epoch < 0 {
        return Err(ClientError::Malformed {
            api: "InitProducerId",
            reason: format!(
                "producer id {} epoch {}",
                response.producer_id.0, response.producer_epoch
            ),
        });
    }
    Ok((response.producer_id.0, response.producer_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_advance_by_the_record_count_and_wrap_at_i32_max_to_zero() {
        assert_eq!(next_sequence(0, 1), 1);
        assert_eq!(next_sequence(10, 5), 15);
        assert_eq!(next_sequence(i32::MAX - 5, 5), i32::MAX);
        // The record after i32::MAX has sequence 0.
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(next_sequence(i32::MAX, i32::MAX), i32::MAX - 1);
    }

    fn kafka(e: ResponseError) -> ClientError {
        ClientError::from_code(e.code(), "test").unwrap()
    }

    #[test]
    fn produce_errors_are_classified_like_the_java_producer() {
        use ResponseError::*;
        assert_eq!(
            classify(&kafka(DuplicateSequenceNumber), true, false),
            Verdict::Delivered
        );
        assert_eq!(
            classify(&kafka(NotLeaderOrFollower), true, false),
            Verdict::Retry
        );
        // Out of order behind a batch of ours that failed: retry with the same sequence.
        assert_eq!(
            classify(&kafka(OutOfOrderSequenceNumber), false, false),
            Verdict::Retry
        );
        assert_eq!(
            classify(&kafka(OutOfOrderSequenceNumber), true, false),
            Verdict::FailAndBump
        );
        assert_eq!(
            classify(&kafka(OutOfOrderSequenceNumber), true, true),
            Verdict::RetryAfterBump
        );
        assert_eq!(
            classify(&kafka(UnknownProducerId), true, false),
            Verdict::RetryAfterBump
        );
        assert_eq!(
            classify(&kafka(ProducerFenced), true, false),
            Verdict::Fatal
        );
        assert_eq!(
            classify(&kafka(InvalidProducerEpoch), false, false),
            Verdict::Fatal
        );
        assert_eq!(
            classify(&kafka(MessageTooLarge), true, false),
            Verdict::Fail
        );
        let lost = ClientError::ConnectionLost {
            addr: "a".into(),
            reason: "b".into(),
        };
        assert_eq!(classify(&lost, true, false), Verdict::Retry);
    }
}
