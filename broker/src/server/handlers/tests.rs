//! Every handler's answer encodes at every version `ApiVersions` advertises, for requests that
//! succeed and requests that fail; and the data path works through the handlers end to end.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strata_protocol::api::{supported_range, DecodedRequest, Request};
use strata_protocol::record_batch::build_batch;

use super::dispatch;
use crate::config::BrokerConfig;
use crate::node::{Endpoint, Node};

async fn node(dir: &std::path::Path) -> Arc<Node> {
    let mut config = BrokerConfig::default();
    config.set("log.segment.bytes", "1048576").unwrap();
    let (node, _) = Node::open(
        Arc::new(config),
        Endpoint {
            host: "127.0.0.1".into(),
            port: 9092,
        },
        dir,
    )
    .await
    .unwrap();
    Arc::new(node)
}

fn request(key: ApiKey, version: i16, body: Request) -> DecodedRequest {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = 9;
    DecodedRequest {
        header,
        api_key: key,
        body,
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn answer(node: &Arc<Node>, key: ApiKey, version: i16, body: Request) -> Bytes {
    let reply = dispatch(node, request(key, version, body), None).await;
    let bytes = reply
        .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"))
        .expect("a response");
    assert_eq!(
        &bytes[4..8],
        &9i32.to_be_bytes(),
        "{key:?} v{version}: correlation id"
    );
    bytes
}

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let r = supported_range(key).unwrap();
    r.min_version..=r.max_version
}

#[tokio::test]
async fn every_handler_answers_at_every_advertised_version() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    for v in versions(ApiKey::ApiVersions) {
        let r = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("test"))
            .with_client_software_version(StrBytes::from_static_str("1.0"));
        answer(&node, ApiKey::ApiVersions, v, Request::ApiVersions(r)).await;
    }
    for v in versions(ApiKey::CreateTopics) {
        let t = format!("created-{v}");
        let topic = create_topics_request::CreatableTopic::default()
            .with_name(name(&t))
            .with_num_partitions(2)
            .with_replication_factor(1);
        let bad = create_topics_request::CreatableTopic::default()
            .with_name(name("bad name"))
            .with_num_partitions(1)
            .with_replication_factor(3);
        let r = CreateTopicsRequest::default().with_topics(vec![topic, bad]);
        answer(&node, ApiKey::CreateTopics, v, Request::CreateTopics(r)).await;
    }
    for v in versions(ApiKey::Metadata) {
        let mut r = MetadataRequest::default()
            .with_allow_auto_topic_creation(true)
            .with_include_topic_authorized_operations(v >= 8)
            .with_include_cluster_authorized_operations((8..=10).contains(&v));
        r.topics = Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(name("auto"))),
            metadata_request::MetadataRequestTopic::default().with_name(Some(name("bad/name"))),
        ]);
        answer(&node, ApiKey::Metadata, v, Request::Metadata(r)).await;
        answer(
            &node,
            ApiKey::Metadata,
            v,
            Request::Metadata(MetadataRequest::default()),
        )
        .await;
    }
    let batch = build_batch(0, 1_000, &[(Some(b"k"), b"v")]);
    for v in versions(ApiKey::Produce) {
        let data = vec![
            produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.clone())),
            produce_request::PartitionProduceData::default()
                .with_index(7)
                .with_records(Some(batch.clone())),
        ];
        let r = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(name("auto"))
                .with_partition_data(data)]);
        answer(&node, ApiKey::Produce, v, Request::Produce(r)).await;
    }
    for v in versions(ApiKey::Fetch) {
        let parts = vec![
            fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20),
            fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(99)
                .with_partition_max_bytes(1 << 20),
        ];
        let r = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(name("auto"))
                .with_partitions(parts)]);
        answer(&node, ApiKey::Fetch, v, Request::Fetch(r)).await;
    }
    for v in versions(ApiKey::ListOffsets) {
        let parts = [-2i64, -1, 0, 5_000]
            .iter()
            .map(|ts| {
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(*ts)
            })
            .collect();
        let r = ListOffsetsRequest::default().with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(name("auto"))
                .with_partitions(parts),
        ]);
        answer(&node, ApiKey::ListOffsets, v, Request::ListOffsets(r)).await;
    }
    for v in versions(ApiKey::DescribeConfigs) {
        let resources = vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("auto")),
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("1")),
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("missing")),
        ];
        let r = DescribeConfigsRequest::default()
            .with_resources(resources)
            .with_include_synonyms(v >= 1)
            .with_include_documentation(v >= 3);
        answer(
            &node,
            ApiKey::DescribeConfigs,
            v,
            Request::DescribeConfigs(r),
        )
        .await;
    }
    for v in versions(ApiKey::CreatePartitions) {
        let topics = vec![create_partitions_request::CreatePartitionsTopic::default()
            .with_name(name("auto"))
            .with_count(2 + i32::from(v))];
        let r = CreatePartitionsRequest::default().with_topics(topics);
        answer(
            &node,
            ApiKey::CreatePartitions,
            v,
            Request::CreatePartitions(r),
        )
        .await;
    }
    for v in versions(ApiKey::DescribeCluster) {
        answer(
            &node,
            ApiKey::DescribeCluster,
            v,
            Request::DescribeCluster(DescribeClusterRequest::default()),
        )
        .await;
    }
    for v in versions(ApiKey::OffsetCommit) {
        let parts = vec![
            offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(5)
                .with_committed_leader_epoch(if v >= 6 { 0 } else { -1 })
                .with_committed_metadata(Some(StrBytes::from_static_str("m"))),
            offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(99)
                .with_committed_offset(5),
        ];
        let r = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(name("auto"))
                    .with_partitions(parts),
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(name("missing")),
            ]);
        answer(&node, ApiKey::OffsetCommit, v, Request::OffsetCommit(r)).await;
    }
    for v in versions(ApiKey::OffsetFetch) {
        let topics = vec![offset_fetch_request::OffsetFetchRequestTopic::default()
            .with_name(name("auto"))
            .with_partition_indexes(vec![0, 1, 99])];
        let r = if v >= 8 {
            OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("g")))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(name("auto"))
                            .with_partition_indexes(vec![0, 1]),
                    ])),
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("g")))
                    .with_topics(None),
            ])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_topics(Some(topics))
        };
        answer(&node, ApiKey::OffsetFetch, v, Request::OffsetFetch(r)).await;
        if (2..8).contains(&v) {
            let all = OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_topics(None);
            answer(&node, ApiKey::OffsetFetch, v, Request::OffsetFetch(all)).await;
        }
    }
    for v in versions(ApiKey::OffsetDelete) {
        let r = OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(name("auto"))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(0),
                    ]),
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(name("missing"))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(0),
                    ]),
            ]);
        answer(&node, ApiKey::OffsetDelete, v, Request::OffsetDelete(r)).await;
    }
    for v in versions(ApiKey::DeleteTopics) {
        let t = format!("created-{}", v + 1);
        let r = if v >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                delete_topics_request::DeleteTopicState::default().with_name(Some(name(&t))),
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name(&t), name("never-existed")])
        };
        answer(&node, ApiKey::DeleteTopics, v, Request::DeleteTopics(r)).await;
    }
}

