//! Stories of the log: append and read back, roll, retention, crash recovery, corrupt indexes.

use std::path::Path;

use strata_protocol::record_batch::{build_batch, validate_batches, BatchIter};

use super::log::LogReadError;
use super::*;
use crate::ids::{LeaderEpoch, Offset};

fn config(segment_bytes: usize) -> LogConfig {
    LogConfig {
        limits: SegmentLimits {
            segment_bytes,
            index_bytes: 4096,
            index_interval_bytes: 256,
        },
        segment_ms: -1,
        retention_ms: -1,
        retention_bytes: -1,
    }
}

fn append_n(log: &mut Log, n: usize, ts: i64) -> Vec<Offset> {
    (0..n)
        .map(|i| {
            let value = format!("value-{i:05}-{}", "x".repeat(40));
            let batch = build_batch(
                0,
                ts + i as i64,
                &[(Some(b"k"), value.as_bytes()), (None, b"second")],
            );
            let info = validate_batches(&batch).unwrap();
            log.append(&batch, &info, LeaderEpoch(3), ts).unwrap()
        })
        .collect()
}

fn read_all(log: &Log) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    for _ in 0..10_000 {
        let Some(read) = log.read(offset, 1000, log.log_end_offset()).unwrap() else {
            break;
        };
        for (_, b) in BatchIter::new(&read.records) {
            b.validate().unwrap();
            out.push((b.base_offset(), b.partition_leader_epoch()));
        }
        offset = read.next_offset;
    }
    out
}

/// Opens a log whose sealed segments keep at most one open at a time, so that every story here
/// also reads segments whose files were released and opened again.
fn open(dir: &Path, cfg: LogConfig, rp: Option<Offset>, clean: bool) -> (Log, RecoveryReport) {
    Log::open_shared(dir, cfg, rp, clean, &OpenSegments::new(1)).unwrap()
}

#[test]
fn appends_get_dense_offsets_and_read_back_with_the_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(1 << 20), None, false);
    let offsets = append_n(&mut log, 50, 1000);
    assert_eq!(offsets, (0..50).map(|i| Offset(i * 2)).collect::<Vec<_>>());
    assert_eq!(log.log_end_offset(), Offset(100));
    let batches = read_all(&log);
    assert_eq!(batches.len(), 50);
    assert!(batches
        .iter()
        .enumerate()
        .all(|(i, &(o, e))| o == i as i64 * 2 && e == 3));
    // A read from the middle of a batch starts at that batch; the limit hides batches past it.
    let r = log.read(Offset(7), 1, Offset(100)).unwrap().unwrap();
    assert_eq!(
        BatchIter::new(&r.records).next().unwrap().1.base_offset(),
        6
    );
    assert!(log.read(Offset(10), 1000, Offset(10)).unwrap().is_none());
    assert!(log.read(Offset(100), 1000, Offset(100)).unwrap().is_none());
    assert!(log.read(Offset(101), 1000, Offset(100)).is_err());
}

#[test]
fn rolls_at_segment_bytes_and_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(2000), None, false);
    append_n(&mut log, 100, 1000);
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    assert_eq!(read_all(&log).len(), 100);
    // A roll leaves the old segment's sync and trim to the next flush (the flush thread's).
    log.flush_all().unwrap();
    // Sealed segments are trimmed to their content.
    let sizes: Vec<u64> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert!(sizes.iter().filter(|&&s| s < 2000).count() >= log.segment_count() - 1);
}

#[test]
fn retention_by_bytes_and_by_time_deletes_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(2000);
    let (mut log, _) = open(dir.path(), cfg, None, false);
    append_n(&mut log, 100, 1_000);
    let before = log.segment_count();
    cfg.retention_bytes = 5000;
    log.set_config(cfg);
    let deleted = log.apply_retention(2_000).unwrap();
    assert!(deleted > 0 && log.segment_count() == before - deleted);
    assert!(log.size_bytes() < 5000 + 2000);
    let start = log.log_start_offset();
    assert!(start > Offset(0));
    assert!(log.read(Offset(0), 100, log.log_end_offset()).is_err());
    assert_eq!(read_all(&log).first().unwrap().0, start.0);
    // Everything is older than a day at t = 1 day + a bit: all of it goes, offsets keep counting.
    cfg.retention_bytes = -1;
    cfg.retention_ms = 86_400_000;
    log.set_config(cfg);
    log.apply_retention(1_000 + 86_400_000 + 200).unwrap();
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    assert_eq!(append_n(&mut log, 1, 90_000_000)[0], Offset(200));
}

