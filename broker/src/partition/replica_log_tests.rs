//! The follower path of a partition, as the replica layer drives it: a follower copies its
//! leader's batches byte for byte, refuses what does not continue its log, truncates what its
//! leader never had (and stays truncated across a restart), and keeps a high watermark that
//! only moves up and survives a restart through its checkpoint.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use strata_protocol::record_batch::{build_batch, patch_batch, stamp_producer, BatchIter};

use super::flusher::Flushers;
use super::{manager::settings_for, Checkpointed, FetchRead, Partition, ReadUpper};
use crate::config::{BrokerConfig, TopicOverrides};
use crate::error::BrokerError;
use crate::ids::{LeaderEpoch, Offset, PartitionId};

/// The smallest `log.segment.bytes`: a handful of batches per segment, so copies roll.
const SMALL_SEGMENT_BYTES: &str = "1024";
const PID: i64 = 77;

fn open_with(dir: &Path, segment_bytes: &str, checkpointed: Checkpointed) -> Arc<Partition> {
    open_after(dir, segment_bytes, checkpointed, false)
}

/// Opens after a clean shutdown (`clean`: files trusted) or not.
fn open_after(
    dir: &Path,
    segment_bytes: &str,
    checkpointed: Checkpointed,
    clean: bool,
) -> Arc<Partition> {
    let mut config = BrokerConfig::default();
    config.set("log.segment.bytes", segment_bytes).unwrap();
    let settings = settings_for(&config, &TopicOverrides::default());
    let flushers = Flushers::start(1).unwrap();
    let (p, _) = Partition::open_checkpointed(
        dir,
        Arc::from("t"),
        PartitionId(0),
        settings,
        checkpointed,
        clean,
        &flushers,
    )
    .unwrap();
    p
}

fn open(dir: &Path) -> Arc<Partition> {
    open_with(dir, SMALL_SEGMENT_BYTES, Checkpointed::default())
}

/// A follower, as the replica layer makes one: replicated, following a leader of `epoch`.
fn follower(dir: &Path, epoch: i32) -> Arc<Partition> {
    let p = open(dir);
    p.set_replicated(true);
    p.become_follower(LeaderEpoch(epoch));
    p
}

/// A producer's batch of `count` records of about 70 bytes (no producer id), at time `ts`.
fn batch(tag: &str, count: usize, ts: i64) -> Bytes {
    let values: Vec<Vec<u8>> = (0..count)
        .map(|i| format!("{tag}-{i}-{:->60}", "").into_bytes())
        .collect();
    let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, &v[..])).collect();
    build_batch(0, ts, &records)
}

fn idempotent(seq: i32, count: usize) -> Bytes {
    let mut b = batch(&format!("p{seq}"), count, 5_000).to_vec();
    stamp_producer(&mut b, PID, 0, seq);
    Bytes::from(b)
}

/// A batch as a leader of `epoch` stored it at `base`.
fn leader_batch(base: i64, epoch: i32, count: usize) -> Bytes {
    let mut b = batch(&format!("l{base}"), count, 9_000).to_vec();
    patch_batch(&mut b, base, epoch);
    Bytes::from(b)
}

/// Every byte of `p` from `from` to its log end, as a follower's fetches read it.
fn log_bytes(p: &Partition, from: Offset) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = from;
    for _ in 0..10_000 {
        let view = p
            .read_for_fetch(FetchRead {
                current_leader_epoch: -1,
                offset,
                max_bytes: 4096,
                upper: ReadUpper::LogEnd,
            })
            .unwrap();
        let Some(records) = view.records else {
            return out;
        };
        let last = BatchIter::new(&records).last().unwrap().1.last_offset();
        out.extend_from_slice(&records);
        offset = Offset(last + 1);
    }
    panic!("the log did not end");
}

/// The follower fetches from the leader until it has everything the leader has.
fn catch_up(leader: &Partition, follower: &Partition) {
    for _ in 0..10_000 {
        let view = leader
            .read_for_fetch(FetchRead {
                current_leader_epoch: follower.leader_epoch().0,
                offset: follower.log_end_offset(),
                max_bytes: 700,
                upper: ReadUpper::LogEnd,
            })
            .unwrap();
        let Some(records) = view.records else {
            return;
        };
        let appended = follower.append_as_follower(&records).unwrap();
        assert_eq!(appended.log_end_offset, follower.log_end_offset());
        follower.advance_high_watermark(view.high_watermark);
    }
    panic!("the follower did not catch up");
}

