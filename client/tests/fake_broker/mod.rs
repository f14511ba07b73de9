//! A scripted fake broker for client tests: a tokio TCP server on 127.0.0.1:0 that decodes
//! request frames with `strata_protocol::api::decode_request` and answers each from a per-test
//! script (a closure given every decoded request), falling back to simple built-in behaviour:
//!
//! - ApiVersions: `SUPPORTED_APIS`;
//! - Metadata: the shared [`View`] (brokers, topics, partition leaders), which tests change;
//! - Produce: appends each batch to the broker's in-memory log, assigns dense offsets;
//! - Fetch: the batches of the log from the fetch offset (empty after a short wait);
//! - ListOffsets: -2 → the log start, anything else → the log end.
//!
//! Every request is recorded (API, connection index, decoded body) so tests can check what the
//! client sent. Requests are read as they arrive (a client may pipeline) and answered in order,
//! one at a time, as Kafka does. Produce checks idempotent producers' sequences like Kafka
//! (duplicates of the last 5 batches are not appended; gaps get OUT_OF_ORDER_SEQUENCE_NUMBER;
//! InitProducerId hands out ids from 1001, and with an id bumps its epoch).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, InitProducerIdResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataResponse, ProduceRequest, ProduceResponse,
    ProducerId, TopicName,
};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use strata_protocol::api::{decode_request, encode_response, DecodedRequest, Request};
use strata_protocol::record_batch::BatchIter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The bound on any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(15);

/// Awaits `f`, failing the test if it takes longer than [`WAIT`].
pub async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {WAIT:?}"),
    }
}

/// Polls `cond` every 10 ms until it holds, failing the test after [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cluster as every fake broker describes it in Metadata answers.
#[derive(Default)]
struct ViewState {
    /// Broker id → port on 127.0.0.1.
    brokers: BTreeMap<i32, u16>,
    /// Topic → leader of each partition (index = partition).
    topics: BTreeMap<String, Vec<i32>>,
}

/// Shared, mutable cluster view; cheap to clone.
#[derive(Clone, Default)]
pub struct View(Arc<Mutex<ViewState>>);

impl View {
    pub fn new() -> View {
        View::default()
    }

    /// Creates or replaces a topic whose partition `i` is led by `leaders[i]`.
    pub fn set_topic(&self, topic: &str, leaders: &[i32]) {
        lock(&self.0)
            .topics
            .insert(topic.to_string(), leaders.to_vec());
    }

    pub fn set_leader(&self, topic: &str, partition: i32, leader: i32) {
        let mut st = lock(&self.0);
        let leaders = st.topics.get_mut(topic).expect("unknown topic in view");
        leaders[partition as usize] = leader;
    }

    /// The Metadata answer to `requested` topics (`None`: every topic).
    pub fn metadata(&self, requested: Option<Vec<String>>) -> MetadataResponse {
        let st = lock(&self.0);
        let mut r = MetadataResponse::default();
        r.cluster_id = Some(StrBytes::from_static_str("fake-cluster"));
        r.controller_id = BrokerId(*st.brokers.keys().next().unwrap_or(&-1));
        r.brokers = st
            .brokers
            .iter()
            .map(|(&id, &port)| {
                let mut b = MetadataResponseBroker::default();
                b.node_id = BrokerId(id);
                b.host = StrBytes::from_static_str("127.0.0.1");
                b.port = i32::from(port);
                b
            })
            .collect();
        let names: Vec<String> = requested.unwrap_or_else(|| st.topics.keys().cloned().collect());
        r.topics = names
            .into_iter()
            .map(|name| {
                let mut t = MetadataResponseTopic::default();
                t.name = Some(TopicName(StrBytes::from_string(name.clone())));
                match st.topics.get(&name) {
                    None => t.error_code = 3, // UNKNOWN_TOPIC_OR_PARTITION
                    Some(leaders) => {
                        t.partitions = leaders
                            .iter()
                            .enumerate()
                            .map(|(i, &leader)| {
                                let mut p = MetadataResponsePartition::default();
                                p.partition_index = i as i32;
                                p.leader_id = BrokerId(leader);
                                p.leader_epoch = 0;
                                p.replica_nodes = vec![BrokerId(leader)];
                                p.isr_nodes = vec![BrokerId(leader)];
                                p
                            })
                            .collect()
                    }
                }
                t
            })
            .collect();
        r
    }
}

