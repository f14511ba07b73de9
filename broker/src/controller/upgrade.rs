//! The in-place upgrade of a single-node data directory: today's `meta/topics` (the
//! [`MetadataStore`]) becomes the first records of the metadata log, so the image built from them
//! answers exactly what the file did, and the node keeps every topic it had.
//!
//! Invariants:
//! - reading only: the store and its file are not changed (the caller writes the records to the
//!   metadata log durably before it retires the file);
//! - every partition of every topic gets this node as its only replica, leader and ISR member,
//!   at leader epoch 0 and partition epoch 0, as a single node has always served them;
//! - topic ids, names, partition counts, configuration overrides and the cluster id are carried
//!   over unchanged; producer ids continue after everything the node ever reserved.

use super::records::{BrokerRegistration, MetadataRecord, PartitionRecord, ProducerIdBlock};
use super::MetadataStore;
use crate::ids::{LeaderEpoch, PartitionEpoch, PartitionId};

/// The first metadata records of a node that was a single broker: the cluster id, `this`
/// broker's registration, every topic with its partitions and overrides, and (if ids were ever
/// reserved) one producer-id block covering `[0, producer_ids_reserved_end)`.
pub fn records_from_single_node(
    store: &MetadataStore,
    this: &BrokerRegistration,
    producer_ids_reserved_end: i64,
) -> Vec<MetadataRecord> {
    let me = this.id;
    let mut out = vec![
        MetadataRecord::ClusterId(store.cluster_id().to_string()),
        MetadataRecord::RegisterBroker(BrokerRegistration {
            fenced: false,
            ..this.clone()
        }),
    ];
    for topic in store.topics() {
        out.push(MetadataRecord::Topic {
            name: topic.name.clone(),
            id: topic.id,
        });
        for p in 0..topic.partitions {
            out.push(MetadataRecord::Partition(PartitionRecord {
                topic: topic.id,
                partition: PartitionId(p),
                replicas: vec![me],
                isr: vec![me],
                leader: Some(me),
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
            }));
        }
        for (key, value) in &topic.overrides.0 {
            out.push(MetadataRecord::TopicConfig {
                topic: topic.id,
                key: key.clone(),
                value: Some(value.clone()),
            });
        }
    }
    if producer_ids_reserved_end > 0 {
        out.push(MetadataRecord::ProducerIds(ProducerIdBlock {
            broker: me,
            first_id: 0,
            size: producer_ids_reserved_end,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::config::TopicOverrides;
    use crate::controller::image::MetadataImage;
    use crate::controller::records::{decode_batch, encode_batch, BrokerEndpoint};
    use crate::controller::{random_uuid, TopicMeta};
    use crate::ids::{BrokerId, Offset};

    #[test]
    fn a_single_node_data_dir_becomes_an_image_that_answers_the_same() {
        // A broker that ran on one node: two topics, one with overrides, and the offsets topic.
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path()).unwrap();
        let topics = [
            (
                "orders",
                3,
                vec![("retention.ms", "60000"), ("segment.bytes", "1048576")],
            ),
            ("payments", 1, vec![]),
            ("__consumer_offsets", 50, vec![("retention.ms", "-1")]),
        ];
        for (name, partitions, overrides) in &topics {
            store
                .create_topic(TopicMeta {
                    name: name.to_string(),
                    id: random_uuid(),
                    partitions: *partitions,
                    overrides: TopicOverrides::parse(overrides.iter().copied()).unwrap(),
                })
                .unwrap();
        }
        let file = std::fs::read(dir.path().join("meta/topics")).unwrap();
        let this = BrokerRegistration {
            id: BrokerId(1),
            incarnation: Uuid::from_u128(42),
            endpoints: vec![BrokerEndpoint {
                listener: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092,
            }],
            rack: None,
            fenced: true,
        };

        let records = records_from_single_node(&store, &this, 3000);
        // They travel as a metadata-log entry.
        let records = decode_batch(&encode_batch(&records)).unwrap();
        let (image, delta) = MetadataImage::empty().apply(Offset(0), &records).unwrap();

        assert_eq!(image.cluster_id(), Some(store.cluster_id()));
        assert_eq!(image.brokers().len(), 1);
        let me = image.broker(BrokerId(1)).unwrap();
        assert!(!me.fenced, "the node that served alone stays in service");
        assert_eq!(me.endpoints, this.endpoints);
        assert_eq!(image.topics().count(), store.topics().count());
        for meta in store.topics() {
            let t = image.topic_by_name(&meta.name).unwrap();
            assert_eq!(t.id, meta.id, "{}", meta.name);
            assert_eq!(image.topic(meta.id).unwrap().name, meta.name);
            assert_eq!(t.partitions.len() as i32, meta.partitions, "{}", meta.name);
            assert_eq!(t.overrides(), meta.overrides, "{}", meta.name);
            for p in &t.partitions {
                assert_eq!(p.replicas, [BrokerId(1)]);
                assert_eq!(
                    (p.leader, &p.isr[..]),
                    (Some(BrokerId(1)), &[BrokerId(1)][..])
                );
                assert_eq!((p.leader_epoch.0, p.partition_epoch.0), (0, 0));
            }
        }
        assert_eq!(image.producer_id_high_mark(), 3000);

        // The node leads every partition it had and has to remove nothing.
        let local = delta.local_changes(BrokerId(1));
        assert_eq!(local.leads.len(), 3 + 1 + 50);
        assert!(local.follows.is_empty() && local.removes.is_empty());

        // Nothing was written to the old file.
        assert_eq!(std::fs::read(dir.path().join("meta/topics")).unwrap(), file);

        // A node that never handed out a producer id writes no block.
        let fresh = tempfile::tempdir().unwrap();
        let empty = MetadataStore::open(fresh.path()).unwrap();
        let records = records_from_single_node(&empty, &this, 0);
        assert_eq!(records.len(), 2);
        let (image, _) = MetadataImage::empty().apply(Offset(0), &records).unwrap();
        assert_eq!(image.producer_id_high_mark(), 0);
        assert_eq!(image.topics().count(), 0);
    }
}
