#!/usr/bin/env bash
# Detection depth against ClamAV's own yardstick: Debian's clamav-testfiles
# hide the harmless test program clam.exe in 44 containers, encodings and
# packers. This scans them through a local cluster (coordinator, two
# workers, embedded store, TLS, sandboxed scans) with one rule that matches
# clam.exe only byte for byte (tests/coverage/clam-exe.yar), and prints how
# many of the files it was found in, and the misses. (ClamAV finds all of
# them, as issue 11 reports; not measured by this script.)
#
#   ./scripts/coverage.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
testfiles=/usr/share/clamav-testfiles
if [ ! -e "$testfiles/clam.exe" ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y clamav-testfiles >/dev/null
fi
cargo build --release --workspace --bins
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/files"
for f in "$testfiles"/*; do
    [ "$(basename "$f")" = clam.exe ] || cp "$f" "$work/files/"
done
QALA_DEMO_RULES=tests/coverage "$CARGO_TARGET_DIR/release/qala-demo" "$work/files" >"$work/out" 2>&1 || true
total=$(ls "$work/files" | wc -l)
found=0
misses=()
for f in "$work"/files/*; do
    if grep -qF "$f: malicious: clam-exe/clam_exe" "$work/out"; then
        found=$((found + 1))
    else
        misses+=("$(basename "$f")")
    fi
done
grep -E '^scanned ' "$work/out" || { cat "$work/out"; exit 1; }
echo "clam.exe found in $found/$total of ClamAV's test files"
[ ${#misses[@]} -eq 0 ] || echo "missed: ${misses[*]}"
