//! A consumer group made of every client our users run: `kcat -G` (Debian, librdkafka 2.0.2),
//! confluent-kafka (librdkafka 2.x), kafka-python and aiokafka. They split a topic's partitions;
//! one member leaves cleanly and one is `kill -9`ed, and the others take over their partitions.
//! At the end every record was processed by some member (none skipped), and no record whose
//! offset had been committed was delivered again afterwards.
//!
//! Needs: kcat, python3 with confluent-kafka, kafka-python and aiokafka.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    kcat_produce_keyed, require_python_modules, require_tool, unique_topic, wait_for, Background,
    Broker,
};

const PARTITIONS: i32 = 8;
/// Records produced before the members start, and again after two of them are gone.
const RECORDS_PER_ROUND: usize = 2000;
/// How long the group may take to consume everything produced so far.
const CONSUME_LIMIT: Duration = Duration::from_secs(60);

/// One event a member reported (see tests/python/group_member.py).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Record { partition: i32, offset: i64 },
    Commit { partition: i32, next_offset: i64 },
}

/// Parses a member's output file: (event, monotonic ns) per line; `A` lines are skipped.
fn events(path: &Path) -> Vec<(Event, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| f.get(i)?.parse::<i64>().ok();
            let (partition, value, at) = (num(1)? as i32, num(2)?, num(3)? as u64);
            match *f.first()? {
                "R" => Some((
                    Event::Record {
                        partition,
                        offset: value,
                    },
                    at,
                )),
                "C" => Some((
                    Event::Commit {
                        partition,
                        next_offset: value,
                    },
                    at,
                )),
                _ => None,
            }
        })
        .collect()
}

/// kcat -G output: one `partition offset` line per record.
fn kcat_records(path: &Path) -> Vec<(i32, i64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

fn has_assignment(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .any(|l| l.starts_with("A ") && !l.starts_with("A - "))
        })
        .unwrap_or(false)
}

/// A child process killed (SIGKILL) on drop, whose stdout goes to a file the test reads as it
/// grows (`Background` pipes stdout and hands it over only at exit).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Members {
    python: Vec<(String, PathBuf, Background)>,
    kcat_out: PathBuf,
    kcat: KillOnDrop,
}

impl Members {
    /// Every (partition, offset) any member processed.
    fn processed(&self) -> BTreeSet<(i32, i64)> {
        let mut all: BTreeSet<(i32, i64)> = kcat_records(&self.kcat_out).into_iter().collect();
        for (_, out, _) in &self.python {
            for (e, _) in events(out) {
                if let Event::Record { partition, offset } = e {
                    all.insert((partition, offset));
                }
            }
        }
        all
    }
}

fn produce_round(broker: &Broker, topic: &str, round: usize) {
    let input: String = (0..RECORDS_PER_ROUND)
        .map(|i| format!("key-{round}-{i}:value-{round}-{i}\n"))
        .collect();
    kcat_produce_keyed(broker, topic, "none", &[], &[], &input).assert_success(|| broker.logs());
}

fn signal(pid: Option<u32>, sig: i32) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) on a child we started and still own.
        unsafe { libc::kill(pid as i32, sig) };
    }
}

