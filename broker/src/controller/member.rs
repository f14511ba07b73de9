//! This node as a member of the controller quorum, as the rest of the broker uses it: start the
//! quorum with the image as its state machine, register this broker, and propose metadata records
//! (answered once they are committed and applied to this node's image).
//!
//! `strata serve` with no `controller.quorum.voters` is a quorum of one: this node is the only
//! voter, on a controller listener of its own (`controller.listener`, or a free port on
//! 127.0.0.1 when unset: no other node ever connects to it).
//!
//! Invariants:
//! - a proposal answered `Ok(offset)` is committed by a majority of voters and this node's image
//!   is at `offset` or later;
//! - a broker serves only after its own registration is applied to its image, so its image holds
//!   every change committed before it started (a restarted broker has caught up);
//! - each process start draws a new incarnation id: the image tells a restarted broker from a
//!   zombie of its previous run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::image::{IsrRejection, MetadataImage, PartitionImage};
use super::quorum::{Quorum, QuorumError, QuorumSettings, Voter};
use super::records::{encode_batch, AlterIsr, BrokerEndpoint, BrokerRegistration, MetadataRecord};
use super::view::{ImageStateMachine, MetadataView};
use super::{cluster_id_from, random_uuid};
use crate::config::{BrokerConfig, ConfigError};
use crate::error::BrokerError;
use crate::ids::{BrokerId, Offset};

/// How often start-up says it is still waiting for a controller leader.
const WAITING_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Attempts at a registration that lost a race (say, two brokers writing the first cluster id).
const PROPOSE_ATTEMPTS_MAX: usize = 5;
/// Pause between registration attempts while the quorum has no leader.
const REGISTER_RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// The quorum settings `serve` runs with: the configured quorum, or a quorum of one.
pub fn settings_from_config(config: &BrokerConfig) -> Result<QuorumSettings, ConfigError> {
    if let Some(settings) = QuorumSettings::from_config(config)? {
        return Ok(settings);
    }
    let node_id = u64::try_from(config.i64("node.id")).map_err(|_| ConfigError {
        key: "node.id".into(),
        reason: "negative".into(),
    })?;
    let listen: SocketAddr = match config.get("controller.listener").trim() {
        "" => SocketAddr::from(([127, 0, 0, 1], 0)),
        text => text.parse().map_err(|_| ConfigError {
            key: "controller.listener".into(),
            reason: format!("'{text}' is not IP:PORT"),
        })?,
    };
    let mut settings = QuorumSettings::with_limits_of(
        config,
        node_id,
        super::quorum::settings::Roles {
            broker: true,
            controller: true,
        },
        vec![Voter {
            id: node_id,
            addr: listen,
        }],
        listen,
    );
    // A quorum of one elects itself at once; nothing to wait for.
    settings.election_timeout_ms = settings.election_timeout_ms.min(400);
    settings.heartbeat_interval_ms = settings
        .heartbeat_interval_ms
        .min(settings.election_timeout_ms / 8);
    Ok(settings)
}

/// This node's quorum member and its image.
#[derive(Clone)]
pub struct Controller {
    quorum: Quorum,
    view: MetadataView,
    me: BrokerId,
    incarnation: Uuid,
    request_timeout: Duration,
}

impl Controller {
    /// Starts this node's quorum member and waits until the quorum has a leader (logging while it
    /// waits: the other voters may not be up yet).
    pub async fn start(
        settings: QuorumSettings,
        data_dir: &std::path::Path,
        me: BrokerId,
    ) -> Result<Controller, BrokerError> {
        let view = MetadataView::new();
        let request_timeout = Duration::from_millis(settings.request_timeout_ms);
        let quorum = Quorum::start(settings, data_dir, ImageStateMachine::new(view.clone()))
            .await
            .map_err(controller_error)?;
        let controller = Controller {
            quorum,
            view,
            me,
            incarnation: random_uuid(),
            request_timeout,
        };
        // A voter waits for the quorum to elect a leader; a node that is not a voter hears of
        // none until the leader adds it as a learner, which its registration brings about.
        while controller.quorum.votes() {
            match controller
                .quorum
                .wait_for_leader(WAITING_LOG_INTERVAL)
                .await
            {
                Ok(_) => break,
                Err(QuorumError::Timeout(_)) => {
                    tracing::info!("waiting for a controller leader (are the other voters up?)")
                }
                Err(e) => return Err(controller_error(e)),
            }
        }
        // A restarted leader applies its log only as it commits again: wait for that, so the
        // image start-up reads (the upgrade's check, the registration) holds everything.
        if let Err(e) = controller
            .quorum
            .catch_up_if_leader(controller.request_timeout)
            .await
        {
            tracing::info!(error = %e, "the metadata image may lag at start");
        }
        Ok(controller)
    }

