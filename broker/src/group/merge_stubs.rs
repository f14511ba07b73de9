//! STUB, REMOVED AT MERGE (issue 10). Stands in for the group coordinator's membership checks,
//! which another branch builds with these exact signatures, so the offset handlers compile and
//! can be tested alone. It allows every commit: simple commits (generation -1, no member id), as
//! the real coordinator does for unknown or empty groups, and, unlike it, any member's.

use crate::error::BrokerError;

#[derive(Debug, Default)]
pub struct GroupCoordinator;

impl GroupCoordinator {
    /// STUB: OffsetCommit's member and generation check. Always Ok here.
    pub fn check_commit(
        &self,
        _group_id: &str,
        _member_id: &str,
        _group_instance_id: Option<&str>,
        _generation_id: i32,
    ) -> Result<(), BrokerError> {
        Ok(())
    }

    /// STUB: OffsetDelete's check that no member subscribes to `topic`. Always Ok here.
    pub fn check_offset_delete(&self, _group_id: &str, _topic: &str) -> Result<(), BrokerError> {
        Ok(())
    }
}
