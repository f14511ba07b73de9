//! MERGE STUBS - DELETE AT MERGE. Stand-ins for H2b's `group/records.rs` (`GroupMetadata`,
//! `MemberMetadata`) and `group/offsets.rs` (`OffsetStore`) with exactly the contract's names and
//! signatures, so this branch compiles and its tests run alone. The stub store keeps nothing:
//! `store_group`/`delete_group` succeed, nothing is loaded, no group has offsets.

use crate::error::BrokerError;

/// Kafka's GroupMetadataValue (value schema v3), what a group looks like after a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: bytes::Bytes,
    pub assignment: bytes::Bytes,
}

#[derive(Debug, Default)]
pub struct OffsetStore {
    _private: (),
}

impl OffsetStore {
    pub async fn store_group(
        &self,
        _group_id: &str,
        _metadata: &GroupMetadata,
    ) -> Result<(), BrokerError> {
        Ok(())
    }

    pub async fn delete_group(&self, _group_id: &str) -> Result<(), BrokerError> {
        Ok(())
    }

    pub fn take_loaded_groups(&self) -> Vec<(String, GroupMetadata)> {
        Vec::new()
    }

    pub fn groups_with_offsets(&self) -> Vec<String> {
        Vec::new()
    }
}

/// OffsetFetch answering "no committed offset" (-1) for every partition asked, so librdkafka
/// consumers in this branch's integration tests start from `auto.offset.reset`. H2b's real
/// handler replaces this and its dispatch arm at merge.
pub fn offset_fetch_stub(
    request: &kafka_protocol::messages::OffsetFetchRequest,
    version: i16,
) -> kafka_protocol::messages::OffsetFetchResponse {
    use kafka_protocol::messages::offset_fetch_response::*;
    use kafka_protocol::messages::OffsetFetchResponse;
    let none = || Some(kafka_protocol::protocol::StrBytes::from_static_str(""));
    if version >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|g| {
                let topics = g.topics.iter().flatten().map(|t| {
                    OffsetFetchResponseTopics::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partition_indexes
                                .iter()
                                .map(|p| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(*p)
                                        .with_committed_offset(-1)
                                        .with_metadata(none())
                                })
                                .collect(),
                        )
                });
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics.collect())
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = request.topics.iter().flatten().map(|t| {
        OffsetFetchResponseTopic::default()
            .with_name(t.name.clone())
            .with_partitions(
                t.partition_indexes
                    .iter()
                    .map(|p| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(-1)
                            .with_metadata(none())
                    })
                    .collect(),
            )
    });
    OffsetFetchResponse::default().with_topics(topics.collect())
}