    /// The current metadata image (no lock: a reference-count increment).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.view.image()
    }

    pub fn view(&self) -> &MetadataView {
        &self.view
    }

    /// The active controller (the quorum's leader) this node knows of.
    pub fn active(&self) -> Option<BrokerId> {
        self.quorum.leader().map(|id| BrokerId(id as i32))
    }

    /// This process's incarnation id.
    pub fn incarnation(&self) -> Uuid {
        self.incarnation
    }

    /// This node's quorum member.
    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// Commits `records` as one batch and waits until this node's image has applied it.
    /// A batch the state machine rejected is answered only once this node applied its index
    /// too, so the caller can re-check against an image that holds what it lost to.
    pub async fn propose(&self, records: &[MetadataRecord]) -> Result<Offset, BrokerError> {
        let index = match self.quorum.propose(encode_batch(records)).await {
            Ok(index) => index,
            Err(QuorumError::Rejected { index, reason }) => {
                // Best effort: a timeout here still answers the rejection.
                let _ = self.quorum.wait_applied(index, self.request_timeout).await;
                return Err(BrokerError::ControllerRejected(reason));
            }
            Err(e) => return Err(controller_error(e)),
        };
        self.quorum
            .wait_applied(index, self.request_timeout)
            .await
            .map_err(controller_error)?;
        Ok(Offset(index as i64))
    }

    /// Commits an ISR change asked for by the partition's leader (Kafka's AlterPartition) and
    /// answers the partition as this node's image holds it after the change. A refusal is
    /// [`BrokerError::IsrChangeRejected`] with the rule broken (stale partition epoch: re-read
    /// the image and decide again).
    pub async fn alter_isr(&self, change: AlterIsr) -> Result<PartitionImage, BrokerError> {
        let (topic, partition) = (change.topic, change.partition);
        match self.propose(&[MetadataRecord::AlterIsr(change)]).await {
            Ok(_) => {}
            Err(BrokerError::ControllerRejected(reason)) => {
                return Err(match IsrRejection::from_reason(&reason) {
                    Some(kind) => BrokerError::IsrChangeRejected { kind, reason },
                    None => BrokerError::ControllerRejected(reason),
                })
            }
            Err(e) => return Err(e),
        }
        // Applied here: the image holds the change (or a later one, if the partition moved on).
        self.image()
            .partition(topic, partition)
            .cloned()
            .ok_or(BrokerError::UnknownTopicOrPartition)
    }

    /// Registers this broker (a new incarnation) with its endpoints and rack, writing the cluster
    /// id first if the cluster has none, and waits until its image holds the registration.
    /// `first` are records to commit in the same batch (the upgrade of a single-node data dir).
    pub async fn register(
        &self,
        endpoints: Vec<BrokerEndpoint>,
        rack: Option<String>,
        first: Vec<MetadataRecord>,
    ) -> Result<Offset, BrokerError> {
        let registration = BrokerRegistration {
            id: self.me,
            incarnation: self.incarnation,
            endpoints,
            rack,
            fenced: false,
        };
        let mut lost_races = 0;
        let mut last_log = std::time::Instant::now();
        loop {
            let mut records = first.clone();
            let has_cluster_id = records
                .iter()
                .any(|r| matches!(r, MetadataRecord::ClusterId(_)));
            // Only voters write the cluster id: a broker that is not one has no image before it
            // registers, and could not wait for a rejected attempt to be applied.
            if self.quorum.votes() && self.image().cluster_id().is_none() && !has_cluster_id {
                records.insert(0, MetadataRecord::ClusterId(cluster_id_from(random_uuid())));
            }
            records.push(MetadataRecord::RegisterBroker(registration.clone()));
            let index = match self.quorum.propose(encode_batch(&records)).await {
                Ok(index) => index,
                // Another broker wrote the cluster id first: the image has it once this node
                // caught up; again.
                Err(QuorumError::Rejected { index, reason }) => {
                    lost_races += 1;
                    if lost_races >= PROPOSE_ATTEMPTS_MAX {
                        return Err(BrokerError::ControllerRejected(reason));
                    }
                    self.wait_applied_patiently(index).await?;
                    continue;
                }
                // No leader yet (an election, or the voters still starting): a broker waits
                // for its quorum, as long as it takes.
                Err(
                    e @ (QuorumError::NotLeader { .. }
                    | QuorumError::Unreachable { .. }
                    | QuorumError::Timeout(_)
                    | QuorumError::Refused(_)),
                ) => {
                    if last_log.elapsed() >= WAITING_LOG_INTERVAL {
                        tracing::info!(error = %e, "waiting for the controller quorum to register");
                        last_log = std::time::Instant::now();
                    }
                    tokio::time::sleep(REGISTER_RETRY_INTERVAL).await;
                    continue;
                }
                Err(e) => return Err(controller_error(e)),
            };
            self.wait_applied_patiently(index).await?;
            return Ok(Offset(index as i64));
        }
    }

    /// Waits until this node's image reached `index`, however long it takes (a broker that is not
    /// a voter hears the log only once the leader made it a learner), logging while it waits.
    async fn wait_applied_patiently(&self, index: u64) -> Result<(), BrokerError> {
        loop {
            match self.quorum.wait_applied(index, WAITING_LOG_INTERVAL).await {
                Ok(()) => return Ok(()),
                Err(QuorumError::Timeout(_)) => tracing::info!(
                    index,
                    "waiting to receive the metadata log up to this broker's registration"
                ),
                Err(e) => return Err(controller_error(e)),
            }
        }
    }

    /// Stops the quorum member (awaited).
    pub async fn shutdown(&self) {
        self.quorum.shutdown().await;
    }
}

