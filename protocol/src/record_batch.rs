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
//!
//! The header's counts are not trusted (a 70-byte batch with a valid CRC could claim 2^31 - 1
//! records and move the log end by that much): [`validate_batches`] also walks the records, as
//! Kafka's `LogValidator` does. Exactly `recordCount` records fill the batch; each record's fields
//! end exactly at its length; offset deltas run 0, 1, 2, ... A compressed batch is decompressed
//! streaming into a small buffer (no whole-batch buffer, no record objects), and at most
//! [`RecordLimits::decompressed_bytes_max`] bytes of it, so a decompression bomb costs bounded
//! CPU and memory. The same walk ([`walk_records`]) serves every other read of records by the
//! broker (ListOffsets by timestamp).

use std::io::Read;
use std::ops::ControlFlow;

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
    /// The records do not match what the header claims (count, lengths, offset deltas).
    #[error("record {index} of the batch: {reason}")]
    BadRecord { index: i32, reason: &'static str },
    /// The records decompress past the limit: a decompression bomb, or a batch far larger than
    /// any the broker accepts.
    #[error("records decompress past {limit_bytes} bytes")]
    DecompressedTooLarge { limit_bytes: usize },
    /// The compressed records cannot be decompressed (or the codec is unknown).
    #[error("compressed records cannot be read: {0}")]
    BadCompression(String),
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

/// Validates every batch of a record set with the default [`RecordLimits`]; see
/// [`validate_batches_with`].
pub fn validate_batches(bytes: &[u8]) -> Result<RecordSetInfo, BatchError> {
    validate_batches_with(bytes, &RecordLimits::DEFAULT)
}

/// Validates every batch of a record set: each must be complete, pass [`BatchHeader::validate`]
/// and hold exactly the records its header claims ([`walk_records`] within `limits`), and
/// together they must cover the bytes exactly.
pub fn validate_batches_with(
    bytes: &[u8],
    limits: &RecordLimits,
) -> Result<RecordSetInfo, BatchError> {
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
        walk_records(&batch, limits, |_| ControlFlow::Continue(()))?;
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

/// Bounds on the work of reading a batch's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// Bytes the records of one compressed batch may decompress to. Past it the batch is refused
    /// (`DecompressedTooLarge`) after at most this much work.
    pub decompressed_bytes_max: usize,
}

/// How many times its stored size a batch may decompress to (see [`RecordLimits::for_batch_bytes`]).
pub const DECOMPRESSION_RATIO_MAX: usize = 64;

/// zstd window the decoder accepts (2^24 = 16 MiB; producers use far less, a bomb could ask for
/// 2 GiB). The window is memory the decoder allocates, so it is bounded apart from the output.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Decompressed bytes held at once while walking a compressed batch.
const WALK_BUFFER_BYTES: usize = 16 << 10;

impl RecordLimits {
    /// 64 MiB: the limit for callers that know no batch size limit.
    pub const DEFAULT: RecordLimits = RecordLimits {
        decompressed_bytes_max: 64 << 20,
    };

    /// The limit for a broker that accepts batches of up to `batch_bytes_max` stored bytes
    /// (`message.max.bytes`): [`DECOMPRESSION_RATIO_MAX`] times that, and never below
    /// [`RecordLimits::DEFAULT`] (highly compressible batches of a small limit still pass).
    pub fn for_batch_bytes(batch_bytes_max: usize) -> RecordLimits {
        RecordLimits {
            decompressed_bytes_max: batch_bytes_max
                .saturating_mul(DECOMPRESSION_RATIO_MAX)
                .max(RecordLimits::DEFAULT.decompressed_bytes_max),
        }
    }
}

/// What the walk reports of one record (its key, value and headers are skipped, never copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
}