#[test]
fn a_clean_reopen_keeps_everything_and_continues_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(3000), None, false);
    append_n(&mut log, 40, 1000);
    log.close().unwrap();
    drop(log);
    let (mut log, report) = open(dir.path(), config(3000), Some(Offset(80)), true);
    assert_eq!(report.tails_cut, 0);
    assert_eq!(log.log_end_offset(), Offset(80));
    assert_eq!(append_n(&mut log, 1, 5000)[0], Offset(80));
    assert_eq!(read_all(&log).len(), 41);
}

#[test]
fn recovery_cuts_a_torn_tail_and_keeps_every_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(1 << 20), None, false);
    append_n(&mut log, 20, 1000);
    drop(log);
    // A crash with nothing torn: the preallocated zeroes after the data are a clean end.
    let (log, report) = open(dir.path(), config(1 << 20), None, false);
    assert_eq!((report.tails_cut, log.log_end_offset()), (0, Offset(40)));
    let size = log.active_size_bytes();
    drop(log); // no close: like kill -9, the file is still preallocated
               // Tear the last batch: zero its final 10 bytes.
    let path = dir.path().join(segment::file_name(Offset(0), "log"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[size - 10..size].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let (log, report) = open(dir.path(), config(1 << 20), None, false);
    assert_eq!(log.log_end_offset(), Offset(38));
    assert_eq!(report.tails_cut, 1);
    assert_eq!(read_all(&log).len(), 19);
}

#[test]
fn recovery_cuts_at_a_flipped_bit_and_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(2000), None, false);
    append_n(&mut log, 60, 1000);
    let segments = log.segment_count();
    assert!(segments > 3);
    drop(log);
    // Corrupt the first batch of the second segment.
    let mut bases: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".log"))
        .collect();
    bases.sort();
    let second = dir.path().join(&bases[1]);
    let mut bytes = std::fs::read(&second).unwrap();
    bytes[70] ^= 0xff;
    std::fs::write(&second, &bytes).unwrap();
    let (log, report) = open(dir.path(), config(2000), None, false);
    assert_eq!(report.segments_dropped, segments - 2);
    let base_second: i64 = bases[1].trim_end_matches(".log").parse().unwrap();
    assert_eq!(log.log_end_offset(), Offset(base_second));
    assert_eq!(read_all(&log).len() as i64, base_second / 2);
}

#[test]
fn a_corrupted_index_of_a_sealed_segment_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(4000), None, false);
    append_n(&mut log, 60, 1000);
    log.close().unwrap();
    let expected = read_all(&log);
    drop(log);
    let index = dir.path().join(segment::file_name(Offset(0), "index"));
    let mut bytes = std::fs::read(&index).unwrap();
    assert!(
        bytes.len() >= 16,
        "the first segment has several index entries"
    );
    bytes[8..16].copy_from_slice(&[0xff; 8]); // an entry pointing far past the log
    std::fs::write(&index, &bytes).unwrap();
    let (log, _) = open(dir.path(), config(4000), Some(Offset(120)), true);
    assert_eq!(read_all(&log), expected);
    for target in [0, 1, 17, 33, 59] {
        let r = log
            .read(Offset(target * 2 + 1), 1, log.log_end_offset())
            .unwrap()
            .unwrap();
        assert_eq!(
            BatchIter::new(&r.records).next().unwrap().1.base_offset(),
            target * 2
        );
    }
}

#[test]
fn offsets_are_found_by_timestamp_and_max_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(3000), None, false);
    append_n(&mut log, 50, 10_000); // batch i has timestamp 10_000 + i, 2 records each
    let end = log.log_end_offset();
    assert_eq!(log.offset_for_timestamp(0, end), Some((Offset(0), 10_000)));
    assert_eq!(
        log.offset_for_timestamp(10_025, end),
        Some((Offset(50), 10_025))
    );
    assert_eq!(
        log.offset_for_timestamp(10_049, end),
        Some((Offset(98), 10_049))
    );
    assert_eq!(log.offset_for_timestamp(10_050, end), None);
    assert_eq!(log.max_timestamp_record(end), Some((Offset(98), 10_049)));
}

