"""Every row change has its event line, and every event line its row change (issue 8 item 3;
doc/custodyfs.1, LOGGING): an operator answers "what happened to file X" from the logs alone.

Each kind of change this program makes to reception_audit / storage_audit is done on a real
mount and through the batch tools (promote, recover, reconcile --apply, cleanup); then EVERY row
of both tables (removed ones too; the database is fresh for each test) is read with psycopg2
and matched to the event lines of the daemon's log and the tools' stderr:

  - a reception row inserted        <-> one received/overwritten line with its id (a mount's
                                        or an observer's upload), or one renamed line of its key
                                        (a rename's row);
  - a reception row closed          <-> one removed line (its id when the closer knows it) for
                                        deleted, promoted, cleaned up and gone rows; a row
                                        closed by an overwrite or a rename is the change of the
                                        line of the row that replaced it;
  - a storage row                   <-> one line of its outcome with its key and journal entry.

and no such line claims a change that has no row. The lines carry who (uid/user/host), size,
duration; no secret, signed URL or user:pass@ appears anywhere. Under systemd (JOURNAL_STREAM
names stderr) each line starts with its syslog priority "<N>" and nothing else."""
import os
import pwd
import re
import socket
import time

import pytest

import checks
from checks import drop, project, promote
from test_logging import LINE_RE, PASSWORD, parse_event
from test_promote import proxied  # noqa: F401 (a fixture)
from test_tools import _cfg, _cli, _put_foreign
from test_tools_recon import _cleanup, _other_tool_promotion

GRACE_WAIT = 3.2  # past foreign_grace_ms 1000 and LastModified's whole seconds
ROW_EVENTS = {"received", "overwritten", "removed", "renamed", "copied", "duplicate",
              "duplicate_content", "restored", "adopted"}
STORAGE_OUTCOMES = {"copied", "duplicate", "duplicate_content", "restored", "adopted"}
# reasons of a closed reception row whose closing is its own change (a removed line)
REMOVED_REASONS = ("deleted", "promoted to", "cleaned up", "object gone",
                   "replaced or removed by another upload")


def event_lines(text):
    """[(level, fields)] of every event line in text (a daemon log or a tool's stderr)."""
    out = []
    for ln in text.splitlines():
        lm = LINE_RE.match(ln)
        if lm and lm.group(3).startswith("event="):
            out.append((lm.group(2), parse_event(lm.group(3))))
    return out


def check_who(e, foreign=False, row=None):
    if foreign:  # nobody known: the host that logged it, as its row says
        assert "uid" not in e and "user" not in e, e
        assert e.get("host") == row["received_host"], (e, row)
        return
    assert e.get("host") == socket.gethostname(), e
    assert e["uid"] == str(os.getuid()), e
    assert e["user"] == pwd.getpwuid(os.getuid()).pw_name, e


