#!/usr/bin/env bash
# s3rver (npm, pinned in package.json; run `npm ci` at the repository top first) as a local S3,
# started through s3rver-run.js (which lets it store key components longer than ~232 bytes).
#
#   s3rver.sh start DIR [PORT] [BUCKET...]  start on 127.0.0.1:PORT with data in DIR/s3rver, wait
#                                           until it answers, create the buckets (arguments, else
#                                           $CUSTODYFS_BUCKETS, else recepcao-raw storage-unique),
#                                           print the endpoint URL. Already running: only buckets.
#   s3rver.sh stop DIR                      stop it (idempotent); data stays in DIR
#   s3rver.sh status DIR                    exit 0 when running
#
# Credentials: access key S3RVER, secret S3RVER, any region, path-style.
# Env: CUSTODYFS_S3RVER_VERBOSE=1 keeps its request log (DIR/s3rver/s3rver.log),
#      CUSTODYFS_S3RVER_BIN overrides the script run by node, CUSTODYFS_S3_START_TIMEOUT (30 s).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cmd=${1:-}
DIR=${2:-}
[ -n "$cmd" ] && [ -n "$DIR" ] || die "usage: s3rver.sh start|stop|status DIR [PORT] [BUCKET...]"
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
SD=$DIR/s3rver
PIDF=$SD/s3rver.pid
LOG=$SD/s3rver.log
KEY=S3RVER
SECRET=S3RVER

case $cmd in
start)
  PORT=${3:-$(cat "$SD/port" 2>/dev/null || true)}
  [[ $PORT =~ ^[0-9]+$ ]] || die "start: PORT required the first time"
  shift 3 2>/dev/null || shift $#
  read -r -a buckets <<<"$(bucket_list "$@")"
  EP=http://127.0.0.1:$PORT
  mkdir -p "$SD/data"
  if pid_alive "$PIDF"; then
    [ "$(cat "$SD/port")" = "$PORT" ] || die "already running in $DIR on port $(cat "$SD/port"), not $PORT"
  else
    [ -f "$REPO_ROOT/node_modules/s3rver/package.json" ] ||
      die "s3rver not found in $REPO_ROOT/node_modules: run 'npm ci' there (needs nodejs and npm)"
    command -v node >/dev/null || die "node not found: apt-get install nodejs npm"
    # s3rver-run.js: the repository's s3rver, patched for long key components
    BIN=${CUSTODYFS_S3RVER_BIN:-$SERVERS_DIR/s3rver-run.js}
    port_busy "$PORT" && die "port $PORT on 127.0.0.1 is already in use"
    silent=--silent
    [ "${CUSTODYFS_S3RVER_VERBOSE:-0}" = 1 ] && silent=
    echo "$PORT" >"$SD/port"
    # own session: stop can signal the whole group, and a ^C in the caller's terminal does not hit it
    setsid node "$BIN" -d "$SD/data" -a 127.0.0.1 -p "$PORT" $silent </dev/null >>"$LOG" 2>&1 &
    echo $! >"$PIDF"
    ok=
    for ((i = 0; i < ${CUSTODYFS_S3_START_TIMEOUT:-30} * 10; i++)); do
      if http_up "$EP/"; then ok=1; break; fi
      pid_alive "$PIDF" || break
      sleep 0.1
    done
    if [ -z "$ok" ]; then
      tail -n 20 "$LOG" >&2 || true
      stop_pidfile "$PIDF" 5
      die "s3rver did not come up on port $PORT (log: $LOG)"
    fi
  fi
  make_buckets "$EP" "$KEY" "$SECRET" "${buckets[@]}" || die "could not create buckets ${buckets[*]} on $EP"
  echo "$EP"
  ;;
stop)
  stop_pidfile "$PIDF" 15
  ;;
status)
  pid_alive "$PIDF" && http_up "http://127.0.0.1:$(cat "$SD/port")/"
  ;;
*)
  die "unknown command '$cmd' (start|stop|status)"
  ;;
esac
