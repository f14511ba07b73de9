#!/usr/bin/env python3
"""Round trip through Strata with confluent-kafka (librdkafka).

usage: roundtrip_confluent.py TOPIC COMPRESSION N [--phase both|produce|consume] [--base-ts MS]

Produces N records (keys, values, 2 headers each, explicit timestamps) with
acks=all, idempotence off and the given compression.type, checks every
delivery report, then reads the topic back with assign() from the beginning
and checks every key, value, header and timestamp per partition, in order,
with dense offsets from 0. The topic must be new (or empty).

--phase produce / consume split the two halves around a broker restart; both
halves must then get the same --base-ts (the records are derived from it).
"""

import argparse
import sys

import strata_common as sc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("topic")
    ap.add_argument("compression", choices=sc.CODECS)
    ap.add_argument("n", type=int)
    ap.add_argument("--phase", choices=("both", "produce", "consume"), default="both")
    ap.add_argument("--base-ts", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=60.0, help="time limit for the whole run")
    a = ap.parse_args()
    if a.phase != "both" and a.base_ts is None:
        sc.die("--phase produce/consume needs an explicit --base-ts shared by both phases")
    sc.start_watchdog(a.seconds + 30)
    deadline = sc.Deadline(a.seconds, f"roundtrip_confluent {a.topic} {a.compression}")
    base_ts = a.base_ts if a.base_ts is not None else sc.now_ms() - 60_000
    tag = "ck"
    records = sc.make_records(tag, a.n, base_ts)

    delivered = None
    if a.phase in ("both", "produce"):
        delivered = sc.confluent_produce(a.topic, records, a.compression, deadline)
        sc.verify_delivered(f"confluent produce ({a.compression})", delivered, a.n)
        print(f"OK produced {a.n} records to {a.topic} with compression {a.compression}", flush=True)
    if a.phase in ("both", "consume"):
        consumed = sc.confluent_consume_all(a.topic, deadline, expected_total=a.n)
        sc.verify_consumed(f"confluent consume ({a.compression})", tag, records, consumed, delivered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