/// Walks the records of `batch` (decompressing them streaming if needed) and checks that exactly
/// `recordCount` records fill it, each well formed, with offset deltas 0, 1, 2, ... `visit` sees
/// each record in order and may stop the walk early (`Break`), which returns `Ok` without checking
/// the rest. Does not check the CRC: [`BatchHeader::validate`] does.
pub fn walk_records(
    batch: &BatchHeader<'_>,
    limits: &RecordLimits,
    visit: impl FnMut(RecordMeta) -> ControlFlow<()>,
) -> Result<(), BatchError> {
    let count = batch.record_count();
    let body = &batch.bytes()[BATCH_HEADER_BYTES..];
    let bad_codec = |e: std::io::Error| BatchError::BadCompression(e.to_string());
    match batch.compression() {
        Compression::None => walk_slice(body, count, visit),
        Compression::Gzip => walk(
            &mut StreamInput::new(flate2::read::GzDecoder::new(body), limits),
            count,
            visit,
        ),
        Compression::Snappy => walk(
            &mut StreamInput::new(SnappyReader::new(body, limits), limits),
            count,
            visit,
        ),
        Compression::Lz4 => {
            let reader = lz4::Decoder::new(body).map_err(bad_codec)?;
            walk(&mut StreamInput::new(reader, limits), count, visit)
        }
        Compression::Zstd => {
            let mut reader = zstd::stream::read::Decoder::with_buffer(body).map_err(bad_codec)?;
            reader
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(bad_codec)?;
            walk(&mut StreamInput::new(reader, limits), count, visit)
        }
        Compression::Unknown(codec) => Err(BatchError::BadCompression(format!(
            "unknown compression codec {codec}"
        ))),
    }
}

/// Why the walk's input could not give a byte: it ended, or it failed (decompression).
enum InputError {
    End,
    Failed(BatchError),
}

/// The bytes of a batch's records, in place or as they decompress.
trait Input {
    fn byte(&mut self) -> Result<u8, InputError>;
    fn skip(&mut self, n: usize) -> Result<(), InputError>;
    fn at_end(&mut self) -> Result<bool, BatchError>;
}

/// The generic walk over a slice: tests check `walk_slice` against it.
#[cfg(test)]
struct SliceInput<'a> {
    bytes: &'a [u8],
    at: usize,
}

#[cfg(test)]
impl Input for SliceInput<'_> {
    #[inline]
    fn byte(&mut self) -> Result<u8, InputError> {
        let b = *self.bytes.get(self.at).ok_or(InputError::End)?;
        self.at += 1;
        Ok(b)
    }
    #[inline]
    fn skip(&mut self, n: usize) -> Result<(), InputError> {
        if n > self.bytes.len() - self.at {
            return Err(InputError::End);
        }
        self.at += n;
        Ok(())
    }
    fn at_end(&mut self) -> Result<bool, BatchError> {
        Ok(self.at == self.bytes.len())
    }
}

/// Decompressed bytes through a small buffer, failing once more than the limit came out.
struct StreamInput<R> {
    reader: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    total_bytes: usize,
    limit_bytes: usize,
}

impl<R: Read> StreamInput<R> {
    fn new(reader: R, limits: &RecordLimits) -> Self {
        StreamInput {
            reader,
            buf: vec![0; WALK_BUFFER_BYTES],
            pos: 0,
            end: 0,
            total_bytes: 0,
            limit_bytes: limits.decompressed_bytes_max,
        }
    }

    /// Refills an empty buffer; `Ok(false)` at the end of the stream.
    fn fill(&mut self) -> Result<bool, BatchError> {
        let n = loop {
            match self.reader.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.get_ref().is_some_and(|inner| inner.is::<TooLarge>()) {
                        return Err(BatchError::DecompressedTooLarge {
                            limit_bytes: self.limit_bytes,
                        });
                    }
                    return Err(BatchError::BadCompression(e.to_string()));
                }
            }
        };
        self.total_bytes = self.total_bytes.saturating_add(n);
        if self.total_bytes > self.limit_bytes {
            return Err(BatchError::DecompressedTooLarge {
                limit_bytes: self.limit_bytes,
            });
        }
        self.pos = 0;
        self.end = n;
        Ok(n > 0)
    }
}

