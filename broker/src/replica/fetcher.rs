//! The replica fetcher: what a follower runs to copy its leaders' logs, Kafka-style.
//!
//! [`FetcherManager`] keeps one task per source (leader) broker. The task holds one connection
//! to that broker and long-polls it with Fetch v12 (`replica_id` = this broker) for every
//! partition this broker follows from it, so an idle cluster is quiet and a busy one streams.
//! It reaches the local log only through [`FollowerLog`].
//!
//! Invariants:
//! - a partition is followed from at most one source; `add_partition` moves it, and a source
//!   left following nothing has its task stopped;
//! - once `remove_partition` (or a replacing `add_partition`) returns, the fetcher never changes
//!   that partition's log again: every change happens under the partition's slot lock, which the
//!   removal takes to mark the slot stopped;
//! - a partition whose log holds batches is truncated (OffsetForLeaderEpoch) before its first
//!   fetch, so its log never keeps a tail its leader does not have;
//! - a fetch offset is a promise that everything below it is durable (as the flush policy asks):
//!   the next fetch waits for `wait_flushed` of what the last one appended;
//! - everything the network gives is bounded (frame size, time to connect and to answer); a bad
//!   answer closes the connection and is retried after `replica.fetch.backoff.ms`, never panics.
//!   Each partition's place is its log end, so a new connection continues where the last left.
//!
//! Commands from the manager are applied between requests and while an answer is awaited; a
//! partition added during a long poll is first asked for by the next request (at most
//! `replica.fetch.wait.max.ms` later), as in Kafka.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::EpochEndOffset;
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::ResponseError;
use strata_protocol::api::EncodeError;
use strata_protocol::client_codec::{decode_response, encode_request, ResponseDecodeError};
use strata_protocol::frame::{FrameCodec, FrameError};
use strata_protocol::record_batch::BatchIter;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::FetcherSettings;
use crate::error::BrokerError;
use crate::ids::{BrokerId, LeaderEpoch, Offset, PartitionId};

/// Fetch v12: the last version that names topics (v13 names them by id).
const FETCH_VERSION: i16 = 12;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Above `replica.fetch.response.max.bytes` a frame may carry headers and a first batch larger
/// than the limits (a leader always sends one whole batch, up to the default message size).
const FRAME_SLACK_BYTES: usize = 2 << 20;
/// OffsetForLeaderEpoch rounds for one truncation: each asks for an older epoch, so a few do.
const TRUNCATION_ROUNDS_MAX: u32 = 8;
/// How long `shutdown` waits for the tasks it stopped.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// The local log of a partition this broker follows, as the fetcher sees it.
pub trait FollowerLog: Send + Sync + 'static {
    fn log_end_offset(&self) -> Offset;
    /// The epoch of the newest batch in the log (None: empty log / no epoch yet).
    fn latest_epoch(&self) -> Option<LeaderEpoch>;
    fn truncate_to(&self, offset: Offset) -> Result<(), BrokerError>;
    /// The leader's log starts above our log end: drop everything and start empty at `offset`.
    fn truncate_fully_and_start_at(&self, offset: Offset) -> Result<(), BrokerError>;
    /// Appends the leader's batches as they are; returns the new log end.
    fn append_as_follower(&self, records: &Bytes) -> Result<Offset, BrokerError>;
    /// Resolves once everything below `end` is on this broker's disk, if the flush policy asks
    /// for that (the follower must not report an offset it could lose); at once otherwise.
    fn wait_flushed(&self, end: Offset) -> BoxFuture<'_, ()>;
    /// The leader's high watermark and log start from a fetch answer.
    fn leader_progress(&self, high_watermark: Offset, log_start: Offset);
    /// The end of `epoch` in this log (the start of the next newer epoch, or the log end), from
    /// its epoch cache; `None` when not known. With it a truncation cuts exactly where the logs
    /// part (Kafka's min of both ends); without it, at the leader's end of the epoch.
    fn epoch_end_offset(&self, _epoch: LeaderEpoch) -> Option<Offset> {
        None
    }
}

/// A partition to follow, and the leader epoch it was added with (sent as
/// `current_leader_epoch`, so a leader that moved on fences us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedPartition {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: PartitionId,
    pub leader_epoch: LeaderEpoch,
}

/// Fetch v12 names topics, so a partition is known by its topic's name.
type PartKey = (String, PartitionId);

