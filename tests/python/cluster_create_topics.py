#!/usr/bin/env python3
"""Creates topics through one broker of a cluster with the client named: confluent_kafka's
AdminClient (librdkafka) or kafka-python's KafkaAdminClient. Prints "ok" or the error, one line
per topic, and exits 0 only if every topic was created.

usage: cluster_create_topics.py confluent|kafka-python PARTITIONS RF TOPIC...
"""

import sys

import strata_common as sc


def create_confluent(topics, partitions, rf):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": sc.bootstrap()})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=rf) for t in topics],
        operation_timeout=10, request_timeout=15)
    failed = 0
    for t in topics:
        try:
            futures[t].result(timeout=20)
            print(f"{t} ok")
        except Exception as e:  # noqa: BLE001 - reported, then the exit code says so
            print(f"{t} {e}")
            failed += 1
    return failed


def create_kafka_python(topics, partitions, rf):
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=sc.bootstrap(), request_timeout_ms=15000)
    failed = 0
    try:
        response = admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=rf) for t in topics],
            timeout_ms=10000)
        errors = getattr(response, "topic_errors", None) or getattr(response, "topics", [])
        for entry in errors:
            name, code = entry[0], entry[1]
            print(f"{name} {'ok' if code == 0 else f'error {code}'}")
            failed += code != 0
    except Exception as e:  # noqa: BLE001
        print(f"all {e}")
        failed = len(topics)
    finally:
        admin.close()
    return failed


def main():
    if len(sys.argv) < 5:
        sc.die("usage: cluster_create_topics.py confluent|kafka-python PARTITIONS RF TOPIC...")
    client, partitions, rf, topics = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    sc.start_watchdog(60)
    create = create_confluent if client == "confluent" else create_kafka_python
    return 1 if create(topics, partitions, rf) else 0


if __name__ == "__main__":
    sys.exit(main())