impl<R: Read> Input for StreamInput<R> {
    fn byte(&mut self) -> Result<u8, InputError> {
        if self.pos == self.end && !self.fill().map_err(InputError::Failed)? {
            return Err(InputError::End);
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }
    fn skip(&mut self, mut n: usize) -> Result<(), InputError> {
        loop {
            let here = n.min(self.end - self.pos);
            self.pos += here;
            n -= here;
            if n == 0 {
                return Ok(());
            }
            if !self.fill().map_err(InputError::Failed)? {
                return Err(InputError::End);
            }
        }
    }
    fn at_end(&mut self) -> Result<bool, BatchError> {
        Ok(self.pos == self.end && !self.fill()?)
    }
}

/// The io error a decompressor returns when its output would pass the limit.
#[derive(Debug)]
struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompressed size past the limit")
    }
}

impl std::error::Error for TooLarge {}

/// Snappy as Kafka clients send it: the xerial/snappy-java framing (a 16-byte header, then blocks
/// of `[u32 length][raw snappy block]`; Java, kafka-python) or, without that header, one raw
/// snappy block (as snappy-java also reads). A block is decompressed whole, after its declared
/// length was checked against what is left of the limit.
struct SnappyReader<'a> {
    input: &'a [u8],
    /// Whether `input` is a sequence of framed blocks (else one raw block).
    framed: bool,
    block: Vec<u8>,
    pos: usize,
    left_bytes: usize,
    decoder: snap::raw::Decoder,
}

const SNAPPY_JAVA_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const SNAPPY_JAVA_HEADER_BYTES: usize = 16;
/// Bytes of output per byte of a raw snappy block, at most: the densest element is a 3-byte copy
/// of 64 bytes (64/3 < 22), so a block claiming more than this times its size is corrupt.
const SNAPPY_EXPANSION_MAX: usize = 22;

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8], limits: &RecordLimits) -> Self {
        let framed =
            input.starts_with(SNAPPY_JAVA_MAGIC) && input.len() >= SNAPPY_JAVA_HEADER_BYTES;
        SnappyReader {
            input: if framed {
                &input[SNAPPY_JAVA_HEADER_BYTES..]
            } else {
                input
            },
            framed,
            block: Vec::new(),
            pos: 0,
            left_bytes: limits.decompressed_bytes_max,
            decoder: snap::raw::Decoder::new(),
        }
    }

    /// Decompresses the next block into `block`; `Ok(false)` at the end of the input.
    fn next_block(&mut self) -> std::io::Result<bool> {
        use std::io::{Error, ErrorKind};
        if self.input.is_empty() {
            return Ok(false);
        }
        let compressed = if self.framed {
            let Some((len, rest)) = self.input.split_first_chunk::<4>() else {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    "truncated snappy block length",
                ));
            };
            let len = u32::from_be_bytes(*len) as usize;
            if len > rest.len() {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    "snappy block past the batch",
                ));
            }
            let (block, rest) = rest.split_at(len);
            self.input = rest;
            block
        } else {
            std::mem::take(&mut self.input)
        };
        let len = snap::raw::decompress_len(compressed)
            .map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
        // Checked before `block` is sized from it: a few bytes may claim tens of MiB.
        if len > compressed.len().saturating_mul(SNAPPY_EXPANSION_MAX) {
            return Err(Error::new(
                ErrorKind::InvalidData,
                "snappy block claims more than its bytes can hold",
            ));
        }
        if len > self.left_bytes {
            return Err(Error::other(TooLarge));
        }
        self.left_bytes -= len;
        self.block.resize(len, 0);
        self.decoder
            .decompress(compressed, &mut self.block)
            .map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
        self.pos = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A zig-zag varint of at most `max_bytes` bytes (5: int, 10: long).
#[inline]
fn read_zigzag(input: &mut impl Input, max_bytes: u32) -> Result<Option<i64>, InputError> {
    let mut z: u64 = 0;
    for i in 0..max_bytes {
        let b = input.byte()?;
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(((z >> 1) as i64) ^ -((z & 1) as i64)));
        }
    }
    Ok(None)
}

/// One record's bytes: reads past its length fail.
struct RecordInput<'i, I> {
    input: &'i mut I,
    left: usize,
}

