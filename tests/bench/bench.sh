#!/usr/bin/env bash
# custodyfs performance benchmark -- NOT a test: it prints figures and ratios, with the target
# beside each ratio, and never fails on a number.
#
#   tests/bench/bench.sh [--swift] [--only a,b,c] [--files N] [--size BYTES] [--big-mib M]
#                        [--rss-mib M] [--pg-fast] [--log-level 0-3] [--trace] [--no-ref]
#                        [--rounds R] [--big-rounds R] [--profile] [--keep] [--time-limit S]
#                        [--dir-objects N] [--bin PATH] [--hold S]
#
# In one run, against the same servers, it starts PostgreSQL (tests/servers/pg.sh) and ONE S3
# server (tests/servers/s3rver.sh, or swift.sh with --swift) on 127.0.0.1 in a temp dir,
# creates the buckets (recepcao-raw, storage-unique, and bench-baseline for the plain clients),
# mounts build/fs/custodyfs (a copy, so a concurrent rebuild cannot change it mid-run) and
# measures:
#  (a) N (500) files of 4 KiB copied serially into inbox/ with one `cp` process per file
#      (durable at close) -- vs the same files PUT serially by
#        baseline 1 (the MAIN ratio): boto3 put_object in a loop over one kept-alive connection,
#        baseline 2: `curl --aws-sigv4` per file (a process per PUT, like cp),
#      and, for information, boto3 PUT + psycopg2 INSERT/COMMIT per file (what the product must
#      do at least) and `cp` to a local directory (the cost of a process per file). Target of
#      custodyfs/boto3: >= 0.8 files/s ratio.
#  (b) one 256 MiB file `cp` into inbox/ vs boto3 upload_file (16 MiB parts, 4 threads like the
#      daemon's 4 upload workers): MB/s and ratio (target >= 0.9).
#  (c) the daemon's peak RSS (VmHWM, reset through /proc/PID/clear_refs just before) while a
#      1 GiB file is cp'd into inbox/ (target < 64 MiB), and the spool usage (the spool files
#      are unlinked O_TMPFILEs: measured through /proc/PID/fd, and du after close).
# Each phase checks what landed (object count and sizes in the bucket, SHA-256 metadata, audit
# rows), so a broken run cannot look fast. Also reported: CPU time of the daemon, the S3 server
# and PostgreSQL per phase, and PostgreSQL transactions per file.
#
# Options:
#   --swift         Swift (s3api, verifies SigV4) instead of s3rver
#   --only LIST     phases to run, e.g. a or b,c (default a,b,c)
#   --files N       files in (a) (default 500);  --size BYTES  their size (default 4096)
#   --big-mib M     size of (b) (default 256);   --rss-mib M   size of (c) (default 1024)
#   --pg-fast       PostgreSQL with fsync off (default: on, like production)
#   --log-level N   the daemon's [fs] log_level (default: the daemon's default)
#   --trace         profiling aids: log_level 3 (each S3 request in the daemon log) and
#                   PostgreSQL log_min_duration_statement=0 (each statement with its duration);
#                   the figures are then a little slower. Implies --keep.
#   --rounds R      rounds of (a) (default 3): the methods run in turn each round, the report
#                   gives the median and the range (the host may be shared and noisy)
#   --big-rounds R  rounds of (b) (default 3)
#   --no-ref        skip the information-only references in (a)
#   --dir-objects N after the rounds of (a), one more custodyfs pass into a directory that
#                   already holds N objects (put there by boto3 and logged by the daemon first):
#                   shows what the directory listing cache costs per file as directories grow
#   --profile       after the measured rounds, one more pass of (a) and of (b) with perf uprobes
#                   (group "cfsbench", removed at exit) on the daemon's functions: where each
#                   file's time goes (flush = PUT + SQL round trips, lookups, directory
#                   listings, part uploads, CompleteMultipartUpload, the metadata copy). Those
#                   passes are not part of the figures. Needs perf with uprobe support.
#   --keep          keep the temp dir (logs, config, data) after the run
#   --time-limit S  hard bound of the whole run (default 900): then the daemon is killed and
#                   everything is cleaned up
#   --bin PATH      daemon binary (default build/fs/custodyfs, or $CUSTODYFS_BIN)
#   --hold S        after the phases, keep the stack and the mount up for up to S seconds (for
#                   strace/perf by hand); prints where everything is; `touch DIR/release` ends it
# Env: CUSTODYFS_BENCH_TMP parent of the temp dir (default /tmp; the postgres user must reach it).
# Needs: root or fuse access, /usr/bin/python3 with boto3 + psycopg2, `npm ci` (s3rver) or the
# swift packages, PostgreSQL server binaries, curl >= 7.75 (--aws-sigv4).
set -Eeuo pipefail
export LC_ALL=C

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ONLY=a,b,c
BIG_MIB=256
RSS_MIB=1024
LOG_LEVEL=
TRACE=0
REF=1
TIME_LIMIT=900
HOLD=0
ROUNDS=3
BROUNDS=3
PROFILE=0
DIR_OBJECTS=0

