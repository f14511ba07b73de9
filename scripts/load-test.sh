#!/usr/bin/env bash
# Load test with `strata perf`: a fixed set of produce scenarios (100 B and 1 KB records, acks=1 and
# acks=all, keyed and keyless, floods and a fixed rate) and a consume of what one of them wrote,
# printed as one table: scenario, records/s, MB/s (MiB of record values, as Kafka's perf tools),
# p50/p99/p99.9/max latency in ms (send() call to delivery).
#
# Usage: scripts/load-test.sh [-b HOST:PORT]
#   -b HOST:PORT  use this running broker instead of starting one
#
# Without -b it builds the release binary (cargo build --release -p strata-cli), starts
# `strata serve` on a free loopback port with a temporary data directory, and stops it (by pid) and
# removes the directory on exit. Runs in about a minute or two on 2 cores with the defaults.
#
# Environment:
#   STRATA_BIN      strata binary to use (skips the build)
#   RECORDS_100     records per 100 B flood (default 3000000)
#   RECORDS_1K      records per 1 KB flood (default 500000)
#   RATE            records/s of the fixed-rate scenarios (default 5000)
#   RATE_SECS       seconds each fixed-rate scenario runs (default 10)
#   PARTITIONS      partitions per topic (default 3)
#   LINGER_MS       linger.ms for every scenario (default 5)
#   BATCH_SIZE      batch.size for every scenario (default 1000000)
#   RUN_TIMEOUT     seconds one `strata perf` run may take (default 300)
#   KEEP=1          keep the work directory (outputs, broker log)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

note() { echo "[load-test] $*" >&2; }
die() { echo "[load-test] error: $*" >&2; exit 1; }

BOOTSTRAP=""
while getopts "b:h" opt; do
  case $opt in
    b) BOOTSTRAP=$OPTARG ;;
    h) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "usage: $0 [-b HOST:PORT]" ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument '$1' (usage: $0 [-b HOST:PORT])"

RECORDS_100=${RECORDS_100:-3000000}
RECORDS_1K=${RECORDS_1K:-500000}
RATE=${RATE:-5000}
RATE_SECS=${RATE_SECS:-10}
PARTITIONS=${PARTITIONS:-3}
LINGER_MS=${LINGER_MS:-5}
BATCH_SIZE=${BATCH_SIZE:-1000000}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
for v in RECORDS_100 RECORDS_1K RATE RATE_SECS PARTITIONS LINGER_MS BATCH_SIZE RUN_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || die "$v=${!v} is not a positive integer"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-load.XXXXXX")
results=$work/results.tsv
: >"$results"
BROKER_PID=""

