"""review-T T4 and the hostile read of w/t4c (review-t4c F1, F2): an open of a name that is
open on this mount attaches to the open file (its spool holds the object it was opened on,
and what its writers wrote). Another mount may since have renamed another file over the name,
maybe with the same bytes (so the same ETag: an empty file), and the name's row then describes
that object. The opener must be allowed both by the name's row as it is now and by the owner
and mode of the object the open file holds. Two allow_other mounts on one database and bucket;
users A and B as in test_perms.py, C a third."""
import os
import time

import pytest

from checks import get_object, rows
from test_perms import A, B, LONG_TTL, as_user, attrs_row, rd, shared, two_mounts  # noqa: F401
from test_rename_attrs import mode_owner
from test_review_g_open import Holder

C = 2003
OLD, PUB = "OLD SECRET".ljust(64), "public".ljust(64)
WORLD = "A OLD, WORLD-WRITABLE".ljust(64)


def _dir(a, uniq):
    os.mkdir(a.path("inbox", uniq))
    os.chmod(a.path("inbox", uniq), 0o1777)


def as_file_on_two(mount_factory, uniq, content, mode):
    """Two mounts a, b; A's y.txt (content, mode) made on a in a 1777 directory, shown on b.
    Returns a, b and the paths of y.txt on a and b and of z.txt on a."""
    a, b = two_mounts(mount_factory)
    _dir(a, uniq)
    py_a, py_b = a.path("inbox", f"{uniq}/y.txt"), b.path("inbox", f"{uniq}/y.txt")
    pz_a = a.path("inbox", f"{uniq}/z.txt")
    assert as_user(A, f"open({py_a!r}, 'w').write({content!r})",
                   f"os.chmod({py_a!r}, {mode:#o})") == ["ok", "ok"]
    b.wait_until(lambda: mode_owner(py_b) == (mode, A, A), timeout=30,
                 what="b shows A's y.txt")
    return a, b, py_a, py_b, pz_a


def removed_on_a_listed_on_b(mount_factory, uniq):
    """Two mounts (b's listing kept 30 s); A's y.txt ("v1") made on a, listed and looked up on
    b, then removed on a. Returns a, the key and the paths of y.txt on a and b."""
    a, b = two_mounts(mount_factory, LONG_TTL)
    _dir(a, uniq)
    key = f"{uniq}/y.txt"
    py_a, py_b = a.path("inbox", key), b.path("inbox", key)
    assert as_user(A, f"open({py_a!r}, 'w').write('v1')") == ["ok"]
    b.wait_until(lambda: os.path.exists(py_b), timeout=40, what="b lists it")
    assert as_user(A, f"os.stat({py_b!r}).st_size") == ["ok"]
    assert as_user(A, f"os.unlink({py_a!r})") == ["ok"]
    return a, key, py_a, py_b


def foreign_0666_on_two(mount_factory, uniq):
    """Two mounts; a foreign (SDK, untagged) y.txt put in the bucket, made 0666 on a and shown
    so on b. Returns a, b, the key and the paths of y.txt on a and b."""
    a, b = two_mounts(mount_factory)
    _dir(a, uniq)
    key = f"{uniq}/y.txt"
    py_a, py_b = a.path("inbox", key), b.path("inbox", key)
    a.s3.put_object(Bucket=a.reception_bucket, Key=key, Body=b"FOREIGN".ljust(64))
    a.wait_until(lambda: os.path.exists(py_a), timeout=30, what="a lists it")
    os.chmod(py_a, 0o666)
    b.wait_until(lambda: os.path.exists(py_b) and mode_owner(py_b)[0] == 0o666, timeout=40,
                 what="b shows it 0666")
    return a, b, key, py_a, py_b


def test_open_of_a_name_open_here_checks_the_open_files_object(mount_factory, uniq):
    """A's 0600 y.txt ("OLD SECRET") is held open O_RDWR by A on mount b; on mount a A
    renames a 0644 "public" over it. B opens y.txt on b: he reads the public replacement or
    gets EACCES, never the old secret the open file holds; A still may."""
    a, b, py_a, py_b, _ = as_file_on_two(mount_factory, uniq, OLD, 0o600)
    px_a = a.path("inbox", f"{uniq}/x.tmp")
    assert as_user(B, rd(py_b)) == ["EACCES"]
    w = Holder(A, py_b, flags=os.O_RDWR)
    try:
        assert as_user(A, f"open({px_a!r}, 'w').write({PUB!r})", f"os.chmod({px_a!r}, 0o644)",
                       f"os.rename({px_a!r}, {py_a!r})") == ["ok", "ok", "ok"]
        a.wait_until(lambda: as_user(B, rd(py_a)) == [PUB], timeout=30,
                     what="B reads the public replacement on a")
        time.sleep(3.5)  # mount b's listing and attributes are older than its cache_ttl
        got = []
        for _ in range(5):
            got += as_user(B, rd(py_b), f"os.open({py_b!r}, os.O_RDONLY) and 'opened'")
            time.sleep(0.5)
        assert OLD not in got, got
        assert all(r in (PUB, "EACCES", "opened") for r in got), got
        assert as_user(A, rd(py_b))[0] in (OLD, PUB)
    finally:
        w.close()


