//! Broker and topic configuration, by Kafka's names.
//!
//! [`BROKER_KEYS`] and [`TOPIC_KEYS`] are the one table of every key the broker accepts: its
//! type, default and meaning. A properties file (`--config`) and `--set key=value` are checked
//! against it at start; an unknown key or a bad value stops the broker with a message naming the
//! key. Topic keys default to the broker key named in `broker_synonym`, as in Kafka. A value
//! nothing would honour is refused the same way, at start and in CreateTopics (INVALID_CONFIG),
//! never accepted and ignored. `min.insync.replicas` (at least 1) is honoured by acks=-1
//! produces: fewer in-sync replicas than it answer NOT_ENOUGH_REPLICAS (README).
//!
//! Flush policy (what each setting guarantees):
//! - `log.flush.acks.all.enable=true` (default): an `acks=-1` produce is answered only after its
//!   records are on disk (msync). One flush covers every batch that arrived while the previous one
//!   ran (group commit), so a crash of the process or the machine never loses an acknowledged
//!   `acks=-1` write.
//! - `flush.messages` / `log.flush.interval.messages`: flush once this many records are unflushed.
//! - `flush.ms` / `log.flush.interval.ms`: flush at least this often.
//! - Otherwise (`acks=0` / `acks=1` with the defaults) records reach the page cache at once and the
//!   disk when the kernel writes them back: they survive a killed process, not a power loss.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The type of a configuration value, as DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Long,
    String,
}

impl Kind {
    /// Kafka's `ConfigType` numbering in DescribeConfigs v3+.
    pub fn describe_code(self) -> i8 {
        match self {
            Kind::Bool => 1,
            Kind::String => 2,
            Kind::Int => 3,
            Kind::Long => 5,
        }
    }
}

/// One configuration key.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    /// Smallest allowed value for numbers.
    pub min: i64,
    /// For topic keys: the broker key that supplies the default.
    pub broker_synonym: Option<&'static str>,
    pub doc: &'static str,
}

const fn key(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    min: i64,
    doc: &'static str,
) -> Key {
    Key {
        name,
        kind,
        default,
        min,
        broker_synonym: None,
        doc,
    }
}

const fn topic(
    name: &'static str,
    broker: &'static str,
    kind: Kind,
    min: i64,
    doc: &'static str,
) -> Key {
    Key {
        name,
        kind,
        default: "",
        min,
        broker_synonym: Some(broker),
        doc,
    }
}

const I64_MAX: &str = "9223372036854775807";

