"""Hostile read of w/hide (c115bed: the hide of a rename's open target copies its row, tagged
claimer + "!hidden"; a mount at start drops the tagged rows of "this host's processes that
died", attrov_sweep_hidden). Each test fails on w/hide.

The sweep tells a live process from a dead one by the hostname and pid in the tag, checked
with kill(pid, 0) and /proc/<pid>/comm in the sweeping process's own view. Neither names a
process: a mount in another pid namespace (a container sharing the host's name: host network,
hostNetwork pods), or on another machine with the same hostname, sees nothing at that pid and
drops a live mount's rows (logged as drops it made)."""
import os
import re
import socket
import time

import pytest

from test_perms import A, B, FOREIGN, as_user, changes, open_to_others
from test_review_held_commit import GHolder
from test_review_held_rename import _mvs

# A short heartbeat grace: this mount sweeps gone processes' rows 2 s after its start
# (it waits for its own heartbeats to be steady for its grace: review-37 F3).
SHORT_GRACE = {**FOREIGN, "fs": dict(FOREIGN.get("fs", {}), live_grace="2")}

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _one(mount_factory, uniq):
    a = mount_factory(config=FOREIGN, opts="allow_other", name="a")
    open_to_others(a)
    d = a.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o777)
    return a, (lambda n: a.path("inbox", f"{uniq}/{n}"))  # noqa


def _hidden(m, uniq):
    return m.sql_dicts("select object_key, uid, mode, claimed_by, claim_until from file_attrs"
                       " where bucket = %s and object_key like %s order by object_key",
                       (m.reception_bucket, f"{uniq}/.fuse\\_hidden%"))


def _hide_on_a(mount_factory, uniq):
    """B's y.txt (0600) is held open for reading by B on a; A renames her x.txt over it on a
    (succeeds). a's hidden name keeps the copy of B's row, tagged with a's claimer, while B's
    handle is open. Returns (a, pa, reader, the hidden row)."""
    a, pa = _one(mount_factory, uniq)
    assert as_user(B, f"open({pa('y.txt')!r}, 'w').write('B SECRET')",
                   f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok", "ok"]
    assert as_user(A, f"open({pa('x.txt')!r}, 'w').write('A NEW')") == ["ok"]
    reader = GHolder(B, pa("y.txt"), os.O_RDONLY)
    assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
    rows = _hidden(a, uniq)
    assert len(rows) == 1 and rows[0]["claimed_by"].endswith("!hidden") and \
        (rows[0]["uid"], rows[0]["mode"]) == (B, 0o600), rows
    return a, pa, reader, rows[0]


def test_a_mount_in_another_pid_namespace_never_drops_a_live_mounts_hidden_rows(
        mount_factory, uniq):
    """H1: a (pid P, this host's name) holds B's hidden y.txt open (its row copied, tagged
    host:P:...!hidden). b starts on the same host in its own pid namespace (as a container
    with the host's network and name would): its sweep sees no process P (kill: ESRCH) and
    drops a's live row, logged as b's 'drop' (by root: nobody did it); B's open file on a
    then shows the defaults (foreign owner 3000, 0644) instead of B's 0600. Expected: a's row
    stays while a lives and B's handle is open; nothing logged."""
    a, pa, reader, row = _hide_on_a(mount_factory, uniq)
    try:
        before = len(changes(a, row["object_key"], every=True))
        b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b",
                          wrapper=["unshare", "--pid", "--fork", "--kill-child"])
        b.wait_until(lambda: os.path.isdir(b.path("inbox", uniq)), timeout=40,
                     what="b lists the directory")
        time.sleep(3)  # past a's attribute cache
        after = _hidden(a, uniq)
        seen = _fd_stat(reader, a)
        logged = [(c["op"], c["changed_by"]) for c in
                  changes(a, row["object_key"], every=True)][before:]
        assert (a.proc.poll(), [r["object_key"] for r in after], logged, seen) == \
            (None, [row["object_key"]], [], (B, 0o600)), (row, after, logged)
    finally:
        reader.close()


