#!/usr/bin/env python3
"""A group member that stops part-way and one that resumes, for tests/tests/group_clients.rs.

usage: group_resume.py consume GROUP TOPIC COUNT   - joins GROUP, processes COUNT records (all
           partitions), commits exactly their next offsets, prints `committed p=o ...`, leaves.
       group_resume.py resume GROUP TOPIC EXPECT   - joins GROUP, prints the first offset it
           receives from each partition, and checks them against EXPECT (`p=o,p=o,...`): the new
           member must start exactly at the last commit.
Uses confluent-kafka. Exits non-zero with a message on any mismatch or on a timeout.
"""

import sys
import time

import strata_common as sc


def consumer(group):
    from confluent_kafka import Consumer

    return Consumer({
        "bootstrap.servers": sc.bootstrap(),
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
    })


def consume(group, topic, count):
    from confluent_kafka import TopicPartition

    c = consumer(group)
    c.subscribe([topic])
    nxt = {}
    seen = 0
    deadline = time.monotonic() + 60
    while seen < count and time.monotonic() < deadline:
        for m in c.consume(num_messages=min(100, count - seen), timeout=0.5):
            if m.error():
                continue
            nxt[m.partition()] = m.offset() + 1
            seen += 1
    if seen < count:
        sc.die(f"consumed only {seen} of {count} records")
    c.commit(offsets=[TopicPartition(topic, p, o) for p, o in nxt.items()], asynchronous=False)
    c.close()
    print("committed " + ",".join(f"{p}={o}" for p, o in sorted(nxt.items())))


def resume(group, topic, expect):
    want = {int(p): int(o) for p, o in (kv.split("=") for kv in expect.split(","))}
    c = consumer(group)
    # A partition committed at its end has no record to resume with: nothing to check there.
    from confluent_kafka import TopicPartition
    for p in list(want):
        _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if want[p] >= high:
            del want[p]
    c.subscribe([topic])
    first = {}
    deadline = time.monotonic() + 60
    while not set(want) <= set(first) and time.monotonic() < deadline:
        for m in c.consume(num_messages=100, timeout=0.5):
            if not m.error():
                first.setdefault(m.partition(), m.offset())
    c.close()
    print("first " + ",".join(f"{p}={o}" for p, o in sorted(first.items())))
    first = {p: o for p, o in first.items() if p in want}
    if first != want:
        sc.die(f"resumed at {sorted(first.items())}, committed {sorted(want.items())}")


def main():
    if len(sys.argv) != 5:
        sc.die(__doc__)
    sc.start_watchdog(120)
    mode, group, topic, arg = sys.argv[1:]
    if mode == "consume":
        consume(group, topic, int(arg))
    elif mode == "resume":
        resume(group, topic, arg)
    else:
        sc.die(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
