//! The Strata broker: storage, partitions, metadata and the Kafka-protocol server.
//! See ARCHITECTURE.md for the map.

pub mod clock;
pub mod config;
pub mod controller;
pub mod error;
pub mod group;
pub mod ids;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod producer_ids;
pub mod replica;
pub mod serve;
pub mod server;
pub mod storage;
