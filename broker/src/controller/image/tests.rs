use super::*;
use crate::controller::records::{AlterIsr, BrokerEndpoint, PartitionChange};

fn broker(id: i32, rack: Option<&str>) -> MetadataRecord {
    MetadataRecord::RegisterBroker(BrokerRegistration {
        id: BrokerId(id),
        incarnation: Uuid::from_u128(id as u128),
        endpoints: vec![BrokerEndpoint {
            listener: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9092 + id as u16,
        }],
        rack: rack.map(str::to_string),
        fenced: false,
    })
}

fn ids(list: &[i32]) -> Vec<BrokerId> {
    list.iter().copied().map(BrokerId).collect()
}

fn partition(topic: Uuid, p: i32, replicas: &[i32]) -> MetadataRecord {
    MetadataRecord::Partition(partition_record(topic, p, replicas))
}

fn partition_record(topic: Uuid, p: i32, replicas: &[i32]) -> PartitionRecord {
    PartitionRecord {
        topic,
        partition: PartitionId(p),
        replicas: ids(replicas),
        isr: ids(replicas),
        leader: Some(BrokerId(replicas[0])),
        leader_epoch: LeaderEpoch(0),
        partition_epoch: PartitionEpoch(0),
    }
}

fn change(topic: Uuid, p: i32) -> PartitionChange {
    PartitionChange::new(topic, PartitionId(p))
}

const ORDERS: Uuid = Uuid::from_u128(0x0123);

/// Three brokers and `orders` with three partitions, replicas rotated over them.
fn three_brokers_and_orders() -> MetadataImage {
    let records = vec![
        MetadataRecord::ClusterId("cluster-a".into()),
        broker(1, Some("r1")),
        broker(2, Some("r2")),
        broker(3, Some("r3")),
        MetadataRecord::Topic {
            name: "orders".into(),
            id: ORDERS,
        },
        partition(ORDERS, 0, &[1, 2, 3]),
        partition(ORDERS, 1, &[2, 3, 1]),
        partition(ORDERS, 2, &[3, 1, 2]),
    ];
    MetadataImage::empty().apply(Offset(7), &records).unwrap().0
}

#[test]
fn creating_a_topic_tells_each_broker_which_partitions_it_leads_and_follows() {
    let (image, delta) = MetadataImage::empty()
        .apply(Offset(7), &three_brokers_and_orders().to_records())
        .unwrap();
    assert_eq!(image.offset(), Offset(7));
    assert_eq!(image.cluster_id(), Some("cluster-a"));
    assert_eq!(image.brokers().len(), 3);
    let orders = image.topic_by_name("orders").unwrap();
    assert_eq!((orders.id, orders.partitions.len()), (ORDERS, 3));
    assert_eq!(image.topic(ORDERS), Some(orders));
    assert!(delta.cluster_id_changed);
    assert_eq!(delta.topics_created, BTreeSet::from([ORDERS]));
    assert_eq!(delta.partitions.len(), 3);

    let local = delta.local_changes(BrokerId(2));
    assert_eq!(
        local.leads.iter().map(|p| p.partition).collect::<Vec<_>>(),
        [PartitionId(1)]
    );
    assert_eq!(
        local
            .follows
            .iter()
            .map(|p| p.partition)
            .collect::<Vec<_>>(),
        [PartitionId(0), PartitionId(2)]
    );
    assert!(local
        .leads
        .iter()
        .chain(&local.follows)
        .all(|p| p.is_new && p.topic_name == "orders"));
    assert!(local.removes.is_empty());
    assert_eq!(delta.local_changes(BrokerId(9)), LocalChanges::default());
}

