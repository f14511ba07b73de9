#!/usr/bin/env python3
"""Creates a topic with confluent_kafka.admin.AdminClient.create_topics and
waits (bounded) until metadata shows all its partitions.

usage: create_topic.py TOPIC PARTITIONS
"""

import sys
import time

import strata_common as sc


def main():
    if len(sys.argv) != 3:
        sc.die("usage: create_topic.py TOPIC PARTITIONS")
    topic, parts = sys.argv[1], int(sys.argv[2])
    sc.start_watchdog(60)
    from confluent_kafka.admin import AdminClient, NewTopic

    deadline = sc.Deadline(30, f"create topic {topic}")
    admin = AdminClient({"bootstrap.servers": sc.bootstrap(),
                         "error_cb": lambda e: sc.log(f"admin error_cb: {e}")})
    futures = admin.create_topics([NewTopic(topic, num_partitions=parts, replication_factor=1)],
                                  operation_timeout=10, request_timeout=15)
    try:
        futures[topic].result(timeout=20)
    except Exception as e:  # noqa: BLE001
        sc.die(f"CreateTopics {topic} ({parts} partitions) failed: {e}")
    while True:
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == parts:
            break
        deadline.check(f"metadata after create: {t.error if t else 'missing'}, "
                       f"{len(t.partitions) if t else 0} partitions")
        time.sleep(0.2)
    print(f"OK created {topic} with {parts} partitions", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
