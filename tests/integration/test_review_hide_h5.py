"""review-hide H5, the fix: an open new file renamed over a stored object does not take the
target's row at the rename. Its attributes are the target's pending row (and the file's own in
memory) until its writer's close records its upload there; then the target's row becomes the
file's (its creator's attributes, any change made meanwhile), bound to the new object and
logged once, as a 'move' from the name it was created under. Meanwhile the target's row is
its object's (what other mounts show), and the name it came from is free."""
import json
import os
import subprocess
import time

from test_perms import A, B, FOREIGN, as_user, changes, open_to_others
from test_review_held_rename import _mvs

C = 2003


class FHolder:
    """A process of user uid holding one descriptor open on path (flags): 'w' writes text at
    offset 0, 'f' fchmods it (mode in octal text), 'c' closes it; each answers "ok" or the
    errno name."""

    def __init__(self, uid, path, flags):
        self.p = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
             "/usr/bin/python3", "-c",
             "import errno, json, os, sys\n"
             f"fd = os.open({path!r}, {flags}, 0o644)\n"
             "print(json.dumps('open'), flush=True)\n"
             "for line in sys.stdin:\n"
             "    try:\n"
             "        op, arg = line[0], json.loads(line[1:])\n"
             "        if op == 'w':\n"
             "            os.pwrite(fd, arg.encode(), 0)\n"
             "        elif op == 'f':\n"
             "            os.fchmod(fd, int(arg, 8))\n"
             "        elif op == 'c':\n"
             "            fd, old = -1, fd\n"
             "            os.close(old)\n"
             "        r = 'ok'\n"
             "    except OSError as e:\n"
             "        r = errno.errorcode[e.errno]\n"
             "    print(json.dumps(r), flush=True)\n"
             "if fd >= 0:\n"
             "    os.close(fd)\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.answer() == "open"

    def answer(self):
        return json.loads(self.p.stdout.readline())

    def op(self, c, arg=""):
        self.p.stdin.write(c + json.dumps(arg) + "\n")
        self.p.stdin.flush()
        return self.answer()

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=30)


