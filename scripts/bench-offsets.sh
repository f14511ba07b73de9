#!/usr/bin/env bash
# bench-offsets.sh: committed offsets on one broker.
#   1. OffsetCommit throughput: commit-load (benches/src/bin/commit-load.rs) sends COMMITS durable
#      OffsetCommit requests (one partition each) over CONNECTIONS connections with IN_FLIGHT
#      requests pipelined on each; reports requests/s and the broker's CPU-seconds per 10,000
#      commits (utime+stime from /proc/PID/stat over the run).
#   2. Load time: the broker is killed with SIGKILL after those COMMITS records and restarted; the
#      "committed offsets loaded" log line gives the time to replay __consumer_offsets. Then a clean
#      restart (SIGTERM) is measured too.
# Environment: STRATA_BIN, LOAD_BIN (default: cargo build --release), COMMITS=1000000,
# BROKER_SET="k=v ..." (each passed as --set k=v), CONNECTIONS=8, IN_FLIGHT=32, GROUPS_PER_CONNECTION=1000, PARTITIONS=8, KEEP=1 keeps the dir.
set -euo pipefail

die() { echo "bench-offsets: error: $*" >&2; exit 1; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
COMMITS=${COMMITS:-1000000}
CONNECTIONS=${CONNECTIONS:-8}
IN_FLIGHT=${IN_FLIGHT:-32}
GROUPS_PER_CONNECTION=${GROUPS_PER_CONNECTION:-1000}  # not GROUPS: bash owns that name
PARTITIONS=${PARTITIONS:-8}

if [[ -z ${STRATA_BIN:-} || -z ${LOAD_BIN:-} ]]; then
    (cd "$repo" && cargo build --release -p strata-cli -p strata-benches --bin strata --bin commit-load) >&2
fi
STRATA_BIN=${STRATA_BIN:-$target/release/strata}
LOAD_BIN=${LOAD_BIN:-$target/release/commit-load}

work=$(mktemp -d /tmp/bench-offsets.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pid=
cleanup() {
    if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi || true
    if [[ ${KEEP:-0} == 1 ]]; then echo "bench-offsets: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

start() {
    # Only this start's lines count: the log accumulates across restarts.
    from=$(($(wc -l <"$work/broker.log" 2>/dev/null || echo 0) + 1))
    local sets=()
    for kv in ${BROKER_SET:-}; do sets+=(--set "$kv"); done
    "$STRATA_BIN" serve --listen "127.0.0.1:$port" --data-dir "$work/data" "${sets[@]}" >>"$work/broker.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        tail -n "+$from" "$work/broker.log" | grep -q "strata is serving" && return 0
        kill -0 "$pid" 2>/dev/null || die "broker exited; see $work/broker.log"
        sleep 0.1
    done
    die "broker did not start within 60 s"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
loaded() {
    tail -n "+$from" "$work/broker.log" | grep "committed offsets loaded" | sed 's/\x1b\[[0-9;]*m//g; s/.*committed offsets loaded //'
}

start
"$STRATA_BIN" topic create bench --partitions "$PARTITIONS" -b "127.0.0.1:$port" >/dev/null
before=$(cpu_ticks "$pid")
out=$("$LOAD_BIN" "127.0.0.1:$port" bench "$CONNECTIONS" "$COMMITS" "$IN_FLIGHT" "$GROUPS_PER_CONNECTION" "$PARTITIONS")
after=$(cpu_ticks "$pid")
echo "throughput: $out"
requests=$(sed 's/.*requests=\([0-9]*\).*/\1/' <<<"$out")
awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" \
    'BEGIN { printf "broker CPU: %.2f s for %d commits = %.3f CPU-s per 10,000 commits\n", t/hz, n, t/hz/n*10000 }'
echo "__consumer_offsets on disk: $(du -sh --apparent-size "$work/data" | cut -f1) apparent"

kill -9 "$pid"; wait "$pid" 2>/dev/null || true
pid=
start
echo "load after kill -9: $(loaded)"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
pid=
start
echo "load after clean stop: $(loaded)"
