//! An operator relies on retention to bound disk use: segments beyond a topic's
//! `retention.bytes` or older than its `retention.ms` are deleted (whole segments, oldest
//! first), consumers then start at the new earliest offset, and deleting a topic removes its
//! partition directories from the data directory.
//!
//! Topics are created, listed, fetched and deleted with raw Kafka requests (kafka-protocol)
//! so every error code and offset is checked exactly; the bulk data is produced with kcat.
//!
//! Needs: kcat.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{kcat_read_all, now_ms, require_tool, run, unique_topic, Broker};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, HeaderVersion, Request, StrBytes,
};
use kafka_protocol::records::RecordBatchDecoder;

const IO_TIMEOUT: Duration = Duration::from_secs(15);
const KCAT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long retention may take to act (it runs every 200 ms in these tests).
const RETENTION_WAIT: Duration = Duration::from_secs(10);
const RETENTION_POLL: Duration = Duration::from_millis(200);
const SEGMENT_BYTES: usize = 16384;

/// Broker settings for every test here: retention runs every 200 ms.
const BROKER_SETTINGS: &[&str] = &["log.retention.check.interval.ms=200"];

// Kafka error codes.
const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn require_kcat() {
    require_tool("kcat", "-V", "apt-get install kcat");
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One Kafka connection speaking raw requests, one at a time.
struct Wire {
    stream: TcpStream,
    correlation_id: i32,
    broker_pid: Option<u32>,
}

impl Wire {
    fn connect(broker: &Broker) -> Wire {
        let stream = TcpStream::connect(("127.0.0.1", broker.port()))
            .unwrap_or_else(|e| panic!("connect to {}: {e}{}", broker.bootstrap(), broker.logs()));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("set write timeout");
        Wire {
            stream,
            correlation_id: 0,
            broker_pid: broker.pid(),
        }
    }

    /// Panics on an I/O error, saying whether the broker process is still alive.
    fn io<T>(&self, what: &str, r: std::io::Result<T>) -> T {
        r.unwrap_or_else(|e| {
            let state = self
                .broker_pid
                .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
                .and_then(|s| {
                    s.rsplit_once(") ")
                        .map(|(_, rest)| rest.chars().take(1).collect::<String>())
                })
                .unwrap_or_else(|| "gone".to_string());
            panic!(
                "{what}: {e} (broker pid {:?}, process state {state}: R/S = alive, Z = exited)",
                self.broker_pid
            )
        })
    }

    /// Sends `req` at `version` and decodes the response.
    fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("strata-retention-test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        encode_request_header_into_buffer(&mut buf, &header).expect("encode request header");
        req.encode(&mut buf, version).expect("encode request");
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        let sent = self.stream.write_all(&buf);
        self.io("send request", sent);

        let mut size = [0u8; 4];
        let read = self.stream.read_exact(&mut size);
        self.io("read response size", read);
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        let read = self.stream.read_exact(&mut body);
        self.io("read response body", read);
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .expect("decode response header");
        assert_eq!(header.correlation_id, self.correlation_id, "correlation id");
        R::Response::decode(&mut body, version).expect("decode response")
    }

    fn create_topic(&mut self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        let configs = configs
            .iter()
            .map(|(k, v)| {
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(k.to_string()))
                    .with_value(Some(StrBytes::from_string(v.to_string())))
            })
            .collect();
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(configs)]);
        let resp = self.call(&req, 5);
        let t = &resp.topics[0];
        assert_eq!(
            t.error_code, NONE,
            "CreateTopics {topic}: error {} {:?}",
            t.error_code, t.error_message
        );
        assert_eq!(t.num_partitions, partitions);
    }

    /// ListOffsets v7 for one partition: (error, offset, timestamp).
    fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> (i16, i64, i64) {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_current_leader_epoch(-1)
                        .with_timestamp(timestamp),
                ])]);
        let resp = self.call(&req, 7);
        let p = &resp.topics[0].partitions[0];
        (p.error_code, p.offset, p.timestamp)
    }

    /// Earliest offset (ListOffsets -2), asserting no error.
    fn earliest(&mut self, topic: &str) -> i64 {
        let (err, offset, _) = self.list_offset(topic, 0, -2);
        assert_eq!(err, NONE, "ListOffsets earliest {topic}");
        offset
    }

    /// Latest offset (ListOffsets -1), asserting no error.
    fn latest(&mut self, topic: &str) -> i64 {
        let (err, offset, _) = self.list_offset(topic, 0, -1);
        assert_eq!(err, NONE, "ListOffsets latest {topic}");
        offset
    }

    /// Fetch v11 of partition 0 from `offset`: (error, high watermark, log start, records).
    fn fetch(&mut self, topic: &str, offset: i64) -> (i16, i64, i64, Bytes) {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(offset)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(1 << 20)])]);
        let resp = self.call(&req, 11);
        assert_eq!(resp.error_code, NONE, "Fetch {topic}: top-level error");
        let p = &resp.responses[0].partitions[0];
        (
            p.error_code,
            p.high_watermark,
            p.log_start_offset,
            p.records.clone().unwrap_or_default(),
        )
    }

    /// Produce v8 of one uncompressed batch to partition 0: (error, base offset).
    fn produce(&mut self, topic: &str, batch: Bytes) -> (i16, i64) {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch)),
                ])]);
        let resp = self.call(&req, 8);
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    fn delete_topic(&mut self, topic: &str) -> i16 {
        let req = DeleteTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topic_names(vec![name(topic)]);
        let resp = self.call(&req, 4);
        assert_eq!(resp.responses.len(), 1, "DeleteTopics {topic}: {resp:?}");
        resp.responses[0].error_code
    }

    /// Metadata v9 for `topic` without auto-creation: the topic's error code.
    fn metadata_error(&mut self, topic: &str) -> i16 {
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(name(topic)))]));
        let resp = self.call(&req, 9);
        resp.topics[0].error_code
    }
}

