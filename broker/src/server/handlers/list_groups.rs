//! ListGroups (key 16), v0-5: every group the coordinator knows, plus groups that only have
//! committed offsets (Empty, protocol type "consumer", as Kafka lists them). v4 filters by state
//! (case-insensitive), v5 by group type ("classic" for all of these).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::node::Node;

pub fn handle(node: &Node, request: &ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let mut groups: Vec<(String, String, String)> = node
        .groups
        .list()
        .into_iter()
        .map(|(id, state, ptype)| (id, state.name().to_string(), ptype))
        .collect();
    for id in node.offsets.groups_with_offsets() {
        if !groups.iter().any(|(g, _, _)| *g == id) {
            groups.push((id, "Empty".into(), "consumer".into()));
        }
    }
    groups.sort();
    let states = if version >= 4 {
        &request.states_filter[..]
    } else {
        &[]
    };
    let types = if version >= 5 {
        &request.types_filter[..]
    } else {
        &[]
    };
    let listed = groups
        .into_iter()
        .filter(|(_, state, _)| {
            states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(state))
        })
        .filter(|_| types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case("classic")))
        .map(|(id, state, ptype)| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(ptype));
            let g = if version >= 4 {
                g.with_group_state(str_bytes(state))
            } else {
                g
            };
            if version >= 5 {
                g.with_group_type(str_bytes("classic"))
            } else {
                g
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}
