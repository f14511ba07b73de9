#!/usr/bin/env bash
# bench-single.sh: single-broker throughput, CPU efficiency and latency of Strata, measured with the
# neutral librdkafka load generator rdperf (../shared/tools/rdperf.c) so figures compare with other brokers.
#
# Scenarios (each on a fresh broker and data dir, REPEAT times; the table shows the per-column median):
#   produce SIZE pN   flood of MSGS_SIZE records of SIZE bytes, acks=-1, topic with N partitions
#   consume SIZE pN   the same broker then serves those records back from offset 0 (CONSUME=0 skips)
#   latency           LAT_MSGS 1 KiB records, acks=-1, paced at LAT_RATE msg/s (LATENCY=0 skips)
# For each one: msg/s and MB/s as rdperf measures them, broker CPU-seconds per GB of record payload
# (utime+stime of the broker process from /proc/PID/stat; GB = 1e9 bytes), broker CPU% of the
# window, rdperf's delivery latency (produce only), and how many times the topic's partitions rolled to a
# new segment during the run (segment files of the topic at the end, minus one per partition).
#
# Environment (all optional):
#   STRATA_BIN      broker binary to use; unset: cargo build --release -p strata-cli
#   RDPERF          rdperf binary to use; unset: build ../shared/tools/rdperf.c into RDPERF_DIR
#   RDPERF_DIR      where rdperf is built and cached (default: <target>/rdperf)
#   REPEAT=3        runs per scenario; the median of each column is printed
#   SIZES="100 1024" PARTITIONS="1 8"   (SIZES= runs no floods)
#   MSGS_100=5000000 MSGS_1024=1000000   flood counts (MSGS_<size>; other sizes default to 1 GB worth)
#   CONSUME=1  LATENCY=1  LAT_RATE=20000  LAT_MSGS=300000  LAT_SIZE=1024  LAT_PARTITIONS=1
#   RDPERF_PROPS    extra librdkafka key=value args for every produce run (e.g. "linger.ms=0")
#   CONSUME_PROPS   extra librdkafka key=value args for every consume run
#   BROKER_SET      extra broker settings, "k=v k=v", each passed as --set k=v
#   RDPERF_TIMEOUT=600 STARTUP_TIMEOUT=30 SETTLE=1   seconds
#   CREATE_TOPICS=1 create the topic with the admin API first (0: rely on auto-creation only)
#   KEEP=1          keep the work dir (broker logs, rdperf output) instead of deleting it
#   DATA_PARENT     where the brokers' data dirs go (default: the work dir, under TMPDIR or /tmp);
#                   DATA_PARENT=/dev/shm puts them on tmpfs, so disk fsync stalls do not hide the
#                   broker's own latency (the disk needs room for the largest flood, ~1 GB per run)
# shellcheck disable=SC2015 # "check && check || die" is meant: die if either check fails
set -euo pipefail

# ---------------------------------------------------------------------------------------------- setup

die() { echo "bench-single: error: $*" >&2; exit 1; }
note() { echo "bench-single: $*" >&2; }

# Resolve paths from the script's own location, not the caller's cwd: repo = scripts/.., and shared/
# sits beside the repo (/work/main -> /work/shared).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=$(dirname "$repo")/shared
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$repo/$target ;; esac

REPEAT=${REPEAT:-3}
SIZES=${SIZES-"100 1024"}   # SIZES= (empty): no floods
PARTITIONS=${PARTITIONS:-"1 8"}
MSGS_100=${MSGS_100:-5000000}
MSGS_1024=${MSGS_1024:-1000000}
CONSUME=${CONSUME:-1}
LATENCY=${LATENCY:-1}
LAT_RATE=${LAT_RATE:-20000}
LAT_MSGS=${LAT_MSGS:-300000}   # 15 s at 20000 msg/s
LAT_SIZE=${LAT_SIZE:-1024}
LAT_PARTITIONS=${LAT_PARTITIONS:-1}
RDPERF_PROPS=${RDPERF_PROPS:-}
CONSUME_PROPS=${CONSUME_PROPS:-}
BROKER_SET=${BROKER_SET:-}
RDPERF_TIMEOUT=${RDPERF_TIMEOUT:-600}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-30}
SETTLE=${SETTLE:-1}
CREATE_TOPICS=${CREATE_TOPICS:-1}
DATA_PARENT=${DATA_PARENT:-}
ACKS=-1
TOPIC=bench

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in REPEAT LAT_RATE LAT_MSGS LAT_SIZE LAT_PARTITIONS RDPERF_TIMEOUT STARTUP_TIMEOUT; do
  is_uint "${!v}" && [ "${!v}" -gt 0 ] || die "$v must be a positive integer, got '${!v}'"