/// Base offsets of the `.log` files in a partition directory, sorted.
fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// Names in the data directory that belong to partitions of `topic`: `<topic>-<n>` and any
/// `<topic>-<n>.<suffix>` (e.g. a directory renamed for deletion).
fn partition_entries(data_dir: &Path, topic: &str) -> BTreeSet<String> {
    let prefix = format!("{topic}-");
    std::fs::read_dir(data_dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", data_dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.strip_prefix(&prefix).is_some_and(|rest| {
                let digits = rest.split('.').next().unwrap_or("");
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            })
        })
        .collect()
}

/// Polls `f` every [`RETENTION_POLL`] until it returns `Some`, for at most [`RETENTION_WAIT`].
fn poll_until<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + RETENTION_WAIT;
    let max_polls = RETENTION_WAIT.as_millis() / RETENTION_POLL.as_millis() + 1;
    for _ in 0..max_polls {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(RETENTION_POLL);
    }
    f()
}

/// The value of record `i` produced by kcat in the size test: `000042|vvvv...`, 500 bytes.
fn line(i: usize) -> String {
    format!("{i:06}|{}", "v".repeat(493))
}

fn kcat_produce_lines(broker: &Broker, topic: &str, lines: &[String]) {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut cmd = Command::new("kcat");
    cmd.args(["-P", "-b", &broker.bootstrap(), "-t", topic, "-p", "0"]);
    // Small batches, so one segment holds several and retention has segments to delete.
    for x in [
        "acks=all",
        "enable.idempotence=false",
        "batch.num.messages=8",
        "linger.ms=5",
        "message.timeout.ms=30000",
    ] {
        cmd.args(["-X", x]);
    }
    let out = run(cmd, Some(input.as_bytes()), KCAT_TIMEOUT);
    out.assert_success(|| broker.logs());
    assert!(
        !out.stderr.contains("Delivery failed") && !out.stderr.contains("ERROR"),
        "kcat reported errors while producing:{}{}",
        out.describe(),
        broker.logs()
    );
}

/// Everything kcat reads from the beginning of partition 0: (offset, value) per record.
fn kcat_consume_from_beginning(broker: &Broker, topic: &str) -> Vec<(i64, String)> {
    kcat_read_all(broker, topic, Some(0), "%o|%s\n", KCAT_TIMEOUT)
        .lines()
        .map(|l| {
            let (o, v) = l
                .split_once('|')
                .unwrap_or_else(|| panic!("unexpected kcat line {l:?}"));
            (o.parse().expect("offset"), v.to_string())
        })
        .collect()
}

