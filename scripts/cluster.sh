#!/usr/bin/env bash
# cluster.sh: a real local Strata cluster in one command. Every node is broker and controller
# voter, on 127.0.0.1, with its data, log and pid under CLUSTER_DIR.
#
#   scripts/cluster.sh start [--nodes 3]   build (release) and start nodes 1..N, wait until all serve
#   scripts/cluster.sh stop                SIGTERM every node, wait for each to exit
#   scripts/cluster.sh status              which nodes run, then `strata cluster status`
#   scripts/cluster.sh kill N              kill -9 node N
#   scripts/cluster.sh restart N           start node N again (after kill or stop), wait until it serves
#
# Node N serves Kafka clients on 127.0.0.1:$((KAFKA_PORT_BASE + N)) and its controller listener on
# 127.0.0.1:$((CONTROLLER_PORT_BASE + N)). Environment (all optional):
#   CLUSTER_DIR=/tmp/strata-cluster  KAFKA_PORT_BASE=29090  CONTROLLER_PORT_BASE=29190
#   STRATA_BIN   the binary (unset: cargo build --release -p strata-cli)
#   NODE_SET     extra broker settings, "k=v k=v", each passed to every node as --set k=v
#   START_TIMEOUT=60 (seconds a node may take to serve)
set -euo pipefail

die() { echo "cluster.sh: error: $*" >&2; exit 1; }
note() { echo "cluster.sh: $*" >&2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/strata-cluster}
KAFKA_PORT_BASE=${KAFKA_PORT_BASE:-29090}
CONTROLLER_PORT_BASE=${CONTROLLER_PORT_BASE:-29190}
START_TIMEOUT=${START_TIMEOUT:-60}
NODE_SET=${NODE_SET:-}

binary() {
    if [ -n "${STRATA_BIN:-}" ]; then
        echo "$STRATA_BIN"
        return
    fi
    (cd "$repo" && cargo build --quiet --release -p strata-cli) >&2 || die "build failed"
    echo "${CARGO_TARGET_DIR:-$repo/target}/release/strata"
}

node_count() { cat "$CLUSTER_DIR/nodes" 2>/dev/null || die "no cluster in $CLUSTER_DIR (start one)"; }
pid_of() { cat "$CLUSTER_DIR/node$1/pid" 2>/dev/null || true; }
# Alive, and not a zombie no one reaped yet (a killed node's parent shell is gone).
running() {
    local pid state
    pid=$(pid_of "$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z)
    [ "$state" != Z ]
}

voters() {
    local n=$1 list="" i
    for i in $(seq 1 "$n"); do
        list+="${list:+,}$i@127.0.0.1:$((CONTROLLER_PORT_BASE + i))"
    done
    echo "$list"
}

launch() {
    local i=$1 n bin dir sets=()
    n=$(node_count)
    bin=$(cat "$CLUSTER_DIR/bin")
    dir=$CLUSTER_DIR/node$i
    mkdir -p "$dir/data"
    running "$i" && die "node $i already runs (pid $(pid_of "$i"))"
    for kv in $NODE_SET; do sets+=(--set "$kv"); done
    echo "==== start $(date -u +%FT%TZ) ====" >>"$dir/log"
    NO_COLOR=1 setsid "$bin" serve --node-id "$i" \
        --listen "127.0.0.1:$((KAFKA_PORT_BASE + i))" \
        --data-dir "$dir/data" \
        --voters "$(voters "$n")" \
        "${sets[@]}" >>"$dir/log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
}

wait_serving() {
    local i=$1 deadline log=$CLUSTER_DIR/node$1/log starts
    starts=$(grep -c '^==== start' "$log")
    deadline=$((SECONDS + START_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        # The last start's lines only.
        if awk -v n="$starts" '/^==== start/{c++} c==n' "$log" | grep -q "strata is serving"; then
            return 0
        fi
        running "$i" || { tail -5 "$log" >&2; die "node $i exited while starting"; }
        sleep 0.1
    done
    die "node $i did not serve within ${START_TIMEOUT}s (log: $log)"
}

cmd=${1:-}
shift || true
case $cmd in
start)
    nodes=3
    while [ $# -gt 0 ]; do
        case $1 in
        --nodes) nodes=${2:?--nodes needs a count}; shift 2 ;;
        *) die "unknown option $1" ;;
        esac
    done
    case $nodes in 1|3|5) ;; *) die "--nodes must be 1, 3 or 5 (voters)" ;; esac
    if [ -f "$CLUSTER_DIR/nodes" ]; then
        for i in $(seq 1 "$(node_count)"); do
            running "$i" && die "a cluster already runs in $CLUSTER_DIR (stop it first)"
        done
    fi
    mkdir -p "$CLUSTER_DIR"
    echo "$nodes" >"$CLUSTER_DIR/nodes"
    binary >"$CLUSTER_DIR/bin"
    for i in $(seq 1 "$nodes"); do launch "$i"; done
    for i in $(seq 1 "$nodes"); do wait_serving "$i"; done
    note "$nodes nodes serve; bootstrap: $(seq -s, $((KAFKA_PORT_BASE + 1)) $((KAFKA_PORT_BASE + nodes)) | sed 's/\([0-9]*\)/127.0.0.1:\1/g')"
    ;;
stop)
    for i in $(seq 1 "$(node_count)"); do
        if running "$i"; then
            pid=$(pid_of "$i")
            kill -TERM "$pid"
            for _ in $(seq 1 200); do running "$i" || break; sleep 0.1; done
            running "$i" && { kill -KILL "$pid"; note "node $i did not stop in 20 s: killed"; }
            note "node $i stopped"
        fi
    done
    ;;
status)
    n=$(node_count)
    up=""
    for i in $(seq 1 "$n"); do
        if running "$i"; then
            echo "node $i: running (pid $(pid_of "$i")), 127.0.0.1:$((KAFKA_PORT_BASE + i))"
            up=${up:-$i}
        else
            echo "node $i: down"
        fi
    done
    [ -n "$up" ] || die "no node runs"
    "$(cat "$CLUSTER_DIR/bin")" cluster status -b "127.0.0.1:$((KAFKA_PORT_BASE + up))"
    ;;
kill)
    i=${1:?kill needs a node number}
    running "$i" || die "node $i does not run"
    kill -KILL "$(pid_of "$i")"
    for _ in $(seq 1 100); do running "$i" || break; sleep 0.05; done
    note "node $i killed (SIGKILL)"
    ;;
restart)
    i=${1:?restart needs a node number}
    launch "$i"
    wait_serving "$i"
    note "node $i serves again"
    ;;
*)
    die "usage: cluster.sh start [--nodes 3] | stop | status | kill N | restart N"
    ;;
esac
