//! A cluster of real `strata` processes: three nodes that are each broker and controller voter
//! (and, in one story, a fourth that is a broker only: a learner of the metadata log).
//!
//! The stories: the cluster forms; RF=3 topics are created from confluent-kafka's AdminClient,
//! kafka-python and `strata topic create` through different brokers; every broker's Metadata
//! answer agrees; kill -9 of the active controller elects another and topic creation works
//! again; the killed node rejoins with the same metadata; with two of three voters down a
//! metadata change is refused with a clear error, and works again once one returns; a broker
//! that was down through many changes catches up (from a snapshot) when it restarts.
//!
//! Needs: python3 with confluent_kafka and kafka-python (scripts/test.sh installs them).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{broker_binary, launch_cluster, run, unique_topic, Broker, Output};

/// Short sessions, so a dead broker is fenced within the test's patience.
const FAST_LIVENESS: [&str; 2] = [
    "broker.heartbeat.interval.ms=300",
    "broker.session.timeout.ms=3000",
];
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster may take to agree after a change (a broker applies the image on its own).
const AGREE_TIMEOUT: Duration = Duration::from_secs(30);

struct Cluster {
    nodes: Vec<Broker>,
}

impl Cluster {
    /// `voters` nodes that are broker and controller, plus `brokers` broker-only nodes, all
    /// launched before any is waited for (a voter serves only once a majority runs).
    fn start(voters: usize, brokers: usize, extra: &[&str]) -> Cluster {
        let mut settings: Vec<&str> = FAST_LIVENESS.to_vec();
        settings.extend_from_slice(extra);
        Cluster {
            nodes: launch_cluster(voters, brokers, &settings),
        }
    }

    fn node(&mut self, id: i32) -> &mut Broker {
        self.nodes
            .iter_mut()
            .find(|n| n.node_id() == id)
            .expect("node id")
    }