def match_rows_and_lines(m, evs):
    """The two-way check of the module docstring, over every row of both tables."""
    rrows = m.sql_dicts("select * from reception_audit order by id")
    srows = m.sql_dicts("select * from storage_audit order by id")
    by_id = {r["id"]: r for r in rrows}
    lines = [e for _, e in evs if e["event"] in ROW_EVENTS]

    # reception rows inserted
    for r in rrows:
        if r["received_by"] == "another tool":
            continue  # written by the test as another program
        if r["origin"] == "rename":
            n = [e for e in lines if e["event"] == "renamed" and e.get("id") == str(r["id"])]
            assert len(n) == 1 and n[0]["key"] == r["object_key"], (r, n)
            assert int(n[0]["size"]) == r["size_bytes"]
            check_who(n[0])
            continue
        n = [e for e in lines if e["event"] in ("received", "overwritten")
             and e.get("id") == str(r["id"])]
        assert len(n) == 1, (r, n)
        e = n[0]
        assert e["key"] == r["object_key"] and e["bucket"] == r["source_bucket"]
        assert int(e["size"]) == r["size_bytes"] and e["sha256"] == r["sha256"], (e, r)
        assert e["origin"] == r["origin"], (e, r)
        check_who(e, foreign=r["origin"] == "foreign", row=r)
    # reception rows a rename closed: the renamed line names them
    for r in rrows:
        reason = r["removal_reason"] or ""
        for prefix, field in (("renamed to ", "from_id"), ("replaced by rename from ",
                                                           "replaced_id")):
            if reason.startswith(prefix):
                n = [e for e in lines if e["event"] == "renamed"
                     and e.get(field) == str(r["id"])]
                assert len(n) == 1, (r, n)
                other = n[0]["key"] if field == "from_id" else n[0]["from"]
                assert reason == prefix + other and r["object_key"] == (
                    n[0]["from"] if field == "from_id" else n[0]["key"]), (r, n)
    # reception rows closed as a change of their own
    for r in rrows:
        reason = r["removal_reason"] or ""
        if r["removed_at"] is None or not reason.startswith(REMOVED_REASONS):
            continue
        mine = [e for e in lines if e["event"] == "removed" and e.get("id") == str(r["id"])]
        assert len(mine) == 1 and mine[0]["key"] == r["object_key"], (r, mine)
        e = mine[0]
        assert int(e["size"]) == r["size_bytes"], (e, r)
        want = {"deleted": "deleted", "promoted to": "promoted", "cleaned up": "cleaned_up",
                "object gone": "object_gone", "replaced or removed": "superseded"}
        assert [v for k, v in want.items() if reason.startswith(k)] == [e["reason"]], (e, r)
        if reason.startswith("promoted to"):
            assert reason == f"promoted to {e['dest_bucket']}/{e['dest_key']}"
        check_who(e)
    # storage rows
    for s in srows:
        if s["moved_by"] == "another tool":
            continue
        n = [e for e in lines if e["event"] == s["outcome"] and e["key"] == s["dest_key"]
             and e.get("journal") == str(s["journal_id"])]
        assert len(n) == 1, (s, n)
        e = n[0]
        assert e["source_key"] == s["source_key"] and int(e["size"]) == s["size_bytes"]
        assert e["sha256"] == s["sha256"] and e.get("duplicate_of") == s["duplicate_of"]
        check_who(e)
    # and the other way: no line claims a change that has no row
    for e in lines:
        if e["event"] in STORAGE_OUTCOMES:
            assert [s for s in srows if s["outcome"] == e["event"] and s["dest_key"] == e["key"]
                    and str(s["journal_id"]) == e["journal"]], e
        elif e["event"] == "renamed":
            r = by_id[int(e["id"])]
            assert r["origin"] == "rename" and r["object_key"] == e["key"], (e, r)
            r = by_id[int(e["from_id"])]
            assert r["object_key"] == e["from"] and r["removed_at"] is not None, (e, r)
            if "replaced_id" in e:
                r = by_id[int(e["replaced_id"])]
                assert r["object_key"] == e["key"] and r["removed_at"] is not None, (e, r)
        elif "id" in e:
            r = by_id.get(int(e["id"]))
            assert r and r["object_key"] == e["key"], e
            if e["event"] == "removed":
                assert r["removed_at"] is not None, e
        else:
            raise AssertionError(f"a line naming a row change without its row id: {e}")
        assert int(e.get("duration_ms", "0")) >= 0


def no_secret(stack, text):
    for secret in (stack.secret_key, PASSWORD):
        assert secret not in text
    assert not re.search(r"X-Amz-Signature|X-Amz-Credential|Signature=|://[^/\s@]+:[^/\s@]+@",
                         text)


