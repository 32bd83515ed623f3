"""Hostile review revE: failing tests for findings E1.. of the revE report (888d9da..w/int:
w/threads, w/r5 pending rename rows, w/join, w/pubbind; and 1e58a4f F8). Each asserts what
the product contract (SPEC §2: a file's owner and mode; durable, honest audit rows) requires."""
import errno
import os
import threading
import time

import pytest

from faultproxy import FaultProxy
from test_perms import A, B, FOREIGN, as_user, open_to_others, rd  # noqa: F401
from test_rename_attrs import etag, mode_owner  # noqa: F401


def late_upload_to(key, seconds):
    """A rule: the upload of key (a PUT without x-amz-copy-source) reaches the store, its
    answer held `seconds` (the object is there; the daemon does not know yet)."""
    def rule(meth, path, h):
        if meth == "PUT" and path.split("?")[0].endswith("/" + key) \
                and not any(k.lower() == "x-amz-copy-source" for k in h.keys()):
            return ("late", seconds)
        return None
    return rule


@pytest.fixture
def proxied_pair(stack, mount_factory, uniq):
    """(a, b, proxy, dir): mount a behind a FaultProxy, mount b straight to the store, both
    allow_other on one database and bucket, and a sticky world-writable directory of inbox/."""
    px = FaultProxy(stack.endpoint)
    try:
        a = mount_factory(config={"s3": {"endpoint": px.url}, **FOREIGN}, opts="allow_other",
                          name="a")
        b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
        for m in (a, b):
            open_to_others(m)
        os.mkdir(a.path("inbox", uniq))
        os.chmod(a.path("inbox", uniq), 0o1777)
        yield a, b, px, uniq
    finally:
        px.rule = None
        px.release.set()
        px.close()


@pytest.mark.parametrize("target", ["public", "none"])
def test_published_secret_is_never_readable_by_another_user(proxied_pair, target):
    """E1: A saves a private file the way editors do: x.tmp written 0600, renamed over y.txt
    (ofile_publish). Since w/pubbind, x.tmp's row (0600) moves to y.txt only after the
    upload's row commits; until then y.txt's new object (A's secret, already in the bucket)
    is shown with y.txt's old row (A's public 0644 file) or, for a new name, with no row (the
    defaults, 0644). B must never read the secret, on any mount."""
    a, b, px, d = proxied_pair
    tmp, to = f"{d}/x.tmp", f"{d}/y.txt"
    pt, py, pyb = a.path("inbox", tmp), a.path("inbox", to), b.path("inbox", to)
    if target == "public":
        assert as_user(A, f"open({py!r}, 'wb').write(b'old public')",
                       f"os.chmod({py!r}, 0o644)") == ["ok", "ok"]
        b.wait_until(lambda: as_user(B, rd(pyb)) == ["old public"], timeout=15,
                     what="B reads the public y.txt on mount b")
    assert as_user(A, f"open({pt!r}, 'wb').write(b'NEW SECRET')",
                   f"os.chmod({pt!r}, 0o600)", umask=0o077) == ["ok", "ok"]
    px.rule = late_upload_to(to, 12)
    out = []

    def go():
        out.extend(as_user(A, f"os.rename({pt!r}, {py!r})"))
    t = threading.Thread(target=go, daemon=True)
    t.start()
    seen = []
    try:
        a.wait_until(lambda: any(act == "late" for _, _, act in px.log), timeout=30,
                     what="the publish upload sent")
        end = time.monotonic() + 9
        while time.monotonic() < end:
            r = as_user(B, rd(pyb))
            seen.append(r[0])
            if r == ["NEW SECRET"]:
                break
            time.sleep(0.5)
    finally:
        px.rule = None
        px.release.set()
        t.join(60)
    assert out == ["ok"], out
    assert "NEW SECRET" not in seen, (seen, mode_owner(pyb))
    assert as_user(B, rd(pyb)) == ["EACCES"]


