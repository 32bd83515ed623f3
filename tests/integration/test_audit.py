"""audit/: read-only views of the audit tables and the live counters (SPEC §4, issue 7 items 1-2).

Every view is checked against the tables read with psycopg2 (never through the mount), parsed
with Python's csv and json modules and read with the tools an auditor uses (cat, wc, grep, head,
cp, python). Every change under audit/ must fail with EROFS, root included (these tests run as
root); another user (uid 65534) gets EROFS when the daemon checks permissions, and the kernel's
own refusal first when the kernel does (test_every_change_fails_for_other_users). audit/stats is
checked against what the tests did and against the tables."""
import csv
import errno
import io
import json
import os
import shutil
import stat
import subprocess
import datetime

import pytest

import checks
from checks import drop, project, promote

TABLES = ["projects_registry", "reception_audit", "storage_audit"]


# ---- helpers ---------------------------------------------------------------------------------

def columns(m, table):
    return [r[0] for r in m.sql("select column_name from information_schema.columns"
                                " where table_name = %s order by ordinal_position", (table,))]


def iso(v):
    return v.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def as_csv(v):
    """A psycopg2 value as PostgreSQL's CSV export must show it."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, datetime.datetime):
        return iso(v)
    return str(v)


def as_json(v):
    if isinstance(v, datetime.datetime):
        return iso(v)
    return v


def table_rows(m, table, where="", params=None):
    cols = columns(m, table)
    rows = m.sql(f"select {', '.join(cols)} from {table} {where} order by id", params)
    return cols, rows


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.split("\n")[:-1]]


def check_view(m, table, csv_path, jsonl_path, where="", params=None):
    cols, rows = table_rows(m, table, where, params)
    got = read_csv(csv_path)
    assert got[0] == cols
    assert got[1:] == [[as_csv(v) for v in r] for r in rows]
    objs = read_jsonl(jsonl_path)
    assert [list(o.keys()) for o in objs] == [cols] * len(rows)
    assert objs == [{c: as_json(v) for c, v in zip(cols, r)} for r in rows]
    return len(rows)


def stats(m):
    with open(os.path.join(m.audit, "stats"), encoding="ascii") as f:
        text = f.read()
    out = {}
    for line in text.splitlines():
        k, v = line.split(" ")
        assert k not in out
        out[k] = int(v)
    return out


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


# Values a CSV or JSON writer must get right: every field of a row written by another tool with
# only the seed's columns (no hashes, no received_by, no etag/origin).
AWKWARD = ["a,b", 'say "hi"', "line1\nline2", "cr\rlf\r\nend", "back\\slash\\", "ctl\x01\x1f\x7f",
           "ação ✓ 日本 🐘", "", "\\.", "\t tab", "\\N"]


# ---- the views against the tables ------------------------------------------------------------

def test_listing(mount, uniq):
    p = project(mount, uniq)
    names = sorted(os.listdir(mount.audit))
    assert names == sorted(["stats", "chain", "by-project"] + [t + e for t in TABLES
                                                       for e in (".csv", ".jsonl")])
    assert {p + ".csv", p + ".jsonl"} <= set(os.listdir(os.path.join(mount.audit, "by-project")))
    st = os.stat(os.path.join(mount.audit, "reception_audit.csv"))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(mount.audit, "nope.csv"))
    with pytest.raises(FileNotFoundError):
        open(os.path.join(mount.audit, "by-project", "no-such-project.csv"))
    with pytest.raises(FileNotFoundError):
        open(os.path.join(mount.audit, "reception_audit.txt"))


def test_views_match_tables_in_any_timezone(mount_factory, uniq):
    """Every table as CSV and JSONL equals the table (every column, in order, by id), with
    awkward values and seed-shaped rows, while the database's TimeZone is not UTC."""
    m = mount_factory(start=False)
    m.sql("alter database custody set timezone = 'Asia/Kathmandu'")
    m.mount()
    assert m.sql_value("show timezone") == "Asia/Kathmandu"
    p1, p2 = project(m, uniq + "-a"), project(m, uniq + "-b")
    m.sql("insert into projects_registry (prefix, name) values (%s, %s)", (uniq + "-c", "x,\"y\"\nz"))
    for i, v in enumerate(AWKWARD):
        m.sql("insert into reception_audit (source_bucket, file_name, object_key, size_bytes)"
              " values ('other-bucket', %s, %s, %s)", (v, f"seed/{i}/{v}", i))
    drop(m, "one.txt", b"one")
    drop(m, "two.txt", b"two two")
    drop(m, "three.txt", b"three")
    promote(m, "one.txt", p1)
    promote(m, "two.txt", p1, "sub.txt")
    promote(m, "three.txt", p2)
    for t in TABLES:
        n = check_view(m, t, os.path.join(m.audit, t + ".csv"), os.path.join(m.audit, t + ".jsonl"))
        assert n >= 3
    for p, n in ((p1, 2), (p2, 1)):
        assert check_view(m, "storage_audit", os.path.join(m.audit, "by-project", p + ".csv"),
                          os.path.join(m.audit, "by-project", p + ".jsonl"),
                          "where project_prefix = %s", (p,)) == n
    # A project without storage rows: the header only, and an empty JSONL.
    assert read_csv(os.path.join(m.audit, "by-project", uniq + "-c.csv")) == \
        [columns(m, "storage_audit")]
    assert checks.read(os.path.join(m.audit, "by-project", uniq + "-c.jsonl")) == b""
    # NULL is an empty field, an empty string a quoted one; timestamps end in Z.
    raw = checks.read(os.path.join(m.audit, "reception_audit.csv")).decode()
    assert '"",seed/7/,7,' in raw
    ts = m.sql_value("select uploaded_at from reception_audit order by id limit 1")
    assert iso(ts) in raw