#[tokio::test]
async fn a_corrupt_batch_is_refused_and_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    node.auto_create_topic("t").await.unwrap();
    let mut bad = build_batch(0, 1_000, &[(None, b"value")]).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    let data = vec![produce_request::PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(Bytes::from(bad)))];
    let r = ProduceRequest::default().with_acks(1).with_topic_data(vec![
        produce_request::TopicProduceData::default()
            .with_name(name("t"))
            .with_partition_data(data),
    ]);
    let bytes = answer(&node, ApiKey::Produce, 9, Request::Produce(r)).await;
    let mut body = bytes.slice(9..); // size, correlation id, empty tagged fields
    let resp =
        <ProduceResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 9).unwrap();
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 2,
        "CORRUPT_MESSAGE"
    );
    assert_eq!(
        node.partitions
            .partition("t", 0)
            .unwrap()
            .high_watermark()
            .0,
        0
    );
}

fn fetch_request(topic: &str, offset: i64, min_bytes: i32, max_wait_ms: i32) -> Request {
    let parts = vec![fetch_request::FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(1 << 20)];
    Request::Fetch(
        FetchRequest::default()
            .with_min_bytes(min_bytes)
            .with_max_wait_ms(max_wait_ms)
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(parts)]),
    )
}

fn fetched_bytes(mut response: Bytes) -> usize {
    let mut body = response.split_off(9); // size, correlation id, tagged fields (v12 is flexible)
    let resp =
        <FetchResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 12).unwrap();
    resp.responses[0].partitions[0]
        .records
        .as_ref()
        .map_or(0, Bytes::len)
}

#[tokio::test]
async fn a_long_polling_fetch_is_woken_by_an_append_not_by_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    node.auto_create_topic("poll").await.unwrap();
    let started = std::time::Instant::now();
    let waiting = tokio::spawn({
        let node = Arc::clone(&node);
        async move {
            answer(
                &node,
                ApiKey::Fetch,
                12,
                fetch_request("poll", 0, 1, 20_000),
            )
            .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the fetch must wait for min_bytes");
    let partition = node.partitions.partition("poll", 0).unwrap();
    partition
        .append(&build_batch(0, 1_000, &[(None, b"wake up")]), 1_000)
        .unwrap();
    let response = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(fetched_bytes(response) > 0);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "woken by the append, not the 20 s max_wait"
    );
}

#[tokio::test]
async fn a_fetch_with_nothing_to_read_returns_empty_after_max_wait() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    node.auto_create_topic("idle").await.unwrap();
    let started = std::time::Instant::now();
    let response = answer(&node, ApiKey::Fetch, 12, fetch_request("idle", 0, 1, 300)).await;
    let waited = started.elapsed();
    assert_eq!(fetched_bytes(response), 0);
    assert!(
        waited >= std::time::Duration::from_millis(290),
        "returned after {waited:?}"
    );
    assert!(
        waited < std::time::Duration::from_secs(5),
        "returned after {waited:?}"
    );
}

#[tokio::test]
async fn a_record_set_larger_than_a_segment_is_refused_as_kafka_does() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let topic = crate::node::NewTopic {
        name: "small-segments".into(),
        partitions: 1,
        replication_factor: 1,
        assignments: vec![],
        configs: vec![("segment.bytes".into(), "2048".into())],
    };
    node.create_topic(&topic).await.unwrap();
    let big = vec![b'x'; 3000];
    let batch = build_batch(0, 1_000, &[(None, &big)]);
    let partition = node.partitions.partition("small-segments", 0).unwrap();
    let err = partition.append(&batch, 1_000).unwrap_err();
    assert_eq!(err.code(), 18, "RECORD_LIST_TOO_LARGE: {err}");
    assert_eq!(partition.high_watermark().0, 0);
    partition
        .append(&build_batch(0, 1_000, &[(None, b"small")]), 1_000)
        .unwrap();
}

