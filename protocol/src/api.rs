//! Which Kafka APIs Strata speaks, and the decoding of request frames / encoding of responses.
//!
//! [`SUPPORTED_APIS`] is the one list of API keys and version ranges: `ApiVersions` advertises
//! exactly it, and [`decode_request`] refuses anything outside it. Invariants:
//! - a request is decoded only at a version inside its advertised range;
//! - an `ApiVersions` request at a version we do not know is answered at v0 with
//!   `UNSUPPORTED_VERSION` and our ranges (KIP-511), so a newer client can retry lower;
//! - any other unknown key or version, or bytes that do not decode, is a [`DecodeError`] that the
//!   caller answers by closing the connection, as Kafka brokers do.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    DescribeLogDirsRequest, DescribeQuorumRequest, FetchRequest, FindCoordinatorRequest,
    HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    RequestHeader, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

/// One API key and the versions of it that the broker fully implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedApi {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

const fn api(key: ApiKey, min_version: i16, max_version: i16) -> SupportedApi {
    SupportedApi {
        key,
        min_version,
        max_version,
    }
}

/// Every API and version range the broker implements. Lower bounds are where RecordBatch v2 (magic
/// 2) became the only format (Produce v3, Fetch v4) or where Kafka 4.0 set its floor.
pub const SUPPORTED_APIS: &[SupportedApi] = &[
    api(ApiKey::Produce, 3, 9),
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::ListOffsets, 1, 7),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::ApiVersions, 0, 3),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::CreatePartitions, 0, 3),
    // v2: fenced brokers on request (KIP-1073).
    api(ApiKey::DescribeCluster, 0, 2),
    // The controller quorum: voters, observers, how far each has the metadata log (v1: when
    // each was last heard).
    api(ApiKey::DescribeQuorum, 0, 1),
    // Group coordinator, classic protocol. FindCoordinator v4 batches keys; OffsetFetch v8
    // batches groups; JoinGroup v4 is the member-id round trip, v5 static membership.
    api(ApiKey::FindCoordinator, 0, 4),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::OffsetCommit, 2, 8),
    api(ApiKey::OffsetFetch, 1, 8),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    // Idempotent producer (no transactions): v3 re-initializes a known id, v4 PRODUCER_FENCED.
    api(ApiKey::InitProducerId, 0, 4),
    // Where a leader epoch ends (followers truncate, consumers validate their position). v2 is
    // Kafka 4.0's floor (and kafka-protocol's); v3 adds the follower's replica id, v4 is flexible.
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    // Each broker's log dir, its partitions' sizes and how far each replica is behind the HW
    // (`strata topic describe` shows replica lag with it). v1 is kafka-protocol's floor.
    api(ApiKey::DescribeLogDirs, 1, 4),
];

/// The supported range of `key`, if the broker implements it at all.
pub fn supported_range(key: ApiKey) -> Option<SupportedApi> {
    SUPPORTED_APIS.iter().copied().find(|a| a.key == key)
}

