//! This node: its identity and configuration, its member of the controller quorum and the
//! metadata image it follows, the partitions it hosts, and the topic lifecycle (create,
//! auto-create, grow, delete) as this node proposes it to the controller.
//!
//! A topic change is a batch of metadata records committed by the quorum; every broker (this one
//! included) then applies the new image to its partitions in [`Node::catch_up`]: it opens what it
//! now hosts and removes what it no longer does. A broker answers a topic change only after its own
//! partitions follow the committed image.
//!
//! Invariants:
//! - `catch_up` is the only place partitions are opened or removed after start, one image at a
//!   time, in offset order; the partitions reflect `applied` (an image offset) or a newer image;
//! - the proposing broker opens its own replicas of new partitions before it proposes them (and
//!   removes them if the proposal fails): a creation this broker cannot serve (no disk, a file in
//!   the way) is refused before anything is committed. Other brokers open theirs as they apply
//!   the image; one that cannot logs it and does not serve that partition;
//! - the partitions of all topics together never pass `max.partitions` on any broker: a creation
//!   that would is refused (POLICY_VIOLATION) before anything is proposed;
//! - deleting a topic also tombstones every group's committed offsets on it (as Kafka does), so
//!   a topic created again under the same name starts with no committed offsets.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::clock::now_ms;
use crate::config::FetcherSettings;
use crate::config::{BrokerConfig, BrokerSettings, RequestLimits, TopicOverrides};
use crate::controller::image::{MetadataDelta, MetadataImage};
use crate::controller::member::{self, Controller};
use crate::controller::placement::{self, PlacementBroker, TopicDefaults};
use crate::controller::records::AlterIsr;
use crate::controller::records::{BrokerEndpoint, MetadataRecord, PartitionRecord};
use crate::controller::{random_uuid, upgrade, validate_topic_name, MetadataStore};
use crate::error::BrokerError;
use crate::group::offsets::{self, Durable, OffsetStore};
use crate::group::GroupCoordinator;
use crate::ids::{BrokerId, LeaderEpoch, PartitionEpoch, PartitionId};
use crate::partition::manager::{PartitionManager, StartupReport};
use crate::producer_ids::ProducerIds;
use crate::replica::fetcher::FetcherManager;
use crate::replica::{Replica, ReplicaManager};
use std::time::Duration;

/// Where clients reach this node.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

pub use crate::controller::placement::NewTopic;

pub use crate::controller::records::{CLIENT_LISTENER, CONTROLLER_LISTENER};

pub struct Node {
    pub id: BrokerId,
    pub endpoint: Endpoint,
    pub rack: Option<String>,
    pub config: Arc<BrokerConfig>,
    /// The limits requests consult, read from `config` once (the same as `settings.requests`).
    pub request_limits: RequestLimits,
    /// Every broker setting code consults, read from `config` once at start.
    pub settings: BrokerSettings,
    pub data_dir: PathBuf,
    /// This node's quorum member and the metadata image it applied.
    pub controller: Controller,
    pub partitions: PartitionManager,
    /// The role of each hosted partition (leader or follower), its ISR and high watermark, and
    /// the fetchers of the ones it follows: what Produce, Fetch and ListOffsets go through.
    pub replicas: ReplicaManager,
    /// Producer ids for InitProducerId, in blocks the controller hands out.
    pub producer_ids: ProducerIds,
    /// The group coordinator: membership of every consumer group.
    pub groups: Arc<GroupCoordinator>,
    /// Committed offsets and group metadata, in `__consumer_offsets`. Empty until
    /// `offsets.load()` (start-up does it before serving).
    pub offsets: Arc<OffsetStore>,
    /// The image the partitions were last brought in line with (`catch_up`).
    applied: Mutex<Arc<MetadataImage>>,
}

/// What a successful creation answers.
#[derive(Debug, Clone)]
pub struct CreatedTopic {
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    pub overrides: TopicOverrides,
}

impl Node {
    /// Starts this node's quorum member, upgrades a single-node data directory's `meta/topics`
    /// into the metadata log, registers this broker, and opens (recovering where needed) every
    /// partition the image says it hosts.
    pub async fn open(
        config: Arc<BrokerConfig>,
        endpoint: Endpoint,
        data_dir: &Path,
    ) -> Result<(Node, StartupReport), BrokerError> {
        let broker_settings = BrokerSettings::from_config(&config)
            .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        Node::open_with(config, broker_settings, endpoint, data_dir).await
    }

