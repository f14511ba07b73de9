//! Consumer-group stories against a scripted fake broker that plays a one-member group
//! coordinator: the join round trip (MEMBER_ID_REQUIRED, then JoinGroup + SyncGroup as leader),
//! heartbeats, starting from committed offsets, commits, rejoining on REBALANCE_IN_PROGRESS,
//! losing partitions on UNKNOWN_MEMBER_ID, cooperative revocation, a coordinator move, and
//! LeaveGroup on close. Also the admin client's group operations.

mod fake_broker;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_broker::{bounded, client_config, wait_until, Call, FakeBroker, Reply, View};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as FoundCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeGroupsResponse, FindCoordinatorResponse, GroupId, HeartbeatResponse,
    JoinGroupResponse, LeaveGroupResponse, ListGroupsResponse, OffsetCommitResponse,
    OffsetFetchResponse, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use strata_client::admin::Admin;
use strata_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig, RebalanceEvent};
use strata_client::group::{Assignment, GroupConfig, Subscription, Tp};
use strata_client::Cluster;
use strata_protocol::api::Request;
use strata_protocol::record_batch::build_batch;

const GROUP: &str = "g1";

fn tp(t: &str, p: i32) -> Tp {
    (t.to_string(), p)
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// What the fake coordinator knows and does; tests queue errors and read what it saw.
#[derive(Default)]
struct CoordState {
    next_member: u32,
    generation: i32,
    /// Error codes for the next heartbeats, in order (then 0).
    heartbeat_errors: VecDeque<i16>,
    /// Assignments to hand out in the next SyncGroups instead of the leader's.
    sync_overrides: VecDeque<Vec<Tp>>,
    /// The subscription of every successful JoinGroup, in order.
    joins: Vec<Subscription>,
    /// (generation, member id, offsets) of every OffsetCommit.
    commits: Vec<(i32, String, BTreeMap<Tp, i64>)>,
    committed: BTreeMap<Tp, i64>,
    /// Member ids that sent LeaveGroup.
    left: Vec<String>,
    /// The assignment of the last SyncGroup (for DescribeGroups).
    assignment: Vec<Tp>,
    member: String,
}

type Coord = Arc<Mutex<CoordState>>;

fn lock(c: &Coord) -> std::sync::MutexGuard<'_, CoordState> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// The coordinator's answer to a group request, or `Reply::Default` for the rest.
fn coordinator_reply(coord: &Coord, call: &Call) -> Reply {
    let v = call.version();
    let frame = match &call.request.body {
        Request::FindCoordinator(r) => {
            let port = call.view.metadata(None).brokers[0].port;
            let mut resp = FindCoordinatorResponse::default();
            if v >= 4 {
                resp.coordinators = r
                    .coordinator_keys
                    .iter()
                    .map(|k| {
                        FoundCoordinator::default()
                            .with_key(k.clone())
                            .with_node_id(BrokerId(1))
                            .with_host(s("127.0.0.1"))
                            .with_port(port)
                    })
                    .collect();
            } else {
                resp.node_id = BrokerId(1);
                resp.host = s("127.0.0.1");
                resp.port = port;
            }
            call.frame(&resp)
        }
        Request::JoinGroup(r) => {
            let mut st = lock(coord);
            let mut resp = JoinGroupResponse::default();
            if r.member_id.is_empty() {
                st.next_member += 1;
                resp.error_code = ResponseError::MemberIdRequired.code();
                resp.member_id = s(&format!("member-{}", st.next_member));
                resp.generation_id = -1;
                return Reply::Raw(call.frame(&resp));
            }
            st.generation += 1;
            st.member = r.member_id.to_string();
            let protocol = &r.protocols[0];
            st.joins
                .push(Subscription::decode(&protocol.metadata).expect("our subscription"));
            resp.generation_id = st.generation;
            resp.protocol_name = Some(protocol.name.clone());
            if v >= 7 {
                resp.protocol_type = Some(s("consumer"));
            }
            resp.leader = r.member_id.clone();
            resp.member_id = r.member_id.clone();
            let mut m = JoinGroupResponseMember::default()
                .with_member_id(r.member_id.clone())
                .with_metadata(protocol.metadata.clone());
            if v >= 5 {
                m.group_instance_id = r.group_instance_id.clone();
            }
            resp.members = vec![m];
            call.frame(&resp)
        }
        Request::SyncGroup(r) => {
            let mut st = lock(coord);
            let mine = match st.sync_overrides.pop_front() {
                Some(parts) => parts,
                None => r
                    .assignments
                    .iter()
                    .find(|a| a.member_id == r.member_id)
                    .map(|a| {
                        Assignment::decode(&a.assignment)
                            .expect("leader's")
                            .partitions
                    })
                    .unwrap_or_default(),
            };
            st.assignment = mine.clone();
            let mut resp = SyncGroupResponse::default()
                .with_assignment(Assignment::new(mine).encode().expect("encode"));
            if v >= 5 {
                resp.protocol_type = r.protocol_type.clone();
                resp.protocol_name = r.protocol_name.clone();
            }
            call.frame(&resp)
        }
        Request::Heartbeat(_) => {
            let code = lock(coord).heartbeat_errors.pop_front().unwrap_or(0);
            call.frame(&HeartbeatResponse::default().with_error_code(code))
        }
        Request::LeaveGroup(r) => {
            let mut st = lock(coord);
            for m in &r.members {
                st.left.push(m.member_id.to_string());
            }
            if v < 3 {
                st.left.push(r.member_id.to_string());
            }
            call.frame(&LeaveGroupResponse::default())
        }
        Request::OffsetCommit(r) => {
            let mut st = lock(coord);
            let mut offsets = BTreeMap::new();
            let mut resp = OffsetCommitResponse::default();
            for t in &r.topics {
                let mut rt = OffsetCommitResponseTopic::default().with_name(t.name.clone());
                for p in &t.partitions {
                    offsets.insert(
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                    rt.partitions.push(
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index),
                    );
                }
                resp.topics.push(rt);
            }
            st.committed.extend(offsets.clone());
            st.commits.push((
                r.generation_id_or_member_epoch,
                r.member_id.to_string(),
                offsets,
            ));
            call.frame(&resp)
        }
        Request::OffsetFetch(r) => {
            assert!(
                v >= 8,
                "the client negotiates OffsetFetch v8 with this broker"
            );
            let st = lock(coord);
            let mut group =
                OffsetFetchResponseGroup::default().with_group_id(r.groups[0].group_id.clone());
            let wanted: Vec<Tp> = match &r.groups[0].topics {
                Some(ts) => ts
                    .iter()
                    .flat_map(|t| {
                        t.partition_indexes
                            .iter()
                            .map(|p| (t.name.0.to_string(), *p))
                    })
                    .collect(),
                None => st.committed.keys().cloned().collect(),
            };
            let mut by_topic: BTreeMap<String, Vec<OffsetFetchResponsePartitions>> =
                BTreeMap::new();
            for (t, p) in wanted {
                let offset = st.committed.get(&(t.clone(), p)).copied().unwrap_or(-1);
                by_topic.entry(t).or_default().push(
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset),
                );
            }
            group.topics = by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(s(&t)))
                        .with_partitions(ps)
                })
                .collect();
            call.frame(&OffsetFetchResponse::default().with_groups(vec![group]))
        }
        Request::ListGroups(_) => {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(s(GROUP)))
                .with_protocol_type(s("consumer"))
                .with_group_state(s("Stable"));
            call.frame(&ListGroupsResponse::default().with_groups(vec![listed]))
        }
        Request::DescribeGroups(_) => {
            let st = lock(coord);
            let member = DescribedGroupMember::default()
                .with_member_id(s(&st.member))
                .with_client_id(s("strata-client"))
                .with_client_host(s("/127.0.0.1"))
                .with_member_metadata(
                    Subscription::new(vec!["t".to_string()])
                        .encode()
                        .expect("encode"),
                )
                .with_member_assignment(
                    Assignment::new(st.assignment.clone())
                        .encode()
                        .expect("encode"),
                );
            let g = DescribedGroup::default()
                .with_group_id(GroupId(s(GROUP)))
                .with_group_state(s("Stable"))
                .with_protocol_type(s("consumer"))
                .with_protocol_data(s("range"))
                .with_members(vec![member]);
            call.frame(&DescribeGroupsResponse::default().with_groups(vec![g]))
        }
        _ => return Reply::Default,
    };
    Reply::Raw(frame)
}

