//! The Strata broker: storage, partitions, metadata and the Kafka-protocol server.

pub mod ids;
pub mod storage;
