//! CreatePartitions (key 37): grows topics; counts never shrink.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{repeated_names, str_bytes};
use crate::error::BrokerError;
use crate::node::Node;

pub async fn handle(node: &Node, request: &CreatePartitionsRequest) -> CreatePartitionsResponse {
    let repeated = repeated_names(request.topics.iter().map(|t| &**t.name));
    let mut results = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        results.push({
            let assignments: Option<Vec<Vec<i32>>> = t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            let outcome = if repeated.contains(&**t.name) {
                Err(BrokerError::InvalidRequest(format!(
                    "topic '{}' appears more than once in the request",
                    &**t.name
                )))
            } else {
                node.create_partitions(
                    &t.name,
                    t.count,
                    assignments.as_deref(),
                    request.validate_only,
                )
                .await
            };
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            match outcome {
                Ok(()) => result,
                Err(e) => result
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.message()))),
            }
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
