//! Committed offsets survive a broker `kill -9`: confluent-kafka and kafka-python consumers
//! (assign(), no group membership) commit, the broker is killed and restarted, and new
//! consumers read exactly those offsets back. The checks live in tests/python/committed_offsets.py.

mod common;

use common::{require_python_modules, unique_topic, Broker};

#[test]
fn committed_offsets_survive_a_kill_9_and_restart() {
    require_python_modules(
        &["confluent_kafka", "kafka"],
        "pip install confluent-kafka kafka-python",
    );
    let mut broker = Broker::start(&[]);
    let topic = unique_topic("committed");
    let group = unique_topic("group");
    broker
        .python("create_topic.py", &[topic.as_str(), "3"])
        .assert_success(|| broker.logs());
    let out = broker.python(
        "committed_offsets.py",
        &["commit", topic.as_str(), group.as_str()],
    );
    out.assert_success(|| broker.logs());

    broker.kill9();
    broker.restart();
    assert!(
        broker.logs().contains("committed offsets loaded"),
        "the restart loads __consumer_offsets{}",
        broker.logs()
    );

    let out = broker.python(
        "committed_offsets.py",
        &["check", topic.as_str(), group.as_str()],
    );
    out.assert_success(|| broker.logs());
    eprintln!("{}", out.stdout);
}
