//! The `strata` command line: help that explains each flag, and a bad flag, an unknown key or a
//! bad value refused at start with a non-zero exit and a message naming it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{broker_binary, run, Broker};

const CLI_TIMEOUT: Duration = Duration::from_secs(20);

fn strata(args: &[&str]) -> common::Output {
    let mut cmd = Command::new(broker_binary());
    cmd.args(args);
    run(cmd, None, CLI_TIMEOUT)
}

#[test]
fn help_explains_the_subcommand_and_every_flag() {
    let top = strata(&["--help"]);
    assert!(top.success(), "{}", top.describe());
    assert!(top.stdout.contains("serve"), "{}", top.stdout);
    let serve = strata(&["serve", "--help"]);
    assert!(serve.success(), "{}", serve.describe());
    for flag in [
        "--node-id",
        "--listen",
        "--advertise",
        "--data-dir",
        "--config",
        "--set",
    ] {
        assert!(
            serve.stdout.contains(flag),
            "serve --help lacks {flag}:\n{}",
            serve.stdout
        );
    }
}

#[test]
fn bad_flags_keys_and_values_exit_non_zero_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--no-such-flag"], "--no-such-flag"),
        (
            &["serve", "--data-dir", data, "--set", "no.such.key=1"],
            "no.such.key",
        ),
        (
            &["serve", "--data-dir", data, "--set", "num.partitions=lots"],
            "num.partitions",
        ),
        (
            &[
                "serve",
                "--data-dir",
                data,
                "--set",
                "auto.create.topics.enable=maybe",
            ],
            "auto.create.topics.enable",
        ),
        (
            &[
                "serve",
                "--data-dir",
                data,
                "--set",
                "log.cleanup.policy=compact",
            ],
            "log.cleanup.policy",
        ),
        (
            &["serve", "--data-dir", data, "--set", "novalue"],
            "novalue",
        ),
        (
            &["serve", "--data-dir", data, "--listen", "not-an-address"],
            "listeners",
        ),
        (&["serve", "--data-dir", data, "--node-id=-3"], "node-id"),
        (
            &[
                "serve",
                "--data-dir",
                data,
                "--config",
                "/nonexistent/strata.properties",
            ],
            "/nonexistent/strata.properties",
        ),
    ];
    for (args, named) in cases {
        let out = strata(args);
        assert!(!out.success(), "{args:?} should fail:\n{}", out.describe());
        assert!(
            out.stderr.contains(named),
            "{args:?}: the message should name {named}:\n{}",
            out.describe()
        );
    }
}

/// `min.insync.replicas` counts replicas that must hold a write, the leader among them: a broker
/// asked for 0 refuses to start, naming the key.
#[test]
fn min_insync_replicas_below_one_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = strata(&[
        "serve",
        "--data-dir",
        data,
        "--set",
        "min.insync.replicas=0",
    ]);
    assert!(!out.success(), "should fail:\n{}", out.describe());
    assert!(
        out.stderr.contains("min.insync.replicas") && out.stderr.contains("minimum"),
        "the message should name the key and say why:\n{}",
        out.describe()
    );
}

#[test]
fn controller_quorum_keys_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "controller.quorum.voters=1@no-port",
            "controller.quorum.voters",
        ),
        (
            "controller.quorum.voters=1@127.0.0.1:1,1@127.0.0.1:2",
            "controller.quorum.voters",
        ),
        (
            "controller.quorum.voters=2@127.0.0.1:19093",
            "controller.quorum.voters",
        ),
        ("process.roles=broker,dancer", "process.roles"),
    ];
    for (set, named) in cases {
        let out = strata(&["serve", "--data-dir", data, "--set", set]);
        assert!(!out.success(), "{set} should fail:\n{}", out.describe());
        assert!(
            out.stderr.contains(named),
            "{set}: the message should name {named}:\n{}",
            out.describe()
        );
    }
}

/// A number the key's table type admits but its setting cannot hold stops the broker at start,
/// naming the key, instead of being cut down to some other value.
#[test]
fn a_value_too_large_for_its_setting_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = strata(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--set",
        "default.replication.factor=40000",
    ]);
    assert!(!out.success(), "should fail:\n{}", out.describe());
    assert!(
        out.stderr.contains("default.replication.factor") && out.stderr.contains("40000"),
        "the message should name the key and the value:\n{}",
        out.describe()
    );
}

#[test]
fn a_properties_file_with_a_bad_line_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broker.properties");
    std::fs::write(
        &file,
        "# a comment\nnum.partitions=3\nlog.retention.hours=12\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = strata(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        file.to_str().unwrap(),
    ]);
    assert!(!out.success());
    assert!(
        out.stderr.contains("log.retention.hours"),
        "{}",
        out.describe()
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let broker = Broker::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", broker.port());
    let out = strata(&[
        "serve",
        "--listen",
        &listen,
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.success());
    assert!(out.stderr.contains("cannot listen"), "{}", out.describe());
}

/// The broker is a library the CLI builds on, not the other way round: the `strata` binary and
/// its client subcommands live in `cli/`, so the broker's normal dependencies name neither the
/// client nor the CLI (a dev-dependency for tests would be fine).
#[test]
fn the_broker_library_depends_on_neither_the_client_nor_the_cli() {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(common::workspace_root()).args([
        "tree",
        "--offline",
        "--package",
        "strata-broker",
        "--edges",
        "normal",
        "--prefix",
        "none",
    ]);
    let out = run(cmd, None, CLI_TIMEOUT);
    assert!(out.success(), "{}", out.describe());
    for crate_name in ["strata-client ", "strata-cli "] {
        assert!(
            !out.stdout.lines().any(|line| line.starts_with(crate_name)),
            "strata-broker depends on {crate_name}:{}",
            out.describe()
        );
    }
}
