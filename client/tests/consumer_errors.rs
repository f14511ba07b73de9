//! Consumer stories against scripted fake brokers: offset resets, errors surfaced without a
//! reset policy, leader moves, and fetch responses cut inside a batch.

mod fake_broker;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fake_broker::{
    bounded, client_config, default_script, fetch_partition, fetch_response, Call, FakeBroker,
    Reply, View,
};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use strata_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, SeekTo};
use strata_client::{ClientError, Cluster};
use strata_protocol::api::Request;
use strata_protocol::record_batch::build_batch;

fn consumer_config(reset: AutoOffsetReset) -> ConsumerConfig {
    ConsumerConfig {
        fetch_max_wait_ms: 50,
        auto_offset_reset: reset,
        ..ConsumerConfig::default()
    }
}

/// A batch of records with values `values` (no keys); the fake patches its base offset.
fn batch(values: &[&str]) -> Bytes {
    let records: Vec<(Option<&[u8]>, &[u8])> =
        values.iter().map(|v| (None, v.as_bytes())).collect();
    build_batch(0, 1_000, &records)
}

fn batch_at(base: i64, values: &[&str]) -> Bytes {
    let records: Vec<(Option<&[u8]>, &[u8])> =
        values.iter().map(|v| (None, v.as_bytes())).collect();
    build_batch(base, 1_000, &records)
}

/// The fetch offset the client asked for in a recorded Fetch of one partition.
fn fetch_offset(request: &Request) -> i64 {
    match request {
        Request::Fetch(f) => f.topics[0].partitions[0].fetch_offset,
        other => panic!("not a fetch: {other:?}"),
    }
}

fn fetch_offset_of(call: &Call) -> i64 {
    fetch_offset(&call.request.body)
}

fn offsets_and_values(records: &[ConsumerRecord]) -> Vec<(i64, String)> {
    records
        .iter()
        .map(|r| {
            let v = r.value.as_deref().unwrap_or(b"<null>");
            (r.offset, String::from_utf8_lossy(v).into_owned())
        })
        .collect()
}

/// Polls until some records arrive (each poll bounded; overall bounded).
async fn poll_records(consumer: &mut Consumer) -> Vec<ConsumerRecord> {
    bounded("records", async {
        loop {
            let records = consumer
                .poll(Duration::from_millis(500))
                .await
                .expect("poll");
            if !records.is_empty() {
                return records;
            }
        }
    })
    .await
}

async fn connect(broker: &FakeBroker) -> Arc<Cluster> {
    bounded(
        "connect",
        Cluster::connect(client_config(&broker.bootstrap())),
    )
    .await
    .expect("connect")
}

#[tokio::test]
async fn consumer_resets_to_the_earliest_offset_after_offset_out_of_range() {
    let view = View::new();
    // The log starts at 5; offset 100 is beyond its end.
    let b1 = FakeBroker::start(
        1,
        &view,
        Arc::new(|call| {
            if call.api() == ApiKey::Fetch && fetch_offset_of(call) >= 100 {
                return call.fetch_error(ResponseError::OffsetOutOfRange.code());
            }
            Reply::Default
        }),
    )
    .await;
    view.set_topic("t", &[1]);
    b1.set_log_start("t", 0, 5);
    b1.append("t", 0, batch(&["a", "b"]));
    b1.append("t", 0, batch(&["c"]));

    let mut consumer = Consumer::new(
        connect(&b1).await,
        consumer_config(AutoOffsetReset::Earliest),
    );
    consumer.assign(&[("t".to_string(), 0)]);
    bounded("seek", consumer.seek("t", 0, SeekTo::Offset(100)))
        .await
        .unwrap();
    let records = poll_records(&mut consumer).await;
    assert_eq!(
        offsets_and_values(&records),
        vec![(5, "a".into()), (6, "b".into()), (7, "c".into())]
    );
    assert_eq!(consumer.position("t", 0), Some(8));
    // Fetch at 100 → OFFSET_OUT_OF_RANGE → ListOffsets(earliest) → fetch from 5.
    let list = b1.requests_of(ApiKey::ListOffsets);
    assert_eq!(list.len(), 1);
    match &list[0].request.body {
        Request::ListOffsets(l) => assert_eq!(l.topics[0].partitions[0].timestamp, -2),
        other => panic!("{other:?}"),
    }
    let fetched: Vec<i64> = b1
        .requests_of(ApiKey::Fetch)
        .iter()
        .map(|r| fetch_offset(&r.request.body))
        .collect();
    assert_eq!(fetched, vec![100, 5]);
}

