//! The client's view of the cluster: bootstrap, the metadata cache (brokers, topics, partition
//! leaders), and one connection per broker, reopened when it is lost.
//!
//! Invariants:
//! - at most one live connection per broker address; a closed one is replaced on next use;
//! - metadata is replaced whole by each refresh, never patched, so readers see one snapshot;
//! - "no broker reachable" is reported after `connect_timeout`, not retried forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::connection::{Connection, ConnectionConfig};
use crate::error::{ClientError, Result};

/// What every client type needs to reach a cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `bootstrap.servers`: HOST:PORT list.
    pub bootstrap: Vec<String>,
    pub connection: ConnectionConfig,
    /// Whether Metadata requests may auto-create topics (`allow.auto.create.topics`).
    pub allow_auto_create_topics: bool,
}

impl ClientConfig {
    pub fn new(bootstrap: &str) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            connection: ConnectionConfig::default(),
            allow_auto_create_topics: true,
        }
    }
}

/// One partition as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

/// One topic as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: String,
    pub error_code: i16,
    pub partitions: Vec<PartitionInfo>,
}

/// A snapshot of the cluster metadata.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub cluster_id: Option<String>,
    pub controller: i32,
    /// Broker id → HOST:PORT.
    pub brokers: HashMap<i32, String>,
    pub topics: HashMap<String, TopicInfo>,
}

impl Metadata {
    fn from_response(r: &MetadataResponse) -> Metadata {
        let brokers = r
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", &*b.host, b.port)))
            .collect();
        let topics = r
            .topics
            .iter()
            .filter_map(|t| {
                let name = t.name.as_ref()?.to_string();
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions
                    .iter()
                    .map(|p| PartitionInfo {
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        error_code: p.error_code,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                let info = TopicInfo {
                    name: name.clone(),
                    id: t.topic_id.to_string(),
                    error_code: t.error_code,
                    partitions,
                };
                Some((name, info))
            })
            .collect();
        Metadata {
            cluster_id: r.cluster_id.as_ref().map(|c| c.to_string()),
            controller: r.controller_id.0,
            brokers,
            topics,
        }
    }
}

pub struct Cluster {
    config: ClientConfig,
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    metadata: RwLock<Arc<Metadata>>,
}

impl Cluster {
    /// Connects to the first reachable bootstrap server and loads the broker list.
    pub async fn connect(config: ClientConfig) -> Result<Arc<Cluster>> {
        if config.bootstrap.is_empty() {
            return Err(ClientError::Invalid("no bootstrap servers given".into()));
        }
        let cluster = Arc::new(Cluster {
            config,
            connections: Mutex::default(),
            metadata: RwLock::default(),
        });
        cluster.refresh(&[]).await?;
        Ok(cluster)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The latest metadata snapshot.
    pub fn metadata(&self) -> Arc<Metadata> {
        Arc::clone(&self.metadata.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// A live connection to `addr`, opening one if needed.
    pub async fn connection(&self, addr: &str) -> Result<Arc<Connection>> {
        {
            let conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = conns.get(addr).filter(|c| !c.is_closed()) {
                return Ok(Arc::clone(c));
            }
        }
        let conn = Arc::new(Connection::connect(addr, self.config.connection.clone()).await?);
        let mut conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        // Another task may have connected meanwhile; keep the first live one.
        match conns.get(addr).filter(|c| !c.is_closed()) {
            Some(existing) => Ok(Arc::clone(existing)),
            None => {
                conns.insert(addr.to_string(), Arc::clone(&conn));
                Ok(conn)
            }
        }
    }

    /// A connection to any broker: known brokers first, then the bootstrap list, until one
    /// answers or `connect_timeout` has passed.
    pub async fn any_connection(&self) -> Result<Arc<Connection>> {
        let mut candidates: Vec<String> = self.metadata().brokers.values().cloned().collect();
        candidates.sort();
        candidates.extend(self.config.bootstrap.iter().cloned());
        let deadline = tokio::time::Instant::now() + self.config.connection.connect_timeout;
        let mut last_error = None;
        for round in 0..u32::MAX {
            for addr in &candidates {
                // Bounded by the deadline: a broker that accepts but never answers ApiVersions
                // must not hold us past `connect_timeout`.
                match tokio::time::timeout_at(deadline, self.connection(addr)).await {
                    Ok(Ok(c)) => return Ok(c),
                    Ok(Err(e)) => last_error = Some(e),
                    Err(_) => break,
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            // Back off between rounds, doubling up to 800 ms, never past the deadline.
            let backoff = Duration::from_millis(50u64 << round.min(4));
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + backoff)).await;
        }
        tracing::debug!(error = ?last_error, "no broker reachable");
        Err(ClientError::NoBrokerReachable {
            tried: candidates.join(", "),
            timeout_ms: self.config.connection.connect_timeout.as_millis() as u64,
        })
    }

    /// Refreshes metadata for `topics` (empty: brokers and every topic).
    pub async fn refresh(&self, topics: &[String]) -> Result<Arc<Metadata>> {
        let conn = self.any_connection().await?;
        let mut request = MetadataRequest::default()
            .with_allow_auto_topic_creation(self.config.allow_auto_create_topics);
        request.topics = if topics.is_empty() {
            None
        } else {
            Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect(),
            )
        };
        let (response, _) = conn.send(&request).await?;
        let mut fresh = Metadata::from_response(&response);
        if !topics.is_empty() {
            // Keep what we knew of other topics.
            let old = self.metadata();
            for (name, t) in &old.topics {
                fresh
                    .topics
                    .entry(name.clone())
                    .or_insert_with(|| t.clone());
            }
        }
        let fresh = Arc::new(fresh);
        *self.metadata.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// Metadata of one topic, refreshing once if it is unknown or has an error.
    pub async fn topic(&self, name: &str) -> Result<TopicInfo> {
        if let Some(t) = self
            .metadata()
            .topics
            .get(name)
            .filter(|t| t.error_code == 0)
        {
            return Ok(t.clone());
        }
        let meta = self.refresh(&[name.to_string()]).await?;
        let t = meta
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| ClientError::Invalid(format!("no metadata for topic '{name}'")))?;
        match ClientError::from_code(t.error_code, format!("topic '{name}'")) {
            Some(e) => Err(e),
            None => Ok(t),
        }
    }

    /// A connection to the leader of `topic`/`partition`.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<Arc<Connection>> {
        let t = self.topic(topic).await?;
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| {
                ClientError::from_code(3, format!("{topic}/{partition}"))
                    .unwrap_or(ClientError::Invalid("unknown partition".into()))
            })?;
        let addr = self
            .metadata()
            .brokers
            .get(&p.leader)
            .cloned()
            .ok_or_else(|| {
                ClientError::from_code(5, format!("leader of {topic}/{partition}"))
                    .unwrap_or(ClientError::Invalid("no leader".into()))
            })?;
        self.connection(&addr).await
    }
}