/// A broker with topic `t` (2 partitions): t/0 holds a..e (offsets 0-4), t/1 holds x, y, z.
async fn broker_with_group(coord: &Coord) -> (View, FakeBroker) {
    let view = View::new();
    view.set_topic("t", &[1, 1]);
    let c = Arc::clone(coord);
    let broker =
        FakeBroker::start(1, &view, Arc::new(move |call| coordinator_reply(&c, call))).await;
    broker.append(
        "t",
        0,
        build_batch(0, 1_000, &[(None, b"a"), (None, b"b"), (None, b"c")]),
    );
    broker.append("t", 0, build_batch(0, 1_000, &[(None, b"d"), (None, b"e")]));
    broker.append(
        "t",
        1,
        build_batch(0, 1_000, &[(None, b"x"), (None, b"y"), (None, b"z")]),
    );
    (view, broker)
}

fn group_config(strategy: &[&str]) -> GroupConfig {
    GroupConfig {
        heartbeat_interval_ms: 30,
        auto_commit_interval_ms: 60_000,
        retry_backoff_ms: 10,
        assignment_strategy: strategy.iter().map(|s| s.to_string()).collect(),
        ..GroupConfig::new(GROUP)
    }
}

async fn consumer(broker: &FakeBroker, group: GroupConfig) -> Consumer {
    let cluster = bounded(
        "connect",
        Cluster::connect(client_config(&broker.bootstrap())),
    )
    .await
    .expect("connect");
    Consumer::new(
        cluster,
        ConsumerConfig {
            fetch_max_wait_ms: 20,
            auto_offset_reset: AutoOffsetReset::Earliest,
            group: Some(group),
            ..ConsumerConfig::default()
        },
    )
}

