#!/usr/bin/env bash
# custodyfs small-file benchmark (issue 10) -- NOT a test: it prints figures, ratios with the
# target beside them, and a per-file breakdown; it never fails on a number.
#
#   tests/bench/bench_small.sh [--swift] [--files N] [--size BYTES] [--pg-fast] [--keep]
#                              [--time-limit S] [--bin PATH]
#
# In one run, against the same servers, it starts PostgreSQL (tests/servers/pg.sh) and ONE S3
# server (s3rver, or Swift's s3api with --swift, which checks SigV4) on 127.0.0.1 in a temp
# dir, mounts build/fs/custodyfs (a copy) with [fs] metrics_file (written every second), and
# measures N (500) files of 4 KiB:
#  (1) one curl process, keep-alive, SigV4 (--aws-sigv4), a PUT per file, with
#      x-amz-content-sha256: UNSIGNED-PAYLOAD and no Expect -- the server's serial rate for a
#      C client. Everything is in curl's config file (-K), one section per file: the
#      credentials through a netrc file it names, never argv (Swift's key "test:tester" holds
#      a colon, which curl's --user splits at); the body as --data-binary with PUT, since
#      -T always adds "Expect: 100-continue" and -H "Expect:" makes curl 7.88 sign a header
#      it does not send (Swift refuses the signature);
#  (2) custodyfs: `cp -r` of the directory of the same N files into inbox/;
#  (3) eight curl processes at once, N/8 files each, each keep-alive;
#  (4) custodyfs: `xargs -P8 -n N/8 cp -t` (eight cp processes, N/8 files each) into inbox/.
# It prints files/s and the ratios custodyfs/curl (targets >= 0.8), then the breakdown of (2):
# for each file, the milliseconds and counts from the daemon's own timers (the metrics file
# before and after: FUSE operations by callback, create->release, spool write, hashing, the
# upload and PUT, the reception row and its BEGIN/COMMIT, S3 requests by operation, SQL
# transactions), the daemon's CPU time per file (/proc/PID/stat utime+stime), next to curl's
# PUT time per file (its %{time_total}). What landed is checked (objects and sizes in the
# bucket, live reception rows), so a broken run cannot look fast.
#
# Options:
#   --swift         Swift (s3api, verifies SigV4) instead of s3rver
#   --files N       files (default 500, at most 5000);  --size BYTES  their size (4096)
#   --pg-fast       PostgreSQL with fsync off (default: on, like production)
#   --keep          keep the temp dir (logs, config, metrics snapshots)
#   --time-limit S  hard bound of the whole run (default 600): then the daemon is killed and
#                   everything is cleaned up
#   --bin PATH      daemon binary (default build/fs/custodyfs, or $CUSTODYFS_BIN)
# Env: CUSTODYFS_BENCH_TMP parent of the temp dir (default /tmp; the postgres user must reach it).
# Needs: root or fuse access, /usr/bin/python3 (with boto3/psycopg2 for the checks), `npm ci`
# (s3rver) or the swift packages, PostgreSQL server binaries, curl >= 7.75 (--aws-sigv4).
set -Eeuo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SERVERS=$REPO/tests/servers
PY=/usr/bin/python3

# local test stack only: no proxies, no CA bundles, no ambient AWS/PG settings
unset AWS_CA_BUNDLE CURL_CA_BUNDLE REQUESTS_CA_BUNDLE SSL_CERT_FILE AWS_PROFILE \
  AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_DEFAULT_REGION AWS_REGION \
  http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY \
  PGHOST PGPORT PGUSER PGDATABASE PGSERVICE PGPASSWORD 2>/dev/null || true
export NO_PROXY='*' no_proxy='*'
export CURL_HOME=/nonexistent # no ~/.curlrc

BACKEND=s3rver
NFILES=500
FSIZE=4096
PG_FAST=0
KEEP=0
TIME_LIMIT=600
BIN=${CUSTODYFS_BIN:-$REPO/build/fs/custodyfs}

