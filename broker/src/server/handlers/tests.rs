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

fn node(dir: &std::path::Path) -> Arc<Node> {
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
    let reply = dispatch(node, request(key, version, body)).await;
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
    let node = node(dir.path());
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
    let node = node(dir.path());
    node.auto_create_topic("t").unwrap();
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
    let node = node(dir.path());
    node.auto_create_topic("poll").unwrap();
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
    let node = node(dir.path());
    node.auto_create_topic("idle").unwrap();
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
    let node = node(dir.path());
    let topic = crate::node::NewTopic {
        name: "small-segments".into(),
        partitions: 1,
        replication_factor: 1,
        assignments: vec![],
        configs: vec![("segment.bytes".into(), "2048".into())],
    };
    node.create_topic(&topic).unwrap();
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
    let node = node(dir.path());
    node.auto_create_topic("ops").unwrap();
    let mut r = MetadataRequest::default()
        .with_include_topic_authorized_operations(true)
        .with_include_cluster_authorized_operations(true);
    r.topics = Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(name("ops")))
    ]);
    let resp = super::metadata::handle(&node, &r, 9);
    assert_eq!(resp.topics[0].topic_authorized_operations, 0b1101_1111_1000);
    assert_ne!(resp.cluster_authorized_operations, i32::MIN);
    let r = MetadataRequest::default();
    let resp = super::metadata::handle(&node, &r, 9);
    assert_eq!(
        resp.cluster_authorized_operations,
        i32::MIN,
        "not asked: not included"
    );
}

fn decode<R: kafka_protocol::protocol::Decodable>(bytes: Bytes, version: i16, flexible: bool) -> R {
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
    let resp: OffsetCommitResponse = decode(bytes, 8, true);
    resp.topics[0].partitions[0].error_code
}

#[tokio::test]
async fn a_committed_offset_is_fetched_back_and_bad_commits_get_kafkas_codes() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    node.auto_create_topic("orders").unwrap();
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
    let resp: OffsetFetchResponse = decode(bytes, 7, true);
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
    let resp: OffsetFetchResponse = decode(bytes, 8, true);
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
    let resp: OffsetDeleteResponse = decode(bytes, 0, false);
    assert_eq!(
        (resp.error_code, resp.topics[0].partitions[0].error_code),
        (0, 0)
    );
    assert_eq!(node.offsets.fetch("billing", "orders", 0), None);
}

#[tokio::test]
async fn the_offsets_topic_is_internal_and_clients_cannot_write_or_delete_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let mut all = MetadataRequest::default();
    all.topics = None;
    let resp = super::metadata::handle(&node, &all, 12);
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
    let resp: ProduceResponse = decode(bytes, 9, true);
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 17,
        "INVALID_TOPIC_EXCEPTION"
    );

    let r = DeleteTopicsRequest::default().with_topic_names(vec![name("__consumer_offsets")]);
    let bytes = answer(&node, ApiKey::DeleteTopics, 5, Request::DeleteTopics(r)).await;
    let resp: DeleteTopicsResponse = decode(bytes, 5, true);
    assert_eq!(resp.responses[0].error_code, 17);
    assert!(node.metadata().topic("__consumer_offsets").is_some());
}
