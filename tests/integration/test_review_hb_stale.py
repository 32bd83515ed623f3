"""Hostile review T, H-b (doc/reviews/review-T-Hb.md): a change of attributes made through a
stale listing must never reset and take over the row of the object that is at the name now.

Two allow_other mounts a and b on one database and bucket; users A and B as in test_perms.py.
A's 0600 y.txt is seen on mount b; on mount a, A renames it away and B writes his own 0600
y.txt ("B SECRET"). Past cache_ttl, A's chmod (or chown, or utime) of y.txt on mount b is served
from b's stale listing and attribute snapshot: it names A's old object (its ETag) while the row
at the key is B's. The database must not take A's word that B's row is stale: unless the store
says the key holds the object A's change names, the change is refused (ESTALE; the kernel's
retry then sees B's file and refuses A: EPERM), and nothing of B's changes.

Every check is made independently too: every file_attrs row of the key, the change log, the
object in the bucket, both mounts' views, and what A and B can read on each."""
import os
import time

import pytest

from faultproxy import FaultProxy
from test_perms import (A, B, FOREIGN, as_user, attrs_row, changes, open_to_others, rd,
                        two_mounts)
from test_rename_attrs import mode_owner

OLD, BS = "OLD SECRET", "B SECRET"

# A's change on mount b, as the first access there past the TTL
CHANGES = {
    "chmod": lambda p: f"os.chmod({p!r}, 0o644)",
    "chown": lambda p: f"os.chown({p!r}, -1, {A})",
    "utime": lambda p: f"os.utime({p!r}, (1, 1))",
}


def attrs_rows(m, key):
    """Every file_attrs row of key (one at most: (bucket, object_key) is unique)."""
    return m.sql_dicts("select * from file_attrs where bucket = %s and object_key = %s",
                       (m.reception_bucket, key))


def fresh_view(m, path):
    """mode_owner(path) once m's attribute snapshot is newer than the TTL: the first stat
    past it is served from the old one while it reloads in the background."""
    time.sleep(3.5)
    mode_owner(path)
    time.sleep(1)
    return mode_owner(path)