/// A decoded request body of one of the supported APIs.
#[derive(Debug, Clone)]
pub enum Request {
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    Metadata(MetadataRequest),
    ApiVersions(ApiVersionsRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    DescribeConfigs(DescribeConfigsRequest),
    CreatePartitions(CreatePartitionsRequest),
    DescribeCluster(DescribeClusterRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    OffsetDelete(OffsetDeleteRequest),
    ListGroups(ListGroupsRequest),
    DescribeGroups(DescribeGroupsRequest),
    DescribeQuorum(DescribeQuorumRequest),
    DeleteGroups(DeleteGroupsRequest),
    InitProducerId(InitProducerIdRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    DescribeLogDirs(DescribeLogDirsRequest),
}

/// A request frame: its header (API key, version, correlation id, client id) and its body.
#[derive(Debug, Clone)]
pub struct DecodedRequest {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub body: Request,
}

impl DecodedRequest {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// Why a frame could not be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("API {api_key:?} v{version} is not supported")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
}

impl DecodeError {
    /// For an ApiVersions request at an unknown version, the correlation id to answer with;
    /// every other decode error closes the connection.
    pub fn api_versions_fallback(&self) -> Option<i32> {
        match self {
            DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            } => Some(*correlation_id),
            _ => None,
        }
    }
}

/// Decodes a request frame (the bytes after the size prefix).
pub fn decode_request(mut frame: Bytes) -> Result<DecodedRequest, DecodeError> {
    // api_key i16, api_version i16, correlation_id i32 lead every header version.
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApiKey(raw_key))?;
    let range = supported_range(api_key).ok_or(DecodeError::UnknownApiKey(raw_key))?;
    if version < range.min_version || version > range.max_version {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api_key,
        version,
        reason,
    };
    let header_version = api_key.request_header_version(version);
    let header: RequestHeader = decode_body(&mut frame, header_version).map_err(malformed)?;
    macro_rules! body {
        ($variant:ident) => {
            Request::$variant(decode_body(&mut frame, version).map_err(malformed)?)
        };
    }
    let body = match api_key {
        ApiKey::Produce => body!(Produce),
        ApiKey::Fetch => body!(Fetch),
        ApiKey::ListOffsets => body!(ListOffsets),
        ApiKey::Metadata => body!(Metadata),
        ApiKey::ApiVersions => body!(ApiVersions),
        ApiKey::CreateTopics => body!(CreateTopics),
        ApiKey::DeleteTopics => body!(DeleteTopics),
        ApiKey::DescribeConfigs => body!(DescribeConfigs),
        ApiKey::CreatePartitions => body!(CreatePartitions),
        ApiKey::DescribeCluster => body!(DescribeCluster),
        ApiKey::DescribeQuorum => body!(DescribeQuorum),
        ApiKey::FindCoordinator => body!(FindCoordinator),
        ApiKey::JoinGroup => body!(JoinGroup),
        ApiKey::SyncGroup => body!(SyncGroup),
        ApiKey::Heartbeat => body!(Heartbeat),
        ApiKey::LeaveGroup => body!(LeaveGroup),
        ApiKey::OffsetCommit => body!(OffsetCommit),
        ApiKey::OffsetFetch => body!(OffsetFetch),
        ApiKey::OffsetDelete => body!(OffsetDelete),
        ApiKey::ListGroups => body!(ListGroups),
        ApiKey::DescribeGroups => body!(DescribeGroups),
        ApiKey::DeleteGroups => body!(DeleteGroups),
        ApiKey::InitProducerId => body!(InitProducerId),
        ApiKey::OffsetForLeaderEpoch => body!(OffsetForLeaderEpoch),
        ApiKey::DescribeLogDirs => body!(DescribeLogDirs),
        _ => return Err(DecodeError::UnknownApiKey(raw_key)),
    };
    Ok(DecodedRequest {
        header,
        api_key,
        body,
    })
}

/// kafka-protocol reports errors as `anyhow::Error`; we keep only their text.
fn decode_body<T: Decodable>(frame: &mut Bytes, version: i16) -> Result<T, String> {
    T::decode(frame, version).map_err(|e| format!("{e:#}"))
}

/// Why a response could not be encoded: a field holds a value the version cannot carry. This is
/// a broker bug, reported rather than panicking.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode response: {0}")]
pub struct EncodeError(pub String);

/// Encodes a response frame, size prefix included, for a request of `version` with
/// `correlation_id`. The response header version follows the body type and version.
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Bytes, EncodeError> {
    let header_version = R::header_version(version);
    let body_bytes = body
        .compute_size(version)
        .map_err(|e| EncodeError(format!("{e:#}")))?;
    // The frame's length is an i32: a longer response would wrap it and desynchronise the client.
    let frame_bytes = 4 + 1 + body_bytes;
    if i32::try_from(frame_bytes).is_err() {
        return Err(EncodeError(format!(
            "a frame of {frame_bytes} bytes is longer than an i32 length can say"
        )));
    }
    let mut out = BytesMut::with_capacity(4 + frame_bytes);
    out.put_i32(0); // size, patched below
    out.put_i32(correlation_id);
    if header_version >= 1 {
        out.put_u8(0); // no tagged fields in the response header
    }
    body.encode(&mut out, version)
        .map_err(|e| EncodeError(format!("{e:#}")))?;
    let size = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsResponse, MetadataRequest};
    use kafka_protocol::protocol::{encode_request_header_into_buffer, StrBytes};

    fn request_frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = 77;
        header.client_id = Some(StrBytes::from_static_str("test"));
        let mut buf = BytesMut::new();
        encode_request_header_into_buffer(&mut buf, &header).unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn every_supported_api_is_known_to_kafka_protocol_at_its_versions() {
        for a in SUPPORTED_APIS {
            let known = a.key.valid_versions();
            assert!(
                known.min <= a.min_version && a.max_version <= known.max,
                "{a:?}"
            );
        }
    }

    #[test]
    fn decodes_a_metadata_request_at_each_version() {
        for version in 0..=12 {
            let frame = request_frame(ApiKey::Metadata, version, &MetadataRequest::default());
            let req = decode_request(frame).unwrap();
            assert_eq!((req.correlation_id(), req.version()), (77, version));
            assert!(matches!(req.body, Request::Metadata(_)));
        }
    }

