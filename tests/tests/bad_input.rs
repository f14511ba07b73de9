//! A misbehaving client cannot hurt anyone else: oversized frames, garbage, truncated requests,
//! unknown APIs and versions, invalid topic names and corrupt record batches each get the Kafka
//! error the protocol names or close only that connection, and a normal client keeps working.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use bytes::{Buf, Bytes};
use common::{kcat_read_all, require_tool, run, unique_topic, Broker};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(broker: &Broker) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", broker.port())).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// A complete request frame (size prefix included).
fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Vec<u8> {
    common::request_frame(key as i16, version, 42, "bad-input-test", body)
}

/// Reads one response frame; returns its body after the correlation id (and, for flexible
/// response headers, the empty tagged-field byte, which the caller skips).
fn read_response(s: &mut TcpStream) -> Bytes {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).expect("a response size");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).expect("a response body");
    let mut b = Bytes::from(body);
    assert_eq!(b.get_i32(), 42, "correlation id");
    b
}

/// The broker closed this connection: a read sees end-of-stream or a reset, not a timeout.
fn assert_closed(s: &mut TcpStream, what: &str, broker: &Broker) {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // a response to an earlier request may come first
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return
            }
            Err(e) => panic!(
                "{what}: connection still open after {IO_TIMEOUT:?} ({e})\n{}",
                broker.logs()
            ),
        }
    }
}

/// A well-behaved client on a new connection still gets answers, and the broker lives.
fn assert_still_serving(broker: &mut Broker, after: &str) {
    assert!(
        broker.is_running(),
        "broker died after {after}\n{}",
        broker.logs()
    );
    let mut s = connect(broker);
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("check"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    s.write_all(&frame(ApiKey::ApiVersions, 3, &req)).unwrap();
    let mut body = read_response(&mut s);
    let resp = ApiVersionsResponse::decode(&mut body, 3).unwrap();
    assert_eq!(resp.error_code, 0, "after {after}");
    assert!(!resp.api_keys.is_empty());
}

fn kcat_roundtrip(broker: &Broker) {
    require_tool("kcat", "-V", "apt-get install kcat");
    let topic = unique_topic("after-bad-input");
    let mut produce = Command::new("kcat");
    produce.args(["-P", "-b", &broker.bootstrap(), "-t", &topic, "-K:"]);
    run(
        produce,
        Some(b"k1:still\nk2:works\n"),
        Duration::from_secs(30),
    )
    .assert_success(|| broker.logs());
    let out = kcat_read_all(broker, &topic, None, "%k=%s\n", Duration::from_secs(30));
    assert_eq!(out, "k1=still\nk2=works\n");
}

#[test]
fn frames_over_the_limit_garbage_and_truncation_close_only_their_connection() {
    let mut broker = Broker::start(&["socket.request.max.bytes=65536"]);
    let bystander = connect(&broker); // an idle, well-behaved connection that must survive

    // A size prefix above socket.request.max.bytes.
    let mut s = connect(&broker);
    s.write_all(&(10_000_000i32).to_be_bytes()).unwrap();
    s.write_all(&[0u8; 1000]).unwrap();
    assert_closed(&mut s, "oversized frame", &broker);
    assert_still_serving(&mut broker, "an oversized frame");

    // A negative size.
    let mut s = connect(&broker);
    s.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert_closed(&mut s, "negative size", &broker);

    // Garbage bytes: a small size, then noise where the header should be.
    let mut s = connect(&broker);
    let noise: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    s.write_all(&(noise.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&noise).unwrap();
    assert_closed(&mut s, "garbage", &broker);
    assert_still_serving(&mut broker, "garbage");

    // A frame too short to hold a request header.
    let mut s = connect(&broker);
    s.write_all(&[0, 0, 0, 3, 0, 3, 0]).unwrap();
    assert_closed(&mut s, "short frame", &broker);

    // A truncated request: a Metadata v9 frame whose size is right but whose body is cut short.
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![metadata_request::MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str("some-topic"))))]);
    let mut f = frame(ApiKey::Metadata, 9, &req);
    f.truncate(f.len() - 6);
    let size = (f.len() - 4) as i32;
    f[0..4].copy_from_slice(&size.to_be_bytes());
    let mut s = connect(&broker);
    s.write_all(&f).unwrap();
    assert_closed(&mut s, "truncated request", &broker);

    // A client that dies halfway through sending a frame.
    let mut s = connect(&broker);
    s.write_all(&(1000i32).to_be_bytes()).unwrap();
    s.write_all(&[1u8; 10]).unwrap();
    drop(s);

    assert_still_serving(&mut broker, "truncated requests");
    drop(bystander);
    kcat_roundtrip(&broker);
}

