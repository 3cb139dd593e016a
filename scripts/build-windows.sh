#!/usr/bin/env bash
# Build the Windows agent on Debian: `qala-agent.exe` (x86_64-pc-windows-gnu)
# and its MSI package, in target/windows/ of the build directory.
#
#   ./scripts/build-windows.sh
#
# Rustup cannot fetch the Windows standard library here, so this uses a
# second toolchain from Debian (rustc-web: rustc at /usr/bin/rustc, cargo at
# /usr/share/cargo/bin/cargo, std's source in rust-web-src) and builds std
# with the agent (-Zbuild-std), linking with MinGW-w64 (ring's C and
# assembly build with MinGW's gcc too). Rustup's toolchain and the Linux
# build are not touched. What is missing is installed with apt-get (as root).
# The build directory is $QALA_WINDOWS_TARGET_DIR (default
# /var/tmp/qala-win-target), outside the clone, so later runs reuse it.
# With QALA_SIGN_CERT and QALA_SIGN_KEY (PEM files; QALA_SIGN_PASS for an
# encrypted key) the exe and the MSI are signed (scripts/sign-windows.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
missing=()
[ -x /usr/bin/rustc ] || missing+=(rustc-web)
[ -x /usr/share/cargo/bin/cargo ] || missing+=(cargo-web)
[ -d /usr/lib/rustlib/src/rust/library ] || missing+=(rust-web-src)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing+=(gcc-mingw-w64-x86-64)
command -v wixl >/dev/null 2>&1 || missing+=(wixl)
command -v msiinfo >/dev/null 2>&1 || missing+=(msitools)
if [ -n "${QALA_SIGN_CERT:-}" ]; then command -v osslsigncode >/dev/null 2>&1 || missing+=(osslsigncode); fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (the Windows build needs them)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "the Windows build needs: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
    exit 2
  fi
fi
export CARGO_TARGET_DIR="${QALA_WINDOWS_TARGET_DIR:-/var/tmp/qala-win-target}"
export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TERM_COLOR=never
/usr/share/cargo/bin/cargo build --release --locked -Zbuild-std=std,panic_abort \
  --target x86_64-pc-windows-gnu -p qala-agent --bin qala-agent
exe="$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/release/qala-agent.exe"
out="$CARGO_TARGET_DIR/windows"
mkdir -p "$out"
x86_64-w64-mingw32-strip -o "$out/qala-agent.exe" "$exe"
# Signed when a key is given (osslsigncode: Authenticode, SHA-256).
if [ -n "${QALA_SIGN_CERT:-}" ]; then
  scripts/sign-windows.sh "$out/qala-agent.exe"
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
repo=$PWD
(cd "$out" && wixl -a x64 -D Version="$version" -D AgentExe=qala-agent.exe -o qala-agent.msi "$repo/deploy/windows/qala-agent.wxs")
if [ -n "${QALA_SIGN_CERT:-}" ]; then
  scripts/sign-windows.sh "$out/qala-agent.msi"
fi
echo "built $out/qala-agent.exe ($(stat -c %s "$out/qala-agent.exe") bytes) and $out/qala-agent.msi ($(stat -c %s "$out/qala-agent.msi") bytes, version $version) in $(( $(date +%s) - started )) s"
