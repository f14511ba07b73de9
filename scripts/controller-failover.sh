#!/usr/bin/env bash
# controller-failover.sh: how long after kill -9 of the active controller a metadata change
# succeeds again. Starts a 3-node cluster (scripts/cluster.sh), then KILLS times: finds the active
# controller (the controller kcat -L reports), kills it with SIGKILL, and creates a topic through
# a surviving broker with `strata topic create` (each attempt bounded by ATTEMPT_MS) until one
# succeeds; the time from the kill to that success is one sample. The killed node is restarted and
# the cluster given SETTLE seconds before the next kill. Prints every sample, then the median and
# the worst.
#
# Environment (all optional): KILLS=10  ATTEMPT_MS=500  SETTLE=3  LIMIT=30 (seconds per sample)
#   STRATA_BIN (unset: release build)  CLUSTER_DIR (default: a fresh temp dir, removed at the end)
#   NODE_SET  extra broker settings for every node ("k=v k=v")
set -euo pipefail

die() { echo "controller-failover: error: $*" >&2; exit 1; }
note() { echo "controller-failover: $*" >&2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KILLS=${KILLS:-10}
ATTEMPT_MS=${ATTEMPT_MS:-500}
SETTLE=${SETTLE:-3}
LIMIT=${LIMIT:-30}
command -v kcat >/dev/null || die "kcat is needed (apt-get install kcat)"

own_dir=0
if [ -z "${CLUSTER_DIR:-}" ]; then
    CLUSTER_DIR=$(mktemp -d /tmp/strata-failover-XXXXXX)
    own_dir=1
fi
export CLUSTER_DIR
# Ports of our own, away from a cluster.sh cluster someone may run.
export KAFKA_PORT_BASE=${KAFKA_PORT_BASE:-24090} CONTROLLER_PORT_BASE=${CONTROLLER_PORT_BASE:-24190}
cluster() { "$repo/scripts/cluster.sh" "$@"; }
cleanup() {
    cluster stop >/dev/null 2>&1 || true
    if [ $own_dir = 1 ]; then rm -rf "$CLUSTER_DIR"; fi
}
trap cleanup EXIT

cluster start --nodes 3
bin=$(cat "$CLUSTER_DIR/bin")
addr() { echo "127.0.0.1:$((KAFKA_PORT_BASE + $1))"; }
now_ms() { date +%s%3N; }

active_controller() {
    local i
    for i in 1 2 3; do
        pid=$(cat "$CLUSTER_DIR/node$i/pid")
        if kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
            kcat -L -b "$(addr "$i")" -m 5 2>/dev/null |
                sed -n 's/^ *broker \([0-9]*\) at .*(controller).*/\1/p' | head -1
            return
        fi
    done
}

samples=()
for k in $(seq 1 "$KILLS"); do
    victim=$(active_controller)
    [ -n "$victim" ] || die "no controller reported"
    survivor=$(( victim % 3 + 1 ))
    cluster kill "$victim" 2>/dev/null
    start=$(now_ms)
    attempts=0
    while :; do
        attempts=$((attempts + 1))
        if "$bin" topic create "failover-$k-$attempts" --partitions 1 --replication-factor 1 \
            -b "$(addr "$survivor")" --timeout-ms "$ATTEMPT_MS" >/dev/null 2>&1; then
            break
        fi
        [ $(( $(now_ms) - start )) -lt $((LIMIT * 1000)) ] || die "kill $k: no metadata change within ${LIMIT}s"
    done
    took=$(( $(now_ms) - start ))
    samples+=("$took")
    echo "kill $k: controller $victim killed; a topic was created through node $survivor after ${took} ms ($attempts attempts)"
    cluster restart "$victim"
    sleep "$SETTLE"
done

sorted=$(printf '%s\n' "${samples[@]}" | sort -n)
n=${#samples[@]}
median=$(echo "$sorted" | awk -v n="$n" 'NR == int((n + 1) / 2) { a = $1 } NR == int(n / 2) + 1 { b = $1 } END { print (n % 2) ? a : (a + b) / 2 }')
worst=$(echo "$sorted" | tail -1)
echo "controller failover over $n kills: median ${median} ms, worst ${worst} ms (samples: ${samples[*]})"