#[tokio::test]
async fn a_follower_copies_its_leaders_log_byte_for_byte_across_rolls() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open(ld.path());
    leader.become_leader(LeaderEpoch(3)).unwrap();
    for i in 0..12 {
        leader
            .append(&batch(&format!("a{i}"), 3, 1_000 + i), 1)
            .unwrap();
    }
    leader.append(&idempotent(0, 2), 1).unwrap();
    leader.become_leader(LeaderEpoch(5)).unwrap();
    for i in 0..6 {
        leader
            .append(&batch(&format!("b{i}"), 2, 2_000 + i), 1)
            .unwrap();
    }
    let follower = follower(fd.path(), 5);
    catch_up(&leader, &follower);

    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(
        log_bytes(&follower, Offset(0)),
        log_bytes(&leader, Offset(0)),
        "offsets, epochs, timestamps and records kept"
    );
    assert!(follower.lock().log.segment_count() > 2, "the copy rolled");
    assert_eq!(follower.latest_epoch(), Some(LeaderEpoch(5)));
    assert_eq!(
        follower.end_offset_for_epoch(LeaderEpoch(3)),
        leader.end_offset_for_epoch(LeaderEpoch(3)),
        "the epoch cache follows the leader's batches"
    );
    assert_eq!(follower.high_watermark(), leader.high_watermark());
    // A follower that becomes leader knows the producer's sequence at once.
    follower.become_leader(LeaderEpoch(6)).unwrap();
    let retry = follower.append(&idempotent(0, 2), 1).unwrap();
    assert_eq!(
        retry.base_offset,
        Offset(36),
        "a duplicate, not written again"
    );
    assert!(matches!(
        follower.append(&idempotent(7, 1), 1),
        Err(BrokerError::OutOfOrderSequenceNumber(_))
    ));

    // And the copy reopens as it was written (indexes and all).
    let bytes = log_bytes(&follower, Offset(0));
    follower.close().unwrap();
    drop(follower);
    let reopened = open(fd.path());
    assert_eq!(log_bytes(&reopened, Offset(0)), bytes);
    assert_eq!(
        log_bytes(&reopened, Offset(20)),
        log_bytes(&leader, Offset(20)),
        "reads from the middle find the same batch starts"
    );
}

#[tokio::test]
async fn leader_batches_that_leave_a_gap_or_overlap_are_refused_and_write_nothing() {
    let fd = tempfile::tempdir().unwrap();
    let f = follower(fd.path(), 1);
    f.append_as_follower(&leader_batch(0, 1, 5)).unwrap();
    let before = log_bytes(&f, Offset(0));

    let gap = f.append_as_follower(&leader_batch(7, 1, 2));
    assert!(matches!(gap, Err(BrokerError::ReplicaLog(_))), "{gap:?}");
    let overlap = f.append_as_follower(&leader_batch(3, 1, 2));
    assert!(
        matches!(overlap, Err(BrokerError::ReplicaLog(_))),
        "{overlap:?}"
    );
    // A set whose first batch fits but whose second skips an offset.
    let mut inner_gap = leader_batch(5, 1, 2).to_vec();
    inner_gap.extend_from_slice(&leader_batch(8, 1, 2));
    let inner = f.append_as_follower(&Bytes::from(inner_gap));
    assert!(
        matches!(inner, Err(BrokerError::ReplicaLog(_))),
        "{inner:?}"
    );

    assert_eq!(f.log_end_offset(), Offset(5));
    assert_eq!(log_bytes(&f, Offset(0)), before, "nothing written");
    let ok = f.append_as_follower(&leader_batch(5, 1, 2)).unwrap();
    assert_eq!((ok.first_offset, ok.last_offset), (Offset(5), Offset(6)));
}

