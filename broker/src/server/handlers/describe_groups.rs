//! DescribeGroups (key 15), v0-5. A group the coordinator does not know is reported as Dead with
//! no error (as Kafka does), unless it has committed offsets: then Empty, protocol type
//! "consumer". Member metadata and assignments are shown only for a Stable group. v3+ include the
//! authorized operations when asked (no authorizer: everything a group supports). A group whose
//! `__consumer_offsets` partition this broker does not lead gets NOT_COORDINATOR.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::str_bytes;
use crate::error::BrokerError;
use crate::node::Node;

/// READ (3), DELETE (6), DESCRIBE (8): the operations Kafka's ACLs define on a group.
pub const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub fn handle(
    node: &Node,
    request: &DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let with_offsets = node.offsets.groups_with_offsets();
    let groups = request
        .groups
        .iter()
        .map(|id| {
            let g = DescribedGroup::default().with_group_id(id.clone());
            let g = if version >= 3 && request.include_authorized_operations {
                g.with_authorized_operations(GROUP_OPERATIONS)
            } else {
                g
            };
            if id.0.is_empty() {
                return g
                    .with_error_code(BrokerError::InvalidGroupId.code())
                    .with_group_state(str_bytes("Dead"));
            }
            if let Err(e) = node.offsets.coordinates(id.0.as_str()) {
                return g.with_error_code(e.code());
            }
            match node.groups.describe(id.0.as_str()) {
                Some(s) => g
                    .with_group_state(str_bytes(s.state.name()))
                    .with_protocol_type(str_bytes(s.protocol_type))
                    .with_protocol_data(str_bytes(s.protocol))
                    .with_members(
                        s.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(m.member_id))
                                    .with_group_instance_id(if version >= 4 {
                                        m.group_instance_id.map(str_bytes)
                                    } else {
                                        None
                                    })
                                    .with_client_id(str_bytes(m.client_id))
                                    .with_client_host(str_bytes(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
                None if with_offsets.iter().any(|o| *o == *id.0) => g
                    .with_group_state(str_bytes("Empty"))
                    .with_protocol_type(str_bytes("consumer")),
                None => g.with_group_state(str_bytes("Dead")),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
