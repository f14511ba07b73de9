//! Prometheus metrics: a small recorder behind the `metrics` facade, the names of every metric
//! the broker records ([`NAMES`]), and a tiny HTTP/1.1 listener that answers `GET /metrics`.
//!
//! Off unless `metrics.listener` (`--metrics-listen`) is set: then [`start`] installs the
//! recorder (once per process) before any partition opens, and serves it.
//!
//! Invariants:
//! - Nothing on the produce or fetch path allocates or locks for metrics. Handles are registered
//!   once (per API and [`ReplicationMetrics`] at install, per topic when a partition opens, see
//!   [`TopicMetrics`]) and then
//!   only touched with atomic adds. Without the recorder those paths do one `OnceLock` load and
//!   skip even reading the clock.
//! - The recorder's lock is taken only to register a handle and to render a scrape.
//! - The HTTP listener answers one request per connection and closes it: at most
//!   [`SCRAPE_CONNECTIONS_MAX`] at once, a request of at most [`SCRAPE_REQUEST_BYTES_MAX`] read
//!   within [`SCRAPE_REQUEST_TIME_MAX`]; a malformed request line gets 400, another path 404,
//!   another method 405. Nothing a peer sends can panic it or reach the Kafka listener.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use ::metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use strata_protocol::api::SUPPORTED_APIS;
use strata_protocol::record_batch::BatchHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Requests received, by API (label `api`, Kafka's name of it: `Produce`, `Fetch`, ...).
pub const REQUESTS_TOTAL: &str = "strata_requests_total";
/// Seconds from a request's dispatch to its response written (label `api`): includes waiting
/// for an `acks=-1` flush or a long-polling fetch.
pub const REQUEST_SECONDS: &str = "strata_request_duration_seconds";
/// Record-set bytes appended by Produce, by topic (label `topic`).
pub const TOPIC_BYTES_IN_TOTAL: &str = "strata_topic_bytes_in_total";
/// Records appended by Produce, by topic (label `topic`); a retried idempotent batch counts again.
pub const TOPIC_RECORDS_IN_TOTAL: &str = "strata_topic_records_in_total";
/// Record-set bytes returned by Fetch, by topic (label `topic`).
pub const TOPIC_BYTES_OUT_TOTAL: &str = "strata_topic_bytes_out_total";
/// Records returned by Fetch, by topic (label `topic`), from the batch headers.
pub const TOPIC_RECORDS_OUT_TOTAL: &str = "strata_topic_records_out_total";
/// Seconds one partition flush (msync of its unflushed segments) takes on a flush thread.
pub const FLUSH_SECONDS: &str = "strata_flush_duration_seconds";
/// Kafka connections open now.
pub const CONNECTIONS: &str = "strata_connections";
/// Consumer-group rebalances completed (each new generation of a group).
pub const GROUP_REBALANCES_TOTAL: &str = "strata_group_rebalances_total";
/// 1 while this node is the active controller, else 0.
pub const CONTROLLER_ACTIVE: &str = "strata_controller_active";
/// The offset of the last metadata record this node applied.
pub const CONTROLLER_METADATA_OFFSET: &str = "strata_controller_metadata_offset";
/// Controller elections this node has seen.
pub const CONTROLLER_ELECTIONS_TOTAL: &str = "strata_controller_elections_total";
/// Partitions led here whose ISR is smaller than their replica set.
pub const UNDER_REPLICATED_PARTITIONS: &str = "strata_under_replicated_partitions";
/// Partitions without a live leader (as the metadata image this node holds says).
pub const OFFLINE_PARTITIONS: &str = "strata_offline_partitions";
/// ISR shrinks committed for partitions led here.
pub const ISR_SHRINKS_TOTAL: &str = "strata_isr_shrinks_total";
/// ISR expansions committed for partitions led here.
pub const ISR_EXPANDS_TOTAL: &str = "strata_isr_expands_total";
/// Record-set bytes this broker appended as a follower (copied from leaders).
pub const REPLICATION_BYTES_IN_TOTAL: &str = "strata_replication_bytes_in_total";
/// Record-set bytes this broker returned to followers' fetches.
pub const REPLICATION_BYTES_OUT_TOTAL: &str = "strata_replication_bytes_out_total";
/// The largest lag in records of any follower of a partition led here (leader's log end minus
/// the follower's). One series per broker, not per partition: the registry never forgets a
/// series, so per-partition gauges would outlive deleted and moved partitions.
pub const FOLLOWER_LAG_RECORDS: &str = "strata_follower_lag_records";
/// The longest time in milliseconds any follower of a partition led here has not been caught
/// up to the leader's log end (what `replica.lag.time.max.ms` is compared with); one series.
pub const FOLLOWER_LAG_MS: &str = "strata_follower_lag_ms";

/// Every metric: its name and the help line a scrape shows.
pub const NAMES: &[(&str, &str)] = &[
    (REQUESTS_TOTAL, "Requests received, by API."),
    (
        REQUEST_SECONDS,
        "Seconds from a request's dispatch to its response written, by API.",
    ),
    (TOPIC_BYTES_IN_TOTAL, "Record bytes produced, by topic."),
    (TOPIC_RECORDS_IN_TOTAL, "Records produced, by topic."),
    (TOPIC_BYTES_OUT_TOTAL, "Record bytes fetched, by topic."),
    (TOPIC_RECORDS_OUT_TOTAL, "Records fetched, by topic."),
    (FLUSH_SECONDS, "Seconds one partition flush (msync) takes."),
    (CONNECTIONS, "Kafka connections open."),
    (
        GROUP_REBALANCES_TOTAL,
        "Consumer-group rebalances completed.",
    ),
    (
        CONTROLLER_ACTIVE,
        "1 while this node is the active controller.",
    ),
    (
        CONTROLLER_METADATA_OFFSET,
        "Offset of the last metadata record applied here.",
    ),
    (
        CONTROLLER_ELECTIONS_TOTAL,
        "Controller elections seen by this node.",
    ),
    (
        UNDER_REPLICATED_PARTITIONS,
        "Partitions led here with fewer in-sync replicas than replicas.",
    ),
    (OFFLINE_PARTITIONS, "Partitions without a live leader."),
    (ISR_SHRINKS_TOTAL, "ISR shrinks of partitions led here."),
    (ISR_EXPANDS_TOTAL, "ISR expansions of partitions led here."),
    (
        REPLICATION_BYTES_IN_TOTAL,
        "Record bytes appended here as a follower.",
    ),
    (
        REPLICATION_BYTES_OUT_TOTAL,
        "Record bytes returned to followers.",
    ),
    (
        FOLLOWER_LAG_RECORDS,
        "Largest lag in records of any follower of a partition led here.",
    ),
    (
        FOLLOWER_LAG_MS,
        "Longest time in ms any follower of a partition led here has not caught up.",
    ),
];

/// Latency buckets (seconds, upper bounds): 50 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Concurrent scrape connections; more are closed at once.
pub const SCRAPE_CONNECTIONS_MAX: usize = 16;
/// The largest request (request line and headers) a scrape may send.
pub const SCRAPE_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// How long a scrape may take to send its request.
pub const SCRAPE_REQUEST_TIME_MAX: Duration = Duration::from_secs(5);
/// How long a scrape may take to read its answer (and close).
const SCRAPE_RESPONSE_TIME_MAX: Duration = Duration::from_secs(10);
/// What is read and dropped after an answer, waiting for the peer to close.
const SCRAPE_DRAIN_BYTES_MAX: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// The recorder
// ---------------------------------------------------------------------------------------------

/// A histogram with fixed buckets: one atomic count per bucket, the count and the sum.
struct Buckets {
    bounds: &'static [f64],
    /// One per bound, plus +Inf last; not cumulative (render sums them).
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    /// f64 bits.
    sum: AtomicU64,
}

impl Buckets {
    fn new(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        // Prometheus buckets are "less than or equal": the first bound >= value.
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut old = self.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(old) + value).to_bits();
            match self
                .sum
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
    }
}

