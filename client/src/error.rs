//! What can go wrong talking to a broker. Kafka error codes from responses become
//! [`ClientError::Kafka`] with the code's name, in one place.

use kafka_protocol::ResponseError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("no broker reachable within {timeout_ms} ms (tried {tried})")]
    NoBrokerReachable { tried: String, timeout_ms: u64 },
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost { addr: String, reason: String },
    #[error("{api} request timed out after {timeout_ms} ms")]
    Timeout { api: &'static str, timeout_ms: u64 },
    #[error("the broker does not support {api} in any version this client speaks")]
    Unsupported { api: &'static str },
    #[error("malformed response to {api}: {reason}")]
    Malformed { api: &'static str, reason: String },
    #[error("{context}: {error:?} (Kafka error {code})")]
    Kafka {
        context: String,
        code: i16,
        error: ResponseError,
    },
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// A Kafka error code from a response, or `None` for 0.
    pub fn from_code(code: i16, context: impl Into<String>) -> Option<ClientError> {
        (code != 0).then(|| ClientError::Kafka {
            context: context.into(),
            code,
            error: ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)),
        })
    }

    /// Whether retrying (after refreshing metadata) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Kafka { error, .. } => error.is_retriable(),
            ClientError::ConnectionLost { .. }
            | ClientError::Timeout { .. }
            | ClientError::Connect { .. } => true,
            _ => false,
        }
    }

    /// Whether the error says our metadata (leaders, partitions) is stale.
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            ClientError::Kafka { error, .. } => matches!(
                error,
                ResponseError::NotLeaderOrFollower
                    | ResponseError::UnknownTopicOrPartition
                    | ResponseError::LeaderNotAvailable
                    | ResponseError::FencedLeaderEpoch
                    | ResponseError::UnknownLeaderEpoch
            ),
            ClientError::ConnectionLost { .. } | ClientError::Connect { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;
