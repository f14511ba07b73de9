#!/usr/bin/env bash
# bench-compare.sh: two broker binaries measured side by side in one run with bench-single.sh.
# Rounds alternate the binaries (A, B, A, B, ...) so that a noisy neighbour hurts both alike; each
# round is one bench-single.sh run with REPEAT=1. Prints, per scenario, the median of each binary
# over the rounds, the ratio B/A of CPU-s/GB and of p99, and the fewest segment rolls of any run.
#
# Usage: scripts/bench-compare.sh BIN_A BIN_B [ROUNDS]
#   Every bench-single.sh variable passes through (SIZES, PARTITIONS, CONSUME, LATENCY, LAT_RATE,
#   LAT_MSGS, BROKER_SET, RDPERF, RDPERF_DIR, ...), e.g.:
#   SIZES="100 1024" PARTITIONS=1 LATENCY=0 scripts/bench-compare.sh old/strata new/strata 3
#   SIZES= LATENCY=1 BROKER_SET="log.segment.bytes=8388608" scripts/bench-compare.sh old new 3
#   DATA_PARENT=/dev/shm SIZES= BROKER_SET="log.segment.bytes=8388608" scripts/bench-compare.sh old new 3
set -euo pipefail
die() { echo "bench-compare: error: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: $0 BIN_A BIN_B [ROUNDS]"
a=$1 b=$2 rounds=${3:-3}
[ -x "$a" ] || die "$a is not an executable"
[ -x "$b" ] || die "$b is not an executable"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got '$rounds'"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$(mktemp -d "${TMPDIR:-/tmp}/strata-compare.XXXXXX")
trap 'rm -rf "$out"' EXIT

# One bench-single.sh table row: the scenario (may hold spaces), then ten numeric columns (msgs msg/s
# MB/s CPU-s/GB cpu% p50 p99 p999 max rolls).
rows() {
  awk 'NF >= 11 && $(NF-9) ~ /^[0-9]+$/ {
         s = $1; for (i = 2; i <= NF - 10; i++) s = s " " $i
         printf "%s\t%s\t%s\t%s\t%s\t%s\n", s, $(NF-6), $(NF-5), $(NF-3), $(NF-8), $NF }' "$1"
}

for ((r = 1; r <= rounds; r++)); do
  for which in A B; do
    bin=$a; [ "$which" = B ] && bin=$b
    echo "bench-compare: round $r/$rounds, binary $which ($bin)" >&2
    STRATA_BIN=$bin REPEAT=1 "$here/bench-single.sh" >"$out/$which.$r.txt"
    rows "$out/$which.$r.txt" | sed "s/^/$which\t/" >>"$out/all.tsv"
  done
done

# all.tsv: binary scenario cpu_s_per_gb cpu% p99 msg/s rolls
echo
printf '%-40s %10s %10s %7s %9s %9s %7s %10s %10s %6s\n' scenario "CPU/GB A" "CPU/GB B" "B/A" "p99 A" "p99 B" "B/A" "msg/s A" "msg/s B" "rolls"
awk -F'\t' '
  function median(list,   n, v, i, j, t) {
    n = split(list, v, " ")
    for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] + 0 > t + 0; j--) v[j + 1] = v[j]; v[j + 1] = t }
    if (n == 0 || v[1] == "-") return "-"
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  function ratio(x, y) { return (x == "-" || y == "-" || x + 0 == 0) ? "-" : sprintf("%.2f", y / x) }
  { if (!($2 in seen)) { seen[$2] = 1; order[++k] = $2 }
    cpu[$1, $2] = cpu[$1, $2] " " $3; p99[$1, $2] = p99[$1, $2] " " $5; mps[$1, $2] = mps[$1, $2] " " $6
    if (!(($2) in rolls) || $7 + 0 < rolls[$2] + 0) rolls[$2] = $7 }
  END { for (i = 1; i <= k; i++) { s = order[i]
    ca = median(cpu["A", s]); cb = median(cpu["B", s]); pa = median(p99["A", s]); pb = median(p99["B", s])
    printf "%-40s %10s %10s %7s %9s %9s %7s %10.0f %10.0f %6s\n", s, ca, cb, ratio(ca, cb), pa, pb, ratio(pa, pb),
      median(mps["A", s]), median(mps["B", s]), rolls[s] } }
' "$out/all.tsv"
echo
echo "Medians over $rounds alternating round(s) per binary. A=$a B=$b"
