//! Consumer groups through Strata's group coordinator, with stock clients: a confluent-kafka
//! consumer that subscribes to a topic in a new group is reading within a second, and a kcat
//! `-G` member joining it splits the partitions with it (a rebalance driven by Heartbeat's
//! REBALANCE_IN_PROGRESS, completed as soon as both members rejoined).
//!
//! A static member (group.instance.id) that restarts within its session timeout gets its
//! partitions back at once, and the other member sees no rebalance.
//!
//! Offsets are not committed here (auto commit off); OffsetCommit/OffsetFetch are tested with
//! the offset store.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{
    kcat_produce_keyed, require_python_modules, require_tool, unique_topic, wait_for, Background,
    Broker,
};

const PARTITIONS: i32 = 4;
const RECORDS: usize = 40;

fn broker_with_topic(topic: &str) -> Broker {
    let broker = Broker::start(&[&format!("num.partitions={PARTITIONS}")]);
    let input: String = (0..RECORDS).map(|i| format!("key{i}:value{i}\n")).collect();
    kcat_produce_keyed(&broker, topic, "none", &[], &[], &input);
    broker
}

fn requirements() {
    require_tool("kcat", "-V", "apt-get install kcat");
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
}

/// The JSON line the Python member prints: (seconds to first record, final assignment, records).
fn python_result(stdout: &str) -> (Option<f64>, BTreeSet<i32>, usize) {
    let line = stdout.lines().last().unwrap_or_default();
    let field = |name: &str| -> &str {
        let start = line
            .find(&format!("\"{name}\": "))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            + name.len()
            + 4;
        &line[start..]
    };
    let first = field("first_record_s");
    let first = first[..first.find([',', '}']).unwrap()].trim();
    let first = (first != "null").then(|| first.parse::<f64>().unwrap());
    let assigned = field("assigned");
    let assigned: BTreeSet<i32> = assigned[1..assigned.find(']').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let records = field("records");
    let records: usize = records[1..records.find('}').unwrap()]
        .split(',')
        .filter_map(|kv| kv.split(':').nth(1))
        .map(|n| n.trim().parse::<usize>().unwrap())
        .sum();
    (first, assigned, records)
}

#[test]
fn a_confluent_consumer_in_a_new_group_reads_within_a_second() {
    requirements();
    let topic = unique_topic("group-first");
    let broker = broker_with_topic(&topic);
    let out = broker.python(
        "group_consumer_confluent.py",
        &[
            topic.as_str(),
            "first-group",
            "--seconds",
            "20",
            "--until-records",
            &RECORDS.to_string(),
        ],
    );
    out.assert_success(|| broker.logs());
    let (first, assigned, records) = python_result(&out.stdout);
    let first = first.expect("a record was read");
    eprintln!("first record {:.0} ms after subscribe()", first * 1000.0);
    assert!(
        first < 1.0,
        "first record after {first:.3} s; the lone member must be consuming within 1 s"
    );
    assert_eq!(
        assigned,
        (0..PARTITIONS).collect(),
        "a lone member gets every partition"
    );
    assert_eq!(records, RECORDS);
}

#[test]
fn a_kcat_member_joining_a_confluent_member_splits_the_partitions() {
    requirements();
    let topic = unique_topic("group-shared");
    let broker = broker_with_topic(&topic);
    let ready = broker.temp_dir().join("python-member-assigned");
    let python = broker.spawn_python(
        "group_consumer_confluent.py",
        &[
            topic.as_str(),
            "shared-group",
            "--seconds",
            "15",
            "--ready-file",
            ready.to_str().unwrap(),
        ],
    );
    assert!(
        wait_for(Duration::from_secs(10), || ready.exists()),
        "the Python member was never assigned:\n{}",
        broker.logs()
    );

    // kcat joins the same group; -e: it exits once its partitions are read to the end.
    let mut kcat = Command::new("kcat");
    kcat.args([
        "-b",
        &broker.bootstrap(),
        "-G",
        "shared-group",
        "-X",
        "enable.auto.commit=false",
    ])
    .args([
        "-X",
        "auto.offset.reset=earliest",
        "-e",
        "-f",
        "%p\n",
        &topic,
    ]);
    let kcat = Background::spawn(kcat, None).wait(Duration::from_secs(30));
    kcat.assert_success(|| broker.logs());
    // "% Group shared-group rebalanced (memberid ...): assigned: t [0], t [1]"
    let line = kcat
        .stderr
        .lines()
        .rfind(|l| l.contains("assigned:"))
        .unwrap_or_else(|| panic!("kcat was never assigned:\n{}", kcat.stderr))
        .to_string();
    let kcat_partitions: BTreeSet<i32> = line
        .split('[')
        .skip(1)
        .map(|s| s[..s.find(']').unwrap()].parse().unwrap())
        .collect();
    let consumed: BTreeSet<i32> = kcat
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(
        consumed, kcat_partitions,
        "kcat read exactly its partitions"
    );

    let python = python.wait(Duration::from_secs(60));
    python.assert_success(|| broker.logs());
    // The Python member's assignment while kcat was in the group (after kcat leaves, the Python
    // member gets every partition back): the one that complements kcat's.
    let history: Vec<BTreeSet<i32>> = python_assignments(&python.stdout)
        .into_iter()
        .map(|a| a.into_iter().collect())
        .collect();
    let python_partitions = history
        .iter()
        .find(|a| a.is_disjoint(&kcat_partitions) && !a.is_empty())
        .cloned()
        .unwrap_or_else(|| {
            panic!("no Python assignment beside kcat's {kcat_partitions:?}: {history:?}")
        });
    eprintln!("kcat got {kcat_partitions:?}, the Python member had {python_partitions:?}");
    assert!(!kcat_partitions.is_empty(), "kcat got partitions");
    let all: BTreeSet<i32> = kcat_partitions.union(&python_partitions).copied().collect();
    assert_eq!(
        all,
        (0..PARTITIONS).collect(),
        "every partition has an owner"
    );
}

/// Every assignment the Python member received, in order (its JSON's "assignments").
fn python_assignments(stdout: &str) -> Vec<Vec<i32>> {
    let line = stdout.lines().last().unwrap_or_default();
    let start = line
        .find("\"assignments\": [")
        .unwrap_or_else(|| panic!("no assignments in {line:?}"))
        + "\"assignments\": [".len();
    let rest = &line[start..];
    let mut out = Vec::new();
    for part in rest.split('[').skip(1) {
        let inner = &part[..part.find(']').unwrap()];
        out.push(
            inner
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse().unwrap())
                .collect(),
        );
    }
    out
}

