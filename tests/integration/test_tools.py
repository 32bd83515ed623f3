"""The batch tools (issue 7 item 3): ``custodyfs status``, ``custodyfs recover`` and
``custodyfs promote`` run as subprocesses of the binary with the harness's config file, against
the real PostgreSQL and S3 server, no mount needed. Results are checked with boto3 and psycopg2:
every storage_audit and reception_audit row of each key (removed ones too), the journal, the
projects registry. The progress bar is checked in a real terminal (tmux)."""
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import uuid

import checks
from conftest import BIN, SANITIZER_RE, wait_until
from test_promote import (check_stored, dget, dhead, drop, journal,
                          project, proxied, srows)  # noqa: F401 (proxied: a fixture)


def _cli(m, *args, **kw):
    """custodyfs ARGS; a sanitizer report on its stderr (ASan build) fails the test."""
    r = m.cli(*args, **kw)
    assert not SANITIZER_RE.search(r.stderr), r.stderr[-6000:]
    return r


def _cfg(m):
    return "config=" + m.config


def _promote(m, p, *extra, name=None):
    args = ["promote", "--project", p, "-o", _cfg(m), "--json"]
    if name is not None:
        args += ["--name", name]
    return _cli(m, *args, *extra, timeout=300)


def _json(r):
    assert r.stdout.strip(), f"no JSON on stdout; stderr:\n{r.stderr}"
    return json.loads(r.stdout)


def _status(m, *extra):
    r = _cli(m, "status", "-o", _cfg(m), "--json", *extra, timeout=120)
    return r, _json(r)


def _put_foreign(m, key, data):
    """An upload by another route (SDK): the object, no reception row."""
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=data)
    assert checks.live_rows(m, key) == []


def _all_rows(m, table):
    return m.sql_value(f"select count(*) from {table}")


def _snapshot(m):
    """Every row of every table the tools may write, and both buckets' keys with ETags."""
    def keys(bucket):
        out = {}
        for page in m.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                out[o["Key"]] = o["ETag"]
        return out
    return {
        "reception": m.sql("select * from reception_audit order by id"),
        "storage": m.sql("select * from storage_audit order by id"),
        "projects": m.sql("select * from projects_registry order by id"),
        "journal": m.sql("select * from promotion_journal order by id"),
        "rbucket": keys(m.reception_bucket),
        "sbucket": keys(m.storage_bucket),
    }


# ---- promote ---------------------------------------------------------------------------------

