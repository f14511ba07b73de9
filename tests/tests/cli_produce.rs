//! `strata produce`: what it writes is read intact by kcat and by confluent-kafka (keys, values,
//! headers, every codec and acks setting), keyed records land on the same partition as with
//! librdkafka's `murmur2_random` (the Java client's default), records of one partition keep
//! their input order, and failures exit non-zero with one line.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    broker_binary, free_port, kcat_read_all, require_python_modules, require_tool, run,
    unique_topic, Broker, Output,
};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// Runs `strata produce -b BROKER TOPIC args...` with `input` on stdin.
fn produce(bootstrap: &str, topic: &str, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new(broker_binary());
    cmd.args(["produce", "-b", bootstrap, topic]).args(args);
    run(cmd, Some(input), CLI_TIMEOUT)
}

fn create_topic(broker: &Broker, topic: &str, partitions: u32) {
    broker
        .python("create_topic.py", &[topic, &partitions.to_string()])
        .assert_success(|| broker.logs());
}

/// Lines with keys (some empty, some with the separator repeated in the value), keyless lines,
/// an empty line, UTF-8 and spaces.
fn sample_input(tag: &str) -> String {
    let mut s = String::new();
    for i in 0..40 {
        match i % 5 {
            0 => s.push_str(&format!("key-{tag}-{i}:value {i} with spaces\n")),
            1 => s.push_str(&format!("keyless-line-{tag}-{i}\n")),
            2 => s.push_str(&format!(":empty key {i}\n")),
            3 => s.push_str(&format!(
                "k{i}:v:with:colons:ünïcödé-{}\n",
                "x".repeat(i * 20)
            )),
            _ => s.push_str(&format!("k{i}:\n")),
        }
    }
    s.push('\n');
    s
}

/// What kcat prints for `sample_input` with `-f '%K|%k|%s|%h\n'` (key length -1 for no key).
fn expected_kcat_lines(input: &str, headers: &str) -> Vec<String> {
    input
        .lines()
        .map(|line| match line.split_once(':') {
            Some((k, v)) => format!("{}|{k}|{v}|{headers}", k.len()),
            None => format!("-1||{line}|{headers}"),
        })
        .collect()
}

#[test]
fn records_are_read_intact_by_kcat_for_every_codec_and_acks() {
    require_tool("kcat", "-V", "apt-get install kcat");
    let broker = Broker::start(&[]);
    let headers = ["trace=abc-123", "eq=a=b", "empty="];
    let header_args: Vec<&str> = headers.iter().flat_map(|h| ["--header", *h]).collect();
    let runs: Vec<(&str, &str)> = CODECS
        .iter()
        .map(|c| (*c, "all"))
        .chain([("gzip", "1"), ("none", "0"), ("lz4", "-1")])
        .collect();
    for (codec, acks) in runs {
        let topic = unique_topic(&format!("produce-{codec}"));
        create_topic(&broker, &topic, 1);
        let input = sample_input(codec);
        let mut args = vec![
            "--key-separator",
            ":",
            "--compression",
            codec,
            "--acks",
            acks,
        ];
        args.extend(&header_args);
        produce(&broker.bootstrap(), &topic, &args, input.as_bytes())
            .assert_success(|| broker.logs());
        let got = kcat_read_all(&broker, &topic, Some(0), "%K|%k|%s|%h\n", READ_TIMEOUT);
        let got: Vec<&str> = got.lines().collect();
        let expected = expected_kcat_lines(&input, &headers.join(","));
        assert_eq!(
            got,
            expected,
            "codec {codec}, acks {acks}: kcat read something else{}",
            broker.logs()
        );
    }
}

