#!/usr/bin/env bash
# custodyfs promotion benchmark (issue 6 "How fast", issue 7's promote figure) -- NOT a test: it
# prints figures and ratios, with the target beside each ratio, and never fails on a number.
#
#   tests/bench/bench_promote.sh [--swift] [--files N] [--size BYTES] [--rounds R]
#                                [--workers W] [--pg-fast] [--keep] [--time-limit S] [--bin PATH]
#                                [--log-level 0-3] [--hold S] [--only LIST]
#
# In one run, against the same servers, it starts PostgreSQL (tests/servers/pg.sh) and ONE S3
# server (s3rver, or Swift s3api with --swift) on 127.0.0.1 in a temp dir, mounts a copy of
# build/fs/custodyfs with [fs] promote_workers = W (default 4, the daemon's default) and, each
# round, on fresh random files (so that no phase meets another's content: dedup = content
# would make it a cheap duplicate_content):
#  (a) `mv inbox/pa projects/P/`: a directory of N (500) received files, one rename
#  (b) the same N files received again under the same names, `mv -T inbox/pa projects/P/pa`:
#      every file already stored (outcome duplicate, nothing copied)
#  (c) `mv inbox/pc/* projects/P/pc/`: N renames, one per file, serial (one mv process)
#  (d) `custodyfs promote --project P --prefix-in-inbox pd`: the batch tool (issue 7: >= (a))
#  baseline 1: the seed's pipeline reimplemented from shared/seed/progress-notes.pt.md in boto3 +
#      psycopg2 (bench_promote.py seed): list the reception bucket, then per object, serially,
#      SELECT its row, HEAD the destination, CopyObject, INSERT + COMMIT; and its second pass
#      (everything stored: SELECT + HEAD per object, nothing copied)
#  baseline 2: the server's limit: HEAD destination, CopyObject, DeleteObject source per file,
#      W files at a time (bench_promote.py limit)
# Files are received (untimed) by `cp -r` into inbox/ through the mount (rows with hashes
# committed at close); the baselines' sources are PUT by boto3. Each phase then checks what
# landed (objects and sizes in the bucket, storage_audit rows by outcome, nothing left in
# reception, no open journal entry), so a broken run cannot look fast. Also reported: CPU of
# the daemon (or the tool), the S3 server and PostgreSQL, and PG write transactions per file.
#
# Options:
#   --swift          Swift (s3api, verifies SigV4) instead of s3rver
#   --files N        files per phase (default 500);  --size BYTES their size (default 4096)
#   --rounds R       rounds (default 2); the report gives the median and the range
#   --workers W      [fs] promote_workers of the mount, the tool and the limit (default 4)
#   --only LIST      phases among a,b,c,d,seed,limit (default all; b needs a)
#   --pg-fast        PostgreSQL with fsync off (default: on, like production)
#   --log-level N    the daemon's [fs] log_level;  --keep  keep the temp dir
#   --trace          profiling aids: log_level 3 (each S3 request in the daemon log, with its
#                    time) and PostgreSQL log_min_duration_statement=0 (each statement with its
#                    duration); the figures are then slower. Implies --keep.
#   --time-limit S   hard bound of the whole run (default 1500)
#   --bin PATH       daemon binary (default build/fs/custodyfs, or $CUSTODYFS_BIN)
#   --hold S         after the rounds, keep the stack up for up to S s (strace/perf by hand);
#                    `touch DIR/release` ends it
# Env: CUSTODYFS_BENCH_TMP parent of the temp dir (default /tmp; the postgres user must reach it).
set -Eeuo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SERVERS=$REPO/tests/servers
PY=/usr/bin/python3
BP=$HERE/bench_promote.py

unset AWS_CA_BUNDLE CURL_CA_BUNDLE REQUESTS_CA_BUNDLE SSL_CERT_FILE AWS_PROFILE \
  AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_DEFAULT_REGION AWS_REGION \
  http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY \
  PGHOST PGPORT PGUSER PGDATABASE PGSERVICE PGPASSWORD 2>/dev/null || true
export NO_PROXY='*' no_proxy='*'

BACKEND=s3rver
NFILES=500
FSIZE=4096
ROUNDS=2
WORKERS=4
ONLY=a,b,c,d,seed,limit
PG_FAST=0
LOG_LEVEL=
KEEP=0
TRACE=0
TIME_LIMIT=1500
HOLD=0
BIN=${CUSTODYFS_BIN:-$REPO/build/fs/custodyfs}

die() { echo "bench_promote.sh: $*" >&2; exit 1; }
note() { echo "bench: $(date +%H:%M:%S) $*" >&2; }

