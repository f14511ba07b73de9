#!/usr/bin/env bash
# compare-producers.sh SIZE COUNT [REPEAT]: `strata perf produce` against rdperf (librdkafka 2.16,
# ../shared/tools/rdperf.c) on the same release broker, acks=-1, one partition, alternating runs
# with a fresh broker and data dir each. Prints records/s and the client's CPU seconds (user+sys
# from /usr/bin/time) per million records for every run; quote medians.
# Needs target/rdperf from ./scripts/bench-single.sh (it builds rdperf there).
# STRATA_PERF_ARGS: extra arguments for `strata perf produce`, e.g.
#   STRATA_PERF_ARGS="-X enable.idempotence=false -X max.in.flight.requests.per.connection=5"
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
size=${1:?usage: compare-producers.sh SIZE COUNT [REPEAT]}
count=${2:?usage: compare-producers.sh SIZE COUNT [REPEAT]}
repeat=${3:-3}
read -r -a strata_extra <<<"${STRATA_PERF_ARGS:-}"
strata="$repo/target/release/strata"
rdperf="$repo/target/rdperf/rdperf"
[ -x "$rdperf" ] || { echo "error: $rdperf missing: run ./scripts/bench-single.sh once to build it" >&2; exit 1; }
cargo build --release --quiet -p strata-cli --manifest-path "$repo/Cargo.toml"
command -v /usr/bin/time >/dev/null || { echo "error: /usr/bin/time missing (apt-get install time)" >&2; exit 1; }

broker_pid=""
data_dir=""
cleanup() {
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
  [ -n "$data_dir" ] && rm -rf "$data_dir"
  broker_pid=""; data_dir=""
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

start_broker() {
  data_dir=$(mktemp -d)
  port=$(free_port)
  "$strata" serve --listen "127.0.0.1:$port" --data-dir "$data_dir" >/dev/null 2>&1 &
  broker_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "error: broker did not start" >&2; exit 1
}

for rep in $(seq "$repeat"); do
  for client in rdperf strata; do
    start_broker
    if [ "$client" = rdperf ]; then
      out=$( { LD_LIBRARY_PATH="$repo/target/rdperf/lib" /usr/bin/time -f 'CPU %U %S' \
        "$rdperf" P "127.0.0.1:$port" bench "$count" "$size" -1; } 2>&1 )
      rate=$(grep -o 'msg/s=[0-9]*' <<<"$out" | cut -d= -f2)
    else
      out=$( { /usr/bin/time -f 'CPU %U %S' "$strata" perf produce bench --records "$count" \
        --record-size "$size" --acks all -b "127.0.0.1:$port" ${strata_extra[@]+"${strata_extra[@]}"}; } 2>&1 )
      rate=$(grep 'records sent,' <<<"$out" | tail -1 | sed -E 's/.*records sent, ([0-9.]+) records\/sec.*/\1/')
    fi
    cpu=$(grep '^CPU' <<<"$out" | awk '{print $2 + $3}')
    per_million=$(awk -v c="$cpu" -v n="$count" 'BEGIN { printf "%.3f", c / (n / 1e6) }')
    echo "$client size=$size run=$rep records/s=$rate client_cpu_s=$cpu cpu_s_per_million=$per_million"
    cleanup
  done
done
