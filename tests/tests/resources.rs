//! A broker's resources hold up to what users do: a request for more partitions than the broker
//! may host is refused at once (POLICY_VIOLATION) and writes nothing; a few thousand partitions
//! work and survive a restart; and a data directory that runs out of space refuses produces
//! (never acknowledges them), keeps serving reads, loses nothing acknowledged, says so once in
//! its log, and takes writes again by itself when space returns.
//!
//! Raw Kafka requests (kafka-protocol), so every error code is checked exactly. The disk-full
//! story mounts a size-limited tmpfs (needs root; skipped with a message otherwise). tmpfs
//! implements `fallocate` against its size limit, so a full tmpfs fails the broker's block
//! reservation with ENOSPC, the path a full disk takes (its msync is a no-op, which does not
//! matter here: nothing is lost by a clean restart).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{now_ms, Broker};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use strata_protocol::record_batch::build_batch;

const IO_TIMEOUT: Duration = Duration::from_secs(60);

const NONE: i16 = 0;
const POLICY_VIOLATION: i16 = 44;
const KAFKA_STORAGE_ERROR: i16 = 56;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One Kafka connection speaking raw requests, one at a time.
struct Wire {
    stream: TcpStream,
    correlation_id: i32,
}

impl Wire {
    fn connect(broker: &Broker) -> Wire {
        let stream = TcpStream::connect(("127.0.0.1", broker.port()))
            .unwrap_or_else(|e| panic!("connect to {}: {e}{}", broker.bootstrap(), broker.logs()));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Wire {
            stream,
            correlation_id: 0,
        }
    }

    fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        self.correlation_id += 1;
        let buf = common::request_frame(
            R::KEY,
            version,
            self.correlation_id,
            "strata-resources-test",
            req,
        );
        self.stream.write_all(&buf).expect("send request");
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .expect("read response size");
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).expect("read response");
        let mut body = Bytes::from(body);
        let header =
            ResponseHeader::decode(&mut body, R::Response::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        R::Response::decode(&mut body, version).unwrap()
    }

    /// CreateTopics v5 of one topic: (error code, message).
    fn create_topic(&mut self, topic: &str, partitions: i32) -> (i16, Option<String>) {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(60_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)]);
        let resp = self.call(&req, 5);
        let t = &resp.topics[0];
        (
            t.error_code,
            t.error_message.as_ref().map(|m| m.to_string()),
        )
    }

    fn create_partitions(&mut self, topic: &str, count: i32) -> i16 {
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(60_000)
            .with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(name(topic))
                    .with_count(count)
                    .with_assignments(None),
            ]);
        self.call(&req, 1).results[0].error_code
    }

    /// Metadata v9 of `topic` without auto-creation: (error, partition count).
    fn partition_count(&mut self, topic: &str) -> (i16, usize) {
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(name(topic)))]));
        let resp = self.call(&req, 9);
        (resp.topics[0].error_code, resp.topics[0].partitions.len())
    }

    /// Produce v8 (acks=-1) of one batch to `partition`: (error, base offset).
    fn produce(&mut self, topic: &str, partition: i32, batch: Bytes) -> (i16, i64) {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch)),
                ])]);
        let resp = self.call(&req, 8);
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    /// Fetch v11 of `partition` from `offset`: (error, records).
    fn fetch(&mut self, topic: &str, partition: i32, offset: i64) -> (i16, Bytes) {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(4 << 20)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(offset)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(4 << 20)])]);
        let resp = self.call(&req, 11);
        let p = &resp.responses[0].partitions[0];
        (p.error_code, p.records.clone().unwrap_or_default())
    }

    /// Every record value of `partition` from offset 0, in order, checking offsets are dense.
    fn read_all(&mut self, topic: &str, partition: i32) -> Vec<Bytes> {
        let mut values = Vec::new();
        let mut next = 0i64;
        for _ in 0..100_000 {
            let (err, mut records) = self.fetch(topic, partition, next);
            assert_eq!(err, NONE, "fetch {topic}-{partition} at {next}");
            if records.is_empty() {
                break;
            }
            let batches = RecordBatchDecoder::decode_all(&mut records).expect("valid batches");
            for b in batches {
                for r in b.records {
                    if r.offset < next {
                        continue;
                    }
                    assert_eq!(r.offset, next, "dense offsets");
                    values.push(r.value.unwrap_or_default());
                    next += 1;
                }
            }
        }
        values
    }
}

