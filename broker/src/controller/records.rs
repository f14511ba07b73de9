//! The metadata records: every change to the cluster metadata is one of these, appended to the
//! replicated metadata log in batches (the payload of a Raft entry) and applied to the
//! [`MetadataImage`](super::image::MetadataImage). Shaped like Kafka's KRaft records, in our own
//! encoding.
//!
//! Batch layout (integers big-endian):
//! `crc32c: u32` (Castagnoli, over every byte after it) `| kind: u8 | header | count: u32 |
//! records`, each record `type: u8 | version: u8 | body_len: u32 | body`. `kind` is `B` for a
//! batch (no header) and `S` for a snapshot (header: the metadata offset, `i64`), so neither is
//! ever read as the other. Strings are a `u32` length + UTF-8; lists are a `u32` count + items;
//! an absent string or list is a `0` tag byte, a present one `1` then the value.
//!
//! Invariants:
//! - decoding is total: garbage gives a [`RecordError`], never a panic; no allocation is sized by
//!   a count or length before that many bytes are known to be left in the input;
//! - each record carries its own version byte and body length, so a later version can add
//!   fields; a version this code does not know is refused, not guessed at;
//! - the checksum covers the whole batch: one flipped bit anywhere fails the decode;
//! - `decode_batch(&encode_batch(r)) == r` for every list of records with non-negative broker
//!   ids (what the controller writes).

use uuid::Uuid;

use crate::ids::{BrokerId, LeaderEpoch, PartitionEpoch, PartitionId};

/// The version every record is written with today.
pub const RECORD_VERSION: u8 = 0;

/// One change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// The cluster's id; written once, first.
    ClusterId(String),
    /// A broker (re)registers: a new incarnation replaces the previous one.
    RegisterBroker(BrokerRegistration),
    /// A broker's incarnation is fenced (silent past its session) or unfenced (heartbeating).
    BrokerChange {
        id: BrokerId,
        incarnation: Uuid,
        fenced: bool,
    },
    UnregisterBroker {
        id: BrokerId,
    },
    Topic {
        name: String,
        id: Uuid,
    },
    /// A partition as a whole: a new one (numbered next), or a restatement with a newer epoch.
    Partition(PartitionRecord),
    /// A change of one partition's leader, ISR or replicas; applying it bumps the partition
    /// epoch, and the leader epoch when the leader changes (as Kafka does).
    PartitionChange(PartitionChange),
    RemoveTopic {
        id: Uuid,
    },
    /// Sets (`value: Some`) or deletes a topic configuration override.
    TopicConfig {
        topic: Uuid,
        key: String,
        value: Option<String>,
    },
    /// The next block of producer ids, handed to `broker`.
    ProducerIds(ProducerIdBlock),
    /// A partition's leader changes its ISR (Kafka's AlterPartition), fenced by the leader and
    /// partition epochs it read; applying it bumps the partition epoch only.
    AlterIsr(AlterIsr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub id: BrokerId,
    /// Drawn at each process start, so a restarted broker is told apart from a zombie.
    pub incarnation: Uuid,
    pub endpoints: Vec<BrokerEndpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
}

impl BrokerRegistration {
    /// The endpoint of `listener` ([`CLIENT_LISTENER`], [`CONTROLLER_LISTENER`]), if registered.
    pub fn endpoint(&self, listener: &str) -> Option<&BrokerEndpoint> {
        self.endpoints.iter().find(|e| e.listener == listener)
    }
}

/// The listener name of a broker's Kafka endpoint in its registration.
pub const CLIENT_LISTENER: &str = "PLAINTEXT";
/// The listener name of a node's controller endpoint in its registration.
pub const CONTROLLER_LISTENER: &str = "CONTROLLER";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    /// The listener's name (`PLAINTEXT`, `CONTROLLER`, ...).
    pub listener: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecord {
    pub topic: Uuid,
    pub partition: PartitionId,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
}

/// What changes; `None` fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub topic: Uuid,
    pub partition: PartitionId,
    /// `Some(None)`: the partition has no leader from now on.
    pub leader: Option<Option<BrokerId>>,
    pub isr: Option<Vec<BrokerId>>,
    pub replicas: Option<Vec<BrokerId>>,
}

