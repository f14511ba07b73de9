//! `strata group` and `strata consume --group`: the error exits (bad flags, an unreachable
//! broker), and the stories against a real broker (consume in a group and resume from its
//! commits, describe with lag, reset offsets dry run and executed, refusal while members are
//! active, list and delete).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{broker_binary, free_port, run, unique_topic, wait_for, Background, Broker, Output};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);

fn strata(args: &[&str]) -> Output {
    let mut cmd = Command::new(broker_binary());
    cmd.args(args).env("NO_COLOR", "1");
    run(cmd, None, CLI_TIMEOUT)
}

/// A failure: non-zero exit, nothing on stdout, stderr naming `needle`.
#[track_caller]
fn assert_refused(out: &Output, needle: &str) {
    assert!(
        !out.timed_out && out.status.is_some_and(|s| !s.success()),
        "expected a failure: {}",
        out.describe()
    );
    assert!(out.stdout.is_empty(), "stdout not empty{}", out.describe());
    assert!(
        out.stderr.contains(needle),
        "{needle:?} not named{}",
        out.describe()
    );
}

/// A failure of our own (not clap's): exit 1, exactly one line `error: ...` naming `needle`.
#[track_caller]
fn assert_one_line_failure(out: &Output, needle: &str) {
    assert_refused(out, needle);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(1),
        "{}",
        out.describe()
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line{}", out.describe());
    assert!(lines[0].starts_with("error: "), "{}", out.describe());
}

#[test]
fn bad_group_flags_are_refused_before_connecting() {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let b = bootstrap.as_str();
    // No target, two targets, a bad offset, a bad datetime.
    assert_refused(
        &strata(&["group", "reset-offsets", "g", "--topic", "t", "-b", b]),
        "--to-earliest",
    );
    assert_refused(
        &strata(&[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--to-latest",
            "-b",
            b,
        ]),
        "--to-latest",
    );
    assert_refused(
        &strata(&[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-offset",
            "-3",
            "-b",
            b,
        ]),
        "--to-offset",
    );
    assert_refused(
        &strata(&[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-datetime",
            "last tuesday",
            "-b",
            b,
        ]),
        "last tuesday",
    );
    assert_refused(
        &strata(&["group", "reset-offsets", "g", "--to-earliest", "-b", b]),
        "--topic",
    );
    assert_refused(
        &strata(&[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--execute",
            "--dry-run",
            "-b",
            b,
        ]),
        "--dry-run",
    );
    assert_refused(&strata(&["group", "describe", "-b", b]), "<GROUP>");
    assert_refused(&strata(&["group", "frobnicate"]), "frobnicate");
    // A group consumer reads what the group assigns: no --partition or --offset with it.
    assert_refused(
        &strata(&["consume", "t", "--group", "g", "--partition", "0", "-b", b]),
        "--partition",
    );
    assert_refused(
        &strata(&["consume", "t", "--group", "g", "--offset", "5", "-b", b]),
        "--offset",
    );
}

#[test]
fn an_unreachable_broker_is_one_line_and_fast_for_every_group_command() {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let b = bootstrap.as_str();
    let commands: [&[&str]; 6] = [
        &["group", "list"],
        &["group", "list", "--state", "Stable"],
        &["group", "describe", "g"],
        &["group", "delete", "g"],
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-latest",
            "--execute",
        ],
        &["consume", "t", "--group", "g"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.extend_from_slice(&["-b", b, "--timeout-ms", "1000"]);
        let started = Instant::now();
        let out = strata(&args);
        assert_one_line_failure(&out, "no broker reachable");
        assert!(out.stderr.contains(&bootstrap), "{}", out.describe());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{command:?} took {:?}",
            started.elapsed()
        );
    }
}

// ---- Against a broker ----

