#!/usr/bin/env bash
# Cluster throughput against the engine alone, in one go on this machine:
#
#   ./scripts/bench-cluster.sh [DIR] [RULES] [RUNS]
#
# Each run: `qala-bench DIR RULES 2 full` (the engine alone, 2 threads), then
# a fresh local cluster as deployed by default (TLS on both hops, one worker
# with 2 threads and sandboxed scan children, a new embedded store) scanning
# DIR with `qala-agent scan --no-cache`: both times, the ratio (engine time /
# cluster time) and the CPU seconds of agent, coordinator and worker. The
# middle of RUNS (default 3) runs is printed last. DIR and RULES default to
# those of scripts/bench.sh. (The test harness lifts the per-client upload
# quotas, 128 MiB/s by default, which one agent alone would otherwise hit.)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
RULES="${2:-tests/data/reversinglabs/yara}"
RUNS="${3:-3}"
# --bins: with --bin NAME, cargo builds only those binaries of every -p.
cargo build --release --bins -p qala-tests -p qala-worker -p qala-coordinator -p qala-agent >&2
DIR="$(scripts/bench-corpus.sh "${1:-}")"
echo "corpus: $DIR ($(du -sh "$DIR" | cut -f1), $(find "$DIR" -type f | wc -l) files); rules: $RULES"
# Warm the page cache so every run reads from memory.
cat $(find "$DIR" -type f) > /dev/null
"$CARGO_TARGET_DIR/release/qala-bench-cluster" "$DIR" "$RULES" "$RUNS"