#[test]
fn a_leader_change_bumps_both_epochs_and_moves_leadership() {
    let image = three_brokers_and_orders();
    let (after, delta) = image
        .apply(
            Offset(8),
            &[MetadataRecord::PartitionChange(PartitionChange {
                leader: Some(Some(BrokerId(2))),
                isr: Some(ids(&[2, 3])),
                ..change(ORDERS, 0)
            })],
        )
        .unwrap();
    let p = after.partition(ORDERS, PartitionId(0)).unwrap();
    assert_eq!(p.leader, Some(BrokerId(2)));
    assert_eq!(
        (p.leader_epoch, p.partition_epoch),
        (LeaderEpoch(1), PartitionEpoch(1))
    );
    assert_eq!(p.isr, ids(&[2, 3]));

    let old_leader = delta.local_changes(BrokerId(1));
    assert!(old_leader.leads.is_empty() && old_leader.removes.is_empty());
    assert_eq!(old_leader.follows.len(), 1);
    assert!(!old_leader.follows[0].is_new, "broker 1 still hosts it");
    let new_leader = delta.local_changes(BrokerId(2));
    assert_eq!(new_leader.leads[0].leader_epoch, LeaderEpoch(1));

    // An ISR change alone bumps only the partition epoch.
    let (after, _) = after
        .apply(
            Offset(9),
            &[MetadataRecord::PartitionChange(PartitionChange {
                isr: Some(ids(&[2, 3, 1])),
                ..change(ORDERS, 0)
            })],
        )
        .unwrap();
    let p = &after.topic(ORDERS).unwrap().partitions[0];
    assert_eq!(
        (p.leader_epoch, p.partition_epoch),
        (LeaderEpoch(1), PartitionEpoch(2))
    );
}

#[test]
fn a_broker_moved_off_a_partition_or_whose_topic_is_deleted_stops_hosting_it() {
    let image = three_brokers_and_orders();
    let (moved, delta) = image
        .apply(
            Offset(8),
            &[MetadataRecord::PartitionChange(PartitionChange {
                replicas: Some(ids(&[1, 2])),
                isr: Some(ids(&[1, 2])),
                ..change(ORDERS, 0)
            })],
        )
        .unwrap();
    assert_eq!(
        delta.local_changes(BrokerId(3)).removes,
        [(ORDERS, "orders".to_string(), PartitionId(0))]
    );
    let (deleted, delta) = moved
        .apply(Offset(9), &[MetadataRecord::RemoveTopic { id: ORDERS }])
        .unwrap();
    assert!(deleted.topic_by_name("orders").is_none() && deleted.topic(ORDERS).is_none());
    assert_eq!(
        delta.topics_deleted.get(&ORDERS).map(String::as_str),
        Some("orders")
    );
    assert_eq!(delta.local_changes(BrokerId(1)).removes.len(), 3);
    assert_eq!(delta.local_changes(BrokerId(3)).removes.len(), 2);

    // Created and deleted in one batch: nothing for anyone to do.
    let id = Uuid::from_u128(77);
    let (_, delta) = deleted
        .apply(
            Offset(10),
            &[
                MetadataRecord::Topic {
                    name: "brief".into(),
                    id,
                },
                partition(id, 0, &[1]),
                MetadataRecord::RemoveTopic { id },
            ],
        )
        .unwrap();
    assert!(delta.is_empty(), "{delta:?}");
}

#[test]
fn a_partition_record_cannot_take_the_leader_epoch_back() {
    let image = three_brokers_and_orders();
    let (after, _) = image
        .apply(
            Offset(8),
            &[MetadataRecord::PartitionChange(PartitionChange {
                leader: Some(Some(BrokerId(2))),
                ..change(ORDERS, 0)
            })],
        )
        .unwrap();
    // A newer partition epoch does not excuse an older leader epoch: fetchers fenced at epoch 1
    // would be let back in.
    let restated = MetadataRecord::Partition(PartitionRecord {
        leader_epoch: LeaderEpoch(0),
        partition_epoch: PartitionEpoch(5),
        ..partition_record(ORDERS, 0, &[2, 1])
    });
    let refused = after.apply(Offset(9), &[restated]);
    assert!(
        matches!(refused, Err(ApplyError::LeaderEpochBackwards { .. })),
        "leader epoch went back: {refused:?}"
    );
    // The same epoch is fine: a restatement that changes something else.
    let same = MetadataRecord::Partition(PartitionRecord {
        leader_epoch: LeaderEpoch(1),
        partition_epoch: PartitionEpoch(5),
        ..partition_record(ORDERS, 0, &[2, 1])
    });
    assert!(after.apply(Offset(9), &[same]).is_ok());
}

