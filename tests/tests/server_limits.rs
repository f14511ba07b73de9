//! A client cannot wedge or exhaust the server: a long poll whose client went away frees its
//! connection slot at once, idle connections are closed after `connections.max.idle.ms`, a
//! connection that queues large requests behind a long poll is read no further (back-pressure)
//! instead of buffered, and a transactional producer is refused at once, not left retrying.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use common::{require_python_modules, unique_topic, Broker};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(broker: &Broker) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", broker.port())).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// A complete request frame (size prefix included).
fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Vec<u8> {
    common::request_frame(
        key as i16,
        version,
        correlation_id,
        "server-limits-test",
        body,
    )
}

/// Reads one response frame and returns its correlation id.
fn read_response(s: &mut TcpStream) -> std::io::Result<i32> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size)?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body)?;
    Ok(Bytes::from(body).get_i32())
}

fn api_versions(software_name: &str) -> Vec<u8> {
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_string(software_name.into()))
        .with_client_software_version(StrBytes::from_static_str("1"));
    frame(ApiKey::ApiVersions, 3, 7, &req)
}

/// A fetch of an empty partition that waits up to `max_wait_ms` for one byte.
fn long_poll(topic: &str, max_wait_ms: i32) -> Vec<u8> {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    frame(ApiKey::Fetch, 11, 1, &req)
}

fn create_topic(broker: &Broker, topic: &str) {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(TopicName(StrBytes::from_string(topic.into()))))]))
        .with_allow_auto_topic_creation(true);
    let mut s = connect_answered(broker, "creating a topic");
    s.write_all(&frame(ApiKey::Metadata, 9, 3, &req)).unwrap();
    assert_eq!(read_response(&mut s).unwrap(), 3);
}

/// True once the broker has closed `s` (end of stream or reset), false if it still waits.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return true
            }
            Err(_) => return false,
        }
    }
}

