//! The client side of the wire, sans-io: request frames out, response frames in. The broker uses
//! it where it is itself a client (a follower fetching from its leader) without depending on
//! `strata-client`.
//!
//! Invariants:
//! - [`encode_request`] returns a whole frame, size prefix included, or an error (a value the
//!   version cannot carry, a frame longer than an i32 length can say); it never panics;
//! - [`decode_response`] reads a response frame body (the bytes after the size prefix) of any
//!   length, truncated or garbage included, and returns a value or an error, never a panic.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::api::EncodeError;

/// Why a response frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResponseDecodeError {
    #[error("response frame of {0} bytes is too short for a header")]
    TooShort(usize),
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// Encodes a request frame (size prefix, request header, body) of `api_key` at `version`. The
/// header version follows the body type and version (flexible versions carry tagged fields).
pub fn encode_request<R: Encodable + HeaderVersion>(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &R,
) -> Result<Bytes, EncodeError> {
    fn text(e: impl std::fmt::Display) -> EncodeError {
        EncodeError(format!("{e:#}"))
    }
    let mut header = RequestHeader::default();
    header.request_api_key = api_key;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_string(client_id.to_string()));
    let header_version = R::header_version(version);
    let size = header.compute_size(header_version).map_err(text)?
        + body.compute_size(version).map_err(text)?;
    // The frame's length is an i32: a longer request would wrap it.
    let size_i32 = i32::try_from(size).map_err(|_| {
        EncodeError(format!(
            "a request of {size} bytes is longer than an i32 length can say"
        ))
    })?;
    let mut out = BytesMut::with_capacity(4 + size);
    out.put_i32(size_i32);
    header.encode(&mut out, header_version).map_err(text)?;
    body.encode(&mut out, version).map_err(text)?;
    if out.len() != 4 + size {
        return Err(EncodeError(format!(
            "encoded {} bytes where {size} were computed",
            out.len() - 4
        )));
    }
    Ok(out.freeze())
}