impl PartitionChange {
    /// A change of nothing yet; set the fields that change.
    pub fn new(topic: Uuid, partition: PartitionId) -> PartitionChange {
        PartitionChange {
            topic,
            partition,
            leader: None,
            isr: None,
            replicas: None,
        }
    }
}

/// An ISR change asked for by a partition's leader, valid only against the epochs it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterIsr {
    pub topic: Uuid,
    pub partition: PartitionId,
    /// The broker asking: must be the partition's current leader.
    pub leader: BrokerId,
    /// The leader epoch the leader holds: must be the current one.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch the leader's view is at: must be the current one.
    pub partition_epoch: PartitionEpoch,
    /// The whole new ISR (not a difference).
    pub isr: Vec<BrokerId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub broker: BrokerId,
    pub first_id: i64,
    pub size: i64,
}

impl ProducerIdBlock {
    /// The first id after the block.
    pub fn end(&self) -> i64 {
        self.first_id.saturating_add(self.size)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("truncated: {needed} more bytes needed at byte {at}")]
    Truncated { at: usize, needed: usize },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("expected a {expected} but found kind byte {found:#04x}")]
    WrongKind { expected: &'static str, found: u8 },
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error(
        "record type {record_type} has version {version}; this broker reads up to {RECORD_VERSION}"
    )]
    UnsupportedVersion { record_type: u8, version: u8 },
    #[error("{count} items announced at byte {at} but only {remaining} bytes are left")]
    CountTooLarge {
        at: usize,
        count: u64,
        remaining: usize,
    },
    #[error("string at byte {at} is not UTF-8")]
    InvalidUtf8 { at: usize },
    #[error("bad value at byte {at}: {what}")]
    BadValue { at: usize, what: &'static str },
    #[error("record of type {record_type} has {extra} bytes after its fields")]
    RecordTrailingBytes { record_type: u8, extra: usize },
    #[error("{0} bytes after the last record")]
    TrailingBytes(usize),
}

const KIND_BATCH: u8 = b'B';
const KIND_SNAPSHOT: u8 = b'S';

/// Leader field values: no leader; in a change, no change.
const LEADER_NONE: i32 = -1;
const LEADER_UNCHANGED: i32 = -2;

// Record type bytes; never reuse one.
const T_CLUSTER_ID: u8 = 1;
const T_REGISTER_BROKER: u8 = 2;
const T_BROKER_CHANGE: u8 = 3;
const T_UNREGISTER_BROKER: u8 = 4;
const T_TOPIC: u8 = 5;
const T_PARTITION: u8 = 6;
const T_PARTITION_CHANGE: u8 = 7;
const T_REMOVE_TOPIC: u8 = 8;
const T_TOPIC_CONFIG: u8 = 9;
const T_PRODUCER_IDS: u8 = 10;
const T_ALTER_ISR: u8 = 11;

/// Bytes of a record's framing (type, version, body length).
const RECORD_HEADER_BYTES: usize = 6;

/// Encodes records as one checksummed batch: the payload of one metadata-log entry.
pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    encode_framed(KIND_BATCH, &[], records)
}

/// Decodes a batch written by [`encode_batch`].
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, RecordError> {
    let (_, records) = decode_framed(bytes, KIND_BATCH, "metadata batch", 0)?;
    Ok(records)
}

/// Encodes a snapshot: the records that rebuild an image, and the metadata offset it reflects.
pub fn encode_snapshot(offset: i64, records: &[MetadataRecord]) -> Vec<u8> {
    encode_framed(KIND_SNAPSHOT, &offset.to_be_bytes(), records)
}

/// Decodes a snapshot written by [`encode_snapshot`]: its offset and records.
pub fn decode_snapshot(bytes: &[u8]) -> Result<(i64, Vec<MetadataRecord>), RecordError> {
    let (header, records) = decode_framed(bytes, KIND_SNAPSHOT, "metadata snapshot", 8)?;
    let mut r = Reader {
        bytes: header,
        at: 5,
    };
    Ok((r.i64()?, records))
}

