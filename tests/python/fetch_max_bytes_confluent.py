#!/usr/bin/env python3
"""A consumer with a small fetch.max.bytes reads partitions whose batches nearly fill it
(librdkafka's own fetch-max-bytes case): the broker must answer within the limit (KIP-74: only
the first partition may pass it, by one batch), or librdkafka drops the response as
"Invalid response size", reconnects and never gets anything.

usage: fetch_max_bytes_confluent.py TOPIC PARTITIONS RECORDS_PER_PARTITION

Each record is ~900 KB, one per batch; the consumer asks for at most 1,000,000 bytes per fetch.
Exits 0 with an OK line once every record is read, non-zero with a FAIL line.
"""

import sys

import strata_common as sc

VALUE_BYTES = 900_000
FETCH_MAX_BYTES = 1_000_000


def main():
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic, parts, per_part = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sc.start_watchdog(120)
    p = Producer(
        {
            "bootstrap.servers": sc.bootstrap(),
            "enable.idempotence": False,
            "linger.ms": 0,
            "message.max.bytes": 2_000_000,
        }
    )
    for part in range(parts):
        for i in range(per_part):
            p.produce(topic, value=bytes([65 + i % 26]) * VALUE_BYTES, partition=part)
            p.poll(0)
    sc.check(p.flush(30) == 0, "records not delivered within 30 s")

    errors = []
    c = Consumer(
        {
            "bootstrap.servers": sc.bootstrap(),
            "group.id": "fetch-max-bytes",
            "enable.auto.commit": False,
            "fetch.max.bytes": FETCH_MAX_BYTES,
            "receive.message.max.bytes": FETCH_MAX_BYTES + 512,
            "error_cb": lambda e: errors.append(str(e)),
        }
    )
    c.assign([TopicPartition(topic, part, 0) for part in range(parts)])
    got = 0
    deadline = sc.Deadline(30, "reading every record")
    while got < parts * per_part and not deadline.expired():
        m = c.poll(0.5)
        if m is None:
            continue
        sc.check(m.error() is None, f"consumer error: {m.error()}")
        sc.check(len(m.value()) == VALUE_BYTES, f"record of {len(m.value())} bytes")
        got += 1
    c.close()
    sc.check(
        got == parts * per_part,
        f"read {got} of {parts * per_part} records; client errors: {errors[:3]}",
    )
    print(f"OK: read {got} records of {VALUE_BYTES} bytes with fetch.max.bytes={FETCH_MAX_BYTES}")


if __name__ == "__main__":
    main()
