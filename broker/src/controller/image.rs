//! `MetadataImage`: the cluster metadata at one offset of the metadata log, built by applying
//! committed [`MetadataRecord`]s; each application also yields a [`MetadataDelta`] that says what
//! changed and, per broker, which partitions it must open, lead, follow or close.
//!
//! Invariants:
//! - an image is immutable; `apply` returns a new one. Its maps sit behind `Arc`s, so a clone is
//!   a few reference counts, and `apply` copies only the maps it changes (and of the topics map,
//!   only the topics it touches);
//! - `apply` is all or nothing: a record that contradicts the image (unknown topic id, a
//!   duplicate name or id, a partition epoch going backwards, offsets not moving forward, ...)
//!   is an [`ApplyError`] and the image is unchanged;
//! - topic names and ids are unique; a topic's partitions are numbered densely from 0; each
//!   partition's replicas are distinct, its ISR is a subset of them, its leader is in its ISR;
//! - producer-id blocks only move forward: a block never starts below the end of the last one;
//! - an ISR change ([`AlterIsr`]) applies only for the partition's current leader at its current
//!   leader and partition epochs, and adds to the ISR only registered, unfenced brokers (KIP-841);
//!   it bumps the partition epoch alone. Its refusal names the rule broken ([`IsrRejection`]) in
//!   the first word of its text, the one thing of a rejection that crosses the quorum;
//! - `decode_snapshot(encode_snapshot(image)) == image`, and replaying the log gives the same
//!   image as loading a snapshot and replaying the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use uuid::Uuid;

use super::records::{
    self, AlterIsr, BrokerRegistration, MetadataRecord, PartitionChange, PartitionRecord,
    ProducerIdBlock, RecordError,
};
use super::validate_topic_name;
use crate::config::TopicOverrides;
use crate::ids::{BrokerId, LeaderEpoch, Offset, PartitionEpoch, PartitionId};

/// One partition's replicas and leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
}

impl PartitionImage {
    pub fn hosted_by(&self, broker: BrokerId) -> bool {
        self.replicas.contains(&broker)
    }
}

/// One topic: its name, partitions and configuration overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    /// Dense: partition `i` is at index `i`.
    pub partitions: Vec<PartitionImage>,
    pub configs: BTreeMap<String, String>,
}

impl TopicImage {
    pub fn partition(&self, p: PartitionId) -> Option<&PartitionImage> {
        usize::try_from(p.0)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    /// The overrides as the rest of the broker reads them.
    pub fn overrides(&self) -> TopicOverrides {
        TopicOverrides(self.configs.clone())
    }
}

/// The cluster metadata as of `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataImage {
    /// The metadata-log offset of the last record applied; -1 for the empty image.
    offset: Offset,
    cluster_id: Option<String>,
    brokers: Arc<BTreeMap<BrokerId, BrokerRegistration>>,
    topics: Arc<BTreeMap<Uuid, Arc<TopicImage>>>,
    names: Arc<BTreeMap<String, Uuid>>,
    producer_ids: Option<ProducerIdBlock>,
}

impl Default for MetadataImage {
    fn default() -> Self {
        MetadataImage::empty()
    }
}

