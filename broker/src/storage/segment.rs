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
//! - the active segment, and a sealed one until its trim, hold their files ([`Files::Held`]); a
//!   sealed and trimmed one keeps only its metadata and opens its files on demand, in a slot the
//!   broker-wide [`OpenSegments`] bound releases (`log.segment.open.max`). Reopened files must
//!   match what the segment remembers (log length, index entries), or the read fails cleanly;
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
use super::open_segments::{OpenSegments, SegmentSlot};
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

/// A segment's three open files.
pub struct SegmentFiles {
    log: Arc<MappedFile>,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
}

/// Where a segment's files are.
enum Files {
    /// Open for the segment's whole life so far: the active one, or sealed but not yet trimmed.
    Held(SegmentFiles),
    /// Sealed and trimmed: opened on demand into `slot`, which `open` may empty at any time.
    Lazy {
        slot: Arc<SegmentSlot>,
        open: Arc<OpenSegments>,
        /// What the files held when they were released: a reopen checks it finds the same.
        offset_entries: usize,
        time_entries: usize,
    },
}

/// A segment's files for one operation: borrowed if held, or an `Arc` that keeps them open while
/// the operation runs even if the bound releases them meanwhile.
enum FilesRef<'a> {
    Held(&'a SegmentFiles),
    Opened(Arc<SegmentFiles>),
}

impl std::ops::Deref for FilesRef<'_> {
    type Target = SegmentFiles;
    fn deref(&self) -> &SegmentFiles {
        match self {
            FilesRef::Held(f) => f,
            FilesRef::Opened(f) => f,
        }
    }
}

pub struct Segment {
    dir: PathBuf,
    base_offset: Offset,
    files: Files,
    /// The bound this segment's files join once it is sealed and trimmed.
    open: Arc<OpenSegments>,
    size_bytes: usize,
    flushed_bytes: usize,
    next_offset: Offset,
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
    /// Creates an empty segment at `base_offset`, its files' names durable; once sealed and
    /// trimmed, its files join `open`.
    pub fn create(
        dir: &Path,
        base_offset: Offset,
        limits: SegmentLimits,
        open: &Arc<OpenSegments>,
    ) -> io::Result<Segment> {
        let mut seg = Segment::create_unsynced(dir, base_offset, limits, open)?;
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
        open: &Arc<OpenSegments>,
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
        let files = SegmentFiles {
            log: Arc::new(log),
            offset_index,
            time_index,
        };
        Ok(Segment::new(dir, base_offset, files, limits, open))
    }

    fn new(
        dir: &Path,
        base_offset: Offset,
        files: SegmentFiles,
        limits: SegmentLimits,
        open: &Arc<OpenSegments>,
    ) -> Segment {
        Segment {
            dir: dir.to_path_buf(),
            base_offset,
            files: Files::Held(files),
            open: Arc::clone(open),
            size_bytes: 0,
            flushed_bytes: 0,
            next_offset: base_offset,
            bytes_since_index_entry: 0,
            max_timestamp_ms: -1,
            batch_of_max_timestamp: base_offset,
            first_append_ms: None,
            sealed: false,
            trimmed: false,
            names_synced: false,
            limits,
        }
    }