#[test]
fn records_are_read_intact_by_confluent_kafka_for_every_codec() {
    require_python_modules(&["confluent_kafka"], "pip install confluent-kafka");
    let broker = Broker::start(&[]);
    let headers = ["h1=one", "h2=two=2", "h3="];
    let header_args: Vec<&str> = headers.iter().flat_map(|h| ["--header", *h]).collect();
    for codec in CODECS {
        let topic = unique_topic(&format!("produce-ck-{codec}"));
        create_topic(&broker, &topic, 1);
        let input = sample_input(codec);
        let path = broker.temp_dir().join(format!("input-{codec}.txt"));
        std::fs::write(&path, &input).unwrap();
        let mut args = vec!["--key-separator", ":", "--compression", codec];
        args.extend(&header_args);
        produce(&broker.bootstrap(), &topic, &args, input.as_bytes())
            .assert_success(|| broker.logs());
        let mut py_args = vec![topic.as_str(), path.to_str().unwrap(), ":"];
        py_args.extend(headers);
        broker
            .python("produce_verify_confluent.py", &py_args)
            .assert_success(|| broker.logs());
    }
}

/// key → partition as kcat reads `topic` back (`%p %k`), checking each key appears once.
fn partitions_by_key(broker: &Broker, topic: &str) -> BTreeMap<String, i32> {
    let out = kcat_read_all(broker, topic, None, "%p %k\n", READ_TIMEOUT);
    let mut map = BTreeMap::new();
    for line in out.lines() {
        let (p, k) = line.split_once(' ').expect("kcat line is 'P KEY'");
        let previous = map.insert(k.to_string(), p.parse::<i32>().unwrap());
        assert!(previous.is_none(), "key {k} read twice from {topic}");
    }
    map
}

#[test]
fn keys_land_on_the_same_partition_as_with_librdkafka_murmur2_random() {
    require_tool("kcat", "-V", "apt-get install kcat");
    let broker = Broker::start(&[]);
    let ours = unique_topic("keys-strata");
    let theirs = unique_topic("keys-kcat");
    create_topic(&broker, &ours, 6);
    create_topic(&broker, &theirs, 6);
    let keys: Vec<String> = (0..500)
        .map(|i| match i % 4 {
            0 => format!("user-{i}"),
            1 => format!("{i}"),
            2 => format!("k{}-{i}", "é".repeat(i % 7)),
            _ => format!("order/{:08x}", (i as u64 * 2654435761) % (1 << 32)),
        })
        .collect();
    let input: String = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k}:value-{i:04}\n"))
        .collect();
    produce(
        &broker.bootstrap(),
        &ours,
        &["--key-separator", ":"],
        input.as_bytes(),
    )
    .assert_success(|| broker.logs());
    let mut kcat = Command::new("kcat");
    kcat.args(["-P", "-b", &broker.bootstrap(), "-t", &theirs, "-K:"])
        .args(["-X", "partitioner=murmur2_random"]);
    run(kcat, Some(input.as_bytes()), CLI_TIMEOUT).assert_success(|| broker.logs());

    let a = partitions_by_key(&broker, &ours);
    let b = partitions_by_key(&broker, &theirs);
    assert_eq!(a.len(), keys.len(), "strata produce: keys missing");
    assert_eq!(b.len(), keys.len(), "kcat: keys missing");
    let differing: Vec<_> = a
        .iter()
        .filter(|(k, p)| b.get(*k) != Some(p))
        .map(|(k, p)| format!("{k}: strata {p}, kcat {:?}", b.get(k)))
        .take(10)
        .collect();
    assert!(
        differing.is_empty(),
        "keys placed differently: {differing:?}"
    );
    let used: BTreeSet<i32> = a.values().copied().collect();
    assert_eq!(
        used.len(),
        6,
        "500 keys should use all 6 partitions: {used:?}"
    );

    // Per partition, records keep the input order (values carry the input index).
    let out = kcat_read_all(&broker, &ours, None, "%p %s\n", READ_TIMEOUT);
    let mut last: BTreeMap<i32, String> = BTreeMap::new();
    for line in out.lines() {
        let (p, v) = line.split_once(' ').unwrap();
        let p: i32 = p.parse().unwrap();
        if let Some(prev) = last.get(&p) {
            assert!(prev.as_str() < v, "partition {p}: {v} after {prev}");
        }
        last.insert(p, v.to_string());
    }
}

