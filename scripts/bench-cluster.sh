#!/usr/bin/env bash
# bench-cluster.sh: replication's cost, measured with rdperf (../shared/tools/rdperf.c) against
# 3 local brokers (each a controller voter) with a topic of replication factor 3, side by side with
# a single node in the same run, so the ratios compare like with like on a noisy machine.
#
# For each of REPEAT rounds, alternating single node / cluster, each on fresh data dirs:
#   flood     FLOOD_MSGS records of 1 KiB, acks=-1 (all ISR members have each batch before its
#             ack), 1 partition: msg/s, MB/s, broker CPU-s per GB of payload (the three brokers summed
#             for the cluster, from /proc/PID/stat)
#   latency   LAT_MSGS records of 1 KiB at LAT_RATE msg/s (20 MB/s), acks=-1: delivery p50/p99/max
# and once per run, on the cluster:
#   catch-up  a follower stopped, CATCHUP_MB of 1 KiB records produced (acks=1), the follower
#             started: the time until it is back in the ISR (it has reached the leader's HW), as
#             MiB/s a returning replica copies (its restart included)
# Prints a table of medians and the ratios cluster / single.
#
# Environment: STRATA_BIN (default: cargo build --release), RDPERF (default: build into
# target/rdperf), REPEAT=3 (0: only the catch-up), FLOOD_MSGS=1000000, LAT_MSGS=200000, LAT_RATE=20000, CATCHUP_MB=512 (0: no catch-up),
# RDPERF_PROPS (extra librdkafka props for produce, e.g. linger.ms=1), BROKER_SET ("k=v ..." for
# every broker), DATA_PARENT (default: a temp dir; /dev/shm keeps disk stalls out), KEEP=1.
set -euo pipefail

