#!/usr/bin/env python3
"""Prints what one broker says the cluster is, as one JSON line on stdout, through
confluent_kafka's AdminClient (librdkafka): the cluster id, the active controller, the
brokers (id, host, port) and every topic's partitions (leader, replicas, ISR).

usage: cluster_metadata.py   (BOOTSTRAP names the one broker asked)
"""

import json
import sys

import strata_common as sc


def main():
    sc.start_watchdog(40)
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": sc.bootstrap(),
                         "error_cb": lambda e: sc.log(f"admin error_cb: {e}")})
    md = admin.list_topics(timeout=20)
    cluster = admin.describe_cluster(request_timeout=20).result(timeout=25)
    out = {
        "cluster_id": md.cluster_id,
        "controller": md.controller_id,
        "describe_cluster_controller": cluster.controller.id if cluster.controller else -1,
        "brokers": sorted([b.id, b.host, b.port] for b in md.brokers.values()),
        "topics": {
            name: sorted([p.id, p.leader, sorted(p.replicas), sorted(p.isrs)]
                         for p in t.partitions.values())
            for name, t in md.topics.items()
        },
    }
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
