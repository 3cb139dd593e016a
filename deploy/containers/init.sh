#!/bin/sh
# One-shot init of a compose deployment (run as root in the coordinator
# image, /secrets a directory of the host's): the cluster's PKI, Redis's
# certificate, password and ACL, then, once Redis answers, the tokens.
# Each thing is made once: a second `up` keeps what the first made.
set -eu
S=/secrets
STORE="rediss://qala@redis:6380"
umask 077
mkdir -p "$S"
if [ ! -e "$S/ready-pki" ]; then
  rm -rf "$S/pki"
  qala-coordinator pki init "$S/pki"
  # Both coordinators answer as "coordinator" (the workers' and agents'
  # one address) and by their own names; localhost for the host's agent.
  for c in 1 2; do
    qala-coordinator pki coordinator "$S/pki" "coordinator-$c" \
      --host coordinator --host "coordinator-$c" --host localhost --host 127.0.0.1
  done
  qala-coordinator pki coordinator "$S/pki" redis --host redis
  cp "$S/pki/ca.pem" "$S/ca.pem"
  # Redis: one ACL user, its password random; the default user off.
  password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '%s\n' "$password" > "$S/redis.password"
  printf 'user default off\nuser qala on >%s ~qala:* &* +@all -@dangerous +info\n' "$password" \
    > "$S/redis.acl"
  chown -R 10001:10001 "$S"
  touch "$S/ready-pki"
fi
export QALA_STORE_PASSWORD_FILE="$S/redis.password" QALA_STORE_CA="$S/ca.pem"
tries=0
until qala-coordinator token list --store "$STORE" >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -lt 120 ] || { echo "init: Redis did not answer in 60 s" >&2; qala-coordinator token list --store "$STORE"; exit 1; }
  sleep 0.5
done
token() { # FILE ROLE NAME [FLAGS]
  file=$1; shift
  if [ ! -s "$S/$file" ]; then
    qala-coordinator token add --role "$@" --store "$STORE" | tail -n 1 > "$S/$file.part"
    mv "$S/$file.part" "$S/$file"
  fi
}
token worker-enroll.token worker-enroll workers --expires "${QALA_WORKER_TOKEN_EXPIRES:-365d}"
token admin.token admin admin
token agent.token agent host-agent
token metrics.token metrics prometheus
chown -R 10001:10001 "$S"
touch "$S/ready"
echo "init: PKI, Redis ACL and tokens in $S"
