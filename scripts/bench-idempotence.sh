#!/usr/bin/env bash
# bench-idempotence.sh: what the idempotent producer costs the broker. Runs bench-single.sh's produce
# flood with rdperf (librdkafka) twice per repetition, enable.idempotence=false then =true, against the
# same release broker binary (fresh broker and data dir per run), alternating so background load on a
# shared machine hits both alike. Prints the median msg/s and broker CPU-s/GB of each, and the ratios.
#
# Target (issue 10): idempotence costs < 5% produce throughput.
#
# Environment (all optional; the rest is passed through to bench-single.sh, e.g. STRATA_BIN, RDPERF):
#   REPEAT=3       repetitions (each one run without and one with idempotence); medians are printed
#   SIZE=100       record size in bytes
#   PARTS=1        partitions of the topic
#   MSGS           records per run (default: bench-single.sh's default for SIZE)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPEAT=${REPEAT:-3}
SIZE=${SIZE:-100}
PARTS=${PARTS:-1}
die() { echo "bench-idempotence: error: $*" >&2; exit 1; }
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer"

if [ -z "${STRATA_BIN:-}" ]; then
  (cd "$repo" && cargo build --release -p strata-cli) >&2 || die "cargo build failed"
  export STRATA_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/strata
fi
export STRATA_BIN

rows=$(mktemp "${TMPDIR:-/tmp}/bench-idem.XXXXXX")
trap 'rm -f "$rows"' EXIT

# one_run MODE: one bench-single.sh produce flood; appends "MODE msg/s cpu-s/GB" to $rows.
one_run() {
  local mode=$1 out line
  local -a vars=(REPEAT=1 "SIZES=$SIZE" "PARTITIONS=$PARTS" CONSUME=0 LATENCY=0
    "RDPERF_PROPS=enable.idempotence=$mode ${RDPERF_PROPS:-}")
  if [ -n "${MSGS:-}" ]; then vars+=("MSGS_$SIZE=$MSGS"); fi
  out=$(env "${vars[@]}" bash "$repo/scripts/bench-single.sh") ||
    die "bench-single.sh failed (enable.idempotence=$mode)"
  # Row: "produce SIZEB pN  msgs msg/s MB/s CPU-s/GB cpu% ..." (the scenario name is 3 words).
  line=$(grep -E '^produce [0-9]+B p[0-9]+ ' <<<"$out" | tail -n 1)
  [ -n "$line" ] || die "no result row from bench-single.sh: $out"
  awk -v m="$mode" '{ print m, $5, $7 }' <<<"$line" >>"$rows"
  echo "bench-idempotence: run enable.idempotence=$mode: $line" >&2
}

for ((r = 1; r <= REPEAT; r++)); do
  one_run false
  one_run true
done

awk -v size="$SIZE" -v parts="$PARTS" -v rep="$REPEAT" '
  function median(mode, col,   n, i, j, t, v) {
    n = split(vals[mode, col], v, " ")
    for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] + 0 > t + 0; j--) v[j + 1] = v[j]; v[j + 1] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  { vals[$1, 2] = vals[$1, 2] " " $2; vals[$1, 3] = vals[$1, 3] " " $3 }
  END {
    pm = median("false", 2); pc = median("false", 3); im = median("true", 2); ic = median("true", 3)
    printf "\nproduce %sB p%s, acks=-1, median of %s run(s) each (rdperf, librdkafka)\n", size, parts, rep
    printf "%-24s %12s %10s\n", "enable.idempotence", "msg/s", "CPU-s/GB"
    printf "%-24s %12.0f %10.2f\n", "false", pm, pc
    printf "%-24s %12.0f %10.2f\n", "true", im, ic
    printf "throughput ratio true/false: %.3f (%+.1f%%); CPU-s/GB ratio: %.3f\n", im / pm, 100 * (im / pm - 1), ic / pc
  }' "$rows"
