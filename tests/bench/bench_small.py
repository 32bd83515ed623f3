#!/usr/bin/python3
"""Helpers for tests/bench/bench_small.sh. A benchmark, not a test: it measures and prints,
never asserts a target. Standard library only.
  bench_small.py curlcfg OUT EP BUCKET PREFIX NETRC FILE...   a curl config: one PUT per FILE
  bench_small.py curltimes FILE...      per-transfer lines "code time_total" -> key=value
  bench_small.py snap METRICS OUT PID   the metrics file (+ the daemon's CPU) as JSON
  bench_small.py waitsnap METRICS AFTER OUT PID [--budget S]
                                        waits (bounded) for a metrics file written after the
                                        time AFTER (epoch seconds), then snap
  bench_small.py table RESULTS BEFORE AFTER   the per-file breakdown and the ratios
"""
import json
import os
import re
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def cpu_s(pid):
    """user+sys CPU seconds of the process (all its threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def parse_prom(text):
    """{"name{k=v,...}": value} for every sample (labels sorted, mountpoint dropped)."""
    out = {}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        m = SAMPLE.match(ln)
        if not m:
            continue
        labels = sorted((k, v) for k, v in LABEL.findall(m.group(3) or "")
                        if k != "mountpoint")
        key = m.group(1) + ("{" + ",".join(f"{k}={v}" for k, v in labels) + "}" if labels else "")
        out[key] = float(m.group(4))
    return out


def cmd_curlcfg(args):
    out, ep, bucket, prefix, netrc, files = args[0], args[1], args[2], args[3], args[4], args[5:]

    def q(s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    # Credentials from a netrc file named here (the Swift key "account:user" holds a colon,
    # which curl's user option would split at): never on the command line. No Expect
    # header: curl adds "Expect: 100-continue" to every -T upload, and removing it with
    # -H "Expect:" makes curl 7.88 sign a header it does not send (SignedHeaders=expect;...,
    # which Swift refuses), so the body goes as --data-binary with the method PUT (curl adds
    # Expect there only past 1 MiB). One section per file ("next"), in one process: the
    # connection is kept alive across them (num_connects tells).
    common = (f"netrc-file = {q(netrc)}\n"
              'aws-sigv4 = "aws:amz:us-east-1:s3"\n'
              'header = "x-amz-content-sha256: UNSIGNED-PAYLOAD"\n'
              'header = "Content-Type: application/octet-stream"\n'
              'request = "PUT"\n'
              'noproxy = "*"\nsilent\nshow-error\nmax-time = 30\nconnect-timeout = 5\n'
              'output = "/dev/null"\n'
              'write-out = "%{http_code} %{time_total} %{num_connects}\\n"\n')
    with open(out, "w") as f:
        for i, p in enumerate(files):
            if i:
                f.write("next\n")
            f.write(common)
            f.write(f"data-binary = {q('@' + p)}\n")
            f.write(f"url = {q(f'{ep}/{bucket}/{prefix}/{os.path.basename(p)}')}\n")
    os.chmod(out, 0o600)
    return 0


def cmd_curltimes(args):
    ok = bad = conns = 0
    total = 0.0
    for path in args:
        with open(path) as f:
            for ln in f:
                parts = ln.split()
                if len(parts) != 3:
                    continue
                if parts[0].startswith("2"):
                    ok += 1
                    total += float(parts[1])
                else:
                    bad += 1
                conns += int(parts[2])
    print(f"ok={ok}")
    print(f"bad={bad}")
    print(f"connects={conns}")
    print(f"put_secs={total:.6f}")
    return 0


def snap(metrics, out, pid):
    with open(metrics) as f:
        text = f.read()
    d = parse_prom(text)
    d["_daemon_cpu_s"] = cpu_s(pid)
    d["_mtime"] = os.stat(metrics).st_mtime
    with open(out, "w") as f:
        json.dump(d, f)


def cmd_snap(args):
    snap(args[0], args[1], int(args[2]))
    return 0


def cmd_waitsnap(args):
    metrics, after, out, pid = args[0], float(args[1]), args[2], int(args[3])
    budget = float(args[5]) if len(args) > 5 and args[4] == "--budget" else 15.0
    end = time.monotonic() + budget
    while time.monotonic() < end:
        try:
            if os.stat(metrics).st_mtime > after:
                snap(metrics, out, pid)
                return 0
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    print(f"bench_small.py: no metrics file written after {after} within {budget}s",
          file=sys.stderr)
    return 1


def results(path):
    r = {}
    with open(path) as f:
        for ln in f:
            if "=" in ln:
                k, v = ln.rstrip("\n").split("=", 1)
                r[k] = v
    return r


def cmd_table(args):
    res = results(args[0])
    with open(args[1]) as f:
        b = json.load(f)
    with open(args[2]) as f:
        a = json.load(f)
    n = int(res["n"])

    def d(key):
        return a.get(key, 0.0) - b.get(key, 0.0)

    def fnum(x, w=8, p=3):
        return f"{x:{w}.{p}f}"

    def rate(done, secs):
        return done / secs if secs > 0 else 0.0

    w = []
    w.append(f"custodyfs small files: {n} x {res['size']} B, backend {res['backend']}, "
             f"one run (the host is shared and busy: absolute figures are noisy)")
    w.append("")
    # ---- rates
    rows = []
    for tag, title in (("curl1", "curl, 1 process, keep-alive, a PUT per file"),
                       ("fs1", "custodyfs, cp -r of the directory"),
                       ("curl8", "curl, 8 processes, keep-alive"),
                       ("fs8", "custodyfs, xargs -P8 cp")):
        done = int(res.get(f"{tag}_done", 0))
        secs = float(res.get(f"{tag}_secs", 0))
        rows.append((tag, title, done, secs, rate(done, secs)))
    w.append(f"  {'method':<46} {'files':>6} {'secs':>8} {'files/s':>8}")
    for tag, title, done, secs, r in rows:
        w.append(f"  {title:<46} {done:>6} {secs:>8.2f} {r:>8.1f}")
    rr = {t: r for t, _, _, _, r in rows}
    w.append("")
    if rr["curl1"]:
        w.append(f"  ratio custodyfs/curl, serial:       {rr['fs1'] / rr['curl1']:.2f}"
                 "   (target >= 0.80)")
    if rr["curl8"]:
        w.append(f"  ratio custodyfs/curl, 8 in parallel: {rr['fs8'] / rr['curl8']:.2f}"
                 "   (target >= 0.80)")
    checks = []
    for tag in ("curl1", "fs1", "curl8", "fs8"):
        checks.append(f"{tag}: {res.get(tag + '_objects', '?')} objects"
                      f" ({res.get(tag + '_right_size', '?')} of the right size)")
    for tag in ("fs1", "fs8"):
        checks.append(f"{tag}: {res.get(tag + '_rows', '?')} live rows")
    w.append("  landed: " + "; ".join(checks))
    bad = [f"{t}: {res.get(t + '_bad')} failed" for t in ("curl1", "curl8")
           if res.get(t + "_bad", "0") != "0"]
    bad += [f"{t}: exit {res.get(t + '_rc')}" for t in ("curl1", "fs1", "curl8", "fs8")
            if res.get(t + "_rc", "0") != "0"]
    if bad:
        w.append("  FAILED: " + "; ".join(bad) + " (the figures above do not stand)")
    w.append("")

    # ---- breakdown of the serial cp -r
    fs_secs = float(res.get("fs1_secs", 0))
    curl_put = float(res.get("curl1_put_secs", 0))
    curl_ok = int(res.get("curl1_ok", 0)) or 1
    w.append(f"per-file breakdown of the serial cp -r (daemon timers, metrics file deltas / "
             f"{n} files), next to curl:")
    w.append(f"  {'stage':<52} {'count/file':>10} {'ms/file':>8}")

    def row(title, count, secs, indent=0):
        c = f"{count / n:10.2f}" if count is not None else f"{'':>10}"
        w.append(f"  {' ' * indent + title:<52} {c} {fnum(1000 * secs / n)}")

    row("wall: cp -r, per file", None, fs_secs)
    w.append(f"  {'curl: wall per file (serial)':<52} {'':>10} "
             f"{fnum(1000 * float(res.get('curl1_secs', 0)) / max(int(res.get('curl1_done', 0)), 1))}")
    w.append(f"  {'curl: PUT per file (time_total), new connections':<52} "
             f"{int(res.get('curl1_connects', 0)) / curl_ok:10.2f} "
             f"{fnum(1000 * curl_put / curl_ok)}")
    row("file open, create -> release", d("custodyfs_file_open_duration_seconds_count"),
        d("custodyfs_file_open_duration_seconds_sum"))
    row("FUSE handlers, all operations", sum(
        d(k) for k in a if k.startswith("custodyfs_fuse_request_duration_seconds_count")),
        sum(d(k) for k in a if k.startswith("custodyfs_fuse_request_duration_seconds_sum")))
    ops = sorted({k.split("op=")[1].rstrip("}") for k in a
                  if k.startswith("custodyfs_fuse_request_duration_seconds_count")})
    for op in ops:
        c = d(f"custodyfs_fuse_request_duration_seconds_count{{op={op}}}")
        if c:
            row(f"fuse {op}" + (" (LOOKUP+GETATTR)" if op == "getattr" else ""), c,
                d(f"custodyfs_fuse_request_duration_seconds_sum{{op={op}}}"), 2)
    row("commit (close): upload + reception row",
        d("custodyfs_upload_duration_seconds_count"), d("custodyfs_upload_duration_seconds_sum"))
    def stage(st, title, indent=0):
        row(title, d(f"custodyfs_stage_duration_seconds_count{{stage={st}}}"),
            d(f"custodyfs_stage_duration_seconds_sum{{stage={st}}}"), indent)
    stage("upload_finish", "upload: hash left + PUT", 2)
    stage("reception_row", "reception row: BEGIN..COMMIT, HEAD check", 2)
    stage("row_check", "HEAD: still this upload (key lock held)", 4)
    stage("create_check", "create: HEAD, is the name stored", 0)
    for st, title in (("spool_write", "spool write (in fuse write)"),
                      ("hash", "hashing (any thread)"),
                      ("sql_statement", "SQL statements (round trips, all)"),
                      ("sql_prepare", "SQL prepares (first use per connection)"),
                      ("sql_commit", "SQL COMMIT (all transactions)")):
        stage(st, title)
    row("SQL operations (all: pool wait, retries incl.)",
        d("custodyfs_sql_duration_seconds_count"), d("custodyfs_sql_duration_seconds_sum"))
    whats = sorted({k.split("what=", 1)[1][:-1] for k in a
                    if k.startswith("custodyfs_sql_operation_duration_seconds_count")})
    for wh in whats:
        c = d(f"custodyfs_sql_operation_duration_seconds_count{{what={wh}}}")
        if c:
            row(f"sql: {wh}", c,
                d(f"custodyfs_sql_operation_duration_seconds_sum{{what={wh}}}"), 2)
    s3ops = sorted({k.split("op=")[1].rstrip("}") for k in a
                    if k.startswith("custodyfs_s3_request_duration_seconds_count")})
    for op in s3ops:
        c = d(f"custodyfs_s3_request_duration_seconds_count{{op={op}}}")
        if c:
            row(f"S3 {op}", c, d(f"custodyfs_s3_request_duration_seconds_sum{{op={op}}}"))
    cpu = (a.get("_daemon_cpu_s") or 0) - (b.get("_daemon_cpu_s") or 0)
    row("daemon CPU (user+sys, /proc/PID/stat)", None, cpu)
    for tag, title in (("fs1", "S3 server CPU during cp -r"),
                       ("curl1", "S3 server CPU during curl"),
                       ("fs1_pg", "PostgreSQL CPU during cp -r")):
        done = int(res.get(f"{tag.split('_')[0]}_done", 0))
        if f"{tag}_cpu" in res and done:
            w.append(f"  {title:<52} {'':>10} {fnum(1000 * float(res[tag + '_cpu']) / done)}")
    w.append("")
    w.append("  (counts and sums are per file over the whole phase: a stage of another "
             "thread or request overlaps the wall)")
    print("\n".join(w))
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = {"curlcfg": cmd_curlcfg, "curltimes": cmd_curltimes, "snap": cmd_snap,
           "waitsnap": cmd_waitsnap, "table": cmd_table}.get(sys.argv[1])
    if not cmd:
        print(__doc__, file=sys.stderr)
        return 2
    return cmd(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