#[test]
fn size_retention_deletes_the_oldest_segments_and_consumers_start_at_the_new_earliest_offset() {
    require_kcat();
    const RETENTION_BYTES: usize = 50_000;
    const RECORDS: usize = 1000; // 500-byte values: ~500 KB, ~30 segments of 16 KiB

    let broker = Broker::start(BROKER_SETTINGS);
    let topic = unique_topic("retain-bytes");
    let mut wire = Wire::connect(&broker);
    wire.create_topic(
        &topic,
        1,
        &[
            ("segment.bytes", &SEGMENT_BYTES.to_string()),
            ("retention.bytes", &RETENTION_BYTES.to_string()),
        ],
    );
    let lines: Vec<String> = (0..RECORDS).map(line).collect();
    let before_produce = now_ms();
    kcat_produce_lines(&broker, &topic, &lines);
    assert_eq!(
        wire.latest(&topic),
        RECORDS as i64,
        "log end offset after producing{}",
        broker.logs()
    );
    let produced_bytes = RECORDS * 500;
    let segments_produced = produced_bytes / SEGMENT_BYTES;

    // Retention moves the log start; wait until it has and then stays put for a few runs.
    let mut last = (-1, 0);
    let earliest = poll_until(|| {
        let e = wire.earliest(&topic);
        last = if e == last.0 { (e, last.1 + 1) } else { (e, 0) };
        (e > 0 && last.1 >= 3).then_some(e)
    })
    .unwrap_or_else(|| {
        panic!(
            "the earliest offset did not move above 0 and settle within {RETENTION_WAIT:?} \
             (last: {} seen {} times in a row); retention.bytes={RETENTION_BYTES}{}",
            last.0,
            last.1,
            broker.logs()
        )
    });

    let dir = broker.data_dir().join(format!("{topic}-0"));
    let bases = segment_bases(&dir);
    assert!(
        bases.len() < segments_produced && bases.len() <= RETENTION_BYTES / (SEGMENT_BYTES / 2) + 2,
        "{} .log files remain in {} (~{segments_produced} were produced, retention.bytes \
         {RETENTION_BYTES}, segment.bytes {SEGMENT_BYTES}): {bases:?}{}",
        bases.len(),
        dir.display(),
        broker.logs()
    );
    assert_eq!(
        bases.first().copied(),
        Some(earliest),
        "the earliest offset must be the base offset of the oldest remaining segment"
    );

    // Kafka keeps at least retention.bytes and deletes a segment only if what remains is
    // still at least that large: so the kept records are >= retention.bytes (minus batch
    // overhead) and < retention.bytes + one segment (+ the active one).
    let kept_values = (RECORDS as i64 - earliest) as usize * 500;
    assert!(
        kept_values * 10 >= RETENTION_BYTES * 9
            && kept_values <= RETENTION_BYTES + 2 * SEGMENT_BYTES,
        "retention kept offsets {earliest}..{RECORDS} (~{kept_values} value bytes) for \
         retention.bytes {RETENTION_BYTES}{}",
        broker.logs()
    );

    // A fetch below the log start: OFFSET_OUT_OF_RANGE.
    let (err, _, _, _) = wire.fetch(&topic, 0);
    assert_eq!(
        err, OFFSET_OUT_OF_RANGE,
        "Fetch at offset 0 after retention moved the log start to {earliest}"
    );
    // A fetch at the log start reports it.
    let (err, hw, log_start, records) = wire.fetch(&topic, earliest);
    assert_eq!(
        (err, hw, log_start),
        (NONE, RECORDS as i64, earliest),
        "Fetch at the log start: (error, high watermark, log start offset)"
    );
    assert!(
        !records.is_empty(),
        "Fetch at the log start returned no records"
    );
    // ListOffsets by a timestamp before every record: the earliest remaining offset.
    let (err, offset, ts) = wire.list_offset(&topic, 0, before_produce - 60_000);
    assert_eq!(
        (err, offset),
        (NONE, earliest),
        "ListOffsets by a timestamp before all records (got timestamp {ts})"
    );

    // A consumer from the beginning starts at the new earliest offset and reads to the end.
    let consumed = kcat_consume_from_beginning(&broker, &topic);
    let offsets: Vec<i64> = consumed.iter().map(|(o, _)| *o).collect();
    let expected: Vec<i64> = (earliest..RECORDS as i64).collect();
    assert_eq!(
        offsets,
        expected,
        "offsets read from the beginning{}",
        broker.logs()
    );
    for (o, v) in &consumed {
        assert!(
            *v == lines[*o as usize],
            "record at offset {o}: {:?}..., expected {:?}...",
            &v[..v.len().min(20)],
            &lines[*o as usize][..20]
        );
    }
}