/// Why records could not be applied; nothing of the batch was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("offset {offset} does not follow the image's offset {current}")]
    OffsetNotAfter { offset: Offset, current: Offset },
    #[error("the cluster id is {current}; a record sets it to {new}")]
    ClusterIdChanged { current: String, new: String },
    #[error("broker {0:?} is not registered")]
    UnknownBroker(BrokerId),
    #[error("broker {id:?} is registered with another incarnation than {incarnation}")]
    StaleIncarnation { id: BrokerId, incarnation: Uuid },
    #[error("invalid topic name: {0}")]
    InvalidTopicName(String),
    #[error("a topic named '{0}' exists")]
    DuplicateTopicName(String),
    #[error("a topic with id {0} exists")]
    DuplicateTopicId(Uuid),
    #[error("no topic has id {0}")]
    UnknownTopicId(Uuid),
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition { topic: Uuid, partition: PartitionId },
    #[error(
        "topic {topic} has {count} partitions; a new one must be numbered {count}, not {partition}"
    )]
    PartitionNotNext {
        topic: Uuid,
        partition: PartitionId,
        count: usize,
    },
    #[error("partition {topic}/{partition}: epoch {new:?} does not pass the current {current:?}")]
    PartitionEpochBackwards {
        topic: Uuid,
        partition: PartitionId,
        current: PartitionEpoch,
        new: PartitionEpoch,
    },
    #[error(
        "partition {topic}/{partition}: leader epoch {new:?} is below the current {current:?}"
    )]
    LeaderEpochBackwards {
        topic: Uuid,
        partition: PartitionId,
        current: LeaderEpoch,
        new: LeaderEpoch,
    },
    #[error("partition {topic}/{partition}: {reason}")]
    InvalidPartition {
        topic: Uuid,
        partition: PartitionId,
        reason: &'static str,
    },
    #[error("producer-id block {first_id}+{size} does not follow the last block's end {end}")]
    ProducerIdsBackwards { first_id: i64, size: i64, end: i64 },
    /// An ISR change refused; the text starts with the kind's token (see [`IsrRejection`]).
    #[error("{} partition {topic}/{partition}: {detail}", kind.token())]
    IsrChange {
        kind: IsrRejection,
        topic: Uuid,
        partition: PartitionId,
        detail: String,
    },
}

/// Which rule an ISR change broke. The quorum answers a rejected batch with its text only, so
/// the kind travels as the first word of that text ([`IsrRejection::token`]) and a proposer on
/// any node reads it back with [`IsrRejection::from_reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsrRejection {
    /// No such topic id or partition.
    UnknownPartition,
    /// The leader epoch named is older than the partition's: the asker was deposed.
    StaleLeaderEpoch,
    /// The asker is not the partition's leader at the epoch it named.
    NotLeader,
    /// The partition epoch named is not the current one: the asker's view is stale.
    StalePartitionEpoch,
    /// A broker added to the ISR is not registered or is fenced.
    IneligibleReplica,
    /// The ISR is empty, repeats a broker, names a non-replica or leaves out the leader.
    Invalid,
}

impl IsrRejection {
    const ALL: [IsrRejection; 6] = [
        IsrRejection::UnknownPartition,
        IsrRejection::StaleLeaderEpoch,
        IsrRejection::NotLeader,
        IsrRejection::StalePartitionEpoch,
        IsrRejection::IneligibleReplica,
        IsrRejection::Invalid,
    ];