#[tokio::test]
async fn authorized_operations_are_reported_as_kafka_does_without_an_authorizer() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    node.auto_create_topic("ops").await.unwrap();
    let mut r = MetadataRequest::default()
        .with_include_topic_authorized_operations(true)
        .with_include_cluster_authorized_operations(true);
    r.topics = Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(name("ops")))
    ]);
    let resp = super::metadata::handle(&node, &r, 9).await;
    assert_eq!(resp.topics[0].topic_authorized_operations, 0b1101_1111_1000);
    assert_ne!(resp.cluster_authorized_operations, i32::MIN);
    let r = MetadataRequest::default();
    let resp = super::metadata::handle(&node, &r, 9).await;
    assert_eq!(
        resp.cluster_authorized_operations,
        i32::MIN,
        "not asked: not included"
    );
}

/// An idempotent (not transactional) producer's request: no transactional id.
fn idempotent() -> InitProducerIdRequest {
    InitProducerIdRequest::default().with_transactional_id(None)
}

/// Sends InitProducerId at `version` and decodes the answer.
async fn init_producer_id(
    node: &Arc<Node>,
    version: i16,
    r: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut bytes = answer(
        node,
        ApiKey::InitProducerId,
        version,
        Request::InitProducerId(r),
    )
    .await;
    // Size and correlation id, plus the tagged fields of the flexible header from v2.
    let mut body = bytes.split_off(if version >= 2 { 9 } else { 8 });
    <InitProducerIdResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, version)
        .unwrap()
}

#[tokio::test]
async fn init_producer_id_hands_out_new_ids_bumps_epochs_and_refuses_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let mut seen = std::collections::HashSet::new();
    for v in versions(ApiKey::InitProducerId) {
        let r = init_producer_id(&node, v, idempotent()).await;
        assert_eq!(r.error_code, 0, "v{v}");
        assert_eq!(r.producer_epoch, 0, "v{v}");
        assert!(seen.insert(r.producer_id.0), "v{v}: a fresh id every time");

        let txn = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))))
            .with_transaction_timeout_ms(60_000);
        let r = init_producer_id(&node, v, txn).await;
        assert_eq!(r.error_code, 42, "v{v}: transactions get INVALID_REQUEST");
    }
    for v in 3..=4 {
        let first = init_producer_id(&node, v, idempotent()).await;
        let bump = idempotent()
            .with_producer_id(first.producer_id)
            .with_producer_epoch(first.producer_epoch);
        let r = init_producer_id(&node, v, bump).await;
        assert_eq!(
            (r.producer_id, r.producer_epoch),
            (first.producer_id, 1),
            "v{v}: bumped"
        );
        let overflow = idempotent()
            .with_producer_id(first.producer_id)
            .with_producer_epoch(i16::MAX - 1);
        let r = init_producer_id(&node, v, overflow).await;
        assert_ne!(
            r.producer_id, first.producer_id,
            "v{v}: epoch overflow gives a new id"
        );
        assert_eq!(r.producer_epoch, 0);
        let half = idempotent().with_producer_id(first.producer_id);
        let r = init_producer_id(&node, v, half).await;
        assert_eq!(r.error_code, 42, "v{v}: an id without an epoch");
    }
    // Ids are never reused after a restart.
    node.controller.shutdown().await;
    drop(node);
    let node = super::tests::node(dir.path()).await;
    let r = init_producer_id(&node, 4, idempotent()).await;
    assert!(seen.iter().all(|id| *id < r.producer_id.0));
}

/// Decodes a response body (after size, correlation id and, for flexible versions, the header's
/// empty tagged fields).
fn decode<R>(bytes: &Bytes, version: i16) -> R
where
    R: kafka_protocol::protocol::Decodable + kafka_protocol::protocol::HeaderVersion,
{
    let skip = 8 + usize::from(R::header_version(version) >= 1);
    let mut body = bytes.slice(skip..);
    R::decode(&mut body, version).unwrap_or_else(|e| panic!("v{version}: {e}"))
}

fn group(s: &str) -> GroupId {
    GroupId(StrBytes::from_string(s.to_string()))
}

fn range_protocol() -> Vec<join_group_request::JoinGroupRequestProtocol> {
    vec![join_group_request::JoinGroupRequestProtocol::default()
        .with_name(StrBytes::from_static_str("range"))
        .with_metadata(Bytes::from_static(b"\x00\x01\x00\x00\x00\x00"))]
}

/// Joins `group_id` at JoinGroup `version` (doing the member-id round trip where the version
/// has it); returns (member id, generation).
async fn join_at(
    node: &Arc<Node>,
    group_id: &str,
    version: i16,
    instance: Option<&str>,
) -> (String, i32) {
    let mut member_id = String::new();
    for _ in 0..2 {
        let r = JoinGroupRequest::default()
            .with_group_id(group(group_id))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(if version >= 1 { 10_000 } else { -1 })
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_group_instance_id(instance.map(|i| StrBytes::from_string(i.into())))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(range_protocol());
        let bytes = answer(node, ApiKey::JoinGroup, version, Request::JoinGroup(r)).await;
        let resp: JoinGroupResponse = decode(&bytes, version);
        member_id = resp.member_id.to_string();
        match resp.error_code {
            79 => continue,
            0 => return (member_id, resp.generation_id),
            other => panic!("JoinGroup v{version}: error {other}"),
        }
    }
    panic!("JoinGroup v{version}: still MEMBER_ID_REQUIRED after the round trip")
}

