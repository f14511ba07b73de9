//! Producer stories against scripted fake brokers: retries after a leader change or a dropped
//! connection keep the records of a partition in order; non-retriable errors and timeouts end
//! in typed errors.

mod fake_broker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_broker::{bounded, client_config, default_script, FakeBroker, Reply, View};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use strata_client::producer::{Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use strata_client::{ClientError, Cluster};
use strata_protocol::api::Request;

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        linger_ms: 0,
        // About two 3-byte records per batch, so ten records make several batches.
        batch_size: 50,
        request_timeout: Duration::from_secs(3),
        delivery_timeout: Duration::from_secs(10),
        retry_backoff_ms: 20,
        ..ProducerConfig::default()
    }
}

fn values(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("v{i:02}")).collect()
}

async fn send_all(
    producer: &Producer,
    topic: &str,
    partition: i32,
    values: &[String],
) -> Vec<DeliveryFuture> {
    let mut futures = Vec::new();
    for v in values {
        let record = ProducerRecord::new(topic, v.clone()).with_partition(partition);
        futures.push(bounded("send", producer.send(record)).await.expect("send"));
    }
    futures
}

/// The partition of the (single) batch a produce request carries.
fn produce_partition(request: &Request) -> i32 {
    match request {
        Request::Produce(p) => p.topic_data[0].partition_data[0].index,
        other => panic!("not a produce: {other:?}"),
    }
}

/// Every batch a broker appended, checked to be in send order across batches.
fn assert_delivered_in_order(broker: &FakeBroker, topic: &str, partition: i32, sent: &[String]) {
    let batches = broker.logged_values(topic, partition);
    let flat: Vec<String> = batches.iter().flatten().cloned().collect();
    assert_eq!(flat, sent, "batches as appended: {batches:?}");
}

#[tokio::test]
async fn producer_moves_to_the_new_leader_after_not_leader_and_delivers_in_order() {
    let view = View::new();
    // Broker 1 leads at first; its first produce answer says NOT_LEADER_OR_FOLLOWER and the
    // metadata now names broker 2. It answers late, so later batches queue behind the first.
    let b1 = FakeBroker::start(
        1,
        &view,
        Arc::new(|call| {
            if call.api() == ApiKey::Produce {
                call.view.set_leader("t", 0, 2);
                return Reply::Delay(
                    Duration::from_millis(100),
                    Box::new(call.produce_error(ResponseError::NotLeaderOrFollower.code())),
                );
            }
            Reply::Default
        }),
    )
    .await;
    let b2 = FakeBroker::start(2, &view, default_script()).await;
    view.set_topic("t", &[1]);
    let cluster = bounded("connect", Cluster::connect(client_config(&b1.bootstrap())))
        .await
        .expect("connect");
    let producer = Producer::new(cluster, producer_config()).expect("producer config");
    let sent = values(10);
    let futures = send_all(&producer, "t", 0, &sent).await;
    bounded("flush", producer.flush()).await;

    for (i, f) in futures.into_iter().enumerate() {
        let md = bounded("delivery", f).await.expect("delivered");
        assert_eq!((md.topic.as_str(), md.partition), ("t", 0));
        assert_eq!(
            md.offset, i as i64,
            "offset the fake assigned to record {i}"
        );
    }
    // At most 5 produces (the pipeline) reached the old leader, all refused; nothing was sent
    // to the new leader before the failed batch's retry.
    assert!((1..=5).contains(&b1.count(ApiKey::Produce)));
    assert!(b1.log("t", 0).is_empty());
    assert_delivered_in_order(&b2, "t", 0, &sent);
    assert!(
        b2.log("t", 0).len() > 1,
        "the test needs several batches: {:?}",
        b2.logged_values("t", 0)
    );
    // The retry went first: the old leader's rejected batch is the new leader's first batch.
    let rejected = match &b1.requests_of(ApiKey::Produce)[0].request.body {
        Request::Produce(p) => p.topic_data[0].partition_data[0].records.clone().unwrap(),
        _ => unreachable!(),
    };
    assert_eq!(
        fake_broker::batch_values(&rejected),
        b2.logged_values("t", 0)[0]
    );
    // Metadata was refreshed after the error (once on connect, then at least once more).
    assert!(b1.count(ApiKey::Metadata) + b2.count(ApiKey::Metadata) >= 2);
}