    /// The stable first word of a rejection's text; never change one (voters of other versions
    /// write them).
    pub fn token(self) -> &'static str {
        match self {
            IsrRejection::UnknownPartition => "alter-isr:unknown-partition",
            IsrRejection::StaleLeaderEpoch => "alter-isr:stale-leader-epoch",
            IsrRejection::NotLeader => "alter-isr:not-leader",
            IsrRejection::StalePartitionEpoch => "alter-isr:stale-partition-epoch",
            IsrRejection::IneligibleReplica => "alter-isr:ineligible-replica",
            IsrRejection::Invalid => "alter-isr:invalid",
        }
    }

    /// The kind a rejection's text starts with, if it is an ISR change's.
    pub fn from_reason(reason: &str) -> Option<IsrRejection> {
        let first = reason.split(' ').next()?;
        IsrRejection::ALL.into_iter().find(|k| k.token() == first)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("metadata snapshot: {0}")]
    Decode(#[from] RecordError),
    #[error("metadata snapshot does not apply: {0}")]
    Apply(#[from] ApplyError),
}

impl MetadataImage {
    pub fn empty() -> MetadataImage {
        MetadataImage {
            offset: Offset(-1),
            cluster_id: None,
            brokers: Arc::default(),
            topics: Arc::default(),
            names: Arc::default(),
            producer_ids: None,
        }
    }

    /// The offset of the last record this image reflects (-1: none).
    pub fn offset(&self) -> Offset {
        self.offset
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    pub fn brokers(&self) -> &BTreeMap<BrokerId, BrokerRegistration> {
        &self.brokers
    }

    pub fn broker(&self, id: BrokerId) -> Option<&BrokerRegistration> {
        self.brokers.get(&id)
    }

    /// Every topic, in name order (as Metadata answers list them).
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.names.values().filter_map(|id| self.topic(*id))
    }

    pub fn partition(&self, topic: Uuid, p: PartitionId) -> Option<&PartitionImage> {
        self.topic(topic).and_then(|t| t.partition(p))
    }

    pub fn topic(&self, id: Uuid) -> Option<&TopicImage> {
        self.topics.get(&id).map(|t| &**t)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.names.get(name).and_then(|id| self.topic(*id))
    }

    /// The last producer-id block handed out.
    pub fn producer_ids(&self) -> Option<ProducerIdBlock> {
        self.producer_ids
    }

    /// The first producer id no block has covered yet.
    pub fn producer_id_high_mark(&self) -> i64 {
        self.producer_ids.map_or(0, |b| b.end())
    }

    /// Applies the records of a committed batch whose last record is at `offset`. On error the
    /// image is unchanged (it is `&self`; nothing is returned but the error).
    pub fn apply(
        &self,
        offset: Offset,
        records: &[MetadataRecord],
    ) -> Result<(MetadataImage, MetadataDelta), ApplyError> {
        if offset <= self.offset {
            return Err(ApplyError::OffsetNotAfter {
                offset,
                current: self.offset,
            });
        }
        let mut next = self.clone();
        next.offset = offset;
        let mut delta = MetadataDelta::default();
        for record in records {
            next.apply_one(record, &mut delta)?;
        }
        delta.partitions.retain(|_, c| c.before != c.after);
        Ok((next, delta))
    }

    fn apply_one(
        &mut self,
        record: &MetadataRecord,
        delta: &mut MetadataDelta,
    ) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::ClusterId(id) => match &self.cluster_id {
                Some(current) if current != id => {
                    return Err(ApplyError::ClusterIdChanged {
                        current: current.clone(),
                        new: id.clone(),
                    })
                }
                Some(_) => {}
                None => {
                    self.cluster_id = Some(id.clone());
                    delta.cluster_id_changed = true;
                }
            },
            MetadataRecord::RegisterBroker(b) => {
                Arc::make_mut(&mut self.brokers).insert(b.id, b.clone());
                delta.brokers_changed.insert(b.id);
            }
            MetadataRecord::BrokerChange {
                id,
                incarnation,
                fenced,
            } => {
                let b = Arc::make_mut(&mut self.brokers)
                    .get_mut(id)
                    .ok_or(ApplyError::UnknownBroker(*id))?;
                if b.incarnation != *incarnation {
                    return Err(ApplyError::StaleIncarnation {
                        id: *id,
                        incarnation: *incarnation,
                    });
                }
                b.fenced = *fenced;
                delta.brokers_changed.insert(*id);
            }
            MetadataRecord::UnregisterBroker { id } => {
                Arc::make_mut(&mut self.brokers)
                    .remove(id)
                    .ok_or(ApplyError::UnknownBroker(*id))?;
                delta.brokers_changed.insert(*id);
            }
            MetadataRecord::Topic { name, id } => {
                validate_topic_name(name).map_err(ApplyError::InvalidTopicName)?;
                if self.names.contains_key(name) {
                    return Err(ApplyError::DuplicateTopicName(name.clone()));
                }
                if self.topics.contains_key(id) {
                    return Err(ApplyError::DuplicateTopicId(*id));
                }
                let topic = TopicImage {
                    name: name.clone(),
                    id: *id,
                    partitions: Vec::new(),
                    configs: BTreeMap::new(),
                };
                Arc::make_mut(&mut self.topics).insert(*id, Arc::new(topic));
                Arc::make_mut(&mut self.names).insert(name.clone(), *id);
                delta.topics_created.insert(*id);
            }
            MetadataRecord::Partition(p) => self.apply_partition(p, delta)?,
            MetadataRecord::PartitionChange(c) => self.apply_partition_change(c, delta)?,
            MetadataRecord::AlterIsr(a) => self.apply_alter_isr(a, delta)?,
            MetadataRecord::RemoveTopic { id } => {
                let topic = Arc::make_mut(&mut self.topics)
                    .remove(id)
                    .ok_or(ApplyError::UnknownTopicId(*id))?;
                Arc::make_mut(&mut self.names).remove(&topic.name);
                for (i, p) in topic.partitions.iter().enumerate() {
                    delta
                        .partition_entry(&topic, PartitionId(i as i32), Some(p))
                        .after = None;
                }
                if !delta.topics_created.remove(id) {
                    delta.topics_deleted.insert(*id, topic.name.clone());
                }
                delta.configs_changed.remove(id);
            }
            MetadataRecord::TopicConfig { topic, key, value } => {
                let t = self.topic_mut(*topic)?;
                match value {
                    Some(v) => {
                        t.configs.insert(key.clone(), v.clone());
                    }
                    None => {
                        t.configs.remove(key);
                    }
                }
                delta.configs_changed.insert(*topic);
            }
            MetadataRecord::ProducerIds(block) => {
                let end = self.producer_id_high_mark();
                if block.size <= 0
                    || block.first_id < end
                    || block.first_id.checked_add(block.size).is_none()
                {
                    return Err(ApplyError::ProducerIdsBackwards {
                        first_id: block.first_id,
                        size: block.size,
                        end,
                    });
                }
                self.producer_ids = Some(*block);
                delta.producer_ids_changed = true;
            }
        }
        Ok(())
    }

    fn topic_mut(&mut self, id: Uuid) -> Result<&mut TopicImage, ApplyError> {
        Arc::make_mut(&mut self.topics)
            .get_mut(&id)
            .map(Arc::make_mut)
            .ok_or(ApplyError::UnknownTopicId(id))
    }

    fn apply_partition(
        &mut self,
        p: &PartitionRecord,
        delta: &mut MetadataDelta,
    ) -> Result<(), ApplyError> {
        let new = PartitionImage {
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
        };
        check_partition(p.topic, p.partition, &new)?;
        let t = self.topic_mut(p.topic)?;
        let index = usize::try_from(p.partition.0).ok();
        let before = match index.and_then(|i| t.partitions.get(i)) {
            // A restatement of a partition must be newer than what it replaces.
            Some(current) => {
                if new.partition_epoch <= current.partition_epoch {
                    return Err(ApplyError::PartitionEpochBackwards {
                        topic: p.topic,
                        partition: p.partition,
                        current: current.partition_epoch,
                        new: new.partition_epoch,
                    });
                }
                // Replicas fenced at the current leader epoch must stay fenced.
                if new.leader_epoch < current.leader_epoch {
                    return Err(ApplyError::LeaderEpochBackwards {
                        topic: p.topic,
                        partition: p.partition,
                        current: current.leader_epoch,
                        new: new.leader_epoch,
                    });
                }
                Some(current.clone())
            }
            None if index == Some(t.partitions.len()) => None,
            None => {
                return Err(ApplyError::PartitionNotNext {
                    topic: p.topic,
                    partition: p.partition,
                    count: t.partitions.len(),
                })
            }
        };
        match index {
            Some(i) if i < t.partitions.len() => t.partitions[i] = new.clone(),
            _ => t.partitions.push(new.clone()),
        }
        let name = t.name.clone();
        delta
            .partition_entry_named(p.topic, &name, p.partition, before.as_ref())
            .after = Some(new);
        Ok(())
    }

    fn apply_partition_change(
        &mut self,
        c: &PartitionChange,
        delta: &mut MetadataDelta,
    ) -> Result<(), ApplyError> {
        let t = self.topic_mut(c.topic)?;
        let name = t.name.clone();
        let current = usize::try_from(c.partition.0)
            .ok()
            .and_then(|i| t.partitions.get_mut(i))
            .ok_or(ApplyError::UnknownPartition {
                topic: c.topic,
                partition: c.partition,
            })?;
        let before = current.clone();
        let mut new = current.clone();
        if let Some(replicas) = &c.replicas {
            new.replicas = replicas.clone();
        }
        if let Some(isr) = &c.isr {
            new.isr = isr.clone();
        }
        if let Some(leader) = c.leader {
            if leader != new.leader {
                new.leader = leader;
                new.leader_epoch = LeaderEpoch(bump(
                    new.leader_epoch.0,
                    c,
                    "the leader epoch would overflow",
                )?);
            }
        }
        if new == before {
            // Kafka's controller never writes a change that changes nothing.
            return Err(ApplyError::InvalidPartition {
                topic: c.topic,
                partition: c.partition,
                reason: "the change changes nothing",
            });
        }
        new.partition_epoch = PartitionEpoch(bump(
            new.partition_epoch.0,
            c,
            "the partition epoch would overflow",
        )?);
        check_partition(c.topic, c.partition, &new)?;
        *current = new.clone();
        delta
            .partition_entry_named(c.topic, &name, c.partition, Some(&before))
            .after = Some(new);
        Ok(())
    }

    /// Kafka's AlterPartition rules, in its order: the asker's leader epoch, its leadership, the
    /// partition epoch, the ISR's shape, then the eligibility of what it adds.
    fn apply_alter_isr(
        &mut self,
        a: &AlterIsr,
        delta: &mut MetadataDelta,
    ) -> Result<(), ApplyError> {
        let refuse = |kind, detail: String| ApplyError::IsrChange {
            kind,
            topic: a.topic,
            partition: a.partition,
            detail,
        };
        let current = self
            .partition(a.topic, a.partition)
            .ok_or_else(|| refuse(IsrRejection::UnknownPartition, "no such partition".into()))?;
        if a.leader_epoch < current.leader_epoch {
            return Err(refuse(
                IsrRejection::StaleLeaderEpoch,
                format!(
                    "leader epoch {} is older than the current {}",
                    a.leader_epoch.0, current.leader_epoch.0
                ),
            ));
        }
        if current.leader != Some(a.leader) || a.leader_epoch != current.leader_epoch {
            return Err(refuse(
                IsrRejection::NotLeader,
                format!(
                    "broker {} at leader epoch {} is not the leader ({:?} at {})",
                    a.leader.0, a.leader_epoch.0, current.leader, current.leader_epoch.0
                ),
            ));
        }
        if a.partition_epoch != current.partition_epoch {
            return Err(refuse(
                IsrRejection::StalePartitionEpoch,
                format!(
                    "partition epoch {} is not the current {}",
                    a.partition_epoch.0, current.partition_epoch.0
                ),
            ));
        }
        let isr: BTreeSet<_> = a.isr.iter().collect();
        let invalid = if a.isr.is_empty() {
            Some("the ISR is empty")
        } else if isr.len() != a.isr.len() {
            Some("a broker is listed twice in the ISR")
        } else if !a.isr.iter().all(|b| current.replicas.contains(b)) {
            Some("an ISR member is not a replica")
        } else if !isr.contains(&a.leader) {
            Some("the ISR leaves out the leader")
        } else {
            None
        };
        if let Some(reason) = invalid {
            return Err(refuse(IsrRejection::Invalid, reason.into()));
        }
        // KIP-841: a fenced or unregistered broker may leave the ISR, never join it.
        if let Some(b) = a
            .isr
            .iter()
            .find(|b| !current.isr.contains(b) && self.broker(**b).is_none_or(|r| r.fenced))
        {
            return Err(refuse(
                IsrRejection::IneligibleReplica,
                format!("broker {} is fenced or not registered", b.0),
            ));
        }
        if a.isr == current.isr {
            // Kafka answers an unchanged ISR with the current state and writes nothing.
            return Ok(());
        }
        let partition_epoch = a.partition_epoch.0.checked_add(1).ok_or_else(|| {
            refuse(
                IsrRejection::Invalid,
                "the partition epoch would overflow".into(),
            )
        })?;
        let before = current.clone();
        let mut new = before.clone();
        new.isr = a.isr.clone();
        new.partition_epoch = PartitionEpoch(partition_epoch);
        let t = self.topic_mut(a.topic)?;
        let name = t.name.clone();
        if let Some(slot) = usize::try_from(a.partition.0)
            .ok()
            .and_then(|i| t.partitions.get_mut(i))
        {
            *slot = new.clone();
        }
        delta
            .partition_entry_named(a.topic, &name, a.partition, Some(&before))
            .after = Some(new);
        Ok(())
    }

    /// The records that rebuild this image from an empty one (a snapshot's contents).
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        if let Some(id) = &self.cluster_id {
            out.push(MetadataRecord::ClusterId(id.clone()));
        }
        for b in self.brokers.values() {
            out.push(MetadataRecord::RegisterBroker(b.clone()));
        }
        for t in self.topics.values() {
            out.push(MetadataRecord::Topic {
                name: t.name.clone(),
                id: t.id,
            });
            for (i, p) in t.partitions.iter().enumerate() {
                out.push(MetadataRecord::Partition(PartitionRecord {
                    topic: t.id,
                    partition: PartitionId(i as i32),
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                }));
            }
            for (key, value) in &t.configs {
                out.push(MetadataRecord::TopicConfig {
                    topic: t.id,
                    key: key.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        if let Some(block) = self.producer_ids {
            out.push(MetadataRecord::ProducerIds(block));
        }
        out
    }

    /// A checksummed snapshot of the whole image, so the metadata log can be cut below it.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        records::encode_snapshot(self.offset.0, &self.to_records())
    }

    /// The image a snapshot holds. An empty image's snapshot decodes to the empty image.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<MetadataImage, SnapshotError> {
        let (offset, records) = records::decode_snapshot(bytes)?;
        if records.is_empty() && offset == -1 {
            return Ok(MetadataImage::empty());
        }
        let (image, _) = MetadataImage::empty().apply(Offset(offset), &records)?;
        Ok(image)
    }
}

