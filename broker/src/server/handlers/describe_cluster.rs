//! DescribeCluster (key 60): this node, as broker and controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::node::Node;

/// `endpoint_type` values (KIP-919): 1 brokers, 2 controllers.
const ENDPOINT_BROKERS: i8 = 1;

pub fn handle(node: &Node, request: &DescribeClusterRequest) -> DescribeClusterResponse {
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(node.metadata().cluster_id()))
        .with_controller_id(BrokerId(node.id.0));
    if request.endpoint_type != ENDPOINT_BROKERS {
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes(
                "only broker endpoints (endpoint_type 1) are served",
            )));
    }
    let broker = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(node.id.0))
        .with_host(str_bytes(node.endpoint.host.clone()))
        .with_port(i32::from(node.endpoint.port))
        .with_rack(node.rack.clone().map(str_bytes));
    let response = response.with_brokers(vec![broker]);
    if request.include_cluster_authorized_operations {
        response.with_cluster_authorized_operations(super::metadata::CLUSTER_OPERATIONS)
    } else {
        response
    }
}