/// Polls until `n` records arrived in total (each poll and the whole bounded).
async fn poll_values(consumer: &mut Consumer, n: usize) -> Vec<(Tp, i64, String)> {
    bounded("records", async {
        let mut out = Vec::new();
        while out.len() < n {
            for r in consumer
                .poll(Duration::from_millis(200))
                .await
                .expect("poll")
            {
                let v =
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
                out.push(((r.topic, r.partition), r.offset, v));
            }
        }
        out
    })
    .await
}

type Events = Arc<Mutex<Vec<(RebalanceEvent, Vec<Tp>)>>>;

fn record_events(consumer: &mut Consumer) -> Events {
    let events: Events = Arc::default();
    let e = Arc::clone(&events);
    consumer
        .set_rebalance_listener(move |event: RebalanceEvent, parts: &[Tp]| {
            e.lock().unwrap().push((event, parts.to_vec()))
        })
        .expect("listener");
    events
}

#[tokio::test]
async fn a_member_joins_starts_at_committed_offsets_heartbeats_commits_and_leaves() {
    let coord: Coord = Arc::default();
    // The group read t/0 up to offset 3 before; t/1 has nothing committed (earliest applies).
    lock(&coord).committed.insert(tp("t", 0), 3);
    let (_view, broker) = broker_with_group(&coord).await;
    let mut consumer = consumer(&broker, group_config(&["range", "cooperative-sticky"])).await;
    let events = record_events(&mut consumer);
    consumer.subscribe(&["t"]).expect("subscribe");

    let mut got = poll_values(&mut consumer, 5).await;
    got.sort();
    assert_eq!(
        got,
        vec![
            (tp("t", 0), 3, "d".to_string()),
            (tp("t", 0), 4, "e".to_string()),
            (tp("t", 1), 0, "x".to_string()),
            (tp("t", 1), 1, "y".to_string()),
            (tp("t", 1), 2, "z".to_string()),
        ]
    );
    // MEMBER_ID_REQUIRED, then a join with the id handed out; range was preferred.
    let joins = broker.requests_of(ApiKey::JoinGroup);
    assert_eq!(joins.len(), 2);
    match (&joins[0].request.body, &joins[1].request.body) {
        (Request::JoinGroup(first), Request::JoinGroup(second)) => {
            assert_eq!(first.member_id.as_str(), "");
            assert_eq!(second.member_id.as_str(), "member-1");
            let names: Vec<&str> = second.protocols.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["range", "cooperative-sticky"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(lock(&coord).joins[0].topics, vec!["t".to_string()]);
    assert_eq!(
        consumer.group_membership(),
        Some(("member-1".to_string(), 1))
    );
    assert_eq!(consumer.assignment(), vec![tp("t", 0), tp("t", 1)]);
    assert_eq!(
        events.lock().unwrap().clone(),
        vec![(RebalanceEvent::Assigned, vec![tp("t", 0), tp("t", 1)])]
    );

    // Heartbeats flow on their own, at heartbeat.interval.ms.
    wait_until("two heartbeats", || broker.count(ApiKey::Heartbeat) >= 2).await;

    // A manual commit sends the positions, as this generation's member.
    bounded("commit", consumer.commit_sync())
        .await
        .expect("commit");
    let expected: BTreeMap<Tp, i64> = [(tp("t", 0), 5), (tp("t", 1), 3)].into_iter().collect();
    assert_eq!(
        lock(&coord).commits.last().cloned(),
        Some((1, "member-1".to_string(), expected.clone()))
    );
    let explicit: BTreeMap<Tp, i64> = [(tp("t", 1), 1)].into_iter().collect();
    bounded("commit explicit", consumer.commit_offsets_sync(&explicit))
        .await
        .expect("commit explicit");
    assert_eq!(lock(&coord).committed.get(&tp("t", 1)), Some(&1));
    let handle = consumer.commit_async().expect("async commit");
    bounded("async commit", handle)
        .await
        .expect("join")
        .expect("commit");
    assert_eq!(lock(&coord).committed.get(&tp("t", 1)), Some(&3));

    // Close: auto-commit (on by default), revoke, LeaveGroup.
    let commits_before = lock(&coord).commits.len();
    bounded("close", consumer.close()).await.expect("close");
    assert_eq!(lock(&coord).commits.len(), commits_before + 1);
    assert_eq!(lock(&coord).left, vec!["member-1".to_string()]);
    assert_eq!(
        events.lock().unwrap().last().cloned(),
        Some((RebalanceEvent::Revoked, vec![tp("t", 0), tp("t", 1)]))
    );
}

#[tokio::test]
async fn rebalance_in_progress_rejoins_and_unknown_member_loses_the_partitions() {
    let coord: Coord = Arc::default();
    let (_view, broker) = broker_with_group(&coord).await;
    let mut consumer = consumer(&broker, group_config(&["range"])).await;
    let events = record_events(&mut consumer);
    consumer.subscribe(&["t"]).expect("subscribe");
    poll_values(&mut consumer, 8).await;
    assert_eq!(
        consumer.group_membership(),
        Some(("member-1".to_string(), 1))
    );

    // The group starts rebalancing: the next heartbeat says so; eager: revoke all, rejoin.
    lock(&coord)
        .heartbeat_errors
        .push_back(ResponseError::RebalanceInProgress.code());
    bounded("rejoin", async {
        while consumer.group_membership() != Some(("member-1".to_string(), 2)) {
            consumer
                .poll(Duration::from_millis(50))
                .await
                .expect("poll");
        }
    })
    .await;
    let all = vec![tp("t", 0), tp("t", 1)];
    assert_eq!(
        events.lock().unwrap().clone(),
        vec![
            (RebalanceEvent::Assigned, all.clone()),
            (RebalanceEvent::Revoked, all.clone()),
            (RebalanceEvent::Assigned, all.clone()),
        ]
    );
    // The revoked positions were committed before the rejoin (auto-commit is on).
    let commits = lock(&coord).commits.clone();
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].0, 1);
    assert_eq!(commits[0].2.get(&tp("t", 0)), Some(&5));
    // Eager members own nothing when they join.
    assert!(lock(&coord).joins[1].owned_partitions.is_empty());

    // The coordinator forgot us: the partitions are lost (no commit), then we join again.
    lock(&coord)
        .heartbeat_errors
        .push_back(ResponseError::UnknownMemberId.code());
    bounded("lost then rejoin", async {
        while consumer.group_membership().map(|m| m.1) != Some(3) {
            consumer
                .poll(Duration::from_millis(50))
                .await
                .expect("poll");
        }
    })
    .await;
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev[3], (RebalanceEvent::Lost, all.clone()));
    assert_eq!(ev[4], (RebalanceEvent::Assigned, all));
    assert_eq!(
        lock(&coord).commits.len(),
        1,
        "lost partitions are not committed"
    );
    let _ = consumer
        .poll(Duration::from_millis(100))
        .await
        .expect("poll");
    assert_eq!(consumer.position("t", 0), Some(5));
}