/// Guards a partition's log against the fetcher once it is removed.
#[derive(Default)]
struct Slot {
    stopped: Mutex<bool>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, bool> {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Runs `f` (a change to the log) unless the partition was removed.
    fn change<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let stopped = self.lock();
        (!*stopped).then(f)
    }
    fn stop(&self) {
        *self.lock() = true;
    }
}

enum Command {
    Add {
        follow: FollowedPartition,
        log: Arc<dyn FollowerLog>,
        slot: Arc<Slot>,
    },
    Remove(PartKey),
    Address(String),
}

struct Source {
    addr: String,
    tx: mpsc::UnboundedSender<Command>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    partitions: usize,
}

#[derive(Default)]
struct Inner {
    sources: HashMap<BrokerId, Source>,
    owners: HashMap<PartKey, (BrokerId, Arc<Slot>)>,
    /// Tasks of sources that follow nothing any more, stopped but maybe not yet ended.
    retired: Vec<JoinHandle<()>>,
    shut_down: bool,
}

/// Every replica fetcher of this broker: one task per source broker.
pub struct FetcherManager {
    me: BrokerId,
    settings: FetcherSettings,
    inner: Mutex<Inner>,
    shutdown: CancellationToken,
    bytes_in: Arc<AtomicU64>,
}

impl FetcherManager {
    pub fn new(me: BrokerId, settings: FetcherSettings) -> FetcherManager {
        FetcherManager {
            me,
            settings,
            inner: Mutex::new(Inner::default()),
            shutdown: CancellationToken::new(),
            bytes_in: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Record bytes appended from leaders since start.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `key` from broker `source` (its Kafka listener at `source_addr`), replacing any
    /// earlier entry for the same topic-partition, from whichever source. Call inside a Tokio
    /// runtime: the source's task is spawned on first use.
    pub fn add_partition(
        &self,
        source: BrokerId,
        source_addr: String,
        key: FollowedPartition,
        log: Arc<dyn FollowerLog>,
    ) {
        let mut inner = self.lock();
        if inner.shut_down {
            return;
        }
        let pk = (key.topic.clone(), key.partition);
        let replaced = inner.owners.remove(&pk);
        if let Some((old_source, _)) = &replaced {
            let old_source = *old_source;
            if old_source != source {
                Self::forget(&mut inner, old_source, pk.clone());
            } else if let Some(s) = inner.sources.get_mut(&source) {
                // The task replaces its entry on Add; the count stays.
                s.partitions -= 1;
            }
        }
        let src = match inner.sources.entry(source) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let stop = self.shutdown.child_token();
                let task = SourceTask::new(
                    self.me,
                    source,
                    source_addr.clone(),
                    self.settings,
                    rx,
                    Arc::clone(&self.bytes_in),
                );
                let task = tokio::spawn(task.run(stop.clone()));
                e.insert(Source {
                    addr: source_addr.clone(),
                    tx,
                    stop,
                    task,
                    partitions: 0,
                })
            }
        };
        if src.addr != source_addr {
            src.addr = source_addr.clone();
            let _ = src.tx.send(Command::Address(source_addr));
        }
        let slot = Arc::new(Slot::default());
        src.partitions += 1;
        let _ = src.tx.send(Command::Add {
            follow: key,
            log,
            slot: Arc::clone(&slot),
        });
        inner.owners.insert(pk, (source, slot));
        drop(inner);
        // Outside the manager's lock: this waits for an append in progress to end.
        if let Some((_, old_slot)) = replaced {
            old_slot.stop();
        }
    }

    /// Stops following the partition; once this returns its log is not changed by the fetcher
    /// (it waits for an append in progress, so do not call it from the partition's own
    /// `FollowerLog` methods). Returns whether it was followed.
    pub fn remove_partition(&self, topic: &str, partition: PartitionId) -> bool {
        let mut inner = self.lock();
        let pk = (topic.to_string(), partition);
        let Some((source, slot)) = inner.owners.remove(&pk) else {
            return false;
        };
        Self::forget(&mut inner, source, pk);
        drop(inner);
        // Outside the manager's lock: this waits for an append in progress to end.
        slot.stop();
        true
    }

    /// The source's task drops the partition; a source left with none is stopped.
    fn forget(inner: &mut Inner, source: BrokerId, pk: PartKey) {
        let Some(src) = inner.sources.get_mut(&source) else {
            return;
        };
        src.partitions -= 1;
        let _ = src.tx.send(Command::Remove(pk));
        if src.partitions == 0 {
            if let Some(src) = inner.sources.remove(&source) {
                src.stop.cancel();
                inner.retired.retain(|t| !t.is_finished());
                inner.retired.push(src.task);
            }
        }
    }