@pytest.fixture
def two_proxied(stack, mount_factory, uniq):
    """(a, pa, b, pb, dir): two allow_other mounts on one database and bucket, each behind its
    own FaultProxy, and a directory of inbox/."""
    pa, pb = FaultProxy(stack.endpoint), FaultProxy(stack.endpoint)
    try:
        a = mount_factory(config={"s3": {"endpoint": pa.url}, **FOREIGN}, opts="allow_other",
                          name="a")
        b = mount_factory(config={"s3": {"endpoint": pb.url}, **FOREIGN}, reset=False,
                          opts="allow_other", name="b")
        for m in (a, b):
            open_to_others(m)
        os.mkdir(a.path("inbox", uniq))
        yield a, pa, b, pb, uniq
    finally:
        for px in (pa, pb):
            px.rule = None
            px.release.set()
            px.close()


def copy_to(key, action):
    """A rule: the store's copy onto key (a PUT with x-amz-copy-source) gets action."""
    def rule(meth, path, h):
        if meth == "PUT" and path.split("?")[0].endswith("/" + key) \
                and any(k.lower() == "x-amz-copy-source" for k in h.keys()):
            return action
        return None
    return rule


def own(m, key, body, mode, uid, gid):
    p = m.path("inbox", key)
    with open(p, "wb") as f:
        f.write(body)
    os.chmod(p, mode)
    os.chown(p, uid, gid)
    assert mode_owner(p) == (mode, uid, gid)
    return p


@pytest.mark.parametrize("b_rename", ["fails", "succeeds"])
def test_rename_over_the_same_target_on_another_mount_keeps_the_files_attributes(two_proxied,
                                                                              b_rename):
    """E2: on mount a, A's secret x.txt (0600) is renamed over t.txt (root's 0644): its row
    becomes t.txt's pending row (file_attrs, bucket '<bucket>/rename'), its copy in flight.
    Meanwhile on mount b, y.txt is renamed over t.txt too and fails (its copy refused):
    attrov_undo_copy -> db_attrs_unpend deletes t.txt's pending row -- mount a's, which b's
    own had replaced (ON CONFLICT). Mount a's copy then lands and its rows commit with no
    pending row: t.txt (A's secret) keeps t.txt's old row, bound to the old ETag: shown with
    the defaults (0644, readable by all), for good. (b_rename "succeeds": b's copy lands and
    its rows promote b's pending row first; a's copy then lands last, t.txt is A's secret, and
    finds no pending row either: the same.)"""
    a, pa, b, pb, d = two_proxied
    x, y, t = f"{d}/x.txt", f"{d}/y.txt", f"{d}/t.txt"
    own(a, x, b"A's secret", 0o600, A, A)
    own(a, y, b"B's public", 0o644, B, B)
    own(a, t, b"root's target", 0o644, 0, 0)
    b.wait_until(lambda: os.path.exists(b.path("inbox", y)) and
                 os.path.exists(b.path("inbox", t)), timeout=15, what="mount b sees y, t")
    pa.rule = copy_to(t, ("hold", 600))
    out = []

    def go():
        try:
            os.rename(a.path("inbox", x), a.path("inbox", t))
            out.append("ok")
        except OSError as e:
            out.append(errno.errorcode.get(e.errno, str(e.errno)))
    th = threading.Thread(target=go, daemon=True)
    th.start()
    try:
        a.wait_until(lambda: any(act == "hold" for _, _, act in pa.log), timeout=30,
                     what="mount a's copy held")
        if b_rename == "fails":
            pb.rule = copy_to(t, ("status", 403, b"<Error><Code>AccessDenied</Code></Error>"))
            with pytest.raises(OSError):
                os.rename(b.path("inbox", y), b.path("inbox", t))
        else:
            os.rename(b.path("inbox", y), b.path("inbox", t))
    finally:
        pa.rule = None
        pa.release.set()
        th.join(60)
    assert out == ["ok"], out
    time.sleep(1.5)  # attribute timeouts
    res = {"content": open(a.path("inbox", t), "rb").read(),
           "shown": mode_owner(a.path("inbox", t)),
           "B reads": as_user(B, rd(a.path("inbox", t)))}
    a.restart()
    res["after remount"] = mode_owner(a.path("inbox", t))
    assert res == {"content": b"A's secret", "shown": (0o600, A, A), "B reads": ["EACCES"],
                   "after remount": (0o600, A, A)}, res