/// Every broker key.
pub static BROKER_KEYS: &[Key] = &[
    key("node.id", Kind::Int, "1", 0, "This broker's id."),
    key(
        "listeners",
        Kind::String,
        "PLAINTEXT://127.0.0.1:9092",
        0,
        "Address to listen on (HOST:PORT, optionally with PLAINTEXT://).",
    ),
    key(
        "advertised.listeners",
        Kind::String,
        "",
        0,
        "Address clients are told to connect to; defaults to the listener.",
    ),
    key(
        "log.dirs",
        Kind::String,
        "./strata-data",
        0,
        "Directory holding all data.",
    ),
    key(
        "metrics.listener",
        Kind::String,
        "",
        0,
        "HOST:PORT to serve Prometheus metrics on (GET /metrics); empty: no metrics are recorded.",
    ),
    key(
        "broker.rack",
        Kind::String,
        "",
        0,
        "Rack of this broker, reported in metadata.",
    ),
    key(
        "process.roles",
        Kind::String,
        "broker,controller",
        0,
        "What this node is: broker, controller, or both (comma-separated).",
    ),
    key(
        "controller.quorum.voters",
        Kind::String,
        "",
        0,
        "The controller voters, id@host:port,...; empty: a single node that is its own controller (its controller listener on a free port of 127.0.0.1 unless controller.listener is set).",
    ),
    key(
        "controller.listener",
        Kind::String,
        "",
        0,
        "HOST:PORT of this node's controller listener; defaults to its entry in the voters.",
    ),
    key(
        "controller.quorum.election.timeout.ms",
        Kind::Int,
        "1000",
        40,
        "A controller that hears no leader for between half and three quarters of this starts an election (three quarters more once it saw a longer log than its own).",
    ),
    key(
        "controller.quorum.heartbeat.interval.ms",
        Kind::Int,
        "100",
        1,
        "How often the controller leader heartbeats its followers (at most an eighth of the election timeout).",
    ),
    key(
        "controller.quorum.rpc.timeout.ms",
        Kind::Int,
        "2000",
        1,
        "Bound on one controller RPC: connect, send and answer.",
    ),
    key(
        "controller.quorum.request.timeout.ms",
        Kind::Int,
        "5000",
        1,
        "Bound on one metadata proposal, forwarded to the leader or not, until it commits.",
    ),
    key(
        "broker.heartbeat.interval.ms",
        Kind::Int,
        "2000",
        10,
        "How often a broker tells the active controller it is alive.",
    ),
    key(
        "replica.lag.time.max.ms",
        Kind::Int,
        "30000",
        1,
        "A follower in the ISR that has not caught up with the leader's log end for this long is removed from it (through the controller); one that reaches the high watermark again is added back.",
    ),
    key(
        "broker.session.timeout.ms",
        Kind::Int,
        "9000",
        20,
        "A broker the active controller has not heard from for this long is fenced (no longer listed to clients, given no new replicas) until it heartbeats again.",
    ),
    key(
        "controller.socket.request.max.bytes",
        Kind::Int,
        "16777216",
        65536,
        "Largest frame on the controller listener, either way; a larger one closes the connection.",
    ),
    key(
        "metadata.log.snapshot.interval.records",
        Kind::Long,
        "5000",
        1,
        "Metadata log entries applied since the last snapshot that trigger the next (bounds the log).",
    ),
    key(
        "auto.create.topics.enable",
        Kind::Bool,
        "true",
        0,
        "Create a topic when a client asks for metadata of an unknown one.",
    ),
    key(
        "num.partitions",
        Kind::Int,
        "1",
        1,
        "Partitions of an auto-created topic, or of CreateTopics with -1.",
    ),
    key(
        "default.replication.factor",
        Kind::Int,
        "1",
        1,
        "Replication factor when a request says -1; must be 1 on one node.",
    ),
    key(
        "socket.request.max.bytes",
        Kind::Int,
        "104857600",
        1024,
        "Largest request frame; a larger one closes the connection.",
    ),
    key(
        "queued.max.requests",
        Kind::Int,
        "500",
        1,
        "Requests in flight per connection before reading pauses.",
    ),
    key(
        "queued.max.request.bytes",
        Kind::Long,
        "536870912",
        1,
        "Bytes of request frames queued on all connections before reading pauses; each connection \
         may queue at most socket.request.max.bytes, and one frame always fits.",
    ),
    key(
        "connections.max.idle.ms",
        Kind::Long,
        "600000",
        1,
        "A connection with no request in flight and nothing read or written for this long is closed.",
    ),
    key(
        "fetch.max.bytes",
        Kind::Int,
        "57671680",
        1024,
        "Largest record bytes in one fetch response (beyond one first batch, as KIP-74 allows).",
    ),
    key(
        "max.connections",
        Kind::Int,
        "10000",
        1,
        "Open client connections; more are refused.",
    ),
    key(
        "max.partitions",
        Kind::Int,
        "4000",
        1,
        "Partitions this broker may host, all topics together (__consumer_offsets included). \
         CreateTopics, CreatePartitions and auto-creation that would pass it are refused with \
         POLICY_VIOLATION before anything is written. Each partition holds 3 open files and 3 \
         memory mappings for its active segment (sealed ones share log.segment.open.max): the \
         default keeps a broker within vm.max_map_count (65530) and common open-file limits, as \
         Kafka's long-standing guidance of about 4000 partitions per broker does.",
    ),
    key(
        "message.max.bytes",
        Kind::Int,
        "1048588",
        0,
        "Largest record set per partition in a produce request.",
    ),
    key(
        "log.segment.bytes",
        Kind::Int,
        "1073741824",
        1024,
        "Size a segment grows to before a new one starts.",
    ),
    key(
        "log.segment.open.max",
        Kind::Int,
        "2000",
        0,
        "Sealed segments kept open (3 files and 3 mappings each) across all partitions; the \
         least recently read are closed past it and opened again on demand. Active segments are \
         always open and not counted. The default adds at most 6000 mappings to the 12000 of \
         max.partitions active segments, well within vm.max_map_count (65530).",
    ),
    key(
        "log.roll.ms",
        Kind::Long,
        "604800000",
        1,
        "Start a new segment once the active one's first append (since start) is this old.",
    ),
    key(
        "log.retention.ms",
        Kind::Long,
        "604800000",
        -1,
        "Delete segments whose records are all older than this (-1: never).",
    ),
    key(
        "log.retention.bytes",
        Kind::Long,
        "-1",
        -1,
        "Delete old segments while a partition is larger than this (-1: no limit).",
    ),
    key(
        "log.retention.check.interval.ms",
        Kind::Long,
        "300000",
        1,
        "How often retention runs.",
    ),
    key(
        "producer.id.expiration.ms",
        Kind::Long,
        "86400000",
        1,
        "Forget an idempotent producer's sequence state in a partition once it has not written \
         there for this long; a retry arriving later is no longer recognised as a duplicate.",
    ),
    key(
        "producer.id.expiration.check.interval.ms",
        Kind::Long,
        "600000",
        1,
        "How often idle producers are looked for (see producer.id.expiration.ms).",
    ),
    key(
        "log.index.interval.bytes",
        Kind::Int,
        "4096",
        0,
        "Bytes between two offset-index entries.",
    ),
    key(
        "log.index.size.max.bytes",
        Kind::Int,
        "10485760",
        64,
        "Size of each index file; a full index rolls the segment.",
    ),
    key(
        "log.flush.interval.messages",
        Kind::Long,
        I64_MAX,
        1,
        "Flush once this many records are unflushed.",
    ),
    key(
        "log.flush.interval.ms",
        Kind::Long,
        I64_MAX,
        0,
        "Flush at least this often.",
    ),
    key(
        "log.flush.acks.all.enable",
        Kind::Bool,
        "true",
        0,
        "Flush to disk before answering acks=-1 (group commit).",
    ),
    key(
        "log.flush.threads",
        Kind::Int,
        "2",
        1,
        "Threads that flush partitions to disk (msync); one partition always uses the same one.",
    ),
    key(
        "num.recovery.threads.per.data.dir",
        Kind::Int,
        "4",
        1,
        "Threads that close partitions in parallel (clean shutdown, DeleteTopics); each close \
         syncs and trims its active segment.",
    ),
    key(
        "offsets.topic.num.partitions",
        Kind::Int,
        "50",
        1,
        "Partitions of __consumer_offsets when it is created (at first start); fixed afterwards.",
    ),
    key(
        "offsets.topic.segment.bytes",
        Kind::Int,
        "104857600",
        1048576,
        "Segment size of __consumer_offsets.",
    ),
    key(
        "offsets.topic.replication.factor",
        Kind::Int,
        "3",
        1,
        "Replication factor of __consumer_offsets when it is created (at first start): the smaller \
         of this and the brokers registered then (one node runs with 1; a starting cluster waits \
         up to 10 s for as many brokers as it has controller voters); fixed afterwards.",
    ),
    key(
        "offset.metadata.max.bytes",
        Kind::Int,
        "4096",
        0,
        "Longest metadata string of a committed offset; longer gets OFFSET_METADATA_TOO_LARGE.",
    ),
    key(
        "offsets.commit.timeout.ms",
        Kind::Int,
        "5000",
        1,
        "Longest wait for a write to __consumer_offsets (a commit, group metadata) to be \
         acknowledged as acks=-1 is; then COORDINATOR_NOT_AVAILABLE (the write may still land).",
    ),
    key(
        "log.flush.offset.checkpoint.interval.ms",
        Kind::Long,
        "60000",
        100,
        "How often recovery points are checkpointed.",
    ),
    key(
        "group.initial.rebalance.delay.ms",
        Kind::Int,
        "100",
        0,
        "How long a new (Empty) group's first rebalance waits for more members before it completes. \
         Short, so a lone consumer is fetching well within a second; long enough that members \
         started together land in one generation.",
    ),
    key(
        "group.min.session.timeout.ms",
        Kind::Int,
        "6000",
        1,
        "Smallest session timeout a group member may ask for (else INVALID_SESSION_TIMEOUT).",
    ),
    key(
        "group.max.session.timeout.ms",
        Kind::Int,
        "1800000",
        1,
        "Largest session timeout a group member may ask for (else INVALID_SESSION_TIMEOUT).",
    ),
    key(
        "group.max.size",
        Kind::Int,
        "1000",
        1,
        "Members (joined or holding a member id) one group may have (else GROUP_MAX_SIZE_REACHED).",
    ),
    key(
        "group.member.metadata.bytes.max",
        Kind::Int,
        "1048576",
        0,
        "Largest protocol metadata (subscription) one member may send in JoinGroup.",
    ),
    key(
        "group.member.assignment.bytes.max",
        Kind::Int,
        "1048576",
        0,
        "Largest assignment the leader may give one member in SyncGroup.",
    ),
    key(
        "replica.fetch.wait.max.ms",
        Kind::Int,
        "500",
        0,
        "Longest a follower's fetch waits at its leader for new records (long poll); below replica.socket.timeout.ms.",
    ),
    key(
        "replica.fetch.min.bytes",
        Kind::Int,
        "1",
        0,
        "Record bytes a follower's fetch waits for before its leader answers.",
    ),
    key(
        "replica.fetch.response.max.bytes",
        Kind::Int,
        "10485760",
        0,
        "Record bytes one follower fetch answer may carry, all partitions together (a first larger batch still comes).",
    ),
    key(
        "replica.fetch.max.bytes",
        Kind::Int,
        "1048576",
        0,
        "Record bytes one follower fetch answer may carry per partition (a first larger batch still comes).",
    ),
    key(
        "replica.fetch.backoff.ms",
        Kind::Int,
        "1000",
        0,
        "How long a follower waits before fetching again after an error or a lost connection.",
    ),
    key(
        "replica.socket.timeout.ms",
        Kind::Int,
        "30000",
        1,
        "Longest a follower waits to connect to its leader or for an answer before reconnecting.",
    ),
    key(
        "follower.replication.throttled.rate",
        Kind::Long,
        I64_MAX,
        1,
        "Bytes per second each source broker's fetcher appends at most, bursts up to one second's worth (default: unlimited).",
    ),
    key(
        "log.cleanup.policy",
        Kind::String,
        "delete",
        0,
        "Only 'delete' is supported.",
    ),
    key(
        "min.insync.replicas",
        Kind::Int,
        "1",
        1,
        "In-sync replicas that must have a write before acks=-1 is answered.",
    ),
    key(
        "log.message.timestamp.type",
        Kind::String,
        "CreateTime",
        0,
        "CreateTime: keep the producer's timestamps.",
    ),
    key(
        "compression.type",
        Kind::String,
        "producer",
        0,
        "Only 'producer': batches are stored as the producer compressed them.",
    ),
];

