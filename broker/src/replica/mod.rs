//! Partition replication: followers copy their leaders' logs (`fetcher`).

pub mod fetcher;