    /// The sources that have a task, for tests and status.
    pub fn sources(&self) -> Vec<BrokerId> {
        let mut v: Vec<BrokerId> = self.lock().sources.keys().copied().collect();
        v.sort();
        v
    }

    /// Stops every task and waits for them (at most `SHUTDOWN_WAIT`); later adds are ignored.
    pub async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut inner = self.lock();
            inner.shut_down = true;
            for (_, slot) in inner.owners.values() {
                slot.stop();
            }
            inner.owners.clear();
            self.shutdown.cancel();
            let mut tasks: Vec<JoinHandle<()>> = inner.retired.drain(..).collect();
            tasks.extend(inner.sources.drain().map(|(_, s)| s.task));
            tasks
        };
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(SHUTDOWN_WAIT, all).await.is_err() {
            tracing::warn!("replica fetchers did not stop within {SHUTDOWN_WAIT:?}");
        }
    }
}

impl Drop for FetcherManager {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Where a followed partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Asking the leader where our log must end (`ask`: the epoch to ask for; None: our latest).
    Truncate {
        ask: Option<LeaderEpoch>,
        rounds: u32,
    },
    Fetch,
    /// Fenced or no longer led by the source: not fetched until added again.
    Parked,
}

struct Part {
    follow: FollowedPartition,
    log: Arc<dyn FollowerLog>,
    slot: Arc<Slot>,
    phase: Phase,
    /// Not asked for again before this (backoff after an error).
    retry_at: Option<Instant>,
}

/// What the manager tells a task, applied between (and during) requests.
struct Followed {
    parts: HashMap<PartKey, Part>,
    addr: String,
    addr_changed: bool,
    rx: mpsc::UnboundedReceiver<Command>,
    rx_open: bool,
}

impl Followed {
    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Add { follow, log, slot } => {
                let key = (follow.topic.clone(), follow.partition);
                let part = Part {
                    follow,
                    log,
                    slot,
                    phase: Phase::Truncate {
                        ask: None,
                        rounds: 0,
                    },
                    retry_at: None,
                };
                self.parts.insert(key, part);
            }
            Command::Remove(key) => {
                self.parts.remove(&key);
            }
            Command::Address(addr) => {
                self.addr = addr;
                self.addr_changed = true;
            }
        }
    }

    fn drain(&mut self) {
        while let Ok(cmd) = self.rx.try_recv() {
            self.apply(cmd);
        }
    }

    /// Waits for the next command and applies it; false once the manager is gone.
    async fn next(&mut self) -> bool {
        if !self.rx_open {
            std::future::pending::<()>().await;
        }
        match self.rx.recv().await {
            Some(cmd) => {
                self.apply(cmd);
                true
            }
            None => {
                self.rx_open = false;
                false
            }
        }
    }
}

/// Why a connection to the source was given up.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("connection closed by the leader")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Encode(#[from] EncodeError),
    #[error("{0}")]
    Decode(#[from] ResponseDecodeError),
    #[error("answer to correlation id {got}, expected {expected}")]
    Correlation { got: i32, expected: i32 },
}

/// One connection to a source broker, one request at a time.
struct Conn {
    reader: FramedRead<OwnedReadHalf, FrameCodec>,
    writer: OwnedWriteHalf,
    next_correlation_id: i32,
    client_id: String,
}

impl Conn {
    async fn connect(
        addr: &str,
        timeout: Duration,
        frame_bytes_max: usize,
        client_id: String,
    ) -> Result<Conn, ConnError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnError::Timeout(timeout))?
            .map_err(|e| ConnError::Connect(addr.to_string(), e))?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Ok(Conn {
            reader: FramedRead::new(r, FrameCodec::new(frame_bytes_max)),
            writer: w,
            next_correlation_id: 0,
            client_id,
        })
    }

    async fn call<Req, Resp>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, ConnError>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(
            key as i16,
            version,
            correlation_id,
            &self.client_id,
            request,
        )?;
        let exchange = async {
            self.writer.write_all(&frame).await?;
            match self.reader.next().await {
                Some(frame) => Ok(frame?),
                None => Err(ConnError::Closed),
            }
        };
        let body = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ConnError::Timeout(timeout))??;
        let (got, response) = decode_response::<Resp>(version, body)?;
        if got != correlation_id {
            return Err(ConnError::Correlation {
                got,
                expected: correlation_id,
            });
        }
        Ok(response)
    }
}

