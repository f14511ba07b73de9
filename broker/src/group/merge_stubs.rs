//! STUB, REMOVED AT MERGE (issue 10). Stands in for the group coordinator's membership checks,
//! which another branch builds with these exact signatures, so the offset handlers compile and
//! can be tested alone. It allows every commit: simple commits (generation -1, no member id), as
//! the real coordinator does for unknown or empty groups, and, unlike it, any member's.

use crate::error::BrokerError;

#[derive(Debug, Default)]
pub struct GroupCoordinator;

impl GroupCoordinator {
    /// STUB: OffsetCommit's member and generation check. Always Ok here.
    pub fn check_commit(
        &self,
        _group_id: &str,
        _member_id: &str,
        _group_instance_id: Option<&str>,
        _generation_id: i32,
    ) -> Result<(), BrokerError> {
        Ok(())
    }

    /// STUB: OffsetDelete's check that no member subscribes to `topic`. Always Ok here.
    pub fn check_offset_delete(&self, _group_id: &str, _topic: &str) -> Result<(), BrokerError> {
        Ok(())
    }
}

/// STUB, REMOVED AT MERGE: FindCoordinator answering "this node" for every key, so that
/// clients (librdkafka, kafka-python) can commit and fetch offsets in this branch's tests. The
/// coordinator branch owns the real handler.
pub fn find_coordinator(
    node: &crate::node::Node,
    request: &kafka_protocol::messages::FindCoordinatorRequest,
    version: i16,
) -> kafka_protocol::messages::FindCoordinatorResponse {
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::{BrokerId, FindCoordinatorResponse};
    use kafka_protocol::protocol::StrBytes;
    let host = StrBytes::from_string(node.endpoint.host.clone());
    let port = i32::from(node.endpoint.port);
    let me = BrokerId(node.id.0);
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|k| {
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(me)
                    .with_host(host.clone())
                    .with_port(port)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default()
        .with_node_id(me)
        .with_host(host)
        .with_port(port)
}