def csv_records(raw):
    """The record terminators of CSV bytes (what ends each record outside quotes), checking
    that nothing else breaks a line outside quotes."""
    ends, quoted, i = [], False, 0
    while i < len(raw):
        c = raw[i:i + 1]
        if c == b'"':
            quoted = not quoted
        elif not quoted and c in (b"\r", b"\n"):
            end = raw[i:i + 2] if raw[i:i + 2] == b"\r\n" else c
            ends.append(end)
            i += len(end)
            continue
        i += 1
    assert not quoted
    return ends


def test_csv_records_end_in_crlf(mount, uniq):
    """RFC 4180 §2.1: every record of every CSV view, the header too, ends in CRLF; a line
    break inside a quoted field is the data's, kept as stored (LF, CR, CRLF). The stat size is
    the bytes read, wc -l counts every LF, Python's csv module reads the table back. JSON Lines
    lines end in LF."""
    p = project(mount, uniq)
    for i, v in enumerate(AWKWARD):
        mount.sql("insert into reception_audit (source_bucket, file_name, object_key, size_bytes)"
                  " values ('other-bucket', %s, %s, %s)", (v, f"{uniq}/{i}/{v}", i))
    drop(mount, uniq + ".txt", b"crlf")
    promote(mount, uniq + ".txt", p)
    views = [t + ".csv" for t in TABLES] + ["by-project/" + p + ".csv"]
    for name in views:
        path = os.path.join(mount.audit, name)
        with open(path, "rb") as f:
            raw = f.read()
            assert os.fstat(f.fileno()).st_size == len(raw)
        ends = csv_records(raw)
        assert set(ends) == {b"\r\n"} and raw.endswith(b"\r\n"), (name, set(ends))
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
        assert len(ends) == len(rows)
        wc = subprocess.run(["wc", "-l", path], capture_output=True, check=True, text=True)
        assert int(wc.stdout.split()[0]) == raw.count(b"\n")
    n = check_view(mount, "reception_audit", os.path.join(mount.audit, "reception_audit.csv"),
                   os.path.join(mount.audit, "reception_audit.jsonl"))
    raw = checks.read(os.path.join(mount.audit, "reception_audit.csv"))
    assert len(csv_records(raw)) == n + 1
    assert b'"line1\nline2"' in raw and b'"cr\rlf\r\nend"' in raw  # the data's own breaks
    assert check_view(mount, "storage_audit", os.path.join(mount.audit, views[-1]),
                      os.path.join(mount.audit, "by-project", p + ".jsonl"),
                      "where project_prefix = %s", (p,)) == 1
    for t in TABLES:
        raw = checks.read(os.path.join(mount.audit, t + ".jsonl"))
        assert b"\r" not in raw and raw.endswith(b"}\n")


