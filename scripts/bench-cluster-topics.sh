#!/usr/bin/env bash
# bench-cluster-topics.sh: creates TOPICS topics of PARTITIONS partitions at replication factor RF
# on a NODES-node cluster (scripts/cluster.sh), through confluent-kafka's AdminClient in requests
# of BATCH topics, and reports: the time it took, the size of each node's metadata log (raft.log
# and snapshot), and whether every broker's Metadata answer agrees afterwards (same topics, same
# partitions, same replicas, leaders and ISR).
#
# Environment (all optional): TOPICS=1000 PARTITIONS=3 RF=3 NODES=3 BATCH=50
#   STRATA_BIN (unset: release build)  CLUSTER_DIR (default: a fresh temp dir, removed at the end;
#   DATA_PARENT=/dev/shm puts it on tmpfs)  NODE_SET (extra settings for every node, "k=v k=v")
set -euo pipefail

die() { echo "bench-cluster-topics: error: $*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOPICS=${TOPICS:-1000}
PARTITIONS=${PARTITIONS:-3}
RF=${RF:-3}
NODES=${NODES:-3}
BATCH=${BATCH:-50}
python3 -c "import confluent_kafka" 2>/dev/null || die "confluent-kafka is needed (pip install confluent-kafka)"

own_dir=0
if [ -z "${CLUSTER_DIR:-}" ]; then
    CLUSTER_DIR=$(mktemp -d "${DATA_PARENT:-/tmp}/strata-topics-XXXXXX")
    own_dir=1
fi
export CLUSTER_DIR
export KAFKA_PORT_BASE=${KAFKA_PORT_BASE:-26090} CONTROLLER_PORT_BASE=${CONTROLLER_PORT_BASE:-26190}
# Room for every replica this benchmark places on one broker, and the offsets topic.
per_broker=$(( TOPICS * PARTITIONS * RF / NODES + 200 ))
export NODE_SET="max.partitions=$per_broker ${NODE_SET:-}"
cluster() { "$repo/scripts/cluster.sh" "$@"; }
cleanup() {
    cluster stop >/dev/null 2>&1 || true
    if [ $own_dir = 1 ]; then rm -rf "$CLUSTER_DIR"; fi
}
trap cleanup EXIT

cluster start --nodes "$NODES"
bootstrap=$(seq -s, $((KAFKA_PORT_BASE + 1)) $((KAFKA_PORT_BASE + NODES)) | sed 's/\([0-9]*\)/127.0.0.1:\1/g')

python3 - "$bootstrap" "$TOPICS" "$PARTITIONS" "$RF" "$BATCH" <<'EOF'
import sys, time
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topics, partitions, rf, batch = sys.argv[1], *map(int, sys.argv[2:])
admin = AdminClient({"bootstrap.servers": bootstrap})
names = [f"bench-{i:05d}" for i in range(topics)]
started = time.monotonic()
for i in range(0, topics, batch):
    chunk = names[i:i + batch]
    futures = admin.create_topics([NewTopic(t, partitions, rf) for t in chunk],
                                  operation_timeout=60, request_timeout=120)
    for t, f in futures.items():
        f.result(timeout=180)
took = time.monotonic() - started
print(f"created {topics} topics x {partitions} partitions at RF {rf} in {took:.1f} s "
      f"({topics / took:.0f} topics/s, {topics * partitions * rf / took:.0f} replicas/s)")
EOF

for i in $(seq 1 "$NODES"); do
    dir=$CLUSTER_DIR/node$i/data/controller
    log=$(stat -c %s "$dir/raft.log" 2>/dev/null || echo 0)
    snap=$(stat -c %s "$dir/snapshot" 2>/dev/null || echo 0)
    echo "node $i: metadata log $((log / 1024)) KiB (raft.log), snapshot $((snap / 1024)) KiB"
done

# Every broker's answer, as a digest of the sorted topic/partition/leader/replicas/ISR list.
digests=()
for i in $(seq 1 "$NODES"); do
    d=$(python3 - "127.0.0.1:$((KAFKA_PORT_BASE + i))" <<'EOF'
import hashlib, sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=60)
rows = sorted((t, p.id, p.leader, tuple(sorted(p.replicas)), tuple(sorted(p.isrs)))
              for t, tm in md.topics.items() for p in tm.partitions.values())
print(len(md.topics), len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()[:16])
EOF
)
    echo "node $i answers: $d (topics, partitions, digest)"
    digests+=("$d")
done
if [ "$(printf '%s\n' "${digests[@]}" | sort -u | wc -l)" = 1 ]; then
    echo "every broker's metadata agrees"
else
    die "the brokers' metadata differs"
fi