/// Every topic key (CreateTopics configs, DescribeConfigs of a topic).
pub static TOPIC_KEYS: &[Key] = &[
    topic(
        "cleanup.policy",
        "log.cleanup.policy",
        Kind::String,
        0,
        "Only 'delete' is supported.",
    ),
    topic(
        "compression.type",
        "compression.type",
        Kind::String,
        0,
        "Only 'producer'.",
    ),
    topic(
        "flush.messages",
        "log.flush.interval.messages",
        Kind::Long,
        1,
        "Flush once this many records are unflushed.",
    ),
    topic(
        "flush.ms",
        "log.flush.interval.ms",
        Kind::Long,
        0,
        "Flush at least this often.",
    ),
    topic(
        "index.interval.bytes",
        "log.index.interval.bytes",
        Kind::Int,
        0,
        "Bytes between two offset-index entries.",
    ),
    topic(
        "max.message.bytes",
        "message.max.bytes",
        Kind::Int,
        0,
        "Largest record set per produce.",
    ),
    topic(
        "message.timestamp.type",
        "log.message.timestamp.type",
        Kind::String,
        0,
        "Only CreateTime.",
    ),
    topic(
        "min.insync.replicas",
        "min.insync.replicas",
        Kind::Int,
        1,
        "In-sync replicas that must have a write before acks=-1 is answered.",
    ),
    topic(
        "retention.bytes",
        "log.retention.bytes",
        Kind::Long,
        -1,
        "Partition size limit (-1: none).",
    ),
    topic(
        "retention.ms",
        "log.retention.ms",
        Kind::Long,
        -1,
        "Age limit (-1: none).",
    ),
    topic(
        "segment.bytes",
        "log.segment.bytes",
        Kind::Int,
        1024,
        "Segment size.",
    ),
    topic(
        "segment.index.bytes",
        "log.index.size.max.bytes",
        Kind::Int,
        64,
        "Index file size.",
    ),
    topic(
        "segment.ms",
        "log.roll.ms",
        Kind::Long,
        1,
        "Age of the active segment's first append before a roll.",
    ),
];

