//! A user with the stock `kcat` (librdkafka) tool produces and consumes
//! through Strata: keyed lines with headers, every compression codec, and the
//! data must still be there after the broker is SIGKILLed and restarted.
//!
//! kcat is used without `-G` here (simple consumer); kcat in consumer groups is
//! tested in groups.rs and group_clients.rs.

mod common;

use std::time::Duration;

use common::{
    kcat_produce_keyed, kcat_read_all, now_ms, require_tool, unique_topic, Broker, Output,
};

const KCAT_TIMEOUT: Duration = Duration::from_secs(60);

/// Header flags passed to every produce and expected back on every record.
const HEADERS: [&str; 2] = ["h1=v1", "h2=second value"];
const HEADERS_OUT: &str = "h1=v1,h2=second value";

fn require_kcat() {
    require_tool("kcat", "-V", "apt-get install kcat");
}

/// One input line `key:value` for kcat's `-K:`; values contain neither `|` nor
/// newlines so the `-f` output can be split on `|`.
fn keyed_lines(tag: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let key = format!("{tag}-k{i:05}");
            let value = match i % 4 {
                0 => format!("v{i}"),
                1 => format!("value {i} {}", "compressible text ".repeat(1 + i % 20)),
                2 => format!("ünïcødé {i} ✓"),
                _ => format!("{i}:{}", "0123456789abcdef".repeat(i % 64)),
            };
            (key, value)
        })
        .collect()
}

/// `kcat -P` the records (stdin `key:value` lines) with the given codec.
fn kcat_produce(broker: &Broker, topic: &str, codec: &str, records: &[(String, String)]) -> Output {
    let input: String = records.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    kcat_produce_keyed(broker, topic, codec, &HEADERS, &[], &input)
}

/// A consumed record as printed by kcat's `-f '%p|%o|%T|%k|%h|%s\n'`.
#[derive(Debug, Clone, PartialEq)]
struct KcatRecord {
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: String,
    headers: String,
    value: String,
}

/// `kcat -C -o beginning -e` over the whole topic (all partitions).
fn kcat_consume_all(broker: &Broker, topic: &str) -> Vec<KcatRecord> {
    kcat_read_all(broker, topic, None, "%p|%o|%T|%k|%h|%s\n", KCAT_TIMEOUT)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.splitn(6, '|').collect();
            assert_eq!(f.len(), 6, "unparsable kcat line {line:?}");
            let num = |s: &str| -> i64 {
                s.parse()
                    .unwrap_or_else(|_| panic!("bad number {s:?} in kcat line {line:?}"))
            };
            KcatRecord {
                partition: num(f[0]) as i32,
                offset: num(f[1]),
                timestamp: num(f[2]),
                key: f[3].to_string(),
                headers: f[4].to_string(),
                value: f[5].to_string(),
            }
        })
        .collect()
}

/// Everything consumed is exactly `expected`, in order, on partition 0 at
/// offsets 0.., with both headers and a CreateTime in `[t0, t1]`.
fn assert_single_partition_log(
    broker: &Broker,
    got: &[KcatRecord],
    expected: &[(String, String)],
    t0: i64,
    t1: i64,
) {
    assert_eq!(
        got.len(),
        expected.len(),
        "record count differs (first consumed: {:?}){}",
        got.first(),
        broker.logs()
    );
    for (i, (r, (k, v))) in got.iter().zip(expected).enumerate() {
        let want = KcatRecord {
            partition: 0,
            offset: i as i64,
            timestamp: r.timestamp,
            key: k.clone(),
            headers: HEADERS_OUT.to_string(),
            value: v.clone(),
        };
        assert_eq!(r, &want, "record {i} differs{}", broker.logs());
        assert!(
            (t0..=t1).contains(&r.timestamp),
            "record {i}: timestamp {} not within the produce window [{t0}, {t1}]",
            r.timestamp
        );
    }
}

fn roundtrip_with_codec(codec: &str) {
    require_kcat();
    let broker = Broker::start(&[]);
    let topic = unique_topic(&format!("kcat-{codec}"));
    let records = keyed_lines(codec, 500);

    let t0 = now_ms();
    kcat_produce(&broker, &topic, codec, &records);
    let t1 = now_ms();

    let got = kcat_consume_all(&broker, &topic);
    assert_single_partition_log(&broker, &got, &records, t0, t1);
}

#[test]
fn kcat_roundtrip_uncompressed() {
    roundtrip_with_codec("none");
}

#[test]
fn kcat_roundtrip_gzip() {
    roundtrip_with_codec("gzip");
}

#[test]
fn kcat_roundtrip_snappy() {
    roundtrip_with_codec("snappy");
}

#[test]
fn kcat_roundtrip_lz4() {
    roundtrip_with_codec("lz4");
}

#[test]
fn kcat_roundtrip_zstd() {
    roundtrip_with_codec("zstd");
}

/// With `num.partitions=3` kcat's keyed records spread over partitions; each
/// partition holds its records in produce order at dense offsets from 0.
#[test]
fn kcat_auto_created_topic_with_three_partitions() {
    require_kcat();
    let broker = Broker::start(&["num.partitions=3"]);
    let topic = unique_topic("kcat-3p");
    let records = keyed_lines("p3", 600);
    kcat_produce(&broker, &topic, "lz4", &records);

    let got = kcat_consume_all(&broker, &topic);
    assert_eq!(got.len(), records.len(), "record count{}", broker.logs());
    let mut per_partition: Vec<Vec<&KcatRecord>> = vec![Vec::new(); 3];
    for r in &got {
        assert!(
            (0..3).contains(&r.partition),
            "record on unexpected partition: {r:?}"
        );
        per_partition[r.partition as usize].push(r);
    }
    let mut seen = vec![false; records.len()];
    for (p, recs) in per_partition.iter().enumerate() {
        let mut last_index = None;
        for (off, r) in recs.iter().enumerate() {
            assert_eq!(r.offset, off as i64, "partition {p}: offsets not dense");
            let i: usize = r
                .key
                .strip_prefix("p3-k")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("unexpected key in {r:?}"));
            assert!(!seen[i], "record {i} consumed twice");
            seen[i] = true;
            assert_eq!(r.value, records[i].1, "value of record {i}");
            assert_eq!(r.headers, HEADERS_OUT, "headers of record {i}");
            assert!(
                last_index < Some(i),
                "partition {p}: record {i} after {last_index:?}: produce order broken"
            );
            last_index = Some(i);
        }
    }
    let used = per_partition.iter().filter(|v| !v.is_empty()).count();
    assert!(
        used >= 2,
        "600 distinct keys landed on {used} partition(s) only"
    );
}

/// Produce, SIGKILL the broker, restart it on the same data directory: every
/// record is still there, and new records continue at the next offset.
#[test]
fn kcat_records_survive_kill9_and_restart() {
    require_kcat();
    let mut broker = Broker::start(&[]);
    let topic = unique_topic("kcat-crash");
    let first = keyed_lines("before", 1000);
    let t0 = now_ms();
    kcat_produce(&broker, &topic, "snappy", &first);
    let t1 = now_ms();

    broker.kill9();
    broker.restart();

    let got = kcat_consume_all(&broker, &topic);
    assert_single_partition_log(&broker, &got, &first, t0, t1);

    let second = keyed_lines("after", 200);
    kcat_produce(&broker, &topic, "zstd", &second);
    let t2 = now_ms();
    let all: Vec<(String, String)> = first.iter().chain(&second).cloned().collect();
    let got = kcat_consume_all(&broker, &topic);
    assert_single_partition_log(&broker, &got, &all, t0, t2);
}