fn bump(epoch: i32, c: &PartitionChange, reason: &'static str) -> Result<i32, ApplyError> {
    epoch.checked_add(1).ok_or(ApplyError::InvalidPartition {
        topic: c.topic,
        partition: c.partition,
        reason,
    })
}

/// The shape every partition keeps: distinct replicas, ISR among them, leader in the ISR.
fn check_partition(
    topic: Uuid,
    partition: PartitionId,
    p: &PartitionImage,
) -> Result<(), ApplyError> {
    let bad = |reason| {
        Err(ApplyError::InvalidPartition {
            topic,
            partition,
            reason,
        })
    };
    if p.replicas.is_empty() {
        return bad("no replicas");
    }
    let distinct: BTreeSet<_> = p.replicas.iter().collect();
    if distinct.len() != p.replicas.len() {
        return bad("a broker is listed twice among the replicas");
    }
    let isr: BTreeSet<_> = p.isr.iter().collect();
    if isr.len() != p.isr.len() {
        return bad("a broker is listed twice in the ISR");
    }
    if !isr.is_subset(&distinct) {
        return bad("an ISR member is not a replica");
    }
    if let Some(leader) = &p.leader {
        if !isr.contains(leader) {
            return bad("the leader is not in the ISR");
        }
    }
    if p.leader_epoch.0 < 0 || p.partition_epoch.0 < 0 {
        return bad("negative epoch");
    }
    Ok(())
}

