"""review-T T4 and the hostile read of w/t4c (review-t4c F1, F2): an open of a name that is
open on this mount attaches to the open file (its spool holds the object it was opened on,
and what its writers wrote). Another mount may since have renamed another file over the name,
maybe with the same bytes (so the same ETag: an empty file), and the name's row then describes
that object. The opener must be allowed both by the name's row as it is now and by the owner
and mode of the object the open file holds. Two allow_other mounts on one database and bucket;
users A and B as in test_perms.py, C a third."""
import os
import time

from test_perms import A, B, as_user, attrs_row, rd, two_mounts
from test_rename_attrs import mode_owner
from test_review_g_open import Holder

C = 2003
OLD, PUB = "OLD SECRET".ljust(64), "public".ljust(64)
WORLD = "A OLD, WORLD-WRITABLE".ljust(64)


def _dir(a, uniq):
    os.mkdir(a.path("inbox", uniq))
    os.chmod(a.path("inbox", uniq), 0o1777)


def test_open_of_a_name_open_here_checks_the_open_files_object(mount_factory, uniq):
    """A's 0600 y.txt ("OLD SECRET") is held open O_RDWR by A on mount b; on mount a A
    renames a 0644 "public" over it. B opens y.txt on b: he reads the public replacement or
    gets EACCES, never the old secret the open file holds; A still may."""
    a, b = two_mounts(mount_factory)
    _dir(a, uniq)
    py_a, py_b = a.path("inbox", f"{uniq}/y.txt"), b.path("inbox", f"{uniq}/y.txt")
    px_a = a.path("inbox", f"{uniq}/x.tmp")
    assert as_user(A, f"open({py_a!r}, 'w').write({OLD!r})", umask=0o077) == ["ok"]
    b.wait_until(lambda: mode_owner(py_b) == (0o600, A, A), timeout=30,
                 what="b shows A's 0600 y.txt")
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
    a, b = two_mounts(mount_factory)
    _dir(a, uniq)
    py_a, py_b = a.path("inbox", f"{uniq}/y.txt"), b.path("inbox", f"{uniq}/y.txt")
    pz_a = a.path("inbox", f"{uniq}/z.txt")
    assert as_user(A, f"open({py_a!r}, 'w').close()", umask=0o077) == ["ok"]
    b.wait_until(lambda: mode_owner(py_b) == (0o600, A, A), timeout=30,
                 what="b shows A's empty 0600 y.txt")
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
    a, b = two_mounts(mount_factory)
    _dir(a, uniq)
    py_a, py_b = a.path("inbox", f"{uniq}/y.txt"), b.path("inbox", f"{uniq}/y.txt")
    pz_a = a.path("inbox", f"{uniq}/z.txt")
    assert as_user(A, f"open({py_a!r}, 'w').write({WORLD!r})", f"os.chmod({py_a!r}, 0o666)") \
        == ["ok", "ok"]
    b.wait_until(lambda: mode_owner(py_b) == (0o666, A, A), timeout=30,
                 what="b shows A's 0666 y.txt")
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
    a, b = two_mounts(mount_factory)
    _dir(a, uniq)
    py_a, py_b = a.path("inbox", f"{uniq}/y.txt"), b.path("inbox", f"{uniq}/y.txt")
    assert as_user(A, f"open({py_a!r}, 'w').write('first')", umask=0o022) == ["ok"]
    b.wait_until(lambda: mode_owner(py_b) == (0o644, A, A), timeout=30,
                 what="b shows A's 0644 y.txt")
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
    a, b = two_mounts(mount_factory)
    _dir(a, uniq)
    py_a, py_b = a.path("inbox", f"{uniq}/y.txt"), b.path("inbox", f"{uniq}/y.txt")
    pz_a = a.path("inbox", f"{uniq}/z.txt")
    assert as_user(A, f"open({py_a!r}, 'w').write('v1')", umask=0o077) == ["ok"]
    b.wait_until(lambda: mode_owner(py_b) == (0o600, A, A), timeout=30,
                 what="b shows A's y.txt")
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