#[test]
fn records_that_contradict_the_image_are_refused_and_change_nothing() {
    let image = three_brokers_and_orders();
    let before = image.clone();
    let unknown = Uuid::from_u128(0xdead);
    type Expected = fn(&ApplyError) -> bool;
    let cases: Vec<(Vec<MetadataRecord>, Expected)> = vec![
        (vec![partition(unknown, 0, &[1])], |e| {
            matches!(e, ApplyError::UnknownTopicId(_))
        }),
        (
            vec![MetadataRecord::TopicConfig {
                topic: unknown,
                key: "retention.ms".into(),
                value: Some("1".into()),
            }],
            |e| matches!(e, ApplyError::UnknownTopicId(_)),
        ),
        (
            // A valid record first: it must not survive the failure after it.
            vec![
                MetadataRecord::Topic {
                    name: "fresh".into(),
                    id: Uuid::from_u128(5),
                },
                MetadataRecord::Topic {
                    name: "orders".into(),
                    id: Uuid::from_u128(6),
                },
            ],
            |e| matches!(e, ApplyError::DuplicateTopicName(_)),
        ),
        (
            vec![MetadataRecord::Topic {
                name: "other".into(),
                id: ORDERS,
            }],
            |e| matches!(e, ApplyError::DuplicateTopicId(_)),
        ),
        (
            vec![MetadataRecord::Topic {
                name: "bad name".into(),
                id: unknown,
            }],
            |e| matches!(e, ApplyError::InvalidTopicName(_)),
        ),
        (
            // A restatement of partition 0 at the epoch it already has.
            vec![partition(ORDERS, 0, &[1, 2])],
            |e| matches!(e, ApplyError::PartitionEpochBackwards { .. }),
        ),
        (vec![partition(ORDERS, 5, &[1])], |e| {
            matches!(e, ApplyError::PartitionNotNext { .. })
        }),
        (
            vec![MetadataRecord::PartitionChange(PartitionChange {
                leader: Some(Some(BrokerId(4))),
                ..change(ORDERS, 1)
            })],
            |e| matches!(e, ApplyError::InvalidPartition { .. }),
        ),
        (
            vec![MetadataRecord::PartitionChange(PartitionChange {
                replicas: Some(ids(&[1, 1])),
                ..change(ORDERS, 1)
            })],
            |e| matches!(e, ApplyError::InvalidPartition { .. }),
        ),
        (
            vec![MetadataRecord::PartitionChange(change(ORDERS, 3))],
            |e| matches!(e, ApplyError::UnknownPartition { .. }),
        ),
        (
            vec![MetadataRecord::BrokerChange {
                id: BrokerId(2),
                incarnation: Uuid::from_u128(99),
                fenced: true,
            }],
            |e| matches!(e, ApplyError::StaleIncarnation { .. }),
        ),
        (
            vec![MetadataRecord::UnregisterBroker { id: BrokerId(8) }],
            |e| matches!(e, ApplyError::UnknownBroker(_)),
        ),
        (vec![MetadataRecord::ClusterId("cluster-b".into())], |e| {
            matches!(e, ApplyError::ClusterIdChanged { .. })
        }),
        (
            vec![
                MetadataRecord::ProducerIds(ProducerIdBlock {
                    broker: BrokerId(1),
                    first_id: 0,
                    size: 1000,
                }),
                MetadataRecord::ProducerIds(ProducerIdBlock {
                    broker: BrokerId(2),
                    first_id: 999,
                    size: 1000,
                }),
            ],
            |e| matches!(e, ApplyError::ProducerIdsBackwards { .. }),
        ),
    ];
    for (records, expected) in cases {
        let err = image.apply(Offset(8), &records).unwrap_err();
        assert!(expected(&err), "{records:?}: {err}");
        assert_eq!(image, before);
    }
    assert!(matches!(
        image.apply(Offset(7), &[]),
        Err(ApplyError::OffsetNotAfter { .. })
    ));
}

