//! The admin client's group operations: list, describe, delete groups; read, set and delete a
//! group's committed offsets. Like Kafka's admin client, these go to the group's coordinator
//! (found with FindCoordinator) except ListGroups, which asks every broker.
//!
//! Invariants:
//! - every group-level and partition-level error code becomes an `Err` naming the group (and
//!   the partition), never a silently partial answer;
//! - offsets are set with a "simple" commit (generation -1, no member id), which the coordinator
//!   only accepts while the group has no active members, as Kafka's does;
//! - a member's assignment is decoded leniently for display: bytes we cannot read show as no
//!   partitions rather than failing the whole description.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest,
    OffsetDeleteRequest, TopicName,
};
use kafka_protocol::protocol::{Message, StrBytes};

use super::coordinator::{
    commit_offsets, decode_assignment_lenient, fetch_offsets, find_coordinator, CommitAs,
};
use super::protocol::{Subscription, Tp, PROTOCOL_TYPE};
use crate::admin::Admin;
use crate::error::{ClientError, Result};

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupListing {
    pub group_id: String,
    /// "consumer" for consumer groups; empty for groups that only have committed offsets.
    pub protocol_type: String,
    /// Empty, Stable, PreparingRebalance, CompletingRebalance, Dead (ListGroups v4+).
    pub state: Option<String>,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The topics it subscribes to (consumer protocol only; empty if unreadable).
    pub subscribed_topics: Vec<String>,
    pub assignment: Vec<Tp>,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// Kafka's state names; "Dead" for a group that does not exist.
    pub state: String,
    pub protocol_type: String,
    /// The chosen assignor (e.g. "range"), empty outside Stable.
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Admin {
    /// Every group of every broker, sorted, optionally only those in `states` (Kafka's state
    /// names, e.g. "Stable", "Empty"; needs ListGroups v4).
    pub async fn list_groups(&self, states: &[String]) -> Result<Vec<GroupListing>> {
        let cluster = self.cluster();
        let mut addrs: BTreeSet<String> = cluster.metadata().brokers.values().cloned().collect();
        if addrs.is_empty() {
            addrs.insert(cluster.any_connection().await?.addr().to_string());
        }
        let mut out = BTreeSet::new();
        for addr in addrs {
            let conn = cluster.connection(&addr).await?;
            let version = conn
                .version_for(ApiKey::ListGroups, ListGroupsRequest::VERSIONS)
                .ok_or(ClientError::Unsupported { api: "ListGroups" })?;
            let mut request = ListGroupsRequest::default();
            if !states.is_empty() {
                if version < 4 {
                    return Err(ClientError::Unsupported {
                        api: "ListGroups with a states filter (v4+)",
                    });
                }
                request.states_filter = states.iter().map(|s| str_bytes(s)).collect();
            }
            let response = conn.send_at(&request, version).await?;
            if let Some(e) =
                ClientError::from_code(response.error_code, format!("ListGroups at {addr}"))
            {
                return Err(e);
            }
            for g in &response.groups {
                out.insert(GroupListing {
                    group_id: g.group_id.0.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                    state: (version >= 4).then(|| g.group_state.to_string()),
                });
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The group's state, protocol and members with their decoded assignments.
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDescription> {
        let conn = find_coordinator(self.cluster(), group_id).await?;
        let version = conn
            .version_for(ApiKey::DescribeGroups, DescribeGroupsRequest::VERSIONS)
            .ok_or(ClientError::Unsupported {
                api: "DescribeGroups",
            })?;
        let request =
            DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group_id))]);
        let response = conn.send_at(&request, version).await?;
        let g = response
            .groups
            .iter()
            .find(|g| *g.group_id.0 == *group_id)
            .ok_or_else(|| ClientError::Malformed {
                api: "DescribeGroups",
                reason: format!("no answer for group '{group_id}'"),
            })?;
        if let Some(e) = ClientError::from_code(g.error_code, format!("group '{group_id}'")) {
            return Err(e);
        }
        let consumer = *g.protocol_type == *PROTOCOL_TYPE;
        let members = g
            .members
            .iter()
            .map(|m| GroupMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                subscribed_topics: if consumer {
                    Subscription::decode(&m.member_metadata)
                        .map(|s| s.topics)
                        .unwrap_or_default()
                } else {
                    Vec::new()
                },
                assignment: if consumer {
                    decode_assignment_lenient(&m.member_assignment)
                } else {
                    Vec::new()
                },
            })
            .collect();
        Ok(GroupDescription {
            group_id: group_id.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members,
        })
    }

    /// Every committed offset of the group.
    pub async fn list_group_offsets(&self, group_id: &str) -> Result<BTreeMap<Tp, i64>> {
        let conn = find_coordinator(self.cluster(), group_id).await?;
        fetch_offsets(&conn, group_id, None).await
    }

    /// Sets the group's committed offsets (a simple commit: the group must have no active
    /// members, else the coordinator answers UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION...).
    pub async fn alter_group_offsets(
        &self,
        group_id: &str,
        offsets: &BTreeMap<Tp, i64>,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let conn = find_coordinator(self.cluster(), group_id).await?;
        commit_offsets(&conn, group_id, &CommitAs::simple(), offsets).await
    }

    /// Deletes a group with no active members, and its committed offsets.
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        let conn = find_coordinator(self.cluster(), group_id).await?;
        let version = conn
            .version_for(ApiKey::DeleteGroups, DeleteGroupsRequest::VERSIONS)
            .ok_or(ClientError::Unsupported {
                api: "DeleteGroups",
            })?;
        let request =
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(str_bytes(group_id))]);
        let response = conn.send_at(&request, version).await?;
        let r = response
            .results
            .iter()
            .find(|r| *r.group_id.0 == *group_id)
            .ok_or_else(|| ClientError::Malformed {
                api: "DeleteGroups",
                reason: format!("no answer for group '{group_id}'"),
            })?;
        match ClientError::from_code(r.error_code, format!("delete group '{group_id}'")) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Deletes the group's committed offsets of `partitions` (OffsetDelete); refused with
    /// GROUP_SUBSCRIBED_TO_TOPIC while an active member subscribes to the topic.
    pub async fn delete_group_offsets(&self, group_id: &str, partitions: &[Tp]) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        let conn = find_coordinator(self.cluster(), group_id).await?;
        let version = conn
            .version_for(ApiKey::OffsetDelete, OffsetDeleteRequest::VERSIONS)
            .ok_or(ClientError::Unsupported {
                api: "OffsetDelete",
            })?;
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in partitions {
            by_topic.entry(t.as_str()).or_default().push(*p);
        }
        let topics = by_topic
            .into_iter()
            .map(|(t, ps)| {
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(str_bytes(t)))
                    .with_partitions(
                        ps.into_iter()
                            .map(|p| {
                                OffsetDeleteRequestPartition::default().with_partition_index(p)
                            })
                            .collect(),
                    )
            })
            .collect();
        let request = OffsetDeleteRequest::default()
            .with_group_id(GroupId(str_bytes(group_id)))
            .with_topics(topics);
        let response = conn.send_at(&request, version).await?;
        if let Some(e) = ClientError::from_code(
            response.error_code,
            format!("delete offsets of group '{group_id}'"),
        ) {
            return Err(e);
        }
        for t in &response.topics {
            for p in &t.partitions {
                let context = format!(
                    "delete offset of {}/{} for group '{group_id}'",
                    t.name.0, p.partition_index
                );
                if let Some(e) = ClientError::from_code(p.error_code, context) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}
