//! The replica layer (Kafka's ReplicaManager): between the handlers and the partitions.

pub mod state;
