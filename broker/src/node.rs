//! This node: its identity and configuration, the cluster metadata and the partitions it hosts,
//! and the topic lifecycle (create, auto-create, grow, delete) that changes both together.
//!
//! Invariants:
//! - New partitions are opened (directories made) before the metadata names them, and removed
//!   again if any of them or the metadata write fails: the metadata never names a partition that
//!   could not be opened, so a failed creation cannot leave a broker that refuses to start.
//!   Deletions are written to the metadata (durably) before the partitions are removed. After a
//!   crash the data directory is reconciled to the metadata at start (`PartitionManager::open`
//!   removes orphans, and creates what is missing).
//! - The partitions of all topics together never pass `max.partitions`: a creation that would is
//!   refused (POLICY_VIOLATION) before anything is written.
//! - Deleting a topic also tombstones every group's committed offsets on it (as Kafka does), so
//!   a topic created again under the same name starts with no committed offsets.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{BrokerConfig, RequestLimits, TopicOverrides};
use crate::controller::placement::{self, PlacementBroker, TopicDefaults};
use crate::controller::{random_uuid, validate_topic_name, MetadataStore, TopicMeta};
use crate::error::BrokerError;
use crate::group::offsets::{self, Durable, OffsetStore};
use crate::group::GroupCoordinator;
use crate::ids::BrokerId;
use crate::partition::manager::{PartitionManager, StartupReport};
use crate::producer_ids::ProducerIds;

/// Where clients reach this node.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

pub use crate::controller::placement::NewTopic;

pub struct Node {
    pub id: BrokerId,
    pub endpoint: Endpoint,
    pub rack: Option<String>,
    pub config: Arc<BrokerConfig>,
    /// The limits requests consult, read from `config` once.
    pub request_limits: RequestLimits,
    pub data_dir: PathBuf,
    metadata: Mutex<MetadataStore>,
    pub partitions: PartitionManager,
    /// Durable, never-reused producer ids for InitProducerId.
    pub producer_ids: ProducerIds,
    /// The group coordinator: membership of every consumer group.
    pub groups: Arc<GroupCoordinator>,
    /// Committed offsets and group metadata, in `__consumer_offsets`. Empty until
    /// `offsets.load()` (start-up does it before serving).
    pub offsets: Arc<OffsetStore>,
}

impl Node {
    /// Loads metadata and opens (recovering where needed) every partition under `data_dir`.
    pub fn open(
        config: Arc<BrokerConfig>,
        endpoint: Endpoint,
        data_dir: &Path,
    ) -> Result<(Node, StartupReport), BrokerError> {
        std::fs::create_dir_all(data_dir)?;
        let metadata = MetadataStore::open(data_dir)?;
        let mut metadata = metadata;
        // Before the partitions open: they run with the settings the overrides imply.
        pin_offsets_topic_overrides(&mut metadata)?;
        let (partitions, report) =
            PartitionManager::open(data_dir, Arc::clone(&config), &metadata)?;
        let producer_ids = ProducerIds::open(data_dir)?;
        let offsets = Arc::new(open_offsets_topic(&config, &mut metadata, &partitions)?);
        let rack = Some(config.get("broker.rack").to_string()).filter(|r| !r.is_empty());
        let groups = Arc::new(GroupCoordinator::new(&config, Arc::clone(&offsets)));
        let node = Node {
            id: BrokerId(config.i64("node.id") as i32),
            endpoint,
            rack,
            data_dir: data_dir.to_path_buf(),
            request_limits: RequestLimits::from_config(&config),
            config,
            metadata: Mutex::new(metadata),
            partitions,
            producer_ids,
            groups,
            offsets,
        };
        Ok((node, report))
    }