def test_columns_added_later_are_exported(mount, uniq):
    """Columns may grow: a column another tool adds appears in the views, in table order."""
    mount.sql("alter table projects_registry add column if not exists extra_note text")
    mount.sql("insert into projects_registry (prefix, name, extra_note) values (%s, 'n', %s)",
              (uniq, "nota \"1\""))
    cols = read_csv(os.path.join(mount.audit, "projects_registry.csv"))[0]
    assert cols[-1] == "extra_note" and cols == columns(mount, "projects_registry")
    check_view(mount, "projects_registry", os.path.join(mount.audit, "projects_registry.csv"),
               os.path.join(mount.audit, "projects_registry.jsonl"))


def test_snapshot_taken_at_open(mount, uniq):
    """An open view does not change while rows are added; the next open sees them."""
    path = os.path.join(mount.audit, "reception_audit.csv")
    before = mount.sql_value("select count(*) from reception_audit")
    with open(path, newline="", encoding="utf-8") as f:
        mount.sql("insert into reception_audit (source_bucket, file_name, object_key, size_bytes)"
                  " select 'other-bucket', 'f' || g, %s || '/' || g, g"
                  " from generate_series(1, 50) g", (uniq,))
        rows = list(csv.reader(f))
    assert len(rows) == before + 1
    assert len(read_csv(path)) == before + 51


def test_tools_see_the_whole_table(mount, uniq, tmp_path):
    """A size the kernel saw earlier (a smaller snapshot) never cuts a read short: cat, wc,
    grep, head, cp and python (which trust or pre-size from st_size) see the whole table."""
    path = os.path.join(mount.audit, "reception_audit.csv")
    jpath = os.path.join(mount.audit, "reception_audit.jsonl")
    checks.read(path)  # a snapshot of the small table: its size is what stat says now
    checks.read(jpath)
    small = os.stat(path).st_size
    mount.sql("insert into reception_audit (source_bucket, file_name, object_key, size_bytes)"
              " select 'other-bucket', %s || g, %s || '/' || g, g"
              " from generate_series(1, 20000) g", (uniq + "-row-", uniq))
    n = mount.sql_value("select count(*) from reception_audit")
    # Lines: the header, one per row, plus the newlines inside values (earlier tests' rows).
    lines = mount.sql_value("select count(*) + 1 + coalesce(sum(length(t::text)"
                            " - length(replace(t::text, E'\\n', ''))), 0)"
                            " from reception_audit t")
    assert os.stat(path).st_size == small  # stale until the next open: the reads must not care
    assert int(subprocess.run(["wc", "-l", path], capture_output=True, check=True, text=True)
               .stdout.split()[0]) == lines
    assert int(subprocess.run(f"cat '{path}' | wc -l", shell=True, capture_output=True,
                              check=True, text=True).stdout) == lines
    assert int(subprocess.run(["grep", "-c", uniq + "-row-", path], capture_output=True,
                              text=True).stdout) == 20000
    head = subprocess.run(["head", "-n", "2", path], capture_output=True, check=True, text=True)
    assert head.stdout.splitlines()[0] == ",".join(columns(mount, "reception_audit"))
    dst = tmp_path / "copy.csv"
    subprocess.run(["cp", path, str(dst)], check=True)
    assert len(read_csv(str(dst))) == n + 1
    with open(path, encoding="utf-8", newline="") as f:
        assert f.read().count("\n") == lines
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) == os.stat(path).st_size  # the newest snapshot's size, exact once open
    assert len(read_csv(path)) == n + 1
    shutil.copyfile(jpath, str(tmp_path / "copy.jsonl"))
    assert len(read_jsonl(str(tmp_path / "copy.jsonl"))) == n


