//! `strata topic` against a real broker: create, list, describe and delete round trip, and every
//! failure is a non-zero exit with one `error: ...` line on stderr, quickly. Also the admin client
//! (`strata_client::admin`) operations the CLI does not expose: growing a topic, broker configs,
//! the cluster description.
//!
//! Needs: kcat (one test produces records to see offsets in `describe`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{broker_binary, free_port, require_tool, run, unique_topic, Broker, Output};
use strata_client::admin::{Admin, ConfigResource, ConfigSource, NewTopic};
use strata_client::{ClientConfig, ClientError, Cluster};

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

fn strata(args: &[&str]) -> Output {
    let mut cmd = Command::new(broker_binary());
    cmd.args(args).env("NO_COLOR", "1");
    run(cmd, None, CLI_TIMEOUT)
}

/// `strata topic <args> -b <broker>`.
fn topic(broker: &Broker, args: &[&str]) -> Output {
    let bootstrap = broker.bootstrap();
    let mut all = vec!["topic"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-b", &bootstrap, "--timeout-ms", "5000"]);
    strata(&all)
}

/// Asserts a failed run: exit code `code`, nothing on stdout, exactly one stderr line
/// `error: ...` containing `needle`.
#[track_caller]
fn assert_fails(out: &Output, code: i32, needle: &str) {
    assert!(!out.timed_out, "timed out{}", out.describe());
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(code),
        "{}",
        out.describe()
    );
    assert!(out.stdout.is_empty(), "stdout not empty{}", out.describe());
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line{}", out.describe());
    assert!(lines[0].starts_with("error: "), "{}", out.describe());
    assert!(
        lines[0].contains(needle),
        "expected {needle:?}{}",
        out.describe()
    );
}

fn listed(broker: &Broker) -> Vec<String> {
    let out = topic(broker, &["list"]);
    out.assert_success(|| broker.logs());
    out.stdout.lines().map(str::to_string).collect()
}

/// The data rows of `describe`'s table, split into cells.
fn table_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("partition "))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn topics_are_created_listed_described_and_deleted_through_the_cli() {
    require_tool("kcat", "-V", "apt-get install kcat");
    let broker = Broker::start(&[]);
    let name = unique_topic("cli-topic");
    let other = unique_topic("cli-other");

    let out = topic(
        &broker,
        &[
            "create",
            &name,
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
    );
    out.assert_success(|| broker.logs());
    assert_eq!(out.stdout.trim(), format!("created topic '{name}'"));
    topic(&broker, &["create", &other]).assert_success(|| broker.logs());

    let names = listed(&broker);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "list is sorted");
    assert!(names.contains(&name) && names.contains(&other), "{names:?}");

    // Three records into partition 1, for the offsets column.
    let mut kcat = Command::new("kcat");
    kcat.args(["-P", "-b", &broker.bootstrap(), "-t", &name, "-p", "1"]);
    run(kcat, Some(b"a\nb\nc\n"), CLI_TIMEOUT).assert_success(|| broker.logs());

    let out = topic(&broker, &["describe", &name]);
    out.assert_success(|| broker.logs());
    let text = &out.stdout;
    assert!(text.contains(&format!("Topic: {name}")), "{text}");
    let id_line = text
        .lines()
        .find(|l| l.starts_with("Topic id: "))
        .unwrap_or_else(|| panic!("no topic id:\n{text}"));
    assert!(id_line.len() > "Topic id: ".len() + 8, "{text}");
    assert!(text.contains("retention.ms=3600000"), "{text}");
    assert!(text.contains("Partitions: 3"), "{text}");
    let rows = table_rows(text);
    assert_eq!(rows.len(), 3, "{text}");
    for (i, row) in rows.iter().enumerate() {
        let expected_latest = if i == 1 { "3" } else { "0" };
        assert_eq!(
            row,
            &[&i.to_string(), "1", "1", "1", "0", expected_latest],
            "partition {i}:\n{text}"
        );
    }
    // The other topic has no overrides.
    let out = topic(&broker, &["describe", &other]);
    out.assert_success(|| broker.logs());
    assert!(
        out.stdout.contains("Configs: (no overrides)"),
        "{}",
        out.stdout
    );

    let out = topic(&broker, &["delete", &name]);
    out.assert_success(|| broker.logs());
    assert_eq!(out.stdout.trim(), format!("deleted topic '{name}'"));
    let names = listed(&broker);
    assert!(
        !names.contains(&name) && names.contains(&other),
        "{names:?}"
    );
    assert_fails(
        &topic(&broker, &["describe", &name]),
        1,
        &format!("topic '{name}' does not exist"),
    );
}

#[test]
fn describe_shows_three_partitions_led_by_broker_1() {
    let broker = Broker::start(&[]);
    let name = unique_topic("cli-three");
    topic(&broker, &["create", &name, "--partitions", "3"]).assert_success(|| broker.logs());
    let out = topic(&broker, &["describe", &name]);
    out.assert_success(|| broker.logs());
    let rows = table_rows(&out.stdout);
    assert_eq!(
        rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["0", "1", "2"],
        "{}",
        out.stdout
    );
    assert!(rows.iter().all(|r| r[1] == "1"), "{}", out.stdout);
}