/// One partition's state before and after a batch (`None`: it did not exist / no longer does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDelta {
    pub topic_name: String,
    pub before: Option<PartitionImage>,
    pub after: Option<PartitionImage>,
}

/// What one `apply` changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataDelta {
    pub cluster_id_changed: bool,
    pub brokers_changed: BTreeSet<BrokerId>,
    pub topics_created: BTreeSet<Uuid>,
    /// Deleted topics and the names they had.
    pub topics_deleted: BTreeMap<Uuid, String>,
    /// Topics (still existing) whose configuration overrides changed.
    pub configs_changed: BTreeSet<Uuid>,
    /// Every partition created, changed or deleted, keyed by topic id and partition.
    pub partitions: BTreeMap<(Uuid, PartitionId), PartitionDelta>,
    pub producer_ids_changed: bool,
}

/// A partition a broker hosts after a delta, with what it needs to open or change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPartition {
    pub topic_id: Uuid,
    pub topic_name: String,
    pub partition: PartitionId,
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    /// Not hosted by this broker before the delta: its log must be opened (or created).
    pub is_new: bool,
}

/// What one broker must do for a delta.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalChanges {
    /// Partitions it leads after the delta whose state changed.
    pub leads: Vec<LocalPartition>,
    /// Partitions it follows (hosts, does not lead) after the delta whose state changed.
    pub follows: Vec<LocalPartition>,
    /// Partitions it hosted before and no longer does (reassigned away or deleted):
    /// topic id, topic name, partition.
    pub removes: Vec<(Uuid, String, PartitionId)>,
}