/// Why a record could not be read: it is malformed, or the input under it failed.
enum FieldError {
    Malformed(&'static str),
    Input(BatchError),
}

impl From<&'static str> for FieldError {
    fn from(reason: &'static str) -> Self {
        FieldError::Malformed(reason)
    }
}

const PAST_THE_RECORD: &str = "field past the record's end";

fn field_error(e: InputError) -> FieldError {
    match e {
        InputError::End => FieldError::Malformed(PAST_THE_RECORD),
        InputError::Failed(e) => FieldError::Input(e),
    }
}

impl<I: Input> RecordInput<'_, I> {
    #[inline]
    fn varint(&mut self) -> Result<i32, FieldError> {
        let v = read_zigzag(self, 5)
            .map_err(field_error)?
            .ok_or("varint longer than 5 bytes")?;
        Ok(i32::try_from(v).map_err(|_| "varint out of range")?)
    }
    #[inline]
    fn varlong(&mut self) -> Result<i64, FieldError> {
        Ok(read_zigzag(self, 10)
            .map_err(field_error)?
            .ok_or("varlong longer than 10 bytes")?)
    }
    /// Skips a field of `len` bytes (`-1`: null, when `nullable`).
    #[inline]
    fn skip_field(&mut self, len: i32, nullable: bool) -> Result<(), FieldError> {
        match usize::try_from(len) {
            Ok(n) => self.skip(n).map_err(field_error),
            Err(_) if nullable && len == -1 => Ok(()),
            Err(_) => Err("negative field length".into()),
        }
    }

    fn record(&mut self, index: i32) -> Result<RecordMeta, FieldError> {
        self.byte().map_err(field_error)?; // attributes
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varint()?;
        if offset_delta != index {
            return Err("offset deltas do not run 0, 1, 2, ...".into());
        }
        let key_length = self.varint()?;
        self.skip_field(key_length, true)?;
        let value_length = self.varint()?;
        self.skip_field(value_length, true)?;
        let headers = self.varint()?;
        if headers < 0 {
            return Err("negative header count".into());
        }
        // Each header takes at least 2 bytes of the record, so this loop ends with the record.
        for _ in 0..headers {
            let key_length = self.varint()?;
            self.skip_field(key_length, false)?;
            let value_length = self.varint()?;
            self.skip_field(value_length, true)?;
        }
        if self.left != 0 {
            return Err("bytes left in the record after its fields".into());
        }
        Ok(RecordMeta {
            offset_delta,
            timestamp_delta,
        })
    }
}

impl<I: Input> Input for RecordInput<'_, I> {
    #[inline]
    fn byte(&mut self) -> Result<u8, InputError> {
        if self.left == 0 {
            return Err(InputError::End);
        }
        self.left -= 1;
        self.input.byte()
    }
    #[inline]
    fn skip(&mut self, n: usize) -> Result<(), InputError> {
        if n > self.left {
            return Err(InputError::End);
        }
        self.left -= n;
        self.input.skip(n)
    }
    fn at_end(&mut self) -> Result<bool, BatchError> {
        Ok(self.left == 0)
    }
}

/// A zig-zag varint of at most `max_bytes` bytes at `*at` of `b`, moving `*at` past it. The
/// one-byte case (most fields of small records) returns at once: this is the produce hot path.
#[inline(always)]
fn zigzag_at(b: &[u8], at: &mut usize, max_bytes: usize) -> Result<i64, &'static str> {
    let first = *b.get(*at).ok_or(PAST_THE_RECORD)?;
    if first < 0x80 {
        *at += 1;
        return Ok(i64::from(first >> 1) ^ -i64::from(first & 1));
    }
    let mut z: u64 = 0;
    for i in 0..max_bytes {
        let byte = *b.get(*at + i).ok_or(PAST_THE_RECORD)?;
        z |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *at += i + 1;
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    Err("varint too long")
}

#[inline(always)]
fn int_at(b: &[u8], at: &mut usize) -> Result<i32, &'static str> {
    i32::try_from(zigzag_at(b, at, 5)?).map_err(|_| "varint out of range")
}

