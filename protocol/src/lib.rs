//! The Kafka wire protocol as Strata speaks it. This crate knows bytes, not sockets or disks:
//! every function takes and returns buffers, so it is tested with byte arrays.
//!
//! - [`frame`]: the 4-byte length-prefixed frame codec with a size limit.
//! - [`api`]: the supported APIs and versions, request decoding, response encoding.
//! - [`client_codec`]: the other side: request encoding and response decoding, for the broker's
//!   own requests to other brokers (a follower fetching from its leader).
//! - [`record_batch`]: RecordBatch v2 views: validation (CRC-32C, lengths, offset deltas) and the
//!   in-place patching of base offset and partition leader epoch.

pub mod api;
pub mod client_codec;
pub mod frame;
pub mod record_batch;

pub use kafka_protocol;
