#!/usr/bin/env bash
# custodyfs: THE test command.  usage: bash tests/run.sh [PYTEST_ARGS...]
#
#  1. builds into build/ (meson setup once, then meson compile; -Dwerror=true when CI=true)
#  2. unit and C tests: meson test -C build (a PostgreSQL and an s3rver are started for them,
#     see "C tests" below)
#  3. sanitizer build when CUSTODYFS_SANITIZE=1 (default: on when CI=true): build-asan/ with
#     -Db_sanitize=address,undefined, and its meson tests
#  4. integration tests (pytest tests/integration) against s3rver, against Swift (SigV4) and,
#     with the sanitizer build, against s3rver again: side by side (CUSTODYFS_IT_PARALLEL)
#  5. optional, off by default (also under CI=true): with CUSTODYFS_TSAN=1, a ThreadSanitizer
#     build build-tsan/ (-Db_sanitize=thread -Dbuildtype=debug -Dtests=disabled: the daemon
#     only, no meson tests) and one more integration pass on s3rver against it
#     (TSAN_OPTIONS: tests/tsan.supp, halt_on_error=0; a "WARNING: ThreadSanitizer" report in a
#     daemon's log fails the test that caused it). Slow: name the tests to run, e.g.
#     CUSTODYFS_TSAN=1 bash tests/run.sh tests/integration/test_races.py
# and prints, as its last line, "N passed, N failed" summed over all of them (a build that
# fails counts as one failed test). Exits non-zero when anything failed.
# Skipped checks are never counted as passed: each step's line says "N passed, N failed,
# N skipped" (pytest skips and xfails; meson SKIP results and TAP "# SKIP" subtests), and the
# line before the last gives the total skipped. A meson run that ran no test at all (e.g. the
# unit tests were not built) is a failure, not an empty success.
#
# Env:  CI=true                      werror build + sanitizer pass
#       CUSTODYFS_SANITIZE=0|1       force the sanitizer pass off/on
#       CUSTODYFS_TSAN=1             add the ThreadSanitizer pass (default 0, whatever CI says)
#       CUSTODYFS_BACKENDS           integration backends (default "s3rver swift")
#       CUSTODYFS_PYTEST_TIMEOUT     bound for one pytest run in seconds (default 3600)
#       CUSTODYFS_ASAN_SHARDS=N      the sanitizer pass of a whole-suite run as N passes side by side,
#                                    each with its own servers and a share of the test files
#                                    (default 2: it is the slowest pass, and mostly waits)
#       CUSTODYFS_SWIFT_ALL=1        the Swift pass of a whole-suite run runs the hostile reviews'
#                                    regression files too (default: only their tests marked
#                                    both_backends, those that depend on what the store does;
#                                    the rest run on s3rver, plain and under ASan. See
#                                    CUSTODYFS_DESELECT_REGRESSIONS in tests/integration/conftest.py;
#                                    tests marked store_independent, the database alone, too)
#       CUSTODYFS_S3RVER_ALL=1       with the sanitizer passes on, the plain s3rver pass of a
#                                    whole-suite run runs the regression files too (default:
#                                    left to the sanitizer passes, on the same store, like Swift)
#       (the sanitizer passes of a whole-suite run leave out the tests marked volume, scale tests
#       that the plain passes run: CUSTODYFS_DESELECT_VOLUME in tests/integration/conftest.py)
#       CUSTODYFS_IT_PARALLEL=0|1    run the integration passes one after another, or side by
#                                    side (default 1: each has its own servers and ports)
#       CUSTODYFS_KEEP_TMP=1         keep the integration temp dirs (logs, data)
# pytest gets CUSTODYFS_BIN (the daemon under test) and CUSTODYFS_BUILD (its build dir).
# Extra arguments go to pytest (e.g. bash tests/run.sh -k promote -x, or name test files:
# bash tests/run.sh tests/integration/test_inbox.py).
#
# C tests: while `meson test` runs, these are exported for tests that need servers:
#   CUSTODYFS_TEST_PG            "host=127.0.0.1 port=N dbname=postgres user=postgres" (superuser)
#   CUSTODYFS_TEST_PG_RESTART    a shell command that restarts that server
#   CUSTODYFS_TEST_PG_CONNINFO   "host=127.0.0.1 port=N dbname=custody user=custody"
#   PGHOST PGPORT PGUSER PGDATABASE  (the same, for libpq defaults)
#   CUSTODYFS_TEST_S3_ENDPOINT CUSTODYFS_TEST_S3_ACCESS_KEY CUSTODYFS_TEST_S3_SECRET_KEY
#   CUSTODYFS_TEST_S3_REGION     (s3rver, buckets recepcao-raw and storage-unique)
#   CUSTODYFS_TEST_EXPECT        the S3 backends started for them ("s3rver" or "s3rver swift"):
#                                a C test whose backend is listed but unreachable fails
#   CUSTODYFS_TEST_SWIFT_ENDPOINT / _ACCESS_KEY / _SECRET_KEY when swift is installed
#                                (Swift's s3api verifies SigV4 signatures)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
CI=${CI:-false}
SANITIZE=${CUSTODYFS_SANITIZE:-}
TSAN=${CUSTODYFS_TSAN:-0}
[ -n "$SANITIZE" ] || { [ "$CI" = true ] && SANITIZE=1 || SANITIZE=0; }
BACKENDS=${CUSTODYFS_BACKENDS:-s3rver swift}
PYTEST_TIMEOUT=${CUSTODYFS_PYTEST_TIMEOUT:-3600}
IT_PARALLEL=${CUSTODYFS_IT_PARALLEL:-1}
PYTEST_ARGS=("$@")
# the suite, unless the arguments name test files themselves (tests/integration/test_x.py::t)
PYTEST_PATHS=(tests/integration)
for a in "$@"; do
  [[ $a != -* ]] && [ -e "${a%%::*}" ] && PYTEST_PATHS=()
