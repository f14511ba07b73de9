//! The sender task of one partition: takes ready batches from the partition's queue, encodes
//! each once (stamped with the producer id, epoch and base sequence when idempotent), and keeps
//! up to `max_in_flight` produce requests of the partition on the wire.
//!
//! Invariants:
//! - requests of a partition are queued on the connection in sequence order (this task awaits
//!   each [`Connection::pipeline`] in turn) and their answers are handled in that order;
//! - `unacked` holds every batch sent and not answered, oldest (lowest sequence) first;
//! - when a batch fails with a retriable error the task stops sending, waits for every answer
//!   still due ("draining"), then re-sends the batches that were not written, in order, with
//!   their SAME sequence numbers; new batches go only after them. An answer that says "written"
//!   (or DUPLICATE_SEQUENCE_NUMBER) answers the batch at once;
//! - sequences restart at 0 under a new identity only while nothing of the partition is in
//!   flight (after an epoch bump, or once the partition is idle when another partition bumped);
//! - without idempotence the same machinery runs with `max_in_flight` 1 by default (so retries
//!   never reorder); with more, a retry may land after a later batch (as in Kafka's producer).
//! - every batch is answered exactly once (`answer`): delivered, failed, or failed because the
//!   producer hit a fatal error (fenced / stale epoch).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType, NO_PARTITION_LEADER_EPOCH,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};
use tokio::sync::Notify;

use super::accumulator::Readiness;
use super::idempotence::{classify, next_sequence, Identity, Verdict};
use super::{answer, Acks, ProducerBatch, Shared};
use crate::error::{ClientError, Result};

type Answer = Result<(i64, i64)>;
type InFlight = Pin<Box<dyn Future<Output = (u64, Answer)> + Send>>;

/// A batch sent at least once and not answered yet.
struct Slot {
    /// Matches the key its in-flight future yields.
    key: u64,
    batch: ProducerBatch,
    request: ProduceRequest,
    records: i32,
    /// The identity and base sequence it is stamped with (idempotent producers).
    stamp: Option<(Identity, i32)>,
    /// Sends so far.
    attempts: u32,
    in_flight: bool,
    last_error: Option<ClientError>,
}

struct PartitionSender {
    shared: Arc<Shared>,
    topic_index: usize,
    topic: Arc<str>,
    partition: i32,
    unacked: VecDeque<Slot>,
    in_flight: FuturesOrdered<InFlight>,
    next_key: u64,
    /// A batch failed: no sends until every answer due has arrived.
    draining: bool,
    bump_due: bool,
    refresh_due: bool,
    /// The identity this partition's sequences belong to, and the next sequence.
    identity: Option<Identity>,
    next_sequence: i32,
}

/// Runs until the producer closes and the partition has nothing queued or unanswered.
pub(super) async fn partition_sender(
    shared: Arc<Shared>,
    topic_index: usize,
    topic: Arc<str>,
    partition: i32,
    notify: Arc<Notify>,
) {
    let mut s = PartitionSender {
        shared,
        topic_index,
        topic,
        partition,
        unacked: VecDeque::new(),
        in_flight: FuturesOrdered::new(),
        next_key: 0,
        draining: false,
        bump_due: false,
        refresh_due: false,
        identity: None,
        next_sequence: 0,
    };
    loop {
        if s.draining && s.in_flight.is_empty() {
            s.recover().await;
            continue;
        }
        let wait = match s.fill().await {
            Some(wait) => wait,
            None => return,
        };
        // The oldest batch's linger deadline, if the task waits for it.
        let (lingering, due) = match wait {
            Readiness::WaitUntil(due) => (true, due),
            _ => (false, Instant::now()),
        };
        tokio::select! {
            Some((key, result)) = s.in_flight.next(), if !s.in_flight.is_empty() => {
                s.handle(key, result);
            }
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(due.into()), if lingering => {}
        }
    }
}