fn group(broker: &Broker, args: &[&str]) -> Output {
    let bootstrap = broker.bootstrap();
    let mut all = vec!["group"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-b", &bootstrap, "--timeout-ms", "5000"]);
    strata(&all)
}

/// A topic with `partitions` partitions holding `n` records "r0".."r{n-1}" (keyed, so spread).
fn topic_with_records(broker: &Broker, prefix: &str, partitions: u32, n: usize) -> String {
    let topic = unique_topic(prefix);
    let bootstrap = broker.bootstrap();
    strata(&[
        "topic",
        "create",
        &topic,
        "--partitions",
        &partitions.to_string(),
        "-b",
        &bootstrap,
    ])
    .assert_success(|| broker.logs());
    let input: String = (0..n).map(|i| format!("k{i}:r{i}\n")).collect();
    let mut cmd = Command::new(broker_binary());
    cmd.args(["produce", "-b", &bootstrap, &topic, "--key-separator", ":"]);
    run(cmd, Some(input.as_bytes()), CLI_TIMEOUT).assert_success(|| broker.logs());
    topic
}

/// `strata consume TOPIC --group G extra...`; its printed values.
fn consume_in_group(broker: &Broker, topic: &str, group_id: &str, extra: &[&str]) -> Vec<String> {
    let bootstrap = broker.bootstrap();
    let mut args = vec!["consume", topic, "--group", group_id, "-b", &bootstrap];
    args.extend_from_slice(extra);
    let out = strata(&args);
    out.assert_success(|| broker.logs());
    out.stdout.lines().map(str::to_string).collect()
}

/// The `describe` rows of `topic`: (partition, current offset, log end, lag) as text.
fn describe_rows(
    broker: &Broker,
    group_id: &str,
    topic: &str,
) -> Vec<(i32, String, String, String)> {
    let out = group(broker, &["describe", group_id]);
    out.assert_success(|| broker.logs());
    out.stdout
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(topic))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (
                cols[1].parse().expect("partition"),
                cols[2].into(),
                cols[3].into(),
                cols[4].into(),
            )
        })
        .collect()
}

fn sum(
    rows: &[(i32, String, String, String)],
    column: impl Fn(&(i32, String, String, String)) -> &String,
) -> i64 {
    rows.iter()
        .map(|r| column(r).parse::<i64>().unwrap_or(0))
        .sum()
}

#[test]
fn a_group_consumer_commits_what_it_printed_and_the_next_one_resumes_there() {
    let broker = Broker::start(&[]);
    let topic = topic_with_records(&broker, "group-resume", 2, 10);
    let g = unique_topic("g-resume");

    let first = consume_in_group(&broker, &topic, &g, &["--from-beginning", "--count", "6"]);
    assert_eq!(first.len(), 6);

    // The header says the group is empty now (the consumer left on exit).
    let out = group(&broker, &["describe", &g]);
    out.assert_success(|| broker.logs());
    let header = out.stdout.lines().next().unwrap_or_default().to_string();
    assert!(
        header.contains("state: Empty") && header.contains("members: 0"),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout.contains("TOPIC")
            && out.stdout.contains("LOG-END-OFFSET")
            && out.stdout.contains("CLIENT-ID")
    );
    // Only partitions something was printed from have a commit (the 6 may all come from one).
    let rows = describe_rows(&broker, &g, &topic);
    assert!(!rows.is_empty(), "{}", out.describe());
    assert_eq!(sum(&rows, |r| &r.1), 6);
    assert_eq!(sum(&rows, |r| &r.3), sum(&rows, |r| &r.2) - 6);

    // The next member of the group starts where the first stopped: the other 4, no repeats
    // (--from-beginning only applies to a partition without a committed offset).
    let rest = consume_in_group(
        &broker,
        &topic,
        &g,
        &[
            "--from-beginning",
            "--count",
            "4",
            "--idle-timeout-ms",
            "15000",
        ],
    );
    let mut all: Vec<String> = first.into_iter().chain(rest).collect();
    all.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(all, expected);
    assert_eq!(sum(&describe_rows(&broker, &g, &topic), |r| &r.3), 0);
}

