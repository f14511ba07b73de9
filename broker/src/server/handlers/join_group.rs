//! JoinGroup (key 11), v0-9. The answer comes when the group's rebalance completes (see
//! `group::state`). v0 has no rebalance timeout (the session timeout serves, as in Kafka); v4+
//! members get MEMBER_ID_REQUIRED with their id first (KIP-394); v5+ static members
//! (`group_instance_id`); v7+ answer the protocol type; v9 `skip_assignment` (KIP-814).

use std::sync::Arc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{encode, ready, str_bytes, Pending};
use crate::error::BrokerError;
use crate::group::state::{JoinReply, JoinRequest};
use crate::node::Node;

pub fn handle(
    node: &Arc<Node>,
    request: JoinGroupRequest,
    client_id: String,
    client_host: String,
    correlation_id: i32,
    version: i16,
) -> Pending {
    let group_id = request.group_id.0.to_string();
    if group_id.is_empty() {
        let reply = JoinReply::failed(BrokerError::InvalidGroupId, &request.member_id);
        return ready(correlation_id, version, &response(reply, version));
    }
    let req = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id,
        client_host,
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let node = Arc::clone(node);
    Box::pin(async move {
        let reply = node.groups.join(&group_id, req).await;
        encode(correlation_id, version, &response(reply, version)).map(Some)
    })
}

pub fn response(reply: JoinReply, version: i16) -> JoinGroupResponse {
    let error_code = reply.error.as_ref().map_or(0, BrokerError::code);
    // Before v7 the protocol name is not nullable.
    let protocol_name = match reply.protocol_name {
        None if version < 7 => Some(str_bytes("")),
        name => name.map(str_bytes),
    };
    // The state machine sets `skip_assignment` only for v9+ requests (older ones get another
    // leader id instead); the `version` test is a guard for the encoding.
    let members = reply.members;
    JoinGroupResponse::default()
        .with_error_code(error_code)
        .with_generation_id(reply.generation)
        .with_protocol_type(if version >= 7 {
            reply.protocol_type.map(str_bytes)
        } else {
            None
        })
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(reply.leader))
        .with_skip_assignment(version >= 9 && reply.skip_assignment)
        .with_member_id(str_bytes(reply.member_id))
        .with_members(
            members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(m.member_id))
                        .with_group_instance_id(if version >= 5 {
                            m.group_instance_id.map(str_bytes)
                        } else {
                            None
                        })
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}
