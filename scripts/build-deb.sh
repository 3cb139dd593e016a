#!/usr/bin/env bash
# Build the qala-agent .deb from a staged tree with dpkg-deb:
#   scripts/build-deb.sh [OUT_DIR] [BINARY]
# BINARY defaults to a fresh `cargo build --release -p qala-agent`; it is
# stripped into the package. Prints the path of the .deb.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/dist}"
bin="${2:-}"
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release -p qala-agent >&2)
    bin="${CARGO_TARGET_DIR:-$root/target}/release/qala-agent"
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
arch="$(dpkg --print-architecture)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
install -d -m 755 "$stage/DEBIAN" "$stage/usr/bin" "$stage/etc/qala" "$stage/lib/systemd/system" \
    "$stage/usr/share/doc/qala-agent"
install -m 755 "$bin" "$stage/usr/bin/qala-agent"
strip --strip-all "$stage/usr/bin/qala-agent"
install -m 644 "$root/deploy/agent/agent.toml" "$stage/etc/qala/agent.toml"
install -m 644 "$root/deploy/agent/qala-agent.service" "$stage/lib/systemd/system/qala-agent.service"
install -m 644 "$root/LICENSE" "$stage/usr/share/doc/qala-agent/copyright" 2>/dev/null || true
size_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: qala-agent
Version: $version
Architecture: $arch
Maintainer: Qala <qala@example.org>
Installed-Size: $size_kb
Depends: libc6 (>= 2.36)
Section: admin
Priority: optional
Description: Qala endpoint agent
 Real-time (inotify/fanotify) and scheduled scanning through a central Qala
 cluster: hash-first lookups, uploads of unknown content only, on-access
 blocking, quarantine, an offline spool.
CONTROL
echo "/etc/qala/agent.toml" > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
# The quarantine, spool and cache directories: root only. DPKG_ROOT is set
# when dpkg installs into another root (dpkg --root).
set -e
r="${DPKG_ROOT:-}"
install -d -m 700 "$r/var/lib/qala" "$r/var/lib/qala/quarantine" "$r/var/cache/qala"
if [ -z "$r" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    systemctl enable qala-agent.service || true
fi
exit 0
POSTINST
cat > "$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
    systemctl stop qala-agent.service || true
    [ "$1" = remove ] && systemctl disable qala-agent.service || true
fi
exit 0
PRERM
chmod 755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm"
mkdir -p "$out"
deb="$out/qala-agent_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >&2
echo "$deb"