def test_promote_everything_then_again_copies_nothing(mount_factory, uniq):
    """The seed's pipeline: the project is created (who and when), every received file is
    promoted to <prefix>/<its path> (nested directories too), an object uploaded by another
    route is logged first (hashed from its bytes) then promoted. A second run finds nothing;
    the same files received again are all duplicates: nothing copied, the stored objects
    untouched, a 'duplicate' row each."""
    m = mount_factory()
    p = uniq
    files = {"a.txt": b"alpha\n", "d/b.bin": os.urandom(70000), "d/e/c.bin": os.urandom(1234)}
    os.makedirs(os.path.join(m.inbox, "d", "e"))
    for k, b in files.items():
        drop(m, k, b)
    m.unmount()  # no mount sees the foreign object: the tool logs it
    foreign = {"f/foreign.bin": os.urandom(5000)}
    for k, b in foreign.items():
        _put_foreign(m, k, b)
    time.sleep(3.2)  # past the grace: LastModified (whole seconds) + 1 s + 1 s (harness)
    allf = dict(files, **foreign)

    r = _promote(m, p, name="Projeto " + p)
    out = _json(r)
    assert r.returncode == 0, r.stderr
    assert out["project_created"] is True and out["project_name"] == "Projeto " + p
    assert out["files"] == 4 and out["copied"] == 4 and out["duplicates"] == 0
    assert out["conflicts"] == 0 and out["failed"] == 0 and out["not_logged"] == 0
    assert out["logged_now"] == 1
    assert out["bytes_copied"] == sum(len(b) for b in allf.values())
    proj = m.sql_dicts("select * from projects_registry where prefix = %s", (p,))
    assert len(proj) == 1 and proj[0]["name"] == "Projeto " + p
    assert str(os.getuid()) in proj[0]["created_by"] and proj[0]["created_at"] is not None
    assert _all_rows(m, "projects_registry") == 1
    for k, b in allf.items():
        check_stored(m, p + "/" + k, b, k, ["copied"])
        assert len(checks.rows(m, k)) == 1  # one reception row each, removed now
    fr = checks.rows(m, "f/foreign.bin")[0]
    assert fr["sha256"] == m.sha256_bytes(foreign["f/foreign.bin"])
    assert fr["xxh128"] == m.xxh128_bytes(foreign["f/foreign.bin"])
    assert _all_rows(m, "storage_audit") == 4 and _all_rows(m, "reception_audit") == 4
    assert checks.bucket_keys(m) == []
    assert m.sql_value("select count(*) from promotion_journal where state <> 'done'") == 0
    first = {k: dhead(m, p + "/" + k) for k in allf}

    # nothing left in reception: a second run promotes nothing, changes nothing
    before = _snapshot(m)
    r = _promote(m, p)
    out = _json(r)
    assert r.returncode == 0, r.stderr
    assert out["project_created"] is False and out["files"] == 0 and out["copied"] == 0
    assert _snapshot(m) == before

    # the same files received again: every one a duplicate, nothing copied
    time.sleep(1.1)  # LastModified has a one-second resolution
    m.mount()
    for k, b in files.items():
        drop(m, k, b)
    m.unmount()
    for k, b in foreign.items():
        _put_foreign(m, k, b)
    time.sleep(3.2)
    r = _promote(m, p)
    out = _json(r)
    assert r.returncode == 0, r.stderr
    assert out["files"] == 4 and out["copied"] == 0 and out["bytes_copied"] == 0
    assert out["duplicates"] == 4 and out["duplicates_path"] == 4
    assert out["conflicts"] == 0 and out["failed"] == 0
    for k, b in allf.items():
        rows = check_stored(m, p + "/" + k, b, k, ["copied", "duplicate"])
        assert rows[1]["reception_id"] != rows[0]["reception_id"]
        again = dhead(m, p + "/" + k)
        assert again["ETag"] == first[k]["ETag"]
        assert again["LastModified"] == first[k]["LastModified"]
        assert len(checks.rows(m, k)) == 2
    assert _all_rows(m, "storage_audit") == 8 and _all_rows(m, "reception_audit") == 8
    assert checks.bucket_keys(m) == []
    assert _all_rows(m, "projects_registry") == 1


def test_promote_prefix_in_inbox_and_existing_project(mount_factory, uniq):
    """--prefix-in-inbox X promotes only the files under inbox/X/ (keeping their full path),
    into a project that exists (selected, not created again); the others stay received."""
    m = mount_factory()
    p = project(m, uniq)  # "Projeto <p>", registered by another tool
    for d in ("x", "x/y", "xz", "other"):
        os.makedirs(os.path.join(m.inbox, d), exist_ok=True)
    inside = {"x/1.txt": b"one\n", "x/y/2.txt": b"two\n"}
    outside = {"xz/3.txt": b"three\n", "other/4.txt": b"four\n"}
    for k, b in dict(inside, **outside).items():
        drop(m, k, b)
    r = _promote(m, p, "--prefix-in-inbox", "x/")
    out = _json(r)
    assert r.returncode == 0, r.stderr
    assert out["project_created"] is False and out["files"] == 2 and out["copied"] == 2
    for k, b in inside.items():
        check_stored(m, p + "/" + k, b, k, ["copied"])
    for k, b in outside.items():
        assert checks.get_object(m, k) == b
        assert len(checks.rows(m, k)) == 1 and len(checks.live_rows(m, k)) == 1
        assert srows(m, p + "/" + k) == [] and dhead(m, p + "/" + k) is None
    assert _all_rows(m, "projects_registry") == 1
    assert _all_rows(m, "storage_audit") == 2

    # a name that is not the existing project's is refused before anything is done
    before = _snapshot(m)
    r = _promote(m, p, name="another name")
    assert r.returncode == 2 and "exists" in r.stderr
    assert _snapshot(m) == before