/// A request for ten million partitions is refused at once and writes nothing; a few thousand
/// partitions are created, written and still there after a restart.
#[test]
fn ten_million_partitions_are_refused_and_three_thousand_survive_a_restart() {
    let mut broker = Broker::start(&[]);
    let mut wire = Wire::connect(&broker);

    let started = Instant::now();
    let (err, message) = wire.create_topic("huge", 10_000_000);
    assert_eq!(err, POLICY_VIOLATION, "{message:?}");
    assert!(
        message.as_deref().unwrap_or("").contains("max.partitions"),
        "{message:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        wire.partition_count("huge").0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert!(!broker.data_dir().join("huge-0").exists());

    let creating = Instant::now();
    let (err, message) = wire.create_topic("many", 3000);
    eprintln!("creating 3000 partitions: {:?}", creating.elapsed());
    assert_eq!(err, NONE, "{message:?}{}", broker.logs());
    assert_eq!(wire.create_partitions("many", 10_000_000), POLICY_VIOLATION);
    for p in [0, 1499, 2999] {
        let batch = build_batch(0, now_ms(), &[(None, format!("p{p}").as_bytes())]);
        assert_eq!(wire.produce("many", p, batch).0, NONE);
    }
    drop(wire);

    let stopping = Instant::now();
    stop_with_patience(&mut broker);
    eprintln!("clean stop of 3000 partitions: {:?}", stopping.elapsed());
    let starting = Instant::now();
    broker.restart();
    eprintln!("start of 3000 partitions: {:?}", starting.elapsed());
    let mut wire = Wire::connect(&broker);
    assert_eq!(wire.partition_count("many"), (NONE, 3000));
    for p in [0, 1499, 2999] {
        assert_eq!(wire.read_all("many", p), vec![Bytes::from(format!("p{p}"))]);
    }
    stop_with_patience(&mut broker);
}

/// A clean stop closes (trims, syncs) every partition: with thousands that takes longer than
/// the fixture's stop timeout, so wait for it here (bounded).
fn stop_with_patience(broker: &mut Broker) {
    let pid = broker.pid().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(
        common::wait_for(Duration::from_secs(300), || !broker.is_running()),
        "no clean stop within 300 s{}",
        broker.logs()
    );
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` on `dir`, or `None` where mounting is not permitted.
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazy: the broker of a failed test may still hold files open until it is killed.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full data directory: produces are refused (KAFKA_STORAGE_ERROR, never acknowledged),
/// reads go on, the broker logs it once, a restart while full loses nothing, and writes resume
/// by themselves once a file is deleted.
#[test]
fn a_full_disk_refuses_produces_keeps_every_acknowledged_record_and_recovers_by_itself() {
    // Small segments: rolls happen while the disk fills, and reservations stay small.
    let mut broker = Broker::start(&["log.segment.bytes=1048576"]);
    broker.stop();
    let data = broker.data_dir();
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let Some(_mount) = Mount::tmpfs(&data, "24m") else {
        return;
    };
    broker.restart();
    let mut wire = Wire::connect(&broker);
    assert_eq!(wire.create_topic("full", 1).0, NONE);
    // Most of the space goes to a file the "operator" deletes later.
    let filler = data.join("filler");
    std::fs::write(&filler, vec![1u8; 16 << 20]).unwrap();

    let value = |i: usize| format!("{i:08}-{}", "v".repeat(2000));
    let mut acknowledged = 0usize;
    let mut refused = 0usize;
    for i in 0..20_000usize {
        let records: Vec<String> = (0..16).map(|r| value(i * 16 + r)).collect();
        let pairs: Vec<(Option<&[u8]>, &[u8])> =
            records.iter().map(|r| (None, r.as_bytes())).collect();
        let (err, base) = wire.produce("full", 0, build_batch(0, now_ms(), &pairs));
        if err == NONE {
            assert_eq!(
                refused, 0,
                "an acknowledgement after a refusal, with the disk still full"
            );
            assert_eq!(base as usize, acknowledged);
            acknowledged += 16;
        } else {
            assert_eq!(err, KAFKA_STORAGE_ERROR, "{}", broker.logs());
            refused += 1;
            if refused == 20 {
                break;
            }
        }
    }
    assert!(
        acknowledged > 0 && refused == 20,
        "acked {acknowledged}, refused {refused}"
    );
    eprintln!("disk full after {acknowledged} acknowledged records");

    let check = |wire: &mut Wire, count: usize| {
        let values = wire.read_all("full", 0);
        assert_eq!(values.len(), count);
        for (i, v) in values.iter().enumerate() {
            assert_eq!(v, value(i).as_bytes(), "record {i}");
        }
    };
    // Reads go on while the disk is full.
    check(&mut wire, acknowledged);
    let logs = std::fs::read_to_string(broker.log_path()).unwrap();
    assert_eq!(
        logs.matches("no disk space for writes").count(),
        1,
        "a full disk is logged once{}",
        broker.logs()
    );

    // A restart while the disk is full loses nothing.
    drop(wire);
    broker.restart();
    let mut wire = Wire::connect(&broker);
    check(&mut wire, acknowledged);

    // Space returns: writes resume without a restart.
    std::fs::remove_file(&filler).unwrap();
    let records: Vec<String> = (0..16).map(|r| value(acknowledged + r)).collect();
    let pairs: Vec<(Option<&[u8]>, &[u8])> = records.iter().map(|r| (None, r.as_bytes())).collect();
    let (err, base) = wire.produce("full", 0, build_batch(0, now_ms(), &pairs));
    assert_eq!(err, NONE, "space returned, yet refused{}", broker.logs());
    assert_eq!(base as usize, acknowledged);
    acknowledged += 16;
    check(&mut wire, acknowledged);
    drop(wire);
    broker.restart();
    let mut wire = Wire::connect(&broker);
    check(&mut wire, acknowledged);
    drop(wire);
    broker.stop();
}
