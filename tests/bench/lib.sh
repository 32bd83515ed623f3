# shellcheck shell=bash disable=SC2034 # (variables the sourcing scripts use)
# tests/bench/lib.sh -- what the benchmarks (bench.sh, bench_small.sh, bench_promote.sh) share:
# the local-only environment, the temp dir, cleanup and the watchdog, PostgreSQL and ONE S3
# server, the daemon's config and mount, CPU measurement, and --hold. Sourced (never run) by a
# script that has set, before the functions below are called: BACKEND (s3rver|swift), BIN,
# PG_FAST, KEEP, TIME_LIMIT, and for some of them TRACE, LOG_LEVEL, HOLD.
# It sets HERE, REPO, SERVERS, PY, BENCH_NAME at once.

HERE=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SERVERS=$REPO/tests/servers
PY=/usr/bin/python3
BENCH_NAME=$(basename "${BASH_SOURCE[1]}")

# local test stack only: no proxies, no CA bundles, no ambient AWS/PG settings
unset AWS_CA_BUNDLE CURL_CA_BUNDLE REQUESTS_CA_BUNDLE SSL_CERT_FILE AWS_PROFILE \
  AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_DEFAULT_REGION AWS_REGION \
  http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY \
  PGHOST PGPORT PGUSER PGDATABASE PGSERVICE PGPASSWORD 2>/dev/null || true
export NO_PROXY='*' no_proxy='*'

# what every benchmark takes by default (bench_opt changes them)
BACKEND=s3rver
NFILES=500
FSIZE=4096
PG_FAST=0
KEEP=0
BIN=${CUSTODYFS_BIN:-$REPO/build/fs/custodyfs}

BASE_BUCKET=bench-baseline
RECEPTION=recepcao-raw
STORAGE=storage-unique

die() { echo "$BENCH_NAME: $*" >&2; exit 1; }
note() { echo "bench: $(date +%H:%M:%S) $*" >&2; }
# --help: the script's header comment
bench_help() { sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# bench_opt "$@": the options every benchmark takes (--swift --s3rver --files --size --pg-fast
# --keep --time-limit --bin --help); sets BENCH_SHIFT to the words it used, 0 for another option
bench_opt() {
  BENCH_SHIFT=1
  case $1 in
  --swift) BACKEND=swift ;;
  --s3rver) BACKEND=s3rver ;;
  --files) NFILES=$2; BENCH_SHIFT=2 ;;
  --size) FSIZE=$2; BENCH_SHIFT=2 ;;
  --pg-fast) PG_FAST=1 ;;
  --keep) KEEP=1 ;;
  --time-limit) TIME_LIMIT=$2; BENCH_SHIFT=2 ;;
  --bin) BIN=$2; BENCH_SHIFT=2 ;;
  -h | --help) bench_help; exit 0 ;;
  *) BENCH_SHIFT=0 ;;
  esac
}

# bench_need_fuse: the python, the daemon binary and FUSE are there
bench_need_fuse() {
  [ -x "$BIN" ] || die "daemon binary not found at $BIN: meson compile -C build"
  command -v fusermount3 >/dev/null || die "fusermount3 not found"
  [ -e /dev/fuse ] || die "/dev/fuse missing"
}

# bench_keys: AK/SK of the backend's test account
bench_keys() {
  case $BACKEND in
  s3rver) AK=S3RVER SK=S3RVER ;;
  swift) AK=test:tester SK=testing ;;
  esac
}

# bench_tmp NAME: the temp dir (reachable by the postgres user) and its paths; the results file
bench_tmp() {
  TMP=$(mktemp -d "${CUSTODYFS_BENCH_TMP:-/tmp}/$1.XXXXXX")
  chmod 755 "$TMP" # the postgres user must reach $TMP/servers/pg
  MNT=$TMP/mnt
  SPOOL=$TMP/spool
  CFG=$TMP/custodyfs.ini
  LOG=$TMP/daemon.log
  RES=$TMP/results
  mkdir -p "$MNT" "$SPOOL" "$TMP/servers"
  chmod 700 "$SPOOL"
  : >"$RES"
  DPID=
  WATCHDOG=
}

