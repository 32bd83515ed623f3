#!/usr/bin/env bash
# custodyfs audit/ benchmark (issue 7 "How fast") -- NOT a test: it prints figures and the ratio
# against psql measured in the same run, with the target beside it, and never fails on a number.
#
#   tests/bench/bench_audit.sh [--rows N] [--rounds R] [--swift] [--pg-fast] [--keep]
#                              [--time-limit S] [--bin PATH]
#
# It starts PostgreSQL (tests/servers/pg.sh) and ONE S3 server on 127.0.0.1 in a temp dir,
# mounts a copy of build/fs/custodyfs (which migrates the database: the chain trigger is on),
# inserts N (default 1,000,000) mount-shaped rows into reception_audit with one INSERT ...
# SELECT generate_series (untimed), then, R times (default 3), alternately:
#  psql:   psql -c "\copy (SELECT * FROM reception_audit ORDER BY id) TO STDOUT WITH CSV HEADER"
#          > /dev/null  -- the baseline: PostgreSQL's own client, straight from the table
#  csv:    cat MNT/audit/reception_audit.csv > /dev/null  (a fresh open: a new snapshot each time)
#  jsonl:  cat MNT/audit/reception_audit.jsonl > /dev/null
# and reports the medians, the ratio psql/csv (the issue's target: cat >= 0.5x psql's speed),
# and the daemon's peak RSS (VmHWM, reset through /proc/PID/clear_refs before the first cat, so
# it is the peak while the views are read; target < 64 MiB). Before timing, one untimed pass
# checks what is read: `wc -l` of each view is the table's count (+1 for the CSV header), the
# CSV parses (python csv) to that many records and its last id is max(id).
#
# Options:
#   --rows N         rows inserted (default 1000000; 1000..5000000)
#   --rounds R       timed rounds (default 3); the report gives the median and the range
#   --swift          Swift (s3api) as the S3 server (the views do not use it)
#   --pg-fast        PostgreSQL with fsync off (default: on)
#   --keep           keep the temp dir;  --time-limit S  hard bound (default 1800)
#   --bin PATH       daemon binary (default build/fs/custodyfs, or $CUSTODYFS_BIN)
# Env: CUSTODYFS_BENCH_TMP parent of the temp dir (default /tmp; the postgres user must reach it).
set -Eeuo pipefail
export LC_ALL=C

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROWS=1000000
ROUNDS=3
TIME_LIMIT=1800

while [ $# -gt 0 ]; do
  bench_opt "$@"
  [ "$BENCH_SHIFT" = 0 ] || { shift "$BENCH_SHIFT"; continue; }
  case $1 in
  --rows) ROWS=$2; shift ;;
  --rounds) ROUNDS=$2; shift ;;
  *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ $ROWS =~ ^[0-9]+$ && $ROWS -ge 1000 && $ROWS -le 5000000 ]] || die "--rows: 1000..5000000"
[[ $ROUNDS =~ ^[1-9]$ ]] || die "--rounds: 1..9"
[[ $TIME_LIMIT =~ ^[0-9]+$ ]] || die "--time-limit: seconds"

[ -x "$PY" ] || die "$PY not found"
"$PY" -c 'import psycopg2' 2>/dev/null || die "$PY lacks psycopg2"
bench_need_fuse
PSQL=$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n1 || true)
[ -x "$PSQL" ] || PSQL=$(command -v psql || true)
[ -x "$PSQL" ] || die "psql not found"

bench_keys
bench_tmp custodyfs-bench-audit
bench_guard

res bin "$BIN"
res bin_mtime "$(date -r "$BIN" '+%Y-%m-%d %H:%M:%S')"
res backend "$BACKEND"
res pg_fast "$PG_FAST"
res rows "$ROWS"
res rounds "$ROUNDS"

bench_servers "$RECEPTION" "$STORAGE"
bench_config
mount_daemon

# sql SQL: one statement as the database's superuser (the rows' who/hashes are made up, as a
# notebook or psql would insert them); prints the single value it returns, if any
sql() {
  "$PY" - "$CONNINFO" "$1" <<'PYEOF'
import sys, psycopg2
c = psycopg2.connect(sys.argv[1], user="postgres")
c.autocommit = True
cur = c.cursor()
cur.execute(sys.argv[2])
if cur.description:
    print(cur.fetchone()[0])
PYEOF
}

note "inserting $ROWS rows into reception_audit (chained by the trigger; untimed)"
t0=$(now)
sql "INSERT INTO reception_audit (source_bucket, file_name, object_key, size_bytes, sha256,
       received_by)
     SELECT 'other-bucket', 'file-' || g || '.bin', 'bench/dir/file-' || g || '.bin', g,
            md5(g::text) || md5((g + 1)::text), 'someone (uid 1000) @ host, \"quoted\"'
       FROM generate_series(1, $ROWS) g"
res insert_secs "$(elapsed "$t0" "$(now)")"
sql "VACUUM ANALYZE reception_audit" >/dev/null
COUNT=$(sql "SELECT count(*) FROM reception_audit")
MAXID=$(sql "SELECT max(id) FROM reception_audit")
res count "$COUNT"
note "table: $COUNT rows"