/// Allowed values of string keys, by name (broker and topic share them).
fn choices(name: &str) -> &'static [&'static str] {
    match name {
        "log.cleanup.policy" | "cleanup.policy" => &["delete"],
        "compression.type" => &["producer"],
        "log.message.timestamp.type" | "message.timestamp.type" => &["CreateTime"],
        _ => &[],
    }
}

/// A configuration value refused, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config '{}': {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn find(table: &'static [Key], name: &str) -> Option<&'static Key> {
    table.iter().find(|k| k.name == name)
}

/// Checks `value` against `key`'s type, minimum and choices; returns it normalised.
fn check(key: &Key, value: &str) -> Result<String, ConfigError> {
    let err = |reason: String| ConfigError {
        key: key.name.to_string(),
        reason,
    };
    let value = value.trim();
    match key.kind {
        Kind::Bool => match value.to_ascii_lowercase().as_str() {
            v @ ("true" | "false") => Ok(v.to_string()),
            _ => Err(err(format!("'{value}' is not true or false"))),
        },
        Kind::Int | Kind::Long => {
            let n: i64 = value
                .parse()
                .map_err(|_| err(format!("'{value}' is not a whole number")))?;
            if key.kind == Kind::Int && i32::try_from(n).is_err() {
                return Err(err(format!("{n} does not fit a 32-bit integer")));
            }
            if n < key.min {
                return Err(err(format!("{n} is below the minimum {}", key.min)));
            }
            Ok(n.to_string())
        }
        Kind::String => {
            let allowed = choices(key.name);
            if !allowed.is_empty() && !allowed.contains(&value) {
                return Err(err(format!(
                    "'{value}' is not supported (allowed: {})",
                    allowed.join(", ")
                )));
            }
            Ok(value.to_string())
        }
    }
}

/// The broker's configuration: every key of [`BROKER_KEYS`], default or set.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    values: BTreeMap<&'static str, String>,
    set_explicitly: BTreeMap<&'static str, ()>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            values: BROKER_KEYS
                .iter()
                .map(|k| (k.name, k.default.to_string()))
                .collect(),
            set_explicitly: BTreeMap::new(),
        }
    }
}

impl BrokerConfig {
    /// Sets one key, refusing unknown keys and bad values.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let key = find(BROKER_KEYS, name).ok_or_else(|| ConfigError {
            key: name.to_string(),
            reason: "unknown key".to_string(),
        })?;
        let value = check(key, value)?;
        self.values.insert(key.name, value);
        self.set_explicitly.insert(key.name, ());
        Ok(())
    }

    /// Applies a Kafka-style properties text: `key=value` lines, `#` and `!` comments.
    pub fn apply_properties(&mut self, text: &str) -> Result<(), ConfigError> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (k, v) = line.split_once(['=', ':']).ok_or_else(|| ConfigError {
                key: line.to_string(),
                reason: format!("line {} is not key=value", n + 1),
            })?;
            self.set(k.trim(), v)?;
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> &str {
        self.values
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("unknown broker key {name}"))
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.set_explicitly.contains_key(name)
    }

    pub fn i64(&self, name: &str) -> i64 {
        self.get(name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} was checked as a number"))
    }

    pub fn bool(&self, name: &str) -> bool {
        self.get(name) == "true"
    }

    /// All keys with their values, for DescribeConfigs of the broker.
    pub fn entries(&self) -> impl Iterator<Item = (&'static Key, &str)> {
        BROKER_KEYS.iter().map(|k| (k, self.get(k.name)))
    }
}

/// The broker limits requests consult, read once at start: a typed field per request instead
/// of a look-up by name on the request path.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// `fetch.max.bytes`: the most record bytes one Fetch answer carries (beyond a first batch).
    pub fetch_bytes_max: usize,
    /// `offset.metadata.max.bytes`: the longest metadata a committed offset may carry.
    pub offset_metadata_bytes_max: usize,
}

impl RequestLimits {
    pub fn from_config(config: &BrokerConfig) -> RequestLimits {
        // Both keys are checked as non-negative numbers when set.
        let bytes = |name: &str| usize::try_from(config.i64(name)).unwrap_or(0);
        RequestLimits {
            fetch_bytes_max: bytes("fetch.max.bytes"),
            offset_metadata_bytes_max: bytes("offset.metadata.max.bytes"),
        }
    }
}

/// Every broker key code consults, read once at start into typed fields: a key is looked up
/// by name only here (and by DescribeConfigs and the topic defaults, which work by name).
/// Each number is converted with a check: one the table admits but the field's type cannot
/// hold (`default.replication.factor` above `i16::MAX`) is a [`ConfigError`] naming the key.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// `node.id`.
    pub node_id: crate::ids::BrokerId,
    /// `broker.rack`; `None` when empty.
    pub rack: Option<String>,
    pub topics: TopicDefaults,
    pub server: ServerLimits,
    pub requests: RequestLimits,
    pub log: LogSettings,
    pub groups: GroupSettings,
    pub producer_ids: ProducerIdSettings,
    pub liveness: LivenessSettings,
    pub replication: ReplicationTimings,
}

