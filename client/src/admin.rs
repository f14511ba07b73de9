//! Admin operations: create, delete, list, describe and grow topics; describe configurations and
//! the cluster.
//!
//! Invariants:
//! - a request field that exists only in some versions is filled for the version actually sent
//!   (DeleteTopics v6 names topics in `topics`, v1-5 in `topic_names`; a field set outside its
//!   versions would be refused by the encoder or, worse, silently dropped);
//! - the admin client never creates a topic by accident: its own Metadata requests set
//!   `allow_auto_topic_creation = false`, and below Metadata v4 (where a named topic is always
//!   auto-created) it asks for every topic instead of naming one; the refresh after a change is a
//!   full one (no topic named) for the same reason;
//! - topic changes (CreateTopics, DeleteTopics, CreatePartitions) go to the controller when the
//!   metadata names one, and are retried once on another broker after `NOT_CONTROLLER`;
//! - every per-topic or per-resource error code in a response becomes an `Err`, with the broker's
//!   error message (when it sends one) in the error's context;
//! - offsets come from each partition's leader (ListOffsets with `replica_id = -1`, i.e. as a
//!   consumer, never as a follower);
//! - the metadata refresh after a successful change is best effort: the change is reported as
//!   done even if the refresh fails or the change is not visible yet (logged at warn).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeLogDirsRequest, DescribeQuorumRequest,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Message, StrBytes};
use kafka_protocol::ResponseError;

use crate::cluster::Cluster;
use crate::connection::Connection;
use crate::error::{ClientError, Result};

/// `ListOffsets` timestamp asking for the log start offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// `ListOffsets` timestamp asking for the log end offset (the high watermark).
pub const LATEST_TIMESTAMP: i64 = -1;
/// DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// How often the metadata is re-read after a change until the change is visible.
const VISIBILITY_POLLS: u32 = 20;
const VISIBILITY_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A topic to create. `-1` for partitions or replication factor means the broker's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with the broker's default partition count, replication factor and configs.
    pub fn new(name: impl Into<String>) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions: -1,
            replication_factor: -1,
            configs: Vec::new(),
        }
    }

    pub fn with_partitions(mut self, partitions: i32) -> NewTopic {
        self.partitions = partitions;
        self
    }

    pub fn with_replication_factor(mut self, replication_factor: i16) -> NewTopic {
        self.replication_factor = replication_factor;
        self
    }

    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// One partition of a described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: i32,
    /// `-1` when the partition has no leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// `None` when the offsets could not be read (see `offsets_error`).
    pub earliest_offset: Option<i64>,
    pub latest_offset: Option<i64>,
    /// Why the offsets are missing: no leader, leader unreachable, or its error code.
    pub offsets_error: Option<String>,
}

/// A topic with its partitions and their offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    /// `None` when the broker reports no topic ids (Metadata below v10).
    pub id: Option<String>,
    /// Sorted by partition.
    pub partitions: Vec<PartitionDescription>,
}

/// One partition replica's log as its broker describes it (DescribeLogDirs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaLog {
    pub partition: i32,
    /// Bytes of the replica's log.
    pub size_bytes: i64,
    /// How far its log end is behind the high watermark as its broker knows it (0 on the
    /// leader).
    pub offset_lag: i64,
}

/// What DescribeConfigs describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    Topic(String),
    Broker(i32),
}

/// Where a configuration value comes from (DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// A per-topic override (`DYNAMIC_TOPIC_CONFIG`, 1).
    DynamicTopic,
    /// A per-broker dynamic value (2).
    DynamicBroker,
    /// A cluster-wide dynamic broker default (3).
    DynamicDefaultBroker,
    /// The broker's configuration file or flags (4).
    StaticBroker,
    /// The built-in default (5).
    Default,
    /// A dynamic broker logger level (6).
    DynamicBrokerLogger,
    Unknown(i8),
}

