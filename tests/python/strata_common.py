"""Shared helpers for the Strata third-party client tests.

Every script takes the broker address from the BOOTSTRAP environment variable
(set by the Rust harness, tests/tests/common/mod.rs), exits 0 on success and
non-zero with a "FAIL: ..." line on stderr on any mismatch. Every loop is
bounded in time; a watchdog thread hard-exits a script that hangs inside a
client library call.

The codec and round-trip helpers here test the data path alone: producers run with idempotence
disabled and consumers use assign() and commit nothing. Consumer groups and the idempotent
producer have their own scripts (group_*.py, idempotent_produce.py, committed_offsets.py).
"""

import faulthandler
import hashlib
import os
import sys
import time

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")

# A consumer that gets no record for this long stops and reports what is missing.
STALL_SECONDS = 10.0

# PyPI packages kafka-python needs for each codec (gzip is in the stdlib).
KAFKA_PYTHON_CODEC_PACKAGES = {
    "snappy": "python-snappy",
    "lz4": "lz4",
    "zstd": "zstandard",
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg):
    print("FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        die(msg)


def bootstrap():
    b = os.environ.get("BOOTSTRAP")
    if not b:
        die("BOOTSTRAP environment variable is not set (host:port of the broker)")
    return b


def start_watchdog(seconds):
    """Hard limit for the whole script: dumps all thread stacks and exits
    non-zero even if the main thread is stuck inside a C library call."""
    print(f"(watchdog: script hard limit {seconds} s)", file=sys.stderr, flush=True)
    faulthandler.dump_traceback_later(seconds, exit=True)


class Deadline:
    def __init__(self, seconds, what):
        self.end = time.monotonic() + seconds
        self.seconds = seconds
        self.what = what

    def remaining(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end

    def check(self, state=""):
        if self.expired():
            die(f"{self.what}: did not finish within {self.seconds} s. {state}")


def now_ms():
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------
# Deterministic test records
# ---------------------------------------------------------------------------


class Rec:
    __slots__ = ("i", "key", "value", "headers", "ts")

    def __init__(self, i, key, value, headers, ts):
        self.i = i
        self.key = key
        self.value = value
        self.headers = headers
        self.ts = ts


def _pseudo_random(i, n):
    out = bytearray()
    c = 0
    while len(out) < n:
        out += hashlib.sha256(f"{i}/{c}".encode()).digest()
        c += 1
    return bytes(out[:n])


def make_records(tag, n, base_ts):
    """n records: keys "<tag>-key-000042", values of varied size and
    compressibility (some empty, some binary, a few ~20 KiB), two headers each
    (one binary) and explicit timestamps base_ts + i."""
    recs = []
    for i in range(n):
        key = f"{tag}-key-{i:06d}".encode()
        if i % 97 == 5:
            value = b""
        elif i % 3 == 0:
            value = _pseudo_random(i, 16 + i % 200)
        elif i % 500 == 7:
            value = (f"big-{i}-" * 2000).encode()
        else:
            value = (f"value-{i}|" + "lorem ipsum dolor sit amet " * (1 + i % 7)).encode()
        headers = [("h1", f"hv1-{i}".encode()), ("h2", bytes([i % 256, 0, 255, (i * 7) % 256]))]
        recs.append(Rec(i, key, value, headers, base_ts + i))
    return recs


def index_of_key(tag, key):
    prefix = f"{tag}-key-".encode()
    if key is None or not key.startswith(prefix):
        return None
    try:
        return int(key[len(prefix):])
    except ValueError:
        return None


class Consumed:
    """One consumed record, client-independent."""

    __slots__ = ("partition", "offset", "key", "value", "headers", "ts", "ts_type")

    def __init__(self, partition, offset, key, value, headers, ts, ts_type):
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
        self.ts = ts
        self.ts_type = ts_type  # "create", "append" or "other"


def _norm_headers(h):
    if h is None:
        return []
    out = []
    for k, v in h:
        if isinstance(k, bytes):
            k = k.decode("utf-8", "replace")
        out.append((k, v))
    return out


def verify_consumed(what, tag, records, consumed, delivered=None):
    """Checks that `consumed` (list of Consumed, in consumption order) holds
    exactly `records`: every key, value, header and timestamp; per partition in
    produce order with dense offsets from 0; and, if `delivered` (index ->
    (partition, offset) from delivery reports) is given, at the reported
    positions."""
    errors = []

    def err(m):
        if len(errors) < 25:
            errors.append(m)
        elif len(errors) == 25:
            errors.append("... (more errors cut)")

    seen = {}
    next_offset = {}
    last_index = {}
    for c in consumed:
        exp_off = next_offset.get(c.partition, 0)
        if c.offset != exp_off:
            err(f"partition {c.partition}: got offset {c.offset}, expected {exp_off} (offsets must be dense from 0, in order)")
        next_offset[c.partition] = c.offset + 1
        i = index_of_key(tag, c.key)
        if i is None or i >= len(records):
            err(f"p{c.partition}@{c.offset}: unexpected key {c.key!r}")
            continue
        if i in seen:
            err(f"record {i} consumed twice: at p{seen[i][0]}@{seen[i][1]} and p{c.partition}@{c.offset}")
        seen[i] = (c.partition, c.offset)
        r = records[i]
        if c.value != r.value:
            err(f"record {i} at p{c.partition}@{c.offset}: value mismatch: got {len(c.value or b'')} bytes {(c.value or b'')[:40]!r}..., expected {len(r.value)} bytes {r.value[:40]!r}...")
        hs = _norm_headers(c.headers)
        if hs != r.headers:
            err(f"record {i} at p{c.partition}@{c.offset}: headers {hs!r}, expected {r.headers!r}")
        if c.ts != r.ts:
            err(f"record {i} at p{c.partition}@{c.offset}: timestamp {c.ts}, expected {r.ts}")
        if c.ts_type != "create":
            err(f"record {i} at p{c.partition}@{c.offset}: timestamp type {c.ts_type}, expected CreateTime")
        if i <= last_index.get(c.partition, -1):
            err(f"partition {c.partition}: record {i} at offset {c.offset} comes after record {last_index[c.partition]} (produce order broken)")
        last_index[c.partition] = i
        if delivered is not None and i in delivered and delivered[i] != (c.partition, c.offset):
            err(f"record {i}: delivery report said p{delivered[i][0]}@{delivered[i][1]}, consumed at p{c.partition}@{c.offset}")
    missing = [i for i in range(len(records)) if i not in seen]
    if missing:
        err(f"{len(missing)} of {len(records)} records never consumed, e.g. {missing[:10]}")
    if errors:
        die(f"{what}: {len(consumed)} records consumed, mismatches:\n  " + "\n  ".join(errors))
    parts = ", ".join(f"p{p}: {n}" for p, n in sorted(next_offset.items()))
    print(f"OK {what}: {len(records)} records verified ({parts})", flush=True)


def verify_delivered(what, delivered, n):
    """Delivery reports: every record acknowledged, offsets per partition dense
    from 0 and increasing in produce order."""
    check(len(delivered) == n, f"{what}: {len(delivered)} of {n} records acknowledged")
    per_part = {}
    for i in range(n):
        p, o = delivered[i]
        per_part.setdefault(p, []).append(o)
    for p, offs in per_part.items():
        check(offs == list(range(len(offs))),
              f"{what}: partition {p}: acknowledged offsets in produce order are not 0..{len(offs) - 1}: first ones {offs[:20]}")


# ---------------------------------------------------------------------------
# confluent-kafka (librdkafka)
# ---------------------------------------------------------------------------


def confluent_produce(topic, records, compression, deadline):
    from confluent_kafka import Producer

    conf = {
        "bootstrap.servers": bootstrap(),
        "acks": "all",
        "enable.idempotence": False,
        "compression.type": compression,
        "linger.ms": 5,
        "message.timeout.ms": int(max(5, deadline.remaining() - 5) * 1000),
        "error_cb": lambda e: log(f"confluent producer error_cb: {e}"),
    }
    p = Producer(conf)
    delivered = {}
    failures = []

    def on_delivery(i):
        def cb(e, msg):
            if e is not None:
                failures.append(f"record {i}: {e}")
            else:
                delivered[i] = (msg.partition(), msg.offset())
        return cb

    for r in records:
        for _ in range(100000):
            try:
                p.produce(topic, key=r.key, value=r.value, headers=r.headers,
                          timestamp=r.ts, on_delivery=on_delivery(r.i))
                break
            except BufferError:
                p.poll(0.05)
                deadline.check("producer queue stayed full")
        p.poll(0)
    while len(p) > 0 and not deadline.expired():
        p.flush(min(1.0, max(0.1, deadline.remaining())))
    check(len(p) == 0, f"confluent producer: {len(p)} records still unacknowledged at the deadline")
    check(not failures, f"confluent producer: {len(failures)} delivery failures: {failures[:10]}")
    return delivered


def _ck_ts_type(t):
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME
    if t == TIMESTAMP_CREATE_TIME:
        return "create"
    if t == TIMESTAMP_LOG_APPEND_TIME:
        return "append"
    return f"other({t})"


def confluent_consumer(extra=None):
    """A consumer for assign()-only use. group.id is set (the Python client has
    historically required it) but nothing is committed, so no group
    coordinator should be needed."""
    from confluent_kafka import Consumer

    conf = {
        "bootstrap.servers": bootstrap(),
        "group.id": "strata-tests-unused-group",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "error_cb": lambda e: log(f"confluent consumer error_cb: {e}"),
    }
    conf.update(extra or {})
    return Consumer(conf)


def confluent_partitions(client, topic, deadline):
    """Partition ids of an existing topic, retrying (bounded) while metadata
    is not yet there."""
    last = None
    while not deadline.expired():
        md = client.list_topics(topic, timeout=max(1.0, min(5.0, deadline.remaining())))
        t = md.topics.get(topic)
        if t is not None and t.error is None and t.partitions:
            return sorted(t.partitions.keys())
        last = t.error if t is not None else "topic missing from metadata"
        time.sleep(0.2)
    die(f"metadata for topic {topic!r} not available: {last}")


def confluent_consume_all(topic, deadline, expected_total=None):
    """Reads every partition of `topic` from the beginning with assign() until
    each partition reports end-of-partition (and at least expected_total
    records were read). Returns a list of Consumed in consumption order."""
    from confluent_kafka import KafkaError, TopicPartition, OFFSET_BEGINNING

    c = confluent_consumer()
    try:
        parts = confluent_partitions(c, topic, deadline)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out = []
        next_off = {p: 0 for p in parts}
        at_eof = {p: False for p in parts}
        other_errors = []
        all_eof_since = None
        while True:
            if all(at_eof.values()):
                if expected_total is None or len(out) >= expected_total:
                    break
                # Every partition is at its end but records are missing: give
                # the broker a short grace, then let the caller's verification
                # say exactly what is missing.
                if all_eof_since is None:
                    all_eof_since = time.monotonic()
                elif time.monotonic() - all_eof_since > 3.0:
                    log(f"confluent consumer: all partitions at end after {len(out)} of "
                        f"{expected_total} records (next offsets {next_off}); stopping")
                    break
            else:
                all_eof_since = None
            deadline.check(f"confluent consumer: read {len(out)} records"
                           f"{'' if expected_total is None else f' of {expected_total}'}; "
                           f"partitions at EOF: {at_eof}; next offsets {next_off}; "
                           f"client errors: {other_errors[:5]}")
            msg = c.poll(0.5)
            if msg is None:
                continue
            e = msg.error()
            if e is not None:
                if e.code() == KafkaError._PARTITION_EOF:
                    # EOF is reported at the offset after the last record.
                    at_eof[msg.partition()] = msg.offset() == next_off[msg.partition()]
                    continue
                if e.fatal():
                    die(f"confluent consumer fatal error: {e}")
                other_errors.append(str(e))
                log(f"confluent consumer error (not fatal, continuing): {e}")
                continue
            p = msg.partition()
            at_eof[p] = False
            next_off[p] = msg.offset() + 1
            ts_type, ts = msg.timestamp()
            out.append(Consumed(p, msg.offset(), msg.key(), msg.value() or b"",
                                msg.headers(), ts, _ck_ts_type(ts_type)))
        if other_errors:
            log(f"note: confluent consumer reported {len(other_errors)} non-fatal errors, first: {other_errors[:3]}")
        return out
    finally:
        c.close()


# ---------------------------------------------------------------------------
# kafka-python
# ---------------------------------------------------------------------------


def kafka_python_check_codec(compression):
    from kafka import codec

    has = {
        "none": lambda: True,
        "gzip": codec.has_gzip,
        "snappy": codec.has_snappy,
        "lz4": codec.has_lz4,
        "zstd": codec.has_zstd,
    }
    check(compression in has, f"unknown codec {compression!r}; use one of {CODECS}")
    if not has[compression]():
        die(f"kafka-python cannot do {compression}: Python package missing, "
            f"pip install {KAFKA_PYTHON_CODEC_PACKAGES[compression]}")


def kafka_python_produce(topic, records, compression, deadline):
    import logging
    from kafka import KafkaProducer

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    kafka_python_check_codec(compression)
    p = KafkaProducer(
        bootstrap_servers=bootstrap(),
        acks="all",
        enable_idempotence=False,
        compression_type=None if compression == "none" else compression,
        linger_ms=5,
        request_timeout_ms=15000,
        max_block_ms=20000,
    )
    try:
        futures = []
        for r in records:
            deadline.check("kafka-python producer: send() calls")
            futures.append((r.i, p.send(topic, key=r.key, value=r.value, headers=r.headers,
                                        timestamp_ms=r.ts)))
        p.flush(timeout=max(1.0, deadline.remaining()))
        delivered = {}
        failures = []
        for i, f in futures:
            try:
                md = f.get(timeout=max(0.1, deadline.remaining()))
                delivered[i] = (md.partition, md.offset)
            except Exception as e:  # noqa: BLE001 - report every failure
                failures.append(f"record {i}: {type(e).__name__}: {e}")
        check(not failures, f"kafka-python producer: {len(failures)} delivery failures: {failures[:10]}")
        return delivered
    finally:
        p.close(timeout=5)


def _kp_ts_type(t):
    return {0: "create", 1: "append"}.get(t, f"other({t})")


def kafka_python_consume_all(topic, deadline, expected_total=None):
    """assign() + seek_to_beginning() with no group; reads until every
    partition's position reaches its end offset (ListOffsets latest)."""
    import logging
    from kafka import KafkaConsumer, TopicPartition

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    c = KafkaConsumer(
        bootstrap_servers=bootstrap(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=15000,
    )
    try:
        parts = None
        while not deadline.expired():
            parts = c.partitions_for_topic(topic)
            if parts:
                break
            time.sleep(0.2)
        check(parts, f"kafka-python: no partitions known for topic {topic!r}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning()
        ends = c.end_offsets(tps)
        out = []
        last_progress = time.monotonic()
        while True:
            positions = {tp.partition: c.position(tp) for tp in tps}
            # At the end offsets (taken after all acknowledgements) there is
            # nothing more to read; a shortfall is reported by the caller.
            if all(positions[tp.partition] >= ends[tp] for tp in tps):
                break
            if time.monotonic() - last_progress > STALL_SECONDS:
                # No record for a while: stop and let the caller's
                # verification say exactly what is missing.
                log(f"kafka-python consumer: no progress for {STALL_SECONDS} s after {len(out)} records; "
                    f"positions {positions}, end offsets {ends}; stopping")
                break
            deadline.check(f"kafka-python consumer: read {len(out)} records; positions {positions}; "
                           f"end offsets {ends}")
            batch = c.poll(timeout_ms=500)
            if batch:
                last_progress = time.monotonic()
            for tp, recs in batch.items():
                for r in recs:
                    # Raw value: an empty value must stay b"", not None.
                    out.append(Consumed(tp.partition, r.offset, r.key, r.value,
                                        r.headers, r.timestamp, _kp_ts_type(r.timestamp_type)))
        return out
    finally:
        c.close()
