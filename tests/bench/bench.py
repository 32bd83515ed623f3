#!/usr/bin/python3
"""Helpers for tests/bench/bench.sh (run with /usr/bin/python3: it has boto3 and psycopg2).

A benchmark, not a test: these commands measure and print; they never assert a target.
Every loop is bounded in count and in time (--budget seconds); every client talks only to
the endpoint it is given (bench.sh gives 127.0.0.1).

  bench.py freeport [--offsets 0,10,11,12,20]
  bench.py gen DIR N SIZE                  N random files DIR/f0000.bin.. of SIZE bytes
  bench.py gen1 FILE MIB                   one random file of MIB MiB; prints its SHA-256
  bench.py boto3-small S3ARGS --bucket B --prefix P --src DIR --n N [--budget S] [--db CONNINFO]
  bench.py boto3-big   S3ARGS --bucket B --obj K --src FILE --part-mib 16 --workers 4
  bench.py fill        S3ARGS --bucket B --prefix P --n N [--budget S]   N 1-byte objects
  bench.py waitrows CONNINFO PREFIX N [--budget S]   wait for N live reception rows
  bench.py verify      S3ARGS --bucket B --prefix P --n N --size SIZE
  bench.py verify-one  S3ARGS --bucket B --obj K --size SIZE [--sha256 HEX]
  bench.py dbcount CONNINFO PREFIX         live reception_audit rows under PREFIX
  bench.py pgstat CONNINFO                 txid_current(): write transactions so far
  bench.py cpu PID...                      CPU seconds (user+sys, all threads) of the PIDs
                                           and their descendants, summed
  bench.py pgpids POSTMASTER_PID           the postmaster and its children
  bench.py watch PID SPOOL STOPFILE OUT    sample VmRSS/VmHWM/spool bytes until STOPFILE
  bench.py probes FILE [--files N] [--timeline]   summary of perf uprobe events (--profile)
  bench.py report RESULTS                  the final table (figures, ratios, targets)
S3ARGS: --endpoint URL --access-key K --secret-key S
"""
import argparse
import hashlib
import os
import sys
import time

for _v in ("AWS_CA_BUNDLE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "AWS_PROFILE"):
    os.environ.pop(_v, None)

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- small helpers

def s3client(a, pool=10):
    import boto3
    from botocore.config import Config
    return boto3.client(
        "s3", endpoint_url=a.endpoint, aws_access_key_id=a.access_key,
        aws_secret_access_key=a.secret_key, region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      connect_timeout=5, read_timeout=120, max_pool_connections=pool,
                      retries={"max_attempts": 2, "mode": "standard"}))


def add_s3args(p):
    p.add_argument("--endpoint", required=True)
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret-key", required=True)


TAG = ""


def out(obj):
    """key=value lines, keys prefixed with --tag: bench.sh appends them to its results."""
    for k, v in obj.items():
        if isinstance(v, bool):
            v = int(v)
        print(f"{TAG}{k}={v}")


def cpu_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return 0.0
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid, name):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def spool_bytes(pid, spool):
    """Bytes allocated by the files the process holds open under spool (the spool files are
    unlinked O_TMPFILEs, invisible to du)."""
    total = 0
    n = 0
    d = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(d)
    except OSError:
        return 0, 0
    for fd in fds:
        try:
            target = os.readlink(f"{d}/{fd}")
            if not target.startswith(spool):
                continue
            st = os.stat(f"{d}/{fd}")
            total += st.st_blocks * 512
            n += 1
        except OSError:
            continue
    return total, n


# --------------------------------------------------------------------------- commands

def cmd_freeport(a):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "servers"))
    import free_port  # tests/servers/free_port.py
    p = free_port.find([int(x) for x in a.offsets.split(",")])
    if p is None:
        print("no free port", file=sys.stderr)
        return 1
    print(p)
    return 0


def cmd_gen(a):
    os.makedirs(a.dir, exist_ok=True)
    for i in range(a.n):
        with open(os.path.join(a.dir, f"f{i:04d}.bin"), "wb") as f:
            f.write(os.urandom(a.size))
    return 0