/// Skips a field of `len` bytes of `rec` (`-1`: null, when `nullable`).
#[inline(always)]
fn skip_at(rec: &[u8], at: &mut usize, len: i32, nullable: bool) -> Result<(), &'static str> {
    match usize::try_from(len) {
        Ok(n) if n <= rec.len() - *at => {
            *at += n;
            Ok(())
        }
        Ok(_) => Err(PAST_THE_RECORD),
        Err(_) if nullable && len == -1 => Ok(()),
        Err(_) => Err("negative field length"),
    }
}

/// One record of an uncompressed batch (`rec`: exactly its `length` bytes), as
/// `RecordInput::record` reads it from a stream.
#[inline]
fn slice_record(rec: &[u8], index: i32) -> Result<RecordMeta, &'static str> {
    let mut at = 1; // attributes
    if rec.is_empty() {
        return Err(PAST_THE_RECORD);
    }
    let timestamp_delta = zigzag_at(rec, &mut at, 10)?;
    let offset_delta = int_at(rec, &mut at)?;
    if offset_delta != index {
        return Err("offset deltas do not run 0, 1, 2, ...");
    }
    let key_length = int_at(rec, &mut at)?;
    skip_at(rec, &mut at, key_length, true)?;
    let value_length = int_at(rec, &mut at)?;
    skip_at(rec, &mut at, value_length, true)?;
    let headers = int_at(rec, &mut at)?;
    if headers < 0 {
        return Err("negative header count");
    }
    // Each header takes at least 2 bytes of the record, so this loop ends with the record.
    for _ in 0..headers {
        let key_length = int_at(rec, &mut at)?;
        skip_at(rec, &mut at, key_length, false)?;
        let value_length = int_at(rec, &mut at)?;
        skip_at(rec, &mut at, value_length, true)?;
    }
    if at != rec.len() {
        return Err("bytes left in the record after its fields");
    }
    Ok(RecordMeta {
        offset_delta,
        timestamp_delta,
    })
}

/// [`walk`] for an uncompressed batch: a tight loop over the slice, no allocation.
fn walk_slice(
    body: &[u8],
    count: i32,
    mut visit: impl FnMut(RecordMeta) -> ControlFlow<()>,
) -> Result<(), BatchError> {
    if count < 1 {
        return Err(BatchError::BadRecord {
            index: 0,
            reason: "a batch holds at least one record",
        });
    }
    let mut at = 0usize;
    for index in 0..count {
        let bad = |reason| BatchError::BadRecord { index, reason };
        if at == body.len() {
            return Err(bad("fewer records than the batch's record count"));
        }
        let length = int_at(body, &mut at).map_err(bad)?;
        let length = usize::try_from(length).map_err(|_| bad("negative record length"))?;
        if length > body.len() - at {
            return Err(bad("record past the end of the batch"));
        }
        let meta = slice_record(&body[at..at + length], index).map_err(bad)?;
        at += length;
        if visit(meta).is_break() {
            return Ok(());
        }
    }
    if at != body.len() {
        return Err(BatchError::BadRecord {
            index: count,
            reason: "bytes after the last record of the batch's record count",
        });
    }
    Ok(())
}