#[tokio::test]
async fn a_batch_from_an_older_leader_epoch_is_refused() {
    let fd = tempfile::tempdir().unwrap();
    let f = follower(fd.path(), 4);
    f.append_as_follower(&leader_batch(0, 4, 3)).unwrap();
    let older = f.append_as_follower(&leader_batch(3, 2, 3));
    assert!(
        matches!(older, Err(BrokerError::ReplicaLog(_))),
        "{older:?}"
    );
    assert_eq!(f.log_end_offset(), Offset(3));
    assert_eq!(f.latest_epoch(), Some(LeaderEpoch(4)));
    // A newer one starts an epoch in the cache where its batch starts.
    f.append_as_follower(&leader_batch(3, 6, 3)).unwrap();
    assert_eq!(
        f.end_offset_for_epoch(LeaderEpoch(4)),
        Some((LeaderEpoch(4), Offset(3)))
    );
    assert!(matches!(
        f.become_leader(LeaderEpoch(5)),
        Err(BrokerError::ReplicaLog(_))
    ));
}

/// A follower holding offsets 0..30 in batches of 3 (10 batches over several segments), epoch
/// 1 up to 15 and epoch 2 after, with the producer's batches at 15..17 and 27..29.
fn follower_with_history(dir: &Path) -> Arc<Partition> {
    let f = follower(dir, 2);
    for base in (0..30).step_by(3) {
        let epoch = if base < 15 { 1 } else { 2 };
        let mut b = if base == 15 || base == 27 {
            idempotent(if base == 15 { 0 } else { 3 }, 3).to_vec()
        } else {
            batch(&format!("h{base}"), 3, 3_000 + base).to_vec()
        };
        patch_batch(&mut b, base, epoch);
        f.append_as_follower(&Bytes::from(b)).unwrap();
    }
    assert!(f.lock().log.segment_count() >= 3);
    f
}

#[tokio::test]
async fn truncating_inside_the_active_segment_cuts_there() {
    let fd = tempfile::tempdir().unwrap();
    let f = follower_with_history(fd.path());
    let active_base = f.lock().log.segment_count();
    let whole = log_bytes(&f, Offset(0));
    f.truncate_to(Offset(27)).unwrap();
    assert_eq!(f.log_end_offset(), Offset(27));
    assert_eq!(f.lock().log.segment_count(), active_base);
    let kept = log_bytes(&f, Offset(0));
    assert!(whole.starts_with(&kept) && kept.len() < whole.len());
    // The cut batch comes again from the leader, in a new epoch.
    f.append_as_follower(&leader_batch(27, 3, 3)).unwrap();
    assert_eq!(f.log_end_offset(), Offset(30));
    every_batch_is_found_from_its_offset(&f);
}