impl MetadataDelta {
    fn partition_entry(
        &mut self,
        topic: &TopicImage,
        partition: PartitionId,
        before: Option<&PartitionImage>,
    ) -> &mut PartitionDelta {
        self.partition_entry_named(topic.id, &topic.name, partition, before)
    }

    /// The entry of a partition, created with `before` the first time the batch touches it.
    fn partition_entry_named(
        &mut self,
        topic: Uuid,
        name: &str,
        partition: PartitionId,
        before: Option<&PartitionImage>,
    ) -> &mut PartitionDelta {
        self.partitions
            .entry((topic, partition))
            .or_insert_with(|| PartitionDelta {
                topic_name: name.to_string(),
                before: before.cloned(),
                after: before.cloned(),
            })
    }

    /// The delta that takes `old` to `new` (say, a node's image to a snapshot it installs):
    /// what the two images differ in, as applying the records between them would report it.
    pub fn between(old: &MetadataImage, new: &MetadataImage) -> MetadataDelta {
        let mut delta = MetadataDelta {
            cluster_id_changed: old.cluster_id != new.cluster_id,
            producer_ids_changed: old.producer_ids != new.producer_ids,
            ..MetadataDelta::default()
        };
        if !Arc::ptr_eq(&old.brokers, &new.brokers) {
            let ids: BTreeSet<_> = old.brokers.keys().chain(new.brokers.keys()).collect();
            delta.brokers_changed = ids
                .into_iter()
                .filter(|id| old.brokers.get(id) != new.brokers.get(id))
                .copied()
                .collect();
        }
        let ids: BTreeSet<_> = old.topics.keys().chain(new.topics.keys()).collect();
        for id in ids {
            let (before, after) = (old.topics.get(id), new.topics.get(id));
            if let (Some(b), Some(a)) = (before, after) {
                if Arc::ptr_eq(b, a) {
                    continue;
                }
            }
            match (before, after) {
                (None, Some(_)) => {
                    delta.topics_created.insert(*id);
                }
                (Some(b), None) => {
                    delta.topics_deleted.insert(*id, b.name.clone());
                }
                (Some(b), Some(a)) if b.configs != a.configs => {
                    delta.configs_changed.insert(*id);
                }
                _ => {}
            }
            let count = before
                .map_or(0, |t| t.partitions.len())
                .max(after.map_or(0, |t| t.partitions.len()));
            for i in 0..count {
                let b = before.and_then(|t| t.partitions.get(i));
                let a = after.and_then(|t| t.partitions.get(i));
                if b != a {
                    let name = after.or(before).map_or(String::new(), |t| t.name.clone());
                    delta.partitions.insert(
                        (*id, PartitionId(i as i32)),
                        PartitionDelta {
                            topic_name: name,
                            before: b.cloned(),
                            after: a.cloned(),
                        },
                    );
                }
            }
        }
        delta
    }

    pub fn is_empty(&self) -> bool {
        *self == MetadataDelta::default()
    }

    /// What `broker` must do: the partitions it now leads or follows (new or changed), and
    /// those it no longer hosts. The one thing `PartitionManager` needs from a delta.
    pub fn local_changes(&self, broker: BrokerId) -> LocalChanges {
        let mut out = LocalChanges::default();
        for ((topic_id, partition), d) in &self.partitions {
            let hosted_before = d.before.as_ref().is_some_and(|p| p.hosted_by(broker));
            match &d.after {
                Some(p) if p.hosted_by(broker) => {
                    let local = LocalPartition {
                        topic_id: *topic_id,
                        topic_name: d.topic_name.clone(),
                        partition: *partition,
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        is_new: !hosted_before,
                    };
                    if p.leader == Some(broker) {
                        out.leads.push(local);
                    } else {
                        out.follows.push(local);
                    }
                }
                _ if hosted_before => {
                    out.removes
                        .push((*topic_id, d.topic_name.clone(), *partition))
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
