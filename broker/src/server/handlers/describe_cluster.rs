//! DescribeCluster (key 60): the live brokers and the active controller, from the image (the
//! same brokers Metadata lists).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::error::BrokerError;
use crate::node::Node;

/// `endpoint_type` values (KIP-919): 1 brokers, 2 controllers.
const ENDPOINT_BROKERS: i8 = 1;

pub fn handle(node: &Node, request: &DescribeClusterRequest) -> DescribeClusterResponse {
    let image = node.image();
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(image.cluster_id().unwrap_or_default()))
        .with_controller_id(BrokerId(
            super::metadata::controller_for_clients(node, &image).0,
        ));
    if request.endpoint_type != ENDPOINT_BROKERS {
        return response
            .with_error_code(BrokerError::UnsupportedEndpointType(String::new()).code())
            .with_error_message(Some(str_bytes(
                "only broker endpoints (endpoint_type 1) are served",
            )));
    }
    // v2 (KIP-1073) may ask for the fenced brokers too, each marked.
    let brokers = super::metadata::client_brokers(&image, request.include_fenced_brokers)
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id.0))
                .with_host(str_bytes(b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.map(str_bytes))
                .with_is_fenced(b.fenced)
        })
        .collect();
    let response = response.with_brokers(brokers);
    if request.include_cluster_authorized_operations {
        response.with_cluster_authorized_operations(super::metadata::CLUSTER_OPERATIONS)
    } else {
        response
    }
}
