//! An idempotent producer (librdkafka through confluent-kafka, `enable.idempotence=true`) writes
//! every record exactly once and in order while a proxy between it and the broker cuts its
//! connections at random, and across a broker `kill -9` + restart mid-stream; so does ours
//! (`strata produce`: idempotent by default, 5 requests in flight per partition). kcat with
//! `enable.idempotence=true` works too.
//!
//! The proxy sits where the broker says it is (`advertised.listeners`), so every connection the
//! client opens, bootstrap or not, goes through it. Cuts land between a request reaching the
//! broker and its answer reaching the client, so retries of appended batches happen: the broker
//! must answer them with their original offsets instead of writing them twice.
//!
//! Needs python3 with `confluent-kafka`, and kcat.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{
    free_port, require_python_modules, require_tool, run, unique_topic, wait_for, Broker,
};

/// Records per run, spread over `PRODUCE_SECONDS`.
const RECORDS: usize = 30_000;
const PARTITIONS: usize = 3;
const PRODUCE_SECONDS: &str = "6";
/// Bounds of the random pause between two cuts.
const CUT_EVERY_MS: (u64, u64) = (150, 600);
/// Fewer cuts than this during a run means the test proved little.
const MIN_CUTS: u32 = 4;

/// A TCP proxy on `port` to the broker at `upstream`; while `cutting`, a chaos thread shuts down
/// every live connection (both directions) at random intervals.
struct ChaosProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    cutting: Arc<AtomicBool>,
    cuts: Arc<AtomicU32>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl ChaosProxy {
    fn start(port: u16, upstream: u16) -> ChaosProxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the proxy port");
        let stop = Arc::new(AtomicBool::new(false));
        let cutting = Arc::new(AtomicBool::new(true));
        let cuts = Arc::new(AtomicU32::new(0));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accept = {
            let (stop, live) = (Arc::clone(&stop), Arc::clone(&live));
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    // The broker may be down (kill -9): the client then sees a closed connection.
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                        let mut l = live.lock().unwrap();
                        l.retain(|s| s.peer_addr().is_ok());
                        l.push(c);
                        l.push(s);
                    }
                    pipe(&client, &server);
                    pipe(&server, &client);
                }
            })
        };
        let chaos = {
            let (stop, cutting, cuts) =
                (Arc::clone(&stop), Arc::clone(&cutting), Arc::clone(&cuts));
            thread::spawn(move || {
                let mut seed = common::now_ms() as u64 | 1;
                eprintln!("[idempotent_producer] chaos seed {seed}");
                // At most 10 minutes of cutting; the tests end long before.
                for _ in 0..(600_000 / CUT_EVERY_MS.0) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let pause = CUT_EVERY_MS.0 + seed % (CUT_EVERY_MS.1 - CUT_EVERY_MS.0);
                    thread::sleep(Duration::from_millis(pause));
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    if cutting.load(Ordering::Acquire) {
                        let mut l = live.lock().unwrap();
                        for s in l.drain(..) {
                            let _ = s.shutdown(Shutdown::Both);
                        }
                        cuts.fetch_add(1, Ordering::AcqRel);
                    }
                }
            })
        };
        ChaosProxy {
            port,
            stop,
            cutting,
            cuts,
            threads: vec![accept, chaos],
        }
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` on a thread until either side closes, then closes both.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// A broker that advertises the proxy's port, and the proxy in front of it.
fn broker_behind_proxy() -> (Broker, ChaosProxy) {
    let proxy_port = free_port();
    let advertised = format!("advertised.listeners=PLAINTEXT://127.0.0.1:{proxy_port}");
    let broker = Broker::start(&[advertised.as_str()]);
    let proxy = ChaosProxy::start(proxy_port, broker.port());
    (broker, proxy)
}

/// Runs the producer script through the proxy; optionally kills and restarts the broker once
/// records are flowing. Stops cutting once every record is delivered, then the script verifies.
fn produce_through_chaos(broker: &mut Broker, proxy: &ChaosProxy, kill_mid_stream: bool) {
    let topic = unique_topic("idem");
    broker
        .python(
            "create_topic.py",
            &[topic.as_str(), &PARTITIONS.to_string()],
        )
        .assert_success(|| broker.logs());
    let marker = broker.temp_dir().join("produced");
    let mut cmd = Command::new(common::python_bin());
    cmd.arg(common::python_dir().join("idempotent_produce.py"))
        .args([
            topic.as_str(),
            &RECORDS.to_string(),
            &PARTITIONS.to_string(),
            PRODUCE_SECONDS,
            marker.to_str().expect("utf-8 temp path"),
        ])
        .env("BOOTSTRAP", format!("127.0.0.1:{}", proxy.port))
        .env("PYTHONUNBUFFERED", "1");
    let mut load = common::Background::spawn(cmd, None);
    if kill_mid_stream {
        thread::sleep(Duration::from_secs(3));
        broker.kill9();
        thread::sleep(Duration::from_millis(500));
        broker.restart();
    }
    let produced = wait_for(Duration::from_secs(200), || {
        marker.exists() || !load.is_running()
    });
    proxy.cutting.store(false, Ordering::Release);
    assert!(produced, "the producer did not finish within 200 s");
    let out = load.wait(Duration::from_secs(120));
    out.assert_success(|| broker.logs());
    let cuts = proxy.cuts.load(Ordering::Acquire);
    eprintln!(
        "[idempotent_producer] {} after {cuts} cuts",
        out.stdout.trim()
    );
    assert!(cuts >= MIN_CUTS, "only {cuts} connection cuts happened");
}

#[test]
fn every_record_exactly_once_and_in_order_while_connections_are_cut() {
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
    let (mut broker, proxy) = broker_behind_proxy();
    produce_through_chaos(&mut broker, &proxy, false);
}

#[test]
fn every_record_exactly_once_across_a_broker_kill9_and_restart() {
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
    let (mut broker, proxy) = broker_behind_proxy();
    produce_through_chaos(&mut broker, &proxy, true);
}

#[test]
fn kcat_produces_idempotently() {
    require_tool("kcat", "-V", "apt-get install kcat");
    let broker = Broker::start(&[]);
    let topic = unique_topic("kcat-idem");
    let input: String = (0..500).map(|i| format!("line-{i}\n")).collect();
    let mut cmd = Command::new("kcat");
    cmd.args(["-P", "-b", &broker.bootstrap(), "-t", &topic, "-p", "0"])
        .args(["-X", "enable.idempotence=true", "-X", "acks=all"]);
    let out = run(cmd, Some(input.as_bytes()), Duration::from_secs(60));
    out.assert_success(|| broker.logs());
    assert!(
        !out.stderr.contains("ERROR") && !out.stderr.contains("failed"),
        "kcat reported an error: {}{}",
        out.stderr,
        broker.logs()
    );
    let read = common::kcat_read_all(&broker, &topic, Some(0), "%s\n", Duration::from_secs(30));
    assert_eq!(read, input, "kcat read back what it wrote, once, in order");
}

/// Records our producer writes per run: small batches (`--batch-size`, no linger) so that the
/// run lasts several seconds and many requests are cut mid-flight.
const OURS_RECORDS: usize = 400_000;
const OURS_KEYS: usize = 6;

/// `strata produce` (our client: idempotent by default, 5 requests in flight per partition) writes
/// keyed records through the proxy, optionally across a broker kill -9 + restart; then each key's
/// values must read back exactly once and in order.
fn ours_through_chaos(broker: &mut Broker, proxy: &ChaosProxy, kill_mid_stream: bool) {
    let topic = unique_topic("idem-ours");
    broker
        .python(
            "create_topic.py",
            &[topic.as_str(), &PARTITIONS.to_string()],
        )
        .assert_success(|| broker.logs());
    let input: String = (0..OURS_RECORDS)
        .map(|i| format!("k{}:{i:0>90}\n", i % OURS_KEYS))
        .collect();
    let mut cmd = Command::new(common::broker_binary());
    cmd.args([
        "produce",
        "-b",
        &format!("127.0.0.1:{}", proxy.port),
        &topic,
    ])
    .args(["-K", ":", "--linger-ms", "0", "--batch-size", "2048"])
    .args(["--timeout-ms", "60000"]);
    let load = common::Background::spawn(cmd, Some(input.into_bytes()));
    if kill_mid_stream {
        thread::sleep(Duration::from_millis(1500));
        broker.kill9();
        thread::sleep(Duration::from_millis(500));
        broker.restart();
    }
    let out = load.wait(Duration::from_secs(200));
    proxy.cutting.store(false, Ordering::Release);
    out.assert_success(|| broker.logs());
    let cuts = proxy.cuts.load(Ordering::Acquire);
    eprintln!("[idempotent_producer] ours: {OURS_RECORDS} records after {cuts} cuts");
    assert!(cuts >= 3, "only {cuts} connection cuts happened");

    let read = common::kcat_read_all(broker, &topic, None, "%k %s\n", Duration::from_secs(60));
    let mut by_key: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for line in read.lines() {
        let (key, value) = line.split_once(' ').expect("key and value");
        by_key
            .entry(key)
            .or_default()
            .push(value.parse().expect("a number"));
    }
    assert_eq!(by_key.len(), OURS_KEYS, "every key was written");
    for (key, values) in by_key {
        let k: usize = key[1..].parse().expect("k<n>");
        let expected: Vec<usize> = (k..OURS_RECORDS).step_by(OURS_KEYS).collect();
        if values != expected {
            let dup = values.len().saturating_sub(expected.len());
            panic!(
                "key {key}: {} records read, {} written ({dup} extra); first difference at {:?}",
                values.len(),
                expected.len(),
                values.iter().zip(&expected).position(|(a, b)| a != b)
            );
        }
    }
}

#[test]
fn our_producer_writes_every_record_exactly_once_and_in_order_while_connections_are_cut() {
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
    require_tool("kcat", "-V", "apt-get install kcat");
    let (mut broker, proxy) = broker_behind_proxy();
    ours_through_chaos(&mut broker, &proxy, false);
}

#[test]
fn our_producer_writes_every_record_exactly_once_across_a_broker_kill9_and_restart() {
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
    require_tool("kcat", "-V", "apt-get install kcat");
    let (mut broker, proxy) = broker_behind_proxy();
    ours_through_chaos(&mut broker, &proxy, true);
}