die() { echo "bench-cluster: error: $*" >&2; exit 1; }
note() { echo "bench-cluster: $*" >&2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=$(dirname "$repo")/shared
target=${CARGO_TARGET_DIR:-$repo/target}
REPEAT=${REPEAT:-3}
FLOOD_MSGS=${FLOOD_MSGS:-1000000}
LAT_MSGS=${LAT_MSGS:-200000}
LAT_RATE=${LAT_RATE:-20000}
CATCHUP_MB=${CATCHUP_MB:-512}
RDPERF_PROPS=${RDPERF_PROPS:-}
BROKER_SET=${BROKER_SET:-}
RDPERF_TIMEOUT=${RDPERF_TIMEOUT:-900}
CLK_TCK=$(getconf CLK_TCK)

for v in FLOOD_MSGS LAT_MSGS LAT_RATE; do
  [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || die "$v must be a positive integer, got '${!v}'"
done
# REPEAT=0 runs only the catch-up; CATCHUP_MB=0 skips it.
for v in REPEAT CATCHUP_MB; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done

if [ -z "${STRATA_BIN:-}" ]; then
  (cd "$repo" && cargo build --release -p strata-cli) >&2 || die "cargo build failed"
  STRATA_BIN=$target/release/strata
fi
[ -x "$STRATA_BIN" ] || die "STRATA_BIN=$STRATA_BIN is not executable"
if [ -z "${RDPERF:-}" ]; then
  RDPERF=$target/rdperf/rdperf
  [ -x "$RDPERF" ] || bash "$shared/tools/build-rdperf.sh" "$target/rdperf" >&2 || die "building rdperf failed"
fi
[ -x "$RDPERF" ] || die "RDPERF=$RDPERF is not executable"

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-cluster.XXXXXX")
data_root=$work
if [ -n "${DATA_PARENT:-}" ]; then data_root=$(mktemp -d "$DATA_PARENT/strata-bench-cluster.XXXXXX"); fi
results=$work/results.tsv
: >"$results"
PIDS=()

stop_all() {
  local pid i
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
cleanup() {
  stop_all
  [ "$data_root" != "$work" ] && rm -rf "$data_root"
  if [ "${KEEP:-0}" = 1 ]; then note "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'note "interrupted"; exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_nodes NAME COUNT: COUNT nodes (voters when > 1) on fresh dirs and ports; sets PORTS, PIDS.
start_nodes() {
  local name=$1 count=$2 i voters="" sets=() s
  PORTS=() CPORTS=()
  for ((i = 1; i <= count; i++)); do PORTS+=("$(free_port)"); CPORTS+=("$(free_port)"); done
  for ((i = 1; i <= count; i++)); do voters+="${voters:+,}$i@127.0.0.1:${CPORTS[i - 1]}"; done
  for s in $BROKER_SET; do sets+=(--set "$s"); done
  for ((i = 1; i <= count; i++)); do launch_node "$name" "$i" "$count" "$voters" "${sets[@]}"; done
  for ((i = 1; i <= count; i++)); do wait_port "${PORTS[i - 1]}" "$work/$name.node$i.log"; done
}

# launch_node NAME I COUNT VOTERS SETS...: (re)starts node I of a run on its port and data dir.
launch_node() {
  local name=$1 i=$2 count=$3 voters=$4; shift 4
  local dir=$data_root/$name.node$i extra=()
  mkdir -p "$dir"
  [ "$count" -gt 1 ] && extra=(--voters "$voters" --controller-listen "127.0.0.1:${CPORTS[i - 1]}")
  NO_COLOR=1 "$STRATA_BIN" serve --node-id "$i" --listen "127.0.0.1:${PORTS[i - 1]}" \
    --data-dir "$dir" "${extra[@]}" "$@" >>"$work/$name.node$i.log" 2>&1 &
  PIDS[i - 1]=$!
}

wait_port() {
  local port=$1 log=$2 deadline=$((SECONDS + 60))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { tail -20 "$log" >&2; die "nothing listens on $port after 60 s"; }
    sleep 0.1
  done
}

bootstrap() { local IFS=,; local a=(); for p in "${PORTS[@]}"; do a+=("127.0.0.1:$p"); done; echo "${a[*]}"; }

cpu_ticks() {
  local total=0 pid stat rest f
  for pid in "${PIDS[@]}"; do
    stat=$(<"/proc/$pid/stat") || die "broker $pid is gone"
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

PY=$(dirname "$RDPERF")/venv/bin/python
[ -x "$PY" ] || PY=python3

# create_topic RF: topic "bench", 1 partition, replication factor RF, min.insync.replicas=min(2,RF).
create_topic() {
  "$PY" - "$(bootstrap)" "$1" <<'EOF' || die "creating the topic failed"
import sys, time
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, rf = sys.argv[1], int(sys.argv[2])
a = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
# Every broker registers on its own: wait (bounded) until all of them are there.
deadline = time.monotonic() + 30
while len(a.list_topics(timeout=10).brokers) < rf and time.monotonic() < deadline:
    time.sleep(0.2)
cfg = {"min.insync.replicas": str(min(2, rf))}
a.create_topics([NewTopic("bench", 1, rf, config=cfg)], request_timeout=20)["bench"].result(timeout=30)
EOF
}

kv() { awk -v k="$1" '{ for (i = 1; i <= NF; i++) { n = index($i, "="); if (n && substr($i, 1, n - 1) == k) print substr($i, n + 1) } }' <<<"$2"; }

# measure KIND LABEL ARGS...: one rdperf produce run; a results row.
measure() {
  local kind=$1 label=$2; shift 2
  local c0 c1 out
  c0=$(cpu_ticks)
  # shellcheck disable=SC2086 # RDPERF_PROPS is a list of k=v words
  out=$(timeout "$RDPERF_TIMEOUT" "$RDPERF" P "$(bootstrap)" bench "$@" $RDPERF_PROPS 2>"$work/rdperf.err" | grep '^produce msgs=') ||
    { tail -5 "$work/rdperf.err" >&2; die "rdperf failed ($label $kind)"; }
  sleep 1
  c1=$(cpu_ticks)
  note "$label $kind: $out"
  awk -v k="$kind" -v l="$label" -v m="$(kv msgs "$out")" -v r="$(kv msg/s "$out")" -v b="$(kv MB/s "$out")" \
    -v dt=$((c1 - c0)) -v hz="$CLK_TCK" -v p50="$(kv p50_ms "$out")" -v p99="$(kv p99_ms "$out")" \
    -v max="$(kv max_ms "$out")" 'BEGIN {
    printf "%s\t%s\t%s\t%s\t%.3f\t%s\t%s\t%s\n", l, k, r, b, (dt / hz) / (m * 1024 / 1e9), p50, p99, max }' >>"$results"
}

# run_round LABEL NODES ROUND
run_round() {
  local label=$1 nodes=$2 round=$3 name="$1.r$3"
  start_nodes "$name" "$nodes"
  create_topic "$nodes"
  measure flood "$label" "$FLOOD_MSGS" 1024 -1 linger.ms=5
  measure latency "$label" "$LAT_MSGS" 1024 -1 "rate=$LAT_RATE" linger.ms=1
  stop_all
  rm -rf "$data_root/$name".node*
}

# The ISR of partition 0 of "bench", as "1,2,3" (sorted).
isr_of() {
  "$PY" - "$(bootstrap)" <<'EOF'
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 3}).list_topics("bench", timeout=10)
print(",".join(str(b) for b in sorted(md.topics["bench"].partitions[0].isrs)))
EOF
}

catch_up() {
  local name=catchup count
  count=$((CATCHUP_MB * 1024))
  local saved_set=$BROKER_SET
  BROKER_SET="$BROKER_SET replica.lag.time.max.ms=3000"
  start_nodes "$name" 3
  create_topic 3
  local voters="" i sets=() s
  for ((i = 1; i <= 3; i++)); do voters+="${voters:+,}$i@127.0.0.1:${CPORTS[i - 1]}"; done
  for s in $BROKER_SET; do sets+=(--set "$s"); done
  BROKER_SET=$saved_set
  # Which broker leads: stop a follower (not the leader).
  local leader follower
  leader=$("$PY" - "$(bootstrap)" <<'EOF'
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 3}).list_topics("bench", timeout=10)
print(md.topics["bench"].partitions[0].leader)
EOF
  )
  follower=$(( leader % 3 + 1 ))
  kill -TERM "${PIDS[follower - 1]}"; wait "${PIDS[follower - 1]}" 2>/dev/null || true
  # shellcheck disable=SC2086
  timeout "$RDPERF_TIMEOUT" "$RDPERF" P "127.0.0.1:${PORTS[leader - 1]}" bench "$count" 1024 1 linger.ms=5 >/dev/null 2>&1 ||
    die "filling the leader failed"
  local t0 t1 got deadline
  # Out of the ISR first (replica.lag.time.max.ms, shortened below), so the rejoin is a real one.
  deadline=$((SECONDS + 120))
  until [ "$(isr_of 2>/dev/null || echo "?")" = "$(echo 1 2 3 | tr ' ' '\n' | grep -v "^$follower$" | paste -sd,)" ]; do
    [ $SECONDS -lt $deadline ] || die "broker $follower did not leave the ISR in 120 s"
    sleep 0.2
  done
  t0=$(date +%s.%N)
  launch_node "$name" "$follower" 3 "$voters" "${sets[@]}"
  wait_port "${PORTS[follower - 1]}" "$work/$name.node$follower.log"
  deadline=$((SECONDS + 600))
  while :; do
    got=$(isr_of 2>/dev/null || echo "?")
    [ "$got" = "1,2,3" ] && break
    [ $SECONDS -lt $deadline ] || die "broker $follower did not rejoin the ISR in 600 s (ISR $got)"
    sleep 0.2
  done
  t1=$(date +%s.%N)
  awk -v mb="$CATCHUP_MB" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "catch-up: %d MiB in %.1f s (restart and ISR rejoin included) = %.0f MiB/s\n", mb, t1 - t0, mb / (t1 - t0) }' | tee "$work/catchup.txt"
  stop_all
}

