//! DescribeConfigs (key 32): a topic's effective configuration (its overrides, else the broker's
//! values) or the broker's, with sources, synonyms and documentation when asked.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::config::{topic_value, Key, Source, BROKER_KEYS, TOPIC_KEYS};
use crate::error::BrokerError;
use crate::node::Node;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

pub fn handle(
    node: &Node,
    request: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let wanted = |k: &Key| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|w| &**w == k.name))
            };
            let entry = |k: &Key,
                         value: &str,
                         source: Source,
                         synonyms: Vec<DescribeConfigsSynonym>,
                         read_only: bool| {
                let mut e = DescribeConfigsResourceResult::default()
                    .with_name(str_bytes(k.name))
                    .with_value(Some(str_bytes(value)))
                    .with_read_only(read_only)
                    .with_config_source(source.describe_code())
                    .with_config_type(k.kind.describe_code());
                if request.include_synonyms {
                    e = e.with_synonyms(synonyms);
                }
                if request.include_documentation && version >= 3 {
                    e = e.with_documentation(Some(str_bytes(k.doc)));
                }
                e
            };
            match r.resource_type {
                RESOURCE_TOPIC => {
                    let Some(overrides) = node
                        .image()
                        .topic_by_name(&r.resource_name)
                        .map(|t| t.overrides())
                    else {
                        // Kafka's message names the topic; the error's own text does not.
                        return result
                            .with_error_code(BrokerError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(format!(
                                "unknown topic '{}'",
                                &*r.resource_name
                            ))));
                    };
                    let configs = TOPIC_KEYS
                        .iter()
                        .filter(|k| wanted(k))
                        .map(|k| {
                            let (value, source) = topic_value(&node.config, &overrides, k);
                            let mut synonyms = Vec::new();
                            if source == Source::Topic {
                                synonyms.push(synonym(k.name, value, Source::Topic));
                            }
                            let broker_key = k.broker_synonym.unwrap_or(k.name);
                            let broker_source = if node.config.is_set(broker_key) {
                                Source::StaticBroker
                            } else {
                                Source::Default
                            };
                            synonyms.push(synonym(
                                broker_key,
                                node.config.get(broker_key),
                                broker_source,
                            ));
                            entry(k, value, source, synonyms, false)
                        })
                        .collect();
                    result.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    let name: &str = &r.resource_name;
                    if !name.is_empty() && name != node.id.0.to_string() {
                        let e = BrokerError::InvalidRequest(format!(
                            "this is broker {}, not '{name}'",
                            node.id.0
                        ));
                        return with_error(result, &e);
                    }
                    let configs = BROKER_KEYS
                        .iter()
                        .filter(|k| wanted(k))
                        .map(|k| {
                            let source = if node.config.is_set(k.name) {
                                Source::StaticBroker
                            } else {
                                Source::Default
                            };
                            let value = node.config.get(k.name);
                            entry(k, value, source, vec![synonym(k.name, value, source)], true)
                        })
                        .collect();
                    result.with_configs(configs)
                }
                other => {
                    let e = BrokerError::InvalidRequest(format!(
                        "resource type {other} is not supported; use 2 (topic) or 4 (broker)"
                    ));
                    with_error(result, &e)
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn with_error(result: DescribeConfigsResult, e: &BrokerError) -> DescribeConfigsResult {
    result
        .with_error_code(e.code())
        .with_error_message(Some(str_bytes(e.message())))
}

fn synonym(name: &str, value: &str, source: Source) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(str_bytes(value)))
        .with_source(source.describe_code())
}
