#!/usr/bin/python3
"""Helpers for tests/bench/bench_promote.sh (run with /usr/bin/python3: boto3 and psycopg2).

A benchmark, not a test: these commands measure and print key=value lines; they never assert a
target. Every loop is bounded in count and in time (--budget seconds); every client talks only
to the endpoint it is given (bench_promote.sh gives 127.0.0.1).

  bench_promote.py put   S3ARGS --bucket B --prefix P --src DIR [--workers W] [--budget S]
        every DIR/* as B/P/<name> (the baselines' received files; not timed)
  bench_promote.py seed  S3ARGS --src-bucket R --prefix P --dest-bucket D --dest-prefix Q
                         --db CONNINFO --table T [--budget S]
        the seed's pipeline (shared/seed/progress-notes.pt.md, issue 6 "How fast"), serially,
        as its notebook cell did: list the reception bucket (paged), then per object: is the
        destination path registered in the storage audit table (SELECT), is the object in the
        destination bucket (HEAD); both -> "repeated", nothing copied; else CopyObject
        (CopySource, metadata copied) + INSERT of the row + COMMIT. Run twice: the second pass
        finds everything stored. Its table T is the seed's storage_audit (prefix, name, path,
        size, moved_at, source bucket), with an index on the path (kinder than the seed)
  bench_promote.py limit S3ARGS --src-bucket R --prefix P --dest-bucket D --dest-prefix Q
                         --workers W [--budget S]
        the server's limit for this work: only the S3 calls a promotion cannot avoid, HEAD
        destination, CopyObject, DeleteObject source, per file, W files at a time (keys known,
        no listing, no database)
  bench_promote.py check S3ARGS --db CONNINFO --reception R --storage S --src-prefix A
                         --dest-prefix B --n N --outcome O
        what a product phase left: objects under S/B/ and their sizes, storage_audit rows under
        B/ by outcome, objects and live reception rows still under R/A/, open journal entries
  bench_promote.py count S3ARGS --bucket B --prefix P     objects under B/P/
  bench_promote.py waitrows CONNINFO PREFIX N [--budget S]  live reception rows (bounded wait)
  bench_promote.py report RESULTS                          the table: files/s, ratios, targets
S3ARGS: --endpoint URL --access-key K --secret-key S
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (s3client, out, add_s3args)

from bench import add_s3args, s3client  # noqa: E402


def out(obj):
    bench.out(obj)


def list_keys(s3, bucket, prefix):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            keys.append((o["Key"], o["Size"]))
    return keys


def is_404(e):
    from botocore.exceptions import ClientError
    return isinstance(e, ClientError) and \
        e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


# --------------------------------------------------------------------------- commands

def cmd_put(a):
    from concurrent.futures import ThreadPoolExecutor
    s3 = s3client(a, pool=a.workers)
    names = sorted(os.listdir(a.src))
    deadline = time.monotonic() + a.budget

    def put(name):
        if time.monotonic() > deadline:
            return 0
        with open(os.path.join(a.src, name), "rb") as f:
            s3.put_object(Bucket=a.bucket, Key=f"{a.prefix}/{name}", Body=f.read())
        return 1
    with ThreadPoolExecutor(a.workers) as ex:
        n = sum(ex.map(put, names))
    out({"put": n})
    return 0


def cmd_seed(a):
    import psycopg2
    s3 = s3client(a, pool=1)  # one kept-alive connection, as the notebook's client
    db = psycopg2.connect(a.db, connect_timeout=10)
    with db.cursor() as c:
        # the seed's storage_audit (progress notes, "Decisões", 3.)
        c.execute(f"CREATE TABLE IF NOT EXISTS {a.table} (id serial PRIMARY KEY,"
                  " project_prefix text NOT NULL, project_name text NOT NULL,"
                  " dest_path text NOT NULL, size_bytes bigint,"
                  " moved_at timestamptz NOT NULL DEFAULT now(), source_bucket text)")
        c.execute(f"CREATE INDEX IF NOT EXISTS {a.table}_path ON {a.table} (dest_path)")
    db.commit()
    s3.head_bucket(Bucket=a.dest_bucket)  # connection set up outside the timing
    deadline = time.monotonic() + a.budget
    copied = repeated = errors = seen = 0
    t0 = time.monotonic()
    listing = list_keys(s3, a.src_bucket, a.prefix + "/")
    t_list = time.monotonic() - t0
    for key, size in listing:
        if time.monotonic() > deadline:
            break
        seen += 1
        dest = f"{a.dest_prefix}/{key}"
        try:
            with db.cursor() as c:
                c.execute(f"SELECT 1 FROM {a.table} WHERE dest_path = %s", (dest,))
                registered = c.fetchone() is not None
            try:
                s3.head_object(Bucket=a.dest_bucket, Key=dest)
                present = True
            except Exception as e:
                if not is_404(e):
                    raise
                present = False
            if registered and present:
                repeated += 1
                db.commit()  # the notebook's SELECT ends its transaction too
                continue
            s3.copy_object(Bucket=a.dest_bucket, Key=dest,
                           CopySource={"Bucket": a.src_bucket, "Key": key})
            with db.cursor() as c:
                c.execute(f"INSERT INTO {a.table} (project_prefix, project_name, dest_path,"
                          " size_bytes, source_bucket) VALUES (%s, %s, %s, %s, %s)",
                          (a.dest_prefix, a.dest_prefix, dest, size, a.src_bucket))
            db.commit()
            copied += 1
        except Exception as e:  # a benchmark: count, do not stop
            db.rollback()
            errors += 1
            if errors <= 3:
                print(f"bench_promote.py seed {key}: {e}", file=sys.stderr)
    secs = time.monotonic() - t0
    db.close()
    out({"done": copied + repeated, "copied": copied, "repeated": repeated, "errors": errors,
         "listed": len(listing), "list_secs": f"{t_list:.4f}", "secs": f"{secs:.4f}",
         "timed_out": int(seen < len(listing))})
    return 0


def cmd_limit(a):
    from concurrent.futures import ThreadPoolExecutor
    s3 = s3client(a, pool=a.workers)
    s3.head_bucket(Bucket=a.dest_bucket)
    keys = sorted(k for k, _ in list_keys(s3, a.src_bucket, a.prefix + "/"))  # not timed
    deadline = time.monotonic() + a.budget
    errors = []

    def one(key):
        if time.monotonic() > deadline:
            return 0
        dest = f"{a.dest_prefix}/{key}"
        try:
            try:
                s3.head_object(Bucket=a.dest_bucket, Key=dest)
                return 0  # already there: a promotion would not copy (none expected)
            except Exception as e:
                if not is_404(e):
                    raise
            s3.copy_object(Bucket=a.dest_bucket, Key=dest,
                           CopySource={"Bucket": a.src_bucket, "Key": key})
            s3.delete_object(Bucket=a.src_bucket, Key=key)
            return 1
        except Exception as e:
            errors.append(f"{key}: {e}")
            return 0
    t0 = time.monotonic()
    with ThreadPoolExecutor(a.workers) as ex:
        done = sum(ex.map(one, keys))
    secs = time.monotonic() - t0
    for e in errors[:3]:
        print(f"bench_promote.py limit {e}", file=sys.stderr)
    out({"done": done, "errors": len(errors), "listed": len(keys), "secs": f"{secs:.4f}",
         "timed_out": int(time.monotonic() > deadline)})
    return 0


def cmd_check(a):
    import psycopg2
    s3 = s3client(a)
    dest = list_keys(s3, a.storage, a.dest_prefix + "/")
    src = list_keys(s3, a.reception, a.src_prefix + "/")
    c = psycopg2.connect(a.db, connect_timeout=10)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT outcome, count(*) FROM storage_audit"
                        " WHERE left(dest_key, length(%s)) = %s GROUP BY outcome",
                        (a.dest_prefix + "/", a.dest_prefix + "/"))
            by = dict(cur.fetchall())
            cur.execute("SELECT count(*) FROM reception_audit WHERE removed_at IS NULL"
                        " AND left(object_key, length(%s)) = %s",
                        (a.src_prefix + "/", a.src_prefix + "/"))
            live = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM promotion_journal WHERE state IN ('intent', 'stored')")
            open_ = cur.fetchone()[0]
    finally:
        c.close()
    out({"dest_objects": len(dest), "dest_right_size": sum(1 for _, s in dest if s == a.size),
         "rows_outcome": by.get(a.outcome, 0), "rows_all": sum(by.values()),
         "src_left": sum(1 for k, _ in src if not k.endswith("/")), "live_rows_left": live,
         "journal_open": open_, "expected": a.n})
    return 0


def cmd_count(a):
    s3 = s3client(a)
    out({"objects": len(list_keys(s3, a.bucket, a.prefix + "/"))})
    return 0


def cmd_waitrows(a):
    return bench.cmd_waitrows(a)


# --------------------------------------------------------------------------- report

def cmd_report(a):
    r = {}
    with open(a.results) as f:
        for line in f:
            k, sep, v = line.rstrip("\n").partition("=")
            if sep:
                r[k] = v

    def num(k):
        try:
            return float(r[k])
        except (KeyError, ValueError):
            return None

    def rate(t):
        d, s = num(f"{t}_done"), num(f"{t}_secs")
        return d / s if d is not None and s else None

    def median(v):
        v = sorted(x for x in v if x is not None)
        if not v:
            return None
        m = len(v) // 2
        return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2

    def fmt(x, nd=1):
        return "n/a" if x is None else f"{x:.{nd}f}"

    R = int(num("rounds") or 1)
    n = int(num("n") or 0)
    rates = {t: [rate(f"{t}_r{i}") for i in range(1, R + 1)]
             for t in ("a", "b", "c", "d", "seed1", "seed2", "limit")}
    med = {t: median(v) for t, v in rates.items()}

    def spread(v, nd=1):
        v = [x for x in v if x is not None]
        return f"  [{min(v):.{nd}f}..{max(v):.{nd}f}]" if len(v) > 1 else ""

    print()
    print("=" * 92)
    print(f"custodyfs promotion benchmark  backend={r.get('backend')}  cores={os.cpu_count()}  "
          f"PostgreSQL fsync={'off' if r.get('pg_fast') == '1' else 'on'}  "
          f"load avg at end={os.getloadavg()[0]:.2f}")
    print(f"daemon: {r.get('bin')} (built {r.get('bin_mtime', '?')}); promote_workers="
          f"{r.get('workers')}; {n} files of {r.get('size')} B; {R} round(s): median files/s "
          "[min..max]")
    print("=" * 92)
    W = 66
    rows = (("(a) mv of a directory of N files into a project", "a"),
            ("(b) the same again, every file already stored (duplicate)", "b"),
            ("(c) mv inbox/dir/* projects/p/dir/ (one rename per file)", "c"),
            ("(d) custodyfs promote --project P --prefix-in-inbox dir", "d"),
            ("baseline 1: the seed's pipeline, boto3 + psycopg2, serial", "seed1"),
            ("baseline 1': the seed's second pass (everything stored)", "seed2"),
            ("baseline 2: the limit, HEAD+Copy+Delete, W parallel workers", "limit"))
    for label, t in rows:
        m = med[t]
        print(f"  {label:<{W}} {fmt(m) + ' files/s':>14}{spread(rates[t])}"
              + (f"  = {1000 / m:.2f} ms/file" if m else ""))

    def ratio(x, y):
        return x / y if x and y else None

    def line(what, x, y, target):
        rr = [ratio(p, q) for p, q in zip(rates[x], rates[y])]
        v = ratio(med[x], med[y])
        verdict = "" if v is None else ("  met" if v >= target else "  MISSED")
        print(f"  RATIO {what:<48} = {fmt(v, 2):>5}{spread(rr, 2)}   target >= {target:.2f}"
              f"{verdict}")
    print()
    line("(a) mv dir / seed pipeline", "a", "seed1", 1.5)
    line("(a) mv dir / limit", "a", "limit", 0.8)
    line("(b) mv dir, duplicates / seed's second pass", "b", "seed2", 1.5)
    line("(c) mv dir/* serial / seed pipeline", "c", "seed1", 1.2)
    line("(d) custodyfs promote / (a) mv dir", "d", "a", 1.0)

    print("\n  what landed (all rounds; expected per round in brackets):")
    for t, what in (("a", "copied"), ("b", "duplicate"), ("c", "copied"), ("d", "copied")):
        for i in range(1, R + 1):
            k = f"{t}_r{i}"
            bad = []
            if r.get(f"{k}_rc") not in (None, "0"):
                bad.append(f"exit {r.get(k + '_rc')}")
            if num(f"{k}_done") != n:
                bad.append(f"done {r.get(k + '_done')}")
            for f_, want in (("dest_objects", n), ("dest_right_size", n), ("rows_outcome", n),
                             ("src_left", 0), ("live_rows_left", 0), ("journal_open", 0)):
                if num(f"{k}_{f_}") != want:
                    bad.append(f"{f_}={r.get(k + '_' + f_)} (want {want})")
            if t == "b" and num(f"{k}_rows_all") != 2 * n:
                bad.append(f"rows_all={r.get(k + '_rows_all')} (want {2 * n})")
            print(f"    ({t}) round {i}: " + ("OK: " + ", ".join(
                f"{f_} {r.get(k + '_' + f_)}" for f_ in ("dest_objects", "rows_outcome",
                                                         "src_left", "live_rows_left"))
                if not bad else "!! " + "; ".join(bad)))
    for i in range(1, R + 1):
        s1, s2, lim = f"seed1_r{i}", f"seed2_r{i}", f"limit_r{i}"
        print(f"    seed round {i}: pass 1 copied {r.get(s1 + '_copied')} repeated "
              f"{r.get(s1 + '_repeated')} errors {r.get(s1 + '_errors')} (list "
              f"{fmt(num(s1 + '_list_secs'), 3)} s); pass 2 copied {r.get(s2 + '_copied')} "
              f"repeated {r.get(s2 + '_repeated')} errors {r.get(s2 + '_errors')}; dest objects "
              f"{r.get(s1 + '_objects')}")
        print(f"    limit round {i}: done {r.get(lim + '_done')} errors {r.get(lim + '_errors')};"
              f" dest objects {r.get(lim + '_objects')}, source left {r.get(lim + '_src_left')}")
    print("\n  CPU ms/file per phase (daemon or tool / S3 server / PostgreSQL) and PostgreSQL "
          "write transactions/file:")
    for t in ("a", "b", "c", "d", "seed1", "seed2", "limit"):
        d = sum(num(f"{t}_r{i}_done") or 0 for i in range(1, R + 1)) or 1

        def tot(key):
            v = [num(f"{t}_r{i}_{key}") for i in range(1, R + 1)]
            return None if any(x is None for x in v) else sum(v)
        if tot("scpu") is None:
            continue
        own = (tot("dcpu") or 0) + (tot("toolcpu") or 0)  # (d): the idle daemon + the tool
        print(f"    {t:<6} {fmt(1000 * own / d, 2):>7} / "
              f"{fmt(1000 * tot('scpu') / d, 2):>7} / {fmt(1000 * tot('pcpu') / d, 2):>7}"
              f"   xacts/file {fmt(tot('xacts') / d, 2)}")
    print()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("put")
    add_s3args(p)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--budget", type=float, default=300)
    p.set_defaults(fn=cmd_put)
    for name, fn in (("seed", cmd_seed), ("limit", cmd_limit)):
        p = sub.add_parser(name)
        add_s3args(p)
        p.add_argument("--src-bucket", required=True)
        p.add_argument("--prefix", required=True)
        p.add_argument("--dest-bucket", required=True)
        p.add_argument("--dest-prefix", required=True)
        p.add_argument("--budget", type=float, default=300)
        if name == "seed":
            p.add_argument("--db", required=True)
            p.add_argument("--table", default="bench_seed_storage_audit")
        else:
            p.add_argument("--workers", type=int, required=True)
        p.set_defaults(fn=fn)
    p = sub.add_parser("check")
    add_s3args(p)
    p.add_argument("--db", required=True)
    p.add_argument("--reception", required=True)
    p.add_argument("--storage", required=True)
    p.add_argument("--src-prefix", required=True)
    p.add_argument("--dest-prefix", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--outcome", required=True)
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser("count")
    add_s3args(p)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", required=True)
    p.set_defaults(fn=cmd_count)
    p = sub.add_parser("waitrows")
    p.add_argument("conninfo")
    p.add_argument("prefix")
    p.add_argument("n", type=int)
    p.add_argument("--budget", type=float, default=120)
    p.set_defaults(fn=cmd_waitrows)
    p = sub.add_parser("report")
    p.add_argument("results")
    p.set_defaults(fn=cmd_report)
    for p in sub.choices.values():
        p.add_argument("--tag", default="")
    a = ap.parse_args()
    bench.TAG = a.tag + "_" if a.tag else ""
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