def test_never_opened_view_reads_whole(mount, uniq, tmp_path):
    """A view nobody opened yet stats as 0 bytes: cp, shutil (sendfile), tail and python still
    get all of it."""
    p = project(mount, uniq)
    mount.sql("insert into storage_audit (project_prefix, project_name, dest_bucket, dest_key,"
              " size_bytes, outcome) select %s, 'n', 'storage-unique', %s || '/f' || g, g,"
              " 'copied' from generate_series(1, 3000) g", (p, p))
    path = os.path.join(mount.audit, "by-project", p + ".csv")
    jpath = os.path.join(mount.audit, "by-project", p + ".jsonl")
    assert os.stat(path).st_size == 0 and os.stat(jpath).st_size == 0
    cols, rows = table_rows(mount, "storage_audit", "where project_prefix = %s", (p,))
    want = [cols] + [[as_csv(v) for v in r] for r in rows]
    shutil.copyfile(path, str(tmp_path / "b.csv"))
    assert read_csv(str(tmp_path / "b.csv")) == want
    subprocess.run(["cp", jpath, str(tmp_path / "a.jsonl")], check=True)
    assert read_jsonl(str(tmp_path / "a.jsonl")) == [{c: as_json(v) for c, v in zip(cols, r)}
                                                     for r in rows]
    tail = subprocess.run(["tail", "-n", "1", path], capture_output=True, check=True, text=True)
    assert next(csv.reader(io.StringIO(tail.stdout))) == want[-1]
    assert len(read_csv(path)) == 3001


def test_stat_while_open_is_the_snapshot_size(mount, uniq):
    path = os.path.join(mount.audit, "projects_registry.csv")
    project(mount, uniq)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read()
    assert len(data) == size and uniq.encode() in data


# ---- EROFS everywhere ------------------------------------------------------------------------

