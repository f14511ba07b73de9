//! Cluster / connection stories against scripted fake brokers: garbage from the broker fails
//! the request (never panics) and the next request gets a fresh connection; an unreachable
//! bootstrap is reported within the connect timeout.

mod fake_broker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use fake_broker::{bounded, client_config, Call, FakeBroker, Reply, View};
use kafka_protocol::messages::ApiKey;
use strata_client::{ClientError, Cluster};

/// A broker whose second Metadata answer (the first after connecting) is `garbage`.
async fn broker_with_bad_second_metadata(garbage: fn(&Call) -> Reply) -> (View, FakeBroker) {
    let view = View::new();
    let b1 = FakeBroker::start(
        1,
        &view,
        Arc::new(move |call| {
            if call.api() == ApiKey::Metadata && call.nth == 1 {
                return garbage(call);
            }
            Reply::Default
        }),
    )
    .await;
    view.set_topic("t", &[1, 1]);
    (view, b1)
}

fn metadata_frame(call: &Call) -> Bytes {
    call.frame(&call.view.metadata(None))
}

/// Connects, makes the second Metadata request meet the garbage, checks the error, then checks
/// that the next request succeeds (on a new connection when `reconnects`).
async fn garbage_story(
    garbage: fn(&Call) -> Reply,
    check: fn(&ClientError) -> bool,
    reconnects: bool,
) {
    let (_view, b1) = broker_with_bad_second_metadata(garbage).await;
    let cluster = bounded("connect", Cluster::connect(client_config(&b1.bootstrap())))
        .await
        .expect("connect");
    assert_eq!(b1.connections(), 1);
    let err = bounded("bad refresh", cluster.refresh(&[]))
        .await
        .expect_err("garbage must fail the request");
    assert!(check(&err), "unexpected error: {err:?}");
    let meta = bounded("good refresh", cluster.refresh(&[]))
        .await
        .expect("the next request works");
    assert_eq!(meta.topics["t"].partitions.len(), 2);
    assert_eq!(meta.brokers[&1], b1.bootstrap());
    if reconnects {
        assert_eq!(b1.connections(), 2, "a new connection for the next request");
        let metadata = b1.requests_of(ApiKey::Metadata);
        assert_eq!(metadata.last().unwrap().connection, 1);
    }
}

fn is_connection_lost(e: &ClientError) -> bool {
    matches!(e, ClientError::ConnectionLost { .. })
}

fn is_malformed(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Malformed {
            api: "Metadata",
            ..
        }
    )
}

#[tokio::test]
async fn a_response_with_the_wrong_correlation_id_fails_the_request_and_the_client_reconnects() {
    garbage_story(
        |call| {
            let body = call.view.metadata(None);
            Reply::Raw(call.frame_with_correlation(call.correlation_id() + 1000, &body))
        },
        is_connection_lost,
        true,
    )
    .await;
}

#[tokio::test]
async fn a_truncated_response_body_is_malformed_not_a_panic() {
    // A well-framed response whose body stops halfway: the stream is still in step.
    garbage_story(
        |call| {
            let full = metadata_frame(call);
            let body = &full[4..4 + (full.len() - 4) / 2];
            let mut frame = BytesMut::new();
            frame.put_i32(body.len() as i32);
            frame.put_slice(body);
            Reply::Raw(frame.freeze())
        },
        is_malformed,
        false,
    )
    .await;
}

#[tokio::test]
async fn a_response_cut_off_by_a_closed_connection_fails_the_request_and_the_client_reconnects() {
    garbage_story(
        |call| {
            let full = metadata_frame(call);
            Reply::RawThenClose(full.slice(..full.len() / 2))
        },
        is_connection_lost,
        true,
    )
    .await;
}

#[tokio::test]
async fn a_response_cut_off_on_a_silent_connection_times_out_and_the_client_reconnects() {
    // Half a frame, then nothing: the request times out, and the connection (whose stream is
    // now out of step) must not be used again.
    garbage_story(
        |call| {
            let full = metadata_frame(call);
            Reply::Raw(full.slice(..full.len() / 2))
        },
        |e| {
            matches!(
                e,
                ClientError::Timeout {
                    api: "Metadata",
                    ..
                }
            )
        },
        true,
    )
    .await;
}