/// A token bucket over appended bytes: `rate` bytes/s, bursts up to one second's worth.
struct Bucket {
    rate: u64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket {
            rate,
            tokens: rate as f64,
            at: Instant::now(),
        }
    }
    fn unlimited(&self) -> bool {
        self.rate >= i64::MAX as u64
    }
    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * self.rate as f64;
        self.tokens = (self.tokens + earned).min(self.rate as f64);
        self.at = now;
    }
    fn spend(&mut self, bytes: usize) {
        if !self.unlimited() {
            self.refill();
            self.tokens -= bytes as f64;
        }
    }
    /// When the bucket is back above zero, if it is below now.
    fn ready_at(&mut self) -> Option<Instant> {
        if self.unlimited() {
            return None;
        }
        self.refill();
        (self.tokens < 0.0)
            .then(|| self.at + Duration::from_secs_f64(-self.tokens / self.rate.max(1) as f64))
    }
}

/// The task of one source broker.
struct SourceTask {
    me: BrokerId,
    source: BrokerId,
    settings: FetcherSettings,
    followed: Followed,
    conn: Option<Conn>,
    bucket: Bucket,
    bytes_in: Arc<AtomicU64>,
}

impl SourceTask {
    fn new(
        me: BrokerId,
        source: BrokerId,
        addr: String,
        settings: FetcherSettings,
        rx: mpsc::UnboundedReceiver<Command>,
        bytes_in: Arc<AtomicU64>,
    ) -> SourceTask {
        SourceTask {
            me,
            source,
            settings,
            followed: Followed {
                parts: HashMap::new(),
                addr,
                addr_changed: false,
                rx,
                rx_open: true,
            },
            conn: None,
            bucket: Bucket::new(settings.throttle_bytes_per_sec),
            bytes_in,
        }
    }

