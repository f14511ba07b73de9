//! The coordinator with real tasks and clocks: waiting joins are answered through their
//! oneshots, and the timer task expires sessions without being polled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::state::{JoinRequest, SyncRequest};
use crate::config::BrokerConfig;
use crate::node::{Endpoint, Node};

fn node(dir: &std::path::Path, settings: &[(&str, &str)]) -> Arc<Node> {
    let mut config = BrokerConfig::default();
    for (k, v) in settings {
        config.set(k, v).unwrap();
    }
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: 9092,
    };
    Arc::new(Node::open(Arc::new(config), endpoint, dir).unwrap().0)
}

fn join(member_id: &str, session_timeout_ms: i32) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "test".into(),
        client_host: String::new(),
        session_timeout_ms,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::new())],
        require_known_member_id: false,
        supports_skip_assignment: true,
    }
}

#[tokio::test]
async fn concurrent_joiners_of_a_new_group_share_one_generation_within_the_initial_delay() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), &[]);
    let started = Instant::now();
    let joins: Vec<_> = (0..3)
        .map(|_| {
            let node = Arc::clone(&node);
            tokio::spawn(async move { node.groups.join(&node, "g", join("", 10_000)).await })
        })
        .collect();
    let mut generations = Vec::new();
    for j in joins {
        let reply = tokio::time::timeout(Duration::from_secs(5), j)
            .await
            .unwrap()
            .unwrap();
        assert!(reply.error.is_none(), "{:?}", reply.error);
        generations.push(reply.generation);
    }
    assert_eq!(generations, vec![1, 1, 1]);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1_000),
        "answered after {elapsed:?} (initial delay is 100 ms)"
    );
}

#[tokio::test]
async fn the_timer_task_expires_a_silent_member_at_its_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // A 300 ms session (allowed by lowering the minimum) keeps the test short.
    let node = node(
        dir.path(),
        &[
            ("group.min.session.timeout.ms", "100"),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    );
    let reply = node.groups.join(&node, "g", join("", 300)).await;
    assert!(reply.error.is_none());
    let sync = SyncRequest {
        member_id: reply.member_id.clone(),
        group_instance_id: None,
        generation: reply.generation,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    };
    assert!(node.groups.sync(&node, "g", sync).await.error.is_none());
    assert_eq!(node.groups.describe("g").unwrap().state.name(), "Stable");
    let started = Instant::now();
    let mut state = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        state = node.groups.describe("g").unwrap().state.name().to_string();
        if state == "Empty" {
            break;
        }
    }
    assert_eq!(state, "Empty", "the member expired");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "expired after {:?}",
        started.elapsed()
    );
}

/// Joins `group` alone with a `session_ms` session and syncs: Stable, one member.
async fn stable_alone(node: &Arc<Node>, group: &str, session_ms: i32) {
    let reply = node.groups.join(node, group, join("", session_ms)).await;
    assert!(reply.error.is_none());
    let sync = SyncRequest {
        member_id: reply.member_id.clone(),
        group_instance_id: None,
        generation: reply.generation,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    };
    assert!(node.groups.sync(node, group, sync).await.error.is_none());
}

#[tokio::test]
async fn a_group_whose_metadata_write_is_stuck_does_not_delay_other_groups_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(
        dir.path(),
        &[
            ("group.min.session.timeout.ms", "100"),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    );
    // "slow" expires first, and its write cannot finish (its write lock is held here, as a
    // stuck fsync would hold it); "fast" expires a little later.
    stable_alone(&node, "slow", 200).await;
    stable_alone(&node, "fast", 400).await;
    let slot = node.groups.find("slow").unwrap();
    let stuck = slot.persisted_seq.lock().await;

    let started = Instant::now();
    let mut state = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        state = node
            .groups
            .describe("fast")
            .unwrap()
            .state
            .name()
            .to_string();
        if state == "Empty" {
            break;
        }
    }
    assert_eq!(
        state, "Empty",
        "fast expired although slow's write is stuck"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(node.groups.describe("slow").unwrap().state.name(), "Empty");
    drop(stuck);
}
