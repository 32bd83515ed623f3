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

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BP=$HERE/bench_promote.py

ROUNDS=2
WORKERS=4
ONLY=a,b,c,d,seed,limit
LOG_LEVEL=
TRACE=0
TIME_LIMIT=1500
HOLD=0

while [ $# -gt 0 ]; do
  bench_opt "$@"
  [ "$BENCH_SHIFT" = 0 ] || { shift "$BENCH_SHIFT"; continue; }
  case $1 in
  --rounds) ROUNDS=$2; shift ;;
  --workers) WORKERS=$2; shift ;;
  --only) ONLY=$2; shift ;;
  --log-level) LOG_LEVEL=$2; shift ;;
  --trace) TRACE=1; KEEP=1 ;;
  --hold) HOLD=$2; shift ;;
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
bench_need_fuse

bench_keys
P=benchp
bench_tmp custodyfs-bench-promote

bp() { "$PY" "$BP" "$@"; }

bench_guard

# ---------------------------------------------------------------------------- servers
res bin "$BIN"
res bin_mtime "$(date -r "$BIN" '+%Y-%m-%d %H:%M:%S')"
res backend "$BACKEND"
res pg_fast "$PG_FAST"
res n "$NFILES"
res size "$FSIZE"
res rounds "$ROUNDS"
res workers "$WORKERS"

bench_servers "$RECEPTION" "$STORAGE" "$BASE_BUCKET"

bench_config "promote_workers = $WORKERS" "${LOG_LEVEL:+log_level = $LOG_LEVEL}"
mount_daemon

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
bench_hold "MNT=$MNT DAEMON_PID=$DPID LOG=$LOG CFG=$CFG" "EP=$EP CONNINFO='$CONNINFO'"