#[tokio::test]
async fn cooperative_rebalance_revokes_only_what_moves_then_rejoins_at_once() {
    let coord: Coord = Arc::default();
    let (_view, broker) = broker_with_group(&coord).await;
    let mut consumer = consumer(&broker, group_config(&["cooperative-sticky"])).await;
    let events = record_events(&mut consumer);
    consumer.subscribe(&["t"]).expect("subscribe");
    poll_values(&mut consumer, 8).await;
    assert_eq!(consumer.assignment(), vec![tp("t", 0), tp("t", 1)]);

    // A rebalance whose leader keeps t/0 here and takes t/1 away (for another member).
    {
        let mut st = lock(&coord);
        st.heartbeat_errors
            .push_back(ResponseError::RebalanceInProgress.code());
        st.sync_overrides.push_back(vec![tp("t", 0)]);
    }
    bounded("second rejoin", async {
        while lock(&coord).joins.len() < 3 {
            consumer
                .poll(Duration::from_millis(50))
                .await
                .expect("poll");
        }
    })
    .await;
    let joins = lock(&coord).joins.clone();
    // The second join still owned both (cooperative members keep them through the join) ...
    assert_eq!(joins[1].owned_partitions, vec![tp("t", 0), tp("t", 1)]);
    assert_eq!(joins[1].generation, 1);
    // ... and the third, right after, owns only what it kept.
    assert_eq!(joins[2].owned_partitions, vec![tp("t", 0)]);
    let ev = events.lock().unwrap().clone();
    assert_eq!(
        ev[0],
        (RebalanceEvent::Assigned, vec![tp("t", 0), tp("t", 1)])
    );
    assert_eq!(ev[1], (RebalanceEvent::Revoked, vec![tp("t", 1)]));
    assert_eq!(ev[2], (RebalanceEvent::Assigned, vec![]));
    // Only the revoked partition's position was committed at revocation.
    let commits = lock(&coord).commits.clone();
    assert_eq!(commits[0].2, [(tp("t", 1), 3)].into_iter().collect());
}

