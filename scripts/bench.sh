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
# rules precompiled with yarac) and prints both and the ratio of MB/s.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
RULES="${2:-tests/data/reversinglabs/yara}"
THREADS="${3:-2}"
command -v yara >/dev/null || { echo "install libyara's CLI: apt-get install yara" >&2; exit 2; }
cargo build --release -p qala-tests --bin qala-bench -p qala-worker --bin qala-worker

DIR="${1:-}"
if [ -z "$DIR" ]; then
  DIR="$CARGO_TARGET_DIR/bench-corpus"
  if [ ! -f "$DIR.complete" ]; then
    rm -rf "$DIR"
    mkdir -p "$DIR/bin" "$DIR/text" "$DIR/archives"
    # Best effort: `head` closing a pipe must not end the script.
    set +e +o pipefail
    # Executables: ELF shared libraries and programs (about 300 MB).
    find /usr/lib/x86_64-linux-gnu /usr/bin -maxdepth 1 -type f -size +20k -size -40M 2>/dev/null \
      | head -n 1200 | while read -r f; do cp "$f" "$DIR/bin/" 2>/dev/null || true; done
    # Text: licences, docs, man pages decompressed.
    cp -r /usr/share/common-licenses "$DIR/text/" 2>/dev/null || true
    find /usr/share/doc -name '*.gz' -size -2M 2>/dev/null | head -n 400 | while read -r f; do
      gzip -dc "$f" > "$DIR/text/$(echo "$f" | tr / _).txt" 2>/dev/null || true; done
    # Archives: tar.gz and zip of documentation trees.
    i=0; for d in /usr/share/doc/*/; do i=$((i+1)); [ $i -gt 150 ] && break
      tar -czf "$DIR/archives/doc$i.tar.gz" -C "$d" . 2>/dev/null || true; done
    python3 - "$DIR/archives" <<'PY' 2>/dev/null || true
import os, sys, zipfile
out = sys.argv[1]
for i, root in enumerate(sorted(os.listdir('/usr/share/doc'))[150:300]):
    with zipfile.ZipFile(f'{out}/doc{i}.zip', 'w', zipfile.ZIP_DEFLATED) as z:
        for base, _, files in os.walk(os.path.join('/usr/share/doc', root)):
            for f in files:
                p = os.path.join(base, f)
                if os.path.isfile(p): z.write(p, os.path.relpath(p, '/usr/share/doc'))
PY
    set -e -o pipefail
    touch "$DIR.complete"
  fi
fi
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
