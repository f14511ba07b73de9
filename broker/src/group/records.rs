//! The record formats of `__consumer_offsets`, as Kafka writes them (the `OffsetCommitKey`,
//! `OffsetCommitValue`, `GroupMetadataKey` and `GroupMetadataValue` message schemas), so a log
//! written by Strata reads like Kafka's and Kafka's tools can decode ours.
//!
//! Keys start with an i16 version that says which record it is: 0 and 1 are an offset commit
//! (group, topic, partition), 2 is group metadata (group). Later key versions (Kafka's newer
//! consumer-group protocol) are reported as [`RecordKey::Other`] and skipped by the loader.
//! Values start with their own i16 version. A record with a null value is a tombstone: it deletes
//! its key.
//!
//! We write key v1 / value v3 for offsets and key v2 / value v3 for groups (Kafka's choices for
//! the classic protocol); we read value versions 0-4 (v4 is "flexible": compact strings and
//! tagged fields, which are skipped).
//!
//! Invariant: decoding is total. Any bytes (from disk, possibly corrupt) give `Ok` or a
//! [`RecordError`], never a panic, and no allocation larger than the input.

use bytes::Bytes;

/// A committed offset, as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    /// -1: unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// Kafka's GroupMetadataValue (value schema v3), what a group looks like after a rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupMetadata {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadata>,
}

/// One member in [`GroupMetadata`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberMetadata {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The chosen protocol's metadata.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// What a record's key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey<'a> {
    Offset {
        group: &'a str,
        topic: &'a str,
        partition: i32,
    },
    Group {
        group: &'a str,
    },
    /// A key version this broker does not use (e.g. Kafka's KIP-848 records).
    Other {
        version: i16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated at byte {0}")]
    Truncated(usize),
    #[error("negative length {0} for a non-nullable field")]
    NullNotAllowed(i64),
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

// ---- encoding ----

/// The longest string a record holds (an INT16 length, as Kafka's). Requests with longer group
/// ids, instance ids, protocol names or commit metadata are refused before anything is stored.
pub const STRING_BYTES_MAX: usize = i16::MAX as usize;

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Every string here is refused upstream when longer than STRING_BYTES_MAX (see there);
    // clamp rather than write a wrong length if one ever is not.
    let len = s.len().min(STRING_BYTES_MAX);
    out.extend_from_slice(&(len as i16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

fn put_nullable_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(b);
}

/// OffsetCommitKey v1: group, topic, partition.
pub fn encode_offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + group.len() + topic.len());
    out.extend_from_slice(&OFFSET_KEY_VERSION.to_be_bytes());
    put_str(&mut out, group);
    put_str(&mut out, topic);
    out.extend_from_slice(&partition.to_be_bytes());
    out
}

/// GroupMetadataKey v2: group.
pub fn encode_group_key(group: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + group.len());
    out.extend_from_slice(&GROUP_KEY_VERSION.to_be_bytes());
    put_str(&mut out, group);
    out
}

/// OffsetCommitValue v3: offset, leader epoch, metadata, commit timestamp.
pub fn encode_offset_value(c: &CommittedOffset) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + c.metadata.len());
    out.extend_from_slice(&OFFSET_VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&c.offset.to_be_bytes());
    out.extend_from_slice(&c.leader_epoch.to_be_bytes());
    put_str(&mut out, &c.metadata);
    out.extend_from_slice(&c.commit_timestamp_ms.to_be_bytes());
    out
}

/// GroupMetadataValue v3.
pub fn encode_group_value(g: &GroupMetadata) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&GROUP_VALUE_VERSION.to_be_bytes());
    put_str(&mut out, &g.protocol_type);
    out.extend_from_slice(&g.generation.to_be_bytes());
    put_nullable_str(&mut out, g.protocol.as_deref());
    put_nullable_str(&mut out, g.leader.as_deref());
    out.extend_from_slice(&g.current_state_timestamp_ms.to_be_bytes());
    out.extend_from_slice(&(g.members.len() as i32).to_be_bytes());
    for m in &g.members {
        put_str(&mut out, &m.member_id);
        put_nullable_str(&mut out, m.group_instance_id.as_deref());
        put_str(&mut out, &m.client_id);
        put_str(&mut out, &m.client_host);
        out.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
        out.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    out
}

// ---- decoding ----

