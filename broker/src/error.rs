//! Errors the broker answers clients with, and their Kafka error codes: the one place where the
//! mapping lives. Handlers return `BrokerError`; responses carry `code()` and `message()`.

use kafka_protocol::ResponseError as K;

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
    #[error("acks must be -1, 0 or 1, not {0}")]
    InvalidRequiredAcks(i16),
    #[error("{0}")]
    UnsupportedForMessageFormat(String),
    #[error("request timed out")]
    RequestTimedOut,
    #[error("{0}")]
    UnsupportedEndpointType(String),
    #[error("leader epoch {requested} is older than the current {current}")]
    FencedLeaderEpoch { requested: i32, current: i32 },
    #[error("leader epoch {requested} is newer than the current {current}")]
    UnknownLeaderEpoch { requested: i32, current: i32 },
    #[error("fetch session {0} does not exist; this broker serves sessionless fetches")]
    FetchSessionIdNotFound(i32),
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
    #[error("the group coordinator is not available")]
    CoordinatorNotAvailable,
    #[error("group id not found")]
    GroupIdNotFound,
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("metadata store: {0}")]
    Metadata(#[from] crate::controller::MetadataError),
    #[error("leader epoch cache: {0}")]
    EpochCache(#[from] crate::partition::epoch_cache::EpochCacheError),
}

impl BrokerError {
    /// The Kafka error code a response carries for this error.
    pub fn code(&self) -> i16 {
        let k = match self {
            BrokerError::Storage(_) | BrokerError::Metadata(_) | BrokerError::EpochCache(_) => {
                K::KafkaStorageError
            }
            BrokerError::CorruptMessage(_) => K::CorruptMessage,
            BrokerError::InvalidRecord(_) => K::InvalidRecord,
            BrokerError::MessageTooLarge { .. } => K::MessageTooLarge,
            BrokerError::RecordListTooLarge { .. } => K::RecordListTooLarge,
            BrokerError::OffsetOutOfRange { .. } => K::OffsetOutOfRange,
            BrokerError::UnknownTopicOrPartition => K::UnknownTopicOrPartition,
            BrokerError::UnknownTopicId => K::UnknownTopicId,
            BrokerError::NotLeaderOrFollower => K::NotLeaderOrFollower,
            BrokerError::InvalidTopic(_) => K::InvalidTopicException,
            BrokerError::TopicAlreadyExists(_) => K::TopicAlreadyExists,
            BrokerError::InvalidPartitions(_) => K::InvalidPartitions,
            BrokerError::InvalidReplicationFactor(_) => K::InvalidReplicationFactor,
            BrokerError::InvalidReplicaAssignment(_) => K::InvalidReplicaAssignment,
            BrokerError::InvalidConfig(_) => K::InvalidConfig,
            BrokerError::InvalidRequest(_) => K::InvalidRequest,
            BrokerError::InvalidRequiredAcks(_) => K::InvalidRequiredAcks,
            BrokerError::UnsupportedForMessageFormat(_) => K::UnsupportedForMessageFormat,
            BrokerError::RequestTimedOut => K::RequestTimedOut,
            BrokerError::UnsupportedEndpointType(_) => K::UnsupportedEndpointType,
            BrokerError::FencedLeaderEpoch { .. } => K::FencedLeaderEpoch,
            BrokerError::UnknownLeaderEpoch { .. } => K::UnknownLeaderEpoch,
            BrokerError::FetchSessionIdNotFound(_) => K::FetchSessionIdNotFound,
            BrokerError::OffsetMetadataTooLarge { .. } => K::OffsetMetadataTooLarge,
            BrokerError::InvalidCommitOffsetSize => K::InvalidCommitOffsetSize,
            BrokerError::NotCoordinator => K::NotCoordinator,
            BrokerError::CoordinatorNotAvailable => K::CoordinatorNotAvailable,
            BrokerError::GroupIdNotFound => K::GroupIdNotFound,
            BrokerError::GroupSubscribedToTopic => K::GroupSubscribedToTopic,
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
        assert_eq!(
            BrokerError::OffsetMetadataTooLarge {
                size_bytes: 1,
                limit_bytes: 0
            }
            .code(),
            12
        );
        assert_eq!(BrokerError::GroupIdNotFound.code(), 69);
        assert_eq!(BrokerError::GroupSubscribedToTopic.code(), 86);
        assert_eq!(BrokerError::Storage(std::io::Error::other("x")).code(), 56);
    }
}