/// Decodes a response frame body (after the size prefix) to a request of `version`: the
/// correlation id from its header (v1 headers also carry tagged fields) and the body.
pub fn decode_response<R: Decodable + HeaderVersion>(
    version: i16,
    mut frame_body: Bytes,
) -> Result<(i32, R), ResponseDecodeError> {
    if frame_body.len() < 4 {
        return Err(ResponseDecodeError::TooShort(frame_body.len()));
    }
    fn malformed(e: impl std::fmt::Display) -> ResponseDecodeError {
        ResponseDecodeError::Malformed(format!("{e:#}"))
    }
    let header =
        ResponseHeader::decode(&mut frame_body, R::header_version(version)).map_err(malformed)?;
    let body = R::decode(&mut frame_body, version).map_err(malformed)?;
    Ok((header.correlation_id, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{decode_request, encode_response, Request};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::offset_for_leader_epoch_response::{
        EpochEndOffset, OffsetForLeaderTopicResult,
    };
    use kafka_protocol::messages::{
        ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
        OffsetForLeaderEpochResponse, TopicName,
    };

    fn name(s: &'static str) -> TopicName {
        TopicName(StrBytes::from_static_str(s))
    }

    fn follower_fetch() -> FetchRequest {
        let mut p = FetchPartition::default();
        p.partition = 3;
        p.current_leader_epoch = 7;
        p.fetch_offset = 1234;
        p.last_fetched_epoch = 6;
        p.partition_max_bytes = 1 << 20;
        let mut t = FetchTopic::default();
        t.topic = name("orders");
        t.partitions = vec![p];
        let mut r = FetchRequest::default();
        r.replica_id = BrokerId(2);
        r.max_wait_ms = 500;
        r.min_bytes = 1;
        r.max_bytes = 10 << 20;
        r.session_id = 0;
        r.session_epoch = -1;
        r.topics = vec![t];
        r
    }

    fn epoch_request() -> OffsetForLeaderEpochRequest {
        let mut p = OffsetForLeaderPartition::default();
        p.partition = 1;
        p.current_leader_epoch = 5;
        p.leader_epoch = 4;
        let mut t = OffsetForLeaderTopic::default();
        t.topic = name("orders");
        t.partitions = vec![p];
        let mut r = OffsetForLeaderEpochRequest::default();
        r.replica_id = BrokerId(2);
        r.topics = vec![t];
        r
    }

    /// The body after the size prefix, checking the prefix says its length.
    fn body(frame: &Bytes) -> Bytes {
        let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(size, frame.len() - 4);
        frame.slice(4..)
    }

    #[test]
    fn a_follower_fetch_v12_is_decoded_by_the_server_as_sent() {
        let sent = follower_fetch();
        let frame =
            encode_request(ApiKey::Fetch as i16, 12, 41, "strata-replica-2", &sent).unwrap();
        let got = decode_request(body(&frame)).unwrap();
        assert_eq!((got.correlation_id(), got.version()), (41, 12));
        assert_eq!(
            got.header.client_id.as_deref(),
            Some("strata-replica-2"),
            "flexible header keeps the client id"
        );
        match got.body {
            Request::Fetch(f) => assert_eq!(f, sent),
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn an_offset_for_leader_epoch_v4_request_decodes_to_the_same_value() {
        let sent = epoch_request();
        let key = ApiKey::OffsetForLeaderEpoch as i16;
        let frame = encode_request(key, 4, 9, "strata-replica-2", &sent).unwrap();
        let mut b = body(&frame);
        let header = RequestHeader::decode(&mut b, key_header_version(4)).unwrap();
        assert_eq!(
            (
                header.request_api_key,
                header.request_api_version,
                header.correlation_id
            ),
            (key, 4, 9)
        );
        let got = OffsetForLeaderEpochRequest::decode(&mut b, 4).unwrap();
        assert_eq!(got, sent);
        assert!(b.is_empty());
    }

    fn key_header_version(version: i16) -> i16 {
        OffsetForLeaderEpochRequest::header_version(version)
    }

    fn fetch_answer() -> FetchResponse {
        let mut p = PartitionData::default();
        p.partition_index = 3;
        p.high_watermark = 99;
        p.log_start_offset = 10;
        p.records = Some(crate::record_batch::build_batch(
            98,
            1,
            &[(None, b"v".as_slice())],
        ));
        let mut t = FetchableTopicResponse::default();
        t.topic = name("orders");
        t.partitions = vec![p];
        let mut r = FetchResponse::default();
        r.responses = vec![t];
        r
    }

    #[test]
    fn responses_encoded_by_the_server_decode_to_the_same_value() {
        let sent = fetch_answer();
        let frame = encode_response(41, 12, &sent).unwrap();
        let (cid, got): (i32, FetchResponse) = decode_response(12, body(&frame)).unwrap();
        assert_eq!((cid, got), (41, sent));

        let mut e = EpochEndOffset::default();
        e.partition = 1;
        e.leader_epoch = 4;
        e.end_offset = 77;
        let mut t = OffsetForLeaderTopicResult::default();
        t.topic = name("orders");
        t.partitions = vec![e];
        let mut sent = OffsetForLeaderEpochResponse::default();
        sent.topics = vec![t];
        for version in [3, 4] {
            let frame = encode_response(8, version, &sent).unwrap();
            let (cid, got): (i32, OffsetForLeaderEpochResponse) =
                decode_response(version, body(&frame)).unwrap();
            assert_eq!((cid, got), (8, sent.clone()), "v{version}");
        }
    }

    #[test]
    fn truncated_and_garbage_responses_are_errors_not_panics() {
        let frame = encode_response(41, 12, &fetch_answer()).unwrap();
        let whole = body(&frame);
        for cut in 0..whole.len() {
            assert!(
                decode_response::<FetchResponse>(12, whole.slice(..cut)).is_err(),
                "a response cut at {cut} of {} bytes decoded",
                whole.len()
            );
        }
        assert!(matches!(
            decode_response::<FetchResponse>(12, Bytes::from_static(&[0, 0])),
            Err(ResponseDecodeError::TooShort(2))
        ));
        // A topic array that claims 2^31 entries.
        let lying = Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert!(decode_response::<OffsetForLeaderEpochResponse>(4, lying).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_responses_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            version in 0i16..14,
        ) {
            let b = Bytes::from(bytes);
            let _ = decode_response::<FetchResponse>(version, b.clone());
            let _ = decode_response::<OffsetForLeaderEpochResponse>(version.min(4), b);
        }
    }
}