done
for s in $SIZES $LAT_SIZE; do is_uint "$s" && [ "$s" -ge 16 ] ||
  die "record size '$s' (SIZES/LAT_SIZE) is not an integer >= 16 (rdperf stores an 8-byte send timestamp in each record and raises smaller sizes to 16)"; done
for p in $PARTITIONS; do is_uint "$p" && [ "$p" -gt 0 ] || die "PARTITIONS: '$p' is not a positive integer"; done

need() { command -v "$1" >/dev/null || die "'$1' not found: $2"; }
need python3 "used to pick a free port (and by build-rdperf.sh)"
need timeout "coreutils timeout bounds each rdperf run"
need getconf "needed for CLK_TCK"
[ -r /proc/self/stat ] || die "/proc is not mounted: broker CPU is read from /proc/PID/stat"
CLK_TCK=$(getconf CLK_TCK)

# Count of records for a flood of SIZE-byte records: MSGS_<size> if set, else ~1 GB of payload.
msgs_for() { local v="MSGS_$1"; echo "${!v:-$((1000000000 / $1))}"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench.XXXXXX")
if [ -n "$DATA_PARENT" ]; then
  [ -d "$DATA_PARENT" ] && [ -w "$DATA_PARENT" ] || die "DATA_PARENT=$DATA_PARENT is not a writable directory"
  data_root=$(mktemp -d "$DATA_PARENT/strata-bench-data.XXXXXX")
else
  data_root=$work
fi
results=$work/results.tsv   # one row per run; medians are computed from it at the end
: >"$results"

BROKER_PID="" RDPERF_PID=""
cleanup() {
  # timeout(1) passes the TERM on to rdperf
  if [ -n "$RDPERF_PID" ]; then kill -TERM "$RDPERF_PID" 2>/dev/null || true; wait "$RDPERF_PID" 2>/dev/null || true; fi
  stop_broker
  if [ "$data_root" != "$work" ]; then rm -rf "$data_root"; fi
  if [ "${KEEP:-0}" = 1 ]; then note "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'note "interrupted"; exit 130' INT TERM   # a normal exit, so the EXIT trap stops rdperf and the broker

# ---------------------------------------------------------------------------------------------- build

build_broker() {
  if [ -n "${STRATA_BIN:-}" ]; then
    [ -x "$STRATA_BIN" ] || die "STRATA_BIN=$STRATA_BIN is not an executable file"
    return
  fi
  need cargo "install Rust, or set STRATA_BIN to a built broker"
  note "building the broker (cargo build --release -p strata-cli)"
  (cd "$repo" && cargo build --release -p strata-cli) || die "cargo build of strata-cli failed"
  STRATA_BIN=$target/release/strata
  [ -x "$STRATA_BIN" ] || die "cargo build succeeded but $STRATA_BIN is missing (is the bin target still named 'strata'?)"
}

# rdperf against librdkafka 2.16 from the shared build script. The build needs a venv + pip download and
# maybe apt, so it is cached: rebuilt only when missing or older than its sources.
build_rdperf() {
  RDPERF_DIR=${RDPERF_DIR:-$target/rdperf}
  if [ -n "${RDPERF:-}" ]; then
    [ -x "$RDPERF" ] || die "RDPERF=$RDPERF is not an executable file"
  else
    local src=$shared/tools/rdperf.c build=$shared/tools/build-rdperf.sh
    [ -f "$src" ] && [ -f "$build" ] ||
      die "rdperf sources not found: expected $src and $build (shared/ must sit beside the repo)"
    RDPERF=$RDPERF_DIR/rdperf
    if [ -x "$RDPERF" ] && [ "$RDPERF" -nt "$src" ] && [ "$RDPERF" -nt "$build" ] && [ -x "$RDPERF_DIR/venv/bin/python" ]; then
      note "using cached $RDPERF"
    else
      note "building rdperf into $RDPERF_DIR"
      bash "$build" "$RDPERF_DIR" >&2 || die "$build failed (needs gcc, python3-venv, network access to PyPI and apt)"
      [ -x "$RDPERF" ] || die "$build finished but $RDPERF is missing"
    fi
  fi
  # The venv's confluent_kafka (same librdkafka 2.16) does topic admin/metadata; optional with RDPERF set.
  PY=$RDPERF_DIR/venv/bin/python
  if [ -x "$PY" ] && "$PY" -c 'import confluent_kafka' 2>/dev/null; then
    LIBRDKAFKA_VERSION=$("$PY" -c 'import confluent_kafka as c; print(c.libversion()[0])')
  else
    PY=""; LIBRDKAFKA_VERSION="unknown (no $RDPERF_DIR/venv)"
    note "no confluent_kafka venv in $RDPERF_DIR: topics are left to auto-creation and partition counts are not checked"
  fi
}

# --------------------------------------------------------------------------------------------- broker

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_broker PARTITIONS NAME: fresh data dir + port, so runs never see each other's data or page
# layout. num.partitions makes auto-created topics have PARTITIONS partitions.
start_broker() {
  local parts=$1 name=$2 s
  BROKER_PORT=$(free_port)
  BROKER_DIR=$data_root/$name.data
  BROKER_LOG=$work/$name.broker.log
  mkdir -p "$BROKER_DIR"
  local -a sets=(--set "num.partitions=$parts")
  for s in $BROKER_SET; do sets+=(--set "$s"); done
  "$STRATA_BIN" serve --listen "127.0.0.1:$BROKER_PORT" --advertise "127.0.0.1:$BROKER_PORT" \
    --data-dir "$BROKER_DIR" "${sets[@]}" >"$BROKER_LOG" 2>&1 &
  BROKER_PID=$!
  # Bounded wait for the listen socket; fail early (with the log) if the broker exits instead.
  local deadline=$((SECONDS + STARTUP_TIMEOUT))
  until (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null; do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=""
      broker_log_tail; die "broker exited during startup: $STRATA_BIN serve --listen 127.0.0.1:$BROKER_PORT ... ${sets[*]}"
    fi
    [ $SECONDS -lt $deadline ] || { broker_log_tail; die "broker not listening on 127.0.0.1:$BROKER_PORT after ${STARTUP_TIMEOUT}s"; }
    sleep 0.1
  done
}

# Stop by pid (never by name): TERM, a bounded grace period, then KILL. Also removes its data dir,
# since floods leave ~1 GB behind per run.
stop_broker() {
  [ -n "${BROKER_PID:-}" ] || return 0
  local pid=$BROKER_PID i
  BROKER_PID=""
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { note "broker $pid ignored SIGTERM for 10s; killing"; kill -KILL "$pid" 2>/dev/null || true; }
  wait "$pid" 2>/dev/null || true
  if [ -n "${BROKER_DIR:-}" ]; then rm -rf "$BROKER_DIR"; fi
}

broker_log_tail() {
  [ -s "${BROKER_LOG:-/dev/null}" ] && { echo "--- last lines of $BROKER_LOG:" >&2; tail -n 20 "$BROKER_LOG" >&2; }
  return 0
}

# Broker CPU so far in clock ticks: utime+stime (fields 14, 15 of /proc/PID/stat, summed over all
# threads). Fields are counted after the last ')' because field 2, the command name, may hold spaces.
broker_cpu_ticks() {
  local stat rest
  stat=$(<"/proc/$BROKER_PID/stat") || die "broker (pid $BROKER_PID) is gone"
  rest=${stat##*) }
  local -a f
  read -r -a f <<<"$rest"   # f[0] is field 3, so field 14 is f[11] and field 15 is f[12]
  echo $((f[11] + f[12]))
}

now() { date +%s.%N; }

# Segment rolls of TOPIC so far: its segment files (one .log each) minus one per partition directory.
# Nothing deletes segments during a bench run (retention is time-based with the default 7 days).
topic_rolls() {
  local logs dirs
  logs=$(find "$BROKER_DIR" -path "$BROKER_DIR/$TOPIC-*" -name '*.log' 2>/dev/null | wc -l)
  dirs=$(find "$BROKER_DIR" -maxdepth 1 -type d -name "$TOPIC-*" 2>/dev/null | wc -l)
  echo $((logs > dirs ? logs - dirs : 0))
}

# ------------------------------------------------------------------------------------- topic helpers

# Create TOPIC with PARTITIONS partitions up front through the Kafka admin API. If the broker does not
# support CreateTopics (yet), say so once and from then on rely on the producer's auto-creation with
# num.partitions; check_partitions catches a broker that honours neither.
create_topic() {
  [ -n "$PY" ] && [ "$CREATE_TOPICS" = 1 ] || return 0
  local why
  why=$("$PY" - "127.0.0.1:$BROKER_PORT" "$TOPIC" "$1" 2>&1 <<'EOF'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka import KafkaError
brokers, topic, parts = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = AdminClient({"bootstrap.servers": brokers, "log_level": 3})
try:
    a.create_topics([NewTopic(topic, parts, 1)], request_timeout=10)[topic].result(timeout=15)
except Exception as e:
    err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
    if err is None or err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
        print(err.str() if err is not None else e)
        sys.exit(1)
EOF
  ) && return 0
  note "CreateTopics failed ($why); using auto-creation with --set num.partitions=N from now on"
  CREATE_TOPICS=0
}

# Partition count of TOPIC as the broker reports it, to make sure "p8" really measured 8 partitions.
check_partitions() {
  [ -n "$PY" ] || return 0
  local want=$1 got
  got=$("$PY" - "127.0.0.1:$BROKER_PORT" "$TOPIC" <<'EOF'
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 3}).list_topics(sys.argv[2], timeout=10)
t = md.topics.get(sys.argv[2])
print(len(t.partitions) if t is not None and t.error is None else f"error: {t.error if t else 'topic missing'}")
EOF
  ) || die "could not read metadata for topic $TOPIC"
  [ "$got" = "$want" ] ||
    die "topic $TOPIC has $got partitions, wanted $want: does the broker honour CreateTopics or --set num.partitions?"
}

# ------------------------------------------------------------------------------------------ measuring

# run_rdperf NAME ARGS...: run rdperf with a time bound and set RDPERF_LINE to its one result line; on
# failure show rdperf's stderr and the broker log, and stop. rdperf runs in the background and is waited
# for, because bash defers traps until a foreground child ends: this way Ctrl-C / TERM stop the bench
# (and cleanup stops rdperf and the broker) at once instead of after the run.
run_rdperf() {
  local name=$1; shift
  local out=$work/$name.rdperf.out err=$work/$name.rdperf.err rc=0
  echo "+ rdperf $*" >"$work/$name.rdperf.cmd"
  timeout "$RDPERF_TIMEOUT" "$RDPERF" "$@" >"$out" 2>"$err" &
  RDPERF_PID=$!
  # Watch the broker meanwhile: if it crashes, rdperf would only give up after message.timeout.ms (5 min).
  while kill -0 "$RDPERF_PID" 2>/dev/null; do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      kill -TERM "$RDPERF_PID" 2>/dev/null || true; wait "$RDPERF_PID" 2>/dev/null || true; RDPERF_PID=""
      broker_log_tail; die "the broker exited during $name (rdperf $*)"
    fi
    sleep 0.2
  done
  wait "$RDPERF_PID" || rc=$?
  RDPERF_PID=""
  if [ $rc -ne 0 ] || ! grep -qE '^(produce|consume) msgs=' "$out"; then
    echo "--- rdperf $* (exit $rc$([ $rc = 124 ] && echo ", timed out after ${RDPERF_TIMEOUT}s"))" >&2
    cat "$out" >&2; tail -n 20 "$err" >&2
    broker_log_tail
    die "rdperf failed in $name"
  fi
  RDPERF_LINE=$(grep -E '^(produce|consume) msgs=' "$out" | tail -n 1)
}

# kv KEY LINE: value of KEY=... in an rdperf result line.
kv() { awk -v k="$1" '{ for (i = 1; i <= NF; i++) { n = index($i, "="); if (n && substr($i, 1, n - 1) == k) print substr($i, n + 1) } }' <<<"$2"; }

# measure SCENARIO RUN_NAME SIZE RDPERF_ARGS...: one rdperf run with the broker's CPU read around it,
# appended to the results file as: scenario msgs msg/s MB/s cpu-s/GB cpu% p50 p99 p999 max rolls.
measure() {
  local scen=$1 name=$2 size=$3; shift 3
  local c0 c1 t0 t1 line r0 r1
  r0=$(topic_rolls); c0=$(broker_cpu_ticks); t0=$(now)
  run_rdperf "$name" "$@"
  line=$RDPERF_LINE
  t1=$(now)
  # Let work the broker does right after the last ack (flushes, index writes) be charged to this run
  # rather than to the next scenario on the same broker; cpu% still divides by the run's own time.
  sleep "$SETTLE"
  c1=$(broker_cpu_ticks); r1=$(topic_rolls)
  echo "  $name: $line rolls=$((r1 - r0))" >&2
  local msgs mps mbps
  msgs=$(kv msgs "$line"); mps=$(kv msg/s "$line"); mbps=$(kv MB/s "$line")
  # produce lines carry rdperf's effective record size; consume lines do not, and the records it reads
  # back are the ones produced with SIZE.
  local rsize; rsize=$(kv size "$line"); size=${rsize:-$size}
  [ -n "$msgs" ] && [ "$msgs" -gt 0 ] || die "rdperf reported no messages in $name: $line"
  awk -v s="$scen" -v m="$msgs" -v r="$mps" -v b="$mbps" -v size="$size" -v dt=$((c1 - c0)) -v hz="$CLK_TCK" \
      -v w0="$t0" -v w1="$t1" -v p50="$(kv p50_ms "$line")" -v p99="$(kv p99_ms "$line")" \
      -v p999="$(kv p999_ms "$line")" -v max="$(kv max_ms "$line")" -v rolls=$((r1 - r0)) 'BEGIN {
    cpu = dt / hz; gb = m * size / 1e9
    printf "%s\t%s\t%s\t%s\t%.2f\t%.0f\t%s\t%s\t%s\t%s\t%s\n", s, m, r, b, cpu / gb, 100 * cpu / (w1 - w0),
      p50 == "" ? "-" : p50, p99 == "" ? "-" : p99, p999 == "" ? "-" : p999, max == "" ? "-" : max, rolls
  }' >>"$results"
}

# ---------------------------------------------------------------------------------------------- scenarios

# One flood run: fresh broker, produce MSGS records, then (CONSUME=1) read them all back on the same
# broker, so consuming needs no second fill.
flood_run() {
  local size=$1 parts=$2 rep=$3 msgs tag
  msgs=$(msgs_for "$size"); tag="${size}B-p${parts}-r${rep}"
  start_broker "$parts" "$tag"
  create_topic "$parts"
  # rdperf P BROKERS TOPIC COUNT SIZE ACKS [key=value...]
  # shellcheck disable=SC2086 # RDPERF_PROPS is a list of key=value words
  measure "produce ${size}B p${parts}" "produce-$tag" "$size" \
    P "127.0.0.1:$BROKER_PORT" "$TOPIC" "$msgs" "$size" "$ACKS" $RDPERF_PROPS
  check_partitions "$parts"
  if [ "$CONSUME" = 1 ]; then
    # rdperf C BROKERS TOPIC COUNT [key=value...]: assigns every partition from the beginning and stops
    # after COUNT records (or 10 s without one, which makes it exit non-zero).
    # shellcheck disable=SC2086
    measure "consume ${size}B p${parts}" "consume-$tag" "$size" \
      C "127.0.0.1:$BROKER_PORT" "$TOPIC" "$msgs" $CONSUME_PROPS
  fi
  stop_broker
}

# Fixed-rate run: latency at a load the broker can sustain, instead of the flood's queueing delay.
# $2: the client's linger.ms. rdperf's own default (5) puts up to 5 ms of client-side batching in
# every delivery, so a second row with linger.ms=1 shows what the broker adds.
latency_run() {
  local rep=$1 linger=$2 tag="lat-l$2-r$1"
  start_broker "$LAT_PARTITIONS" "$tag"
  create_topic "$LAT_PARTITIONS"
  # shellcheck disable=SC2086
  measure "latency ${LAT_SIZE}B p${LAT_PARTITIONS} @${LAT_RATE}/s linger${linger}" "$tag" "$LAT_SIZE" \
    P "127.0.0.1:$BROKER_PORT" "$TOPIC" "$LAT_MSGS" "$LAT_SIZE" "$ACKS" "rate=$LAT_RATE" $RDPERF_PROPS "linger.ms=$linger"
  stop_broker
}

# Per-scenario median of each column (independently), scenarios in the order they ran.
print_table() {
  echo
  printf '%-36s %9s %10s %8s %9s %5s %8s %8s %8s %8s %6s\n' scenario msgs msg/s MB/s CPU-s/GB cpu% p50_ms p99_ms p999_ms max_ms rolls
  awk -F'\t' '
    function median(key, col,   n, i, j, t, v) {
      n = split(vals[key, col], v, " ")
      for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] + 0 > t + 0; j--) v[j + 1] = v[j]; v[j + 1] = t }
      if (v[1] == "-") return "-"
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function ms(x) { return x == "-" ? x : sprintf("%.2f", x) }
    { if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 }
      for (c = 2; c <= NF; c++) vals[$1, c] = vals[$1, c] (vals[$1, c] == "" ? "" : " ") $c }
    END { for (i = 1; i <= k; i++) { s = order[i]
      printf "%-36s %9s %10.0f %8.1f %9.2f %5.0f %8s %8s %8s %8s %6s\n", s, median(s, 2), median(s, 3), median(s, 4),
        median(s, 5), median(s, 6), ms(median(s, 7)), ms(median(s, 8)), ms(median(s, 9)), ms(median(s, 10)), median(s, 11) } }
  ' "$results"
  cat <<EOF

