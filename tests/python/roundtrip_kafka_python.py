#!/usr/bin/env python3
"""Round trip through Strata with kafka-python.

usage: roundtrip_kafka_python.py TOPIC COMPRESSION N

KafkaProducer (acks='all', enable_idempotence=False, compression_type as
given) sends N records with keys, values, 2 headers and explicit timestamps;
every future must resolve. Then a KafkaConsumer with group_id=None,
assign() + seek_to_beginning() reads the topic up to its end offsets and every
record is checked per partition, in order, with dense offsets from 0.

Codecs beyond gzip need PyPI packages: snappy -> python-snappy (which pulls in cramjam),
lz4 -> lz4, zstd -> zstandard.
"""

import argparse
import sys

import strata_common as sc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("topic")
    ap.add_argument("compression", choices=sc.CODECS)
    ap.add_argument("n", type=int)
    ap.add_argument("--seconds", type=float, default=60.0, help="time limit for the whole run")
    a = ap.parse_args()
    sc.start_watchdog(a.seconds + 30)
    sc.kafka_python_check_codec(a.compression)
    deadline = sc.Deadline(a.seconds, f"roundtrip_kafka_python {a.topic} {a.compression}")
    tag = "kp"
    records = sc.make_records(tag, a.n, sc.now_ms() - 60_000)

    delivered = sc.kafka_python_produce(a.topic, records, a.compression, deadline)
    sc.verify_delivered(f"kafka-python produce ({a.compression})", delivered, a.n)
    print(f"OK produced {a.n} records to {a.topic} with compression {a.compression}", flush=True)
    consumed = sc.kafka_python_consume_all(a.topic, deadline, expected_total=a.n)
    sc.verify_consumed(f"kafka-python consume ({a.compression})", tag, records, consumed, delivered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