/// One request as the script sees it.
pub struct Call<'a> {
    /// The id of the broker answering.
    pub broker: i32,
    /// Index (from 0) of the connection on this broker, in accept order.
    pub connection: usize,
    /// How many requests of this API this broker received before this one (all connections).
    pub nth: usize,
    pub request: &'a DecodedRequest,
    pub view: &'a View,
}

impl Call<'_> {
    pub fn api(&self) -> ApiKey {
        self.request.api_key
    }
    pub fn correlation_id(&self) -> i32 {
        self.request.correlation_id()
    }
    pub fn version(&self) -> i16 {
        self.request.version()
    }
    /// The response frame (size prefix included) for this request.
    pub fn frame<R: Encodable + HeaderVersion>(&self, body: &R) -> Bytes {
        encode_response(self.correlation_id(), self.version(), body).expect("encode response")
    }
    /// A response frame for this request under another correlation id.
    pub fn frame_with_correlation<R: Encodable + HeaderVersion>(&self, id: i32, body: &R) -> Bytes {
        encode_response(id, self.version(), body).expect("encode response")
    }
    pub fn produce(&self) -> &ProduceRequest {
        match &self.request.body {
            Request::Produce(r) => r,
            other => panic!("not a produce request: {other:?}"),
        }
    }
    pub fn fetch(&self) -> &FetchRequest {
        match &self.request.body {
            Request::Fetch(r) => r,
            other => panic!("not a fetch request: {other:?}"),
        }
    }
    /// A Produce answer giving `error_code` to every partition of the request.
    pub fn produce_error(&self, error_code: i16) -> Reply {
        Reply::Produce(produce_error(self.produce(), error_code))
    }
    /// A Fetch answer giving `error_code` to every partition of the request.
    pub fn fetch_error(&self, error_code: i16) -> Reply {
        let r = self.fetch();
        let mut resp = FetchResponse::default();
        resp.responses = r
            .topics
            .iter()
            .map(|t| {
                let mut tr = FetchableTopicResponse::default();
                tr.topic = t.topic.clone();
                tr.partitions = t
                    .partitions
                    .iter()
                    .map(|p| fetch_partition(p.partition, error_code, -1, None))
                    .collect();
                tr
            })
            .collect();
        Reply::Fetch(resp)
    }
}

pub fn produce_error(r: &ProduceRequest, error_code: i16) -> ProduceResponse {
    let mut resp = ProduceResponse::default();
    resp.responses = r
        .topic_data
        .iter()
        .map(|t| {
            let mut tr = TopicProduceResponse::default();
            tr.name = t.name.clone();
            tr.partition_responses = t
                .partition_data
                .iter()
                .map(|p| {
                    let mut pr = PartitionProduceResponse::default();
                    pr.index = p.index;
                    pr.error_code = error_code;
                    pr.base_offset = -1;
                    pr
                })
                .collect();
            tr
        })
        .collect();
    resp
}

/// One partition of a Fetch answer.
pub fn fetch_partition(
    partition: i32,
    error_code: i16,
    high_watermark: i64,
    records: Option<Bytes>,
) -> PartitionData {
    let mut p = PartitionData::default();
    p.partition_index = partition;
    p.error_code = error_code;
    p.high_watermark = high_watermark;
    p.last_stable_offset = high_watermark;
    p.log_start_offset = 0;
    p.records = records;
    p
}

/// A Fetch answer for one partition.
pub fn fetch_response(topic: &str, part: PartitionData) -> FetchResponse {
    let mut tr = FetchableTopicResponse::default();
    tr.topic = TopicName(StrBytes::from_string(topic.to_string()));
    tr.partitions = vec![part];
    let mut resp = FetchResponse::default();
    resp.responses = vec![tr];
    resp
}