res() { echo "$1=$2" >>"$RES"; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
mounted() { awk -v m="$MNT" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
py() { "$PY" "$HERE/bench.py" "$@"; }

# ---------------------------------------------------------------------------- cleanup
stop_daemon() {
  local i
  if mounted; then
    for i in 1 2 3 4 5 6 7 8 9 10; do
      fusermount3 -u "$MNT" 2>/dev/null && break
      mounted || break
      sleep 0.5
    done
    mounted && fusermount3 -uz "$MNT" 2>/dev/null
  fi
  if [ -n "$DPID" ]; then
    for ((i = 0; i < 300; i++)); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$DPID" 2>/dev/null; then
      note "daemon $DPID still running 30 s after unmount: SIGKILL"
      kill -KILL "$DPID" 2>/dev/null
    fi
    wait "$DPID" 2>/dev/null
    DPID=
    rm -f "$TMP/daemon.pid"
  fi
}

# the script may define bench_cleanup_extra (run after the daemon is stopped)
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$WATCHDOG" ]; then kill "$WATCHDOG" 2>/dev/null; wait "$WATCHDOG" 2>/dev/null; fi
  stop_daemon
  declare -F bench_cleanup_extra >/dev/null && bench_cleanup_extra
  "$SERVERS/$BACKEND.sh" stop "$TMP/servers" >/dev/null 2>&1
  "$SERVERS/pg.sh" stop "$TMP/servers" >/dev/null 2>&1
  if [ "$KEEP" = 1 ] || mounted; then
    echo "bench: files kept in $TMP (daemon log $LOG)" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}

# bench_guard: cleanup at exit, and a hard bound (TIME_LIMIT) on the whole run: a hung FUSE
# request blocks the shell (traps wait for the foreground child), so the watchdog kills the
# daemon first -- that fails the hung request.
bench_guard() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  (
    trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$TIME_LIMIT" &
    sp=$!
    wait "$sp"
    echo "$BENCH_NAME: time limit of ${TIME_LIMIT}s reached: aborting" >&2
    [ -s "$TMP/daemon.pid" ] && kill -KILL "$(cat "$TMP/daemon.pid")" 2>/dev/null
    kill -TERM $$ 2>/dev/null
  ) &
  WATCHDOG=$!
}

