//! A disk that fails a sync under a running broker. The broker must not acknowledge the write
//! whose sync failed, must stop serving and exit non-zero with a clear log line (the one fatal
//! path: a later "successful" sync could acknowledge pages the failed one lost), and a restart
//! must recover every record it acknowledged before.
//!
//! The failing disk is the broker's test hook `STRATA_TEST_FAIL_SYNCS_OF_TOPIC` (see
//! `broker/src/storage/fatal.rs`): every msync of that topic's files fails, as the kernel reports
//! a dying disk's lost pages.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{run, unique_topic, wait_for, Broker};

const FAIL_SYNCS_ENV: &str = "STRATA_TEST_FAIL_SYNCS_OF_TOPIC";

/// `strata produce` of `input` (one `key:value` line per record) with acks=all, for at most
/// `limit`.
fn produce(broker: &Broker, topic: &str, input: &str, limit: Duration) -> common::Output {
    let mut cmd = Command::new(common::broker_binary());
    cmd.args([
        "produce",
        "-b",
        &broker.bootstrap(),
        "-K",
        ":",
        "--acks",
        "all",
    ])
    .args(["--timeout-ms", "10000", topic]);
    run(cmd, Some(input.as_bytes()), limit)
}

fn log_of(broker: &Broker) -> String {
    std::fs::read_to_string(broker.log_path()).unwrap_or_default()
}

/// Every record of `topic` as `key=value` lines (exits once nothing arrives for 2 s).
fn consume_all(broker: &Broker, topic: &str) -> String {
    let mut cmd = Command::new(common::broker_binary());
    cmd.args(["consume", "-b", &broker.bootstrap(), "--from-beginning"])
        .args(["--idle-timeout-ms", "2000", "-f", "%k=%v\\n", topic]);
    let out = run(cmd, None, Duration::from_secs(60));
    out.assert_success(|| broker.logs());
    out.stdout
}

#[test]
fn a_failed_sync_halts_the_broker_and_a_restart_keeps_what_was_acknowledged() {
    let dying = unique_topic("dying-disk");
    let kept = unique_topic("kept");
    let mut broker = Broker::start_with_env(&[], &[(FAIL_SYNCS_ENV, &dying)]);

    // Records acknowledged while the disk still works.
    produce(&broker, &kept, "a:1\nb:2\nc:3\n", Duration::from_secs(60))
        .assert_success(|| broker.logs());

    // A write whose sync fails: not acknowledged (the client keeps retrying against a broker that
    // is gone, so it is cut off), and the broker halts.
    let lost = produce(&broker, &dying, "x:lost\n", Duration::from_secs(15));
    assert!(
        !lost.success(),
        "a write whose sync failed was acknowledged:{}{}",
        lost.describe(),
        broker.logs()
    );
    let status = broker
        .wait_for_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running 30 s after a failed sync{}", broker.logs()));
    assert!(
        !status.success(),
        "exited with {status} after a failed sync{}",
        broker.logs()
    );
    assert!(
        TcpStream::connect(("127.0.0.1", broker.port())).is_err(),
        "still accepting connections after halting"
    );
    let log = log_of(&broker);
    assert!(
        log.contains("halted after a fatal storage error") && log.contains(&dying),
        "no clear log line naming the failure{}",
        broker.logs()
    );

    // The disk works again: an unclean start recovers, and every acknowledged record is there.
    broker.clear_env();
    broker.restart();
    // The port is bound before storage is opened: wait for the second "serving" line.
    let serving = wait_for(Duration::from_secs(30), || {
        log_of(&broker).matches("strata is serving").count() >= 2
    });
    assert!(serving, "not serving after the restart{}", broker.logs());
    assert!(
        log_of(&broker).contains("clean_shutdown=false"),
        "the halted broker's data was reported clean{}",
        broker.logs()
    );
    assert_eq!(consume_all(&broker, &kept), "a=1\nb=2\nc=3\n");
    // And the broker serves writes again, to that topic too.
    produce(&broker, &dying, "y:after\n", Duration::from_secs(60)).assert_success(|| broker.logs());
    assert!(consume_all(&broker, &dying).ends_with("y=after\n"));
    broker.stop();
}
