#!/usr/bin/env bash
# Memory of a one-shot scan of a large tree through a local cluster as
# deployed by default (embedded store, TLS, one worker of 2 threads):
#
#   ./scripts/footprint-scan.sh [DIR] [WORKERS]
#
# DIR defaults to /usr. Prints the time, files/s and the peak resident
# memory of the agent, the coordinator and each worker, for the first scan
# and the rescan. The agent's memory should not grow with the tree: compare
# a part of it with the whole (e.g. /usr/share and /usr).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bins -p qala-tests -p qala-worker -p qala-coordinator -p qala-agent >&2
DIR="${1:-/usr}"
echo "tree: $DIR ($(du -sh "$DIR" 2>/dev/null | cut -f1), $(find "$DIR" -type f 2>/dev/null | wc -l) files)"
"$CARGO_TARGET_DIR/release/qala-scan-footprint" "$DIR" "${2:-1}"