def test_same_content_object_is_not_taken_for_the_open_files(mount_factory, uniq):
    """review-t4c F2: the same with an object of the same bytes (so the same ETag): A's
    empty 0600 y.txt is opened O_RDWR by A on mount b and A writes a draft into it (not
    committed: the descriptor stays open); on mount a A renames y.txt away and B creates his
    own empty 0600 y.txt. B never reads A's draft on mount b (it leaked 5 of 5 before)."""
    a, b, py_a, py_b, pz_a = as_file_on_two(mount_factory, uniq, "", 0o600)
    w = Holder(A, py_b, flags=os.O_RDWR)
    try:
        assert w.write("A DRAFT SECRET") == "ok"
        assert as_user(A, f"os.rename({py_a!r}, {pz_a!r})") == ["ok"]
        assert as_user(B, f"open({py_a!r}, 'w').close()", umask=0o077) == ["ok"]
        assert mode_owner(py_a) == (0o600, B, B)
        time.sleep(3.5)
        got = []
        for _ in range(5):
            got += as_user(B, rd(py_b), f"open({py_b!r}, 'r+').read()")
            time.sleep(0.5)
        assert not any("DRAFT" in g for g in got), got
        assert all(g == "EACCES" for g in got), got
        # the name is B's now: A may read her open file's draft on b or be refused
        assert as_user(A, rd(py_b))[0] in ("A DRAFT SECRET", "EACCES")
        # A's draft is not stored over B's file (she may not write it), loudly: B's object
        # and row stay as they are, and B never reads the draft on a
        assert w.fsync() == "EACCES"
        assert w.close_now() == "EACCES"
    finally:
        w.close()
    time.sleep(1)
    assert as_user(B, rd(py_a)) == [""]
    assert {k: attrs_row(a, f"{uniq}/y.txt")[k] for k in ("mode", "uid")} == \
        {"mode": 0o600, "uid": B}
    assert as_user(A, rd(pz_a)) == [""]
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=f"{uniq}/y.txt")["Body"].read() == b""


def _world_writable_then_bs(mount_factory, uniq):
    """review-t4c F1: A's 0666 y.txt held open O_RDWR by A on mount b; on mount a A renames
    it to z.txt and B writes his own 0600 y.txt ("B SECRET"). Mount b's caches are then older
    than the TTL. C may write A's old object, not B's."""
    a, b, py_a, py_b, pz_a = as_file_on_two(mount_factory, uniq, WORLD, 0o666)
    w = Holder(A, py_b, flags=os.O_RDWR)
    assert as_user(A, f"os.rename({py_a!r}, {pz_a!r})") == ["ok"]
    assert as_user(B, f"open({py_a!r}, 'w').write('B SECRET')", f"os.chmod({py_a!r}, 0o600)",
                   umask=0o077) == ["ok", "ok"]
    assert mode_owner(py_a) == (0o600, B, B)
    assert as_user(C, f"open({py_a!r}, 'r+').write('x')")[-1] == "EACCES"
    time.sleep(3.5)
    return a, py_a, py_b, w


def test_third_user_truncate_by_path_never_replaces_bs_newer_object(mount_factory, uniq):
    """C's truncate(2) by path of y.txt on b (open there, committed at once) is refused:
    the key now holds B's 0600 object."""
    a, py_a, py_b, w = _world_writable_then_bs(mount_factory, uniq)
    try:
        got = as_user(C, f"os.truncate({py_b!r}, 0)")
        time.sleep(2)
        assert got == ["EACCES"], got
        assert as_user(B, rd(py_a)) == ["B SECRET"]
        assert {k: attrs_row(a, f"{uniq}/y.txt")[k] for k in ("mode", "uid")} == \
            {"mode": 0o600, "uid": B}
    finally:
        w.close()


def test_third_user_write_through_a_new_open_never_replaces_bs_newer_object(mount_factory,
                                                                            uniq):
    """The same by open(O_WRONLY) + write + close on b (an open attached to the open file)."""
    a, py_a, py_b, w = _world_writable_then_bs(mount_factory, uniq)
    try:
        got = as_user(C, f"os.write(os.open({py_b!r}, os.O_WRONLY), b'C WAS HERE')")
        time.sleep(2)
        assert got == ["EACCES"], got
        assert as_user(B, rd(py_a)) == ["B SECRET"]
    finally:
        w.close()


