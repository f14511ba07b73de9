//! LeaveGroup (key 13), v0-5. v0-2 name one member; v3+ a batch of members, each by member id
//! or by group instance id (KIP-345), each with its own result.

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{encode, ready, str_bytes, Pending};
use crate::error::BrokerError;
use crate::node::Node;

pub fn handle(
    node: &Arc<Node>,
    request: LeaveGroupRequest,
    correlation_id: i32,
    version: i16,
) -> Pending {
    let group_id = request.group_id.0.to_string();
    if group_id.is_empty() {
        let r = LeaveGroupResponse::default().with_error_code(BrokerError::InvalidGroupId.code());
        return ready(correlation_id, version, &r);
    }
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let node = Arc::clone(node);
    Box::pin(async move {
        let results = node.groups.leave(&group_id, members.clone()).await;
        let response = if version >= 3 {
            LeaveGroupResponse::default().with_members(
                members
                    .into_iter()
                    .zip(results)
                    .map(|((member_id, instance), r)| {
                        MemberResponse::default()
                            .with_member_id(str_bytes(member_id))
                            .with_group_instance_id(instance.map(str_bytes))
                            .with_error_code(r.err().map_or(0, |e| e.code()))
                    })
                    .collect(),
            )
        } else {
            let code = results
                .into_iter()
                .next()
                .and_then(Result::err)
                .map_or(0, |e| e.code());
            LeaveGroupResponse::default().with_error_code(code)
        };
        encode(correlation_id, version, &response).map(Some)
    })
}
