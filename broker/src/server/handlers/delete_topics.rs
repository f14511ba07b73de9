//! DeleteTopics (key 20): by name (v1-5 `topic_names`, v6 `topics`) or by topic id (v6).
//! Deleting a topic also deletes the committed offsets of every group on it; the answer waits
//! until those tombstones are on disk, so a deleted topic's offsets never come back.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use std::sync::Arc;

use uuid::Uuid;

use super::{encode, str_bytes, Pending};
use crate::error::BrokerError;
use crate::group::offsets::Durable;
use crate::node::Node;

pub fn handle(
    node: &Arc<Node>,
    request: DeleteTopicsRequest,
    correlation_id: i32,
    version: i16,
) -> Pending {
    let node = Arc::clone(node);
    Box::pin(async move {
        let mut written = Vec::new();
        let response = delete(&node, &request, version, &mut written).await;
        for durable in written {
            durable.wait().await;
        }
        encode(correlation_id, version, &response).map(Some)
    })
}

/// Deletes the topics in request order; the offset tombstones they wrote go to `written`.
async fn delete(
    node: &Node,
    request: &DeleteTopicsRequest,
    version: i16,
    written: &mut Vec<Durable>,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| (Some(n.to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        responses.push({
            // By id (v6): that topic, even if the name has been taken since.
            let by_id = (!id.is_nil()).then(|| node.image().topic(id).map(|t| t.name.clone()));
            let name = name.or_else(|| by_id.clone().flatten());
            let result = DeletableTopicResult::default()
                .with_name(name.clone().map(|n| TopicName(str_bytes(n))))
                .with_topic_id(id);
            let deleted = match (&name, by_id) {
                (_, Some(None)) | (None, _) => None,
                (Some(name), Some(Some(_))) => Some(node.delete_topic_id(name, id).await),
                (Some(name), None) => Some(node.delete_topic(name).await),
            };
            match deleted {
                None => result.with_error_code(BrokerError::UnknownTopicId.code()),
                Some(deleted) => match deleted {
                    Ok((id, durable)) => {
                        written.push(durable);
                        result.with_topic_id(id)
                    }
                    Err(e) => result
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(e.message()))),
                },
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