    /// The metadata, locked. Admin and Metadata requests only; never the produce/fetch path.
    pub fn metadata(&self) -> MutexGuard<'_, MetadataStore> {
        self.metadata.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates a new topic without creating it; returns its metadata as it would be.
    pub fn check_new_topic(
        &self,
        metadata: &MetadataStore,
        t: &NewTopic,
    ) -> Result<TopicMeta, BrokerError> {
        validate_topic_name(&t.name).map_err(BrokerError::InvalidTopic)?;
        if metadata.topic(&t.name).is_some() {
            return Err(BrokerError::TopicAlreadyExists(t.name.clone()));
        }
        let defaults = TopicDefaults {
            partitions: self.config.i64("num.partitions") as i32,
            replication_factor: self.config.i64("default.replication.factor") as i16,
        };
        let partitions =
            placement::plan_new_topic(t, defaults, &self.placement_brokers())?.partitions;
        let overrides =
            TopicOverrides::parse(t.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        self.check_partition_limit(metadata, i64::from(partitions))?;
        Ok(TopicMeta {
            name: t.name.clone(),
            id: random_uuid(),
            partitions,
            overrides,
        })
    }

    /// Refuses `more` partitions if the broker would then host more than `max.partitions`.
    fn check_partition_limit(
        &self,
        metadata: &MetadataStore,
        more: i64,
    ) -> Result<(), BrokerError> {
        let limit = self.config.i64("max.partitions");
        let hosted: i64 = metadata.topics().map(|t| i64::from(t.partitions)).sum();
        if hosted.saturating_add(more) > limit {
            return Err(BrokerError::PolicyViolation(format!(
                "{more} more partitions would make {} on this broker, past max.partitions {limit} \
                 ({hosted} hosted now)",
                hosted.saturating_add(more)
            )));
        }
        Ok(())
    }

    /// The brokers placement may use: this node alone, until the cluster's image replaces it.
    fn placement_brokers(&self) -> [PlacementBroker; 1] {
        [PlacementBroker {
            id: self.id,
            rack: self.rack.clone(),
            fenced: false,
        }]
    }

    /// Creates a topic: its partitions, then the metadata (durable) that names them, then serves
    /// them. A failure at any step removes what was made.
    pub fn create_topic(&self, t: &NewTopic) -> Result<TopicMeta, BrokerError> {
        let mut metadata = self.metadata();
        let meta = self.check_new_topic(&metadata, t)?;
        self.partitions
            .add_partitions(&meta, || metadata.create_topic(meta.clone()))?;
        tracing::info!(topic = %meta.name, partitions = meta.partitions, "created topic");
        Ok(meta)
    }

    /// Auto-creation for Metadata requests, when `auto.create.topics.enable` allows it.
    pub fn auto_create_topic(&self, name: &str) -> Result<TopicMeta, BrokerError> {
        let t = NewTopic {
            name: name.to_string(),
            partitions: -1,
            replication_factor: -1,
            assignments: vec![],
            configs: vec![],
        };
        match self.create_topic(&t) {
            // Created meanwhile by another request: fine.
            Err(BrokerError::TopicAlreadyExists(_)) => self
                .metadata()
                .topic(name)
                .cloned()
                .ok_or(BrokerError::UnknownTopicOrPartition),
            other => other,
        }
    }

    /// Deletes a topic: metadata first (durable), then its data, then the committed offsets of
    /// every group on it (tombstones appended here; await the returned [`Durable`] to know they
    /// are on disk). The offsets are removed under the metadata lock, so no topic of the same
    /// name can be created in between and lose offsets committed to it.
    pub fn delete_topic(&self, name: &str) -> Result<(TopicMeta, Durable), BrokerError> {
        if name == offsets::TOPIC {
            return Err(BrokerError::InvalidTopic(format!(
                "Cannot delete the internal topic {name}"
            )));
        }
        let mut metadata = self.metadata();
        let meta = metadata
            .delete_topic(name)?
            .ok_or(BrokerError::UnknownTopicOrPartition)?;
        self.partitions.remove_topic(name)?;
        // The topic is gone whatever happens here: a failed tombstone write is logged, not
        // reported, as Kafka's own cleanup of a deleted topic's offsets is (its offsets would
        // come back after a restart; deleting the groups removes them).
        let (offsets, durable) = match self.offsets.append_topic_deletes(name) {
            Ok(written) => written,
            Err(e) => {
                tracing::error!(topic = name, error = %e, "deleting the topic's committed offsets failed");
                (0, Durable::none())
            }
        };
        tracing::info!(topic = name, offsets, "deleted topic");
        Ok((meta, durable))
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<i32>]>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        if name == offsets::TOPIC {
            // Groups are placed by hash modulo the count: changing it would lose them.
            return Err(BrokerError::InvalidPartitions(format!(
                "the partition count of the internal topic {name} is fixed"
            )));
        }
        let mut metadata = self.metadata();
        let current = metadata
            .topic(name)
            .ok_or(BrokerError::UnknownTopicOrPartition)?
            .partitions;
        if count <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic currently has {current} partitions; {count} would not increase it"
            )));
        }
        if let Some(a) = assignments {
            if a.len() != (count - current) as usize {
                return Err(BrokerError::InvalidReplicaAssignment(format!(
                    "{} assignments for {} new partitions",
                    a.len(),
                    count - current
                )));
            }
            let numbered: Vec<(i32, Vec<i32>)> = a
                .iter()
                .enumerate()
                .map(|(i, r)| (current + i as i32, r.clone()))
                .collect();
            // Every topic on one node has one replica per partition.
            placement::check_assignments(&self.placement_brokers(), current, &numbered, Some(1))?;
        }
        self.check_partition_limit(&metadata, i64::from(count - current))?;
        if validate_only {
            return Ok(());
        }
        let mut meta = metadata
            .topic(name)
            .cloned()
            .ok_or(BrokerError::UnknownTopicOrPartition)?;
        meta.partitions = count;
        // As for a new topic: partitions first, then the metadata naming them.
        self.partitions
            .add_partitions(&meta, || metadata.set_partitions(name, count))?;
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }
}

