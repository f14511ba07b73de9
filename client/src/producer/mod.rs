//! The producer: records are placed on a partition ([`partitioner`]), gathered per partition into
//! batches ([`accumulator`]: linger, batch size), and sent by one sender task per partition
//! ([`sender`]), pipelined, with retries. [`Producer::send`] returns a [`DeliveryFuture`] that
//! resolves to the record's offset or to a typed [`ClientError`].
//!
//! Invariants:
//! - **idempotence** (`enable.idempotence`, on by default with `acks=all`): the producer gets a
//!   producer id and epoch (InitProducerId) before its first batch, and every batch carries them
//!   and its partition's base sequence ([`idempotence`]), so the broker writes a re-sent batch
//!   once and refuses gaps; up to `max_in_flight` (default 5) requests per partition are in
//!   flight (pipelining, [`sender`]).
//! - **ordering**: a partition's batches are sent in order, and after a retriable error the
//!   batches not written are re-sent in order, with their sequences, before any later batch
//!   (after refreshing metadata when the error says it is stale, and after `retry_backoff_ms`).
//!   Without idempotence a partition has one request in flight by default, so a retry never
//!   reorders (but a retry after a lost answer may write a batch twice); with more in flight
//!   (`max_in_flight` > 1) a retried batch may land after a later one, as in Kafka.
//! - **bounded memory**: every queued record holds permits of a semaphore of `buffer_memory`
//!   bytes (its estimated size) until it is answered (a batch gives its records' permits back
//!   at once, when it is answered); `send` waits while the buffer is full. A record larger than
//!   `buffer_memory` is refused at once.
//! - **every record is answered** exactly once: with its metadata, or with the error that ended
//!   its batch (not retriable, retries exhausted, or `delivery_timeout` passed since its batch
//!   was opened). Broker responses are never trusted: a missing partition in a response is a
//!   `Malformed` error, never a panic.
//! - `flush` returns once every record sent before it was called has been answered; while it
//!   waits, batches are sent without lingering. With `acks=0` a record is answered (offset -1)
//!   once queued on its connection; `flush` then also waits for a response to a request queued
//!   behind it, so the broker has handled it (or the connection was lost: acks=0 may lose it).
//! - Dropping the producer sends what is queued (as a flush would), then the sender tasks end.
//!
//! Cost per record (the hot path of `send`): topics are interned and their state (partition
//! count for the current metadata, sticky partition, batches per partition) is found by a
//! comparison with the previous record's topic; one lock, one clock read (the CreateTime, when
//! the record has none), no allocation but the batch's (amortized). The records of a batch
//! share one completion (their [`DeliveryFuture`]s read it with their index), flush tracks
//! batches rather than records, and a partition's sender task is woken only when a batch opens
//! or fills.
//!
//! Not supported yet: transactions; duplicate header keys within one record (the encoder keeps
//! the last value). `max_in_flight` is enforced per partition, not per connection.

pub mod accumulator;
pub mod idempotence;
pub mod partitioner;
mod sender;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::MetadataRequest;
use tokio::sync::{Notify, Semaphore};

pub use kafka_protocol::records::Compression;

use self::accumulator::{Batch, PartitionQueue, Policy, Sticky};
use self::idempotence::Identity;
use self::partitioner::{partition_for_key, Random};
use crate::cluster::Cluster;
use crate::cluster::Metadata;
use crate::error::{ClientError, Result};

/// How many acknowledgements the leader waits for before answering (`acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: no answer; records resolve with offset -1 once written to the socket.
    None,
    /// `acks=1`: the leader has appended the records.
    Leader,
    /// `acks=all` (-1): the records are durable (on Strata: flushed).
    All,
}

