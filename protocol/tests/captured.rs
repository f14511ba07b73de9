//! Request frames captured from real clients decode to what they are.
//!
//! `tests/captured/*.bin` are client->broker frames (size prefix stripped) recorded by
//! `tests/captured/capture.py` through a proxy in front of a Strata broker: kcat (librdkafka
//! 2.0.2), confluent-kafka (its bundled librdkafka) and kafka-python. A file is named
//! `<client>-<api key>-v<version>-<n>.bin`. This test needs neither a broker nor Python.
//!
//! Every frame of a supported API and version must decode to that key and version (Produce: every
//! partition's records must pass `validate_batches`, compressed with the codec the capture used);
//! a frame outside the supported table must be refused the way the connection expects.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use strata_protocol::api::{decode_request, supported_range, DecodeError, Request};
use strata_protocol::kafka_protocol::messages::ApiKey;
use strata_protocol::record_batch::{validate_batches, BatchIter, Compression};

struct Captured {
    name: String,
    client: String,
    api_key: i16,
    version: i16,
    frame: Bytes,
}

fn captured_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captured")
}

/// Every captured frame, in file name order, with what its name says it is.
fn captured() -> Vec<Captured> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(captured_dir())
        .expect("tests/captured exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let stem = name.trim_end_matches(".bin");
            // <client>-<key>-v<version>-<n>; the client name may itself hold '-'.
            let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
            assert_eq!(
                parts.len(),
                4,
                "{name}: not <client>-<key>-v<version>-<n>.bin"
            );
            let (n, version, key, client) = (parts[0], parts[1], parts[2], parts[3]);
            n.parse::<u32>().unwrap_or_else(|_| panic!("{name}: bad n"));
            let version = version
                .strip_prefix('v')
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name}: bad version"));
            let api_key = key
                .parse()
                .unwrap_or_else(|_| panic!("{name}: bad api key"));
            let frame = Bytes::from(std::fs::read(&path).expect("read a captured frame"));
            let client = client.to_string();
            Captured {
                name,
                client,
                api_key,
                version,
                frame,
            }
        })
        .collect()
}

fn body_key(body: &Request) -> ApiKey {
    match body {
        Request::Produce(_) => ApiKey::Produce,
        Request::Fetch(_) => ApiKey::Fetch,
        Request::ListOffsets(_) => ApiKey::ListOffsets,
        Request::Metadata(_) => ApiKey::Metadata,
        Request::ApiVersions(_) => ApiKey::ApiVersions,
        Request::CreateTopics(_) => ApiKey::CreateTopics,
        Request::DeleteTopics(_) => ApiKey::DeleteTopics,
        Request::DescribeConfigs(_) => ApiKey::DescribeConfigs,
        Request::CreatePartitions(_) => ApiKey::CreatePartitions,
        Request::DescribeCluster(_) => ApiKey::DescribeCluster,
        Request::DescribeQuorum(_) => ApiKey::DescribeQuorum,
        Request::FindCoordinator(_) => ApiKey::FindCoordinator,
        Request::JoinGroup(_) => ApiKey::JoinGroup,
        Request::SyncGroup(_) => ApiKey::SyncGroup,
        Request::Heartbeat(_) => ApiKey::Heartbeat,
        Request::LeaveGroup(_) => ApiKey::LeaveGroup,
        Request::OffsetCommit(_) => ApiKey::OffsetCommit,
        Request::OffsetFetch(_) => ApiKey::OffsetFetch,
        Request::OffsetDelete(_) => ApiKey::OffsetDelete,
        Request::ListGroups(_) => ApiKey::ListGroups,
        Request::DescribeGroups(_) => ApiKey::DescribeGroups,
        Request::DeleteGroups(_) => ApiKey::DeleteGroups,
        Request::InitProducerId(_) => ApiKey::InitProducerId,
        Request::OffsetForLeaderEpoch(_) => ApiKey::OffsetForLeaderEpoch,
        Request::DescribeLogDirs(_) => ApiKey::DescribeLogDirs,
    }
}

/// The codec each client was told to produce with by capture.py.
fn expected_codec(client: &str) -> Compression {
    match client {
        "kcat" => Compression::Zstd,
        "confluent_kafka" => Compression::Gzip,
        "kafka_python" => Compression::Lz4,
        other => panic!("no codec known for client {other}"),
    }
}

fn is_supported(api_key: i16, version: i16) -> bool {
    ApiKey::try_from(api_key)
        .ok()
        .and_then(supported_range)
        .is_some_and(|r| (r.min_version..=r.max_version).contains(&version))
}