#[tokio::test]
async fn truncating_across_rolls_deletes_the_later_segments() {
    let fd = tempfile::tempdir().unwrap();
    let f = follower_with_history(fd.path());
    let segments = f.lock().log.segment_count();
    let whole = log_bytes(&f, Offset(0));
    f.truncate_to(Offset(6)).unwrap();
    assert_eq!(f.log_end_offset(), Offset(6));
    assert!(f.lock().log.segment_count() < segments);
    let kept = log_bytes(&f, Offset(0));
    assert!(whole.starts_with(&kept));
    assert_eq!(BatchIter::new(&kept).count(), 2);
    assert_eq!(
        f.latest_epoch(),
        Some(LeaderEpoch(1)),
        "epoch 2 started at 15"
    );
    let logs = std::fs::read_dir(fd.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert_eq!(logs, f.lock().log.segment_count(), "the files went too");
    // The log takes the leader's batches from the cut on, across new rolls.
    for base in (6..30).step_by(3) {
        f.append_as_follower(&leader_batch(base, 2, 3)).unwrap();
    }
    assert_eq!(f.log_end_offset(), Offset(30));
    every_batch_is_found_from_its_offset(&f);
}

/// A read from each record's offset starts at the batch holding it (the indexes are right).
fn every_batch_is_found_from_its_offset(p: &Partition) {
    let all = log_bytes(p, p.log_start_offset());
    for (_, batch) in BatchIter::new(&all) {
        for offset in batch.base_offset()..=batch.last_offset() {
            let view = p
                .read_for_fetch(FetchRead {
                    current_leader_epoch: -1,
                    offset: Offset(offset),
                    max_bytes: 1,
                    upper: ReadUpper::LogEnd,
                })
                .unwrap();
            let records = view.records.unwrap();
            let (_, first) = BatchIter::new(&records).next().unwrap();
            assert_eq!(first.base_offset(), batch.base_offset(), "offset {offset}");
        }
    }
}

#[tokio::test]
async fn truncating_at_a_segment_start_leaves_an_empty_active_segment_there() {
    let fd = tempfile::tempdir().unwrap();
    let f = follower_with_history(fd.path());
    let mut bases: Vec<i64> = std::fs::read_dir(fd.path())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort();
    let second = Offset(bases[1]);
    f.truncate_to(second).unwrap();
    assert_eq!(f.log_end_offset(), second);
    assert_eq!(f.lock().log.segment_count(), 2);
    assert_eq!(f.lock().log.active_size_bytes(), 0);
    f.append_as_follower(&leader_batch(second.0, 2, 3)).unwrap();
    every_batch_is_found_from_its_offset(&f);
}

#[tokio::test]
async fn truncating_at_the_log_end_changes_nothing_and_below_the_high_watermark_is_refused() {
    let fd = tempfile::tempdir().unwrap();
    let f = follower_with_history(fd.path());
    let whole = log_bytes(&f, Offset(0));
    f.truncate_to(Offset(30)).unwrap();
    f.truncate_to(Offset(40)).unwrap();
    assert_eq!(log_bytes(&f, Offset(0)), whole);

    assert!(f.advance_high_watermark(Offset(12)));
    let below = f.truncate_to(Offset(9));
    assert!(
        matches!(below, Err(BrokerError::ReplicaLog(_))),
        "{below:?}"
    );
    let inside = f.truncate_to(Offset(13));
    assert!(
        matches!(inside, Err(BrokerError::ReplicaLog(_))),
        "{inside:?}"
    );
    assert_eq!(log_bytes(&f, Offset(0)), whole, "nothing changed");
    f.truncate_to(Offset(12)).unwrap();
    assert_eq!(f.log_end_offset(), Offset(12));
    assert_eq!(f.high_watermark(), Offset(12));
}

#[tokio::test]
async fn a_truncated_log_stays_truncated_after_a_crash_and_a_cut_batch_is_no_duplicate() {
    for crash in [true, false] {
        let fd = tempfile::tempdir().unwrap();
        let f = follower_with_history(fd.path());
        let recovery_point = f.recovery_point();
        // 21 is inside a sealed segment: the segments after it go, and it becomes the active one.
        let segments = f.lock().log.segment_count();
        f.truncate_to(Offset(21)).unwrap();
        assert!(f.lock().log.segment_count() < segments);
        let kept = log_bytes(&f, Offset(0));
        if crash {
            // No close: the next open recovers from the recovery point checkpointed before.
            drop(f);
        } else {
            f.close().unwrap();
            drop(f);
        }
        let checkpointed = Checkpointed {
            recovery_point: Some(recovery_point),
            high_watermark: None,
        };
        let p = open_after(fd.path(), SMALL_SEGMENT_BYTES, checkpointed, !crash);
        assert_eq!(p.log_end_offset(), Offset(21), "crash {crash}");
        assert_eq!(log_bytes(&p, Offset(0)), kept, "crash {crash}");
        every_batch_is_found_from_its_offset(&p);
        assert_eq!(
            p.end_offset_for_epoch(LeaderEpoch(2)),
            Some((LeaderEpoch(2), Offset(21)))
        );
        // The producer's batch at 27 was cut: its retry is new, written at the log end. The one
        // at 15 survived: its retry is a duplicate.
        assert_eq!(
            p.append(&idempotent(0, 3), 1).unwrap().base_offset,
            Offset(15)
        );
        let retried = p.append(&idempotent(3, 3), 1).unwrap();
        assert_eq!(retried.base_offset, Offset(21), "crash {crash}");
    }
}

#[tokio::test]
async fn a_replica_started_afresh_at_its_leaders_log_start_follows_from_there() {
    let fd = tempfile::tempdir().unwrap();
    let f = follower_with_history(fd.path());
    f.truncate_fully_and_start_at(Offset(100)).unwrap();
    assert_eq!(f.log_start_offset(), Offset(100));
    assert_eq!(f.log_end_offset(), Offset(100));
    assert_eq!(f.high_watermark(), Offset(100));
    assert_eq!(f.latest_epoch(), None);
    assert!(f.lock().producers.is_empty());
    assert!(
        super::producer_state::snapshot_offsets(fd.path())
            .unwrap()
            .is_empty(),
        "no snapshot of the old log is left"
    );
    f.append_as_follower(&leader_batch(100, 7, 4)).unwrap();
    assert_eq!(f.log_end_offset(), Offset(104));
    assert_eq!(f.latest_epoch(), Some(LeaderEpoch(7)));
    let out_of_range = f.read_for_fetch(FetchRead {
        current_leader_epoch: -1,
        offset: Offset(3),
        max_bytes: 1024,
        upper: ReadUpper::LogEnd,
    });
    assert!(matches!(
        out_of_range,
        Err(BrokerError::OffsetOutOfRange { .. })
    ));
    f.close().unwrap();
    drop(f);
    let p = open(fd.path());
    assert_eq!(p.log_start_offset(), Offset(100));
    assert_eq!(log_bytes(&p, Offset(100)), leader_batch(100, 7, 4).to_vec());
}

#[tokio::test]
async fn the_high_watermark_only_rises_stops_at_the_log_end_and_survives_a_restart() {
    let fd = tempfile::tempdir().unwrap();
    let f = follower(fd.path(), 1);
    for base in (0..9).step_by(3) {
        f.append_as_follower(&leader_batch(base, 1, 3)).unwrap();
    }
    assert_eq!(
        f.high_watermark(),
        Offset(0),
        "replicated: appends do not move it"
    );
    let woken = f.appended();
    assert!(f.advance_high_watermark(Offset(6)));
    tokio::time::timeout(std::time::Duration::from_secs(5), woken)
        .await
        .expect("a waiting fetch is woken");
    assert!(!f.advance_high_watermark(Offset(3)), "never lowered");
    assert_eq!(f.high_watermark(), Offset(6));
    assert!(f.advance_high_watermark(Offset(50)));
    assert_eq!(f.high_watermark(), Offset(9), "clamped to the log end");

    f.close().unwrap();
    let checkpointed = Checkpointed {
        recovery_point: Some(f.recovery_point()),
        high_watermark: Some(f.stored_high_watermark()),
    };
    drop(f);
    let p = open_with(fd.path(), SMALL_SEGMENT_BYTES, checkpointed);
    p.set_replicated(true);
    assert_eq!(p.high_watermark(), Offset(9));
    drop(p);
    // A checkpoint past the log (the log lost a tail) is clamped to it.
    let checkpointed = Checkpointed {
        recovery_point: None,
        high_watermark: Some(Offset(500)),
    };
    let p = open_with(fd.path(), SMALL_SEGMENT_BYTES, checkpointed);
    p.set_replicated(true);
    assert_eq!(p.high_watermark(), Offset(9));
}

#[tokio::test]
async fn a_consumer_reads_below_the_high_watermark_and_is_not_out_of_range_above_it() {
    let fd = tempfile::tempdir().unwrap();
    let f = follower(fd.path(), 1);
    for base in (0..9).step_by(3) {
        f.append_as_follower(&leader_batch(base, 1, 3)).unwrap();
    }
    f.advance_high_watermark(Offset(3));
    let consumer = |offset| {
        f.read_for_fetch(FetchRead {
            current_leader_epoch: 1,
            offset: Offset(offset),
            max_bytes: 1 << 20,
            upper: ReadUpper::HighWatermark,
        })
    };
    let view = consumer(0).unwrap();
    let records = view.records.unwrap();
    assert_eq!(
        BatchIter::new(&records).count(),
        1,
        "only below the high watermark"
    );
    assert_eq!(
        (view.high_watermark, view.log_end_offset),
        (Offset(3), Offset(9))
    );
    assert_eq!(
        f.list_offset(-1).unwrap(),
        Some((Offset(3), -1)),
        "latest is the HW"
    );
    for offset in [3, 6, 9] {
        let view = consumer(offset).unwrap();
        assert!(view.records.is_none(), "offset {offset}");
    }
    assert!(matches!(
        consumer(10),
        Err(BrokerError::OffsetOutOfRange { .. })
    ));
    let stale = f.read_for_fetch(FetchRead {
        current_leader_epoch: 0,
        offset: Offset(0),
        max_bytes: 1024,
        upper: ReadUpper::HighWatermark,
    });
    assert!(matches!(stale, Err(BrokerError::FencedLeaderEpoch { .. })));
    // One replica (not replicated): everything appended is readable at once, as before.
    f.set_replicated(false);
    assert_eq!(f.high_watermark(), Offset(9));
    assert!(consumer(6).unwrap().records.is_some());
}

/// A broker (id 1) hosting `t` partition 0 with a follower on broker 2.
fn image() -> crate::controller::image::MetadataImage {
    use crate::controller::records::{MetadataRecord, PartitionRecord};
    use crate::ids::{BrokerId, PartitionEpoch};
    let topic = uuid::Uuid::from_u128(0x16);
    let records = vec![
        MetadataRecord::Topic {
            name: "t".into(),
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
    ];
    crate::controller::image::MetadataImage::empty()
        .apply(Offset(1), &records)
        .unwrap()
        .0
}

fn open_manager(data: &Path) -> super::manager::PartitionManager {
    let config = Arc::new(BrokerConfig::default());
    let log = crate::config::BrokerSettings::from_config(&config)
        .unwrap()
        .log;
    let (manager, _) = super::manager::PartitionManager::open(
        data,
        config,
        log,
        &image(),
        crate::ids::BrokerId(1),
    )
    .unwrap();
    manager
}

#[tokio::test]
async fn the_broker_checkpoints_each_high_watermark_and_opens_partitions_with_it() {
    let data = tempfile::tempdir().unwrap();
    let manager = open_manager(data.path());
    let p = manager.partition("t", 0).unwrap();
    p.set_replicated(true);
    for base in (0..9).step_by(3) {
        p.append_as_follower(&leader_batch(base, 0, 3)).unwrap();
    }
    p.advance_high_watermark(Offset(6));
    manager.shutdown().unwrap();
    drop((p, manager));
    assert!(data.path().join("replication-offset-checkpoint").exists());

    let manager = open_manager(data.path());
    let p = manager.partition("t", 0).unwrap();
    assert_eq!(
        p.high_watermark(),
        Offset(9),
        "one replica reads to its log end"
    );
    p.set_replicated(true);
    assert_eq!(p.high_watermark(), Offset(6), "as checkpointed");
    // A replica cannot truncate below it, and can above it.
    assert!(p.truncate_to(Offset(3)).is_err());
    p.truncate_to(Offset(6)).unwrap();
    manager.shutdown().unwrap();
}

/// Retention never deletes what followers may still need: on a replicated leader, only
/// segments wholly below the high watermark go, however old or large the log is.
#[test]
fn retention_keeps_every_segment_at_or_above_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::default();
    config
        .set("log.segment.bytes", SMALL_SEGMENT_BYTES)
        .unwrap();
    config.set("log.retention.bytes", "0").unwrap();
    let settings = settings_for(&config, &TopicOverrides::default());
    let flushers = Flushers::start(1).unwrap();
    let (p, _) = Partition::open_checkpointed(
        dir.path(),
        Arc::from("t"),
        PartitionId(0),
        settings,
        Checkpointed::default(),
        false,
        &flushers,
    )
    .unwrap();
    p.set_replicated(true);
    p.become_leader(LeaderEpoch(0)).unwrap();
    for i in 0..40 {
        p.append(&batch(&format!("r{i}"), 2, 1_000), 1_000).unwrap();
    }
    let end = p.log_end_offset();
    assert_eq!(end, Offset(80));
    // No follower has anything yet: the HW is 0, and nothing may go.
    p.apply_retention(2_000).unwrap();
    assert_eq!(p.log_start_offset(), Offset(0));
    // Followers have the first 30 records: only segments wholly below 30 go.
    assert!(p.advance_high_watermark(Offset(30)));
    p.apply_retention(2_000).unwrap();
    let start = p.log_start_offset();
    assert!(
        start > Offset(0) && start <= Offset(30),
        "log start {start} after retention below HW 30"
    );
    let view = p
        .read_for_fetch(FetchRead {
            current_leader_epoch: -1,
            offset: Offset(30),
            max_bytes: 1 << 20,
            upper: ReadUpper::LogEnd,
        })
        .unwrap();
    assert!(
        view.records.is_some(),
        "records from the HW on are still there"
    );
}
