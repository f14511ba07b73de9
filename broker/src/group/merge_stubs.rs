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