V=$MNT/audit/reception_audit
# --- what is read is the table (untimed)
res csv_lines "$(timeout -k 5 900 wc -l <"$V.csv")"
res jsonl_lines "$(timeout -k 5 900 wc -l <"$V.jsonl")"
res psql_lines "$(timeout -k 5 900 "$PSQL" "$CONNINFO" -X -q -c \
  "\\copy (SELECT * FROM reception_audit ORDER BY id) TO STDOUT WITH CSV HEADER" | wc -l)"
timeout -k 5 900 "$PY" - "$V.csv" >>"$RES" <<'PYEOF'
import csv, sys
n, last = 0, None
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    for last in csv.reader(f):
        n += 1
print(f"csv_records={n}")
print(f"csv_last_id={last[0] if last else ''}")
PYEOF

# --- timed rounds; the daemon's peak RSS from here on
echo 5 >"/proc/$DPID/clear_refs" 2>/dev/null || note "cannot reset VmHWM: the peak is since start"
timed() { # timed TAG CMD...: secs and the daemon's CPU
  local tag=$1 t0 t1 c0 rc=0
  shift
  c0=$(cpu_daemon)
  t0=$(now)
  timeout -k 5 900 "$@" >/dev/null 2>>"$TMP/phase.err" || rc=$?
  t1=$(now)
  echo "${tag}_secs=$(elapsed "$t0" "$t1")" >>"$RES"
  echo "${tag}_dcpu=$(fsub "$c0" "$(cpu_daemon)")" >>"$RES"
  [ "$rc" = 0 ] || { note "!! $tag: exit $rc"; echo "${tag}_rc=$rc" >>"$RES"; }
}
for ((r = 1; r <= ROUNDS; r++)); do
  note "round $r/$ROUNDS"
  timed "r${r}_psql" "$PSQL" "$CONNINFO" -X -q -c \
    "\\copy (SELECT * FROM reception_audit ORDER BY id) TO STDOUT WITH CSV HEADER"
  timed "r${r}_csv" cat "$V.csv"
  timed "r${r}_jsonl" cat "$V.jsonl"
done
res hwm_kib "$(awk '/^VmHWM:/ { print $2 }' "/proc/$DPID/status")"
res rss_kib "$(awk '/^VmRSS:/ { print $2 }' "/proc/$DPID/status")"

# --- report
"$PY" - "$RES" "$MAXID" <<'PYEOF'
import statistics, sys
r = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[1]) if "=" in l)
maxid = sys.argv[2]
n = int(r["count"])
R = int(r["rounds"])
def secs(tag):
    return [float(r[f"r{i}_{tag}_secs"]) for i in range(1, R + 1)]
def med(tag):
    v = secs(tag)
    return statistics.median(v), min(v), max(v)
def cpu(tag):
    return statistics.median(float(r[f"r{i}_{tag}_dcpu"]) for i in range(1, R + 1))
ok = (int(r["csv_lines"]) == n + 1 and int(r["jsonl_lines"]) == n
      and int(r["psql_lines"]) == n + 1 and int(r["csv_records"]) == n + 1
      and r["csv_last_id"] == maxid
      and not any(k.endswith("_rc") for k in r))
print(f"custodyfs audit/ benchmark: {n:,} rows in reception_audit, {R} rounds, "
      f"backend {r['backend']}, fsync {'off' if r['pg_fast'] == '1' else 'on'}")
print(f"  binary {r['bin']} ({r['bin_mtime']})")
print(f"  insert of the rows (chained, untimed in the ratios): {float(r['insert_secs']):.1f} s")
print(f"  checked: wc -l csv {r['csv_lines']}, jsonl {r['jsonl_lines']}, psql {r['psql_lines']};"
      f" csv records {r['csv_records']}, last id {r['csv_last_id']} (max {maxid}): "
      f"{'OK' if ok else 'MISMATCH'}")
print()
print(f"  {'reader':<48} {'median s':>9} {'range s':>15} {'rows/s':>10} {'daemon CPU s':>12}")
rows = [("psql \\copy (SELECT * ... ORDER BY id) CSV HEADER", "psql"),
        ("cat audit/reception_audit.csv", "csv"),
        ("cat audit/reception_audit.jsonl", "jsonl")]
for label, tag in rows:
    m, lo, hi = med(tag)
    c = f"{cpu(tag):.2f}" if tag != "psql" else "-"
    print(f"  {label:<48} {m:9.2f} {lo:7.2f}..{hi:<7.2f} {n / m / 1000:9.0f}k {c:>12}")
p, c, j = med("psql")[0], med("csv")[0], med("jsonl")[0]
print()
print(f"  speed of cat csv vs psql:   {p / c:.2f}x  (target >= 0.5x)")
print(f"  speed of cat jsonl vs psql: {p / j:.2f}x")
print(f"  daemon peak RSS while the views were read: {int(r['hwm_kib']) / 1024:.1f} MiB "
      f"(target < 64 MiB); RSS after: {int(r['rss_kib']) / 1024:.1f} MiB")
PYEOF