/// What the broker does with one request.
pub enum Reply {
    /// The built-in behaviour (see the module doc).
    Default,
    Produce(ProduceResponse),
    Fetch(FetchResponse),
    ListOffsets(ListOffsetsResponse),
    Metadata(MetadataResponse),
    /// These bytes are written as they are; the connection stays open.
    Raw(Bytes),
    /// These bytes are written, then the connection is closed.
    RawThenClose(Bytes),
    /// The connection is closed without an answer.
    Close,
    /// The built-in behaviour (a produce is appended), then the connection is closed without
    /// the answer: a write whose acknowledgement is lost.
    DefaultThenClose,
    /// No answer, to this or any later request of this connection (a stuck broker).
    Silence,
    /// Waits, then does the inner reply.
    Delay(Duration, Box<Reply>),
}

pub type Script = Arc<dyn Fn(&Call) -> Reply + Send + Sync>;

/// A script that always uses the built-in behaviour.
pub fn default_script() -> Script {
    Arc::new(|_| Reply::Default)
}

/// One batch in a fake broker's log.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    pub base_offset: i64,
    /// The batch bytes with the base offset patched in.
    pub bytes: Bytes,
}

impl StoredBatch {
    pub fn values(&self) -> Vec<String> {
        batch_values(&self.bytes)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.values().len() as i64 - 1
    }
}

/// The record values of one v2 batch, as UTF-8 strings ("<null>" for a null value).
pub fn batch_values(bytes: &Bytes) -> Vec<String> {
    let mut b = bytes.clone();
    RecordBatchDecoder::decode(&mut b)
        .expect("decodable batch")
        .records
        .into_iter()
        .map(|r| match r.value {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => "<null>".to_string(),
        })
        .collect()
}

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub connection: usize,
    pub request: DecodedRequest,
}

#[derive(Default)]
struct BrokerState {
    requests: Vec<Recorded>,
    connections: usize,
    /// (topic, partition) → batches appended, and the next offset.
    logs: BTreeMap<(String, i32), (Vec<StoredBatch>, i64)>,
    /// (topic, partition) → the idempotent producer writing there (one per partition here).
    producers: BTreeMap<(String, i32), ProducerEntry>,
    /// Producer ids handed out by InitProducerId so far.
    producer_ids: i64,
    /// Produce requests received and not answered yet, and the most there ever were.
    produce_in_flight: usize,
    produce_in_flight_max: usize,
}

/// What the fake broker remembers of an idempotent producer on one partition, like Kafka:
/// its epoch and its last (up to 5) batches as (first sequence, last sequence, base offset).
#[derive(Debug, Clone)]
struct ProducerEntry {
    producer_id: i64,
    epoch: i16,
    batches: std::collections::VecDeque<(i32, i32, i64)>,
}

/// Kafka error codes the fake broker's sequence checks answer with.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const UNKNOWN_PRODUCER_ID: i16 = 59;

struct Inner {
    id: i32,
    view: View,
    script: Script,
    state: Mutex<BrokerState>,
}