#[test]
fn unknown_apis_and_versions_get_what_the_protocol_says() {
    let mut broker = Broker::start(&[]);

    // ApiVersions at a version the broker does not know: a v0 answer with UNSUPPORTED_VERSION
    // and the supported ranges, so the client can retry lower (KIP-511).
    let mut f = frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    f[6..8].copy_from_slice(&(77i16).to_be_bytes());
    let mut s = connect(&broker);
    s.write_all(&f).unwrap();
    let mut body = read_response(&mut s);
    let resp = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(resp.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));

    // Another API at an unsupported version: the connection is closed (the response could not
    // be encoded at a version the broker does not know).
    let mut f = frame(ApiKey::Metadata, 12, &MetadataRequest::default());
    f[6..8].copy_from_slice(&(99i16).to_be_bytes());
    let mut s = connect(&broker);
    s.write_all(&f).unwrap();
    assert_closed(&mut s, "unsupported Metadata version", &broker);

    // An API key no Kafka has.
    let mut f = frame(ApiKey::Metadata, 1, &MetadataRequest::default());
    f[4..6].copy_from_slice(&(9999i16).to_be_bytes());
    let mut s = connect(&broker);
    s.write_all(&f).unwrap();
    assert_closed(&mut s, "unknown API key", &broker);

    // A real Kafka API this broker does not implement (EndTxn: no transactions).
    let mut f = frame(ApiKey::Metadata, 1, &MetadataRequest::default());
    f[4..6].copy_from_slice(&(ApiKey::EndTxn as i16).to_be_bytes());
    let mut s = connect(&broker);
    s.write_all(&f).unwrap();
    assert_closed(&mut s, "unimplemented API", &broker);

    assert_still_serving(&mut broker, "unknown APIs");
    kcat_roundtrip(&broker);
}

#[test]
fn invalid_topic_names_and_corrupt_batches_get_kafka_error_codes() {
    let mut broker = Broker::start(&[]);
    let mut s = connect(&broker);

    // Metadata for an invalid name: INVALID_TOPIC_EXCEPTION (17), nothing created.
    let mut req = MetadataRequest::default().with_allow_auto_topic_creation(true);
    let bad_names = ["bad name!", "..", &"x".repeat(250)];
    req.topics = Some(
        bad_names
            .iter()
            .map(|n| {
                metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
            })
            .collect(),
    );
    s.write_all(&frame(ApiKey::Metadata, 9, &req)).unwrap();
    let mut body = read_response(&mut s);
    body.advance(1); // response header tagged fields (v9 is flexible)
    let resp = MetadataResponse::decode(&mut body, 9).unwrap();
    assert_eq!(resp.topics.len(), bad_names.len());
    assert!(
        resp.topics.iter().all(|t| t.error_code == 17),
        "{:?}",
        resp.topics
    );

    // CreateTopics with an invalid name: INVALID_TOPIC_EXCEPTION for that topic only.
    let topics = vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("no/slashes")))
            .with_num_partitions(1)
            .with_replication_factor(1),
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("fine-topic")))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ];
    s.write_all(&frame(
        ApiKey::CreateTopics,
        5,
        &CreateTopicsRequest::default().with_topics(topics),
    ))
    .unwrap();
    let mut body = read_response(&mut s);
    body.advance(1);
    let resp = CreateTopicsResponse::decode(&mut body, 5).unwrap();
    assert_eq!(
        (resp.topics[0].error_code, resp.topics[1].error_code),
        (17, 0)
    );

    // A produce whose batch has a flipped bit: CORRUPT_MESSAGE (2) and nothing appended.
    let good =
        strata_protocol::record_batch::build_batch(0, 1_700_000_000_000, &[(Some(b"k"), b"value")]);
    let mut bad = good.to_vec();
    let last = bad.len() - 3;
    bad[last] ^= 0x10;
    let produce = |records: Vec<u8>| {
        let data = vec![produce_request::PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(Bytes::from(records)))];
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("fine-topic")))
                .with_partition_data(data)])
    };
    for (records, expected_error, expected_offset) in [(bad, 2i16, -1i64), (good.to_vec(), 0, 0)] {
        s.write_all(&frame(ApiKey::Produce, 8, &produce(records)))
            .unwrap();
        let mut body = read_response(&mut s);
        let resp = ProduceResponse::decode(&mut body, 8).unwrap();
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(
            (p.error_code, p.base_offset),
            (expected_error, expected_offset),
            "{p:?}"
        );
    }
    // A truncated batch inside an otherwise well-formed request: CORRUPT_MESSAGE too.
    let truncated = good[..good.len() - 4].to_vec();
    s.write_all(&frame(ApiKey::Produce, 8, &produce(truncated)))
        .unwrap();
    let mut body = read_response(&mut s);
    let resp = ProduceResponse::decode(&mut body, 8).unwrap();
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 2);

    assert_still_serving(&mut broker, "invalid names and corrupt batches");
    // The good batch is the only record in the topic.
    let out = kcat_read_all(
        &broker,
        "fine-topic",
        None,
        "%k=%s@%o\n",
        Duration::from_secs(30),
    );
    assert_eq!(out, "k=value@0\n");
}

#[test]
fn many_bad_connections_at_once_do_not_stop_a_producer() {
    let mut broker = Broker::start(&["socket.request.max.bytes=65536"]);
    let port = broker.port();
    let attackers: Vec<_> = (0..8u32)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..50u32 {
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    let seed = t * 1000 + i;
                    let noise: Vec<u8> = (0..64u32)
                        .map(|j| ((seed * 31 + j).wrapping_mul(2_654_435_761) >> 7) as u8)
                        .collect();
                    let _ = s.write_all(&noise);
                }
            })
        })
        .collect();
    kcat_roundtrip(&broker);
    for a in attackers {
        a.join().unwrap();
    }
    assert_still_serving(&mut broker, "a storm of garbage connections");
}
