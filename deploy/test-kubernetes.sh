#!/usr/bin/env bash
# The Kubernetes manifests and the host install, tried for real (CI runs
# this after deploy/test-compose.sh has built the images):
#   - prepare.sh, then the base and the podman overlay rendered with
#     `kubectl kustomize` and validated with `kubernetes-validate --strict`
#     (and the KEDA ScaledObject, which it only warns about);
#   - the overlay run with `podman kube play` (Redis, coordinator, worker
#     with its probes, Secrets, the rules ConfigMap), ready by /readyz, and
#     a tree with EICAR in a zip scanned through it from this host; the
#     rules ConfigMap changed in place and picked up without a restart;
#   - deploy/install.sh into a staging root, and `systemd-analyze verify`
#     on every unit in deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
step() { echo "-- $* ($(( $(date +%s) - t0 )) s)"; }
target=${CARGO_TARGET_DIR:-target}
bin=$(realpath "$target/release")
command -v kubernetes-validate >/dev/null || python3 -m pip install --quiet kubernetes-validate==1.37.0 2>/dev/null ||
  python3 -m pip install --quiet --break-system-packages kubernetes-validate==1.37.0
if ! command -v kubectl >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
fi
work=$(mktemp -d)
net=qala-kube-$$
cleanup() {
  status=$?
  if [ $status -ne 0 ]; then
    for c in $(podman ps -a --filter "label=io.kubernetes.pod.name" --format '{{.Names}}' 2>/dev/null); do
      echo "--- $c"; podman logs --tail 30 "$c" 2>&1 || true
    done
  fi
  [ -e "$work/play.yaml" ] && podman kube down "$work/play.yaml" >/dev/null 2>&1 || true
  # kube play keeps each ConfigMap as a volume of its name.
  podman volume rm -f qala-rules qala-coordinator-tls qala-store qala-tokens qala-worker-enroll qala-redis >/dev/null 2>&1 || true
  podman network rm -f "$net" >/dev/null 2>&1 || true
  rm -rf "$work" deploy/kubernetes/base/generated deploy/kubernetes/podman/generated
  exit $status
}
trap cleanup EXIT

QALA_FRESH=1 QALA_COORDINATOR_BIN="$bin/qala-coordinator" deploy/kubernetes/prepare.sh
kubectl kustomize deploy/kubernetes/base > "$work/base.yaml"
kubectl kustomize deploy/kubernetes/podman > "$work/play.yaml"
for f in base play; do
  echo "$f: $(grep -c '^kind:' "$work/$f.yaml") objects: $(grep '^kind:' "$work/$f.yaml" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}')"
  kubernetes-validate --quiet --strict "$work/$f.yaml"
done
kubernetes-validate --strict deploy/kubernetes/keda/scaledobject.yaml 2>&1 | sed 's/^/keda: /' | head -3
step "rendered and validated"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api=$(free_port) metrics=$(free_port)
sed -i "s/hostPort: 17000/hostPort: $api/; s/hostPort: 19300/hostPort: $metrics/" "$work/play.yaml"
podman network create "$net" >/dev/null
podman kube play --network "$net" "$work/play.yaml" >/dev/null
step "kube play"
ready() { curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null; }
until=$(( $(date +%s) + 180 ))
until ready; do
  [ "$(date +%s)" -lt "$until" ] || { echo "the coordinator never got ready: $(curl -s "http://127.0.0.1:$metrics/readyz")" >&2; exit 1; }
  sleep 1
done
echo "readyz: $(curl -s "http://127.0.0.1:$metrics/readyz")"
step "coordinator ready (a worker holding the rules)"

mkdir -p "$work/tree"
python3 - "$work/tree" <<'PY'
import sys, zipfile
eicar = b'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
with zipfile.ZipFile(sys.argv[1] + "/invoice.zip", "w") as z:
    z.writestr("docs/invoice.com", eicar)
open(sys.argv[1] + "/notes.txt", "w").write("nothing to see\n")
PY
g=deploy/kubernetes/base/generated
set +e
QALA_TOKEN_FILE=$g/tokens/agent.token "$bin/qala-agent" --server "https://localhost:$api" --ca "$g/pki/ca.pem" \
  scan --json --no-progress --no-cache --cache "$work/hashes" "$work/tree" > "$work/scan.json"
code=$?
set -e
cat "$work/scan.json"
[ "$code" = 1 ] && grep '"invoice.zip' "$work/scan.json" | grep -q '"verdict":"malicious"' ||
  { echo "EICAR in the zip not detected through kube play (exit $code)" >&2; exit 1; }
step "EICAR in a zip detected through the pods"

# The rules ConfigMap changed in place, as the kubelet does it (kube play
# keeps a ConfigMap as a volume of that name; it has no update command, so
# the new key is written into the volume, renamed into place at once):
# the coordinator compiles it without a restart, and a file only the new
# rule matches is detected.
rules_vol=$(podman volume inspect qala-rules --format '{{.Mountpoint}}')
before=$(curl -s "http://127.0.0.1:$metrics/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ruleset_id"])')
printf 'rule Qala_ConfigMap_Update {\n  strings:\n    $a = "qala-configmap-update-marker"\n  condition:\n    $a\n}\n' > "$rules_vol/.new.yar.tmp"
mv "$rules_vol/.new.yar.tmp" "$rules_vol/configmap_update.yar"
changed() { [ "$(curl -s "http://127.0.0.1:$metrics/readyz" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["ruleset_id"] if d["ready"] else "")')" != "$before" ]; }
until=$(( $(date +%s) + 60 ))
until changed; do
  [ "$(date +%s)" -lt "$until" ] || { echo "the rules change was not picked up" >&2; exit 1; }
  sleep 0.5
done
printf 'qala-configmap-update-marker\n' > "$work/tree/marker.txt"
set +e
QALA_TOKEN_FILE=$g/tokens/agent.token "$bin/qala-agent" --server "https://localhost:$api" --ca "$g/pki/ca.pem" \
  scan --json --no-progress --no-cache --cache "$work/hashes" "$work/tree/marker.txt" > "$work/marker.json"
set -e
grep -q '"rule":"Qala_ConfigMap_Update"' "$work/marker.json" ||
  { cat "$work/marker.json"; echo "the new rule did not match" >&2; exit 1; }
step "rules ConfigMap changed in place: new ruleset without a restart, the new rule matches"
podman kube down "$work/play.yaml" >/dev/null
podman volume rm -f qala-rules qala-coordinator-tls qala-store qala-tokens qala-worker-enroll qala-redis >/dev/null 2>&1 || true

# Hosts without containers: install.sh into a staging root; every unit verified.
deploy/install.sh --root "$work/root" --bin-dir "$bin" --host scan.example.org >/dev/null
for u in "$work"/root/etc/systemd/system/*.service deploy/*.service deploy/agent/*.service; do
  sed "s#/usr/local/bin/#$bin/#g; s#/usr/bin/qala-#$bin/qala-#g" "$u" > "$work/$(basename "$u")"
  systemd-analyze verify "$work/$(basename "$u")"
  echo "verified $u"
done
step "install.sh and systemd-analyze verify"