fn encode_framed(kind: u8, header: &[u8], records: &[MetadataRecord]) -> Vec<u8> {
    let mut w = vec![0u8; 4];
    w.push(kind);
    w.extend_from_slice(header);
    put_u32(&mut w, records.len() as u32);
    for record in records {
        let (record_type, body) = encode_record(record);
        w.push(record_type);
        w.push(RECORD_VERSION);
        put_u32(&mut w, body.len() as u32);
        w.extend_from_slice(&body);
    }
    let crc = crc32c::crc32c(&w[4..]);
    w[..4].copy_from_slice(&crc.to_be_bytes());
    w
}

/// Checks the checksum and kind, returns the bytes up to the end of the header (offset 0 of the
/// input, so positions in errors are positions in the input) and the records.
fn decode_framed<'a>(
    bytes: &'a [u8],
    kind: u8,
    expected: &'static str,
    header_bytes: usize,
) -> Result<(&'a [u8], Vec<MetadataRecord>), RecordError> {
    let mut r = Reader { bytes, at: 0 };
    let stored = r.u32()?;
    let computed = crc32c::crc32c(&bytes[4..]);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    let found = r.u8()?;
    if found != kind {
        return Err(RecordError::WrongKind { expected, found });
    }
    r.take(header_bytes)?;
    let header_end = r.at;
    let count = r.count(RECORD_HEADER_BYTES)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let record_type = r.u8()?;
        let version = r.u8()?;
        if version > RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion {
                record_type,
                version,
            });
        }
        let len = r.u32()? as usize;
        let body_at = r.at;
        let body = r.take(len)?;
        let mut body = Reader {
            bytes: &bytes[..body_at + body.len()],
            at: body_at,
        };
        records.push(decode_record(record_type, &mut body)?);
        if body.at != body.bytes.len() {
            return Err(RecordError::RecordTrailingBytes {
                record_type,
                extra: body.bytes.len() - body.at,
            });
        }
    }
    if r.at != bytes.len() {
        return Err(RecordError::TrailingBytes(bytes.len() - r.at));
    }
    Ok((&bytes[..header_end], records))
}

fn encode_record(record: &MetadataRecord) -> (u8, Vec<u8>) {
    let mut w = Vec::new();
    let t = match record {
        MetadataRecord::ClusterId(id) => {
            put_str(&mut w, id);
            T_CLUSTER_ID
        }
        MetadataRecord::RegisterBroker(b) => {
            put_i32(&mut w, b.id.0);
            w.extend_from_slice(b.incarnation.as_bytes());
            put_u32(&mut w, b.endpoints.len() as u32);
            for e in &b.endpoints {
                put_str(&mut w, &e.listener);
                put_str(&mut w, &e.host);
                w.extend_from_slice(&e.port.to_be_bytes());
            }
            put_opt_str(&mut w, b.rack.as_deref());
            w.push(u8::from(b.fenced));
            T_REGISTER_BROKER
        }
        MetadataRecord::BrokerChange {
            id,
            incarnation,
            fenced,
        } => {
            put_i32(&mut w, id.0);
            w.extend_from_slice(incarnation.as_bytes());
            w.push(u8::from(*fenced));
            T_BROKER_CHANGE
        }
        MetadataRecord::UnregisterBroker { id } => {
            put_i32(&mut w, id.0);
            T_UNREGISTER_BROKER
        }
        MetadataRecord::Topic { name, id } => {
            put_str(&mut w, name);
            w.extend_from_slice(id.as_bytes());
            T_TOPIC
        }
        MetadataRecord::Partition(p) => {
            w.extend_from_slice(p.topic.as_bytes());
            put_i32(&mut w, p.partition.0);
            put_brokers(&mut w, &p.replicas);
            put_brokers(&mut w, &p.isr);
            put_i32(&mut w, p.leader.map_or(LEADER_NONE, |b| b.0));
            put_i32(&mut w, p.leader_epoch.0);
            put_i32(&mut w, p.partition_epoch.0);
            T_PARTITION
        }
        MetadataRecord::PartitionChange(c) => {
            w.extend_from_slice(c.topic.as_bytes());
            put_i32(&mut w, c.partition.0);
            let leader = match c.leader {
                None => LEADER_UNCHANGED,
                Some(None) => LEADER_NONE,
                Some(Some(b)) => b.0,
            };
            put_i32(&mut w, leader);
            put_opt_brokers(&mut w, c.isr.as_deref());
            put_opt_brokers(&mut w, c.replicas.as_deref());
            T_PARTITION_CHANGE
        }
        MetadataRecord::RemoveTopic { id } => {
            w.extend_from_slice(id.as_bytes());
            T_REMOVE_TOPIC
        }
        MetadataRecord::TopicConfig { topic, key, value } => {
            w.extend_from_slice(topic.as_bytes());
            put_str(&mut w, key);
            put_opt_str(&mut w, value.as_deref());
            T_TOPIC_CONFIG
        }
        MetadataRecord::ProducerIds(b) => {
            put_i32(&mut w, b.broker.0);
            w.extend_from_slice(&b.first_id.to_be_bytes());
            w.extend_from_slice(&b.size.to_be_bytes());
            T_PRODUCER_IDS
        }
        MetadataRecord::AlterIsr(a) => {
            w.extend_from_slice(a.topic.as_bytes());
            put_i32(&mut w, a.partition.0);
            put_i32(&mut w, a.leader.0);
            put_i32(&mut w, a.leader_epoch.0);
            put_i32(&mut w, a.partition_epoch.0);
            put_brokers(&mut w, &a.isr);
            T_ALTER_ISR
        }
    };
    (t, w)
}