#[test]
fn keyless_records_and_an_explicit_partition() {
    require_tool("kcat", "-V", "apt-get install kcat");
    let broker = Broker::start(&[]);
    let topic = unique_topic("explicit");
    create_topic(&broker, &topic, 4);
    let input: String = (0..300).map(|i| format!("k{i}:line-{i:04}\n")).collect();
    produce(
        &broker.bootstrap(),
        &topic,
        &["--partition", "2", "--key-separator", ":"],
        input.as_bytes(),
    )
    .assert_success(|| broker.logs());
    let out = kcat_read_all(&broker, &topic, None, "%p %s\n", READ_TIMEOUT);
    let expected: Vec<String> = (0..300).map(|i| format!("2 line-{i:04}")).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);

    // Keyless: every record arrives exactly once, on existing partitions.
    let keyless = unique_topic("keyless");
    create_topic(&broker, &keyless, 4);
    let input: String = (0..2000).map(|i| format!("v{i:05}\n")).collect();
    produce(&broker.bootstrap(), &keyless, &[], input.as_bytes()).assert_success(|| broker.logs());
    let out = kcat_read_all(&broker, &keyless, None, "%p %s\n", READ_TIMEOUT);
    let mut values: Vec<&str> = out
        .lines()
        .map(|l| {
            let (p, v) = l.split_once(' ').unwrap();
            assert!(("0".."4").contains(&p), "partition {p}");
            v
        })
        .collect();
    values.sort();
    let expected: Vec<String> = (0..2000).map(|i| format!("v{i:05}")).collect();
    assert_eq!(values, expected);
}

fn assert_one_line_failure(out: &Output, needle: &str) {
    assert!(
        !out.timed_out && out.status.is_some_and(|s| !s.success()),
        "expected a failure: {}",
        out.describe()
    );
    let err = out.stderr.trim();
    assert_eq!(
        err.lines().count(),
        1,
        "one line expected: {}",
        out.describe()
    );
    assert!(
        err.contains(needle),
        "{needle:?} not named: {}",
        out.describe()
    );
}

#[test]
fn unreachable_broker_fails_fast_with_one_line() {
    let port = free_port();
    let started = Instant::now();
    let out = produce(
        &format!("127.0.0.1:{port}"),
        "t",
        &["--timeout-ms", "1000"],
        b"a\nb\n",
    );
    assert_one_line_failure(&out, &format!("127.0.0.1:{port}"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}: {}",
        started.elapsed(),
        out.describe()
    );
}

#[test]
fn bad_flag_values_are_refused_with_one_line() {
    // Checked before connecting, so no broker is needed.
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let out = produce(&bootstrap, "t", &["--acks", "2"], b"a\n");
    assert_one_line_failure(&out, "--acks");
    assert!(out.stderr.contains("'2'"), "{}", out.describe());
    let out = produce(&bootstrap, "t", &["--compression", "brotli"], b"a\n");
    assert_one_line_failure(&out, "brotli");
    let out = produce(&bootstrap, "t", &["--header", "novalue"], b"a\n");
    assert_one_line_failure(&out, "novalue");
}

#[test]
fn a_missing_partition_fails_with_one_line() {
    let broker = Broker::start(&[]);
    let topic = unique_topic("missing-partition");
    create_topic(&broker, &topic, 2);
    let out = produce(
        &broker.bootstrap(),
        &topic,
        &["--partition", "7", "--timeout-ms", "2000"],
        b"a\n",
    );
    assert_one_line_failure(&out, "partition 7");
}

