//! An administrator manages topics with the two common Python admin clients, and a consumer
//! looks up offsets by timestamp. The checks live in tests/python/admin_confluent.py,
//! admin_kafka_python.py and offsets_by_time.py; each test runs one against a fresh broker.
//!
//! Needs: python3 with `confluent-kafka` and `kafka-python`.

mod common;

use common::{require_python_modules, unique_topic, Broker};

/// Set on the brokers of the admin tests: the topics' `segment.ms` then comes from a static
/// broker config (`STATIC_BROKER_CONFIG`, synonym `log.roll.ms`) in DescribeConfigs.
const ROLL_MS: &str = "86400000";

fn admin_story(script: &str, prefix: &str) {
    let roll = format!("log.roll.ms={ROLL_MS}");
    let broker = Broker::start(&[roll.as_str()]);
    let prefix = unique_topic(prefix);
    let out = broker.python(script, &[prefix.as_str(), "--broker-roll-ms", ROLL_MS]);
    out.assert_success(|| broker.logs());
    eprintln!("{}", out.stdout);
}

#[test]
fn an_admin_creates_describes_grows_and_deletes_topics_with_confluent_kafka() {
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
    admin_story("admin_confluent.py", "adm-ck");
}

#[test]
fn an_admin_creates_describes_grows_and_deletes_topics_with_kafka_python() {
    require_python_modules(&["kafka"], "pip install kafka-python");
    admin_story("admin_kafka_python.py", "adm-kp");
}

/// Timestamps are explicit and increasing (and, in one topic, not monotonic); records share
/// batches, plain and zstd-compressed, so the broker must find the exact record in a batch.
#[test]
fn a_consumer_finds_offsets_by_timestamp_in_plain_and_compressed_batches() {
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
    let broker = Broker::start(&[]);
    let prefix = unique_topic("by-time");
    let out = broker.python("offsets_by_time.py", &[prefix.as_str()]);
    out.assert_success(|| broker.logs());
    eprintln!("{}", out.stdout);
}