def test_promote_conflict_and_bad_name_exit_nonzero(mount_factory, uniq):
    """A file whose key holds other content is a conflict: counted, exit 1, nothing
    overwritten, the file stays received; a key the store cannot take under the project
    fails alone, the other files are promoted."""
    m = mount_factory()
    p = project(m, uniq)
    drop(m, "c.txt", b"first\n")
    r = _promote(m, p)
    assert r.returncode == 0, r.stderr
    drop(m, "c.txt", b"second\n")
    drop(m, "ok.txt", b"fine\n")
    r = _promote(m, p)
    out = _json(r)
    assert r.returncode == 1
    assert out["files"] == 2 and out["conflicts"] == 1 and out["copied"] == 1
    assert out["failed"] == 0 and out["ok"] is False
    assert out["failures"] == [{"key": "c.txt", "error": "conflict"}]
    assert dget(m, p + "/c.txt") == b"first\n"
    assert [s["outcome"] for s in srows(m, p + "/c.txt")] == ["copied"]
    assert checks.get_object(m, "c.txt") == b"second\n"
    assert [(x["sha256"], x["removed_at"] is None) for x in checks.rows(m, "c.txt")] == \
        [(m.sha256_bytes(b"first\n"), False), (m.sha256_bytes(b"second\n"), True)]
    check_stored(m, p + "/ok.txt", b"fine\n", "ok.txt", ["copied"])
    assert "conflict" in r.stderr


def test_promote_with_the_store_down_changes_nothing(mount_factory, uniq):
    """The store down (then the database down): promote exits 1 before changing anything (no
    project created, no row, no journal entry, every reception row live, both buckets as they
    were). Back up, the same run promotes."""
    m = mount_factory()
    p = uniq
    drop(m, "s.txt", b"stays\n")
    drop(m, "t.txt", b"too\n")
    before = _snapshot(m)
    m.unmount()
    m.stop_s3()
    r = _promote(m, p, name="Projeto " + p)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "nothing done" in r.stderr
    m.start_s3()
    after = _snapshot(m)
    assert after == before
    assert m.sql_value("select count(*) from projects_registry where prefix = %s", (p,)) == 0
    # the database down: the same
    m.stop_pg()
    r = _promote(m, p, name="Projeto " + p)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "database" in r.stderr and r.stdout == ""
    m.start_pg()
    assert _snapshot(m) == before
    r = _promote(m, p, name="Projeto " + p)
    assert r.returncode == 0, r.stderr
    check_stored(m, p + "/s.txt", b"stays\n", "s.txt", ["copied"])
    check_stored(m, p + "/t.txt", b"too\n", "t.txt", ["copied"])


def test_promote_leaves_recent_unlogged_upload(mount_factory, uniq):
    """An object without a reception row younger than the grace period (its uploader, a
    mount, may be committing its row) is not logged nor promoted: reported, left in
    reception; exit 0 (it is not received yet)."""
    m = mount_factory(config={"fs": {"foreign_grace_ms": "600000"}})
    p = project(m, uniq)
    drop(m, "old.txt", b"logged\n")
    _put_foreign(m, "fresh.bin", b"just arrived")
    r = _promote(m, p)
    out = _json(r)
    assert r.returncode == 0, r.stderr
    assert out["files"] == 1 and out["copied"] == 1 and out["not_logged"] == 1
    assert out["logged_now"] == 0
    assert checks.get_object(m, "fresh.bin") == b"just arrived"
    assert checks.rows(m, "fresh.bin") == []
    assert srows(m, p + "/fresh.bin") == []
    check_stored(m, p + "/old.txt", b"logged\n", "old.txt", ["copied"])