#[tokio::test]
async fn an_oversized_length_prefix_fails_the_request_and_the_client_reconnects() {
    garbage_story(
        |_| {
            let mut frame = BytesMut::new();
            frame.put_i32(i32::MAX);
            frame.put_slice(&[0u8; 64]);
            Reply::Raw(frame.freeze())
        },
        is_connection_lost,
        true,
    )
    .await;
}

#[tokio::test]
async fn a_negative_length_prefix_fails_the_request_and_the_client_reconnects() {
    garbage_story(
        |_| Reply::Raw(Bytes::from_static(&[0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 1])),
        is_connection_lost,
        true,
    )
    .await;
}

#[tokio::test]
async fn a_frame_too_short_for_a_correlation_id_fails_the_request_and_the_client_reconnects() {
    garbage_story(
        |_| Reply::Raw(Bytes::from_static(&[0, 0, 0, 2, 0, 0])),
        is_connection_lost,
        true,
    )
    .await;
}

#[tokio::test]
async fn pipelined_requests_all_fail_when_the_connection_breaks_and_none_hangs() {
    // Several refreshes in flight on one connection; the broker answers the first with a wrong
    // correlation id: every one of them fails, none waits for the request timeout.
    let (_view, b1) = broker_with_bad_second_metadata(|call| {
        Reply::Delay(
            Duration::from_millis(50),
            Box::new(Reply::Raw(call.frame_with_correlation(
                call.correlation_id() + 1000,
                &call.view.metadata(None),
            ))),
        )
    })
    .await;
    let cluster = bounded("connect", Cluster::connect(client_config(&b1.bootstrap())))
        .await
        .expect("connect");
    let started = Instant::now();
    let results = bounded(
        "refreshes",
        futures::future::join_all((0..4).map(|_| cluster.refresh(&[]))),
    )
    .await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(ClientError::ConnectionLost { .. }))),
        "{results:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "failed fast");
    bounded("refresh", cluster.refresh(&[]))
        .await
        .expect("a new connection works");
}

#[tokio::test]
async fn an_unreachable_bootstrap_is_reported_within_the_connect_timeout() {
    // A port with nothing listening: connections are refused at once, and retried until the
    // connect timeout passes.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bootstrap = format!("127.0.0.1:{port}");
    for connect_timeout in [Duration::from_millis(300), Duration::from_millis(1000)] {
        let mut config = client_config(&bootstrap);
        config.connection.connect_timeout = connect_timeout;
        let started = Instant::now();
        let result = bounded("connect", Cluster::connect(config)).await;
        let elapsed = started.elapsed();
        match result {
            Err(ClientError::NoBrokerReachable { tried, timeout_ms }) => {
                assert!(tried.contains(&bootstrap), "{tried}");
                assert_eq!(timeout_ms, connect_timeout.as_millis() as u64);
            }
            Err(other) => panic!("expected NoBrokerReachable, got {other:?}"),
            Ok(_) => panic!("connected to nothing"),
        }
        assert!(
            elapsed >= connect_timeout.mul_f32(0.9),
            "gave up before the connect timeout: {elapsed:?}"
        );
        assert!(
            elapsed <= connect_timeout + Duration::from_millis(300),
            "reported {elapsed:?} after a connect timeout of {connect_timeout:?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_bootstrap_among_reachable_ones_is_skipped() {
    let view = View::new();
    let b1 = FakeBroker::start(1, &view, fake_broker::default_script()).await;
    view.set_topic("t", &[1]);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cluster = bounded(
        "connect",
        Cluster::connect(client_config(&format!("{dead},{}", b1.bootstrap()))),
    )
    .await
    .expect("the second bootstrap server answers");
    assert_eq!(cluster.metadata().topics["t"].partitions.len(), 1);
}

#[tokio::test]
async fn a_bootstrap_that_accepts_but_never_answers_is_reported_within_the_connect_timeout() {
    // TCP connects (the listener's backlog accepts it) but ApiVersions is never answered.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bootstrap = listener.local_addr().unwrap().to_string();
    let mut config = client_config(&bootstrap);
    config.connection.connect_timeout = Duration::from_millis(500);
    config.connection.request_timeout = Duration::from_secs(10);
    let started = Instant::now();
    let result = bounded("connect", Cluster::connect(config)).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(ClientError::NoBrokerReachable { .. })),
        "{:?}",
        result.err()
    );
    assert!(
        elapsed <= Duration::from_millis(800),
        "reported after {elapsed:?}, connect timeout 500 ms"
    );
    drop(listener);
}
