//! A partition's log: a directory of segments named by base offset, the last one active.
//!
//! Invariants:
//! - segments are ordered and contiguous: each segment's base offset is the previous one's
//!   `next_offset`; the last segment is the only one that takes appends (none after `close`);
//! - a roll creates the next segment before it stops appends to the old one (a failed roll
//!   leaves the log as it was, writable); the old one is synced and trimmed by the next flush
//!   (outside the partition lock), and the recovery point passes it only after that;
//! - `log_start_offset <= recovery_point <= log_end_offset`;
//! - everything below `recovery_point` is on disk (flushed); on an unclean start only segments from
//!   the one holding the recovery point onwards are scanned, and a torn or corrupt tail is cut off;
//! - retention deletes whole sealed segments, oldest first, and never the data an active read needs
//!   (readers hold the mapping; a deleted file's pages live until the last slice is dropped);
//! - a truncation (a follower cutting what its leader never had, above the high watermark) zeroes
//!   the cut bytes in place and syncs them before it returns, so recovery never brings them back;
//!   only followers read above the high watermark, and never from a replica that truncates;
//! - only the active segment (and a rolled one until its seal) holds its files; sealed ones open
//!   theirs on demand under the broker-wide [`OpenSegments`] bound. Retention and the clean
//!   close need no sealed segment's files.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use strata_protocol::record_batch::RecordSetInfo;

use super::open_segments::OpenSegments;
use super::segment::{FlushTarget, Segment, SegmentLimits, SegmentRead};
use crate::ids::{LeaderEpoch, Offset};

/// The per-topic settings the log obeys (Kafka topic config names in comments).
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    pub limits: SegmentLimits,
    /// `segment.ms`: roll the active segment this long after its first append (-1: never).
    pub segment_ms: i64,
    /// `retention.ms`: delete segments whose newest record is older (-1: keep forever).
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest segments while the log is larger (-1: no limit).
    pub retention_bytes: i64,
}

/// What opening a log found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub segments_scanned: usize,
    /// Segments whose torn or corrupt tail was cut off.
    pub tails_cut: usize,
    pub segments_dropped: usize,
}

/// An offset outside `[log_start_offset, log_end_offset]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetOutOfRange {
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

/// Why a read found nothing to return.
#[derive(Debug)]
pub enum LogReadError {
    OutOfRange(OffsetOutOfRange),
    /// A sealed segment's files could not be opened again (missing, or changed on disk).
    Storage(io::Error),
}

/// Sealed segments held open by a log opened without a shared bound ([`Log::open`]).
pub const SEGMENT_OPEN_MAX_DEFAULT: usize = 2000;

pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// The bound on open sealed segments this log shares with every other.
    open_segments: Arc<OpenSegments>,
    segments: VecDeque<Segment>,
    recovery_point: Offset,
    /// The base offset of the segment the last roll started, until taken: the partition
    /// snapshots its producer state there (`take_rolled`).
    rolled: Option<Offset>,
}

impl Log {
    /// Opens the log in `dir`, creating it if empty. `recovery_point` is the last checkpointed
    /// flushed offset; `None` (no checkpoint) recovers every segment. With `clean_shutdown`, the
    /// files were closed cleanly and are trusted (indexes are still checked). Sealed segments
    /// hold their files under a bound of this log's own ([`SEGMENT_OPEN_MAX_DEFAULT`]).
    pub fn open(
        dir: &Path,
        config: LogConfig,
        recovery_point: Option<Offset>,
        clean_shutdown: bool,
    ) -> io::Result<(Log, RecoveryReport)> {
        let open_segments = OpenSegments::new(SEGMENT_OPEN_MAX_DEFAULT);
        Log::open_shared(dir, config, recovery_point, clean_shutdown, &open_segments)
    }