#[test]
fn a_long_poll_whose_client_went_away_frees_its_connection_slot_at_once() {
    let broker = Broker::start(&["max.connections=1"]);
    let topic = unique_topic("gone");
    create_topic(&broker, &topic);
    let mut poller = connect_answered(&broker, "the poller");
    poller.write_all(&long_poll(&topic, 60_000)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(poller);
    // The only slot must be free well before the poll's 60 s: a new client is answered.
    connect_answered(&broker, "a client after the poller left");
}

#[test]
fn a_client_that_pipelines_past_queued_max_requests_and_leaves_frees_its_slot_at_once() {
    let broker = Broker::start(&["max.connections=1", "queued.max.requests=1"]);
    let topic = unique_topic("pipelined");
    create_topic(&broker, &topic);
    let mut client = connect_answered(&broker, "the pipelining client");
    // A long poll with requests behind it: past queued.max.requests the broker stops reading
    // this connection, and must still notice when the client goes away.
    let mut burst = long_poll(&topic, 60_000);
    for _ in 0..4 {
        burst.extend(api_versions("behind the poll"));
    }
    client.write_all(&burst).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(client);
    // The only slot must be free well before the poll's 60 s: a new client is answered.
    connect_answered(&broker, "a client after the pipelining client left");
}

#[test]
fn a_client_paused_by_the_shared_byte_budget_that_leaves_frees_its_slot_at_once() {
    // Small frames: a paused request's unread bytes fit the socket's receive window, so the
    // client's close reaches the broker (a close queued behind a full window cannot).
    let frame_bytes_max = 64 << 10;
    let broker = Broker::start(&[
        "max.connections=2",
        &format!("socket.request.max.bytes={frame_bytes_max}"),
        &format!("queued.max.request.bytes={frame_bytes_max}"),
    ]);
    let topic = unique_topic("budget-gone");
    create_topic(&broker, &topic);
    // One connection holds most of the shared budget behind a long poll; another sends a request
    // that does not fit the rest, so the broker stops reading it, then that client leaves.
    let mut first = connect_answered(&broker, "the long poller");
    first.write_all(&long_poll(&topic, 60_000)).unwrap();
    first
        .write_all(&api_versions(&"a".repeat(frame_bytes_max * 6 / 10)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut second = connect_answered(&broker, "the paused client");
    second
        .write_all(&api_versions(&"a".repeat(frame_bytes_max / 2)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(second);
    // Its slot (one of two) and its place in the budget's queue must be free well before the
    // poll's 60 s.
    connect_answered(&broker, "a client after the paused client left");
    drop(first);
}

/// A connection that the broker has accepted and answered (retrying while the only slot is
/// still taken by a connection closing), within 5 s.
fn connect_answered(broker: &Broker, who: &str) -> TcpStream {
    let started = Instant::now();
    loop {
        let mut s = connect(broker);
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let answered = s
            .write_all(&api_versions("check"))
            .and_then(|_| read_response(&mut s))
            .is_ok();
        if answered {
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{who}: no connection slot within 5 s\n{}",
            broker.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn idle_connections_are_closed_but_a_long_poll_is_not_idle() {
    let broker = Broker::start(&["connections.max.idle.ms=500"]);
    let topic = unique_topic("idle");
    create_topic(&broker, &topic);
    let mut idle = connect(&broker);
    idle.write_all(&api_versions("idle")).unwrap();
    assert_eq!(read_response(&mut idle).unwrap(), 7);
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "an idle connection stayed open past connections.max.idle.ms\n{}",
        broker.logs()
    );
    // A fetch waiting 2 s is in flight, not idle: it is answered, then the connection idles out.
    let mut polling = connect(&broker);
    polling.write_all(&long_poll(&topic, 2_000)).unwrap();
    assert_eq!(read_response(&mut polling).unwrap(), 1, "{}", broker.logs());
    assert!(closed_within(&mut polling, Duration::from_secs(5)));
}

#[test]
fn large_requests_queued_behind_a_long_poll_are_not_read_but_answered_after_it() {
    let frame_bytes_max = 1 << 20;
    let broker = Broker::start(&[&format!("socket.request.max.bytes={frame_bytes_max}")]);
    let topic = unique_topic("pinned");
    create_topic(&broker, &topic);
    let mut s = connect(&broker);
    s.write_all(&long_poll(&topic, 3_000)).unwrap();
    // 64 requests of almost 1 MiB each behind the poll (a valid ApiVersions with a long name).
    let big = api_versions(&"a".repeat(frame_bytes_max - 100));
    let requests = 64;
    let mut writer = s.try_clone().unwrap();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = std::sync::Arc::clone(&written);
    let sender = std::thread::spawn(move || {
        for _ in 0..requests {
            if writer.write_all(&big).is_err() {
                return;
            }
            progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    std::thread::sleep(Duration::from_millis(1_500));
    let sent = written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        sent < requests / 2,
        "the broker read {sent} MiB-sized requests queued behind a long poll instead of pausing\n{}",
        broker.logs()
    );
    // Once the poll is answered, every request is read and answered, in order.
    assert_eq!(read_response(&mut s).unwrap(), 1);
    for _ in 0..requests {
        assert_eq!(read_response(&mut s).unwrap(), 7, "{}", broker.logs());
    }
    sender.join().unwrap();
}

fn transactions_refused(client: &str) {
    let broker = Broker::start(&[]);
    let out = broker.python("transactions_refused.py", &[client]);
    out.assert_success(|| broker.logs());
    eprintln!("{}", out.stdout);
}

#[test]
fn confluent_kafka_init_transactions_fails_at_once() {
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
    transactions_refused("confluent");
}

#[test]
fn kafka_python_init_transactions_fails_at_once() {
    require_python_modules(&["kafka"], "pip install kafka-python");
    transactions_refused("kafka-python");
}

/// Raises this process's open-file soft limit to its hard limit (the broker, started after,
/// inherits it); the hard limit it got.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_max
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("broker status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// What 10,000 idle clients (each answered once, then silent) cost the broker, per connection.
const IDLE_CONNECTIONS: usize = 10_000;
const IDLE_CONNECTION_BYTES_MAX: u64 = 16 * 1024;

#[test]
fn ten_thousand_idle_connections_cost_bounded_memory() {
    let hard = raise_fd_limit();
    if hard < (IDLE_CONNECTIONS + 1_000) as u64 {
        eprintln!("SKIP: the open-file hard limit is {hard}, below {IDLE_CONNECTIONS} connections");
        return;
    }
    // Room for the warm-up client beside the 10,000 (max.connections is 10,000 by default).
    let broker = Broker::start(&["max.connections=10100"]);
    let pid = broker.pid().expect("broker pid");
    let mut warm = connect_answered(&broker, "warm-up");
    warm.write_all(&api_versions("warm")).unwrap();
    read_response(&mut warm).unwrap();
    let before = rss_bytes(pid);
    let started = Instant::now();
    let mut clients = Vec::with_capacity(IDLE_CONNECTIONS);
    for i in 0..IDLE_CONNECTIONS {
        let mut s = connect(&broker);
        s.write_all(&api_versions("idle")).unwrap();
        let answer = read_response(&mut s);
        assert_eq!(answer.ok(), Some(7), "connection {i}\n{}", broker.logs());
        clients.push(s);
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {i} connections within 120 s"
        );
    }
    let after = rss_bytes(pid);
    let per_connection = after.saturating_sub(before) / IDLE_CONNECTIONS as u64;
    eprintln!(
        "broker RSS {} MiB before, {} MiB with {IDLE_CONNECTIONS} idle connections: {per_connection} bytes each",
        before >> 20,
        after >> 20
    );
    assert!(
        per_connection <= IDLE_CONNECTION_BYTES_MAX,
        "{per_connection} bytes of broker memory per idle connection"
    );
    // The broker still answers a new client.
    drop(clients);
    connect_answered(&broker, "a client after 10,000 idle ones");
}

#[test]
fn confluent_kafka_reads_big_batches_with_a_small_fetch_max_bytes() {
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
    let broker = Broker::start(&["num.partitions=2"]);
    let topic = unique_topic("fetch-max");
    let out = broker.python("fetch_max_bytes_confluent.py", &[topic.as_str(), "2", "5"]);
    out.assert_success(|| broker.logs());
    eprintln!("{}", out.stdout);
}

#[test]
fn queued_bytes_are_bounded_across_connections_too() {
    // The shared budget holds one largest frame: requests queued behind a long poll on one
    // connection hold part of it, so another connection's request that does not fit the rest is
    // not read until they are answered.
    let frame_bytes_max = 1 << 20;
    let broker = Broker::start(&[
        &format!("socket.request.max.bytes={frame_bytes_max}"),
        &format!("queued.max.request.bytes={frame_bytes_max}"),
    ]);
    let topic = unique_topic("shared");
    create_topic(&broker, &topic);
    // Half the budget queued behind the poll; 60% of it on another connection then cannot fit,
    // though that connection's own budget has room.
    let half = api_versions(&"a".repeat(frame_bytes_max / 2));
    let more_than_half = api_versions(&"a".repeat(frame_bytes_max * 6 / 10));
    let mut first = connect(&broker);
    first.write_all(&long_poll(&topic, 3_000)).unwrap();
    first.write_all(&half).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut second = connect(&broker);
    second.write_all(&more_than_half).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(1_000)))
        .unwrap();
    assert!(
        read_response(&mut second).is_err(),
        "the second connection's request was read past the shared budget\n{}",
        broker.logs()
    );
    // The poll ends, the first connection's requests are answered, then the second's.
    assert_eq!(read_response(&mut first).unwrap(), 1);
    assert_eq!(read_response(&mut first).unwrap(), 7);
    second.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(read_response(&mut second).unwrap(), 7, "{}", broker.logs());
}