def test_every_change_is_erofs_even_for_root(mount, uniq):
    assert os.geteuid() == 0
    p = project(mount, uniq)
    drop(mount, uniq + ".txt", b"x")
    a = mount.audit
    f = os.path.join(a, "reception_audit.csv")
    bp = os.path.join(a, "by-project")
    pf = os.path.join(bp, p + ".csv")
    counts = {t: mount.sql_value(f"select count(*) from {t}") for t in TABLES}
    attempts = {
        "open O_WRONLY": lambda: os.open(f, os.O_WRONLY),
        "open O_RDWR": lambda: os.open(f, os.O_RDWR),
        "open O_TRUNC": lambda: os.open(f, os.O_RDONLY | os.O_TRUNC),
        "open by-project O_WRONLY": lambda: os.open(pf, os.O_WRONLY),
        "open stats O_APPEND": lambda: os.open(os.path.join(a, "stats"), os.O_WRONLY | os.O_APPEND),
        "create": lambda: os.open(os.path.join(a, "new.csv"), os.O_CREAT | os.O_WRONLY, 0o644),
        "create in by-project": lambda: os.open(os.path.join(bp, "x.csv"), os.O_CREAT | os.O_RDONLY),
        "truncate": lambda: os.truncate(f, 0),
        "unlink": lambda: os.unlink(f),
        "unlink by-project": lambda: os.unlink(pf),
        "rename inside": lambda: os.rename(f, os.path.join(a, "other.csv")),
        "rename out": lambda: os.rename(f, os.path.join(mount.inbox, uniq + "-out.csv")),
        "rename in": lambda: os.rename(os.path.join(mount.inbox, uniq + ".txt"),
                                       os.path.join(a, "in.txt")),
        "mkdir": lambda: os.mkdir(os.path.join(a, "d")),
        "mkdir in by-project": lambda: os.mkdir(os.path.join(bp, "d")),
        "rmdir by-project": lambda: os.rmdir(bp),
        "chmod": lambda: os.chmod(f, 0o666),
        "chmod dir": lambda: os.chmod(a, 0o777),
        "chown": lambda: os.chown(f, 1, 1),
        "utime": lambda: os.utime(f, (1, 1)),
        "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
        "removexattr": lambda: os.removexattr(f, "user.x"),
        "symlink": lambda: os.symlink("/etc/passwd", os.path.join(a, "ln")),
        "link in": lambda: os.link(f, os.path.join(a, "hard.csv")),
        "link out": lambda: os.link(f, os.path.join(mount.inbox, uniq + "-hard.csv")),
        "mknod fifo": lambda: os.mkfifo(os.path.join(a, "fifo")),
        "mknod regular": lambda: os.mknod(os.path.join(a, "node"), 0o644 | stat.S_IFREG),
        "mknod in by-project": lambda: os.mkfifo(os.path.join(bp, "fifo")),
    }
    wrong = {}
    for what, fn in attempts.items():
        try:
            fd = fn()
            if isinstance(fd, int):
                os.close(fd)
            wrong[what] = "succeeded"
        except OSError as e:
            if e.errno != errno.EROFS:
                wrong[what] = errno.errorcode.get(e.errno, e.errno)
    assert wrong == {}
    with open(f, "rb") as h:  # a read-only handle takes no change either
        with pytest.raises(OSError) as e:
            os.ftruncate(h.fileno(), 0)
        assert e.value.errno in (errno.EBADF, errno.EINVAL, errno.EROFS)
        with pytest.raises(OSError) as e:
            os.fchmod(h.fileno(), 0o600)
        assert e.value.errno == errno.EROFS
    assert {t: mount.sql_value(f"select count(*) from {t}") for t in TABLES} == counts
    assert checks.live_rows(mount, uniq + ".txt")  # the inbox file stayed
    assert sorted(os.listdir(a)) == sorted(["stats", "chain", "by-project"] + [
        t + e for t in TABLES for e in (".csv", ".jsonl")])


# ---- audit/stats -----------------------------------------------------------------------------

