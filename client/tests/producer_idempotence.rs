//! Idempotent producer stories against a scripted fake broker that checks sequences as Kafka
//! does: batches carry the producer id, epoch and contiguous sequences; up to 5 requests per
//! partition are in flight; retries keep order and sequence numbers; a batch written twice is
//! delivered once; UNKNOWN_PRODUCER_ID bumps the epoch; a fenced producer stops.

mod fake_broker;

use std::sync::Arc;
use std::time::Duration;

use fake_broker::{bounded, client_config, default_script, FakeBroker, Reply, View};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use strata_client::producer::{Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use strata_client::{ClientError, Cluster};
use strata_protocol::api::Request;
use strata_protocol::record_batch::BatchHeader;

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        linger_ms: 0,
        // About two 3-byte records per batch, so the records make many batches.
        batch_size: 50,
        request_timeout: Duration::from_secs(3),
        delivery_timeout: Duration::from_secs(10),
        retry_backoff_ms: 20,
        ..ProducerConfig::default()
    }
}

fn values(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("v{i:02}")).collect()
}

async fn start(script: fake_broker::Script) -> (View, FakeBroker, Arc<Cluster>) {
    let view = View::new();
    let broker = FakeBroker::start(1, &view, script).await;
    view.set_topic("t", &[1]);
    let cluster = bounded(
        "connect",
        Cluster::connect(client_config(&broker.bootstrap())),
    )
    .await
    .expect("connect");
    (view, broker, cluster)
}

async fn send_all(producer: &Producer, values: &[String]) -> Vec<DeliveryFuture> {
    let mut futures = Vec::new();
    for v in values {
        let record = ProducerRecord::new("t", v.clone()).with_partition(0);
        futures.push(bounded("send", producer.send(record)).await.expect("send"));
    }
    futures
}

/// Awaits every delivery and checks each record got the offset after the one before.
async fn assert_offsets(futures: Vec<DeliveryFuture>, first: i64) {
    for (i, f) in futures.into_iter().enumerate() {
        let md = bounded("delivery", f).await.expect("delivered");
        assert_eq!(md.offset, first + i as i64, "offset of record {i}");
    }
}

/// (producer id, epoch, base sequence, record count) of every batch in the broker's log.
fn stamps(broker: &FakeBroker) -> Vec<(i64, i16, i32, i32)> {
    broker
        .log("t", 0)
        .iter()
        .map(|b| {
            let h = BatchHeader::parse(&b.bytes).expect("a batch");
            h.validate().expect("a valid batch (CRC covers the stamp)");
            (
                h.producer_id(),
                h.producer_epoch(),
                h.base_sequence(),
                h.record_count(),
            )
        })
        .collect()
}

/// Each batch's base sequence is the previous one's plus its record count, from 0.
fn assert_contiguous(stamps: &[(i64, i16, i32, i32)]) {
    let mut next = 0;
    for &(_, _, seq, count) in stamps {
        assert_eq!(seq, next, "sequences: {stamps:?}");
        next = seq + count;
    }
}

fn produce_records(request: &Request) -> bytes::Bytes {
    match request {
        Request::Produce(p) => p.topic_data[0].partition_data[0]
            .records
            .clone()
            .expect("records"),
        other => panic!("not a produce: {other:?}"),
    }
}

fn base_sequence(records: &bytes::Bytes) -> i32 {
    BatchHeader::parse(records)
        .expect("a batch")
        .base_sequence()
}

/// Answers every produce after `ms` (so requests pile up behind it), else the default.
fn slow_produce(ms: u64) -> fake_broker::Script {
    Arc::new(move |call| {
        if call.api() == ApiKey::Produce {
            return Reply::Delay(Duration::from_millis(ms), Box::new(Reply::Default));
        }
        Reply::Default
    })
}

#[tokio::test]
async fn idempotent_producer_pipelines_five_requests_with_contiguous_sequences() {
    let (_view, broker, cluster) = start(slow_produce(30)).await;
    let producer = Producer::new(cluster, producer_config()).expect("producer config");
    let sent = values(0, 30);
    let futures = send_all(&producer, &sent).await;
    bounded("flush", producer.flush()).await;
    assert_offsets(futures, 0).await;

    assert_eq!(broker.count(ApiKey::InitProducerId), 1);
    assert_eq!(broker.max_produce_in_flight(), 5, "the pipeline is 5 deep");
    let stamps = stamps(&broker);
    assert!(stamps.len() > 5, "several batches: {stamps:?}");
    assert!(stamps.iter().all(|s| (s.0, s.1) == (1001, 0)));
    assert_contiguous(&stamps);
    let flat: Vec<String> = broker.logged_values("t", 0).concat();
    assert_eq!(flat, sent);
}