async fn dropped_connection_story(first_answer: fn(&fake_broker::Call) -> Reply) {
    let view = View::new();
    let b1 = FakeBroker::start(
        1,
        &view,
        Arc::new(move |call| {
            if call.api() == ApiKey::Produce && call.nth == 0 {
                return Reply::Delay(Duration::from_millis(100), Box::new(first_answer(call)));
            }
            Reply::Default
        }),
    )
    .await;
    view.set_topic("t", &[1]);
    let cluster = bounded("connect", Cluster::connect(client_config(&b1.bootstrap())))
        .await
        .expect("connect");
    let producer = Producer::new(cluster, producer_config()).expect("producer config");
    let sent = values(8);
    let futures = send_all(&producer, "t", 0, &sent).await;
    bounded("flush", producer.flush()).await;
    for (i, f) in futures.into_iter().enumerate() {
        let md = bounded("delivery", f).await.expect("delivered");
        assert_eq!(md.offset, i as i64);
    }
    // The dropped request was not appended; its retry went out first, on a new connection.
    assert_delivered_in_order(&b1, "t", 0, &sent);
    assert!(b1.connections() >= 2, "reconnected");
    let produces = b1.requests_of(ApiKey::Produce);
    assert_eq!(produces[0].connection, 0);
    // The requests pipelined behind it were lost with the connection; every later produce went
    // on a new one, starting with the dropped batch again (same records, same sequence).
    let first_retry = produces
        .iter()
        .position(|r| r.connection > 0)
        .expect("a retry on a new connection");
    assert!(first_retry <= 5, "at most 5 in flight: {first_retry}");
    assert!(produces[first_retry..].iter().all(|r| r.connection > 0));
    assert_eq!(
        produce_records(&produces[0].request.body),
        produce_records(&produces[first_retry].request.body)
    );
}

/// The record set of a produce request's (single) partition.
fn produce_records(request: &Request) -> bytes::Bytes {
    match request {
        Request::Produce(p) => p.topic_data[0].partition_data[0]
            .records
            .clone()
            .expect("records"),
        other => panic!("not a produce: {other:?}"),
    }
}

#[tokio::test]
async fn producer_retries_on_a_new_connection_when_the_broker_drops_it_mid_request() {
    dropped_connection_story(|_| Reply::Close).await;
}

#[tokio::test]
async fn producer_retries_when_the_broker_dies_halfway_through_its_answer() {
    dropped_connection_story(|call| {
        let full = call.frame(&fake_broker::produce_error(call.produce(), 0));
        Reply::RawThenClose(full.slice(..full.len() / 2))
    })
    .await;
}