cleanup() {
  if [ -n "$BROKER_PID" ]; then
    local i
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$BROKER_PID" 2>/dev/null && kill -KILL "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
  fi
  if [ "${KEEP:-0}" = 1 ]; then note "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'note "interrupted"; exit 130' INT TERM

if [ -n "${STRATA_BIN:-}" ]; then
  [ -x "$STRATA_BIN" ] || die "STRATA_BIN=$STRATA_BIN is not an executable file"
else
  command -v cargo >/dev/null || die "cargo not found: install Rust or set STRATA_BIN"
  note "building (cargo build --release -p strata-cli)"
  (cd "$repo" && cargo build --release -p strata-cli >&2) || die "cargo build failed"
  target=${CARGO_TARGET_DIR:-$repo/target}
  case $target in /*) ;; *) target=$repo/$target ;; esac
  STRATA_BIN=$target/release/strata
  [ -x "$STRATA_BIN" ] || die "build finished but $STRATA_BIN is missing"
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ -z "$BOOTSTRAP" ]; then
  port=$(free_port) || die "cannot find a free port (needs python3)"
  mkdir -p "$work/data"
  "$STRATA_BIN" serve --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/broker.log" 2>&1 &
  BROKER_PID=$!
  deadline=$((SECONDS + 30))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      wait "$BROKER_PID" 2>/dev/null || true
      BROKER_PID=""
      tail -n 20 "$work/broker.log" >&2
      die "the broker exited during start-up"
    fi
    [ $SECONDS -lt $deadline ] || die "the broker is not listening on 127.0.0.1:$port after 30 s"
    sleep 0.1
  done
  BOOTSTRAP=127.0.0.1:$port
  note "broker pid $BROKER_PID on $BOOTSTRAP, data in $work/data"
else
  note "using the broker at $BOOTSTRAP"
fi

run_id=$(date +%s)-$$
n=0

# perf_run NAME OUTFILE ARGS...: one `strata perf` run with a time bound; stops the script with its
# output (and the broker log tail) on failure.
perf_run() {
  local name=$1 out=$2 rc=0
  shift 2
  timeout "$RUN_TIMEOUT" "$STRATA_BIN" perf "$@" >"$out" 2>"$out.err" || rc=$?
  if [ $rc -ne 0 ]; then
    echo "--- strata perf $* (exit $rc$([ $rc = 124 ] && echo ", timed out after ${RUN_TIMEOUT}s"))" >&2
    tail -n 5 "$out" "$out.err" >&2
    [ -f "$work/broker.log" ] && tail -n 10 "$work/broker.log" >&2
    die "scenario '$name' failed"
  fi
}

# produce NAME SIZE ACKS KEYS RECORDS [THROUGHPUT]: creates a fresh topic (TOPIC is left set to it)
# and appends one table row from the total line.
produce() {
  local name=$1 size=$2 acks=$3 keys=$4 records=$5 throughput=${6:--1}
  n=$((n + 1))
  TOPIC=load-$run_id-$n
  "$STRATA_BIN" topic create "$TOPIC" --partitions "$PARTITIONS" -b "$BOOTSTRAP" >/dev/null ||
    die "cannot create topic $TOPIC"
  note "$name: $records records"
  local out=$work/$n.out
  perf_run "$name" "$out" produce -b "$BOOTSTRAP" "$TOPIC" --records "$records" --record-size "$size" \
    --acks "$acks" --keys "$keys" --throughput "$throughput" --linger-ms "$LINGER_MS" --batch-size "$BATCH_SIZE"
  local total
  total=$(tail -n 1 "$out")
  echo "  $total" >&2
  # N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency, P50 ms 50th, ...
  local num='\([0-9.]*\)'
  fig() { sed -n "s/.*[ (]$num $1.*/\1/p" <<<"$total"; }
  local rps mbps p50 p99 p999 max
  rps=$(fig 'records\/sec'); mbps=$(fig 'MB\/sec'); max=$(fig 'ms max latency')
  p50=$(fig 'ms 50th'); p99=$(fig 'ms 99th'); p999=$(fig 'ms 99\.9th')
  [ -n "$rps" ] && [ -n "$p999" ] || die "cannot read the total line of '$name': $total"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$mbps" "$p50" "$p99" "$p999" "$max" >>"$results"
}

# consume NAME RECORDS: reads TOPIC (written by the previous produce) from the beginning.
consume() {
  local name=$1 records=$2
  n=$((n + 1))
  note "$name: $records records"
  local out=$work/$n.out
  perf_run "$name" "$out" consume -b "$BOOTSTRAP" "$TOPIC" --records "$records"
  local total
  total=$(tail -n 1 "$out")
  echo "  $total" >&2
  awk -v name="$name" '{
    for (i = 1; i <= NF; i++) {
      if ($i == "records/sec") rps = $(i - 1)
      if ($i == "MB/sec),") { mbps = $(i - 1); gsub(/[(]/, "", mbps) }
    }
    printf "%s\t%s\t%s\t-\t-\t-\t-\n", name, rps, mbps
  }' <<<"$total" >>"$results"
}

rate_records=$((RATE * RATE_SECS))
started=$SECONDS
produce "100B acks=1 keyless flood" 100 1 0 "$RECORDS_100"
produce "100B acks=all keyed(100) flood" 100 all 100 "$RECORDS_100"
produce "100B acks=all keyless flood" 100 all 0 "$RECORDS_100"
consume "consume 100B (previous topic)" "$RECORDS_100"
produce "1KB acks=1 keyed(100) flood" 1024 1 100 "$RECORDS_1K"
produce "1KB acks=all keyless flood" 1024 all 0 "$RECORDS_1K"
consume "consume 1KB (previous topic)" "$RECORDS_1K"
produce "100B acks=1 keyless @${RATE}/s" 100 1 0 "$rate_records" "$RATE"
produce "1KB acks=all keyed(100) @${RATE}/s" 1024 all 100 "$rate_records" "$RATE"

echo
printf '%-36s %12s %9s %9s %9s %9s %9s\n' scenario records/s MB/s p50_ms p99_ms p99.9_ms max_ms
awk -F'\t' '{ printf "%-36s %12.0f %9.2f %9s %9s %9s %9s\n", $1, $2, $3, $4, $5, $6, $7 }' "$results"
echo
echo "broker $BOOTSTRAP; $PARTITIONS partitions per topic; linger.ms=$LINGER_MS batch.size=$BATCH_SIZE;" \
  "MB = MiB of record values; latency from send() to delivery; $((SECONDS - started)) s in all."
