#!/usr/bin/env bash
# custodyfs on a local stack, in one command: PostgreSQL + a local S3 server + the mount.
#
#   mount-helpers/local-stack.sh up [MOUNTPOINT] [--swift] [--state DIR]
#       installs missing Debian packages (as root), runs npm ci (s3rver), builds build/,
#       starts PostgreSQL and s3rver (or OpenStack Swift with --swift, which checks SigV4
#       signatures) in the state dir, creates the buckets recepcao-raw and storage-unique,
#       writes a 0600 config and mounts custodyfs at MOUNTPOINT (default /tmp/custodyfs) in the
#       background, logging to STATE/custodyfs.log. Running it again is harmless.
#   mount-helpers/local-stack.sh down [--state DIR] [--purge]
#       unmounts, stops the daemon and the servers (data is kept for the next `up`;
#       --purge deletes the state dir).
#   mount-helpers/local-stack.sh status [--state DIR]
#
# State dir: --state, else $CUSTODYFS_STACK_DIR, else /var/tmp/custodyfs-stack as root (the
# postgres user must reach it) or ~/.local/state/custodyfs-stack otherwise.
# This is a test stack: PostgreSQL trusts local connections and the S3 keys are the test
# servers' well-known ones. Do not expose it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVERS=$ROOT/tests/servers
BIN=${CUSTODYFS_BIN:-$ROOT/build/fs/custodyfs}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

die() { echo "local-stack: $*" >&2; exit 1; }
note() { echo "local-stack: $*" >&2; }

cmd=${1:-}
[ $# -gt 0 ] && shift
MNT=
BACKEND=
STATE=${CUSTODYFS_STACK_DIR:-}
PURGE=0
while [ $# -gt 0 ]; do
  case $1 in
  --swift) BACKEND=swift ;;
  --s3rver) BACKEND=s3rver ;;
  --state) STATE=${2:?--state needs a directory}; shift ;;
  --state=*) STATE=${1#--state=} ;;
  --purge) PURGE=1 ;;
  -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
  -*) die "unknown option $1" ;;
  *) MNT=$1 ;;
  esac
  shift
done
if [ -z "$STATE" ]; then
  if [ "$(id -u)" = 0 ]; then STATE=/var/tmp/custodyfs-stack; else STATE=${XDG_STATE_HOME:-$HOME/.local/state}/custodyfs-stack; fi
fi

mounted() { grep -qF " $1 " /proc/self/mountinfo 2>/dev/null; }

free_port() { # free_port PREFERRED [OFFSET...]
  local pref=$1
  shift
  "$PY" "$SERVERS/free_port.py" --prefer "$pref" "$@"
}

# server_port SERVER PREFERRED: the port a server of the state dir listens on while it runs;
# else the port it had, if it is free, else PREFERRED if free, else any free one. A port saved
# by an earlier run can be taken meanwhile (another server, or an outgoing connection's
# ephemeral port), and the server would then not come up.
server_port() {
  local saved
  saved=$(cat "$STATE/$1/port" 2>/dev/null || true)
  local p
  if [ -n "$saved" ] && "$SERVERS/$1.sh" status "$STATE" >/dev/null 2>&1; then
    echo "$saved"
    return
  fi
  if [ -n "$saved" ]; then
    p=$(free_port "$saved") || return 1
    [ "$p" = "$saved" ] && { echo "$p"; return; }
  fi
  free_port "$2"
}