    /// Opens a segment that was sealed (or cleanly closed): its files hold exactly their content.
    /// The indexes are checked and rebuilt from the log if they break an invariant; if the log
    /// itself breaks one (offsets that do not chain), it is cut there and the position returned.
    /// The files are then handed to the open-segment bound, which may close them at once.
    pub fn open_sealed(
        dir: &Path,
        base_offset: Offset,
        limits: SegmentLimits,
        open: &Arc<OpenSegments>,
    ) -> io::Result<(Segment, Option<usize>)> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let size_bytes = std::fs::metadata(&log_path)?.len() as usize;
        let files = SegmentFiles {
            log: Arc::new(MappedFile::open(&log_path, size_bytes)?),
            offset_index: OffsetIndex::open_sealed(&dir.join(file_name(base_offset, "index")))?,
            time_index: TimeIndex::open_sealed(&dir.join(file_name(base_offset, "timeindex")))?,
        };
        let indexes_ok = files.offset_index.check(size_bytes as i64).is_ok()
            && files.time_index.check(i64::from(u32::MAX)).is_ok();
        // The tail after the last index entry is scanned to find the end; cheap (headers only).
        let tail = if indexes_ok {
            scan_tail(&files, base_offset, size_bytes).ok()
        } else {
            None
        };
        let mut seg = Segment::new(dir, base_offset, files, limits, open);
        seg.size_bytes = size_bytes;
        seg.flushed_bytes = size_bytes;
        seg.sealed = true;
        seg.trimmed = true;
        seg.names_synced = true;
        let mut cut = None;
        match tail {
            Some(tail) => {
                seg.next_offset = tail.next_offset;
                if let Some((max_timestamp_ms, batch)) = tail.max_timestamp {
                    seg.max_timestamp_ms = max_timestamp_ms;
                    seg.batch_of_max_timestamp = batch;
                }
            }
            None => {
                tracing::warn!(segment = %log_path.display(), "index damaged; rebuilding it from the log");
                // Room to rebuild in; trimmed again below.
                let files = seg.held_mut()?;
                files.offset_index = OffsetIndex::open(
                    &dir.join(file_name(base_offset, "index")),
                    limits.index_bytes,
                    0,
                )?;
                files.time_index = TimeIndex::open(
                    &dir.join(file_name(base_offset, "timeindex")),
                    limits.index_bytes,
                    0,
                )?;
                let valid = seg.rebuild(false)?;
                seg.trim_indexes()?;
                if valid < size_bytes {
                    // Zeroes after the last batch are a seal whose trim did not happen (rolled,
                    // synced, then a crash), not corruption: nothing later is cut for them.
                    let log = Arc::clone(&seg.held()?.log);
                    let after = log.slice(
                        valid,
                        (size_bytes - valid).min(record_batch::BATCH_HEADER_BYTES),
                    );
                    let torn = after.iter().any(|b| *b != 0);
                    log.trim(valid)?;
                    cut = torn.then_some(valid);
                }
            }
        }
        seg.release_files();
        Ok((seg, cut))
    }

    /// Opens a segment that may hold a torn or corrupt tail (it was written after the last
    /// recovery checkpoint): validates every batch, truncates at the first bad one and rebuilds
    /// both indexes. Returns the segment and, if non-zero bytes followed the last valid batch (a
    /// torn write or corruption, as opposed to the zeroes of preallocation), where it was cut.
    pub fn recover(
        dir: &Path,
        base_offset: Offset,
        limits: SegmentLimits,
        open: &Arc<OpenSegments>,
    ) -> io::Result<(Segment, Option<usize>)> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file_bytes = std::fs::metadata(&log_path)?.len() as usize;
        let mut seg = Segment::create(dir, base_offset, limits, open)?;
        if seg.held()?.log.capacity_bytes() < file_bytes {
            seg.held_mut()?.log = Arc::new(MappedFile::open(&log_path, file_bytes)?);
        }
        seg.size_bytes = file_bytes;
        let valid = seg.rebuild(true)?;
        let log = Arc::clone(&seg.held()?.log);
        let after = log.slice(
            valid,
            (file_bytes - valid).min(record_batch::BATCH_HEADER_BYTES),
        );
        let torn = after.iter().any(|b| *b != 0);
        if torn {
            log.zero_tail(valid)?;
        }
        Ok((seg, torn.then_some(valid)))
    }

    /// The files of a segment that holds them (active, or sealed but not yet trimmed).
    fn held(&self) -> io::Result<&SegmentFiles> {
        match &self.files {
            Files::Held(files) => Ok(files),
            Files::Lazy { .. } => Err(not_held(self.base_offset)),
        }
    }

    fn held_mut(&mut self) -> io::Result<&mut SegmentFiles> {
        match &mut self.files {
            Files::Held(files) => Ok(files),
            Files::Lazy { .. } => Err(not_held(self.base_offset)),
        }
    }

    /// The files for one read, opened (and checked against what this segment remembers) if the
    /// bound released them.
    fn files(&self) -> io::Result<FilesRef<'_>> {
        let Files::Lazy {
            slot,
            open,
            offset_entries,
            time_entries,
        } = &self.files
        else {
            return self.held().map(FilesRef::Held);
        };
        if let Some(files) = open.get(slot) {
            return Ok(FilesRef::Opened(files));
        }
        let path = |ext| self.dir.join(file_name(self.base_offset, ext));
        let files = SegmentFiles {
            log: Arc::new(MappedFile::open_existing(&path("log"), self.size_bytes)?),
            offset_index: OffsetIndex::open_existing(&path("index"), *offset_entries)?,
            time_index: TimeIndex::open_existing(&path("timeindex"), *time_entries)?,
        };
        Ok(FilesRef::Opened(open.insert(slot, Arc::new(files))))
    }

    /// Hands the files of a sealed, trimmed segment to the open-segment bound: they stay open
    /// while recently used, and are reopened on demand after that.
    fn release_files(&mut self) {
        if !(self.sealed && self.trimmed) {
            return;
        }
        let Files::Held(files) = &self.files else {
            return;
        };
        let (offset_entries, time_entries) = (files.offset_index.len(), files.time_index.len());
        let lazy = Files::Lazy {
            slot: Arc::default(),
            open: Arc::clone(&self.open),
            offset_entries,
            time_entries,
        };
        if let (Files::Held(files), Files::Lazy { slot, open, .. }) =
            (std::mem::replace(&mut self.files, lazy), &self.files)
        {
            open.insert(slot, Arc::new(files));
        }
    }

    /// Walks the batches from the start, rebuilding the indexes and the derived fields. With
    /// `validate`, checks every CRC and stops at the first bad batch. Returns the valid length.
    fn rebuild(&mut self, validate: bool) -> io::Result<usize> {
        let files = self.held_mut()?;
        files.offset_index.truncate_entries(0);
        files.time_index.truncate_entries(0);
        let log = Arc::clone(&files.log);
        self.bytes_since_index_entry = 0;
        self.max_timestamp_ms = -1;
        self.next_offset = self.base_offset;
        let end = self.size_bytes;
        self.size_bytes = 0;
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
        if self.offset_index_is_empty()?
            || self.bytes_since_index_entry >= self.limits.index_interval_bytes
        {
            let offset_index = &mut self.held_mut()?.offset_index;
            if !offset_index.is_full()
                && offset_index
                    .last()
                    .is_none_or(|e| e.relative_offset < relative)
            {
                offset_index.append(OffsetEntry {
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

    fn offset_index_is_empty(&self) -> io::Result<bool> {
        Ok(self.held()?.offset_index.is_empty())
    }

    fn maybe_append_time_entry(&mut self) -> io::Result<()> {
        let max_timestamp_ms = self.max_timestamp_ms;
        let relative = (self.batch_of_max_timestamp.0 - self.base_offset.0) as u32;
        let time_index = &mut self.held_mut()?.time_index;
        let newer = time_index
            .last()
            .is_none_or(|e| max_timestamp_ms > e.timestamp_ms);
        let ordered = time_index
            .last()
            .is_none_or(|e| relative > e.relative_offset);
        if max_timestamp_ms >= 0 && newer && ordered && !time_index.is_full() {
            time_index.append(TimeEntry {
                timestamp_ms: max_timestamp_ms,
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

    /// Whether `bytes` more (holding offsets up to `last_offset`) would not fit this segment (a
    /// segment without its files, sealed, takes nothing).
    pub fn is_full_for(&self, bytes: usize, last_offset: Offset) -> bool {
        let Ok(files) = self.held() else {
            return true;
        };
        self.size_bytes + bytes > files.log.capacity_bytes()
            || files.offset_index.is_full()
            || files.time_index.is_full()
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
        self.append_with(records, info, Some(epoch), now_ms)
    }

    /// Writes a validated record set at the end exactly as it is (a follower copying its
    /// leader's batches): offsets, leader epochs and timestamps are kept. The batches must
    /// continue this segment densely (first base offset `next_offset`), else nothing is written.
    pub fn append_verbatim(
        &mut self,
        records: &[u8],
        info: &RecordSetInfo,
        now_ms: i64,
    ) -> io::Result<Offset> {
        let mut expected = self.next_offset.0;
        for span in &info.batches {
            let header = BatchHeader::parse(&records[span.position..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if header.base_offset() != expected || header.last_offset_delta() < 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "batch at offset {} does not continue segment {} at {expected}",
                        header.base_offset(),
                        self.base_offset.0
                    ),
                ));
            }
            expected = header.last_offset() + 1;
        }
        self.append_with(records, info, None, now_ms)
    }

    /// [`Segment::append`] (`Some(epoch)`: offsets assigned and the epoch stamped) or
    /// [`Segment::append_verbatim`] (`None`).
    fn append_with(
        &mut self,
        records: &[u8],
        info: &RecordSetInfo,
        epoch: Option<LeaderEpoch>,
        now_ms: i64,
    ) -> io::Result<Offset> {
        if self.sealed {
            // A produce that raced a roll, a close or a delete: refused, never a panic.
            return Err(io::Error::other(format!(
                "segment {} is sealed",
                self.base_offset.0
            )));
        }
        let files = self.held()?;
        let undo = (
            files.offset_index.len(),
            files.time_index.len(),
            self.next_offset,
            self.bytes_since_index_entry,
            self.max_timestamp_ms,
            self.batch_of_max_timestamp,
            self.first_append_ms,
        );
        let result = match epoch {
            Some(epoch) => self.append_unchecked(records, info, epoch, now_ms),
            None => self.append_verbatim_unchecked(records, info, now_ms),
        };
        if result.is_err() {
            // Bytes past `size_bytes` are never read and are overwritten by the next append.
            if let Ok(files) = self.held_mut() {
                files.offset_index.truncate_entries(undo.0);
                files.time_index.truncate_entries(undo.1);
            }
            self.next_offset = undo.2;
            self.bytes_since_index_entry = undo.3;
            self.max_timestamp_ms = undo.4;
            self.batch_of_max_timestamp = undo.5;
            self.first_append_ms = undo.6;
        }
        result
    }

    /// What every append does before it writes: disk for the index entries these batches may
    /// add (and the one sealing adds) is reserved first, so a full disk fails the append before
    /// any byte of it is written. Returns the log file, where the bytes go and their first offset.
    fn begin_append(
        &mut self,
        info: &RecordSetInfo,
        now_ms: i64,
    ) -> io::Result<(Arc<MappedFile>, usize, Offset)> {
        let files = self.held()?;
        files.offset_index.reserve_entries(info.batches.len() + 1)?;
        files.time_index.reserve_entries(info.batches.len() + 1)?;
        let log = Arc::clone(&files.log);
        self.first_append_ms.get_or_insert(now_ms);
        Ok((log, self.size_bytes, self.next_offset))
    }

    fn append_unchecked(
        &mut self,
        records: &[u8],
        info: &RecordSetInfo,
        epoch: LeaderEpoch,
        now_ms: i64,
    ) -> io::Result<Offset> {
        let (log, start, first_offset) = self.begin_append(info, now_ms)?;
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
        log.write_vectored_at(start, &iov)?;
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

    /// [`Segment::append_verbatim`] after its checks: the bytes go to the file in one write,
    /// and each batch is indexed at the offsets its header carries.
    fn append_verbatim_unchecked(
        &mut self,
        records: &[u8],
        info: &RecordSetInfo,
        now_ms: i64,
    ) -> io::Result<Offset> {
        let (log, start, first_offset) = self.begin_append(info, now_ms)?;
        log.write_vectored_at(start, &[IoSlice::new(records)])?;
        for span in &info.batches {
            let header = BatchHeader::parse(&records[span.position..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.index_batch(start + span.position, BatchIndexInfo::of(&header))?;
        }
        self.size_bytes = start + records.len();
        Ok(first_offset)
    }

    /// The byte position of the batch whose base offset is `offset` (0 for the segment's base
    /// offset): where a truncation to `offset` cuts. `None` if no batch starts there.
    pub fn batch_position(&self, offset: Offset) -> io::Result<Option<usize>> {
        if offset == self.base_offset {
            return Ok(Some(0));
        }
        if offset >= self.next_offset {
            return Ok((offset == self.next_offset).then_some(self.size_bytes));
        }
        let files = self.files()?;
        let Some(position) = self.position_of(&files, offset) else {
            return Ok(None);
        };
        let header = BatchHeader::parse(files.log.slice(position, self.size_bytes - position));
        Ok(header
            .is_ok_and(|h| h.base_offset() == offset.0)
            .then_some(position))
    }

    /// Zeroes this segment's `.log` from `position` and syncs it (a truncation): a later
    /// recovery of the file finds its batches end there. The file keeps its length, so a
    /// reader still holding a slice of the cut bytes sees zeroes, never a fault.
    pub fn zero_from(&self, position: usize) -> io::Result<()> {
        // `zero_tail` syncs the file.
        self.files()?.log.zero_tail(position)
    }

    /// Position of the first batch that holds `offset` or later, scanning from the index.
    fn position_of(&self, files: &SegmentFiles, offset: Offset) -> Option<usize> {
        let relative = (offset.0 - self.base_offset.0).max(0);
        let start = files
            .offset_index
            .floor(relative)
            .map(|e| e.position as usize)
            .unwrap_or(0)
            // Checked when opened; a reopened index only by its length.
            .min(self.size_bytes);
        let data = files.log.slice(start, self.size_bytes - start);
        BatchIter::new(data)
            .find(|(_, b)| b.last_offset() >= offset.0)
            .map(|(p, _)| start + p)
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (the first batch is returned
    /// even if larger, as KIP-74 asks) and only batches that end before `limit` (the high watermark).
    /// Fails only if the files of a released segment cannot be opened again.
    pub fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        limit: Offset,
    ) -> io::Result<Option<SegmentRead>> {
        let files = self.files()?;
        let Some(start) = self.position_of(&files, offset) else {
            return Ok(None);
        };
        let data = files.log.slice(start, self.size_bytes - start);
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
        Ok((end > 0).then(|| SegmentRead {
            records: files.log.bytes(start, end),
            next_offset,
        }))
    }

    /// The first batch that may hold a record at or after `from` with a timestamp `>= target_ms`
    /// (below `limit`): a zero-copy slice for [`first_record_at_or_after`], which decodes it
    /// outside the partition lock.
    pub fn batch_by_timestamp(
        &self,
        target_ms: i64,
        from: Offset,
        limit: Offset,
    ) -> io::Result<Option<Bytes>> {
        if self.max_timestamp_ms < target_ms || self.next_offset <= from {
            return Ok(None);
        }
        let files = self.files()?;
        // Every record up to a time-index entry below the target is too old: start there.
        let mut start_offset = from;
        if let Some(e) = files.time_index.floor(target_ms - 1) {
            start_offset =
                start_offset.max(Offset(self.base_offset.0 + i64::from(e.relative_offset)));
        }
        let Some(start) = self.position_of(&files, start_offset) else {
            return Ok(None);
        };
        let data = files.log.slice(start, self.size_bytes - start);
        for (position, batch) in BatchIter::new(data) {
            if batch.base_offset() >= limit.0 {
                return Ok(None);
            }
            if batch.max_timestamp() >= target_ms && batch.last_offset() >= from.0 {
                return Ok(Some(files.log.bytes(start + position, batch.total_bytes())));
            }
        }
        Ok(None)
    }

    /// The batch holding the record with the largest timestamp (ListOffsets `MAX_TIMESTAMP`), for
    /// [`first_record_at_or_after`] outside the partition lock.
    pub fn max_timestamp_batch(&self) -> io::Result<Option<Bytes>> {
        if self.max_timestamp_ms < 0 {
            return Ok(None);
        }
        let files = self.files()?;
        let Some(start) = self.position_of(&files, self.batch_of_max_timestamp) else {
            return Ok(None);
        };
        let Ok(batch) = BatchHeader::parse(files.log.slice(start, self.size_bytes - start)) else {
            return Ok(None);
        };
        Ok(Some(files.log.bytes(start, batch.total_bytes())))
    }

    /// Byte ranges written but not yet flushed (and, for a rolled segment, the trim of its file
    /// that finishes the seal), for a flush outside the partition lock.
    pub fn unflushed(&self) -> Option<FlushTarget> {
        let seal = self.sealed && !self.trimmed;
        let log = &self.held().ok()?.log;
        (self.flushed_bytes < self.size_bytes || seal).then(|| FlushTarget {
            base_offset: self.base_offset,
            file: Arc::clone(log),
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
        self.release_files();
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
        let log = &self.held()?.log;
        log.flush_range(self.flushed_bytes, self.size_bytes - self.flushed_bytes)?;
        log.trim(self.size_bytes)?;
        if !self.names_synced {
            super::sync_dir(&self.dir)?;
            self.names_synced = true;
        }
        self.flushed_bytes = self.size_bytes;
        self.trim_indexes()?;
        self.trimmed = true;
        self.release_files();
        Ok(())
    }

    fn trim_indexes(&mut self) -> io::Result<()> {
        self.maybe_append_time_entry()?;
        let files = self.held()?;
        files.offset_index.trim()?;
        files.time_index.trim()
    }

    /// The paths of this segment's three files.
    pub fn paths(&self) -> [PathBuf; 3] {
        ["log", "index", "timeindex"].map(|ext| self.dir.join(file_name(self.base_offset, ext)))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Files::Lazy { slot, open, .. } = &self.files {
            open.release(slot);
        }
    }
}

fn not_held(base_offset: Offset) -> io::Error {
    io::Error::other(format!(
        "segment {} is sealed and its files were released",
        base_offset.0
    ))
}

/// What scanning a sealed segment's tail found.
struct Tail {
    next_offset: Offset,
    /// The time index's last entry: the largest timestamp and its batch.
    max_timestamp: Option<(i64, Offset)>,
}

/// For a sealed segment with trusted indexes: scan from the last index entry to the end.
fn scan_tail(files: &SegmentFiles, base_offset: Offset, size_bytes: usize) -> Result<Tail, String> {
    let start = files
        .offset_index
        .last()
        .map(|e| e.position as usize)
        .unwrap_or(0);
    let data = files.log.slice(start, size_bytes - start);
    let mut end = start;
    // Offsets are not covered by the CRC: check they chain from the last index entry.
    let mut expected = files.offset_index.last().map_or(base_offset.0, |e| {
        base_offset.0 + i64::from(e.relative_offset)
    });
    for (position, batch) in BatchIter::new(data) {
        let sane = batch.base_offset() == expected
            && batch.last_offset_delta() >= 0
            && batch.last_offset() - base_offset.0 <= i64::from(u32::MAX);
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
    if end != size_bytes {
        return Err(format!("log ends in a partial batch at {end}"));
    }
    Ok(Tail {
        next_offset: Offset(expected),
        max_timestamp: files.time_index.last().map(|last| {
            (
                last.timestamp_ms,
                Offset(base_offset.0 + i64::from(last.relative_offset)),
            )
        }),
    })
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
            let dir = self.file.path().parent().unwrap_or(Path::new("."));
            super::sync_dir(dir)?;
        }
        Ok(())
    }
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