/// The library under the CLI: with a small `buffer_memory` (so `send` waits), a broker killed
/// and restarted mid-stream, every record is answered, all succeed after retries, and the
/// acknowledged offsets of one partition grow in send order (retries never reorder); each
/// acknowledged record is at its reported offset.
#[test]
fn producer_retries_across_a_broker_restart_in_order_with_bounded_memory() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use strata_client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
    use strata_client::{ClientConfig, Cluster};

    require_tool("kcat", "-V", "apt-get install kcat");
    let mut broker = Broker::start(&[]);
    let topic = unique_topic("restart");
    create_topic(&broker, &topic, 2);
    const N: usize = 3000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    // The producer pauses after KILL_AT records until the broker is down, so the kill lands
    // mid-stream however fast the producer is.
    const KILL_AT: usize = 500;
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<()>();
    let mut client_config = ClientConfig::new(&broker.bootstrap());
    client_config.connection.connect_timeout = Duration::from_secs(5);
    client_config.connection.request_timeout = Duration::from_secs(10);
    let task = {
        let (topic, sent) = (topic.clone(), Arc::clone(&sent));
        runtime.spawn(async move {
            let cluster = Cluster::connect(client_config).await.unwrap();
            let producer = Producer::new(
                cluster,
                ProducerConfig {
                    acks: Acks::All,
                    linger_ms: 2,
                    batch_size: 1024,
                    buffer_memory: 4096,
                    request_timeout: Duration::from_secs(10),
                    delivery_timeout: Duration::from_secs(60),
                    retry_backoff_ms: 50,
                    ..ProducerConfig::default()
                },
            )
            .unwrap();
            let mut deliveries = Vec::with_capacity(N);
            let mut killed_rx = Some(killed_rx);
            for i in 0..N {
                if i == KILL_AT {
                    if let Some(rx) = killed_rx.take() {
                        let _ = rx.await;
                    }
                }
                let record = ProducerRecord::new(topic.clone(), format!("value-{i:05}"))
                    .with_partition((i % 2) as i32)
                    .with_header("i", i.to_string());
                deliveries.push(producer.send(record).await.expect("send"));
                sent.fetch_add(1, Ordering::Relaxed);
            }
            producer.flush().await;
            let mut results = Vec::with_capacity(N);
            for d in deliveries {
                results.push(d.await);
            }
            results
        })
    };
    assert!(
        common::wait_for(Duration::from_secs(60), || sent.load(Ordering::Relaxed)
            >= KILL_AT),
        "the producer did not get going{}",
        broker.logs()
    );
    broker.kill9();
    let _ = killed_tx.send(());
    let at_kill = sent.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    let while_down = sent.load(Ordering::Relaxed);
    broker.restart();
    eprintln!("sent {at_kill} records before the kill, {while_down} while the broker was down");
    // Bounded memory: with the broker down, `send` waited once the buffer was full.
    assert!(while_down < N, "send did not wait for buffer memory");
    let results = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), task).await })
        .expect("producer finished within 120 s")
        .unwrap();
    let mut last_offset = [-1i64; 2];
    let mut expected_at: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        let md = r
            .as_ref()
            .unwrap_or_else(|e| panic!("record {i} failed: {e}{}", broker.logs()));
        let p = (i % 2) as i32;
        assert_eq!(md.partition, p);
        assert!(
            md.offset > last_offset[p as usize],
            "record {i}: offset {} not after {} on partition {p}",
            md.offset,
            last_offset[p as usize]
        );
        last_offset[p as usize] = md.offset;
        expected_at.insert((p, md.offset), format!("value-{i:05}"));
    }
    let out = kcat_read_all(&broker, &topic, None, "%p %o %s\n", READ_TIMEOUT);
    let mut found = 0;
    for line in out.lines() {
        let mut parts = line.splitn(3, ' ');
        let p: i32 = parts.next().unwrap().parse().unwrap();
        let o: i64 = parts.next().unwrap().parse().unwrap();
        let v = parts.next().unwrap();
        if let Some(expected) = expected_at.get(&(p, o)) {
            assert_eq!(v, expected, "partition {p} offset {o}");
            found += 1;
        }
    }
    assert_eq!(
        found,
        N,
        "acknowledged records missing from the log{}",
        broker.logs()
    );
}