die() { echo "bench_small.sh: $*" >&2; exit 1; }
note() { echo "bench: $(date +%H:%M:%S) $*" >&2; }

while [ $# -gt 0 ]; do
  case $1 in
  --swift) BACKEND=swift ;;
  --s3rver) BACKEND=s3rver ;;
  --files) NFILES=$2; shift ;;
  --size) FSIZE=$2; shift ;;
  --pg-fast) PG_FAST=1 ;;
  --keep) KEEP=1 ;;
  --time-limit) TIME_LIMIT=$2; shift ;;
  --bin) BIN=$2; shift ;;
  -h | --help) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ $NFILES =~ ^[0-9]+$ && $NFILES -ge 8 && $NFILES -le 5000 ]] || die "--files: 8..5000"
[[ $FSIZE =~ ^[0-9]+$ && $FSIZE -le 1048576 ]] || die "--size: 0..1048576"
# curl reads every --data-binary body of its config file when it starts
[ $((NFILES * FSIZE)) -le $((256 << 20)) ] || die "--files x --size: at most 256 MiB"
[[ $TIME_LIMIT =~ ^[0-9]+$ ]] || die "--time-limit: seconds"

[ -x "$PY" ] || die "$PY not found"
[ -x "$BIN" ] || die "daemon binary not found at $BIN: meson compile -C build"
command -v fusermount3 >/dev/null || die "fusermount3 not found"
[ -e /dev/fuse ] || die "/dev/fuse missing"
command -v curl >/dev/null || die "curl not found"

case $BACKEND in
s3rver) AK=S3RVER SK=S3RVER ;;
swift) AK=test:tester SK=testing ;;
esac
BASE_BUCKET=bench-baseline
RECEPTION=recepcao-raw

TMP=$(mktemp -d "${CUSTODYFS_BENCH_TMP:-/tmp}/custodyfs-bench-small.XXXXXX")
chmod 755 "$TMP" # the postgres user must reach $TMP/servers/pg
MNT=$TMP/mnt
SPOOL=$TMP/spool
CFG=$TMP/custodyfs.ini
LOG=$TMP/daemon.log
RES=$TMP/results
METRICS=$TMP/metrics/custodyfs.prom
mkdir -p "$MNT" "$SPOOL" "$TMP/servers" "$TMP/metrics" "$TMP/curl"
chmod 700 "$SPOOL" "$TMP/curl"
: >"$RES"
DPID=
WATCHDOG=

