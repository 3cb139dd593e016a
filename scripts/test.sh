#!/usr/bin/env bash
# Run Qala's whole test suite: unit tests, the store conformance suite and the
# end-to-end tests (real coordinator, worker, agent and redis-server processes).
# Installs redis-server and systemd-analyze with apt-get when missing and we are root.
#
#   ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
# redis-server (built with TLS in Debian) for the Redis store tests;
# systemd-analyze (package systemd) to score the hardened units in deploy/;
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# ClamAV's test files (clam.exe hidden 43 ways) for the detection-depth test.
[ -e /usr/share/clamav-testfiles/clam.exe ] || missing+=(clamav-testfiles)
# mksquashfs makes the SquashFS images the engine tests unpack;
command -v mksquashfs >/dev/null 2>&1 || missing+=(squashfs-tools)
# wimlib-imagex makes the WIM images.
command -v wimlib-imagex >/dev/null 2>&1 || missing+=(wimtools)
# The agent's package is built with dpkg-deb and a stripped binary; its
# progress bar is tested on a pseudo-terminal from script(1).
command -v strip >/dev/null 2>&1 || missing+=(binutils)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
command -v script >/dev/null 2>&1 || missing+=(bsdutils)
# Real clamd clients for the clamd front door: clamdscan and clamav-milter.
command -v clamdscan >/dev/null 2>&1 || missing+=(clamdscan)
[ -x /usr/sbin/clamav-milter ] || missing+=(clamav-milter)
# curl is the HTTP client of the REST API tests.
command -v curl >/dev/null 2>&1 || missing+=(curl)
# openssl s_server is the TLS syslog receiver of the SIEM tests.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The Windows agent's tests: Wine runs it, MinGW builds the one DLL Wine 8
# lacks, wixl builds the upgrade's MSI, osslsigncode signs and verifies.
command -v wine >/dev/null 2>&1 || missing+=(wine64 wine)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing+=(gcc-mingw-w64-x86-64)
command -v wixl >/dev/null 2>&1 || missing+=(wixl)
command -v msiinfo >/dev/null 2>&1 || missing+=(msitools)
command -v osslsigncode >/dev/null 2>&1 || missing+=(osslsigncode)
# The analyst console's browser test: Debian's Chromium, driven from Node.js
# by playwright-core (pinned in tests/browser/package-lock.json).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The engine's round trip through every tool that writes an archive
# (engine/tests/roundtrip.rs): 7-Zip as the oracle, and the writers.
roundtrip_pkgs=(7zip arj jlha-utils lzip plzip lzop zpaq ncompress sharutils cpio pax genisoimage xorriso gcab
  brotli lrzip rzip dar mtools dosfstools nsis kgb lzma zip pigz pbzip2 pixz fp-utils rpm mpack uudeview
  macutils zopfli makeself arc nulib2 mscompress util-linux-extra fdisk ntfs-3g qemu-utils lz4 zstd xz-utils e2fsprogs)
for p in "${roundtrip_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (needed by the tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "the tests need: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
    exit 2
  fi
fi
# From PyPI: the Python clamd package (another real clamd client) and
# openapi-spec-validator (checks the REST API's OpenAPI document).
pip_need=()
python3 -c 'import clamd' >/dev/null 2>&1 || pip_need+=(clamd==1.0.2)
python3 -c 'import openapi_spec_validator' >/dev/null 2>&1 || pip_need+=(openapi-spec-validator==0.9.0)
if [ ${#pip_need[@]} -gt 0 ]; then
  echo "installing ${pip_need[*]} (needed by the tests)"
  python3 -m pip install --quiet "${pip_need[@]}" || python3 -m pip install --quiet --break-system-packages "${pip_need[@]}"
fi
# playwright-core for the console's browser test, from the lockfile (it
# never downloads a browser: the test drives /usr/bin/chromium).
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund)
fi
# The Windows agent the Wine tests run (incremental: seconds when built).
./scripts/build-windows.sh
exec cargo test --release --workspace "$@"
