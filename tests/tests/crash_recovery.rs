//! An application writes with acks=all while the broker process is SIGKILLed
//! under it. After a restart on the same data directory, every record the
//! broker acknowledged must be there, at the acknowledged offset, with dense
//! offsets and produce order kept in each partition.
//!
//! Needs python3 with `confluent-kafka`.

mod common;

use std::time::Duration;

use common::{require_python_modules, unique_topic, wait_for, Broker};

/// How long the load generator produces.
const LOAD_SECONDS: u64 = 4;
/// Fewer verified acknowledged records than this means the test proved little.
const MIN_VERIFIED: usize = 2000;

fn count_lines(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

#[test]
fn acknowledged_records_survive_kill9_under_load() {
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
    let mut broker = Broker::start(&[]);
    let topic = unique_topic("crash");
    broker
        .python("create_topic.py", &[topic.as_str(), "3"])
        .assert_success(|| broker.logs());

    let ackfile = broker.temp_dir().join("acked.txt");
    let load = broker.spawn_python(
        "acked_load.py",
        &[
            topic.as_str(),
            ackfile.to_str().expect("utf-8 temp path"),
            &LOAD_SECONDS.to_string(),
        ],
    );

    // Kill once acknowledgements are flowing and about half the load time has passed.
    let acks_flowing = wait_for(Duration::from_secs(20), || count_lines(&ackfile) > 0);
    assert!(
        acks_flowing,
        "no record acknowledged within 20 s of starting the load{}",
        broker.logs()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let acked_before_kill = count_lines(&ackfile);
    broker.kill9();
    eprintln!("[crash_recovery] SIGKILL with {acked_before_kill} acknowledged records in the file");

    // The producer keeps going against a dead broker, then gives up on its
    // undelivered records (message.timeout.ms 5 s) and exits.
    let out = load.wait(Duration::from_secs(LOAD_SECONDS + 60));
    out.assert_success(|| broker.logs());
    eprintln!("[crash_recovery] load generator: {}", out.stdout.trim());
    let acked = count_lines(&ackfile);
    assert!(
        acked >= MIN_VERIFIED,
        "only {acked} records were acknowledged before the kill; need at least {MIN_VERIFIED} \
         for a meaningful check{}{}",
        out.describe(),
        broker.logs()
    );

    broker.restart();
    let out = broker.python(
        "verify_acked.py",
        &[topic.as_str(), ackfile.to_str().expect("utf-8 temp path")],
    );
    out.assert_success(|| broker.logs());
    let verified: usize = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("VERIFIED "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no VERIFIED line from verify_acked.py{}", out.describe()));
    eprintln!("[crash_recovery] {}", out.stdout.trim());
    assert_eq!(verified, acked, "every acknowledged line must be verified");
    assert!(verified >= MIN_VERIFIED, "verified only {verified}");
}
