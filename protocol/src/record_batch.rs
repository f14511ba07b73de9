//! Views over Kafka RecordBatch v2 ("magic 2") bytes, as a producer sends them and as the log
//! stores them. The broker never re-encodes records: it validates a batch, then patches the base
//! offset and the partition leader epoch in place.
//!
//! Layout (big-endian), from the Kafka protocol guide:
//! ```text
//!  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 | 17 crc u32
//! 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64
//! 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 | 57 recordCount i32 | 61 records
//! ```
//! Invariants checked by [`validate_batches`]: every batch is complete (`batchLength` covers
//! exactly the bytes that follow it), has magic 2, a CRC-32C over `attributes..end` that matches,
//! at least one record, and `lastOffsetDelta == recordCount - 1` (a producer's batch is dense).
//! The CRC does not cover `baseOffset` or `partitionLeaderEpoch`, so patching them keeps it valid.

use bytes::Bytes;

/// Bytes before `records` in a v2 batch.
pub const BATCH_HEADER_BYTES: usize = 61;
/// `baseOffset` + `batchLength`: the part of the header not counted in `batchLength`.
pub const BATCH_LOG_OVERHEAD_BYTES: usize = 12;

const OFFSET_BATCH_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
const OFFSET_MAGIC: usize = 16;
const OFFSET_CRC: usize = 17;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORD_COUNT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_LOG_APPEND: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// What is wrong with a batch. Each maps to `CORRUPT_MESSAGE` or `INVALID_RECORD` at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("truncated batch: {available_bytes} bytes left, header needs {BATCH_HEADER_BYTES}")]
    TruncatedHeader { available_bytes: usize },
    #[error("batch length {batch_length} does not fit the {available_bytes} bytes that follow")]
    BadLength {
        batch_length: i32,
        available_bytes: usize,
    },
    #[error("unsupported magic {0}: only RecordBatch v2 is accepted")]
    BadMagic(i8),
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("batch holds {record_count} records but lastOffsetDelta is {last_offset_delta}")]
    BadOffsetDelta {
        record_count: i32,
        last_offset_delta: i32,
    },
    #[error("empty record set")]
    Empty,
}

impl BatchError {
    /// Corruption (bytes changed in flight or on disk) as opposed to a batch that is well formed
    /// bytes but breaks a rule. Kafka answers the first with CORRUPT_MESSAGE.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            BatchError::BadCrc { .. }
                | BatchError::TruncatedHeader { .. }
                | BatchError::BadLength { .. }
        )
    }
}

/// Compression codec of a batch, from its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    Unknown(i16),
}

/// A read-only view of one batch's header fields. Holds the batch's bytes.
#[derive(Debug, Clone, Copy)]
pub struct BatchHeader<'a> {
    bytes: &'a [u8],
}