    /// [`Node::open`] with `broker_settings` already read from `config` (start-up reads them
    /// once, before anything binds).
    pub async fn open_with(
        config: Arc<BrokerConfig>,
        broker_settings: BrokerSettings,
        endpoint: Endpoint,
        data_dir: &Path,
    ) -> Result<(Node, StartupReport), BrokerError> {
        std::fs::create_dir_all(data_dir)?;
        let id = broker_settings.node_id;
        let settings = member::settings_from_config(&config)
            .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        let controller_addr = settings.listen;
        let legacy = MetadataStore::open_existing(data_dir)?;
        let controller = Controller::start(settings, data_dir, id).await?;
        let rack = broker_settings.rack.clone();
        let endpoints = vec![
            BrokerEndpoint {
                listener: CLIENT_LISTENER.into(),
                host: endpoint.host.clone(),
                port: endpoint.port,
            },
            BrokerEndpoint {
                listener: CONTROLLER_LISTENER.into(),
                host: controller_addr.ip().to_string(),
                port: controller.quorum().local_addr().port(),
            },
        ];
        let first = match &legacy {
            Some(store) => upgrade_records(store, &controller, id, data_dir)?,
            None => vec![],
        };
        controller.register(endpoints, rack.clone(), first).await?;
        if let Some(store) = legacy {
            store.retire()?;
            tracing::info!(
                "upgraded: the topics of meta/topics are now the first records of the metadata log"
            );
        }
        // Before the partitions open: they run with the settings the overrides imply.
        pin_offsets_topic_overrides(&controller).await?;
        let image = controller.image();
        let (partitions, report) = PartitionManager::open(
            data_dir,
            Arc::clone(&config),
            broker_settings.log,
            &image,
            id,
        )?;
        let fetchers = FetcherManager::new(
            id,
            FetcherSettings::from_config(&config)
                .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?,
        );
        let replicas = ReplicaManager::new(
            id,
            Arc::clone(&config),
            broker_settings.replication.replica_lag_time_max_ms,
            fetchers,
        );
        let hosted = MetadataDelta::between(&MetadataImage::empty(), &image).local_changes(id);
        replicas.apply(&hosted, &image, &partitions, now_ms())?;
        let producer_ids = ProducerIds::new(id);
        // Placeholders until `__consumer_offsets` exists (creating it takes a node).
        let offsets = Arc::new(OffsetStore::new(vec![]));
        let groups = Arc::new(GroupCoordinator::new(
            &broker_settings.groups,
            Arc::clone(&offsets),
        ));
        let mut node = Node {
            id,
            endpoint,
            rack,
            data_dir: data_dir.to_path_buf(),
            request_limits: broker_settings.requests,
            settings: broker_settings,
            config,
            controller,
            partitions,
            replicas,
            producer_ids,
            groups,
            offsets,
            applied: Mutex::new(image),
        };
        node.ensure_offsets_topic().await?;
        node.offsets = Arc::new(node.offsets_store()?);
        node.groups = Arc::new(GroupCoordinator::new(
            &node.settings.groups,
            Arc::clone(&node.offsets),
        ));
        Ok((node, report))
    }