#[test]
fn rolls_by_time_counted_from_the_first_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1 << 20);
    cfg.segment_ms = 1_000;
    let (mut log, _) = open(dir.path(), cfg, None, false);
    let batch = build_batch(0, 5, &[(None, b"old timestamp")]); // producer timestamps do not matter
    let info = validate_batches(&batch).unwrap();
    log.append(&batch, &info, LeaderEpoch(0), 10_000).unwrap();
    log.append(&batch, &info, LeaderEpoch(0), 10_900).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(&batch, &info, LeaderEpoch(0), 11_001).unwrap();
    assert_eq!(log.segment_count(), 2);
    assert_eq!(read_all(&log).len(), 3);
}

#[test]
fn a_sealed_segment_with_a_corrupt_base_offset_is_cut_there_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(2000), None, false);
    append_n(&mut log, 60, 1000);
    assert!(log.segment_count() > 3);
    log.close().unwrap();
    drop(log);
    // The last batch of the first (sealed) segment gets base offset i64::MAX; the CRC does not
    // cover it, so only the offset chain shows it.
    let path = dir.path().join(segment::file_name(Offset(0), "log"));
    let mut bytes = std::fs::read(&path).unwrap();
    let (last, batch) = BatchIter::new(&bytes).last().unwrap();
    let cut_at = batch.base_offset();
    bytes[last..last + 8].copy_from_slice(&i64::MAX.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let (log, report) = open(dir.path(), config(2000), Some(Offset(120)), true);
    assert_eq!(report.tails_cut, 1);
    assert_eq!(log.log_end_offset(), Offset(cut_at));
    assert_eq!(read_all(&log).len() as i64, cut_at / 2);
}

fn try_append(log: &mut Log, value_bytes: usize) -> std::io::Result<Offset> {
    let ts = 1000;
    let value = "y".repeat(value_bytes);
    let batch = build_batch(0, ts, &[(None, value.as_bytes())]);
    let info = validate_batches(&batch).unwrap();
    log.append(&batch, &info, LeaderEpoch(3), ts)
}

#[test]
fn a_roll_that_cannot_create_the_next_segment_leaves_the_log_writable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(2000), None, false);
    append_n(&mut log, 5, 1000);
    // Something (here a directory in the way; in life EMFILE or ENOMEM) stops the creation of
    // the next segment, whenever the roll comes.
    let mut obstacle = None;
    for _ in 0..100 {
        let next = dir
            .path()
            .join(format!("{:020}.log", log.log_end_offset().0));
        std::fs::create_dir(&next).unwrap();
        if try_append(&mut log, 200).is_err() {
            obstacle = Some(next);
            break;
        }
        std::fs::remove_dir(&next).unwrap();
    }
    let obstacle = obstacle.expect("the roll never hit the obstacle");
    // The failed roll cost nothing: the segment still takes what fits, and once the obstacle is
    // gone appends continue densely.
    let end = log.log_end_offset();
    assert_eq!(try_append(&mut log, 1).unwrap(), end);
    std::fs::remove_dir(&obstacle).unwrap();
    append_n(&mut log, 20, 1000);
    let batches = read_all(&log);
    assert!(batches.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(log.log_end_offset().0, end.0 + 1 + 40);
}

#[test]
fn appending_to_a_closed_log_is_an_error_not_a_panic() {
    // What a produce that passed the partition's `closed` check before DeleteTopics or shutdown
    // closed the log would do.
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(1 << 20), None, false);
    append_n(&mut log, 3, 1000);
    log.close().unwrap();
    assert!(try_append(&mut log, 10).is_err());
}

/// Lengths of every file in `dir`, by name.
fn file_lengths(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Disk blocks the files in `dir` hold, in bytes (what `du` counts).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum()
}

