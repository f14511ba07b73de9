//! `strata perf produce|consume`: progress and total lines in the words of Kafka's perf tools,
//! the records really land in the topic (latest offsets via `strata topic describe`), keyed
//! records spread over partitions, `--throughput` paces, `perf consume` reads them all back,
//! and failures exit non-zero with one `error:` line.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{broker_binary, free_port, run, unique_topic, Broker, Output};

const CLI_TIMEOUT: Duration = Duration::from_secs(120);

fn strata(args: &[&str]) -> Output {
    let mut cmd = Command::new(broker_binary());
    cmd.args(args).env("NO_COLOR", "1");
    run(cmd, None, CLI_TIMEOUT)
}

fn perf(broker: &Broker, mode: &str, topic: &str, args: &[&str]) -> Output {
    let bootstrap = broker.bootstrap();
    let mut all = vec!["perf", mode, "-b", &bootstrap, topic];
    all.extend_from_slice(args);
    strata(&all)
}

/// Latest offset of each partition, from the last column of `strata topic describe`.
fn latest_offsets(broker: &Broker, topic: &str) -> Vec<i64> {
    let bootstrap = broker.bootstrap();
    let out = strata(&["topic", "describe", topic, "-b", &bootstrap]);
    out.assert_success(|| broker.logs());
    out.stdout
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("partition "))
        .map(|l| {
            l.split_whitespace()
                .last()
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("bad row {l:?} in:\n{}", out.stdout))
        })
        .collect()
}

/// The number before `what` in `line` (e.g. `ms 99th` in `..., 4.00 ms 99th, ...`).
fn figure_before(line: &str, what: &str) -> f64 {
    let head = &line[..line
        .find(what)
        .unwrap_or_else(|| panic!("no {what:?} in {line:?}"))];
    head.trim_end()
        .rsplit([' ', '('])
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {what:?} in {line:?}"))
}

/// Checks the output of a successful `perf produce` of `n` records: progress lines (maybe none
/// for a short run) and one total line last, in Kafka's words; returns the total line.
#[track_caller]
fn check_produce_output(out: &Output, n: u64) -> String {
    assert!(out.success(), "{}", out.describe());
    assert!(out.stderr.trim().is_empty(), "{}", out.describe());
    let lines: Vec<&str> = out.stdout.lines().collect();
    let (total, progress) = lines.split_last().expect("some output");
    for line in progress {
        assert!(
            line.contains(" records sent, ")
                && line.contains(" records/sec (")
                && line.contains(" MB/sec), ")
                && line.contains(" ms avg latency, ")
                && line.ends_with(" ms max latency."),
            "progress line {line:?}{}",
            out.describe()
        );
    }
    assert!(
        total.starts_with(&format!("{n} records sent, ")),
        "{}",
        out.describe()
    );
    for words in [
        " records/sec (",
        " MB/sec), ",
        " ms avg latency, ",
        " ms max latency, ",
        " ms 50th, ",
        " ms 95th, ",
        " ms 99th, ",
    ] {
        assert!(total.contains(words), "no {words:?}{}", out.describe());
    }
    assert!(total.ends_with(" ms 99.9th."), "{}", out.describe());
    let rate = figure_before(total, "records/sec");
    let (p50, p99, p999, max) = (
        figure_before(total, "ms 50th"),
        figure_before(total, "ms 99th"),
        figure_before(total, "ms 99.9th"),
        figure_before(total, "ms max latency"),
    );
    assert!(rate > 0.0, "{total}");
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{total}"
    );
    total.to_string()
}

#[test]
fn perf_produce_writes_every_record_and_perf_consume_reads_them_back() {
    let broker = Broker::start(&[]);
    let topic = unique_topic("perf");
    let n = 20_000u64;
    let out = perf(
        &broker,
        "produce",
        &topic,
        &[
            "--records",
            &n.to_string(),
            "--record-size",
            "100",
            "--acks",
            "-1",
        ],
    );
    check_produce_output(&out, n);
    assert_eq!(latest_offsets(&broker, &topic), vec![n as i64]);

    let out = perf(&broker, "consume", &topic, &["--records", &n.to_string()]);
    assert!(out.success(), "{}{}", out.describe(), broker.logs());
    let total = out.stdout.lines().last().unwrap_or_default();
    assert!(
        total.starts_with(&format!("{n} records consumed, "))
            && total.contains(" records/sec (")
            && total.contains(" MB/sec)"),
        "{}",
        out.describe()
    );
    // 20000 records of 100 bytes: 1.91 MiB.
    assert!(total.contains(", 1.91 MB in "), "{}", out.describe());

    // Asking for more than there is: the totals, then one error line after --timeout-ms.
    let out = perf(
        &broker,
        "consume",
        &topic,
        &["--records", &(n + 1).to_string(), "--timeout-ms", "1500"],
    );
    assert!(!out.success(), "{}", out.describe());
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(1),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("{n} records consumed, "))),
        "{}",
        out.describe()
    );
    let err: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(err.len(), 1, "{}", out.describe());
    assert!(
        err[0].starts_with("error: no record arrived for 1500 ms"),
        "{}",
        out.describe()
    );
}