res() { echo "$1=$2" >>"$RES"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
mounted() { awk -v m="$MNT" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
py() { "$PY" "$HERE/bench.py" "$@"; }
pys() { "$PY" "$HERE/bench_small.py" "$@"; }

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
  echo "bench_small.sh: time limit of ${TIME_LIMIT}s reached: aborting" >&2
  [ -s "$TMP/daemon.pid" ] && kill -KILL "$(cat "$TMP/daemon.pid")" 2>/dev/null
  kill -TERM $$ 2>/dev/null
) &
WATCHDOG=$!

# ---------------------------------------------------------------------------- servers
cp "$BIN" "$TMP/custodyfs"
res backend "$BACKEND"
res n "$NFILES"
res size "$FSIZE"

note "starting PostgreSQL (fsync $([ "$PG_FAST" = 1 ] && echo off || echo on))"
PGPORT_=$(py freeport)
CONNINFO=$(CUSTODYFS_PG_FAST=$PG_FAST "$SERVERS/pg.sh" start "$TMP/servers" "$PGPORT_" | tail -n1)
PGMASTER=$(head -n1 "$TMP/servers/pg/data/postmaster.pid")

note "starting $BACKEND"
if [ "$BACKEND" = swift ]; then
  S3PORT=$(py freeport --offsets 0,10,11,12,20)
else
  S3PORT=$(py freeport)
fi
EP=$("$SERVERS/$BACKEND.sh" start "$TMP/servers" "$S3PORT" "$RECEPTION" storage-unique "$BASE_BUCKET" | tail -n1)
[[ $EP == http://127.0.0.1:* ]] || die "unexpected endpoint '$EP' (loopback only)"
s3pids() {
  if [ "$BACKEND" = swift ]; then
    cat "$TMP"/servers/swift/run/*.pid 2>/dev/null | tr '\n' ' '
  else
    cat "$TMP/servers/s3rver/s3rver.pid"
  fi
}
S3ARGS=(--endpoint "$EP" --access-key "$AK" --secret-key "$SK")
NETRC=$TMP/curl/netrc # named in curl's config files: credentials never in argv
printf 'machine 127.0.0.1 login %s password %s\n' "$AK" "$SK" >"$NETRC"
chmod 600 "$NETRC"

# ---------------------------------------------------------------------------- the mount
umask 077
{
  echo "# written by tests/bench/bench_small.sh"
  echo "[s3]"
  echo "endpoint = $EP"
  echo "region = us-east-1"
  echo "access_key_id = $AK"
  echo "secret_access_key = $SK"
  echo "reception_bucket = $RECEPTION"
  echo "storage_bucket = storage-unique"
  echo "path_style = true"
  echo "[postgres]"
  echo "conninfo = $CONNINFO"
  echo "[fs]"
  echo "spool_dir = $SPOOL"
  echo "metrics_file = $METRICS"
  echo "metrics_interval = 1"
} >"$CFG"
chmod 600 "$CFG"
umask 022

note "mounting custodyfs on $MNT"
setsid "$TMP/custodyfs" -f -o "config=$CFG" "$MNT" </dev/null >>"$LOG" 2>&1 &
DPID=$!
echo "$DPID" >"$TMP/daemon.pid"
for ((i = 0; i < 300; i++)); do
  kill -0 "$DPID" 2>/dev/null || { tail -n 30 "$LOG" >&2; die "the daemon exited before mounting"; }
  if mounted && timeout -k 1 5 test -d "$MNT/inbox"; then break; fi
  sleep 0.1
done
mounted || { tail -n 30 "$LOG" >&2; die "mount did not appear within 30 s"; }

# ---------------------------------------------------------------------------- the files
BUDGET=$((60 + NFILES / 5)) # seconds for one phase
PER=$(((NFILES + 7) / 8))   # files per parallel writer
note "generating $NFILES files of $FSIZE B"
SRC=$TMP/small
py gen "$SRC" "$NFILES" "$FSIZE"
py gen "$TMP/warm" 8 "$FSIZE"
mapfile -t FILES < <(printf '%s\n' "$SRC"/*.bin)

# curl_run TAG PREFIX K: K curl processes at once, file i to process i % K, each with its own
# config file (one connection kept alive for its PUTs); sets the results TAG_*
curl_run() {
  local tag=$1 prefix=$2 k=$3 j i t0 t1 rc=0 pids=() part
  for ((j = 0; j < k; j++)); do
    part=()
    for ((i = j; i < ${#FILES[@]}; i += k)); do part+=("${FILES[i]}"); done
    pys curlcfg "$TMP/curl/$tag.$j.cfg" "$EP" "$BASE_BUCKET" "$prefix" "$NETRC" "${part[@]}"
  done
  local s0
  s0=$(py cpu $(s3pids))
  t0=$EPOCHREALTIME
  for ((j = 0; j < k; j++)); do
    timeout -k 5 "$BUDGET" curl -K "$TMP/curl/$tag.$j.cfg" >"$TMP/curl/$tag.$j.out" \
      2>>"$TMP/curl/$tag.err" &
    pids+=($!)
  done
  for j in "${pids[@]}"; do wait "$j" || rc=$?; done
  t1=$EPOCHREALTIME
  res "${tag}_cpu" "$(awk -v a="$s0" -v b="$(py cpu $(s3pids))" 'BEGIN { printf "%.3f", b - a }')"
  res "${tag}_rc" "$rc"
  res "${tag}_secs" "$(elapsed "$t0" "$t1")"
  pys curltimes "$TMP/curl/$tag".*.out | sed "s/^/${tag}_/" >>"$RES"
  res "${tag}_done" "$(awk -F= -v k="${tag}_ok" '$1 == k { print $2 }' "$RES")"
  [ -s "$TMP/curl/$tag.err" ] && note "$tag: curl said: $(head -c 300 "$TMP/curl/$tag.err")"
  py verify "${S3ARGS[@]}" --bucket "$BASE_BUCKET" --prefix "$prefix" --n "$NFILES" \
    --size "$FSIZE" --tag "$tag" >>"$RES"
}

# fs_done TAG PREFIX: what landed of a custodyfs phase
fs_done() {
  local tag=$1 prefix=$2 n
  py verify "${S3ARGS[@]}" --bucket "$RECEPTION" --prefix "$prefix" --n "$NFILES" --size "$FSIZE" \
    --tag "$tag" >>"$RES"
  py dbcount "$CONNINFO" "$prefix/" --tag "$tag" >>"$RES"
  n=$(find "$MNT/inbox/$prefix" -maxdepth 1 -type f -name '*.bin' | wc -l)
  res "${tag}_done" "$n"
}

# warm-up: the connections, the daemon's pools, s3rver's JIT
note "warm-up"
mkdir "$MNT/inbox/warm"
timeout -k 5 60 cp "$TMP"/warm/*.bin "$MNT/inbox/warm/"
SAVE=("${FILES[@]}")
FILES=("$TMP"/warm/*.bin)
curl_run warm warm 1 >/dev/null
FILES=("${SAVE[@]}")

note "(1) curl, one process, keep-alive: $NFILES PUTs"
curl_run curl1 small-curl1 1

note "(2) custodyfs: cp -r of $NFILES files into inbox/"
sleep 1.2 # the metrics file of before: written after the warm-up's last request
pys waitsnap "$METRICS" "$EPOCHREALTIME" "$TMP/before.json" "$DPID" --budget 15
s0=$(py cpu $(s3pids))
p0=$(py cpu $(py pgpids "$PGMASTER"))
t0=$EPOCHREALTIME
rc=0
timeout -k 5 "$BUDGET" cp -r "$SRC" "$MNT/inbox/small-fs1" || rc=$?
t1=$EPOCHREALTIME
pys waitsnap "$METRICS" "$t1" "$TMP/after.json" "$DPID" --budget 15
res fs1_cpu "$(awk -v a="$s0" -v b="$(py cpu $(s3pids))" 'BEGIN { printf "%.3f", b - a }')"
res fs1_pg_cpu "$(awk -v a="$p0" -v b="$(py cpu $(py pgpids "$PGMASTER"))" 'BEGIN { printf "%.3f", b - a }')"
res fs1_rc "$rc"
res fs1_secs "$(elapsed "$t0" "$t1")"
fs_done fs1 small-fs1

note "(3) curl, 8 processes, keep-alive: $NFILES PUTs"
curl_run curl8 small-curl8 8

note "(4) custodyfs: xargs -P8 cp, $PER files per cp"
mkdir "$MNT/inbox/small-fs8"
t0=$EPOCHREALTIME
rc=0
printf '%s\0' "${FILES[@]}" |
  timeout -k 5 "$BUDGET" xargs -0 -P8 -n "$PER" cp -t "$MNT/inbox/small-fs8" || rc=$?
t1=$EPOCHREALTIME
res fs8_rc "$rc"
res fs8_secs "$(elapsed "$t0" "$t1")"
fs_done fs8 small-fs8

[ "$KEEP" = 1 ] && cp "$RES" "$TMP/results.txt"
pys table "$RES" "$TMP/before.json" "$TMP/after.json"
