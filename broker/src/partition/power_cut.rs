//! The power-cut test: a producer writes with `acks=-1` across many segment rolls while flushes,
//! checkpoints, process kills and power cuts happen at random points (seeded, so every run is
//! reproducible from its seed). After each cut the partition reopens and every acknowledged
//! record (below the durable offset at the cut) must be there, in order, with dense offsets, and
//! no synced segment may have been deleted. What a cut keeps is decided by `storage::sim_disk`.
//!
//! `POWER_CUT_SEEDS=600 cargo nextest run -p strata-broker power_cut` runs the long version
//! (`scripts/power-cut.sh`); the normal suite runs a short one.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use strata_protocol::record_batch::{build_batch, records, BatchIter};

use super::flusher::Flushers;
use super::{manager::settings_for, FlushJob, Partition, PartitionSettings};
use crate::config::{BrokerConfig, TopicOverrides};
use crate::ids::{Offset, PartitionId};
use crate::storage::sim_disk::{self, Rng};
use crate::storage::SegmentLimits;

const STEPS: usize = 300;

fn settings() -> PartitionSettings {
    let mut s = settings_for(&BrokerConfig::default(), &TopicOverrides::default());
    s.log.limits = SegmentLimits {
        segment_bytes: 6 * 1024,
        index_bytes: 1024,
        index_interval_bytes: 512,
    };
    s
}

fn open(dir: &Path, recovery_point: Option<Offset>) -> Result<Arc<Partition>, String> {
    Partition::open(
        dir,
        Arc::from("t"),
        PartitionId(0),
        settings(),
        recovery_point,
        false,
        &Flushers::manual(),
    )
    .map(|(p, _)| p)
    .map_err(|e| format!("reopen failed: {e}"))
}

fn durable(p: &Partition) -> Offset {
    *p.durable.borrow()
}

fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_suffix(".log").and_then(|s| s.parse().ok())
        })
        .collect();
    bases.sort();
    bases
}

/// Reads the whole log: every record must carry the value written at its offset, densely from 0.
/// Returns the log end.
fn check_log(p: &Partition) -> Result<Offset, String> {
    let mut offset = Offset(0);
    for _ in 0..100_000 {
        let view = p
            .read(offset, 64 * 1024)
            .map_err(|e| format!("read at {}: {e}", offset.0))?;
        let Some(recs) = view.records else {
            return Ok(offset);
        };
        for (_, batch) in BatchIter::new(&recs) {
            if batch.base_offset() < offset.0 {
                continue;
            }
            if batch.base_offset() != offset.0 {
                return Err(format!(
                    "offsets not dense: batch at {} after {}",
                    batch.base_offset(),
                    offset.0
                ));
            }
            batch
                .validate()
                .map_err(|e| format!("batch {}: {e}", offset.0))?;
            let rs = records(batch.bytes()).map_err(|e| format!("batch {}: {e}", offset.0))?;
            for r in rs {
                let at = batch.base_offset() + i64::from(r.offset_delta);
                let want = format!("r{at}-");
                if !r.value.is_some_and(|v| v.starts_with(want.as_bytes())) {
                    return Err(format!("record {at} holds another record's value"));
                }
            }
            offset = Offset(batch.last_offset() + 1);
        }
    }
    Err("log too long to check".into())
}

