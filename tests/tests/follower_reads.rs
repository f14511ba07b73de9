//! Reads from followers (KIP-392) on real `strata` processes: three brokers in racks `rack-1`,
//! `rack-2` and `rack-3`, a topic with three replicas led by broker 1. A confluent-kafka consumer
//! in `rack-2` and `strata consume --rack rack-3` read every record from the follower in their
//! rack; kafka-python (no KIP-392) reads everything from the leader. The proof is each broker's
//! consumer bytes out (`strata_topic_bytes_out_total`; follower fetches count in
//! `strata_replication_bytes_out_total` instead), not timing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use strata_client::{Connection, ConnectionConfig};
use strata_protocol::record_batch::build_batch;

use common::{
    broker_binary, create_assigned_topic, free_port, require_python_modules, run,
    str_bytes as name, unique_topic, Broker,
};

/// Records produced; each value is `value-NNNNNN` (12 bytes).
const RECORDS: usize = 300;
const VALUE_BYTES: usize = 12;

/// A node of the three-node cluster (all voters and brokers) and its metrics address.
struct Node {
    broker: Broker,
    metrics: String,
}

/// Nodes 1-3, node `i` in rack `rack-i`, each with its own metrics listener.
fn launch_racked_cluster() -> Vec<Node> {
    let controller_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = (0..3)
        .map(|i| format!("{}@127.0.0.1:{}", i + 1, controller_ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let metrics = format!("127.0.0.1:{}", free_port());
            let set = vec![
                format!("controller.quorum.voters={voters}"),
                format!("controller.listener=127.0.0.1:{}", controller_ports[i]),
                format!("broker.rack=rack-{}", i + 1),
                format!("metrics.listener={metrics}"),
                "broker.heartbeat.interval.ms=300".to_string(),
                "replica.fetch.wait.max.ms=200".to_string(),
            ];
            Node {
                broker: Broker::launch(i as i32 + 1, &set),
                metrics,
            }
        })
        .collect();
    for n in &mut nodes {
        n.broker.wait_until_serving();
    }
    nodes
}

/// The consumer bytes a broker has served from `topic` (0 before any).
fn topic_bytes_out(node: &Node, topic: &str) -> f64 {
    let mut s = TcpStream::connect(&node.metrics).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: strata\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the metrics");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let series = format!("strata_topic_bytes_out_total{{topic=\"{topic}\"}} ");
    answer
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
        .unwrap_or(0.0)
}

/// The consumer bytes out of each node.
fn bytes_out(nodes: &[Node], topic: &str) -> Vec<f64> {
    nodes.iter().map(|n| topic_bytes_out(n, topic)).collect()
}

/// Produces `RECORDS` values in batches of 50 with acks=-1 (every replica has each batch).
async fn produce_all(c: &Connection, topic: &str) {
    let values: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| format!("value-{i:06}").into_bytes())
        .collect();
    for chunk in values.chunks(50) {
        let refs: Vec<(Option<&[u8]>, &[u8])> =
            chunk.iter().map(|v| (None, v.as_slice())).collect();
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(20_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(name(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(build_batch(0, common::now_ms(), &refs)))])]);
        let response = c.send_at(&request, 9).await.expect("Produce");
        assert_eq!(
            response.responses[0].partition_responses[0].error_code, 0,
            "acks=-1 produce"
        );
    }
}

/// Asserts that between `before` and `after` only node `reader` (index) served the records.
fn assert_served_by(who: &str, reader: usize, before: &[f64], after: &[f64]) {
    let grew: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let records = (RECORDS * VALUE_BYTES) as f64;
    assert!(
        grew[reader] >= records,
        "{who}: broker {} served {} bytes, less than the {records} value bytes (growth per broker {grew:?})",
        reader + 1,
        grew[reader]
    );
    for (i, g) in grew.iter().enumerate() {
        if i != reader {
            assert_eq!(
                *g,
                0.0,
                "{who}: broker {} served consumer bytes too ({grew:?})",
                i + 1
            );
        }
    }
}

#[test]
fn consumers_read_from_the_follower_in_their_rack_and_others_from_the_leader() {
    require_python_modules(
        &["confluent_kafka", "kafka"],
        "pip install confluent-kafka kafka-python",
    );
    let nodes = launch_racked_cluster();
    let leader = &nodes[0].broker;
    let topic = unique_topic("follower-reads");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Connection::connect(&leader.bootstrap(), ConnectionConfig::default())
            .await
            .expect("connect");
        create_assigned_topic(&c, &topic, &[1, 2, 3], &[]).await;
        produce_all(&c, &topic).await;
    });
    let n = RECORDS.to_string();

    // 1. confluent-kafka in rack-2: every record from broker 2.
    let before = bytes_out(&nodes, &topic);
    let out = leader.python(
        "follower_reads.py",
        &["confluent", topic.as_str(), n.as_str(), "--rack", "rack-2"],
    );
    out.assert_success(|| leader.logs());
    assert_served_by(
        "confluent-kafka rack-2",
        1,
        &before,
        &bytes_out(&nodes, &topic),
    );

    // 2. `strata consume --rack rack-3`: every record from broker 3.
    let before = bytes_out(&nodes, &topic);
    let bootstrap = leader.bootstrap();
    let mut cmd = Command::new(broker_binary());
    cmd.args([
        "consume",
        "-b",
        bootstrap.as_str(),
        topic.as_str(),
        "--from-beginning",
        "--rack",
        "rack-3",
        "--count",
        n.as_str(),
        "--idle-timeout-ms",
        "20000",
    ]);
    let out = run(cmd, None, Duration::from_secs(30));
    out.assert_success(|| leader.logs());
    let lines: Vec<&str> = out.stdout.lines().collect();
    let want: Vec<String> = (0..RECORDS).map(|i| format!("value-{i:06}")).collect();
    assert_eq!(lines, want, "strata consume --rack rack-3");
    assert_served_by(
        "strata consume rack-3",
        2,
        &before,
        &bytes_out(&nodes, &topic),
    );

    // 3. kafka-python (no KIP-392): everything, from the leader.
    let before = bytes_out(&nodes, &topic);
    let out = leader.python(
        "follower_reads.py",
        &["kafka-python", topic.as_str(), n.as_str()],
    );
    out.assert_success(|| leader.logs());
    assert_served_by("kafka-python", 0, &before, &bytes_out(&nodes, &topic));
}