def _setup(mount_factory, uniq):
    """a (allow_other), a 1777-like directory uniq, B's y.txt ('B SECRET', 0600), and A's new
    x.txt open for writing ('A NEW' written): (a, pa, writer, B's etag)."""
    a = mount_factory(config=FOREIGN, opts="allow_other", name="a")
    open_to_others(a)
    d = a.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o777)
    pa = lambda n: a.path("inbox", f"{uniq}/{n}")  # noqa
    assert as_user(B, f"open({pa('y.txt')!r}, 'w').write('B SECRET')",
                   f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok", "ok"]
    etag = a.s3.head_object(Bucket=a.reception_bucket, Key=f"{uniq}/y.txt")["ETag"].strip('"')
    w = FHolder(A, pa("x.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert w.op("w", "A NEW") == "ok"
    return a, pa, w, etag


def _row(m, key):
    rows = m.sql_dicts("select uid, mode, etag, claimed_by from file_attrs"
                       " where bucket = %s and object_key = %s", (m.reception_bucket, key))
    return rows[0] if rows else None


def _pending(m, key):
    return m.sql_dicts("select uid, mode, etag, from_key from file_attrs_pending"
                       " where bucket = %s and object_key = %s", (m.reception_bucket, key))


def _log(m, key, after=0):
    return [(c["op"], c["from_key"], c["uid"], c["mode"], c["etag"], c["changed_uid"])
            for c in changes(m, key, every=True) if c["id"] > after]


def _last_id(m):
    return m.sql_dicts("select coalesce(max(id), 0) as n from file_attr_changes")[0]["n"]


def test_close_after_the_rename_gives_the_target_the_files_row_logged_once(
        mount_factory, uniq):
    """A renames her open x.txt over B's y.txt (0600). Until her close: y's row is B's (bound
    to B's object: what another mount shows, C may not read it), the file's attributes are
    y's pending row, a shows the file as A's; A's fchmod 0640 through the handle is the
    file's (logged at y on no object), never B's row's. Her close: y's row is A's 0640,
    bound to the new object, no claim, no pending row; the log has exactly that chmod and
    one 'move' from x.txt (no drop of B's row claimed by anybody, nothing at x.txt)."""
    a, pa, w, b_etag = _setup(mount_factory, uniq)
    kx, ky = f"{uniq}/x.txt", f"{uniq}/y.txt"
    try:
        start = _last_id(a)
        assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
        assert (_row(a, ky)["uid"], _row(a, ky)["mode"], _row(a, ky)["etag"]) == \
            (B, 0o600, b_etag)
        assert [(p["uid"], p["mode"], p["etag"], p["from_key"]) for p in _pending(a, ky)] \
            == [(A, 0o644, None, kx)]
        assert _row(a, kx) is None
        st = os.stat(pa("y.txt"))
        assert (st.st_uid, st.st_mode & 0o7777) == (A, 0o644)
        c = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="c")
        open_to_others(c)
        pc = c.path("inbox", ky)
        st = os.stat(pc)
        assert (st.st_uid, st.st_mode & 0o7777) == (B, 0o600)
        assert as_user(C, f"open({pc!r}).read()") == ["EACCES"]
        assert w.op("f", "640") == "ok"
        assert (_row(a, ky)["uid"], _row(a, ky)["mode"]) == (B, 0o600)
        assert [(p["uid"], p["mode"]) for p in _pending(a, ky)] == [(A, 0o640)]
        st = os.stat(pa("y.txt"))
        assert (st.st_uid, st.st_mode & 0o7777) == (A, 0o640)
        assert w.op("c") == "ok"
    finally:
        w.close()
    new = a.s3.head_object(Bucket=a.reception_bucket, Key=ky)["ETag"].strip('"')
    body = a.s3.get_object(Bucket=a.reception_bucket, Key=ky)["Body"].read()
    assert (body, new != b_etag) == (b"A NEW", True)
    assert _row(a, ky) == {"uid": A, "mode": 0o640, "etag": new, "claimed_by": None}
    assert _pending(a, ky) == [] and _row(a, kx) is None
    assert _log(a, ky, start) == [("chmod", None, None, 0o640, None, A),
                                  ("move", kx, A, 0o640, new, A)]
    assert _log(a, kx, start) == []


def test_the_name_it_came_from_is_free_while_the_writer_is_open(mount_factory, uniq):
    """After the rename (A's writer still open), x.txt can be created again at once, on a and
    on another mount, and keeps its own row through A's close (a publish never takes a row
    it does not own)."""
    a, pa, w, _ = _setup(mount_factory, uniq)
    kx, ky = f"{uniq}/x.txt", f"{uniq}/y.txt"
    try:
        assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
        b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
        open_to_others(b)
        pbx = b.path("inbox", kx)
        assert as_user(B, f"open({pbx!r}, 'x').write('B X')",
                       f"os.chmod({pbx!r}, 0o600)") == ["ok", "ok"]
        assert w.op("c") == "ok"
    finally:
        w.close()
    x_etag = a.s3.head_object(Bucket=a.reception_bucket, Key=kx)["ETag"].strip('"')
    y_etag = a.s3.head_object(Bucket=a.reception_bucket, Key=ky)["ETag"].strip('"')
    assert _row(a, kx) == {"uid": B, "mode": 0o600, "etag": x_etag, "claimed_by": None}
    assert _row(a, ky) == {"uid": A, "mode": 0o644, "etag": y_etag, "claimed_by": None}
    assert as_user(A, f"open({pa('x.txt')!r}, 'x').close()") == ["EEXIST"]


def test_a_second_rename_of_the_open_file_takes_its_pending_row_along(mount_factory, uniq):
    """x.txt -> y.txt (over B's) -> z.txt while A's writer is open: y's stored object (B's,
    the one the writer replaces) moves to z with B's row, as any stored earlier version
    does; the file's pending row follows to z. A's close: z's row is A's, bound to her
    object; nothing is left at y (no row, no pending row)."""
    a, pa, w, _ = _setup(mount_factory, uniq)
    kx, ky, kz = (f"{uniq}/{n}.txt" for n in "xyz")
    try:
        assert _mvs(A, (pa("x.txt"), pa("y.txt")), (pa("y.txt"), pa("z.txt"))) == \
            ["ok", "ok"]
        assert [(p["uid"], p["from_key"]) for p in _pending(a, kz)] == [(A, kx)]
        assert _pending(a, ky) == [] and _row(a, ky) is None
        assert (_row(a, kz)["uid"], _row(a, kz)["mode"]) == (B, 0o600)
        assert w.op("c") == "ok"
    finally:
        w.close()
    z_etag = a.s3.head_object(Bucket=a.reception_bucket, Key=kz)["ETag"].strip('"')
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=kz)["Body"].read() == b"A NEW"
    assert _row(a, kz) == {"uid": A, "mode": 0o644, "etag": z_etag, "claimed_by": None}
    assert _pending(a, kz) == [] and _pending(a, ky) == [] and _row(a, ky) is None


def test_an_unlink_of_the_renamed_open_file_removes_the_target_and_its_rows(
        mount_factory, uniq):
    """A renames her open x.txt over B's y.txt, then unlinks y.txt (her writer still open):
    y's object (B's, replaced by the rename) is removed, and its row and the file's pending
    row go (B's row dropped, logged as such); A's close stores nothing."""
    a, pa, w, _ = _setup(mount_factory, uniq)
    ky = f"{uniq}/y.txt"
    try:
        assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
        start = _last_id(a)
        assert as_user(A, f"os.unlink({pa('y.txt')!r})") == ["ok"]
        assert w.op("c") == "ok"
    finally:
        w.close()
    listed = a.s3.list_objects_v2(Bucket=a.reception_bucket, Prefix=ky).get("KeyCount", 0)
    assert (listed, _row(a, ky), _pending(a, ky)) == (0, None, [])
    assert [(op, uid) for op, _f, uid, *_ in _log(a, ky, start)] == [("drop", B)]


def test_a_crash_leaves_the_target_with_its_row_and_the_name_free(mount_factory, uniq):
    """A crash after the rename, before A's close: y.txt is B's object with B's row (also for
    a mount started after it), x.txt has no row (a create there works), and the pending row
    shows for no object."""
    a, pa, w, b_etag = _setup(mount_factory, uniq)
    kx, ky = f"{uniq}/x.txt", f"{uniq}/y.txt"
    try:
        assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
        a.crash()
    finally:
        try:
            w.close()
        except Exception:  # noqa: BLE001
            pass
    a.mount()
    assert _row(a, ky) == {"uid": B, "mode": 0o600, "etag": b_etag, "claimed_by": None}
    st = os.stat(pa("y.txt"))
    assert (st.st_uid, st.st_mode & 0o7777) == (B, 0o600)
    assert _row(a, kx) is None
    assert as_user(C, f"open({pa('x.txt')!r}, 'x').write('C X')") == ["ok"]
    st = os.stat(pa("x.txt"))
    assert st.st_uid == C


def test_a_target_without_a_row_never_shows_the_files_pending_row(mount_factory, uniq):
    """y.txt is a foreign upload (no row: the configured owner), recorded. A renames her open
    x.txt over it: until her close, another mount shows y.txt's object as before (not as A's:
    the file's pending row describes the upload to come, not the object there); after it,
    y.txt is A's, bound to her object."""
    a = mount_factory(config=FOREIGN, opts="allow_other", name="a")
    open_to_others(a)
    d = a.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o777)
    pa = lambda n: a.path("inbox", f"{uniq}/{n}")  # noqa
    ky = f"{uniq}/y.txt"
    a.s3.put_object(Bucket=a.reception_bucket, Key=ky, Body=b"FOREIGN")
    a.wait_until(lambda: "y.txt" in os.listdir(d) and a.sql_dicts(
        "select 1 from reception_audit where source_bucket = %s and object_key = %s"
        " and removed_at is null", (a.reception_bucket, ky)), timeout=60,
        what="the foreign upload listed and its reception row")
    before = os.stat(pa("y.txt"))
    assert before.st_uid == 3000
    w = FHolder(A, pa("x.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        assert w.op("w", "A NEW") == "ok"
        assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
        c = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="c")
        open_to_others(c)
        st = os.stat(c.path("inbox", ky))
        assert (st.st_uid, st.st_mode & 0o7777) == (3000, before.st_mode & 0o7777)
        assert w.op("c") == "ok"
    finally:
        w.close()
    new = a.s3.head_object(Bucket=a.reception_bucket, Key=ky)["ETag"].strip('"')
    assert _row(a, ky) == {"uid": A, "mode": 0o644, "etag": new, "claimed_by": None}


def test_the_pending_row_is_renewed_while_the_writer_is_open(mount_factory, uniq):
    """claim_lease 4 s: the file's pending row at y.txt still holds after 3 leases with A's
    writer open (the claims thread renews it, as it renews a new file's claim), and her close
    then publishes it."""
    cfg = {"fs": {**FOREIGN["fs"], "claim_lease": "4"}}
    a = mount_factory(config=cfg, opts="allow_other", name="a")
    open_to_others(a)
    d = a.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o777)
    pa = lambda n: a.path("inbox", f"{uniq}/{n}")  # noqa
    ky = f"{uniq}/y.txt"
    assert as_user(B, f"open({pa('y.txt')!r}, 'w').write('B SECRET')",
                   f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok", "ok"]
    w = FHolder(A, pa("x.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        assert w.op("w", "A NEW") == "ok"
        assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
        time.sleep(12)
        live = a.sql_dicts("select pending_until > now() as live from file_attrs_pending"
                           " where bucket = %s and object_key = %s", (a.reception_bucket, ky))
        assert live == [{"live": True}]
        assert w.op("c") == "ok"
    finally:
        w.close()
    new = a.s3.head_object(Bucket=a.reception_bucket, Key=ky)["ETag"].strip('"')
    assert _row(a, ky) == {"uid": A, "mode": 0o644, "etag": new, "claimed_by": None}
    assert _pending(a, ky) == []


def test_a_close_that_fails_leaves_the_target_its_row_and_no_pending_row(
        mount_factory, uniq):
    """After the rename, B overwrites y.txt on another mount (his, 0600: A may not replace
    it). A's close fails (her writer may not replace B's newer object): y.txt keeps B's
    newer object and its row, and the file's pending row goes with the file."""
    a, pa, w, _ = _setup(mount_factory, uniq)
    ky = f"{uniq}/y.txt"
    try:
        assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
        b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
        open_to_others(b)
        assert as_user(B, f"open({b.path('inbox', ky)!r}, 'w').write('B NEWER')") == ["ok"]
        closed = w.op("c")
    finally:
        w.close()
    etag = a.s3.head_object(Bucket=a.reception_bucket, Key=ky)["ETag"].strip('"')
    body = a.s3.get_object(Bucket=a.reception_bucket, Key=ky)["Body"].read()
    assert (closed != "ok", body) == (True, b"B NEWER"), closed
    assert _row(a, ky) == {"uid": B, "mode": 0o600, "etag": etag, "claimed_by": None}
    assert _pending(a, ky) == []
