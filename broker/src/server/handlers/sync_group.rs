//! SyncGroup (key 14), v0-5. The leader sends every member's assignment; each member gets its
//! own. Followers wait until the leader's arrives. v3+ static members; v5 checks the protocol
//! type and name against the group's (INCONSISTENT_GROUP_PROTOCOL) and answers them.

use std::sync::Arc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{encode, ready, str_bytes, Pending};
use crate::error::BrokerError;
use crate::group::state::{SyncReply, SyncRequest};
use crate::node::Node;

pub fn handle(
    node: &Arc<Node>,
    request: SyncGroupRequest,
    correlation_id: i32,
    version: i16,
) -> Pending {
    let group_id = request.group_id.0.to_string();
    if group_id.is_empty() {
        let reply = SyncReply::failed(BrokerError::InvalidGroupId);
        return ready(correlation_id, version, &response(reply, version));
    }
    let req = SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        generation: request.generation_id,
        protocol_type: request.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: request.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let node = Arc::clone(node);
    Box::pin(async move {
        let reply = node.groups.sync(&group_id, req).await;
        encode(correlation_id, version, &response(reply, version)).map(Some)
    })
}

pub fn response(reply: SyncReply, version: i16) -> SyncGroupResponse {
    let r = SyncGroupResponse::default()
        .with_error_code(reply.error.as_ref().map_or(0, BrokerError::code))
        .with_assignment(reply.assignment);
    if version >= 5 {
        r.with_protocol_type(reply.protocol_type.map(str_bytes))
            .with_protocol_name(reply.protocol_name.map(str_bytes))
    } else {
        r
    }
}