impl PartitionSender {
    /// Sends what may be sent: batches waiting to be re-sent first, then ready batches, up to
    /// `max_in_flight`. Returns what the queue waits for, or `None` when the task should end.
    async fn fill(&mut self) -> Option<Readiness> {
        let max_in_flight = self.shared.max_in_flight;
        loop {
            if self.draining || self.in_flight.len() >= max_in_flight {
                return Some(Readiness::Empty);
            }
            if let Some(i) = self.unacked.iter().position(|s| !s.in_flight) {
                self.send_slot(i).await;
                continue;
            }
            let taken = {
                let mut st = self.shared.lock();
                let force = self.shared.forcing.load(Ordering::Acquire) > 0;
                let policy = self.shared.policy;
                let ps = &mut st.topics[self.topic_index].partitions[self.partition as usize];
                let now = Instant::now();
                match ps.queue.readiness(&policy, now, force) {
                    Readiness::Ready => ps.queue.take_ready(&policy, now, force),
                    Readiness::Empty
                        if self.shared.closing.load(Ordering::Acquire)
                            && self.unacked.is_empty() =>
                    {
                        ps.sender = None;
                        return None;
                    }
                    other => return Some(other),
                }
            };
            let Some(batch) = taken else {
                return Some(Readiness::Empty);
            };
            self.start(batch).await;
        }
    }

    /// Stamps and encodes a new batch and sends it (or answers it at once if it cannot be).
    async fn start(&mut self, mut batch: ProducerBatch) {
        let shared = Arc::clone(&self.shared);
        if let Some(e) = shared.fatal.get() {
            answer(&shared, batch, Err(e.clone()));
            return;
        }
        let stamp = if shared.idempotent {
            match self.current_identity().await {
                Ok(id) => Some((id, self.next_sequence)),
                Err(e) => {
                    answer(&shared, batch, Err(e));
                    return;
                }
            }
        } else {
            None
        };
        let records = i32::try_from(batch.items.len()).unwrap_or(i32::MAX);
        let request = match encode(&shared, &self.topic, self.partition, &mut batch, stamp) {
            Ok(r) => r,
            Err(e) => {
                answer(&shared, batch, Err(e));
                return;
            }
        };
        if let Some((_, seq)) = stamp {
            self.next_sequence = next_sequence(seq, records);
        }
        let key = self.next_key;
        self.next_key += 1;
        self.unacked.push_back(Slot {
            key,
            batch,
            request,
            records,
            stamp,
            attempts: 0,
            in_flight: false,
            last_error: None,
        });
        self.send_slot(self.unacked.len() - 1).await;
    }

    /// The identity for a new batch. A partition with nothing unanswered adopts the producer's
    /// current identity (restarting its sequences at 0 when it changed); otherwise it keeps
    /// the one its unanswered batches carry, so its sequences stay contiguous.
    async fn current_identity(&mut self) -> Result<Identity> {
        let shared = &self.shared;
        if let Some(id) = self.identity {
            if !self.unacked.is_empty()
                || shared.identity_generation.load(Ordering::Acquire) == id.generation
            {
                return Ok(id);
            }
        }
        let id = shared.identity(None).await?;
        if self
            .identity
            .is_none_or(|old| old.generation != id.generation)
        {
            self.identity = Some(id);
            self.next_sequence = 0;
        }
        Ok(id)
    }