/// One seeded run; `Err` says what was lost. Returns the records acknowledged and the cuts.
fn run_seed(seed: u64) -> Result<(i64, usize), String> {
    // On tmpfs when there is one: the cut is simulated, so real syncs only cost time.
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .map_err(|e| e.to_string())?;
    let dir = tmp.path().join("t-0");
    std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
    sim_disk::track(&dir);
    let mut rng = Rng(seed);
    let mut p = open(&dir, None)?;
    let mut acked = Offset(0);
    let mut checkpoint: Option<Offset> = None;
    let mut pending: Option<FlushJob> = None;
    let mut acked_total = 0i64;
    let mut cuts = 0;
    for step in 0..=STEPS {
        let last = step == STEPS;
        let op = if last { 19 } else { rng.below(20) };
        // POWER_CUT_TRACE=1 with one seed shows the story of a failure.
        if std::env::var("POWER_CUT_TRACE").is_ok() {
            println!(
                "step {step} op {op} end {} durable {} acked {}",
                p.high_watermark().0,
                durable(&p).0,
                acked.0
            );
        }
        match op {
            0..=10 => {
                let end = p.high_watermark().0;
                let count = 1 + rng.below(4) as usize;
                let values: Vec<Vec<u8>> = (0..count)
                    .map(|i| {
                        let pad = "x".repeat(rng.below(400) as usize);
                        format!("r{}-{pad}", end + i as i64).into_bytes()
                    })
                    .collect();
                let recs: Vec<(Option<&[u8]>, &[u8])> =
                    values.iter().map(|v| (None, &v[..])).collect();
                let batch: Bytes = build_batch(0, 1_000 + step as i64, &recs);
                p.append(&batch, 1_000)
                    .map_err(|e| format!("append: {e}"))?;
            }
            11..=13 => {
                if pending.is_none() {
                    pending = p.flush_begin();
                }
            }
            14..=16 => {
                if let Some(job) = pending.take() {
                    job.run().map_err(|e| format!("flush: {e}"))?;
                    p.flush_finish(job);
                    let d = durable(&p);
                    acked_total += d.0 - acked.0.min(d.0);
                    acked = acked.max(d);
                }
            }
            17 => checkpoint = Some(p.recovery_point()),
            18 => {
                // kill -9: the page cache survives, so nothing appended is lost.
                let end = p.high_watermark();
                drop(pending.take());
                drop(p);
                p = open(&dir, checkpoint)?;
                let found = check_log(&p).map_err(|e| format!("after a kill: {e}"))?;
                if found != end {
                    return Err(format!("a kill lost records: end {} -> {}", end.0, found.0));
                }
                acked = acked.max(durable(&p));
            }
            _ => {
                let before = segment_bases(&dir);
                drop(pending.take());
                drop(p);
                sim_disk::cut(&dir, &mut rng);
                cuts += 1;
                p = open(&dir, checkpoint)?;
                let found = check_log(&p).map_err(|e| format!("after a power cut: {e}"))?;
                if found < acked {
                    return Err(format!(
                        "power cut at step {step} lost acknowledged records: acked below {}, found below {}",
                        acked.0, found.0
                    ));
                }
                let after = segment_bases(&dir);
                if let Some(gone) = before.iter().find(|b| **b < acked.0 && !after.contains(b)) {
                    return Err(format!("recovery deleted synced segment {gone}"));
                }
                acked = acked.max(durable(&p));
            }
        }
    }
    Ok((acked_total, cuts))
}

fn seeds() -> u64 {
    std::env::var("POWER_CUT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

#[test]
fn no_acknowledged_record_is_lost_at_a_power_cut() {
    let first: u64 = std::env::var("POWER_CUT_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let n = seeds();
    let (mut acked, mut cuts) = (0, 0);
    let mut failures = Vec::new();
    for seed in first..first + n {
        match run_seed(seed) {
            Ok((a, c)) => {
                acked += a;
                cuts += c;
            }
            Err(e) => failures.push(format!("seed {seed}: {e}")),
        }
    }
    println!(
        "power cut: {n} seeds, {cuts} cuts, {acked} records acknowledged, {} seeds lost records",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {n} seeds failed (rerun one with POWER_CUT_FIRST_SEED=<seed> POWER_CUT_SEEDS=1):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_failed_flush_stops_the_partition_and_halts_the_broker_instead_of_acknowledging() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    std::fs::create_dir(&dir).unwrap();
    sim_disk::track(&dir);
    let flushers = Flushers::manual();
    let (p, _) = Partition::open(
        &dir,
        Arc::from("t"),
        PartitionId(0),
        settings(),
        None,
        false,
        &flushers,
    )
    .unwrap();
    let batch = build_batch(0, 1_000, &[(None, b"r0-")]);
    p.append(&batch, 1_000).unwrap();
    sim_disk::fail_syncs(&dir, true);
    p.flush_now();
    assert_eq!(durable(&p), Offset(0), "nothing unsynced is acknowledged");
    let why = flushers.fatal().get().expect("main is told to halt");
    assert!(why.contains("t-0"), "{why}");
    // The disk "recovers": the partition still takes no writes and never marks anything durable
    // (a later sync could succeed over pages the failed one lost).
    sim_disk::fail_syncs(&dir, false);
    assert!(matches!(
        p.append(&batch, 1_000),
        Err(crate::error::BrokerError::Storage(_))
    ));
    p.flush_now();
    assert_eq!(durable(&p), Offset(0));
    assert!(p.close().is_err(), "no clean close after a failed sync");
}