    /// The metadata image this node follows (no lock).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.controller.image()
    }

    /// The brokers placement may use: every registered broker of the image.
    fn placement_brokers(image: &MetadataImage) -> Vec<PlacementBroker> {
        image
            .brokers()
            .values()
            .map(|b| PlacementBroker {
                id: b.id,
                rack: b.rack.clone(),
                fenced: b.fenced,
            })
            .collect()
    }

    /// Validates a new topic against `image` without creating it; returns the records that
    /// would create it.
    pub fn check_new_topic(
        &self,
        image: &MetadataImage,
        t: &NewTopic,
    ) -> Result<(CreatedTopic, Vec<MetadataRecord>), BrokerError> {
        validate_topic_name(&t.name).map_err(BrokerError::InvalidTopic)?;
        if image.topic_by_name(&t.name).is_some() {
            return Err(BrokerError::TopicAlreadyExists(t.name.clone()));
        }
        let defaults = TopicDefaults {
            partitions: self.settings.topics.partitions,
            replication_factor: self.settings.topics.replication_factor,
        };
        let brokers = Self::placement_brokers(image);
        let plan = placement::plan_new_topic(t, defaults, &brokers)?;
        let overrides =
            TopicOverrides::parse(t.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        // The count alone first: a huge one is refused before any placement is computed.
        self.check_partition_limit(
            image,
            i64::from(plan.partitions) * i64::from(plan.replication_factor),
            &[],
        )?;
        let start = image.topics().count();
        let assignment = plan.assignment(&brokers, start)?;
        self.check_partition_limit(image, 0, &assignment)?;
        let id = random_uuid();
        let records = topic_records(&t.name, id, 0, &assignment, &overrides);
        Ok((
            CreatedTopic {
                id,
                partitions: plan.partitions,
                replication_factor: plan.replication_factor,
                overrides,
            },
            records,
        ))
    }

    /// Refuses a change that would make any broker host more than `max.partitions` replicas:
    /// `more` replicas on one broker (a bound before placement), or the replicas of `added`.
    fn check_partition_limit(
        &self,
        image: &MetadataImage,
        more: i64,
        added: &[Vec<BrokerId>],
    ) -> Result<(), BrokerError> {
        let limit = self.settings.topics.partitions_max;
        let mut hosted: std::collections::BTreeMap<BrokerId, i64> = Default::default();
        for t in image.topics() {
            for p in &t.partitions {
                for r in &p.replicas {
                    *hosted.entry(*r).or_default() += 1;
                }
            }
        }
        let mut after = hosted.clone();
        for replicas in added {
            for r in replicas {
                *after.entry(*r).or_default() += 1;
            }
        }
        let busiest =
            |m: &std::collections::BTreeMap<BrokerId, i64>| m.values().copied().max().unwrap_or(0);
        let now = busiest(&hosted);
        let would = busiest(&after).max(now.saturating_add(more));
        if would > limit {
            let added_here = would - now;
            return Err(BrokerError::PolicyViolation(format!(
                "{added_here} more partitions would make {would} on a broker, past max.partitions \
                 {limit} ({now} hosted now)"
            )));
        }
        Ok(())
    }

    /// Creates a topic: opens this broker's replicas of it, commits its records, then waits until
    /// this node serves them. A failure before the commit removes what was opened.
    pub async fn create_topic(&self, t: &NewTopic) -> Result<CreatedTopic, BrokerError> {
        // An earlier topic of the name deleted, but not yet removed here, would hold its
        // partitions' directories.
        if let Err(e) = self.catch_up_in_place() {
            tracing::warn!(error = %e, "following the metadata image before a creation failed");
        }
        let image = self.image();
        let (created, records) = self.check_new_topic(&image, t)?;
        let prepared = self.partitions.prepare(
            &t.name,
            created.id,
            &created.overrides,
            &hosted_here(&records, self.id),
        )?;
        match self.controller.propose(&records).await {
            Ok(_) => prepared.keep(),
            // Lost a race (the same name created meanwhile): answer as the newer image says.
            Err(BrokerError::ControllerRejected(why)) => {
                drop(prepared);
                let image = self.image();
                self.check_new_topic(&image, t)?;
                return Err(BrokerError::InvalidRequest(why));
            }
            Err(e) => return Err(e),
        }
        let _ = self.catch_up_in_place()?;
        tracing::info!(topic = %t.name, partitions = created.partitions, "created topic");
        Ok(created)
    }

    /// Auto-creation for Metadata requests, when `auto.create.topics.enable` allows it.
    pub async fn auto_create_topic(&self, name: &str) -> Result<(), BrokerError> {
        let t = NewTopic {
            name: name.to_string(),
            partitions: -1,
            replication_factor: -1,
            assignments: vec![],
            configs: vec![],
        };
        match self.create_topic(&t).await {
            // Created meanwhile by another request: fine.
            Err(BrokerError::TopicAlreadyExists(_)) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Deletes a topic: commits its removal, then (in `catch_up`) this node removes its data and
    /// the committed offsets of every group on it (await the returned [`Durable`] to know the
    /// tombstones are on disk).
    pub async fn delete_topic(&self, name: &str) -> Result<(Uuid, Durable), BrokerError> {
        let id = self
            .image()
            .topic_by_name(name)
            .map(|t| t.id)
            .ok_or(BrokerError::UnknownTopicOrPartition)?;
        self.delete_topic_id(name, id).await
    }

    /// Deletes topic `id` (named `name`): the very topic asked for, never a later one that took
    /// its name (a removal of an id the cluster no longer has is refused).
    pub async fn delete_topic_id(
        &self,
        name: &str,
        id: Uuid,
    ) -> Result<(Uuid, Durable), BrokerError> {
        if name == offsets::TOPIC {
            return Err(BrokerError::InvalidTopic(format!(
                "Cannot delete the internal topic {name}"
            )));
        }
        match self
            .controller
            .propose(&[MetadataRecord::RemoveTopic { id }])
            .await
        {
            Ok(_) => {}
            // Deleted meanwhile.
            Err(BrokerError::ControllerRejected(_)) => {
                return Err(BrokerError::UnknownTopicOrPartition)
            }
            Err(e) => return Err(e),
        }
        // Another caller may have applied the removal (and appended the tombstones) first.
        let _ = self.catch_up_in_place()?;
        tracing::info!(topic = name, "deleted topic");
        Ok((id, self.offsets.everything_appended()))
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(
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
        let image = self.image();
        let topic = image
            .topic_by_name(name)
            .ok_or(BrokerError::UnknownTopicOrPartition)?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic currently has {current} partitions; {count} would not increase it"
            )));
        }
        let rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
        let brokers = Self::placement_brokers(&image);
        self.check_partition_limit(&image, i64::from(count - current) * rf as i64, &[])?;
        let added = match assignments {
            Some(a) => {
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
                placement::check_assignments(&brokers, current, &numbered, Some(rf))?
            }
            None => placement::assign_replicas(
                &brokers,
                current,
                count - current,
                rf as i16,
                image.topics().count(),
            )?,
        };
        self.check_partition_limit(&image, 0, &added)?;
        if validate_only {
            return Ok(());
        }
        let records: Vec<MetadataRecord> = added
            .iter()
            .enumerate()
            .map(|(i, replicas)| partition_record(topic.id, current + i as i32, replicas))
            .collect();
        let prepared = self.partitions.prepare(
            name,
            topic.id,
            &topic.overrides(),
            &hosted_here(&records, self.id),
        )?;
        match self.controller.propose(&records).await {
            Ok(_) => prepared.keep(),
            Err(BrokerError::ControllerRejected(why)) => {
                return Err(BrokerError::InvalidPartitions(format!(
                    "the topic changed meanwhile: {why}"
                )))
            }
            Err(e) => return Err(e),
        }
        let _ = self.catch_up_in_place()?;
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    /// Brings the partitions in line with the newest image: opens what this node now hosts,
    /// removes what it no longer does, and tombstones the committed offsets of deleted topics.
    /// Serialised: one image at a time. Returns the tombstones' durability.
    pub fn catch_up(&self) -> Result<Durable, BrokerError> {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let image = self.image();
        if image.offset() <= applied.offset() {
            return Ok(Durable::none());
        }
        let delta = MetadataDelta::between(&applied, &image);
        let changes = delta.local_changes(self.id);
        self.replicas.stop_fetching_removed(&changes);
        let opened = self.partitions.apply(&changes, &image);
        // Roles follow even when a partition failed to open (the others changed all the same).
        let roles = self
            .replicas
            .apply(&changes, &image, &self.partitions, now_ms());
        let opened = opened.and(roles);
        // The group coordinator follows the leadership of `__consumer_offsets` partitions.
        if let Ok(leads) = self.offsets_leads() {
            let changes = self.offsets.follow_roles(&leads);
            let unloaded = self.groups.unload(&changes.unloaded);
            self.groups.load(changes.groups);
            let report = changes.report;
            if !changes.unloaded.is_empty() {
                tracing::info!(
                    partitions = changes.unloaded.len(),
                    groups = unloaded,
                    "unloaded {}",
                    offsets::TOPIC
                );
            }
            if report.partitions > 0 {
                tracing::info!(
                    partitions = report.partitions,
                    groups = report.groups,
                    offsets = report.offsets,
                    elapsed_ms = report.elapsed.as_millis() as u64,
                    "loaded {}",
                    offsets::TOPIC
                );
            }
        }
        let mut durable = Durable::none();
        for name in delta.topics_deleted.values() {
            match self.offsets.append_topic_deletes(name) {
                Ok((_, d)) => durable = d,
                // The topic is gone whatever happens here: a failed tombstone write is logged, as
                // Kafka's own cleanup of a deleted topic's offsets is.
                Err(e) => {
                    tracing::error!(topic = %name, error = %e, "deleting the topic's committed offsets failed")
                }
            }
        }
        // A partition that did not open (no space, a file in the way) is tried again: the image
        // counts as applied only once all of it is, and the next call redoes the delta (what
        // was done is found done).
        if opened.is_ok() {
            *applied = image;
        }
        opened.map(|()| durable)
    }

    /// Tombstones the committed offsets of every topic the image no longer has (deleted while
    /// this broker was down, or before it wrote the tombstones), once the offsets are loaded: a
    /// topic created again under the name must not resume from them. Waits until they are on
    /// disk; a failure is logged (a later start tries again).
    pub async fn forget_offsets_of_deleted_topics(&self) {
        let image = self.image();
        let mut gone: std::collections::BTreeSet<String> = Default::default();
        for group in self.offsets.groups_with_offsets() {
            for (topic, _, _) in self.offsets.group_offsets(&group) {
                if image.topic_by_name(&topic).is_none() {
                    gone.insert(topic);
                }
            }
        }
        for topic in gone {
            match self.offsets.append_topic_deletes(&topic) {
                Ok((count, durable)) => {
                    durable.wait().await;
                    tracing::info!(
                        topic,
                        offsets = count,
                        "deleted the committed offsets of a deleted topic"
                    );
                }
                Err(e) => {
                    tracing::error!(topic, error = %e, "deleting the committed offsets of a deleted topic failed")
                }
            }
        }
    }

    /// [`Node::catch_up`] from an async caller: on a multi-threaded runtime the worker thread is
    /// handed over while it blocks (opening or removing partitions waits on the disk), so other
    /// requests, the quorum and heartbeats keep running.
    fn catch_up_in_place(&self) -> Result<Durable, BrokerError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| self.catch_up()),
            _ => self.catch_up(),
        }
    }

    /// The replication factor `__consumer_offsets` is created with: `offsets.topic.replication.factor`,
    /// but no more than the unfenced brokers registered now (Kafka's auto-creation rule), so a
    /// single node runs with 1.
    fn offsets_replication_factor(&self) -> i16 {
        let brokers = Self::placement_brokers(&self.image())
            .iter()
            .filter(|b| !b.fenced)
            .count();
        let brokers = i16::try_from(brokers).unwrap_or(i16::MAX).max(1);
        self.settings.topics.offsets_replication_factor.min(brokers)
    }

    /// [`Node::offsets_replication_factor`] once as many brokers as the rule can use have
    /// registered: a cluster starting all at once would otherwise create the topic with as many
    /// replicas as brokers happened to be up. Waits (on image changes, at most
    /// [`OFFSETS_TOPIC_BROKERS_WAIT`]) for min(`offsets.topic.replication.factor`, controller
    /// voters) unfenced brokers, or for another broker to create the topic; a single node waits
    /// for nothing.
    async fn offsets_replication_factor_once_registered(&self) -> i16 {
        let voters = self.controller.quorum().status().voters.len().max(1);
        let configured =
            usize::try_from(self.settings.topics.offsets_replication_factor).unwrap_or(1);
        let want = configured.min(voters);
        let mut published = self.controller.view().subscribe();
        let deadline = tokio::time::Instant::now() + OFFSETS_TOPIC_BROKERS_WAIT;
        loop {
            let image = self.image();
            let unfenced = Self::placement_brokers(&image)
                .iter()
                .filter(|b| !b.fenced)
                .count();
            if unfenced >= want || image.topic_by_name(offsets::TOPIC).is_some() {
                break;
            }
            match tokio::time::timeout_at(deadline, published.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    tracing::info!(
                        brokers = unfenced,
                        wanted = want,
                        "creating {} with the brokers registered so far",
                        offsets::TOPIC
                    );
                    break;
                }
            }
        }
        self.offsets_replication_factor()
    }

    /// Creates `__consumer_offsets` if the cluster has none (an existing one had its pinned
    /// overrides made sure of at start, before its partitions opened).
    async fn ensure_offsets_topic(&self) -> Result<(), BrokerError> {
        if self.image().topic_by_name(offsets::TOPIC).is_none() {
            let segment_bytes = self.settings.topics.offsets_segment_bytes.to_string();
            let configs = OFFSETS_TOPIC_PINNED
                .into_iter()
                .chain([("segment.bytes", segment_bytes.as_str())])
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let t = NewTopic {
                name: offsets::TOPIC.to_string(),
                partitions: self.settings.topics.offsets_partitions,
                replication_factor: self.offsets_replication_factor_once_registered().await,
                assignments: vec![],
                configs,
            };
            // At start the quorum may be between leaders: wait for one, as registration did.
            let mut waited = std::time::Instant::now();
            loop {
                match self.create_topic(&t).await {
                    Ok(_) | Err(BrokerError::TopicAlreadyExists(_)) => break,
                    Err(
                        e @ (BrokerError::NotController(_) | BrokerError::ControllerTimeout(_)),
                    ) => {
                        if waited.elapsed() >= STARTUP_WAIT_LOG_INTERVAL {
                            tracing::info!(error = %e, "waiting for the controller quorum to create {}", offsets::TOPIC);
                            waited = std::time::Instant::now();
                        }
                        tokio::time::sleep(STARTUP_RETRY_INTERVAL).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let _ = self.catch_up_in_place()?;
        Ok(())
    }

    /// Follows the image until the process ends: each newly applied image is brought to the
    /// partitions (off the runtime's threads: opening and removing partitions blocks).
    pub async fn follow_metadata(self: Arc<Self>) {
        // One task: aborting it (shutdown) stops the ISR and lag work too.
        tokio::join!(
            Arc::clone(&self).apply_images(),
            Arc::clone(&self).commit_isr_changes(),
            Arc::clone(&self).check_replica_lag(),
        );
    }

    async fn apply_images(self: Arc<Self>) {
        let mut published = self.controller.view().subscribe();
        // What was published before the subscription (during start-up) counts as seen: apply it.
        let mut pending = true;
        let mut failed = false;
        loop {
            if !std::mem::take(&mut pending) {
                // After a failure, try again on the next image or after a pause, whichever first.
                let retry = async {
                    if failed {
                        tokio::time::sleep(CATCH_UP_RETRY_INTERVAL).await
                    } else {
                        std::future::pending::<()>().await
                    }
                };
                tokio::select! {
                    changed = published.changed() => if changed.is_err() { return },
                    () = retry => {}
                }
            }
            let node = Arc::clone(&self);
            failed = match tokio::task::spawn_blocking(move || node.catch_up()).await {
                Ok(Ok(_)) => false,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "following the metadata image failed; trying again");
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "following the metadata image panicked");
                    true
                }
            };
        }
    }

    /// Sends the ISR changes leaders propose to the controller (AlterPartition), each on its own
    /// task; a change that does not commit is told to its replica, whose next lag check tries
    /// again. A committed one reaches the replica through the image (`catch_up`).
    async fn commit_isr_changes(self: Arc<Self>) {
        let Some(mut requests) = self.replicas.take_isr_requests() else {
            return;
        };
        while let Some(request) = requests.recv().await {
            let node = Arc::clone(&self);
            tokio::spawn(async move {
                let change = AlterIsr {
                    topic: request.topic_id,
                    partition: request.partition,
                    leader: request.leader,
                    leader_epoch: request.proposal.leader_epoch,
                    partition_epoch: request.proposal.partition_epoch,
                    isr: request.proposal.isr.clone(),
                };
                match node.controller.alter_isr(change).await {
                    Ok(_) => {
                        let kind = if request.proposal.shrink {
                            "shrank"
                        } else {
                            "expanded"
                        };
                        tracing::info!(topic_id = %request.topic_id, partition = %request.partition, isr = ?request.proposal.isr, "ISR {kind}");
                    }
                    Err(e) => {
                        tracing::warn!(topic_id = %request.topic_id, partition = %request.partition, isr = ?request.proposal.isr, error = %e, "ISR change not committed");
                        let definitive = matches!(e, BrokerError::IsrChangeRejected { .. });
                        ReplicaManager::isr_change_failed(&request, definitive);
                    }
                }
            });
        }
    }

    /// Every half `replica.lag.time.max.ms`, leaders check their followers' lag (Kafka's
    /// isr-expiration task).
    async fn check_replica_lag(self: Arc<Self>) {
        let period = Duration::from_millis(self.replicas.tick_interval_ms().max(1) as u64);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.replicas.tick(now_ms());
        }
    }

    /// The replica of `topic` partition `p` hosted here, or the error a request gets: NOT_LEADER_OR_FOLLOWER
    /// when the partition exists elsewhere, UNKNOWN_TOPIC_OR_PARTITION when it does not exist.
    pub fn replica(&self, topic: &str, p: i32) -> Result<Arc<Replica>, BrokerError> {
        if let Some(r) = self.replicas.get(topic, p) {
            return Ok(r);
        }
        let image = self.image();
        let exists = image
            .topic_by_name(topic)
            .and_then(|t| usize::try_from(p).ok().and_then(|i| t.partitions.get(i)))
            .is_some();
        Err(if exists {
            BrokerError::NotLeaderOrFollower
        } else {
            BrokerError::UnknownTopicOrPartition
        })
    }

    /// [`Node::replica`] if this broker leads it; NOT_LEADER_OR_FOLLOWER if it only follows.
    pub fn leader_replica(&self, topic: &str, p: i32) -> Result<Arc<Replica>, BrokerError> {
        let r = self.replica(topic, p)?;
        if r.is_leader() {
            Ok(r)
        } else {
            Err(BrokerError::NotLeaderOrFollower)
        }
    }

    /// The offset store over the partitions of `__consumer_offsets` this node leads.
    fn offsets_store(&self) -> Result<OffsetStore, BrokerError> {
        let timeout_ms = u64::try_from(self.config.i64("offsets.commit.timeout.ms")).unwrap_or(1);
        Ok(OffsetStore::new(self.offsets_leads()?)
            .with_commit_timeout(Duration::from_millis(timeout_ms)))
    }

    /// The replicas of `__consumer_offsets` by partition, where this node leads them.
    fn offsets_leads(&self) -> Result<Vec<Option<Arc<Replica>>>, BrokerError> {
        let image = self.image();
        let topic = image.topic_by_name(offsets::TOPIC).ok_or_else(|| {
            BrokerError::Storage(std::io::Error::other(format!(
                "{} is missing",
                offsets::TOPIC
            )))
        })?;
        let hosted = self.replicas.topic(offsets::TOPIC);
        Ok((0..topic.partitions.len())
            .map(|p| {
                hosted
                    .as_ref()
                    .and_then(|h| h.get(p).cloned().flatten())
                    .filter(|r| r.is_leader())
            })
            .collect())
    }
}

