//! One handler per Kafka API. Each turns a decoded request into a [`Pending`] response: the
//! synchronous work happens in `dispatch` (in request order), the waiting in the future.

pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_quorum;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use strata_protocol::api::{encode_response, DecodedRequest, Request};

use crate::node::Node;

/// A response still to come: `Ok(None)` sends nothing (acks=0), `Err` closes the connection.
pub type Pending = Pin<Box<dyn Future<Output = Result<Option<Bytes>, String>> + Send>>;

/// Encodes a response that is ready now.
pub fn ready<R: Encodable + HeaderVersion>(correlation_id: i32, version: i16, body: &R) -> Pending {
    let encoded = encode(correlation_id, version, body).map(Some);
    Box::pin(std::future::ready(encoded))
}

/// A response its handler computes later, waiting (on the controller quorum, say).
pub fn later<R, F>(
    correlation_id: i32,
    version: i16,
    node: &Arc<Node>,
    handler: impl FnOnce(Arc<Node>) -> F,
) -> Pending
where
    R: Encodable + HeaderVersion,
    F: Future<Output = R> + Send + 'static,
{
    let answer = handler(Arc::clone(node));
    Box::pin(async move { encode(correlation_id, version, &answer.await).map(Some) })
}

pub fn encode<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Bytes, String> {
    encode_response(correlation_id, version, body).map_err(|e| {
        tracing::error!(error = %e, "response encoding failed");
        e.to_string()
    })
}

/// Names that appear more than once in one request (Kafka answers each with INVALID_REQUEST).
pub fn repeated_names<'a>(
    names: impl Iterator<Item = &'a str>,
) -> std::collections::HashSet<&'a str> {
    let mut seen = std::collections::HashSet::new();
    names.filter(|n| !seen.insert(*n)).collect()
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Routes a request to its handler. `peer` is the client's address, where known (group members
/// report it as their host, as Kafka does).
pub fn dispatch(node: &Arc<Node>, request: DecodedRequest, peer: Option<IpAddr>) -> Pending {
    let (cid, v) = (request.correlation_id(), request.version());
    match request.body {
        Request::ApiVersions(r) => ready(cid, v, &api_versions::handle(&r, v)),
        Request::Metadata(r) => later(cid, v, node, |node| async move {
            metadata::handle(&node, &r, v).await
        }),
        Request::Produce(r) => produce::handle(node, r, cid, v),
        Request::Fetch(r) => fetch::handle(node, r, cid, v),
        Request::ListOffsets(r) => ready(cid, v, &list_offsets::handle(node, &r, v)),
        Request::CreateTopics(r) => later(cid, v, node, |node| async move {
            create_topics::handle(&node, &r, v).await
        }),
        Request::DeleteTopics(r) => delete_topics::handle(node, r, cid, v),
        Request::CreatePartitions(r) => later(cid, v, node, |node| async move {
            create_partitions::handle(&node, &r).await
        }),
        Request::DescribeConfigs(r) => ready(cid, v, &describe_configs::handle(node, &r, v)),
        Request::DescribeCluster(r) => ready(cid, v, &describe_cluster::handle(node, &r)),
        Request::DescribeQuorum(r) => ready(cid, v, &describe_quorum::handle(node, &r)),
        Request::InitProducerId(r) => later(cid, v, node, |node| async move {
            init_producer_id::handle(&node, &r).await
        }),
        Request::FindCoordinator(r) => ready(cid, v, &find_coordinator::handle(node, &r, v)),
        Request::JoinGroup(r) => {
            let client_id = request
                .header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            // Kafka's form: "/" and the address.
            let client_host = peer.map(|ip| format!("/{ip}")).unwrap_or_default();
            join_group::handle(node, r, client_id, client_host, cid, v)
        }
        Request::SyncGroup(r) => sync_group::handle(node, r, cid, v),
        Request::Heartbeat(r) => ready(cid, v, &heartbeat::handle(node, &r)),
        Request::LeaveGroup(r) => leave_group::handle(node, r, cid, v),
        Request::ListGroups(r) => ready(cid, v, &list_groups::handle(node, &r, v)),
        Request::DescribeGroups(r) => ready(cid, v, &describe_groups::handle(node, &r, v)),
        Request::DeleteGroups(r) => delete_groups::handle(node, r, cid, v),
        Request::OffsetCommit(r) => offset_commit::handle(node, r, cid, v),
        Request::OffsetFetch(r) => ready(cid, v, &offset_fetch::handle(node, &r, v)),
        Request::OffsetDelete(r) => offset_delete::handle(node, r, cid, v),
        Request::OffsetForLeaderEpoch(r) => {
            ready(cid, v, &offset_for_leader_epoch::handle(node, &r))
        }
        Request::DescribeLogDirs(r) => ready(cid, v, &describe_log_dirs::handle(node, &r)),
    }
}

#[cfg(test)]
mod tests;