    async fn run(mut self, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = self.fetch_loop() => {}
        }
        tracing::debug!(source = self.source.0, "replica fetcher stopped");
    }

    async fn fetch_loop(&mut self) {
        loop {
            self.followed.drain();
            if self.followed.addr_changed {
                self.followed.addr_changed = false;
                self.conn = None;
            }
            let now = Instant::now();
            let ready = |p: &Part| p.retry_at.is_none_or(|t| t <= now);
            let mut truncate = Vec::new();
            let mut fetch = Vec::new();
            let mut next_retry: Option<Instant> = None;
            for (key, p) in &self.followed.parts {
                if p.phase == Phase::Parked {
                    continue;
                }
                if !ready(p) {
                    next_retry = next_retry.min(p.retry_at).or(p.retry_at);
                    continue;
                }
                match p.phase {
                    Phase::Truncate { .. } => truncate.push(key.clone()),
                    _ => fetch.push(key.clone()),
                }
            }
            if truncate.is_empty() && fetch.is_empty() {
                // Nothing to ask for: wait for the manager, or for a backoff to end.
                if !self.followed.rx_open && next_retry.is_none() {
                    return;
                }
                let sleep = async {
                    match next_retry {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = self.followed.next() => {}
                    _ = sleep => {}
                }
                continue;
            }
            if let Some(t) = self.bucket.ready_at() {
                self.wait_until(t).await;
                continue;
            }
            let result = if truncate.is_empty() {
                self.fetch(fetch).await
            } else {
                self.truncate(truncate).await
            };
            if let Err(e) = result {
                tracing::warn!(
                    source = self.source.0,
                    addr = %self.followed.addr,
                    error = %e,
                    "replica fetcher lost its connection; reconnecting after {:?}",
                    self.settings.backoff
                );
                self.conn = None;
                self.wait_until(Instant::now() + self.settings.backoff)
                    .await;
            }
        }
    }

    /// Sleeps until `t`, applying the manager's commands meanwhile.
    async fn wait_until(&mut self, t: Instant) {
        let sleep = tokio::time::sleep_until(t);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                _ = self.followed.next() => {}
            }
        }
    }

    /// Sends `request` on the connection (opened if needed), applying the manager's commands
    /// while the answer is awaited (a long poll may take `replica.fetch.wait.max.ms`).
    async fn call<Req, Resp>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, ConnError>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let s = self.settings;
        if self.conn.is_none() {
            let frame_max = usize::try_from(s.response_bytes_max)
                .unwrap_or(0)
                .saturating_add(FRAME_SLACK_BYTES);
            let client_id = format!("strata-replica-{}", self.me.0);
            let c = Conn::connect(&self.followed.addr, s.socket_timeout, frame_max, client_id);
            self.conn = Some(c.await?);
        }
        let conn = self.conn.as_mut().ok_or(ConnError::Closed)?;
        // A long poll is answered after up to wait_max; the socket timeout bounds the rest.
        let timeout = s.socket_timeout + s.wait_max;
        let answer = conn.call::<Req, Resp>(key, version, request, timeout);
        tokio::pin!(answer);
        loop {
            tokio::select! {
                r = &mut answer => return r,
                _ = self.followed.next() => {}
            }
        }
    }

    /// Asks the leader where the logs of `keys` must end and truncates them there.
    async fn truncate(&mut self, keys: Vec<PartKey>) -> Result<(), ConnError> {
        let mut topics: BTreeMap<String, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
        let mut asked: HashMap<PartKey, (LeaderEpoch, Arc<Slot>)> = HashMap::new();
        for key in keys {
            let Some(p) = self.followed.parts.get_mut(&key) else {
                continue;
            };
            let Phase::Truncate { ask, .. } = p.phase else {
                continue;
            };
            // An empty log (no epoch) has nothing to cut.
            let Some(epoch) = ask.or_else(|| p.log.latest_epoch()) else {
                p.phase = Phase::Fetch;
                continue;
            };
            let mut req = OffsetForLeaderPartition::default();
            req.partition = key.1 .0;
            req.current_leader_epoch = p.follow.leader_epoch.0;
            req.leader_epoch = epoch.0;
            topics.entry(key.0.clone()).or_default().push(req);
            asked.insert(key, (epoch, Arc::clone(&p.slot)));
        }
        if asked.is_empty() {
            return Ok(());
        }
        let mut request = OffsetForLeaderEpochRequest::default();
        request.replica_id = kafka_protocol::messages::BrokerId(self.me.0);
        request.topics = topics
            .into_iter()
            .map(|(topic, partitions)| {
                let mut t = OffsetForLeaderTopic::default();
                t.topic = TopicName(StrBytes::from_string(topic));
                t.partitions = partitions;
                t
            })
            .collect();
        let response: OffsetForLeaderEpochResponse = self
            .call(
                ApiKey::OffsetForLeaderEpoch,
                OFFSET_FOR_LEADER_EPOCH_VERSION,
                &request,
            )
            .await?;
        for topic in response.topics {
            for answer in topic.partitions {
                let key = (topic.topic.to_string(), PartitionId(answer.partition));
                let Some((epoch, slot)) = asked.remove(&key) else {
                    continue;
                };
                // Removed or replaced while we asked: the answer is not about this entry.
                let Some(p) = self.followed.parts.get_mut(&key) else {
                    continue;
                };
                if !Arc::ptr_eq(&p.slot, &slot) {
                    continue;
                }
                self.epoch_answer(&key, epoch, &answer);
            }
        }
        // Asked but not answered: ask again later.
        let retry = Instant::now() + self.settings.backoff;
        for key in asked.keys() {
            if let Some(p) = self.followed.parts.get_mut(key) {
                p.retry_at = Some(retry);
            }
        }
        Ok(())
    }

    /// Truncates one partition to where the leader says `asked`'s epoch ends.
    fn epoch_answer(&mut self, key: &PartKey, asked: LeaderEpoch, answer: &EpochEndOffset) {
        let backoff = self.settings.backoff;
        let source = self.source;
        let Some(p) = self.followed.parts.get_mut(key) else {
            return;
        };
        if answer.error_code != 0 {
            partition_error(
                source,
                key,
                p,
                answer.error_code,
                backoff,
                "OffsetForLeaderEpoch",
            );
            return;
        }
        // UNDEFINED: the leader knows no epoch at or below ours; the log stays as it is.
        if answer.leader_epoch < 0 || answer.end_offset < 0 {
            p.phase = Phase::Fetch;
            return;
        }
        let leader_epoch = LeaderEpoch(answer.leader_epoch);
        let end = p.log.log_end_offset();
        let mut target = Offset(answer.end_offset).min(end);
        if let Some(ours) = p.log.epoch_end_offset(leader_epoch) {
            target = target.min(ours);
        }
        if target < end {
            let log = Arc::clone(&p.log);
            match p.slot.change(|| log.truncate_to(target)) {
                None => return,
                Some(Ok(())) => tracing::info!(
                    topic = %key.0, partition = key.1 .0, from = end.0, to = target.0,
                    "follower truncated to its leader's end of epoch {}", leader_epoch.0
                ),
                Some(Err(e)) => {
                    tracing::warn!(topic = %key.0, partition = key.1 .0, error = %e,
                        "follower could not truncate; trying again after {backoff:?}");
                    p.retry_at = Some(Instant::now() + backoff);
                    return;
                }
            }
        }
        let rounds = match p.phase {
            Phase::Truncate { rounds, .. } => rounds + 1,
            _ => 1,
        };
        // The leader never had our epoch: what we kept of it may still differ, so ask for the
        // older epoch it answered with (as Kafka does), a bounded number of times.
        p.phase = if leader_epoch < asked && rounds < TRUNCATION_ROUNDS_MAX {
            Phase::Truncate {
                ask: Some(leader_epoch),
                rounds,
            }
        } else {
            Phase::Fetch
        };
    }

    /// One Fetch of `keys` from their log ends; appends what comes back.
    async fn fetch(&mut self, keys: Vec<PartKey>) -> Result<(), ConnError> {
        let s = self.settings;
        let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
        let mut asked: HashMap<PartKey, Arc<Slot>> = HashMap::new();
        for key in keys {
            let Some(p) = self.followed.parts.get(&key) else {
                continue;
            };
            let mut fp = FetchPartition::default();
            fp.partition = key.1 .0;
            fp.current_leader_epoch = p.follow.leader_epoch.0;
            fp.fetch_offset = p.log.log_end_offset().0;
            fp.last_fetched_epoch = p.log.latest_epoch().map_or(-1, |e| e.0);
            fp.log_start_offset = -1;
            fp.partition_max_bytes = s.partition_bytes_max;
            topics.entry(key.0.clone()).or_default().push(fp);
            asked.insert(key, Arc::clone(&p.slot));
        }
        let mut request = FetchRequest::default();
        request.replica_id = kafka_protocol::messages::BrokerId(self.me.0);
        request.max_wait_ms = i32::try_from(s.wait_max.as_millis()).unwrap_or(i32::MAX);
        request.min_bytes = s.min_bytes;
        request.max_bytes = s.response_bytes_max;
        request.isolation_level = 0;
        // Full fetches: no fetch session.
        request.session_id = 0;
        request.session_epoch = -1;
        request.topics = topics
            .into_iter()
            .map(|(topic, partitions)| {
                let mut t = FetchTopic::default();
                t.topic = TopicName(StrBytes::from_string(topic));
                t.partitions = partitions;
                t
            })
            .collect();
        let response: FetchResponse = self.call(ApiKey::Fetch, FETCH_VERSION, &request).await?;
        let backoff = s.backoff;
        if response.error_code != 0 {
            tracing::warn!(
                source = self.source.0,
                code = response.error_code,
                "leader refused a replica fetch; trying again after {backoff:?}"
            );
            let retry = Instant::now() + backoff;
            for key in asked.keys() {
                if let Some(p) = self.followed.parts.get_mut(key) {
                    p.retry_at = Some(retry);
                }
            }
            return Ok(());
        }
        let mut appended: Vec<(Arc<dyn FollowerLog>, Offset)> = Vec::new();
        for topic in response.responses {
            for data in topic.partitions {
                let key = (topic.topic.to_string(), PartitionId(data.partition_index));
                let Some(slot) = asked.remove(&key) else {
                    continue;
                };
                let Some(p) = self.followed.parts.get_mut(&key) else {
                    continue;
                };
                if !Arc::ptr_eq(&p.slot, &slot) {
                    continue;
                }
                if data.error_code == ResponseError::OffsetOutOfRange.code() {
                    self.out_of_range(&key, Offset(data.log_start_offset));
                    continue;
                }
                if data.error_code != 0 {
                    partition_error(self.source, &key, p, data.error_code, backoff, "Fetch");
                    continue;
                }
                if data.diverging_epoch.epoch >= 0 {
                    p.phase = Phase::Truncate {
                        ask: None,
                        rounds: 0,
                    };
                    continue;
                }
                let records = whole_batches(data.records.unwrap_or_default());
                let log = Arc::clone(&p.log);
                if !records.is_empty() {
                    match p.slot.change(|| log.append_as_follower(&records)) {
                        None => continue,
                        Some(Ok(end)) => {
                            self.bytes_in
                                .fetch_add(records.len() as u64, Ordering::Relaxed);
                            self.bucket.spend(records.len());
                            appended.push((Arc::clone(&log), end));
                        }
                        Some(Err(e)) => {
                            tracing::warn!(topic = %key.0, partition = key.1 .0, error = %e,
                                "follower could not append its leader's batches; truncating again after {backoff:?}");
                            p.phase = Phase::Truncate {
                                ask: None,
                                rounds: 0,
                            };
                            p.retry_at = Some(Instant::now() + backoff);
                            continue;
                        }
                    }
                }
                p.slot.change(|| {
                    log.leader_progress(Offset(data.high_watermark), Offset(data.log_start_offset))
                });
            }
        }
        // The next fetch offset tells the leader these are ours: they must be durable first.
        futures::future::join_all(appended.iter().map(|(log, end)| log.wait_flushed(*end))).await;
        Ok(())
    }

    /// OFFSET_OUT_OF_RANGE: the leader's log starts above ours (start over there), or ours
    /// ends above the leader's (truncate again).
    fn out_of_range(&mut self, key: &PartKey, leader_log_start: Offset) {
        let backoff = self.settings.backoff;
        let Some(p) = self.followed.parts.get_mut(key) else {
            return;
        };
        let end = p.log.log_end_offset();
        if leader_log_start > end {
            let log = Arc::clone(&p.log);
            match p
                .slot
                .change(|| log.truncate_fully_and_start_at(leader_log_start))
            {
                Some(Ok(())) => tracing::info!(topic = %key.0, partition = key.1 .0,
                    from = end.0, to = leader_log_start.0,
                    "follower starts over at its leader's log start"),
                Some(Err(e)) => {
                    tracing::warn!(topic = %key.0, partition = key.1 .0, error = %e,
                        "follower could not start over at its leader's log start");
                    p.retry_at = Some(Instant::now() + backoff);
                }
                None => {}
            }
        } else {
            p.phase = Phase::Truncate {
                ask: None,
                rounds: 0,
            };
            // A log without epochs has nothing to ask about: do not spin on the same answer.
            p.retry_at = Some(Instant::now() + backoff);
        }
    }
}