#[test]
fn two_clean_restarts_in_a_row_leave_sealed_indexes_trimmed_and_rebuild_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(4096), None, false);
    append_n(&mut log, 200, 1000);
    assert!(log.segment_count() > 3);
    log.close().unwrap();
    drop(log);
    let closed = file_lengths(dir.path());
    // The last segment is reopened as the active one (extended to take appends); the others
    // stay sealed.
    let active = closed.last().unwrap().0[..20].to_string();
    for restart in 0..2 {
        let (log, report) = open(dir.path(), config(4096), Some(Offset(400)), true);
        assert_eq!(report.tails_cut, 0);
        assert_eq!(read_all(&log).len(), 200);
        // The sealed segments' files are exactly as closed: not re-extended to capacity (which
        // the next start would find full of zero entries, and rebuild).
        let sealed: Vec<_> = file_lengths(dir.path())
            .into_iter()
            .filter(|(name, _)| !name.starts_with(&active))
            .collect();
        let before: Vec<_> = closed
            .iter()
            .filter(|(name, _)| sealed.iter().any(|(n, _)| n == name))
            .cloned()
            .collect();
        assert!(sealed.len() >= 9, "restart {restart}: {sealed:?}");
        assert_eq!(sealed, before, "restart {restart}");
        drop(log);
    }
}

#[test]
fn a_log_holding_one_record_costs_kilobytes_of_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1 << 30);
    cfg.limits.index_bytes = 10 << 20;
    let (mut log, _) = open(dir.path(), cfg, None, false);
    append_n(&mut log, 1, 1000);
    let used = disk_bytes(dir.path());
    assert!(used <= 64 << 10, "one record holds {used} bytes of disk");
    // Clean shutdown trims everything to its content.
    log.close().unwrap();
    drop(log);
    let used = disk_bytes(dir.path());
    assert!(used <= 16 << 10, "closed, one record holds {used} bytes");
}

/// The `.log` files in `dir`, sorted.
fn segment_logs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_roll_leaves_the_directory_sync_to_the_flush_which_makes_the_new_segments_durable() {
    // A roll happens under the partition lock on the produce path, where a directory fsync would
    // stall every produce behind the disk; the flush syncs the directory instead, before anything
    // in a new segment counts as flushed.
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("t-0");
    std::fs::create_dir(&log_dir).unwrap();
    super::sim_disk::track(&log_dir);
    let (mut log, _) = open(&log_dir, config(1024), None, true);
    append_n(&mut log, 40, 1_000);
    assert!(log.segment_count() > 3, "{} segments", log.segment_count());

    // A power cut before any flush: no rolled segment's name was synced, only the first one's.
    super::sim_disk::cut(&log_dir, &mut super::sim_disk::Rng(7));
    assert_eq!(
        segment_logs(&log_dir),
        vec![segment::file_name(Offset(0), "log")]
    );
    drop(log);

    // After a flush, every segment and every record survives a cut.
    let (mut log, _) = open(&log_dir, config(1024), None, false);
    let start = log.log_end_offset();
    append_n(&mut log, 40, 2_000);
    let (segments, end, records) = (log.segment_count(), log.log_end_offset(), read_all(&log));
    log.flush_all().unwrap();
    super::sim_disk::cut(&log_dir, &mut super::sim_disk::Rng(8));
    drop(log);
    assert_eq!(segment_logs(&log_dir).len(), segments);
    let (log, _) = open(&log_dir, config(1024), None, false);
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(0), end)
    );
    assert!(end > start);
    assert_eq!(read_all(&log), records);
}

/// Open file descriptors and mappings of this process whose file lies under `dir` (other tests
/// running in the same process open files elsewhere).
fn open_files_under(dir: &Path) -> (usize, usize) {
    let dir = dir.to_string_lossy().to_string();
    let fds = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with(&dir))
        .count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.contains(&dir))
        .count();
    (fds, maps)
}

