//! One segment of a partition's log: `<base>.log` (record batches exactly as stored), with its
//! sparse `<base>.index` and `<base>.timeindex`.
//!
//! Invariants:
//! - batches are dense and ordered: each batch's base offset is the previous batch's last offset
//!   plus one, starting at the segment's base offset; `next_offset` is one past the last record;
//! - `size_bytes` is the end of the last complete, validated batch; nothing past it is read;
//! - index entries point at batch starts below `size_bytes` (see `index.rs`);
//! - a sealed segment takes no appends; its files are trimmed to their content and flushed
//!   (`trimmed`) either at once ([`Segment::seal`]) or, after a roll, by the flush thread through
//!   its [`FlushTarget`] (msync and trim outside the partition lock, then the indexes);
//! - a failed append changes nothing: the fields and index entries it touched are restored;
//! - nothing in a segment counts as flushed before its files' names are durable: a segment made
//!   by a roll ([`Segment::create_unsynced`]) leaves the directory sync to its first flush
//!   ([`FlushTarget::sync_dir`]), so the produce path never waits for it.

use std::io::{self, IoSlice};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use strata_protocol::record_batch::{
    self, BatchHeader, BatchIter, RecordLimits, RecordSetInfo, BATCH_HEADER_BYTES,
};

use super::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use super::mapped_file::MappedFile;
use crate::ids::{LeaderEpoch, Offset};

/// Sizes that shape a segment, from the topic's configuration.
#[derive(Debug, Clone, Copy)]
pub struct SegmentLimits {
    /// `segment.bytes`: the `.log` is preallocated to this and rolls before exceeding it.
    pub segment_bytes: usize,
    /// `segment.index.bytes`: capacity of each index file.
    pub index_bytes: usize,
    /// `index.interval.bytes`: bytes appended between two offset-index entries.
    pub index_interval_bytes: usize,
}

pub fn file_name(base_offset: Offset, extension: &str) -> String {
    format!("{:020}.{extension}", base_offset.0)
}

/// What a read found: the batches' bytes (a zero-copy slice of the mapping).
#[derive(Debug, Clone)]
pub struct SegmentRead {
    pub records: Bytes,
    /// Offset one past the last record returned.
    pub next_offset: Offset,
}

pub struct Segment {
    base_offset: Offset,
    log: Arc<MappedFile>,
    size_bytes: usize,
    flushed_bytes: usize,
    next_offset: Offset,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: usize,
    max_timestamp_ms: i64,
    /// Base offset of the batch that holds `max_timestamp_ms`.
    batch_of_max_timestamp: Offset,
    /// Wall-clock time of the first append since this segment was opened: `segment.ms` counts
    /// from it. (Kafka counts from the first record's timestamp, which rolls a segment per append
    /// when producers send old timestamps.)
    first_append_ms: Option<i64>,
    /// Takes no more appends.
    sealed: bool,
    /// The files are trimmed to their content and synced (a sealed segment, after its flush).
    trimmed: bool,
    /// The directory was synced since the files were created: their names survive a power cut.
    names_synced: bool,
    limits: SegmentLimits,
}

impl Segment {
    /// Creates an empty segment at `base_offset`, its files' names durable.
    pub fn create(dir: &Path, base_offset: Offset, limits: SegmentLimits) -> io::Result<Segment> {
        let mut seg = Segment::create_unsynced(dir, base_offset, limits)?;
        super::sync_dir(dir)?;
        seg.names_synced = true;
        Ok(seg)
    }

    /// Creates an empty segment at `base_offset` whose files' names the first flush makes
    /// durable (a roll, under the partition lock: a directory sync there would hold up produces).
    pub fn create_unsynced(
        dir: &Path,
        base_offset: Offset,
        limits: SegmentLimits,
    ) -> io::Result<Segment> {
        let log = MappedFile::open(
            &dir.join(file_name(base_offset, "log")),
            limits.segment_bytes,
        )?;
        let offset_index = OffsetIndex::open(
            &dir.join(file_name(base_offset, "index")),
            limits.index_bytes,
            0,
        )?;
        let time_index = TimeIndex::open(
            &dir.join(file_name(base_offset, "timeindex")),
            limits.index_bytes,
            0,
        )?;
        Ok(Segment {
            base_offset,
            log: Arc::new(log),
            size_bytes: 0,
            flushed_bytes: 0,
            next_offset: base_offset,
            offset_index,
            time_index,
            bytes_since_index_entry: 0,
            max_timestamp_ms: -1,
            batch_of_max_timestamp: base_offset,
            first_append_ms: None,
            sealed: false,
            trimmed: false,
            names_synced: false,
            limits,
        })
    }