#[tokio::test]
async fn producer_reports_non_retriable_errors_with_their_code_and_other_partitions_go_on() {
    for error in [ResponseError::MessageTooLarge, ResponseError::InvalidRecord] {
        let code = error.code();
        let view = View::new();
        let b1 = FakeBroker::start(
            1,
            &view,
            Arc::new(move |call| {
                if call.api() == ApiKey::Produce && produce_partition(&call.request.body) == 0 {
                    return call.produce_error(code);
                }
                Reply::Default
            }),
        )
        .await;
        view.set_topic("t", &[1, 1]);
        let cluster = bounded("connect", Cluster::connect(client_config(&b1.bootstrap())))
            .await
            .expect("connect");
        let producer = Producer::new(cluster, producer_config()).expect("producer config");
        let bad = send_all(&producer, "t", 0, &values(3)).await;
        let good_values = values(5);
        let good = send_all(&producer, "t", 1, &good_values).await;
        bounded("flush", producer.flush()).await;

        for f in bad {
            match bounded("delivery", f).await {
                Err(ClientError::Kafka {
                    code: got,
                    error: e,
                    ..
                }) => {
                    assert_eq!(got, code);
                    assert_eq!(e, error);
                }
                other => panic!("expected Kafka error {code}, got {other:?}"),
            }
        }
        for (i, f) in good.into_iter().enumerate() {
            let md = bounded("delivery", f).await.expect("partition 1 delivered");
            assert_eq!((md.partition, md.offset), (1, i as i64));
        }
        assert_delivered_in_order(&b1, "t", 1, &good_values);
        // Not retried: every record of partition 0 went out exactly once.
        let attempted: Vec<String> = b1
            .requests_of(ApiKey::Produce)
            .iter()
            .filter(|r| produce_partition(&r.request.body) == 0)
            .flat_map(|r| match &r.request.body {
                Request::Produce(p) => {
                    let records = p.topic_data[0].partition_data[0].records.clone();
                    let records = records.unwrap_or_default();
                    strata_protocol::record_batch::BatchIter::new(&records)
                        .flat_map(|(at, h)| {
                            fake_broker::batch_values(&records.slice(at..at + h.total_bytes()))
                        })
                        .collect::<Vec<_>>()
                }
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(
            attempted,
            values(3),
            "{error:?}: each record once, no retries"
        );
        assert!(b1.log("t", 0).is_empty());

        // The producer still works for the failed partition's neighbours afterwards.
        let later = send_all(&producer, "t", 1, &["after".to_string()]).await;
        bounded("flush", producer.flush()).await;
        for f in later {
            assert_eq!(bounded("delivery", f).await.unwrap().offset, 5);
        }
    }
}

#[tokio::test]
async fn producer_fails_the_delivery_after_the_delivery_timeout_when_the_broker_never_answers() {
    let view = View::new();
    let b1 = FakeBroker::start(
        1,
        &view,
        Arc::new(|call| {
            if call.api() == ApiKey::Produce {
                return Reply::Silence;
            }
            Reply::Default
        }),
    )
    .await;
    view.set_topic("t", &[1]);
    let cluster = bounded("connect", Cluster::connect(client_config(&b1.bootstrap())))
        .await
        .expect("connect");
    let delivery_timeout = Duration::from_millis(1200);
    let producer = Producer::new(
        cluster,
        ProducerConfig {
            request_timeout: Duration::from_millis(300),
            delivery_timeout,
            retry_backoff_ms: 20,
            ..producer_config()
        },
    )
    .expect("producer config");
    let started = Instant::now();
    let futures = send_all(&producer, "t", 0, &values(3)).await;
    bounded("flush", producer.flush()).await;
    for f in futures {
        match bounded("delivery", f).await {
            Err(ClientError::Timeout { api, .. }) => assert_eq!(api, "Produce"),
            // Requests pipelined behind the one that timed out fail with its connection.
            Err(ClientError::ConnectionLost { reason, .. }) if reason.contains("timed out") => {}
            other => panic!("expected a produce timeout, got {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= delivery_timeout - Duration::from_millis(350),
        "failed too early: {elapsed:?}"
    );
    assert!(
        elapsed <= delivery_timeout + Duration::from_millis(700),
        "failed too late: {elapsed:?}"
    );
    assert!(b1.count(ApiKey::Produce) >= 1);
    assert!(b1.log("t", 0).is_empty());
}

#[tokio::test]
async fn producer_reconnects_after_a_request_timeout_on_a_connection_that_stopped_answering() {
    // The first connection goes silent at its first produce (a half-open TCP connection);
    // any new connection works. A timed-out request must not keep the client on the dead one.
    let view = View::new();
    let b1 = FakeBroker::start(
        1,
        &view,
        Arc::new(|call| {
            if call.api() == ApiKey::Produce && call.connection == 0 {
                return Reply::Silence;
            }
            Reply::Default
        }),
    )
    .await;
    view.set_topic("t", &[1]);
    let cluster = bounded("connect", Cluster::connect(client_config(&b1.bootstrap())))
        .await
        .expect("connect");
    let producer = Producer::new(
        cluster,
        ProducerConfig {
            request_timeout: Duration::from_millis(300),
            delivery_timeout: Duration::from_secs(5),
            ..producer_config()
        },
    )
    .expect("producer config");
    let sent = values(4);
    let futures = send_all(&producer, "t", 0, &sent).await;
    bounded("flush", producer.flush()).await;
    for (i, f) in futures.into_iter().enumerate() {
        let md = bounded("delivery", f)
            .await
            .expect("delivered after reconnecting");
        assert_eq!(md.offset, i as i64);
    }
    assert_delivered_in_order(&b1, "t", 0, &sent);
    assert!(b1.connections() >= 2);
}

#[tokio::test]
async fn producer_sends_the_records_of_one_accumulated_batch_as_one_record_batch() {
    let view = View::new();
    let b1 = FakeBroker::start(1, &view, default_script()).await;
    view.set_topic("t", &[1]);
    let cluster = bounded("connect", Cluster::connect(client_config(&b1.bootstrap())))
        .await
        .expect("connect");
    // Everything lingers into one batch until flush.
    let producer = Producer::new(
        cluster,
        ProducerConfig {
            linger_ms: 60_000,
            batch_size: 1 << 20,
            ..producer_config()
        },
    )
    .expect("producer config");
    let sent = values(5);
    let futures = send_all(&producer, "t", 0, &sent).await;
    bounded("flush", producer.flush()).await;
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(bounded("delivery", f).await.unwrap().offset, i as i64);
    }
    assert_eq!(b1.count(ApiKey::Produce), 1);
    // One v2 batch of five records stamped with the id InitProducerId gave (idempotence is on
    // by default) and base sequence 0, not five batches.
    assert_eq!(b1.count(ApiKey::InitProducerId), 1);
    assert_eq!(b1.logged_values("t", 0), vec![sent]);
    let batch = &b1.log("t", 0)[0].bytes;
    let header = strata_protocol::record_batch::BatchHeader::parse(batch).unwrap();
    assert_eq!(header.record_count(), 5);
    assert_eq!(header.base_sequence(), 0);
    assert_eq!((header.producer_id(), header.producer_epoch()), (1001, 0));
    header.validate().expect("a valid batch");
}

#[tokio::test]
async fn producer_waits_for_a_partition_without_a_leader_to_get_one() {
    let view = View::new();
    let b1 = FakeBroker::start(1, &view, default_script()).await;
    // No leader (-1) at first: LEADER_NOT_AVAILABLE is retriable with a metadata refresh.
    view.set_topic("t", &[-1]);
    let cluster = bounded("connect", Cluster::connect(client_config(&b1.bootstrap())))
        .await
        .expect("connect");
    let producer = Producer::new(cluster, producer_config()).expect("producer config");
    let sent = values(3);
    let futures = send_all(&producer, "t", 0, &sent).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b1.count(ApiKey::Produce), 0);
    view.set_leader("t", 0, 1);
    bounded("flush", producer.flush()).await;
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(bounded("delivery", f).await.unwrap().offset, i as i64);
    }
    assert_delivered_in_order(&b1, "t", 0, &sent);
}

#[tokio::test]
async fn producer_reports_a_produce_answer_without_its_partition_as_malformed() {
    let view = View::new();
    let b1 = FakeBroker::start(
        1,
        &view,
        Arc::new(|call| {
            if call.api() == ApiKey::Produce {
                // An answer about another partition only.
                let mut r = fake_broker::produce_error(call.produce(), 0);
                r.responses[0].partition_responses[0].index = 7;
                return Reply::Produce(r);
            }
            Reply::Default
        }),
    )
    .await;
    view.set_topic("t", &[1]);
    let cluster = bounded("connect", Cluster::connect(client_config(&b1.bootstrap())))
        .await
        .expect("connect");
    let producer = Producer::new(cluster, producer_config()).expect("producer config");
    let futures = send_all(&producer, "t", 0, &values(2)).await;
    bounded("flush", producer.flush()).await;
    for f in futures {
        match bounded("delivery", f).await {
            Err(ClientError::Malformed { api: "Produce", .. }) => {}
            other => panic!("expected a malformed produce answer, got {other:?}"),
        }
    }
}