def test_stats_counters_move_with_receptions_and_promotions(mount, uniq):
    p = project(mount, uniq)
    s0 = stats(mount)
    data = {uniq + "-1.txt": b"alpha" * 100, uniq + "-2.txt": b"beta" * 7,
            uniq + "-3.txt": b"alpha" * 100, uniq + "-4.txt": b"gamma",
            uniq + "-5.txt": b"beta" * 7}
    for name, d in data.items():
        drop(mount, name, d)
    s1 = stats(mount)
    assert s1["mount.received"] - s0["mount.received"] == 5
    assert s1["mount.bytes_received"] - s0["mount.bytes_received"] == sum(map(len, data.values()))
    assert s1["all.received"] - s0["all.received"] == 5
    promote(mount, uniq + "-1.txt", p, "a.txt")           # copied
    promote(mount, uniq + "-2.txt", p, "b.txt")           # copied
    promote(mount, uniq + "-3.txt", p, "c.txt")           # same bytes as a.txt: duplicate_content
    promote(mount, uniq + "-5.txt", p, "b.txt")           # same key, same bytes: duplicate
    with pytest.raises(OSError) as e:
        promote(mount, uniq + "-4.txt", p, "a.txt")       # same key, other bytes: conflict
    assert e.value.errno == errno.EEXIST
    s2 = stats(mount)
    outcomes = [r[0] for r in mount.sql("select outcome from storage_audit"
                                        " where project_prefix = %s order by id", (p,))]
    assert sorted(outcomes) == ["copied", "copied", "duplicate", "duplicate_content"]
    d = {k: s2[k] - s1[k] for k in s2}
    assert d["mount.copied"] == outcomes.count("copied") == 2
    assert d["mount.duplicates_content"] == 1 and d["mount.duplicates_path"] == 1
    assert d["mount.conflicts"] == 1
    assert d["mount.errors_promotion"] == 0 and d["mount.errors_reception"] == 0
    assert d["mount.bytes_stored"] == mount.sql_value(
        "select sum(size_bytes) from storage_audit where project_prefix = %s"
        " and outcome = 'copied'", (p,)) == 500 + 28
    assert d["all.copied"] == 2 and d["all.duplicates_content"] == 1
    assert d["all.duplicates_path"] == 1 and d["all.bytes_stored"] == 528
    assert d["mount.received"] == 0  # promotions receive nothing
    # all.* against the tables, counted here in Python.
    rec = mount.sql("select origin, size_bytes from reception_audit")
    live = [r for r in rec if r[0] != "rename"]
    assert s2["all.received"] == len(live)
    assert s2["all.bytes_received"] == sum(r[1] or 0 for r in live)
    srow = mount.sql("select outcome, size_bytes from storage_audit")
    for key, outcome in (("copied", "copied"), ("duplicates_path", "duplicate"),
                         ("duplicates_content", "duplicate_content"), ("restored", "restored"),
                         ("adopted", "adopted"), ("conflicts", "conflict")):
        assert s2["all." + key] == sum(1 for r in srow if r[0] == outcome), key
    assert s2["all.projects"] == len(mount.sql("select 1 from projects_registry"))


def test_stats_count_since_this_mount(mount_factory, uniq):
    m = mount_factory()
    s0 = stats(m)
    assert all(v == 0 for k, v in s0.items() if k.startswith("mount.") and k != "mount.started")
    drop(m, uniq + ".txt", b"12345")
    m.restart()
    s1 = stats(m)
    assert s1["mount.received"] == 0 and s1["all.received"] == 1
    assert s1["all.bytes_received"] == 5


def test_reception_error_is_counted(mount_factory, uniq):
    """A close that fails because the database is down counts as a reception error, and
    audit/stats still opens then (this mount's counters; all.available 0)."""
    m = mount_factory()
    s0 = stats(m)
    f = open(os.path.join(m.inbox, uniq + ".txt"), "wb")
    f.write(b"lost?")
    m.stop_pg("immediate")
    with pytest.raises(OSError):
        f.close()
    # The database is down: this mount's counters still show, the all-time ones do not.
    down = stats(m)
    assert down["mount.errors_reception"] == s0["mount.errors_reception"] + 1
    assert down["mount.received"] == s0["mount.received"]
    assert down["all.available"] == 0 and not any(k.startswith("all.") and k != "all.available"
                                                  for k in down)
    m.start_pg()
    up = stats(m)
    assert up["all.available"] == 1 and up["all.received"] == s0["all.received"]
    assert up["mount.errors_reception"] == down["mount.errors_reception"]


# ---- size: a 300,000-row table through the mount with bounded memory -------------------------