#[test]
fn an_apply_copies_only_the_topics_it_touches() {
    let image = three_brokers_and_orders();
    let other = Uuid::from_u128(0x0456);
    let (image, _) = image
        .apply(
            Offset(8),
            &[
                MetadataRecord::Topic {
                    name: "payments".into(),
                    id: other,
                },
                partition(other, 0, &[1]),
            ],
        )
        .unwrap();
    let (after, delta) = image
        .apply(
            Offset(9),
            &[MetadataRecord::TopicConfig {
                topic: other,
                key: "retention.ms".into(),
                value: Some("1000".into()),
            }],
        )
        .unwrap();
    assert_eq!(delta.configs_changed, BTreeSet::from([other]));
    assert!(Arc::ptr_eq(&image.topics[&ORDERS], &after.topics[&ORDERS]));
    assert!(!Arc::ptr_eq(&image.topics[&other], &after.topics[&other]));
    assert!(Arc::ptr_eq(&image.brokers, &after.brokers));
    assert_eq!(
        after
            .topic(other)
            .unwrap()
            .overrides()
            .0
            .get("retention.ms")
            .map(String::as_str),
        Some("1000")
    );
}

/// A deterministic history of valid batches: brokers come and go, topics are created, grown,
/// reconfigured, re-led and deleted, producer-id blocks are handed out.
fn history(batches: usize) -> Vec<Vec<MetadataRecord>> {
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut image = MetadataImage::empty();
    let mut out = Vec::new();
    let mut first = vec![MetadataRecord::ClusterId("history".into())];
    first.extend((1..=4).map(|b| broker(b, None)));
    let mut topic_seq = 0u128;
    let mut pid_end = 0i64;
    for i in 0..batches {
        let mut batch = if i == 0 {
            std::mem::take(&mut first)
        } else {
            Vec::new()
        };
        let topics: Vec<Uuid> = image.topics.keys().copied().collect();
        match next(6) {
            0 | 1 => {
                topic_seq += 1;
                let id = Uuid::from_u128(1000 + topic_seq);
                batch.push(MetadataRecord::Topic {
                    name: format!("t{topic_seq}"),
                    id,
                });
                for p in 0..=next(3) as i32 {
                    let lead = 1 + next(4) as i32;
                    batch.push(partition(id, p, &[lead, lead % 4 + 1]));
                }
            }
            2 if !topics.is_empty() => {
                let id = topics[next(topics.len() as u64) as usize];
                let p = &image.topics[&id].partitions[0];
                // The other replica: a change must change something.
                let leader = *p.replicas.iter().find(|b| Some(**b) != p.leader).unwrap();
                batch.push(MetadataRecord::PartitionChange(PartitionChange {
                    leader: Some(Some(leader)),
                    isr: Some(p.replicas.clone()),
                    ..change(id, 0)
                }));
                batch.push(MetadataRecord::TopicConfig {
                    topic: id,
                    key: "retention.ms".into(),
                    value: (next(2) == 0).then(|| format!("{}", next(100_000))),
                });
            }
            3 if !topics.is_empty() => {
                let id = topics[next(topics.len() as u64) as usize];
                batch.push(MetadataRecord::RemoveTopic { id });
            }
            4 => {
                batch.push(MetadataRecord::ProducerIds(ProducerIdBlock {
                    broker: BrokerId(1 + next(4) as i32),
                    first_id: pid_end,
                    size: 1000,
                }));
                pid_end += 1000;
            }
            _ => {
                let b = BrokerId(1 + next(4) as i32);
                batch.push(MetadataRecord::BrokerChange {
                    id: b,
                    incarnation: image.brokers[&b].incarnation,
                    fenced: next(2) == 0,
                });
            }
        }
        image = image.apply(Offset(i as i64), &batch).unwrap().0;
        out.push(batch);
    }
    out
}

#[test]
fn a_snapshot_decodes_to_the_same_image_and_snapshot_plus_rest_equals_replay() {
    let batches = history(120);
    let replay = |from: MetadataImage, start: usize| {
        batches[start..]
            .iter()
            .enumerate()
            .fold(from, |image, (i, batch)| {
                image.apply(Offset((start + i) as i64), batch).unwrap().0
            })
    };
    let full = replay(MetadataImage::empty(), 0);
    assert!(
        full.topics().count() > 3,
        "the history leaves topics to compare"
    );
    assert!(full.producer_id_high_mark() > 0);
    assert_eq!(
        MetadataImage::decode_snapshot(&full.encode_snapshot()).unwrap(),
        full
    );
    assert_eq!(
        MetadataImage::decode_snapshot(&MetadataImage::empty().encode_snapshot()).unwrap(),
        MetadataImage::empty()
    );
    for cut in [1, 17, 60, 119] {
        let prefix = MetadataImage::empty();
        let at_cut = batches[..cut]
            .iter()
            .enumerate()
            .fold(prefix, |image, (i, b)| {
                image.apply(Offset(i as i64), b).unwrap().0
            });
        let loaded = MetadataImage::decode_snapshot(&at_cut.encode_snapshot()).unwrap();
        assert_eq!(loaded, at_cut, "cut {cut}");
        assert_eq!(replay(loaded, cut), full, "cut {cut}");
    }

    let mut bytes = full.encode_snapshot();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(
        MetadataImage::decode_snapshot(&bytes),
        Err(SnapshotError::Decode(RecordError::Checksum { .. }))
    ));
}