#[tokio::test]
async fn every_group_handler_answers_at_every_advertised_version() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    for v in versions(ApiKey::FindCoordinator) {
        for key_type in [0i8, 1] {
            let r = if v >= 4 {
                FindCoordinatorRequest::default()
                    .with_key_type(key_type)
                    .with_coordinator_keys(vec![StrBytes::from_static_str("g")])
            } else {
                FindCoordinatorRequest::default()
                    .with_key(StrBytes::from_static_str("g"))
                    .with_key_type(if v >= 1 { key_type } else { 0 })
            };
            let bytes = answer(
                &node,
                ApiKey::FindCoordinator,
                v,
                Request::FindCoordinator(r),
            )
            .await;
            let resp: FindCoordinatorResponse = decode(&bytes, v);
            let (code, id) = if v >= 4 {
                (
                    resp.coordinators[0].error_code,
                    resp.coordinators[0].node_id.0,
                )
            } else {
                (resp.error_code, resp.node_id.0)
            };
            if key_type == 0 || v == 0 {
                assert_eq!((code, id), (0, 1), "v{v}: this node coordinates groups");
            } else {
                assert_eq!(
                    code, 53,
                    "v{v}: no transaction coordinator, fatal for clients"
                );
            }
        }
    }
    for v in versions(ApiKey::JoinGroup) {
        let g = format!("join-{v}");
        // Static membership from v5; the round trip from v4 (dynamic members).
        let instance = (v >= 5).then_some("instance-a");
        let (member, generation) = join_at(&node, &g, v, instance).await;
        assert_eq!(generation, 1, "v{v}");
        let sv = v.min(5);
        let r = SyncGroupRequest::default()
            .with_group_id(group(&g))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member.clone()))
            .with_group_instance_id(if sv >= 3 {
                instance.map(|i| StrBytes::from_string(i.into()))
            } else {
                None
            })
            .with_protocol_type((sv >= 5).then(|| StrBytes::from_static_str("consumer")))
            .with_protocol_name((sv >= 5).then(|| StrBytes::from_static_str("range")))
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member.clone()))
                    .with_assignment(Bytes::from_static(b"assigned")),
            ]);
        let bytes = answer(&node, ApiKey::SyncGroup, sv, Request::SyncGroup(r)).await;
        let resp: SyncGroupResponse = decode(&bytes, sv);
        assert_eq!(
            (resp.error_code, &resp.assignment[..]),
            (0, &b"assigned"[..]),
            "SyncGroup v{sv}"
        );
        let hv = v.min(4);
        let r = HeartbeatRequest::default()
            .with_group_id(group(&g))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member.clone()));
        let bytes = answer(&node, ApiKey::Heartbeat, hv, Request::Heartbeat(r)).await;
        assert_eq!(
            decode::<HeartbeatResponse>(&bytes, hv).error_code,
            0,
            "Heartbeat v{hv}"
        );
        let bad = HeartbeatRequest::default()
            .with_group_id(group(&g))
            .with_generation_id(generation + 7)
            .with_member_id(StrBytes::from_string(member.clone()));
        let bytes = answer(&node, ApiKey::Heartbeat, hv, Request::Heartbeat(bad)).await;
        assert_eq!(
            decode::<HeartbeatResponse>(&bytes, hv).error_code,
            22,
            "Heartbeat v{hv}"
        );
    }
    // An empty group id is refused by every membership API.
    for v in versions(ApiKey::JoinGroup) {
        let r = JoinGroupRequest::default()
            .with_session_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(range_protocol());
        let bytes = answer(&node, ApiKey::JoinGroup, v, Request::JoinGroup(r)).await;
        assert_eq!(
            decode::<JoinGroupResponse>(&bytes, v).error_code,
            24,
            "INVALID_GROUP_ID v{v}"
        );
    }
    for v in versions(ApiKey::DescribeGroups) {
        let r = DescribeGroupsRequest::default()
            .with_groups(vec![group("join-9"), group("never-existed"), group("")])
            .with_include_authorized_operations(v >= 3);
        let bytes = answer(&node, ApiKey::DescribeGroups, v, Request::DescribeGroups(r)).await;
        let resp: DescribeGroupsResponse = decode(&bytes, v);
        assert_eq!(resp.groups[0].group_state.as_str(), "Stable", "v{v}");
        assert_eq!(resp.groups[0].members.len(), 1, "v{v}");
        assert_eq!(
            &resp.groups[0].members[0].member_assignment[..],
            b"assigned"
        );
        assert_eq!(resp.groups[1].group_state.as_str(), "Dead", "v{v}");
        assert_eq!(resp.groups[2].error_code, 24, "v{v}");
    }
    for v in versions(ApiKey::ListGroups) {
        let r = ListGroupsRequest::default()
            .with_states_filter(if v >= 4 {
                vec![StrBytes::from_static_str("stable")]
            } else {
                vec![]
            })
            .with_types_filter(if v >= 5 {
                vec![StrBytes::from_static_str("classic")]
            } else {
                vec![]
            });
        let bytes = answer(&node, ApiKey::ListGroups, v, Request::ListGroups(r)).await;
        let resp: ListGroupsResponse = decode(&bytes, v);
        assert_eq!(resp.groups.len(), 10, "v{v}: every join-N group is Stable");
    }
    // Leave every group (v3+ by instance id for the static members), then delete them.
    for v in versions(ApiKey::LeaveGroup) {
        let g = format!("join-{v}");
        let r = if v >= 3 {
            let who = leave_group_request::MemberIdentity::default()
                .with_group_instance_id((v >= 5).then(|| StrBytes::from_static_str("instance-a")));
            let who = if v >= 5 {
                who
            } else {
                let member = node.groups.describe(&g).unwrap().members[0]
                    .member_id
                    .clone();
                who.with_member_id(StrBytes::from_string(member))
            };
            LeaveGroupRequest::default()
                .with_group_id(group(&g))
                .with_members(vec![
                    who,
                    leave_group_request::MemberIdentity::default()
                        .with_member_id(StrBytes::from_static_str("nobody")),
                ])
        } else {
            let member = node.groups.describe(&g).unwrap().members[0]
                .member_id
                .clone();
            LeaveGroupRequest::default()
                .with_group_id(group(&g))
                .with_member_id(StrBytes::from_string(member))
        };
        let bytes = answer(&node, ApiKey::LeaveGroup, v, Request::LeaveGroup(r)).await;
        let resp: LeaveGroupResponse = decode(&bytes, v);
        if v >= 3 {
            let codes: Vec<i16> = resp.members.iter().map(|m| m.error_code).collect();
            assert_eq!(codes, vec![0, 25], "LeaveGroup v{v}");
        } else {
            assert_eq!(resp.error_code, 0, "LeaveGroup v{v}");
        }
        assert_eq!(
            node.groups.describe(&g).unwrap().state.name(),
            "Empty",
            "v{v}"
        );
    }
    for v in versions(ApiKey::DeleteGroups) {
        let r = DeleteGroupsRequest::default().with_groups_names(vec![
            group(&format!("join-{v}")),
            group("join-9"),
            group("never-existed"),
        ]);
        let bytes = answer(&node, ApiKey::DeleteGroups, v, Request::DeleteGroups(r)).await;
        let resp: DeleteGroupsResponse = decode(&bytes, v);
        let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
        assert_eq!(codes[0], 0, "DeleteGroups v{v}: an Empty group");
        assert_eq!(codes[1], 68, "DeleteGroups v{v}: NON_EMPTY_GROUP");
        assert_eq!(codes[2], 69, "DeleteGroups v{v}: GROUP_ID_NOT_FOUND");
    }
}

