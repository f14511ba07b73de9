//! DeleteGroups (key 42), v0-2: deletes Empty groups (and groups that only have offsets), writing
//! their tombstones; NON_EMPTY_GROUP while members remain, GROUP_ID_NOT_FOUND when unknown.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{encode, Pending};
use crate::error::BrokerError;
use crate::node::Node;

pub fn handle(
    node: &Arc<Node>,
    request: DeleteGroupsRequest,
    correlation_id: i32,
    version: i16,
) -> Pending {
    let node = Arc::clone(node);
    Box::pin(async move {
        let mut results = Vec::with_capacity(request.groups_names.len());
        for id in request.groups_names {
            let outcome = if id.0.is_empty() {
                Err(BrokerError::InvalidGroupId)
            } else if results
                .iter()
                .any(|r: &DeletableGroupResult| r.group_id == id)
            {
                Err(BrokerError::InvalidRequest("group named twice".into()))
            } else {
                node.groups.delete(id.0.as_str()).await
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(outcome.err().map_or(0, |e| e.code())),
            );
        }
        encode(
            correlation_id,
            version,
            &DeleteGroupsResponse::default().with_results(results),
        )
        .map(Some)
    })
}
