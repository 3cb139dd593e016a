#!/usr/bin/env bash
# The compose deployment, tried as a platform team would (CI runs this):
# build the images, `podman-compose up -d` (Redis with an ACL user over
# TLS, two coordinators, three workers enrolling with a join token), scan a
# tree with EICAR in a zip from this host's agent, scale to four workers
# and see all four registered at both coordinators, kill a worker
# container in the middle of a scan and lose no verdict, start it again and
# see it back under its id, take it all down. Prints each step's time.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
step() { echo "-- $* ($(( $(date +%s) - t0 )) s)"; }

need=()
command -v podman-compose >/dev/null || need+=(podman-compose==1.6.0)
if [ ${#need[@]} -gt 0 ]; then
  python3 -m pip install --quiet "${need[@]}" 2>/dev/null || python3 -m pip install --quiet --break-system-packages "${need[@]}"
fi
target=${CARGO_TARGET_DIR:-target}
# The workspace's build (what the tests ran; a per-package build would
# unify features differently and build again).
cargo build --release --workspace --bins -q
agent=$(realpath "$target/release/qala-agent")
QALA_BIN_DIR=$(realpath "$target/release") deploy/build-images.sh
step "images built"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export QALA_PORT=$(free_port) QALA_PORT_2=$(free_port) QALA_HTTP_PORT=$(free_port) QALA_METRICS_PORT=$(free_port)
project=qala-ci-$$
compose() { podman-compose -p "$project" -f deploy/compose.yaml "$@"; }
work=$(mktemp -d)
cleanup() {
  status=$?
  if [ $status -ne 0 ]; then
    echo "== the deployment's logs (failed with $status)"
    for c in $(podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}'); do
      echo "--- $c"; podman logs --tail 30 "$c" 2>&1 || true
    done
  fi
  [ -z "${QALA_KEEP_LOGS:-}" ] || for c in $(podman ps -a --filter "label=io.podman.compose.project=$project" --format "{{.Names}}"); do podman logs "$c" > "$QALA_KEEP_LOGS.$c" 2>&1; done
  # Containers first, with their anonymous volumes (spool), which down -v
  # leaves; then down for the named volumes, the network and the pod.
  podman ps -aq --filter "label=io.podman.compose.project=$project" | xargs -r podman rm -f -v >/dev/null 2>&1 || true
  compose down -v -t 5 >/dev/null 2>&1 || true
  podman volume ls -q --filter "label=io.podman.compose.project=$project" | xargs -r podman volume rm -f >/dev/null 2>&1 || true
  rm -rf "$work" deploy/secrets
  exit $status
}
trap cleanup EXIT
rm -rf deploy/secrets
compose down -v >/dev/null 2>&1 || true
compose up -d >/dev/null 2>&1
step "up -d"

readyz() { curl -s "http://127.0.0.1:$QALA_METRICS_PORT/readyz" || true; }
wait_for() { # SECONDS WHAT COMMAND...
  local until=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@"; do
    if [ "$(date +%s)" -ge "$until" ]; then echo "timed out waiting for $what" >&2; return 1; fi
    sleep 1
  done
}
workers_at() { # PORT: live workers holding the rules, as that coordinator sees them
  QALA_TOKEN_FILE=deploy/secrets/admin.token "$agent" --server "https://localhost:$1" --ca deploy/secrets/ca.pem \
    status --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
rs = s["rules"]["ruleset_id"]
print(sum(1 for w in s["workers"] if w["ruleset_id"] == rs))' 2>/dev/null || echo 0
}
has_workers() { [ "$(workers_at "$QALA_PORT")" = "$1" ] && [ "$(workers_at "$QALA_PORT_2")" = "$1" ]; }
wait_for 180 "three workers at both coordinators" has_workers 3
echo "readyz: $(readyz)"
step "three workers registered at both coordinators"

scan() { # DIR... : JSON lines
  QALA_TOKEN_FILE=deploy/secrets/agent.token "$agent" --server "https://localhost:$QALA_PORT" --ca deploy/secrets/ca.pem \
    scan --json --no-progress --no-cache --cache "$work/hashes" "$@"
}
mkdir -p "$work/tree"
python3 - "$work/tree" <<'PY'
import sys, zipfile
eicar = b'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
with zipfile.ZipFile(sys.argv[1] + "/invoice.zip", "w") as z:
    z.writestr("docs/invoice.com", eicar)
open(sys.argv[1] + "/notes.txt", "w").write("nothing to see\n")
PY
set +e
scan "$work/tree" > "$work/first.json"
code=$?
set -e
cat "$work/first.json"
[ "$code" = 1 ] || { echo "expected exit 1 (a detection), got $code" >&2; exit 1; }
grep '"invoice.zip' "$work/first.json" | grep -q '"verdict":"malicious"' || { echo "EICAR in the zip not detected" >&2; exit 1; }
step "EICAR in a zip detected from the host's agent"

compose up -d --scale worker=4 >/dev/null 2>&1
wait_for 180 "four workers at both coordinators" has_workers 4
step "scaled to four workers, all registered at both coordinators"

# A worker container killed mid-scan: every file still gets its verdict.
mkdir -p "$work/many"
python3 - "$work/many" <<'PY'
import os, sys
for i in range(800):
    with open(f"{sys.argv[1]}/f{i:03}.bin", "wb") as f:
        f.write(os.urandom(256 * 1024))
PY
victim=$(podman ps --filter "label=io.podman.compose.project=$project" --filter "label=com.docker.compose.service=worker" --format '{{.Names}}' | head -1)
victim_id=$(podman inspect -f '{{.Config.Hostname}}' "$victim")
uploads() { curl -s "http://127.0.0.1:$QALA_METRICS_PORT/metrics" | awk '$1 == "qala_uploads_total" {print int($2)}'; }
before=$(uploads)
scan "$work/many" > "$work/many.json" &
scan_pid=$!
# Killed once a hundred of the 800 files are uploaded: mid-scan.
mid() { [ "$(uploads)" -ge $((before + 100)) ]; }
until mid; do kill -0 $scan_pid 2>/dev/null || break; sleep 0.1; done
kill -0 $scan_pid 2>/dev/null || { echo "the scan ended before the worker was killed" >&2; exit 1; }
podman kill "$victim" >/dev/null
echo "killed $victim after $(( $(uploads) - before )) of 800 uploads"
set +e
wait $scan_pid
code=$?
set -e
lines=$(grep -c '"path"' "$work/many.json" || true)
clean=$(grep -c '"verdict":"clean"' "$work/many.json" || true)
echo "scan with $victim ($victim_id) killed: exit $code, $lines verdicts, $clean clean"
[ "$code" = 0 ] && [ "$lines" = 800 ] && [ "$clean" = 800 ] || { echo "verdicts lost" >&2; exit 1; }
step "a worker killed mid-scan: 800 of 800 verdicts"

podman start "$victim" >/dev/null
back() { QALA_TOKEN_FILE=deploy/secrets/admin.token "$agent" --server "https://localhost:$QALA_PORT_2" --ca deploy/secrets/ca.pem status --json 2>/dev/null | grep -q "\"worker_id\":\"$victim_id\""; }
wait_for 120 "$victim back under $victim_id" back
wait_for 120 "four workers again" has_workers 4
step "the restarted container is back under its id ($victim_id)"
podman ps -aq --filter "label=io.podman.compose.project=$project" | xargs -r podman stop -t 10 >/dev/null 2>&1
step "down"