def _fd_stat(h, m):
    """(uid, mode) of the file h holds open on m, through /proc/<pid>/fd (the kernel asks the
    mount for the node's attributes: its hidden name's)."""
    for fd in os.listdir(f"/proc/{h.p.pid}/fd"):
        p = f"/proc/{h.p.pid}/fd/{fd}"
        if os.readlink(p).startswith(m.mnt):
            st = os.stat(p)
            return st.st_uid, st.st_mode & 0o7777
    return None


def _unused_pid():
    pid = 4194000
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


@pytest.mark.parametrize("who", ["same_name_other_machine", "host_with_colon"])
def test_the_sweep_never_drops_the_rows_of_a_process_it_cannot_see(mount_factory, uniq, who):
    """H2: tags the sweep reads as this host's dead processes although they may be another
    machine's live ones. same_name_other_machine: a tag with this host's name and a pid not
    in use here (another machine with the same hostname: cloned VMs, "localhost", containers
    on host networking; its process is alive there). host_with_colon: a tag of host "<this
    host>:1" (':' is allowed by sethostname), which the sweep's prefix match takes for this
    host's, parsing pid 1 (alive, not custodyfs: "dead"). Expected: neither row dropped.
    That process, alive elsewhere, holds its liveness lock (a session advisory lock on the
    shared database, keyed by its claimer: taken here on a connection of the test's); once it
    lets go (the process is gone), the next mount's sweep drops the row, logged."""
    a, pa = _one(mount_factory, uniq)
    host = socket.gethostname()
    claimer = (f"{host}:{_unused_pid()}:1700000000.000000001"
               if who == "same_name_other_machine" else
               f"{host}:1:4242:1700000000.000000001")
    tag = claimer + "!hidden"
    key = f"{uniq}/.fuse_hidden0000abcd00000001"
    a.sql("insert into file_attrs (bucket, object_key, mode, uid, gid, ctime, updated_by, etag,"
          " claimed_by) values (%s, %s, 384, %s, %s, now(), 'elsewhere', 'e-x', %s)",
          (a.reception_bucket, key, B, B, tag))
    elsewhere = a.stack._connect("custody", "custody")
    try:
        elsewhere.autocommit = True
        with elsewhere.cursor() as cur:
            cur.execute("select pg_advisory_lock(hashtextextended(%s, 7310303))", (claimer,))
        b = mount_factory(config=SHORT_GRACE, reset=False, opts="allow_other", name="b")
        b.wait_until(lambda: os.path.isdir(b.path("inbox", uniq)), timeout=40,
                     what="b lists the directory")
        time.sleep(4)  # past b's grace: its periodic sweeps run (and must keep the row)
        left = a.sql_value("select count(*) from file_attrs where bucket = %s and"
                           " object_key = %s", (a.reception_bucket, key))
        logged = [(c["op"], c["changed_by"]) for c in changes(a, key, every=True)]
        assert (left, logged) == (1, []), (tag, logged)
    finally:
        elsewhere.close()
    b.unmount()
    b.mount()

    def left():
        return a.sql_value("select count(*) from file_attrs where bucket = %s and"
                           " object_key = %s", (a.reception_bucket, key))
    # b sweeps once its own heartbeats are steady for its grace (2 s here; review-37 F3)
    b.wait_until(lambda: left() == 0, timeout=40, what="b's sweep drops the gone row")
    assert (left(), [c["op"] for c in changes(a, key, every=True)]) == (0, ["drop"]), tag


def test_the_sweep_drops_a_dead_process_rows_whose_pid_a_live_mount_took(mount_factory, uniq):
    """H3 (leak): a's earlier life (same pid, an earlier start time in its tag: the claimer is
    host:pid:start) crashed and left a hidden row; the pid is in use again by a live custodyfs
    (a itself here, as after a pid wrap). The sweep ignores the start time: comm matches, the
    row is judged alive and is never dropped, by any mount, while that pid lives. Expected:
    a tag whose start differs from the live process's is dead; a restart of b drops it."""
    a, pa = _one(mount_factory, uniq)
    host = socket.gethostname()
    tag = f"{host}:{a.proc.pid}:1600000000.000000001!hidden"
    key = f"{uniq}/.fuse_hidden0000abcd00000002"
    a.sql("insert into file_attrs (bucket, object_key, mode, uid, gid, ctime, updated_by, etag,"
          " claimed_by) values (%s, %s, 384, %s, %s, now(), 'earlier', 'e-x', %s)",
          (a.reception_bucket, key, B, B, tag))
    b = mount_factory(config=SHORT_GRACE, reset=False, opts="allow_other", name="b")

    def left():
        return a.sql_value("select count(*) from file_attrs where bucket = %s and"
                           " object_key = %s", (a.reception_bucket, key))
    # b sweeps once its own heartbeats are steady for its grace (2 s; review-37 F3)
    b.wait_until(lambda: left() == 0, timeout=40, what="b's sweep drops the earlier life's row")
    assert left() == 0, tag


