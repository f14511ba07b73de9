//! Reads from a follower (KIP-392) against scripted fake brokers: a consumer that names its rack
//! goes where the leader sends it, and goes back to the leader when the follower refuses, cannot
//! be reached, or the preference has expired.

mod fake_broker;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fake_broker::{
    bounded, client_config, fetch_partition, fetch_response, Call, FakeBroker, Reply, View,
};
use kafka_protocol::messages::{ApiKey, BrokerId};
use kafka_protocol::ResponseError;
use strata_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord};
use strata_client::Cluster;
use strata_protocol::api::Request;
use strata_protocol::record_batch::build_batch;

const LEADER: i32 = 1;
const FOLLOWER: i32 = 2;

fn batch(values: &[&str]) -> Bytes {
    let records: Vec<(Option<&[u8]>, &[u8])> =
        values.iter().map(|v| (None, v.as_bytes())).collect();
    build_batch(0, 1_000, &records)
}

/// A leader that sends every consumer naming a rack to the follower (no records), as Strata
/// and Kafka do, and serves everyone else itself.
fn redirecting_leader(call: &Call) -> Reply {
    if call.api() == ApiKey::Fetch && !call.fetch().rack_id.is_empty() {
        let p = &call.fetch().topics[0].partitions[0];
        let mut data = fetch_partition(p.partition, 0, 3, None);
        data.preferred_read_replica = BrokerId(FOLLOWER);
        return Reply::Fetch(fetch_response(&call.fetch().topics[0].topic.0, data));
    }
    Reply::Default
}

/// Both brokers hold the same log of three records; partition 0 of "t" is led by broker 1.
async fn cluster_with(follower: fake_broker::Script) -> (View, FakeBroker, FakeBroker) {
    let view = View::new();
    let leader = FakeBroker::start(LEADER, &view, Arc::new(redirecting_leader)).await;
    let follower = FakeBroker::start(FOLLOWER, &view, follower).await;
    view.set_topic("t", &[LEADER]);
    for b in [&leader, &follower] {
        b.append("t", 0, batch(&["a", "b", "c"]));
    }
    (view, leader, follower)
}

async fn consumer(leader: &FakeBroker, rack: &str, max_age_ms: u64) -> Consumer {
    let cluster = bounded(
        "connect",
        Cluster::connect(client_config(&leader.bootstrap())),
    )
    .await
    .expect("connect");
    let mut c = Consumer::new(
        cluster,
        ConsumerConfig {
            fetch_max_wait_ms: 50,
            auto_offset_reset: AutoOffsetReset::Earliest,
            client_rack: rack.to_string(),
            metadata_max_age_ms: max_age_ms,
            ..ConsumerConfig::default()
        },
    );
    c.assign(&[("t".to_string(), 0)]);
    c
}

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

fn values(records: &[ConsumerRecord]) -> Vec<(i64, String)> {
    records
        .iter()
        .map(|r| {
            let v = r.value.as_deref().unwrap_or_default();
            (r.offset, String::from_utf8_lossy(v).into_owned())
        })
        .collect()
}

fn fetches(b: &FakeBroker) -> Vec<(String, i64)> {
    b.requests_of(ApiKey::Fetch)
        .iter()
        .map(|r| match &r.request.body {
            Request::Fetch(f) => (
                f.rack_id.to_string(),
                f.topics[0].partitions[0].fetch_offset,
            ),
            other => panic!("not a fetch: {other:?}"),
        })
        .collect()
}

fn abc() -> Vec<(i64, String)> {
    vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]
}

#[tokio::test]
async fn a_consumer_with_a_rack_reads_from_the_follower_the_leader_names() {
    let (_view, leader, follower) = cluster_with(Arc::new(|_| Reply::Default)).await;
    let mut consumer = consumer(&leader, "rack-2", 300_000).await;

    assert_eq!(values(&poll_records(&mut consumer).await), abc());
    // More polls (nothing new): they all go to the follower.
    for _ in 0..3 {
        let more = consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll");
        assert!(more.is_empty());
    }
    assert_eq!(fetches(&leader), vec![("rack-2".to_string(), 0)]);
    let at_follower = fetches(&follower);
    assert!(at_follower.len() >= 4, "{at_follower:?}");
    assert_eq!(at_follower[0], ("rack-2".to_string(), 0));
    assert!(at_follower[1..].iter().all(|(_, offset)| *offset == 3));
}