def test_publish_retry_never_takes_the_row_of_a_new_file_at_the_temp_name(stack,
                                                                          mount_factory, uniq):
    """E3: A saves a private file as editors do: x.tmp (0600, "A SECRET") renamed over A's
    public y.txt (ofile_publish). The upload is stored and logged (rename returns 0), but
    attrov_publish, which moves x.tmp's row to y.txt, fails (y.txt's row locked by another
    session past the statement deadline: a database failing at that moment); it is queued
    (rebind_add, from = "x.tmp") and retried by the claims thread. Meanwhile B creates a new
    x.tmp in the sticky directory (the name is free; the row left there is this mount's claim
    nothing holds, so B takes it). The retry then runs db_attrs_publish("x.tmp" -> y.txt):
    it copies x.tmp's row *as it is now* -- B's -- onto y.txt, bound to A's object, and
    deletes B's row. A's secret becomes B's file."""
    import psycopg2
    a = mount_factory(config={"fs": dict(FOREIGN["fs"], claim_lease="4")}, opts="allow_other")
    open_to_others(a)
    d = a.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o1777)
    tmp, to = f"{uniq}/x.tmp", f"{uniq}/y.txt"
    pt, py = a.path("inbox", tmp), a.path("inbox", to)
    assert as_user(A, f"open({py!r}, 'wb').write(b'old public')") == ["ok"]
    assert as_user(A, f"open({pt!r}, 'wb').write(b'A SECRET')", umask=0o077) == ["ok"]
    lock = psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="custody",
                            dbname="custody")
    try:
        with lock.cursor() as cur:
            cur.execute("select 1 from file_attrs where bucket = %s and object_key = %s"
                        " for update", (a.reception_bucket, to))
            assert cur.rowcount == 1
        assert as_user(A, f"os.rename({pt!r}, {py!r})") == ["ok"]
        assert as_user(B, f"open({pt!r}, 'wb').write(b'B file')") == ["ok"]
    finally:
        lock.commit()
        lock.close()
    time.sleep(6)  # the claims thread's retries (every claim_lease / 4 = 1 s)
    e = etag(a, to)
    r = a.sql_dicts("select * from file_attrs where bucket = %s and object_key = %s",
                    (a.reception_bucket, to))
    rt = a.sql_dicts("select * from file_attrs where bucket = %s and object_key = %s",
                     (a.reception_bucket, tmp))
    res = {"y.txt": open(py, "rb").read(),
           "y.txt row": r and (r[0]["uid"], r[0]["mode"], r[0]["etag"] == e),
           "B reads y.txt": as_user(B, rd(py)),
           "x.tmp row": rt and (rt[0]["uid"],),
           "x.tmp shown": mode_owner(pt)}
    assert res == {"y.txt": b"A SECRET", "y.txt row": (A, 0o600, True),
                   "B reads y.txt": ["EACCES"], "x.tmp row": (B,),
                   "x.tmp shown": (0o644, B, B)}, res