#[tokio::test]
async fn a_retried_batch_and_the_ones_behind_it_are_resent_in_order_with_their_sequences() {
    // The second produce fails with a retriable error (nothing written); the requests already
    // pipelined behind it then get OUT_OF_ORDER_SEQUENCE_NUMBER from the sequence check.
    let (_view, broker, cluster) = start(Arc::new(|call| {
        if call.api() == ApiKey::Produce {
            if call.nth == 1 {
                return Reply::Delay(
                    Duration::from_millis(30),
                    Box::new(call.produce_error(ResponseError::NotEnoughReplicas.code())),
                );
            }
            return Reply::Delay(Duration::from_millis(10), Box::new(Reply::Default));
        }
        Reply::Default
    }))
    .await;
    let producer = Producer::new(cluster, producer_config()).expect("producer config");
    let sent = values(0, 20);
    let futures = send_all(&producer, &sent).await;
    bounded("flush", producer.flush()).await;
    assert_offsets(futures, 0).await;

    // Written once each, in send order, with contiguous sequences under one identity.
    assert_eq!(broker.logged_values("t", 0).concat(), sent);
    let stamps = stamps(&broker);
    assert_contiguous(&stamps);
    assert!(stamps.iter().all(|s| (s.0, s.1) == (1001, 0)));
    assert_eq!(broker.count(ApiKey::InitProducerId), 1, "no epoch bump");
    // The refused batch went again with the same sequence, before any later batch.
    let produces = broker.requests_of(ApiKey::Produce);
    let refused = produce_records(&produces[1].request.body);
    let resends: Vec<usize> = (2..produces.len())
        .filter(|&i| produce_records(&produces[i].request.body) == refused)
        .collect();
    assert!(!resends.is_empty(), "the refused batch was re-sent");
    let first_resend = resends[0];
    // Everything between the refusal and the re-send was already on the wire behind it.
    for r in &produces[2..first_resend] {
        assert!(base_sequence(&produce_records(&r.request.body)) > base_sequence(&refused));
    }
    assert!(
        produces.len() > stamps.len(),
        "out-of-order requests were retried too"
    );
}

#[tokio::test]
async fn a_batch_written_but_unacknowledged_is_not_delivered_twice() {
    // The first produce is appended but its answer is lost with the connection.
    let (_view, broker, cluster) = start(Arc::new(|call| {
        if call.api() == ApiKey::Produce && call.nth == 0 {
            return Reply::Delay(Duration::from_millis(50), Box::new(Reply::DefaultThenClose));
        }
        Reply::Default
    }))
    .await;
    let producer = Producer::new(cluster, producer_config()).expect("producer config");
    let sent = values(0, 10);
    let futures = send_all(&producer, &sent).await;
    bounded("flush", producer.flush()).await;
    assert_offsets(futures, 0).await;

    assert!(broker.connections() >= 2, "reconnected");
    // The re-sent first batch was a duplicate: the log holds every record once.
    assert_eq!(broker.logged_values("t", 0).concat(), sent);
    assert_contiguous(&stamps(&broker));
    let produces = broker.requests_of(ApiKey::Produce);
    let first = produce_records(&produces[0].request.body);
    assert_eq!(
        produces
            .iter()
            .filter(|r| produce_records(&r.request.body) == first)
            .count(),
        2,
        "the first batch was sent twice, unchanged"
    );
}

#[tokio::test]
async fn unknown_producer_id_bumps_the_epoch_and_restarts_the_sequences() {
    let (_view, broker, cluster) = start(default_script()).await;
    let producer = Producer::new(cluster, producer_config()).expect("producer config");
    let before = values(0, 4);
    let futures = send_all(&producer, &before).await;
    bounded("flush", producer.flush()).await;
    assert_offsets(futures, 0).await;

    // The broker forgets the producer (its records expired, say): the next batch, with a
    // sequence > 0, gets UNKNOWN_PRODUCER_ID.
    broker.forget_producers();
    let after = values(4, 4);
    let futures = send_all(&producer, &after).await;
    bounded("flush", producer.flush()).await;
    assert_offsets(futures, 4).await;

    let inits = broker.requests_of(ApiKey::InitProducerId);
    assert_eq!(inits.len(), 2, "one InitProducerId to start, one to bump");
    match &inits[1].request.body {
        Request::InitProducerId(r) => {
            assert_eq!(
                (r.producer_id.0, r.producer_epoch),
                (1001, 0),
                "KIP-360 bump"
            );
        }
        other => panic!("not InitProducerId: {other:?}"),
    }
    assert_eq!(
        broker.logged_values("t", 0).concat(),
        [before, after].concat()
    );
    let stamps = stamps(&broker);
    let (old, new): (Vec<_>, Vec<_>) = stamps.iter().partition(|s| s.1 == 0);
    assert_contiguous(&old);
    assert!(!new.is_empty() && new.iter().all(|s| (s.0, s.1) == (1001, 1)));
    assert_contiguous(&new);
}