#[tokio::test]
async fn consumer_without_a_reset_policy_reports_offset_out_of_range_and_leaves_the_partition() {
    let view = View::new();
    let b1 = FakeBroker::start(
        1,
        &view,
        Arc::new(|call| {
            if call.api() == ApiKey::Fetch {
                return call.fetch_error(ResponseError::OffsetOutOfRange.code());
            }
            Reply::Default
        }),
    )
    .await;
    view.set_topic("t", &[1]);
    let mut consumer = Consumer::new(connect(&b1).await, consumer_config(AutoOffsetReset::None));
    consumer.assign(&[("t".to_string(), 0)]);
    bounded("seek", consumer.seek("t", 0, SeekTo::Offset(42)))
        .await
        .unwrap();
    let result = bounded("poll", consumer.poll(Duration::from_secs(2))).await;
    match result {
        Err(ClientError::Kafka { code, error, .. }) => {
            assert_eq!(code, 1);
            assert_eq!(error, ResponseError::OffsetOutOfRange);
        }
        other => panic!("expected OFFSET_OUT_OF_RANGE, got {other:?}"),
    }
    assert_eq!(consumer.position("t", 0), None);
    // Reported once, then left alone until seek: no more fetches, no ListOffsets.
    let fetches = b1.count(ApiKey::Fetch);
    let again = bounded("poll", consumer.poll(Duration::from_millis(300))).await;
    assert!(matches!(again, Ok(ref r) if r.is_empty()), "{again:?}");
    assert_eq!(b1.count(ApiKey::Fetch), fetches);
    assert_eq!(b1.count(ApiKey::ListOffsets), 0);
    // A seek brings it back.
    bounded("seek", consumer.seek("t", 0, SeekTo::Offset(0)))
        .await
        .unwrap();
    let _ = bounded("poll", consumer.poll(Duration::from_millis(300))).await;
    assert!(b1.count(ApiKey::Fetch) > fetches);
}

#[tokio::test]
async fn consumer_follows_the_leader_after_not_leader_and_fetches_from_the_new_one() {
    let view = View::new();
    let b1 = FakeBroker::start(
        1,
        &view,
        Arc::new(|call| {
            if call.api() == ApiKey::Fetch {
                call.view.set_leader("t", 0, 2);
                return call.fetch_error(ResponseError::NotLeaderOrFollower.code());
            }
            Reply::Default
        }),
    )
    .await;
    let b2 = FakeBroker::start(2, &view, default_script()).await;
    view.set_topic("t", &[1]);
    b2.append("t", 0, batch(&["x", "y"]));

    let mut consumer = Consumer::new(connect(&b1).await, consumer_config(AutoOffsetReset::None));
    consumer.assign(&[("t".to_string(), 0)]);
    bounded("seek", consumer.seek("t", 0, SeekTo::Offset(0)))
        .await
        .unwrap();
    let records = poll_records(&mut consumer).await;
    assert_eq!(
        offsets_and_values(&records),
        vec![(0, "x".into()), (1, "y".into())]
    );
    assert_eq!(consumer.position("t", 0), Some(2));
    assert_eq!(b1.count(ApiKey::Fetch), 1, "the old leader was asked once");
    assert!(b2.count(ApiKey::Fetch) >= 1);
    // Metadata: once on connect, then a refresh after NOT_LEADER.
    assert!(b1.count(ApiKey::Metadata) + b2.count(ApiKey::Metadata) >= 2);
}