/// The records that create topic `name` (id `id`) with partitions numbered from `first`.
fn topic_records(
    name: &str,
    id: Uuid,
    first: i32,
    assignment: &[Vec<BrokerId>],
    overrides: &TopicOverrides,
) -> Vec<MetadataRecord> {
    let mut records = vec![MetadataRecord::Topic {
        name: name.to_string(),
        id,
    }];
    records.extend(
        assignment
            .iter()
            .enumerate()
            .map(|(i, replicas)| partition_record(id, first + i as i32, replicas)),
    );
    records.extend(
        overrides
            .0
            .iter()
            .map(|(k, v)| MetadataRecord::TopicConfig {
                topic: id,
                key: k.clone(),
                value: Some(v.clone()),
            }),
    );
    records
}

/// The partitions of `records` that broker `me` hosts.
fn hosted_here(records: &[MetadataRecord], me: BrokerId) -> Vec<i32> {
    records
        .iter()
        .filter_map(|r| match r {
            MetadataRecord::Partition(p) if p.replicas.contains(&me) => Some(p.partition.0),
            _ => None,
        })
        .collect()
}

/// A new partition: every replica in sync (it holds nothing yet), the first replica leading.
fn partition_record(topic: Uuid, p: i32, replicas: &[BrokerId]) -> MetadataRecord {
    MetadataRecord::Partition(PartitionRecord {
        topic,
        partition: PartitionId(p),
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        leader: replicas.first().copied(),
        leader_epoch: LeaderEpoch(0),
        partition_epoch: PartitionEpoch(0),
    })
}