fn read_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn read_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn read_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl<'a> BatchHeader<'a> {
    /// Reads the header of the batch at the start of `bytes`, checking only that the header and
    /// the length it announces are present. Use [`validate_batches`] for the full checks.
    pub fn parse(bytes: &'a [u8]) -> Result<BatchHeader<'a>, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::TruncatedHeader {
                available_bytes: bytes.len(),
            });
        }
        let batch_length = read_i32(bytes, OFFSET_BATCH_LENGTH);
        let available = bytes.len() - BATCH_LOG_OVERHEAD_BYTES;
        if batch_length < (BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES) as i32
            || batch_length as usize > available
        {
            return Err(BatchError::BadLength {
                batch_length,
                available_bytes: available,
            });
        }
        let total = BATCH_LOG_OVERHEAD_BYTES + batch_length as usize;
        Ok(BatchHeader {
            bytes: &bytes[..total],
        })
    }

    /// The whole batch, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    pub fn total_bytes(&self) -> usize {
        self.bytes.len()
    }
    pub fn base_offset(&self) -> i64 {
        read_i64(self.bytes, 0)
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        read_i32(self.bytes, OFFSET_LEADER_EPOCH)
    }
    pub fn magic(&self) -> i8 {
        self.bytes[OFFSET_MAGIC] as i8
    }
    pub fn stored_crc(&self) -> u32 {
        read_i32(self.bytes, OFFSET_CRC) as u32
    }
    pub fn attributes(&self) -> i16 {
        read_i16(self.bytes, OFFSET_ATTRIBUTES)
    }
    pub fn compression(&self) -> Compression {
        match self.attributes() & ATTR_COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & ATTR_TIMESTAMP_LOG_APPEND != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        read_i32(self.bytes, OFFSET_LAST_OFFSET_DELTA)
    }
    /// Offset of the last record: `base_offset + last_offset_delta`. Saturates: neither field
    /// is covered by the CRC, so corrupt bytes can hold anything.
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .saturating_add(i64::from(self.last_offset_delta()))
    }
    pub fn base_timestamp(&self) -> i64 {
        read_i64(self.bytes, OFFSET_BASE_TIMESTAMP)
    }
    pub fn max_timestamp(&self) -> i64 {
        read_i64(self.bytes, OFFSET_MAX_TIMESTAMP)
    }
    pub fn producer_id(&self) -> i64 {
        read_i64(self.bytes, OFFSET_PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> i16 {
        read_i16(self.bytes, OFFSET_PRODUCER_EPOCH)
    }
    pub fn base_sequence(&self) -> i32 {
        read_i32(self.bytes, OFFSET_BASE_SEQUENCE)
    }
    pub fn record_count(&self) -> i32 {
        read_i32(self.bytes, OFFSET_RECORD_COUNT)
    }
    /// CRC-32C over `attributes..end`, as the batch's `crc` field should hold.
    pub fn computed_crc(&self) -> u32 {
        crc32c::crc32c(&self.bytes[OFFSET_ATTRIBUTES..])
    }

    /// Full validation of this one batch: magic, CRC, and record count against the offset delta.
    pub fn validate(&self) -> Result<(), BatchError> {
        if self.magic() != 2 {
            return Err(BatchError::BadMagic(self.magic()));
        }
        let (stored, computed) = (self.stored_crc(), self.computed_crc());
        if stored != computed {
            return Err(BatchError::BadCrc { stored, computed });
        }
        let (record_count, last_offset_delta) = (self.record_count(), self.last_offset_delta());
        if record_count < 1 || last_offset_delta != record_count - 1 {
            return Err(BatchError::BadOffsetDelta {
                record_count,
                last_offset_delta,
            });
        }
        Ok(())
    }
}

/// Summary of a validated record set, enough for the log to append it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSetInfo {
    pub batch_count: usize,
    pub record_count: i64,
    pub max_timestamp: i64,
    /// Offset (relative to the record set's start) and record count of each batch, in order.
    pub batches: Vec<BatchSpan>,
}

/// Where one batch sits inside a record set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpan {
    pub position: usize,
    pub size_bytes: usize,
    pub record_count: i32,
    pub max_timestamp: i64,
}

/// Validates every batch of a record set: each must be complete and pass [`BatchHeader::validate`],
/// and together they must cover the bytes exactly.
pub fn validate_batches(bytes: &[u8]) -> Result<RecordSetInfo, BatchError> {
    if bytes.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut info = RecordSetInfo {
        batch_count: 0,
        record_count: 0,
        max_timestamp: i64::MIN,
        batches: Vec::with_capacity(1),
    };
    let mut position = 0;
    while position < bytes.len() {
        let batch = BatchHeader::parse(&bytes[position..])?;
        batch.validate()?;
        info.batch_count += 1;
        info.record_count += i64::from(batch.record_count());
        info.max_timestamp = info.max_timestamp.max(batch.max_timestamp());
        info.batches.push(BatchSpan {
            position,
            size_bytes: batch.total_bytes(),
            record_count: batch.record_count(),
            max_timestamp: batch.max_timestamp(),
        });
        position += batch.total_bytes();
    }
    Ok(info)
}