def test_crash_before_a_publishs_row_move_never_leaves_the_secret_readable(stack,
                                                                          mount_factory, uniq):
    """E1 (after a crash): as test_published_secret_is_never_readable_by_another_user, the
    daemon killed once the upload's reception row is committed but before attrov_publish
    moved x.tmp's row (held here by a lock on y.txt's row; a crash or a database failing at
    that moment). close/rename's durability promise is kept for the bytes and the audit row,
    but after a remount y.txt (A's secret) shows with its old row (A's public 0644), x.tmp's
    row left behind under a name that no longer exists: readable by B for good."""
    import psycopg2
    a = mount_factory(config=FOREIGN, opts="allow_other")
    open_to_others(a)
    d = a.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o1777)
    tmp, to = f"{uniq}/x.tmp", f"{uniq}/y.txt"
    pt, py = a.path("inbox", tmp), a.path("inbox", to)
    assert as_user(A, f"open({py!r}, 'wb').write(b'old public')") == ["ok"]
    assert as_user(A, f"open({pt!r}, 'wb').write(b'A SECRET')", umask=0o077) == ["ok"]
    old = etag(a, to)
    lock = psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="custody",
                            dbname="custody")
    try:
        with lock.cursor() as cur:
            cur.execute("select 1 from file_attrs where bucket = %s and object_key = %s"
                        " for update", (a.reception_bucket, to))
            assert cur.rowcount == 1
        th = threading.Thread(target=lambda: as_user(A, f"os.rename({pt!r}, {py!r})"),
                              daemon=True)
        th.start()
        a.wait_until(lambda: etag(a, to) != old and len(a.sql_dicts(
            "select 1 from reception_audit where source_bucket = %s and object_key = %s"
            " and removed_at is null and etag = %s", (a.reception_bucket, to, etag(a, to)))),
            timeout=30, what="the publish's upload recorded")
        time.sleep(1)
        a.crash()
    finally:
        lock.commit()
        lock.close()
    th.join(30)
    a.mount()
    res = {"y.txt": open(py, "rb").read(), "shown": mode_owner(py),
           "B reads": as_user(B, rd(py))}
    assert res == {"y.txt": b"A SECRET", "shown": (0o600, A, A), "B reads": ["EACCES"]}, res


def test_crash_before_a_publishs_row_move_ends_with_the_writers_row(stack, mount_factory,
                                                                   uniq):
    """E1 (after a crash, settled): as
    test_crash_before_a_publishs_row_move_never_leaves_the_secret_readable, with a short lease
    ([fs] claim_lease, the pending row's): once the lease is over, the next look at y.txt
    makes the pending row y.txt's own row, bound to the published object, logged; no pending
    row is left. A later rewrite of y.txt (which drops a row bound to another object) then
    keeps A's attributes."""
    import psycopg2
    a = mount_factory(config={"fs": dict(FOREIGN["fs"], claim_lease="4")},
                      opts="allow_other")
    open_to_others(a)
    d = a.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o1777)
    tmp, to = f"{uniq}/x.tmp", f"{uniq}/y.txt"
    pt, py = a.path("inbox", tmp), a.path("inbox", to)
    assert as_user(A, f"open({py!r}, 'wb').write(b'old public')") == ["ok"]
    assert as_user(A, f"open({pt!r}, 'wb').write(b'A SECRET')", umask=0o077) == ["ok"]
    old = etag(a, to)
    lock = psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="custody",
                            dbname="custody")
    try:
        with lock.cursor() as cur:
            cur.execute("select 1 from file_attrs where bucket = %s and object_key = %s"
                        " for update", (a.reception_bucket, to))
            assert cur.rowcount == 1
        th = threading.Thread(target=lambda: as_user(A, f"os.rename({pt!r}, {py!r})"),
                              daemon=True)
        th.start()
        a.wait_until(lambda: etag(a, to) != old and len(a.sql_dicts(
            "select 1 from reception_audit where source_bucket = %s and object_key = %s"
            " and removed_at is null and etag = %s", (a.reception_bucket, to, etag(a, to)))),
            timeout=30, what="the publish's upload recorded")
        time.sleep(1)
        a.crash()
    finally:
        lock.commit()
        lock.close()
    th.join(30)
    a.mount()
    time.sleep(5)  # the pending row's lease runs out
    assert mode_owner(py) == (0o600, A, A)
    e = etag(a, to)
    r = a.sql_dicts("select * from file_attrs where bucket = %s and object_key = %s",
                    (a.reception_bucket, to))
    res = {"y.txt": open(py, "rb").read(), "shown": mode_owner(py),
           "row": r and (r[0]["mode"], r[0]["uid"], r[0]["etag"] == e),
           "pending rows": pending_rows(a, to), "B reads": as_user(B, rd(py))}
    assert res == {"y.txt": b"A SECRET", "shown": (0o600, A, A), "row": (0o600, A, True),
                   "pending rows": 0, "B reads": ["EACCES"]}, res