/// The records that carry a single-node data directory's `meta/topics` into the metadata log,
/// unless an earlier start already did (a crash before the file was retired).
fn upgrade_records(
    store: &MetadataStore,
    controller: &Controller,
    me: BrokerId,
    data_dir: &Path,
) -> Result<Vec<MetadataRecord>, BrokerError> {
    let image = controller.image();
    match image.cluster_id() {
        None => {
            let reserved_end = crate::producer_ids::legacy_reserved_end(data_dir)?;
            let this = crate::controller::records::BrokerRegistration {
                id: me,
                incarnation: controller.incarnation(),
                endpoints: vec![],
                rack: None,
                fenced: false,
            };
            let records = upgrade::records_from_single_node(store, &this, reserved_end);
            // The registration that follows carries the endpoints.
            Ok(records
                .into_iter()
                .filter(|r| !matches!(r, MetadataRecord::RegisterBroker(_)))
                .collect())
        }
        Some(id) if id == store.cluster_id() => Ok(vec![]),
        Some(id) => Err(BrokerError::InvalidConfig(format!(
            "meta/topics belongs to cluster {} but the metadata log to cluster {id}: refusing to \
             mix them",
            store.cluster_id()
        ))),
    }
}

/// Gives an existing `__consumer_offsets` any pinned override it lacks (one created by an older
/// version had only `retention.ms`), committed before its partitions open.
async fn pin_offsets_topic_overrides(controller: &Controller) -> Result<(), BrokerError> {
    let image = controller.image();
    let Some(topic) = image.topic_by_name(offsets::TOPIC) else {
        return Ok(());
    };
    let missing: Vec<MetadataRecord> = OFFSETS_TOPIC_PINNED
        .iter()
        .filter(|(k, v)| topic.configs.get(*k).map(String::as_str) != Some(*v))
        .map(|(k, v)| MetadataRecord::TopicConfig {
            topic: topic.id,
            key: k.to_string(),
            value: Some(v.to_string()),
        })
        .collect();
    if !missing.is_empty() {
        loop {
            match controller.propose(&missing).await {
                Ok(_) => break,
                Err(BrokerError::NotController(_) | BrokerError::ControllerTimeout(_)) => {
                    tokio::time::sleep(STARTUP_RETRY_INTERVAL).await
                }
                Err(e) => return Err(e),
            }
        }
        tracing::info!(
            topic = offsets::TOPIC,
            "retention of the internal topic turned off"
        );
    }
    Ok(())
}

