#!/usr/bin/env bash
# Build Qala's container images here, from nothing a registry holds:
#   1. a slim Debian bookworm base, made with debootstrap and imported as
#      localhost/qala-base:bookworm (kept: a tarball in QALA_IMAGE_CACHE and
#      the image itself, so later runs skip it);
#   2. the release binaries built on this host (glibc of the same Debian),
#      stripped, copied into the build context;
#   3. localhost/qala-{coordinator,worker,agent,redis}:TAG, the targets of
#      deploy/containers/Containerfile.
# Prints each image's size. Needs podman (installed with apt-get when
# missing and root) and writes /etc/containers/containers.conf when it is
# missing (runc, cgroupfs, no default ulimits: what runs on hosts without
# systemd as PID 1).
#
#   deploy/build-images.sh                 # tag "local"
#   QALA_IMAGE_TAG=0.1.0 QALA_BIN_DIR=/path/with/binaries deploy/build-images.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${QALA_IMAGE_TAG:-local}
CACHE=${QALA_IMAGE_CACHE:-/var/tmp/qala-image-cache}
BASE=localhost/qala-base:bookworm
MIRROR=${QALA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
t0=$(date +%s)

need=()
command -v podman >/dev/null || need+=(podman runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v strip >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "building the images needs: ${need[*]}" >&2
    exit 2
  fi
fi
if [ "$(id -u)" = 0 ] && [ ! -e /etc/containers/containers.conf ]; then
  mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n' \
    > /etc/containers/containers.conf
  echo "wrote /etc/containers/containers.conf"
fi

# 1. The base image.
mkdir -p "$CACHE"
if ! podman image exists "$BASE"; then
  if [ ! -s "$CACHE/qala-base-bookworm.tar" ]; then
    echo "making the base image with debootstrap (once; cached in $CACHE)"
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log"
    # What a service never reads: package caches, documentation, locales, logs.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
      "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/var/log/*
    tar -C "$root" -cf "$CACHE/qala-base-bookworm.tar.part" .
    mv "$CACHE/qala-base-bookworm.tar.part" "$CACHE/qala-base-bookworm.tar"
    rm -rf "$root"
  fi
  podman import --quiet "$CACHE/qala-base-bookworm.tar" "$BASE" >/dev/null
fi
echo "base image: $BASE ($(( $(date +%s) - t0 )) s)"

# 2. The binaries.
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/bin"
if [ -n "${QALA_BIN_DIR:-}" ]; then
  bins=$QALA_BIN_DIR
else
  cargo build --release -p qala-coordinator -p qala-worker -p qala-agent --bins
  bins=${CARGO_TARGET_DIR:-target}/release
fi
for b in qala-coordinator qala-worker qala-agent; do
  strip -o "$ctx/bin/$b" "$bins/$b"
done
cp deploy/containers/Containerfile "$ctx/"
echo "binaries ready ($(( $(date +%s) - t0 )) s)"

# 3. The images.
for target in coordinator worker agent redis; do
  podman build --quiet --target "$target" --build-arg "BASE=$BASE" -t "localhost/qala-$target:$TAG" \
    -f "$ctx/Containerfile" "$ctx" >/dev/null
done
echo "images built ($(( $(date +%s) - t0 )) s):"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^localhost/qala-(base|coordinator|worker|agent|redis):" | sort
