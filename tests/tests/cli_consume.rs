//! `strata consume` against a real broker: records written by kcat (every codec, keys, headers,
//! three partitions) and by kafka-python come out intact with the right partitions, offsets and
//! timestamps; `--offset`/`--partition`; starting at the end; `--idle-timeout-ms`; and the error
//! exits (unreachable broker, unknown topic, bad flag, bad format, offset out of range).

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{broker_binary, free_port, require_python_modules, require_tool, run, unique_topic};
use common::{kcat_produce_keyed, Background, Broker, Output};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);
const KCAT_TIMEOUT: Duration = Duration::from_secs(60);
const FORMAT: &str = "%p|%o|%T|%k|%h|%v\\n";
const KCAT_FORMAT: &str = "%p|%o|%T|%k|%h|%s\n";
const HEADERS: [&str; 2] = ["h1=v1", "trace=abc-123"];

fn strata_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(broker_binary());
    cmd.args(args);
    cmd
}

fn strata(args: &[&str]) -> Output {
    run(strata_command(args), None, CLI_TIMEOUT)
}

fn consume(broker: &Broker, topic: &str, extra: &[&str]) -> Output {
    let bootstrap = broker.bootstrap();
    let mut args = vec!["consume", "-b", bootstrap.as_str(), topic];
    args.extend_from_slice(extra);
    let out = strata(&args);
    out.assert_success(|| broker.logs());
    out
}

fn kcat_produce(broker: &Broker, topic: &str, codec: &str, extra: &[&str], lines: &[String]) {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    kcat_produce_keyed(broker, topic, codec, &HEADERS, extra, &input);
}

/// `key:value` lines; values hold neither `|` nor newlines.
fn keyed_lines(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let value = match i % 3 {
                0 => format!("v{i}"),
                1 => format!("ünïcødé {i} {}", "compressible ".repeat(1 + i % 30)),
                _ => format!("{i}-{}", "0123456789abcdef".repeat(i % 50)),
            };
            format!("{tag}-k{i:04}:{value}")
        })
        .collect()
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// kcat writes `n` keyed records with headers and `codec` to a 3-partition topic; `strata consume
/// --from-beginning --count n` prints exactly what kcat itself reads back (partition, offset,
/// timestamp, key, headers, value), and the keys and values are the ones written.
fn kcat_records_read_intact(codec: &str) {
    require_tool("kcat", "-V", "apt-get install kcat");
    let broker = Broker::start(&["num.partitions=3"]);
    let topic = unique_topic(&format!("consume-kcat-{codec}"));
    let n = 300;
    let lines = keyed_lines(codec, n);
    kcat_produce(&broker, &topic, codec, &[], &lines);

    let out = consume(
        &broker,
        &topic,
        &[
            "--from-beginning",
            "--count",
            &n.to_string(),
            "--format",
            FORMAT,
        ],
    );
    let ours = sorted_lines(&out.stdout);
    let theirs = sorted_lines(&common::kcat_read_all(
        &broker,
        &topic,
        None,
        KCAT_FORMAT,
        KCAT_TIMEOUT,
    ));
    assert_eq!(ours.len(), n, "{}", out.describe());
    assert_eq!(ours, theirs, "strata consume and kcat disagree");

    let mut partitions = BTreeSet::new();
    let mut got_kv = BTreeSet::new();
    for line in &ours {
        let f: Vec<&str> = line.splitn(6, '|').collect();
        assert_eq!(f.len(), 6, "bad line {line:?}");
        partitions.insert(f[0].to_string());
        assert_eq!(f[4], HEADERS.join(","), "headers of {line:?}");
        got_kv.insert(format!("{}:{}", f[3], f[5]));
    }
    let want_kv: BTreeSet<String> = lines.iter().cloned().collect();
    assert_eq!(got_kv, want_kv);
    assert_eq!(partitions.len(), 3, "keys should spread over 3 partitions");
}

#[test]
fn kcat_records_read_intact_uncompressed() {
    kcat_records_read_intact("none");
}

