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

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export CURL_HOME=/nonexistent # no ~/.curlrc

TIME_LIMIT=600

while [ $# -gt 0 ]; do
  bench_opt "$@"
  [ "$BENCH_SHIFT" != 0 ] || die "unknown option $1 (see --help)"
  shift "$BENCH_SHIFT"
done
[[ $NFILES =~ ^[0-9]+$ && $NFILES -ge 8 && $NFILES -le 5000 ]] || die "--files: 8..5000"
[[ $FSIZE =~ ^[0-9]+$ && $FSIZE -le 1048576 ]] || die "--size: 0..1048576"
# curl reads every --data-binary body of its config file when it starts
[ $((NFILES * FSIZE)) -le $((256 << 20)) ] || die "--files x --size: at most 256 MiB"
[[ $TIME_LIMIT =~ ^[0-9]+$ ]] || die "--time-limit: seconds"

[ -x "$PY" ] || die "$PY not found"
bench_need_fuse
command -v curl >/dev/null || die "curl not found"

bench_keys
bench_tmp custodyfs-bench-small
METRICS=$TMP/metrics/custodyfs.prom
mkdir -p "$TMP/metrics" "$TMP/curl"
chmod 700 "$TMP/curl"

pys() { "$PY" "$HERE/bench_small.py" "$@"; }

bench_guard

# ---------------------------------------------------------------------------- servers
res backend "$BACKEND"
res n "$NFILES"
res size "$FSIZE"

bench_servers "$RECEPTION" "$STORAGE" "$BASE_BUCKET"
bench_netrc "$TMP/curl/netrc" # named in curl's config files: credentials never in argv

# ---------------------------------------------------------------------------- the mount
bench_config "metrics_file = $METRICS" "metrics_interval = 1"
mount_daemon

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
  s0=$(cpu_s3)
  t0=$EPOCHREALTIME
  for ((j = 0; j < k; j++)); do
    timeout -k 5 "$BUDGET" curl -K "$TMP/curl/$tag.$j.cfg" >"$TMP/curl/$tag.$j.out" \
      2>>"$TMP/curl/$tag.err" &
    pids+=($!)
  done
  for j in "${pids[@]}"; do wait "$j" || rc=$?; done
  t1=$EPOCHREALTIME
  res "${tag}_cpu" "$(fsub "$s0" "$(cpu_s3)")"
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
s0=$(cpu_s3)
p0=$(cpu_pg)
t0=$EPOCHREALTIME
rc=0
timeout -k 5 "$BUDGET" cp -r "$SRC" "$MNT/inbox/small-fs1" || rc=$?
t1=$EPOCHREALTIME
pys waitsnap "$METRICS" "$t1" "$TMP/after.json" "$DPID" --budget 15
res fs1_cpu "$(fsub "$s0" "$(cpu_s3)")"
res fs1_pg_cpu "$(fsub "$p0" "$(cpu_pg)")"
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