#[test]
fn an_unreachable_broker_fails_fast_with_one_line() {
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    for args in [
        vec!["topic", "list"],
        vec!["topic", "describe", "t"],
        vec!["topic", "create", "t"],
        vec!["topic", "delete", "t"],
    ] {
        let mut all = args.clone();
        all.extend_from_slice(&["-b", &bootstrap, "--timeout-ms", "1000"]);
        let out = strata(&all);
        assert_fails(
            &out,
            1,
            &format!("no broker reachable at {bootstrap} within 1000 ms"),
        );
        assert!(
            out.elapsed < Duration::from_secs(5),
            "took {:?}{}",
            out.elapsed,
            out.describe()
        );
    }
}

#[test]
fn unknown_topics_duplicates_and_bad_configs_are_one_line_errors() {
    let broker = Broker::start(&[]);
    let missing = unique_topic("cli-missing");
    assert_fails(
        &topic(&broker, &["describe", &missing]),
        1,
        &format!("topic '{missing}' does not exist"),
    );
    assert_fails(
        &topic(&broker, &["delete", &missing]),
        1,
        &format!("topic '{missing}' does not exist"),
    );
    // Neither auto-created it.
    assert!(!listed(&broker).contains(&missing));

    let name = unique_topic("cli-dup");
    topic(&broker, &["create", &name]).assert_success(|| broker.logs());
    assert_fails(
        &topic(&broker, &["create", &name]),
        1,
        &format!("topic '{name}' already exists"),
    );

    let bad = unique_topic("cli-bad");
    assert_fails(
        &topic(&broker, &["create", &bad, "--config", "foo"]),
        1,
        "invalid config 'foo'",
    );
    assert_fails(
        &topic(&broker, &["create", &bad, "--config", "no.such.key=1"]),
        1,
        "no.such.key",
    );
    assert_fails(
        &topic(&broker, &["create", &bad, "--config", "retention.ms=soon"]),
        1,
        "retention.ms",
    );
    assert_fails(
        &topic(&broker, &["create", &bad, "--partitions", "0"]),
        1,
        "partitions",
    );
    assert!(!listed(&broker).contains(&bad), "a refused topic exists");
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        &["topic", "list", "--no-such-flag"][..],
        &["topic", "create"][..],
        &["topic", "create", "t", "--partitions", "many"][..],
        &["topic", "frobnicate"][..],
    ] {
        let out = strata(args);
        assert!(!out.timed_out, "{}", out.describe());
        assert_eq!(
            out.status.and_then(|s| s.code()),
            Some(2),
            "{}",
            out.describe()
        );
        assert!(out.stdout.is_empty(), "{}", out.describe());
    }
}

#[tokio::test]
async fn the_admin_client_grows_topics_and_describes_configs_and_the_cluster() {
    let broker = Broker::start(&["log.roll.ms=86400000"]);
    let mut config = ClientConfig::new(&broker.bootstrap());
    config.connection.connect_timeout = Duration::from_secs(5);
    let admin = Admin::new(Cluster::connect(config).await.unwrap());
    let name = unique_topic("admin");

    admin
        .create_topic(
            NewTopic::new(&name)
                .with_partitions(2)
                .with_config("segment.bytes", "1048576"),
        )
        .await
        .unwrap();
    assert_eq!(admin.cluster().metadata().topics[&name].partitions.len(), 2);
    admin.create_partitions(&name, 5).await.unwrap();
    assert_eq!(admin.cluster().metadata().topics[&name].partitions.len(), 5);
    let d = admin.describe_topic(&name).await.unwrap();
    assert_eq!(d.partitions.len(), 5);
    assert!(d.partitions.iter().all(|p| p.leader == 1
        && p.earliest_offset == Some(0)
        && p.latest_offset == Some(0)
        && p.offsets_error.is_none()));
    match admin.create_partitions(&name, 3).await {
        Err(ClientError::Kafka { code: 37, .. }) => {}
        other => panic!("shrinking: {other:?}"),
    }

    let configs = admin
        .describe_configs(ConfigResource::Topic(name.clone()))
        .await
        .unwrap();
    let get = |k: &str| configs.iter().find(|c| c.name == k).cloned();
    let seg = get("segment.bytes").expect("segment.bytes");
    assert_eq!(
        (seg.value.as_deref(), seg.source),
        (Some("1048576"), ConfigSource::DynamicTopic)
    );
    let roll = get("segment.ms").expect("segment.ms");
    assert_eq!(
        (roll.value.as_deref(), roll.source),
        (Some("86400000"), ConfigSource::StaticBroker)
    );
    let broker_configs = admin
        .describe_configs(ConfigResource::Broker(1))
        .await
        .unwrap();
    assert!(broker_configs
        .iter()
        .any(|c| c.name == "log.roll.ms" && c.source == ConfigSource::StaticBroker && c.read_only));
    assert!(admin
        .describe_configs(ConfigResource::Topic(unique_topic("none")))
        .await
        .is_err());

    let cluster = admin.describe_cluster().await.unwrap();
    assert_eq!(cluster.controller, 1);
    assert_eq!(cluster.brokers.len(), 1);
    assert_eq!(cluster.brokers[0].id, 1);
    assert_eq!(cluster.brokers[0].port, i32::from(broker.port()));
    assert!(cluster.cluster_id.is_some_and(|c| !c.is_empty()));

    admin.delete_topic(&name).await.unwrap();
    assert!(!admin.list_topics().await.unwrap().contains(&name));
    assert!(!admin.cluster().metadata().topics.contains_key(&name));
}