impl ConfigSource {
    pub fn from_code(code: i8) -> ConfigSource {
        match code {
            1 => ConfigSource::DynamicTopic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DynamicDefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            6 => ConfigSource::DynamicBrokerLogger,
            other => ConfigSource::Unknown(other),
        }
    }

    /// Whether the value is an override of the topic (as opposed to inherited).
    pub fn is_topic_override(self) -> bool {
        self == ConfigSource::DynamicTopic
    }
}

/// One configuration value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    /// `None` for sensitive values or values the broker does not show.
    pub value: Option<String>,
    pub source: ConfigSource,
    pub read_only: bool,
}

/// One broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDescription {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// A broker as the cluster's metadata has it, fenced or not (DescribeCluster v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredBroker {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Silent past its session: not listed to clients until it heartbeats again.
    pub fenced: bool,
}

/// One member of the controller quorum, as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumMember {
    pub id: i32,
    /// A voter (else an observer: a broker following the metadata log).
    pub voter: bool,
    /// The metadata log offset it is known to hold (-1: not yet known).
    pub log_end_offset: i64,
    /// When its broker last heartbeat, in ms since the epoch (-1: never, or not a broker).
    pub last_heartbeat_ms: i64,
}

/// The controller quorum (DescribeQuorum, answered by its leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    pub leader: i32,
    pub term: i32,
    /// The highest metadata offset the leader applied.
    pub high_watermark: i64,
    pub members: Vec<QuorumMember>,
}

/// The cluster: id, controller and brokers (sorted by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: Option<String>,
    pub controller: i32,
    pub brokers: Vec<BrokerDescription>,
}

