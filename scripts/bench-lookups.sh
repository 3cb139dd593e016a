#!/usr/bin/env bash
# Lookups/s before and after: runs qala-bench-lookups against a baseline
# build (QALA_BASELINE_BIN: a directory with that build's qala-coordinator
# and qala-worker) and this tree's build, interleaved, the same client
# (this tree's qala-bench-lookups) driving both,
# ROUNDS times per store, and prints each run and the medians' ratios.
# FILL verdicts (default 200,000) are written into the store first: a
# realistic keyspace, the same on both sides.
#   QALA_BASELINE_BIN=/var/tmp/qala-baseline scripts/bench-lookups.sh [embedded|redis]...
set -euo pipefail
cd "$(dirname "$0")/.."
: "${QALA_BASELINE_BIN:?set QALA_BASELINE_BIN to a directory holding the baseline build}"
ROUNDS=${ROUNDS:-5}
SECONDS_PER=${SECONDS_PER:-10}
FILL=${FILL:-200000}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --workspace --bins >&2
stores=("$@")
[ ${#stores[@]} -gt 0 ] || stores=(embedded redis)
out=$(mktemp)
for store in "${stores[@]}"; do
  for r in $(seq "$ROUNDS"); do
    for side in baseline current; do
      if [ "$side" = baseline ]; then dir=$QALA_BASELINE_BIN; else dir=$(realpath "$target/release"); fi
      QALA_BIN_DIR=$dir "$target/release/qala-bench-lookups" --store "$store" --seconds "$SECONDS_PER" --fill "$FILL" |
        awk -v side="$side" -F'|' '/hits|misses|first-seen/ {gsub(/ /,"",$3); gsub(/ /,"",$8); print side, $2, $3, $8}' |
        tee -a "$out"
    done
  done
done
echo
echo "| store | mode | baseline digests/s (median) | current (median) | ratio |"
echo "|---|---|---|---|---|"
python3 - "$out" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, store, mode, rate = line.split()
    runs[(store, mode, side)].append(float(rate))
for (store, mode) in sorted({(k[0], k[1]) for k in runs}):
    b, c = statistics.median(runs[(store, mode, 'baseline')]), statistics.median(runs[(store, mode, 'current')])
    print(f"| {store} | {mode} | {b:.0f} | {c:.0f} | {c / b:.3f} |")
PY
rm -f "$out"