done

OUT=$(mktemp -d /tmp/custodyfs-run-XXXXXX)
chmod 755 "$OUT"
PASS=0
FAIL=0
SKIP=0
SUMMARY=()
T0=$(date +%s)

say() { printf '\n==== %s ====\n' "$*"; }
record() { # NAME PASSED FAILED SKIPPED [NOTE]
  PASS=$((PASS + $2))
  FAIL=$((FAIL + $3))
  SKIP=$((SKIP + $4))
  SUMMARY+=("$(printf '%-34s %4d passed, %4d failed, %4d skipped%s' "$1" "$2" "$3" "$4" "${5:+  ($5)}")")
}

C_SERVERS=$OUT/c-servers
cleanup() {
  # stop only what this run started (its own directories)
  "$ROOT/tests/servers/s3rver.sh" stop "$C_SERVERS" >/dev/null 2>&1
  "$ROOT/tests/servers/swift.sh" stop "$C_SERVERS" >/dev/null 2>&1
  "$ROOT/tests/servers/pg.sh" stop "$C_SERVERS" >/dev/null 2>&1
  if [ "${CUSTODYFS_KEEP_TMP:-0}" = 1 ]; then
    echo "run.sh: test files kept in $OUT" >&2
  else
    rm -rf "$OUT"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { # free_port [OFFSET...]: a free loopback port P with P+OFFSET free too
  "$PY" "$ROOT/tests/servers/free_port.py" "$@"
}

# build DIR [MESON_SETUP_ARGS...] -> 0 when DIR holds a fresh build
build() {
  local dir=$1
  shift
  local args=("$@")
  [ "$CI" = true ] && args+=(-Dwerror=true)
  say "build $dir"
  if [ ! -f "$dir/build.ninja" ]; then
    local wipe=()
    [ -d "$dir/meson-private" ] && wipe=(--wipe)
    if ! meson setup "${wipe[@]}" "$dir" "${args[@]}"; then
      record "build $dir (meson setup)" 0 1 0 "see output above"
      return 1
    fi
  fi
  if ! meson compile -C "$dir"; then
    record "build $dir (compile)" 0 1 0 "see output above"
    return 1
  fi
  record "build $dir" 1 0 0
}

# meson_tests DIR LABEL: run meson test, count from its summary
meson_tests() {
  local dir=$1 label=$2 log=$OUT/meson-test-$2.log rc ok fail xfail upass skip tmo tapskip note=
  say "meson test -C $dir"
  rm -f "$dir/meson-logs/testlog.json"
  meson test -C "$dir" --print-errorlogs 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  num() { sed -n "s/^$1:[[:space:]]*\([0-9][0-9]*\).*/\1/p" "$log" | tail -n1; }
  ok=$(num 'Ok')
  xfail=$(num 'Expected Fail')
  fail=$(num 'Fail')
  upass=$(num 'Unexpected Pass')
  skip=$(num 'Skipped')
  tmo=$(num 'Timeout')
  ok=${ok:-0}
  skip=$((${skip:-0} + ${xfail:-0})) # an expected failure did not pass either
  fail=$((${fail:-0} + ${upass:-0} + ${tmo:-0}))
  # TAP subtests reported "ok N ... # SKIP" inside a test that meson counts as Ok
  tapskip=$("$PY" - "$dir/meson-logs/testlog.json" <<'EOF'
import json, re, sys
n = 0
try:
    for line in open(sys.argv[1]):
        out = json.loads(line).get("stdout") or ""
        n += len(re.findall(r"^ok\b[^\n]*#\s*skip", out, re.M | re.I))
except (OSError, ValueError):
    pass
print(n)
EOF
  )
  if [ "${tapskip:-0}" -gt 0 ]; then
    skip=$((skip + tapskip))
    note="$tapskip TAP subtests skipped"
  fi
  if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
    fail=1 # meson itself failed (no summary)
    note="${note:+$note, }meson test exit $rc"
  fi
  if [ $((ok + fail + skip)) -eq 0 ] || grep -q '^No tests defined' "$log"; then
    fail=$((fail + 1)) # no test ran at all: the unit tests were not built
    note="${note:+$note, }NO TESTS RAN"
  fi
  record "meson test ($label)" "$ok" "$fail" "$skip" "$note"
}

# start the servers the C tests may use; export their coordinates
start_c_servers() {
  local pgp s3p swp out
  # the S3 backends the C tests must find: one missing is a failure, not a skip
  CUSTODYFS_TEST_EXPECT=s3rver
  if command -v swift-proxy-server >/dev/null && [[ " $BACKENDS " == *" swift "* ]]; then
    CUSTODYFS_TEST_EXPECT="s3rver swift"
  fi
  export CUSTODYFS_TEST_EXPECT
  mkdir -p "$C_SERVERS"
  chmod 755 "$C_SERVERS"
  pgp=$(free_port)
  if out=$(CUSTODYFS_PG_FAST=1 "$ROOT/tests/servers/pg.sh" start "$C_SERVERS" "$pgp"); then
    export CUSTODYFS_TEST_PG_CONNINFO=$out PGHOST=127.0.0.1 PGPORT=$pgp PGUSER=custody PGDATABASE=custody
    # tests/db/test_db.c's names: a superuser conninfo, and how to restart the server
    export CUSTODYFS_TEST_PG="host=127.0.0.1 port=$pgp dbname=postgres user=postgres"
    export CUSTODYFS_TEST_PG_RESTART="'$ROOT/tests/servers/pg.sh' stop '$C_SERVERS' fast && '$ROOT/tests/servers/pg.sh' start '$C_SERVERS' $pgp >/dev/null"
  else
    echo "run.sh: PostgreSQL for the C tests did not start" >&2
  fi
  s3p=$(free_port)
  if out=$("$ROOT/tests/servers/s3rver.sh" start "$C_SERVERS" "$s3p"); then
    export CUSTODYFS_TEST_S3_ENDPOINT=$out CUSTODYFS_TEST_S3_ACCESS_KEY=S3RVER \
      CUSTODYFS_TEST_S3_SECRET_KEY=S3RVER CUSTODYFS_TEST_S3_REGION=us-east-1
  else
    echo "run.sh: s3rver for the C tests did not start" >&2
  fi
  if command -v swift-proxy-server >/dev/null && [[ " $BACKENDS " == *" swift "* ]]; then
    swp=$(free_port 10 11 12 20)
    if out=$("$ROOT/tests/servers/swift.sh" start "$C_SERVERS" "$swp"); then
      export CUSTODYFS_TEST_SWIFT_ENDPOINT=$out CUSTODYFS_TEST_SWIFT_ACCESS_KEY=test:tester \
        CUSTODYFS_TEST_SWIFT_SECRET_KEY=testing
    else
      echo "run.sh: swift for the C tests did not start" >&2
    fi
  fi
}

stop_c_servers() {
  "$ROOT/tests/servers/s3rver.sh" stop "$C_SERVERS" >/dev/null 2>&1
  "$ROOT/tests/servers/swift.sh" stop "$C_SERVERS" >/dev/null 2>&1
  "$ROOT/tests/servers/pg.sh" stop "$C_SERVERS" >/dev/null 2>&1
  unset CUSTODYFS_TEST_EXPECT CUSTODYFS_TEST_PG CUSTODYFS_TEST_PG_RESTART CUSTODYFS_TEST_PG_CONNINFO PGHOST PGPORT PGUSER PGDATABASE CUSTODYFS_TEST_S3_ENDPOINT \
    CUSTODYFS_TEST_S3_ACCESS_KEY CUSTODYFS_TEST_S3_SECRET_KEY CUSTODYFS_TEST_S3_REGION \
    CUSTODYFS_TEST_SWIFT_ENDPOINT CUSTODYFS_TEST_SWIFT_ACCESS_KEY CUSTODYFS_TEST_SWIFT_SECRET_KEY
}

# reap DIR: after a pytest run that was killed (timeout), stop what its harness left under DIR
reap() {
  local d m p
  for d in "$1"/custodyfs-it-*; do
    [ -d "$d" ] || continue
    for m in "$d"/mounts/*; do
      [ -d "$m" ] || continue
      if grep -qF " $m/mnt " /proc/self/mountinfo 2>/dev/null; then
        fusermount3 -uz "$m/mnt" 2>/dev/null
      fi
      p=$(cat "$m/daemon.pid" 2>/dev/null)
      if [[ $p =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF "config=$m/"; then
        kill -KILL "$p" 2>/dev/null
      fi
    done
    "$ROOT/tests/servers/s3rver.sh" stop "$d/servers" >/dev/null 2>&1
    "$ROOT/tests/servers/swift.sh" stop "$d/servers" >/dev/null 2>&1
    "$ROOT/tests/servers/pg.sh" stop "$d/servers" immediate >/dev/null 2>&1
  done
}

# shard_files K N: the test files of shard K (0..N-1) of N, one per line: the integration test
# files dealt greedily by size (a proxy for their run time), largest first, to the lightest shard
shard_files() {
  "$PY" - "$1" "$2" tests/integration/test_*.py <<'EOF'
import os, sys
k, n, files = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
load, mine = [0] * n, []
for f in sorted(files, key=lambda f: (-os.path.getsize(f), f)):
    i = load.index(min(load))
    load[i] += os.path.getsize(f)
    if i == k:
        mine.append(f)
print("\n".join(sorted(mine)))
EOF
}

# pytest_run LABEL BACKEND BIN [K/N]: with K/N (a whole-suite run only), shard K of N
pytest_run() {
  local label=$1 backend=$2 bin=$3 shard=${4:-} xml=$OUT/junit-$1.xml counts rc t
  local paths=("${PYTEST_PATHS[@]}")
  if [ -n "$shard" ] && [ "${#paths[@]}" -gt 0 ]; then
    mapfile -t paths < <(shard_files "${shard%/*}" "${shard#*/}")
  fi
  say "integration tests: $label (CUSTODYFS_S3_BACKEND=$backend, CUSTODYFS_BIN=$bin)"
  t=$(date +%s)
  local tmp=$OUT/it-$label
  mkdir -p "$tmp"
  chmod 755 "$tmp"
  local deselect=0
  [ "$backend" = swift ] && [ "${#PYTEST_PATHS[@]}" -gt 0 ] && [ "${CUSTODYFS_SWIFT_ALL:-0}" != 1 ] &&
    deselect=1
  # with the sanitizer passes on, the plain s3rver pass of a whole-suite run leaves the
  # regression files (and the database-only tests) to them: the same store, and they were
  # that pass's last third, which took it past its bound on the 2-core machine
  [ "$label" = s3rver ] && [ "$SANITIZE" = 1 ] && [ "${#PYTEST_PATHS[@]}" -gt 0 ] &&
    [ "${CUSTODYFS_S3RVER_ALL:-0}" != 1 ] && deselect=1
  # the sanitizer passes of a whole-suite run leave the scale tests to the plain passes
  local volume=0
  [[ $label == *+asan* || $label == *+tsan* ]] && [ "${#PYTEST_PATHS[@]}" -gt 0 ] && volume=1
  CUSTODYFS_TEST_TMP=$tmp CUSTODYFS_S3_BACKEND=$backend CUSTODYFS_BIN=$bin \
    CUSTODYFS_BUILD=$(dirname "$(dirname "$bin")") CUSTODYFS_DESELECT_REGRESSIONS=$deselect \
    CUSTODYFS_DESELECT_VOLUME=$volume \
    timeout -k 30 "$PYTEST_TIMEOUT" "$PY" -m pytest "${paths[@]}" -q --durations=25 \
    --junitxml="$xml" -o junit_suite_name="integration-$label" "${PYTEST_ARGS[@]}" </dev/null
  rc=$?
  reap "$tmp"
  counts=$("$PY" - "$xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 0 0"); sys.exit()
# a test whose teardown errs after a failed call has two <testcase> entries: count it once
state = {}
for tc in root.iter("testcase"):
    tags = {c.tag for c in tc}
    k = (tc.get("classname"), tc.get("name"))
    v = 2 if tags & {"failure", "error"} else 1 if "skipped" in tags else 0
    state[k] = max(state.get(k, 0), v)
vals = list(state.values())
print(vals.count(0), vals.count(2), vals.count(1))
EOF
  )
  read -r p f s <<<"$counts"
  local note="$(($(date +%s) - t)) s"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    f=$((f + 1))
    note="$note, TIMED OUT after ${PYTEST_TIMEOUT}s"
  elif [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ] && [ "$f" -eq 0 ]; then
    f=1 # pytest failed without a failing test case (collection/usage/internal error)
    note="$note, pytest exit $rc"
  fi
  if [ $((p + f + s)) -eq 0 ]; then
    f=$((f + 1)) # nothing ran (pytest exit 5: no tests collected)
    note="$note, NO TESTS RAN"
  fi
  printf '%s|%s|%s|%s|%s\n' "integration $label" "$p" "$f" "$s" "$note" >"$RECORD_TO"
}