fn decode_record(record_type: u8, r: &mut Reader<'_>) -> Result<MetadataRecord, RecordError> {
    Ok(match record_type {
        T_CLUSTER_ID => MetadataRecord::ClusterId(r.string()?),
        T_REGISTER_BROKER => {
            let id = r.broker()?;
            let incarnation = r.uuid()?;
            // An endpoint is at least two empty strings and a port.
            let count = r.count(10)?;
            let mut endpoints = Vec::with_capacity(count);
            for _ in 0..count {
                endpoints.push(BrokerEndpoint {
                    listener: r.string()?,
                    host: r.string()?,
                    port: r.u16()?,
                });
            }
            let rack = r.opt_string()?;
            let fenced = r.bool()?;
            MetadataRecord::RegisterBroker(BrokerRegistration {
                id,
                incarnation,
                endpoints,
                rack,
                fenced,
            })
        }
        T_BROKER_CHANGE => MetadataRecord::BrokerChange {
            id: r.broker()?,
            incarnation: r.uuid()?,
            fenced: r.bool()?,
        },
        T_UNREGISTER_BROKER => MetadataRecord::UnregisterBroker { id: r.broker()? },
        T_TOPIC => MetadataRecord::Topic {
            name: r.string()?,
            id: r.uuid()?,
        },
        T_PARTITION => {
            let topic = r.uuid()?;
            let partition = PartitionId(r.i32()?);
            let replicas = r.brokers()?;
            let isr = r.brokers()?;
            let at = r.at;
            let leader = match r.i32()? {
                LEADER_NONE => None,
                b if b >= 0 => Some(BrokerId(b)),
                _ => {
                    return Err(RecordError::BadValue {
                        at,
                        what: "leader is neither a broker id nor -1",
                    })
                }
            };
            MetadataRecord::Partition(PartitionRecord {
                topic,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch: LeaderEpoch(r.i32()?),
                partition_epoch: PartitionEpoch(r.i32()?),
            })
        }
        T_PARTITION_CHANGE => {
            let topic = r.uuid()?;
            let partition = PartitionId(r.i32()?);
            let at = r.at;
            let leader = match r.i32()? {
                LEADER_UNCHANGED => None,
                LEADER_NONE => Some(None),
                b if b >= 0 => Some(Some(BrokerId(b))),
                _ => {
                    return Err(RecordError::BadValue {
                        at,
                        what: "leader is neither a broker id, -1 nor -2",
                    })
                }
            };
            MetadataRecord::PartitionChange(PartitionChange {
                topic,
                partition,
                leader,
                isr: r.opt_brokers()?,
                replicas: r.opt_brokers()?,
            })
        }
        T_REMOVE_TOPIC => MetadataRecord::RemoveTopic { id: r.uuid()? },
        T_TOPIC_CONFIG => MetadataRecord::TopicConfig {
            topic: r.uuid()?,
            key: r.string()?,
            value: r.opt_string()?,
        },
        T_PRODUCER_IDS => MetadataRecord::ProducerIds(ProducerIdBlock {
            broker: r.broker()?,
            first_id: r.i64()?,
            size: r.i64()?,
        }),
        T_ALTER_ISR => MetadataRecord::AlterIsr(AlterIsr {
            topic: r.uuid()?,
            partition: PartitionId(r.i32()?),
            leader: r.broker()?,
            leader_epoch: LeaderEpoch(r.i32()?),
            partition_epoch: PartitionEpoch(r.i32()?),
            isr: r.brokers()?,
        }),
        other => return Err(RecordError::UnknownType(other)),
    })
}

fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_be_bytes());
}

fn put_i32(w: &mut Vec<u8>, v: i32) {
    w.extend_from_slice(&v.to_be_bytes());
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_u32(w, s.len() as u32);
    w.extend_from_slice(s.as_bytes());
}

fn put_opt_str(w: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => w.push(0),
        Some(s) => {
            w.push(1);
            put_str(w, s);
        }
    }
}

fn put_brokers(w: &mut Vec<u8>, brokers: &[BrokerId]) {
    put_u32(w, brokers.len() as u32);
    for b in brokers {
        put_i32(w, b.0);
    }
}

fn put_opt_brokers(w: &mut Vec<u8>, brokers: Option<&[BrokerId]>) {
    match brokers {
        None => w.push(0),
        Some(b) => {
            w.push(1);
            put_brokers(w, b);
        }
    }
}

/// A cursor over untrusted bytes; every read checks what is left first.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let left = self.bytes.len() - self.at;
        if n > left {
            return Err(RecordError::Truncated {
                at: self.at,
                needed: n - left,
            });
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn uuid(&mut self) -> Result<Uuid, RecordError> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    fn bool(&mut self) -> Result<bool, RecordError> {
        self.flag("boolean is neither 0 nor 1")
    }

    /// A byte that must be 0 or 1; `what` names the refusal.
    fn flag(&mut self, what: &'static str) -> Result<bool, RecordError> {
        let at = self.at;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RecordError::BadValue { at, what }),
        }
    }

    fn broker(&mut self) -> Result<BrokerId, RecordError> {
        let at = self.at;
        match self.i32()? {
            b if b >= 0 => Ok(BrokerId(b)),
            _ => Err(RecordError::BadValue {
                at,
                what: "negative broker id",
            }),
        }
    }

    /// A `u32` count of items of at least `item_bytes` each, refused unless that many bytes are
    /// left: the count can then size an allocation.
    fn count(&mut self, item_bytes: usize) -> Result<usize, RecordError> {
        let at = self.at;
        let count = self.u32()?;
        let remaining = self.bytes.len() - self.at;
        if (count as usize).saturating_mul(item_bytes) > remaining {
            return Err(RecordError::CountTooLarge {
                at,
                count: u64::from(count),
                remaining,
            });
        }
        Ok(count as usize)
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let len = self.count(1)?;
        let at = self.at;
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_string)
            .map_err(|_| RecordError::InvalidUtf8 { at })
    }

    fn present(&mut self) -> Result<bool, RecordError> {
        self.flag("presence tag is neither 0 nor 1")
    }

    fn opt_string(&mut self) -> Result<Option<String>, RecordError> {
        if self.present()? {
            Ok(Some(self.string()?))
        } else {
            Ok(None)
        }
    }

    fn brokers(&mut self) -> Result<Vec<BrokerId>, RecordError> {
        let count = self.count(4)?;
        (0..count).map(|_| self.broker()).collect()
    }

    fn opt_brokers(&mut self) -> Result<Option<Vec<BrokerId>>, RecordError> {
        if self.present()? {
            Ok(Some(self.brokers()?))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn broker() -> impl Strategy<Value = BrokerId> {
        (0..i32::MAX).prop_map(BrokerId)
    }

    fn brokers() -> impl Strategy<Value = Vec<BrokerId>> {
        prop::collection::vec(broker(), 0..6)
    }

    fn uuid() -> impl Strategy<Value = Uuid> {
        any::<u128>().prop_map(Uuid::from_u128)
    }

    fn text() -> impl Strategy<Value = String> {
        // Any Unicode, including multi-byte characters.
        ".{0,20}"
    }

    pub(crate) fn record() -> impl Strategy<Value = MetadataRecord> {
        let endpoint =
            (text(), text(), any::<u16>()).prop_map(|(listener, host, port)| BrokerEndpoint {
                listener,
                host,
                port,
            });
        prop_oneof![
            text().prop_map(MetadataRecord::ClusterId),
            (
                broker(),
                uuid(),
                prop::collection::vec(endpoint, 0..3),
                prop::option::of(text()),
                any::<bool>()
            )
                .prop_map(|(id, incarnation, endpoints, rack, fenced)| {
                    MetadataRecord::RegisterBroker(BrokerRegistration {
                        id,
                        incarnation,
                        endpoints,
                        rack,
                        fenced,
                    })
                }),
            (broker(), uuid(), any::<bool>()).prop_map(|(id, incarnation, fenced)| {
                MetadataRecord::BrokerChange {
                    id,
                    incarnation,
                    fenced,
                }
            }),
            broker().prop_map(|id| MetadataRecord::UnregisterBroker { id }),
            (text(), uuid()).prop_map(|(name, id)| MetadataRecord::Topic { name, id }),
            (
                uuid(),
                any::<i32>(),
                brokers(),
                brokers(),
                prop::option::of(broker()),
                any::<i32>(),
                any::<i32>()
            )
                .prop_map(|(topic, p, replicas, isr, leader, le, pe)| {
                    MetadataRecord::Partition(PartitionRecord {
                        topic,
                        partition: PartitionId(p),
                        replicas,
                        isr,
                        leader,
                        leader_epoch: LeaderEpoch(le),
                        partition_epoch: PartitionEpoch(pe),
                    })
                }),
            (
                uuid(),
                any::<i32>(),
                prop::option::of(prop::option::of(broker())),
                prop::option::of(brokers()),
                prop::option::of(brokers())
            )
                .prop_map(|(topic, p, leader, isr, replicas)| {
                    MetadataRecord::PartitionChange(PartitionChange {
                        topic,
                        partition: PartitionId(p),
                        leader,
                        isr,
                        replicas,
                    })
                }),
            uuid().prop_map(|id| MetadataRecord::RemoveTopic { id }),
            (uuid(), text(), prop::option::of(text()))
                .prop_map(|(topic, key, value)| MetadataRecord::TopicConfig { topic, key, value }),
            (broker(), any::<i64>(), any::<i64>()).prop_map(|(broker, first_id, size)| {
                MetadataRecord::ProducerIds(ProducerIdBlock {
                    broker,
                    first_id,
                    size,
                })
            }),
            (
                uuid(),
                any::<i32>(),
                broker(),
                any::<i32>(),
                any::<i32>(),
                brokers()
            )
                .prop_map(|(topic, p, leader, le, pe, isr)| {
                    MetadataRecord::AlterIsr(AlterIsr {
                        topic,
                        partition: PartitionId(p),
                        leader,
                        leader_epoch: LeaderEpoch(le),
                        partition_epoch: PartitionEpoch(pe),
                        isr,
                    })
                }),
        ]
    }

    proptest! {
        #[test]
        fn every_batch_decodes_to_what_was_encoded(
            records in prop::collection::vec(record(), 0..20)
        ) {
            let bytes = encode_batch(&records);
            prop_assert_eq!(decode_batch(&bytes), Ok(records.clone()));
            let snapshot = encode_snapshot(42, &records);
            prop_assert_eq!(decode_snapshot(&snapshot), Ok((42, records)));
        }

        /// Garbage never panics, whether or not its checksum happens to match.
        #[test]
        fn garbage_is_an_error_not_a_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_batch(&bytes);
            let _ = decode_snapshot(&bytes);
            if bytes.len() >= 4 {
                let crc = crc32c::crc32c(&bytes[4..]);
                bytes[..4].copy_from_slice(&crc.to_be_bytes());
                let _ = decode_batch(&bytes);
                let _ = decode_snapshot(&bytes);
            }
        }

        /// A valid batch with one byte changed, its checksum then made right again: the
        /// structural checks alone must hold (no panic, no huge allocation).
        #[test]
        fn a_mutated_batch_with_a_fixed_checksum_never_panics(
            records in prop::collection::vec(record(), 1..8),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = encode_batch(&records);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let flipped = bytes.clone();
            let crc = crc32c::crc32c(&bytes[4..]);
            bytes[..4].copy_from_slice(&crc.to_be_bytes());
            let _ = decode_batch(&bytes);
            if i >= 4 && flipped != encode_batch(&records) {
                prop_assert!(
                    matches!(decode_batch(&flipped), Err(RecordError::Checksum { .. })),
                    "a changed byte must fail the checksum"
                );
            }
        }
    }

    fn fix_crc(bytes: &mut [u8]) {
        let crc = crc32c::crc32c(&bytes[4..]);
        bytes[..4].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn a_huge_announced_count_is_refused_before_allocating() {
        let mut bytes = vec![0, 0, 0, 0, KIND_BATCH];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        fix_crc(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes),
            Err(RecordError::CountTooLarge { .. })
        ));

        // A partition whose replica list claims four billion brokers.
        let topic = Uuid::from_u128(7);
        let mut bytes = encode_batch(&[MetadataRecord::Partition(PartitionRecord {
            topic,
            partition: PartitionId(0),
            replicas: vec![],
            isr: vec![],
            leader: None,
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
        })]);
        // kind 1 + count 4 + record header 6 + uuid 16 + partition 4 = replica count at 35.
        bytes[35..39].copy_from_slice(&u32::MAX.to_be_bytes());
        fix_crc(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes),
            Err(RecordError::CountTooLarge { .. })
        ));
    }

    /// An ISR change whose ISR claims four billion brokers is refused before allocating; a
    /// negative leader is refused, not read as a broker.
    #[test]
    fn an_alter_isr_with_a_huge_isr_count_or_a_negative_leader_is_refused() {
        let change = AlterIsr {
            topic: Uuid::from_u128(7),
            partition: PartitionId(0),
            leader: BrokerId(1),
            leader_epoch: LeaderEpoch(3),
            partition_epoch: PartitionEpoch(5),
            isr: vec![BrokerId(1), BrokerId(2)],
        };
        let batch = encode_batch(&[MetadataRecord::AlterIsr(change.clone())]);
        assert_eq!(
            decode_batch(&batch),
            Ok(vec![MetadataRecord::AlterIsr(change)])
        );
        // crc 4 + kind 1 + count 4 + record header 6 + uuid 16 + partition 4: the leader is at
        // 35; after it and the two epochs, the ISR count at 47.
        let mut bytes = batch.clone();
        bytes[47..51].copy_from_slice(&u32::MAX.to_be_bytes());
        fix_crc(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes),
            Err(RecordError::CountTooLarge { .. })
        ));
        let mut bytes = batch;
        bytes[35..39].copy_from_slice(&(-1i32).to_be_bytes());
        fix_crc(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes),
            Err(RecordError::BadValue { at: 35, .. })
        ));
    }

    #[test]
    fn unknown_types_newer_versions_and_the_wrong_kind_are_named() {
        let mut bytes = encode_batch(&[MetadataRecord::RemoveTopic {
            id: Uuid::from_u128(1),
        }]);
        let batch = bytes.clone();
        bytes[9] = 200;
        fix_crc(&mut bytes);
        assert_eq!(decode_batch(&bytes), Err(RecordError::UnknownType(200)));
        let mut bytes = batch.clone();
        bytes[10] = RECORD_VERSION + 1;
        fix_crc(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes),
            Err(RecordError::UnsupportedVersion { version: 1, .. })
        ));
        assert!(matches!(
            decode_snapshot(&batch),
            Err(RecordError::WrongKind { .. })
        ));
        let mut bytes = batch;
        bytes.push(0);
        fix_crc(&mut bytes);
        assert_eq!(decode_batch(&bytes), Err(RecordError::TrailingBytes(1)));
    }
}
