#!/usr/bin/env python3
"""DescribeLogDirs through kafka-python's KafkaAdminClient.

usage: describe_log_dirs_kafka_python.py TOPIC BROKER_IDS

BROKER_IDS is a comma-separated list of the brokers that host partition 0 of
TOPIC, all caught up. Asks each of them (describe_log_dirs) and checks that
each reports one log dir holding TOPIC partition 0 with offset_lag 0 and the
same non-zero size as the others. Prints "LOGDIRS broker=size ...".
"""

import sys

import strata_common as sc


def main():
    if len(sys.argv) != 3:
        sc.die("usage: describe_log_dirs_kafka_python.py TOPIC BROKER_IDS")
    topic = sys.argv[1]
    brokers = [int(b) for b in sys.argv[2].split(",")]
    sc.start_watchdog(60)
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=sc.bootstrap(), request_timeout_ms=10000)
    try:
        answers = admin.describe_log_dirs(brokers=brokers)
    finally:
        admin.close()
    sizes = {}
    for answer in answers:
        broker = answer["broker"]
        dirs = answer["log_dirs"]
        sc.check(len(dirs) == 1, f"broker {broker}: {len(dirs)} log dirs, not one")
        sc.check(dirs[0]["error_code"] == 0, f"broker {broker}: error {dirs[0]['error_code']}")
        parts = [
            p
            for t in dirs[0]["topics"]
            if t["name"] == topic
            for p in t["partitions"]
            if p["partition_index"] == 0
        ]
        sc.check(len(parts) == 1, f"broker {broker}: {topic}-0 listed {len(parts)} times")
        sc.check(parts[0]["offset_lag"] == 0,
                 f"broker {broker}: offset_lag {parts[0]['offset_lag']}, not 0")
        sizes[broker] = parts[0]["partition_size"]
    sc.check(sorted(sizes) == sorted(brokers), f"answers from {sorted(sizes)}, not {brokers}")
    sc.check(len(set(sizes.values())) == 1 and min(sizes.values()) > 0,
             f"sizes differ or are zero: {sizes}")
    print("LOGDIRS " + " ".join(f"{b}={s}" for b, s in sorted(sizes.items())))


if __name__ == "__main__":
    main()
