#!/usr/bin/env bash
# Make what the manifests need and no manifest may hold in git, into
# deploy/kubernetes/base/generated/ (git-ignored):
#   pki/                  the cluster's CA (its root key: keep it offline
#                         once the deployment runs), the coordinators' and
#                         Redis's certificates
#   secrets.yaml          Secrets qala-coordinator-tls, qala-redis,
#                         qala-store, qala-tokens, qala-worker-enroll
#   rules.yaml            ConfigMap qala-rules from the rules directory
#   tokens/               the tokens (admin, agent-enroll, agent: one shared
#                         agent token for agents that do not enroll, metrics),
#                         registered in the store by the coordinators' init
#                         container
# (The "-pod-0" names are what `podman kube play` names the pods of the
# podman overlay, which has no Services.)
# Run again: the PKI and tokens are kept (QALA_FRESH=1 makes new ones);
# the rules ConfigMap is made anew.
#
#   deploy/kubernetes/prepare.sh [RULES_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/base/generated
rules=${1:-$here/../../rules}
ns=${QALA_NAMESPACE:-qala}
coordinator=${QALA_COORDINATOR_BIN:-$(command -v qala-coordinator || echo "${CARGO_TARGET_DIR:-$here/../../target}/release/qala-coordinator")}
[ -x "$coordinator" ] || { echo "prepare.sh: no qala-coordinator (build it, or set QALA_COORDINATOR_BIN)" >&2; exit 2; }
command -v kubectl >/dev/null || { echo "prepare.sh: kubectl is needed (Debian: kubernetes-client)" >&2; exit 2; }
[ "${QALA_FRESH:-0}" = 1 ] && rm -rf "$out"
mkdir -p "$out/tokens"
chmod 0700 "$out"
umask 077
if [ ! -e "$out/pki/ca.pem" ]; then
  "$coordinator" pki init "$out/pki" >/dev/null
  svc=qala-coordinator
  "$coordinator" pki coordinator "$out/pki" coordinator --host "$svc" --host "$svc.$ns.svc" \
    --host "$svc.$ns.svc.cluster.local" --host "$svc-pod-0" --host localhost --host 127.0.0.1 >/dev/null
  "$coordinator" pki coordinator "$out/pki" redis --host qala-redis --host "qala-redis.$ns.svc" \
    --host "qala-redis.$ns.svc.cluster.local" --host "qala-redis-0.qala-redis.$ns.svc.cluster.local" \
    --host qala-redis-pod-0 \
    --host localhost --host 127.0.0.1 >/dev/null
fi
token() { [ -s "$out/tokens/$1" ] || printf 'qala_%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$out/tokens/$1"; }
for t in worker-enroll.token admin.token agent-enroll.token agent.token metrics.token redis.password; do token "$t"; done
password=$(cat "$out/tokens/redis.password")
printf 'user default off\nuser qala on >%s ~qala:* &* +@all -@dangerous +info\n' "$password" > "$out/tokens/redis.acl"

c=$out/pki/coordinators/coordinator
r=$out/pki/coordinators/redis
secret() { kubectl create secret generic "$@" --dry-run=client -o yaml; }
{
  secret qala-coordinator-tls --from-file="$c/ca.pem" --from-file="$c/coordinator.pem" \
    --from-file="$c/coordinator-key.pem" --from-file="$c/issuing-ca.pem" --from-file="$c/issuing-ca-key.pem" \
    --from-file="$c/crl.pem"
  echo ---
  secret qala-redis --from-file=ca.pem="$r/ca.pem" --from-file=redis.pem="$r/coordinator.pem" \
    --from-file=redis-key.pem="$r/coordinator-key.pem" --from-file=redis.acl="$out/tokens/redis.acl"
  echo ---
  secret qala-store --from-file=password="$out/tokens/redis.password"
  echo ---
  secret qala-tokens --from-file="$out/tokens/worker-enroll.token" --from-file="$out/tokens/admin.token" \
    --from-file="$out/tokens/agent-enroll.token" --from-file="$out/tokens/agent.token" \
    --from-file="$out/tokens/metrics.token"
  echo ---
  secret qala-worker-enroll --from-file="$out/tokens/worker-enroll.token" --from-file=ca.pem="$c/ca.pem"
} > "$out/secrets.yaml"
kubectl create configmap qala-rules --from-file="$rules" --dry-run=client -o yaml > "$out/rules.yaml"
# For the podman overlay: podman 4.3's kube play mounts a Secret's data
# still base64-encoded, so there the same files come as ConfigMaps.
mkdir -p "$here/podman/generated"
sed 's/^kind: Secret$/kind: ConfigMap/; /^type: Opaque$/d' "$out/secrets.yaml" |
  python3 -c '
import base64, sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
for d in docs:
    d["data"] = {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
yaml.safe_dump_all(docs, sys.stdout)' > "$here/podman/generated/secrets-as-configmaps.yaml"
echo "prepare.sh: $out (secrets.yaml, rules.yaml from $rules; the CA's key in $out/pki: keep it safe)"
