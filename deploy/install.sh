#!/usr/bin/env bash
# Install Qala on a host without containers, as systemd services:
#   the user "qala" (systemd-sysusers, else useradd), the binaries in
#   /usr/local/bin, the hardened units in /etc/systemd/system, /etc/qala
#   (rules, PKI), /var/lib/qala; on the first run of a coordinator, the
#   cluster's PKI (its root key left in /etc/qala/pki-root: move it
#   offline) and an admin token (/etc/qala/admin.token, root only); a
#   worker on the coordinator's host gets its certificate from that PKI.
# Running it again keeps the PKI, the token and the rules; binaries and
# units are replaced (stop the services first when upgrading: coordinator
# and workers of one engine version together).
#
#   deploy/install.sh [--role coordinator|worker|all] [--bin-dir DIR]
#                     [--rules DIR] [--host NAME] [--root DIR] [--no-start]
# --root DIR installs into DIR (a staging tree: no users, no systemctl).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
role=all
bin_dir=${CARGO_TARGET_DIR:-$here/../target}/release
rules=$here/../rules
host=$(hostname -f 2>/dev/null || hostname)
root=
start=1
while [ $# -gt 0 ]; do
  case $1 in
    --role) role=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --rules) rules=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --root) root=$2; start=0; shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case $role in coordinator|worker|all) ;; *) echo "install.sh: --role is coordinator, worker or all" >&2; exit 2 ;; esac
[ -n "$root" ] || [ "$(id -u)" = 0 ] || { echo "install.sh: run as root (or with --root DIR)" >&2; exit 2; }
bins=(qala-coordinator)
[ "$role" = coordinator ] || bins+=(qala-worker)
for b in "${bins[@]}"; do
  [ -x "$bin_dir/$b" ] || { echo "install.sh: $bin_dir/$b missing (cargo build --release, or --bin-dir)" >&2; exit 2; }
done
R=${root%/}
say() { echo "install.sh: $*"; }

install -d -m 0755 "$R/usr/local/bin" "$R/etc/systemd/system" "$R/etc/sysusers.d" "$R/etc/qala"
for b in "${bins[@]}"; do install -m 0755 "$bin_dir/$b" "$R/usr/local/bin/$b"; done
install -m 0644 "$here/qala.sysusers.conf" "$R/etc/sysusers.d/qala.conf"
if [ -z "$R" ]; then
  if command -v systemd-sysusers >/dev/null; then systemd-sysusers /etc/sysusers.d/qala.conf
  elif ! id qala >/dev/null 2>&1; then useradd --system --home-dir /var/lib/qala --shell /usr/sbin/nologin qala
  fi
fi
owner() { [ -n "$R" ] || chown "$@"; }
install -d -m 0750 "$R/var/lib/qala"
owner qala:qala "$R/var/lib/qala"
if [ ! -d "$R/etc/qala/rules" ]; then
  install -d -m 0755 "$R/etc/qala/rules"
  cp -r "$rules"/. "$R/etc/qala/rules/"
  say "rules from $rules in /etc/qala/rules (edit there; reloaded on change)"
fi

coordinator=$R/usr/local/bin/qala-coordinator
if [ ! -e "$R/etc/qala/pki/ca.pem" ]; then
  "$coordinator" pki init "$R/etc/qala/pki-root" --host "$host" --host localhost --host 127.0.0.1 >/dev/null
  install -d -m 0750 "$R/etc/qala/pki"
  for f in "$R"/etc/qala/pki-root/*; do
    [ -f "$f" ] && [ "$(basename "$f")" != ca-key.pem ] && install -m 0640 "$f" "$R/etc/qala/pki/"
  done
  owner -R root:qala "$R/etc/qala/pki"
  chmod 0700 "$R/etc/qala/pki-root"
  say "PKI made for $host; its root key is $R/etc/qala/pki-root/ca-key.pem: move it offline"
fi
if [ "$role" != coordinator ] && [ ! -e "$R/etc/qala/worker/worker.pem" ] && [ -e "$R/etc/qala/pki-root/ca-key.pem" ]; then
  "$coordinator" pki worker "$R/etc/qala/pki-root" "$(hostname -s)" --host "$host" >/dev/null
  install -d -m 0750 "$R/etc/qala/worker"
  install -m 0640 "$R/etc/qala/pki-root/workers/$(hostname -s)"/* "$R/etc/qala/worker/"
  owner -R root:qala "$R/etc/qala/worker"
  say "worker certificate for $(hostname -s) in /etc/qala/worker"
fi
if [ "$role" != worker ] && [ ! -s "$R/etc/qala/admin.token" ]; then
  (umask 077; "$coordinator" token add --role admin ops --store "embedded:$R/var/lib/qala/verdicts.redb" | tail -n 1 \
    > "$R/etc/qala/admin.token")
  owner qala:qala "$R/var/lib/qala/verdicts.redb"
  say "admin token in /etc/qala/admin.token (root only)"
fi

units=()
[ "$role" = worker ] || units+=(qala-coordinator.service)
[ "$role" = coordinator ] || units+=(qala-worker.service)
for u in "${units[@]}"; do install -m 0644 "$here/$u" "$R/etc/systemd/system/$u"; done
if [ "$role" = all ]; then
  # The worker on the coordinator's host: its certificate, this host.
  sed -i "s#^Environment=QALA_WORKER_COORDINATOR=.*#Environment=QALA_WORKER_COORDINATOR=https://$host:7001#" \
    "$R/etc/systemd/system/qala-worker.service"
fi
if [ "$start" = 1 ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now "${units[@]}"
  say "started ${units[*]}; 'systemctl status ${units[*]}'"
else
  say "installed ${units[*]}; start with: systemctl daemon-reload && systemctl enable --now ${units[*]}"
fi