/// Overrides `__consumer_offsets` always has. Retention is off, by time and by size: without
/// compaction, deleting old segments would forget groups that committed long ago, so neither
/// `log.retention.ms` nor `log.retention.bytes` of the broker may apply to it. (No API alters a
/// topic's configuration, so nothing else can change them: AlterConfigs and
/// IncrementalAlterConfigs are not supported.)
const OFFSETS_TOPIC_PINNED: [(&str, &str); 2] = [("retention.ms", "-1"), ("retention.bytes", "-1")];

/// Gives an existing `__consumer_offsets` any pinned override it lacks (one created by an older
/// version had only `retention.ms`), durably, before its partitions open.
fn pin_offsets_topic_overrides(metadata: &mut MetadataStore) -> Result<(), BrokerError> {
    let Some(meta) = metadata.topic(offsets::TOPIC) else {
        return Ok(());
    };
    let pinned = |o: &TopicOverrides| {
        OFFSETS_TOPIC_PINNED
            .iter()
            .all(|(k, v)| o.0.get(*k).map(String::as_str) == Some(*v))
    };
    if pinned(&meta.overrides) {
        return Ok(());
    }
    let mut overrides = meta.overrides.clone();
    for (k, v) in OFFSETS_TOPIC_PINNED {
        overrides.0.insert(k.to_string(), v.to_string());
    }
    metadata.set_overrides(offsets::TOPIC, overrides)?;
    tracing::info!(
        topic = offsets::TOPIC,
        "retention of the internal topic turned off"
    );
    Ok(())
}