    /// OffsetForLeaderEpoch v4 as a follower writes it, byte by byte (flexible: compact
    /// strings and arrays, tagged fields), and the same request from kafka-protocol's encoder at
    /// every supported version.
    #[test]
    fn decodes_offset_for_leader_epoch_from_the_wire() {
        let mut frame = vec![0x00, 0x17, 0x00, 0x04, 0x00, 0x00, 0x00, 0x4d];
        frame.extend_from_slice(&[0x00, 0x01, b't', 0x00]); // client id "t", no tags
        frame.extend_from_slice(&[0x00, 0x00, 0x00, 0x02]); // replica id 2
        frame.extend_from_slice(&[0x02, 0x07]); // one topic, a 6-byte name
        frame.extend_from_slice(b"orders");
        frame.push(0x02); // one partition
        frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 3, 0x00]); // 1, epochs 5 and 3
        frame.extend_from_slice(&[0x00, 0x00]); // the topic's and the request's tags
        let req = decode_request(Bytes::from(frame)).unwrap();
        assert_eq!((req.correlation_id(), req.version()), (77, 4));
        let Request::OffsetForLeaderEpoch(body) = req.body else {
            panic!("{:?}", req.body)
        };
        assert_eq!(body.replica_id.0, 2);
        assert_eq!(body.topics.len(), 1);
        assert_eq!(&*body.topics[0].topic, "orders");
        let p = &body.topics[0].partitions[0];
        assert_eq!(
            (p.partition, p.current_leader_epoch, p.leader_epoch),
            (1, 5, 3)
        );

        use kafka_protocol::messages::offset_for_leader_epoch_request::{
            OffsetForLeaderPartition, OffsetForLeaderTopic,
        };
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(kafka_protocol::messages::TopicName(
                    StrBytes::from_static_str("orders"),
                ))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(7)])]);
        for version in 2..=4 {
            let frame = request_frame(ApiKey::OffsetForLeaderEpoch, version, &request);
            let req = decode_request(frame).unwrap();
            let Request::OffsetForLeaderEpoch(body) = req.body else {
                panic!("v{version}")
            };
            assert_eq!(body.topics, request.topics, "v{version}");
        }
    }

    #[test]
    fn unknown_keys_versions_and_garbage_are_errors() {
        let at_version = |frame: Bytes, version: i16| {
            let mut f = BytesMut::from(&frame[..]);
            f[2..4].copy_from_slice(&version.to_be_bytes());
            f.freeze()
        };
        let frame = at_version(
            request_frame(ApiKey::Metadata, 12, &MetadataRequest::default()),
            99,
        );
        assert!(matches!(
            decode_request(frame),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        let frame = at_version(
            request_frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
            9,
        );
        assert_eq!(
            decode_request(frame).unwrap_err().api_versions_fallback(),
            Some(77)
        );
        assert!(matches!(
            decode_request(Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1])),
            Err(DecodeError::UnknownApiKey(0x7f00))
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 3])),
            Err(DecodeError::TooShort(2))
        ));
        // Metadata v1 whose topic array claims 2^31-1 entries in 4 bytes of body.
        let frame =
            Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_request(frame),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn a_truncated_request_is_malformed() {
        let mut req = MetadataRequest::default();
        req.topics = Some(vec![]);
        let frame = request_frame(ApiKey::Metadata, 9, &req);
        let cut = frame.slice(..frame.len() - 1);
        assert!(matches!(
            decode_request(cut),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn api_versions_v3_response_has_a_v0_header_and_no_tagged_fields() {
        let resp = ApiVersionsResponse::default();
        let bytes = encode_response(5, 3, &resp).unwrap();
        let size = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        assert_eq!(size, bytes.len() - 4);
        assert_eq!(&bytes[4..8], &5i32.to_be_bytes());
        // error_code(2) + api_keys compact len(1) + throttle(4) + tagged fields count(1)
        assert_eq!(bytes.len(), 4 + 4 + 2 + 1 + 4 + 1);
        assert_eq!(
            bytes[bytes.len() - 1],
            0,
            "no tagged fields: librdkafka 2.0.2 needs that"
        );
    }

    /// A response body claiming more bytes than a frame's i32 length can say.
    struct Oversized;

    impl Encodable for Oversized {
        fn encode<B: kafka_protocol::protocol::buf::ByteBufMut>(
            &self,
            _buf: &mut B,
            _version: i16,
        ) -> anyhow::Result<()> {
            panic!("a response whose length does not fit must not be encoded at all")
        }
        fn compute_size(&self, _version: i16) -> anyhow::Result<usize> {
            Ok(i32::MAX as usize)
        }
    }

    impl HeaderVersion for Oversized {
        fn header_version(_version: i16) -> i16 {
            0
        }
    }

    #[test]
    fn a_response_longer_than_a_frame_can_say_is_refused_not_wrapped() {
        let err = encode_response(1, 0, &Oversized).unwrap_err();
        assert!(err.to_string().contains("frame"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_frames_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), key in 0i16..70, version in 0i16..14) {
            let mut frame = BytesMut::new();
            frame.put_i16(key);
            frame.put_i16(version);
            frame.put_slice(&body);
            let _ = decode_request(frame.freeze());
        }
    }
}