fn decode_flexible<R: kafka_protocol::protocol::Decodable>(
    bytes: Bytes,
    version: i16,
    flexible: bool,
) -> R {
    // size, correlation id, and the response header's tagged fields when flexible.
    let mut body = bytes.slice(if flexible { 9 } else { 8 }..);
    R::decode(&mut body, version).unwrap()
}

fn commit_request(
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    metadata: &str,
) -> Request {
    Request::OffsetCommit(
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.into())))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(2)
                            .with_committed_metadata(Some(StrBytes::from_string(metadata.into()))),
                    ]),
            ]),
    )
}

async fn commit_code(node: &Arc<Node>, request: Request) -> i16 {
    let bytes = answer(node, ApiKey::OffsetCommit, 8, request).await;
    let resp: OffsetCommitResponse = decode_flexible(bytes, 8, true);
    resp.topics[0].partitions[0].error_code
}

#[tokio::test]
async fn a_committed_offset_is_fetched_back_and_bad_commits_get_kafkas_codes() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    node.auto_create_topic("orders").await.unwrap();
    assert_eq!(
        commit_code(&node, commit_request("billing", "orders", 0, 42, "note")).await,
        0
    );
    assert_eq!(
        commit_code(&node, commit_request("billing", "nowhere", 0, 1, "")).await,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        commit_code(&node, commit_request("billing", "orders", 5, 1, "")).await,
        3,
        "no partition 5"
    );
    let big = "x".repeat(4097);
    assert_eq!(
        commit_code(&node, commit_request("billing", "orders", 0, 99, &big)).await,
        12,
        "OFFSET_METADATA_TOO_LARGE"
    );

    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("billing")))
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(name("orders"))
                .with_partition_indexes(vec![0]),
        ]));
    let bytes = answer(&node, ApiKey::OffsetFetch, 7, Request::OffsetFetch(fetch)).await;
    let resp: OffsetFetchResponse = decode_flexible(bytes, 7, true);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(
        (p.committed_offset, p.committed_leader_epoch),
        (42, 2),
        "the refused commit changed nothing"
    );
    assert_eq!(
        p.metadata.as_deref().map(|m| m.to_string()),
        Some("note".to_string())
    );

    let all = OffsetFetchRequest::default().with_groups(vec![
        offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_static_str("billing")))
            .with_topics(None),
        offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_static_str("nobody")))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopics::default()
                    .with_name(name("orders"))
                    .with_partition_indexes(vec![0]),
            ])),
    ]);
    let bytes = answer(&node, ApiKey::OffsetFetch, 8, Request::OffsetFetch(all)).await;
    let resp: OffsetFetchResponse = decode_flexible(bytes, 8, true);
    assert_eq!(resp.groups[0].topics[0].partitions[0].committed_offset, 42);
    let none = &resp.groups[1].topics[0].partitions[0];
    assert_eq!(
        (
            none.committed_offset,
            none.metadata.as_deref().map(|m| m.len())
        ),
        (-1, Some(0))
    );

    let delete = OffsetDeleteRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("billing")))
        .with_topics(vec![
            offset_delete_request::OffsetDeleteRequestTopic::default()
                .with_name(name("orders"))
                .with_partitions(vec![
                    offset_delete_request::OffsetDeleteRequestPartition::default()
                        .with_partition_index(0),
                ]),
        ]);
    let bytes = answer(
        &node,
        ApiKey::OffsetDelete,
        0,
        Request::OffsetDelete(delete),
    )
    .await;
    let resp: OffsetDeleteResponse = decode_flexible(bytes, 0, false);
    assert_eq!(
        (resp.error_code, resp.topics[0].partitions[0].error_code),
        (0, 0)
    );
    assert_eq!(node.offsets.fetch("billing", "orders", 0), None);
}

