//! What a client's record bytes may claim, through a real partition: a batch whose record count
//! lies is refused without moving the log end, and ListOffsets by timestamp reads compressed
//! batches (walked outside the lock, within the partition's record limits) in every codec.

use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strata_protocol::record_batch::{build_batch, RecordLimits};

use super::flusher::Flushers;
use super::{manager::settings_for, Partition};
use crate::config::{BrokerConfig, TopicOverrides};
use crate::error::BrokerError;
use crate::ids::{Offset, PartitionId};
use crate::storage::segment::first_record_at_or_after;

fn open(dir: &Path) -> Arc<Partition> {
    let settings = settings_for(&BrokerConfig::default(), &TopicOverrides::default());
    let flushers = Flushers::start(1).unwrap();
    let (p, _) = Partition::open(
        dir,
        Arc::from("t"),
        PartitionId(0),
        settings,
        None,
        false,
        &flushers,
    )
    .unwrap();
    p
}

/// `values.len()` records with timestamps `first_ms`, `first_ms + 1`, ..., as a client encodes them.
fn encoded(compression: Compression, first_ms: i64, values: &[Vec<u8>]) -> Bytes {
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
            sequence: i as i32,
            timestamp: first_ms + i as i64,
            key: None,
            value: Some(Bytes::from(v.clone())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    let opts = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &opts).unwrap();
    buf.freeze()
}

/// Sets the record count (and last offset delta) of a one-batch set and fixes its CRC.
fn claim_count(batch: &[u8], count: i32) -> Bytes {
    let mut b = batch.to_vec();
    b[57..61].copy_from_slice(&count.to_be_bytes());
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[tokio::test]
async fn a_batch_claiming_two_billion_records_is_refused_and_the_log_end_stays() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path());
    p.append(&build_batch(0, 1_000, &[(None, b"ok")]), 0)
        .unwrap();
    let liar = claim_count(&build_batch(0, 1_000, &[(None, b"v")]), i32::MAX);
    assert!(liar.len() < 80);
    for _ in 0..3 {
        let err = p.append(&liar, 0).unwrap_err();
        assert!(matches!(err, BrokerError::InvalidRecord(_)), "{err:?}");
    }
    assert_eq!(p.high_watermark(), Offset(1));
    // A compressed batch that lies the same way is refused too.
    let values = vec![b"a".to_vec(), b"b".to_vec()];
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let err = p
            .append(&claim_count(&encoded(codec, 0, &values), 1_000), 0)
            .unwrap_err();
        assert!(
            matches!(err, BrokerError::InvalidRecord(_)),
            "{codec:?}: {err:?}"
        );
    }
    assert_eq!(p.high_watermark(), Offset(1));
}

#[tokio::test]
async fn list_offsets_by_timestamp_reads_batches_in_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path());
    let values: Vec<Vec<u8>> = (0..10).map(|i| vec![b'x'; 100 + i]).collect();
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    // Batch k holds offsets 10k..10k+9 with timestamps 1000k..1000k+9.
    for (k, codec) in codecs.iter().enumerate() {
        let appended = p
            .append(&encoded(*codec, 1_000 * k as i64, &values), 0)
            .unwrap();
        assert_eq!(appended.base_offset, Offset(10 * k as i64));
    }
    for (k, codec) in codecs.iter().enumerate() {
        let k = k as i64;
        assert_eq!(
            p.list_offset(1_000 * k + 3).unwrap(),
            Some((Offset(10 * k + 3), 1_000 * k + 3)),
            "{codec:?}"
        );
        // Between batches: the next batch's first record.
        assert_eq!(
            p.list_offset(1_000 * k + 500).unwrap(),
            (k < 4).then_some((Offset(10 * k + 10), 1_000 * k + 1_000)),
            "{codec:?}"
        );
    }
    assert_eq!(p.list_offset(-3).unwrap(), Some((Offset(49), 4_009)));
    assert_eq!(p.list_offset(-2).unwrap(), Some((Offset(0), -1)));
    assert_eq!(p.list_offset(-1).unwrap(), Some((Offset(50), -1)));
}

#[test]
fn a_stored_bomb_is_not_decompressed_past_the_limit_by_a_timestamp_lookup() {
    // 8 MiB of zeros in one record: a few KiB stored in every codec.
    let values = vec![vec![0u8; 8 << 20]];
    let small = RecordLimits {
        decompressed_bytes_max: 1 << 20,
    };
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let batch = encoded(codec, 5, &values);
        assert!(batch.len() < 512 << 10, "{codec:?}");
        let (from, limit) = (Offset(0), Offset(1));
        // Within the limit the record is found; past it the walk stops and finds nothing.
        assert_eq!(
            first_record_at_or_after(&batch, 0, from, limit, &RecordLimits::DEFAULT),
            Some((Offset(0), 5)),
            "{codec:?}"
        );
        assert_eq!(
            first_record_at_or_after(&batch, 0, from, limit, &small),
            None,
            "{codec:?}"
        );
    }
}