#[derive(Default)]
struct Metrics {
    counters: BTreeMap<Key, Arc<AtomicU64>>,
    /// f64 bits (the facade's `GaugeFn for AtomicU64`).
    gauges: BTreeMap<Key, Arc<AtomicU64>>,
    histograms: BTreeMap<Key, Arc<Buckets>>,
    /// Help lines given through the facade's `describe_*`, for names not in [`NAMES`].
    described: HashMap<String, String>,
}

/// The broker's recorder: every registered metric, rendered in Prometheus' text format.
#[derive(Default)]
pub struct Registry {
    metrics: Mutex<Metrics>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Metrics> {
        self.metrics.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn describe(&self, key: KeyName, description: SharedString) {
        self.lock()
            .described
            .insert(key.as_str().to_string(), description.to_string());
    }

    /// Every metric in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, last: &mut Option<String>| {
            if last.as_deref() == Some(name) {
                return;
            }
            let help = NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, h)| *h)
                .or_else(|| m.described.get(name).map(String::as_str));
            if let Some(help) = help {
                let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            *last = Some(name.to_string());
        };
        let mut last = None;
        for (key, value) in &m.counters {
            family(&mut out, key.name(), "counter", &mut last);
            let _ = writeln!(
                out,
                "{}{} {}",
                key.name(),
                labels(key, None),
                value.load(Ordering::Relaxed)
            );
        }
        for (key, value) in &m.gauges {
            family(&mut out, key.name(), "gauge", &mut last);
            let v = f64::from_bits(value.load(Ordering::Relaxed));
            let _ = writeln!(out, "{}{} {}", key.name(), labels(key, None), number(v));
        }
        for (key, h) in &m.histograms {
            family(&mut out, key.name(), "histogram", &mut last);
            let mut cumulative = 0u64;
            for (i, c) in h.counts.iter().enumerate() {
                cumulative += c.load(Ordering::Relaxed);
                let le = h.bounds.get(i).map_or("+Inf".to_string(), |b| number(*b));
                let _ = writeln!(
                    out,
                    "{}_bucket{} {cumulative}",
                    key.name(),
                    labels(key, Some(&le))
                );
            }
            let sum = f64::from_bits(h.sum.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "{}_sum{} {}",
                key.name(),
                labels(key, None),
                number(sum)
            );
            // The +Inf bucket, so the count agrees with the buckets even mid-record.
            let _ = writeln!(
                out,
                "{}_count{} {cumulative}",
                key.name(),
                labels(key, None)
            );
        }
        out
    }
}

