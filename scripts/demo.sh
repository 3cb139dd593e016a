#!/usr/bin/env bash
# Build Qala and run its main job: a local cluster (coordinator + two workers,
# embedded verdict store, bundled rules) that scans PATH, or a generated demo
# folder when no PATH is given, and prints a verdict per file.
#
#   ./scripts/demo.sh [PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --workspace --bins
exec "$CARGO_TARGET_DIR/release/qala-demo" "$@"
