//! Users of the two common Python Kafka clients, confluent-kafka (librdkafka)
//! and kafka-python, produce and consume through Strata with every
//! compression codec, with each other's records, and across a graceful
//! broker restart. The checks themselves live in tests/python/*.py.
//!
//! Needs: python3 with `confluent-kafka` and `kafka-python`; for kafka-python's
//! snappy/lz4/zstd also `python-snappy` (or `cramjam`), `lz4` and `zstandard`.

mod common;

use common::{now_ms, require_python_modules, unique_topic, Broker};

const RECORDS: &str = "2000";

fn require_confluent() {
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
}

fn require_kafka_python(codec: &str) {
    require_python_modules(&["kafka"], "pip install kafka-python");
    let (module, package) = match codec {
        "snappy" => ("snappy", "python-snappy"),
        "lz4" => ("lz4.frame", "lz4"),
        "zstd" => ("zstandard", "zstandard"),
        _ => return,
    };
    require_python_modules(
        &[module],
        &format!("pip install {package} (kafka-python needs it for {codec})"),
    );
}

fn confluent_roundtrip(codec: &str) {
    require_confluent();
    let broker = Broker::start(&[]);
    let topic = unique_topic(&format!("ck-{codec}"));
    let out = broker.python("roundtrip_confluent.py", &[topic.as_str(), codec, RECORDS]);
    out.assert_success(|| broker.logs());
    eprintln!("{}", out.stdout);
}

fn kafka_python_roundtrip(codec: &str) {
    require_kafka_python(codec);
    let broker = Broker::start(&[]);
    let topic = unique_topic(&format!("kp-{codec}"));
    let out = broker.python(
        "roundtrip_kafka_python.py",
        &[topic.as_str(), codec, RECORDS],
    );
    out.assert_success(|| broker.logs());
    eprintln!("{}", out.stdout);
}

#[test]
fn confluent_kafka_roundtrip_uncompressed() {
    confluent_roundtrip("none");
}

#[test]
fn confluent_kafka_roundtrip_gzip() {
    confluent_roundtrip("gzip");
}

#[test]
fn confluent_kafka_roundtrip_snappy() {
    confluent_roundtrip("snappy");
}

#[test]
fn confluent_kafka_roundtrip_lz4() {
    confluent_roundtrip("lz4");
}

#[test]
fn confluent_kafka_roundtrip_zstd() {
    confluent_roundtrip("zstd");
}

#[test]
fn kafka_python_roundtrip_uncompressed() {
    kafka_python_roundtrip("none");
}

#[test]
fn kafka_python_roundtrip_gzip() {
    kafka_python_roundtrip("gzip");
}

#[test]
fn kafka_python_roundtrip_snappy() {
    kafka_python_roundtrip("snappy");
}

#[test]
fn kafka_python_roundtrip_lz4() {
    kafka_python_roundtrip("lz4");
}

#[test]
fn kafka_python_roundtrip_zstd() {
    kafka_python_roundtrip("zstd");
}

/// Records written by one client library are read intact by the other.
#[test]
fn confluent_kafka_and_kafka_python_read_each_others_records() {
    require_confluent();
    require_kafka_python("gzip");
    let broker = Broker::start(&[]);
    let prefix = unique_topic("cross");
    let out = broker.python("cross_client.py", &["--prefix", prefix.as_str()]);
    out.assert_success(|| broker.logs());
    eprintln!("{}", out.stdout);
}

/// confluent-kafka produces, the broker is stopped with SIGTERM and started
/// again on the same data directory, and a new consumer reads everything back.
#[test]
fn confluent_kafka_records_survive_graceful_restart() {
    require_confluent();
    let mut broker = Broker::start(&[]);
    let topic = unique_topic("ck-restart");
    let base_ts = (now_ms() - 60_000).to_string();
    let phase = |phase: &str| {
        [
            topic.clone(),
            "zstd".to_string(),
            RECORDS.to_string(),
            "--phase".to_string(),
            phase.to_string(),
            "--base-ts".to_string(),
            base_ts.clone(),
        ]
    };

    let out = broker.python("roundtrip_confluent.py", &phase("produce"));
    out.assert_success(|| broker.logs());

    broker.stop();
    broker.restart();

    let out = broker.python("roundtrip_confluent.py", &phase("consume"));
    out.assert_success(|| broker.logs());
    eprintln!("{}", out.stdout);
}