/// Pause before a failed catch-up (a partition that did not open) is tried again.
const CATCH_UP_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// How long start-up waits for brokers to register before creating `__consumer_offsets` with
/// fewer replicas than `offsets.topic.replication.factor`.
const OFFSETS_TOPIC_BROKERS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Pause between start-up proposals while the quorum has no leader.
const STARTUP_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);
/// How often start-up says it is still waiting for the quorum.
const STARTUP_WAIT_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Overrides `__consumer_offsets` always has. Retention is off, by time and by size: without
/// compaction, deleting old segments would forget groups that committed long ago, so neither
/// `log.retention.ms` nor `log.retention.bytes` of the broker may apply to it. (No API alters a
/// topic's configuration, so nothing else can change them: AlterConfigs and
/// IncrementalAlterConfigs are not supported.)
const OFFSETS_TOPIC_PINNED: [(&str, &str); 2] = [("retention.ms", "-1"), ("retention.bytes", "-1")];

/// A node on 127.0.0.1:9092 over `dir`, the defaults changed by `settings` (unit tests).
#[cfg(test)]
pub(crate) async fn open_for_test(dir: &Path, settings: &[(&str, &str)]) -> Node {
    let mut config = BrokerConfig::default();
    for (k, v) in settings {
        config.set(k, v).unwrap();
    }
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: 9092,
    };
    Node::open(Arc::new(config), endpoint, dir).await.unwrap().0
}