while [ $# -gt 0 ]; do
  bench_opt "$@"
  [ "$BENCH_SHIFT" = 0 ] || { shift "$BENCH_SHIFT"; continue; }
  case $1 in
  --only) ONLY=$2; shift ;;
  --big-mib) BIG_MIB=$2; shift ;;
  --rss-mib) RSS_MIB=$2; shift ;;
  --log-level) LOG_LEVEL=$2; shift ;;
  --trace) TRACE=1; KEEP=1 ;;
  --no-ref) REF=0 ;;
  --hold) HOLD=$2; shift ;;
  --profile) PROFILE=1 ;;
  --dir-objects) DIR_OBJECTS=$2; shift ;;
  --rounds) ROUNDS=$2; shift ;;
  --big-rounds) BROUNDS=$2; shift ;;
  *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ $NFILES =~ ^[0-9]+$ && $NFILES -ge 1 && $NFILES -le 100000 ]] || die "--files: 1..100000"
[[ $FSIZE =~ ^[0-9]+$ && $BIG_MIB =~ ^[0-9]+$ && $RSS_MIB =~ ^[0-9]+$ ]] || die "sizes must be numbers"
[[ $TIME_LIMIT =~ ^[0-9]+$ && $HOLD =~ ^[0-9]+$ ]] || die "--time-limit/--hold: seconds"
[[ $ROUNDS =~ ^[1-9]$ && $BROUNDS =~ ^[1-9]$ ]] || die "--rounds/--big-rounds: 1..9"
[[ $DIR_OBJECTS =~ ^[0-9]+$ && $DIR_OBJECTS -le 100000 ]] || die "--dir-objects: 0..100000"
TIME_LIMIT=$((TIME_LIMIT + HOLD))
[ "$TRACE" = 1 ] && LOG_LEVEL=3
phase() { [[ ",$ONLY," == *",$1,"* ]]; }

[ -x "$PY" ] || die "$PY not found (Debian's python3 with boto3 and psycopg2)"
[ "$PROFILE" = 0 ] || command -v perf >/dev/null || die "--profile needs perf (linux-perf)"
"$PY" -c 'import boto3, psycopg2' 2>/dev/null || die "$PY lacks boto3/psycopg2"
bench_need_fuse
command -v curl >/dev/null || die "curl not found"

bench_keys
bench_tmp custodyfs-bench

bench_cleanup_extra() { [ "$PROFILE" = 1 ] && perf probe -q -d 'cfsbench:*' >/dev/null 2>&1; }
bench_guard

# ---------------------------------------------------------------------------- servers
res bin "$BIN"
res bin_mtime "$(date -r "$BIN" '+%Y-%m-%d %H:%M:%S')"
res backend "$BACKEND"
res pg_fast "$PG_FAST"

bench_servers "$RECEPTION" "$STORAGE" "$BASE_BUCKET"
bench_netrc "$TMP/netrc"

# ---------------------------------------------------------------------------- the mount
bench_config "${LOG_LEVEL:+log_level = $LOG_LEVEL}"
mount_daemon

# loop_files DIR BUDGET FN: calls FN once per DIR/*.bin, the path in $F, serially, stopping
# after BUDGET seconds; sets DONE, ERRS, SECS. A fork per file, as a shell script does.
loop_files() {
  local dir=$1 budget=$2 fn=$3 t0 t1 dl
  DONE=0 ERRS=0
  t0=$(now)
  dl=$((${t0/./} + budget * 1000000))
  for F in "$dir"/*.bin; do
    if "$fn" 2>>"$TMP/loop.err"; then DONE=$((DONE + 1)); else ERRS=$((ERRS + 1)); fi
    if [ "${EPOCHREALTIME/./}" -gt "$dl" ]; then
      note "time budget of ${budget}s spent after $((DONE + ERRS)) files"
      break
    fi
  done
  t1=$(now)
  SECS=$(elapsed "$t0" "$t1")
}
op_cplocal() { cp "$F" "$TMP/cplocal/"; }
op_fs() { cp "$F" "$FS_DIR/"; }
op_fs_warm() { cp "$F" "$MNT/inbox/bench-warm/"; }
op_curl() {
  curl -sS -f -o /dev/null --max-time 30 --noproxy '*' \
    --aws-sigv4 "aws:amz:us-east-1:s3" --netrc-file "$NETRC" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    -T "$F" "$EP/$BASE_BUCKET/$CURL_PREFIX/${F##*/}"
}

