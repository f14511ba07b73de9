//! The consumer: reads its partitions with sessionless full Fetch requests, one request per
//! partition leader per round. The partitions are either assigned by hand or, with a group
//! (`ConsumerConfig::group`), given by the group's leader after [`Consumer::subscribe`]; the
//! group side (joining, heartbeats, rebalances, commits) is in [`group`] (this directory's
//! `group.rs`), driven from `poll`.
//!
//! Use: [`Consumer::new`], [`Consumer::assign`] the partitions (optionally [`Consumer::seek`]
//! each one) or [`Consumer::subscribe`], then [`Consumer::poll`] repeatedly (or
//! [`Consumer::stream`]); [`Consumer::close`] leaves the group.
//!
//! Invariants:
//! - a partition's position is the offset of the next record to hand out; it only moves forward,
//!   and only past records that were handed out in the same `poll` or past batches that hold no
//!   deliverable record (control batches, records before the position, compacted gaps). `seek`
//!   is the only way to move it anywhere else;
//! - a record is handed out at most once per position: records with an offset below the
//!   position are skipped (a fetched batch may start before it), and a trailing partial batch in
//!   a fetch response (the broker cuts at `max_bytes`) is ignored and fetched again next round;
//! - an unset position (after `assign`, or after OFFSET_OUT_OF_RANGE) is resolved with
//!   ListOffsets per `auto_offset_reset` before that partition is fetched; with
//!   [`AutoOffsetReset::None`] the partition is reported once as an error and then left alone
//!   until it is `seek`ed;
//! - stale-metadata errors (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, a lost
//!   connection, ...) refresh the topic's metadata and the partition is retried in the next
//!   round; they are not returned to the caller;
//! - a partition given by the group is not fetched until its committed offset is known
//!   (`awaiting_committed`); with none committed, `auto_offset_reset` applies as above;
//! - with `client_rack` set, a partition whose leader names a `preferred_read_replica` (KIP-392)
//!   is fetched from that broker until it answers the partition with any error, the connection
//!   to it fails, or `metadata_max_age_ms` has passed; then from the leader again. An error from
//!   that follower is never acted on by itself (OFFSET_OUT_OF_RANGE included: its high watermark
//!   may lag the leader's): the leader's next answer decides;
//! - nothing a broker sends can make this module panic: bad bytes become
//!   [`ClientError::Malformed`] for that partition, whose position then stays where it was.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use strata_protocol::record_batch::BatchIter;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::connection::Connection;
use crate::error::{ClientError, Result};
use crate::group::GroupConfig;

mod group;
pub use group::{RebalanceEvent, RebalanceListener};

/// ListOffsets timestamp asking for the log start offset.
const EARLIEST_TIMESTAMP: i64 = -2;
/// ListOffsets timestamp asking for the log end offset (the high watermark).
const LATEST_TIMESTAMP: i64 = -1;
/// Pause between rounds that made no progress because of errors, so they do not spin.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Where to start a partition that has no valid position (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoOffsetReset {
    Earliest,
    Latest,
    /// Report an error for the partition instead.
    None,
}