#[tokio::test]
async fn the_offsets_topic_is_internal_and_clients_cannot_write_or_delete_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let mut all = MetadataRequest::default();
    all.topics = None;
    let resp = super::metadata::handle(&node, &all, 12).await;
    let internal: Vec<_> = resp
        .topics
        .iter()
        .filter(|t| t.is_internal)
        .map(|t| t.name.as_deref().map(|n| n.to_string()))
        .collect();
    assert_eq!(internal, vec![Some("__consumer_offsets".to_string())]);

    let data = vec![produce_request::PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(build_batch(0, 1_000, &[(None, b"forged")])))];
    let r = ProduceRequest::default().with_acks(1).with_topic_data(vec![
        produce_request::TopicProduceData::default()
            .with_name(name("__consumer_offsets"))
            .with_partition_data(data),
    ]);
    let bytes = answer(&node, ApiKey::Produce, 9, Request::Produce(r)).await;
    let resp: ProduceResponse = decode_flexible(bytes, 9, true);
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 17,
        "INVALID_TOPIC_EXCEPTION"
    );

    let r = DeleteTopicsRequest::default().with_topic_names(vec![name("__consumer_offsets")]);
    let bytes = answer(&node, ApiKey::DeleteTopics, 5, Request::DeleteTopics(r)).await;
    let resp: DeleteTopicsResponse = decode_flexible(bytes, 5, true);
    assert_eq!(resp.responses[0].error_code, 17);
    assert!(node.image().topic_by_name("__consumer_offsets").is_some());
}

fn fetch_offset(group: &str, topic: &str, partition: i32) -> Request {
    Request::OffsetFetch(
        OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.into())))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(name(topic))
                    .with_partition_indexes(vec![partition]),
            ])),
    )
}

async fn fetched_offset(node: &Arc<Node>, group: &str, topic: &str, partition: i32) -> i64 {
    let bytes = answer(
        node,
        ApiKey::OffsetFetch,
        7,
        fetch_offset(group, topic, partition),
    )
    .await;
    let resp: OffsetFetchResponse = decode_flexible(bytes, 7, true);
    resp.topics[0].partitions[0].committed_offset
}

#[tokio::test]
async fn deleting_a_topic_deletes_every_groups_offsets_on_it_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    node.auto_create_topic("orders").await.unwrap();
    node.auto_create_topic("keep").await.unwrap();
    for (group, topic, offset) in [("billing", "orders", 42), ("billing", "keep", 7)] {
        let code = commit_code(&node, commit_request(group, topic, 0, offset, "")).await;
        assert_eq!(code, 0, "{group} commits {topic}");
    }
    assert_eq!(
        commit_code(&node, commit_request("audit", "orders", 0, 5, "")).await,
        0
    );

    let r = DeleteTopicsRequest::default().with_topic_names(vec![name("orders")]);
    let bytes = answer(&node, ApiKey::DeleteTopics, 5, Request::DeleteTopics(r)).await;
    let resp: DeleteTopicsResponse = decode_flexible(bytes, 5, true);
    assert_eq!(resp.responses[0].error_code, 0);

    // Gone for every group at once; the other topic's offsets are untouched.
    assert_eq!(fetched_offset(&node, "billing", "orders", 0).await, -1);
    assert_eq!(fetched_offset(&node, "audit", "orders", 0).await, -1);
    assert_eq!(fetched_offset(&node, "billing", "keep", 0).await, 7);
    assert!(!node.offsets.has_offsets("audit"), "audit had only orders");

    // The answer came once the tombstones were on disk: a restart does not bring them back,
    // and a topic created again under the name starts with no committed offsets.
    node.controller.shutdown().await;
    drop(node);
    let node = node_reloaded(dir.path()).await;
    assert_eq!(node.offsets.fetch("billing", "orders", 0), None);
    assert_eq!(node.offsets.fetch("audit", "orders", 0), None);
    assert_eq!(
        node.offsets.fetch("billing", "keep", 0).map(|c| c.offset),
        Some(7)
    );
    node.auto_create_topic("orders").await.unwrap();
    assert_eq!(fetched_offset(&node, "billing", "orders", 0).await, -1);
}

/// A node opened again on `dir`, its committed offsets loaded as start-up does.
async fn node_reloaded(dir: &std::path::Path) -> Arc<Node> {
    let node = node(dir).await;
    node.offsets.load().unwrap();
    node
}

#[tokio::test]
async fn delete_groups_reports_a_tombstone_it_could_not_write() {
    let dir = tempfile::tempdir().unwrap();
    // Batches of __consumer_offsets are limited to 700 bytes: the tombstones of the commits
    // below take several (which is fine); the write fails because the partition is closed.
    let mut config = BrokerConfig::default();
    config.set("message.max.bytes", "700").unwrap();
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: 9092,
    };
    let (node, _) = Node::open(Arc::new(config), endpoint, dir.path())
        .await
        .unwrap();
    let node = Arc::new(node);
    node.offsets.load().unwrap();
    node.create_topic(&crate::node::NewTopic {
        name: "orders".into(),
        partitions: 30,
        replication_factor: -1,
        assignments: vec![],
        configs: vec![],
    })
    .await
    .unwrap();

    // A real group (not only offsets): joined, then left, so it is Empty and deletable.
    let (member, _) = join_at(&node, "billing", 5, None).await;
    let r = LeaveGroupRequest::default()
        .with_group_id(group("billing"))
        .with_member_id(StrBytes::from_string(member));
    let bytes = answer(&node, ApiKey::LeaveGroup, 0, Request::LeaveGroup(r)).await;
    assert_eq!(decode::<LeaveGroupResponse>(&bytes, 0).error_code, 0);
    assert_eq!(
        node.groups.describe("billing").unwrap().state.name(),
        "Empty"
    );
    for p in 0..30 {
        let code = commit_code(&node, commit_request("billing", "orders", p, 1, "")).await;
        assert_eq!(code, 0, "commit of partition {p}");
    }

    // The partition of __consumer_offsets that holds the group can take no more writes.
    let holder = node.offsets.partition_for("billing");
    node.partitions
        .partition(crate::group::offsets::TOPIC, holder)
        .unwrap()
        .close()
        .unwrap();
    let r = DeleteGroupsRequest::default().with_groups_names(vec![group("billing")]);
    let bytes = answer(&node, ApiKey::DeleteGroups, 2, Request::DeleteGroups(r)).await;
    let resp: DeleteGroupsResponse = decode_flexible(bytes, 2, true);
    // NOT_COORDINATOR (a closed partition is not led here) or COORDINATOR_NOT_AVAILABLE:
    // either way a retriable failure, not a group reported deleted that a restart brings back.
    assert!(
        [15, 16].contains(&resp.results[0].error_code),
        "got {}: the group would come back after a restart",
        resp.results[0].error_code
    );
    assert_eq!(
        fetched_offset(&node, "billing", "orders", 29).await,
        1,
        "nothing was deleted, in memory as on disk"
    );
}