/// Admin operations on a cluster.
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl Admin {
    pub fn new(cluster: Arc<Cluster>) -> Admin {
        Admin { cluster }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The timeout the broker is given for a topic change, in ms.
    fn broker_timeout_ms(&self) -> i32 {
        let ms = self.cluster.config().connection.request_timeout.as_millis();
        i32::try_from(ms).unwrap_or(i32::MAX)
    }

    /// Creates one topic; refreshes metadata until it is visible (bounded).
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let request = create_topics_request(std::slice::from_ref(&topic), self.broker_timeout_ms());
        let name = topic.name.clone();
        self.on_controller(|conn| {
            let request = &request;
            let name = &name;
            async move {
                let (response, _) = conn.send(request).await?;
                let result = response
                    .topics
                    .iter()
                    .find(|t| &*t.name.0 == name.as_str())
                    .ok_or_else(|| malformed("CreateTopics", format!("no result for '{name}'")))?;
                match kafka_error(
                    result.error_code,
                    &format!("create topic '{name}'"),
                    result.error_message.as_ref(),
                ) {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }
        })
        .await?;
        self.await_metadata(&name, |meta| {
            meta.topics
                .get(&name)
                .is_some_and(|t| t.error_code == 0 && !t.partitions.is_empty())
        })
        .await;
        Ok(())
    }

    /// Deletes one topic by name; refreshes metadata until it is gone (bounded).
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let timeout_ms = self.broker_timeout_ms();
        self.on_controller(|conn| async move {
            let version = conn
                .version_for(ApiKey::DeleteTopics, DeleteTopicsRequest::VERSIONS)
                .ok_or(ClientError::Unsupported {
                    api: "DeleteTopics",
                })?;
            let request = delete_topics_request(&[name.to_string()], version, timeout_ms);
            let response = conn.send_at(&request, version).await?;
            let result = response
                .responses
                .iter()
                .find(|r| r.name.as_ref().is_some_and(|n| &*n.0 == name))
                .ok_or_else(|| malformed("DeleteTopics", format!("no result for '{name}'")))?;
            match kafka_error(
                result.error_code,
                &format!("delete topic '{name}'"),
                result.error_message.as_ref(),
            ) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
        .await?;
        self.await_metadata(name, |meta| !meta.topics.contains_key(name))
            .await;
        Ok(())
    }

    /// Every topic name, sorted, from a full metadata refresh.
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        let meta = self.cluster.refresh(&[]).await?;
        let mut names: Vec<String> = meta.topics.keys().cloned().collect();
        names.sort();
        Ok(names)
    }

    /// A topic's partitions (leader, replicas, ISR) with their earliest and latest offsets, read
    /// from each partition's leader. An unknown topic is `UNKNOWN_TOPIC_OR_PARTITION`; it is
    /// never auto-created.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let conn = self.cluster.any_connection().await?;
        let version = conn
            .version_for(ApiKey::Metadata, MetadataRequest::VERSIONS)
            .ok_or(ClientError::Unsupported { api: "Metadata" })?;
        let response = conn
            .send_at(&topic_metadata_request(name, version), version)
            .await?;
        let (topic, brokers) = topic_from_metadata(&response, name)?;
        // Partitions grouped by leader: two ListOffsets requests (earliest, latest) per leader.
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in &topic.partitions {
            if p.leader >= 0 {
                by_leader.entry(p.leader).or_default().push(p.partition);
            }
        }
        let lookups = by_leader.iter().map(|(leader, partitions)| {
            let addr = brokers.get(leader).cloned();
            async move {
                let outcome = match addr {
                    None => Err(format!("leader {leader} is not in the broker list")),
                    Some(addr) => self
                        .leader_offsets(&addr, name, partitions)
                        .await
                        .map_err(|e| e.to_string()),
                };
                (partitions.clone(), outcome)
            }
        });
        let mut offsets: BTreeMap<i32, std::result::Result<(i64, i64), String>> = BTreeMap::new();
        for (partitions, outcome) in futures::future::join_all(lookups).await {
            match outcome {
                Ok(found) => offsets.extend(found),
                Err(e) => offsets.extend(partitions.into_iter().map(|p| (p, Err(e.clone())))),
            }
        }
        let partitions = topic
            .partitions
            .into_iter()
            .map(|mut p| {
                match offsets.remove(&p.partition) {
                    Some(Ok((earliest, latest))) => {
                        p.earliest_offset = Some(earliest);
                        p.latest_offset = Some(latest);
                    }
                    Some(Err(e)) => p.offsets_error = Some(e),
                    None if p.leader < 0 => p.offsets_error = Some("no leader".to_string()),
                    None => p.offsets_error = Some("no offsets in the answer".to_string()),
                }
                p
            })
            .collect();
        Ok(TopicDescription {
            name: topic.name,
            id: topic.id,
            partitions,
        })
    }

    /// Earliest and latest offset of `partitions` of `topic`, asked of their leader at `addr`.
    /// A partition with an error code is an `Err` for that partition only.
    async fn leader_offsets(
        &self,
        addr: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, std::result::Result<(i64, i64), String>)>> {
        let conn = self.cluster.connection(addr).await?;
        let earliest = list_offsets_request(topic, partitions, EARLIEST_TIMESTAMP);
        let latest = list_offsets_request(topic, partitions, LATEST_TIMESTAMP);
        let ((earliest, _), (latest, _)) =
            futures::try_join!(conn.send(&earliest), conn.send(&latest))?;
        let offsets = |r: &kafka_protocol::messages::ListOffsetsResponse, p: i32| {
            let found = r
                .topics
                .iter()
                .filter(|t| &*t.name.0 == topic)
                .flat_map(|t| t.partitions.iter())
                .find(|x| x.partition_index == p)
                .ok_or_else(|| format!("no answer for {topic}/{p}"))?;
            match ClientError::from_code(found.error_code, format!("offsets of {topic}/{p}")) {
                Some(e) => Err(e.to_string()),
                None => Ok(found.offset),
            }
        };
        Ok(partitions
            .iter()
            .map(|&p| {
                let both = offsets(&earliest, p).and_then(|e| Ok((e, offsets(&latest, p)?)));
                (p, both)
            })
            .collect())
    }

    /// The logs of `topic`'s `partitions` each broker in `brokers` hosts, asked of each broker
    /// with DescribeLogDirs (sorted by partition); per broker, so one unreachable broker or one
    /// that does not speak DescribeLogDirs is an `Err` for its replicas only.
    pub async fn replica_logs(
        &self,
        topic: &str,
        partitions: &[i32],
        brokers: &[i32],
    ) -> Result<BTreeMap<i32, std::result::Result<Vec<ReplicaLog>, String>>> {
        let meta = self.cluster.refresh(&[]).await?;
        let request = DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(partitions.to_vec()),
        ]));
        let asks = brokers.iter().map(|&id| {
            let addr = meta.brokers.get(&id).cloned();
            let request = &request;
            async move {
                let Some(addr) = addr else {
                    return (id, Err(format!("broker {id} is not in the broker list")));
                };
                let answer = async {
                    let conn = self.cluster.connection(&addr).await?;
                    let (r, _) = conn.send(request).await?;
                    if let Some(e) = kafka_error(r.error_code, "describe log dirs", None) {
                        return Err(e);
                    }
                    let mut logs: Vec<ReplicaLog> = r
                        .results
                        .iter()
                        .flat_map(|d| d.topics.iter())
                        .filter(|t| &*t.name.0 == topic)
                        .flat_map(|t| t.partitions.iter())
                        .filter(|p| !p.is_future_key)
                        .map(|p| ReplicaLog {
                            partition: p.partition_index,
                            size_bytes: p.partition_size,
                            offset_lag: p.offset_lag,
                        })
                        .collect();
                    logs.sort_by_key(|l| l.partition);
                    Ok(logs)
                };
                (id, answer.await.map_err(|e: ClientError| e.to_string()))
            }
        });
        Ok(futures::future::join_all(asks).await.into_iter().collect())
    }

    /// Grows `name` to `total_count` partitions (counts never shrink).
    pub async fn create_partitions(&self, name: &str, total_count: i32) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(name))
                .with_count(total_count)
                .with_assignments(None)])
            .with_timeout_ms(self.broker_timeout_ms())
            .with_validate_only(false);
        self.on_controller(|conn| {
            let request = &request;
            async move {
                let (response, _) = conn.send(request).await?;
                let result = response
                    .results
                    .iter()
                    .find(|r| &*r.name.0 == name)
                    .ok_or_else(|| {
                        malformed("CreatePartitions", format!("no result for '{name}'"))
                    })?;
                match kafka_error(
                    result.error_code,
                    &format!("grow topic '{name}' to {total_count} partitions"),
                    result.error_message.as_ref(),
                ) {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }
        })
        .await?;
        let wanted = usize::try_from(total_count).unwrap_or(0);
        self.await_metadata(name, |meta| {
            meta.topics
                .get(name)
                .is_some_and(|t| t.partitions.len() >= wanted)
        })
        .await;
        Ok(())
    }

    /// Every configuration value of a topic or a broker, in the broker's order.
    pub async fn describe_configs(&self, resource: ConfigResource) -> Result<Vec<ConfigEntry>> {
        // A broker's own values (dynamic ones included) are best asked of that broker.
        let conn = match &resource {
            ConfigResource::Broker(id) => match self.cluster.metadata().brokers.get(id) {
                Some(addr) => self.cluster.connection(addr).await?,
                None => self.cluster.any_connection().await?,
            },
            ConfigResource::Topic(_) => self.cluster.any_connection().await?,
        };
        let what = match &resource {
            ConfigResource::Topic(name) => format!("configs of topic '{name}'"),
            ConfigResource::Broker(id) => format!("configs of broker {id}"),
        };
        let (response, _) = conn.send(&describe_configs_request(&resource)).await?;
        let result = response
            .results
            .first()
            .ok_or_else(|| malformed("DescribeConfigs", "no result".to_string()))?;
        if let Some(e) = kafka_error(result.error_code, &what, result.error_message.as_ref()) {
            return Err(e);
        }
        Ok(result
            .configs
            .iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.as_ref().map(|v| v.to_string()),
                source: ConfigSource::from_code(c.config_source),
                read_only: c.read_only,
            })
            .collect())
    }

    /// Cluster id, controller and brokers: DescribeCluster, or Metadata where the broker does
    /// not speak DescribeCluster (before Kafka 2.8).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let conn = self.cluster.any_connection().await?;
        match conn.send(&DescribeClusterRequest::default()).await {
            Ok((r, _)) => {
                if let Some(e) =
                    kafka_error(r.error_code, "describe cluster", r.error_message.as_ref())
                {
                    return Err(e);
                }
                let mut brokers: Vec<BrokerDescription> = r
                    .brokers
                    .iter()
                    .map(|b| BrokerDescription {
                        id: b.broker_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                    })
                    .collect();
                brokers.sort_by_key(|b| b.id);
                Ok(ClusterDescription {
                    cluster_id: Some(r.cluster_id.to_string()),
                    controller: r.controller_id.0,
                    brokers,
                })
            }
            Err(ClientError::Unsupported { .. }) => {
                let meta = self.cluster.refresh(&[]).await?;
                let mut brokers: Vec<BrokerDescription> = meta
                    .brokers
                    .iter()
                    .map(|(id, addr)| {
                        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "-1"));
                        BrokerDescription {
                            id: *id,
                            host: host.to_string(),
                            port: port.parse().unwrap_or(-1),
                            rack: None,
                        }
                    })
                    .collect();
                brokers.sort_by_key(|b| b.id);
                Ok(ClusterDescription {
                    cluster_id: meta.cluster_id.clone(),
                    controller: meta.controller,
                    brokers,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Every registered broker, fenced ones too (DescribeCluster v2, KIP-1073; a broker that
    /// speaks only v0-1 lists the live ones), sorted by id.
    pub async fn registered_brokers(&self) -> Result<Vec<RegisteredBroker>> {
        let conn = self.cluster.any_connection().await?;
        let request = DescribeClusterRequest::default().with_include_fenced_brokers(true);
        let (r, _) = conn.send(&request).await?;
        if let Some(e) = kafka_error(r.error_code, "describe cluster", r.error_message.as_ref()) {
            return Err(e);
        }
        let mut brokers: Vec<RegisteredBroker> = r
            .brokers
            .iter()
            .map(|b| RegisteredBroker {
                id: b.broker_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.as_ref().map(|r| r.to_string()),
                fenced: b.is_fenced,
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        Ok(brokers)
    }

    /// The controller quorum, from its leader (the controller Metadata names; after
    /// NOT_LEADER_OR_FOLLOWER, once more after a metadata refresh).
    pub async fn describe_quorum(&self) -> Result<QuorumDescription> {
        self.on_controller(|conn| async move {
            let (r, _) = conn.send(&DescribeQuorumRequest::default()).await?;
            if let Some(e) = kafka_error(r.error_code, "describe quorum", r.error_message.as_ref())
            {
                return Err(e);
            }
            let p = r
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .ok_or_else(|| ClientError::Malformed {
                    api: "DescribeQuorum",
                    reason: "no partition in the answer".into(),
                })?;
            if let Some(e) = kafka_error(p.error_code, "describe quorum", p.error_message.as_ref())
            {
                return Err(e);
            }
            let member = |voter: bool| {
                move |s: &kafka_protocol::messages::describe_quorum_response::ReplicaState| {
                    QuorumMember {
                        id: s.replica_id.0,
                        voter,
                        log_end_offset: s.log_end_offset,
                        last_heartbeat_ms: s.last_fetch_timestamp,
                    }
                }
            };
            let mut members: Vec<QuorumMember> =
                p.current_voters.iter().map(member(true)).collect();
            members.extend(p.observers.iter().map(member(false)));
            members.sort_by_key(|m| m.id);
            Ok(QuorumDescription {
                leader: p.leader_id.0,
                term: p.leader_epoch,
                high_watermark: p.high_watermark,
                members,
            })
        })
        .await
    }

    /// A connection to the controller, else to any broker.
    async fn controller_connection(&self) -> Result<Arc<Connection>> {
        let meta = self.cluster.metadata();
        if let Some(addr) = meta.brokers.get(&meta.controller) {
            match self.cluster.connection(addr).await {
                Ok(c) => return Ok(c),
                Err(e) => tracing::debug!(error = %e, "controller unreachable; trying any broker"),
            }
        }
        self.cluster.any_connection().await
    }

    /// Runs `op` on the controller; after `NOT_CONTROLLER`, refreshes metadata and runs it once
    /// more.
    async fn on_controller<'a, T, F, Fut>(&'a self, op: F) -> Result<T>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: Future<Output = Result<T>> + 'a,
    {
        let first = op(self.controller_connection().await?).await;
        match first {
            Err(ClientError::Kafka {
                error: ResponseError::NotController | ResponseError::NotLeaderOrFollower,
                ..
            }) => {
                self.cluster.refresh(&[]).await?;
                op(self.controller_connection().await?).await
            }
            other => other,
        }
    }

    /// Full metadata refreshes until `visible` holds or the polls run out (best effort).
    async fn await_metadata(&self, topic: &str, visible: impl Fn(&crate::Metadata) -> bool) {
        for poll in 0..VISIBILITY_POLLS {
            match self.cluster.refresh(&[]).await {
                Ok(meta) if visible(&meta) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(topic, error = %e, "metadata refresh after an admin change failed");
                    return;
                }
            }
            if poll + 1 < VISIBILITY_POLLS {
                tokio::time::sleep(VISIBILITY_POLL_INTERVAL).await;
            }
        }
        tracing::warn!(topic, "admin change not visible in the metadata yet");
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn malformed(api: &'static str, reason: String) -> ClientError {
    ClientError::Malformed { api, reason }
}

/// A Kafka error code as an error whose context is `what`, followed by the broker's message.
fn kafka_error(code: i16, what: &str, message: Option<&StrBytes>) -> Option<ClientError> {
    let context = match message.map(|m| m.trim()).filter(|m| !m.is_empty()) {
        Some(m) => format!("{what}: {m}"),
        None => what.to_string(),
    };
    ClientError::from_code(code, context)
}

/// CreateTopics: the same fields at every version this client speaks (2-7).
fn create_topics_request(topics: &[NewTopic], timeout_ms: i32) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(topic_name(&t.name))
                        .with_num_partitions(t.partitions)
                        .with_replication_factor(t.replication_factor)
                        .with_configs(
                            t.configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default()
                                        .with_name(StrBytes::from_string(k.clone()))
                                        .with_value(Some(StrBytes::from_string(v.clone())))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
        .with_timeout_ms(timeout_ms)
        .with_validate_only(false)
}

/// DeleteTopics by name: v6 in `topics` (name set, nil id), v1-5 in `topic_names`. The encoder
/// refuses `topics` below v6 but silently drops `topic_names` at v6, so the choice matters.
fn delete_topics_request(names: &[String], version: i16, timeout_ms: i32) -> DeleteTopicsRequest {
    let request = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
    if version >= 6 {
        request.with_topics(
            names
                .iter()
                .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
                .collect(),
        )
    } else {
        request.with_topic_names(names.iter().map(|n| topic_name(n)).collect())
    }
}

/// ListOffsets as a consumer (`replica_id = -1`; the default 0 would claim to be broker 0).
fn list_offsets_request(topic: &str, partitions: &[i32], timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(0)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )])
}

/// DescribeConfigs of one resource, every key, without synonyms or documentation (documentation
/// exists only from v3; leaving it false keeps v1-2 encodable).
fn describe_configs_request(resource: &ConfigResource) -> DescribeConfigsRequest {
    let (resource_type, resource_name) = match resource {
        ConfigResource::Topic(name) => (RESOURCE_TOPIC, name.clone()),
        ConfigResource::Broker(id) => (RESOURCE_BROKER, id.to_string()),
    };
    DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(resource_name))
            .with_configuration_keys(None)])
        .with_include_synonyms(false)
        .with_include_documentation(false)
}