#[tokio::test]
async fn a_coordinator_move_is_rediscovered_without_a_rejoin() {
    let coord: Coord = Arc::default();
    let (_view, broker) = broker_with_group(&coord).await;
    let mut consumer = consumer(&broker, group_config(&["range"])).await;
    consumer.subscribe(&["t"]).expect("subscribe");
    poll_values(&mut consumer, 8).await;
    let finds = broker.count(ApiKey::FindCoordinator);
    lock(&coord)
        .heartbeat_errors
        .push_back(ResponseError::NotCoordinator.code());
    bounded("rediscovered", async {
        while broker.count(ApiKey::FindCoordinator) == finds {
            consumer
                .poll(Duration::from_millis(50))
                .await
                .expect("poll");
        }
    })
    .await;
    let heartbeats = broker.count(ApiKey::Heartbeat);
    wait_until("heartbeats resume", || {
        broker.count(ApiKey::Heartbeat) > heartbeats + 1
    })
    .await;
    assert_eq!(broker.count(ApiKey::JoinGroup), 2, "no rejoin");
    assert_eq!(
        consumer.group_membership(),
        Some(("member-1".to_string(), 1))
    );
}

#[tokio::test]
async fn a_pattern_subscription_joins_with_the_matching_topics() {
    let coord: Coord = Arc::default();
    let (view, broker) = broker_with_group(&coord).await;
    view.set_topic("t-extra", &[1]);
    view.set_topic("other", &[1]);
    view.set_topic("__consumer_offsets", &[1]);
    let mut consumer = consumer(&broker, group_config(&["range"])).await;
    consumer.subscribe_pattern("t.*").expect("pattern");
    poll_values(&mut consumer, 8).await;
    assert_eq!(
        lock(&coord).joins[0].topics,
        vec!["t".to_string(), "t-extra".to_string()]
    );
    assert!(consumer.subscribe_pattern("(").is_err());
}