#[test]
fn records_older_than_retention_ms_are_deleted_even_from_the_active_segment() {
    const BATCHES: i64 = 40;
    const PER_BATCH: i64 = 10;
    const N: i64 = BATCHES * PER_BATCH;

    let broker = Broker::start(BROKER_SETTINGS);
    let topic = unique_topic("retain-ms");
    let mut wire = Wire::connect(&broker);
    wire.create_topic(
        &topic,
        1,
        &[
            ("segment.bytes", &SEGMENT_BYTES.to_string()),
            ("retention.ms", "1000"),
        ],
    );

    // Records written an hour ago (explicit CreateTime timestamps): ~2 KB batches, several
    // segments.
    let hour_ago = now_ms() - 3_600_000;
    let value = vec![b'o'; 200];
    for b in 0..BATCHES {
        let keys: Vec<String> = (0..PER_BATCH)
            .map(|i| format!("old-{}", b * PER_BATCH + i))
            .collect();
        let records: Vec<(Option<&[u8]>, &[u8])> = keys
            .iter()
            .map(|k| (Some(k.as_bytes()), value.as_slice()))
            .collect();
        let batch = strata_protocol::record_batch::build_batch(0, hour_ago + b, &records);
        let (err, base) = wire.produce(&topic, batch);
        assert_eq!(err, NONE, "Produce of old batch {b}{}", broker.logs());
        assert_eq!(base, b * PER_BATCH, "base offset of old batch {b}");
    }

    // Everything is past retention.ms: every segment goes, the active one rolled first.
    let dir = broker.data_dir().join(format!("{topic}-0"));
    let gone = poll_until(|| {
        let e = wire.earliest(&topic);
        (e == N).then_some(())
    });
    assert!(
        gone.is_some(),
        "the earliest offset is {} (log end {}), not {N}, {RETENTION_WAIT:?} after writing \
         records an hour old with retention.ms=1000; segments: {:?}{}",
        wire.earliest(&topic),
        wire.latest(&topic),
        segment_bases(&dir),
        broker.logs()
    );
    assert_eq!(
        wire.latest(&topic),
        N,
        "the log end offset stays after retention"
    );
    let bases = segment_bases(&dir);
    assert!(
        bases.iter().all(|&b| b == N),
        "segments left after everything expired: {bases:?} (only an empty active segment at \
         {N} may remain){}",
        broker.logs()
    );
    let (err, _, _, _) = wire.fetch(&topic, 0);
    assert_eq!(
        err, OFFSET_OUT_OF_RANGE,
        "Fetch at offset 0 after time retention"
    );
    let (err, hw, log_start, records) = wire.fetch(&topic, N);
    assert_eq!(
        (err, hw, log_start, records.len()),
        (NONE, N, N, 0),
        "Fetch at the (empty) log end: (error, high watermark, log start, record bytes)"
    );

    // New records (timestamps 10 minutes ahead, so they do not expire during the test) are
    // appended at the old log end and kept across several retention runs.
    let ahead = now_ms() + 600_000;
    let batch = strata_protocol::record_batch::build_batch(
        0,
        ahead,
        &[
            (Some(b"new-0"), b"fresh".as_slice()),
            (Some(b"new-1"), b"fresh".as_slice()),
        ],
    );
    let (err, base) = wire.produce(&topic, batch);
    assert_eq!((err, base), (NONE, N), "Produce after everything expired");
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        (wire.earliest(&topic), wire.latest(&topic)),
        (N, N + 2),
        "log start and end after producing new records and waiting 1.5 s{}",
        broker.logs()
    );
    let (err, _, _, mut records) = wire.fetch(&topic, N);
    assert_eq!(err, NONE);
    let set = RecordBatchDecoder::decode(&mut records).expect("decode fetched batch");
    let got: Vec<(i64, i64, Option<Bytes>)> = set
        .records
        .iter()
        .map(|r| (r.offset, r.timestamp, r.key.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (N, ahead, Some(Bytes::from_static(b"new-0"))),
            (N + 1, ahead, Some(Bytes::from_static(b"new-1")))
        ],
        "records fetched after time retention"
    );
    let (err, offset, _) = wire.list_offset(&topic, 0, hour_ago);
    assert_eq!(
        (err, offset),
        (NONE, N),
        "ListOffsets by the old records' timestamp: the first kept record"
    );
}