count_log() { [ -f "$LOG" ] && wc -l <"$LOG" || echo 0; }

# ---------------------------------------------------------------------------- (a)
# Each round runs every method once, in turn, on fresh key prefixes: the report takes the
# median over rounds (the host may be shared: one slow second must not decide a ratio).
if phase a; then
  note "(a) generating $NFILES files of $FSIZE B"
  SRC=$TMP/src-small
  py gen "$SRC" "$NFILES" "$FSIZE"
  py gen "$TMP/src-warm" 10 "$FSIZE"
  res a_n "$NFILES"
  res a_size "$FSIZE"
  res a_rounds "$ROUNDS"
  BUDGET=$((60 + NFILES / 5))
  mkdir "$MNT/inbox/bench-warm"
  loop_files "$TMP/src-warm" 30 op_fs_warm
  CURL_PREFIX=bench-a-curl-warm
  loop_files "$TMP/src-warm" 30 op_curl
  mkdir -p "$TMP/cplocal"
  loop_files "$TMP/src-warm" 10 op_cplocal
  for ((r = 1; r <= ROUNDS; r++)); do
    if [ "$REF" = 1 ]; then
      rm -rf "$TMP/cplocal"
      mkdir -p "$TMP/cplocal"
      loop_files "$SRC" "$BUDGET" op_cplocal
      res "a_cplocal_r${r}_done" "$DONE"
      res "a_cplocal_r${r}_secs" "$SECS"
    fi

    note "(a) round $r/$ROUNDS: custodyfs, cp x $NFILES into inbox/bench-a-r$r/"
    FS_DIR=$MNT/inbox/bench-a-r$r
    mkdir "$FS_DIR"
    ls "$FS_DIR" >/dev/null
    L0=$(count_log)
    measure_start
    loop_files "$SRC" "$BUDGET" op_fs
    measure_end "a_fs_r$r"
    res "a_fs_r${r}_done" "$DONE"
    res "a_fs_r${r}_errors" "$ERRS"
    res "a_fs_r${r}_secs" "$SECS"
    res "a_fs_r${r}_log" "$L0-$(count_log)"
    py verify "${S3ARGS[@]}" --bucket "$RECEPTION" --prefix "bench-a-r$r" --n "$NFILES" --size "$FSIZE" --tag "a_fs_r$r" >>"$RES"
    py dbcount "$CONNINFO" "bench-a-r$r/" --tag "a_fs_r$r" >>"$RES"

    note "(a) round $r/$ROUNDS: boto3 put_object loop (one kept-alive connection)"
    measure_start
    py boto3-small "${S3ARGS[@]}" --bucket "$BASE_BUCKET" --prefix "bench-a-boto3-r$r" --src "$SRC" \
      --n "$NFILES" --budget "$BUDGET" --tag "a_boto3_r$r" >>"$RES"
    measure_end "a_boto3_r$r"
    py verify "${S3ARGS[@]}" --bucket "$BASE_BUCKET" --prefix "bench-a-boto3-r$r" --n "$NFILES" --size "$FSIZE" --tag "a_boto3_r$r" >>"$RES"

    note "(a) round $r/$ROUNDS: curl --aws-sigv4, a process per file"
    CURL_PREFIX=bench-a-curl-r$r
    measure_start
    loop_files "$SRC" "$BUDGET" op_curl
    measure_end "a_curl_r$r"
    res "a_curl_r${r}_done" "$DONE"
    res "a_curl_r${r}_errors" "$ERRS"
    res "a_curl_r${r}_secs" "$SECS"
    py verify "${S3ARGS[@]}" --bucket "$BASE_BUCKET" --prefix "$CURL_PREFIX" --n "$NFILES" --size "$FSIZE" --tag "a_curl_r$r" >>"$RES"

    if [ "$REF" = 1 ]; then
      note "(a) round $r/$ROUNDS: reference, boto3 PUT + psycopg2 INSERT/COMMIT per file"
      py boto3-small "${S3ARGS[@]}" --bucket "$BASE_BUCKET" --prefix "bench-a-ref-r$r" --src "$SRC" \
        --n "$NFILES" --budget "$BUDGET" --db "$CONNINFO" --tag "a_ref_r$r" >>"$RES"
    fi
  done