/// Writes `base_offset` and `partition_leader_epoch` into the batch at the start of `batch`.
/// Neither field is covered by the CRC.
pub fn patch_batch(batch: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4]
        .copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// Rewrites the producer id, producer epoch and base sequence of the batch at the start of
/// `batch` and recomputes its CRC (which covers them): an idempotent producer re-stamps a
/// batch it already encoded when its epoch is bumped. `batch` must hold a whole v2 header.
pub fn stamp_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    if batch.len() < BATCH_HEADER_BYTES {
        return;
    }
    batch[OFFSET_PRODUCER_ID..OFFSET_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[OFFSET_PRODUCER_EPOCH..OFFSET_PRODUCER_EPOCH + 2]
        .copy_from_slice(&producer_epoch.to_be_bytes());
    batch[OFFSET_BASE_SEQUENCE..OFFSET_BASE_SEQUENCE + 4]
        .copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[OFFSET_ATTRIBUTES..]);
    batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates over the complete batches of a byte slice, stopping at the first incomplete or
/// malformed header (a fetch response may end in a partial batch; a log tail may be torn).
/// The sequence `records` records after `sequence` (Kafka's
/// `DefaultRecordBatch.incrementSequence`: sequences wrap from `i32::MAX` to 0).
pub fn next_sequence(sequence: i32, records: i32) -> i32 {
    if sequence > i32::MAX - records {
        records - (i32::MAX - sequence) - 1
    } else {
        sequence + records
    }
}

pub struct BatchIter<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> BatchIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BatchIter { bytes, position: 0 }
    }
    /// Position just after the last batch returned.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = (usize, BatchHeader<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        let batch = BatchHeader::parse(&self.bytes[self.position..]).ok()?;
        let at = self.position;
        self.position += batch.total_bytes();
        Some((at, batch))
    }
}

/// Builds uncompressed v2 batches of simple records; used by tests and benches that need
/// real bytes without a client. Each record is `(key, value)` with no headers.
pub fn build_batch(
    base_offset: i64,
    timestamp_ms: i64,
    records: &[(Option<&[u8]>, &[u8])],
) -> Bytes {
    let records: Vec<NullableRecord<'_>> = records.iter().map(|(k, v)| (*k, Some(*v))).collect();
    build_batch_nullable(base_offset, timestamp_ms, &records)
}

