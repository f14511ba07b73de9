#!/usr/bin/env python3
"""One member of a consumer group, for tests/tests/group_clients.rs.

usage: group_member.py CLIENT GROUP TOPIC OUT_FILE [SESSION_TIMEOUT_MS]
CLIENT: confluent | kafka-python | aiokafka

Subscribes to TOPIC in GROUP (auto-commit off) and appends one line per event to OUT_FILE,
flushed at once so the test can follow along and a `kill -9` loses nothing it wrote:
  A <p,p,...>            partitions assigned (after each rebalance)
  R <partition> <offset> a record was processed
  C <partition> <offset> a commit of next-offset <offset> was acknowledged by the broker
Each line ends with the CLOCK_MONOTONIC time in ns, shared by every process on the machine, so
the test can order events across members. Records are processed, then their offsets committed
synchronously: a record is delivered again only if its offset was not yet committed.
SIGTERM closes the consumer (LeaveGroup) and exits 0.
"""

import asyncio
import os
import signal
import sys
import time

CLIENT, GROUP, TOPIC, OUT = sys.argv[1:5]
SESSION_TIMEOUT_MS = int(sys.argv[5]) if len(sys.argv) > 5 else 6000
BOOTSTRAP = os.environ["BOOTSTRAP"]
RUN_LIMIT_S = 150

out = open(OUT, "a", buffering=1)
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def emit(*fields):
    out.write(" ".join(str(f) for f in fields) + f" {time.monotonic_ns()}\n")
    out.flush()


def run_confluent():
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({
        "bootstrap.servers": BOOTSTRAP,
        "group.id": GROUP,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": 500,
        "client.id": "member-confluent",
    })

    def on_assign(consumer, partitions):
        emit("A", ",".join(str(p.partition) for p in partitions) or "-")

    c.subscribe([TOPIC], on_assign=on_assign)
    deadline = time.monotonic() + RUN_LIMIT_S
    while not stop and time.monotonic() < deadline:
        msgs = c.consume(num_messages=200, timeout=0.2)
        last = {}
        for m in msgs:
            if m.error():
                continue
            emit("R", m.partition(), m.offset())
            last[m.partition()] = m.offset() + 1
        if last:
            tps = [TopicPartition(TOPIC, p, o) for p, o in last.items()]
            try:
                done = c.commit(offsets=tps, asynchronous=False)
            except Exception as e:  # a rebalance in progress: the next owner re-reads them
                print(f"commit failed: {e}", file=sys.stderr)
                continue
            for tp in done:
                if tp.error is None:
                    emit("C", tp.partition, tp.offset)
    c.close()


def run_kafka_python():
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.structs import OffsetAndMetadata

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            emit("A", ",".join(str(p.partition) for p in assigned) or "-")

    c = KafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=500,
        client_id="member-kafka-python",
    )
    c.subscribe([TOPIC], listener=Listener())
    deadline = time.monotonic() + RUN_LIMIT_S
    while not stop and time.monotonic() < deadline:
        batches = c.poll(timeout_ms=200, max_records=200)
        last = {}
        for tp, records in batches.items():
            for r in records:
                emit("R", r.partition, r.offset)
                last[tp] = r.offset + 1
        if last:
            try:
                c.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in last.items()})
            except TypeError:  # kafka-python before 2.1: OffsetAndMetadata(offset, metadata)
                c.commit({tp: OffsetAndMetadata(o, "") for tp, o in last.items()})
            except Exception as e:
                print(f"commit failed: {e}", file=sys.stderr)
                continue
            for tp, o in last.items():
                emit("C", tp.partition, o)
    c.close()


async def run_aiokafka():
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
    from aiokafka.structs import OffsetAndMetadata

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked):
            pass

        async def on_partitions_assigned(self, assigned):
            emit("A", ",".join(str(p.partition) for p in assigned) or "-")

    c = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=500,
        client_id="member-aiokafka",
    )
    c.subscribe([TOPIC], listener=Listener())
    await c.start()
    deadline = time.monotonic() + RUN_LIMIT_S
    try:
        while not stop and time.monotonic() < deadline:
            batches = await c.getmany(timeout_ms=200, max_records=200)
            last = {}
            for tp, records in batches.items():
                for r in records:
                    emit("R", r.partition, r.offset)
                    last[tp] = r.offset + 1
            if last:
                try:
                    await c.commit({tp: OffsetAndMetadata(o, "") for tp, o in last.items()})
                except Exception as e:
                    print(f"commit failed: {e}", file=sys.stderr)
                    continue
                for tp, o in last.items():
                    emit("C", tp.partition, o)
    finally:
        await c.stop()


if CLIENT == "confluent":
    run_confluent()
elif CLIENT == "kafka-python":
    run_kafka_python()
elif CLIENT == "aiokafka":
    asyncio.run(run_aiokafka())
else:
    sys.exit(f"unknown client {CLIENT}")
