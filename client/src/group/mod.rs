//! Consumer groups, client side: the consumer protocol's bytes ([`protocol`]), the partition
//! assignors ([`assignor`]), membership and committed offsets ([`coordinator`]), and the admin
//! client's group operations ([`admin`]). The consumer (`crate::consumer`) drives membership
//! from its `poll`.

pub mod admin;
pub mod assignor;
pub mod coordinator;
pub mod protocol;

pub use assignor::RebalanceProtocol;
pub use coordinator::{GroupConfig, RejoinReason};
pub use protocol::{Assignment, Subscription, Tp};