fi

if phase a && [ "$DIR_OBJECTS" -gt 0 ]; then
  note "(a) info: $DIR_OBJECTS objects put into recepcao-raw/bench-a-bigdir/ by boto3"
  py fill "${S3ARGS[@]}" --bucket "$RECEPTION" --prefix bench-a-bigdir --n "$DIR_OBJECTS" \
    --budget 300 --tag a_bigdir >>"$RES"
  res a_bigdir_preload "$DIR_OBJECTS"
  ls "$MNT/inbox/bench-a-bigdir" >/dev/null # the daemon lists them and logs them (foreign)
  py waitrows "$CONNINFO" bench-a-bigdir/ "$DIR_OBJECTS" --budget 300 --tag a_bigdir_logged >>"$RES"
  note "(a) info: custodyfs, cp x $NFILES into that directory"
  FS_DIR=$MNT/inbox/bench-a-bigdir
  loop_files "$SRC" "$BUDGET" op_fs
  res a_bigdir_done "$DONE"
  res a_bigdir_errors "$ERRS"
  res a_bigdir_secs "$SECS"
  py verify "${S3ARGS[@]}" --bucket "$RECEPTION" --prefix bench-a-bigdir --n "$NFILES" --size "$FSIZE" --tag a_bigdir >>"$RES"
fi

# ---------------------------------------------------------------------------- (b)
if phase b; then
  note "(b) generating a $BIG_MIB MiB file"
  BIGB=$TMP/big-b.bin
  SHA_B=$(py gen1 "$BIGB" "$BIG_MIB")
  res b_mib "$BIG_MIB"
  res b_rounds "$BROUNDS"
  for ((r = 1; r <= BROUNDS; r++)); do
    mkdir "$MNT/inbox/bench-b-r$r"
    note "(b) round $r/$BROUNDS: custodyfs, cp into inbox/bench-b-r$r/"
    L0=$(count_log)
    measure_start
    t0=$(now)
    rc=0
    timeout -k 5 300 cp "$BIGB" "$MNT/inbox/bench-b-r$r/big.bin" || rc=$?
    t1=$(now)
    measure_end "b_fs_r$r"
    res "b_fs_r${r}_rc" "$rc"
    res "b_fs_r${r}_secs" "$(elapsed "$t0" "$t1")"
    res "b_fs_r${r}_log" "$L0-$(count_log)"
    py verify-one "${S3ARGS[@]}" --bucket "$RECEPTION" --obj "bench-b-r$r/big.bin" \
      --size $((BIG_MIB << 20)) --sha256 "$SHA_B" --tag "b_fs_r$r" >>"$RES"
    py dbcount "$CONNINFO" "bench-b-r$r/" --tag "b_fs_r$r" >>"$RES"

    note "(b) round $r/$BROUNDS: boto3 upload_file (16 MiB parts, 4 threads)"
    measure_start
    py boto3-big "${S3ARGS[@]}" --bucket "$BASE_BUCKET" --obj "bench-b-r$r/big.bin" --src "$BIGB" \
      --part-mib 16 --workers 4 --tag "b_boto3_r$r" >>"$RES"
    measure_end "b_boto3_r$r"
    py verify-one "${S3ARGS[@]}" --bucket "$BASE_BUCKET" --obj "bench-b-r$r/big.bin" \
      --size $((BIG_MIB << 20)) --tag "b_boto3_r$r" >>"$RES"
  done
  rm -f "$BIGB"
fi

# ---------------------------------------------------------------------------- (c)
if phase c; then
  note "(c) generating a $RSS_MIB MiB file"
  BIGC=$TMP/big-c.bin
  SHA_C=$(py gen1 "$BIGC" "$RSS_MIB")
  res c_mib "$RSS_MIB"
  res pre_c_hwm_kib "$(awk '/^VmHWM:/ { print $2 }' "/proc/$DPID/status")"
  # reset the peak to the current RSS (Linux >= 4.0), so VmHWM is the peak of this write
  echo 5 >"/proc/$DPID/clear_refs" || note "cannot reset VmHWM: the figure is the peak since mount"
  mkdir "$MNT/inbox/bench-c"
  rm -f "$TMP/watch.stop"
  py watch "$DPID" "$SPOOL" "$TMP/watch.stop" "$TMP/watch.out" --budget 600 --tag c &
  WPID=$!
  note "(c) custodyfs: cp into inbox/bench-c/ (sampling RSS and spool)"
  t0=$(now)
  rc=0
  timeout -k 5 400 cp "$BIGC" "$MNT/inbox/bench-c/big.bin" || rc=$?
  t1=$(now)
  touch "$TMP/watch.stop"
  wait "$WPID" || true
  cat "$TMP/watch.out" >>"$RES"
  res c_rc "$rc"
  res c_secs "$(elapsed "$t0" "$t1")"
  res c_spool_du "$(du -sh "$SPOOL" | cut -f1)"
  py verify-one "${S3ARGS[@]}" --bucket "$RECEPTION" --obj bench-c/big.bin \
    --size $((RSS_MIB << 20)) --sha256 "$SHA_C" --tag c >>"$RES"
  rm -f "$BIGC"