/// A fake broker listening on 127.0.0.1; stops accepting when dropped.
pub struct FakeBroker {
    pub id: i32,
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    accept: JoinHandle<()>,
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeBroker {
    /// Starts broker `id`, registers it in `view` and answers with `script`.
    pub async fn start(id: i32, view: &View, script: Script) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        lock(&view.0).brokers.insert(id, addr.port());
        let inner = Arc::new(Inner {
            id,
            view: view.clone(),
            script,
            state: Mutex::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&inner)));
        FakeBroker {
            id,
            addr,
            inner,
            accept,
        }
    }

    /// HOST:PORT, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.inner.state).connections
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner.state).requests.clone()
    }

    /// The requests of one API.
    pub fn requests_of(&self, key: ApiKey) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.request.api_key == key)
            .collect()
    }

    pub fn count(&self, key: ApiKey) -> usize {
        self.requests_of(key).len()
    }

    /// The batches appended to a partition's log (by Produce or [`FakeBroker::append`]).
    pub fn log(&self, topic: &str, partition: i32) -> Vec<StoredBatch> {
        lock(&self.inner.state)
            .logs
            .get(&(topic.to_string(), partition))
            .map(|(b, _)| b.clone())
            .unwrap_or_default()
    }

    /// Record values of a partition's log, per batch.
    pub fn logged_values(&self, topic: &str, partition: i32) -> Vec<Vec<String>> {
        self.log(topic, partition)
            .iter()
            .map(StoredBatch::values)
            .collect()
    }

    /// Appends a batch as a Produce would; returns its base offset.
    pub fn append(&self, topic: &str, partition: i32, batch: Bytes) -> i64 {
        append(&self.inner, topic, partition, batch)
    }

    /// The most produce requests this broker had received and not yet answered at once.
    pub fn max_produce_in_flight(&self) -> usize {
        lock(&self.inner.state).produce_in_flight_max
    }

    /// Forgets every idempotent producer (as Kafka does once their records expire): their
    /// next batch gets UNKNOWN_PRODUCER_ID.
    pub fn forget_producers(&self) {
        lock(&self.inner.state).producers.clear();
    }

    /// Appends a produce request's record set with Kafka's idempotence checks: (error code,
    /// base offset). A duplicate of one of the producer's last 5 batches is not appended and
    /// gets its original base offset.
    pub fn produce(&self, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
        produce(&self.inner, topic, partition, records)
    }

    /// Sets where a partition's log starts (ListOffsets earliest) when it is still empty.
    pub fn set_log_start(&self, topic: &str, partition: i32, offset: i64) {
        let mut st = lock(&self.inner.state);
        let log = st
            .logs
            .entry((topic.to_string(), partition))
            .or_insert((Vec::new(), 0));
        assert!(log.0.is_empty(), "set_log_start on a non-empty log");
        log.1 = offset;
    }
}

fn produce(inner: &Inner, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
    let Some((_, header)) = BatchIter::new(&records).next() else {
        return (2, -1); // CORRUPT_MESSAGE
    };
    let (producer_id, epoch) = (header.producer_id(), header.producer_epoch());
    let first = header.base_sequence();
    let last = if first > i32::MAX - header.last_offset_delta() {
        header.last_offset_delta() - (i32::MAX - first) - 1
    } else {
        first + header.last_offset_delta()
    };
    if producer_id < 0 {
        return (0, append(inner, topic, partition, records));
    }
    let key = (topic.to_string(), partition);
    let known = lock(&inner.state).producers.get(&key).cloned();
    let expected = match known {
        Some(p) if p.producer_id == producer_id && epoch < p.epoch => {
            return (INVALID_PRODUCER_EPOCH, -1);
        }
        Some(p) if p.producer_id == producer_id && epoch == p.epoch => {
            if let Some(&(_, _, base)) = p.batches.iter().find(|b| b.0 == first && b.1 == last) {
                return (0, base); // a duplicate: already written
            }
            let (_, prev_last, _) = p.batches.back().copied().unwrap_or((0, -1, 0));
            if prev_last == i32::MAX {
                0
            } else {
                prev_last + 1
            }
        }
        // A new epoch (or producer id) starts at sequence 0.
        Some(_) => 0,
        None if first != 0 => return (UNKNOWN_PRODUCER_ID, -1),
        None => 0,
    };
    if first != expected {
        return (OUT_OF_ORDER_SEQUENCE_NUMBER, -1);
    }
    let base = append(inner, topic, partition, records);
    let mut st = lock(&inner.state);
    let entry = st.producers.entry(key).or_insert(ProducerEntry {
        producer_id,
        epoch,
        batches: Default::default(),
    });
    if entry.producer_id != producer_id || entry.epoch != epoch {
        *entry = ProducerEntry {
            producer_id,
            epoch,
            batches: Default::default(),
        };
    }
    entry.batches.push_back((first, last, base));
    if entry.batches.len() > 5 {
        entry.batches.pop_front();
    }
    (0, base)
}