#[tokio::test]
async fn a_consumer_without_a_rack_stays_on_the_leader() {
    let (_view, leader, follower) = cluster_with(Arc::new(|_| Reply::Default)).await;
    let mut consumer = consumer(&leader, "", 300_000).await;
    assert_eq!(values(&poll_records(&mut consumer).await), abc());
    assert_eq!(fetches(&leader), vec![(String::new(), 0)]);
    assert_eq!(follower.count(ApiKey::Fetch), 0);
}

#[tokio::test]
async fn offset_out_of_range_from_the_follower_goes_back_to_the_leader_without_a_reset() {
    // The follower's high watermark lags: it refuses the first fetch, then serves.
    let (_view, leader, follower) = cluster_with(Arc::new(|call| {
        if call.api() == ApiKey::Fetch && call.nth == 0 {
            return call.fetch_error(ResponseError::OffsetOutOfRange.code());
        }
        Reply::Default
    }))
    .await;
    let mut consumer = consumer(&leader, "rack-2", 300_000).await;

    assert_eq!(values(&poll_records(&mut consumer).await), abc());
    // Leader (redirect) → follower (out of range) → leader again (redirect) → follower.
    assert_eq!(fetches(&leader).len(), 2);
    assert_eq!(fetches(&follower).len(), 2);
    assert!(fetches(&leader).iter().all(|(_, offset)| *offset == 0));
    // The position was not reset by the follower's answer: only the first ListOffsets.
    assert_eq!(leader.count(ApiKey::ListOffsets), 1);
}

#[tokio::test]
async fn not_leader_or_follower_from_the_follower_goes_back_to_the_leader() {
    let (_view, leader, follower) = cluster_with(Arc::new(|call| {
        if call.api() == ApiKey::Fetch {
            return call.fetch_error(ResponseError::NotLeaderOrFollower.code());
        }
        Reply::Default
    }))
    .await;
    // The follower's refusal is not an error for the user: the leader is asked again.
    let mut consumer = consumer(&leader, "rack-2", 300_000).await;
    let read = poll_after(&mut consumer, &leader, 2).await;
    assert!(read.is_empty());
    assert!(follower.count(ApiKey::Fetch) >= 1);
    assert!(fetches(&leader).iter().all(|(_, offset)| *offset == 0));
}

/// Polls (each poll short) until `broker` has received `n` fetches; returns what was read.
async fn poll_after(consumer: &mut Consumer, broker: &FakeBroker, n: usize) -> Vec<ConsumerRecord> {
    bounded("fetches", async {
        let mut read = Vec::new();
        while broker.count(ApiKey::Fetch) < n {
            read.extend(
                consumer
                    .poll(Duration::from_millis(50))
                    .await
                    .expect("poll"),
            );
        }
        read
    })
    .await
}

#[tokio::test]
async fn a_lost_follower_connection_sends_the_consumer_back_to_the_leader() {
    let (_view, leader, follower) = cluster_with(Arc::new(|call| {
        if call.api() == ApiKey::Fetch {
            return Reply::Close;
        }
        Reply::Default
    }))
    .await;
    let mut consumer = consumer(&leader, "rack-2", 300_000).await;
    let read = poll_after(&mut consumer, &leader, 2).await;
    assert!(read.is_empty());
    assert!(follower.count(ApiKey::Fetch) >= 1);
}

#[tokio::test]
async fn the_leader_is_asked_again_once_the_preference_expires() {
    let (_view, leader, follower) = cluster_with(Arc::new(|_| Reply::Default)).await;
    let mut consumer = consumer(&leader, "rack-2", 200).await;
    assert_eq!(values(&poll_records(&mut consumer).await), abc());
    assert_eq!(leader.count(ApiKey::Fetch), 1);
    // Polling on, the leader is asked again after 200 ms, and sends us back to the follower.
    poll_after(&mut consumer, &leader, 3).await;
    let offsets: Vec<i64> = fetches(&leader).iter().map(|f| f.1).collect();
    assert_eq!(offsets, vec![0, 3, 3]);
    assert!(follower.count(ApiKey::Fetch) >= 3);
}
