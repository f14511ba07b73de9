//! Idempotent appends through a real partition: duplicates answered with their original offsets,
//! and producer state that survives a crash (no close), snapshots, and corrupt snapshots.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use strata_protocol::record_batch::{build_batch, stamp_producer};

use super::flusher::Flushers;
use super::producer_state::{snapshot_offsets, snapshot_path};
use super::{manager::settings_for, Partition};
use crate::config::{BrokerConfig, TopicOverrides};
use crate::error::BrokerError;
use crate::ids::{Offset, PartitionId};

const PID: i64 = 1000;

/// A batch of `count` records from producer `pid` (epoch, first sequence), as a client sends it.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, count: usize) -> Bytes {
    let values: Vec<Vec<u8>> = (0..count)
        .map(|i| format!("v{seq}-{i}").into_bytes())
        .collect();
    let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, &v[..])).collect();
    let mut b = build_batch(0, 1_000, &records).to_vec();
    stamp_producer(&mut b, pid, epoch, seq);
    Bytes::from(b)
}

fn open(dir: &Path, segment_bytes: &str, clean: bool) -> Arc<Partition> {
    let mut config = BrokerConfig::default();
    config.set("log.segment.bytes", segment_bytes).unwrap();
    let settings = settings_for(&config, &TopicOverrides::default());
    let flushers = Flushers::start(1).unwrap();
    let (p, _) = Partition::open(
        dir,
        Arc::from("t"),
        PartitionId(0),
        settings,
        None,
        clean,
        &flushers,
    )
    .unwrap();
    p
}

#[tokio::test]
async fn a_retried_batch_gets_its_original_offsets_and_is_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), "1048576", false);
    let first = p.append(&idempotent_batch(PID, 0, 0, 3), 1).unwrap();
    p.append(&idempotent_batch(PID, 0, 3, 2), 1).unwrap();
    let retry = p.append(&idempotent_batch(PID, 0, 0, 3), 1).unwrap();
    assert_eq!(retry.base_offset, first.base_offset);
    assert_eq!(retry.last_offset, Offset(2));
    assert_eq!(p.high_watermark(), Offset(5), "nothing was written twice");
    assert!(matches!(
        p.append(&idempotent_batch(PID, 0, 9, 1), 1),
        Err(BrokerError::OutOfOrderSequenceNumber(_))
    ));
    // Ordinary batches and transactional refusals are unchanged.
    p.append(&build_batch(0, 1, &[(None, b"plain")]), 1)
        .unwrap();
    let mut txn = idempotent_batch(PID, 0, 5, 1).to_vec();
    txn[22] |= 0x10; // attributes: transactional
    let crc = crc32c::crc32c(&txn[21..]);
    txn[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        p.append(&Bytes::from(txn), 1),
        Err(BrokerError::UnsupportedForMessageFormat(_))
    ));
}

#[tokio::test]
async fn a_record_set_with_a_bad_second_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), "1048576", false);
    let mut set = idempotent_batch(PID, 0, 0, 2).to_vec();
    set.extend_from_slice(&idempotent_batch(PID, 0, 2, 2));
    p.append(&Bytes::from(set), 1).unwrap();
    let mut bad = idempotent_batch(PID, 0, 4, 1).to_vec();
    bad.extend_from_slice(&idempotent_batch(PID, 0, 7, 1));
    assert!(p.append(&Bytes::from(bad), 1).is_err());
    assert_eq!(p.high_watermark(), Offset(4));
    assert_eq!(
        p.append(&idempotent_batch(PID, 0, 4, 1), 1)
            .unwrap()
            .base_offset,
        Offset(4)
    );
}

#[tokio::test]
async fn dedup_survives_a_crash_without_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let p = open(dir.path(), "1048576", false);
        for i in 0..10 {
            p.append(&idempotent_batch(PID, 0, i * 2, 2), 1).unwrap();
        }
        // Dropped without close: no snapshot at the end, an unclean start follows.
    }
    let p = open(dir.path(), "1048576", false);
    assert_eq!(p.producer_recovery().batches_scanned, 10);
    let retry = p.append(&idempotent_batch(PID, 0, 16, 2), 1).unwrap();
    assert_eq!(
        retry.base_offset,
        Offset(16),
        "a retry after the crash is still a duplicate"
    );
    assert!(matches!(
        p.append(&idempotent_batch(PID, 0, 30, 1), 1),
        Err(BrokerError::OutOfOrderSequenceNumber(_))
    ));
    assert_eq!(
        p.append(&idempotent_batch(PID, 0, 20, 1), 1)
            .unwrap()
            .base_offset,
        Offset(20)
    );
}

#[tokio::test]
async fn recovery_starts_from_the_newest_snapshot_and_skips_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: batches of ~100 bytes roll every few appends, each roll writes a snapshot.
    {
        let p = open(dir.path(), "1024", false);
        for i in 0..40 {
            p.append(&idempotent_batch(PID, 0, i, 1), 1).unwrap();
        }
        // The flush thread writes the rolls' snapshots before the records count as durable.
        p.wait_durable(Offset(40)).await;
    }
    let snaps = snapshot_offsets(dir.path()).unwrap();
    assert_eq!(snaps.len(), 2, "old snapshots pruned: {snaps:?}");
    let newest = *snaps.last().unwrap();
    {
        let p = open(dir.path(), "1024", false);
        let r = p.producer_recovery();
        assert_eq!(r.snapshot, Some(newest));
        assert_eq!(
            r.batches_scanned as i64,
            40 - newest.0,
            "only batches after the snapshot"
        );
        assert!(matches!(
            p.append(&idempotent_batch(PID, 0, 39, 1), 1)
                .unwrap()
                .base_offset,
            Offset(39)
        ));
        p.close().unwrap();
    }
    // A clean close snapshots at the end: nothing to scan.
    let p = open(dir.path(), "1024", true);
    assert_eq!(p.producer_recovery().snapshot, Some(Offset(40)));
    assert_eq!(p.producer_recovery().batches_scanned, 0);
    drop(p);
    // Corrupt the newest snapshot: it is ignored, the older one used, the rest scanned.
    let snaps = snapshot_offsets(dir.path()).unwrap();
    let newest = snapshot_path(dir.path(), *snaps.last().unwrap());
    let mut bytes = std::fs::read(&newest).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 1;
    std::fs::write(&newest, bytes).unwrap();
    let p = open(dir.path(), "1024", false);
    let r = p.producer_recovery();
    assert_eq!(r.snapshot, Some(snaps[0]));
    assert_eq!(r.batches_scanned as i64, 40 - snaps[0].0);
    assert_eq!(
        p.append(&idempotent_batch(PID, 0, 39, 1), 1)
            .unwrap()
            .base_offset,
        Offset(39)
    );
    assert_eq!(
        p.append(&idempotent_batch(PID, 0, 40, 1), 1)
            .unwrap()
            .base_offset,
        Offset(40)
    );
}
