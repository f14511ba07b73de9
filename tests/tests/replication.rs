//! Partition replication on real `strata` processes: followers copy the leader's log byte for
//! byte, the ISR follows followers that stop and come back, `acks=-1` with
//! `min.insync.replicas=2` goes on with one follower paused and is refused with two, and a
//! follower killed under load restarts from its own log and catches up. A broker whose disk is
//! replaced (data dir wiped) starts over at the leader's log start and rejoins the ISR;
//! kcat, confluent-kafka, kafka-python and the strata CLI write with acks=all through it all;
//! `strata topic describe` shows each replica's lag.
//!
//! The cluster: nodes 1-3 are controller voters and brokers, node 4 a broker only. The test
//! partitions live on brokers 1, 3 and 4 (leader 1), so pausing 3 and 4 leaves a quorum (1, 2)
//! to commit the ISR changes.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, ListOffsetsRequest, MetadataRequest, ProduceRequest, TopicName,
};
use strata_client::{Connection, ConnectionConfig};
use strata_protocol::record_batch::build_batch;

use common::{
    broker_binary, connect, consumer_fetch, create_assigned_topic as create_topic, launch_cluster,
    require_python_modules, require_tool, run, send_signal, str_bytes as name, unique_topic,
    Broker, Output,
};

const SETTINGS: [&str; 5] = [
    "broker.heartbeat.interval.ms=300",
    "broker.session.timeout.ms=3000",
    "replica.lag.time.max.ms=2000",
    "replica.fetch.wait.max.ms=200",
    "log.segment.bytes=65536",
];
const LEADER: i32 = 1;
const FOLLOWERS: [i32; 2] = [3, 4];
/// How long the ISR and the followers' logs may take to settle after a change.
const SETTLE: Duration = Duration::from_secs(30);

/// One produce of one batch of `records` values; the partition's error code.
async fn produce(c: &Connection, topic: &str, acks: i16, records: &[Vec<u8>]) -> i16 {
    let refs: Vec<(Option<&[u8]>, &[u8])> = records.iter().map(|v| (None, v.as_slice())).collect();
    let batch = build_batch(0, common::now_ms(), &refs);
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(20_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(name(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let response = c.send_at(&request, 9).await.expect("Produce");
    response.responses[0].partition_responses[0].error_code
}

/// The log start offset one broker reports for partition 0 (a Fetch answers it, also with
/// OFFSET_OUT_OF_RANGE).
async fn log_start(c: &Connection, topic: &str) -> i64 {
    let p = consumer_fetch(c, topic, 0, 0).await;
    assert!(
        matches!(p.error_code, 0 | 1),
        "Fetch from {}: error {}",
        c.addr(),
        p.error_code
    );
    p.log_start_offset
}

/// Everything from `from` up to the high watermark one broker serves, and that high watermark.
async fn read_from(c: &Connection, topic: &str, from: i64) -> (i64, Vec<u8>) {
    let mut bytes = Vec::new();
    let mut offset = from;
    for _ in 0..100_000 {
        let p = consumer_fetch(c, topic, 0, offset).await;
        assert_eq!(p.error_code, 0, "Fetch from {} at {offset}", c.addr());
        let records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            return (p.high_watermark, bytes);
        }
        offset = next_offset(&records);
        bytes.extend_from_slice(&records);
    }
    panic!("reading {topic} from {} did not end", c.addr());
}

/// The earliest offset of partition 0 as its leader `c` answers ListOffsets (timestamp -2).
async fn earliest_offset(c: &Connection, topic: &str) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(name(topic)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_current_leader_epoch(-1)
                .with_timestamp(-2)])]);
    let response = c.send_at(&request, 5).await.expect("ListOffsets");
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "ListOffsets earliest");
    p.offset
}

/// The offset after the last batch of `records`.
fn next_offset(records: &Bytes) -> i64 {
    let mut at = 0usize;
    let mut next = 0;
    while at + 12 <= records.len() {
        let base = i64::from_be_bytes(records[at..at + 8].try_into().unwrap());
        let len = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
        let last_delta = i32::from_be_bytes(records[at + 23..at + 27].try_into().unwrap());
        next = base + i64::from(last_delta) + 1;
        at += 12 + len;
    }
    next
}