/// A partition's error in an answer: park it (fenced: our leader epoch is older than the
/// leader's, so new metadata will add it again), or ask again after the backoff (as Kafka's
/// fetcher does for NOT_LEADER_OR_FOLLOWER and UNKNOWN_TOPIC_OR_PARTITION: the source may not
/// have applied the metadata that makes it the leader yet).
fn partition_error(
    source: BrokerId,
    key: &PartKey,
    p: &mut Part,
    code: i16,
    backoff: Duration,
    api: &str,
) {
    let error = ResponseError::try_from_code(code);
    match error {
        Some(ResponseError::FencedLeaderEpoch) => {
            if p.phase != Phase::Parked {
                tracing::warn!(source = source.0, topic = %key.0, partition = key.1 .0,
                    epoch = p.follow.leader_epoch.0, "{api}: {}; not fetching this partition until it is added again",
                    error.map_or_else(|| code.to_string(), |e| e.to_string()));
            }
            p.phase = Phase::Parked;
        }
        // The leader has not caught up with the metadata yet.
        Some(
            ResponseError::UnknownLeaderEpoch
            | ResponseError::NotLeaderOrFollower
            | ResponseError::UnknownTopicOrPartition,
        ) => {
            tracing::debug!(source = source.0, topic = %key.0, partition = key.1 .0, code,
                "{api}: the source does not lead it (yet); trying again after {backoff:?}");
            p.retry_at = Some(Instant::now() + backoff);
        }
        _ => {
            tracing::warn!(source = source.0, topic = %key.0, partition = key.1 .0, code,
                "{api} failed; trying again after {backoff:?}");
            p.retry_at = Some(Instant::now() + backoff);
        }
    }
}

/// `records` up to its last whole batch (a fetch answer may end in part of one).
fn whole_batches(records: Bytes) -> Bytes {
    let mut batches = BatchIter::new(&records);
    for _ in batches.by_ref() {}
    let end = batches.position();
    records.slice(..end)
}

#[cfg(test)]
#[path = "fetcher_tests.rs"]
mod tests;