impl Acks {
    pub fn code(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Producer settings (Kafka names in the field docs).
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `acks`.
    pub acks: Acks,
    /// `linger.ms`: how long a batch waits for more records before it is sent.
    pub linger_ms: u64,
    /// `batch.size`: a batch is sent once its records reach this many (estimated) bytes.
    pub batch_size: usize,
    /// `buffer.memory`: bytes of records queued or in flight before `send` waits.
    pub buffer_memory: usize,
    /// `compression.type`.
    pub compression: Compression,
    /// `request.timeout.ms`: the broker-side produce timeout and the wait for one answer.
    pub request_timeout: Duration,
    /// `retries`: re-sends of a batch after retriable errors.
    pub retries: u32,
    /// `delivery.timeout.ms`: no retry starts later than this after a batch was opened.
    pub delivery_timeout: Duration,
    /// `retry.backoff.ms`.
    pub retry_backoff_ms: u64,
    /// `enable.idempotence`. `None` (the default): on, unless `acks` is not `all` or
    /// `max_in_flight` is above 5 (Kafka's rule when the setting is not explicit); `Some(true)`
    /// with such a setting is a configuration error.
    pub enable_idempotence: Option<bool>,
    /// `max.in.flight.requests.per.connection`, applied per partition: produce requests of one
    /// partition on the wire at once. `None`: 5 when idempotent, else 1 (retries never reorder).
    /// Above 1 without idempotence a retried batch may be written after a later one. At most 5
    /// when idempotent (the broker remembers the last 5 batches of a producer per partition).
    pub max_in_flight: Option<usize>,
}

/// The most requests per partition in flight an idempotent producer may have.
pub const IDEMPOTENT_IN_FLIGHT_MAX: usize = 5;

impl ProducerConfig {
    /// (idempotent, max in flight per partition) as this configuration resolves, or the
    /// configuration error.
    pub fn resolve(&self) -> Result<(bool, usize)> {
        let invalid = |m: &str| Err(ClientError::Invalid(m.to_string()));
        if self.max_in_flight == Some(0) {
            return invalid("max.in.flight.requests.per.connection must be at least 1");
        }
        let too_many = self
            .max_in_flight
            .is_some_and(|n| n > IDEMPOTENT_IN_FLIGHT_MAX);
        let idempotent = match self.enable_idempotence {
            Some(true) if self.acks != Acks::All => {
                return invalid("enable.idempotence=true requires acks=all");
            }
            Some(true) if too_many => {
                return invalid(
                    "enable.idempotence=true requires max.in.flight.requests.per.connection <= 5",
                );
            }
            Some(explicit) => explicit,
            None => self.acks == Acks::All && !too_many,
        };
        let max_in_flight = self.max_in_flight.unwrap_or(if idempotent {
            IDEMPOTENT_IN_FLIGHT_MAX
        } else {
            1
        });
        Ok((idempotent, max_in_flight))
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger_ms: 5,
            batch_size: 16 * 1024,
            buffer_memory: 32 << 20,
            compression: Compression::None,
            request_timeout: Duration::from_secs(30),
            retries: u32::MAX,
            delivery_timeout: Duration::from_secs(120),
            retry_backoff_ms: 100,
            enable_idempotence: None,
            max_in_flight: None,
        }
    }
}

/// One record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// An explicit partition; otherwise chosen from the key (murmur2) or sticky when keyless.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    /// Creation time in ms since the epoch; `None`: now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..ProducerRecord::default()
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// The bytes this record is accounted for in `batch_size` and `buffer_memory`: its key,
    /// value and headers plus a fixed allowance for the record's varints.
    pub fn estimated_size(&self) -> usize {
        const RECORD_OVERHEAD: usize = 21;
        const HEADER_OVERHEAD: usize = 10;
        RECORD_OVERHEAD
            + self.key.as_ref().map_or(0, |k| k.len())
            + self.value.as_ref().map_or(0, |v| v.len())
            + self
                .headers
                .iter()
                .map(|(k, v)| HEADER_OVERHEAD + k.len() + v.len())
                .sum::<usize>()
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    /// -1 with `acks=0`.
    pub offset: i64,
    /// The broker's append time for `LogAppendTime` topics, else the record's timestamp.
    pub timestamp: i64,
}

/// The outcome of one batch, shared by the [`DeliveryFuture`]s of its records: a batch of N
/// records costs one allocation for completion, not N channels.
#[derive(Debug)]
struct Completion {
    topic: Arc<str>,
    partition: i32,
    /// (base offset, log append time), or the error that ended the batch.
    result: OnceLock<Result<(i64, i64)>>,
    /// Futures waiting for `result`.
    wakers: Mutex<Vec<Waker>>,
}

