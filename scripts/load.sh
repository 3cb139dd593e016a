#!/usr/bin/env bash
# Load test: a local cluster with 1, 2 and 4 workers in turn, N concurrent
# Scan streams of generated files through the coordinator on loopback.
#
#   ./scripts/load.sh [WORKERS...] [--streams N] [--files N] [--size BYTES]
#
# Prints a Markdown table: files/s, MB/s, p50/p99 verdict latency, peak RSS
# of the coordinator and of the largest worker.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bins -p qala-coordinator -p qala-worker -p qala-agent -p qala-tests >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB" >&2
exec "$CARGO_TARGET_DIR/release/qala-load" "$@"