def test_promote_usage_errors(mount_factory, uniq):
    m = mount_factory(start=False)
    for args in (["promote"], ["promote", "--project", "Bad/Prefix", "-o", _cfg(m)],
                 ["promote", "--project", uniq, "-o", "allow_other"],
                 ["promote", "--project", uniq, "-o", _cfg(m), "--workers", "0"],
                 ["promote", "--project", uniq, "-o", _cfg(m), "--name", "a\nb"],
                 ["status", "extra", "-o", _cfg(m)], ["recover", "--bogus"]):
        r = _cli(m, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
    for t in ("status", "recover", "promote"):
        r = _cli(m, t, "--help")
        assert r.returncode == 0 and r.stdout.startswith("usage: custodyfs " + t)
    # refused before the database was even migrated
    assert m.sql_value("select to_regclass('projects_registry')") is None


# ---- status ----------------------------------------------------------------------------------

def test_status_json_counts_match_the_tables(mount_factory, uniq):
    m = mount_factory()
    p = project(m, uniq)
    for n in ("a", "b", "c"):
        drop(m, n + ".txt", n.encode() * 10)
    os.rename(os.path.join(m.inbox, "a.txt"), os.path.join(m.projects, p, "a.txt"))
    r, st = _status(m)
    assert r.returncode == 0, r.stderr
    assert st["ok"] is True
    assert st["store"]["reception_bucket"] == {"name": m.reception_bucket, "ok": True,
                                               "error": None}
    assert st["store"]["storage_bucket"]["ok"] is True
    assert st["database"]["ok"] is True
    assert st["database"]["schema_version"] == st["database"]["schema_latest"] == \
        m.sql_value("select max(version) from schema_migrations")
    c = st["counts"]
    assert c["received_live"] == m.sql_value(
        "select count(*) from reception_audit where removed_at is null") == 2
    assert c["received_rows"] == _all_rows(m, "reception_audit") == 3
    assert c["stored"] == dict(m.sql("select outcome, count(*) from storage_audit group by 1"))
    assert c["stored"] == {"copied": 1} and c["stored_rows"] == 1
    assert c["projects"] == _all_rows(m, "projects_registry") == 1
    assert st["journal"] == {"open": 0, "open_owner_alive": 0, "open_owner_gone": 0,
                             "failed": 0, "entries": []}
    t = _cli(m, "status", "-o", _cfg(m))
    assert t.returncode == 0 and "received    2 live (3 rows" in t.stdout


def test_status_exits_nonzero_with_the_store_or_database_down(mount_factory):
    m = mount_factory(start=False)
    m.stop_s3()
    r, st = _status(m)
    assert r.returncode == 1
    assert st["ok"] is False and st["store"]["reception_bucket"]["ok"] is False
    assert st["store"]["reception_bucket"]["error"]
    assert st["database"]["ok"] is True
    m.start_s3()
    m.stop_pg()
    r, st = _status(m)
    assert r.returncode == 1
    assert st["ok"] is False and st["database"]["ok"] is False and st["database"]["error"]
    assert st["store"]["reception_bucket"]["ok"] is True
    assert "counts" not in st
    m.start_pg()
    r, st = _status(m)
    assert r.returncode == 0 and st["ok"] is True
    # the secret never shows
    assert m.stack.secret_key not in r.stdout + r.stderr


# ---- recover ---------------------------------------------------------------------------------

def _is_copy(meth, h):
    return meth == "PUT" and "x-amz-copy-source" in {k.lower() for k in h.keys()}


def test_recover_finishes_a_killed_mounts_promotion(stack, mount_factory, proxied, uniq):
    """A mount is killed while its copy is held at the store: its journal entry stays open,
    owner gone (status says so). recover with the store down leaves it open and exits 1;
    with the store back it finishes it (one object, one row, the source gone) and exits 0."""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    p = project(m, uniq)
    data = os.urandom(6000)
    drop(m, "rec.bin", data)
    px.rule = lambda meth, path, h: ("hang",) if _is_copy(meth, h) and "rec.bin" in path else None
    def go():
        try:
            os.rename(os.path.join(m.inbox, "rec.bin"), os.path.join(m.projects, p, "rec.bin"))
        except OSError:
            pass
    threading.Thread(target=go, daemon=True).start()
    m.wait_until(lambda: [j["state"] for j in journal(m, p + "/rec.bin")] == ["intent"],
                 timeout=20, what="journal intent")
    m.wait_until(lambda: any(meth == "PUT" and "/storage-unique/" in path and "rec.bin" in path
                             for meth, path, a in list(px.log)), timeout=20, what="copy sent")
    # the tools talk to the store directly (the proxy keeps holding the mount's copy)
    t = mount_factory(reset=False, start=False, name=uniq + "-tools")
    # while the mount lives its entry is its own: reported, never touched
    r, st = _status(t)
    assert r.returncode == 0
    assert st["journal"]["open"] == 1 and st["journal"]["open_owner_alive"] == 1
    owner = st["journal"]["entries"][0]["owner"]
    assert st["journal"]["entries"][0]["owner_alive"] is True
    r = _cli(t, "recover", "-o", _cfg(t), "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    assert _json(r)["entries"] == [] and _json(r)["left_open"] == 0
    assert [(j["state"], j["owner"]) for j in journal(t, p + "/rec.bin")] == [("intent", owner)]
    m.crash(signal.SIGKILL)
    r, st = _status(t)
    assert r.returncode == 0
    assert st["journal"]["open"] == 1 and st["journal"]["open_owner_gone"] == 1
    e = st["journal"]["entries"][0]
    assert e["owner_alive"] is False and e["state"] == "intent"
    assert e["source_key"] == "rec.bin" and e["dest_key"] == p + "/rec.bin"

    t.stop_s3()
    r = _cli(t, "recover", "-o", _cfg(t), "--json", timeout=300)
    assert r.returncode == 1, (r.stdout, r.stderr)
    out = _json(r)
    assert out["ok"] is False and out["left_open"] == 1 and out["finished"] == 0
    t.start_s3()
    assert [j["state"] for j in journal(t, p + "/rec.bin")] == ["intent"]
    assert checks.get_object(t, "rec.bin") == data and len(checks.live_rows(t, "rec.bin")) == 1

    r = _cli(t, "recover", "-o", _cfg(t), "--json", timeout=300)
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = _json(r)
    assert out["ok"] is True and out["finished"] == 1 and out["left_open"] == 0
    assert [(x["result"], x["state"], x["source_key"]) for x in out["entries"]] == \
        [("finished", "done", "rec.bin")]
    check_stored(t, p + "/rec.bin", data, "rec.bin", ["copied"])
    assert len(checks.rows(t, "rec.bin")) == 1
    assert [j["state"] for j in journal(t, p + "/rec.bin")] == ["done"]
    r, st = _status(t)
    assert st["journal"]["open"] == 0
    # nothing left: a second run reports nothing and exits 0
    r = _cli(t, "recover", "-o", _cfg(t))
    assert r.returncode == 0 and "recovered 0 journal entries" in r.stdout
    px.release.set()


# ---- the progress bar in a terminal ----------------------------------------------------------

def test_progress_bar_in_a_terminal(mount_factory, uniq, tmp_path):
    """In a real terminal (tmux) the bar is redrawn in place: the pane holds one progress
    line, with the final counts (files done/total, copied, duplicates, bytes, rate, ETA),
    while the raw output shows it was drawn several times (carriage return + erase).
    Without a terminal: plain log lines, no escape sequence."""
    m = mount_factory()
    p = project(m, uniq)
    n = 40
    for i in range(n):
        drop(m, "bar%02d.bin" % i, os.urandom(20000 + i))
    sock = "cfs-" + uuid.uuid4().hex[:8]
    raw = tmp_path / "raw.out"
    tm = ["tmux", "-L", sock]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    subprocess.run(tm + ["new-session", "-d", "-x", "200", "-y", "40", "bash --norc --noprofile"],
                   check=True, timeout=30, env=env)
    try:
        subprocess.run(tm + ["pipe-pane", "-o", "cat >> " + shlex.quote(str(raw))], check=True,
                       timeout=30)
        cmd = "%s promote --project %s -o %s --workers 2; echo \"DONE:$?:END\"" % (
            shlex.quote(BIN), p, shlex.quote(_cfg(m)))
        subprocess.run(tm + ["send-keys", cmd, "Enter"], check=True, timeout=30)

        def pane():
            return subprocess.run(tm + ["capture-pane", "-p"], capture_output=True, text=True,
                                  check=True, timeout=30).stdout
        wait_until(lambda: re.search(r"DONE:\d+:END", pane()), timeout=240,
                   what="promote in tmux")
        text = pane()
    finally:
        subprocess.run(tm + ["kill-server"], timeout=30)
    assert "DONE:0:END" in text, text
    bars = [ln for ln in text.splitlines() if " files | " in ln]
    assert len(bars) == 1, text
    bar = bars[0]
    assert bar.startswith("[" + "#" * 10) and "]" in bar
    assert "%d/%d files" % (n, n) in bar and "copied %d" % n in bar
    assert "duplicates 0" in bar and "conflicts 0" in bar and "failed 0" in bar
    assert "ETA 0:00" in bar and "files/s" in bar and "KiB" in bar
    assert "copied      %d" % n in text  # the summary
    out = raw.read_bytes()
    assert out.count(b"\r\x1b[K") >= 3, out[:2000]  # redrawn, then erased
    for i in range(n):
        assert dhead(m, p + "/bar%02d.bin" % i) is not None

    # not a terminal: log lines, no escape sequences
    for i in range(3):
        drop(m, "plain%d.bin" % i, os.urandom(100 + i))
    r = _cli(m, "promote", "--project", p, "-o", _cfg(m))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stderr and "\r" not in r.stderr
    assert "progress: 3/3 files | copied 3 |" in r.stderr
    assert r.stderr.count("plain") >= 3  # a line per file


def test_promote_finishes_a_killed_mounts_duplicate_and_counts_it_as_one(
        stack, mount_factory, proxied, uniq):
    """A mount is killed while the source DELETE of a duplicate promotion is held at the store:
    its journal entry stays 'stored' (outcome duplicate), owner gone. promote meets the entry on
    that very file, takes it over and finishes it: counted as the duplicate it is (not as a
    copy), nothing copied, the stored object untouched, one row per outcome."""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    p = project(m, uniq)
    data = os.urandom(4000)
    drop(m, "dup.bin", data)
    os.rename(os.path.join(m.inbox, "dup.bin"), os.path.join(m.projects, p, "dup.bin"))
    first = dhead(m, p + "/dup.bin")
    time.sleep(1.1)
    drop(m, "dup.bin", data)
    held = []

    def rule(meth, path, h):
        if meth == "DELETE" and "/recepcao-raw/" in path and "dup.bin" in path:
            held.append(path)
            return ("hang",)
        return None
    px.rule = rule

    def go():
        try:
            os.rename(os.path.join(m.inbox, "dup.bin"), os.path.join(m.projects, p, "dup.bin"))
        except OSError:
            pass
    threading.Thread(target=go, daemon=True).start()
    m.wait_until(lambda: held, timeout=20, what="DELETE sent")
    assert [j["state"] for j in journal(m, p + "/dup.bin")] == ["done", "stored"]
    m.crash(signal.SIGKILL)
    t = mount_factory(reset=False, start=False, name=uniq + "-tools")
    r = _promote(t, p)
    out = _json(r)
    assert r.returncode == 0, r.stderr
    assert out["files"] == 1 and out["duplicates"] == 1 and out["duplicates_path"] == 1
    assert out["copied"] == 0 and out["bytes_copied"] == 0
    check_stored(t, p + "/dup.bin", data, "dup.bin", ["copied", "duplicate"])
    assert len(checks.rows(t, "dup.bin")) == 2
    again = dhead(t, p + "/dup.bin")
    assert again["ETag"] == first["ETag"] and again["LastModified"] == first["LastModified"]
    px.release.set()


def test_promote_interrupted_stops_cleanly_then_finishes(stack, mount_factory, proxied, uniq):
    """SIGINT during a run: the files in flight end, no new one is taken, exit 1 with the
    files not tried counted; every file is either promoted (one object, one row) or still
    received (its object, its live row), no journal entry open. A second run promotes the
    rest."""
    px = proxied
    m = mount_factory()
    p = project(m, uniq)
    files = {"i%02d.bin" % i: os.urandom(3000 + i) for i in range(12)}
    for k, b in files.items():
        drop(m, k, b)
    t = mount_factory(config={"s3": {"endpoint": px.url}}, reset=False, start=False,
                      name=uniq + "-tools")
    copies = []

    def rule(meth, path, h):
        if _is_copy(meth, h):
            copies.append(path)
            return ("late", 1)
        return None
    px.rule = rule
    proc = subprocess.Popen([BIN, "promote", "--project", p, "-o", _cfg(t), "--workers", "2",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=t._daemon_env())
    try:
        wait_until(lambda: copies, timeout=30, what="first copy")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    px.rule = None
    assert proc.returncode == 1, err
    assert not SANITIZER_RE.search(err), err[-6000:]
    res = json.loads(out)
    assert res["files"] == 12 and res["not_tried"] > 0 and res["ok"] is False
    assert res["done"] == res["copied"] >= 1 and res["failed"] == 0
    assert res["done"] + res["not_tried"] == 12
    assert m.sql_value("select count(*) from promotion_journal"
                       " where state in ('intent', 'stored')") == 0
    promoted = [k for k in files if dhead(m, p + "/" + k) is not None]
    assert len(promoted) == res["copied"]
    for k, b in files.items():
        if k in promoted:
            check_stored(m, p + "/" + k, b, k, ["copied"])
        else:
            assert checks.get_object(m, k) == b and len(checks.live_rows(m, k)) == 1
            assert srows(m, p + "/" + k) == []
    r = _promote(t, p)
    out2 = _json(r)
    assert r.returncode == 0, r.stderr
    assert out2["files"] == out2["copied"] == res["not_tried"]
    for k, b in files.items():
        check_stored(m, p + "/" + k, b, k, ["copied"])


def test_promote_never_echoes_control_characters_of_a_key(stack, mount_factory, uniq):
    """An uploader's key holding a control character cannot drive the operator's terminal:
    every log line and the summary show it as \\xNN (the reception scan's line too). The key
    cannot be stored under the project: that file fails alone, stays received, the other is
    promoted. (s3rver writes an ESC of a key raw into its listing XML, which no parser takes:
    there the key holds a DEL instead.)"""
    m = mount_factory()
    p = project(m, uniq)
    drop(m, "fine.txt", b"fine\n")
    m.unmount()
    bad, shown = (("esc\x1b[2Jkey.txt", "\\x1b[2J") if stack.backend == "swift"
                  else ("del\x7fkey.txt", "\\x7f"))
    _put_foreign(m, bad, b"hostile\n")
    time.sleep(3.2)
    r = _cli(m, "promote", "--project", p, "-o", _cfg(m))
    assert r.returncode == 1, r.stderr
    assert not any(c in r.stderr + r.stdout for c in "\x1b\x7f"), r.stderr + r.stdout
    # the scan's event line (doc/custodyfs.1, LOGGING): the key quoted, its byte as \xNN
    assert 'event=received bucket=%s key="%s"' % (m.reception_bucket, bad.replace(
        bad[3], shown[:4])) in r.stderr
    assert shown + "key.txt: not promoted: Invalid argument" in r.stderr
    assert "  " + bad[:3] + shown + "key.txt: Invalid argument" in r.stdout
    assert "failed      1" in r.stdout and "copied      1" in r.stdout
    check_stored(m, p + "/fine.txt", b"fine\n", "fine.txt", ["copied"])
    assert checks.get_object(m, bad) == b"hostile\n"
    assert len(checks.live_rows(m, bad)) == 1 and len(checks.rows(m, bad)) == 1
    assert srows(m, p + "/" + bad) == []
    assert m.sql_value("select count(*) from promotion_journal") == 1


def test_promote_is_for_the_project_group(mount_factory, uniq):
    """[fs] project_group: as for mkdir and mv on a mount, only root and its members create
    projects and promote. A user outside it (with its own copy of the config) is refused
    before anything is done (exit 2); a member promotes, named as who did it."""
    m = mount_factory(config={"fs": {"project_group": "4242"}})
    drop(m, "g.txt", b"group\n")
    cfg = os.path.join(m.base, "user2001.conf")
    with open(m.config) as f:
        text = f.read()
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, text.encode())
    os.close(fd)
    os.chown(cfg, 2001, 2001)
    os.chmod(m.base, 0o755)
    before = _snapshot(m)

    def run(groups):
        r = subprocess.run(["setpriv", "--reuid=2001", "--regid=2001", groups, BIN, "promote",
                            "--project", uniq, "-o", "config=" + cfg, "--json"],
                           capture_output=True, text=True, timeout=300, env=m._daemon_env(),
                           stdin=subprocess.DEVNULL)
        assert not SANITIZER_RE.search(r.stderr), r.stderr[-6000:]
        return r
    r = run("--clear-groups")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "not in [fs] project_group 4242" in r.stderr
    assert _snapshot(m) == before
    r = run("--groups=4242")
    assert r.returncode == 0, r.stderr
    assert _json(r)["copied"] == 1
    proj = m.sql_dicts("select * from projects_registry where prefix = %s", (uniq,))
    assert len(proj) == 1 and "(uid 2001)" in proj[0]["created_by"]
    rows = srows(m, uniq + "/g.txt")
    assert [x["outcome"] for x in rows] == ["copied"] and "(uid 2001)" in rows[0]["moved_by"]
    assert dget(m, uniq + "/g.txt") == b"group\n" and checks.get_object(m, "g.txt") is None