/// The ISR of partition 0 of `topic` as broker `c` reports it.
async fn isr(c: &Connection, topic: &str) -> Vec<i32> {
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(TopicName(name(topic)))),
    ]));
    let (response, _) = c.send(&request).await.expect("Metadata");
    let mut isr: Vec<i32> = response.topics[0].partitions[0]
        .isr_nodes
        .iter()
        .map(|b| b.0)
        .collect();
    isr.sort();
    isr
}

async fn wait_for_isr(c: &Connection, topic: &str, want: &[i32]) {
    let start = Instant::now();
    loop {
        let now = isr(c, topic).await;
        if now == want {
            return;
        }
        assert!(
            start.elapsed() < SETTLE,
            "the ISR stayed {now:?}, not {want:?}, for {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every broker in `nodes` serves the same high watermark and the same bytes below
/// it as the leader, from the latest of their log starts (retention and a replaced replica that
/// started over at its leader's log start may leave them apart); returns the high watermark.
async fn wait_for_identical_logs(nodes: &[&Broker], topic: &str) -> i64 {
    let conns = futures_join(nodes).await;
    let start = Instant::now();
    loop {
        let mut from = 0;
        for c in &conns {
            from = from.max(log_start(c, topic).await);
        }
        let mut views = Vec::new();
        for c in &conns {
            views.push(read_from(c, topic, from).await);
        }
        let (hw, leader_bytes) = &views[0];
        if views.iter().all(|(h, b)| h == hw && b == leader_bytes) {
            return *hw;
        }
        assert!(
            start.elapsed() < SETTLE,
            "replicas still differ after {SETTLE:?}: high watermarks {:?}, sizes {:?} from {from}",
            views.iter().map(|v| v.0).collect::<Vec<_>>(),
            views.iter().map(|v| v.1.len()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn futures_join(nodes: &[&Broker]) -> Vec<Connection> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(connect(n).await);
    }
    out
}

fn values(from: usize, count: usize) -> Vec<Vec<u8>> {
    (from..from + count)
        .map(|i| format!("value-{i:06}").into_bytes())
        .collect()
}

#[test]
fn followers_copy_the_leader_and_the_isr_follows_paused_followers() {
    let mut nodes = launch_cluster(3, 1, &SETTINGS);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = unique_topic("replicated");
    let pids: Vec<u32> = FOLLOWERS
        .iter()
        .map(|id| nodes[*id as usize - 1].pid().expect("running"))
        .collect();
    rt.block_on(async {
        let leader = connect(&nodes[LEADER as usize - 1]).await;
        create_topic(
            &leader,
            &topic,
            &[LEADER, FOLLOWERS[0], FOLLOWERS[1]],
            &[("min.insync.replicas", "2")],
        )
        .await;
        // 1. A full ISR: acks=-1 is answered once all three have each batch.
        for i in 0..50 {
            assert_eq!(produce(&leader, &topic, -1, &values(i * 10, 10)).await, 0);
        }
        let replicas = [
            &nodes[LEADER as usize - 1],
            &nodes[FOLLOWERS[0] as usize - 1],
            &nodes[FOLLOWERS[1] as usize - 1],
        ];
        let hw = wait_for_identical_logs(&replicas, &topic).await;
        assert_eq!(hw, 500, "every acknowledged record is below the HW");
        assert_eq!(isr(&leader, &topic).await, vec![1, 3, 4]);

        // 2. One follower paused: it leaves the ISR and acks=-1 writes go on with two.
        send_signal(pids[1], libc::SIGSTOP);
        assert_eq!(produce(&leader, &topic, -1, &values(500, 10)).await, 0);
        wait_for_isr(&leader, &topic, &[1, 3]).await;
        for i in 51..60 {
            assert_eq!(produce(&leader, &topic, -1, &values(i * 10, 10)).await, 0);
        }

        // 3. The second paused too: below min.insync.replicas, acks=-1 is refused
        // (NOT_ENOUGH_REPLICAS, or _AFTER_APPEND for the produce that waited through the shrink);
        // acks=1 still works.
        send_signal(pids[0], libc::SIGSTOP);
        let start = Instant::now();
        let mut codes = Vec::new();
        loop {
            let code = produce(&leader, &topic, -1, &values(9_000, 1)).await;
            codes.push(code);
            if code == 19 {
                break;
            }
            assert!(
                matches!(code, 0 | 20) && start.elapsed() < SETTLE,
                "acks=-1 answers with two followers paused: {codes:?}"
            );
        }
        assert_eq!(produce(&leader, &topic, 1, &values(9_100, 1)).await, 0);
        assert_eq!(isr(&leader, &topic).await, vec![1]);

        // 4. Both back: they catch up, rejoin the ISR, and hold the leader's log.
        send_signal(pids[0], libc::SIGCONT);
        send_signal(pids[1], libc::SIGCONT);
        wait_for_isr(&leader, &topic, &[1, 3, 4]).await;
        assert_eq!(produce(&leader, &topic, -1, &values(10_000, 10)).await, 0);
        wait_for_identical_logs(&replicas, &topic).await;
    });
    for n in &mut nodes {
        n.stop();
    }
}

#[test]
fn a_follower_killed_under_load_restarts_from_its_own_log_and_catches_up() {
    // The surviving follower must stay in sync while the dead one is dropped: a longer lag
    // limit, so CPU starvation on a busy 2-core machine does not drop it too.
    let mut settings = SETTINGS;
    settings[2] = "replica.lag.time.max.ms=6000";
    let mut nodes = launch_cluster(3, 1, &settings);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = unique_topic("follower-crash");
    rt.block_on(async {
        let leader = connect(&nodes[0]).await;
        create_topic(&leader, &topic, &[1, 3, 4], &[("min.insync.replicas", "2")]).await;
        for i in 0..100 {
            assert_eq!(produce(&leader, &topic, -1, &values(i * 20, 20)).await, 0);
        }
    });
    // Broker 4 dies mid-stream, while writes go on.
    let writer = {
        let addr = nodes[0].bootstrap();
        let topic = topic.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let c = Connection::connect(&addr, ConnectionConfig::default())
                    .await
                    .expect("connect");
                let mut acked = 0;
                for i in 100..400 {
                    if produce(&c, &topic, -1, &values(i * 20, 20)).await == 0 {
                        acked += 1;
                    }
                }
                acked
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    nodes[3].kill9();
    let acked = writer.join().expect("writer");
    assert_eq!(
        acked, 300,
        "min.insync.replicas=2 holds with one follower down"
    );
    nodes[3].restart();
    nodes[3].wait_until_serving();
    rt.block_on(async {
        let leader = connect(&nodes[0]).await;
        wait_for_isr(&leader, &topic, &[1, 3, 4]).await;
        let replicas = [&nodes[0], &nodes[2], &nodes[3]];
        let hw = wait_for_identical_logs(&replicas, &topic).await;
        assert_eq!(hw, 400 * 20);
    });
    let log = nodes[3].logs();
    assert!(
        !log.contains("panicked"),
        "the restarted follower panicked:\n{log}"
    );
    for n in &mut nodes {
        n.stop();
    }
}

/// Stops `node`, empties its data directory (a replaced disk) and starts it again.
fn replace_disk(node: &mut Broker) {
    node.stop();
    let data = node.data_dir();
    std::fs::remove_dir_all(&data).expect("wipe the data directory");
    std::fs::create_dir_all(&data).expect("recreate the data directory");
}

#[test]
fn a_replaced_broker_copies_from_the_leaders_log_start_and_rejoins_the_isr() {
    let mut settings = SETTINGS.to_vec();
    settings.push("log.retention.check.interval.ms=200");
    let mut nodes = launch_cluster(3, 1, &settings);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = unique_topic("replaced-disk");
    rt.block_on(async {
        let leader = connect(&nodes[0]).await;
        create_topic(
            &leader,
            &topic,
            &[1, 3, 4],
            &[
                ("min.insync.replicas", "2"),
                ("segment.bytes", "8192"),
                ("retention.bytes", "32768"),
            ],
        )
        .await;
        for i in 0..200 {
            assert_eq!(produce(&leader, &topic, -1, &values(i * 20, 20)).await, 0);
        }
        // Retention deletes the first segments on the leader: its log no longer starts at 0.
        let start = Instant::now();
        while earliest_offset(&leader, &topic).await == 0 {
            assert!(start.elapsed() < SETTLE, "retention deleted nothing");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Broker 4's disk is replaced while writes go on without it.
    replace_disk(&mut nodes[3]);
    rt.block_on(async {
        let leader = connect(&nodes[0]).await;
        // The first acks=-1 write waits until the leader drops the silent broker from the ISR.
        for i in 200..300 {
            assert_eq!(produce(&leader, &topic, -1, &values(i * 20, 20)).await, 0);
        }
        assert_eq!(isr(&leader, &topic).await, vec![1, 3]);
    });
    nodes[3].restart();
    rt.block_on(async {
        let leader = connect(&nodes[0]).await;
        let leader_start = earliest_offset(&leader, &topic).await;
        assert!(leader_start > 0, "the leader's log starts at {leader_start}");
        wait_for_isr(&leader, &topic, &[1, 3, 4]).await;
        assert_eq!(produce(&leader, &topic, -1, &values(6_000, 20)).await, 0);
        let replicas = [&nodes[0], &nodes[2], &nodes[3]];
        let hw = wait_for_identical_logs(&replicas, &topic).await;
        assert_eq!(hw, 301 * 20);
        // The new disk holds no offset below the leader's log start: it started over there.
        let replaced = connect(&nodes[3]).await;
        let replaced_start = log_start(&replaced, &topic).await;
        assert!(
            replaced_start >= leader_start,
            "the replaced broker's log starts at {replaced_start}, below the leader's {leader_start}"
        );
    });
    let log = nodes[3].logs();
    assert!(
        log.contains("follower starts over at its leader's log start"),
        "the replaced broker did not start over at the leader's log start:\n{log}"
    );
    assert!(
        !log.contains("panicked"),
        "the replaced broker panicked:\n{log}"
    );
    for n in &mut nodes {
        n.stop();
    }
}

/// The bigger log of a replaced disk: ~50 MB written while broker 4 is away are copied once it
/// is back.
#[test]
fn a_replaced_broker_catches_up_on_fifty_megabytes() {
    const BATCHES: usize = 100;
    const RECORDS: usize = 50;
    const VALUE_BYTES: usize = 10_000;
    let mut nodes = launch_cluster(3, 1, &SETTINGS);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = unique_topic("replaced-big");
    rt.block_on(async {
        let leader = connect(&nodes[0]).await;
        let configs = [("min.insync.replicas", "2"), ("segment.bytes", "8388608")];
        create_topic(&leader, &topic, &[1, 3, 4], &configs).await;
        assert_eq!(produce(&leader, &topic, -1, &values(0, 10)).await, 0);
    });
    replace_disk(&mut nodes[3]);
    rt.block_on(async {
        let leader = connect(&nodes[0]).await;
        for i in 0..BATCHES {
            let batch: Vec<Vec<u8>> = (0..RECORDS)
                .map(|r| {
                    let mut v = format!("big-{i:04}-{r:03}-").into_bytes();
                    v.resize(VALUE_BYTES, b'a' + (r % 26) as u8);
                    v
                })
                .collect();
            assert_eq!(produce(&leader, &topic, 1, &batch).await, 0);
        }
    });
    let back = Instant::now();
    nodes[3].restart();
    rt.block_on(async {
        let leader = connect(&nodes[0]).await;
        wait_for_isr(&leader, &topic, &[1, 3, 4]).await;
        let replicas = [&nodes[0], &nodes[2], &nodes[3]];
        let hw = wait_for_identical_logs(&replicas, &topic).await;
        assert_eq!(hw, (10 + BATCHES * RECORDS) as i64);
    });
    eprintln!(
        "[replication] {} MB copied to the replaced broker and compared in {:?}",
        BATCHES * RECORDS * VALUE_BYTES / 1_000_000,
        back.elapsed()
    );
    for n in &mut nodes {
        n.stop();
    }
}

/// `strata <args>` (the CLI), bounded in time.
fn strata(args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(broker_binary());
    cmd.args(args).env("NO_COLOR", "1");
    run(cmd, None, Duration::from_secs(30))
}

/// The replica rows of `strata topic describe` (the table after the partition table), split
/// into cells: partition, replica, then the rest.
fn replica_rows(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| !l.contains("REPLICA  "))
        .skip(1)
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("broker "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn topic_describe_shows_each_replicas_lag_and_isr_state() {
    let mut nodes = launch_cluster(3, 1, &SETTINGS);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = unique_topic("described");
    let replicas = [&nodes[0], &nodes[2], &nodes[3]];
    rt.block_on(async {
        let leader = connect(&nodes[0]).await;
        create_topic(&leader, &topic, &[1, 3, 4], &[("min.insync.replicas", "2")]).await;
        for i in 0..20 {
            assert_eq!(produce(&leader, &topic, -1, &values(i * 10, 10)).await, 0);
        }
        wait_for_identical_logs(&replicas, &topic).await;
    });
    let bootstrap = nodes[0].bootstrap();
    let describe = || strata(&["topic", "describe", &topic, "-b", &bootstrap]);
    // All caught up: every replica in sync, no lag, the same bytes.
    let out = describe();
    out.assert_success(|| nodes[0].logs());
    let rows = replica_rows(&out.stdout);
    let sizes: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.split(' ').next_back())
        .collect();
    assert_eq!(rows.len(), 3, "{}", out.stdout);
    assert!(
        rows[0].starts_with("0 1 (leader) in-sync 0 "),
        "{}",
        out.stdout
    );
    assert!(rows[1].starts_with("0 3 in-sync 0 "), "{}", out.stdout);
    assert!(rows[2].starts_with("0 4 in-sync 0 "), "{}", out.stdout);
    assert!(
        sizes.iter().all(|s| *s == sizes[0] && *s != "0"),
        "{}",
        out.stdout
    );
    // Another client reads the same answers.
    require_python_modules(&["kafka"], "pip install kafka-python");
    let out = nodes[0].python(
        "describe_log_dirs_kafka_python.py",
        &[topic.as_str(), "1,3,4"],
    );
    out.assert_success(|| nodes[0].logs());
    assert!(
        out.stdout.contains(&format!("1={0} 3={0} 4={0}", sizes[0])),
        "{}",
        out.describe()
    );

    // Broker 4 stops and writes go on: it is out of sync, and no broker answers for it.
    nodes[3].stop();
    rt.block_on(async {
        let leader = connect(&nodes[0]).await;
        assert_eq!(produce(&leader, &topic, -1, &values(200, 10)).await, 0);
        wait_for_isr(&leader, &topic, &[1, 3]).await;
    });
    let out = describe();
    out.assert_success(|| nodes[0].logs());
    let rows = replica_rows(&out.stdout);
    assert_eq!(rows.len(), 3, "{}", out.stdout);
    assert!(
        rows[0].starts_with("0 1 (leader) in-sync 0 "),
        "{}",
        out.stdout
    );
    assert_eq!(rows[2], "0 4 out of sync - -", "{}", out.stdout);
    assert!(
        out.stdout.contains("broker 4: replica logs unavailable"),
        "{}",
        out.stdout
    );
    for n in &mut nodes {
        if n.is_running() {
            n.stop();
        }
    }
}

/// Runs `cmd` with `stdin`, for at most 60 s, and asserts it succeeded.
fn run_ok(cmd: std::process::Command, stdin: Option<&[u8]>, what: &str) -> String {
    let out = run(cmd, stdin, Duration::from_secs(60));
    assert!(out.success(), "{what} failed{}", out.describe());
    out.stdout
}

/// The story from the clients' side: a confluent-kafka acks=all producer keeps writing while a
/// follower is paused and resumed, and every acknowledged record is read back; then, with every
/// follower back, kcat, confluent-kafka, kafka-python and the strata CLI each write with
/// acks=all and read back their own RF=3 topic, which every replica holds byte for byte.
#[test]
fn clients_write_with_acks_all_through_a_paused_follower_and_read_everything_back() {
    require_python_modules(
        &["confluent_kafka", "kafka"],
        "pip install confluent-kafka kafka-python",
    );
    require_tool("kcat", "-V", "apt-get install kcat");
    let mut nodes = launch_cluster(3, 1, &SETTINGS);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let names = ["acked", "kcat", "confluent", "kafka-python", "cli"].map(unique_topic);
    rt.block_on(async {
        let leader = connect(&nodes[0]).await;
        // Segments larger than librdkafka's batches (SETTINGS' are small).
        let configs = [("min.insync.replicas", "2"), ("segment.bytes", "8388608")];
        for t in &names {
            create_topic(&leader, t, &[1, 3, 4], &configs).await;
        }
    });
    let replicas = [&nodes[0], &nodes[2], &nodes[3]];
    let pid4 = nodes[3].pid().expect("running");

    // 1. A confluent-kafka acks=all producer while broker 4 is paused for a while.
    let acked = &names[0];
    let ackfile = nodes[0].temp_dir().join("acked.txt");
    let ackpath = ackfile.to_str().expect("utf-8 temp path").to_string();
    let load = nodes[0].spawn_python("acked_load.py", &[acked.as_str(), &ackpath, "8"]);
    let count = || {
        std::fs::read_to_string(&ackfile)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let start = Instant::now();
    while count() == 0 {
        assert!(start.elapsed() < SETTLE, "no record acknowledged");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before_pause = count();
    send_signal(pid4, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(4));
    let at_resume = count();
    send_signal(pid4, libc::SIGCONT);
    let out = load.wait(Duration::from_secs(90));
    out.assert_success(|| nodes[0].logs());
    eprintln!(
        "[replication] {}; acknowledged: {before_pause} before the pause, {at_resume} at resume",
        out.stdout.trim()
    );
    assert!(
        at_resume > before_pause,
        "no acks=all write was acknowledged while broker 4 was paused"
    );
    assert!(
        out.stdout.contains(" FAILED 0 "),
        "deliveries failed{}",
        out.describe()
    );
    rt.block_on(async {
        let leader = connect(&nodes[0]).await;
        wait_for_isr(&leader, acked, &[1, 3, 4]).await;
        wait_for_identical_logs(&replicas, acked).await;
    });
    let out = nodes[0].python("verify_acked.py", &[acked.as_str(), &ackpath]);
    out.assert_success(|| nodes[0].logs());
    assert!(out.stdout.contains("VERIFIED"), "{}", out.describe());
    eprintln!("[replication] {}", out.stdout.trim());

    // 2. Every client, with every follower back.
    let bootstrap = nodes[0].bootstrap();
    let lines: String = (0..200).map(|i| format!("record-{i:04}\n")).collect();
    let kcat = |args: &[&str]| {
        let mut cmd = std::process::Command::new("kcat");
        cmd.args(["-b", &bootstrap, "-t", &names[1]]).args(args);
        cmd
    };
    run_ok(
        kcat(&["-P", "-p", "0", "-X", "acks=all"]),
        Some(lines.as_bytes()),
        "kcat -P",
    );
    let read = run_ok(
        kcat(&["-C", "-o", "beginning", "-e", "-f", "%s\n"]),
        None,
        "kcat -C",
    );
    assert_eq!(read, lines, "kcat read back something else");

    let out = nodes[0].python(
        "roundtrip_confluent.py",
        &[names[2].as_str(), "none", "300"],
    );
    out.assert_success(|| nodes[0].logs());
    let out = nodes[0].python(
        "roundtrip_kafka_python.py",
        &[names[3].as_str(), "none", "300"],
    );
    out.assert_success(|| nodes[0].logs());

    let mut produce = std::process::Command::new(broker_binary());
    produce.args(["produce", "-b", &bootstrap, &names[4], "--acks", "all"]);
    run_ok(produce, Some(lines.as_bytes()), "strata produce");
    let mut consume = std::process::Command::new(broker_binary());
    consume.args([
        "consume",
        "-b",
        &bootstrap,
        &names[4],
        "--from-beginning",
        "--count",
        "200",
    ]);
    let read = run_ok(consume, None, "strata consume");
    assert_eq!(read, lines, "strata consume read back something else");

    rt.block_on(async {
        for t in &names[1..] {
            wait_for_identical_logs(&replicas, t).await;
        }
    });
    for n in &mut nodes {
        n.stop();
    }
}
