#!/usr/bin/env bash
# bench-groups.sh: how fast consumer groups form (scripts/group_timing.py, confluent-kafka with
# default settings): a new group's first member reading its first record, and a second member
# holding its share. Starts a release broker on a free port in a temp dir (or uses -b HOST:PORT).
# Environment: STRATA_BIN (default: cargo build --release), RUNS=5, PARTITIONS=6.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-5}
PARTITIONS=${PARTITIONS:-6}
bootstrap=
if [[ ${1:-} == -b ]]; then bootstrap=${2:?-b needs HOST:PORT}; fi

pid=
work=$(mktemp -d /tmp/bench-groups.XXXXXX)
cleanup() {
    if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi || true
    rm -rf "$work"
}
trap cleanup EXIT

if [[ -z ${STRATA_BIN:-} ]]; then
    (cd "$repo" && cargo build --release -p strata-cli) >&2
fi
STRATA_BIN=${STRATA_BIN:-$repo/target/release/strata}
if [[ -z $bootstrap ]]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    bootstrap=127.0.0.1:$port
    "$STRATA_BIN" serve --listen "$bootstrap" --data-dir "$work/data" >"$work/broker.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        grep -q "strata is serving" "$work/broker.log" && break
        kill -0 "$pid" 2>/dev/null || { cat "$work/broker.log" >&2; exit 1; }
        sleep 0.1
    done
fi
topic=timing-$$
"$STRATA_BIN" topic create "$topic" --partitions "$PARTITIONS" -b "$bootstrap" >/dev/null
seq 1 1000 | "$STRATA_BIN" produce "$topic" -b "$bootstrap" >/dev/null
python3 "$repo/scripts/group_timing.py" "$bootstrap" "$topic" "$RUNS"
