#!/usr/bin/env python3
"""A transactional producer on a broker without transactions: init_transactions() must fail at
once with a clear, non-retriable error, not retry until its timeout.

usage: transactions_refused.py confluent|kafka-python

Each client asks with a generous timeout (60 s); the call must raise within FAIL_WITHIN_S with an
error that names transactions and that the client does not retry. Exits 0 with an OK line, or
non-zero with a FAIL line.
"""

import sys
import time

import strata_common as sc

FAIL_WITHIN_S = 5.0
CLIENT_TIMEOUT_S = 60


def confluent():
    from confluent_kafka import KafkaException, Producer

    p = Producer({"bootstrap.servers": sc.bootstrap(), "transactional.id": "txn-refused"})
    started = time.monotonic()
    try:
        p.init_transactions(CLIENT_TIMEOUT_S)
    except KafkaException as e:
        err = e.args[0]
        took = time.monotonic() - started
        sc.log(f"init_transactions failed after {took:.2f} s: {err}")
        sc.check(took < FAIL_WITHIN_S, f"took {took:.1f} s to fail")
        sc.check(not err.retriable(), f"error is retriable: {err}")
        sc.check(err.fatal(), f"error is not fatal: {err}")
        sc.check("transactions" in err.str(), f"message does not name transactions: {err}")
        return
    sc.die("init_transactions succeeded on a broker without transactions")


def kafka_python():
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    p = KafkaProducer(
        bootstrap_servers=sc.bootstrap(),
        transactional_id="txn-refused",
        max_block_ms=CLIENT_TIMEOUT_S * 1000,
    )
    started = time.monotonic()
    try:
        p.init_transactions()
    except KafkaError as e:
        took = time.monotonic() - started
        sc.log(f"init_transactions failed after {took:.2f} s: {e!r}")
        sc.check(took < FAIL_WITHIN_S, f"took {took:.1f} s to fail")
        sc.check(not getattr(e, "retriable", False), f"error is retriable: {e!r}")
        sc.check("Timeout" not in type(e).__name__, f"timed out instead of failing: {e!r}")
        return
    finally:
        p.close(timeout=2)
    sc.die("init_transactions succeeded on a broker without transactions")


def main():
    sc.start_watchdog(CLIENT_TIMEOUT_S + 30)
    client = sys.argv[1]
    {"confluent": confluent, "kafka-python": kafka_python}[client]()
    print(f"OK: {client} init_transactions refused at once")


if __name__ == "__main__":
    main()