def _owners_sql():
    """The scan of db_sql_attrs_sweep_hidden (its CTE t: the tags in the bucket) as
    common/db_attrs_pending.c has it (its string literals concatenated up to the next macro,
    HIDDEN_TAG expanded; the bucket as $1), so that this test follows the product's
    statement."""
    src = open(os.path.join(REPO, "common", "db_attrs_pending.c")).read()
    body = src.split("db_sql_attrs_sweep_hidden[] =", 1)[1].split(";", 1)[0]
    out = []
    for s, ident in re.findall(r'"((?:[^"\\]|\\.)*)"|\b([A-Z_]+)\b', body):
        if ident in ("LIVE_KEY", "SWEEP_CLAIMER"):
            break
        out.append(s if not ident else {"HIDDEN_TAG": "!hidden"}[ident])
    text = "".join(out)
    scan = re.search(r"WITH t AS MATERIALIZED \((.*)\),\s*gone AS", text, re.S)
    assert scan, text
    return scan.group(1).replace("$2", "$1")  # the bucket


def test_the_start_sweep_reads_only_the_tagged_rows(mount_factory, uniq):
    """H4 (cost at every mount start): the sweep's scan for tags (db_attrs_hidden_owners on
    w/hide: right(claimed_by) and left(claimed_by)) had no index that serves it: the statement each mount runs at start
    reads every row of the reception bucket (here 30,000 files and one tagged row; a real
    inbox has millions, read on each start, before the mount is served). Expected: the rows
    read (returned + removed by a filter, at any node) stay far below the bucket's size.
    EXPLAIN ANALYZE counts rows, not time."""
    a, pa = _one(mount_factory, uniq)
    host = socket.gethostname()
    a.sql("insert into file_attrs (bucket, object_key, mode, uid, gid, ctime, updated_by, etag)"
          " select %s, %s || '/f' || g, 420, 2001, 2001, now(), 'bulk', 'e' || g"
          " from generate_series(1, 30000) g", (a.reception_bucket, uniq))
    a.sql("insert into file_attrs (bucket, object_key, mode, uid, gid, ctime, updated_by, etag,"
          " claimed_by) values (%s, %s, 384, 2002, 2002, now(), 'x', 'e-h', %s)",
          (a.reception_bucket, f"{uniq}/.fuse_hidden0000000100000001",
           f"{host}:{_unused_pid()}:1.0!hidden"))
    a.sql("analyze file_attrs")
    sql = _owners_sql()
    c = a.stack._connect("custody", "custody")
    try:
        with c.cursor() as cur:
            cur.execute(f"prepare hidden_owners(text) as {sql}")
            cur.execute("explain (analyze, costs off, timing off, summary off, format json)"
                        " execute hidden_owners(%s)", (a.reception_bucket,))
            plan = cur.fetchone()[0]
    finally:
        c.close()

    def read(n):
        here = n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0) \
            if "Scan" in n.get("Node Type", "") else 0
        return max([here] + [read(k) for k in n.get("Plans", [])])
    most = read(plan[0]["Plan"])
    assert most < 1000, (most, sql, plan)


C = 2003