#[test]
fn a_group_of_four_different_clients_shares_a_topic_through_a_leave_and_a_kill() {
    require_tool("kcat", "-V", "apt-get install kcat");
    require_python_modules(
        &["confluent_kafka", "kafka", "aiokafka"],
        "pip install confluent-kafka kafka-python aiokafka",
    );
    let broker = Broker::start(&[]);
    let topic = unique_topic("mixed-group");
    let group = unique_topic("mixed");
    broker
        .python(
            "create_topic.py",
            &[topic.as_str(), &PARTITIONS.to_string()],
        )
        .assert_success(|| broker.logs());

    let dir = broker.temp_dir().to_path_buf();
    let kcat_out = dir.join("member-kcat.txt");
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", &broker.bootstrap(), "-G", &group, &topic])
        // -u: unbuffered, so the test sees each record as it is printed. No `-o`: with it kcat
        // would seek every assigned partition there, ignoring the group's committed offsets.
        .args(["-u", "-q", "-f", "%p %o\\n"])
        .args(["-X", "auto.offset.reset=earliest"])
        .args(["-X", "auto.commit.interval.ms=200"])
        .args(["-X", "session.timeout.ms=6000"])
        .args(["-X", "heartbeat.interval.ms=500"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .stdout(Stdio::from(
            File::create(&kcat_out).expect("create kcat output"),
        ));
    let kcat = KillOnDrop(cmd.spawn().expect("start kcat"));
    let python = ["confluent", "kafka-python", "aiokafka"]
        .into_iter()
        .map(|client| {
            let out = dir.join(format!("member-{client}.txt"));
            let bg = broker.spawn_python(
                "group_member.py",
                &[
                    client,
                    group.as_str(),
                    topic.as_str(),
                    out.to_str().expect("utf-8 path"),
                ],
            );
            (client.to_string(), out, bg)
        })
        .collect();
    let mut members = Members {
        python,
        kcat_out,
        kcat,
    };

    // Every Python member has a share (kcat -G's shows as records) before anything is produced.
    assert!(
        wait_for(Duration::from_secs(30), || members
            .python
            .iter()
            .all(|(_, out, _)| has_assignment(out))),
        "not every member was assigned partitions; {}",
        broker.logs()
    );
    produce_round(&broker, &topic, 0);
    let total = |rounds: usize| rounds * RECORDS_PER_ROUND;
    assert!(
        wait_for(CONSUME_LIMIT, || members.processed().len() >= total(1)),
        "the group consumed {} of {} records; {}",
        members.processed().len(),
        total(1),
        broker.logs()
    );
    for (client, out, _) in &members.python {
        let records = events(out)
            .iter()
            .filter(|(e, _)| matches!(e, Event::Record { .. }))
            .count();
        assert!(
            records > 0,
            "{client} processed no record of the first round"
        );
    }
    assert!(
        !kcat_records(&members.kcat_out).is_empty(),
        "kcat processed no record of the first round"
    );

    // confluent-kafka dies without a word; kafka-python leaves the group cleanly.
    let (_, _, confluent) = &mut members.python[0];
    signal(confluent.pid(), libc::SIGKILL);
    let (_, _, kafka_python) = &mut members.python[1];
    signal(kafka_python.pid(), libc::SIGTERM);
    produce_round(&broker, &topic, 1);

    assert!(
        wait_for(CONSUME_LIMIT, || members.processed().len() >= total(2)),
        "after a kill and a leave the group consumed {} of {} records; {}",
        members.processed().len(),
        total(2),
        broker.logs()
    );

    // None skipped: every offset of every partition was processed by someone.
    let processed = members.processed();
    let mut end_by_partition: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in &processed {
        let e = end_by_partition.entry(*p).or_default();
        *e = (*e).max(o + 1);
    }
    let expected: usize = end_by_partition.values().map(|e| *e as usize).sum();
    assert_eq!(processed.len(), expected, "offsets were skipped");
    assert_eq!(processed.len(), total(2));

    // Nothing committed was delivered again: no record arrives after a commit that covered it.
    let mut commits: Vec<(u64, i32, i64)> = Vec::new();
    let mut records: Vec<(u64, i32, i64, String)> = Vec::new();
    for (client, out, _) in &members.python {
        for (e, at) in events(out) {
            match e {
                Event::Commit {
                    partition,
                    next_offset,
                } => commits.push((at, partition, next_offset)),
                Event::Record { partition, offset } => {
                    records.push((at, partition, offset, client.clone()))
                }
            }
        }
    }
    assert!(!commits.is_empty(), "no member committed anything");
    for (at, partition, offset, client) in &records {
        if let Some((c_at, _, next)) = commits
            .iter()
            .find(|(c_at, p, next)| c_at < at && p == partition && next > offset)
        {
            panic!(
                "{client} processed {partition}/{offset} at {at} after a commit of {next} at {c_at}"
            );
        }
    }

    for (_, _, bg) in &mut members.python {
        signal(bg.pid(), libc::SIGTERM);
    }
    signal(Some(members.kcat.0.id()), libc::SIGTERM);
    for (client, _, bg) in members.python.drain(..) {
        let out = bg.wait(Duration::from_secs(20));
        if client != "confluent" {
            assert!(!out.timed_out, "{client} did not stop: {}", out.describe());
        }
    }
}

/// The text after `prefix` on the line of `stdout` that starts with it.
fn line_after<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in: {stdout}"))
}

#[test]
fn a_new_member_resumes_at_the_last_commit_after_a_consumer_restart_and_a_broker_kill9() {
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
    let mut broker = Broker::start(&[]);
    let topic = unique_topic("resume");
    let group = unique_topic("resume-group");
    broker
        .python("create_topic.py", &[topic.as_str(), "3"])
        .assert_success(|| broker.logs());
    produce_round(&broker, &topic, 0);

    // A consumer processes part of the topic, commits, and stops.
    let out = broker.python("group_resume.py", &["consume", &group, &topic, "700"]);
    out.assert_success(|| broker.logs());
    let committed = line_after(&out.stdout, "committed ").to_string();

    // A consumer restart: the next member starts exactly there.
    broker
        .python("group_resume.py", &["resume", &group, &topic, &committed])
        .assert_success(|| broker.logs());

    // The broker dies without a clean shutdown; after the restart the commit is still there.
    let out = broker.python("group_resume.py", &["consume", &group, &topic, "300"]);
    out.assert_success(|| broker.logs());
    let committed = line_after(&out.stdout, "committed ").to_string();
    broker.kill9();
    broker.restart();
    broker
        .python("group_resume.py", &["resume", &group, &topic, &committed])
        .assert_success(|| broker.logs());
}