#[test]
fn kcat_records_read_intact_gzip() {
    kcat_records_read_intact("gzip");
}

#[test]
fn kcat_records_read_intact_snappy() {
    kcat_records_read_intact("snappy");
}

#[test]
fn kcat_records_read_intact_lz4() {
    kcat_records_read_intact("lz4");
}

#[test]
fn kcat_records_read_intact_zstd() {
    kcat_records_read_intact("zstd");
}

/// kafka-python's records (null keys and values, headers, explicit timestamps, 3 partitions)
/// come out at the partition and offset kafka-python was told, with their timestamps.
#[test]
fn kafka_python_records_read_intact() {
    require_python_modules(&["kafka"], "pip install kafka-python");
    let broker = Broker::start(&["num.partitions=3"]);
    let topic = unique_topic("consume-kp");
    let n = 120;
    let produced = broker.python(
        "consume_kafka_python_produce.py",
        &[topic.as_str(), &n.to_string(), "--compression", "gzip"],
    );
    produced.assert_success(|| broker.logs());
    let mut expected = Vec::new();
    for line in produced.stdout.lines().filter(|l| *l != "DONE") {
        let f: Vec<i64> = line
            .split(' ')
            .map(|x| x.parse().unwrap_or_else(|_| panic!("bad line {line:?}")))
            .collect();
        let i = f[0];
        let key = if i % 7 == 3 {
            "<null>".to_string()
        } else {
            format!("kp-k{i}")
        };
        let value = if i % 11 == 4 && i % 7 != 3 {
            String::new()
        } else {
            format!("kp-v{i}-{}", "abc".repeat((i % 5) as usize))
        };
        expected.push(format!(
            "{}|{}|{}|{key}|h1=hv{i},h2=x|{value}",
            f[1], f[2], f[3]
        ));
    }
    assert_eq!(expected.len(), n, "{}", produced.describe());
    expected.sort();

    let out = consume(
        &broker,
        &topic,
        &[
            "--from-beginning",
            "--count",
            &n.to_string(),
            "--format",
            FORMAT,
        ],
    );
    let got: Vec<String> = sorted_lines(&out.stdout)
        .into_iter()
        .map(|l| {
            // A null key prints as nothing; kafka-python's null keys are every 7th record.
            let f: Vec<&str> = l.splitn(6, '|').collect();
            if f.len() == 6 && f[3].is_empty() {
                format!("{}|{}|{}|<null>|{}|{}", f[0], f[1], f[2], f[4], f[5])
            } else {
                l
            }
        })
        .collect();
    let mut got = got;
    got.sort();
    assert_eq!(got, expected, "{}", out.describe());
}

/// `--offset N --partition P` prints that partition from N on; with `--idle-timeout-ms` it
/// exits 0 once caught up. An offset past the end is an error.
#[test]
fn offset_and_partition() {
    require_tool("kcat", "-V", "apt-get install kcat");
    let broker = Broker::start(&["num.partitions=2"]);
    let topic = unique_topic("consume-offset");
    let lines: Vec<String> = (0..10).map(|i| format!("k{i}:value-{i}")).collect();
    kcat_produce(&broker, &topic, "lz4", &["-p", "1"], &lines);

    let out = consume(
        &broker,
        &topic,
        &[
            "--offset",
            "4",
            "--partition",
            "1",
            "--count",
            "6",
            "-f",
            "%p %o %k %v\\n",
        ],
    );
    let want: String = (4..10).map(|i| format!("1 {i} k{i} value-{i}\n")).collect();
    assert_eq!(out.stdout, want);

    let started = Instant::now();
    let out = consume(
        &broker,
        &topic,
        &[
            "--offset",
            "7",
            "-p",
            "1",
            "--idle-timeout-ms",
            "1500",
            "-f",
            "%o\\n",
        ],
    );
    assert_eq!(out.stdout, "7\n8\n9\n");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{}",
        out.describe()
    );

    // Partition 0 is empty: nothing, exit 0 after the idle timeout.
    let out = consume(
        &broker,
        &topic,
        &["--from-beginning", "-p", "0", "--idle-timeout-ms", "500"],
    );
    assert_eq!(out.stdout, "");

    let bootstrap = broker.bootstrap();
    let out = strata(&[
        "consume", "-b", &bootstrap, &topic, "--offset", "50", "-p", "1", "--count", "1",
    ]);
    assert!(!out.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("OffsetOutOfRange"),
        "{}",
        out.describe()
    );
}

