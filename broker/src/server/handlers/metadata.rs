//! Metadata (key 3): the live brokers, the active controller, and topics with their partitions,
//! leaders, replicas and ISR, all from the metadata image this broker follows (every broker
//! answers alike once it has applied the same image). Unknown topics are auto-created when the request allows it (v4+; always before v4) and
//! `auto.create.topics.enable` is set, as Kafka does. `__consumer_offsets` is reported as internal.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::str_bytes;
use crate::controller::image::{MetadataImage, TopicImage};
use crate::controller::validate_topic_name;
use crate::error::BrokerError;
use crate::group::offsets;
use crate::node::{Node, CLIENT_LISTENER};

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

/// Answers from the image this broker follows; auto-creation (where allowed) commits first.
pub async fn handle(node: &Node, request: &MetadataRequest, version: i16) -> MetadataResponse {
    let auto_create = node.settings.topics.auto_create_enable
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
            let image = node.image();
            image.topics().map(|t| topic_entry(&image, t)).collect()
        }
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (name, id) in list {
                out.push(lookup(node, name, id, auto_create).await);
            }
            out
        }
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
    // The image after any auto-creation above.
    let image = node.image();
    let brokers = live_brokers(&image)
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id.0))
                .with_host(str_bytes(b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.map(str_bytes))
        })
        .collect();
    let response = MetadataResponse::default();
    // The cluster field exists in v8-v10 only (later versions moved it to DescribeCluster).
    let response = if request.include_cluster_authorized_operations && (8..=10).contains(&version) {
        response.with_cluster_authorized_operations(CLUSTER_OPERATIONS)
    } else {
        response
    };
    response
        .with_brokers(brokers)
        .with_cluster_id(image.cluster_id().map(str_bytes))
        .with_controller_id(BrokerId(controller_for_clients(node, &image).0))
        .with_topics(topics)
}

/// The controller id clients are told (Metadata, DescribeCluster): the active controller when it
/// is a live broker, else this broker. Clients send admin requests there, and every broker
/// forwards them to the quorum (Kafka's KRaft brokers answer a live broker too: clients cannot
/// reach a controller that is not a broker).
pub fn controller_for_clients(node: &Node, image: &MetadataImage) -> crate::ids::BrokerId {
    node.controller
        .active()
        .filter(|id| live_brokers(image).any(|b| b.id == *id))
        .unwrap_or(node.id)
}

/// A registered broker as clients are told of it.
pub struct ClientBroker {
    pub id: crate::ids::BrokerId,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    pub fenced: bool,
}

/// The registered brokers with a client endpoint, fenced ones only if asked for (DescribeCluster
/// v2 may ask).
pub fn client_brokers(
    image: &MetadataImage,
    include_fenced: bool,
) -> impl Iterator<Item = ClientBroker> + '_ {
    image
        .brokers()
        .values()
        .filter(move |b| include_fenced || !b.fenced)
        .filter_map(|b| {
            let e = b.endpoint(CLIENT_LISTENER)?;
            Some(ClientBroker {
                id: b.id,
                host: e.host.clone(),
                port: e.port,
                rack: b.rack.clone(),
                fenced: b.fenced,
            })
        })
}

/// The brokers clients may use: registered, not fenced, with a client endpoint.
pub fn live_brokers(image: &MetadataImage) -> impl Iterator<Item = ClientBroker> + '_ {
    client_brokers(image, false)
}

async fn lookup(
    node: &Node,
    name: Option<String>,
    id: Uuid,
    auto_create: bool,
) -> MetadataResponseTopic {
    let error = |code: i16, name: Option<String>| {
        MetadataResponseTopic::default()
            .with_error_code(code)
            .with_name(name.map(|n| TopicName(str_bytes(n))))
            .with_topic_id(id)
    };
    let Some(name) = name else {
        // By topic id (v10+).
        let image = node.image();
        return match image.topic(id) {
            Some(t) => topic_entry(&image, t),
            None => error(BrokerError::UnknownTopicId.code(), None),
        };
    };
    if let Err(e) = validate_topic_name(&name) {
        return error(BrokerError::InvalidTopic(e).code(), Some(name));
    }
    let image = node.image();
    if let Some(t) = image.topic_by_name(&name) {
        return topic_entry(&image, t);
    }
    if !auto_create {
        return error(BrokerError::UnknownTopicOrPartition.code(), Some(name));
    }
    match node.auto_create_topic(&name).await {
        Ok(()) => {
            let image = node.image();
            match image.topic_by_name(&name) {
                Some(t) => topic_entry(&image, t),
                // Deleted again at once.
                None => error(BrokerError::UnknownTopicOrPartition.code(), Some(name)),
            }
        }
        Err(e) => {
            tracing::warn!(topic = %name, error = %e, "auto-creation failed");
            error(e.code(), Some(name))
        }
    }
}

/// A topic as the image has it: each partition's leader (-1 and LEADER_NOT_AVAILABLE when it has
/// none, or its leader is fenced), leader epoch, replicas and ISR.
fn topic_entry(image: &MetadataImage, t: &TopicImage) -> MetadataResponseTopic {
    let ids = |list: &[crate::ids::BrokerId]| list.iter().map(|b| BrokerId(b.0)).collect();
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let leader = p
                .leader
                .filter(|l| image.broker(*l).is_some_and(|b| !b.fenced));
            let entry = MetadataResponsePartition::default()
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(leader.map_or(-1, |l| l.0)))
                .with_leader_epoch(p.leader_epoch.0)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr));
            if leader.is_none() {
                entry.with_error_code(BrokerError::LeaderNotAvailable.code())
            } else {
                entry
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(t.name.clone()))))
        .with_topic_id(t.id)
        .with_partitions(partitions)
}
