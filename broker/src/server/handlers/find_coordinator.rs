//! FindCoordinator (key 10), v0-4. A group's coordinator (key type 0) is the leader of the
//! `__consumer_offsets` partition its id hashes to, as the image says (COORDINATOR_NOT_AVAILABLE
//! while it has no live leader). There
//! is no transaction coordinator yet: key type 1 gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED with a
//! message saying so, which librdkafka, kafka-python and the Java client treat as fatal, so
//! `init_transactions()` fails at once (COORDINATOR_NOT_AVAILABLE made them retry until their
//! timeout).
//! v4 batches keys (`coordinator_keys`); v0-3 ask for one `key`.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::str_bytes;
use crate::error::BrokerError;
use crate::group::offsets;
use crate::ids::PartitionId;
use crate::node::Node;

/// The coordinator of a group key; an error for anything else.
fn lookup(node: &Node, key_type: i8, key: &str) -> Result<(i32, String, i32), BrokerError> {
    match key_type {
        0 => {
            let image = node.image();
            let p = PartitionId(node.offsets.partition_for(key));
            let unavailable = || {
                BrokerError::CoordinatorNotAvailable(format!(
                    "{} partition {} has no live leader",
                    offsets::TOPIC,
                    p.0
                ))
            };
            let leader = image
                .topic_by_name(offsets::TOPIC)
                .and_then(|t| t.partition(p))
                .and_then(|p| p.leader)
                .ok_or_else(unavailable)?;
            let b = super::metadata::live_brokers(&image)
                .find(|b| b.id == leader)
                .ok_or_else(unavailable)?;
            Ok((b.id.0, b.host, i32::from(b.port)))
        }
        1 => Err(BrokerError::TransactionsUnsupported),
        other => Err(BrokerError::InvalidRequest(format!(
            "unknown coordinator key type {other}"
        ))),
    }
}

pub fn handle(
    node: &Node,
    request: &FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match lookup(node, request.key_type, key) {
                    Ok((id, host, port)) => c
                        .with_node_id(BrokerId(id))
                        .with_host(str_bytes(host))
                        .with_port(port),
                    Err(e) => c
                        .with_node_id(BrokerId(-1))
                        .with_host(str_bytes(""))
                        .with_port(-1)
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(e.message()))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let key_type = if version >= 1 { request.key_type } else { 0 };
    let response = FindCoordinatorResponse::default();
    match lookup(node, key_type, &request.key) {
        Ok((id, host, port)) => response
            .with_node_id(BrokerId(id))
            .with_host(str_bytes(host))
            .with_port(port)
            .with_error_message((version >= 1).then(|| str_bytes("NONE"))),
        Err(e) => response
            .with_node_id(BrokerId(-1))
            .with_host(str_bytes(""))
            .with_port(-1)
            .with_error_code(e.code())
            .with_error_message((version >= 1).then(|| str_bytes(e.message()))),
    }
}