/// A node far behind installs a snapshot: the delta between its image and the snapshot's says
/// what replaying the missed records in one batch would have said.
#[test]
fn the_delta_between_two_images_matches_replaying_the_records_between_them() {
    let batches = history(120);
    let images: Vec<MetadataImage> = batches
        .iter()
        .enumerate()
        .scan(MetadataImage::empty(), |image, (i, b)| {
            *image = image.apply(Offset(i as i64), b).unwrap().0;
            Some(image.clone())
        })
        .collect();
    let full = images.last().unwrap();
    for cut in [0, 5, 40, 100, 118] {
        let rest: Vec<MetadataRecord> = batches[cut + 1..].concat();
        let (replayed, applied) = images[cut].apply(Offset(1000), &rest).unwrap();
        assert_eq!(replayed.topics, full.topics, "cut {cut}");
        let between = MetadataDelta::between(&images[cut], full);
        assert_eq!(between.partitions, applied.partitions, "cut {cut}");
        assert_eq!(between.topics_created, applied.topics_created, "cut {cut}");
        assert_eq!(between.topics_deleted, applied.topics_deleted, "cut {cut}");
        assert!(between.configs_changed.is_subset(&applied.configs_changed));
        assert!(between.brokers_changed.is_subset(&applied.brokers_changed));
        for b in 1..=4 {
            assert_eq!(
                between.local_changes(BrokerId(b)),
                applied.local_changes(BrokerId(b)),
                "cut {cut}, broker {b}"
            );
        }
    }
    assert!(MetadataDelta::between(full, full).is_empty());
}

proptest::proptest! {
    /// Whatever the records, applying them never panics; what is accepted keeps the image's
    /// invariants and survives a snapshot.
    #[test]
    fn any_records_apply_or_are_refused_without_panicking(
        records in proptest::collection::vec(crate::controller::records::tests::record(), 1..12)
    ) {
        let image = three_brokers_and_orders();
        if let Ok((after, _)) = image.apply(Offset(8), &records) {
            for t in after.topics() {
                proptest::prop_assert_eq!(after.topic_by_name(&t.name).map(|t| t.id), Some(t.id));
                for (i, p) in t.partitions.iter().enumerate() {
                    proptest::prop_assert!(check_partition(t.id, PartitionId(i as i32), p).is_ok());
                }
            }
            proptest::prop_assert_eq!(after.names.len(), after.topics.len());
            let loaded = MetadataImage::decode_snapshot(&after.encode_snapshot()).unwrap();
            proptest::prop_assert_eq!(loaded, after);
        }
    }
}

fn alter_isr(leader: i32, leader_epoch: i32, partition_epoch: i32, isr: &[i32]) -> MetadataRecord {
    MetadataRecord::AlterIsr(AlterIsr {
        topic: ORDERS,
        partition: PartitionId(0),
        leader: BrokerId(leader),
        leader_epoch: LeaderEpoch(leader_epoch),
        partition_epoch: PartitionEpoch(partition_epoch),
        isr: ids(isr),
    })
}

/// The rule an ISR change broke, read back from the text the quorum carries.
fn refusal(image: &MetadataImage, record: MetadataRecord) -> IsrRejection {
    let e = image.apply(Offset(100), &[record]).unwrap_err();
    IsrRejection::from_reason(&e.to_string()).unwrap_or_else(|| panic!("no kind in '{e}'"))
}