def cmd_gen1(a):
    h = hashlib.sha256()
    chunk = 8 << 20
    with open(a.file, "wb") as f:
        for _ in range(a.mib * (1 << 20) // chunk):
            b = os.urandom(chunk)
            h.update(b)
            f.write(b)
    print(h.hexdigest())
    return 0


def cmd_boto3_small(a):
    s3 = s3client(a, pool=1)  # one connection, kept alive by urllib3
    db = None
    if a.db:
        import psycopg2
        db = psycopg2.connect(a.db, connect_timeout=10)
        with db.cursor() as c:
            c.execute("CREATE TABLE IF NOT EXISTS bench_reference (id bigserial PRIMARY KEY,"
                      " object_key text, size_bytes bigint, sha256 text,"
                      " uploaded_at timestamptz DEFAULT now())")
        db.commit()
    # one warm-up request (connection set-up) outside the timing
    s3.head_bucket(Bucket=a.bucket)
    names = sorted(os.listdir(a.src))[:a.n]
    deadline = time.monotonic() + a.budget
    done = errors = 0
    t0 = time.monotonic()
    for name in names:
        if time.monotonic() > deadline:
            break
        with open(os.path.join(a.src, name), "rb") as f:
            body = f.read()
        key = f"{a.prefix}/{name}"
        try:
            s3.put_object(Bucket=a.bucket, Key=key, Body=body)
            if db is not None:
                with db.cursor() as c:
                    c.execute("INSERT INTO bench_reference (object_key, size_bytes, sha256)"
                              " VALUES (%s, %s, %s)",
                              (key, len(body), hashlib.sha256(body).hexdigest()))
                db.commit()
            done += 1
        except Exception as e:  # a benchmark: count, do not stop
            errors += 1
            if errors <= 3:
                print(f"bench.py: put {key}: {e}", file=sys.stderr)
    secs = time.monotonic() - t0
    if db is not None:
        db.close()
    out({"done": done, "secs": secs, "errors": errors, "timed_out": done + errors < len(names)})
    return 0


def cmd_fill(a):
    """N one-byte objects under PREFIX/ (another route than the mount), bounded by --budget."""
    s3 = s3client(a, pool=4)
    from concurrent.futures import ThreadPoolExecutor
    deadline = time.monotonic() + a.budget

    def put(i):
        if time.monotonic() < deadline:
            s3.put_object(Bucket=a.bucket, Key=f"{a.prefix}/x{i:06d}", Body=b"x")
            return 1
        return 0

    with ThreadPoolExecutor(4) as ex:
        n = sum(ex.map(put, range(a.n)))
    out({"filled": n})
    return 0


def cmd_waitrows(a):
    """Waits (bounded) until PREFIX has at least N live reception rows."""
    import psycopg2
    deadline = time.monotonic() + a.budget
    n = 0
    while time.monotonic() < deadline:
        c = psycopg2.connect(a.conninfo, connect_timeout=10)
        try:
            with c.cursor() as cur:
                cur.execute("SELECT count(*) FROM reception_audit WHERE removed_at IS NULL"
                            " AND left(object_key, length(%s)) = %s", (a.prefix, a.prefix))
                n = cur.fetchone()[0]
        finally:
            c.close()
        if n >= a.n:
            break
        time.sleep(0.5)
    out({"rows": n})
    return 0


def cmd_boto3_big(a):
    from boto3.s3.transfer import TransferConfig
    s3 = s3client(a, pool=max(10, a.workers))
    s3.head_bucket(Bucket=a.bucket)
    part = a.part_mib << 20
    tc = TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                        max_concurrency=a.workers, use_threads=True)
    t0 = time.monotonic()
    err = None
    try:
        s3.upload_file(a.src, a.bucket, a.obj, Config=tc)
    except Exception as e:
        err = str(e)
    secs = time.monotonic() - t0
    out({"secs": secs, "error": err, "size": os.path.getsize(a.src)})
    return 0


def cmd_verify(a):
    s3 = s3client(a)
    n = good = total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket,
                                                             Prefix=a.prefix + "/"):
        for o in page.get("Contents", []):
            if o["Key"].endswith("/"):
                continue
            n += 1
            total += o["Size"]
            if o["Size"] == a.size:
                good += 1
    out({"objects": n, "right_size": good, "bytes": total, "expected": a.n})
    return 0