def test_name_open_here_still_opens_for_whom_both_allow(mount_factory, uniq):
    """What the check must not refuse: A's 0644 y.txt held open O_RDWR by A on mount b with a
    draft written; B reads it on b (the open file's content, as on one machine), A opens it
    again for writing and her second write is read back; C may not write it."""
    a, b, py_a, py_b, _ = as_file_on_two(mount_factory, uniq, "first", 0o644)
    w = Holder(A, py_b, flags=os.O_RDWR)
    try:
        assert w.write("DRAFT") == "ok"
        assert as_user(B, rd(py_b)) == ["DRAFT"]
        assert as_user(A, f"open({py_b!r}, 'r+').write('again')", rd(py_b))[1] == "again"
        assert as_user(C, f"open({py_b!r}, 'r+').write('x')")[-1] == "EACCES"
    finally:
        w.close()
    a.wait_until(lambda: as_user(B, rd(py_a)) == ["again"], timeout=30,
                 what="a reads what A wrote on b once it is closed")


def test_commit_over_another_object_the_writer_may_write(mount_factory, uniq):
    """What the commit's check must let through (last writer wins, as before): A's file held
    open on mount b while another object is put at the name on mount a. (1) A's own newer
    version: A's write on b is stored over it. (2) B's 0666 file at the name (A may write
    it): stored over it, B's row (owner, mode) kept, as a write into B's file."""
    a, b, py_a, py_b, pz_a = as_file_on_two(mount_factory, uniq, "v1", 0o600)
    w = Holder(A, py_b, flags=os.O_RDWR)
    try:
        assert as_user(A, f"open({py_a!r}, 'w').write('v2 from a')") == ["ok"]
        time.sleep(3.5)
        assert w.write("v3") == "ok"
        assert w.fsync() == "ok"
    finally:
        w.close()
    # the whole open file (its spool: v1, written over) replaces the newer version
    a.wait_until(lambda: as_user(A, rd(py_a)) == ["v3"], timeout=30,
                 what="a reads A's write on b over her newer version")

    assert as_user(A, f"os.chmod({py_a!r}, 0o666)") == ["ok"]
    b.wait_until(lambda: mode_owner(py_b) == (0o666, A, A), timeout=30,
                 what="b shows A's 0666 y.txt")
    w = Holder(A, py_b, flags=os.O_RDWR)
    try:
        assert as_user(A, f"os.rename({py_a!r}, {pz_a!r})") == ["ok"]
        assert as_user(B, f"open({py_a!r}, 'w').write('B SHARED')", f"os.chmod({py_a!r}, 0o666)",
                       umask=0o022) == ["ok", "ok"]
        time.sleep(3.5)
        assert w.write("A!") == "ok"
        assert w.fsync() == "ok"
    finally:
        w.close()
    a.wait_until(lambda: as_user(B, rd(py_a)) == ["A!"], timeout=30,
                 what="a reads A's write into B's shared file")
    assert {k: attrs_row(a, f"{uniq}/y.txt")[k] for k in ("mode", "uid")} == \
        {"mode": 0o666, "uid": B}


@pytest.mark.parametrize("how", ["chmod", "chown"])
def test_owner_widens_a_file_held_open_and_others_may_open_it(shared, uniq, how):
    """One mount. A's 0600 x.txt (stored) is held open O_RDWR by A (a writer keeping its
    descriptor). A chmods it 0644 (or root chowns it to B). The row, the kernel and the
    daemon's getattr say B may read it; so does POSIX. B's open must not be refused for the
    mode the file had when its writer opened it (on a6886da held_* was never updated once
    committed)."""
    m = shared
    _dir(m, uniq)
    p = m.path("inbox", f"{uniq}/x.txt")
    assert as_user(A, f"open({p!r}, 'w').write('A TEXT')", umask=0o077) == ["ok"]
    assert mode_owner(p) == (0o600, A, A)
    w = Holder(A, p, flags=os.O_RDWR)
    try:
        if how == "chmod":
            assert as_user(A, f"os.chmod({p!r}, 0o644)") == ["ok"]
            assert mode_owner(p) == (0o644, A, A)
        else:
            os.chown(p, B, B)
            assert mode_owner(p) == (0o600, B, B)
        got = as_user(B, rd(p))
        assert got == ["A TEXT"], got
    finally:
        w.close()