/// A record's key and value, either possibly null.
pub type NullableRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// [`build_batch`] with nullable values: a null value is a tombstone (the broker's internal
/// topics write them to delete a key). Producer id -1: no idempotence.
pub fn build_batch_nullable(
    base_offset: i64,
    timestamp_ms: i64,
    records: &[NullableRecord<'_>],
) -> Bytes {
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut rec = Vec::new();
        rec.push(0u8); // attributes
        put_varlong(&mut rec, 0); // timestamp delta
        put_varlong(&mut rec, i as i64); // offset delta
        match key {
            Some(k) => {
                put_varlong(&mut rec, k.len() as i64);
                rec.extend_from_slice(k);
            }
            None => put_varlong(&mut rec, -1),
        }
        match value {
            Some(v) => {
                put_varlong(&mut rec, v.len() as i64);
                rec.extend_from_slice(v);
            }
            None => put_varlong(&mut rec, -1),
        }
        put_varlong(&mut rec, 0); // header count
        put_varlong(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let count = records.len() as i32;
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    b.extend_from_slice(&base_offset.to_be_bytes());
    b.extend_from_slice(
        &((BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES + body.len()) as i32).to_be_bytes(),
    );
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&[0u8; 4]); // crc, filled below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[OFFSET_ATTRIBUTES..]);
    b[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// One record of an uncompressed batch, borrowed from the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Why a record inside a batch could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("compressed batch ({0:?}): records are not readable in place")]
    Compressed(Compression),
    #[error("record {index} is malformed: {reason}")]
    Malformed { index: usize, reason: &'static str },
}

/// The records of an uncompressed batch (`batch` is the whole batch, header included), parsed in
/// place without copying. Stops at the first malformed record with an error; never panics.
pub fn records(batch: &[u8]) -> Result<Vec<RecordView<'_>>, RecordError> {
    let header = BatchHeader::parse(batch).map_err(|_| RecordError::Malformed {
        index: 0,
        reason: "bad batch header",
    })?;
    if header.compression() != Compression::None {
        return Err(RecordError::Compressed(header.compression()));
    }
    let count = header.record_count().max(0) as usize;
    let end = header.total_bytes().min(batch.len());
    let mut at = BATCH_HEADER_BYTES;
    // A record is at least 7 bytes: do not trust the count for the allocation.
    let mut out = Vec::with_capacity(count.min((end.saturating_sub(at)) / 7 + 1));
    for index in 0..count {
        let bad = |reason| RecordError::Malformed { index, reason };
        let (len, n) = get_varlong(batch.get(at..end).unwrap_or(&[])).ok_or(bad("length"))?;
        at += n;
        let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
        let rec_end = at
            .checked_add(len)
            .filter(|e| *e <= end)
            .ok_or(bad("length past the batch"))?;
        let rec = &batch[at..rec_end];
        at = rec_end;
        let mut r = rec.get(1..).ok_or(bad("no attributes"))?; // attributes
        let mut next = || -> Option<i64> {
            let (v, n) = get_varlong(r)?;
            r = &r[n..];
            Some(v)
        };
        let _timestamp_delta = next().ok_or(bad("timestamp delta"))?;
        let offset_delta = next().ok_or(bad("offset delta"))?;
        let key_len = next().ok_or(bad("key length"))?;
        let key = take_nullable(&mut r, key_len).ok_or(bad("key"))?;
        let (value_len, n) = get_varlong(r).ok_or(bad("value length"))?;
        r = &r[n..];
        let value = take_nullable(&mut r, value_len).ok_or(bad("value"))?;
        out.push(RecordView {
            offset_delta: i32::try_from(offset_delta).map_err(|_| bad("offset delta"))?,
            key,
            value,
        });
    }
    Ok(out)
}

fn take_nullable<'a>(r: &mut &'a [u8], len: i64) -> Option<Option<&'a [u8]>> {
    if len < 0 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let bytes = r.get(..len)?;
    *r = &r[len..];
    Some(Some(bytes))
}