#[test]
fn reset_offsets_prints_a_plan_and_applies_it_only_with_execute() {
    let broker = Broker::start(&[]);
    let topic = topic_with_records(&broker, "group-reset", 2, 10);
    let g = unique_topic("g-reset");
    consume_in_group(&broker, &topic, &g, &["--from-beginning", "--count", "10"]);
    assert_eq!(sum(&describe_rows(&broker, &g, &topic), |r| &r.1), 10);

    // Dry run: the plan, nothing changes.
    let out = group(
        &broker,
        &["reset-offsets", &g, "--topic", &topic, "--to-earliest"],
    );
    out.assert_success(|| broker.logs());
    assert!(out.stdout.starts_with("GROUP"), "{}", out.describe());
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.describe());
    assert_eq!(sum(&describe_rows(&broker, &g, &topic), |r| &r.1), 10);

    // Executed: every partition back to 0, and the group reads everything again.
    group(
        &broker,
        &[
            "reset-offsets",
            &g,
            "--topic",
            &topic,
            "--to-earliest",
            "--execute",
        ],
    )
    .assert_success(|| broker.logs());
    assert_eq!(sum(&describe_rows(&broker, &g, &topic), |r| &r.1), 0);
    let again = consume_in_group(&broker, &topic, &g, &["--count", "10"]);
    assert_eq!(again.len(), 10);

    // --to-offset is clamped into each log; --to-latest and a far-future datetime are the end.
    group(
        &broker,
        &[
            "reset-offsets",
            &g,
            "--topic",
            &topic,
            "--to-offset",
            "1000000",
            "--execute",
        ],
    )
    .assert_success(|| broker.logs());
    let rows = describe_rows(&broker, &g, &topic);
    assert!(rows.iter().all(|r| r.1 == r.2), "{rows:?}");
    group(
        &broker,
        &[
            "reset-offsets",
            &g,
            "--topic",
            &topic,
            "--to-offset",
            "1",
            "--execute",
        ],
    )
    .assert_success(|| broker.logs());
    assert!(describe_rows(&broker, &g, &topic)
        .iter()
        .all(|r| r.1 == "1"));
    group(
        &broker,
        &[
            "reset-offsets",
            &g,
            "--topic",
            &topic,
            "--to-datetime",
            "2999-01-01T00:00:00",
            "--execute",
        ],
    )
    .assert_success(|| broker.logs());
    assert_eq!(sum(&describe_rows(&broker, &g, &topic), |r| &r.3), 0);
    group(
        &broker,
        &[
            "reset-offsets",
            &g,
            "--topic",
            &topic,
            "--to-datetime",
            "1970-01-01T00:00:00",
            "--execute",
        ],
    )
    .assert_success(|| broker.logs());
    assert_eq!(sum(&describe_rows(&broker, &g, &topic), |r| &r.1), 0);

    // An unknown topic is one line.
    let out = group(
        &broker,
        &[
            "reset-offsets",
            &g,
            "--topic",
            "no-such-topic",
            "--to-latest",
        ],
    );
    assert_one_line_failure(&out, "does not exist");
}

#[test]
fn reset_offsets_is_refused_while_the_group_has_active_members() {
    let broker = Broker::start(&[]);
    let topic = topic_with_records(&broker, "group-active", 1, 3);
    let g = unique_topic("g-active");
    let bootstrap = broker.bootstrap();
    let mut cmd = Command::new(broker_binary());
    cmd.args([
        "consume",
        &topic,
        "--group",
        &g,
        "--from-beginning",
        "-b",
        &bootstrap,
    ]);
    let member = Background::spawn(cmd, None);
    let joined = wait_for(Duration::from_secs(30), || {
        let out = group(&broker, &["describe", &g]);
        out.success()
            && out
                .stdout
                .lines()
                .next()
                .is_some_and(|h| h.contains("state: Stable"))
    });
    assert!(joined, "the member never joined{}", broker.logs());
    let out = group(&broker, &["describe", &g]);
    assert!(
        out.stdout.contains("strata-cli"),
        "the member's client id{}",
        out.describe()
    );
    assert!(
        out.stdout.contains("/127.0.0.1"),
        "the member's host, in Kafka's form{}",
        out.describe()
    );

    let out = group(
        &broker,
        &[
            "reset-offsets",
            &g,
            "--topic",
            &topic,
            "--to-earliest",
            "--execute",
        ],
    );
    assert_one_line_failure(&out, "active member");
    let out = group(&broker, &["delete", &g]);
    assert_one_line_failure(&out, "active members");
    drop(member);
}