    /// [`Log::open`], with sealed segments holding their files under `open_segments`, a bound
    /// shared with other logs.
    pub fn open_shared(
        dir: &Path,
        config: LogConfig,
        recovery_point: Option<Offset>,
        clean_shutdown: bool,
        open_segments: &Arc<OpenSegments>,
    ) -> io::Result<(Log, RecoveryReport)> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)?;
            // A new partition's directory must survive a power cut with what it will hold.
            if let Some(parent) = dir.parent() {
                super::sync_dir(parent)?;
            }
        }
        let bases = segment_bases(dir)?;
        let mut report = RecoveryReport {
            segments: bases.len(),
            ..Default::default()
        };
        let mut segments = VecDeque::with_capacity(bases.len());
        let scan_from = if clean_shutdown {
            None
        } else {
            // The segment holding the recovery point and every later one may have a torn tail.
            let rp = recovery_point.unwrap_or(Offset(i64::MIN));
            Some(bases.iter().rposition(|b| *b <= rp).unwrap_or(0))
        };
        let mut cut_at: Option<usize> = None;
        // Whether the previous segment was scanned or cut: its end is then what survived, and a
        // later segment that does not continue from it is a gap, not a broken invariant.
        let mut previous_uncertain = false;
        for (i, base) in bases.iter().enumerate() {
            if cut_at.is_some() {
                // The log ended earlier (a gap after a cut tail): later data cannot be trusted to
                // be contiguous, as Kafka also decides.
                remove_segment_files(dir, *base)?;
                report.segments_dropped += 1;
                continue;
            }
            let expected = segments.back().map(Segment::next_offset);
            // The last segment becomes the active one: it is always validated and mapped whole.
            let scanned = scan_from.is_some_and(|from| i >= from) || i + 1 == bases.len();
            let (seg, cut) = if scanned {
                report.segments_scanned += 1;
                Segment::recover(dir, *base, config.limits, open_segments)?
            } else {
                Segment::open_sealed(dir, *base, config.limits, open_segments)?
            };
            if let Some(position) = cut {
                tracing::warn!(dir = %dir.display(), base = base.0, position, "cut a torn or corrupt tail");
                report.tails_cut += 1;
            }
            if let Some(expected) = expected {
                if seg.base_offset() != expected {
                    if !previous_uncertain {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "{}: segment {} does not follow offset {expected}",
                                dir.display(),
                                base.0
                            ),
                        ));
                    }
                    // The previous segment lost a tail (unsynced, or corrupt) that this one
                    // continued: nothing from here on was acknowledged (a flush syncs older
                    // segments first), so the log ends at the gap.
                    tracing::warn!(dir = %dir.display(), base = base.0, expected = expected.0, "dropped segments after a gap");
                    drop(seg);
                    remove_segment_files(dir, *base)?;
                    report.segments_dropped += 1;
                    cut_at = Some(i);
                    continue;
                }
            }
            // A segment whose tail was cut but that the next one continues exactly ended there:
            // what followed was never data (say, pages of an earlier torn write).
            previous_uncertain = scanned || cut.is_some();
            segments.push_back(seg);
        }
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            open_segments: Arc::clone(open_segments),
            segments,
            recovery_point: Offset(0),
            rolled: None,
        };
        let n = log.segments.len();
        if n == 0 {
            log.segments.push_back(Segment::create(
                dir,
                Offset(0),
                config.limits,
                open_segments,
            )?);
        }
        for seg in log.segments.iter_mut().take(n.saturating_sub(1)) {
            seg.seal()?;
        }
        // Whatever was recovered is synced now (it may have lived only in the page cache of a
        // killed process), so the recovery point is the end.
        log.flush_all()?;
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> Offset {
        self.segments
            .front()
            .map(Segment::base_offset)
            .unwrap_or_default()
    }

    /// One past the last record: the offset the next append gets.
    pub fn log_end_offset(&self) -> Offset {
        self.active().next_offset()
    }

    pub fn recovery_point(&self) -> Offset {
        self.recovery_point
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size_bytes() as u64).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&self) -> &Segment {
        self.segments
            .back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .back_mut()
            .expect("a log always has an active segment")
    }

    /// Appends a validated record set, rolling first if the active segment is full or old.
    /// Returns the offset of its first record. The caller keeps record sets within
    /// `segment.bytes` (Kafka refuses larger ones with RECORD_LIST_TOO_LARGE).
    pub fn append(
        &mut self,
        records: &[u8],
        info: &RecordSetInfo,
        epoch: LeaderEpoch,
        now_ms: i64,
    ) -> io::Result<Offset> {
        assert!(
            records.len() <= self.config.limits.segment_bytes,
            "record set larger than a segment"
        );
        let last_offset = Offset(self.log_end_offset().0 + info.record_count - 1);
        self.make_room(records.len(), last_offset, now_ms)?;
        self.active_mut().append(records, info, epoch, now_ms)
    }

    /// Appends a validated record set exactly as it is (a follower copying its leader's
    /// batches: offsets, epochs and timestamps kept), rolling first as [`Log::append`] does.
    /// The batches must continue the log densely from its end and hold offsets up to
    /// `last_offset`; else nothing is written (`InvalidData`).
    pub fn append_verbatim(
        &mut self,
        records: &[u8],
        info: &RecordSetInfo,
        last_offset: Offset,
        now_ms: i64,
    ) -> io::Result<Offset> {
        if records.len() > self.config.limits.segment_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "record set larger than a segment",
            ));
        }
        self.make_room(records.len(), last_offset, now_ms)?;
        self.active_mut().append_verbatim(records, info, now_ms)
    }

    /// Rolls if the active segment is full for `records_len` more bytes (up to `last_offset`) or old.
    fn make_room(
        &mut self,
        records_len: usize,
        last_offset: Offset,
        now_ms: i64,
    ) -> io::Result<()> {
        if self.active().is_sealed() {
            return Err(io::Error::other("the log is closed"));
        }
        let active = self.active();
        let too_old = self.config.segment_ms >= 0
            && active
                .first_append_ms()
                .is_some_and(|t| now_ms.saturating_sub(t) > self.config.segment_ms);
        if !active.is_empty() && (active.is_full_for(records_len, last_offset) || too_old) {
            self.roll(records_len)?;
        } else if active.is_empty() && active.is_full_for(records_len, last_offset) {
            // An empty segment sized by an older, smaller `segment.bytes`: open it again larger
            // (the files grow in place), replacing it only once that worked.
            let base = active.base_offset();
            let seg = self.new_segment(base, records_len)?;
            self.segments.pop_back();
            self.segments.push_back(seg);
        }
        Ok(())
    }

    /// Removes every record at or above `offset` (nothing if it is at or past the log end).
    /// `offset` must start a batch and not be below the log start (`InvalidInput`, nothing
    /// changed). Later segments are deleted newest first, then the one holding `offset` is
    /// zeroed from there and synced, and reopened as the active segment (its indexes rebuilt
    /// from what is left); everything is synced before this returns. A crash part-way leaves a
    /// prefix of the old log, never bytes past a cut that recovery would accept.
    pub fn truncate_to(&mut self, offset: Offset) -> io::Result<()> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        if offset < self.log_start_offset() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "truncation to {offset} below the log start {}",
                    self.log_start_offset()
                ),
            ));
        }
        let i = self
            .segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        let Some(position) = self.segments[i].batch_position(offset)? else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("truncation to {offset}, which does not start a batch"),
            ));
        };
        while self.segments.len() > i + 1 {
            if let Some(seg) = self.segments.pop_back() {
                remove_files(&seg.paths())?;
            }
        }
        super::sync_dir(&self.dir)?;
        self.segments[i].zero_from(position)?;
        let base = self.segments[i].base_offset();
        let (seg, _) = Segment::recover(&self.dir, base, self.config.limits, &self.open_segments)?;
        self.segments[i] = seg;
        self.rolled = None;
        self.recovery_point = self.recovery_point.min(offset);
        self.flush_all()
    }

    /// Deletes every segment and starts an empty log at `offset` (a new replica whose leader's
    /// log starts past this log's end). Segments are deleted newest first: a crash part-way
    /// leaves a prefix of the old log.
    pub fn truncate_fully_and_start_at(&mut self, offset: Offset) -> io::Result<()> {
        for seg in self.segments.iter().rev() {
            remove_files(&seg.paths())?;
        }
        // Syncs the directory: the removals are durable with the new segment's name.
        let seg = Segment::create(&self.dir, offset, self.config.limits, &self.open_segments)?;
        self.segments.clear();
        self.segments.push_back(seg);
        self.rolled = None;
        self.recovery_point = offset;
        Ok(())
    }

    /// Starts a new segment at the log end offset; the old one takes no more appends and is
    /// synced and trimmed by the next flush ([`Log::unflushed`]), not here under the lock. If
    /// the new segment cannot be created, nothing changes.
    pub fn roll(&mut self, next_append_bytes: usize) -> io::Result<()> {
        let base = self.log_end_offset();
        let seg = self.new_segment(base, next_append_bytes)?;
        self.active_mut().stop_appends();
        self.segments.push_back(seg);
        self.rolled = Some(base);
        Ok(())
    }

    /// The offset where a segment was rolled since the last call, if any (the roll hook: the
    /// partition writes its producer-state snapshot there).
    pub fn take_rolled(&mut self) -> Option<Offset> {
        self.rolled.take()
    }

    /// Whether a roll (since [`Log::take_rolled`]) left a segment to seal: its sync and trim
    /// wait for a flush.
    pub fn has_pending_seal(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.is_sealed() && s.unflushed().is_some())
    }

    /// A new segment for a roll or a larger empty one: the next flush syncs the directory (see
    /// `Segment::create_unsynced`), not this produce.
    fn new_segment(&self, base: Offset, min_bytes: usize) -> io::Result<Segment> {
        let mut limits = self.config.limits;
        limits.segment_bytes = limits.segment_bytes.max(min_bytes);
        Segment::create_unsynced(&self.dir, base, limits, &self.open_segments)
    }

    /// Reads whole batches from `offset`, at most `max_bytes` (but at least one batch), none at or
    /// past `limit`. `Ok(None)` when there is nothing yet (offset at the end, or beyond `limit`).
    pub fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        limit: Offset,
    ) -> Result<Option<SegmentRead>, LogReadError> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset < start || offset > end {
            return Err(LogReadError::OutOfRange(OffsetOutOfRange {
                log_start_offset: start,
                log_end_offset: end,
            }));
        }
        let first = self
            .segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        for segment in self.segments.iter().skip(first) {
            if let Some(read) = segment
                .read(offset, max_bytes, limit)
                .map_err(LogReadError::Storage)?
            {
                return Ok(Some(read));
            }
        }
        Ok(None)
    }

    /// The first batch that may hold a record at or after `from` (and the log start) with a
    /// timestamp `>= target_ms`, below `limit`: a zero-copy slice, decoded outside the partition
    /// lock by `segment::first_record_at_or_after`.
    pub fn batch_by_timestamp(
        &self,
        target_ms: i64,
        from: Offset,
        limit: Offset,
    ) -> io::Result<Option<Bytes>> {
        let from = from.max(self.log_start_offset());
        for segment in &self.segments {
            if let Some(batch) = segment.batch_by_timestamp(target_ms, from, limit)? {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }

    /// The first record with a timestamp `>= target_ms` below `limit`: (offset, timestamp). For
    /// tests; the broker walks the batch outside its lock (`Partition::list_offset`).
    #[cfg(test)]
    pub fn offset_for_timestamp(&self, target_ms: i64, limit: Offset) -> Option<(Offset, i64)> {
        let from = self.log_start_offset();
        let batch = self.batch_by_timestamp(target_ms, from, limit).ok()??;
        let limits = strata_protocol::record_batch::RecordLimits::DEFAULT;
        super::segment::first_record_at_or_after(&batch, target_ms, from, limit, &limits)
    }

    /// The record with the largest timestamp below `limit`. For tests, as above.
    #[cfg(test)]
    pub fn max_timestamp_record(&self, limit: Offset) -> Option<(Offset, i64)> {
        let batch = self.max_timestamp_batch().ok()??;
        let h = strata_protocol::record_batch::BatchHeader::parse(&batch).ok()?;
        let limits = strata_protocol::record_batch::RecordLimits::DEFAULT;
        let (target, from) = (h.max_timestamp(), Offset(h.base_offset()));
        super::segment::first_record_at_or_after(&batch, target, from, limit, &limits)
    }

    /// The batch holding the record with the largest timestamp (the earliest such on ties).
    pub fn max_timestamp_batch(&self) -> io::Result<Option<Bytes>> {
        let Some(best) = self
            .segments
            .iter()
            .filter(|s| s.max_timestamp_ms() >= 0)
            .fold(None::<&Segment>, |best, s| match best {
                Some(b) if b.max_timestamp_ms() >= s.max_timestamp_ms() => Some(b),
                _ => Some(s),
            })
        else {
            return Ok(None);
        };
        best.max_timestamp_batch()
    }

    /// Ranges to flush, taken under the partition lock and flushed outside it.
    pub fn unflushed(&self) -> Vec<FlushTarget> {
        self.segments
            .iter()
            .filter_map(Segment::unflushed)
            .collect()
    }

    /// Records that `flushed` (everything [`Log::unflushed`] returned when the log ended at
    /// `end`) is synced, and finishes the seals it carried (index trims). Each target marks its
    /// own segment, by base offset: a segment rolled in since was not covered by this flush
    /// and stays unflushed.
    pub fn mark_flushed(&mut self, end: Offset, flushed: &[FlushTarget]) -> io::Result<()> {
        for target in flushed {
            let i = self
                .segments
                .partition_point(|s| s.base_offset() < target.base_offset);
            if let Some(seg) = self.segments.get_mut(i) {
                if seg.base_offset() == target.base_offset {
                    seg.mark_flushed(target);
                    if target.seal {
                        seg.finish_seal()?;
                    }
                }
            }
        }
        self.recovery_point = self.recovery_point.max(end.min(self.log_end_offset()));
        Ok(())
    }

    /// Syncs everything now, on this thread (open, close, tests): what a flush thread does.
    pub fn flush_all(&mut self) -> io::Result<()> {
        let targets = self.unflushed();
        for target in &targets {
            target.flush()?;
        }
        let end = self.log_end_offset();
        self.mark_flushed(end, &targets)
    }

    pub fn active_size_bytes(&self) -> usize {
        self.active().size_bytes()
    }

    /// Deletes sealed segments past `retention.ms` or beyond `retention.bytes`. An expired active
    /// segment is rolled first so its records can go too. Returns how many segments were deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> io::Result<usize> {
        let end = self.log_end_offset();
        self.apply_retention_below(now_ms, end)
    }

    /// [`Log::apply_retention`], deleting only segments whose records are all below `limit` (a
    /// replicated partition's high watermark: what followers may still need is kept).
    pub fn apply_retention_below(&mut self, now_ms: i64, limit: Offset) -> io::Result<usize> {
        let retention_ms = self.config.retention_ms;
        let expired = |s: &Segment| {
            retention_ms >= 0
                && s.max_timestamp_ms() >= 0
                && now_ms - s.max_timestamp_ms() > retention_ms
        };
        if !self.active().is_empty() && expired(self.active()) {
            self.roll(0)?;
        }
        let mut deleted = 0;
        let mut total = self.size_bytes() as i64;
        while self.segments.len() > 1 && self.segments[1].base_offset() <= limit {
            let oldest = &self.segments[0];
            let over_bytes = self.config.retention_bytes >= 0
                && total - oldest.size_bytes() as i64 >= self.config.retention_bytes;
            if !(expired(oldest) || over_bytes) {
                break;
            }
            let seg = self.segments.pop_front().expect("len > 1");
            total -= seg.size_bytes() as i64;
            remove_files(&seg.paths())?;
            deleted += 1;
        }
        if self.recovery_point < self.log_start_offset() {
            self.recovery_point = self.log_start_offset();
        }
        Ok(deleted)
    }

    /// Flushes and trims every file so the next open trusts them (clean shutdown).
    pub fn close(&mut self) -> io::Result<()> {
        self.flush_all()?;
        self.active_mut().seal()
    }
}

/// Base offsets of the segments in `dir`, from their `.log` file names, in order.
fn segment_bases(dir: &Path) -> io::Result<Vec<Offset>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            match stem.parse::<i64>() {
                Ok(base) if stem.len() == 20 => bases.push(Offset(base)),
                _ => tracing::warn!(file = %name, "ignoring a file that is not a segment"),
            }
        }
    }
    bases.sort();
    Ok(bases)
}

fn remove_segment_files(dir: &Path, base: Offset) -> io::Result<()> {
    let paths =
        ["log", "index", "timeindex"].map(|ext| dir.join(super::segment::file_name(base, ext)));
    remove_files(&paths)
}

fn remove_files(paths: &[PathBuf]) -> io::Result<()> {
    for p in paths {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        #[cfg(test)]
        super::sim_disk::removed(p);
    }
    Ok(())
}
