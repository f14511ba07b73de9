//! Consumer groups. This branch holds only committed offsets (`offsets`) and the records of
//! `__consumer_offsets` (`records`); the coordinator's membership arrives at merge (issue 10),
//! when this file is replaced by the coordinator's own, which declares these modules.

pub mod merge_stubs;
pub mod offsets;
pub mod records;

pub use merge_stubs::GroupCoordinator;