impl Recorder for Registry {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut m = self.lock();
        Counter::from_arc(Arc::clone(m.counters.entry(key.clone()).or_default()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut m = self.lock();
        let g = m
            .gauges
            .entry(key.clone())
            .or_insert_with(|| Arc::new(AtomicU64::new(0f64.to_bits())));
        Gauge::from_arc(Arc::clone(g))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut m = self.lock();
        let h = m
            .histograms
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Buckets::new(SECONDS_BUCKETS)));
        Histogram::from_arc(Arc::clone(h))
    }
}

/// `{a="x",b="y"}` (with `le` last for a bucket), or nothing without labels.
fn labels(key: &Key, le: Option<&str>) -> String {
    let mut parts: Vec<String> = key
        .labels()
        .map(|l| format!("{}=\"{}\"", l.key(), escape_label(l.value())))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as Prometheus writes it (`+Inf`, `-Inf`, `NaN`).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

// ---------------------------------------------------------------------------------------------
// Handles for the hot paths, registered once
// ---------------------------------------------------------------------------------------------

struct ApiMetrics {
    requests: Counter,
    seconds: Histogram,
}

/// What [`install`] set up: the registry and the handles of the per-request paths.
struct Installed {
    registry: Arc<Registry>,
    /// Indexed by API key.
    apis: Vec<Option<ApiMetrics>>,
    flush_seconds: Histogram,
    connections: Gauge,
    replication: ReplicationMetrics,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

fn installed() -> Option<&'static Installed> {
    INSTALLED.get()
}

/// Kafka's name of an API, as in its docs (`Produce`, `ApiVersions`, ...).
fn api_name(key: ApiKey) -> String {
    format!("{key:?}")
}

/// Installs the recorder for this process (the first call does; later ones return the same
/// registry) and registers the per-request handles.
pub fn install() -> Arc<Registry> {
    let installed = INSTALLED.get_or_init(|| {
        let registry = Arc::new(Registry::default());
        // Fails only if another recorder was installed, which nothing in the broker does;
        // then the facade's macros go there and ours renders only what we registered here.
        if ::metrics::set_global_recorder(Arc::clone(&registry)).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics shows only part");
        }
        let max_key = SUPPORTED_APIS
            .iter()
            .map(|a| a.key as i16)
            .max()
            .unwrap_or(0);
        let mut apis: Vec<Option<ApiMetrics>> =
            (0..=max_key.max(0)).map(|_| None).collect::<Vec<_>>();
        let meta = Metadata::new(module_path!(), ::metrics::Level::INFO, None);
        for api in SUPPORTED_APIS {
            let name = api_name(api.key);
            let labels = vec![::metrics::Label::new("api", name)];
            let requests =
                registry.register_counter(&Key::from_parts(REQUESTS_TOTAL, labels.clone()), &meta);
            let seconds =
                registry.register_histogram(&Key::from_parts(REQUEST_SECONDS, labels), &meta);
            if let Some(slot) = usize::try_from(api.key as i16)
                .ok()
                .and_then(|i| apis.get_mut(i))
            {
                *slot = Some(ApiMetrics { requests, seconds });
            }
        }
        let flush_seconds = registry.register_histogram(&Key::from_name(FLUSH_SECONDS), &meta);
        let connections = registry.register_gauge(&Key::from_name(CONNECTIONS), &meta);
        // Present from the start, so a scrape shows 0 rather than nothing.
        let _ = registry.register_counter(&Key::from_name(GROUP_REBALANCES_TOTAL), &meta);
        let replication = ReplicationMetrics::register(&registry);
        Installed {
            registry,
            apis,
            flush_seconds,
            connections,
            replication,
        }
    });
    Arc::clone(&installed.registry)
}

