"""Hostile read of w/n18 (8e1bd2a, "N1 the POSIX way": an unlink of a name with a live pending
row drops that row when the unlinker may remove the open file; a deferred publish's close reads
its row before its upload, db_attrs_defer_has). Two mounts on one database: a through a
FaultProxy that holds A's upload of y.txt in flight, c direct.

Y1: the close's read and its upload are not atomic. Y2: a publish (a closed temp file renamed
over a stored name: ofile_publish, its pending row from db_attrs_pend_publish) has no read at
all. In both, B's unlink of y.txt on c drops A's pending row while her upload is in flight, C
creates and stores y.txt on c, and A's upload then lands over C's object."""
import os
import threading

import pytest

from conftest import proxied_mount
from test_perms import A, B, FOREIGN, as_user, open_to_others
from test_review_h5 import C, _bodies, _other, _receptions
from test_review_held_rename import _mvs
from test_review_hide_h5 import FHolder, _last_id, _log, _pending, _row


def _hold_put(px, key):
    """Hold every upload request of key (a PUT, or a multipart POST) until px.release."""
    px.rule = lambda meth, path, h: (
        ("hold", 120) if meth in ("PUT", "POST")
        and path.split("?")[0].endswith("/" + key) else None)


def _held(px, key):
    return any(a == "hold" and p.split("?")[0].endswith("/" + key) for _, p, a in px.log)