/// Metadata of one topic that never auto-creates it: `allow_auto_topic_creation = false` from v4;
/// below v4 a named topic is always auto-created, so every topic is asked for instead (an empty
/// list at v0, null at v1-3).
fn topic_metadata_request(name: &str, version: i16) -> MetadataRequest {
    if version >= 4 {
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(name)))
            ]))
            .with_allow_auto_topic_creation(false)
    } else if version >= 1 {
        MetadataRequest::default().with_topics(None)
    } else {
        MetadataRequest::default().with_topics(Some(Vec::new()))
    }
}

/// The topic `name` from a Metadata response (offsets not yet filled in), and broker id →
/// HOST:PORT. A missing topic is `UNKNOWN_TOPIC_OR_PARTITION`.
fn topic_from_metadata(
    response: &MetadataResponse,
    name: &str,
) -> Result<(TopicDescription, BTreeMap<i32, String>)> {
    let brokers = response
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", &*b.host, b.port)))
        .collect();
    let unknown = || {
        ClientError::from_code(
            ResponseError::UnknownTopicOrPartition.code(),
            format!("topic '{name}'"),
        )
        .expect("a non-zero code")
    };
    let topic = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| &*n.0 == name))
        .ok_or_else(unknown)?;
    if let Some(e) = ClientError::from_code(topic.error_code, format!("topic '{name}'")) {
        return Err(e);
    }
    let mut partitions: Vec<PartitionDescription> = topic
        .partitions
        .iter()
        .map(|p| PartitionDescription {
            partition: p.partition_index,
            leader: p.leader_id.0,
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            earliest_offset: None,
            latest_offset: None,
            offsets_error: None,
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    let id = (!topic.topic_id.is_nil()).then(|| topic.topic_id.to_string());
    Ok((
        TopicDescription {
            name: name.to_string(),
            id,
            partitions,
        },
        brokers,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn round_trip<T: Encodable + Decodable>(message: &T, version: i16) -> T {
        let mut buf = BytesMut::new();
        message
            .encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("encode v{version}: {e}"));
        let mut bytes = buf.freeze();
        T::decode(&mut bytes, version).unwrap_or_else(|e| panic!("decode v{version}: {e}"))
    }

    #[test]
    fn delete_topics_names_the_topic_in_the_field_of_each_version() {
        let names = vec!["a".to_string(), "b".to_string()];
        for version in 1..=5 {
            let decoded = round_trip(&delete_topics_request(&names, version, 5000), version);
            let got: Vec<&str> = decoded.topic_names.iter().map(|n| &*n.0).collect();
            assert_eq!(got, ["a", "b"], "v{version}");
            assert_eq!(decoded.timeout_ms, 5000);
        }
        let decoded = round_trip(&delete_topics_request(&names, 6, 5000), 6);
        let got: Vec<&str> = decoded
            .topics
            .iter()
            .map(|t| &*t.name.as_ref().unwrap().0)
            .collect();
        assert_eq!(got, ["a", "b"]);
        assert!(decoded.topics.iter().all(|t| t.topic_id.is_nil()));
        // The wrong field for the version would be dropped or refused.
        let mut v6_with_names = delete_topics_request(&names, 5, 5000);
        assert!(round_trip(&v6_with_names, 6).topics.is_empty());
        v6_with_names = delete_topics_request(&names, 6, 5000);
        assert!(v6_with_names.encode(&mut BytesMut::new(), 5).is_err());
    }

    #[test]
    fn create_topics_encodes_at_every_version() {
        let topic = NewTopic::new("t")
            .with_partitions(3)
            .with_config("retention.ms", "1000");
        let request = create_topics_request(&[topic, NewTopic::new("u")], 3000);
        for version in 2..=7 {
            let decoded = round_trip(&request, version);
            assert_eq!(decoded.topics.len(), 2);
            let t = &decoded.topics[0];
            assert_eq!(
                (&*t.name.0, t.num_partitions, t.replication_factor),
                ("t", 3, -1)
            );
            assert_eq!(&*t.configs[0].name, "retention.ms");
            assert_eq!(t.configs[0].value.as_deref(), Some("1000"));
            let u = &decoded.topics[1];
            assert_eq!((u.num_partitions, u.replication_factor), (-1, -1));
            assert!(!decoded.validate_only);
        }
    }

    #[test]
    fn list_offsets_asks_as_a_consumer_at_every_version() {
        let request = list_offsets_request("t", &[0, 2], EARLIEST_TIMESTAMP);
        for version in 1..=7 {
            let decoded = round_trip(&request, version);
            assert_eq!(decoded.replica_id.0, -1, "v{version}");
            let parts = &decoded.topics[0].partitions;
            assert_eq!(parts.len(), 2);
            assert_eq!((parts[1].partition_index, parts[1].timestamp), (2, -2));
        }
    }

    #[test]
    fn describe_configs_encodes_at_every_version() {
        for resource in [ConfigResource::Topic("t".into()), ConfigResource::Broker(1)] {
            let request = describe_configs_request(&resource);
            for version in 1..=4 {
                let decoded = round_trip(&request, version);
                let r = &decoded.resources[0];
                let expected = match &resource {
                    ConfigResource::Topic(_) => (RESOURCE_TOPIC, "t"),
                    ConfigResource::Broker(_) => (RESOURCE_BROKER, "1"),
                };
                assert_eq!((r.resource_type, &*r.resource_name), expected);
                assert!(r.configuration_keys.is_none());
            }
        }
    }

    #[test]
    fn describe_cluster_default_encodes_at_every_version() {
        for version in 0..=1 {
            round_trip(&DescribeClusterRequest::default(), version);
        }
    }

    #[test]
    fn topic_metadata_never_asks_for_auto_creation() {
        for version in 0..=12 {
            let decoded = round_trip(&topic_metadata_request("t", version), version);
            if version >= 4 {
                assert!(!decoded.allow_auto_topic_creation, "v{version}");
                let topics = decoded.topics.unwrap();
                assert_eq!(topics.len(), 1);
                assert_eq!(topics[0].name.as_ref().map(|n| &*n.0), Some("t"));
            } else {
                // Below v4 naming a topic auto-creates it: ask for all topics instead.
                assert!(decoded.topics.is_none_or(|t| t.is_empty()), "v{version}");
            }
        }
    }

    #[test]
    fn a_missing_or_failed_topic_in_metadata_is_an_error() {
        use kafka_protocol::messages::metadata_response::{
            MetadataResponsePartition, MetadataResponseTopic,
        };
        let partition = |i: i32| {
            MetadataResponsePartition::default()
                .with_partition_index(i)
                .with_leader_id(BrokerId(1))
                .with_replica_nodes(vec![BrokerId(1)])
                .with_isr_nodes(vec![BrokerId(1)])
        };
        let response = MetadataResponse::default().with_topics(vec![
            MetadataResponseTopic::default()
                .with_name(Some(topic_name("ok")))
                .with_partitions(vec![partition(1), partition(0)]),
            MetadataResponseTopic::default()
                .with_name(Some(topic_name("bad")))
                .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
        ]);
        let (t, _) = topic_from_metadata(&response, "ok").unwrap();
        assert_eq!(
            t.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(t.id, None);
        for name in ["bad", "missing"] {
            match topic_from_metadata(&response, name) {
                Err(ClientError::Kafka { error, .. }) => {
                    assert_eq!(error, ResponseError::UnknownTopicOrPartition)
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn broker_messages_are_kept_in_the_error() {
        let msg = StrBytes::from_static_str("config 'x': unknown topic config");
        let e = kafka_error(40, "create topic 't'", Some(&msg)).unwrap();
        assert!(e
            .to_string()
            .starts_with("create topic 't': config 'x': unknown topic config"));
        assert!(kafka_error(0, "x", Some(&msg)).is_none());
        let e = kafka_error(36, "create topic 't'", None).unwrap();
        assert!(e.to_string().starts_with("create topic 't': "));
    }
}