/// When followers count as in sync.
#[derive(Debug, Clone, Copy)]
pub struct ReplicationTimings {
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: i64,
}

/// What topics get when a request leaves it to the broker, and the offsets topic's shape.
#[derive(Debug, Clone, Copy)]
pub struct TopicDefaults {
    /// `auto.create.topics.enable`.
    pub auto_create_enable: bool,
    /// `num.partitions`.
    pub partitions: i32,
    /// `default.replication.factor`.
    pub replication_factor: i16,
    /// `max.partitions`: replicas one broker may host, all topics together.
    pub partitions_max: i64,
    /// `offsets.topic.num.partitions`.
    pub offsets_partitions: i32,
    /// `offsets.topic.segment.bytes`.
    pub offsets_segment_bytes: i32,
    /// `offsets.topic.replication.factor`.
    pub offsets_replication_factor: i16,
}

/// Bounds of the client listener and its connections.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// `max.connections`.
    pub connections_max: usize,
    /// `socket.request.max.bytes`.
    pub frame_bytes_max: usize,
    /// `queued.max.requests`.
    pub inflight_requests_max: usize,
    /// `queued.max.request.bytes`.
    pub queued_request_bytes_max: usize,
    /// `connections.max.idle.ms`.
    pub connection_idle_max: Duration,
}

/// The log's threads, open-segment bound and background intervals.
#[derive(Debug, Clone, Copy)]
pub struct LogSettings {
    /// `log.flush.threads`.
    pub flush_threads: usize,
    /// `log.segment.open.max`.
    pub segments_open_max: usize,
    /// `num.recovery.threads.per.data.dir`.
    pub recovery_threads: usize,
    /// `log.flush.offset.checkpoint.interval.ms`.
    pub checkpoint_interval: Duration,
    /// `log.retention.check.interval.ms`.
    pub retention_check_interval: Duration,
}

/// Limits that shape every consumer group (the ms fields are compared with requests' ms); the
/// group state machine's `Limits`. `Default` is the table's defaults.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// `group.min.session.timeout.ms`.
    pub session_timeout_min_ms: i64,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_max_ms: i64,
    /// `group.max.size`.
    pub group_size_max: usize,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i64,
    /// `group.member.metadata.bytes.max`.
    pub metadata_bytes_max: usize,
    /// `group.member.assignment.bytes.max`.
    pub assignment_bytes_max: usize,
}

impl Default for GroupSettings {
    fn default() -> Self {
        // The table's own defaults: a failure is a bug in the table, caught by its tests.
        BrokerSettings::from_config(&BrokerConfig::default())
            .map(|s| s.groups)
            .expect("the default configuration makes valid settings")
    }
}

/// How long idle producer ids are remembered.
#[derive(Debug, Clone, Copy)]
pub struct ProducerIdSettings {
    /// `producer.id.expiration.ms`.
    pub expiration_ms: i64,
    /// `producer.id.expiration.check.interval.ms`.
    pub expiration_check_interval: Duration,
}

/// Broker heartbeats to the active controller, and when a silent broker is fenced.
#[derive(Debug, Clone, Copy)]
pub struct LivenessSettings {
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `broker.session.timeout.ms`.
    pub session_timeout: Duration,
}

/// How a follower fetches from its leaders (`replica::fetcher`), read once at start.
#[derive(Debug, Clone, Copy)]
pub struct FetcherSettings {
    /// `replica.fetch.wait.max.ms`.
    pub wait_max: Duration,
    /// `replica.fetch.min.bytes`.
    pub min_bytes: i32,
    /// `replica.fetch.response.max.bytes`.
    pub response_bytes_max: i32,
    /// `replica.fetch.max.bytes`.
    pub partition_bytes_max: i32,
    /// `replica.fetch.backoff.ms`.
    pub backoff: Duration,
    /// `replica.socket.timeout.ms`.
    pub socket_timeout: Duration,
    /// `follower.replication.throttled.rate` in bytes/s; `u64::MAX`-like values: unlimited.
    pub throttle_bytes_per_sec: u64,
}

impl FetcherSettings {
    /// Reads the follower's fetch settings from `config`, checking each conversion.
    pub fn from_config(config: &BrokerConfig) -> Result<FetcherSettings, ConfigError> {
        Ok(FetcherSettings {
            wait_max: millis(config, "replica.fetch.wait.max.ms")?,
            min_bytes: typed(config, "replica.fetch.min.bytes")?,
            response_bytes_max: typed(config, "replica.fetch.response.max.bytes")?,
            partition_bytes_max: typed(config, "replica.fetch.max.bytes")?,
            backoff: millis(config, "replica.fetch.backoff.ms")?,
            socket_timeout: millis(config, "replica.socket.timeout.ms")?,
            throttle_bytes_per_sec: typed(config, "follower.replication.throttled.rate")?,
        })
    }
}

impl Default for FetcherSettings {
    fn default() -> Self {
        // The table's own defaults: a failure is a bug in the table, caught by its tests.
        FetcherSettings::from_config(&BrokerConfig::default())
            .expect("the default configuration makes valid fetcher settings")
    }
}

