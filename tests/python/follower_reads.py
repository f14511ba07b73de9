#!/usr/bin/env python3
"""Reads a whole one-partition topic from the beginning, for the follower-reads test.

usage: follower_reads.py {confluent,kafka-python} TOPIC N [--rack RACK]

Reads partition 0 of TOPIC with assign() (no group, nothing committed) until N records came,
and checks they are offsets 0..N-1 with values value-000000, value-000001, ... The confluent
consumer sets client.rack=RACK (KIP-392: the leader may send it to a follower in that rack);
kafka-python has no KIP-392 support and reads from the leader. Which broker served the records is
checked by the Rust test from the brokers' metrics.
"""

import argparse
import logging
import sys
import time

import strata_common as sc


def expected(i):
    return f"value-{i:06}".encode()


def read_confluent(topic, n, rack, deadline):
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    extra = {"enable.partition.eof": False}
    if rack:
        extra["client.rack"] = rack
    c = sc.confluent_consumer(extra)
    try:
        sc.confluent_partitions(c, topic, deadline)
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []
        while len(got) < n:
            deadline.check(f"confluent consumer: read {len(got)} of {n}")
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                sc.check(not msg.error().fatal(), f"fatal consumer error: {msg.error()}")
                sc.log(f"consumer error (retried): {msg.error()}")
                continue
            got.append((msg.offset(), msg.value()))
        return got
    finally:
        c.close()


def read_kafka_python(topic, n, deadline):
    from kafka import KafkaConsumer, TopicPartition

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    c = KafkaConsumer(
        bootstrap_servers=sc.bootstrap(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=15000,
    )
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = []
        while len(got) < n:
            deadline.check(f"kafka-python consumer: read {len(got)} of {n}")
            for recs in c.poll(timeout_ms=500).values():
                got.extend((r.offset, r.value) for r in recs)
        return got
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("client", choices=["confluent", "kafka-python"])
    ap.add_argument("topic")
    ap.add_argument("n", type=int)
    ap.add_argument("--rack", default="")
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()
    sc.start_watchdog(a.seconds + 15)
    deadline = sc.Deadline(a.seconds, f"follower_reads {a.client} {a.topic}")
    started = time.monotonic()
    if a.client == "confluent":
        got = read_confluent(a.topic, a.n, a.rack, deadline)
    else:
        got = read_kafka_python(a.topic, a.n, deadline)
    sc.check(len(got) == a.n, f"read {len(got)} records, expected {a.n}")
    for i, (offset, value) in enumerate(got):
        sc.check(offset == i, f"record {i} has offset {offset}")
        sc.check(value == expected(i), f"offset {i}: value {value!r}, expected {expected(i)!r}")
    print(f"OK {a.client} read {a.n} records in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
