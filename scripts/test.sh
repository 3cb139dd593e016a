#!/usr/bin/env bash
# Run Qala's whole test suite: unit tests, the store conformance suite and the
# end-to-end tests (real coordinator, worker, agent and redis-server processes).
# Installs redis-server with apt-get when it is missing and we are root.
#
#   ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (needed by the Redis store tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is required by the tests: install it (e.g. sudo apt-get install redis-server)" >&2
    exit 2
  fi
fi
exec cargo test --release --workspace "$@"