#[test]
fn many_logs_with_many_sealed_segments_keep_within_the_open_segment_bound() {
    const LOGS: usize = 6;
    const BOUND: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let bound = OpenSegments::new(BOUND);
    let dirs: Vec<_> = (0..LOGS)
        .map(|i| dir.path().join(format!("t-{i}")))
        .collect();
    let mut logs: Vec<Log> = dirs
        .iter()
        .map(|d| {
            Log::open_shared(d, config(2000), None, false, &bound)
                .unwrap()
                .0
        })
        .collect();
    for log in &mut logs {
        append_n(log, 100, 1000);
        // The flush thread's work: sync and trim the rolled segments, which seals them.
        log.flush_all().unwrap();
        assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    }
    // Each log holds its active segment's 3 files and mappings; sealed ones only within the bound.
    let most = 3 * (LOGS + BOUND);
    let within = |when: &str| {
        let (fds, maps) = open_files_under(dir.path());
        assert!(
            bound.open_count() <= BOUND,
            "{when}: {} open",
            bound.open_count()
        );
        assert!(fds <= most, "{when}: {fds} fds open (at most {most})");
        assert!(maps <= most, "{when}: {maps} mappings (at most {most})");
    };
    within("after appending");
    // Every record of every log reads back, whichever segments had to be opened again.
    for log in &logs {
        assert_eq!(read_all(log).len(), 100);
        within("while reading");
    }
    // A clean restart opens every sealed segment to check it, but keeps no more than the bound.
    for log in &mut logs {
        log.close().unwrap();
    }
    drop(logs);
    assert_eq!(bound.open_count(), 0, "closed logs hold nothing open");
    let bound = OpenSegments::new(BOUND);
    let logs: Vec<Log> = dirs
        .iter()
        .map(|d| {
            Log::open_shared(d, config(2000), Some(Offset(200)), true, &bound)
                .unwrap()
                .0
        })
        .collect();
    within("after a clean restart");
    for log in &logs {
        assert_eq!(read_all(log).len(), 100);
    }
    within("after reading everything again");
}

#[test]
fn a_read_outlives_the_release_and_the_deletion_of_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let bound = OpenSegments::new(1);
    let mut cfg = config(2000);
    let (mut log, _) = Log::open_shared(dir.path(), cfg, None, false, &bound).unwrap();
    append_n(&mut log, 100, 1000);
    log.flush_all().unwrap();
    let first = log
        .read(Offset(0), 1000, log.log_end_offset())
        .unwrap()
        .unwrap();
    let copy = first.records.to_vec();
    // Reading the rest releases the first segment's files; retention then deletes them.
    assert_eq!(read_all(&log).len(), 100);
    cfg.retention_bytes = 0;
    log.set_config(cfg);
    assert!(log.apply_retention(2_000).unwrap() > 0);
    assert!(!dir
        .path()
        .join(segment::file_name(Offset(0), "log"))
        .exists());
    assert_eq!(
        bound.open_count(),
        0,
        "deleted segments are no longer counted"
    );
    // The fetch response still holding the bytes sees them unchanged.
    assert_eq!(&first.records[..], &copy[..]);
    BatchIter::new(&first.records).for_each(|(_, b)| b.validate().unwrap());
}

#[test]
fn a_released_segment_whose_files_changed_fails_its_reads_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let bound = OpenSegments::new(0);
    let (mut log, _) = Log::open_shared(dir.path(), config(2000), None, false, &bound).unwrap();
    append_n(&mut log, 100, 1000);
    log.flush_all().unwrap();
    assert_eq!(
        bound.open_count(),
        0,
        "a bound of 0 keeps no sealed segment open"
    );
    let log_file = dir.path().join(segment::file_name(Offset(0), "log"));
    let end = log.log_end_offset();
    // A short .log: reads of it fail, later segments still read.
    let len = std::fs::metadata(&log_file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log_file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert!(matches!(
        log.read(Offset(0), 1000, end),
        Err(LogReadError::Storage(_))
    ));
    assert!(log.read(Offset(90), 1000, end).unwrap().is_some());
    // A missing .log is an error, and is not created again.
    std::fs::remove_file(&log_file).unwrap();
    assert!(matches!(
        log.read(Offset(0), 1000, end),
        Err(LogReadError::Storage(_))
    ));
    assert!(!log_file.exists());
    // A grown index is noticed too; a ListOffsets by time that needs it fails the same way.
    let second_base = log.read(Offset(90), 1, end).unwrap().unwrap();
    drop(second_base);
    let index = dir.path().join(segment::file_name(Offset(0), "timeindex"));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&index)
        .unwrap()
        .set_len(4096)
        .unwrap();
    assert!(log.batch_by_timestamp(0, Offset(0), end).is_err());
}