#[test]
fn groups_are_listed_filtered_by_state_and_deleted() {
    let broker = Broker::start(&[]);
    let topic = topic_with_records(&broker, "group-list", 1, 2);
    let g = unique_topic("g-list");
    consume_in_group(&broker, &topic, &g, &["--from-beginning", "--count", "2"]);

    let out = group(&broker, &["list"]);
    out.assert_success(|| broker.logs());
    assert!(out.stdout.lines().any(|l| l == g), "{}", out.describe());
    let out = group(&broker, &["list", "--state", "Empty"]);
    out.assert_success(|| broker.logs());
    assert!(out.stdout.starts_with("GROUP"), "{}", out.describe());
    assert!(out
        .stdout
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == [g.as_str(), "Empty"]));
    let out = group(&broker, &["list", "--state", "Stable"]);
    assert!(!out.stdout.contains(&g), "{}", out.describe());

    group(&broker, &["delete", &g]).assert_success(|| broker.logs());
    let out = group(&broker, &["list"]);
    assert!(!out.stdout.lines().any(|l| l == g), "{}", out.describe());
    assert_one_line_failure(&group(&broker, &["delete", &g]), "does not exist");
    assert_one_line_failure(&group(&broker, &["describe", &g]), "does not exist");
}

#[test]
fn a_group_consumer_stopped_by_sigterm_commits_and_leaves_so_the_next_starts_at_once() {
    let broker = Broker::start(&[]);
    let topic = topic_with_records(&broker, "group-sigterm", 1, 3);
    let g = unique_topic("g-sigterm");
    let bootstrap = broker.bootstrap();

    // A consumer that would run until killed: it prints r0..r2 and waits for more.
    let mut cmd = Command::new(broker_binary());
    cmd.args([
        "consume",
        &topic,
        "--group",
        &g,
        "--from-beginning",
        "-b",
        &bootstrap,
    ])
    .env("NO_COLOR", "1");
    let mut first = Background::spawn(cmd, None);
    // Until the group exists, describe fails: count that as nothing committed yet.
    let printed = wait_for(Duration::from_secs(30), || {
        group(&broker, &["describe", &g]).success()
            && sum(&describe_rows(&broker, &g, &topic), |r| &r.1) == 3
    });
    assert!(
        printed,
        "the first consumer never committed r0..r2{}",
        broker.logs()
    );
    assert!(first.is_running(), "the first consumer exited on its own");

    // SIGTERM, as a service manager (or Ctrl-C, SIGINT) stops it.
    let pid = first.pid().expect("pid") as libc::pid_t;
    // SAFETY: kill(2) on the pid of the child this test started and still owns.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = first.wait(Duration::from_secs(40));
    out.assert_success(|| broker.logs());
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["r0", "r1", "r2"]);

    // It left the group on its way out: no member waits out a session timeout.
    let described = group(&broker, &["describe", &g]);
    described.assert_success(|| broker.logs());
    assert!(
        described.stdout.contains("members: 0"),
        "{}",
        described.describe()
    );

    // The next member gets the partition at once and starts after the last printed record.
    let mut cmd = Command::new(broker_binary());
    cmd.args(["produce", "-b", &bootstrap, &topic]);
    run(cmd, Some(b"r3\nr4\n"), CLI_TIMEOUT).assert_success(|| broker.logs());
    let started = Instant::now();
    let next = consume_in_group(
        &broker,
        &topic,
        &g,
        &["--count", "2", "--idle-timeout-ms", "20000"],
    );
    let took = started.elapsed();
    assert_eq!(next, ["r3", "r4"]);
    // The session timeout is 45 s; a join that finds the group empty takes well under 10 s.
    assert!(
        took < Duration::from_secs(10),
        "the next member waited {took:?}"
    );
}