/// Times one request from its dispatch to its answer written; counts it at the start.
pub struct RequestTimer {
    api: &'static ApiMetrics,
    started: Instant,
}

impl RequestTimer {
    /// None without the recorder (or for a key the broker does not serve): no clock read.
    pub fn start(key: ApiKey) -> Option<RequestTimer> {
        let api = installed()?
            .apis
            .get(usize::try_from(key as i16).ok()?)?
            .as_ref()?;
        api.requests.increment(1);
        Some(RequestTimer {
            api,
            started: Instant::now(),
        })
    }

    pub fn finish(self) {
        self.api
            .seconds
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// Times one partition flush.
pub struct FlushTimer {
    started: Instant,
}

impl FlushTimer {
    pub fn start() -> Option<FlushTimer> {
        installed()?;
        Some(FlushTimer {
            started: Instant::now(),
        })
    }

    pub fn finish(self) {
        if let Some(i) = installed() {
            i.flush_seconds.record(self.started.elapsed().as_secs_f64());
        }
    }
}

/// Counts one open Kafka connection while it lives.
pub struct OpenConnection(());

impl OpenConnection {
    pub fn new() -> Option<OpenConnection> {
        installed()?.connections.increment(1.0);
        Some(OpenConnection(()))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(i) = installed() {
            i.connections.decrement(1.0);
        }
    }
}

struct TopicCounters {
    bytes_in: Counter,
    records_in: Counter,
    bytes_out: Counter,
    records_out: Counter,
}

/// One topic's produce and fetch counters, held by each of its partitions (registered when the
/// partition opens; every partition of a topic shares the same counters).
pub struct TopicMetrics(Option<Box<TopicCounters>>);

impl TopicMetrics {
    /// Registers the topic's counters if the recorder is installed; otherwise does nothing ever.
    pub fn new(topic: &str) -> TopicMetrics {
        let Some(i) = installed() else {
            return TopicMetrics(None);
        };
        let meta = Metadata::new(module_path!(), ::metrics::Level::INFO, None);
        let counter = |name: &'static str| {
            let labels = vec![::metrics::Label::new("topic", topic.to_string())];
            i.registry
                .register_counter(&Key::from_parts(name, labels), &meta)
        };
        TopicMetrics(Some(Box::new(TopicCounters {
            bytes_in: counter(TOPIC_BYTES_IN_TOTAL),
            records_in: counter(TOPIC_RECORDS_IN_TOTAL),
            bytes_out: counter(TOPIC_BYTES_OUT_TOTAL),
            records_out: counter(TOPIC_RECORDS_OUT_TOTAL),
        })))
    }

    /// A record set of `bytes` holding `records` records was appended.
    pub fn produced(&self, bytes: usize, records: i64) {
        if let Some(c) = &self.0 {
            c.bytes_in.increment(bytes as u64);
            c.records_in.increment(u64::try_from(records).unwrap_or(0));
        }
    }

    /// These record batches are being returned to a fetch: counts their bytes, and their
    /// records from each batch header (one header read per batch, not per record).
    pub fn fetched(&self, records: &Bytes) {
        let Some(c) = &self.0 else {
            return;
        };
        c.bytes_out.increment(records.len() as u64);
        let mut rest: &[u8] = records;
        let mut count = 0u64;
        while let Ok(batch) = BatchHeader::parse(rest) {
            count += u64::try_from(batch.record_count()).unwrap_or(0);
            rest = rest.get(batch.total_bytes()..).unwrap_or_default();
        }
        c.records_out.increment(count);
    }
}

/// The replication metrics' handles, registered once (at [`install`]), so the follower-fetch
/// and append paths only do atomic adds. Every series is present from the start (0).
pub struct ReplicationMetrics {
    under_replicated: Gauge,
    offline: Gauge,
    isr_shrinks: Counter,
    isr_expands: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    lag_records: Gauge,
    lag_ms: Gauge,
}

impl ReplicationMetrics {
    fn register(registry: &Registry) -> ReplicationMetrics {
        let meta = Metadata::new(module_path!(), ::metrics::Level::INFO, None);
        let gauge = |name| registry.register_gauge(&Key::from_name(name), &meta);
        let counter = |name| registry.register_counter(&Key::from_name(name), &meta);
        ReplicationMetrics {
            under_replicated: gauge(UNDER_REPLICATED_PARTITIONS),
            offline: gauge(OFFLINE_PARTITIONS),
            isr_shrinks: counter(ISR_SHRINKS_TOTAL),
            isr_expands: counter(ISR_EXPANDS_TOTAL),
            bytes_in: counter(REPLICATION_BYTES_IN_TOTAL),
            bytes_out: counter(REPLICATION_BYTES_OUT_TOTAL),
            lag_records: gauge(FOLLOWER_LAG_RECORDS),
            lag_ms: gauge(FOLLOWER_LAG_MS),
        }
    }

