//! Errors the broker answers clients with, and their Kafka error codes: the one place where the
//! mapping lives. Handlers return `BrokerError`; responses carry `code()` and `message()`.

use kafka_protocol::ResponseError as K;

use crate::controller::image::IsrRejection;
use crate::ids::Offset;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("storage error: {0}")]
    Storage(#[from] std::io::Error),
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    #[error("record set of {size_bytes} bytes exceeds max.message.bytes {limit_bytes}")]
    MessageTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error(
        "record set of {size_bytes} bytes exceeds the segment size segment.bytes {limit_bytes}"
    )]
    RecordListTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error("offset out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        log_start_offset: Offset,
        log_end_offset: Offset,
    },
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("this broker does not lead the partition")]
    NotLeaderOrFollower,
    #[error("the partition has no live leader")]
    LeaderNotAvailable,
    #[error("{0}")]
    InvalidTopic(String),
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// An API version this broker does not implement (ApiVersions answers it with its ranges).
    #[error("this broker does not support the requested API version")]
    UnsupportedVersion,
    /// A request the broker's limits refuse (e.g. `max.partitions`).
    #[error("{0}")]
    PolicyViolation(String),
    #[error("acks must be -1, 0 or 1, not {0}")]
    InvalidRequiredAcks(i16),
    #[error("{0}")]
    UnsupportedForMessageFormat(String),
    #[error("request timed out")]
    RequestTimedOut,
    /// acks=all with fewer in-sync replicas than `min.insync.replicas`: nothing was appended.
    #[error("the ISR has {isr} replicas; min.insync.replicas is {min_insync}")]
    NotEnoughReplicas { isr: usize, min_insync: usize },
    /// The batch was appended, then the ISR shrank below `min.insync.replicas` while waiting.
    #[error("appended, but the ISR shrank to {isr} replicas; min.insync.replicas is {min_insync}")]
    NotEnoughReplicasAfterAppend { isr: usize, min_insync: usize },
    /// The controller refused an ISR change (AlterPartition); the kind says which rule.
    #[error("ISR change refused: {reason}")]
    IsrChangeRejected { kind: IsrRejection, reason: String },
    #[error("{0}")]
    UnsupportedEndpointType(String),
    #[error("leader epoch {requested} is older than the current {current}")]
    FencedLeaderEpoch { requested: i32, current: i32 },
    #[error("leader epoch {requested} is newer than the current {current}")]
    UnknownLeaderEpoch { requested: i32, current: i32 },
    #[error("fetch session {0} does not exist; this broker serves sessionless fetches")]
    FetchSessionIdNotFound(i32),
    /// An idempotent batch whose sequence does not follow the producer's last one.
    #[error("{0}")]
    OutOfOrderSequenceNumber(String),
    /// An idempotent batch from an epoch older than the producer's current one (a zombie).
    #[error("{0}")]
    InvalidProducerEpoch(String),
    /// InitProducerId could not reserve producer ids durably.
    #[error("producer id allocation: {0}")]
    ProducerIds(String),
    #[error(
        "offset metadata of {size_bytes} bytes exceeds offset.metadata.max.bytes {limit_bytes}"
    )]
    OffsetMetadataTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error("the committed offsets do not fit in one record batch of __consumer_offsets")]
    InvalidCommitOffsetSize,
    #[error("this broker is not the group's coordinator")]
    NotCoordinator,
    /// This broker just came to lead the group's `__consumer_offsets` partition and is reading it.
    #[error("the group's coordinator is loading its state")]
    CoordinatorLoadInProgress,
    /// The controller quorum is not reachable from here, or this node is not its leader.
    #[error("{0}")]
    NotController(String),
    /// The controller quorum did not answer in time (no majority?); the change may still commit.
    #[error("{0}")]
    ControllerTimeout(String),
    /// The committed change contradicted the metadata (it lost a race); it changed nothing.
    #[error("the controller refused the change: {0}")]
    ControllerRejected(String),
    #[error("metadata store: {0}")]
    Metadata(#[from] crate::controller::MetadataError),
    /// The follower path refused a change that does not fit this replica's log: leader batches
    /// that do not continue it, a leader epoch older than its latest, a truncation below the
    /// high watermark or inside a batch. Nothing was changed; the replica layer re-aligns
    /// (OffsetsForLeaderEpoch) and retries. Never sent to clients in normal operation.
    #[error("replica log: {0}")]
    ReplicaLog(String),
    #[error("leader epoch cache: {0}")]
    EpochCache(#[from] crate::partition::epoch_cache::EpochCacheError),
    // Group coordinator (membership).
    #[error("{0}")]
    CoordinatorNotAvailable(String),
    /// A transaction coordinator was asked for: there is none. Kafka's code for a transactional
    /// id the client may not use is the one every client treats as fatal at once (a retriable
    /// code makes `init_transactions()` spin until its timeout); the message says why.
    #[error("transactions are not supported by this broker: there is no transaction coordinator")]
    TransactionsUnsupported,
    #[error("the group id must not be empty")]
    InvalidGroupId,
    #[error("the coordinator does not know member '{0}'")]
    UnknownMemberId(String),
    #[error("generation {requested} is not the group's current generation {current}")]
    IllegalGeneration { requested: i32, current: i32 },
    #[error("the group is rebalancing: rejoin")]
    RebalanceInProgress,
    #[error("another member took group.instance.id '{0}'")]
    FencedInstanceId(String),
    #[error("rejoin with the member id this answer carries")]
    MemberIdRequired,
    #[error("{0}")]
    InconsistentGroupProtocol(String),
    #[error("session timeout {requested_ms} ms is outside [{min_ms}, {max_ms}]")]
    InvalidSessionTimeout {
        requested_ms: i32,
        min_ms: i64,
        max_ms: i64,
    },
    #[error("the group has reached group.max.size {0}")]
    GroupMaxSizeReached(usize),
    #[error("group '{0}' does not exist")]
    GroupIdNotFound(String),
    #[error("group '{0}' still has members")]
    NonEmptyGroup(String),
    #[error("the group is subscribed to topic '{0}'")]
    GroupSubscribedToTopic(String),
}

impl BrokerError {
    /// The Kafka error code a response carries for this error.
    pub fn code(&self) -> i16 {
        let k = match self {
            BrokerError::Storage(_) | BrokerError::Metadata(_) | BrokerError::EpochCache(_) => {
                K::KafkaStorageError
            }
            BrokerError::CorruptMessage(_) => K::CorruptMessage,
            BrokerError::ReplicaLog(_) => K::UnknownServerError,
            BrokerError::InvalidRecord(_) => K::InvalidRecord,
            BrokerError::MessageTooLarge { .. } => K::MessageTooLarge,
            BrokerError::RecordListTooLarge { .. } => K::RecordListTooLarge,
            BrokerError::OffsetOutOfRange { .. } => K::OffsetOutOfRange,
            BrokerError::UnknownTopicOrPartition => K::UnknownTopicOrPartition,
            BrokerError::UnknownTopicId => K::UnknownTopicId,
            BrokerError::NotLeaderOrFollower => K::NotLeaderOrFollower,
            BrokerError::LeaderNotAvailable => K::LeaderNotAvailable,
            BrokerError::InvalidTopic(_) => K::InvalidTopicException,
            BrokerError::TopicAlreadyExists(_) => K::TopicAlreadyExists,
            BrokerError::InvalidPartitions(_) => K::InvalidPartitions,
            BrokerError::InvalidReplicationFactor(_) => K::InvalidReplicationFactor,
            BrokerError::InvalidReplicaAssignment(_) => K::InvalidReplicaAssignment,
            BrokerError::InvalidConfig(_) => K::InvalidConfig,
            BrokerError::InvalidRequest(_) => K::InvalidRequest,
            BrokerError::UnsupportedVersion => K::UnsupportedVersion,
            BrokerError::PolicyViolation(_) => K::PolicyViolation,
            BrokerError::InvalidRequiredAcks(_) => K::InvalidRequiredAcks,
            BrokerError::UnsupportedForMessageFormat(_) => K::UnsupportedForMessageFormat,
            BrokerError::RequestTimedOut | BrokerError::ControllerTimeout(_) => K::RequestTimedOut,
            BrokerError::NotEnoughReplicas { .. } => K::NotEnoughReplicas,
            BrokerError::NotEnoughReplicasAfterAppend { .. } => K::NotEnoughReplicasAfterAppend,
            BrokerError::IsrChangeRejected { kind, .. } => match kind {
                IsrRejection::UnknownPartition => K::UnknownTopicOrPartition,
                IsrRejection::StaleLeaderEpoch => K::FencedLeaderEpoch,
                IsrRejection::NotLeader => K::NotLeaderOrFollower,
                IsrRejection::StalePartitionEpoch => K::InvalidUpdateVersion,
                IsrRejection::IneligibleReplica => K::IneligibleReplica,
                IsrRejection::Invalid => K::InvalidRequest,
            },
            BrokerError::NotController(_) => K::NotController,
            BrokerError::ControllerRejected(_) => K::InvalidRequest,
            BrokerError::UnsupportedEndpointType(_) => K::UnsupportedEndpointType,
            BrokerError::FencedLeaderEpoch { .. } => K::FencedLeaderEpoch,
            BrokerError::UnknownLeaderEpoch { .. } => K::UnknownLeaderEpoch,
            BrokerError::FetchSessionIdNotFound(_) => K::FetchSessionIdNotFound,
            BrokerError::OutOfOrderSequenceNumber(_) => K::OutOfOrderSequenceNumber,
            BrokerError::InvalidProducerEpoch(_) => K::InvalidProducerEpoch,
            BrokerError::ProducerIds(_) => K::KafkaStorageError,
            BrokerError::CoordinatorNotAvailable(_) => K::CoordinatorNotAvailable,
            BrokerError::TransactionsUnsupported => K::TransactionalIdAuthorizationFailed,
            BrokerError::InvalidGroupId => K::InvalidGroupId,
            BrokerError::UnknownMemberId(_) => K::UnknownMemberId,
            BrokerError::IllegalGeneration { .. } => K::IllegalGeneration,
            BrokerError::RebalanceInProgress => K::RebalanceInProgress,
            BrokerError::FencedInstanceId(_) => K::FencedInstanceId,
            BrokerError::MemberIdRequired => K::MemberIdRequired,
            BrokerError::InconsistentGroupProtocol(_) => K::InconsistentGroupProtocol,
            BrokerError::InvalidSessionTimeout { .. } => K::InvalidSessionTimeout,
            BrokerError::GroupMaxSizeReached(_) => K::GroupMaxSizeReached,
            BrokerError::GroupIdNotFound(_) => K::GroupIdNotFound,
            BrokerError::NonEmptyGroup(_) => K::NonEmptyGroup,
            BrokerError::GroupSubscribedToTopic(_) => K::GroupSubscribedToTopic,
            BrokerError::OffsetMetadataTooLarge { .. } => K::OffsetMetadataTooLarge,
            BrokerError::InvalidCommitOffsetSize => K::InvalidCommitOffsetSize,
            BrokerError::NotCoordinator => K::NotCoordinator,
            BrokerError::CoordinatorLoadInProgress => K::CoordinatorLoadInProgress,
        };
        k.code()
    }

    /// The text for a response's `error_message`, where the version has one.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_kafka_protocol_guide() {
        assert_eq!(BrokerError::CorruptMessage(String::new()).code(), 2);
        assert_eq!(BrokerError::UnknownTopicOrPartition.code(), 3);
        assert_eq!(BrokerError::InvalidTopic(String::new()).code(), 17);
        assert_eq!(BrokerError::TopicAlreadyExists(String::new()).code(), 36);
        assert_eq!(BrokerError::InvalidRecord(String::new()).code(), 87);
        assert_eq!(BrokerError::PolicyViolation(String::new()).code(), 44);
        assert_eq!(
            BrokerError::OffsetMetadataTooLarge {
                size_bytes: 1,
                limit_bytes: 0
            }
            .code(),
            12
        );
        assert_eq!(BrokerError::GroupIdNotFound(String::new()).code(), 69);
        assert_eq!(
            BrokerError::GroupSubscribedToTopic(String::new()).code(),
            86
        );
        assert_eq!(BrokerError::Storage(std::io::Error::other("x")).code(), 56);
        assert_eq!(
            BrokerError::OutOfOrderSequenceNumber(String::new()).code(),
            45
        );
        assert_eq!(BrokerError::InvalidProducerEpoch(String::new()).code(), 47);
        assert_eq!(BrokerError::RebalanceInProgress.code(), 27);
        assert_eq!(BrokerError::MemberIdRequired.code(), 79);
        assert_eq!(BrokerError::FencedInstanceId(String::new()).code(), 82);
        assert_eq!(BrokerError::NonEmptyGroup(String::new()).code(), 68);
        assert_eq!(BrokerError::UnsupportedVersion.code(), 35);
        assert_eq!(BrokerError::InvalidRequest(String::new()).code(), 42);
        assert_eq!(
            BrokerError::NotEnoughReplicas {
                isr: 1,
                min_insync: 2
            }
            .code(),
            19
        );
        assert_eq!(
            BrokerError::NotEnoughReplicasAfterAppend {
                isr: 1,
                min_insync: 2
            }
            .code(),
            20
        );
    }

    /// An AlterPartition refusal answers the code Kafka's controller gives for the rule broken.
    #[test]
    fn isr_change_refusals_answer_kafkas_alter_partition_codes() {
        let code = |kind| {
            BrokerError::IsrChangeRejected {
                kind,
                reason: String::new(),
            }
            .code()
        };
        assert_eq!(
            code(IsrRejection::StalePartitionEpoch),
            95,
            "INVALID_UPDATE_VERSION"
        );
        assert_eq!(
            code(IsrRejection::StaleLeaderEpoch),
            74,
            "FENCED_LEADER_EPOCH"
        );
        assert_eq!(code(IsrRejection::NotLeader), 6, "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(
            code(IsrRejection::IneligibleReplica),
            107,
            "INELIGIBLE_REPLICA"
        );
        assert_eq!(code(IsrRejection::UnknownPartition), 3);
        assert_eq!(code(IsrRejection::Invalid), 42);
    }

    /// This file is the only place codes are chosen: no handler or group module names a Kafka
    /// error (`ResponseError`) or writes a non-zero code as a number; each goes through a
    /// `BrokerError` and its `code()`.
    #[test]
    fn no_handler_chooses_its_own_error_code() {
        // Files allowed to name Kafka errors themselves: none.
        const NOT_YET: [&str; 0] = [];
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut checked = 0;
        for dir in [
            "server/handlers",
            "server",
            "group",
            "group/state",
            "group/offsets",
        ] {
            for entry in std::fs::read_dir(src.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if !name.ends_with(".rs") || NOT_YET.contains(&name.as_str()) {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    !text.contains("ResponseError"),
                    "{dir}/{name} names a Kafka error itself: give BrokerError a variant"
                );
                for (at, _) in text.match_indices("error_code(") {
                    let next = text[at + "error_code(".len()..].chars().next();
                    assert!(
                        !next.is_some_and(|c| c == '-' || ('1'..='9').contains(&c)),
                        "{dir}/{name} writes an error code as a number"
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} files checked");
    }
}