#[tokio::test]
async fn out_of_order_on_the_oldest_batch_fails_it_and_the_rest_go_under_a_bumped_epoch() {
    // The broker says the first batch is out of order: records it was told were written are
    // lost, so that batch fails; the ones behind it are re-stamped under a new epoch.
    let (_view, broker, cluster) = start(Arc::new(|call| {
        if call.api() == ApiKey::Produce && call.nth == 0 {
            return Reply::Delay(
                Duration::from_millis(30),
                Box::new(call.produce_error(ResponseError::OutOfOrderSequenceNumber.code())),
            );
        }
        Reply::Default
    }))
    .await;
    let producer = Producer::new(cluster, producer_config()).expect("producer config");
    let sent = values(0, 12);
    let mut futures = send_all(&producer, &sent).await.into_iter();
    bounded("flush", producer.flush()).await;
    let mut failed = 0;
    let mut delivered = Vec::new();
    for f in futures.by_ref() {
        match bounded("delivery", f).await {
            Err(ClientError::Kafka { error, .. }) => {
                assert_eq!(error, ResponseError::OutOfOrderSequenceNumber);
                assert!(delivered.is_empty(), "only the first batch fails");
                failed += 1;
            }
            Ok(md) => delivered.push(md.offset),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(failed >= 1);
    assert_eq!(delivered, (0..(12 - failed) as i64).collect::<Vec<_>>());
    assert_eq!(
        broker.logged_values("t", 0).concat(),
        sent[failed..].to_vec()
    );
    assert_eq!(broker.count(ApiKey::InitProducerId), 2, "one bump");
    let stamps = stamps(&broker);
    assert!(stamps.iter().all(|s| (s.0, s.1) == (1001, 1)));
    assert_contiguous(&stamps);
}

#[tokio::test]
async fn a_fenced_producer_fails_its_records_and_refuses_new_ones() {
    let (_view, broker, cluster) = start(Arc::new(|call| {
        if call.api() == ApiKey::Produce {
            return call.produce_error(ResponseError::ProducerFenced.code());
        }
        Reply::Default
    }))
    .await;
    let producer = Producer::new(cluster, producer_config()).expect("producer config");
    let futures = send_all(&producer, &values(0, 6)).await;
    bounded("flush", producer.flush()).await;
    for f in futures {
        match bounded("delivery", f).await {
            Err(ClientError::Kafka { error, .. }) => {
                assert_eq!(error, ResponseError::ProducerFenced)
            }
            other => panic!("expected PRODUCER_FENCED, got {other:?}"),
        }
    }
    let record = ProducerRecord::new("t", "late").with_partition(0);
    assert!(matches!(
        bounded("send", producer.send(record)).await,
        Err(ClientError::Kafka { .. })
    ));
    assert!(broker.log("t", 0).is_empty());
}

#[tokio::test]
async fn without_idempotence_one_request_is_in_flight_unless_more_are_asked_for() {
    for (max_in_flight, expected) in [(None, 1), (Some(5), 5)] {
        let (_view, broker, cluster) = start(slow_produce(20)).await;
        let producer = Producer::new(
            cluster,
            ProducerConfig {
                enable_idempotence: Some(false),
                max_in_flight,
                ..producer_config()
            },
        )
        .expect("producer config");
        let sent = values(0, 24);
        let futures = send_all(&producer, &sent).await;
        bounded("flush", producer.flush()).await;
        assert_offsets(futures, 0).await;
        assert_eq!(broker.count(ApiKey::InitProducerId), 0);
        assert_eq!(broker.max_produce_in_flight(), expected);
        assert!(stamps(&broker).iter().all(|s| (s.0, s.2) == (-1, -1)));
        assert_eq!(broker.logged_values("t", 0).concat(), sent);
    }
}

#[test]
fn idempotence_is_on_by_default_and_conflicting_explicit_settings_are_refused() {
    let default = ProducerConfig::default();
    assert_eq!(default.resolve().unwrap(), (true, 5));
    // Not explicit: acks=1 or more than 5 in flight turn it off, as in Kafka.
    let acks1 = ProducerConfig {
        acks: Acks::Leader,
        ..ProducerConfig::default()
    };
    assert_eq!(acks1.resolve().unwrap(), (false, 1));
    let many = ProducerConfig {
        max_in_flight: Some(8),
        ..ProducerConfig::default()
    };
    assert_eq!(many.resolve().unwrap(), (false, 8));
    // Explicit: a conflict is a configuration error.
    for bad in [
        ProducerConfig {
            enable_idempotence: Some(true),
            ..acks1.clone()
        },
        ProducerConfig {
            enable_idempotence: Some(true),
            ..many.clone()
        },
        ProducerConfig {
            max_in_flight: Some(0),
            ..ProducerConfig::default()
        },
    ] {
        assert!(
            matches!(bad.resolve(), Err(ClientError::Invalid(_))),
            "{bad:?}"
        );
    }
}