/// A zig-zag varlong and the bytes it took; `None` if truncated or longer than 10 bytes.
fn get_varlong(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut z: u64 = 0;
    for (i, b) in bytes.iter().take(10).enumerate() {
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((((z >> 1) as i64) ^ -((z & 1) as i64), i + 1));
        }
    }
    None
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_built_batch_validates_and_patching_keeps_its_crc() {
        let batch = build_batch(0, 1_700_000_000_000, &[(Some(b"k"), b"v1"), (None, b"v2")]);
        let info = validate_batches(&batch).unwrap();
        assert_eq!(info.batch_count, 1);
        assert_eq!(info.record_count, 2);
        let mut patched = batch.to_vec();
        patch_batch(&mut patched, 42, 7);
        let h = BatchHeader::parse(&patched).unwrap();
        h.validate().unwrap();
        assert_eq!(
            (h.base_offset(), h.partition_leader_epoch(), h.last_offset()),
            (42, 7, 43)
        );
    }

    #[test]
    fn last_offset_saturates_on_corrupt_offsets() {
        let mut batch = build_batch(0, 0, &[(None, b"a"), (None, b"b")]).to_vec();
        batch[0..8].copy_from_slice(&i64::MAX.to_be_bytes());
        assert_eq!(BatchHeader::parse(&batch).unwrap().last_offset(), i64::MAX);
    }

    #[test]
    fn stamping_the_producer_fields_keeps_the_batch_valid() {
        let mut b = build_batch(0, 1_000, &[(None, b"v".as_slice())]).to_vec();
        stamp_producer(&mut b, 42, 3, i32::MAX);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(
            (h.producer_id(), h.producer_epoch(), h.base_sequence()),
            (42, 3, i32::MAX)
        );
        assert!(h.validate().is_ok());
    }

    #[test]
    fn records_read_back_keys_values_and_tombstones() {
        let batch = build_batch_nullable(0, 0, &[(Some(b"k"), Some(b"v")), (Some(b"gone"), None)]);
        let recs = records(&batch).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            (recs[0].key, recs[0].value),
            (Some(&b"k"[..]), Some(&b"v"[..]))
        );
        assert_eq!((recs[1].offset_delta, recs[1].value), (1, None));
    }

    proptest! {
        #[test]
        fn records_never_panic_on_garbage(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut batch = build_batch(0, 0, &[(None, b"x")]).to_vec();
            batch.truncate(BATCH_HEADER_BYTES);
            batch.extend_from_slice(&tail);
            let len = (batch.len() - BATCH_LOG_OVERHEAD_BYTES) as i32;
            batch[8..12].copy_from_slice(&len.to_be_bytes());
            let _ = records(&batch);
        }
    }

    #[test]
    fn a_flipped_bit_is_a_crc_error() {
        let mut batch = build_batch(0, 0, &[(None, b"value")]).to_vec();
        let last = batch.len() - 2;
        batch[last] ^= 0x01;
        let err = validate_batches(&batch).unwrap_err();
        assert!(matches!(err, BatchError::BadCrc { .. }));
        assert!(err.is_corruption());
    }

    #[test]
    fn truncation_and_trailing_bytes_are_refused() {
        let batch = build_batch(0, 0, &[(None, b"value")]);
        assert!(matches!(
            validate_batches(&batch[..batch.len() - 1]),
            Err(BatchError::BadLength { .. })
        ));
        let mut two = batch.to_vec();
        two.extend_from_slice(&batch[..10]);
        assert!(matches!(
            validate_batches(&two),
            Err(BatchError::TruncatedHeader { .. })
        ));
        assert_eq!(validate_batches(&[]), Err(BatchError::Empty));
    }

    #[test]
    fn batches_from_kafka_protocol_encoder_validate() {
        use kafka_protocol::records::{
            Compression as C, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: -1,
                timestamp: 1000 + i,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(vec![b'x'; 50])),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        let opts = RecordEncodeOptions {
            version: 2,
            compression: C::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &opts).unwrap();
        let info = validate_batches(&buf).unwrap();
        assert_eq!((info.record_count, info.max_timestamp), (3, 1002));
    }

    proptest! {
        #[test]
        fn validation_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = validate_batches(&bytes);
            let _ = BatchIter::new(&bytes).count();
        }

        #[test]
        fn build_then_validate_round_trips(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..20), ts in 0i64..i64::MAX / 2) {
            let recs: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, v.as_slice())).collect();
            let batch = build_batch(0, ts, &recs);
            let info = validate_batches(&batch).unwrap();
            prop_assert_eq!(info.record_count, values.len() as i64);
            prop_assert_eq!(info.max_timestamp, ts);
        }

        #[test]
        fn any_single_byte_change_after_the_crc_is_detected(idx in 21usize..80, flip in 1u8..=255) {
            let batch = build_batch(0, 5, &[(Some(b"key"), b"some value bytes")]);
            let mut bad = batch.to_vec();
            let idx = idx.min(bad.len() - 1);
            bad[idx] ^= flip;
            prop_assert!(validate_batches(&bad).is_err());
        }
    }
}