def test_every_row_change_has_exactly_one_line(stack, mount_factory, uniq):
    conninfo = stack.conninfo + f" password={PASSWORD}"
    m = mount_factory(config={"postgres": {"conninfo": conninfo},
                              "fs": {"foreign_grace_ms": "600000"}})
    p = project(m, uniq)
    inbox = m.inbox
    # a mount's receptions: received, overwritten, removed (unlink), renamed (and over a file)
    drop(m, "a.txt", b"first\n")
    checks.write(os.path.join(inbox, "a.txt"), b"second, longer\n")
    drop(m, "gone.txt", b"unlinked\n")
    os.unlink(os.path.join(inbox, "gone.txt"))
    drop(m, "r1.txt", b"renamed\n")
    os.rename(os.path.join(inbox, "r1.txt"), os.path.join(inbox, "r2.txt"))
    drop(m, "r3.txt", b"renamed over\n")
    os.rename(os.path.join(inbox, "r3.txt"), os.path.join(inbox, "r2.txt"))
    # promotions: copied, duplicate, duplicate_content, conflict (no row), restored, adopted;
    # each closes its reception row (a removed line, reason=promoted)
    d = b"promoted bytes\n"
    drop(m, "p1.txt", d)
    promote(m, "p1.txt", p, "d.txt")
    drop(m, "p2.txt", d)
    promote(m, "p2.txt", p, "d.txt")
    drop(m, "p3.txt", d)
    promote(m, "p3.txt", p, "e.txt")
    drop(m, "p4.txt", b"other bytes\n")
    with pytest.raises(OSError):
        promote(m, "p4.txt", p, "d.txt")
    drop(m, "p5.txt", b"restore me\n")
    promote(m, "p5.txt", p, "r.txt")
    m.s3.delete_object(Bucket=m.storage_bucket, Key=f"{p}/r.txt")
    drop(m, "p6.txt", b"restore me\n")
    promote(m, "p6.txt", p, "r.txt")
    m.s3.put_object(Bucket=m.storage_bucket, Key=f"{p}/ad.txt", Body=b"adopt me\n")
    drop(m, "p7.txt", b"adopt me\n")
    promote(m, "p7.txt", p, "ad.txt")
    # an upload by another route promoted before any scan logged it: its row (origin
    # foreign) is written by the promotion, and so is its line
    _put_foreign(m, "f1.txt", b"foreign, promoted at once\n")
    m.wait_until(lambda: os.path.exists(os.path.join(inbox, "f1.txt")), what="listed")
    promote(m, "f1.txt", p, "f1.txt")
    # and one that replaces a mount's upload, promoted at once: overwritten (foreign)
    drop(m, "f2.txt", b"the mount's\n")
    m.s3.put_object(Bucket=m.reception_bucket, Key="f2.txt", Body=b"replaced by the SDK\n")
    promote(m, "f2.txt", p, "f2.txt")
    # a direct write into the project: a drop under the staging key plus its promotion
    checks.write(os.path.join(m.projects, p, "direct.txt"), b"written into the project\n")
    assert m.sql_value("select count(*) from storage_audit where dest_key = %s",
                       (f"{p}/direct.txt",)) == 1
    # an error changes nothing and says so (no row claimed)
    drop(m, "err.txt", b"kept\n")
    m.stop_pg()
    try:
        with pytest.raises(OSError):
            os.unlink(os.path.join(inbox, "err.txt"))
    finally:
        m.start_pg()
    # for cleanup: received here, "promoted" by another tool that keeps the source
    drop(m, "c1.txt", b"cleaned up later\n")
    # for reconcile: a row whose object goes, and two uploads by another route
    drop(m, "rg.txt", b"its object goes\n")
    drop(m, "rs.txt", b"swapped by the SDK\n")
    m.unmount()

    m.s3.delete_object(Bucket=m.reception_bucket, Key="rg.txt")
    m.s3.put_object(Bucket=m.reception_bucket, Key="rs.txt", Body=b"the SDK's upload\n")
    _put_foreign(m, "ru.txt", b"nobody logged me\n")
    _other_tool_promotion(m, "c1.txt", p)
    m.write_config({"fs": {"foreign_grace_ms": "1000"}})
    time.sleep(GRACE_WAIT)
    tool_err = ""
    r = _cli(m, "reconcile", "-o", _cfg(m), "--apply", timeout=300)
    assert r.returncode in (0, 3), (r.stdout, r.stderr)
    tool_err += r.stderr
    r, out = _cleanup(m)
    assert r.returncode == 0 and out["removed"] == 1, (r.stdout, r.stderr)
    tool_err += r.stderr
    # the batch promotion of what is left in reception
    r = _cli(m, "promote", "--project", p, "-o", _cfg(m), "--json", timeout=300)
    tool_err += r.stderr
    assert r.returncode == 0, (r.stdout, r.stderr)

    log = m.daemon_log()
    evs = event_lines(log) + event_lines(tool_err)
    kinds = {e["event"] for _, e in evs}
    assert ROW_EVENTS | {"conflict", "error"} <= kinds, kinds
    match_rows_and_lines(m, evs)
    # the rename over a file names the row of the file it replaced
    assert [e for _, e in evs if e["event"] == "renamed" and e["key"] == "r2.txt"
            and e["from"] == "r3.txt" and "replaced_id" in e]
    # the closing lines name why: each closer once
    reasons = {e.get("reason") for _, e in evs if e["event"] == "removed"}
    assert {"promoted", "cleaned_up", "object_gone"} <= reasons, reasons
    # the error line: the errno and the SQL cause, and no row claimed
    errs = [e for lvl, e in evs if e["event"] == "error" and e.get("key") == "err.txt"]
    assert len(errs) == 1 and errs[0]["errno"] == "EIO" and errs[0]["sqlstate"], errs
    check_who(errs[0])
    no_secret(stack, log + tool_err)