#[tokio::test]
async fn admin_lists_describes_and_reads_and_sets_group_offsets() {
    let coord: Coord = Arc::default();
    {
        let mut st = lock(&coord);
        st.member = "member-9".into();
        st.assignment = vec![tp("t", 0), tp("t", 1)];
        st.committed.insert(tp("t", 0), 4);
    }
    let (_view, broker) = broker_with_group(&coord).await;
    let cluster = Cluster::connect(client_config(&broker.bootstrap()))
        .await
        .expect("connect");
    let admin = Admin::new(cluster);

    let groups = bounded("list", admin.list_groups(&["Stable".to_string()]))
        .await
        .expect("list");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].group_id, GROUP);
    assert_eq!(groups[0].state.as_deref(), Some("Stable"));
    match &broker.requests_of(ApiKey::ListGroups)[0].request.body {
        Request::ListGroups(r) => assert_eq!(r.states_filter, vec![s("Stable")]),
        other => panic!("{other:?}"),
    }

    let d = bounded("describe", admin.describe_group(GROUP))
        .await
        .expect("describe");
    assert_eq!(d.state, "Stable");
    assert_eq!(d.protocol, "range");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id, "member-9");
    assert_eq!(d.members[0].assignment, vec![tp("t", 0), tp("t", 1)]);
    assert_eq!(d.members[0].subscribed_topics, vec!["t".to_string()]);

    let offsets = bounded("offsets", admin.list_group_offsets(GROUP))
        .await
        .expect("offsets");
    assert_eq!(offsets, [(tp("t", 0), 4)].into_iter().collect());

    let set: BTreeMap<Tp, i64> = [(tp("t", 0), 1), (tp("t", 1), 2)].into_iter().collect();
    bounded("alter", admin.alter_group_offsets(GROUP, &set))
        .await
        .expect("alter");
    let last = lock(&coord).commits.last().cloned().expect("a commit");
    assert_eq!(last, (-1, String::new(), set), "a simple commit");
}