@pytest.mark.parametrize("target_open", [True, False])
def test_crash_after_an_open_new_files_rename_over_an_open_target_keeps_the_targets_row(
        mount_factory, uniq, target_open):
    """H5 (L5 on the open-source path, not closed by the copy): B's y.txt ('B SECRET', 0600)
    is held open for reading by B on a; A's new x.txt is open for writing on a ('A NEW'
    written, not closed: its close uploads it). A renames x.txt over y.txt (ok): the final
    attrov_move drops y's row at once (the hide's copy keeps nothing at y) and puts A's claim
    there, while the store still has B's object until A's close. a crashes before that close,
    and is mounted again. y.txt is B's object, never replaced: it must keep B's row (0600),
    and C must not read it through a fresh mount. On w/hide y's row is A's claim (0644) and
    after the restart: C reads B's secret. target_open False: the same without the hide
    (older than w/hide: the open-file rename's claim move, not the hide)."""
    a, pa = _one(mount_factory, uniq)
    ky = f"{uniq}/y.txt"
    assert as_user(B, f"open({pa('y.txt')!r}, 'w').write('B SECRET')",
                   f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok", "ok"]
    reader = GHolder(B, pa("y.txt"), os.O_RDONLY) if target_open else None
    writer = GHolder(A, pa("x.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        assert writer.op("w", "A NEW") == "ok"
        assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
        during = a.sql_dicts("select uid, mode, etag, claimed_by from file_attrs"
                             " where bucket = %s and object_key = %s", (a.reception_bucket, ky))
        a.crash()
    finally:
        for h in (reader, writer):
            try:
                if h is None:
                    continue
                h.close()
            except Exception:  # noqa: BLE001
                pass
    a.mount()
    c = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="c")
    open_to_others(c)
    pc = c.path("inbox", ky)
    body = a.s3.get_object(Bucket=a.reception_bucket, Key=ky)["Body"].read()
    st = os.stat(pc)
    read = as_user(C, f"open({pc!r}).read()")
    assert (body, (st.st_uid, st.st_mode & 0o7777), read) == \
        (b"B SECRET", (B, 0o600), ["EACCES"]), (during, [
            (x["op"], x["from_key"], x["uid"], x["mode"]) for x in changes(a, ky, every=True)])


def test_two_mounts_hiding_in_one_directory_keep_each_their_hidden_row(mount_factory, uniq):
    """H6 (review-held "Kept", but not rare): hidden names are ".fuse_hidden" + node id +
    a per-process counter from 1, so two fresh mounts' first hides in one directory get the
    same name whenever they looked names up in the same order. a: B's y.txt (0600) held open
    by B, A renames x.txt over it. b: C's z.txt (0640) held open by C, A renames w.txt over
    it. b's copy overwrites a's hidden row (ON CONFLICT DO UPDATE, a 'create' logged, a's
    row's drop never logged); C's close on b drops the one row: B's open file on a then shows
    the defaults. Expected: B's file keeps (B, 0600) through its handle on a."""
    a, pa = _one(mount_factory, uniq)
    assert as_user(B, f"open({pa('y.txt')!r}, 'w').write('B SECRET')",
                   f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok", "ok"]
    assert as_user(C, f"open({pa('z.txt')!r}, 'w').write('C FILE')",
                   f"os.chmod({pa('z.txt')!r}, 0o640)") == ["ok", "ok"]
    assert as_user(A, f"open({pa('x.txt')!r}, 'w').write('A X')",
                   f"open({pa('w.txt')!r}, 'w').write('A W')") == ["ok", "ok"]
    b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
    open_to_others(b)
    pb = lambda n: b.path("inbox", f"{uniq}/{n}")  # noqa
    rb = GHolder(C, pb("z.txt"), os.O_RDONLY)
    ra = GHolder(B, pa("y.txt"), os.O_RDONLY)
    try:
        assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
        names_a = [r["object_key"] for r in _hidden(a, uniq)]
        assert _mvs(A, (pb("w.txt"), pb("z.txt"))) == ["ok"]
        names = [(r["object_key"], r["uid"], r["mode"], r["claimed_by"])
                 for r in _hidden(a, uniq)]
        rb.close()
        b.wait_until(lambda: len(_hidden(a, uniq)) == 1, timeout=10,
                     what="b's hidden row dropped at its last close")
        left = [(r["object_key"], r["uid"], r["mode"]) for r in _hidden(a, uniq)]
        time.sleep(3)  # past a's attribute cache
        seen = _fd_stat(ra, a)
    finally:
        for h in (ra, rb):
            try:
                h.close()
            except Exception:  # noqa: BLE001
                pass
    assert seen == (B, 0o600), (names_a, names)
    # each hide has its own hidden name and row: B's (a's tag) and C's (b's tag)
    assert len(names) == 2 and len({n[0] for n in names}) == 2, names
    assert sorted((n[1], n[2]) for n in names) == [(B, 0o600), (C, 0o640)], names
    assert len({n[3] for n in names}) == 2, names  # two processes' tags
    assert len(names_a) == 1 and left == [(names_a[0], B, 0o600)], (names_a, left)
    # every log row at each hidden name (both handles closed now): each copy, then its drop
    # at its file's last close, each with its own row
    key_b = next(n[0] for n in names if n[0] != names_a[0])
    a.wait_until(lambda: not _hidden(a, uniq), timeout=10, what="a's hidden row dropped")
    assert [(c["op"], c["uid"], c["mode"]) for c in changes(a, names_a[0], every=True)] == [
        ("create", B, 0o600), ("drop", B, 0o600)]
    assert [(c["op"], c["uid"], c["mode"]) for c in changes(a, key_b, every=True)] == [
        ("create", C, 0o640), ("drop", C, 0o640)]


class _FHolder:
    """uid's process holds path open (flags); each line sent runs one op on its fd: 'm<mode
    in octal>' fchmod, 's' fstat ((uid, mode) or the errno name), 'c' close."""

    def __init__(self, uid, path, flags):
        import subprocess
        self.p = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
             "/usr/bin/python3", "-c",
             "import errno, json, os, sys\n"
             f"fd = os.open({path!r}, {flags})\n"
             "print(json.dumps('open'), flush=True)\n"
             "for line in sys.stdin:\n"
             "    try:\n"
             "        if line[0] == 'm':\n"
             "            os.fchmod(fd, int(line[1:], 8)); r = 'ok'\n"
             "        elif line[0] == 's':\n"
             "            st = os.fstat(fd); r = [st.st_uid, st.st_mode & 0o7777]\n"
             "        elif line[0] == 'c':\n"
             "            os.close(fd); fd = -1; r = 'ok'\n"
             "    except OSError as e:\n"
             "        r = errno.errorcode[e.errno]\n"
             "    print(json.dumps(r), flush=True)\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.op(None) == "open"

    def op(self, line):
        import json
        if line is not None:
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self):
        try:
            self.p.stdin.close()
        finally:
            self.p.wait(timeout=30)


def test_fchmod_through_a_handle_whose_rename_over_it_failed_changes_its_file(
        stack, mount_factory, uniq):
    """H7 (older: the failed rename's un-hide, not the copy): B holds y.txt (0600) open for
    writing on b; A's rename of x.txt over it fails (the server-side copy: 500), so y.txt is
    still B's file and B's handle still its. libfuse left the handle's node under the hidden
    name; the product gave the open file its name back (ofile_unhide) and dropped the hidden
    copy, so a path operation on the hidden name finds nothing: B's fchmod(fd, 0640) fails
    (ENOENT) and fstat answers from nowhere. Expected: fchmod ok and y.txt's row 0640."""
    from test_review_stale4 import _proxied, copy_500
    from test_perms import attrs_row
    px, a, b, pa, pb = _proxied(stack, mount_factory, uniq)
    try:
        ky = f"{uniq}/y.txt"
        assert as_user(B, f"open({pa('y.txt')!r}, 'w').write('B SECRET')",
                       f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok", "ok"]
        assert as_user(A, f"open({pa('x.txt')!r}, 'w').write('A NEW')") == ["ok"]
        b.wait_until(lambda: os.path.exists(pb("y.txt")) and os.path.exists(pb("x.txt")),
                     timeout=40, what="b lists y and x")
        h = _FHolder(B, pb("y.txt"), os.O_RDWR)
        try:
            px.rule = copy_500
            moved = _mvs(A, (pb("x.txt"), pb("y.txt")))
            px.rule = None
            chmod = h.op("m640")
            fst = h.op("s")
        finally:
            h.close()
        time.sleep(1)
        row = attrs_row(a, ky)
        assert (moved != ["ok"], chmod, fst, row and (row["uid"], row["mode"])) == \
            (True, "ok", [B, 0o640], (B, 0o640)), (moved, _hidden(a, uniq))
    finally:
        px.close()