    /// Sends `unacked[i]`: its request is queued on the leader's connection before this
    /// returns, so sends keep their order.
    async fn send_slot(&mut self, i: usize) {
        let shared = Arc::clone(&self.shared);
        let slot = &mut self.unacked[i];
        slot.in_flight = true;
        slot.attempts += 1;
        let key = slot.key;
        let dispatched = tokio::time::timeout(
            shared.config.request_timeout,
            dispatch(&shared, &self.topic, self.partition, &slot.request),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::Timeout {
                api: "Produce",
                timeout_ms: shared.config.request_timeout.as_millis() as u64,
            })
        });
        match dispatched {
            Ok(response) => self
                .in_flight
                .push_back(Box::pin(async move { (key, response.await) })),
            Err(e) => {
                // Not queued: nothing after it may go before it is.
                self.in_flight
                    .push_back(Box::pin(async move { (key, Err(e)) }));
                self.draining = true;
            }
        }
    }

    /// Handles the answer to the slot `key` (answers arrive in send order).
    fn handle(&mut self, key: u64, result: Answer) {
        let Some(i) = self.unacked.iter().position(|s| s.key == key) else {
            return;
        };
        let error = match result {
            Ok(offsets) => {
                self.finish(i, Ok(offsets));
                return;
            }
            Err(e) => e,
        };
        let shared = Arc::clone(&self.shared);
        let oldest = i == 0;
        let verdict = match (&self.unacked[i].stamp, shared.fatal.get()) {
            (_, Some(_)) => Verdict::Fatal,
            (Some(_), None) => classify(&error, oldest, self.bump_due),
            (None, None) if error.is_retriable() => Verdict::Retry,
            (None, None) => Verdict::Fail,
        };
        tracing::debug!(topic = %self.topic, partition = self.partition, %error, ?verdict,
            "produce failed");
        match verdict {
            Verdict::Delivered => self.finish(i, Ok((-1, -1))),
            Verdict::Retry | Verdict::RetryAfterBump => {
                self.refresh_due |= error.needs_metadata_refresh();
                self.bump_due |= verdict == Verdict::RetryAfterBump;
                let slot = &mut self.unacked[i];
                slot.in_flight = false;
                slot.last_error = Some(error);
                self.draining = true;
            }
            Verdict::FailAndBump => {
                self.finish(i, Err(error));
                self.bump_due = true;
                self.draining = true;
            }
            Verdict::Fatal => {
                let fatal = shared.fatal.get_or_init(|| error.clone()).clone();
                self.finish(i, Err(fatal));
                self.draining = true;
            }
            Verdict::Fail => {
                // A sequenced batch that failed leaves a gap the broker would refuse the next
                // batches for: restart the sequences under a new epoch.
                let sequenced = self.unacked[i].stamp.is_some();
                self.finish(i, Err(error));
                if sequenced {
                    self.bump_due = true;
                    self.draining = true;
                }
            }
        }
    }

    /// Removes `unacked[i]` and answers its records.
    fn finish(&mut self, i: usize, result: Answer) {
        if let Some(slot) = self.unacked.remove(i) {
            answer(&self.shared, slot.batch, result);
        }
    }

    /// Runs once every answer due has arrived after a failure: fails what cannot be retried
    /// (fatal error, retries or delivery timeout exhausted), refreshes metadata, bumps the
    /// epoch and re-stamps the batches when due, and waits `retry_backoff_ms`.
    async fn recover(&mut self) {
        let shared = Arc::clone(&self.shared);
        let config = &shared.config;
        self.draining = false;
        if let Some(fatal) = shared.fatal.get() {
            while let Some(slot) = self.unacked.pop_front() {
                answer(&shared, slot.batch, Err(fatal.clone()));
            }
            return;
        }
        let backoff = Duration::from_millis(config.retry_backoff_ms);
        let now = Instant::now();
        let mut kept = VecDeque::with_capacity(self.unacked.len());
        while let Some(slot) = self.unacked.pop_front() {
            let expired = slot.attempts > config.retries
                || now + backoff >= slot.batch.created + config.delivery_timeout;
            if expired {
                self.bump_due |= slot.stamp.is_some();
                let error = slot
                    .last_error
                    .clone()
                    .unwrap_or_else(|| ClientError::Invalid("retries exhausted".to_string()));
                answer(&shared, slot.batch, Err(error));
            } else {
                kept.push_back(slot);
            }
        }
        self.unacked = kept;
        if self.refresh_due {
            self.refresh_due = false;
            let _ = shared.cluster.refresh(&[self.topic.to_string()]).await;
        }
        if self.bump_due && shared.idempotent {
            self.bump_due = false;
            match shared.identity(self.identity).await {
                Ok(id) => self.restamp(id),
                Err(e) => {
                    // Without a new epoch the sequences cannot restart: delivery of the rest
                    // cannot be guaranteed.
                    while let Some(slot) = self.unacked.pop_front() {
                        answer(&shared, slot.batch, Err(e.clone()));
                    }
                    self.identity = None;
                    return;
                }
            }
        }
        if !self.unacked.is_empty() {
            tokio::time::sleep(backoff).await;
        }
    }

    /// Restarts this partition's sequences at 0 under `id`, re-stamping every unanswered batch
    /// (nothing is in flight), oldest first.
    fn restamp(&mut self, id: Identity) {
        let mut seq = 0;
        for slot in &mut self.unacked {
            let data = &mut slot.request.topic_data[0].partition_data[0];
            if let Some(records) = data.records.take() {
                let mut bytes = BytesMut::from(&records[..]);
                strata_protocol::record_batch::stamp_producer(
                    &mut bytes,
                    id.producer_id,
                    id.epoch,
                    seq,
                );
                data.records = Some(bytes.freeze());
            }
            slot.stamp = Some((id, seq));
            seq = next_sequence(seq, slot.records);
        }
        self.identity = Some(id);
        self.next_sequence = seq;
    }
}