@pytest.mark.parametrize("same_bytes", [True, False])
def test_stale_descriptors_commit_never_makes_bs_row_own_as_content(mount_factory, uniq,
                                                                    same_bytes):
    """T10 (review of w/held, High, also on 350135f). A's 0644 y.txt is held open O_RDWR by A on mount b and A writes a
    draft (not committed). On mount a A renames y.txt to z.txt and B creates his own 0600
    y.txt (same_bytes: empty, as A's was; else "B SECRET"). A closes her descriptor on b:
    its commit went over B's object and B's row (0600, B) was bound to A's draft. Now A's
    close fails (EACCES: she may not write B's object) and B's object and row stay."""
    a, b = two_mounts(mount_factory)
    _dir(a, uniq)
    py_a, py_b = a.path("inbox", f"{uniq}/y.txt"), b.path("inbox", f"{uniq}/y.txt")
    pz_a = a.path("inbox", f"{uniq}/z.txt")
    first = "" if same_bytes else "A FIRST"
    assert as_user(A, f"open({py_a!r}, 'w').write({first!r})", umask=0o022) == ["ok"]
    b.wait_until(lambda: mode_owner(py_b) == (0o644, A, A), timeout=30,
                 what="b shows A's 0644 y.txt")
    w = Holder(A, py_b, flags=os.O_RDWR)
    try:
        assert w.write("A DRAFT") == "ok"
        assert as_user(A, f"os.rename({py_a!r}, {pz_a!r})") == ["ok"]
        bs = "" if same_bytes else "B SECRET"
        assert as_user(B, f"open({py_a!r}, 'w').write({bs!r})", umask=0o077) == ["ok"]
        assert mode_owner(py_a) == (0o600, B, B)
        time.sleep(3.5)
        assert w.close_now() == "EACCES"
    finally:
        w.close()
    time.sleep(1)
    key = f"{uniq}/y.txt"
    row, obj = attrs_row(a, key), get_object(a, key)
    got_b, got_a = as_user(B, rd(py_a)), as_user(A, rd(py_a))
    audit = [(r["uploaded_by"] if "uploaded_by" in r else None, r["removed_at"] is None)
             for r in rows(a, key)]
    print("\nobject", obj, "row", {k: row[k] for k in ("mode", "uid", "etag")} if row else None,
          "B reads", got_b, "A reads", got_a, "audit", audit)
    # A's bytes never sit at the key as B's 0600 file
    assert not (obj == b"A DRAFT" and row and row["uid"] == B), (obj, row, got_b, got_a)


def test_reopen_of_a_file_open_here_with_the_database_down(shared, uniq):
    """One mount. A's 0644 x.txt held open O_RDWR by A; the database stops. Opening x.txt
    again (A herself, B for reading) reads the row from the database first: with the
    database down it falls back to the mount's snapshot, as a file not open here does (it
    failed EIO on a6886da)."""
    m = shared
    _dir(m, uniq)
    p, q = m.path("inbox", f"{uniq}/x.txt"), m.path("inbox", f"{uniq}/q.txt")
    assert as_user(A, f"open({p!r}, 'w').write('A TEXT')", f"open({q!r}, 'w').write('Q')") \
        == ["ok", "ok"]
    w = Holder(A, p, flags=os.O_RDWR)
    try:
        assert as_user(B, rd(p), rd(q)) == ["A TEXT", "Q"]
        m.stop_pg()
        try:
            got = as_user(A, rd(p)) + as_user(B, rd(p)) + as_user(B, rd(q))
        finally:
            m.start_pg()
        m.wait_until(lambda: m.alive(), timeout=20, what="mount answers again")
        assert got == ["A TEXT", "A TEXT", "Q"], got
    finally:
        w.close()


def test_new_file_created_restrictive_then_chmodded_while_open(shared, uniq):
    """What must keep working (passes): A creates x.txt here and holds it open O_RDWR (not
    yet stored: its row is its claim), chmods it 0600 then 0644: B reads it (works: an
    unbound file's held_* follow its chmods). A chmods it 0600, a second descriptor of A
    writes and closes (stored and bound, w still open), A chmods it 0644: B must read it
    again (failed on a6886da: held_* was fixed once bound)."""
    m = shared
    _dir(m, uniq)
    p = m.path("inbox", f"{uniq}/x.txt")
    w = Holder(A, p, flags=os.O_RDWR | os.O_CREAT)
    try:
        assert w.write("A NEW") == "ok"
        assert as_user(A, f"os.chmod({p!r}, 0o600)", f"os.chmod({p!r}, 0o644)") == ["ok", "ok"]
        first = as_user(B, rd(p))
        assert as_user(A, f"os.chmod({p!r}, 0o600)") == ["ok"]
        # a second descriptor of A writes and closes: stored and bound, w still open
        assert as_user(A, f"open({p!r}, 'r+').write('A NEW')") == ["ok"]
        assert as_user(A, f"os.chmod({p!r}, 0o644)") == ["ok"]
        second = as_user(B, rd(p))
        assert (first, second) == (["A NEW"], ["A NEW"]), (first, second)
    finally:
        w.close()