    fn running(&mut self) -> Vec<i32> {
        self.nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then(|| n.node_id()))
            .collect()
    }

    /// What node `id` says the cluster is (JSON from cluster_metadata.py).
    fn metadata(&mut self, id: i32) -> serde_json::Value {
        let out = self.node(id).python("cluster_metadata.py", &[] as &[&str]);
        out.assert_success(|| format!("metadata from node {id}"));
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("node {id}: {e}: {}", out.stdout))
    }

    /// Waits until every running node answers the same metadata, and returns it.
    fn agreed_metadata(&mut self) -> serde_json::Value {
        let started = Instant::now();
        let mut last = Vec::new();
        while started.elapsed() < AGREE_TIMEOUT {
            let ids = self.running();
            last = ids.iter().map(|id| (*id, self.metadata(*id))).collect();
            if last.windows(2).all(|w| w[0].1 == w[1].1) {
                return last.swap_remove(0).1;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("the brokers did not agree within {AGREE_TIMEOUT:?}: {last:#?}");
    }

    /// [`Cluster::agreed_metadata`], once every partition has a live leader.
    fn agreed_metadata_all_led(&mut self) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let md = self.agreed_metadata();
            let led = md["topics"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|ps| ps.as_array().unwrap())
                .all(|p| p[1].as_i64() != Some(-1));
            if led {
                return md;
            }
            assert!(
                started.elapsed() < AGREE_TIMEOUT,
                "partitions without a leader: {md:#}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Creates topics with a client through node `id`; the script's output.
    fn create(
        &mut self,
        id: i32,
        client: &str,
        partitions: u32,
        rf: u32,
        topics: &[&str],
    ) -> Output {
        let mut args = vec![client.to_string(), partitions.to_string(), rf.to_string()];
        args.extend(topics.iter().map(|t| t.to_string()));
        self.node(id).python("cluster_create_topics.py", &args)
    }

    /// Creates a topic through node `id`, retrying (bounded) while the quorum elects a leader.
    fn create_retrying(&mut self, id: i32, topic: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let out = self.create(id, "confluent", 1, 1, &[topic]);
            if out.success() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "no topic created through node {id} within {limit:?}: {}",
                out.describe()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The active controller: Metadata names it when it is a live broker (every node is here).
    fn active_controller(&mut self) -> i32 {
        let md = self.agreed_metadata();
        md["controller"].as_i64().expect("controller id") as i32
    }
}

fn strata(args: &[&str]) -> Output {
    let mut cmd = Command::new(broker_binary());
    cmd.args(args).env("NO_COLOR", "1");
    run(cmd, None, CLI_TIMEOUT)
}

/// Each topic's partitions with their replicas and ISR, not who leads.
fn without_leaders(md: &serde_json::Value) -> serde_json::Value {
    let mut md = md["topics"].clone();
    for partitions in md.as_object_mut().unwrap().values_mut() {
        for p in partitions.as_array_mut().unwrap() {
            p[1] = serde_json::Value::Null;
        }
    }
    md
}

fn partitions_of<'a>(md: &'a serde_json::Value, topic: &str) -> &'a Vec<serde_json::Value> {
    md["topics"][topic]
        .as_array()
        .unwrap_or_else(|| panic!("no topic {topic} in {md:#}"))
}

#[test]
fn a_three_node_cluster_agrees_survives_its_controller_and_refuses_changes_without_a_majority() {
    let mut cluster = Cluster::start(3, 0, &[]);
    let md = cluster.agreed_metadata();
    assert_eq!(md["brokers"].as_array().unwrap().len(), 3, "{md:#}");
    let controller = md["controller"].as_i64().unwrap();
    assert!((1..=3).contains(&controller), "{md:#}");
    assert_eq!(md["describe_cluster_controller"], md["controller"]);

    // RF=3 topics from three clients, each through another broker.
    let (a, b, c) = (
        unique_topic("rf3-confluent"),
        unique_topic("rf3-kafka-python"),
        unique_topic("rf3-cli"),
    );
    cluster
        .create(1, "confluent", 3, 3, &[&a])
        .assert_success(|| "confluent-kafka AdminClient".into());
    cluster
        .create(2, "kafka-python", 3, 3, &[&b])
        .assert_success(|| "kafka-python KafkaAdminClient".into());
    let bootstrap = cluster.node(3).bootstrap();
    strata(&[
        "topic",
        "create",
        &c,
        "--partitions",
        "3",
        "--replication-factor",
        "3",
        "-b",
        &bootstrap,
    ])
    .assert_success(|| "strata topic create".into());
    // Four brokers' worth of replicas is more than three brokers hold.
    let refused = cluster.create(1, "confluent", 1, 4, &[&unique_topic("rf4")]);
    assert!(!refused.success(), "{}", refused.describe());
    assert!(
        refused.stdout.to_lowercase().contains("replication"),
        "{}",
        refused.describe()
    );

    let md = cluster.agreed_metadata();
    for topic in [&a, &b, &c] {
        let partitions = partitions_of(&md, topic);
        assert_eq!(partitions.len(), 3, "{topic}: {md:#}");
        let mut leaders = std::collections::BTreeSet::new();
        for p in partitions {
            assert_eq!(p[2], serde_json::json!([1, 2, 3]), "replicas: {md:#}");
            assert_eq!(p[3], serde_json::json!([1, 2, 3]), "ISR: {md:#}");
            leaders.insert(p[1].as_i64().unwrap());
        }
        assert_eq!(leaders.len(), 3, "leaders spread over the brokers: {md:#}");
    }

    // Records go to each partition's leader and come back (the client routes by Metadata).
    let out = cluster
        .node(2)
        .python("roundtrip_confluent.py", &[a.as_str(), "none", "30"]);
    out.assert_success(|| "round trip on an RF=3 topic".into());

    // kill -9 the active controller: another is elected and creation works again.
    let old = cluster.active_controller();
    cluster.node(old).kill9();
    let survivor = cluster.running()[0];
    let took = cluster.create_retrying(
        survivor,
        &unique_topic("after-kill"),
        Duration::from_secs(20),
    );
    eprintln!("[cluster] creation worked again {took:?} after kill -9 of controller {old}");
    let md = cluster.agreed_metadata();
    let new = md["controller"].as_i64().unwrap() as i32;
    assert_ne!(new, old, "{md:#}");

    // The killed node comes back with the same metadata (the same topics, partitions, replicas
    // and ISR; every partition led again once it heartbeats).
    cluster.node(old).relaunch();
    cluster.node(old).wait_until_serving();
    let md_after = cluster.agreed_metadata_all_led();
    assert_eq!(without_leaders(&md_after), without_leaders(&md));

    // Two of three voters down: a change is refused with a clear error, not split.
    let alone = cluster.running()[0];
    let others: Vec<i32> = cluster
        .running()
        .into_iter()
        .filter(|i| *i != alone)
        .collect();
    for id in &others {
        cluster.node(*id).kill9();
    }
    let refused = cluster.create(alone, "confluent", 1, 1, &[&unique_topic("no-majority")]);
    assert!(!refused.success(), "{}", refused.describe());
    let text = refused.stdout.to_lowercase();
    assert!(
        text.contains("majority") || text.contains("controller") || text.contains("timed out"),
        "the error says why: {}",
        refused.describe()
    );
    // One returns: a majority again.
    cluster.node(others[0]).relaunch();
    cluster.node(others[0]).wait_until_serving();
    cluster.create_retrying(
        alone,
        &unique_topic("majority-back"),
        Duration::from_secs(30),
    );
}

#[test]
fn a_broker_down_through_many_changes_catches_up_from_a_snapshot() {
    // Snapshots every 8 records: the changes below are far more, so the restarted learner is
    // sent a snapshot (the log it missed is purged).
    let mut cluster = Cluster::start(3, 1, &["metadata.log.snapshot.interval.records=8"]);
    let md = cluster.agreed_metadata();
    assert_eq!(md["brokers"].as_array().unwrap().len(), 4, "{md:#}");
    cluster.node(4).stop();
    let topics: Vec<String> = (0..12)
        .map(|i| unique_topic(&format!("many-{i}")))
        .collect();
    for chunk in topics.chunks(4) {
        let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
        cluster
            .create(1, "confluent", 2, 1, &names)
            .assert_success(|| "creating topics while broker 4 is down".into());
    }
    cluster.node(4).relaunch();
    cluster.node(4).wait_until_serving();
    let md = cluster.agreed_metadata();
    for t in &topics {
        assert_eq!(partitions_of(&md, t).len(), 2, "{t}");
    }
    assert!(
        std::fs::read_dir(cluster.node(4).data_dir().join("controller"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("snapshot")),
        "broker 4 holds a snapshot of the metadata"
    );
}