    /// The installed handles; None without the recorder (then every call below is skipped).
    pub fn get() -> Option<&'static ReplicationMetrics> {
        installed().map(|i| &i.replication)
    }

    /// How many partitions led here are under-replicated, and how many have no live leader.
    pub fn partitions(&self, under_replicated: usize, offline: usize) {
        self.under_replicated.set(under_replicated as f64);
        self.offline.set(offline as f64);
    }

    /// An ISR shrink of a partition led here was committed.
    pub fn isr_shrink(&self) {
        self.isr_shrinks.increment(1);
    }

    /// An ISR expansion of a partition led here was committed.
    pub fn isr_expand(&self) {
        self.isr_expands.increment(1);
    }

    /// A follower append of `bytes` record-set bytes copied from a leader.
    pub fn bytes_in(&self, bytes: usize) {
        self.bytes_in.increment(bytes as u64);
    }

    /// `bytes` record-set bytes returned to a follower's fetch.
    pub fn bytes_out(&self, bytes: usize) {
        self.bytes_out.increment(bytes as u64);
    }

    /// The largest follower lag over the partitions led here, in records and in ms (0 when
    /// every follower is caught up or nothing is led here).
    pub fn follower_lag_max(&self, records: i64, ms: i64) {
        self.lag_records.set(records.max(0) as f64);
        self.lag_ms.set(ms.max(0) as f64);
    }
}

