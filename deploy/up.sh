#!/usr/bin/env bash
# One command for a newcomer with podman: build what is missing (the
# release binaries, the base image, the images: deploy/build-images.sh)
# and bring the compose deployment up (Redis, two coordinators, three
# workers), then wait until both coordinators are ready and say how to
# scan. Extra arguments go to `podman-compose up -d` (--scale worker=4).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
command -v podman-compose >/dev/null ||
  python3 -m pip install --quiet podman-compose==1.6.0 2>/dev/null ||
  python3 -m pip install --quiet --break-system-packages podman-compose==1.6.0
deploy/build-images.sh
podman-compose -f deploy/compose.yaml up -d "$@" >/dev/null
port=${QALA_METRICS_PORT:-9300}
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
  [ $(( $(date +%s) - t0 )) -lt 1800 ] || { echo "up.sh: not ready: $(curl -s "http://127.0.0.1:$port/readyz")" >&2; exit 1; }
  sleep 1
done
echo "up.sh: ready in $(( $(date +%s) - t0 )) s: $(curl -s "http://127.0.0.1:$port/readyz")"
echo "scan:  ${CARGO_TARGET_DIR:-target}/release/qala-agent --server https://localhost:${QALA_PORT:-7000} --ca deploy/secrets/ca.pem --token-file deploy/secrets/agent.token scan DIR"
echo "stop:  podman-compose -f deploy/compose.yaml down"