fn walk<I: Input>(
    input: &mut I,
    count: i32,
    mut visit: impl FnMut(RecordMeta) -> ControlFlow<()>,
) -> Result<(), BatchError> {
    if count < 1 {
        return Err(BatchError::BadRecord {
            index: 0,
            reason: "a batch holds at least one record",
        });
    }
    for index in 0..count {
        let bad = |reason| BatchError::BadRecord { index, reason };
        let failed = |e: InputError, reason| match e {
            InputError::End => bad(reason),
            InputError::Failed(e) => e,
        };
        let length = match read_zigzag(input, 5) {
            Ok(Some(v)) => usize::try_from(v).map_err(|_| bad("negative record length"))?,
            Ok(None) => return Err(bad("record length longer than 5 bytes")),
            Err(e) => return Err(failed(e, "fewer records than the batch's record count")),
        };
        let mut rec = RecordInput {
            input: &mut *input,
            left: length,
        };
        let meta = match rec.record(index) {
            Ok(meta) => meta,
            Err(FieldError::Malformed(reason)) => return Err(bad(reason)),
            Err(FieldError::Input(e)) => return Err(e),
        };
        if visit(meta).is_break() {
            return Ok(());
        }
    }
    if !input.at_end()? {
        return Err(BatchError::BadRecord {
            index: count,
            reason: "bytes after the last record of the batch's record count",
        });
    }
    Ok(())
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

    /// Rewrites the record count (and the last offset delta with it, so the header agrees with
    /// itself) and recomputes the CRC: a batch that lies about its records but is intact bytes.
    fn with_claimed_count(batch: &[u8], count: i32) -> Vec<u8> {
        let mut b = batch.to_vec();
        b[OFFSET_RECORD_COUNT..OFFSET_RECORD_COUNT + 4].copy_from_slice(&count.to_be_bytes());
        b[OFFSET_LAST_OFFSET_DELTA..OFFSET_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(count - 1).to_be_bytes());
        recrc(&mut b);
        b
    }

    fn recrc(b: &mut [u8]) {
        let crc = crc32c::crc32c(&b[OFFSET_ATTRIBUTES..]);
        b[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn a_small_batch_claiming_two_billion_records_is_refused() {
        let batch = build_batch(0, 0, &[(None, b"v")]);
        let liar = with_claimed_count(&batch, i32::MAX);
        assert!(liar.len() < 80);
        let err = validate_batches(&liar).unwrap_err();
        assert!(!err.is_corruption(), "{err}");
    }

    #[test]
    fn a_batch_claiming_fewer_records_than_it_holds_is_refused() {
        let batch = build_batch(0, 0, &[(None, b"a"), (None, b"b"), (None, b"c")]);
        let err = validate_batches(&with_claimed_count(&batch, 2)).unwrap_err();
        assert!(!err.is_corruption(), "{err}");
    }

    #[test]
    fn offset_deltas_out_of_order_are_refused() {
        let batch = build_batch(0, 0, &[(None, b"a"), (None, b"b")]);
        let mut b = batch.to_vec();
        // First record: length, attributes, timestamp delta (0), offset delta (0 -> 1).
        assert_eq!(b[BATCH_HEADER_BYTES + 3], 0);
        b[BATCH_HEADER_BYTES + 3] = 2; // zig-zag 1
        recrc(&mut b);
        let err = validate_batches(&b).unwrap_err();
        assert!(!err.is_corruption(), "{err}");
    }

    #[test]
    fn a_record_whose_fields_overrun_its_length_is_refused() {
        let batch = build_batch(0, 0, &[(None, b"abc"), (None, b"def")]);
        let mut b = batch.to_vec();
        // The first record's value length (zig-zag 3 = 6) grows to 5 bytes: it now runs into the
        // next record while the record's own length stays as it was.
        let value_len_at = BATCH_HEADER_BYTES + 5;
        assert_eq!(b[value_len_at], 6);
        b[value_len_at] = 10;
        recrc(&mut b);
        let err = validate_batches(&b).unwrap_err();
        assert!(!err.is_corruption(), "{err}");
    }

    fn encoded(compression: kafka_protocol::records::Compression, values: &[Vec<u8>]) -> Vec<u8> {
        use kafka_protocol::records::{
            Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // Offsets and sequences in step: the encoder puts all records in one batch.
                sequence: i as i32,
                timestamp: 1000 + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(v.clone())),
                headers: [(
                    kafka_protocol::protocol::StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"hv")),
                )]
                .into_iter()
                .collect(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        let opts = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &opts).unwrap();
        buf.to_vec()
    }

    fn every_codec() -> [kafka_protocol::records::Compression; 4] {
        use kafka_protocol::records::Compression as C;
        [C::Gzip, C::Snappy, C::Lz4, C::Zstd]
    }

    #[test]
    fn batches_in_every_codec_validate_and_walk_their_records() {
        let values: Vec<Vec<u8>> = (0..50).map(|i| vec![b'a' + (i % 26) as u8; 300]).collect();
        for codec in every_codec() {
            let batch = encoded(codec, &values);
            let info = validate_batches(&batch).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!((info.batch_count, info.record_count), (1, 50), "{codec:?}");
            let mut seen = Vec::new();
            walk_records(
                &BatchHeader::parse(&batch).unwrap(),
                &RecordLimits::DEFAULT,
                |r| {
                    seen.push((r.offset_delta, r.timestamp_delta));
                    ControlFlow::Continue(())
                },
            )
            .unwrap();
            let expected: Vec<(i32, i64)> = (0..50).map(|i| (i, i64::from(i))).collect();
            assert_eq!(seen, expected, "{codec:?}");
        }
    }

    #[test]
    fn raw_snappy_without_the_java_framing_validates() {
        // An uncompressed batch's records, compressed as one raw snappy block.
        let plain = build_batch(0, 7, &[(Some(b"k"), b"v1"), (None, b"v2")]).to_vec();
        let body = snap::raw::Encoder::new()
            .compress_vec(&plain[BATCH_HEADER_BYTES..])
            .unwrap();
        let mut b = plain[..BATCH_HEADER_BYTES].to_vec();
        b.extend_from_slice(&body);
        let len = (b.len() - BATCH_LOG_OVERHEAD_BYTES) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&2i16.to_be_bytes());
        recrc(&mut b);
        assert_eq!(validate_batches(&b).unwrap().record_count, 2);
    }

    #[test]
    fn a_bomb_in_every_codec_stops_at_the_limit() {
        let limits = RecordLimits {
            decompressed_bytes_max: 1 << 20,
        };
        let values = vec![vec![0u8; 4 << 20]];
        for codec in every_codec() {
            let batch = encoded(codec, &values);
            assert!(batch.len() < 300 << 10, "{codec:?}: {} bytes", batch.len());
            let err = validate_batches_with(&batch, &limits).unwrap_err();
            assert_eq!(
                err,
                BatchError::DecompressedTooLarge {
                    limit_bytes: 1 << 20
                },
                "{codec:?}"
            );
            assert!(!err.is_corruption());
            // Under the default limit the same batch is fine.
            assert!(validate_batches(&batch).is_ok(), "{codec:?}");
        }
    }

    #[test]
    fn compressed_batches_that_lie_about_their_count_are_refused() {
        let values: Vec<Vec<u8>> = (0..3).map(|_| b"value".to_vec()).collect();
        for codec in every_codec() {
            let batch = encoded(codec, &values);
            for count in [2, 4, i32::MAX] {
                let err = validate_batches(&with_claimed_count(&batch, count)).unwrap_err();
                assert!(
                    matches!(err, BatchError::BadRecord { .. }),
                    "{codec:?} {count}: {err}"
                );
            }
        }
    }

    #[test]
    fn garbage_under_a_codec_is_refused() {
        for codec in 1i16..=7 {
            let mut b = build_batch(0, 0, &[(None, b"value")]).to_vec();
            b[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&codec.to_be_bytes());
            recrc(&mut b);
            let err = validate_batches(&b).unwrap_err();
            assert!(!err.is_corruption(), "{codec}: {err}");
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

        /// The hot-path slice walk and the generic (streaming) walk agree on every input.
        #[test]
        fn the_slice_walk_agrees_with_the_stream_walk(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            claimed in 0i32..8,
        ) {
            let recs: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, v.as_slice())).collect();
            let mut body = build_batch(0, 0, &recs)[BATCH_HEADER_BYTES..].to_vec();
            for (at, b) in edits {
                let at = at % body.len();
                body[at] ^= b;
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let fast = walk_slice(&body, claimed, |m| { a.push(m); ControlFlow::Continue(()) });
            let slow = walk(&mut SliceInput { bytes: &body, at: 0 }, claimed, |m| { b.push(m); ControlFlow::Continue(()) });
            prop_assert_eq!(fast.is_ok(), slow.is_ok(), "{:?} vs {:?}", fast, slow);
            prop_assert_eq!(a, b);
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