#[cfg(test)]
mod offsets_topic_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Offset;

    async fn open_node(dir: &Path, settings: &[(&str, &str)]) -> Node {
        open_for_test(dir, settings).await
    }

    /// Stops `node` cleanly (its quorum member, then its partitions) and opens `dir` again.
    async fn restart(node: Node, dir: &Path) -> Node {
        node.controller.shutdown().await;
        node.partitions.shutdown().unwrap();
        drop(node);
        open_node(dir, &[]).await
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

    #[tokio::test]
    async fn partitions_past_max_partitions_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(dir.path(), &[("max.partitions", "100")]).await;
        // __consumer_offsets holds 50 of the 100.
        let started = std::time::Instant::now();
        let err = node
            .create_topic(&new_topic("huge", 10_000_000))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 44, "{err}");
        assert!(err.to_string().contains("max.partitions"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(node.image().topic_by_name("huge").is_none());
        assert_eq!(partition_dirs(dir.path(), "huge"), 0);

        node.create_topic(&new_topic("fits", 50)).await.unwrap();
        let err = node
            .create_topic(&new_topic("one-more", 1))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 44);
        let _durable = node.delete_topic("fits").await.unwrap();
        node.create_topic(&new_topic("grows", 40)).await.unwrap();
        let err = node
            .create_partitions("grows", 51, None, false)
            .await
            .unwrap_err();
        assert_eq!(err.code(), 44, "{err}");
        let err = node
            .create_partitions("grows", 51, None, true)
            .await
            .unwrap_err();
        assert_eq!(err.code(), 44, "validate_only is refused alike");
        assert_eq!(
            node.image()
                .topic_by_name("grows")
                .unwrap()
                .partitions
                .len(),
            40
        );
        assert_eq!(partition_dirs(dir.path(), "grows"), 40);
        node.create_partitions("grows", 50, None, false)
            .await
            .unwrap();
        assert_eq!(node.partitions.count(), 100);
    }

    /// Placement moved to `controller::placement`; on one node it answers as it did.
    #[tokio::test]
    async fn on_one_node_only_this_node_may_hold_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(dir.path(), &[]).await;
        let me = node.id.0;
        let assigned = |assignments: Vec<(i32, Vec<i32>)>| NewTopic {
            assignments,
            partitions: -1,
            ..new_topic("assigned", -1)
        };
        let code = |t: &NewTopic| node.check_new_topic(&node.image(), t).unwrap_err().code();
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
            .await
            .unwrap();
        assert_eq!(meta.partitions, 2);
        let err = node
            .create_partitions("assigned", 3, Some(&[vec![me + 1]]), false)
            .await
            .unwrap_err();
        assert_eq!(err.code(), 39);
        node.create_partitions("assigned", 3, Some(&[vec![me]]), false)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn auto_creation_past_max_partitions_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(
            dir.path(),
            &[("max.partitions", "60"), ("num.partitions", "20")],
        )
        .await;
        let err = node.auto_create_topic("auto").await.unwrap_err();
        assert_eq!(err.code(), 44);
        assert!(node.image().topic_by_name("auto").is_none());
    }

    /// The story of the issue: a creation fails part way (there, out of file descriptors; here a
    /// file sits where partition 300's directory must go). Nothing of it may stay behind, and the
    /// broker must start again.
    #[tokio::test]
    async fn a_creation_that_fails_part_way_leaves_nothing_and_the_broker_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(dir.path(), &[]).await;
        std::fs::write(dir.path().join("big-300"), b"in the way").unwrap();
        let err = node.create_topic(&new_topic("big", 600)).await.unwrap_err();
        assert_eq!(err.code(), 56, "{err}");
        assert!(node.image().topic_by_name("big").is_none());
        assert!(node.partitions.topic("big").is_none());
        assert_eq!(partition_dirs(dir.path(), "big"), 0);
        node.create_topic(&new_topic("grown", 2)).await.unwrap();
        std::fs::write(dir.path().join("grown-5"), b"in the way").unwrap();
        assert_eq!(
            node.create_partitions("grown", 8, None, false)
                .await
                .unwrap_err()
                .code(),
            56
        );
        assert_eq!(
            node.image()
                .topic_by_name("grown")
                .unwrap()
                .partitions
                .len(),
            2
        );
        assert_eq!(partition_dirs(dir.path(), "grown"), 2);
        node.partitions.shutdown().unwrap();
        node.controller.shutdown().await;
        drop(node);

        let node = open_node(dir.path(), &[]).await;
        assert!(node.image().topic_by_name("big").is_none());
        std::fs::remove_file(dir.path().join("big-300")).unwrap();
        node.create_topic(&new_topic("big", 600)).await.unwrap();
        node.partitions.shutdown().unwrap();
        node.controller.shutdown().await;
        drop(node);
        let node = open_node(dir.path(), &[]).await;
        assert!((0..600).all(|p| node.partitions.partition("big", p).is_some()));
    }

    /// A data directory from before the quorum: `meta/topics`, partition data and the
    /// `producer-ids` file. The first start carries the topics (ids, counts, overrides) and the
    /// cluster id into the metadata log, keeps every record, continues producer ids after the old
    /// reservation, and retires the file; later starts read the log alone. A crash after the
    /// records were committed but before the file was retired does not upgrade twice.
    #[tokio::test]
    async fn a_single_node_data_dir_upgrades_in_place_and_loses_nothing() {
        use bytes::Bytes;
        use strata_protocol::record_batch::build_batch;

        let dir = tempfile::tempdir().unwrap();
        // Data written by this version, then the directory turned into what the old one left:
        // no metadata log, a meta/topics naming the same topics.
        let orders_id = {
            let node = open_node(dir.path(), &[]).await;
            node.create_topic(&NewTopic {
                configs: vec![("retention.ms".into(), "86400000".into())],
                ..new_topic("orders", 2)
            })
            .await
            .unwrap();
            let p = node.partitions.partition("orders", 1).unwrap();
            for i in 0..3 {
                let value = format!("order-{i}");
                let batch =
                    Bytes::from(build_batch(0, 1_000, &[(None, value.as_bytes())]).to_vec());
                p.append(&batch, 1_000).unwrap();
            }
            let id = node.image().topic_by_name("orders").unwrap().id;
            let offsets_topic = node.image().topic_by_name(offsets::TOPIC).unwrap().clone();
            node.controller.shutdown().await;
            node.partitions.shutdown().unwrap();
            drop(node);
            std::fs::remove_dir_all(dir.path().join("controller")).unwrap();
            // Written beside, then moved in: the store refuses to start a new file where
            // partition data is.
            let scratch = tempfile::tempdir().unwrap();
            let mut store = MetadataStore::open(scratch.path()).unwrap();
            for (name, id, count, overrides) in [
                (
                    "orders",
                    id,
                    2,
                    TopicOverrides::parse([("retention.ms", "86400000")]).unwrap(),
                ),
                (
                    offsets::TOPIC,
                    offsets_topic.id,
                    offsets_topic.partitions.len() as i32,
                    offsets_topic.overrides(),
                ),
            ] {
                store
                    .create_topic(crate::controller::TopicMeta {
                        name: name.into(),
                        id,
                        partitions: count,
                        overrides,
                    })
                    .unwrap();
            }
            std::fs::create_dir_all(dir.path().join("meta")).unwrap();
            std::fs::copy(
                scratch.path().join("meta/topics"),
                dir.path().join("meta/topics"),
            )
            .unwrap();
            crate::storage::checkpoint::write(
                &dir.path().join("producer-ids"),
                "reserved_end 3000\n",
            )
            .unwrap();
            id
        };
        let cluster_id = MetadataStore::open(dir.path())
            .unwrap()
            .cluster_id()
            .to_string();

        for start in 0..3 {
            if start == 2 {
                // A crash between the commit and the file's retirement: the file is back.
                std::fs::copy(
                    dir.path().join("meta/topics.upgraded"),
                    dir.path().join("meta/topics"),
                )
                .unwrap();
            }
            let node = open_node(dir.path(), &[]).await;
            let image = node.image();
            assert_eq!(
                image.cluster_id(),
                Some(cluster_id.as_str()),
                "start {start}"
            );
            let orders = image.topic_by_name("orders").unwrap();
            assert_eq!(orders.id, orders_id);
            assert_eq!(orders.partitions.len(), 2);
            assert_eq!(
                orders.configs.get("retention.ms").map(String::as_str),
                Some("86400000")
            );
            assert_eq!(
                orders.partitions[1].leader,
                Some(node.id),
                "this node leads what it served"
            );
            let p = node.partitions.partition("orders", 1).unwrap();
            assert_eq!(p.high_watermark(), Offset(3), "every record kept");
            assert!(p.read(Offset(0), 1 << 20).unwrap().records.is_some());
            assert!(
                !dir.path().join("meta/topics").exists(),
                "the file is retired"
            );
            assert!(dir.path().join("meta/topics.upgraded").exists());
            let id = node.producer_ids.allocate(&node.controller).await.unwrap();
            assert!(
                id >= 3000,
                "producer id {id} continues after the old reservation"
            );
            assert_eq!(image.topics().count(), 2, "no topic twice, nothing else");
            node.controller.shutdown().await;
            node.partitions.shutdown().unwrap();
        }
    }

    /// A broker that applies a topic's deletion and its creation again under the same name in
    /// one step (its follower task behind, or a learner catching up) serves the new topic's
    /// partitions, fresh: nothing of the old data, and not lost to the old one's removal.
    #[tokio::test]
    async fn a_topic_deleted_and_created_again_in_one_catch_up_gets_fresh_served_partitions() {
        use bytes::Bytes;
        use strata_protocol::record_batch::build_batch;

        let dir = tempfile::tempdir().unwrap();
        let node = open_node(dir.path(), &[]).await;
        node.create_topic(&new_topic("t", 1)).await.unwrap();
        let old = node.partitions.partition("t", 0).unwrap();
        let batch = Bytes::from(build_batch(0, 1_000, &[(None, &b"old"[..])]).to_vec());
        old.append(&batch, 1_000).unwrap();
        let old_id = node.image().topic_by_name("t").unwrap().id;
        // Both changes committed before this node applies either.
        node.controller
            .propose(&[MetadataRecord::RemoveTopic { id: old_id }])
            .await
            .unwrap();
        let new_id = random_uuid();
        let records = topic_records("t", new_id, 0, &[vec![node.id]], &TopicOverrides::default());
        node.controller.propose(&records).await.unwrap();
        let _ = node.catch_up().unwrap();

        let served = node
            .partitions
            .partition("t", 0)
            .expect("the new t-0 is served");
        assert!(!Arc::ptr_eq(&served, &old), "a fresh partition");
        assert_eq!(
            served.high_watermark(),
            Offset(0),
            "none of the old records"
        );
        assert!(dir.path().join("t-0").is_dir());

        // And after a restart, the directory still belongs to the new topic.
        let node = restart(node, dir.path()).await;
        assert_eq!(node.image().topic_by_name("t").unwrap().id, new_id);
        let p = node.partitions.partition("t", 0).unwrap();
        assert_eq!(p.high_watermark(), Offset(0));
        node.controller.shutdown().await;
    }

    /// A topic deleted while the coordinator of its groups was down: its image at start has no
    /// delta that would tombstone their offsets, so start-up does (a topic created again under
    /// the name must not resume from them).
    #[tokio::test]
    async fn offsets_of_a_topic_deleted_while_the_coordinator_was_down_are_forgotten_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(dir.path(), &[]).await;
        node.offsets.load().unwrap();
        node.create_topic(&new_topic("gone", 1)).await.unwrap();
        let commit = crate::group::offsets::tests::commit("gone", 0, 42, "");
        node.offsets.commit("g", vec![commit]).await.unwrap();
        // The removal commits, but this node stops before it applies it (no tombstones).
        let id = node.image().topic_by_name("gone").unwrap().id;
        node.controller
            .propose(&[MetadataRecord::RemoveTopic { id }])
            .await
            .unwrap();

        let node = restart(node, dir.path()).await;
        node.offsets.load().unwrap();
        assert!(
            node.offsets.fetch("g", "gone", 0).is_some(),
            "still in the log"
        );
        node.forget_offsets_of_deleted_topics().await;
        assert!(node.offsets.fetch("g", "gone", 0).is_none());
        let node = restart(node, dir.path()).await;
        node.offsets.load().unwrap();
        assert!(
            node.offsets.fetch("g", "gone", 0).is_none(),
            "tombstoned for good"
        );
        node.controller.shutdown().await;
    }

    /// The partition layer names the undeletable topic itself (it does not import groups).
    #[test]
    fn the_partition_layer_knows_the_offsets_topic_by_its_name() {
        assert_eq!(crate::partition::manager::UNDELETABLE_TOPIC, offsets::TOPIC);
    }

    /// A partition this broker must host but cannot open (here a file sits where its directory
    /// goes, as another broker proposed it) is opened once the obstacle is gone, without a
    /// restart: the image is applied again until all of it is.
    #[tokio::test]
    async fn a_partition_that_did_not_open_here_is_opened_when_it_can_be() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(dir.path(), &[]).await;
        std::fs::write(dir.path().join("blocked-0"), b"in the way").unwrap();
        // Committed without this node's prepare, as a creation through another broker is.
        let records = topic_records(
            "blocked",
            random_uuid(),
            0,
            &[vec![node.id]],
            &TopicOverrides::default(),
        );
        node.controller.propose(&records).await.unwrap();
        assert!(node.catch_up().is_err());
        assert!(node.partitions.partition("blocked", 0).is_none());
        std::fs::remove_file(dir.path().join("blocked-0")).unwrap();
        let _ = node.catch_up().unwrap();
        assert!(node.partitions.partition("blocked", 0).is_some());
        node.controller.shutdown().await;
    }
}
