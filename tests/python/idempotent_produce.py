#!/usr/bin/env python3
"""Idempotent producer under connection cuts: produces N records with confluent-kafka
(enable.idempotence=true, acks=all) spread evenly over SECONDS, then reads them all back.

usage: idempotent_produce.py TOPIC N PARTITIONS SECONDS MARKER_FILE

Once every record is delivered the script creates MARKER_FILE and waits a second (the test
stops cutting connections then), then reads back. Record i goes to partition i % PARTITIONS with value b"i". Every record must be delivered
(no delivery error, no fatal producer error), and each partition must read back exactly its
records, each once, in produce order. Exits 0 with an OK line, or non-zero with a FAIL line.
"""

import sys
import time

import strata_common as sc


def produce(topic, n, parts, seconds):
    from confluent_kafka import KafkaException, Producer

    errors = []
    fatal = []
    delivered = [0]

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered[0] += 1

    def on_error(err):
        sc.log(f"producer error_cb: {err}")
        if err.fatal():
            fatal.append(str(err))

    p = Producer({
        "bootstrap.servers": sc.bootstrap(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 120000,
        # Connections are cut every few hundred ms: reconnect quickly instead of backing off to 10 s.
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 300,
        "retry.backoff.ms": 20,
        "error_cb": on_error,
    })
    start = time.monotonic()
    for i in range(n):
        # Spread the records over `seconds` so the cuts land mid-stream.
        ahead = start + seconds * i / n - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        while True:
            try:
                p.produce(topic, value=str(i).encode(), partition=i % parts, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    remaining = p.flush(150)
    sc.check(not fatal, f"fatal producer error: {fatal[:3]}")
    sc.check(remaining == 0, f"{remaining} records still undelivered after flush")
    sc.check(not errors, f"{len(errors)} delivery errors, first: {errors[:3]}")
    sc.check(delivered[0] == n, f"delivered {delivered[0]} of {n}")
    try:
        p.flush(0)
    except KafkaException:
        pass
    return delivered[0]


def verify(topic, n, parts):
    deadline = sc.Deadline(90, f"read {n} records of {topic}")
    got = sc.confluent_consume_all(topic, deadline, expected_total=n)
    per_part = {p: [] for p in range(parts)}
    for rec in got:
        per_part[rec.partition].append(int(rec.value))
    for p in range(parts):
        want = list(range(p, n, parts))
        have = per_part[p]
        if have != want:
            dups = len(have) - len(set(have))
            missing = len(set(want) - set(have))
            first_bad = next((k for k, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))
            sc.die(f"partition {p}: read {len(have)} records, expected {len(want)}; "
                   f"{dups} duplicates, {missing} missing, first difference at position {first_bad}")
    return len(got)


def main():
    if len(sys.argv) != 6:
        sc.die("usage: idempotent_produce.py TOPIC N PARTITIONS SECONDS MARKER_FILE")
    topic, n, parts, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    sc.start_watchdog(280)
    delivered = produce(topic, n, parts, seconds)
    with open(sys.argv[5], "w") as f:
        f.write("produced\n")
    time.sleep(1)
    read = verify(topic, n, parts)
    print(f"OK delivered {delivered}, read back {read} exactly once and in order", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