/// `name`'s number as `T`, or an error naming the key when `T` cannot hold it.
fn typed<T: TryFrom<i64>>(config: &BrokerConfig, name: &str) -> Result<T, ConfigError> {
    let n = config.i64(name);
    T::try_from(n).map_err(|_| ConfigError {
        key: name.to_string(),
        reason: format!("{n} is out of range for {}", std::any::type_name::<T>()),
    })
}

fn millis(config: &BrokerConfig, name: &str) -> Result<Duration, ConfigError> {
    typed::<u64>(config, name).map(Duration::from_millis)
}

impl BrokerSettings {
    /// Reads every setting from `config`, checking each conversion.
    pub fn from_config(config: &BrokerConfig) -> Result<BrokerSettings, ConfigError> {
        Ok(BrokerSettings {
            node_id: crate::ids::BrokerId(typed(config, "node.id")?),
            rack: Some(config.get("broker.rack").to_string()).filter(|r| !r.is_empty()),
            topics: TopicDefaults {
                auto_create_enable: config.bool("auto.create.topics.enable"),
                partitions: typed(config, "num.partitions")?,
                replication_factor: typed(config, "default.replication.factor")?,
                partitions_max: config.i64("max.partitions"),
                offsets_partitions: typed(config, "offsets.topic.num.partitions")?,
                offsets_segment_bytes: typed(config, "offsets.topic.segment.bytes")?,
                offsets_replication_factor: typed(config, "offsets.topic.replication.factor")?,
            },
            server: ServerLimits {
                connections_max: typed(config, "max.connections")?,
                frame_bytes_max: typed(config, "socket.request.max.bytes")?,
                inflight_requests_max: typed(config, "queued.max.requests")?,
                queued_request_bytes_max: typed(config, "queued.max.request.bytes")?,
                connection_idle_max: millis(config, "connections.max.idle.ms")?,
            },
            requests: RequestLimits {
                fetch_bytes_max: typed(config, "fetch.max.bytes")?,
                offset_metadata_bytes_max: typed(config, "offset.metadata.max.bytes")?,
            },
            log: LogSettings {
                flush_threads: typed(config, "log.flush.threads")?,
                segments_open_max: typed(config, "log.segment.open.max")?,
                recovery_threads: typed(config, "num.recovery.threads.per.data.dir")?,
                checkpoint_interval: millis(config, "log.flush.offset.checkpoint.interval.ms")?,
                retention_check_interval: millis(config, "log.retention.check.interval.ms")?,
            },
            groups: GroupSettings {
                session_timeout_min_ms: config.i64("group.min.session.timeout.ms"),
                session_timeout_max_ms: config.i64("group.max.session.timeout.ms"),
                group_size_max: typed(config, "group.max.size")?,
                initial_rebalance_delay_ms: config.i64("group.initial.rebalance.delay.ms"),
                metadata_bytes_max: typed(config, "group.member.metadata.bytes.max")?,
                assignment_bytes_max: typed(config, "group.member.assignment.bytes.max")?,
            },
            producer_ids: ProducerIdSettings {
                expiration_ms: config.i64("producer.id.expiration.ms"),
                expiration_check_interval: millis(
                    config,
                    "producer.id.expiration.check.interval.ms",
                )?,
            },
            liveness: LivenessSettings {
                heartbeat_interval: millis(config, "broker.heartbeat.interval.ms")?,
                session_timeout: millis(config, "broker.session.timeout.ms")?,
            },
            replication: ReplicationTimings {
                replica_lag_time_max_ms: config.i64("replica.lag.time.max.ms"),
            },
        })
    }
}

/// A topic's own settings (only those set for it); the rest come from the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicOverrides(pub BTreeMap<String, String>);

impl TopicOverrides {
    /// Validates and collects `key=value` pairs for a topic.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TopicOverrides, ConfigError> {
        let mut out = BTreeMap::new();
        for (name, value) in pairs {
            let key = find(TOPIC_KEYS, name).ok_or_else(|| ConfigError {
                key: name.to_string(),
                reason: "unknown topic config".to_string(),
            })?;
            out.insert(key.name.to_string(), check(key, value)?);
        }
        Ok(TopicOverrides(out))
    }
}

/// Where an effective topic value came from (DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Topic,
    StaticBroker,
    Default,
}

impl Source {
    pub fn describe_code(self) -> i8 {
        match self {
            Source::Topic => 1,
            Source::StaticBroker => 4,
            Source::Default => 5,
        }
    }
}

/// A topic's effective value of `key`: its override, else the broker's value.
pub fn topic_value<'a>(
    broker: &'a BrokerConfig,
    overrides: &'a TopicOverrides,
    key: &Key,
) -> (&'a str, Source) {
    if let Some(v) = overrides.0.get(key.name) {
        return (v, Source::Topic);
    }
    let synonym = key
        .broker_synonym
        .expect("topic keys have a broker synonym");
    let source = if broker.is_set(synonym) {
        Source::StaticBroker
    } else {
        Source::Default
    };
    (broker.get(synonym), source)
}

/// The typed log settings of a topic.
pub fn log_config(broker: &BrokerConfig, overrides: &TopicOverrides) -> crate::storage::LogConfig {
    let num = |name: &str| -> i64 {
        let key = find(TOPIC_KEYS, name).expect("known topic key");
        topic_value(broker, overrides, key)
            .0
            .parse()
            .unwrap_or(key.min)
    };
    crate::storage::LogConfig {
        limits: crate::storage::SegmentLimits {
            segment_bytes: num("segment.bytes") as usize,
            index_bytes: num("segment.index.bytes") as usize,
            index_interval_bytes: num("index.interval.bytes") as usize,
        },
        segment_ms: num("segment.ms"),
        retention_ms: num("retention.ms"),
        retention_bytes: num("retention.bytes"),
    }
}