/// One consumer group completed a rebalance (a new generation).
pub fn group_rebalance() {
    ::metrics::counter!(GROUP_REBALANCES_TOTAL).increment(1);
}

/// The controller's state on this node: whether it is the active controller, and the offset of
/// the last metadata record applied here. For the controller to call on each change.
pub fn controller_state(active: bool, metadata_offset: i64) {
    ::metrics::gauge!(CONTROLLER_ACTIVE).set(if active { 1.0 } else { 0.0 });
    ::metrics::gauge!(CONTROLLER_METADATA_OFFSET).set(metadata_offset as f64);
}

/// This node saw a controller election (a new Raft term with a leader).
pub fn controller_election() {
    ::metrics::counter!(CONTROLLER_ELECTIONS_TOTAL).increment(1);
}

// ---------------------------------------------------------------------------------------------
// The HTTP listener
// ---------------------------------------------------------------------------------------------

/// With `metrics.listener` set (`HOST:PORT`, port 0 picks one): installs the recorder, binds the
/// listener and serves scrapes on a task of the current runtime. Returns the bound address and
/// the task (abort it to stop); None when the key is empty.
pub async fn start(
    listen: &str,
) -> Result<Option<(SocketAddr, tokio::task::JoinHandle<()>)>, String> {
    let listen = listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("config 'metrics.listener': cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let registry = install();
    tracing::info!(metrics = %local, "serving Prometheus metrics on http://{local}/metrics");
    Ok(Some((local, tokio::spawn(serve(listener, registry)))))
}

/// Accepts scrapes until the task is aborted.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(SCRAPE_CONNECTIONS_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: the Kafka listener matters more; retry soon.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "metrics listener: too many scrapes at once, closing");
            continue;
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            answer(stream, &registry).await;
            drop(slot);
        });
    }
}

/// The status line and body for one request head (request line and headers).
fn respond(head: &[u8], registry: &Registry) -> (&'static str, String) {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let line = head.get(..line_end).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return ("400 Bad Request", "bad request line\n".into());
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", "bad request line\n".into());
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase());
    if !token(method) || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return ("400 Bad Request", "bad request line\n".into());
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return ("404 Not Found", "only /metrics is served here\n".into());
    }
    if method != "GET" {
        return ("405 Method Not Allowed", "only GET\n".into());
    }
    ("200 OK", registry.render())
}