@pytest.mark.parametrize("same_bytes", [False, True], ids=["other_bytes", "same_bytes"])
@pytest.mark.parametrize("op", sorted(CHANGES))
def test_a_change_through_a_stale_listing_never_resets_another_objects_row(mount_factory,
                                                                           uniq, op,
                                                                           same_bytes):
    """same_bytes: B's file has the bytes A's had, so the same ETag: the row is B's and bound
    to the very ETag A's stale view names (an ETag is no object's identity; hostile read of
    w/hb, High 2). Only the database's check of the row as it is can refuse A."""
    bs = OLD if same_bytes else BS
    a, b = two_mounts(mount_factory)
    os.mkdir(a.path("inbox", uniq))
    os.chmod(a.path("inbox", uniq), 0o1777)
    key = f"{uniq}/y.txt"
    py_a, py_b = a.path("inbox", key), b.path("inbox", key)
    pz_a = a.path("inbox", f"{uniq}/z.txt")
    assert as_user(A, f"open({py_a!r}, 'w').write({OLD!r})", umask=0o077) == ["ok"]
    old_etag = attrs_row(a, key)["etag"]
    b.wait_until(lambda: mode_owner(py_b) == (0o600, A, A), timeout=30,
                 what="b shows A's 0600 y.txt")
    assert as_user(B, rd(py_b)) == ["EACCES"]
    # on mount a: A's file goes away, B's own 0600 y.txt takes the name
    assert as_user(A, f"os.rename({py_a!r}, {pz_a!r})") == ["ok"]
    assert as_user(B, f"open({py_a!r}, 'w').write({bs!r})", umask=0o077) == ["ok"]
    assert mode_owner(py_a) == (0o600, B, B)
    (before,) = attrs_rows(a, key)
    b_etag, b_times = before["etag"], (before["atime_ns"], before["mtime_ns"])
    assert b_etag and (b_etag == old_etag) == same_bytes
    time.sleep(3.5)  # mount b's listing and attributes are older than its cache_ttl (3 s)

    got = as_user(A, CHANGES[op](py_b))  # the first access on b since
    after = attrs_rows(a, key)
    body = a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read()
    by_a = [c for c in changes(a, key) if c["changed_uid"] == A]
    view_a = fresh_view(a, py_a)
    res = {"A's " + op: "refused" if got in (["ESTALE"], ["EPERM"], ["EACCES"]) else got,
           "rows": [(r["mode"], r["uid"], r["gid"], r["etag"], (r["atime_ns"], r["mtime_ns"]))
                    for r in after],
           "object": body, "A's changes logged": len(by_a), "a shows": view_a,
           "A reads on a": as_user(A, rd(py_a)), "B reads on a": as_user(B, rd(py_a))}
    assert res == {"A's " + op: "refused",
                   "rows": [(0o600, B, B, b_etag, b_times)], "object": bs.encode(),
                   "A's changes logged": 0, "a shows": (0o600, B, B),
                   "A reads on a": ["EACCES"], "B reads on a": [bs]}, res
    # mount b sees the truth: B's file, which A may neither change nor read
    b.wait_until(lambda: mode_owner(py_b) == (0o600, B, B), timeout=30,
                 what="b shows B's 0600 y.txt")
    assert as_user(A, rd(py_b), CHANGES[op](py_b)) == ["EACCES", "EPERM"]
    assert as_user(B, rd(py_b)) == [bs]
    # A's own file, under its new name, kept its row
    assert (attrs_row(a, f"{uniq}/z.txt")["mode"], attrs_row(a, f"{uniq}/z.txt")["uid"]) == \
        (0o600, A)
    assert as_user(A, rd(pz_a)) == [OLD] and as_user(B, rd(pz_a)) == ["EACCES"]
    (r,) = attrs_rows(a, key)
    assert (r["mode"], r["uid"], r["gid"], r["etag"], (r["atime_ns"], r["mtime_ns"])) == \
        (0o600, B, B, b_etag, b_times)


def test_a_row_bound_to_an_object_no_longer_stored_is_reset_by_a_change(mount_factory, uniq):
    """The reset H-b's fix keeps: the row at the key is bound to an object the store no longer
    holds (here forced: its ETag rewritten), the store holding the object the change names.
    That row is stale: root's chmod succeeds and starts from the defaults, bound to the object
    stored."""
    m = mount_factory(config=FOREIGN, opts="allow_other")
    open_to_others(m)
    key = f"{uniq}.txt"
    f = m.path("inbox", key)
    assert as_user(A, f"open({f!r}, 'w').write('A')", f"os.chmod({f!r}, 0o600)") == ["ok", "ok"]
    etag = attrs_row(m, key)["etag"]
    m.sql("update file_attrs set etag = 'feedfacefeedfacefeedfacefeedface'"
          " where bucket = %s and object_key = %s", (m.reception_bucket, key))
    fresh_view(m, f)
    os.chmod(f, 0o640)
    rs = [(r["mode"], r["uid"], r["etag"]) for r in attrs_rows(m, key)]
    assert rs == [(0o640, None, etag)], rs
    assert [c["op"] for c in changes(m, key)] == ["chmod", "chmod"]


def test_changes_of_a_file_whose_row_is_its_own_ask_no_head(stack, mount_factory, uniq):
    """The check H-b adds costs nothing in the ordinary case: the owner's chmod, chown and
    utime of her own stored file, whose row is bound to the object listed, send no HEAD."""
    px = FaultProxy(stack.endpoint)
    m = None
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url}, "fs": FOREIGN["fs"]},
                          opts="allow_other")
        open_to_others(m)
        key = f"{uniq}.txt"
        f = m.path("inbox", key)
        assert as_user(A, f"open({f!r}, 'w').write('A')") == ["ok"]
        os.listdir(m.inbox)
        assert mode_owner(f) == (0o644, A, A)
        with px.lock:
            px.log.clear()
        assert as_user(A, f"os.chmod({f!r}, 0o600)", f"os.chown({f!r}, -1, {A})",
                       f"os.utime({f!r}, (5, 5))", f"os.chmod({f!r}, 0o640)") == ["ok"] * 4
        with px.lock:
            heads = [(meth, path) for meth, path, _ in px.log if meth == "HEAD"]
        assert heads == [], heads
        r = attrs_row(m, key)
        assert (r["mode"], r["uid"], r["mtime_ns"]) == (0o640, A, 5_000_000_000)
    finally:
        if m is not None:
            m.unmount(check=False)
        px.close()