def _a_with_bs_file(stack, mount_factory, uniq, px_ctx):
    """Mount a (through px), a 0777 directory uniq, B's y.txt ('B SECRET', 0600); then mount c
    (it lists y.txt). (a, px, pa, c, B's etag)."""
    a, px = px_ctx
    open_to_others(a)
    d = a.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o777)
    pa = lambda n: a.path("inbox", f"{uniq}/{n}")  # noqa
    assert as_user(B, f"open({pa('y.txt')!r}, 'w').write('B SECRET')",
                   f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok", "ok"]
    b_etag = a.s3.head_object(Bucket=a.reception_bucket,
                              Key=f"{uniq}/y.txt")["ETag"].strip('"')
    c = _other(mount_factory)
    return a, px, pa, c, b_etag


def _race(a, px, c, ky, act, create=True):
    """act() in a thread (A's close or rename, its upload of ky held at px); meanwhile on c B
    unlinks y.txt, C creates it (O_EXCL) and stores 'C Y'; then the upload goes. (what B and C
    got, what act returned)."""
    out = []
    t = threading.Thread(target=lambda: out.append(act()))
    t.start()
    try:
        a.wait_until(lambda: _held(px, ky), timeout=60, what="A's upload held")
        pcy = c.path("inbox", ky)
        got = as_user(B, f"os.unlink({pcy!r})")
        if create:
            got += as_user(C, f"open({pcy!r}, 'x').write('C Y')")
    finally:
        px.rule = None
        px.release.set()
        t.join(120)
    assert not t.is_alive()
    return got, out[0]


def test_a_deferred_close_never_replaces_an_object_stored_after_its_unlink(
        stack, mount_factory, uniq):
    """Y1 (High, fixed): A's open x.txt renamed over B's y.txt (deferred). A's close reads her pending
    row (there) and uploads; her PUT is held. B unlinks y.txt on c (his object goes, A's row is
    dropped: he may remove her file), C creates y.txt on c and stores 'C Y' (his row, live).
    Then A's PUT lands over C's object, and her commit finds a live row (C's) so the "removed
    since" check is skipped: C's object is lost, A's bytes stored with no close error. Either C's
    create must be refused while A's upload is in flight, or A's upload must never replace C's
    object. Expected: C's create fails (EEXIST: A's file still lands there until her close is
    done), A's close ENOENT (her file was unlinked), nothing at y.txt, no pending row left; then
    C can create y.txt."""
    with proxied_mount(stack, mount_factory, FOREIGN, opts="allow_other", name="a") as ctx:
        a, px, pa, c, b_etag = _a_with_bs_file(stack, mount_factory, uniq, ctx)
        kx, ky = f"{uniq}/x.txt", f"{uniq}/y.txt"
        w = FHolder(A, pa("x.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            assert w.op("w", "A NEW") == "ok"
            start = _last_id(a)
            assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
            _hold_put(px, ky)
            got, closed = _race(a, px, c, ky, lambda: w.op("c"))
        finally:
            w.close()
        state = (got, closed, _bodies(a, f"{uniq}/"), _row(a, ky), _pending(a, ky))
        assert state == (["ok", "EEXIST"], "ENOENT", {}, None, []), state
        assert _row(a, kx) is None and _pending(a, kx) == []
        assert _log(a, ky, start) == [
            ("drop", None, B, 0o600, b_etag, B),   # B's unlink: his object's row
            ("drop", None, A, 0o644, None, B),     # ... and A's open file, by B
        ], _log(a, ky, start)
        rec = [(r["etag"] == b_etag, r["removed"]) for r in _receptions(a, ky)]
        assert rec[0] == (True, True) and all(removed for _, removed in rec), rec
        pcy = c.path("inbox", ky)
        assert as_user(C, f"open({pcy!r}, 'x').write('C Y')") == ["ok"]
        assert _bodies(a, f"{uniq}/") == {(a.reception_bucket, ky): b"C Y"}
        assert _row(a, ky)["uid"] == C


def test_a_publish_never_replaces_an_object_stored_after_its_unlink(
        stack, mount_factory, uniq):
    """Y2 (High, fixed): A's y.tmp (a temp name: local, never uploaded), 'A SECRET', 0600, closed;
    A renames it over B's y.txt: the rename publishes it (ofile_publish: pending row at y.txt
    with A's attributes, then the upload, held). B unlinks y.txt on c (his object goes and A's
    pending row is dropped: he may remove her file), C creates y.txt on c and stores 'C Y'.
    A's upload then lands over C's object (no read of the pending row at all): C's object is
    lost. Expected: C's create fails (EEXIST) while A's upload is in flight, A's rename fails
    ENOENT (y.txt was unlinked under it), her file stays y.tmp (0600, 'A SECRET', local),
    nothing at y.txt, no pending row left."""
    with proxied_mount(stack, mount_factory, FOREIGN, opts="allow_other", name="a") as ctx:
        a, px, pa, c, b_etag = _a_with_bs_file(stack, mount_factory, uniq, ctx)
        kt, ky = f"{uniq}/y.tmp", f"{uniq}/y.txt"
        assert as_user(A, f"open({pa('y.tmp')!r}, 'x').write('A SECRET')",
                       f"os.chmod({pa('y.tmp')!r}, 0o600)") == ["ok", "ok"]
        start = _last_id(a)
        _hold_put(px, ky)
        got, renamed = _race(a, px, c, ky, lambda: _mvs(A, (pa("y.tmp"), pa("y.txt"))))
        pcy = c.path("inbox", ky)
        shown = as_user(C, f"oct(os.stat({pcy!r}).st_mode & 0o777)",
                        f"str(os.stat({pcy!r}).st_uid)", f"open({pcy!r}).read()")
        state = (got, renamed, _bodies(a, f"{uniq}/"), _row(a, ky), _pending(a, ky))
        assert state == (["ok", "EEXIST"], ["ENOENT"], {}, None, []), (state, shown)
        assert as_user(A, f"open({pa('y.tmp')!r}).read()",
                       f"oct(os.stat({pa('y.tmp')!r}).st_mode & 0o777)") == ["A SECRET", "0o600"]
        assert _pending(a, kt) == []
        assert [e[0] for e in _log(a, ky, start)] == ["drop", "drop"], _log(a, ky, start)
        assert all(r["removed"] for r in _receptions(a, ky)), _receptions(a, ky)


def test_a_publish_whose_target_is_unlinked_meanwhile_keeps_its_file(
        stack, mount_factory, uniq):
    """Y3 (High, fixed): as Y2 without C's create. B's unlink of y.txt on c during A's
    publish's upload: A's rename fails ENOENT (the removal won, as before), and her file must
    stay y.tmp (a failed rename changes nothing). It was marked unlinked with y.txt's commit
    (ofile_commit_key's removed path), so y.tmp vanished: 'A SECRET' lost."""
    with proxied_mount(stack, mount_factory, FOREIGN, opts="allow_other", name="a") as ctx:
        a, px, pa, c, b_etag = _a_with_bs_file(stack, mount_factory, uniq, ctx)
        kt, ky = f"{uniq}/y.tmp", f"{uniq}/y.txt"
        assert as_user(A, f"open({pa('y.tmp')!r}, 'x').write('A SECRET')",
                       f"os.chmod({pa('y.tmp')!r}, 0o600)") == ["ok", "ok"]
        _hold_put(px, ky)
        got, renamed = _race(a, px, c, ky, lambda: _mvs(A, (pa("y.tmp"), pa("y.txt"))),
                             create=False)
        state = (got, renamed, _bodies(a, f"{uniq}/"), _row(a, ky), _pending(a, ky))
        assert state == (["ok"], ["ENOENT"], {}, None, []), state
        assert as_user(A, f"open({pa('y.tmp')!r}).read()",
                       f"oct(os.stat({pa('y.tmp')!r}).st_mode & 0o777)") == ["A SECRET", "0o600"]
        assert _pending(a, kt) == []
        assert all(r["removed"] for r in _receptions(a, ky)), _receptions(a, ky)
