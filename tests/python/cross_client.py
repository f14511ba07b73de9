#!/usr/bin/env python3
"""Cross-client compatibility through Strata.

usage: cross_client.py [--prefix P] [--n N] [--compression C]

1. confluent-kafka produces to topic P-ck-to-kp, kafka-python reads it back;
2. kafka-python produces to topic P-kp-to-ck, confluent-kafka reads it back.
Every key, value, header, timestamp and offset is compared.
"""

import argparse
import os
import sys

import strata_common as sc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefix", default=f"cross-{os.getpid()}")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--compression", choices=sc.CODECS, default="gzip")
    ap.add_argument("--seconds", type=float, default=90.0)
    a = ap.parse_args()
    sc.start_watchdog(a.seconds + 30)
    deadline = sc.Deadline(a.seconds, "cross_client")
    base_ts = sc.now_ms() - 60_000

    t1 = f"{a.prefix}-ck-to-kp"
    recs1 = sc.make_records("ck2kp", a.n, base_ts)
    d1 = sc.confluent_produce(t1, recs1, a.compression, deadline)
    sc.verify_delivered("confluent produce", d1, a.n)
    got1 = sc.kafka_python_consume_all(t1, deadline, expected_total=a.n)
    sc.verify_consumed("confluent -> kafka-python", "ck2kp", recs1, got1, d1)

    t2 = f"{a.prefix}-kp-to-ck"
    recs2 = sc.make_records("kp2ck", a.n, base_ts)
    sc.kafka_python_check_codec(a.compression)
    d2 = sc.kafka_python_produce(t2, recs2, a.compression, deadline)
    sc.verify_delivered("kafka-python produce", d2, a.n)
    got2 = sc.confluent_consume_all(t2, deadline, expected_total=a.n)
    sc.verify_consumed("kafka-python -> confluent", "kp2ck", recs2, got2, d2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