def test_a_promotion_finished_by_recover_has_its_lines(stack, mount_factory, proxied, uniq):
    """The promote tool's source DELETE refused: the storage row is written, the entry stays
    'stored' (an error line, no outcome line yet); recover finishes it: the outcome line
    (recovered=1, with who asked for the promotion) and the removed line of the reception row
    it closes. Each row has exactly one line."""
    px = proxied
    m = mount_factory()
    p = project(m, uniq)
    drop(m, "j.bin", os.urandom(4000))
    m.unmount()
    m.write_config({"s3": {"endpoint": px.url}})
    px.rule = lambda meth, path, h: (("status", 503, b"") if meth == "DELETE"
                                     and "/recepcao-raw/" in path else None)
    r1 = _cli(m, "promote", "--project", p, "-o", _cfg(m), "--json", timeout=300)
    assert r1.returncode == 1, (r1.stdout, r1.stderr)
    px.rule = None
    m.write_config({"s3": {"endpoint": stack.endpoint}})
    first = event_lines(r1.stderr)
    assert [e["event"] for _, e in first if e.get("source_key") == "j.bin"] == ["error"]
    r2 = _cli(m, "recover", "-o", _cfg(m), timeout=300)
    assert r2.returncode == 0, (r2.stdout, r2.stderr)
    evs = event_lines(m.daemon_log()) + first + event_lines(r2.stderr)
    rec = [e for _, e in event_lines(r2.stderr) if e["event"] in ROW_EVENTS]
    assert [e["event"] for e in rec] == ["removed", "copied"], rec
    assert rec[1]["recovered"] == "1" and rec[0]["reason"] == "promoted"
    match_rows_and_lines(m, evs)
    no_secret(stack, m.daemon_log() + r1.stderr + r2.stderr)


def _stat_id(path):
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_journal_stream_lines_carry_their_syslog_priority(stack, mount_factory, uniq):
    """stderr is the journal's stream (JOURNAL_STREAM names its device:inode): every line is
    '<N>' + the message (6 info, 3 error: sd-daemon(3)), nothing else before it. Another
    stream named (stderr redirected elsewhere): the plain form."""
    m = mount_factory(start=False)
    m._log_note("journal stream test")
    m.extra_env["JOURNAL_STREAM"] = _stat_id(m.log_path)
    m.mount()
    drop(m, f"{uniq}.txt", b"to the journal\n")
    m.stop_pg()
    try:
        with pytest.raises(OSError):
            os.unlink(os.path.join(m.inbox, f"{uniq}.txt"))
    finally:
        m.start_pg()
    m.unmount()
    lines = [ln for ln in m.daemon_log().splitlines() if not ln.startswith("=== harness")]
    assert lines
    for ln in lines:
        assert re.match(r"^<[0-7]>\S", ln), ln
    assert f"<6>event=received bucket={m.reception_bucket} key={uniq}.txt " in \
        "\n".join(lines) + " "
    errs = [ln for ln in lines if ln.startswith("<3>event=error")]
    assert len(errs) == 1 and "op=remove" in errs[0], lines
    assert not [ln for ln in lines if LINE_RE.match(ln)]

    # named stream is not stderr: no prefix
    m2 = mount_factory(start=False, reset=False)
    m2._log_note("another stream")
    m2.extra_env["JOURNAL_STREAM"] = _stat_id("/dev/null")
    m2.mount()
    drop(m2, f"{uniq}-2.txt", b"plain\n")
    m2.unmount()
    lines = [ln for ln in m2.daemon_log().splitlines() if not ln.startswith("=== harness")]
    assert lines and all(LINE_RE.match(ln) for ln in lines), lines
