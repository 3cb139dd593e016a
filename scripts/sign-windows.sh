#!/usr/bin/env bash
# Sign a Windows executable or MSI in place with osslsigncode (Authenticode,
# SHA-256): the certificate chain in $QALA_SIGN_CERT (PEM), its key in
# $QALA_SIGN_KEY (PEM; $QALA_SIGN_PASS if encrypted), and a timestamp from
# $QALA_SIGN_TIMESTAMP_URL when set (an RFC 3161 server; none by default,
# this machine reaches none).
#
#   QALA_SIGN_CERT=cert.pem QALA_SIGN_KEY=key.pem ./scripts/sign-windows.sh FILE...
set -euo pipefail
: "${QALA_SIGN_CERT:?QALA_SIGN_CERT: the signing certificate (PEM)}"
: "${QALA_SIGN_KEY:?QALA_SIGN_KEY: its key (PEM)}"
for f in "$@"; do
  args=(sign -h sha256 -n "Qala agent" -i "https://github.com/qala" -certs "$QALA_SIGN_CERT" -key "$QALA_SIGN_KEY")
  [ -n "${QALA_SIGN_PASS:-}" ] && args+=(-pass "$QALA_SIGN_PASS")
  [ -n "${QALA_SIGN_TIMESTAMP_URL:-}" ] && args+=(-ts "$QALA_SIGN_TIMESTAMP_URL")
  osslsigncode "${args[@]}" -in "$f" -out "$f.signed" >/dev/null
  mv "$f.signed" "$f"
  echo "signed $f"
done