#[test]
fn a_static_member_that_restarts_gets_its_partitions_back_without_a_rebalance() {
    requirements();
    let topic = unique_topic("group-static");
    let broker = broker_with_topic(&topic);
    let ready = broker.temp_dir().join("member-a-assigned");
    let a = broker.spawn_python(
        "group_consumer_confluent.py",
        &[
            topic.as_str(),
            "static-group",
            "--seconds",
            "20",
            "--instance",
            "a",
            "--ready-file",
            ready.to_str().unwrap(),
        ],
    );
    assert!(
        wait_for(Duration::from_secs(10), || ready.exists()),
        "member a was never assigned:\n{}",
        broker.logs()
    );

    // b joins (a rebalance: a gives up half), reads for a while, and stops without leaving.
    let b1 = broker.python(
        "group_consumer_confluent.py",
        &[
            topic.as_str(),
            "static-group",
            "--seconds",
            "8",
            "--instance",
            "b",
        ],
    );
    b1.assert_success(|| broker.logs());
    let (_, b1_partitions, _) = python_result(&b1.stdout);
    assert_eq!(
        b1_partitions.len(),
        2,
        "b got half the partitions: {}",
        b1.stdout
    );

    // b restarts (new process, same instance id) within its session timeout.
    let b2 = broker.python(
        "group_consumer_confluent.py",
        &[
            topic.as_str(),
            "static-group",
            "--seconds",
            "3",
            "--instance",
            "b",
        ],
    );
    b2.assert_success(|| broker.logs());
    let (first, b2_partitions, _) = python_result(&b2.stdout);
    assert_eq!(
        b2_partitions, b1_partitions,
        "the restarted member gets its old partitions"
    );
    let first = first.expect("the restarted member read records");
    eprintln!(
        "restarted static member read its first record after {:.0} ms",
        first * 1000.0
    );

    let a = a.wait(Duration::from_secs(60));
    a.assert_success(|| broker.logs());
    let history = python_assignments(&a.stdout);
    assert_eq!(
        history.len(),
        2,
        "a saw b join, and nothing when b came back: {history:?}"
    );
    assert_eq!(history[0], (0..PARTITIONS).collect::<Vec<_>>());
}