#[tokio::test]
async fn consumer_hands_out_only_complete_batches_when_a_fetch_ends_in_a_partial_one() {
    let a = batch_at(0, &["r0", "r1"]);
    let b = batch_at(2, &["r2"]);
    let c = batch_at(3, &["r3", "r4"]);
    let first = Bytes::from([&a[..], &b[..], &c[..c.len() - 7]].concat());
    let rest = c.clone();
    let view = View::new();
    let b1 = FakeBroker::start(
        1,
        &view,
        Arc::new(move |call| {
            if call.api() == ApiKey::Fetch {
                let records = match fetch_offset_of(call) {
                    0 => first.clone(),
                    3 => rest.clone(),
                    _ => Bytes::new(),
                };
                return Reply::Fetch(fetch_response("t", fetch_partition(0, 0, 5, Some(records))));
            }
            Reply::Default
        }),
    )
    .await;
    view.set_topic("t", &[1]);
    let mut consumer = Consumer::new(connect(&b1).await, consumer_config(AutoOffsetReset::None));
    consumer.assign(&[("t".to_string(), 0)]);
    bounded("seek", consumer.seek("t", 0, SeekTo::Offset(0)))
        .await
        .unwrap();
    let records = poll_records(&mut consumer).await;
    assert_eq!(
        offsets_and_values(&records),
        vec![(0, "r0".into()), (1, "r1".into()), (2, "r2".into())]
    );
    assert_eq!(consumer.position("t", 0), Some(3));
    let records = poll_records(&mut consumer).await;
    assert_eq!(
        offsets_and_values(&records),
        vec![(3, "r3".into()), (4, "r4".into())]
    );
    assert_eq!(consumer.position("t", 0), Some(5));
    let fetched: Vec<i64> = b1
        .requests_of(ApiKey::Fetch)
        .iter()
        .map(|r| fetch_offset(&r.request.body))
        .collect();
    assert_eq!(fetched, vec![0, 3]);
}

#[tokio::test]
async fn consumer_reports_a_corrupt_batch_as_malformed_and_keeps_its_position() {
    let mut corrupt = batch_at(0, &["good"]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff; // breaks the CRC
    let corrupt = Bytes::from(corrupt);
    let view = View::new();
    let b1 = FakeBroker::start(
        1,
        &view,
        Arc::new(move |call| {
            if call.api() == ApiKey::Fetch {
                return Reply::Fetch(fetch_response(
                    "t",
                    fetch_partition(0, 0, 1, Some(corrupt.clone())),
                ));
            }
            Reply::Default
        }),
    )
    .await;
    view.set_topic("t", &[1]);
    let mut consumer = Consumer::new(connect(&b1).await, consumer_config(AutoOffsetReset::None));
    consumer.assign(&[("t".to_string(), 0)]);
    bounded("seek", consumer.seek("t", 0, SeekTo::Offset(0)))
        .await
        .unwrap();
    match bounded("poll", consumer.poll(Duration::from_secs(2))).await {
        Err(ClientError::Malformed { api: "Fetch", .. }) => {}
        other => panic!("expected a malformed fetch, got {other:?}"),
    }
    assert_eq!(consumer.position("t", 0), Some(0));
}

#[tokio::test]
async fn consumer_refetches_on_a_new_connection_when_the_leader_drops_it() {
    let view = View::new();
    let b1 = FakeBroker::start(
        1,
        &view,
        Arc::new(|call| {
            if call.api() == ApiKey::Fetch && call.nth == 0 {
                return Reply::Close;
            }
            Reply::Default
        }),
    )
    .await;
    view.set_topic("t", &[1]);
    b1.append("t", 0, batch(&["p", "q"]));
    let mut consumer = Consumer::new(
        connect(&b1).await,
        consumer_config(AutoOffsetReset::Earliest),
    );
    consumer.assign(&[("t".to_string(), 0)]);
    let records = poll_records(&mut consumer).await;
    assert_eq!(
        offsets_and_values(&records),
        vec![(0, "p".into()), (1, "q".into())]
    );
    assert!(b1.connections() >= 2);
    let fetches = b1.requests_of(ApiKey::Fetch);
    assert!(fetches.len() >= 2);
    assert!(fetches.iter().all(|r| fetch_offset(&r.request.body) == 0));
}
