#!/usr/bin/env bash
# The benchmarks' default corpus: DIR if given, else a mixed tree built once
# under $CARGO_TARGET_DIR/bench-corpus from this machine's files (shared
# libraries and executables, zips and tar.gz of documentation, plain text).
# Prints the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# Only the directory goes to stdout.
exec 3>&1 1>&2
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
echo "$DIR" >&3
