#!/usr/bin/env python3
"""Checks after a crash + restart that every acknowledged record survived.

usage: verify_acked.py TOPIC ACKFILE

ACKFILE has "partition offset value" lines (from acked_load.py). Reads the
whole topic with confluent-kafka (assign from the beginning, until the end
offsets from get_watermark_offsets) and checks:
- offsets are dense from 0 in every partition (low watermark 0),
- values in each partition increase (produce order is kept),
- every acknowledged (partition, offset) holds exactly the acknowledged value.
Prints "VERIFIED <acked> acknowledged records of <total> in the topic".
"""

import sys

import strata_common as sc


def main():
    if len(sys.argv) != 3:
        sc.die("usage: verify_acked.py TOPIC ACKFILE")
    topic, ackfile = sys.argv[1], sys.argv[2]
    sc.start_watchdog(120)
    from confluent_kafka import TopicPartition, OFFSET_BEGINNING

    acked = {}
    with open(ackfile, encoding="ascii") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for n, line in enumerate(lines, 1):
        parts = line.split(" ")
        if len(parts) != 3:
            sc.die(f"{ackfile}:{n}: malformed line {line!r}")
        p, o, v = int(parts[0]), int(parts[1]), parts[2]
        if (p, o) in acked and acked[(p, o)] != v:
            sc.die(f"{ackfile}:{n}: p{p}@{o} acknowledged twice with different values "
                   f"{acked[(p, o)]!r} and {v!r}")
        acked[(p, o)] = v
    sc.check(acked, f"{ackfile} holds no acknowledged records")

    deadline = sc.Deadline(90, f"verify_acked {topic}")
    c = sc.confluent_consumer()
    try:
        parts = sc.confluent_partitions(c, topic, deadline)
        ends = {}
        for p in parts:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            sc.check(lo == 0, f"partition {p}: low watermark {lo}, expected 0")
            ends[p] = hi
        for (p, o) in acked:
            sc.check(p in ends, f"acknowledged partition {p} does not exist (partitions {parts})")
            sc.check(o < ends[p], f"acknowledged p{p}@{o} is at or beyond the high watermark {ends[p]} "
                                  f"after restart: acknowledged data lost")
        sc.log(f"end offsets after restart: {ends}")
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        next_off = {p: 0 for p in parts}
        last_val = {p: -1 for p in parts}
        found = {}
        errors = []
        while any(next_off[p] < ends[p] for p in parts):
            deadline.check(f"read up to {next_off} of end offsets {ends}")
            msg = c.poll(0.5)
            if msg is None:
                continue
            e = msg.error()
            if e is not None:
                if e.fatal():
                    sc.die(f"consumer fatal error: {e}")
                continue  # EOF and transient errors: keep polling until the end offsets
            p, o = msg.partition(), msg.offset()
            if o >= ends[p]:
                continue  # nothing should be produced now, but do not count beyond the snapshot
            if o != next_off[p]:
                errors.append(f"partition {p}: offset {o} after {next_off[p] - 1} (not dense)")
            next_off[p] = o + 1
            raw = msg.value() or b""
            try:
                v = int(raw.decode())
            except ValueError:
                errors.append(f"p{p}@{o}: value {raw[:40]!r} is not a sequence number")
                continue
            if v <= last_val[p]:
                errors.append(f"partition {p}: value {v} at offset {o} follows {last_val[p]} (order broken)")
            last_val[p] = v
            if (p, o) in acked:
                found[(p, o)] = raw.decode()
            if len(errors) > 25:
                break
        for (p, o), v in sorted(acked.items()):
            if (p, o) not in found:
                errors.append(f"acknowledged p{p}@{o} (value {v}) not read back")
            elif found[(p, o)] != v:
                errors.append(f"acknowledged p{p}@{o}: value {found[(p, o)]!r}, acknowledged {v!r}")
            if len(errors) > 25:
                break
        if errors:
            sc.die("crash recovery check failed:\n  " + "\n  ".join(errors[:25]))
        total = sum(ends.values())
        per = ", ".join(f"p{p}: {ends[p]} records, {sum(1 for k in acked if k[0] == p)} acked"
                        for p in parts)
        print(f"VERIFIED {len(acked)} acknowledged records of {total} in the topic ({per})", flush=True)
        return 0
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