for ((r = 1; r <= REPEAT; r++)); do
  run_round single 1 "$r"
  run_round cluster 3 "$r"
done
[ "$CATCHUP_MB" -gt 0 ] && catch_up

if [ "$REPEAT" -eq 0 ]; then cat "$work/catchup.txt"; exit 0; fi
echo
echo "medians of $REPEAT rounds (1 KiB records, acks=-1; cluster: RF=3, min.insync.replicas=2, CPU of 3 brokers summed)"
printf "%-8s %-8s %10s %8s %12s %8s %8s %8s\n" setup run msg/s MB/s cpu-s/GB p50_ms p99_ms max_ms
for setup in single cluster; do
  for kind in flood latency; do
    awk -F'\t' -v s="$setup" -v k="$kind" '$1 == s && $2 == k' "$results" >"$work/sel"
    med() { sort -g -k"$1" -t$'\t' "$work/sel" | awk -F'\t' -v c="$1" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'; }
    printf "%-8s %-8s %10s %8s %12s %8s %8s %8s\n" "$setup" "$kind" "$(med 3)" "$(med 4)" "$(med 5)" "$(med 6)" "$(med 7)" "$(med 8)"
  done
done
[ "$CATCHUP_MB" -gt 0 ] && cat "$work/catchup.txt"
exit 0