/// Consumer settings (Kafka names in the field docs).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `fetch.max.bytes`: the most a fetch response may hold (at least one batch is returned).
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes`: the most one partition may contribute to a fetch response.
    pub max_partition_fetch_bytes: i32,
    /// `fetch.min.bytes`: the broker waits for this many bytes (or `fetch_max_wait_ms`).
    pub fetch_min_bytes: i32,
    /// `fetch.max.wait.ms`: how long the broker may hold a fetch waiting for `fetch_min_bytes`.
    pub fetch_max_wait_ms: i32,
    /// `auto.offset.reset`.
    pub auto_offset_reset: AutoOffsetReset,
    /// `group.id` and the other group settings; `None`: no group (assign only, no commits).
    pub group: Option<GroupConfig>,
    /// `client.rack`: sent with each Fetch (v11+) so a leader may send us to a follower in this
    /// rack (KIP-392); empty: not set.
    pub client_rack: String,
    /// `metadata.max.age.ms`: the longest a partition is read from a preferred follower before
    /// the leader is asked again.
    pub metadata_max_age_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            fetch_min_bytes: 1,
            fetch_max_wait_ms: 500,
            auto_offset_reset: AutoOffsetReset::Latest,
            group: None,
            client_rack: String::new(),
            metadata_max_age_ms: 300_000,
        }
    }
}

/// Where [`Consumer::seek`] moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    Offset(i64),
    /// The log start offset.
    Beginning,
    /// The log end offset: only records appended from now on.
    End,
    /// The first record with a timestamp at or after this (ms); the end if there is none.
    Timestamp(i64),
}

/// One record as read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch: create time, or the broker's append time for batches with
    /// log-append-time.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

type Tp = (String, i32);
/// Partitions (with their fetch positions) grouped by the address of their leader.
type ByLeader = BTreeMap<String, (Arc<Connection>, Vec<(Tp, i64)>)>;

#[derive(Debug, Default)]
struct PartitionState {
    /// The next offset to hand out; `None` until resolved.
    position: Option<i64>,
    /// Left alone until the next `seek` (OFFSET_OUT_OF_RANGE with no reset policy).
    failed: bool,
    /// Given by the group; not fetched until its committed offset is read.
    awaiting_committed: bool,
    /// The follower the leader sent us to (KIP-392) and when to go back to the leader. Set only
    /// while the next fetch of this partition goes to that broker.
    preferred: Option<(i32, Instant)>,
}

/// A consumer of explicitly assigned partitions (see the module doc).
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    partitions: BTreeMap<Tp, PartitionState>,
    /// Topics whose metadata is to be refreshed before the next round.
    stale_topics: BTreeSet<String>,
    /// Errors of individual partitions not yet returned (returned by the next `poll`).
    pending_errors: VecDeque<ClientError>,
    /// Group membership and commits; created on first use when `config.group` is set.
    group: Option<group::GroupState>,
}

impl Consumer {
    pub fn new(cluster: Arc<Cluster>, config: ConsumerConfig) -> Consumer {
        Consumer {
            cluster,
            config,
            partitions: BTreeMap::new(),
            stale_topics: BTreeSet::new(),
            pending_errors: VecDeque::new(),
            group: None,
        }
    }

    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Replaces the assignment. Partitions kept from the previous assignment keep their
    /// position; new ones start unset (resolved per `auto_offset_reset`).
    pub fn assign(&mut self, partitions: &[(String, i32)]) {
        let mut next = BTreeMap::new();
        for tp in partitions {
            let state = self.partitions.remove(tp).unwrap_or_default();
            next.insert(tp.clone(), state);
        }
        self.partitions = next;
        self.pending_errors.clear();
    }

    /// The assigned partitions, in order.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.partitions.keys().cloned().collect()
    }

    /// The next offset `poll` will hand out for the partition, if known.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.partitions
            .get(&(topic.to_string(), partition))?
            .position
    }

    /// Moves an assigned partition's position; returns the new position.
    pub async fn seek(&mut self, topic: &str, partition: i32, to: SeekTo) -> Result<i64> {
        let tp = (topic.to_string(), partition);
        if !self.partitions.contains_key(&tp) {
            return Err(ClientError::Invalid(format!(
                "cannot seek {topic}/{partition}: it is not assigned"
            )));
        }
        let offset = match to {
            SeekTo::Offset(o) if o < 0 => {
                return Err(ClientError::Invalid(format!(
                    "cannot seek {topic}/{partition} to negative offset {o}"
                )))
            }
            SeekTo::Offset(o) => o,
            SeekTo::Beginning => {
                self.list_offset(topic, partition, EARLIEST_TIMESTAMP)
                    .await?
            }
            SeekTo::End => self.list_offset(topic, partition, LATEST_TIMESTAMP).await?,
            SeekTo::Timestamp(ts) => match self.list_offset(topic, partition, ts).await? {
                -1 => self.list_offset(topic, partition, LATEST_TIMESTAMP).await?,
                o => o,
            },
        };
        if let Some(state) = self.partitions.get_mut(&tp) {
            state.position = Some(offset);
            state.failed = false;
            state.awaiting_committed = false;
        }
        Ok(offset)
    }

    /// Fetches from every assigned partition until some records arrive or `timeout` passes
    /// (then returns an empty vector). Records of one partition are in offset order.
    ///
    /// Errors: a partition error that cannot be retried (OFFSET_OUT_OF_RANGE without a reset
    /// policy, a malformed record set, an authorization error, ...). Records fetched in the same
    /// round are returned first and the error by the next call.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.maintain_group().await?;
            if let Some(e) = self.pending_errors.pop_front() {
                return Err(e);
            }
            let progress = self.round(deadline).await?;
            if !progress.records.is_empty() {
                return Ok(progress.records);
            }
            if !self.pending_errors.is_empty() {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            if !progress.fetched {
                // Nothing could be fetched (no assignment, or only errors): wait a little.
                tokio::time::sleep_until(deadline.min(now + RETRY_BACKOFF)).await;
            }
        }
    }

    /// An endless stream of records (and errors), polling in rounds of `poll_timeout`.
    pub fn stream(self, poll_timeout: Duration) -> impl Stream<Item = Result<ConsumerRecord>> {
        futures::stream::unfold(
            (self, VecDeque::<ConsumerRecord>::new()),
            move |(mut consumer, mut buffered)| async move {
                loop {
                    if let Some(r) = buffered.pop_front() {
                        return Some((Ok(r), (consumer, buffered)));
                    }
                    match consumer.poll(poll_timeout).await {
                        Ok(records) => buffered.extend(records),
                        Err(e) => return Some((Err(e), (consumer, buffered))),
                    }
                }
            },
        )
    }

    /// One round: refresh stale metadata, resolve unset positions, one Fetch per leader.
    async fn round(&mut self, deadline: Instant) -> Result<Progress> {
        self.refresh_stale().await?;
        self.resolve_positions().await?;

        // Group the fetchable partitions by leader connection.
        let mut by_leader: ByLeader = BTreeMap::new();
        let fetchable: Vec<(Tp, i64)> = self
            .partitions
            .iter()
            .filter(|(_, s)| !s.failed && !s.awaiting_committed)
            .filter_map(|(tp, s)| Some((tp.clone(), s.position?)))
            .collect();
        for (tp, position) in fetchable {
            let source = match self.preferred_connection(&tp).await {
                Some(conn) => Ok(conn),
                None => self.cluster.leader(&tp.0, tp.1).await,
            };
            match source {
                Ok(conn) => {
                    by_leader
                        .entry(conn.addr().to_string())
                        .or_insert_with(|| (conn, Vec::new()))
                        .1
                        .push((tp, position));
                }
                Err(e) => self.note_error(&tp, e),
            }
        }
        if by_leader.is_empty() {
            return Ok(Progress::default());
        }

        let remaining = deadline.saturating_duration_since(Instant::now());
        let max_wait_ms = (remaining.as_millis() as i64)
            .min(i64::from(self.config.fetch_max_wait_ms))
            .max(0) as i32;
        let requests: Vec<_> = by_leader
            .into_values()
            .map(|(conn, parts)| {
                let request = self.fetch_request(&parts, max_wait_ms);
                async move {
                    let result = conn.send(&request).await;
                    (parts, result)
                }
            })
            .collect();
        let answers = futures::future::join_all(requests).await;

        let mut progress = Progress::default();
        for (parts, result) in answers {
            match result {
                Ok((response, _version)) => self.handle_fetch(&parts, response, &mut progress),
                Err(e) => {
                    for (tp, _) in &parts {
                        if !self.leave_preferred(tp) {
                            self.note_error(tp, e.clone());
                        }
                    }
                }
            }
        }
        Ok(progress)
    }

    /// The connection to the partition's preferred follower, if it has one that has not expired
    /// and can be reached; otherwise the preference is dropped (the leader is asked instead).
    async fn preferred_connection(&mut self, tp: &Tp) -> Option<Arc<Connection>> {
        let (broker, until) = self.partitions.get(tp)?.preferred?;
        let addr = self.cluster.metadata().brokers.get(&broker).cloned();
        let conn = match addr {
            Some(addr) if Instant::now() < until => match self.cluster.connection(&addr).await {
                Ok(conn) => Some(conn),
                Err(e) => {
                    tracing::debug!(topic = %tp.0, partition = tp.1, broker, error = %e,
                        "preferred replica unreachable; back to the leader");
                    None
                }
            },
            Some(_) => None,
            None => {
                // A broker the metadata does not know yet: learn it for next time.
                self.stale_topics.insert(tp.0.clone());
                None
            }
        };
        if conn.is_none() {
            self.leave_preferred(tp);
        }
        conn
    }

    /// Forgets a partition's preferred follower: it is fetched from its leader again. Returns
    /// whether it had one.
    fn leave_preferred(&mut self, tp: &Tp) -> bool {
        self.partitions
            .get_mut(tp)
            .and_then(|s| s.preferred.take())
            .is_some()
    }

    fn fetch_request(&self, parts: &[(Tp, i64)], max_wait_ms: i32) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for ((topic, partition), position) in parts {
            let mut p = FetchPartition::default();
            p.partition = *partition;
            p.current_leader_epoch = -1;
            p.fetch_offset = *position;
            p.log_start_offset = -1;
            p.partition_max_bytes = self.config.max_partition_fetch_bytes;
            match topics.last_mut().filter(|t| &*t.topic.0 == topic.as_str()) {
                Some(t) => t.partitions.push(p),
                None => {
                    let mut t = FetchTopic::default();
                    t.topic = TopicName(StrBytes::from_string(topic.clone()));
                    t.partitions.push(p);
                    topics.push(t);
                }
            }
        }
        let mut request = FetchRequest::default();
        request.replica_id = (-1).into();
        request.max_wait_ms = max_wait_ms;
        request.min_bytes = self.config.fetch_min_bytes;
        request.max_bytes = self.config.fetch_max_bytes;
        request.isolation_level = 0;
        request.session_id = 0;
        request.session_epoch = -1;
        request.topics = topics;
        request.rack_id = StrBytes::from_string(self.config.client_rack.clone());
        request
    }

    fn handle_fetch(
        &mut self,
        parts: &[(Tp, i64)],
        response: kafka_protocol::messages::FetchResponse,
        progress: &mut Progress,
    ) {
        if let Some(e) = ClientError::from_code(response.error_code, "Fetch") {
            for (tp, _) in parts {
                if !self.leave_preferred(tp) {
                    self.note_error(tp, e.clone());
                }
            }
            return;
        }
        let asked: BTreeMap<&Tp, i64> = parts.iter().map(|(tp, p)| (tp, *p)).collect();
        for topic in &response.responses {
            let name = topic.topic.0.to_string();
            for data in &topic.partitions {
                let tp = (name.clone(), data.partition_index);
                // Ignore answers for partitions we did not ask about, or whose position moved.
                let Some(&position) = asked.get(&tp) else {
                    continue;
                };
                if self.partitions.get(&tp).and_then(|s| s.position) != Some(position) {
                    continue;
                }
                let context = format!("fetch {}/{} at offset {position}", tp.0, tp.1);
                if let Some(e) = ClientError::from_code(data.error_code, context) {
                    // From a follower: back to the leader, whose answer decides (KIP-392).
                    if self.leave_preferred(&tp) {
                        tracing::debug!(topic = %tp.0, partition = tp.1, error = %e,
                            "preferred replica refused; back to the leader");
                    } else {
                        self.partition_error(&tp, e);
                    }
                    continue;
                }
                if data.preferred_read_replica.0 >= 0 {
                    let broker = data.preferred_read_replica.0;
                    let until =
                        Instant::now() + Duration::from_millis(self.config.metadata_max_age_ms);
                    if let Some(state) = self.partitions.get_mut(&tp) {
                        // A follower naming itself changes nothing; the deadline stays.
                        if state.preferred.map(|(b, _)| b) != Some(broker) {
                            state.preferred = Some((broker, until));
                        }
                    }
                }
                // The broker answered this partition, having waited for data if it had none.
                progress.fetched = true;
                let Some(bytes) = data.records.as_ref() else {
                    continue;
                };
                match decode_records(&tp.0, tp.1, bytes, position) {
                    Ok((records, next)) => {
                        if let Some(state) = self.partitions.get_mut(&tp) {
                            state.position = Some(next.max(position));
                        }
                        progress.records.extend(records);
                    }
                    Err(e) => self.pending_errors.push_back(e),
                }
            }
        }
    }

    /// A partition-level error code from a Fetch response.
    fn partition_error(&mut self, tp: &Tp, e: ClientError) {
        let out_of_range = matches!(
            &e,
            ClientError::Kafka {
                error: ResponseError::OffsetOutOfRange,
                ..
            }
        );
        if out_of_range {
            let policy = self.config.auto_offset_reset;
            if let Some(state) = self.partitions.get_mut(tp) {
                state.position = None;
                if policy == AutoOffsetReset::None {
                    state.failed = true;
                    self.pending_errors.push_back(e);
                }
            }
            return;
        }
        self.note_error(tp, e);
    }

    /// Stale metadata → refresh next round; other retriable errors → retry next round;
    /// everything else is reported.
    fn note_error(&mut self, tp: &Tp, e: ClientError) {
        if e.needs_metadata_refresh() {
            tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, "refreshing metadata");
            self.stale_topics.insert(tp.0.clone());
        } else if e.is_retriable() {
            tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, "retrying");
        } else {
            self.pending_errors.push_back(e);
        }
    }

    async fn refresh_stale(&mut self) -> Result<()> {
        if self.stale_topics.is_empty() {
            return Ok(());
        }
        let topics: Vec<String> = std::mem::take(&mut self.stale_topics).into_iter().collect();
        if let Err(e) = self.cluster.refresh(&topics).await {
            if !e.is_retriable() {
                return Err(e);
            }
            self.stale_topics.extend(topics);
        }
        Ok(())
    }

    /// Resolves unset positions per `auto_offset_reset`, one ListOffsets per partition.
    async fn resolve_positions(&mut self) -> Result<()> {
        let unset: Vec<Tp> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.position.is_none() && !s.failed && !s.awaiting_committed)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in unset {
            let timestamp = match self.config.auto_offset_reset {
                AutoOffsetReset::Earliest => EARLIEST_TIMESTAMP,
                AutoOffsetReset::Latest => LATEST_TIMESTAMP,
                AutoOffsetReset::None => {
                    if let Some(s) = self.partitions.get_mut(&tp) {
                        s.failed = true;
                    }
                    self.pending_errors.push_back(ClientError::Invalid(format!(
                        "{}/{} has no position and auto_offset_reset is none",
                        tp.0, tp.1
                    )));
                    continue;
                }
            };
            match self.list_offset(&tp.0, tp.1, timestamp).await {
                Ok(offset) => {
                    if let Some(s) = self.partitions.get_mut(&tp) {
                        s.position = Some(offset);
                    }
                }
                Err(e) => self.note_error(&tp, e),
            }
        }
        Ok(())
    }

    /// ListOffsets for one partition at its leader: the offset, or -1 if the broker found none.
    async fn list_offset(&self, topic: &str, partition: i32, timestamp: i64) -> Result<i64> {
        let conn = self.cluster.leader(topic, partition).await?;
        let mut p = ListOffsetsPartition::default();
        p.partition_index = partition;
        p.current_leader_epoch = -1;
        p.timestamp = timestamp;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = vec![p];
        let mut request = ListOffsetsRequest::default();
        request.replica_id = (-1).into();
        request.isolation_level = 0;
        request.timeout_ms = 0;
        request.topics = vec![t];
        let (response, _) = conn.send(&request).await?;
        let answer = response
            .topics
            .iter()
            .filter(|t| &*t.name.0 == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| ClientError::Malformed {
                api: "ListOffsets",
                reason: format!("no answer for {topic}/{partition}"),
            })?;
        let context = format!("list offsets of {topic}/{partition} at {timestamp}");
        if let Some(e) = ClientError::from_code(answer.error_code, context) {
            return Err(e);
        }
        if answer.offset < -1 {
            return Err(ClientError::Malformed {
                api: "ListOffsets",
                reason: format!("offset {} for {topic}/{partition}", answer.offset),
            });
        }
        Ok(answer.offset)
    }
}

#[derive(Default)]
struct Progress {
    /// Whether at least one partition was answered without error (so the broker already
    /// waited up to `max_wait_ms`); if not, `poll` backs off before the next round.
    fetched: bool,
    records: Vec<ConsumerRecord>,
}

/// Decodes the complete batches of a fetched record set, keeping records at or after
/// `position`. Returns the records and the position after the last complete batch (never less
/// than `position`). A trailing partial batch is ignored; control records are skipped.
pub fn decode_records(
    topic: &str,
    partition: i32,
    bytes: &Bytes,
    position: i64,
) -> Result<(Vec<ConsumerRecord>, i64)> {
    let malformed = |reason: String| ClientError::Malformed {
        api: "Fetch",
        reason: format!("{topic}/{partition}: {reason}"),
    };
    let mut records = Vec::new();
    let mut next = position;
    let mut batches = BatchIter::new(bytes);
    for (at, header) in &mut batches {
        if header.magic() != 2 {
            return Err(malformed(format!(
                "record batch magic {} at offset {} (only v2 is supported)",
                header.magic(),
                header.base_offset()
            )));
        }
        let last_offset = header.last_offset();
        if last_offset < position {
            continue;
        }
        if header.is_control() {
            next = next.max(last_offset.saturating_add(1));
            continue;
        }
        // Record offsets are base + an i32 delta: refuse bases where that could overflow.
        if header.base_offset() < 0 || header.base_offset() > i64::MAX - i64::from(i32::MAX) {
            return Err(malformed(format!(
                "batch base offset {} is out of range",
                header.base_offset()
            )));
        }
        let mut slice = bytes.slice(at..at + header.total_bytes());
        // The (patched) decoder wraps untrusted deltas rather than panicking.
        let set = RecordBatchDecoder::decode(&mut slice)
            .map_err(|e| malformed(format!("batch at offset {}: {e:#}", header.base_offset())))?;
        let log_append_time = header.is_log_append_time();
        for r in set.records {
            if r.offset < position || r.control {
                continue;
            }
            next = next.max(r.offset.saturating_add(1));
            records.push(ConsumerRecord {
                topic: topic.to_string(),
                partition,
                offset: r.offset,
                timestamp: if log_append_time {
                    header.max_timestamp()
                } else {
                    r.timestamp
                },
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            });
        }
        next = next.max(last_offset.saturating_add(1));
    }
    Ok((records, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use strata_protocol::record_batch::build_batch;

    fn concat(parts: &[&[u8]]) -> Bytes {
        Bytes::from(parts.concat())
    }

    #[test]
    fn decodes_complete_batches_and_ignores_a_trailing_partial_one() {
        let a = build_batch(0, 1000, &[(Some(b"k0"), b"v0"), (None, b"v1")]);
        let b = build_batch(2, 2000, &[(Some(b"k2"), b"v2")]);
        let c = build_batch(3, 3000, &[(Some(b"k3"), b"v3")]);
        for cut in [1, 12, 61, c.len() - 1] {
            let bytes = concat(&[&a, &b, &c[..cut]]);
            let (records, next) = decode_records("t", 0, &bytes, 0).unwrap();
            assert_eq!(records.len(), 3, "cut {cut}");
            assert_eq!(next, 3, "cut {cut}");
            assert_eq!(records[0].key.as_deref(), Some(&b"k0"[..]));
            assert_eq!(records[1].key, None);
            assert_eq!(records[1].value.as_deref(), Some(&b"v1"[..]));
            assert_eq!(records[2].offset, 2);
            assert_eq!(records[2].timestamp, 2000);
        }
        let (records, next) = decode_records("t", 0, &concat(&[&a, &b, &c]), 0).unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(next, 4);
    }

    #[test]
    fn skips_records_before_the_position() {
        let a = build_batch(10, 0, &[(None, b"a"), (None, b"b"), (None, b"c")]);
        let b = build_batch(13, 0, &[(None, b"d")]);
        let bytes = concat(&[&a, &b]);
        let (records, next) = decode_records("t", 1, &bytes, 12).unwrap();
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![12, 13]);
        assert_eq!(next, 14);
        // Everything before the position: nothing delivered, the position stays.
        let (records, next) = decode_records("t", 1, &bytes, 20).unwrap();
        assert!(records.is_empty());
        assert_eq!(next, 20);
    }

    #[test]
    fn empty_or_garbage_input_never_panics() {
        let (records, next) = decode_records("t", 0, &Bytes::new(), 5).unwrap();
        assert!(records.is_empty());
        assert_eq!(next, 5);
        let mut bad = build_batch(0, 0, &[(None, b"value")]).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // breaks the CRC
        assert!(decode_records("t", 0, &Bytes::from(bad), 0).is_err());
        for len in 0..80 {
            let junk = Bytes::from(vec![0xffu8; len]);
            let _ = decode_records("t", 0, &junk, 0);
        }
    }

    /// Rewrites the CRC of a v2 batch after its bytes were changed.
    fn fix_crc(batch: &mut [u8]) {
        let crc = strata_protocol::record_batch::BatchHeader::parse(batch)
            .unwrap()
            .computed_crc();
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn overflowing_offsets_and_timestamps_are_malformed_not_panics() {
        let batch = build_batch(i64::MAX - 1, 0, &[(None, b"a"), (None, b"b"), (None, b"c")]);
        let err = decode_records("t", 0, &batch, 0).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");

        // A record whose timestamp delta (+1) overflows a base timestamp of i64::MAX.
        let mut batch = build_batch(0, i64::MAX, &[(None, b"a")]).to_vec();
        // Record: length varint (1 byte), attributes, then the timestamp delta varlong.
        assert_eq!(batch[61 + 2], 0);
        batch[61 + 2] = 2; // zigzag(1)
        fix_crc(&mut batch);
        // The decoder wraps the timestamp (as Kafka does); it must not panic.
        let (records, _) = decode_records("t", 0, &Bytes::from(batch), 0).unwrap();
        assert_eq!(records[0].timestamp, i64::MIN);
    }

    #[test]
    fn decodes_compressed_batches_with_headers() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records: Vec<Record> = (0..5)
                .map(|i| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: 100 + i,
                    sequence: -1,
                    timestamp: 5000 + i,
                    key: Some(Bytes::from(format!("k{i}"))),
                    value: Some(Bytes::from(format!("v{i}"))),
                    headers: [(StrBytes::from_static_str("h"), Some(Bytes::from("x")))]
                        .into_iter()
                        .collect(),
                })
                .collect();
            let mut buf = bytes::BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                &records,
                &RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .unwrap();
            let bytes = buf.freeze();
            let (got, next) = decode_records("t", 0, &bytes, 102).unwrap();
            assert_eq!(next, 105, "{compression:?}");
            let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, vec![102, 103, 104], "{compression:?}");
            assert_eq!(got[0].value.as_deref(), Some(&b"v2"[..]));
            assert_eq!(got[0].timestamp, 5002);
            assert_eq!(
                got[0].headers,
                vec![("h".to_string(), Some(Bytes::from("x")))]
            );
        }
    }
}