while [ $# -gt 0 ]; do
  case $1 in
  --swift) BACKEND=swift ;;
  --s3rver) BACKEND=s3rver ;;
  --files) NFILES=$2; shift ;;
  --size) FSIZE=$2; shift ;;
  --rounds) ROUNDS=$2; shift ;;
  --workers) WORKERS=$2; shift ;;
  --only) ONLY=$2; shift ;;
  --pg-fast) PG_FAST=1 ;;
  --log-level) LOG_LEVEL=$2; shift ;;
  --keep) KEEP=1 ;;
  --trace) TRACE=1; KEEP=1 ;;
  --time-limit) TIME_LIMIT=$2; shift ;;
  --bin) BIN=$2; shift ;;
  --hold) HOLD=$2; shift ;;
  -h | --help) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ $NFILES =~ ^[0-9]+$ && $NFILES -ge 1 && $NFILES -le 20000 ]] || die "--files: 1..20000"
[[ $FSIZE =~ ^[0-9]+$ && $FSIZE -ge 1 ]] || die "--size: bytes >= 1"
[[ $ROUNDS =~ ^[1-9]$ ]] || die "--rounds: 1..9"
[[ $WORKERS =~ ^[0-9]+$ && $WORKERS -ge 1 && $WORKERS -le 32 ]] || die "--workers: 1..32"
[[ $TIME_LIMIT =~ ^[0-9]+$ && $HOLD =~ ^[0-9]+$ ]] || die "--time-limit/--hold: seconds"
TIME_LIMIT=$((TIME_LIMIT + HOLD))
[ "$TRACE" = 1 ] && LOG_LEVEL=3
phase() { [[ ",$ONLY," == *",$1,"* ]]; }

[ -x "$PY" ] || die "$PY not found"
"$PY" -c 'import boto3, psycopg2' 2>/dev/null || die "$PY lacks boto3/psycopg2"
[ -x "$BIN" ] || die "daemon binary not found at $BIN: meson compile -C build"
command -v fusermount3 >/dev/null || die "fusermount3 not found"
[ -e /dev/fuse ] || die "/dev/fuse missing"

case $BACKEND in
s3rver) AK=S3RVER SK=S3RVER ;;
swift) AK=test:tester SK=testing ;;
esac
BASE_BUCKET=bench-baseline
RECEPTION=recepcao-raw
STORAGE=storage-unique
P=benchp

TMP=$(mktemp -d "${CUSTODYFS_BENCH_TMP:-/tmp}/custodyfs-bench-promote.XXXXXX")
chmod 755 "$TMP"
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