def test_crash_renaming_an_open_file_over_a_target_keeps_its_attributes(stack, mount_factory,
                                                                       uniq):
    """E4: A's secret x.txt (0600) is open O_RDWR, unchanged (an editor), when it is renamed over
    t.txt (root's 0644). rename_open has no pending row (w/r5 gave rename_stored and
    rename_dir one): reception_rename commits the copy's rows, and only after the source's
    DELETE does rename_entry move x.txt's row (attrov_move). The daemon dies in the DELETE:
    after a remount t.txt holds A's secret with t.txt's old row, bound to the old ETag: the
    defaults (0644), readable by all."""
    from conftest import FOREIGN_IDS
    from test_rename_attrs import rename_killed_in_the_source_delete
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url}, **FOREIGN_IDS})
        os.mkdir(m.path("inbox", uniq))
        frm, to = f"{uniq}/x.txt", f"{uniq}/t.txt"
        own(m, frm, b"A's secret", 0o600, A, A)
        own(m, to, b"root's target", 0o644, 0, 0)
        fd = os.open(m.path("inbox", frm), os.O_RDWR)
        try:
            rename_killed_in_the_source_delete(m, px, frm, to)
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        res = {"content": open(m.path("inbox", to), "rb").read(),
               "shown": mode_owner(m.path("inbox", to))}
        assert res == {"content": b"A's secret", "shown": (0o600, A, A)}, res
    finally:
        px.rule = None
        px.release.set()
        px.close()


def test_publish_takes_its_own_row_not_another_mounts_temp_file_s(mount_factory, uniq):
    """E3 (two mounts, no failure): A's editor on mount a saves x.tmp (0600, "A SECRET").
    On mount b, a script of A's writes its own x.tmp (0644): a temp name is never shared
    between mounts, so b's plain create takes over a's live claim (claim_name, local) -- the
    row under x.tmp is b's file's now. A renames x.tmp over y.txt on mount a: db_attrs_publish
    copies the row under x.tmp, b's 0644, onto y.txt (A's secret), and deletes it under
    x.tmp (b's file loses its row). B reads A's secret."""
    from test_perms import two_mounts
    a, b = two_mounts(mount_factory)
    d = a.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o1777)
    tmp, to = f"{uniq}/x.tmp", f"{uniq}/y.txt"
    assert as_user(A, f"open({a.path('inbox', tmp)!r}, 'wb').write(b'A SECRET')",
                   umask=0o077) == ["ok"]
    b.wait_until(lambda: os.path.isdir(b.path("inbox", uniq)), timeout=15, what="dir on b")
    assert as_user(A, f"open({b.path('inbox', tmp)!r}, 'wb').write(b'b script')",
                   umask=0o022) == ["ok"]
    assert as_user(A, f"os.rename({a.path('inbox', tmp)!r}, {a.path('inbox', to)!r})") \
        == ["ok"]
    time.sleep(1.5)
    res = {"y.txt": open(a.path("inbox", to), "rb").read(),
           "shown": mode_owner(a.path("inbox", to)),
           "B reads": as_user(B, rd(a.path("inbox", to))),
           "b's x.tmp": mode_owner(b.path("inbox", tmp))}
    assert res == {"y.txt": b"A SECRET", "shown": (0o600, A, A), "B reads": ["EACCES"],
                   "b's x.tmp": (0o644, A, A)}, res


def pending_rows(m, key):
    """The pending attribute rows of key: file_attrs_pending's (migration 12), or those kept
    in file_attrs under bucket '<bucket>/rename' before it."""
    n = len(m.sql_dicts("select 1 from file_attrs where bucket = %s and object_key = %s",
                        (m.reception_bucket + "/rename", key)))
    if m.sql_dicts("select to_regclass('file_attrs_pending') is not null as t")[0]["t"]:
        n += len(m.sql_dicts("select 1 from file_attrs_pending where bucket = %s"
                             " and object_key = %s", (m.reception_bucket, key)))
    return n