/// Broker 1 leads orders-0 with replicas 1, 2, 3: broker 3 falls behind and is dropped, a
/// retry with the old partition epoch is refused, and broker 3 rejoins once caught up.
#[test]
fn a_leader_shrinks_and_expands_the_isr_fenced_by_the_partition_epoch() {
    let image = three_brokers_and_orders();

    let (image, delta) = image
        .apply(Offset(8), &[alter_isr(1, 0, 0, &[1, 2])])
        .unwrap();
    let p = image.partition(ORDERS, PartitionId(0)).unwrap();
    assert_eq!(p.isr, ids(&[1, 2]));
    assert_eq!(p.partition_epoch, PartitionEpoch(1));
    assert_eq!(p.leader_epoch, LeaderEpoch(0), "the leader epoch stays");
    assert_eq!(p.leader, Some(BrokerId(1)));
    // Every replica hears of it, the one dropped included.
    for b in [1, 2, 3] {
        let local = delta.local_changes(BrokerId(b));
        let all: Vec<_> = local.leads.iter().chain(&local.follows).collect();
        assert_eq!(all.len(), 1, "broker {b}");
        assert_eq!(all[0].partition_epoch, PartitionEpoch(1));
        assert!(!all[0].is_new);
    }
    assert_eq!(delta.local_changes(BrokerId(1)).leads.len(), 1);

    // The same change again, from a leader that did not see its answer: stale.
    assert_eq!(
        refusal(&image, alter_isr(1, 0, 0, &[1, 2])),
        IsrRejection::StalePartitionEpoch
    );
    // A partition epoch from the future is no better.
    assert_eq!(
        refusal(&image, alter_isr(1, 0, 7, &[1])),
        IsrRejection::StalePartitionEpoch
    );

    let (image, _) = image
        .apply(Offset(9), &[alter_isr(1, 0, 1, &[1, 2, 3])])
        .unwrap();
    let p = image.partition(ORDERS, PartitionId(0)).unwrap();
    assert_eq!(p.isr, ids(&[1, 2, 3]));
    assert_eq!(p.partition_epoch, PartitionEpoch(2));

    // The other partitions were not touched.
    assert_eq!(
        image
            .partition(ORDERS, PartitionId(1))
            .unwrap()
            .partition_epoch,
        PartitionEpoch(0)
    );
    // An unchanged ISR is answered as it is: nothing written, the epoch stays.
    let (same, delta) = image
        .apply(Offset(10), &[alter_isr(1, 0, 2, &[1, 2, 3])])
        .unwrap();
    assert_eq!(same.topics, image.topics);
    assert!(delta.partitions.is_empty());
}

/// KIP-841: a fenced broker may leave the ISR but not join it; nor may one that is gone.
#[test]
fn a_fenced_or_unregistered_broker_cannot_join_the_isr() {
    let image = three_brokers_and_orders();
    let (image, _) = image
        .apply(Offset(8), &[alter_isr(1, 0, 0, &[1, 2])])
        .unwrap();
    let fence_3 = MetadataRecord::BrokerChange {
        id: BrokerId(3),
        incarnation: Uuid::from_u128(3),
        fenced: true,
    };
    let (fenced, _) = image.apply(Offset(9), &[fence_3]).unwrap();
    assert_eq!(
        refusal(&fenced, alter_isr(1, 0, 1, &[1, 2, 3])),
        IsrRejection::IneligibleReplica
    );
    let (gone, _) = image
        .apply(
            Offset(9),
            &[MetadataRecord::UnregisterBroker { id: BrokerId(3) }],
        )
        .unwrap();
    assert_eq!(
        refusal(&gone, alter_isr(1, 0, 1, &[1, 2, 3])),
        IsrRejection::IneligibleReplica
    );

    // Leaving is allowed: broker 2 fenced, the leader drops it.
    let fence_2 = MetadataRecord::BrokerChange {
        id: BrokerId(2),
        incarnation: Uuid::from_u128(2),
        fenced: true,
    };
    let (image, _) = image.apply(Offset(9), &[fence_2]).unwrap();
    let (image, _) = image
        .apply(Offset(10), &[alter_isr(1, 0, 1, &[1])])
        .unwrap();
    assert_eq!(
        image.partition(ORDERS, PartitionId(0)).unwrap().isr,
        ids(&[1])
    );
}

