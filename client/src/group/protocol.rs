//! The consumer protocol's byte layouts: what a member puts in JoinGroup's protocol metadata
//! (`ConsumerProtocolSubscription`) and what the leader hands each member through SyncGroup
//! (`ConsumerProtocolAssignment`). Both are an i16 version followed by the message body, as
//! Java's `ConsumerProtocol` writes them.
//!
//! Invariants:
//! - we always write version 3 (topics, user data, owned partitions, generation, rack), the
//!   newest Kafka defines; any version can be read, and a version newer than 3 is read as 3
//!   (Kafka's rule: newer versions only append fields);
//! - decoding never panics: bad bytes are `Malformed`;
//! - topic and partition lists come out sorted and without duplicates, so assignors and tests
//!   see the same order whatever the member wrote.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::error::{ClientError, Result};

/// A topic and a partition.
pub type Tp = (String, i32);

/// The `protocol_type` of consumer groups in JoinGroup.
pub const PROTOCOL_TYPE: &str = "consumer";
/// The version we write.
const VERSION_WRITTEN: i16 = 3;
/// The newest version we know how to read; newer ones are read as this.
const VERSION_KNOWN_MAX: i16 = 3;

/// One member's subscription, as sent in JoinGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Sorted, unique.
    pub topics: Vec<String>,
    pub user_data: Option<Bytes>,
    /// What the member holds now (cooperative rebalancing needs it; v1+).
    pub owned_partitions: Vec<Tp>,
    /// The generation the owned partitions belong to, -1 if none (v2+).
    pub generation: i32,
    pub rack_id: Option<String>,
}

/// One member's assignment, as the leader sends it in SyncGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Sorted, unique.
    pub partitions: Vec<Tp>,
    pub user_data: Option<Bytes>,
}

fn malformed(what: &str, reason: impl std::fmt::Display) -> ClientError {
    ClientError::Malformed {
        api: "ConsumerProtocol",
        reason: format!("{what}: {reason}"),
    }
}

/// Splits the version prefix off; a version above what we know is read as the newest we know.
fn split_version(bytes: &Bytes, what: &str) -> Result<(i16, Bytes)> {
    let mut body = bytes.clone();
    if body.remaining() < 2 {
        return Err(malformed(what, "shorter than its version"));
    }
    let version = body.get_i16();
    if version < 0 {
        return Err(malformed(what, format!("negative version {version}")));
    }
    Ok((version.min(VERSION_KNOWN_MAX), body))
}

fn group_by_topic(partitions: &[Tp]) -> BTreeMap<&str, Vec<i32>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    for ps in by_topic.values_mut() {
        ps.sort_unstable();
        ps.dedup();
    }
    by_topic
}

fn sorted_unique(mut tps: Vec<Tp>) -> Vec<Tp> {
    tps.sort();
    tps.dedup();
    tps
}

impl Subscription {
    pub fn new(topics: impl IntoIterator<Item = String>) -> Subscription {
        Subscription {
            topics: topics
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            generation: -1,
            ..Subscription::default()
        }
    }

    pub fn encode(&self) -> Result<Bytes> {
        let owned = group_by_topic(&self.owned_partitions)
            .into_iter()
            .map(|(t, ps)| {
                OwnedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partitions(ps)
            })
            .collect();
        let message = ConsumerProtocolSubscription::default()
            .with_topics(
                self.topics
                    .iter()
                    .map(|t| StrBytes::from_string(t.clone()))
                    .collect(),
            )
            .with_user_data(self.user_data.clone())
            .with_owned_partitions(owned)
            .with_generation_id(self.generation)
            .with_rack_id(self.rack_id.clone().map(StrBytes::from_string));
        let mut buf = BytesMut::new();
        buf.put_i16(VERSION_WRITTEN);
        message
            .encode(&mut buf, VERSION_WRITTEN)
            .map_err(|e| ClientError::Invalid(format!("cannot encode a subscription: {e:#}")))?;
        Ok(buf.freeze())
    }

