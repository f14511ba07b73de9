#!/usr/bin/env python3
"""ListOffsets by timestamp through confluent-kafka (librdkafka).

For each of three one-partition topics (uncompressed, zstd, and zstd with
timestamps that are not monotonic), produces records with explicit
timestamps, lingering so that many records share one batch (the broker must
find the exact record inside a compressed batch, not just the batch), with
small segments so the lookups cross segment and index boundaries. Then checks:

- Consumer.offsets_for_times for targets before the first record, exactly at
  a record, between two records and after the last (-1: no such record, which
  librdkafka reports as OFFSET_END);
- AdminClient.list_offsets with earliest, latest, max_timestamp and
  for_timestamp specs;
- Consumer.get_watermark_offsets (cached and from the broker);
- that a consumer assigned at the offset found for a timestamp reads the
  record with that timestamp first.

usage: offsets_by_time.py TOPIC_PREFIX [RECORDS]
"""

import json
import sys
import time

import strata_common as sc

SEGMENT_BYTES = 4096
RECORDS_PER_BATCH = 25


def make_values(n):
    # ~120 bytes each, compressible: zstd batches hold many records.
    return [f"offsets-by-time record {i:05d} ".encode() + b"x" * (80 + i % 40) for i in range(n)]


def create_topic(admin, topic, deadline):
    from confluent_kafka.admin import NewTopic

    futs = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1,
                  config={"segment.bytes": str(SEGMENT_BYTES), "index.interval.bytes": "256"})],
        request_timeout=15)
    try:
        futs[topic].result(timeout=20)
    except Exception as e:  # noqa: BLE001
        sc.die(f"CreateTopics {topic}: {e}")
    while True:
        md = admin.list_topics(timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == 1:
            return
        deadline.check(f"topic {topic} not in metadata after creation")
        time.sleep(0.2)


def produce(topic, values, timestamps, codec, deadline):
    """Produces values[i] with timestamps[i]; returns the largest number of
    records librdkafka put in one batch (from its statistics)."""
    from confluent_kafka import Producer

    stats = {"batchcnt_max": 0}

    def on_stats(s):
        t = json.loads(s).get("topics", {}).get(topic)
        if t:
            stats["batchcnt_max"] = max(stats["batchcnt_max"], t.get("batchcnt", {}).get("max", 0))

    p = Producer({
        "bootstrap.servers": sc.bootstrap(),
        "acks": "all",
        "enable.idempotence": False,
        "compression.type": codec,
        "linger.ms": 200,
        "batch.num.messages": RECORDS_PER_BATCH,
        "message.timeout.ms": 30000,
        "statistics.interval.ms": 100,
        "stats_cb": on_stats,
        "error_cb": lambda e: sc.log(f"producer error_cb: {e}"),
    })
    delivered = {}
    failures = []

    def cb(i):
        def f(err, msg):
            if err is not None:
                failures.append(f"record {i}: {err}")
            else:
                delivered[i] = msg.offset()
        return f

    for i, (v, ts) in enumerate(zip(values, timestamps)):
        p.produce(topic, value=v, key=f"k{i}".encode(), timestamp=ts, on_delivery=cb(i))
    while len(p) > 0:
        deadline.check(f"{topic}: {len(p)} records not acknowledged")
        p.flush(1.0)
    sc.check(not failures, f"{topic}: delivery failures: {failures[:5]}")
    offsets = [delivered.get(i) for i in range(len(values))]
    sc.check(offsets == list(range(len(values))),
             f"{topic}: acknowledged offsets are not 0..{len(values) - 1}: {offsets[:30]}")
    # One more statistics interval so the last batches are counted.
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        p.poll(0.1)
    return stats["batchcnt_max"]


def expected_offset(timestamps, target):
    """Kafka: the first offset whose timestamp is >= target, else -1."""
    for i, ts in enumerate(timestamps):
        if ts >= target:
            return i
    return -1


def check_topic(topic, timestamps, codec, min_batch, deadline):
    from confluent_kafka import Consumer, TopicPartition, OFFSET_END, KafkaException
    from confluent_kafka.admin import AdminClient, OffsetSpec

    n = len(timestamps)
    c = Consumer({
        "bootstrap.servers": sc.bootstrap(),
        "group.id": "strata-tests-unused-group",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "error_cb": lambda e: sc.log(f"consumer error_cb: {e}"),
    })
    admin = AdminClient({"bootstrap.servers": sc.bootstrap(),
                         "error_cb": lambda e: sc.log(f"admin error_cb: {e}")})
    try:
        # Watermarks, from the broker.
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
        sc.check((lo, hi) == (0, n), f"{topic}: get_watermark_offsets = ({lo}, {hi}), expected (0, {n})")

        first, last = timestamps[0], timestamps[-1]
        targets = {
            "long before the first record": first - 10_000_000,
            "1 ms before the first record": first - 1,
            "exactly the first record": first,
            "exactly the last record": last,
            "1 ms after the last record": last + 1,
            "an hour after the last record": last + 3_600_000,
        }
        for k in sorted({1, 2, min_batch - 1, min_batch, min_batch + 1, n // 3, n // 2, n - 2}):
            if 0 < k < n:
                targets[f"exactly record {k}"] = timestamps[k]
                targets[f"between records {k - 1} and {k}"] = timestamps[k] - 1
                targets[f"1 ms after record {k}"] = timestamps[k] + 1
        names = list(targets)
        # One request for all targets would ask for the same partition many
        # times; librdkafka sends one OffsetsForTimes per call, so call per target.
        mismatches = []
        for name in names:
            target = targets[name]
            want = expected_offset(timestamps, target)
            want_client = OFFSET_END if want == -1 else want
            try:
                got = c.offsets_for_times([TopicPartition(topic, 0, target)], timeout=10)
            except KafkaException as e:
                sc.die(f"{topic}: offsets_for_times({name}: {target}) failed: {e}")
            tp = got[0]
            if tp.error is not None or tp.offset != want_client:
                mismatches.append(f"{name} (ts {target}): got offset {tp.offset} error {tp.error}, "
                                  f"expected {want_client} (the first record with timestamp >= target"
                                  f"{'' if want == -1 else f' has ts {timestamps[want]}'})")
            deadline.check(f"{topic}: offsets_for_times")
        sc.check(not mismatches, f"{topic} ({codec}): offsets_for_times mismatches:\n  " + "\n  ".join(mismatches))
        print(f"OK {topic}: {len(names)} offsets_for_times lookups", flush=True)

        # AdminClient.list_offsets (ListOffsets v7 with max timestamp).
        tp0 = TopicPartition(topic, 0)
        max_ts = max(timestamps)
        max_at = timestamps.index(max_ts)
        k = n // 2
        specs = [
            ("earliest", OffsetSpec.earliest(), 0, None),
            ("latest", OffsetSpec.latest(), n, None),
            ("max_timestamp", OffsetSpec.max_timestamp(), max_at, max_ts),
            (f"for_timestamp(record {k})", OffsetSpec.for_timestamp(timestamps[k]),
             expected_offset(timestamps, timestamps[k]), timestamps[expected_offset(timestamps, timestamps[k])]),
            (f"for_timestamp(before record {k})", OffsetSpec.for_timestamp(timestamps[k] - 1),
             expected_offset(timestamps, timestamps[k] - 1),
             timestamps[expected_offset(timestamps, timestamps[k] - 1)]),
            ("for_timestamp(after last)", OffsetSpec.for_timestamp(max_ts + 1), -1, -1),
        ]
        for name, spec, want_off, want_ts in specs:
            fut = admin.list_offsets({tp0: spec}, request_timeout=10)[tp0]
            try:
                info = fut.result(timeout=15)
            except Exception as e:  # noqa: BLE001
                sc.die(f"{topic}: AdminClient.list_offsets {name} failed: {e}")
            sc.check(info.offset == want_off,
                     f"{topic} ({codec}): list_offsets {name}: offset {info.offset}, expected {want_off}")
            if want_ts is not None:
                sc.check(info.timestamp == want_ts,
                         f"{topic} ({codec}): list_offsets {name}: timestamp {info.timestamp}, expected {want_ts}")
        print(f"OK {topic}: AdminClient.list_offsets earliest/latest/max_timestamp/for_timestamp", flush=True)

        # A consumer placed at the offset found for a timestamp reads that record first.
        k = min(n - 1, min_batch + 3)
        found = c.offsets_for_times([TopicPartition(topic, 0, timestamps[k])], timeout=10)[0]
        sc.check(found.offset == expected_offset(timestamps, timestamps[k]),
                 f"{topic}: offsets_for_times for record {k}: {found.offset}")
        c.assign([found])
        msg = None
        while msg is None:
            deadline.check(f"{topic}: consuming from offset {found.offset}")
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                msg = m
            elif m is not None:
                sc.log(f"consumer: {m.error()}")
        sc.check(msg.offset() == found.offset and msg.timestamp()[1] == timestamps[found.offset]
                 and msg.value().startswith(f"offsets-by-time record {found.offset:05d} ".encode()),
                 f"{topic}: first record after seeking to {found.offset}: offset {msg.offset()} "
                 f"ts {msg.timestamp()} value {msg.value()[:30]!r}")
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=True)
        sc.check(hi == n,
                 f"{topic}: cached high watermark {hi}, expected {n}")
    finally:
        c.close()


def main():
    if len(sys.argv) not in (2, 3):
        sc.die("usage: offsets_by_time.py TOPIC_PREFIX [RECORDS]")
    prefix = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) == 3 else 400
    sc.start_watchdog(150)
    from confluent_kafka.admin import AdminClient

    deadline = sc.Deadline(120, "offsets_by_time")
    admin = AdminClient({"bootstrap.servers": sc.bootstrap(),
                         "error_cb": lambda e: sc.log(f"admin error_cb: {e}")})
    base = sc.now_ms() - 3_600_000
    base -= base % 1000
    increasing = [base + i * 1000 for i in range(n)]
    # Not monotonic: every 7th record is 3.5 s "late" and every 11th 2.5 s
    # "early", so records with a larger timestamp precede smaller ones, inside
    # batches and across them. The record with the largest timestamp sits in
    # the middle of the log.
    jitter = []
    for i in range(n):
        ts = base + i * 1000
        if i % 7 == 3:
            ts += 3500
        elif i % 11 == 5:
            ts -= 2500
        jitter.append(ts)
    jitter[n // 2] = base + (n + 100) * 1000

    cases = [("none", increasing, "none"), ("zstd", increasing, "zstd"), ("zstd-jitter", jitter, "zstd")]
    for name, timestamps, codec in cases:
        topic = f"{prefix}-{name}"
        create_topic(admin, topic, deadline)
        batch_max = produce(topic, make_values(n), timestamps, codec, deadline)
        sc.check(batch_max > 1,
                 f"{topic}: librdkafka never put more than {batch_max} record(s) in one batch; "
                 f"the test needs multi-record batches")
        print(f"OK {topic}: produced {n} records ({codec}), up to {batch_max} per batch", flush=True)
        check_topic(topic, timestamps, codec, min(batch_max, RECORDS_PER_BATCH), deadline)
    print("OK offsets_by_time", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
