#!/usr/bin/env bash
# Engine throughput against libyara on the same files and rules.
#
#   ./scripts/bench.sh [DIR] [RULES] [THREADS]
#
# DIR defaults to a mixed corpus built under target/bench-corpus from this
# machine's files (shared libraries and executables, zips and tar.gz of
# documentation, plain text); RULES to the ReversingLabs set in tests/data.
# Runs `qala-bench` (the engine alone: hashing, type detection, unpacking,
# executable reports, yara-x) and `yara -r -p THREADS` (Debian's libyara CLI,
# rules precompiled with yarac) and prints both and the ratio of MB/s. With
# the yara-x CLI on the PATH (`cargo install yara-x-cli` of the yara-x
# version in Cargo.lock), also `yr scan` of the rules precompiled by `yr
# compile`, timed as a process less its time on an empty directory (process
# start and rule loading), against `qala-bench ... root` (the rules on each
# file as it is, nothing unpacked; qala-bench's own timer starts with the
# rules loaded).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
RULES="${2:-tests/data/reversinglabs/yara}"
THREADS="${3:-2}"
command -v yara >/dev/null || { echo "install libyara's CLI: apt-get install yara" >&2; exit 2; }
cargo build --release -p qala-tests --bin qala-bench -p qala-worker --bin qala-worker

DIR="$(scripts/bench-corpus.sh "${1:-}")"
echo "corpus: $DIR ($(du -sh "$DIR" | cut -f1), $(find "$DIR" -type f | wc -l) files); rules: $RULES; threads: $THREADS"

COMPILED="$CARGO_TARGET_DIR/bench-rules.yarc"
find "$RULES" -name '*.yar*' | sort > "$CARGO_TARGET_DIR/bench-rules.list"
yarac $(cat "$CARGO_TARGET_DIR/bench-rules.list") "$COMPILED" 2>/dev/null

# Warm the page cache so both read from memory.
cat $(find "$DIR" -type f) > /dev/null

BYTES=$(find "$DIR" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
FILES=$(find "$DIR" -type f | wc -l)
Q=$("$CARGO_TARGET_DIR/release/qala-bench" "$DIR" "$RULES" "$THREADS" 2>/dev/null)
echo "$Q"
# The same scans as a worker runs them: in sandboxed scan children.
S=$("$CARGO_TARGET_DIR/release/qala-bench" "$DIR" "$RULES" "$THREADS" sandboxed 2>/dev/null)
echo "$S"
python3 - "$Q" "$S" <<'PY'
import re, sys
q, s = (float(re.search(r'([\d.]+) MB/s', x).group(1)) for x in sys.argv[1:3])
print(f"ratio sandboxed / in-process (MB/s): {s/q:.2f}x")
PY
Y0=$(date +%s.%N)
yara -C -r -p "$THREADS" "$COMPILED" "$DIR" > /dev/null 2>&1 || true
Y1=$(date +%s.%N)
python3 - "$Q" "$Y0" "$Y1" "$BYTES" "$FILES" "$THREADS" <<'PY'
import re, sys
q, y0, y1, nbytes, nfiles, threads = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
ysecs = y1 - y0
ymbs = nbytes / 1e6 / ysecs
qmbs = float(re.search(r'([\d.]+) MB/s', q).group(1))
print(f"libyara: {nfiles} files, {nbytes/1e6:.1f} MB, {threads} threads: {ysecs:.2f}s, {ymbs:.1f} MB/s, {nfiles/ysecs:.0f} files/s")
print(f"ratio qala-engine / libyara (MB/s): {qmbs/ymbs:.2f}x")
PY
if command -v yr >/dev/null; then
    YRC="$CARGO_TARGET_DIR/bench-rules.yrc"
    yr compile $(cat "$CARGO_TARGET_DIR/bench-rules.list") -o "$YRC" >/dev/null 2>&1
    EMPTY="$(mktemp -d)"
    R=$("$CARGO_TARGET_DIR/release/qala-bench" "$DIR" "$RULES" "$THREADS" root 2>/dev/null)
    echo "$R"
    T0=$(date +%s.%N); yr scan -r -p "$THREADS" -C "$YRC" "$EMPTY" >/dev/null 2>&1 || true
    T1=$(date +%s.%N); yr scan -r -p "$THREADS" -C "$YRC" "$DIR" >/dev/null 2>&1 || true
    T2=$(date +%s.%N)
    rmdir "$EMPTY"
    python3 - "$R" "$T0" "$T1" "$T2" "$BYTES" "$FILES" "$THREADS" "$(yr --version)" <<'PY'
import re, sys
r, t0, t1, t2, nbytes, nfiles, threads, version = sys.argv[1], *map(float, sys.argv[2:5]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7], sys.argv[8]
start, whole = t1 - t0, t2 - t1
scan = max(whole - start, 1e-9)
rmbs = float(re.search(r'([\d.]+) MB/s', r).group(1))
print(f"{version}: {nfiles} files, {threads} threads: {whole:.2f}s as a process, {start:.2f}s of it start and rule loading (an empty directory): {scan:.2f}s, {nbytes/1e6/scan:.1f} MB/s")
print(f"ratio qala-engine root / yr scan (MB/s): {rmbs/(nbytes/1e6/scan):.2f}x")
PY
fi