/// Where the request head ends (after the blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// Reads one request head (bounded in bytes and time), answers it and closes.
async fn answer(mut stream: TcpStream, registry: &Registry) {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(SCRAPE_REQUEST_TIME_MAX, async {
        let mut chunk = [0u8; 1024];
        loop {
            if head_end(&buf).is_some() {
                return true;
            }
            if buf.len() > SCRAPE_REQUEST_BYTES_MAX {
                return false;
            }
            match stream.read(&mut chunk).await {
                // The peer stopped sending: answer what came, if a line did.
                Ok(0) => return buf.contains(&b'\n'),
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(_) => return false,
            }
        }
    })
    .await;
    let (status, body) = match read {
        Ok(true) => respond(&buf, registry),
        // Too large, or the peer went away mid-line.
        Ok(false) => ("400 Bad Request", "bad request\n".into()),
        // Too slow: nothing to answer.
        Err(_) => return,
    };
    let content_type = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(SCRAPE_RESPONSE_TIME_MAX, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the peer still sends (an oversized request's rest) until it closes, so the
        // close does not reset the connection before the peer has read the answer.
        let mut chunk = [0u8; 1024];
        let mut drained = 0usize;
        while drained <= SCRAPE_DRAIN_BYTES_MAX {
            match stream.read(&mut chunk).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value from a rendered scrape: the sample line starting with `series`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn the_controller_reports_its_state_and_elections_in_a_scrape() {
        let registry = Registry::default();
        ::metrics::with_local_recorder(&registry, || {
            controller_state(true, 42);
            controller_election();
            controller_election();
        });
        let text = registry.render();
        assert_eq!(sample(&text, CONTROLLER_ACTIVE), Some(1.0), "{text}");
        assert_eq!(sample(&text, CONTROLLER_METADATA_OFFSET), Some(42.0));
        assert_eq!(sample(&text, CONTROLLER_ELECTIONS_TOTAL), Some(2.0));
        assert!(text.contains("# TYPE strata_controller_active gauge"));
        assert!(text.contains("# TYPE strata_controller_elections_total counter"));
        // Stepping down shows at the next scrape.
        ::metrics::with_local_recorder(&registry, || controller_state(false, 43));
        let text = registry.render();
        assert_eq!(sample(&text, CONTROLLER_ACTIVE), Some(0.0));
        assert_eq!(sample(&text, CONTROLLER_METADATA_OFFSET), Some(43.0));
    }

    /// Every replication series shows from the start (0), then what the replica layer reports.
    #[test]
    fn the_replication_metrics_render_from_the_start_and_as_reported() {
        let registry = Registry::default();
        let m = ReplicationMetrics::register(&registry);
        let text = registry.render();
        for (name, kind) in [
            (UNDER_REPLICATED_PARTITIONS, "gauge"),
            (OFFLINE_PARTITIONS, "gauge"),
            (ISR_SHRINKS_TOTAL, "counter"),
            (ISR_EXPANDS_TOTAL, "counter"),
            (REPLICATION_BYTES_IN_TOTAL, "counter"),
            (REPLICATION_BYTES_OUT_TOTAL, "counter"),
            (FOLLOWER_LAG_RECORDS, "gauge"),
            (FOLLOWER_LAG_MS, "gauge"),
        ] {
            assert_eq!(sample(&text, name), Some(0.0), "{name}: {text}");
            assert!(text.contains(&format!("# TYPE {name} {kind}")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }

        m.partitions(2, 1);
        m.isr_shrink();
        m.isr_shrink();
        m.isr_expand();
        m.bytes_in(1000);
        m.bytes_in(24);
        m.bytes_out(512);
        m.follower_lag_max(300, 1500);
        let text = registry.render();
        assert_eq!(sample(&text, UNDER_REPLICATED_PARTITIONS), Some(2.0));
        assert_eq!(sample(&text, OFFLINE_PARTITIONS), Some(1.0));
        assert_eq!(sample(&text, ISR_SHRINKS_TOTAL), Some(2.0));
        assert_eq!(sample(&text, ISR_EXPANDS_TOTAL), Some(1.0));
        assert_eq!(sample(&text, REPLICATION_BYTES_IN_TOTAL), Some(1024.0));
        assert_eq!(sample(&text, REPLICATION_BYTES_OUT_TOTAL), Some(512.0));
        assert_eq!(sample(&text, FOLLOWER_LAG_RECORDS), Some(300.0));
        assert_eq!(sample(&text, FOLLOWER_LAG_MS), Some(1500.0));
        // Caught up again.
        m.follower_lag_max(0, -5);
        let text = registry.render();
        assert_eq!(sample(&text, FOLLOWER_LAG_RECORDS), Some(0.0));
        assert_eq!(sample(&text, FOLLOWER_LAG_MS), Some(0.0));
    }

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count() {
        let registry = Registry::default();
        ::metrics::with_local_recorder(&registry, || {
            let h = ::metrics::histogram!(REQUEST_SECONDS, "api" => "Produce");
            h.record(0.0004);
            h.record(0.002);
            h.record(100.0);
        });
        let text = registry.render();
        let series = |le: &str| format!("{REQUEST_SECONDS}_bucket{{api=\"Produce\",le=\"{le}\"}}");
        assert_eq!(sample(&text, &series("0.0001")), Some(0.0), "{text}");
        assert_eq!(sample(&text, &series("0.0005")), Some(1.0));
        assert_eq!(sample(&text, &series("0.0025")), Some(2.0));
        assert_eq!(sample(&text, &series("10")), Some(2.0));
        assert_eq!(sample(&text, &series("+Inf")), Some(3.0));
        let count = format!("{REQUEST_SECONDS}_count{{api=\"Produce\"}}");
        assert_eq!(sample(&text, &count), Some(3.0));
        let sum = format!("{REQUEST_SECONDS}_sum{{api=\"Produce\"}}");
        assert!((sample(&text, &sum).unwrap() - 100.0024).abs() < 1e-9);
        assert_eq!(
            text.matches("# TYPE").count(),
            1,
            "one family header: {text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let registry = Registry::default();
        ::metrics::with_local_recorder(&registry, || {
            ::metrics::counter!(TOPIC_BYTES_IN_TOTAL, "topic" => "a\"b\\c\nd").increment(5);
        });
        let text = registry.render();
        assert!(
            text.contains(r#"strata_topic_bytes_in_total{topic="a\"b\\c\nd"} 5"#),
            "{text}"
        );
    }

    #[test]
    fn a_fetch_counts_records_from_batch_headers_and_stops_at_a_partial_batch() {
        let registry = Registry::default();
        let meta = Metadata::new(module_path!(), ::metrics::Level::INFO, None);
        let counter = |name: &'static str| {
            registry.register_counter(
                &Key::from_parts(name, vec![::metrics::Label::new("topic", "t")]),
                &meta,
            )
        };
        let topic = TopicMetrics(Some(Box::new(TopicCounters {
            bytes_in: counter(TOPIC_BYTES_IN_TOTAL),
            records_in: counter(TOPIC_RECORDS_IN_TOTAL),
            bytes_out: counter(TOPIC_BYTES_OUT_TOTAL),
            records_out: counter(TOPIC_RECORDS_OUT_TOTAL),
        })));
        let one = strata_protocol::record_batch::build_batch(0, 1, &[(None, b"a"), (None, b"b")]);
        let two = strata_protocol::record_batch::build_batch(2, 1, &[(None, b"c")]);
        let mut all = one.to_vec();
        all.extend_from_slice(&two);
        all.extend_from_slice(&two[..20]);
        topic.fetched(&Bytes::from(all.clone()));
        topic.produced(one.len(), 2);
        let text = registry.render();
        let series = |name: &str| format!("{name}{{topic=\"t\"}}");
        assert_eq!(
            sample(&text, &series(TOPIC_RECORDS_OUT_TOTAL)),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, &series(TOPIC_BYTES_OUT_TOTAL)),
            Some(all.len() as f64)
        );
        assert_eq!(sample(&text, &series(TOPIC_RECORDS_IN_TOTAL)), Some(2.0));
        // Without the recorder a topic's metrics are inert.
        TopicMetrics(None).fetched(&Bytes::from(all));
    }

    #[test]
    fn requests_get_200_404_405_or_400() {
        let registry = Registry::default();
        let status = |head: &str| respond(head.as_bytes(), &registry).0;
        assert_eq!(status("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), "200 OK");
        assert_eq!(status("GET /metrics?x=1 HTTP/1.0\n\n"), "200 OK");
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), "404 Not Found");
        assert_eq!(
            status("POST /metrics HTTP/1.1\r\n\r\n"),
            "405 Method Not Allowed"
        );
        for bad in [
            "HELLO\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "get /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "\r\n\r\n",
            "GET /metrics HTTP/1.1 extra\r\n\r\n",
        ] {
            assert_eq!(status(bad), "400 Bad Request", "{bad:?}");
        }
        assert_eq!(
            respond(b"GET /\xff HTTP/1.1\r\n\r\n", &registry).0,
            "400 Bad Request"
        );
    }
}