#[test]
fn keyed_records_spread_over_partitions_and_throughput_paces_the_run() {
    let broker = Broker::start(&[]);
    let topic = unique_topic("perf-keyed");
    let bootstrap = broker.bootstrap();
    strata(&[
        "topic",
        "create",
        &topic,
        "--partitions",
        "3",
        "-b",
        &bootstrap,
    ])
    .assert_success(|| broker.logs());

    // 3000 records at 1000 records/s: about 3 s, so at least two progress lines.
    let n = 3_000u64;
    let started = Instant::now();
    let out = perf(
        &broker,
        "produce",
        &topic,
        &[
            "--records",
            &n.to_string(),
            "--record-size",
            "1000",
            "--throughput",
            "1000",
            "--keys",
            "50",
            "--acks",
            "1",
            "--linger-ms",
            "1",
            "--batch-size",
            "16384",
        ],
    );
    let elapsed = started.elapsed();
    let total = check_produce_output(&out, n);
    assert!(
        elapsed >= Duration::from_millis(2_800),
        "3000 records at 1000/s took only {elapsed:?}{}",
        out.describe()
    );
    let rate = figure_before(&total, "records/sec");
    assert!(rate <= 1_100.0, "paced to 1000/s but {total}");
    assert!(
        out.stdout.lines().count() >= 3,
        "expected progress lines{}",
        out.describe()
    );
    let offsets = latest_offsets(&broker, &topic);
    assert_eq!(offsets.len(), 3, "{offsets:?}");
    assert_eq!(offsets.iter().sum::<i64>(), n as i64, "{offsets:?}");
    assert!(
        offsets.iter().all(|&o| o > 0),
        "50 keys on 3 partitions: {offsets:?}"
    );

    let out = perf(&broker, "consume", &topic, &["--records", &n.to_string()]);
    assert!(out.success(), "{}{}", out.describe(), broker.logs());
    assert!(
        out.stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("{n} records consumed, "))),
        "{}",
        out.describe()
    );
}

/// Exit code `code`, stderr starting with an `error: ...` line and containing `needle`.
#[track_caller]
fn assert_one_error_line(out: &Output, code: i32, needle: &str) {
    assert!(!out.timed_out, "timed out{}", out.describe());
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(code),
        "{}",
        out.describe()
    );
    let first = out.stderr.lines().next().unwrap_or_default();
    // clap's usage errors name the flag on the next line; ours are one line.
    assert!(
        first.starts_with("error: ") && out.stderr.contains(needle),
        "expected an error line with {needle:?}{}",
        out.describe()
    );
}

#[test]
fn failures_exit_non_zero_with_one_line() {
    // Nothing listens on this port.
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let out = strata(&[
        "perf",
        "produce",
        "-b",
        &bootstrap,
        "--timeout-ms",
        "1000",
        "t",
        "--records",
        "10",
        "--record-size",
        "10",
    ]);
    assert_one_error_line(&out, 1, "");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.describe());
    assert!(out.stdout.is_empty(), "{}", out.describe());
    let out = strata(&[
        "perf",
        "consume",
        "-b",
        &bootstrap,
        "--timeout-ms",
        "1000",
        "t",
        "--records",
        "10",
    ]);
    assert_one_error_line(&out, 1, "");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.describe());

    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    // Values our code checks: one line, exit 1.
    for (flag, value) in [
        ("--acks", "2"),
        ("--compression", "brotli"),
        ("--throughput", "0"),
    ] {
        let out = strata(&[
            "perf",
            "produce",
            "-b",
            &bootstrap,
            "t",
            "--records",
            "10",
            "--record-size",
            "10",
            flag,
            value,
        ]);
        assert_one_error_line(&out, 1, value);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.describe());
    }
    // Flags clap refuses (usage error, exit 2).
    let out = strata(&["perf", "produce", "-b", &bootstrap, "t", "--records", "10"]);
    assert_one_error_line(&out, 2, "--record-size");
    let out = strata(&[
        "perf",
        "produce",
        "-b",
        &bootstrap,
        "t",
        "--records",
        "ten",
        "--record-size",
        "10",
    ]);
    assert_one_error_line(&out, 2, "ten");
    let out = strata(&["perf", "consume", "-b", &bootstrap, "t", "--bogus"]);
    assert_one_error_line(&out, 2, "--bogus");
    // Consuming a topic that does not exist.
    let out = strata(&[
        "perf",
        "consume",
        "-b",
        &bootstrap,
        "missing",
        "--records",
        "1",
    ]);
    assert_one_error_line(&out, 1, "does not exist");
}