# ---------------------------------------------------------------------------- servers
# bench_servers BUCKET...: a copy of the daemon, PostgreSQL (CONNINFO, PGMASTER; with TRACE=1
# every statement logged) and the S3 server with those buckets (EP, S3ARGS)
bench_servers() {
  cp "$BIN" "$TMP/custodyfs"
  note "starting PostgreSQL (fsync $([ "$PG_FAST" = 1 ] && echo off || echo on))"
  PGPORT_=$(py freeport)
  CONNINFO=$(CUSTODYFS_PG_FAST=$PG_FAST "$SERVERS/pg.sh" start "$TMP/servers" "$PGPORT_" | tail -n1)
  PGMASTER=$(head -n1 "$TMP/servers/pg/data/postmaster.pid")
  if [ "${TRACE:-0}" = 1 ]; then
    "$PY" - "$PGPORT_" <<'PYEOF'
import sys, psycopg2
c = psycopg2.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres")
c.autocommit = True
c.cursor().execute("ALTER DATABASE custody SET log_min_duration_statement = 0")
PYEOF
  fi

  note "starting $BACKEND"
  if [ "$BACKEND" = swift ]; then
    S3PORT=$(py freeport --offsets 0,10,11,12,20)
  else
    S3PORT=$(py freeport)
  fi
  EP=$("$SERVERS/$BACKEND.sh" start "$TMP/servers" "$S3PORT" "$@" | tail -n1)
  [[ $EP == http://127.0.0.1:* ]] || die "unexpected endpoint '$EP' (loopback only)"
  S3ARGS=(--endpoint "$EP" --access-key "$AK" --secret-key "$SK")
}
s3pids() {
  if [ "$BACKEND" = swift ]; then
    cat "$TMP"/servers/swift/run/*.pid 2>/dev/null | tr '\n' ' '
  else
    cat "$TMP/servers/s3rver/s3rver.pid"
  fi
}

# bench_netrc PATH: curl --aws-sigv4 credentials in a netrc file (NETRC): the Swift key holds
# a ':' that curl's -u cannot carry, and argv is never used for them
bench_netrc() {
  NETRC=$1
  printf 'machine 127.0.0.1 login %s password %s\n' "$AK" "$SK" >"$NETRC"
  chmod 600 "$NETRC"
}

# ---------------------------------------------------------------------------- the mount
# bench_config LINE...: the daemon's config (CFG, mode 600); the LINEs go into [fs] after
# spool_dir (an empty LINE is left out)
bench_config() {
  local l
  umask 077
  {
    echo "# written by tests/bench/$BENCH_NAME"
    echo "[s3]"
    echo "endpoint = $EP"
    echo "region = us-east-1"
    echo "access_key_id = $AK"
    echo "secret_access_key = $SK"
    echo "reception_bucket = $RECEPTION"
    echo "storage_bucket = $STORAGE"
    echo "path_style = true"
    echo "[postgres]"
    echo "conninfo = $CONNINFO"
    echo "[fs]"
    echo "spool_dir = $SPOOL"
    for l in "$@"; do [ -n "$l" ] && echo "$l"; done
  } >"$CFG"
  chmod 600 "$CFG"
  umask 022
}

# mount_daemon: the copy of the daemon mounted on MNT (DPID), inbox/ reachable
mount_daemon() {
  local i
  note "mounting custodyfs on $MNT"
  setsid "$TMP/custodyfs" -f -o "config=$CFG" "$MNT" </dev/null >>"$LOG" 2>&1 &
  DPID=$!
  echo "$DPID" >"$TMP/daemon.pid"
  for ((i = 0; i < 300; i++)); do
    kill -0 "$DPID" 2>/dev/null || { tail -n 30 "$LOG" >&2; die "the daemon exited before mounting"; }
    if mounted && timeout -k 1 5 test -d "$MNT/inbox"; then return 0; fi
    sleep 0.1
  done
  tail -n 30 "$LOG" >&2
  die "mount did not appear within 30 s"
}

# ---------------------------------------------------------------------------- measuring
cpu_daemon() { py cpu "$DPID"; }
# shellcheck disable=SC2046 # (a list of pids)
cpu_s3() { py cpu $(s3pids); }
# shellcheck disable=SC2046
cpu_pg() { py cpu $(py pgpids "$PGMASTER"); }
xacts() { py pgstat "$CONNINFO"; }
# measure_start / measure_end TAG [EXTRA_CPU]: CPU of the daemon (plus EXTRA_CPU, e.g. a
# tool's own), the S3 server and PostgreSQL, and PG write transactions around a phase
measure_start() { M_D=$(cpu_daemon) M_S=$(cpu_s3) M_P=$(cpu_pg) M_X=$(xacts); }
measure_end() {
  local tag=$1 extra=${2:-0}
  res "${tag}_dcpu" "$(fsub "$M_D" "$(cpu_daemon)" | awk -v e="$extra" '{ printf "%.3f", $1 + e }')"
  res "${tag}_scpu" "$(fsub "$M_S" "$(cpu_s3)")"
  res "${tag}_pcpu" "$(fsub "$M_P" "$(cpu_pg)")"
  res "${tag}_xacts" "$(($(xacts) - M_X - 1))"
}

# bench_hold LINE...: with HOLD > 0, prints the LINEs (also to $TMP/hold.env) and keeps the
# stack up for up to HOLD s, until $TMP/release exists or the daemon ends
bench_hold() {
  local i
  [ "${HOLD:-0}" -gt 0 ] || return 0
  {
    echo "holding the stack for up to ${HOLD}s (touch $TMP/release to end it now):"
    printf '  %s\n' "$@"
  } | tee "$TMP/hold.env" >&2
  for ((i = 0; i < HOLD * 2; i++)); do
    [ -e "$TMP/release" ] && break
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.5
  done
}