/// Flush settings of a topic.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub before_acks_all: bool,
}

pub fn flush_policy(broker: &BrokerConfig, overrides: &TopicOverrides) -> FlushPolicy {
    let num = |name: &str| -> i64 {
        let key = find(TOPIC_KEYS, name).expect("known topic key");
        topic_value(broker, overrides, key)
            .0
            .parse()
            .unwrap_or(i64::MAX)
    };
    FlushPolicy {
        flush_messages: num("flush.messages"),
        flush_ms: num("flush.ms"),
        before_acks_all: broker.bool("log.flush.acks.all.enable"),
    }
}

/// A topic's `min.insync.replicas`: the ISR members an `acks=-1` produce needs.
pub fn min_insync_replicas(broker: &BrokerConfig, overrides: &TopicOverrides) -> usize {
    let key = find(TOPIC_KEYS, "min.insync.replicas").expect("known topic key");
    topic_value(broker, overrides, key).0.parse().unwrap_or(1)
}

/// Largest record set a topic takes in one produce (`max.message.bytes`).
pub fn max_message_bytes(broker: &BrokerConfig, overrides: &TopicOverrides) -> usize {
    let key = find(TOPIC_KEYS, "max.message.bytes").expect("known topic key");
    topic_value(broker, overrides, key)
        .0
        .parse()
        .unwrap_or(1_048_588)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_properties_and_overrides() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.i64("num.partitions"), 1);
        c.apply_properties("# comment\nnum.partitions = 3\n\nlog.retention.ms=1000\n")
            .unwrap();
        assert_eq!(c.i64("num.partitions"), 3);
        assert!(c.is_set("log.retention.ms"));
        let t = TopicOverrides::parse([("retention.ms", "50")]).unwrap();
        let lc = log_config(&c, &t);
        assert_eq!((lc.retention_ms, lc.segment_ms), (50, 604_800_000));
        let key = find(TOPIC_KEYS, "retention.bytes").unwrap();
        assert_eq!(topic_value(&c, &t, key), ("-1", Source::Default));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.set("no.such.key", "1").unwrap_err().key, "no.such.key");
        assert!(c
            .set("num.partitions", "zero")
            .unwrap_err()
            .to_string()
            .contains("num.partitions"));
        assert!(c.set("num.partitions", "0").is_err());
        assert!(c.set("auto.create.topics.enable", "yes").is_err());
        assert!(c.set("log.cleanup.policy", "compact").is_err());
        assert!(c.apply_properties("just-a-line").is_err());
        assert!(TopicOverrides::parse([("segment.bytes", "-5")]).is_err());
        assert!(TopicOverrides::parse([("bogus", "1")]).is_err());
    }

    /// Replication honours `min.insync.replicas`: any value from 1 is kept, broker-wide and per
    /// topic; 0 or less is refused.
    #[test]
    fn min_insync_replicas_is_at_least_one_and_any_value_above_is_kept() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.i64("min.insync.replicas"), 1, "Kafka's default");
        c.set("min.insync.replicas", "2").unwrap();
        assert_eq!(c.i64("min.insync.replicas"), 2);
        c.apply_properties("min.insync.replicas=3").unwrap();
        assert_eq!(c.i64("min.insync.replicas"), 3);
        let e = c.set("min.insync.replicas", "0").unwrap_err();
        assert_eq!(e.key, "min.insync.replicas");
        assert_eq!(
            c.i64("min.insync.replicas"),
            3,
            "the refused value is not kept"
        );

        TopicOverrides::parse([("min.insync.replicas", "2")]).unwrap();
        let e = TopicOverrides::parse([("min.insync.replicas", "0")]).unwrap_err();
        assert_eq!(e.key, "min.insync.replicas");
    }

    #[test]
    fn request_limits_are_read_once_from_their_keys() {
        let d = RequestLimits::from_config(&BrokerConfig::default());
        assert_eq!(
            (d.fetch_bytes_max, d.offset_metadata_bytes_max),
            (57_671_680, 4096)
        );
        let mut c = BrokerConfig::default();
        c.set("fetch.max.bytes", "2048").unwrap();
        c.set("offset.metadata.max.bytes", "0").unwrap();
        let l = RequestLimits::from_config(&c);
        assert_eq!((l.fetch_bytes_max, l.offset_metadata_bytes_max), (2048, 0));
    }

    #[test]
    fn settings_are_read_once_from_the_defaults_and_from_every_key_set() {
        let d = BrokerSettings::from_config(&BrokerConfig::default()).unwrap();
        assert_eq!(
            (d.node_id, d.rack.as_deref()),
            (crate::ids::BrokerId(1), None)
        );
        assert!(d.topics.auto_create_enable);
        assert_eq!((d.topics.partitions, d.topics.replication_factor), (1, 1));
        assert_eq!(d.topics.partitions_max, 4000);
        assert_eq!(d.topics.offsets_partitions, 50);
        assert_eq!(d.server.connection_idle_max, Duration::from_secs(600));
        assert_eq!(d.log.checkpoint_interval, Duration::from_secs(60));
        assert_eq!(d.groups.session_timeout_min_ms, 6000);
        assert_eq!(d.liveness.session_timeout, Duration::from_secs(9));

        let mut c = BrokerConfig::default();
        c.apply_properties(
            "node.id=7\nbroker.rack=r2\nauto.create.topics.enable=false\nnum.partitions=3\n\
             default.replication.factor=2\nmax.partitions=10\noffsets.topic.num.partitions=5\n\
             offsets.topic.segment.bytes=2097152\nmax.connections=9\nsocket.request.max.bytes=4096\n\
             queued.max.requests=8\nqueued.max.request.bytes=8192\nconnections.max.idle.ms=1500\n\
             fetch.max.bytes=2048\noffset.metadata.max.bytes=12\nlog.flush.threads=3\n\
             log.segment.open.max=11\nnum.recovery.threads.per.data.dir=6\n\
             log.flush.offset.checkpoint.interval.ms=250\nlog.retention.check.interval.ms=260\n\
             group.min.session.timeout.ms=10\ngroup.max.session.timeout.ms=20\ngroup.max.size=4\n\
             group.initial.rebalance.delay.ms=0\ngroup.member.metadata.bytes.max=13\n\
             group.member.assignment.bytes.max=14\nproducer.id.expiration.ms=30\n\
             producer.id.expiration.check.interval.ms=40\nbroker.heartbeat.interval.ms=50\n\
             broker.session.timeout.ms=60\n",
        )
        .unwrap();
        let s = BrokerSettings::from_config(&c).unwrap();
        assert_eq!(
            (s.node_id, s.rack.as_deref()),
            (crate::ids::BrokerId(7), Some("r2"))
        );
        let t = s.topics;
        assert!(!t.auto_create_enable);
        assert_eq!(
            (t.partitions, t.replication_factor, t.partitions_max),
            (3, 2, 10)
        );
        assert_eq!(
            (t.offsets_partitions, t.offsets_segment_bytes),
            (5, 2_097_152)
        );
        let v = s.server;
        assert_eq!(
            (
                v.connections_max,
                v.frame_bytes_max,
                v.inflight_requests_max
            ),
            (9, 4096, 8)
        );
        assert_eq!(v.queued_request_bytes_max, 8192);
        assert_eq!(v.connection_idle_max, Duration::from_millis(1500));
        assert_eq!(
            (
                s.requests.fetch_bytes_max,
                s.requests.offset_metadata_bytes_max
            ),
            (2048, 12)
        );
        let l = s.log;
        assert_eq!(
            (l.flush_threads, l.segments_open_max, l.recovery_threads),
            (3, 11, 6)
        );
        assert_eq!(l.checkpoint_interval, Duration::from_millis(250));
        assert_eq!(l.retention_check_interval, Duration::from_millis(260));
        let g = s.groups;
        assert_eq!(
            (
                g.session_timeout_min_ms,
                g.session_timeout_max_ms,
                g.group_size_max
            ),
            (10, 20, 4)
        );
        assert_eq!(
            (
                g.initial_rebalance_delay_ms,
                g.metadata_bytes_max,
                g.assignment_bytes_max
            ),
            (0, 13, 14)
        );
        assert_eq!(s.producer_ids.expiration_ms, 30);
        assert_eq!(
            s.producer_ids.expiration_check_interval,
            Duration::from_millis(40)
        );
        assert_eq!(s.liveness.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(s.liveness.session_timeout, Duration::from_millis(60));
    }

    #[test]
    fn a_value_the_table_admits_but_the_setting_cannot_hold_is_refused_naming_the_key() {
        let mut c = BrokerConfig::default();
        // The table's Int is 32 bits; a replication factor is 16.
        c.set("default.replication.factor", "40000").unwrap();
        let e = BrokerSettings::from_config(&c).unwrap_err();
        assert_eq!(e.key, "default.replication.factor");
        assert!(e.to_string().contains("40000"), "{e}");
        // Above i32::MAX the table itself refuses, naming the key.
        let e = c.set("num.partitions", "2147483648").unwrap_err();
        assert_eq!(e.key, "num.partitions");
    }

    #[test]
    fn every_topic_key_has_a_broker_synonym_in_the_table() {
        for k in TOPIC_KEYS {
            let syn = k.broker_synonym.unwrap();
            assert!(find(BROKER_KEYS, syn).is_some(), "{syn}");
        }
    }

    #[test]
    fn fetcher_settings_have_kafkas_defaults_and_read_every_key_set() {
        let d = FetcherSettings::default();
        assert_eq!(d.wait_max, Duration::from_millis(500));
        assert_eq!((d.min_bytes, d.response_bytes_max), (1, 10 << 20));
        assert_eq!(d.partition_bytes_max, 1 << 20);
        assert_eq!(d.backoff, Duration::from_secs(1));
        assert_eq!(d.socket_timeout, Duration::from_secs(30));
        assert_eq!(d.throttle_bytes_per_sec, i64::MAX as u64, "unlimited");

        let mut c = BrokerConfig::default();
        c.apply_properties(
            "replica.fetch.wait.max.ms=5\nreplica.fetch.min.bytes=6\n\
             replica.fetch.response.max.bytes=7\nreplica.fetch.max.bytes=8\n\
             replica.fetch.backoff.ms=9\nreplica.socket.timeout.ms=10\n\
             follower.replication.throttled.rate=11\n",
        )
        .unwrap();
        let s = FetcherSettings::from_config(&c).unwrap();
        assert_eq!(
            (s.wait_max, s.backoff),
            (Duration::from_millis(5), Duration::from_millis(9))
        );
        assert_eq!(
            (s.min_bytes, s.response_bytes_max, s.partition_bytes_max),
            (6, 7, 8)
        );
        assert_eq!(
            (s.socket_timeout, s.throttle_bytes_per_sec),
            (Duration::from_millis(10), 11)
        );
    }
}