def cmd_verify_one(a):
    s3 = s3client(a)
    try:
        h = s3.head_object(Bucket=a.bucket, Key=a.obj)
    except Exception as e:
        out({"found": False, "error": str(e)})
        return 0
    meta = h.get("Metadata", {})
    res = {"found": True, "size": h["ContentLength"], "size_ok": h["ContentLength"] == a.size,
           "meta_sha256": meta.get("sha256")}
    if a.sha256:
        # The bytes themselves, hashed here: a streamed multipart object carries no hash
        # metadata (the reception row is the hashes' record), and metadata proves nothing.
        d = hashlib.sha256()
        body = s3.get_object(Bucket=a.bucket, Key=a.obj)["Body"]
        for chunk in iter(lambda: body.read(1 << 20), b""):
            d.update(chunk)
        res["sha256_ok"] = d.hexdigest() == a.sha256
        res["meta_ok"] = meta.get("sha256") in (None, a.sha256)
    out(res)
    return 0


def cmd_dbcount(a):
    import psycopg2
    c = psycopg2.connect(a.conninfo, connect_timeout=10)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT count(*), coalesce(sum(size_bytes), 0) FROM reception_audit"
                        " WHERE removed_at IS NULL AND left(object_key, length(%s)) = %s",
                        (a.prefix, a.prefix))
            n, b = cur.fetchone()
    finally:
        c.close()
    out({"rows": n, "bytes": int(b)})
    return 0


def cmd_pgstat(a):
    import psycopg2
    c = psycopg2.connect(a.conninfo, connect_timeout=10)
    c.autocommit = True
    try:
        with c.cursor() as cur:
            # xids assigned so far (write transactions; this call takes one itself). Unlike
            # pg_stat_database, not delayed by the statistics flush interval.
            cur.execute("SELECT txid_current()")
            print(cur.fetchone()[0])
    finally:
        c.close()
    return 0