/// A cursor over untrusted bytes: every read checks the length first.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Flexible versions: compact strings/arrays/bytes and tagged fields.
    flexible: bool,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            at: 0,
            flexible: false,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(RecordError::Truncated(self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn uvarint(&mut self) -> Result<u64, RecordError> {
        let mut v: u64 = 0;
        for i in 0..5 {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::Truncated(self.at))
    }

    /// Length of a nullable string or bytes field (`None` = null), in either encoding.
    fn length(&mut self, wide: bool) -> Result<Option<usize>, RecordError> {
        let len: i64 = if self.flexible {
            self.uvarint()? as i64 - 1
        } else if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        Ok(usize::try_from(len).ok())
    }

    fn nullable_str(&mut self) -> Result<Option<String>, RecordError> {
        match self.length(false)? {
            None => Ok(None),
            Some(n) => {
                let b = self.take(n)?;
                std::str::from_utf8(b)
                    .map(|s| Some(s.to_string()))
                    .map_err(|_| RecordError::NotUtf8)
            }
        }
    }

    fn str(&mut self) -> Result<String, RecordError> {
        self.nullable_str()?.ok_or(RecordError::NullNotAllowed(-1))
    }

    /// A non-null string borrowed from the input (keys: no allocation while loading).
    fn str_ref(&mut self) -> Result<&'a str, RecordError> {
        let n = self.length(false)?.ok_or(RecordError::NullNotAllowed(-1))?;
        std::str::from_utf8(self.take(n)?).map_err(|_| RecordError::NotUtf8)
    }

    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let n = self.length(true)?.ok_or(RecordError::NullNotAllowed(-1))?;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }

    /// Skips a flexible struct's tagged fields (we know none of them).
    fn tagged_fields(&mut self) -> Result<(), RecordError> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint()?;
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let size =
                usize::try_from(self.uvarint()?).map_err(|_| RecordError::Truncated(self.at))?;
            self.take(size)?;
        }
        Ok(())
    }

    fn array_len(&mut self) -> Result<usize, RecordError> {
        let len: i64 = if self.flexible {
            self.uvarint()? as i64 - 1
        } else {
            i64::from(self.i32()?)
        };
        // A null array of members reads as empty; the count is bounded by the bytes left
        // (each member is at least a few bytes) before anything is allocated.
        Ok(usize::try_from(len)
            .unwrap_or(0)
            .min(self.bytes.len() - self.at))
    }

    fn finish(self) -> Result<(), RecordError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            n => Err(RecordError::Trailing(n)),
        }
    }
}

/// Decodes a record key.
pub fn decode_key(bytes: &[u8]) -> Result<RecordKey<'_>, RecordError> {
    let mut r = Reader::new(bytes);
    let version = r.i16()?;
    let key = match version {
        0 | 1 => RecordKey::Offset {
            group: r.str_ref()?,
            topic: r.str_ref()?,
            partition: r.i32()?,
        },
        2 => RecordKey::Group {
            group: r.str_ref()?,
        },
        v if v > 2 => return Ok(RecordKey::Other { version: v }),
        v => {
            return Err(RecordError::UnknownVersion {
                what: "key",
                version: v,
            })
        }
    };
    r.finish()?;
    Ok(key)
}