/// Creates `__consumer_offsets` if it is missing (partitions, then metadata, as any topic)
/// and returns the offset store over its partitions. Its retention is off
/// ([`OFFSETS_TOPIC_PINNED`]).
fn open_offsets_topic(
    config: &BrokerConfig,
    metadata: &mut MetadataStore,
    partitions: &PartitionManager,
) -> Result<OffsetStore, BrokerError> {
    let meta = match metadata.topic(offsets::TOPIC) {
        Some(meta) => meta.clone(),
        None => {
            let segment_bytes = config.get("offsets.topic.segment.bytes").to_string();
            let overrides = TopicOverrides::parse(
                OFFSETS_TOPIC_PINNED
                    .into_iter()
                    .chain([("segment.bytes", segment_bytes.as_str())]),
            )
            .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
            let meta = TopicMeta {
                name: offsets::TOPIC.to_string(),
                id: random_uuid(),
                partitions: config.i64("offsets.topic.num.partitions") as i32,
                overrides,
            };
            partitions.add_partitions(&meta, || metadata.create_topic(meta.clone()))?;
            tracing::info!(
                topic = offsets::TOPIC,
                partitions = meta.partitions,
                "created topic"
            );
            meta
        }
    };
    let list = (0..meta.partitions)
        .map(|p| {
            partitions.partition(offsets::TOPIC, p).ok_or_else(|| {
                BrokerError::Storage(std::io::Error::other(format!(
                    "{} partition {p} is missing",
                    offsets::TOPIC
                )))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OffsetStore::new(list))
}

/// A node on 127.0.0.1:9092 over `dir`, the defaults changed by `settings` (unit tests).
#[cfg(test)]
pub(crate) fn open_for_test(dir: &Path, settings: &[(&str, &str)]) -> Node {
    let mut config = BrokerConfig::default();
    for (k, v) in settings {
        config.set(k, v).unwrap();
    }
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: 9092,
    };
    Node::open(Arc::new(config), endpoint, dir).unwrap().0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_node(dir: &Path, settings: &[(&str, &str)]) -> Node {
        open_for_test(dir, settings)
    }

    fn new_topic(name: &str, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: -1,
            assignments: vec![],
            configs: vec![],
        }
    }

    fn partition_dirs(dir: &Path, topic: &str) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                let e = e.as_ref().unwrap();
                e.file_type().unwrap().is_dir()
                    && e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{topic}-"))
            })
            .count()
    }

    #[test]
    fn partitions_past_max_partitions_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(dir.path(), &[("max.partitions", "100")]);
        // __consumer_offsets holds 50 of the 100.
        let started = std::time::Instant::now();
        let err = node
            .create_topic(&new_topic("huge", 10_000_000))
            .unwrap_err();
        assert_eq!(err.code(), 44, "{err}");
        assert!(err.to_string().contains("max.partitions"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(node.metadata().topic("huge").is_none());
        assert_eq!(partition_dirs(dir.path(), "huge"), 0);

        node.create_topic(&new_topic("fits", 50)).unwrap();
        let err = node.create_topic(&new_topic("one-more", 1)).unwrap_err();
        assert_eq!(err.code(), 44);
        let _durable = node.delete_topic("fits").unwrap();
        node.create_topic(&new_topic("grows", 40)).unwrap();
        let err = node
            .create_partitions("grows", 51, None, false)
            .unwrap_err();
        assert_eq!(err.code(), 44, "{err}");
        let err = node.create_partitions("grows", 51, None, true).unwrap_err();
        assert_eq!(err.code(), 44, "validate_only is refused alike");
        assert_eq!(node.metadata().topic("grows").unwrap().partitions, 40);
        assert_eq!(partition_dirs(dir.path(), "grows"), 40);
        node.create_partitions("grows", 50, None, false).unwrap();
        assert_eq!(node.partitions.count(), 100);
    }

    /// Placement moved to `controller::placement`; on one node it answers as it did.
    #[test]
    fn on_one_node_only_this_node_may_hold_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(dir.path(), &[]);
        let me = node.id.0;
        let assigned = |assignments: Vec<(i32, Vec<i32>)>| NewTopic {
            assignments,
            partitions: -1,
            ..new_topic("assigned", -1)
        };
        let code = |t: &NewTopic| {
            node.check_new_topic(&node.metadata(), t)
                .unwrap_err()
                .code()
        };
        assert_eq!(code(&assigned(vec![(0, vec![me + 1])])), 39);
        assert_eq!(code(&assigned(vec![(0, vec![me, me])])), 39);
        assert_eq!(code(&assigned(vec![(1, vec![me])])), 39);
        assert_eq!(
            code(&NewTopic {
                replication_factor: 2,
                ..new_topic("rf", 1)
            }),
            38
        );
        assert_eq!(
            code(&NewTopic {
                replication_factor: 0,
                ..new_topic("rf", 1)
            }),
            38
        );
        assert_eq!(code(&new_topic("none", 0)), 37);
        let meta = node
            .create_topic(&assigned(vec![(0, vec![me]), (1, vec![me])]))
            .unwrap();
        assert_eq!(meta.partitions, 2);
        let err = node
            .create_partitions("assigned", 3, Some(&[vec![me + 1]]), false)
            .unwrap_err();
        assert_eq!(err.code(), 39);
        node.create_partitions("assigned", 3, Some(&[vec![me]]), false)
            .unwrap();
    }

    #[test]
    fn auto_creation_past_max_partitions_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(
            dir.path(),
            &[("max.partitions", "60"), ("num.partitions", "20")],
        );
        let err = node.auto_create_topic("auto").unwrap_err();
        assert_eq!(err.code(), 44);
        assert!(node.metadata().topic("auto").is_none());
    }

    /// The story of the issue: a creation fails part way (there, out of file descriptors; here a
    /// file sits where partition 300's directory must go). Nothing of it may stay behind, and the
    /// broker must start again.
    #[test]
    fn a_creation_that_fails_part_way_leaves_nothing_and_the_broker_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(dir.path(), &[]);
        std::fs::write(dir.path().join("big-300"), b"in the way").unwrap();
        let err = node.create_topic(&new_topic("big", 600)).unwrap_err();
        assert_eq!(err.code(), 56, "{err}");
        assert!(node.metadata().topic("big").is_none());
        assert!(node.partitions.topic("big").is_none());
        assert_eq!(partition_dirs(dir.path(), "big"), 0);
        node.create_topic(&new_topic("grown", 2)).unwrap();
        std::fs::write(dir.path().join("grown-5"), b"in the way").unwrap();
        assert_eq!(
            node.create_partitions("grown", 8, None, false)
                .unwrap_err()
                .code(),
            56
        );
        assert_eq!(node.metadata().topic("grown").unwrap().partitions, 2);
        assert_eq!(partition_dirs(dir.path(), "grown"), 2);
        node.partitions.shutdown().unwrap();
        drop(node);

        let node = open_node(dir.path(), &[]);
        assert!(node.metadata().topic("big").is_none());
        std::fs::remove_file(dir.path().join("big-300")).unwrap();
        node.create_topic(&new_topic("big", 600)).unwrap();
        node.partitions.shutdown().unwrap();
        drop(node);
        let node = open_node(dir.path(), &[]);
        assert_eq!(node.partitions.topic("big").unwrap().len(), 600);
    }
}

#[cfg(test)]
mod offsets_topic_tests;
