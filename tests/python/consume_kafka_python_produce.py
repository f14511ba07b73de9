#!/usr/bin/env python3
"""Produce records with kafka-python for the `strata consume` tests.

usage: consume_kafka_python_produce.py TOPIC N [--compression CODEC]

KafkaProducer (acks='all', enable_idempotence=False) sends N records: key
"kp-k<i>" (None for every 7th record), value "kp-v<i>-<text>" (None for every
11th record that has a key), headers h1="hv<i>" and h2="x", timestamp BASE+i. Prints one
line per record to stdout: "<i> <partition> <offset> <timestamp>", then "DONE".
"""

import argparse
import sys

import strata_common as sc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("topic")
    ap.add_argument("n", type=int)
    ap.add_argument("--compression", choices=sc.CODECS, default="none")
    ap.add_argument("--seconds", type=float, default=60.0)
    a = ap.parse_args()
    sc.start_watchdog(a.seconds + 30)
    deadline = sc.Deadline(a.seconds, f"consume_kafka_python_produce {a.topic}")
    base_ts = sc.now_ms() - 60_000
    records = []
    for i in range(a.n):
        key = None if i % 7 == 3 else f"kp-k{i}".encode()
        value = None if i % 11 == 4 and key is not None else f"kp-v{i}-{'abc' * (i % 5)}".encode()
        headers = [("h1", f"hv{i}".encode()), ("h2", b"x")]
        records.append(sc.Rec(i, key, value, headers, base_ts + i))
    delivered = sc.kafka_python_produce(a.topic, records, a.compression, deadline)
    sc.verify_delivered("kafka-python produce", delivered, a.n)
    for r in records:
        p, o = delivered[r.i]
        print(f"{r.i} {p} {o} {r.ts}")
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
