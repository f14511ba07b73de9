//! Heartbeat (key 12), v0-4: keeps a member's session; REBALANCE_IN_PROGRESS tells it to rejoin.
//! Touches only its group's lock.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::error::BrokerError;
use crate::node::Node;

pub fn handle(node: &Arc<Node>, request: &HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.0.as_str();
    let result = if group_id.is_empty() {
        Err(BrokerError::InvalidGroupId)
    } else {
        node.groups.heartbeat(
            group_id,
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation_id,
        )
    };
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| e.code()))
}