res() { echo "$1=$2" >>"$RES"; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
mounted() { awk -v m="$MNT" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
py() { "$PY" "$REPO/tests/bench/bench.py" "$@"; }
bp() { "$PY" "$BP" "$@"; }

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

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$WATCHDOG" ]; then kill "$WATCHDOG" 2>/dev/null; wait "$WATCHDOG" 2>/dev/null; fi
  stop_daemon
  "$SERVERS/$BACKEND.sh" stop "$TMP/servers" >/dev/null 2>&1
  "$SERVERS/pg.sh" stop "$TMP/servers" >/dev/null 2>&1
  if [ "$KEEP" = 1 ] || mounted; then
    echo "bench: files kept in $TMP (daemon log $LOG)" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A hard bound on the whole run: a hung FUSE request blocks the shell, so the watchdog kills
# the daemon first -- that fails the hung request.
(
  trap 'kill "$sp" 2>/dev/null; exit 0' TERM
  sleep "$TIME_LIMIT" &
  sp=$!
  wait "$sp"
  echo "bench_promote.sh: time limit of ${TIME_LIMIT}s reached: aborting" >&2
  [ -s "$TMP/daemon.pid" ] && kill -KILL "$(cat "$TMP/daemon.pid")" 2>/dev/null
  kill -TERM $$ 2>/dev/null
) &
WATCHDOG=$!

# ---------------------------------------------------------------------------- servers
cp "$BIN" "$TMP/custodyfs"
res bin "$BIN"
res bin_mtime "$(date -r "$BIN" '+%Y-%m-%d %H:%M:%S')"
res backend "$BACKEND"
res pg_fast "$PG_FAST"
res n "$NFILES"
res size "$FSIZE"
res rounds "$ROUNDS"
res workers "$WORKERS"

note "starting PostgreSQL (fsync $([ "$PG_FAST" = 1 ] && echo off || echo on))"
PGPORT_=$(py freeport)
CONNINFO=$(CUSTODYFS_PG_FAST=$PG_FAST "$SERVERS/pg.sh" start "$TMP/servers" "$PGPORT_" | tail -n1)
PGMASTER=$(head -n1 "$TMP/servers/pg/data/postmaster.pid")
if [ "$TRACE" = 1 ]; then
  "$PY" - "$PGPORT_" <<'EOF'
import sys, psycopg2
c = psycopg2.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres")
c.autocommit = True
c.cursor().execute("ALTER DATABASE custody SET log_min_duration_statement = 0")
EOF
fi

note "starting $BACKEND"
if [ "$BACKEND" = swift ]; then
  S3PORT=$(py freeport --offsets 0,10,11,12,20)
else
  S3PORT=$(py freeport)
fi
EP=$("$SERVERS/$BACKEND.sh" start "$TMP/servers" "$S3PORT" "$RECEPTION" "$STORAGE" "$BASE_BUCKET" | tail -n1)
[[ $EP == http://127.0.0.1:* ]] || die "unexpected endpoint '$EP' (loopback only)"
s3pids() {
  if [ "$BACKEND" = swift ]; then
    cat "$TMP"/servers/swift/run/*.pid 2>/dev/null | tr '\n' ' '
  else
    cat "$TMP/servers/s3rver/s3rver.pid"
  fi
}
S3ARGS=(--endpoint "$EP" --access-key "$AK" --secret-key "$SK")

umask 077
{
  echo "# written by tests/bench/bench_promote.sh"
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
  echo "promote_workers = $WORKERS"
  [ -n "$LOG_LEVEL" ] && echo "log_level = $LOG_LEVEL"
} >"$CFG"
chmod 600 "$CFG"
umask 022

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
mount_daemon

cpu_daemon() { py cpu "$DPID"; }
cpu_s3() { py cpu $(s3pids); }
cpu_pg() { py cpu $(py pgpids "$PGMASTER"); }
xacts() { py pgstat "$CONNINFO"; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
measure_start() { M_D=$(cpu_daemon) M_S=$(cpu_s3) M_P=$(cpu_pg) M_X=$(xacts); }
# measure_end TAG [TOOL_CPU]: the tool's own CPU (a child, measured by time) is added
measure_end() {
  local tag=$1 extra=${2:-0}
  res "${tag}_dcpu" "$(fsub "$M_D" "$(cpu_daemon)" | awk -v e="$extra" '{ printf "%.3f", $1 + e }')"
  res "${tag}_scpu" "$(fsub "$M_S" "$(cpu_s3)")"
  res "${tag}_pcpu" "$(fsub "$M_P" "$(cpu_pg)")"
  res "${tag}_xacts" "$(($(xacts) - M_X - 1))"
}

# receive DIR NAME [N]: cp -r DIR into inbox/NAME through the mount (untimed); waits for the
# N (default NFILES) rows
receive() {
  local src=$1 name=$2 n=${3:-$NFILES} rc=0
  timeout -k 5 600 cp -r "$src" "$MNT/inbox/$name" || rc=$?
  [ "$rc" = 0 ] || note "!! receiving $name: cp exit $rc"
  bp waitrows "$CONNINFO" "$name/" "$n" --budget 120 --tag "recv_$name" >>"$RES"
}

# timed TAG CMD...: runs CMD (bounded), records secs, rc, CPU
timed() {
  local tag=$1 t0 t1 rc=0
  shift
  measure_start
  t0=$(now)
  timeout -k 5 900 "$@" >>"$TMP/phase.out" 2>&1 || rc=$?
  t1=$(now)
  measure_end "$tag"
  res "${tag}_secs" "$(elapsed "$t0" "$t1")"
  res "${tag}_rc" "$rc"
  [ "$rc" = 0 ] || note "!! $tag: exit $rc (see $TMP/phase.out)"
}

check() { # check TAG SRC_PREFIX DEST_PREFIX OUTCOME
  bp check "${S3ARGS[@]}" --db "$CONNINFO" --reception "$RECEPTION" --storage "$STORAGE" \
    --src-prefix "$2" --dest-prefix "$3" --n "$NFILES" --size "$FSIZE" --outcome "$4" \
    --tag "$1" >>"$RES"
}

mkdir "$MNT/projects/$P"
# warm-up: one small promotion (connections, prepared statements, project lookups)
mkdir -p "$TMP/warm"
py gen "$TMP/warm" 5 "$FSIZE"
receive "$TMP/warm" warm 5
mv "$MNT/inbox/warm" "$MNT/projects/$P/"

for ((r = 1; r <= ROUNDS; r++)); do
  note "round $r/$ROUNDS: generating and receiving files (untimed)"
  for ph in a c d seed limit; do
    phase "$ph" || continue
    rm -rf "$TMP/src-$ph"
    py gen "$TMP/src-$ph" "$NFILES" "$FSIZE"
  done
  phase a && receive "$TMP/src-a" "pa-r$r"
  phase c && receive "$TMP/src-c" "pc-r$r"
  phase d && receive "$TMP/src-d" "pd-r$r"
  phase seed && bp put "${S3ARGS[@]}" --bucket "$RECEPTION" --prefix "seed-r$r" --src "$TMP/src-seed" >/dev/null
  phase limit && bp put "${S3ARGS[@]}" --bucket "$RECEPTION" --prefix "lim-r$r" --src "$TMP/src-limit" >/dev/null

  if phase a; then
    note "(a) round $r: mv inbox/pa-r$r projects/$P/"
    timed "a_r$r" mv "$MNT/inbox/pa-r$r" "$MNT/projects/$P/"
    res "a_r${r}_done" "$NFILES"
    check "a_r$r" "pa-r$r" "$P/pa-r$r" copied
  fi
  if phase a && phase b; then
    receive "$TMP/src-a" "pa-r$r"
    note "(b) round $r: mv -T inbox/pa-r$r projects/$P/pa-r$r (every file stored already)"
    timed "b_r$r" mv -T "$MNT/inbox/pa-r$r" "$MNT/projects/$P/pa-r$r"
    res "b_r${r}_done" "$NFILES"
    check "b_r$r" "pa-r$r" "$P/pa-r$r" duplicate
  fi
  if phase c; then
    mkdir "$MNT/projects/$P/pc-r$r"
    note "(c) round $r: mv inbox/pc-r$r/* projects/$P/pc-r$r/"
    timed "c_r$r" bash -c 'mv "$1"/* "$2"/' mv "$MNT/inbox/pc-r$r" "$MNT/projects/$P/pc-r$r"
    res "c_r${r}_done" "$NFILES"
    check "c_r$r" "pc-r$r" "$P/pc-r$r" copied
  fi
  if phase d; then
    note "(d) round $r: custodyfs promote --project $P --prefix-in-inbox pd-r$r"
    # the tool's own CPU: /usr/bin/time-free, from its rusage through bash's times
    TOOLCPU=$TMP/toolcpu
    timed "d_r$r" bash -c '"$1" promote --project "$2" --prefix-in-inbox "$3" -o "config=$4" \
      </dev/null; rc=$?; times >"$5"; exit $rc' tool "$TMP/custodyfs" "$P" "pd-r$r" "$CFG" "$TOOLCPU"
    res "d_r${r}_toolcpu" "$(awk 'NR == 2 { gsub(/[ms]/, " "); print $1 * 60 + $2 + $3 * 60 + $4 }' "$TOOLCPU")"
    res "d_r${r}_done" "$NFILES"
    check "d_r$r" "pd-r$r" "$P/pd-r$r" copied
  fi
  if phase seed; then
    note "(baseline 1) round $r: the seed's pipeline, pass 1 and pass 2"
    for pass in 1 2; do
      measure_start
      bp seed "${S3ARGS[@]}" --src-bucket "$RECEPTION" --prefix "seed-r$r" \
        --dest-bucket "$BASE_BUCKET" --dest-prefix "seedp" --db "$CONNINFO" \
        --tag "seed${pass}_r$r" >>"$RES"
      measure_end "seed${pass}_r$r"
    done
    res "seed1_r${r}_objects" "$(bp count "${S3ARGS[@]}" --bucket "$BASE_BUCKET" --prefix "seedp/seed-r$r" | cut -d= -f2)"
  fi
  if phase limit; then
    note "(baseline 2) round $r: HEAD + CopyObject + DeleteObject, $WORKERS workers"
    measure_start
    bp limit "${S3ARGS[@]}" --src-bucket "$RECEPTION" --prefix "lim-r$r" \
      --dest-bucket "$BASE_BUCKET" --dest-prefix "limp" --workers "$WORKERS" \
      --tag "limit_r$r" >>"$RES"
    measure_end "limit_r$r"
    res "limit_r${r}_objects" "$(bp count "${S3ARGS[@]}" --bucket "$BASE_BUCKET" --prefix "limp/lim-r$r" | cut -d= -f2)"
    res "limit_r${r}_src_left" "$(bp count "${S3ARGS[@]}" --bucket "$RECEPTION" --prefix "lim-r$r" | cut -d= -f2)"
  fi
done

bp report "$RES"
if [ "$TRACE" = 1 ]; then
  echo "trace: daemon log $LOG; PostgreSQL log $TMP/servers/pg/postgres.log; results $RES"
fi
echo "daemon log: $(grep -c 'promotion:' "$LOG" || true) promotion lines; errors: $(grep -ci 'error' "$LOG" || true)"
if [ "$HOLD" -gt 0 ]; then
  {
    echo "holding the stack for up to ${HOLD}s (touch $TMP/release to end it now):"
    echo "  MNT=$MNT DAEMON_PID=$DPID LOG=$LOG CFG=$CFG"
    echo "  EP=$EP CONNINFO='$CONNINFO'"
  } | tee "$TMP/hold.env" >&2
  for ((i = 0; i < HOLD * 2; i++)); do
    [ -e "$TMP/release" ] && break
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.5
  done
fi
