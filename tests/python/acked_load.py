#!/usr/bin/env python3
"""Acknowledged-write load for the crash test.

usage: acked_load.py TOPIC OUTFILE SECONDS

An acks=all confluent-kafka producer (idempotence off, no keys) sends the
values "0", "1", "2", ... as fast as it can for up to SECONDS, then waits a
bounded time for outstanding deliveries. For every *acknowledged* record it
appends "partition offset value" to OUTFILE and flushes the file at once, so
the file is complete up to the last ack even if this process is killed.
Delivery failures are expected (the broker is killed under it) and only
counted. Exits 0 unless the setup itself fails; prints "ACKED n FAILED m".
"""

import sys
import time

import strata_common as sc

MESSAGE_TIMEOUT_MS = 5000


def main():
    if len(sys.argv) != 4:
        sc.die("usage: acked_load.py TOPIC OUTFILE SECONDS")
    topic, outfile, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    sc.start_watchdog(seconds + MESSAGE_TIMEOUT_MS / 1000 + 30)
    from confluent_kafka import Producer

    out = open(outfile, "a", encoding="ascii")
    stats = {"acked": 0, "failed": 0, "first_error": None}

    def on_delivery(err, msg):
        if err is not None:
            stats["failed"] += 1
            if stats["first_error"] is None:
                stats["first_error"] = str(err)
            return
        out.write(f"{msg.partition()} {msg.offset()} {msg.value().decode()}\n")
        out.flush()
        stats["acked"] += 1

    p = Producer({
        "bootstrap.servers": sc.bootstrap(),
        "acks": "all",
        "enable.idempotence": False,
        "linger.ms": 2,
        "message.timeout.ms": MESSAGE_TIMEOUT_MS,
        "queue.buffering.max.messages": 200000,
        "error_cb": lambda e: sc.log(f"producer error_cb: {e}"),
    })
    end = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < end:
        try:
            p.produce(topic, value=str(seq).encode(), on_delivery=on_delivery)
            seq += 1
        except BufferError:
            p.poll(0.05)
            continue
        if seq % 500 == 0:
            p.poll(0)
    sc.log(f"acked_load: stopped producing after {seq} records; waiting for outstanding deliveries")
    flush_deadline = time.monotonic() + MESSAGE_TIMEOUT_MS / 1000 + 10
    while len(p) > 0 and time.monotonic() < flush_deadline:
        p.flush(1.0)
    left = len(p)
    out.close()
    print(f"ACKED {stats['acked']} FAILED {stats['failed']} SENT {seq} UNRESOLVED {left}"
          f" first_error={stats['first_error']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