msg/s, MB/s (1e6 B of payload) and latency are rdperf's own figures; CPU-s/GB is broker utime+stime per
1e9 B of record payload; cpu% is broker CPU over the measured window (100 = one core); rolls: new segments
the topic's partitions started during the run (set log.segment.bytes with BROKER_SET). Produce latency is
from rdperf's produce() call to its delivery report (floods use rdperf's linger.ms=5): in flood runs it is
mostly client-side queueing, so quote latency from the fixed-rate rows (linger5: rdperf's default;
linger1: the client batches for at most 1 ms). Median of $REPEAT run(s) per column.
EOF
}

main() {
  build_broker
  build_rdperf
  note "broker: $STRATA_BIN"
  note "rdperf: $RDPERF (librdkafka $LIBRDKAFKA_VERSION); $(nproc) cores; REPEAT=$REPEAT; work dir $work; data in $data_root ($(df --output=fstype "$data_root" 2>/dev/null | tail -n 1))"
  local size parts rep
  for size in $SIZES; do
    for parts in $PARTITIONS; do
      for ((rep = 1; rep <= REPEAT; rep++)); do flood_run "$size" "$parts" "$rep"; done
    done
  done
  if [ "$LATENCY" = 1 ]; then
    local linger
    for linger in 5 1; do
      for ((rep = 1; rep <= REPEAT; rep++)); do latency_run "$rep" "$linger"; done
    done
  fi
  print_table
}

main "$@"