# ---------------------------------------------------------------------------- the run

if [ ! -x node_modules/.bin/s3rver ]; then
  say "npm ci (s3rver)"
  if command -v npm >/dev/null; then
    npm ci --no-audit --no-fund || echo "run.sh: npm ci failed: the s3rver tests will fail" >&2
  else
    echo "run.sh: npm not found (apt-get install nodejs npm): the s3rver tests will fail" >&2
  fi
fi

built=0
build build && built=1
if [ "$built" = 1 ]; then
  start_c_servers
  meson_tests build main
  stop_c_servers
fi

PASSES=() # "LABEL BACKEND BIN" of each integration pass
for b in $BACKENDS; do
  PASSES+=("$b $b $ROOT/build/fs/custodyfs")
done
if [ "$SANITIZE" = 1 ]; then
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:print_summary=1}
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/tests/lsan.supp:print_suppressions=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:print_summary=1}
  if build build-asan -Db_sanitize=address,undefined -Dbuildtype=debug; then
    start_c_servers
    meson_tests build-asan asan
    stop_c_servers
  fi
  ASAN_SHARDS=${CUSTODYFS_ASAN_SHARDS:-2}
  if [ "${#PYTEST_PATHS[@]}" -gt 0 ] && [ "$ASAN_SHARDS" -gt 1 ]; then
    for ((k = 0; k < ASAN_SHARDS; k++)); do
      PASSES+=("s3rver+asan$((k + 1)) s3rver $ROOT/build-asan/fs/custodyfs $k/$ASAN_SHARDS")
    done
  else
    PASSES+=("s3rver+asan s3rver $ROOT/build-asan/fs/custodyfs")
  fi