def test_a_crashed_renames_pending_row_never_goes_to_another_files_copy(stack, mount_factory,
                                                                         uniq):
    """E7: A's secret x.txt (0600) is renamed over t.txt (root's 0644): its row becomes t.txt's
    pending row, the copy is held and the daemon killed (the copy never lands): that pending row
    is left behind. Later B's z.txt (0640), open unchanged for writing, is renamed over t.txt
    and the daemon dies in the source DELETE (its copy and rows done). t.txt (B's bytes) must
    show z.txt's attributes, never x.txt's row the crashed rename left, nor the defaults, and the
    crashed rename's pending row (its lease over) must be gone."""
    from conftest import FOREIGN_IDS
    from races import crash_held, remount, rename_in_thread
    from test_rename_attrs import rename_killed_in_the_source_delete
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url},
                                  "fs": dict(FOREIGN_IDS["fs"], claim_lease="4")})
        os.mkdir(m.path("inbox", uniq))
        x, z, t = f"{uniq}/x.txt", f"{uniq}/z.txt", f"{uniq}/t.txt"
        own(m, x, b"A's secret", 0o600, A, A)
        own(m, z, b"B's file", 0o640, B, B)
        own(m, t, b"root's target", 0o644, 0, 0)
        px.rule = copy_to(t, ("hang",))
        th, out = rename_in_thread(m, x, t)
        m.wait_until(lambda: any(act == "hang" for _, _, act in px.log), timeout=30,
                     what="the copy of x.txt held")
        crash_held(m, px, th)
        px.rule = None
        remount(m, px)
        assert (open(m.path("inbox", t), "rb").read(), mode_owner(m.path("inbox", t))) == \
            (b"root's target", (0o644, 0, 0))
        assert pending_rows(m, t) == 1  # the crashed rename's
        time.sleep(5)  # its lease (claim_lease) runs out
        fd = os.open(m.path("inbox", z), os.O_RDWR)
        try:
            rename_killed_in_the_source_delete(m, px, z, t)
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        res = {"content": open(m.path("inbox", t), "rb").read(),
               "shown": mode_owner(m.path("inbox", t)),
               "pending rows": pending_rows(m, t)}
        assert res == {"content": b"B's file", "shown": (0o640, B, B), "pending rows": 0}, res
    finally:
        px.rule = None
        px.release.set()
        px.close()


@pytest.mark.parametrize("remount", [True, False], ids=["remounted", "same-mount"])
def test_failed_source_delete_never_logs_the_same_upload_twice(stack, mount_factory, uniq,
                                                               remount):
    """E5: x.txt (A's upload, logged once) renamed to y.txt; the copy and its rows commit
    (x.txt's row closed 'renamed to y.txt'), then the source DELETE fails: x.txt's object
    stays in the bucket with no live row, its file_attrs row kept (rename returned EIO then,
    C6; since review K2 it returns 0: the rename is durable once its rows committed).
    The next look at x.txt logs that same upload again (origin 'foreign', received_by the
    foreign owner: a row recording an upload nobody made), and x.txt is shown and readable
    as a file that exists. SPEC §2: every distinct upload is logged exactly once.
    Fixed: the rename says 0 (renamed, its source not deleted yet); the next look (after
    a remount, or on the same mount) deletes the leftover (its ETag is the row's renamed
    away from x.txt) instead of logging it; y.txt keeps its one live row."""
    from faultproxy import INTERNAL
    from test_rename_attrs import is_delete_of
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url}, **FOREIGN})
        os.mkdir(m.path("inbox", uniq))
        frm, to = f"{uniq}/x.txt", f"{uniq}/y.txt"
        own(m, frm, b"A's file", 0o600, A, A)
        e = etag(m, frm)
        px.rule = is_delete_of(frm, ("status", 500, INTERNAL))
        os.rename(m.path("inbox", frm), m.path("inbox", to))  # durable: 0 (review K2)
        assert any(meth == "DELETE" and a == "status" for meth, _, a in px.log), px.log
        px.rule = None
        if remount:
            m.restart()

        def x_in_store():
            return "Contents" in m.s3.list_objects_v2(Bucket=m.reception_bucket, Prefix=frm)

        def look():
            os.listdir(m.path("inbox", uniq))
            try:
                os.stat(m.path("inbox", frm))
            except OSError:
                pass
            return not x_in_store()
        m.wait_until(look, timeout=30, interval=1, what="x.txt's leftover deleted")
        time.sleep(2)

        def key_rows(key):
            return [(r["origin"], r["etag"] == e, r["removed_at"] is None)
                    for r in m.sql_dicts("select origin, etag, removed_at from reception_audit"
                                         " where source_bucket = %s and object_key = %s"
                                         " order by id", (m.reception_bucket, key))]
        res = {"x.txt rows": key_rows(frm), "y.txt rows": key_rows(to),
               "y.txt": open(m.path("inbox", to), "rb").read()}
        assert res == {"x.txt rows": [("mount", True, False)],
                       "y.txt rows": [("rename", True, True)], "y.txt": b"A's file"}, res
    finally:
        px.rule = None
        px.release.set()
        px.close()