#[test]
fn the_captured_corpus_is_there() {
    let all = captured();
    assert!(all.len() >= 20, "only {} captured frames", all.len());
    assert!(
        all.len() <= 100,
        "{} captured frames: keep the corpus small",
        all.len()
    );
    let clients: BTreeSet<&str> = all.iter().map(|c| c.client.as_str()).collect();
    assert_eq!(
        clients,
        BTreeSet::from(["confluent_kafka", "kafka_python", "kcat"])
    );
    for c in &all {
        assert!(c.frame.len() < 64 * 1024, "{}: frame too large", c.name);
        // The name agrees with the frame's own header.
        let key = i16::from_be_bytes([c.frame[0], c.frame[1]]);
        let version = i16::from_be_bytes([c.frame[2], c.frame[3]]);
        assert_eq!((key, version), (c.api_key, c.version), "{}", c.name);
    }
    // Each client produced and fetched, and the admin clients' APIs are there.
    let have: BTreeSet<(&str, i16)> = all.iter().map(|c| (c.client.as_str(), c.api_key)).collect();
    for client in &clients {
        let client = *client;
        for key in [
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::Metadata,
            ApiKey::ApiVersions,
        ] {
            assert!(
                have.contains(&(client, key as i16)),
                "{client} {key:?} missing"
            );
        }
    }
    assert!(have.contains(&("confluent_kafka", ApiKey::CreateTopics as i16)));
    assert!(have.contains(&("confluent_kafka", ApiKey::DescribeConfigs as i16)));
    assert!(have.contains(&("kafka_python", ApiKey::CreateTopics as i16)));
    // Every client joined a consumer group, committed, and produced idempotently.
    for client in &clients {
        let client = *client;
        for key in [
            ApiKey::FindCoordinator,
            ApiKey::JoinGroup,
            ApiKey::SyncGroup,
            ApiKey::OffsetFetch,
            ApiKey::OffsetCommit,
            ApiKey::LeaveGroup,
            ApiKey::InitProducerId,
        ] {
            if client == "kafka_python" && key == ApiKey::InitProducerId {
                continue; // its idempotent producer is not exercised by capture.py
            }
            assert!(
                have.contains(&(client, key as i16)),
                "{client} {key:?} missing"
            );
        }
    }
    assert!(have.contains(&("kafka_python", ApiKey::ListGroups as i16)));
    assert!(have.contains(&("kafka_python", ApiKey::DescribeGroups as i16)));
}

#[test]
fn every_captured_frame_decodes_to_its_api_key_and_version() {
    let mut decoded = 0;
    for c in captured() {
        if !is_supported(c.api_key, c.version) {
            continue;
        }
        let req = decode_request(c.frame.clone())
            .unwrap_or_else(|e| panic!("{}: does not decode: {e}", c.name));
        assert_eq!(req.api_key as i16, c.api_key, "{}", c.name);
        assert_eq!(body_key(&req.body) as i16, c.api_key, "{}", c.name);
        assert_eq!(req.version(), c.version, "{}", c.name);
        assert_eq!(req.header.request_api_key, c.api_key, "{}", c.name);
        assert!(req.header.client_id.is_some(), "{}: no client id", c.name);
        if let Request::Produce(produce) = &req.body {
            let mut partitions = 0;
            for topic in &produce.topic_data {
                for p in &topic.partition_data {
                    partitions += 1;
                    let records = p
                        .records
                        .as_ref()
                        .unwrap_or_else(|| panic!("{}: a partition without records", c.name));
                    let info = validate_batches(records)
                        .unwrap_or_else(|e| panic!("{}: invalid record set: {e}", c.name));
                    assert!(info.record_count > 0, "{}", c.name);
                    for (_, batch) in BatchIter::new(records) {
                        assert_eq!(batch.compression(), expected_codec(&c.client), "{}", c.name);
                    }
                }
            }
            assert!(partitions > 0, "{}: a produce without partitions", c.name);
        }
        decoded += 1;
    }
    assert!(decoded >= 20, "only {decoded} frames of supported APIs");
}

#[test]
fn captured_frames_outside_the_supported_table_are_refused_as_the_connection_expects() {
    let mut refused = 0;
    for c in captured() {
        if is_supported(c.api_key, c.version) {
            continue;
        }
        refused += 1;
        let correlation_id = i32::from_be_bytes(c.frame[4..8].try_into().unwrap());
        match decode_request(c.frame.clone()) {
            Err(DecodeError::UnsupportedVersion {
                api_key,
                version,
                correlation_id: id,
            }) => {
                assert_eq!(
                    (api_key as i16, version, id),
                    (c.api_key, c.version, correlation_id)
                );
                // A too-new ApiVersions (kafka-python's v4) is answered at v0 so the client retries.
                let err = decode_request(c.frame.clone()).unwrap_err();
                let fallback = err.api_versions_fallback();
                if api_key == ApiKey::ApiVersions {
                    assert_eq!(fallback, Some(correlation_id), "{}", c.name);
                } else {
                    assert_eq!(fallback, None, "{}", c.name);
                }
            }
            Err(DecodeError::UnknownApiKey(key)) => assert_eq!(key, c.api_key, "{}", c.name),
            other => panic!("{}: expected a refusal, got {other:?}", c.name),
        }
    }
    // kafka-python 2.x+ opens with ApiVersions v4, above our v3.
    assert!(
        refused >= 1,
        "no captured frame outside the supported table"
    );
}
