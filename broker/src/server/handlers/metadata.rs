//! Metadata (key 3): brokers (this node), and topics with their partitions, leaders, replicas and
//! ISR. Unknown topics are auto-created when the request allows it (v4+; always before v4) and
//! `auto.create.topics.enable` is set, as Kafka does. `__consumer_offsets` is reported as internal.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::str_bytes;
use crate::controller::{validate_topic_name, TopicMeta};
use crate::error::BrokerError;
use crate::group::offsets;
use crate::node::Node;

/// Without an authorizer every operation is allowed; Kafka reports the operations a resource
/// supports, as bit positions of `AclOperation` codes.
const fn acl_bits(ops: &[u8]) -> i32 {
    let mut bits = 0;
    let mut i = 0;
    while i < ops.len() {
        bits |= 1 << ops[i];
        i += 1;
    }
    bits
}
/// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub const TOPIC_OPERATIONS: i32 = acl_bits(&[3, 4, 5, 6, 7, 8, 10, 11]);
/// CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE,
/// CREATE_TOKENS, DESCRIBE_TOKENS.
pub const CLUSTER_OPERATIONS: i32 = acl_bits(&[5, 7, 8, 9, 10, 11, 12, 13, 14]);

pub fn handle(node: &Node, request: &MetadataRequest, version: i16) -> MetadataResponse {
    let auto_create = node.config.bool("auto.create.topics.enable")
        && (version < 4 || request.allow_auto_topic_creation);
    // v0: an empty list means every topic; v1+: null means every topic.
    let wanted: Option<Vec<(Option<String>, Uuid)>> = match &request.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(
            t.iter()
                .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id))
                .collect(),
        ),
        _ => None,
    };
    let topics: Vec<MetadataResponseTopic> = match wanted {
        None => {
            let metadata = node.metadata();
            metadata.topics().map(|t| topic_entry(node, t)).collect()
        }
        Some(list) => list
            .into_iter()
            .map(|(name, id)| lookup(node, name, id, auto_create))
            .collect(),
    };
    // `is_internal` exists from v1 on.
    let topics: Vec<MetadataResponseTopic> = if version >= 1 {
        topics
            .into_iter()
            .map(|t| {
                let internal = t.name.as_deref().is_some_and(|n| &**n == offsets::TOPIC);
                t.with_is_internal(internal)
            })
            .collect()
    } else {
        topics
    };
    let topics = if request.include_topic_authorized_operations && version >= 8 {
        topics
            .into_iter()
            .map(|t| {
                if t.error_code == 0 {
                    t.with_topic_authorized_operations(TOPIC_OPERATIONS)
                } else {
                    t
                }
            })
            .collect()
    } else {
        topics
    };
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(node.id.0))
        .with_host(str_bytes(node.endpoint.host.clone()))
        .with_port(i32::from(node.endpoint.port))
        .with_rack(node.rack.clone().map(str_bytes));
    let response = MetadataResponse::default();
    // The cluster field exists in v8-v10 only (later versions moved it to DescribeCluster).
    let response = if request.include_cluster_authorized_operations && (8..=10).contains(&version) {
        response.with_cluster_authorized_operations(CLUSTER_OPERATIONS)
    } else {
        response
    };
    response
        .with_brokers(vec![broker])
        .with_cluster_id(Some(str_bytes(node.metadata().cluster_id())))
        .with_controller_id(BrokerId(node.id.0))
        .with_topics(topics)
}

fn lookup(node: &Node, name: Option<String>, id: Uuid, auto_create: bool) -> MetadataResponseTopic {
    let error = |code: i16, name: Option<String>| {
        MetadataResponseTopic::default()
            .with_error_code(code)
            .with_name(name.map(|n| TopicName(str_bytes(n))))
            .with_topic_id(id)
    };
    let Some(name) = name else {
        // By topic id (v10+).
        let metadata = node.metadata();
        return match metadata.topic_by_id(id) {
            Some(t) => topic_entry(node, t),
            None => error(ResponseError::UnknownTopicId.code(), None),
        };
    };
    if let Err(e) = validate_topic_name(&name) {
        return error(BrokerError::InvalidTopic(e).code(), Some(name));
    }
    if let Some(t) = node.metadata().topic(&name).cloned() {
        return topic_entry(node, &t);
    }
    if !auto_create {
        return error(ResponseError::UnknownTopicOrPartition.code(), Some(name));
    }
    match node.auto_create_topic(&name) {
        Ok(t) => topic_entry(node, &t),
        Err(e) => {
            tracing::warn!(topic = %name, error = %e, "auto-creation failed");
            error(e.code(), Some(name))
        }
    }
}

fn topic_entry(node: &Node, t: &TopicMeta) -> MetadataResponseTopic {
    let me = BrokerId(node.id.0);
    let partitions = (0..t.partitions)
        .map(|p| {
            let epoch = node
                .partitions
                .partition(&t.name, p)
                .map(|p| p.leader_epoch().0)
                .unwrap_or(0);
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(me)
                .with_leader_epoch(epoch)
                .with_replica_nodes(vec![me])
                .with_isr_nodes(vec![me])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(t.name.clone()))))
        .with_topic_id(t.id)
        .with_partitions(partitions)
}