install_packages() {
  local need=() p
  local pkgs=(build-essential meson ninja-build pkg-config libfuse3-dev fuse3 libcurl4-openssl-dev
    libssl-dev libpq-dev libxxhash-dev libexpat1-dev postgresql postgresql-client
    python3 python3-boto3 python3-psycopg2 curl ca-certificates procps)
  [ "$BACKEND" = swift ] && pkgs+=(swift swift-proxy swift-account swift-container swift-object memcached)
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  local node_missing=0
  if [ "$BACKEND" = s3rver ] && { ! command -v node >/dev/null || ! command -v npm >/dev/null; }; then
    node_missing=1
  fi
  if [ ${#need[@]} -eq 0 ] && [ $node_missing = 0 ]; then return 0; fi
  [ $node_missing = 1 ] && need+=(nodejs npm)
  if [ "$(id -u)" != 0 ]; then
    die "missing packages; install them first: sudo apt-get install -y ${need[*]}"
  fi
  note "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
}

write_config() { # write_config ENDPOINT KEY SECRET CONNINFO
  local cfg=$STATE/custodyfs.conf tmp
  tmp=$(mktemp "$STATE/.custodyfs.conf.XXXXXX") # mktemp makes it 0600
  cat >"$tmp" <<EOF
# custodyfs config for the local test stack (written by mount-helpers/local-stack.sh).
# Holds a secret: keep it mode 0600 (custodyfs refuses it otherwise).
[s3]
endpoint = $1
region = us-east-1
access_key_id = $2
secret_access_key = $3
reception_bucket = recepcao-raw
storage_bucket = storage-unique
path_style = true
verify_tls = true

[postgres]
conninfo = $4

[fs]
spool_dir = $STATE/spool
dedup = content
EOF
  chmod 600 "$tmp"
  mv -f "$tmp" "$cfg"
}

stop_daemon() {
  local mnt=$1 pidf=$STATE/custodyfs.pid p i
  if [ -n "$mnt" ] && mounted "$mnt"; then
    for i in $(seq 1 25); do
      fusermount3 -u "$mnt" 2>/dev/null && break
      mounted "$mnt" || break
      sleep 0.2
    done
    if mounted "$mnt"; then
      note "$mnt is busy (a shell or program is using it): detaching it lazily"
      fusermount3 -uz "$mnt" || true
    fi
  fi
  p=$(cat "$pidf" 2>/dev/null || true)
  if [[ $p =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF "config=$STATE/custodyfs.conf"; then
    for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -TERM "$p" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

up() {
  local prev
  prev=$(cat "$STATE/backend" 2>/dev/null || true)
  [ -n "$BACKEND" ] || BACKEND=${prev:-s3rver}
  [ -n "$MNT" ] || MNT=$(cat "$STATE/mountpoint" 2>/dev/null || echo /tmp/custodyfs)
  mkdir -p "$MNT"
  MNT=$(cd "$MNT" && pwd)

  install_packages
  mkdir -p "$STATE" "$STATE/spool"
  chmod 755 "$STATE" # PostgreSQL (as the postgres user when root) lives in it
  chmod 700 "$STATE/spool"
  STATE=$(cd "$STATE" && pwd)
  if [ -n "$prev" ] && [ "$prev" != "$BACKEND" ]; then
    note "switching the S3 server from $prev to $BACKEND (the $prev data stays in $STATE)"
    stop_daemon "$(cat "$STATE/mountpoint" 2>/dev/null || true)"
    "$SERVERS/$prev.sh" stop "$STATE" || true
  fi

  if [ "$BACKEND" = s3rver ] && [ ! -f "$ROOT/node_modules/s3rver/package.json" ]; then
    note "npm ci (s3rver)"
    (cd "$ROOT" && npm ci --no-audit --no-fund)
  fi
  if [ ! -x "$BIN" ] || [ -z "${CUSTODYFS_BIN:-}" ]; then
    note "building ($ROOT/build)"
    (cd "$ROOT" && { [ -f build/build.ninja ] || meson setup build; } && meson compile -C build) >&2 ||
      die "the build failed"
  fi
  [ -x "$BIN" ] || die "no daemon at $BIN after the build"

  local pgport s3port conninfo endpoint key secret
  # (preferred ports below Linux's ephemeral range, 32768-60999: no outgoing connection
  # takes them)
  pgport=$(server_port pg 15432)
  conninfo=$("$SERVERS/pg.sh" start "$STATE" "$pgport")
  if [ "$BACKEND" = swift ]; then
    s3port=$(cat "$STATE/swift/port" 2>/dev/null || free_port 58080 10 11 12 20)
    key=test:tester secret=testing
  else
    s3port=$(server_port s3rver 14568)
    key=S3RVER secret=S3RVER
  fi
  endpoint=$("$SERVERS/$BACKEND.sh" start "$STATE" "$s3port" recepcao-raw storage-unique)
  echo "$BACKEND" >"$STATE/backend"
  write_config "$endpoint" "$key" "$secret" "$conninfo"

  local old_mnt
  old_mnt=$(cat "$STATE/mountpoint" 2>/dev/null || true)
  if [ -n "$old_mnt" ] && [ "$old_mnt" != "$MNT" ]; then
    stop_daemon "$old_mnt"
  fi
  echo "$MNT" >"$STATE/mountpoint"
  if mounted "$MNT" && [ -d "$MNT/inbox" ]; then
    note "already mounted at $MNT"
  else
    mounted "$MNT" && fusermount3 -uz "$MNT" 2>/dev/null # a dead mount left by a crash
    stop_daemon ""
    echo "=== $(date -u +%FT%TZ) mount $MNT" >>"$STATE/custodyfs.log"
    setsid "$BIN" -f -o "config=$STATE/custodyfs.conf" "$MNT" </dev/null >>"$STATE/custodyfs.log" 2>&1 &
    echo $! >"$STATE/custodyfs.pid"
    local i ok=
    for i in $(seq 1 300); do
      if mounted "$MNT" && timeout 5 test -d "$MNT/inbox"; then ok=1; break; fi
      kill -0 "$(cat "$STATE/custodyfs.pid")" 2>/dev/null || break
      sleep 0.1
    done
    if [ -z "$ok" ]; then
      tail -n 30 "$STATE/custodyfs.log" >&2
      stop_daemon "$MNT"
      die "custodyfs did not mount at $MNT (log: $STATE/custodyfs.log)"
    fi
  fi

  cat <<EOF

custodyfs is mounted at $MNT
  config:     $STATE/custodyfs.conf  (mode 0600)
  daemon log: $STATE/custodyfs.log
  S3 ($BACKEND): $endpoint  key $key / secret $secret  buckets recepcao-raw, storage-unique
  PostgreSQL: $conninfo
Try:
  cp some-file.pdf $MNT/inbox/ && ls -l $MNT/inbox/
  psql "$conninfo" -c 'select object_key, size_bytes, sha256, received_by from reception_audit'
Stop it:   $0 down$( [ "$STATE" = /var/tmp/custodyfs-stack ] || [ "$STATE" = "${XDG_STATE_HOME:-$HOME/.local/state}/custodyfs-stack" ] || printf ' --state %q' "$STATE")
EOF
}

down() {
  [ -d "$STATE" ] || { note "nothing to stop ($STATE does not exist)"; return 0; }
  stop_daemon "$(cat "$STATE/mountpoint" 2>/dev/null || true)"
  "$SERVERS/s3rver.sh" stop "$STATE" 2>/dev/null || true
  [ -d "$STATE/swift" ] && { "$SERVERS/swift.sh" stop "$STATE" || true; }
  [ -d "$STATE/pg" ] && { "$SERVERS/pg.sh" stop "$STATE" || true; }
  if [ "$PURGE" = 1 ]; then
    rm -rf "$STATE"
    note "stopped; deleted $STATE"
  else
    note "stopped (data kept in $STATE; 'down --purge' deletes it)"
  fi
}

status() {
  local mnt rc=0
  mnt=$(cat "$STATE/mountpoint" 2>/dev/null || true)
  [ -n "$mnt" ] && mounted "$mnt" && echo "mounted:    $mnt" || { echo "mounted:    no"; rc=1; }
  "$SERVERS/pg.sh" status "$STATE" 2>/dev/null && echo "postgresql: $("$SERVERS/pg.sh" conninfo "$STATE")" || { echo "postgresql: down"; rc=1; }
  local b
  b=$(cat "$STATE/backend" 2>/dev/null || echo s3rver)
  "$SERVERS/$b.sh" status "$STATE" 2>/dev/null && echo "s3 ($b):  up" || { echo "s3 ($b):  down"; rc=1; }
  echo "state:      $STATE"
  return $rc
}

case $cmd in
up) up ;;
down) down ;;
status) status ;;
*) sed -n '2,20p' "$0"; exit 2 ;;
esac