@pytest.mark.volume
def test_300k_rows_bounded_rss(mount_factory, uniq):
    # Under ASan (a CI build) freed memory is held in a quarantine (256 MiB by default) that
    # would be measured instead of the daemon: kept small. A plain build ignores the variable.
    m = mount_factory(env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:print_summary=1"
                                          ":quarantine_size_mb=4:thread_local_quarantine_size_kb=64"})
    m.sql("insert into reception_audit (source_bucket, file_name, object_key, size_bytes,"
          " sha256, received_by)"
          " select 'other-bucket', 'file-' || g || '.bin', %s || '/dir/file-' || g || '.bin', g,"
          " md5(g::text) || md5((g + 1)::text), 'someone (uid 1000) @ host, \"quoted\"'"
          " from generate_series(1, 300000) g", (uniq,), user="postgres")
    n = m.sql_value("select count(*) from reception_audit")
    assert n >= 300000
    for ext in (".csv", ".jsonl"):
        path = os.path.join(m.audit, "reception_audit" + ext)
        out = subprocess.run(["wc", "-l", path], capture_output=True, check=True, text=True,
                             timeout=300)
        assert int(out.stdout.split()[0]) == n + (1 if ext == ".csv" else 0)
    with open(os.path.join(m.audit, "reception_audit.csv"), newline="", encoding="utf-8") as f:
        last = None
        count = 0
        for last in csv.reader(f):
            count += 1
    assert count == n + 1 and last[0] == str(m.sql_value("select max(id) from reception_audit"))
    hwm = vm_hwm_kib(m.pid)
    print(f"daemon VmHWM after 300,000 rows as CSV and JSONL: {hwm} KiB")
    assert hwm < 64 * 1024, f"daemon VmHWM {hwm} KiB"


# Runs as another user: one Python expression per argument (os imported); prints one JSON list
# with "ok" or the errno name of each.
_AS_USER = r"""
import errno, json, os, sys
out = []
for expr in sys.argv[1:]:
    try:
        r = eval(expr)
        if isinstance(r, int) and expr.startswith("os.open"):
            os.close(r)
        out.append("ok")
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))
print(json.dumps(out))
"""

NOBODY = 65534


def as_nobody(*exprs):
    p = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        "/usr/bin/python3", "-c", _AS_USER, *exprs],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


# What the kernel answers a user other than root before custodyfs is asked, when it checks
# permissions (default_permissions): audit/'s files are 0444 and its directories 0555 (nobody may
# write them, and ls -l, access(2) and cp -p say so), so the permission check refuses first:
# EACCES where write permission is missing; EPERM where only the owner (chmod, utimes with
# times), root (chown) or, with fs.protected_hardlinks, a reader-writer (link) may act.
def kernel_errno(what):
    if what.startswith(("chmod", "chown")) or what == "utime":
        return "EPERM"
    if what.startswith("link"):
        with open("/proc/sys/fs/protected_hardlinks") as f:
            protected = f.read().strip() == "1"
        return "EPERM" if protected else ("EACCES" if what == "link in" else "EROFS")
    return "EACCES"