/// The broker's error for a failed quorum operation.
pub fn controller_error(e: QuorumError) -> BrokerError {
    match e {
        QuorumError::Rejected { reason, .. } => BrokerError::ControllerRejected(reason),
        QuorumError::NotLeader { .. }
        | QuorumError::Unreachable { .. }
        | QuorumError::Refused(_) => BrokerError::NotController(e.to_string()),
        QuorumError::Timeout(_) => BrokerError::ControllerTimeout(e.to_string()),
        QuorumError::TooLarge { .. } => BrokerError::PolicyViolation(e.to_string()),
        QuorumError::Stopped(_) | QuorumError::Start(_) => {
            BrokerError::ControllerTimeout(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::records::PartitionRecord;
    use crate::ids::{LeaderEpoch, PartitionEpoch, PartitionId};

    /// A quorum of one on 127.0.0.1, broker 1 registered, and broker 2 registered beside it.
    async fn single_node_with_two_brokers(dir: &std::path::Path) -> Controller {
        let settings = settings_from_config(&BrokerConfig::default()).unwrap();
        let controller = Controller::start(settings, dir, BrokerId(1)).await.unwrap();
        controller
            .register(Vec::new(), None, Vec::new())
            .await
            .unwrap();
        let other = BrokerRegistration {
            id: BrokerId(2),
            incarnation: random_uuid(),
            endpoints: Vec::new(),
            rack: None,
            fenced: false,
        };
        controller
            .propose(&[MetadataRecord::RegisterBroker(other)])
            .await
            .unwrap();
        controller
    }

    /// Broker 1 leads `orders-0` (replicas 1 and 2): it drops broker 2 from the ISR through the
    /// quorum; a retry with the partition epoch it started from is answered
    /// INVALID_UPDATE_VERSION and changes nothing.
    #[tokio::test]
    async fn an_isr_change_commits_through_the_quorum_and_a_stale_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let controller = single_node_with_two_brokers(dir.path()).await;
        let topic = random_uuid();
        controller
            .propose(&[
                MetadataRecord::Topic {
                    name: "orders".into(),
                    id: topic,
                },
                MetadataRecord::Partition(PartitionRecord {
                    topic,
                    partition: PartitionId(0),
                    replicas: vec![BrokerId(1), BrokerId(2)],
                    isr: vec![BrokerId(1), BrokerId(2)],
                    leader: Some(BrokerId(1)),
                    leader_epoch: LeaderEpoch(0),
                    partition_epoch: PartitionEpoch(0),
                }),
            ])
            .await
            .unwrap();
        let shrink = AlterIsr {
            topic,
            partition: PartitionId(0),
            leader: BrokerId(1),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
            isr: vec![BrokerId(1)],
        };

        let after = controller.alter_isr(shrink.clone()).await.unwrap();
        assert_eq!(after.isr, vec![BrokerId(1)]);
        assert_eq!(after.partition_epoch, PartitionEpoch(1));
        assert_eq!(
            controller.image().partition(topic, PartitionId(0)),
            Some(&after)
        );

        let stale = controller.alter_isr(shrink).await.unwrap_err();
        assert!(
            matches!(
                stale,
                BrokerError::IsrChangeRejected {
                    kind: IsrRejection::StalePartitionEpoch,
                    ..
                }
            ),
            "{stale:?}"
        );
        assert_eq!(stale.code(), 95, "INVALID_UPDATE_VERSION");
        assert_eq!(
            controller.image().partition(topic, PartitionId(0)),
            Some(&after)
        );
        controller.shutdown().await;
    }
}