#[tokio::test]
async fn a_restarted_static_leader_learns_it_leads_only_where_it_can_skip_the_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    for v in [5i16, 9] {
        let g = format!("static-{v}");
        let (old_id, generation) = join_at(&node, &g, v, Some("pod-1")).await;
        let r = SyncGroupRequest::default()
            .with_group_id(group(&g))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(old_id.clone()))
            .with_group_instance_id(Some(StrBytes::from_static_str("pod-1")));
        let bytes = answer(&node, ApiKey::SyncGroup, 3, Request::SyncGroup(r)).await;
        assert_eq!(decode::<SyncGroupResponse>(&bytes, 3).error_code, 0);

        // The leader's process restarts: no member id, same instance id, group Stable.
        let r = JoinGroupRequest::default()
            .with_group_id(group(&g))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_group_instance_id(Some(StrBytes::from_static_str("pod-1")))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(range_protocol());
        let bytes = answer(&node, ApiKey::JoinGroup, v, Request::JoinGroup(r)).await;
        let resp: JoinGroupResponse = decode(&bytes, v);
        assert_eq!(resp.error_code, 0, "v{v}");
        assert_eq!(resp.generation_id, generation, "v{v}: no rebalance");
        if v >= 9 {
            assert_eq!(resp.leader, resp.member_id, "v9: it leads");
            assert!(resp.skip_assignment, "v9: but must not assign");
            assert_eq!(resp.members.len(), 1);
        } else {
            assert_eq!(resp.leader.as_str(), old_id, "v{v}: its old id is named");
            assert_ne!(resp.leader, resp.member_id, "v{v}: so it does not assign");
            assert!(resp.members.is_empty());
        }
    }
}

#[tokio::test]
async fn a_commit_for_a_group_id_longer_than_a_stored_string_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    node.auto_create_topic("orders").await.unwrap();
    let long = "g".repeat(40_000);
    assert_eq!(
        commit_code(&node, commit_request(&long, "orders", 0, 1, "")).await,
        24,
        "INVALID_GROUP_ID"
    );
    assert!(node.offsets.group_offsets(&long).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_racing_delete_topics_never_leaves_a_live_offset_of_the_deleted_topic() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    // Each round: a commit and the topic's deletion at once. The commit either lands first
    // (answered 0, then tombstoned with the topic's offsets) or finds the topic gone (3).
    for round in 0..20 {
        let topic = format!("orders-{round}");
        node.auto_create_topic(&topic).await.unwrap();
        let committer = Arc::clone(&node);
        let name = topic.clone();
        let commit = tokio::spawn(async move {
            commit_code(&committer, commit_request("billing", &name, 0, 7, "")).await
        });
        let deleter = Arc::clone(&node);
        let name = topic.clone();
        let delete = tokio::spawn(async move { deleter.delete_topic(&name).await.is_ok() });
        let code = commit.await.unwrap();
        assert!(delete.await.unwrap());
        assert!(
            [0, 3].contains(&code),
            "round {round}: commit answered {code}"
        );
        assert!(
            node.offsets
                .group_offsets("billing")
                .iter()
                .all(|(t, _, _)| *t != topic),
            "round {round}: a live offset of the deleted topic {topic}"
        );
    }
    node.controller.shutdown().await;
    drop(node);
    let node = node_reloaded(dir.path()).await;
    assert!(node.offsets.group_offsets("billing").is_empty());
}

/// Refusals whose codes are chosen in `error.rs` answer as they always did: DescribeConfigs of
/// a missing topic, of another broker and of an unknown resource type; ApiVersions from a client
/// with a malformed software name, and at a version the broker does not know.
#[tokio::test]
async fn refused_describe_configs_and_api_versions_keep_their_codes_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let resource = |kind: i8, name: &'static str| {
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(StrBytes::from_static_str(name))
    };
    let r = DescribeConfigsRequest::default().with_resources(vec![
        resource(2, "missing"),
        resource(4, "2"),
        resource(7, "x"),
    ]);
    let bytes = answer(
        &node,
        ApiKey::DescribeConfigs,
        4,
        Request::DescribeConfigs(r),
    )
    .await;
    let resp: DescribeConfigsResponse = decode(&bytes, 4);
    let refusals: Vec<(i16, String)> = resp
        .results
        .iter()
        .map(|r| {
            let message = r.error_message.as_deref().unwrap_or_default();
            (r.error_code, message.to_string())
        })
        .collect();
    assert_eq!(
        refusals,
        vec![
            (3, "unknown topic 'missing'".to_string()),
            (42, "this is broker 1, not '2'".to_string()),
            (
                42,
                "resource type 7 is not supported; use 2 (topic) or 4 (broker)".to_string()
            ),
        ]
    );

    let bad_name = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("-bad"))
        .with_client_software_version(StrBytes::from_static_str("1.0"));
    let bytes = answer(
        &node,
        ApiKey::ApiVersions,
        3,
        Request::ApiVersions(bad_name),
    )
    .await;
    let resp: ApiVersionsResponse = decode(&bytes, 3);
    assert_eq!(resp.error_code, 42, "INVALID_REQUEST");

    let bytes = super::api_versions::unsupported_version(9)
        .await
        .unwrap()
        .unwrap();
    let resp: ApiVersionsResponse = decode(&bytes, 0);
    assert_eq!(resp.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(
        !resp.api_keys.is_empty(),
        "with the ranges the client may pick from"
    );
}