/// Leadership moves from broker 1 to 2: the old leader's ISR change is refused, whatever it
/// claims; the new leader's goes through.
#[test]
fn a_deposed_leader_cannot_change_the_isr() {
    let image = three_brokers_and_orders();
    let mut moved = change(ORDERS, 0);
    moved.leader = Some(Some(BrokerId(2)));
    let (image, _) = image
        .apply(Offset(8), &[MetadataRecord::PartitionChange(moved)])
        .unwrap();
    let p = image.partition(ORDERS, PartitionId(0)).unwrap();
    assert_eq!(
        (p.leader_epoch, p.partition_epoch),
        (LeaderEpoch(1), PartitionEpoch(1))
    );

    assert_eq!(
        refusal(&image, alter_isr(1, 0, 0, &[1, 2])),
        IsrRejection::StaleLeaderEpoch
    );
    // Broker 1 with the new epochs is still not the leader.
    assert_eq!(
        refusal(&image, alter_isr(1, 1, 1, &[1, 2])),
        IsrRejection::NotLeader
    );
    // A leader epoch the controller never handed out.
    assert_eq!(
        refusal(&image, alter_isr(2, 5, 1, &[1, 2])),
        IsrRejection::NotLeader
    );
    let (image, _) = image
        .apply(Offset(9), &[alter_isr(2, 1, 1, &[2, 3])])
        .unwrap();
    let p = image.partition(ORDERS, PartitionId(0)).unwrap();
    assert_eq!(p.isr, ids(&[2, 3]));
    assert_eq!(
        (p.leader_epoch, p.partition_epoch),
        (LeaderEpoch(1), PartitionEpoch(2))
    );
}

#[test]
fn a_malformed_isr_change_is_refused_and_changes_nothing() {
    let image = three_brokers_and_orders();
    for (isr, what) in [
        (&[][..], "empty"),
        (&[1, 2, 2][..], "a duplicate"),
        (&[1, 4][..], "a non-replica"),
        (&[2, 3][..], "without the leader"),
    ] {
        assert_eq!(
            refusal(&image, alter_isr(1, 0, 0, isr)),
            IsrRejection::Invalid,
            "{what}"
        );
    }
    let mut elsewhere = AlterIsr {
        topic: ORDERS,
        partition: PartitionId(3),
        leader: BrokerId(1),
        leader_epoch: LeaderEpoch(0),
        partition_epoch: PartitionEpoch(0),
        isr: ids(&[1]),
    };
    assert_eq!(
        refusal(&image, MetadataRecord::AlterIsr(elsewhere.clone())),
        IsrRejection::UnknownPartition
    );
    elsewhere.topic = Uuid::from_u128(0xdead);
    elsewhere.partition = PartitionId(0);
    assert_eq!(
        refusal(&image, MetadataRecord::AlterIsr(elsewhere)),
        IsrRejection::UnknownPartition
    );
    // Other refusals carry no ISR kind.
    let e = image
        .apply(Offset(3), &[alter_isr(1, 0, 0, &[1])])
        .unwrap_err();
    assert_eq!(IsrRejection::from_reason(&e.to_string()), None);
}

#[test]
fn a_snapshot_keeps_the_isr_and_both_epochs_of_an_isr_change() {
    let image = three_brokers_and_orders();
    let mut moved = change(ORDERS, 0);
    moved.leader = Some(Some(BrokerId(2)));
    let (image, _) = image
        .apply(
            Offset(8),
            &[
                MetadataRecord::PartitionChange(moved),
                MetadataRecord::AlterIsr(AlterIsr {
                    topic: ORDERS,
                    partition: PartitionId(0),
                    leader: BrokerId(2),
                    leader_epoch: LeaderEpoch(1),
                    partition_epoch: PartitionEpoch(1),
                    isr: ids(&[2]),
                }),
            ],
        )
        .unwrap();
    let loaded = MetadataImage::decode_snapshot(&image.encode_snapshot()).unwrap();
    assert_eq!(loaded, image);
    let p = loaded.partition(ORDERS, PartitionId(0)).unwrap();
    assert_eq!(p.isr, ids(&[2]));
    assert_eq!(
        (p.leader_epoch, p.partition_epoch),
        (LeaderEpoch(1), PartitionEpoch(2))
    );
    // And the leader carries on from there.
    assert!(loaded
        .apply(Offset(9), &[alter_isr(2, 1, 2, &[2, 1])])
        .is_ok());
}