fi
if [ "$TSAN" = 1 ]; then
  # integration only: libfuse3, libpq and libcurl are not instrumented (tests/tsan.supp)
  build build-tsan -Db_sanitize=thread -Dbuildtype=debug -Dtests=disabled &&
    PASSES+=("s3rver+tsan s3rver $ROOT/build-tsan/fs/custodyfs")
fi

# pass_env LABEL: the environment of a pass (the daemon keeps running after a UBSan or TSan
# finding under the sanitizer passes: the harness reports it per test)
pass_env() {
  case $1 in
    *+asan*) echo "UBSAN_OPTIONS=print_stacktrace=1:print_summary=1" ;;
    *+tsan) echo "TSAN_OPTIONS=${TSAN_OPTIONS:-suppressions=$ROOT/tests/tsan.supp:halt_on_error=0:report_signal_unsafe=0:second_deadlock_stack=1}" ;;
    *) echo "UBSAN_OPTIONS=${UBSAN_OPTIONS:-}" ;;
  esac
}

if [ "$IT_PARALLEL" = 1 ] && [ "${#PASSES[@]}" -gt 1 ]; then
  # The passes run side by side (each with its own servers, temp dir and ports): most of a
  # pass is waiting (grace periods, leases, the store), not CPU. Each one's output goes to
  # its own file, printed whole when all have finished; the counts come back in files.
  say "integration passes in parallel: ${PASSES[*]%% *}"
  pids=()
  for ps in "${PASSES[@]}"; do
    read -r label backend bin shard <<<"$ps"
    (
      export "$(pass_env "$label")"
      RECORD_TO=$OUT/record-$label pytest_run "$label" "$backend" "$bin" "$shard"
    ) >"$OUT/log-$label" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  for ps in "${PASSES[@]}"; do
    read -r label backend bin <<<"$ps"
    cat "$OUT/log-$label"
    if [ -s "$OUT/record-$label" ]; then
      IFS='|' read -r n p f sk note <"$OUT/record-$label"
      record "$n" "$p" "$f" "$sk" "$note"
    else
      record "integration $label" 0 1 0 "the pass left no counts"
    fi
  done
else
  for ps in "${PASSES[@]}"; do
    read -r label backend bin shard <<<"$ps"
    (export "$(pass_env "$label")"; RECORD_TO=$OUT/record-$label pytest_run "$label" "$backend" "$bin" "$shard")
    IFS='|' read -r n p f sk note <"$OUT/record-$label" || { n="integration $label"; p=0; f=1; sk=0; note="the pass left no counts"; }
    record "$n" "$p" "$f" "$sk" "$note"
  done
fi

say "summary ($(($(date +%s) - T0)) s)"
printf '%s\n' "${SUMMARY[@]}"
echo "$SKIP skipped (not counted as passed)"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