@pytest.mark.parametrize("checks_by", ["kernel", "daemon"])
def test_every_change_fails_for_other_users(mount_factory, uniq, checks_by):
    """A user without any privilege (uid 65534, no group) on a shared (allow_other) mount
    changes nothing under audit/ (tables, bucket, listing, modes, the views' bytes). When the
    daemon checks permissions (default_permissions = false) every change reaches custodyfs and
    fails with EROFS, as for root (SPEC §4). When the kernel checks them (the default) its
    permission check answers first (kernel_errno): custodyfs never sees those requests."""
    cfg = {"fs": {"default_permissions": "false"}} if checks_by == "daemon" else None
    m = mount_factory(config=cfg, opts="allow_other")
    for d in (m.stack.tmp, os.path.dirname(m.base), m.base, m.mnt):
        os.chmod(d, os.stat(d).st_mode | 0o055)  # other users must reach the mount point
    p = project(m, uniq)
    a = m.audit
    f = os.path.join(a, "reception_audit.csv")
    bp = os.path.join(a, "by-project")
    pf = os.path.join(bp, p + ".csv")
    mine = os.path.join(m.inbox, uniq + "-mine.txt")
    assert as_nobody(f"open({mine!r}, 'wb').write(b'mine')") == ["ok"]
    assert checks.live_rows(m, uniq + "-mine.txt")
    counts = {t: m.sql_value(f"select count(*) from {t}") for t in TABLES}
    keys = checks.bucket_keys(m, markers=True)
    before = {n: open(os.path.join(a, n), "rb").read() for n in ("reception_audit.csv",
                                                                   "storage_audit.jsonl")}
    modes = {n: stat.S_IMODE(os.stat(os.path.join(a, n)).st_mode)
             for n in ("", "by-project", "stats", "reception_audit.csv", "by-project/" + p + ".csv")}
    assert modes == {"": 0o555, "by-project": 0o555, "stats": 0o444,
                     "reception_audit.csv": 0o444, "by-project/" + p + ".csv": 0o444}
    attempts = {
        "open O_WRONLY": f"os.open({f!r}, os.O_WRONLY)",
        "open O_RDWR": f"os.open({f!r}, os.O_RDWR)",
        "open O_TRUNC": f"os.open({f!r}, os.O_RDONLY | os.O_TRUNC)",
        "open by-project O_WRONLY": f"os.open({pf!r}, os.O_WRONLY)",
        "open stats O_APPEND": f"os.open({os.path.join(a, 'stats')!r}, os.O_WRONLY | os.O_APPEND)",
        "create": f"os.open({os.path.join(a, 'new.csv')!r}, os.O_CREAT | os.O_WRONLY, 0o644)",
        "create in by-project": f"os.open({os.path.join(bp, 'x.csv')!r}, os.O_CREAT | os.O_RDONLY)",
        "truncate": f"os.truncate({f!r}, 0)",
        "unlink": f"os.unlink({f!r})",
        "unlink by-project": f"os.unlink({pf!r})",
        "rename inside": f"os.rename({f!r}, {os.path.join(a, 'other.csv')!r})",
        "rename out": f"os.rename({f!r}, {os.path.join(m.inbox, uniq + '-out.csv')!r})",
        "rename in": f"os.rename({mine!r}, {os.path.join(a, 'in.txt')!r})",
        "mkdir": f"os.mkdir({os.path.join(a, 'd')!r})",
        "mkdir in by-project": f"os.mkdir({os.path.join(bp, 'd')!r})",
        "rmdir by-project": f"os.rmdir({bp!r})",
        "chmod": f"os.chmod({f!r}, 0o666)",
        "chmod dir": f"os.chmod({a!r}, 0o777)",
        "chown": f"os.chown({f!r}, {NOBODY}, {NOBODY})",
        "utime now": f"os.utime({f!r})",
        "utime": f"os.utime({f!r}, (1, 1))",
        "setxattr": f"os.setxattr({f!r}, 'user.x', b'1')",
        "removexattr": f"os.removexattr({f!r}, 'user.x')",
        "symlink": f"os.symlink('/etc/passwd', {os.path.join(a, 'ln')!r})",
        "link in": f"os.link({f!r}, {os.path.join(a, 'hard.csv')!r})",
        "link out": f"os.link({f!r}, {os.path.join(m.inbox, uniq + '-hard.csv')!r})",
        "mknod fifo": f"os.mkfifo({os.path.join(a, 'fifo')!r})",
        "mknod regular": f"os.mknod({os.path.join(a, 'node')!r}, 0o644 | 0o100000)",
        "mknod in by-project": f"os.mkfifo({os.path.join(bp, 'fifo')!r})",
    }
    got = dict(zip(attempts, as_nobody(*attempts.values())))
    if checks_by == "daemon":
        assert got == {what: "EROFS" for what in attempts}
    else:
        assert got == {what: kernel_errno(what) for what in attempts}
    assert {t: m.sql_value(f"select count(*) from {t}") for t in TABLES} == counts
    assert checks.bucket_keys(m, markers=True) == keys
    assert checks.live_rows(m, uniq + "-mine.txt")
    assert sorted(os.listdir(a)) == sorted(["stats", "chain", "by-project"] + [
        t + e for t in TABLES for e in (".csv", ".jsonl")])
    assert {n: open(os.path.join(a, n), "rb").read() for n in before} == before
    assert {n: stat.S_IMODE(os.stat(os.path.join(a, n)).st_mode) for n in modes} == modes