@pytest.mark.both_backends  # depends on what the store does (copies, parts, ETags)
def test_rename_never_moves_a_newer_upload_of_its_source(proxied):
    """E8: f.bin (the mount's upload, logged) is renamed to g.bin; the rename HEADs f.bin
    (the object the caller's rename names: its ETag when the rename started) and its copy is
    held at the proxy. Meanwhile another writer (boto3, straight to the store) replaces f.bin
    with other bytes. The copy goes on (x-amz-copy-source-if-match refuses it; s3rver ignores
    the header: the copy lands and fails the check after it). On w/int the rename then HEADs
    f.bin again and copies the newer upload to g.bin, deletes it from f.bin and logs it under
    g.bin: another writer's upload moved by a rename that never saw it. The rename must move
    the object it named (g.bin = the old bytes, the new upload stays at f.bin) or fail with
    EBUSY (nothing moved: g.bin absent, without rows); f.bin keeps the newer upload."""
    from races import let_go, rename_in_thread
    m, px, d = proxied
    frm, to = f"{d}/f.bin", f"{d}/g.bin"
    old, new = os.urandom(3000), os.urandom(3000)
    with open(m.path("inbox", frm), "wb") as f:
        f.write(old)
    held = threading.Event()

    def rule(meth, path, h):
        if meth == "PUT" and path.split("?")[0].endswith("/" + to) \
                and any(k.lower() == "x-amz-copy-source" for k in h.keys()) \
                and not held.is_set():
            held.set()
            return ("hold", 60)
        return None
    px.rule = rule
    t, out = rename_in_thread(m, frm, to)
    m.wait_until(held.is_set, timeout=60, what="the rename's copy at the proxy")
    m.s3.put_object(Bucket=m.reception_bucket, Key=frm, Body=new)
    let_go(px, t)
    assert not t.is_alive(), "the rename did not return"

    def body(key):
        try:
            return m.s3.get_object(Bucket=m.reception_bucket, Key=key)["Body"].read()
        except m.s3.exceptions.NoSuchKey:
            return None

    def g_rows():
        return m.sql_dicts("select etag, removed_at from reception_audit"
                           " where source_bucket = %s and object_key = %s order by id",
                           (m.reception_bucket, to))
    if out == ["EBUSY"]:
        # a copy a store let land is undone (g.bin is a new key)
        m.wait_until(lambda: body(to) is None, timeout=30, what="g.bin's copy undone")
    renamed_away = m.sql_dicts("select id from reception_audit where source_bucket = %s"
                               " and object_key = %s and removal_reason like 'renamed%%'",
                               (m.reception_bucket, frm))
    res = {"rename": out, "f.bin": body(frm) == new,
           "g.bin": {None: None, old: "old", new: "NEW"}.get(body(to), "other"),
           "g.bin rows": len(g_rows()), "f.bin rows renamed away": len(renamed_away)}
    assert res in ({"rename": ["EBUSY"], "f.bin": True, "g.bin": None, "g.bin rows": 0,
                    "f.bin rows renamed away": 0},
                   {"rename": ["ok"], "f.bin": True, "g.bin": "old", "g.bin rows": 1,
                    "f.bin rows renamed away": 1}), res