    /// Opens a segment that was sealed (or cleanly closed): its files hold exactly their content.
    /// The indexes are checked and rebuilt from the log if they break an invariant; if the log
    /// itself breaks one (offsets that do not chain), it is cut there and the position returned.
    pub fn open_sealed(
        dir: &Path,
        base_offset: Offset,
        limits: SegmentLimits,
    ) -> io::Result<(Segment, Option<usize>)> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let size_bytes = std::fs::metadata(&log_path)?.len() as usize;
        let log = MappedFile::open(&log_path, size_bytes)?;
        let offset_index = OffsetIndex::open_sealed(&dir.join(file_name(base_offset, "index")))?;
        let time_index = TimeIndex::open_sealed(&dir.join(file_name(base_offset, "timeindex")))?;
        let mut seg = Segment {
            base_offset,
            log: Arc::new(log),
            size_bytes,
            flushed_bytes: size_bytes,
            next_offset: base_offset,
            offset_index,
            time_index,
            bytes_since_index_entry: 0,
            max_timestamp_ms: -1,
            batch_of_max_timestamp: base_offset,
            first_append_ms: None,
            sealed: true,
            trimmed: true,
            names_synced: true,
            limits,
        };
        let indexes_ok = seg.offset_index.check(size_bytes as i64).is_ok()
            && seg.time_index.check(i64::from(u32::MAX)).is_ok();
        // The tail after the last index entry is scanned to find the end; cheap (headers only).
        match seg.scan_tail() {
            Ok(()) if indexes_ok => {}
            _ => {
                tracing::warn!(segment = %log_path.display(), "index damaged; rebuilding it from the log");
                // Room to rebuild in; trimmed again below.
                seg.offset_index = OffsetIndex::open(
                    &dir.join(file_name(base_offset, "index")),
                    limits.index_bytes,
                    0,
                )?;
                seg.time_index = TimeIndex::open(
                    &dir.join(file_name(base_offset, "timeindex")),
                    limits.index_bytes,
                    0,
                )?;
                let valid = seg.rebuild(false)?;
                seg.trim_indexes()?;
                if valid < size_bytes {
                    // Zeroes after the last batch are a seal whose trim did not happen (rolled,
                    // synced, then a crash), not corruption: nothing later is cut for them.
                    let after = seg.log.slice(
                        valid,
                        (size_bytes - valid).min(record_batch::BATCH_HEADER_BYTES),
                    );
                    let torn = after.iter().any(|b| *b != 0);
                    seg.log.trim(valid)?;
                    return Ok((seg, torn.then_some(valid)));
                }
            }
        }
        Ok((seg, None))
    }

    /// Opens a segment that may hold a torn or corrupt tail (it was written after the last
    /// recovery checkpoint): validates every batch, truncates at the first bad one and rebuilds
    /// both indexes. Returns the segment and, if non-zero bytes followed the last valid batch (a
    /// torn write or corruption, as opposed to the zeroes of preallocation), where it was cut.
    pub fn recover(
        dir: &Path,
        base_offset: Offset,
        limits: SegmentLimits,
    ) -> io::Result<(Segment, Option<usize>)> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file_bytes = std::fs::metadata(&log_path)?.len() as usize;
        let mut seg = Segment::create(dir, base_offset, limits)?;
        if seg.log.capacity_bytes() < file_bytes {
            seg.log = Arc::new(MappedFile::open(&log_path, file_bytes)?);
        }
        seg.size_bytes = file_bytes;
        let valid = seg.rebuild(true)?;
        let after = seg.log.slice(
            valid,
            (file_bytes - valid).min(record_batch::BATCH_HEADER_BYTES),
        );
        let torn = after.iter().any(|b| *b != 0);
        if torn {
            seg.log.zero_tail(valid)?;
        }
        Ok((seg, torn.then_some(valid)))
    }

    /// Walks the batches from the start, rebuilding the indexes and the derived fields. With
    /// `validate`, checks every CRC and stops at the first bad batch. Returns the valid length.
    fn rebuild(&mut self, validate: bool) -> io::Result<usize> {
        self.offset_index.truncate_entries(0);
        self.time_index.truncate_entries(0);
        self.bytes_since_index_entry = 0;
        self.max_timestamp_ms = -1;
        self.next_offset = self.base_offset;
        let end = self.size_bytes;
        self.size_bytes = 0;
        let log = Arc::clone(&self.log);
        let data = log.slice(0, end);
        let iter = BatchIter::new(data);
        let mut valid_end = 0;
        for (position, batch) in iter {
            if (validate && batch.validate().is_err()) || batch.base_offset() != self.next_offset.0
            {
                break;
            }
            if self.would_overflow_index(&batch) {
                break;
            }
            self.size_bytes = position;
            self.index_batch(position, BatchIndexInfo::of(&batch))?;
            self.size_bytes = position + batch.total_bytes();
            valid_end = self.size_bytes;
        }
        self.size_bytes = valid_end;
        // Recovered bytes may live only in the page cache (a killed process): they count as
        // flushed only once synced (`Log::open` does), never because they were read back.
        self.flushed_bytes = self.flushed_bytes.min(valid_end);
        Ok(valid_end)
    }

    /// For a sealed segment with trusted indexes: scan from the last index entry to the end.
    fn scan_tail(&mut self) -> Result<(), String> {
        let start = self
            .offset_index
            .last()
            .map(|e| e.position as usize)
            .unwrap_or(0);
        let data = self.log.slice(start, self.size_bytes - start);
        let mut end = start;
        // Offsets are not covered by the CRC: check they chain from the last index entry.
        let mut expected = self.offset_index.last().map_or(self.base_offset.0, |e| {
            self.base_offset.0 + i64::from(e.relative_offset)
        });
        for (position, batch) in BatchIter::new(data) {
            let sane = batch.base_offset() == expected
                && batch.last_offset_delta() >= 0
                && batch.last_offset() - self.base_offset.0 <= i64::from(u32::MAX);
            if !sane {
                return Err(format!(
                    "batch at {} has base offset {}, expected {expected}",
                    start + position,
                    batch.base_offset()
                ));
            }
            expected = batch.last_offset() + 1;
            end = start + position + batch.total_bytes();
        }
        if end != self.size_bytes {
            return Err(format!("log ends in a partial batch at {end}"));
        }
        self.next_offset = Offset(expected);
        if let Some(last) = self.time_index.last() {
            self.max_timestamp_ms = last.timestamp_ms;
            self.batch_of_max_timestamp =
                Offset(self.base_offset.0 + i64::from(last.relative_offset));
        }
        Ok(())
    }

    fn would_overflow_index(&self, batch: &BatchHeader<'_>) -> bool {
        batch.last_offset() - self.base_offset.0 > i64::from(u32::MAX)
    }

    /// Updates indexes and derived fields for a batch now at `position` (already in the file).
    fn index_batch(&mut self, position: usize, batch: BatchIndexInfo) -> io::Result<()> {
        let relative = (batch.base_offset - self.base_offset.0) as u32;
        if batch.max_timestamp > self.max_timestamp_ms {
            self.max_timestamp_ms = batch.max_timestamp;
            self.batch_of_max_timestamp = Offset(batch.base_offset);
        }
        if self.offset_index.is_empty()
            || self.bytes_since_index_entry >= self.limits.index_interval_bytes
        {
            if !self.offset_index.is_full()
                && self
                    .offset_index
                    .last()
                    .is_none_or(|e| e.relative_offset < relative)
            {
                self.offset_index.append(OffsetEntry {
                    relative_offset: relative,
                    position: position as u32,
                })?;
            }
            self.maybe_append_time_entry()?;
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += batch.total_bytes;
        self.next_offset = Offset(batch.last_offset + 1);
        Ok(())
    }

    fn maybe_append_time_entry(&mut self) -> io::Result<()> {
        let newer = self
            .time_index
            .last()
            .is_none_or(|e| self.max_timestamp_ms > e.timestamp_ms);
        let relative = (self.batch_of_max_timestamp.0 - self.base_offset.0) as u32;
        let ordered = self
            .time_index
            .last()
            .is_none_or(|e| relative > e.relative_offset);
        if self.max_timestamp_ms >= 0 && newer && ordered && !self.time_index.is_full() {
            self.time_index.append(TimeEntry {
                timestamp_ms: self.max_timestamp_ms,
                relative_offset: relative,
            })?;
        }
        Ok(())
    }

    pub fn base_offset(&self) -> Offset {
        self.base_offset
    }
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }
    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms
    }
    pub fn first_append_ms(&self) -> Option<i64> {
        self.first_append_ms
    }
    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// Whether `bytes` more (holding offsets up to `last_offset`) would not fit this segment.
    pub fn is_full_for(&self, bytes: usize, last_offset: Offset) -> bool {
        self.size_bytes + bytes > self.log.capacity_bytes()
            || self.offset_index.is_full()
            || self.time_index.is_full()
            || last_offset.0 - self.base_offset.0 > i64::from(u32::MAX)
    }

    /// Writes a validated record set at the end, assigning offsets from `next_offset` and
    /// stamping `epoch` into each batch. Each batch's 61-byte header is copied and patched; the
    /// records go from the request buffer to the file untouched. The caller checked `is_full_for`.
    pub fn append(
        &mut self,
        records: &[u8],
        info: &RecordSetInfo,
        epoch: LeaderEpoch,
        now_ms: i64,
    ) -> io::Result<Offset> {
        if self.sealed {
            // A produce that raced a roll, a close or a delete: refused, never a panic.
            return Err(io::Error::other(format!(
                "segment {} is sealed",
                self.base_offset.0
            )));
        }
        let undo = (
            self.offset_index.len(),
            self.time_index.len(),
            self.next_offset,
            self.bytes_since_index_entry,
            self.max_timestamp_ms,
            self.batch_of_max_timestamp,
            self.first_append_ms,
        );
        let result = self.append_unchecked(records, info, epoch, now_ms);
        if result.is_err() {
            // Bytes past `size_bytes` are never read and are overwritten by the next append.
            self.offset_index.truncate_entries(undo.0);
            self.time_index.truncate_entries(undo.1);
            self.next_offset = undo.2;
            self.bytes_since_index_entry = undo.3;
            self.max_timestamp_ms = undo.4;
            self.batch_of_max_timestamp = undo.5;
            self.first_append_ms = undo.6;
        }
        result
    }

    fn append_unchecked(
        &mut self,
        records: &[u8],
        info: &RecordSetInfo,
        epoch: LeaderEpoch,
        now_ms: i64,
    ) -> io::Result<Offset> {
        // Disk for the index entries these batches may add (and the one sealing adds) first: a
        // full disk then fails the append before any byte of it is written.
        self.offset_index.reserve_entries(info.batches.len() + 1)?;
        self.time_index.reserve_entries(info.batches.len() + 1)?;
        self.first_append_ms.get_or_insert(now_ms);
        let start = self.size_bytes;
        let first_offset = self.next_offset;
        let mut headers = Vec::with_capacity(info.batches.len());
        let mut offset = first_offset.0;
        for span in &info.batches {
            let mut header = [0u8; BATCH_HEADER_BYTES];
            header.copy_from_slice(&records[span.position..span.position + BATCH_HEADER_BYTES]);
            record_batch::patch_batch(&mut header, offset, epoch.0);
            headers.push(header);
            offset += i64::from(span.record_count);
        }
        let mut iov = Vec::with_capacity(2 * headers.len());
        for (span, header) in info.batches.iter().zip(&headers) {
            iov.push(IoSlice::new(header));
            iov.push(IoSlice::new(
                &records[span.position + BATCH_HEADER_BYTES..span.position + span.size_bytes],
            ));
        }
        self.log.write_vectored_at(start, &iov)?;
        let mut base = first_offset.0;
        for span in &info.batches {
            let last_offset = base + i64::from(span.record_count) - 1;
            let batch = BatchIndexInfo {
                base_offset: base,
                last_offset,
                max_timestamp: span.max_timestamp,
                total_bytes: span.size_bytes,
            };
            self.index_batch(start + span.position, batch)?;
            base = last_offset + 1;
        }
        self.size_bytes = start + records.len();
        assert_eq!(self.next_offset.0, offset, "offsets assigned densely");
        Ok(first_offset)
    }

    /// Position of the first batch that holds `offset` or later, scanning from the index.
    fn position_of(&self, offset: Offset) -> Option<usize> {
        let relative = (offset.0 - self.base_offset.0).max(0);
        let start = self
            .offset_index
            .floor(relative)
            .map(|e| e.position as usize)
            .unwrap_or(0);
        let data = self.log.slice(start, self.size_bytes - start);
        BatchIter::new(data)
            .find(|(_, b)| b.last_offset() >= offset.0)
            .map(|(p, _)| start + p)
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (the first batch is returned
    /// even if larger, as KIP-74 asks) and only batches that end before `limit` (the high watermark).
    pub fn read(&self, offset: Offset, max_bytes: usize, limit: Offset) -> Option<SegmentRead> {
        let start = self.position_of(offset)?;
        let data = self.log.slice(start, self.size_bytes - start);
        let mut end = 0;
        let mut next_offset = offset;
        for (position, batch) in BatchIter::new(data) {
            if batch.last_offset() >= limit.0
                || (end > 0 && position + batch.total_bytes() > max_bytes)
            {
                break;
            }
            end = position + batch.total_bytes();
            next_offset = Offset(batch.last_offset() + 1);
        }
        (end > 0).then(|| SegmentRead {
            records: self.log.bytes(start, end),
            next_offset,
        })
    }

    /// The first batch that may hold a record at or after `from` with a timestamp `>= target_ms`
    /// (below `limit`): a zero-copy slice for [`first_record_at_or_after`], which decodes it
    /// outside the partition lock.
    pub fn batch_by_timestamp(&self, target_ms: i64, from: Offset, limit: Offset) -> Option<Bytes> {
        if self.max_timestamp_ms < target_ms {
            return None;
        }
        // Every record up to a time-index entry below the target is too old: start there.
        let mut start_offset = from;
        if let Some(e) = self.time_index.floor(target_ms - 1) {
            start_offset =
                start_offset.max(Offset(self.base_offset.0 + i64::from(e.relative_offset)));
        }
        let start = self.position_of(start_offset)?;
        let data = self.log.slice(start, self.size_bytes - start);
        for (position, batch) in BatchIter::new(data) {
            if batch.base_offset() >= limit.0 {
                return None;
            }
            if batch.max_timestamp() >= target_ms && batch.last_offset() >= from.0 {
                return Some(self.log.bytes(start + position, batch.total_bytes()));
            }
        }
        None
    }

    /// The batch holding the record with the largest timestamp (ListOffsets `MAX_TIMESTAMP`), for
    /// [`first_record_at_or_after`] outside the partition lock.
    pub fn max_timestamp_batch(&self) -> Option<Bytes> {
        if self.max_timestamp_ms < 0 {
            return None;
        }
        let start = self.position_of(self.batch_of_max_timestamp)?;
        let batch = BatchHeader::parse(self.log.slice(start, self.size_bytes - start)).ok()?;
        Some(self.log.bytes(start, batch.total_bytes()))
    }

    /// Byte ranges written but not yet flushed (and, for a rolled segment, the trim of its file
    /// that finishes the seal), for a flush outside the partition lock.
    pub fn unflushed(&self) -> Option<FlushTarget> {
        let seal = self.sealed && !self.trimmed;
        (self.flushed_bytes < self.size_bytes || seal).then(|| FlushTarget {
            base_offset: self.base_offset,
            file: Arc::clone(&self.log),
            from_bytes: self.flushed_bytes,
            to_bytes: self.size_bytes,
            seal,
            sync_dir: !self.names_synced,
        })
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Stops appends (a roll): the flush thread syncs and trims the files later, through
    /// [`Segment::unflushed`] and [`Segment::finish_seal`], so the roll never waits for a sync.
    pub fn stop_appends(&mut self) {
        self.sealed = true;
    }

    /// Finishes a seal whose `.log` the flush thread synced and trimmed: trims the indexes.
    pub fn finish_seal(&mut self) -> io::Result<()> {
        if self.trimmed || self.flushed_bytes < self.size_bytes {
            return Ok(());
        }
        self.trim_indexes()?;
        self.trimmed = true;
        Ok(())
    }

    /// Records a flush of this segment's target, which also synced the directory if the
    /// target said so.
    pub fn mark_flushed(&mut self, target: &FlushTarget) {
        self.names_synced |= target.sync_dir;
        self.flushed_bytes = self.flushed_bytes.max(target.to_bytes.min(self.size_bytes));
    }

    /// Seals a segment that stops taking appends: flush, trim the files to their content.
    pub fn seal(&mut self) -> io::Result<()> {
        self.sealed = true;
        if self.trimmed {
            return Ok(());
        }
        self.log
            .flush_range(self.flushed_bytes, self.size_bytes - self.flushed_bytes)?;
        self.log.trim(self.size_bytes)?;
        if !self.names_synced {
            sync_dir_of(&self.log)?;
            self.names_synced = true;
        }
        self.flushed_bytes = self.size_bytes;
        self.trim_indexes()?;
        self.trimmed = true;
        Ok(())
    }

    fn trim_indexes(&mut self) -> io::Result<()> {
        self.maybe_append_time_entry()?;
        self.offset_index.trim()?;
        self.time_index.trim()
    }

    /// The paths of this segment's three files.
    pub fn paths(&self) -> [PathBuf; 3] {
        let dir = self
            .log
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        ["log", "index", "timeindex"].map(|ext| dir.join(file_name(self.base_offset, ext)))
    }
}

/// What the indexes need to know of a batch.
#[derive(Debug, Clone, Copy)]
struct BatchIndexInfo {
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    total_bytes: usize,
}

impl BatchIndexInfo {
    fn of(b: &BatchHeader<'_>) -> Self {
        BatchIndexInfo {
            base_offset: b.base_offset(),
            last_offset: b.last_offset(),
            max_timestamp: b.max_timestamp(),
            total_bytes: b.total_bytes(),
        }
    }
}

/// Where a flush must reach: `[from_bytes, to_bytes)` of `file`, the `.log` of the segment at
/// `base_offset` (a flush marks that segment, whatever rolled meanwhile).
pub struct FlushTarget {
    pub base_offset: Offset,
    pub file: Arc<MappedFile>,
    pub from_bytes: usize,
    pub to_bytes: usize,
    /// The segment was rolled: after the sync, trim its file to `to_bytes` (its content).
    pub seal: bool,
    /// The segment's files were created by a roll and their names are not durable yet: sync
    /// the directory too.
    pub sync_dir: bool,
}

impl FlushTarget {
    pub fn flush(&self) -> io::Result<()> {
        self.file
            .flush_range(self.from_bytes, self.to_bytes - self.from_bytes)?;
        if self.seal {
            self.file.trim(self.to_bytes)?;
        }
        if self.sync_dir {
            sync_dir_of(&self.file)?;
        }
        Ok(())
    }
}

/// Syncs the directory holding `file` (and the segment's other files).
fn sync_dir_of(file: &MappedFile) -> io::Result<()> {
    super::sync_dir(file.path().parent().unwrap_or(Path::new(".")))
}

/// The first record of `batch` at or after `from` and below `limit` whose timestamp is
/// `>= target_ms`, as (offset, timestamp). Walks the records (decompressing streaming, within
/// `limits`) without building them; a batch that cannot be read, or decompresses past the limit,
/// yields `None`. Runs outside the partition lock: the caller took the slice under it.
pub fn first_record_at_or_after(
    batch: &[u8],
    target_ms: i64,
    from: Offset,
    limit: Offset,
    limits: &RecordLimits,
) -> Option<(Offset, i64)> {
    let header = BatchHeader::parse(batch).ok()?;
    let (base_offset, base_timestamp) = (header.base_offset(), header.base_timestamp());
    // Kafka: with LogAppendTime every record's timestamp is the batch's max timestamp.
    let log_append_time = header.is_log_append_time().then(|| header.max_timestamp());
    let mut found = None;
    record_batch::walk_records(&header, limits, |r| {
        let offset = base_offset.saturating_add(i64::from(r.offset_delta));
        let timestamp = log_append_time.unwrap_or(base_timestamp.wrapping_add(r.timestamp_delta));
        if offset >= limit.0 {
            return ControlFlow::Break(());
        }
        if offset >= from.0 && timestamp >= target_ms {
            found = Some((Offset(offset), timestamp));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })
    .ok()?;
    found
}
