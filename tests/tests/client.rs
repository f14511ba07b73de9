//! The Rust client (strata-client) against a real broker: bootstrap, metadata, leaders, and a
//! clear error when no broker is reachable.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, unique_topic, Broker};
use strata_client::{ClientConfig, ClientError, Cluster};

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new(bootstrap);
    c.connection.connect_timeout = Duration::from_secs(2);
    c
}

#[tokio::test]
async fn a_client_bootstraps_learns_the_cluster_and_finds_leaders() {
    let broker = Broker::start(&["num.partitions=3"]);
    let cluster = Cluster::connect(config(&broker.bootstrap())).await.unwrap();
    let meta = cluster.metadata();
    assert_eq!(
        meta.brokers.get(&1).map(String::as_str),
        Some(broker.bootstrap().as_str())
    );
    assert_eq!(meta.controller, 1);
    assert!(meta.cluster_id.as_ref().is_some_and(|c| c.len() == 22));

    let topic = unique_topic("client");
    let t = cluster.topic(&topic).await.unwrap(); // auto-created
    assert_eq!(t.partitions.len(), 3);
    assert!(t
        .partitions
        .iter()
        .all(|p| p.leader == 1 && p.isr == vec![1]));
    let leader = cluster.leader(&topic, 2).await.unwrap();
    assert_eq!(leader.addr(), broker.bootstrap());
    assert!(cluster.leader(&topic, 7).await.is_err());
}

#[tokio::test]
async fn no_reachable_broker_is_a_clear_error_within_the_timeout() {
    let addr = format!("127.0.0.1:{}", free_port()); // nothing listens here
    let started = Instant::now();
    let err = match Cluster::connect(config(&addr)).await {
        Err(e) => e,
        Ok(_) => panic!("connected to nothing"),
    };
    assert!(
        matches!(err, ClientError::NoBrokerReachable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&addr), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