#[tokio::test]
async fn join_errors_that_cannot_be_retried_reach_the_caller() {
    let view = View::new();
    view.set_topic("t", &[1]);
    let coord: Coord = Arc::default();
    let c = Arc::clone(&coord);
    let broker = FakeBroker::start(
        1,
        &view,
        Arc::new(move |call| {
            if call.api() == ApiKey::JoinGroup {
                let resp = JoinGroupResponse::default()
                    .with_error_code(ResponseError::InconsistentGroupProtocol.code())
                    .with_generation_id(-1);
                return Reply::Raw(call.frame(&resp));
            }
            coordinator_reply(&c, call)
        }),
    )
    .await;
    let mut consumer = consumer(&broker, group_config(&["range"])).await;
    consumer.subscribe(&["t"]).expect("subscribe");
    let err = bounded("poll", consumer.poll(Duration::from_millis(100)))
        .await
        .expect_err("inconsistent protocol");
    assert!(
        err.to_string().contains("InconsistentGroupProtocol"),
        "{err}"
    );
    // Bad settings are refused up front.
    let cluster = Cluster::connect(client_config(&broker.bootstrap()))
        .await
        .expect("connect");
    let mut bad = Consumer::new(
        cluster,
        ConsumerConfig {
            group: Some(group_config(&["sticky-ish"])),
            ..ConsumerConfig::default()
        },
    );
    let err = bad.subscribe(&["t"]).expect_err("unknown assignor");
    assert!(err.to_string().contains("sticky-ish"), "{err}");
}

#[tokio::test]
async fn a_static_member_sends_its_instance_id_and_does_not_leave_on_close() {
    let coord: Coord = Arc::default();
    let (_view, broker) = broker_with_group(&coord).await;
    let mut config = group_config(&["range"]);
    config.group_instance_id = Some("instance-1".to_string());
    let mut consumer = consumer(&broker, config).await;
    consumer.subscribe(&["t"]).expect("subscribe");
    poll_values(&mut consumer, 8).await;
    for join in broker.requests_of(ApiKey::JoinGroup) {
        match &join.request.body {
            Request::JoinGroup(r) => {
                assert_eq!(r.group_instance_id.as_deref(), Some("instance-1"))
            }
            other => panic!("{other:?}"),
        }
    }
    wait_until("a heartbeat", || broker.count(ApiKey::Heartbeat) >= 1).await;
    match &broker
        .requests_of(ApiKey::Heartbeat)
        .first()
        .map(|r| r.request.body.clone())
    {
        Some(Request::Heartbeat(h)) => {
            assert_eq!(h.group_instance_id.as_deref(), Some("instance-1"))
        }
        other => panic!("{other:?}"),
    }
    bounded("close", consumer.close()).await.expect("close");
    assert_eq!(
        broker.count(ApiKey::LeaveGroup),
        0,
        "static members keep their place"
    );
    assert_eq!(
        lock(&coord).commits.len(),
        1,
        "but their positions are committed"
    );
}

#[tokio::test]
async fn a_consumer_that_stops_polling_leaves_and_rejoins_on_its_next_poll() {
    let coord: Coord = Arc::default();
    let (_view, broker) = broker_with_group(&coord).await;
    let mut config = group_config(&["range"]);
    config.rebalance_timeout_ms = 300; // max.poll.interval.ms
    let mut consumer = consumer(&broker, config).await;
    let events = record_events(&mut consumer);
    consumer.subscribe(&["t"]).expect("subscribe");
    poll_values(&mut consumer, 8).await;

    // The application stalls: the heartbeat task leaves the group for it.
    wait_until("LeaveGroup", || broker.count(ApiKey::LeaveGroup) == 1).await;
    assert_eq!(lock(&coord).left, vec!["member-1".to_string()]);

    // The next poll reports the partitions lost and joins again.
    bounded("rejoin", async {
        while consumer.group_membership().map(|m| m.1) != Some(2) {
            consumer
                .poll(Duration::from_millis(50))
                .await
                .expect("poll");
        }
    })
    .await;
    let all = vec![tp("t", 0), tp("t", 1)];
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev[1], (RebalanceEvent::Lost, all.clone()));
    assert_eq!(ev[2], (RebalanceEvent::Assigned, all));
}