    pub fn decode(bytes: &Bytes) -> Result<Subscription> {
        let (version, mut body) = split_version(bytes, "subscription")?;
        let m = ConsumerProtocolSubscription::decode(&mut body, version)
            .map_err(|e| malformed("subscription", format!("{e:#}")))?;
        let mut topics: Vec<String> = m.topics.iter().map(|t| t.to_string()).collect();
        topics.sort();
        topics.dedup();
        let owned = m
            .owned_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect();
        Ok(Subscription {
            topics,
            user_data: m.user_data,
            owned_partitions: sorted_unique(owned),
            generation: if version >= 2 { m.generation_id } else { -1 },
            rack_id: m.rack_id.map(|r| r.to_string()),
        })
    }
}

impl Assignment {
    pub fn new(partitions: Vec<Tp>) -> Assignment {
        Assignment {
            partitions: sorted_unique(partitions),
            user_data: None,
        }
    }

    pub fn encode(&self) -> Result<Bytes> {
        let topics = group_by_topic(&self.partitions)
            .into_iter()
            .map(|(t, ps)| {
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partitions(ps)
            })
            .collect();
        let message = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(topics)
            .with_user_data(self.user_data.clone());
        let mut buf = BytesMut::new();
        buf.put_i16(VERSION_WRITTEN);
        message
            .encode(&mut buf, VERSION_WRITTEN)
            .map_err(|e| ClientError::Invalid(format!("cannot encode an assignment: {e:#}")))?;
        Ok(buf.freeze())
    }

    /// An empty byte string is an empty assignment (what a coordinator sends a member the
    /// leader gave nothing, and what DescribeGroups shows outside the Stable state).
    pub fn decode(bytes: &Bytes) -> Result<Assignment> {
        if bytes.is_empty() {
            return Ok(Assignment::default());
        }
        let (version, mut body) = split_version(bytes, "assignment")?;
        let m = ConsumerProtocolAssignment::decode(&mut body, version)
            .map_err(|e| malformed("assignment", format!("{e:#}")))?;
        let partitions = m
            .assigned_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect();
        Ok(Assignment {
            partitions: sorted_unique(partitions),
            user_data: m.user_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> Tp {
        (t.to_string(), p)
    }

    #[test]
    fn subscription_round_trips_at_version_3() {
        let s = Subscription {
            topics: vec!["a".into(), "b".into()],
            user_data: Some(Bytes::from_static(b"u")),
            owned_partitions: vec![tp("a", 0), tp("a", 2), tp("b", 1)],
            generation: 7,
            rack_id: Some("r1".into()),
        };
        let bytes = s.encode().unwrap();
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(Subscription::decode(&bytes).unwrap(), s);
    }

    #[test]
    fn reads_version_0_and_versions_newer_than_known() {
        // v0: topics and user data only.
        let m = ConsumerProtocolSubscription::default().with_topics(vec![
            StrBytes::from_static_str("z"),
            StrBytes::from_static_str("a"),
        ]);
        let mut buf = BytesMut::new();
        buf.put_i16(0);
        m.encode(&mut buf, 0).unwrap();
        let s = Subscription::decode(&buf.freeze()).unwrap();
        assert_eq!(s.topics, vec!["a".to_string(), "z".to_string()]);
        assert_eq!(s.generation, -1);
        assert!(s.owned_partitions.is_empty());

        // "v4": a v3 body, maybe with more fields after it; read as v3.
        let mut bytes = Subscription::new(vec!["t".to_string()])
            .encode()
            .unwrap()
            .to_vec();
        bytes[1] = 4;
        bytes.extend_from_slice(b"future fields");
        assert_eq!(
            Subscription::decode(&Bytes::from(bytes)).unwrap().topics,
            vec!["t".to_string()]
        );
    }

    #[test]
    fn assignment_round_trips_and_empty_bytes_are_empty() {
        let a = Assignment::new(vec![tp("b", 0), tp("a", 1), tp("a", 0), tp("a", 1)]);
        assert_eq!(a.partitions, vec![tp("a", 0), tp("a", 1), tp("b", 0)]);
        assert_eq!(Assignment::decode(&a.encode().unwrap()).unwrap(), a);
        assert_eq!(
            Assignment::decode(&Bytes::new()).unwrap(),
            Assignment::default()
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for len in 0..40 {
            let junk = Bytes::from(vec![0xffu8; len]);
            assert!(Subscription::decode(&junk).is_err());
            let _ = Assignment::decode(&junk);
            let zeros = Bytes::from(vec![0u8; len]);
            let _ = Subscription::decode(&zeros);
            let _ = Assignment::decode(&zeros);
        }
    }
}