/// Without `--from-beginning` only records produced after start-up are printed.
#[test]
fn from_the_end_then_producing_more() {
    require_tool("kcat", "-V", "apt-get install kcat");
    let broker = Broker::start(&["num.partitions=3"]);
    let topic = unique_topic("consume-tail");
    let old: Vec<String> = (0..20).map(|i| format!("old{i}:old-value-{i}")).collect();
    kcat_produce(&broker, &topic, "none", &[], &old);

    let bootstrap = broker.bootstrap();
    let tail = Background::spawn(
        strata_command(&[
            "consume", "-b", &bootstrap, &topic, "--count", "5", "-f", "%k=%v\\n",
        ]),
        None,
    );
    // Let it resolve its start positions (the log ends) before the new records arrive.
    std::thread::sleep(Duration::from_secs(3));
    let new: Vec<String> = (0..5).map(|i| format!("new{i}:new-value-{i}")).collect();
    kcat_produce(&broker, &topic, "snappy", &[], &new);
    let out = tail.wait(CLI_TIMEOUT);
    out.assert_success(|| broker.logs());
    let got: BTreeSet<String> = out.stdout.lines().map(str::to_string).collect();
    let want: BTreeSet<String> = new.iter().map(|l| l.replacen(':', "=", 1)).collect();
    assert_eq!(got, want, "{}", out.describe());
    assert_eq!(out.stdout.lines().count(), 5, "{}", out.describe());
}

/// Failures exit non-zero with one line on stderr naming the problem.
#[test]
fn error_exits() {
    // Nothing listens on this port.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let out = strata(&["consume", "-b", &addr, "--timeout-ms", "1000", "some-topic"]);
    assert!(!out.success(), "{}", out.describe());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{}",
        out.describe()
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.describe());
    assert!(out.stderr.contains(&addr), "{}", out.describe());

    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    for _ in 0..2 {
        // Twice: the first attempt must not have auto-created it.
        let out = strata(&[
            "consume",
            "-b",
            &bootstrap,
            "no-such-topic",
            "--from-beginning",
        ]);
        assert!(!out.success(), "{}", out.describe());
        assert_eq!(
            out.stderr.trim(),
            "error: topic 'no-such-topic' does not exist",
            "{}",
            out.describe()
        );
    }

    let out = strata(&["consume", "-b", &bootstrap, "t", "--no-such-flag"]);
    assert!(!out.success(), "{}", out.describe());
    assert!(out.stderr.contains("--no-such-flag"), "{}", out.describe());

    let out = strata(&["consume", "-b", &bootstrap, "t", "--format", "%x"]);
    assert!(!out.success(), "{}", out.describe());
    assert!(out.stderr.contains("%x"), "{}", out.describe());

    let out = strata(&[
        "consume",
        "-b",
        &bootstrap,
        "t",
        "--from-beginning",
        "--offset",
        "3",
    ]);
    assert!(!out.success(), "{}", out.describe());
}