/// Appends the batches of a record set, patching dense base offsets; returns the first base.
fn append(inner: &Inner, topic: &str, partition: i32, records: Bytes) -> i64 {
    let mut st = lock(&inner.state);
    let log = st
        .logs
        .entry((topic.to_string(), partition))
        .or_insert((Vec::new(), 0));
    let first = log.1;
    let mut batches = BatchIter::new(&records);
    let spans: Vec<(usize, usize, i32)> = (&mut batches)
        .map(|(at, h)| (at, h.total_bytes(), h.last_offset_delta()))
        .collect();
    for (at, len, last_delta) in spans {
        let mut bytes = records[at..at + len].to_vec();
        let base = log.1;
        strata_protocol::record_batch::patch_batch(&mut bytes, base, 0);
        log.0.push(StoredBatch {
            base_offset: base,
            bytes: Bytes::from(bytes),
        });
        log.1 = base + i64::from(last_delta) + 1;
    }
    first
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let index = {
            let mut st = lock(&inner.state);
            st.connections += 1;
            st.connections - 1
        };
        tokio::spawn(serve(stream, index, Arc::clone(&inner)));
    }
}

enum Action {
    Write(Bytes),
    WriteThenClose(Bytes),
    Close,
    Silence,
}

/// Reads (and records) requests as they arrive, so a client may pipeline; answers them in
/// order, one at a time, as Kafka does.
async fn serve(stream: TcpStream, connection: usize, inner: Arc<Inner>) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(read_requests(rd, connection, Arc::clone(&inner), tx));
    let _stop_reader = AbortOnDrop(reader);
    let mut silent = false;
    while let Some((request, nth)) = rx.recv().await {
        let request: DecodedRequest = request;
        let is_produce = request.api_key == ApiKey::Produce;
        let answered = || {
            if is_produce {
                let mut st = lock(&inner.state);
                st.produce_in_flight = st.produce_in_flight.saturating_sub(1);
            }
        };
        if silent {
            continue;
        }
        let call = Call {
            broker: inner.id,
            connection,
            nth,
            request: &request,
            view: &inner.view,
        };
        let mut reply = (inner.script)(&call);
        loop {
            match reply {
                Reply::Delay(d, next) => {
                    tokio::time::sleep(d).await;
                    reply = *next;
                }
                other => {
                    reply = other;
                    break;
                }
            }
        }
        let action = match reply {
            Reply::Default => Action::Write(default_reply(&inner, &call).await),
            Reply::Produce(r) => Action::Write(call.frame(&r)),
            Reply::Fetch(r) => Action::Write(call.frame(&r)),
            Reply::ListOffsets(r) => Action::Write(call.frame(&r)),
            Reply::Metadata(r) => Action::Write(call.frame(&r)),
            Reply::Raw(b) => Action::Write(b),
            Reply::RawThenClose(b) => Action::WriteThenClose(b),
            Reply::Close => Action::Close,
            Reply::DefaultThenClose => {
                default_reply(&inner, &call).await;
                Action::Close
            }
            Reply::Silence => Action::Silence,
            Reply::Delay(..) => unreachable!(),
        };
        match action {
            Action::Write(b) => {
                answered();
                if wr.write_all(&b).await.is_err() {
                    return;
                }
            }
            Action::WriteThenClose(b) => {
                answered();
                let _ = wr.write_all(&b).await;
                let _ = wr.flush().await;
                return;
            }
            Action::Close => return,
            Action::Silence => silent = true,
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_requests(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    connection: usize,
    inner: Arc<Inner>,
    tx: tokio::sync::mpsc::UnboundedSender<(DecodedRequest, usize)>,
) {
    loop {
        let mut size = [0u8; 4];
        if rd.read_exact(&mut size).await.is_err() {
            return;
        }
        let size = i32::from_be_bytes(size);
        if !(0..=64 << 20).contains(&size) {
            return;
        }
        let mut body = vec![0u8; size as usize];
        if rd.read_exact(&mut body).await.is_err() {
            return;
        }
        let Ok(request) = decode_request(Bytes::from(body)) else {
            return; // as a Kafka broker does
        };
        let nth = {
            let mut st = lock(&inner.state);
            let nth = st
                .requests
                .iter()
                .filter(|r| r.request.api_key == request.api_key)
                .count();
            st.requests.push(Recorded {
                connection,
                request: request.clone(),
            });
            if request.api_key == ApiKey::Produce {
                st.produce_in_flight += 1;
                st.produce_in_flight_max = st.produce_in_flight_max.max(st.produce_in_flight);
            }
            nth
        };
        if tx.send((request, nth)).is_err() {
            return;
        }
    }
}

async fn default_reply(inner: &Inner, call: &Call<'_>) -> Bytes {
    match &call.request.body {
        Request::ApiVersions(_) => {
            let mut r = ApiVersionsResponse::default();
            r.api_keys = strata_protocol::api::SUPPORTED_APIS
                .iter()
                .map(|a| {
                    let mut v = ApiVersion::default();
                    v.api_key = a.key as i16;
                    v.min_version = a.min_version;
                    v.max_version = a.max_version;
                    v
                })
                .collect();
            call.frame(&r)
        }
        Request::Metadata(m) => {
            let requested = m.topics.as_ref().map(|ts| {
                ts.iter()
                    .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                    .collect()
            });
            call.frame(&inner.view.metadata(requested))
        }
        Request::Produce(p) => {
            let mut resp = ProduceResponse::default();
            for t in &p.topic_data {
                let mut tr = TopicProduceResponse::default();
                tr.name = t.name.clone();
                for pd in &t.partition_data {
                    let records = pd.records.clone().unwrap_or_default();
                    let (error_code, base) = produce(inner, &t.name.0, pd.index, records);
                    let mut pr = PartitionProduceResponse::default();
                    pr.index = pd.index;
                    pr.error_code = error_code;
                    pr.base_offset = base;
                    tr.partition_responses.push(pr);
                }
                resp.responses.push(tr);
            }
            call.frame(&resp)
        }
        Request::Fetch(f) => {
            let mut resp = FetchResponse::default();
            let mut any = false;
            for t in &f.topics {
                let mut tr = FetchableTopicResponse::default();
                tr.topic = t.topic.clone();
                for p in &t.partitions {
                    let st = lock(&inner.state);
                    let (batches, end) = st
                        .logs
                        .get(&(t.topic.0.to_string(), p.partition))
                        .cloned()
                        .unwrap_or_default();
                    drop(st);
                    let mut bytes = Vec::new();
                    for b in batches.iter().filter(|b| b.last_offset() >= p.fetch_offset) {
                        bytes.extend_from_slice(&b.bytes);
                    }
                    any |= !bytes.is_empty();
                    tr.partitions.push(fetch_partition(
                        p.partition,
                        0,
                        end,
                        Some(Bytes::from(bytes)),
                    ));
                }
                resp.responses.push(tr);
            }
            if !any {
                // Hold an empty fetch a little, as a broker waits for min_bytes.
                let wait = f.max_wait_ms.clamp(0, 50) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            call.frame(&resp)
        }
        Request::ListOffsets(l) => call.frame(&list_offsets(inner, l)),
        Request::InitProducerId(r) => {
            let mut st = lock(&inner.state);
            let mut resp = InitProducerIdResponse::default();
            if r.producer_id.0 >= 0 {
                // KIP-360: the same id, the next epoch.
                resp.producer_id = r.producer_id;
                resp.producer_epoch = r.producer_epoch + 1;
            } else {
                st.producer_ids += 1;
                resp.producer_id = ProducerId(1000 + st.producer_ids);
                resp.producer_epoch = 0;
            }
            call.frame(&resp)
        }
        other => panic!("fake broker has no default for {other:?}"),
    }
}

fn list_offsets(inner: &Inner, l: &ListOffsetsRequest) -> ListOffsetsResponse {
    let st = lock(&inner.state);
    let mut resp = ListOffsetsResponse::default();
    for t in &l.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let (batches, end) = st
                .logs
                .get(&(t.name.0.to_string(), p.partition_index))
                .cloned()
                .unwrap_or_default();
            let start = batches.first().map_or(end, |b| b.base_offset);
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.timestamp = -1;
            pr.offset = if p.timestamp == -2 { start } else { end };
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

/// A client config for `bootstrap` with short, test-sized timeouts.
pub fn client_config(bootstrap: &str) -> strata_client::ClientConfig {
    let mut c = strata_client::ClientConfig::new(bootstrap);
    c.connection.connect_timeout = Duration::from_secs(2);
    c.connection.request_timeout = Duration::from_secs(3);
    c
}