def bs_file_under_as_old_name(mount_factory, uniq, *b_steps):
    """Two mounts; A's 0600 y.txt seen on mount b; on mount a, A renames it to z.txt and B
    writes his own 0600 y.txt with the same bytes (the same ETag), then runs b_steps (Python
    statements, py_a his file's path); past b's cache_ttl, b's view of y.txt is A's old file.
    Returns a, b, the key, y.txt's paths on a and b."""
    a, b = two_mounts(mount_factory)
    os.mkdir(a.path("inbox", uniq))
    os.chmod(a.path("inbox", uniq), 0o1777)
    key = f"{uniq}/y.txt"
    py_a, py_b = a.path("inbox", key), b.path("inbox", key)
    assert as_user(A, f"open({py_a!r}, 'w').write({OLD!r})", umask=0o077) == ["ok"]
    b.wait_until(lambda: mode_owner(py_b) == (0o600, A, A), timeout=30,
                 what="b shows A's 0600 y.txt")
    assert as_user(A, f"os.rename({py_a!r}, {a.path('inbox', uniq + '/z.txt')!r})") == ["ok"]
    steps = [f"open({py_a!r}, 'w').write({OLD!r})"] + [st.format(py_a=repr(py_a))
                                                         for st in b_steps]
    assert as_user(B, *steps, umask=0o077) == ["ok"] * len(steps)
    time.sleep(3.5)  # mount b's listing and attributes are older than its cache_ttl (3 s)
    return a, b, key, py_a, py_b


def test_roots_chgrp_through_a_stale_view_keeps_the_rows_owner(mount_factory, uniq):
    """Root's chgrp (chown -1:G) of y.txt on mount b, whose view still shows A's old file with
    the same bytes as B's new one (the same ETag, so the change is made on B's row): the row's
    owner stays B. The uid the caller's view showed (A) was written to the row before, giving
    A B's file."""
    a, b, key, py_a, py_b = bs_file_under_as_old_name(mount_factory, uniq)
    os.chown(py_b, -1, 4242)
    rows = [(r["mode"], r["uid"], r["gid"]) for r in attrs_rows(a, key)]
    assert rows == [(0o600, B, 4242)], rows
    assert [(c["op"], c["uid"], c["gid"]) for c in changes(a, key) if c["op"] == "chown"] == \
        [("chown", B, 4242)]
    assert as_user(A, rd(py_a)) == ["EACCES"]


def test_a_no_op_chmod_through_a_stale_view_never_touches_anothers_setuid_file(mount_factory,
                                                                              uniq):
    """B's 04700 y.txt holds the bytes A's old y.txt had (the same ETag); mount b still shows
    A's file. A's `chmod 0700` there only drops a set-id bit of B's file: a write's clearing
    of set-id bits is for one who may write, and a chmod is the owner's. Refused (EPERM); B's
    row keeps its mode and nothing is logged as A's. (Hostile read of w/hb2, L1: the rule
    'anyone may drop set-id bits' let A clear B's setuid bit, logged as her chmod.)"""
    a, b, key, py_a, py_b = bs_file_under_as_old_name(mount_factory, uniq,
                                                            "os.chmod({py_a}, 0o4700)")
    got = as_user(A, f"os.chmod({py_b!r}, 0o700)")
    rows = [(r["mode"], r["uid"]) for r in attrs_rows(a, key)]
    by_a = [c for c in changes(a, key) if c["changed_uid"] == A]
    assert (got, rows, by_a) == (["EPERM"], [(0o4700, B)], []), (got, rows, by_a)
