#!/usr/bin/env python3
"""Times how fast consumer groups form on a broker, with confluent-kafka at its default settings
(session.timeout.ms 45000, heartbeat.interval.ms 3000), for scripts/bench-groups.sh.

usage: group_timing.py BOOTSTRAP TOPIC RUNS
For each run, in a new group:
  first:  member A subscribe() -> A's first record (the topic already holds records);
  second: member B subscribe() -> both A and B hold their new, disjoint shares (A learns of the
          rebalance at its next heartbeat).
Prints one line per run and then the medians, in seconds.
"""

import statistics
import sys
import time
import uuid

from confluent_kafka import Consumer

BOOTSTRAP, TOPIC, RUNS = sys.argv[1], sys.argv[2], int(sys.argv[3])
LIMIT_S = 30


def member(group, log):
    c = Consumer({
        "bootstrap.servers": BOOTSTRAP,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })

    def on_assign(_, partitions):
        log.append((time.monotonic(), sorted(p.partition for p in partitions)))

    c.subscribe([TOPIC], on_assign=on_assign)
    return c


def run_once():
    group = f"timing-{uuid.uuid4()}"
    a_log, b_log = [], []
    t0 = time.monotonic()
    a = member(group, a_log)
    first = None
    while first is None and time.monotonic() - t0 < LIMIT_S:
        m = a.poll(0.05)
        if m is not None and not m.error():
            first = time.monotonic() - t0
    t1 = time.monotonic()
    b = member(group, b_log)
    second = None
    while second is None and time.monotonic() - t1 < LIMIT_S:
        a.poll(0.02)
        b.poll(0.02)
        if a_log and b_log and a_log[-1][0] > t1 and b_log[-1][1] and a_log[-1][1]:
            if not set(a_log[-1][1]) & set(b_log[-1][1]):
                second = max(a_log[-1][0], b_log[-1][0]) - t1
    a.close()
    b.close()
    return first, second


def main():
    firsts, seconds = [], []
    for i in range(RUNS):
        first, second = run_once()
        print(f"run {i + 1}: first member's first record {first:.3f} s, "
              f"second member's share {second:.3f} s" if first and second else
              f"run {i + 1}: timed out (first={first}, second={second})", flush=True)
        if first is None or second is None:
            sys.exit(1)
        firsts.append(first)
        seconds.append(second)
    print(f"median: first member consuming {statistics.median(firsts):.3f} s; "
          f"second member's share {statistics.median(seconds):.3f} s "
          f"(heartbeat.interval.ms 3000 + 1 s = 4.0 s allowed)")


main()
