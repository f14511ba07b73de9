//! CreateTopics (key 19): validated one topic at a time; each gets its own error code. v5+
//! answers carry the effective configuration, partition count and replication factor.

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{repeated_names, str_bytes};
use crate::config::{topic_value, TopicOverrides, TOPIC_KEYS};
use crate::error::BrokerError;
use crate::node::{NewTopic, Node};

/// Topics are created one after another, in request order; each is answered once committed and
/// applied on this broker.
pub async fn handle(
    node: &Node,
    request: &CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let repeated = repeated_names(request.topics.iter().map(|t| &**t.name));
    let mut results = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        results.push({
            let result = CreatableTopicResult::default().with_name(t.name.clone());
            let new = NewTopic {
                name: t.name.to_string(),
                partitions: t.num_partitions,
                replication_factor: t.replication_factor,
                assignments: t
                    .assignments
                    .iter()
                    .map(|a| {
                        (
                            a.partition_index,
                            a.broker_ids.iter().map(|b| b.0).collect(),
                        )
                    })
                    .collect(),
                configs: t
                    .configs
                    .iter()
                    .map(|c| {
                        (
                            c.name.to_string(),
                            c.value.as_deref().unwrap_or("").to_string(),
                        )
                    })
                    .collect(),
            };
            let outcome = if repeated.contains(&**t.name) {
                Err(BrokerError::InvalidRequest(format!(
                    "topic '{}' appears more than once in the request",
                    &**t.name
                )))
            } else if request.validate_only {
                node.check_new_topic(&node.image(), &new)
                    .map(|(created, _)| created)
            } else {
                node.create_topic(&new).await
            };
            match outcome {
                Ok(meta) => {
                    let result = result
                        .with_topic_id(meta.id)
                        .with_num_partitions(meta.partitions)
                        .with_replication_factor(meta.replication_factor);
                    if version >= 5 {
                        result.with_configs(Some(effective_configs(node, &meta.overrides)))
                    } else {
                        result
                    }
                }
                Err(e) => result
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.message())))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn effective_configs(node: &Node, overrides: &TopicOverrides) -> Vec<CreatableTopicConfigs> {
    TOPIC_KEYS
        .iter()
        .map(|k| {
            let (value, source) = topic_value(&node.config, overrides, k);
            CreatableTopicConfigs::default()
                .with_name(str_bytes(k.name))
                .with_value(Some(str_bytes(value)))
                .with_config_source(source.describe_code())
        })
        .collect()
}
