#!/usr/bin/env python3
"""A confluent-kafka (librdkafka) consumer in a consumer group, through Strata's coordinator.

usage: group_consumer_confluent.py TOPIC GROUP --seconds S [--until-records N] [--ready-file F]
                                   [--instance ID]

Subscribes to TOPIC as a member of GROUP (auto commit off: offsets are not the point here),
from the earliest offset, and polls until N records were read (when given) or S seconds passed.
With --ready-file, creates F once the first assignment arrived (so a test can add a member).
With --instance, the member is static (group.instance.id=ID, KIP-345): it does not leave the
group on close, and a restart within its session timeout gets its assignment back.
Prints one JSON line on stdout:
  {"first_record_s": seconds from subscribe() to the first record (null if none),
   "assigned": the partitions assigned at the end, "records": {partition: count},
   "assignments": every assignment received, in order}
and exits 0; non-zero with "FAIL: ..." on a client error.
"""

import argparse
import json
import sys
import time

import strata_common as sc
from confluent_kafka import Consumer, KafkaError


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("topic")
    ap.add_argument("group")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--until-records", type=int, default=None)
    ap.add_argument("--ready-file", default=None)
    ap.add_argument("--instance", default=None)
    a = ap.parse_args()
    sc.start_watchdog(a.seconds + 30)
    assigned = []
    history = []

    def on_assign(consumer, partitions):
        assigned[:] = sorted(p.partition for p in partitions)
        history.append(list(assigned))
        sc.log(f"assigned {assigned}")
        if a.ready_file:
            open(a.ready_file, "w").close()

    def on_revoke(consumer, partitions):
        sc.log(f"revoked {[p.partition for p in partitions]}")
        assigned[:] = []

    config = {
        "bootstrap.servers": sc.bootstrap(),
        "group.id": a.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    if a.instance:
        config["group.instance.id"] = a.instance
        config["session.timeout.ms"] = 30000
    c = Consumer(config)
    started = time.monotonic()
    c.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke)
    first = None
    records = {}
    total = 0
    # Bounded: at most seconds / 0.1 polls, each at most 0.1 s.
    for _ in range(int(a.seconds / 0.1) + 1):
        if time.monotonic() - started > a.seconds:
            break
        if a.until_records is not None and total >= a.until_records:
            break
        m = c.poll(0.1)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            sc.die(f"consumer error: {m.error()}")
        if first is None:
            first = time.monotonic() - started
        records[m.partition()] = records.get(m.partition(), 0) + 1
        total += 1
    print(json.dumps({"first_record_s": first, "assigned": assigned, "records": records,
                      "assignments": history}), flush=True)
    c.close()


if __name__ == "__main__":
    main()