/// Decodes an OffsetCommitValue, versions 0-4.
pub fn decode_offset_value(bytes: &[u8]) -> Result<CommittedOffset, RecordError> {
    let mut r = Reader::new(bytes);
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnknownVersion {
            what: "offset commit value",
            version,
        });
    }
    r.flexible = version >= 4;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp_ms = r.i64()?;
    if version == 1 {
        let _expire_timestamp_ms = r.i64()?;
    }
    r.tagged_fields()?;
    r.finish()?;
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// Decodes a GroupMetadataValue, versions 0-4.
pub fn decode_group_value(bytes: &[u8]) -> Result<GroupMetadata, RecordError> {
    let mut r = Reader::new(bytes);
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnknownVersion {
            what: "group metadata value",
            version,
        });
    }
    r.flexible = version >= 4;
    let protocol_type = r.str()?;
    let generation = r.i32()?;
    let protocol = r.nullable_str()?;
    let leader = r.nullable_str()?;
    let current_state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.array_len()?;
    let mut members = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let member_id = r.str()?;
        let group_instance_id = if version >= 3 {
            r.nullable_str()?
        } else {
            None
        };
        let client_id = r.str()?;
        let client_host = r.str()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        r.tagged_fields()?;
        members.push(MemberMetadata {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            // v0 has no rebalance timeout; Kafka uses the session timeout for it.
            rebalance_timeout_ms: if version == 0 {
                session_timeout_ms
            } else {
                rebalance_timeout_ms
            },
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    r.tagged_fields()?;
    r.finish()?;
    Ok(GroupMetadata {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._-]{0,40}"
    }

    fn member() -> impl Strategy<Value = MemberMetadata> {
        (
            name(),
            proptest::option::of(name()),
            name(),
            name(),
            any::<i32>(),
            any::<i32>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(m, i, c, h, r, s, sub, asg)| MemberMetadata {
                member_id: m,
                group_instance_id: i,
                client_id: c,
                client_host: h,
                rebalance_timeout_ms: r,
                session_timeout_ms: s,
                subscription: Bytes::from(sub),
                assignment: Bytes::from(asg),
            })
    }

    proptest! {
        #[test]
        fn offset_keys_round_trip(g in name(), t in name(), p in any::<i32>()) {
            let bytes = encode_offset_key(&g, &t, p);
            let key = decode_key(&bytes).unwrap();
            prop_assert_eq!(key, RecordKey::Offset { group: &g, topic: &t, partition: p });
        }

        #[test]
        fn group_keys_round_trip(g in name()) {
            let bytes = encode_group_key(&g);
            prop_assert_eq!(decode_key(&bytes).unwrap(), RecordKey::Group { group: &g });
        }

        #[test]
        fn offset_values_round_trip(o in any::<i64>(), e in any::<i32>(), m in ".{0,100}", ts in any::<i64>()) {
            let c = CommittedOffset { offset: o, leader_epoch: e, metadata: m, commit_timestamp_ms: ts };
            prop_assert_eq!(decode_offset_value(&encode_offset_value(&c)).unwrap(), c);
        }

        #[test]
        fn group_values_round_trip(
            pt in name(), gen in any::<i32>(), p in proptest::option::of(name()),
            l in proptest::option::of(name()), ts in any::<i64>(),
            members in proptest::collection::vec(member(), 0..5),
        ) {
            let g = GroupMetadata { protocol_type: pt, generation: gen, protocol: p, leader: l,
                current_state_timestamp_ms: ts, members };
            prop_assert_eq!(decode_group_value(&encode_group_value(&g)).unwrap(), g);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_key(&bytes);
            let _ = decode_offset_value(&bytes);
            let _ = decode_group_value(&bytes);
        }

        #[test]
        fn garbage_after_a_valid_version_never_panics(v in 0i16..5, bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = v.to_be_bytes().to_vec();
            b.extend_from_slice(&bytes);
            let _ = decode_key(&b);
            let _ = decode_offset_value(&b);
            let _ = decode_group_value(&b);
        }
    }

    #[test]
    fn older_offset_value_versions_decode() {
        // v1: offset, metadata, commit timestamp, expire timestamp.
        let mut v1 = 1i16.to_be_bytes().to_vec();
        v1.extend_from_slice(&42i64.to_be_bytes());
        v1.extend_from_slice(&2i16.to_be_bytes());
        v1.extend_from_slice(b"hi");
        v1.extend_from_slice(&1000i64.to_be_bytes());
        v1.extend_from_slice(&9999i64.to_be_bytes());
        let c = decode_offset_value(&v1).unwrap();
        assert_eq!(
            (
                c.offset,
                c.leader_epoch,
                c.metadata.as_str(),
                c.commit_timestamp_ms
            ),
            (42, -1, "hi", 1000)
        );
    }

    #[test]
    fn flexible_offset_value_v4_decodes_with_tagged_fields() {
        let mut v4 = 4i16.to_be_bytes().to_vec();
        v4.extend_from_slice(&7i64.to_be_bytes());
        v4.extend_from_slice(&3i32.to_be_bytes());
        v4.push(3); // compact string of 2 bytes
        v4.extend_from_slice(b"md");
        v4.extend_from_slice(&5i64.to_be_bytes());
        v4.extend_from_slice(&[1, 0, 2, 0xab, 0xcd]); // one tagged field, tag 0, 2 bytes
        let c = decode_offset_value(&v4).unwrap();
        assert_eq!(
            (
                c.offset,
                c.leader_epoch,
                c.metadata.as_str(),
                c.commit_timestamp_ms
            ),
            (7, 3, "md", 5)
        );
    }

    #[test]
    fn truncated_and_unknown_versions_are_errors() {
        let key = encode_offset_key("g", "t", 1);
        assert!(decode_key(&key[..key.len() - 1]).is_err());
        assert!(matches!(
            decode_key(&(-1i16).to_be_bytes()),
            Err(RecordError::UnknownVersion { .. })
        ));
        assert_eq!(
            decode_key(&5i16.to_be_bytes()).unwrap(),
            RecordKey::Other { version: 5 }
        );
        assert!(decode_offset_value(&9i16.to_be_bytes()).is_err());
    }
}