/// The `Consumer` API directly: tiny fetch sizes still read every record once, in order, at
/// dense offsets; `seek` to an offset, the beginning, the end and by timestamp; an offset out of
/// range is reset per `auto_offset_reset` (or reported with `None`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_api_positions_seek_and_reset() {
    use strata_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig, SeekTo};
    use strata_client::{ClientConfig, Cluster};

    require_tool("kcat", "-V", "apt-get install kcat");
    let broker = Broker::start(&[]);
    let topic = unique_topic("consume-api");
    let n = 50usize;
    for chunk in 0..5 {
        // Five kcat runs: at least five batches.
        let lines: Vec<String> = (chunk * 10..chunk * 10 + 10)
            .map(|i| format!("k{i}:value-{i}-{}", "x".repeat(i)))
            .collect();
        kcat_produce(&broker, &topic, "gzip", &["-p", "0"], &lines);
    }
    let cluster = Cluster::connect(ClientConfig::new(&broker.bootstrap()))
        .await
        .expect("connect");
    let config = |reset| ConsumerConfig {
        max_partition_fetch_bytes: 64,
        fetch_max_wait_ms: 100,
        auto_offset_reset: reset,
        ..ConsumerConfig::default()
    };
    let tp = (topic.clone(), 0);

    let mut consumer = Consumer::new(cluster.clone(), config(AutoOffsetReset::Earliest));
    consumer.assign(std::slice::from_ref(&tp));
    assert_eq!(consumer.position(&topic, 0), None);
    let got = read_at_least(&mut consumer, n).await;
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        (0..n as i64).collect::<Vec<_>>(),
        "{}",
        broker.logs()
    );
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
        assert_eq!(
            r.value.as_deref(),
            Some(format!("value-{i}-{}", "x".repeat(i)).as_bytes())
        );
        assert_eq!(r.headers.len(), HEADERS.len());
    }
    assert_eq!(consumer.position(&topic, 0), Some(n as i64));
    // Caught up: an empty poll, bounded by its timeout.
    let started = Instant::now();
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    assert!(started.elapsed() < Duration::from_secs(3));

    assert_eq!(
        consumer.seek(&topic, 0, SeekTo::Offset(37)).await.unwrap(),
        37
    );
    let got = read_at_least(&mut consumer, 1).await;
    assert_eq!(got[0].offset, 37);
    assert_eq!(
        consumer.seek(&topic, 0, SeekTo::Beginning).await.unwrap(),
        0
    );
    assert_eq!(
        consumer.seek(&topic, 0, SeekTo::End).await.unwrap(),
        n as i64
    );
    let ts = got[0].timestamp;
    let at = consumer
        .seek(&topic, 0, SeekTo::Timestamp(ts))
        .await
        .unwrap();
    assert!(at <= 37, "first record at or after {ts} is at {at}");
    let far = common::now_ms() + 3_600_000;
    assert_eq!(
        consumer
            .seek(&topic, 0, SeekTo::Timestamp(far))
            .await
            .unwrap(),
        n as i64
    );
    assert!(consumer.seek(&topic, 1, SeekTo::Beginning).await.is_err());

    // Out of range → reset to the earliest offset.
    consumer
        .seek(&topic, 0, SeekTo::Offset(1_000))
        .await
        .unwrap();
    let got = read_at_least(&mut consumer, 1).await;
    assert_eq!(got.first().map(|r| r.offset), Some(0));

    // Out of range with no reset policy → an error, then nothing more for that partition.
    let mut strict = Consumer::new(cluster, config(AutoOffsetReset::None));
    strict.assign(std::slice::from_ref(&tp));
    assert!(strict.poll(Duration::from_millis(300)).await.is_err());
    strict.seek(&topic, 0, SeekTo::Offset(1_000)).await.unwrap();
    let mut saw_error = false;
    for _ in 0..10 {
        if strict.poll(Duration::from_millis(200)).await.is_err() {
            saw_error = true;
            break;
        }
    }
    assert!(saw_error, "offset 1000 of a 50-record log must be reported");
    assert!(strict
        .poll(Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
}

/// Polls until at least `want` records arrived (at most 100 polls of 500 ms).
async fn read_at_least(
    consumer: &mut strata_client::consumer::Consumer,
    want: usize,
) -> Vec<strata_client::consumer::ConsumerRecord> {
    let mut got = Vec::new();
    for _ in 0..100 {
        if got.len() >= want {
            break;
        }
        got.extend(
            consumer
                .poll(Duration::from_millis(500))
                .await
                .expect("poll"),
        );
    }
    got
}
