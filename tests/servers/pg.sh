#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for tests and the local stack.
#
#   pg.sh start DIR [PORT]   init (first time) and start a cluster in DIR/pg on 127.0.0.1:PORT,
#                            create role "custody" and database "custody" (owned by it), print
#                            the conninfo on stdout. PORT defaults to the one DIR was started with.
#                            Already running: just prints the conninfo.
#   pg.sh stop DIR [fast|immediate]   stop it (idempotent; 'immediate' simulates a crash)
#   pg.sh status DIR         exit 0 when running
#   pg.sh conninfo DIR       print the conninfo
#
# Authentication is 'trust' on loopback and the socket (a local test stack only).
# As root the server runs as the 'postgres' user (PostgreSQL refuses root); DIR must then be
# reachable by that user (not under /root). Env: CUSTODYFS_PG_BIN (server binaries),
# CUSTODYFS_PG_FAST=1 (fsync off, for tests: commits survive a server crash, not an OS crash),
# CUSTODYFS_PG_START_TIMEOUT (default 60 s).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cmd=${1:-}
DIR=${2:-}
[ -n "$cmd" ] && [ -n "$DIR" ] || die "usage: pg.sh start|stop|status|conninfo DIR [PORT]"
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
PGD=$DIR/pg
DATA=$PGD/data
SOCK=$PGD/run
LOG=$PGD/postgres.log

find_bin() {
  local b=${CUSTODYFS_PG_BIN:-}
  if [ -z "$b" ]; then
    b=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
    [ -n "$b" ] || b=$(pg_config --bindir 2>/dev/null || true)
  fi
  [ -n "$b" ] && [ -x "$b/pg_ctl" ] || die "PostgreSQL server binaries not found (apt-get install postgresql, or set CUSTODYFS_PG_BIN)"
  echo "$b"
}

# run a command as the cluster owner
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    (cd "$PGD" && runuser -u postgres -- "$@")
  else
    (cd "$PGD" && "$@")
  fi
}

port_of() { cat "$PGD/port" 2>/dev/null || true; }
conninfo() { echo "host=127.0.0.1 port=$1 dbname=custody user=custody"; }

running() {
  [ -f "$DATA/PG_VERSION" ] || return 1
  as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

psql_admin() {
  as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$(port_of)" -U postgres -d postgres "$@"
}

BIN=$(find_bin)

case $cmd in
start)
  PORT=${3:-$(port_of)}
  [[ $PORT =~ ^[0-9]+$ ]] || die "start: PORT required the first time"
  mkdir -p "$PGD" "$SOCK"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' user: apt-get install postgresql"
    chown postgres:postgres "$PGD" "$SOCK"
    runuser -u postgres -- test -x "$PGD" -a -w "$PGD" ||
      die "the postgres user cannot reach $PGD (is a parent directory private, e.g. under /root?)"
  fi
  if running; then
    [ "$(port_of)" = "$PORT" ] || die "already running in $DIR on port $(port_of), not $PORT"
    conninfo "$PORT"
    exit 0
  fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    rm -rf "$DATA"
    as_owner "$BIN/initdb" -D "$DATA" -A trust -U postgres -E UTF8 --no-locale -N >"$PGD/initdb.log" 2>&1 ||
      { tail -n 20 "$PGD/initdb.log" >&2; die "initdb failed (log: $PGD/initdb.log)"; }
    echo "include_if_exists = 'custodyfs-test.conf'" | as_owner tee -a "$DATA/postgresql.conf" >/dev/null
  fi
  port_busy "$PORT" && die "port $PORT on 127.0.0.1 is already in use"
  {
    echo "port = $PORT"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$SOCK'"
    echo "max_connections = 200"
    echo "log_min_messages = warning"
    if [ "${CUSTODYFS_PG_FAST:-0}" = 1 ]; then
      echo "fsync = off"
      echo "full_page_writes = off"
    fi
  } | as_owner tee "$DATA/custodyfs-test.conf" >/dev/null
  echo "$PORT" >"$PGD/port"
  if ! as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t "${CUSTODYFS_PG_START_TIMEOUT:-60}" start >/dev/null 2>&1; then
    tail -n 20 "$LOG" >&2 || true
    as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    die "PostgreSQL did not come up on port $PORT (log: $LOG)"
  fi
  psql_admin <<'SQL'
SELECT 'CREATE ROLE custody LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'custody')\gexec
SELECT 'CREATE DATABASE custody OWNER custody' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'custody')\gexec
SQL
  conninfo "$PORT"
  ;;
stop)
  mode=${3:-fast}
  case $mode in fast | immediate | smart) ;; *) die "stop mode must be fast or immediate" ;; esac
  [ -f "$DATA/PG_VERSION" ] || exit 0
  if running; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m "$mode" -w -t 30 stop >/dev/null 2>&1 || true
  fi
  if [ -s "$DATA/postmaster.pid" ]; then # still there: make sure
    p=$(head -n1 "$DATA/postmaster.pid")
    if [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null; then
      kill -QUIT "$p" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$p" 2>/dev/null || true
    fi
  fi
  ;;
status)
  running
  ;;
conninfo)
  p=$(port_of)
  [ -n "$p" ] || die "no cluster in $DIR"
  conninfo "$p"
  ;;
*)
  die "unknown command '$cmd' (start|stop|status|conninfo)"
  ;;
esac
