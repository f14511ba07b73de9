#!/usr/bin/env python3
"""Committed offsets through confluent-kafka and kafka-python consumers that use assign()
(no group membership: a "simple" commit with generation -1, as admin tools do).

usage: committed_offsets.py commit TOPIC GROUP   # commits known offsets, prints them
       committed_offsets.py check TOPIC GROUP    # a new consumer reads them back

The offsets are a pure function of the partition (so `check` needs no state from `commit`):
confluent-kafka commits partition p at 1000 + 7p with metadata "ck-p", kafka-python commits under
GROUP-kp at 2000 + 11p. Partition 2 is committed twice; the second value must win.
"""

import sys

import strata_common as sc

PARTITIONS = 3


def ck_expected(p):
    return 1000 + 7 * p, f"ck-{p}"


def kp_expected(p):
    return 2000 + 11 * p


def ck_consumer(group):
    from confluent_kafka import Consumer
    return Consumer({"bootstrap.servers": sc.bootstrap(), "group.id": group,
                     "enable.auto.commit": False,
                     "error_cb": lambda e: sc.log(f"consumer error_cb: {e}")})


def kp_consumer(group):
    from kafka import KafkaConsumer
    return KafkaConsumer(bootstrap_servers=sc.bootstrap(), group_id=group,
                         enable_auto_commit=False, request_timeout_ms=20000)


def commit(topic, group):
    from confluent_kafka import TopicPartition
    c = ck_consumer(group)
    c.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    # A first commit of partition 2 that the second one overwrites.
    c.commit(offsets=[TopicPartition(topic, 2, 5)], asynchronous=False)
    tps = []
    for p in range(PARTITIONS):
        off, md = ck_expected(p)
        tps.append(TopicPartition(topic, p, off, metadata=md))
    done = c.commit(offsets=tps, asynchronous=False)
    for tp in done:
        sc.check(tp.error is None, f"confluent commit {tp}: {tp.error}")
    c.close()

    from kafka import TopicPartition as KTP
    from kafka.structs import OffsetAndMetadata
    k = kp_consumer(group + "-kp")
    k.assign([KTP(topic, p) for p in range(PARTITIONS)])
    fields = len(OffsetAndMetadata._fields)
    offsets = {}
    for p in range(PARTITIONS):
        args = (kp_expected(p), "") + ((-1,) if fields == 3 else ())
        offsets[KTP(topic, p)] = OffsetAndMetadata(*args)
    k.commit(offsets)
    k.close()
    print(f"OK committed {PARTITIONS} partitions for {group} and {group}-kp", flush=True)


def check(topic, group):
    from confluent_kafka import TopicPartition
    c = ck_consumer(group)
    got = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=20)
    for tp in got:
        off, md = ck_expected(tp.partition)
        sc.check(tp.error is None, f"committed {tp}: {tp.error}")
        sc.check(tp.offset == off, f"confluent committed p{tp.partition}: {tp.offset}, expected {off}")
        got_md = getattr(tp, "metadata", md)
        sc.check(got_md == md, f"confluent metadata p{tp.partition}: {got_md!r}, expected {md!r}")
    c.close()

    from kafka import TopicPartition as KTP
    k = kp_consumer(group + "-kp")
    for p in range(PARTITIONS):
        off = k.committed(KTP(topic, p))
        sc.check(off == kp_expected(p), f"kafka-python committed p{p}: {off}, expected {kp_expected(p)}")
    k.close()
    # A group that never committed has nothing.
    n = kp_consumer(group + "-never")
    sc.check(n.committed(KTP(topic, 0)) is None, "a group without commits has no offset")
    n.close()
    print(f"OK committed offsets of {group} and {group}-kp read back", flush=True)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("commit", "check"):
        sc.die("usage: committed_offsets.py commit|check TOPIC GROUP")
    sc.start_watchdog(120)
    mode, topic, group = sys.argv[1:]
    if mode == "commit":
        commit(topic, group)
    else:
        check(topic, group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