#[test]
fn deleting_a_topic_removes_its_partition_directories_and_nothing_else() {
    require_kcat();
    let mut broker = Broker::start(BROKER_SETTINGS);
    let topic = unique_topic("doomed");
    // A topic whose partition directory name starts like the deleted topic's
    // (`<topic>-1-0` next to `<topic>-1`): it must survive.
    let neighbour = format!("{topic}-1");
    let mut wire = Wire::connect(&broker);
    wire.create_topic(&topic, 3, &[("segment.bytes", &SEGMENT_BYTES.to_string())]);
    wire.create_topic(&neighbour, 1, &[]);
    let lines: Vec<String> = (0..100).map(line).collect();
    for p in 0..3 {
        let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let mut cmd = Command::new("kcat");
        cmd.args([
            "-P",
            "-b",
            &broker.bootstrap(),
            "-t",
            &topic,
            "-p",
            &p.to_string(),
        ]);
        cmd.args(["-X", "acks=all", "-X", "batch.num.messages=8"]);
        run(cmd, Some(input.as_bytes()), KCAT_TIMEOUT).assert_success(|| broker.logs());
    }
    kcat_produce_lines(&broker, &neighbour, &lines[..10]);
    let data = broker.data_dir();
    let expected: BTreeSet<String> = (0..3).map(|p| format!("{topic}-{p}")).collect();
    assert_eq!(
        partition_entries(&data, &topic),
        expected,
        "partition directories before deletion"
    );
    assert!(
        segment_bases(&data.join(format!("{topic}-0"))).len() > 1,
        "the topic should have several segments before deletion"
    );
    assert!(data.join(format!("{neighbour}-0")).is_dir());

    assert_eq!(wire.delete_topic(&topic), NONE, "DeleteTopics {topic}");
    let cleaned = poll_until(|| partition_entries(&data, &topic).is_empty().then_some(()));
    assert!(
        cleaned.is_some(),
        "{RETENTION_WAIT:?} after DeleteTopics the data dir still holds {:?}{}",
        partition_entries(&data, &topic),
        broker.logs()
    );
    assert_eq!(
        wire.metadata_error(&topic),
        UNKNOWN_TOPIC_OR_PARTITION,
        "Metadata (no auto-create) for the deleted topic"
    );
    assert_eq!(
        wire.delete_topic(&topic),
        UNKNOWN_TOPIC_OR_PARTITION,
        "DeleteTopics of the already deleted topic"
    );
    let (err, _, _) = wire.list_offset(&topic, 0, -1);
    assert_eq!(
        err, UNKNOWN_TOPIC_OR_PARTITION,
        "ListOffsets on the deleted topic"
    );

    // The neighbour is untouched, also after a restart; the deleted topic stays deleted.
    let check_neighbour = |broker: &Broker| {
        assert!(
            data.join(format!("{neighbour}-0")).is_dir(),
            "deleting {topic} removed {neighbour}-0{}",
            broker.logs()
        );
        let consumed = kcat_consume_from_beginning(broker, &neighbour);
        let want: Vec<(i64, String)> = (0..10).map(|i| (i as i64, line(i))).collect();
        assert_eq!(consumed, want, "records of {neighbour}");
    };
    check_neighbour(&broker);
    broker.restart();
    let mut wire = Wire::connect(&broker);
    assert_eq!(
        wire.metadata_error(&topic),
        UNKNOWN_TOPIC_OR_PARTITION,
        "the deleted topic came back after a restart{}",
        broker.logs()
    );
    assert!(partition_entries(&data, &topic).is_empty());
    check_neighbour(&broker);

    // The name is free again: a new topic under it starts empty.
    wire.create_topic(&topic, 1, &[]);
    assert_eq!(
        (wire.earliest(&topic), wire.latest(&topic)),
        (0, 0),
        "a re-created topic must not see the deleted topic's records"
    );
}