def descendants(pids):
    """pids and all their descendants (the Swift servers fork their workers)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            children.setdefault(int(s[s.rindex(")") + 2:].split()[1]), []).append(int(d))
        except (OSError, ValueError):
            continue
    seen, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(children.get(p, []))
    return seen


def cmd_cpu(a):
    print(f"{sum(cpu_of(p) for p in descendants(a.pids)):.2f}")
    return 0


def cmd_pgpids(a):
    pids = [a.pid]
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            if int(s[s.rindex(")") + 2:].split()[1]) == a.pid:
                pids.append(int(d))
        except (OSError, ValueError):
            continue
    print(" ".join(map(str, pids)))
    return 0


def cmd_watch(a):
    peak_rss = peak_hwm = peak_spool = 0
    samples = 0
    deadline = time.monotonic() + a.budget
    while not os.path.exists(a.stopfile) and time.monotonic() < deadline:
        rss = status_kib(a.pid, "VmRSS")
        if rss is None:
            break
        hwm = status_kib(a.pid, "VmHWM") or 0
        sp, _ = spool_bytes(a.pid, a.spool)
        peak_rss = max(peak_rss, rss)
        peak_hwm = max(peak_hwm, hwm)
        peak_spool = max(peak_spool, sp)
        samples += 1
        time.sleep(a.interval)
    hwm = status_kib(a.pid, "VmHWM") or 0
    sp_after, n_after = spool_bytes(a.pid, a.spool)
    with open(a.out, "w") as f:
        for k, v in {"peak_rss_kib": peak_rss, "hwm_kib": max(peak_hwm, hwm),
                     "peak_spool_bytes": peak_spool, "spool_after_bytes": sp_after,
                     "spool_after_files": n_after, "samples": samples}.items():
            f.write(f"{TAG}{k}={v}\n")
    return 0


# --------------------------------------------------------------------------- report

def cmd_probes(a):
    """Summarise `perf script -F tid,time,event` of entry/return uprobes (group cfsbench):
    per function count and latency, the five SQL statements of a reception record, and for a
    big file the timeline of the upload."""
    import re
    import collections
    stack = collections.defaultdict(dict)
    dur = collections.defaultdict(list)
    spans = []
    pg_idx = collections.defaultdict(int)
    pg = collections.defaultdict(list)
    first = last = None
    rx = re.compile(r"\s*(\d+)\s+([\d.]+):\s+cfsbench:(\w+?)(_ret(?:__return)?)?:")
    with open(a.file) as f:
        for line in f:
            m = rx.match(line)
            if not m:
                continue
            tid, t, fn, ret = int(m.group(1)), float(m.group(2)), m.group(3), m.group(4)
            first = t if first is None else first
            last = t
            if fn == "db_reception_record" and not ret:
                pg_idx[tid] = 0
            if not ret:
                stack[tid][fn] = t
                continue
            s0 = stack[tid].pop(fn, None)
            if s0 is None:
                continue
            ms = (t - s0) * 1000
            dur[fn].append(ms)
            spans.append((s0, t, fn))
            if fn == "pg_exec":
                pg[pg_idx[tid]].append(ms)
                pg_idx[tid] += 1
    if first is None:
        print("  (no probe events)")
        return 0
    print(f"  {a.title}: {1000 * (last - first):.0f} ms of events"
          + (f", {a.files} files" if a.files else ""))
    print(f"  {'function':<22} {'calls':>6} {'total ms':>9} {'mean':>8} {'p50':>8} {'p90':>8} {'max':>8}"
          + ("  ms/file" if a.files else ""))
    for fn, v in sorted(dur.items(), key=lambda kv: -sum(kv[1])):
        v.sort()
        print(f"  {fn:<22} {len(v):>6} {sum(v):>9.1f} {sum(v) / len(v):>8.3f} {v[len(v) // 2]:>8.3f}"
              f" {v[int(len(v) * 0.9)]:>8.3f} {v[-1]:>8.2f}"
              + (f" {sum(v) / a.files:>8.3f}" if a.files else ""))
    if pg and len(pg) == 5:
        print("  SQL round trips inside db_reception_record (pg_exec, in order):")
        for i, name in enumerate(("BEGIN", "pg_advisory_xact_lock", "SELECT .. FOR UPDATE",
                                  "INSERT .. RETURNING", "COMMIT")):
            v = sorted(pg[i])
            print(f"    {i + 1}. {name:<22} mean {sum(v) / len(v):.3f}  p50 {v[len(v) // 2]:.3f}"
                  f"  p90 {v[int(len(v) * 0.9)]:.3f} ms")
    if a.timeline:
        print("  timeline (ms from the first event):")
        w = [x for x in spans if x[2] == "cfs_write"]
        if w:
            print(f"    {len(w)} FUSE writes from {1000 * (w[0][0] - first):.0f} to "
                  f"{1000 * (w[-1][1] - first):.0f}")
        for s0, t, fn in sorted(spans):
            if fn in ("s3_mpu_create", "s3_mpu_complete", "s3_copy", "s3_put_fd", "cfs_flush",
                      "db_reception_record", "cfs_release"):
                print(f"    {1000 * (s0 - first):8.0f} .. {1000 * (t - first):8.0f}  "
                      f"({1000 * (t - s0):7.1f} ms)  {fn}")
        p = [x for x in spans if x[2] == "s3_mpu_upload_part"]
        if p:
            d = sorted(1000 * (t - s0) for s0, t, _ in p)
            print(f"    {len(p)} parts uploaded from {1000 * (p[0][0] - first):.0f} to "
                  f"{1000 * (max(t for _, t, _ in p) - first):.0f}, each {d[0]:.0f}..{d[-1]:.0f} ms")
    return 0


def cmd_report(a):
    r = {}
    with open(a.results) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                r[k] = v

    def num(k):
        try:
            return float(r[k])
        except (KeyError, ValueError):
            return None

    def fmt(x, unit="", nd=1):
        return "n/a" if x is None else f"{x:.{nd}f}{unit}"

    def median(v):
        v = sorted(x for x in v if x is not None)
        if not v:
            return None
        m = len(v) // 2
        return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2

    def ratio(x, y):
        return x / y if x and y else None

    def per_round(tag, rounds, fn):
        return [fn(f"{tag}_r{i}") for i in range(1, rounds + 1)]

    def rate_of(t):
        d, s = num(f"{t}_done"), num(f"{t}_secs")
        return d / s if d is not None and s else None

    def total(tag, rounds, key):
        v = [num(f"{tag}_r{i}_{key}") for i in range(1, rounds + 1)]
        return None if any(x is None for x in v) else sum(v)

    def spread(v, unit, nd=1):
        v = [x for x in v if x is not None]
        if len(v) < 2:
            return ""
        return f"  [{min(v):.{nd}f}..{max(v):.{nd}f}]"

    W = 62
    print()
    print("=" * 86)
    print(f"custodyfs benchmark  backend={r.get('backend')}  cores={os.cpu_count()}  "
          f"PostgreSQL fsync={'off' if r.get('pg_fast') == '1' else 'on'}  "
          f"load avg at end={os.getloadavg()[0]:.2f}")
    print(f"daemon: {r.get('bin')} (built {r.get('bin_mtime', '?')})")
    print("=" * 86)

    if "a_n" in r:
        n, size, R = int(num("a_n")), int(num("a_size")), int(num("a_rounds") or 1)
        print(f"\n(a) {n} files of {size} B, serial, {R} round(s): median files/s [min..max]")
        rates = {t: per_round(t, R, rate_of) for t in ("a_fs", "a_boto3", "a_curl", "a_ref",
                                                          "a_cplocal")}
        med = {t: median(v) for t, v in rates.items()}
        for label, t in (("custodyfs: cp per file into inbox/ (durable at close)", "a_fs"),
                         ("baseline 1 (MAIN): boto3 put_object loop, 1 kept-alive conn",
                          "a_boto3"),
                         ("baseline 2: curl --aws-sigv4, a process per file", "a_curl"),
                         ("info: boto3 PUT + psycopg2 INSERT/COMMIT per file", "a_ref"),
                         ("info: cp per file into a local dir (process cost)", "a_cplocal")):
            if med[t] is None:
                continue
            print(f"  {label:<{W}} {fmt(med[t], ' files/s'):>15}{spread(rates[t], '')}"
                  + (f"  = {1000 / med[t]:.2f} ms/file" if med[t] else ""))
        bd = rate_of("a_bigdir")
        if bd is not None:
            print(f"  {'info: custodyfs, cp into a dir already holding ' + r.get('a_bigdir_preload', '?') + ' objects':<{W}}"
                  f" {fmt(bd, ' files/s'):>15}" + (f"  = {1000 / bd:.2f} ms/file" if bd else "")
                  + f"  (landed {r.get('a_bigdir_right_size', '?')}/{n})")
        rr = [ratio(x, y) for x, y in zip(rates["a_fs"], rates["a_boto3"])]
        print(f"  RATIO custodyfs / boto3 in-process (MAIN) = {fmt(ratio(med['a_fs'], med['a_boto3']), '', 2)}"
              f"{spread(rr, '', 2)}   target >= 0.80")
        rr = [ratio(x, y) for x, y in zip(rates["a_fs"], rates["a_curl"])]
        print(f"  ratio custodyfs / curl per process        = {fmt(ratio(med['a_fs'], med['a_curl']), '', 2)}"
              f"{spread(rr, '', 2)}   (same target; both pay a process per file)")
        if med["a_ref"]:
            print(f"  ratio custodyfs / boto3 PUT+INSERT/COMMIT = "
                  f"{fmt(ratio(med['a_fs'], med['a_ref']), '', 2)}   (information)")
        want = n * R
        got = {t: (total(t, R, "right_size"), total(t, R, "objects"))
               for t in ("a_fs", "a_boto3", "a_curl")}
        print(f"  landed, all rounds (objects of {size} B / objects under the prefix; expected "
              f"{want}): custodyfs {fmt(got['a_fs'][0], '', 0)}/{fmt(got['a_fs'][1], '', 0)}"
              f" with {fmt(total('a_fs', R, 'rows'), '', 0)} audit rows; boto3 "
              f"{fmt(got['a_boto3'][0], '', 0)}/{fmt(got['a_boto3'][1], '', 0)}; curl "
              f"{fmt(got['a_curl'][0], '', 0)}/{fmt(got['a_curl'][1], '', 0)}")
        for t, what in (("a_fs", "cp into inbox/"), ("a_boto3", "boto3 PUT"),
                        ("a_curl", "curl PUT"), ("a_ref", "reference")):
            errs = total(t, R, "errors")
            if errs:
                print(f"  !! {errs:.0f} {what} operations FAILED")
            if any(r.get(f"{t}_r{i}_timed_out") == "1" for i in range(1, R + 1)):
                print(f"  !! a {what} loop ran out of its time budget")
        done = total("a_fs", R, "done") or 1
        if total("a_fs", R, "dcpu") is not None:
            print(f"  CPU ms/file, custodyfs phase: daemon {1000 * total('a_fs', R, 'dcpu') / done:.2f}, "
                  f"S3 server {1000 * total('a_fs', R, 'scpu') / done:.2f}, "
                  f"PostgreSQL {1000 * total('a_fs', R, 'pcpu') / done:.2f}; "
                  f"PG write transactions/file {total('a_fs', R, 'xacts') / done:.2f}")
        for t, what in (("a_boto3", "boto3"), ("a_curl", "curl")):
            d = total(t, R, "done") or 1
            if total(t, R, "scpu") is not None:
                print(f"  CPU ms/file, {what + ' phase:':<16} S3 server {1000 * total(t, R, 'scpu') / d:.2f}")

    if "b_mib" in r:
        mib, R = num("b_mib"), int(num("b_rounds") or 1)
        mb = mib * 1048576 / 1e6
        fs = [mb / x if x else None for x in per_round("b_fs", R, lambda t: num(t + "_secs"))]
        b3 = [mb / x if x else None for x in per_round("b_boto3", R, lambda t: num(t + "_secs"))]
        print(f"\n(b) one {int(mib)} MiB file, {R} round(s): median MB/s [min..max]")
        print(f"  {'custodyfs: cp into inbox/ (durable at close)':<{W}} {fmt(median(fs), ' MB/s'):>15}{spread(fs, '')}")
        print(f"  {'baseline: boto3 upload_file, 16 MiB parts, 4 threads':<{W}} {fmt(median(b3), ' MB/s'):>15}{spread(b3, '')}")
        rr = [ratio(x, y) for x, y in zip(fs, b3)]
        print(f"  RATIO custodyfs / boto3 multipart = {fmt(ratio(median(fs), median(b3)), '', 2)}"
              f"{spread(rr, '', 2)}   target >= 0.90")
        ok_fs = sum(1 for i in range(1, R + 1) if r.get(f"b_fs_r{i}_size_ok") == "1"
                    and r.get(f"b_fs_r{i}_sha256_ok") == "1" and r.get(f"b_fs_r{i}_rows") == "1"
                    and r.get(f"b_fs_r{i}_rc") == "0")
        ok_b3 = sum(1 for i in range(1, R + 1) if r.get(f"b_boto3_r{i}_size_ok") == "1")
        print(f"  landed: custodyfs {ok_fs}/{R} rounds with cp exit 0, right size, right sha256 of the bytes and "
              f"1 audit row; boto3 {ok_b3}/{R} with the right size")
        for i in range(1, R + 1):
            e = r.get(f"b_boto3_r{i}_error")
            if e not in (None, "None"):
                print(f"  !! boto3 round {i}: {e}")
        if total("b_fs", R, "dcpu") is not None:
            print(f"  CPU s/round, custodyfs: daemon {total('b_fs', R, 'dcpu') / R:.2f}, "
                  f"S3 server {total('b_fs', R, 'scpu') / R:.2f} "
                  f"(wall {median(per_round('b_fs', R, lambda t: num(t + '_secs'))):.2f})")
            print(f"  CPU s/round, boto3:     S3 server {total('b_boto3', R, 'scpu') / R:.2f} "
                  f"(wall {median(per_round('b_boto3', R, lambda t: num(t + '_secs'))):.2f}; "
                  f"the boto3 process itself not counted)")

    if "c_mib" in r:
        print(f"\n(c) one {int(num('c_mib'))} MiB file cp'd into inbox/")
        hwm = num("c_hwm_kib")
        print(f"  {'daemon peak RSS (VmHWM, reset just before the write)':<{W}} "
              f"{fmt(hwm / 1024 if hwm else None, ' MiB'):>15}   target < 64 MiB")
        if num("pre_c_hwm_kib"):
            print(f"  {'daemon VmHWM since mount, before (c)':<{W}} "
                  f"{fmt(num('pre_c_hwm_kib') / 1024, ' MiB'):>15}")
        print(f"  {'daemon VmRSS, peak of samples every 50 ms':<{W}} "
              f"{fmt(num('c_peak_rss_kib') / 1024 if num('c_peak_rss_kib') else None, ' MiB'):>15}")
        sp = num("c_peak_spool_bytes")
        print(f"  {'spool usage, peak during the write (open spool files)':<{W}} "
              f"{fmt(sp / 1048576 if sp is not None else None, ' MiB'):>15}")
        sp = num("c_spool_after_bytes")
        print(f"  {'spool usage right after close':<{W}} "
              f"{fmt(sp / 1048576 if sp is not None else None, ' MiB'):>15}"
              f"  ({r.get('c_spool_after_files', '?')} open spool files)")
        print(f"  {'spool_dir on disk after close (du)':<{W}} {r.get('c_spool_du', '?'):>15}")
        secs = num("c_secs")
        print(f"  write+close took {fmt(secs, ' s', 1)} "
              f"({fmt(num('c_mib') * 1.048576 / secs if secs else None, ' MB/s')}); "
              f"landed: size_ok={r.get('c_size_ok')} sha256_ok={r.get('c_sha256_ok')} "
              f"(cp exit {r.get('c_rc')})")
    print()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("freeport")
    p.add_argument("--offsets", default="0")
    p.set_defaults(fn=cmd_freeport)
    p = sub.add_parser("gen")
    p.add_argument("dir")
    p.add_argument("n", type=int)
    p.add_argument("size", type=int)
    p.set_defaults(fn=cmd_gen)
    p = sub.add_parser("gen1")
    p.add_argument("file")
    p.add_argument("mib", type=int)
    p.set_defaults(fn=cmd_gen1)
    p = sub.add_parser("boto3-small")
    add_s3args(p)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--budget", type=float, default=120)
    p.add_argument("--db")
    p.set_defaults(fn=cmd_boto3_small)
    p = sub.add_parser("fill")
    add_s3args(p)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--budget", type=float, default=120)
    p.set_defaults(fn=cmd_fill)
    p = sub.add_parser("waitrows")
    p.add_argument("conninfo")
    p.add_argument("prefix")
    p.add_argument("n", type=int)
    p.add_argument("--budget", type=float, default=120)
    p.set_defaults(fn=cmd_waitrows)
    p = sub.add_parser("boto3-big")
    add_s3args(p)
    p.add_argument("--bucket", required=True)
    p.add_argument("--obj", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--part-mib", type=int, default=16)
    p.add_argument("--workers", type=int, default=4)
    p.set_defaults(fn=cmd_boto3_big)
    p = sub.add_parser("verify")
    add_s3args(p)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.set_defaults(fn=cmd_verify)
    p = sub.add_parser("verify-one")
    add_s3args(p)
    p.add_argument("--bucket", required=True)
    p.add_argument("--obj", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--sha256")
    p.set_defaults(fn=cmd_verify_one)
    p = sub.add_parser("dbcount")
    p.add_argument("conninfo")
    p.add_argument("prefix")
    p.set_defaults(fn=cmd_dbcount)
    p = sub.add_parser("pgstat")
    p.add_argument("conninfo")
    p.set_defaults(fn=cmd_pgstat)
    p = sub.add_parser("cpu")
    p.add_argument("pids", type=int, nargs="*")
    p.set_defaults(fn=cmd_cpu)
    p = sub.add_parser("pgpids")
    p.add_argument("pid", type=int)
    p.set_defaults(fn=cmd_pgpids)
    p = sub.add_parser("watch")
    p.add_argument("pid", type=int)
    p.add_argument("spool")
    p.add_argument("stopfile")
    p.add_argument("out")
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--budget", type=float, default=600)
    p.set_defaults(fn=cmd_watch)
    p = sub.add_parser("probes")
    p.add_argument("file")
    p.add_argument("--title", default="probes")
    p.add_argument("--files", type=int, default=0)
    p.add_argument("--timeline", action="store_true")
    p.set_defaults(fn=cmd_probes)
    p = sub.add_parser("report")
    p.add_argument("results")
    p.set_defaults(fn=cmd_report)
    for p in sub.choices.values():
        p.add_argument("--tag", default="")
    a = ap.parse_args()
    global TAG
    TAG = a.tag + "_" if a.tag else ""
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
