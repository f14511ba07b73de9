//! The Prometheus endpoint (`metrics.listener`, `--metrics-listen`): an operator scrapes
//! `/metrics` over plain HTTP while clients produce and fetch, and sees the requests per API, the
//! bytes and records per topic and the open connections; a malformed scrape gets 400 and the
//! broker keeps serving both listeners.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{unique_topic, Broker};
use strata_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use strata_client::group::GroupConfig;
use strata_client::producer::{Producer, ProducerConfig, ProducerRecord};
use strata_client::{ClientConfig, Cluster};

/// The metrics address the broker logged at start (it was asked for port 0).
fn metrics_addr(broker: &Broker) -> String {
    let log = std::fs::read_to_string(broker.log_path()).unwrap_or_default();
    log.lines()
        .find_map(|l| {
            let rest = l.split("serving Prometheus metrics on http://").nth(1)?;
            Some(rest.split("/metrics").next()?.to_string())
        })
        .unwrap_or_else(|| panic!("no metrics address logged{}", broker.logs()))
}

/// Sends `request` as is and returns the whole answer (the server closes after one).
fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    answer
}

fn scrape(addr: &str) -> String {
    let answer = http(addr, "GET /metrics HTTP/1.1\r\nHost: strata\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Content-Type: text/plain; version=0.0.4"));
    answer
}

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_scrapes_requests_topic_bytes_and_connections() {
    let broker = Broker::start(&["metrics.listener=127.0.0.1:0"]);
    let addr = metrics_addr(&broker);
    let topic = unique_topic("metrics");

    let cluster = Cluster::connect(ClientConfig::new(&broker.bootstrap()))
        .await
        .expect("connect");
    let producer = Producer::new(cluster.clone(), ProducerConfig::default()).expect("producer");
    let n = 20usize;
    let value = "v".repeat(100);
    let mut deliveries = Vec::new();
    for i in 0..n {
        let record = ProducerRecord::new(topic.clone(), value.clone().into_bytes())
            .with_key(format!("k{i}").into_bytes())
            .with_partition(0);
        deliveries.push(producer.send(record).await.expect("send"));
    }
    for d in deliveries {
        tokio::time::timeout(Duration::from_secs(20), d)
            .await
            .expect("delivered in time")
            .expect("delivered");
    }
    // A consumer group reads them back: one rebalance (the group's first generation).
    let mut consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig {
            fetch_max_wait_ms: 100,
            auto_offset_reset: AutoOffsetReset::Earliest,
            group: Some(GroupConfig::new(format!("{topic}-group"))),
            ..ConsumerConfig::default()
        },
    );
    consumer.subscribe(&[topic.as_str()]).unwrap();
    let mut read = 0;
    for _ in 0..100 {
        read += consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .len();
        if read >= n {
            break;
        }
    }
    assert_eq!(read, n, "{}", broker.logs());

    // The client's connection stays open while the operator scrapes.
    let text = scrape(&addr);
    let requests = |api: &str| sample(&text, &format!("strata_requests_total{{api=\"{api}\"}}"));
    assert!(requests("Produce").unwrap_or(0.0) >= 1.0, "{text}");
    assert!(requests("Fetch").unwrap_or(0.0) >= 1.0, "{text}");
    assert!(requests("Metadata").unwrap_or(0.0) >= 1.0, "{text}");
    let by_topic = |name: &str| sample(&text, &format!("{name}{{topic=\"{topic}\"}}"));
    let bytes_in = by_topic("strata_topic_bytes_in_total").unwrap_or(0.0);
    assert!(bytes_in >= (n * value.len()) as f64, "{text}");
    assert_eq!(
        by_topic("strata_topic_records_in_total"),
        Some(n as f64),
        "{text}"
    );
    assert_eq!(by_topic("strata_topic_records_out_total"), Some(n as f64));
    assert!(by_topic("strata_topic_bytes_out_total").unwrap_or(0.0) >= bytes_in);
    assert!(
        sample(&text, "strata_connections").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    let produce_latencies = r#"strata_request_duration_seconds_count{api="Produce"}"#;
    assert_eq!(sample(&text, produce_latencies), requests("Produce"));
    assert!(text.contains("# TYPE strata_request_duration_seconds histogram"));
    assert!(text.contains("# TYPE strata_flush_duration_seconds histogram"));
    assert!(
        sample(&text, "strata_group_rebalances_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    consumer.close().await.unwrap();
    drop(producer);
    drop(cluster);

    // Bad requests get 400 (or 404 for another path) and change nothing.
    let bad = http(&addr, "HELLO THERE\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    let oversized = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(20_000));
    assert!(http(&addr, &oversized).starts_with("HTTP/1.1 400 "));
    assert!(http(&addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));

    // The broker still serves clients, and scrapes still count them.
    let cluster = Cluster::connect(ClientConfig::new(&broker.bootstrap()))
        .await
        .expect("connect again");
    let producer = Producer::new(cluster, ProducerConfig::default()).expect("producer");
    let delivery = producer
        .send(ProducerRecord::new(topic.clone(), b"after".to_vec()).with_partition(0))
        .await
        .expect("send");
    tokio::time::timeout(Duration::from_secs(20), delivery)
        .await
        .expect("delivered in time")
        .expect("delivered");
    let text = scrape(&addr);
    assert_eq!(
        sample(
            &text,
            &format!("strata_topic_records_in_total{{topic=\"{topic}\"}}")
        ),
        Some(n as f64 + 1.0),
        "{text}"
    );
}

/// Kills the broker it holds when dropped (a failed assertion included).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The flag itself, as an operator types it: `strata serve --metrics-listen 127.0.0.1:0`.
#[test]
fn the_metrics_listen_flag_turns_the_endpoint_on() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("broker.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut broker = Child(
        std::process::Command::new(common::broker_binary())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start strata"),
    );
    let poll = Duration::from_millis(50);
    let polls = common::START_TIMEOUT.as_millis() / poll.as_millis();
    let mut addr = None;
    for _ in 0..polls {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("strata is serving") {
            addr = text.lines().find_map(|l| {
                let rest = l.split("serving Prometheus metrics on http://").nth(1)?;
                Some(rest.split("/metrics").next()?.to_string())
            });
            break;
        }
        assert!(
            broker.0.try_wait().unwrap().is_none(),
            "strata exited: {text}"
        );
        std::thread::sleep(poll);
    }
    let addr = addr.expect("the metrics address is logged before serving");
    let text = scrape(&addr);
    assert_eq!(sample(&text, "strata_connections"), Some(0.0), "{text}");
}

#[test]
fn without_the_listener_there_is_no_metrics_port() {
    let broker = Broker::start(&[]);
    let log = std::fs::read_to_string(broker.log_path()).unwrap_or_default();
    assert!(!log.contains("Prometheus"), "{log}");
}