/// A topic may ask for `min.insync.replicas` above 1 (replication honours it); 0 is refused
/// with INVALID_CONFIG, validated or created, and nothing is created.
#[tokio::test]
async fn a_topic_may_ask_for_min_insync_replicas_above_one_but_not_zero() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let topic = |name: &str, min_insync: &'static str| {
        create_topics_request::CreatableTopic::default()
            .with_name(self::name(name))
            .with_num_partitions(1)
            .with_replication_factor(-1)
            .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("min.insync.replicas"))
                .with_value(Some(StrBytes::from_static_str(min_insync)))])
    };
    for validate_only in [true, false] {
        let r = CreateTopicsRequest::default()
            .with_topics(vec![topic("none", "0"), topic("safe", "2")])
            .with_validate_only(validate_only);
        let bytes = answer(&node, ApiKey::CreateTopics, 7, Request::CreateTopics(r)).await;
        let resp: CreateTopicsResponse = decode(&bytes, 7);
        let refused = &resp.topics[0];
        assert_eq!(refused.error_code, 40, "INVALID_CONFIG");
        let message = refused.error_message.as_deref().unwrap_or_default();
        assert!(message.contains("min.insync.replicas"), "{message}");
        assert_eq!(
            resp.topics[1].error_code, 0,
            "min.insync.replicas=2 is fine"
        );
    }
    assert!(node.image().topic_by_name("none").is_none());
    let safe = node.image().topic_by_name("safe").unwrap().overrides();
    assert_eq!(
        safe.0.get("min.insync.replicas").map(String::as_str),
        Some("2")
    );
}

fn offset_for_leader_epoch(topic: &str, partitions: &[(i32, i32, i32)]) -> Request {
    let partitions = partitions
        .iter()
        .map(|&(partition, current, epoch)| {
            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(current)
                .with_leader_epoch(epoch)
        })
        .collect();
    Request::OffsetForLeaderEpoch(
        OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(name(topic))
                    .with_partitions(partitions),
            ]),
    )
}

/// A consumer holding a position from leader epoch 0 asks where epoch 0 ends: at the log end,
/// since 0 is the latest. An epoch above every known one, or a current epoch from the future, or
/// a partition that is not there, get Kafka's answers; at every advertised version.
#[tokio::test]
async fn offset_for_leader_epoch_answers_where_an_epoch_ends() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    node.auto_create_topic("t").await.unwrap();
    let batch = build_batch(0, 1_000, &[(None, b"a"), (None, b"b"), (None, b"c")]);
    let r = ProduceRequest::default().with_acks(1).with_topic_data(vec![
        produce_request::TopicProduceData::default()
            .with_name(name("t"))
            .with_partition_data(vec![produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))]),
    ]);
    answer(&node, ApiKey::Produce, 9, Request::Produce(r)).await;

    for v in versions(ApiKey::OffsetForLeaderEpoch) {
        // (partition, current leader epoch, requested epoch)
        let request = offset_for_leader_epoch(
            "t",
            &[(0, -1, 0), (0, 0, 0), (0, -1, 4), (0, 5, 0), (9, -1, 0)],
        );
        let bytes = answer(&node, ApiKey::OffsetForLeaderEpoch, v, request).await;
        let resp: OffsetForLeaderEpochResponse = decode(&bytes, v);
        let got: Vec<_> = resp.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition, p.error_code, p.leader_epoch, p.end_offset))
            .collect();
        assert_eq!(
            got,
            [
                (0, 0, 0, 3),
                (0, 0, 0, 3),
                (0, 0, -1, -1),  // above the latest: UNDEFINED
                (0, 75, -1, -1), // UNKNOWN_LEADER_EPOCH
                (9, 3, -1, -1),  // UNKNOWN_TOPIC_OR_PARTITION
            ],
            "v{v}"
        );
        let bytes = answer(
            &node,
            ApiKey::OffsetForLeaderEpoch,
            v,
            offset_for_leader_epoch("missing", &[(0, -1, 0)]),
        )
        .await;
        let resp: OffsetForLeaderEpochResponse = decode(&bytes, v);
        assert_eq!(resp.topics[0].partitions[0].error_code, 3, "v{v}");
    }

    // The partition loses its leader: this broker still hosts it but may not answer for it.
    let topic = node.image().topic_by_name("t").unwrap().id;
    let mut change =
        crate::controller::records::PartitionChange::new(topic, crate::ids::PartitionId(0));
    change.leader = Some(None);
    node.controller
        .propose(
            &[crate::controller::records::MetadataRecord::PartitionChange(
                change,
            )],
        )
        .await
        .unwrap();
    let bytes = answer(
        &node,
        ApiKey::OffsetForLeaderEpoch,
        4,
        offset_for_leader_epoch("t", &[(0, -1, 0)]),
    )
    .await;
    let resp: OffsetForLeaderEpochResponse = decode(&bytes, 4);
    assert_eq!(
        resp.topics[0].partitions[0].error_code, 6,
        "NOT_LEADER_OR_FOLLOWER"
    );
}