impl Completion {
    fn new(topic: Arc<str>, partition: i32) -> Completion {
        Completion {
            topic,
            partition,
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// Sets the outcome (the first one wins) and wakes every waiting future.
    fn complete(&self, result: Result<(i64, i64)>) {
        let _ = self.result.set(result);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in wakers {
            w.wake();
        }
    }
}

/// The completion of an open or in-flight batch; a batch dropped without an answer (the
/// runtime shut down) answers its records with an error, so none waits forever.
#[derive(Debug)]
struct BatchCompletion(Arc<Completion>);

impl Drop for BatchCompletion {
    fn drop(&mut self) {
        if self.0.result.get().is_none() {
            self.0.complete(Err(ClientError::Invalid(
                "the producer ended without answering the record".into(),
            )));
        }
    }
}

/// Resolves once the record is acknowledged or has failed for good.
#[derive(Debug)]
pub struct DeliveryFuture {
    completion: Arc<Completion>,
    /// The record's index in its batch.
    index: u32,
    timestamp: i64,
    /// The slot of this future's waker in `completion.wakers`, once registered.
    slot: Option<usize>,
}

impl DeliveryFuture {
    /// The partition the record was placed on. The records of one partition are answered in
    /// the order they were sent (and those of one batch at once), so a caller may await the
    /// oldest delivery of each partition only.
    pub fn partition(&self) -> i32 {
        self.completion.partition
    }

    /// Polls like the future does, but yields only the record's offset (-1 with `acks=0`),
    /// without building a [`RecordMetadata`] (no allocation per record).
    pub fn poll_offset(&mut self, cx: &mut Context<'_>) -> Poll<Result<i64>> {
        let index = i64::from(self.index);
        self.poll_result(cx).map(|r| match r {
            Ok((base, _)) if *base < 0 => Ok(-1),
            Ok((base, _)) => Ok(base + index),
            Err(e) => Err(e.clone()),
        })
    }

    /// The batch's outcome once it is known; registers the task's waker until then.
    fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<&Result<(i64, i64)>> {
        if self.completion.result.get().is_none() {
            let mut wakers = self
                .completion
                .wakers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Checked again under the lock: `complete` sets the result before taking the wakers.
            if self.completion.result.get().is_none() {
                match self.slot {
                    Some(i) if i < wakers.len() => {
                        if !wakers[i].will_wake(cx.waker()) {
                            wakers[i] = cx.waker().clone();
                        }
                    }
                    _ => {
                        self.slot = Some(wakers.len());
                        wakers.push(cx.waker().clone());
                    }
                }
                return Poll::Pending;
            }
        }
        match self.completion.result.get() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }

    fn outcome(&self, result: &Result<(i64, i64)>) -> Result<RecordMetadata> {
        match result {
            Ok((base, log_append_time)) => Ok(RecordMetadata {
                topic: self.completion.topic.to_string(),
                partition: self.completion.partition,
                offset: if *base < 0 {
                    -1
                } else {
                    base + i64::from(self.index)
                },
                timestamp: if *log_append_time >= 0 {
                    *log_append_time
                } else {
                    self.timestamp
                },
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.poll_result(cx) {
            Poll::Ready(r) => {
                let r = r.clone();
                Poll::Ready(this.outcome(&r))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A record waiting in a batch.
struct Pending {
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<(String, Bytes)>,
    timestamp: i64,
}

/// Per batch: its completion and the sequence number of its first record. The batch's
/// `bytes` are the `buffer_memory` permits its records hold until they are answered.
struct BatchMeta {
    completion: BatchCompletion,
    first_seq: u64,
}

type ProducerBatch = Batch<Pending, BatchMeta>;

/// One partition of a topic: its batches and the wake-up of its sender task.
#[derive(Default)]
struct PartitionState {
    queue: PartitionQueue<Pending, BatchMeta>,
    /// Present while the partition's sender task runs.
    sender: Option<Arc<Notify>>,
}

/// A topic the producer has seen (interned: looked up once per record by a cheap comparison
/// with the previous record's topic).
struct TopicState {
    name: Arc<str>,
    /// The metadata `num_partitions` was read from (a refresh replaces it).
    metadata: Option<Arc<Metadata>>,
    num_partitions: usize,
    sticky: Sticky,
    /// Indexed by partition.
    partitions: Vec<PartitionState>,
}

struct State {
    topics: Vec<TopicState>,
    topic_index: HashMap<Arc<str>, usize>,
    /// The topic of the last record (most records go to the topic of the one before).
    last_topic: usize,
    /// First sequence numbers of the batches not answered yet.
    unanswered: BTreeSet<u64>,
    next_seq: u64,
    /// Brokers that got `acks=0` batches since the last flush (see [`Producer::flush`]).
    unconfirmed_brokers: HashSet<String>,
}

impl State {
    /// The index of `topic`, interning it on first use.
    fn topic(&mut self, topic: &str) -> usize {
        if let Some(t) = self.topics.get(self.last_topic) {
            if &*t.name == topic {
                return self.last_topic;
            }
        }
        let i = match self.topic_index.get(topic) {
            Some(&i) => i,
            None => {
                let name: Arc<str> = Arc::from(topic);
                self.topics.push(TopicState {
                    name: Arc::clone(&name),
                    metadata: None,
                    num_partitions: 0,
                    sticky: Sticky::default(),
                    partitions: Vec::new(),
                });
                self.topic_index.insert(name, self.topics.len() - 1);
                self.topics.len() - 1
            }
        };
        self.last_topic = i;
        i
    }
}

struct Shared {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    policy: Policy,
    random: Random,
    state: Mutex<State>,
    memory: Arc<Semaphore>,
    /// Semaphore permits in total (`buffer_memory`, capped).
    memory_permits: usize,
    /// > 0 while a flush waits or the producer is closing: batches do not linger.
    forcing: AtomicUsize,
    closing: AtomicBool,
    /// Woken whenever records are answered.
    answered: Notify,
    /// `enable.idempotence` and `max.in.flight.requests.per.connection` as resolved.
    idempotent: bool,
    max_in_flight: usize,
    /// The producer id and epoch (idempotent producers), set by the first InitProducerId;
    /// the async lock makes one InitProducerId at a time.
    identity: tokio::sync::Mutex<Option<Identity>>,
    /// The generation of `identity` (0: none yet), read without the lock per batch.
    identity_generation: AtomicU64,
    /// The error that ended the producer (fenced, stale epoch): every later record fails.
    fatal: OnceLock<ClientError>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The producer's identity: the current one (InitProducerId first if there is none), or,
    /// with `bump_from`, one bumped from it (unless another partition bumped it already).
    async fn identity(&self, bump_from: Option<Identity>) -> Result<Identity> {
        let mut current = self.identity.lock().await;
        match (*current, bump_from) {
            (Some(id), None) => return Ok(id),
            (Some(id), Some(seen)) if id.generation != seen.generation => return Ok(id),
            _ => {}
        }
        let (producer_id, epoch) = idempotence::init_producer_id(
            &self.cluster,
            *current,
            Duration::from_millis(self.config.retry_backoff_ms.max(1)),
            self.config.delivery_timeout,
        )
        .await?;
        let id = Identity {
            producer_id,
            epoch,
            generation: current.map_or(1, |c| c.generation + 1),
        };
        tracing::debug!(producer_id, epoch, "producer identity");
        *current = Some(id);
        self.identity_generation
            .store(id.generation, Ordering::Release);
        Ok(id)
    }

    fn wake_all_senders(&self) {
        let st = self.lock();
        for n in st
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter_map(|p| p.sender.as_ref())
        {
            n.notify_one();
        }
    }
}

/// An asynchronous producer; see the module documentation for its guarantees.
pub struct Producer {
    shared: Arc<Shared>,
}

impl Producer {
    /// Fails only on a configuration error (see [`ProducerConfig::resolve`]).
    pub fn new(cluster: Arc<Cluster>, config: ProducerConfig) -> Result<Producer> {
        let (idempotent, max_in_flight) = config.resolve()?;
        let memory_permits = config
            .buffer_memory
            .clamp(1, (u32::MAX as usize).min(Semaphore::MAX_PERMITS));
        Ok(Producer {
            shared: Arc::new(Shared {
                cluster,
                policy: Policy::new(config.batch_size, Duration::from_millis(config.linger_ms)),
                random: Random::default(),
                state: Mutex::new(State {
                    topics: Vec::new(),
                    topic_index: HashMap::new(),
                    last_topic: 0,
                    unanswered: BTreeSet::new(),
                    next_seq: 0,
                    unconfirmed_brokers: HashSet::new(),
                }),
                config,
                memory: Arc::new(Semaphore::new(memory_permits)),
                memory_permits,
                forcing: AtomicUsize::new(0),
                closing: AtomicBool::new(false),
                answered: Notify::new(),
                idempotent,
                max_in_flight,
                identity: tokio::sync::Mutex::new(None),
                identity_generation: AtomicU64::new(0),
                fatal: OnceLock::new(),
            }),
        })
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.shared.config
    }

    /// Queues a record. Waits while `buffer_memory` is exhausted; fails at once if the topic is
    /// unknown (and cannot be auto-created), the partition does not exist, or the record is
    /// larger than `buffer_memory`. The returned future gives the record's fate.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let shared = &self.shared;
        if let Some(e) = shared.fatal.get() {
            return Err(e.clone());
        }
        let size = record.estimated_size();
        if size > shared.memory_permits {
            return Err(ClientError::Invalid(format!(
                "record of about {size} bytes exceeds buffer_memory ({} bytes)",
                shared.memory_permits
            )));
        }
        // The record's CreateTime: the one clock read of `send` (a batch reads `Instant` only
        // when it opens).
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        // Fast path, one lock: the partition count is cached for the current metadata and
        // `buffer_memory` has room. The permits are given back per batch, when it is answered.
        let held = match shared.memory.try_acquire_many(size as u32) {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        };
        let metadata = shared.cluster.metadata();
        let topic_index = {
            let mut st = shared.lock();
            let i = st.topic(&record.topic);
            let t = &st.topics[i];
            if held
                && t.metadata
                    .as_ref()
                    .is_some_and(|m| Arc::ptr_eq(m, &metadata))
            {
                let n = t.num_partitions;
                if record.partition.is_none_or(|p| p >= 0 && (p as usize) < n) {
                    return Ok(self.enqueue(&mut st, i, n, record, size, timestamp));
                }
            }
            i
        };
        let release = |r: Result<DeliveryFuture>| {
            if r.is_err() && held {
                shared.memory.add_permits(size);
            }
            r
        };
        let (num_partitions, fresh) = match metadata
            .topics
            .get(record.topic.as_str())
            .filter(|t| t.error_code == 0 && !t.partitions.is_empty())
        {
            Some(t) => (t.partitions.len(), Some(metadata)),
            // Boxed: the slow path must not make every `send` future larger.
            None => match Box::pin(self.partition_count(&record.topic)).await {
                Ok(n) => (n, None),
                Err(e) => return release(Err(e)),
            },
        };
        if let Some(p) = record.partition {
            if p < 0 || p as usize >= num_partitions {
                return release(Err(ClientError::Invalid(format!(
                    "partition {p} does not exist: topic '{}' has {num_partitions} partition(s)",
                    record.topic
                ))));
            }
        }
        if !held {
            shared
                .memory
                .acquire_many(size as u32)
                .await
                .map_err(|_| ClientError::Invalid("the producer is closed".into()))?
                .forget();
        }
        let mut st = shared.lock();
        if let Some(m) = fresh {
            let t = &mut st.topics[topic_index];
            t.metadata = Some(m);
            t.num_partitions = num_partitions;
        }
        Ok(self.enqueue(
            &mut st,
            topic_index,
            num_partitions,
            record,
            size,
            timestamp,
        ))
    }

    /// Appends a validated record whose memory permits are held; starts the partition's sender
    /// task or wakes it when the record opened or filled a batch.
    fn enqueue(
        &self,
        st: &mut State,
        topic_index: usize,
        num_partitions: usize,
        record: ProducerRecord,
        size: usize,
        timestamp: i64,
    ) -> DeliveryFuture {
        let shared = &self.shared;
        let ProducerRecord {
            topic: _,
            partition,
            key,
            value,
            headers,
            timestamp: _,
        } = record;
        let seq = st.next_seq;
        st.next_seq += 1;
        let policy = &shared.policy;
        let topic = &mut st.topics[topic_index];
        let partition = match (partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, num_partitions),
            (None, None) => {
                let partitions = &topic.partitions;
                topic.sticky.choose(num_partitions, &shared.random, |p| {
                    partitions
                        .get(p as usize)
                        .is_some_and(|ps| ps.queue.has_room(policy, size))
                })
            }
        };
        let name = &topic.name;
        let i = partition as usize;
        if i >= topic.partitions.len() {
            topic.partitions.resize_with(i + 1, PartitionState::default);
        }
        let ps = &mut topic.partitions[i];
        let pending = Pending {
            key,
            value,
            headers,
            timestamp,
        };
        let (appended, batch) = ps
            .queue
            .append_with(policy, pending, size, Instant::now, || BatchMeta {
                completion: BatchCompletion(Arc::new(Completion::new(Arc::clone(name), partition))),
                first_seq: seq,
            });
        let delivery = DeliveryFuture {
            completion: Arc::clone(&batch.meta.completion.0),
            index: u32::try_from(batch.items.len() - 1).unwrap_or(u32::MAX),
            timestamp,
            slot: None,
        };
        // The sender task needs a wake-up only when a batch opens (to start its linger) or
        // becomes full, not for every record.
        match &ps.sender {
            Some(n) => {
                if appended.opened || appended.full {
                    n.notify_one();
                }
            }
            None => {
                let n = Arc::new(Notify::new());
                ps.sender = Some(Arc::clone(&n));
                tokio::spawn(sender::partition_sender(
                    Arc::clone(shared),
                    topic_index,
                    Arc::clone(name),
                    partition,
                    n,
                ));
            }
        }
        if appended.opened {
            st.unanswered.insert(seq);
        }
        delivery
    }

    /// Sends every queued batch without lingering and waits until every record sent before this
    /// call has been answered (acknowledged or failed).
    pub async fn flush(&self) {
        let shared = &self.shared;
        let target = shared.lock().next_seq;
        shared.forcing.fetch_add(1, Ordering::AcqRel);
        shared.wake_all_senders();
        loop {
            let notified = shared.answered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let done = shared
                .lock()
                .unanswered
                .first()
                .is_none_or(|&oldest| oldest >= target);
            if done {
                break;
            }
            notified.await;
        }
        shared.forcing.fetch_sub(1, Ordering::AcqRel);
        // acks=0 batches are answered once queued on a connection; a request with a response
        // behind them on the same connection proves they were written and handled (responses
        // come in request order, and a connection's requests are handled in order).
        let brokers: Vec<String> = shared.lock().unconfirmed_brokers.drain().collect();
        for addr in brokers {
            if let Ok(conn) = shared.cluster.connection(&addr).await {
                let barrier = MetadataRequest::default().with_topics(Some(Vec::new()));
                let _ = conn.send(&barrier).await;
            }
        }
    }

    /// Partitions of `topic`, which the metadata cache does not know (`send` just looked): from
    /// a refresh; retriable metadata errors (a topic being created) are retried until
    /// `request_timeout`.
    async fn partition_count(&self, topic: &str) -> Result<usize> {
        let shared = &self.shared;
        let backoff = Duration::from_millis(shared.config.retry_backoff_ms.max(1));
        let deadline = Instant::now() + shared.config.request_timeout;
        loop {
            let error = match shared.cluster.topic(topic).await {
                Ok(t) if !t.partitions.is_empty() => return Ok(t.partitions.len()),
                Ok(_) => ClientError::from_code(5, format!("topic '{topic}' has no partitions"))
                    .unwrap_or_else(|| ClientError::Invalid("no partitions".into())),
                Err(e) => e,
            };
            if !error.is_retriable() || Instant::now() + backoff >= deadline {
                return Err(error);
            }
            // A cached error would be returned again without a refresh.
            tokio::time::sleep(backoff).await;
            let _ = shared.cluster.refresh(&[topic.to_string()]).await;
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.forcing.fetch_add(1, Ordering::AcqRel);
        self.shared.wake_all_senders();
    }
}

/// Answers every record of `batch` (one shared completion), then releases their memory and
/// wakes `flush`.
fn answer(shared: &Shared, batch: ProducerBatch, result: Result<(i64, i64)>) {
    let Batch {
        items, bytes, meta, ..
    } = batch;
    drop(items);
    meta.completion.0.complete(result);
    shared.memory.add_permits(bytes);
    shared.lock().unanswered.remove(&meta.first_seq);
    shared.answered.notify_waiters();
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