/// Encodes a batch's records (moving them out; their memory stays accounted in
/// `batch.bytes`) into a produce request, stamped with `stamp` when idempotent.
fn encode(
    shared: &Shared,
    topic: &str,
    partition: i32,
    batch: &mut ProducerBatch,
    stamp: Option<(Identity, i32)>,
) -> Result<ProduceRequest> {
    let config = &shared.config;
    let (producer_id, producer_epoch, base_sequence) = match stamp {
        Some((id, seq)) => (id.producer_id, id.epoch, seq),
        // kafka-protocol keeps records in one v2 batch only while `offset - sequence` is
        // constant, and writes the first record's sequence as the base sequence: -1, 0, 1..
        // gives one batch with base sequence -1 (NO_SEQUENCE), not one batch per record.
        None => (NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE),
    };
    let records: Vec<Record> = std::mem::take(&mut batch.items)
        .into_iter()
        .enumerate()
        .map(|(i, p)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Wrapping keeps `offset - sequence` constant (one batch); only the base sequence
            // is written, and the broker derives the others modulo 2^31 as Kafka does.
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp: p.timestamp,
            key: p.key,
            value: p.value,
            headers: p
                .headers
                .into_iter()
                .map(|(k, v)| (StrBytes::from_string(k), Some(v)))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::with_capacity(batch.bytes + 128);
    let options = RecordEncodeOptions {
        version: 2,
        compression: config.compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(|e| {
        ClientError::Invalid(format!(
            "cannot encode a batch for {topic}/{partition}: {e:#}"
        ))
    })?;
    drop(records);
    Ok(produce_request(shared, topic, partition, buf.freeze()))
}

fn produce_request(shared: &Shared, topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    let config = &shared.config;
    ProduceRequest::default()
        .with_acks(config.acks.code())
        .with_timeout_ms(config.request_timeout.as_millis().min(i32::MAX as u128) as i32)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// Queues `request` on the partition leader's connection; the future gives (base offset, log
/// append time) or the error. With `acks=0` it is answered (-1) once queued.
async fn dispatch(
    shared: &Shared,
    topic: &Arc<str>,
    partition: i32,
    request: &ProduceRequest,
) -> Result<Pin<Box<dyn Future<Output = Answer> + Send>>> {
    let conn = shared.cluster.leader(topic, partition).await?;
    if shared.config.acks == Acks::None {
        conn.send_no_response(request).await?;
        shared
            .lock()
            .unconfirmed_brokers
            .insert(conn.addr().to_string());
        return Ok(Box::pin(async { Ok((-1, -1)) }));
    }
    let response = conn.pipeline(request).await?;
    let topic = Arc::clone(topic);
    let timeout = shared.config.request_timeout;
    Ok(Box::pin(async move {
        // The producer's request timeout, which may be shorter than the connection's: a
        // request that times out closes its connection (the stream may be out of step), so
        // the retry reconnects.
        let response = match tokio::time::timeout(timeout, response).await {
            Ok(r) => r?,
            Err(_) => {
                conn.close("produce request timed out");
                return Err(ClientError::Timeout {
                    api: "Produce",
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
        };
        let answer = response
            .responses
            .iter()
            .filter(|t| *t.name.0 == *topic)
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| ClientError::Malformed {
                api: "Produce",
                reason: format!("no answer for {topic}/{partition}"),
            })?;
        let context = match &answer.error_message {
            Some(m) => format!("produce to {topic}/{partition}: {}", &**m),
            None => format!("produce to {topic}/{partition}"),
        };
        if let Some(e) = ClientError::from_code(answer.error_code, context) {
            return Err(e);
        }
        Ok((answer.base_offset, answer.log_append_time_ms))
    }))
}