fi

# ---------------------------------------------------------------------------- --profile
PROBED=(cfs_getattr cfs_create cfs_write cfs_flush cfs_release ofile_commit upload_finish
  s3_put_fd s3_mpu_create s3_mpu_upload_part s3_mpu_complete s3_copy s3_list_all
  dcache_lookup db_reception_record pg_exec cfs_actor)
PROBE_OUT=$TMP/profile.txt
: >"$PROBE_OUT"
# profiled PHASE_TITLE FILES TIMELINE CMD...: runs CMD with the uprobes recorded
profiled() {
  local title=$1 files=$2 tl=$3 pp
  shift 3
  perf record -q -e 'cfsbench:*' -p "$DPID" -o "$TMP/perf.data" >/dev/null 2>&1 &
  pp=$!
  sleep 1.5
  "$@" || true
  sleep 0.3
  kill -INT "$pp" 2>/dev/null
  wait "$pp" 2>/dev/null || true
  perf script -i "$TMP/perf.data" -F tid,time,event 2>/dev/null >"$TMP/perf.txt" || true
  py probes "$TMP/perf.txt" --title "$title" --files "$files" $tl >>"$PROBE_OUT"
  echo >>"$PROBE_OUT"
}
if [ "$PROFILE" = 1 ]; then
  perf probe -q -d 'cfsbench:*' >/dev/null 2>&1 || true
  for fn in "${PROBED[@]}"; do
    perf probe -q -x "$TMP/custodyfs" -a "cfsbench:${fn}=${fn}" >/dev/null 2>&1 &&
      perf probe -q -x "$TMP/custodyfs" -a "cfsbench:${fn}_ret=${fn}%return" >/dev/null 2>&1 ||
      note "--profile: no uprobe on $fn"
  done
  if phase a; then
    note "profile: (a) one more pass of $NFILES files with uprobes"
    FS_DIR=$MNT/inbox/bench-a-profile
    mkdir "$FS_DIR"
    ls "$FS_DIR" >/dev/null
    prof_a() { loop_files "$SRC" "$BUDGET" op_fs; PROF_SECS=$SECS; }
    profiled "(a) $NFILES x $FSIZE B, cp into inbox/ with uprobes (slower than unprobed)" "$NFILES" "" prof_a
    echo "  wall of the profiled pass: $(awk -v s="$PROF_SECS" -v n="$NFILES" 'BEGIN { printf "%.2f ms/file", 1000 * s / n }')" >>"$PROBE_OUT"
    echo >>"$PROBE_OUT"
  fi
  if phase b; then
    note "profile: (b) one more $BIG_MIB MiB cp with uprobes"
    py gen1 "$TMP/big-p.bin" "$BIG_MIB" >/dev/null
    mkdir "$MNT/inbox/bench-b-profile"
    profiled "(b) one $BIG_MIB MiB cp into inbox/ with uprobes" 0 --timeline \
      timeout -k 5 300 cp "$TMP/big-p.bin" "$MNT/inbox/bench-b-profile/big.bin"
    rm -f "$TMP/big-p.bin"
  fi
  perf probe -q -d 'cfsbench:*' >/dev/null 2>&1 || true
fi

py report "$RES"
if [ -s "$PROBE_OUT" ]; then
  echo "--profile: time per function in the daemon (perf uprobes; ms)"
  cat "$PROBE_OUT"
fi
if [ "$TRACE" = 1 ]; then
  echo "trace: daemon log $LOG; line ranges per phase: $(grep '_log=' "$RES" | tr '\n' ' ')"
  echo "trace: PostgreSQL log $TMP/servers/pg/postgres.log"
fi
bench_hold "MNT=$MNT DAEMON_PID=$DPID SPOOL=$SPOOL LOG=$LOG" \
  "EP=$EP AK=$AK SK=$SK BUCKET=$RECEPTION BASELINE_BUCKET=$BASE_BUCKET" \
  "CONNINFO='$CONNINFO' PG_LOG=$TMP/servers/pg/postgres.log"
