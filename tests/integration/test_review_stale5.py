"""Fifth hostile read (of w/k, fcafef1: review-stale4 K1-K4 fixes). Each test fails on w/k.

K3's fix (pg_attrs_newer_at) keeps a row at a failed rename's target when it is "another
mount's live claim, or bound to the object live at key now". Both conditions also hold for the
failed rename's own copy of from's row: an identical object (same ETag: every empty file, any
equal content), or a from row that is another mount's claim (copied with its claim)."""
import os
import threading
import stat
import time

import pytest

from test_perms import A, B, FOREIGN, as_user, attrs_row, changes, open_to_others
from test_review_held_commit import GHolder
from test_review_held_rename import _mvs
from test_review_stale4 import _proxied, _rename_with_copy_held, _two, copy_500

def test_failed_rename_of_an_identical_file_over_a_hidden_target_keeps_the_targets_row(
        stack, mount_factory, uniq):
    """L1 (regression of K3's fix): B's empty y.txt (0600) is held open by a reader on b; A
    renames her empty x.txt (0644) over it on b, and the server-side copy fails (500). Nothing
    moved: y.txt must keep B's row (owner B, 0600). On w/k the copy of x's row at y.txt is
    bound to the ETag of an empty object, which is y's live object too, so restore keeps it as
    'a newer file's row', and the move-back then drops B's row: B's file is A's, 0644."""
    px, a, b, pa, pb = _proxied(stack, mount_factory, uniq)
    try:
        ky = f"{uniq}/y.txt"
        assert as_user(B, f"open({pa('y.txt')!r}, 'w').close()",
                       f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok", "ok"]
        assert as_user(A, f"open({pa('x.txt')!r}, 'w').close()",
                       f"os.chmod({pa('x.txt')!r}, 0o644)") == ["ok", "ok"]
        b.wait_until(lambda: os.path.exists(pb("y.txt")) and os.path.exists(pb("x.txt")),
                     timeout=40, what="b lists y and x")
        before = attrs_row(a, ky)
        reader = GHolder(B, pb("y.txt"), os.O_RDONLY)
        try:
            px.rule = copy_500
            moved = _mvs(A, (pb("x.txt"), pb("y.txt")))
            px.rule = None
        finally:
            reader.close()
        time.sleep(1)
        row = attrs_row(a, ky)
        st = os.stat(pa("y.txt"))
        assert (moved != ["ok"], (before["uid"], before["mode"]),
                row and (row["uid"], row["mode"]), st.st_uid, stat.S_IMODE(st.st_mode),
                os.path.exists(pa("x.txt"))) == \
            (True, (B, 0o600), (B, 0o600), B, 0o600, True), \
            (moved, [(c["op"], c["from_key"], c["uid"], c["mode"])
                     for c in changes(a, ky, every=True)])
    finally:
        px.close()


def test_failed_rename_of_a_name_another_mount_claims_leaves_no_claim_at_the_target(
        mount_factory, uniq):
    """L2 (regression of K3's fix): x.txt (A's) is listed on b; on a, A removes it and B makes
    a new x.txt (open: B's live claim). On b, A renames x.txt (stale listing) to the free
    y.txt: the copy of x's row (B's claim, copied with it) reaches y.txt, the server-side copy
    fails (x is gone). Nothing moved: y.txt must have no row. On w/k restore keeps the copy, a
    live claim of B's: a phantom 'new file of another mount' at y.txt (creates and renames
    there refused on other mounts for the lease: A's create of y.txt on b fails)."""
    a, b, pa, pb = _two(mount_factory, uniq)
    ky = f"{uniq}/y.txt"
    assert as_user(A, f"open({pa('x.txt')!r}, 'w').write('A OLD')") == ["ok"]
    b.wait_until(lambda: os.path.exists(pb("x.txt")), timeout=40, what="b lists x")
    os.stat(pb("x.txt"))
    assert as_user(A, f"os.unlink({pa('x.txt')!r})") == ["ok"]
    wb = GHolder(B, pa("x.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        assert as_user(B, f"os.chmod({pa('x.txt')!r}, 0o600)") == ["ok"]
        moved = _mvs(A, (pb("x.txt"), pb("y.txt")))
        row = attrs_row(a, ky)
        made = as_user(A, f"open({pb('y.txt')!r}, 'x').close()")
    finally:
        wb.close()
    assert (moved != ["ok"], row and (row["uid"], row["etag"], row["claimed_by"]), made) == \
        (True, None, ["ok"]), \
        (moved, [(c["op"], c["from_key"], c["uid"], c["mode"]) for c in changes(a, ky, every=True)])


C = 2003


def test_target_hidden_for_a_rename_never_shows_the_defaults_on_another_mount(
        stack, mount_factory, uniq):
    """L3 (older: hide_for_rename moves the target's row before the outcome; not closed by
    K1-K4): B's y.txt ('B SECRET', 0600) is held open by B (reading) on b. A renames her x.txt
    over it on b; the rename's copy is slow (held at the proxy). Meanwhile, on a third mount c,
    y.txt (still B's object, in the store) must still be B's 0600 file, closed to C. On w/k its
    row sits at b's hidden name for the whole rename: c shows the defaults (0644) and C reads
    B's secret."""
    px, a, b, pa, pb = _proxied(stack, mount_factory, uniq)
    try:
        assert as_user(B, f"open({pa('y.txt')!r}, 'w').write('B SECRET')",
                       f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok", "ok"]
        assert as_user(A, f"open({pa('x.txt')!r}, 'w').write('A NEW')") == ["ok"]
        b.wait_until(lambda: os.path.exists(pb("y.txt")) and os.path.exists(pb("x.txt")),
                     timeout=40, what="b lists y and x")
        reader = GHolder(B, pb("y.txt"), os.O_RDONLY)
        try:
            t, moved = _rename_with_copy_held(px, b, pb("x.txt"), pb("y.txt"))
            c = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="c")
            open_to_others(c)
            pc = c.path("inbox", f"{uniq}/y.txt")
            st = os.stat(pc)
            seen = (st.st_uid, stat.S_IMODE(st.st_mode))
            read = as_user(C, f"open({pc!r}).read()")
            px.rule = copy_500
            px.release.set()
            t.join(120)
        finally:
            reader.close()
        assert (seen, read) == ((B, 0o600), ["EACCES"]), moved
    finally:
        px.close()


def test_open_files_rename_never_strands_its_row_when_the_target_is_claimed_meanwhile(
        stack, mount_factory, uniq):
    """L4 (K2 on the open-file path, not closed): A's new x.txt (0600, 'A NEW') is open for
    writing on b; y.txt (A's, stored) is listed there. A renames x.txt over y.txt on b; the
    store's answer about y.txt (it exists) is late, and meanwhile, on a, A removes y.txt and B
    makes a new y.txt (open: B's live claim, 0600). The rename must not go on past B's claim
    (EBUSY, as for a closed file, K2), or if it does, A's row must go with her file. On w/k it
    succeeds locally, its attributes' move fails (EBUSY, only logged): A's row stays at the
    old name x.txt, and the name y.txt holds two open new files of two users."""
    px, a, b, pa, pb = _proxied(stack, mount_factory, uniq)
    try:
        kx, ky = f"{uniq}/x.txt", f"{uniq}/y.txt"
        assert as_user(A, f"open({pa('y.txt')!r}, 'w').write('A OLD')") == ["ok"]
        b.wait_until(lambda: os.path.exists(pb("y.txt")), timeout=40, what="b lists y")
        wa = GHolder(A, pb("x.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        wb = None
        moved = []
        try:
            assert as_user(A, f"os.chmod({pb('x.txt')!r}, 0o600)") == ["ok"]
            assert wa.op("w", "A NEW") == "ok"
            late = {"on": True}

            def rule(method, path, headers):
                if method == "HEAD" and path.split("?")[0].endswith("/y.txt") and late["on"]:
                    late["on"] = False
                    return ("late", 60)
                return None
            px.rule = rule
            t = threading.Thread(target=lambda: moved.extend(
                _mvs(A, (pb("x.txt"), pb("y.txt")))), daemon=True)
            t.start()
            b.wait_until(lambda: any(m_ == "HEAD" and act == "late" for m_, _, act in px.log),
                         timeout=30, what="the rename's HEAD of y held")
            assert as_user(A, f"os.unlink({pa('y.txt')!r})") == ["ok"]
            wb = GHolder(B, pa("y.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            assert as_user(B, f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok"]
            px.release.set()
            t.join(60)
            rx, ry = attrs_row(a, kx), attrs_row(a, ky)
            mid = (moved, rx and (rx["uid"], rx["claimed_by"] is not None),
                   ry and (ry["uid"], ry["claimed_by"] is not None))
            assert wb.op("w", "B SECRET") == "ok"
            closed = (wa.op("c"), wb.op("c"))
        finally:
            px.rule = None
            wa.close()
            if wb:
                wb.close()
        time.sleep(1)
        row = attrs_row(a, ky)
        body = a.s3.get_object(Bucket=a.reception_bucket, Key=ky)["Body"].read()
        rx = attrs_row(a, kx)
        try:
            bx = a.s3.get_object(Bucket=a.reception_bucket, Key=kx)["Body"].read()
        except a.s3.exceptions.NoSuchKey:
            bx = None
        final = (closed, body, row and (row["uid"], row["mode"]), bx,
                 rx and (rx["uid"], rx["mode"]))
        assert mid[0] == ["EBUSY"] or (mid[1] is None and mid[2] == (A, True)), (mid, final)
        # Refused (EBUSY), nothing moved: each file kept its name and its row, and each close
        # stored its own.
        assert (mid, final) == ((["EBUSY"], (A, True), (B, True)),
                                (("ok", "ok"), b"B SECRET", (B, 0o600), b"A NEW", (A, 0o600)))
    finally:
        px.close()


def test_crash_during_a_rename_over_an_open_target_keeps_the_targets_row(
        stack, mount_factory, uniq):
    """L5 (older, L3's window made permanent): as L3, b's daemon is killed while the rename's
    copy is in flight, then mounted again. y.txt (B's object, never replaced) must keep B's row
    (0600). On w/k B's row stays at b's hidden name (nothing puts it back, at a restart
    either), and y.txt has the copy of A's x.txt row, written before the copy (no pending row:
    the hide left y.txt without a row of its own): B's secret is A's, 0644, for good, and C
    reads it."""
    # b's heartbeat lapses 2 s after its crash (review-36: a crashed process's hidden row
    # goes at a sweep once its heartbeat is stale, not at the next start)
    px, a, b, pa, pb = _proxied(stack, mount_factory, uniq, live_grace="2")
    try:
        ky = f"{uniq}/y.txt"
        assert as_user(B, f"open({pa('y.txt')!r}, 'w').write('B SECRET')",
                       f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok", "ok"]
        assert as_user(A, f"open({pa('x.txt')!r}, 'w').write('A NEW')") == ["ok"]
        b.wait_until(lambda: os.path.exists(pb("y.txt")) and os.path.exists(pb("x.txt")),
                     timeout=40, what="b lists y and x")
        reader = GHolder(B, pb("y.txt"), os.O_RDONLY)
        try:
            px.rule = lambda method, path, headers: \
                ("hang",) if method == "PUT" and "x-amz-copy-source" in headers else None
            t = threading.Thread(target=lambda: _mvs(A, (pb("x.txt"), pb("y.txt"))),
                                 daemon=True)
            t.start()
            b.wait_until(lambda: any(m_ == "PUT" and act == "hang" for m_, _, act in px.log),
                         timeout=30, what="the rename's copy held")
            b.crash()
        finally:
            try:
                reader.close()
            except Exception:  # noqa: BLE001
                pass
        px.rule = None
        px.release.set()
        b.mount()
        time.sleep(2)
        c = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="c")
        open_to_others(c)
        pc = c.path("inbox", f"{uniq}/y.txt")
        hidden_q = ("select count(*) from file_attrs where bucket = %s and object_key like %s",
                    (a.reception_bucket, f"{uniq}/.fuse_hidden%"))
        a.wait_until(lambda: a.sql_value(*hidden_q) == 0, timeout=60, interval=0.5,
                     what="the crashed b's hidden row swept")
        row = attrs_row(a, ky)
        hidden = a.sql_value(*hidden_q)
        body = a.s3.get_object(Bucket=a.reception_bucket, Key=ky)["Body"].read()
        read = as_user(C, f"open({pc!r}).read()")
        assert (body, row and (row["uid"], row["mode"]), hidden, read) == \
            (b"B SECRET", (B, 0o600), 0, ["EACCES"]), (row, hidden, read)
    finally:
        px.close()


def test_directory_rename_over_a_dir_with_another_mounts_new_file_loses_nothing(
        mount_factory, uniq):
    """L6 (tree drops with claims under them, not closed: spare is 0 for rmdir): on a, B is
    writing a new d2/f (0600, 'B SECRET', open: B's live claim); d2 looks empty on b. On b, A
    renames her directory d1 (with d1/f, 'A FILE') over d2. The rename must be refused
    (ENOTEMPTY or EBUSY: d2 holds another mount's new file), or else nothing of either file
    is lost and each keeps its owner. On w/k the rmdir of d2 drops B's claim (logged 'drop'),
    A's f lands at d2/f, and one close silently replaces the other's file."""
    a, b, pa, pb = _two(mount_factory, uniq)
    kf = f"{uniq}/d2/f"
    assert as_user(A, f"os.mkdir({pa('d1')!r})", f"os.mkdir({pa('d2')!r})",
                   f"os.chmod({pa('d2')!r}, 0o777)",
                   f"open({pa('d1/f')!r}, 'w').write('A FILE')") == ["ok"] * 4
    b.wait_until(lambda: os.path.exists(pb("d1/f")) and os.path.isdir(pb("d2")), timeout=40,
                 what="b lists d1/f and d2")
    wb = GHolder(B, pa("d2/f"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        assert as_user(B, f"os.chmod({pa('d2/f')!r}, 0o600)") == ["ok"]
        assert wb.op("w", "B SECRET") == "ok"
        moved = _mvs(A, (pb("d1"), pb("d2")))
        closed = wb.op("c")
    finally:
        wb.close()
    time.sleep(1)
    try:
        body = a.s3.get_object(Bucket=a.reception_bucket, Key=kf)["Body"].read()
    except Exception as e:  # noqa: BLE001
        body = type(e).__name__
    row = attrs_row(a, kf)
    got = (moved, closed, body, row and (row["uid"], row["mode"]))
    assert got[0] in (["ENOTEMPTY"], ["EBUSY"]) and got[1:] == ("ok", b"B SECRET", (B, 0o600)), \
        (got, [(c["op"], c["from_key"], c["uid"]) for c in changes(a, kf, every=True)])


def test_stale_unlink_never_ends_another_mounts_claim(mount_factory, uniq):
    """L7 (spare=0 for an unlink): A's y.txt is listed on b; on a, A removes it and B makes a
    new y.txt (open, 'B SECRET', 0600: B's live claim). On b, A's unlink of y.txt (b's listing
    is stale: the object is gone) removes nothing, yet on w/k it drops B's claim; then A's
    exclusive create of y.txt on b succeeds beside B's, and the later close silently replaces
    the other's file. Expected: B's claim stays, A's create is refused (EEXIST or EBUSY)."""
    a, b, pa, pb = _two_plain(mount_factory, uniq)
    ky = f"{uniq}/y.txt"
    assert as_user(A, f"open({pa('y.txt')!r}, 'w').write('A OLD')") == ["ok"]
    b.wait_until(lambda: os.path.exists(pb("y.txt")), timeout=40, what="b lists y")
    assert as_user(A, f"os.unlink({pa('y.txt')!r})") == ["ok"]
    wb = GHolder(B, pa("y.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        assert as_user(B, f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok"]
        assert wb.op("w", "B SECRET") == "ok"
        gone = as_user(A, f"os.unlink({pb('y.txt')!r})")
        row = attrs_row(a, ky)
        made = as_user(A, f"open({pb('y.txt')!r}, 'x').write('A NEW')")
        closed = wb.op("c")
    finally:
        wb.close()
    time.sleep(1)
    body = a.s3.get_object(Bucket=a.reception_bucket, Key=ky)["Body"].read()
    assert (row and row["uid"], made[0] in ("EEXIST", "EBUSY"), closed, body) == \
        (B, True, "ok", b"B SECRET"), \
        (gone, made, [(c["op"], c["uid"]) for c in changes(a, ky, every=True)])


def _two_plain(mount_factory, uniq):
    a = mount_factory(config=FOREIGN, opts="allow_other", name="a")
    b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
    for m in (a, b):
        open_to_others(m)
    os.mkdir(a.path("inbox", uniq))
    os.chmod(a.path("inbox", uniq), 0o777)
    return a, b, (lambda n: a.path("inbox", f"{uniq}/{n}")), \
        (lambda n: b.path("inbox", f"{uniq}/{n}"))
