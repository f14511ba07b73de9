//! DescribeLogDirs (key 35): this broker's one log dir (its data dir) and, for each partition
//! replica it hosts, the bytes of its log's batches and its `offset_lag`: how far its log end is
//! behind the partition's high watermark as this broker knows it (0 on the leader; on a
//! follower, behind the leader's HW in its latest fetch answer).
//!
//! Invariants: only replicas hosted here are listed (asked-for partitions hosted elsewhere are
//! left out, as in Kafka); no topics asked (null) means every hosted replica; the answer is
//! sorted by topic and partition.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::str_bytes;
use crate::node::Node;
use crate::replica::Replica;

/// Kafka's value for volume sizes it does not report (`UNKNOWN_VOLUME_BYTES`).
const UNKNOWN_VOLUME_BYTES: i64 = -1;

pub fn handle(node: &Node, request: &DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let replicas: Vec<Arc<Replica>> = match &request.topics {
        None => node.replicas.all(),
        Some(topics) => topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter_map(|p| node.replicas.get(&t.topic, *p))
            })
            .collect(),
    };
    let mut by_topic: BTreeMap<String, BTreeMap<i32, DescribeLogDirsPartition>> = BTreeMap::new();
    for r in replicas {
        let partition = r.partition();
        let index = partition.id().0;
        let described = DescribeLogDirsPartition::default()
            .with_partition_index(index)
            .with_partition_size(i64::try_from(partition.size_bytes()).unwrap_or(i64::MAX))
            .with_offset_lag(r.offset_lag())
            .with_is_future_key(false);
        by_topic
            .entry(partition.topic().to_string())
            .or_default()
            .insert(index, described);
    }
    let topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            DescribeLogDirsTopic::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(partitions.into_values().collect())
        })
        .collect();
    let dir = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(node.data_dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(UNKNOWN_VOLUME_BYTES)
        .with_usable_bytes(UNKNOWN_VOLUME_BYTES);
    DescribeLogDirsResponse::default().with_results(vec![dir])
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, ProduceRequest, RequestHeader,
        TopicName,
    };
    use kafka_protocol::protocol::{Decodable, HeaderVersion};
    use strata_protocol::api::{supported_range, DecodedRequest, Request};
    use strata_protocol::record_batch::build_batch;

    use super::super::{dispatch, str_bytes};
    use crate::config::BrokerConfig;
    use crate::node::{Endpoint, Node};

    async fn call(node: &Arc<Node>, key: ApiKey, version: i16, body: Request) -> bytes::Bytes {
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        let request = DecodedRequest {
            header,
            api_key: key,
            body,
        };
        dispatch(node, request, None)
            .await
            .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"))
            .expect("a response")
    }

    fn describe(topics: Option<Vec<DescribableLogDirTopic>>) -> Request {
        Request::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(topics))
    }

    async fn decoded(node: &Arc<Node>, version: i16, body: Request) -> DescribeLogDirsResponse {
        let bytes = call(node, ApiKey::DescribeLogDirs, version, body).await;
        // Size and correlation id, then the header's tagged fields when flexible.
        let skip = 8 + usize::from(DescribeLogDirsResponse::header_version(version) >= 1);
        let mut body = bytes.slice(skip..);
        DescribeLogDirsResponse::decode(&mut body, version)
            .unwrap_or_else(|e| panic!("v{version}: {e}"))
    }

    /// An operator asks a single broker what it stores: its data dir, the topic's partition
    /// with the bytes written to it, and no lag (it leads everything); asking for a partition
    /// it does not host leaves that one out. At every advertised version.
    #[tokio::test]
    async fn a_single_broker_describes_its_log_dir_sizes_and_no_lag() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig::default();
        config.set("log.segment.bytes", "1048576").unwrap();
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port: 9092,
        };
        let (node, _) = Node::open(Arc::new(config), endpoint, dir.path())
            .await
            .unwrap();
        let node = Arc::new(node);
        node.auto_create_topic("t").await.unwrap();
        let batch = build_batch(0, 1_000, &[(None, b"a"), (None, b"b"), (None, b"c")]);
        let batch_bytes = batch.len() as i64;
        let produce = ProduceRequest::default().with_acks(1).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(str_bytes("t")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))]),
        ]);
        call(&node, ApiKey::Produce, 9, Request::Produce(produce)).await;

        let range = supported_range(ApiKey::DescribeLogDirs).unwrap();
        for v in range.min_version..=range.max_version {
            let all = decoded(&node, v, describe(None)).await;
            assert_eq!(all.error_code, 0, "v{v}");
            assert_eq!(all.results.len(), 1, "v{v}: one log dir");
            let result = &all.results[0];
            assert_eq!(result.log_dir.as_str(), dir.path().display().to_string());
            let t = result
                .topics
                .iter()
                .find(|t| t.name.0.as_str() == "t")
                .unwrap_or_else(|| panic!("v{v}: topic t is not described"));
            let got: Vec<_> = t
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.partition_size, p.offset_lag))
                .collect();
            assert_eq!(got, [(0, batch_bytes, 0)], "v{v}");

            let asked = describe(Some(vec![DescribableLogDirTopic::default()
                .with_topic(TopicName(str_bytes("t")))
                .with_partitions(vec![0, 7])]));
            let some = decoded(&node, v, asked).await;
            let topics: Vec<_> = some.results[0]
                .topics
                .iter()
                .map(|t| {
                    let ps: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
                    (t.name.0.to_string(), ps)
                })
                .collect();
            assert_eq!(topics, [("t".to_string(), vec![0])], "v{v}");
        }
    }
}
