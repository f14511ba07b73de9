//! An async Rust client for Kafka-protocol brokers (Strata or Apache Kafka).
//!
//! - [`cluster`]: bootstrap, the metadata cache, a connection per broker.
//! - [`connection`]: one pipelined connection per broker, API versions negotiated.
//! - [`error`]: `ClientError`, with Kafka error codes mapped in one place.

pub mod admin;
pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod producer;

pub use cluster::{ClientConfig, Cluster, Metadata, PartitionInfo, TopicInfo};
pub use connection::{Connection, ConnectionConfig};
pub use error::{ClientError, Result};
