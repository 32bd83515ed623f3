"""Hostile read of the fix of review-h5 N1, N5, N6, N7 (22645f1): two mounts on one database.

X1: a stored-file rename on another mount over the name of an open file whose publish is
deferred there (db_attrs_copy_rename) must fail EBUSY, as over a live claim (review-k L4).
X2: a stored file renamed through a temp name over a stored object defers its publish with
its own attributes, never with those of whatever row is at the temp name by then (another
mount's claim of that name).

Helpers: those of test_review_hide_h5.py and test_review_h5.py."""
import os

from test_perms import A, B, as_user
from test_review_h5 import C, _body, _etag, _other
from test_review_held_rename import _mvs
from test_review_hide_h5 import FHolder, _last_id, _log, _pending, _row, _setup


def test_a_stored_rename_over_the_name_of_a_deferred_publish_fails_ebusy(mount_factory, uniq):
    """A renames her open new x.txt over B's y.txt (her publish deferred: y's pending row,
    her writer still open). On mount c, B renames his stored z.txt over y.txt: like over a
    live claim (review-k L4) that must fail EBUSY, z.txt and y.txt untouched. Then A's close
    stores 'A NEW' at y.txt with her row (0644), logged once at y ('move' from x.txt); z.txt
    keeps B's object and row, nothing logged at z; no pending row stays."""
    a, pa, w, b_etag = _setup(mount_factory, uniq)
    kx, ky, kz = f"{uniq}/x.txt", f"{uniq}/y.txt", f"{uniq}/z.txt"
    try:
        assert as_user(B, f"open({pa('z.txt')!r}, 'w').write('B Z')") == ["ok"]
        z_etag = _etag(a, kz)
        start = _last_id(a)
        assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
        c = _other(mount_factory)
        moved = _mvs(B, (c.path("inbox", kz), c.path("inbox", ky)))
        closed = w.op("c")
    finally:
        w.close()
    got = (moved, closed, _body(a, ky), _body(a, kz))
    assert got == (["EBUSY"], "ok", b"A NEW", b"B Z"), (got, _row(a, ky), _pending(a, ky))
    etag = _etag(a, ky)
    assert _row(a, ky) == {"uid": A, "mode": 0o644, "etag": etag, "claimed_by": None}
    assert _row(a, kz) == {"uid": B, "mode": 0o644, "etag": z_etag, "claimed_by": None}
    assert (_pending(a, ky), _pending(a, kz), _row(a, kx)) == ([], [], None)
    assert [(op, f, uid, mode, e) for op, f, uid, mode, e, _ in _log(a, ky, start)] == \
        [("move", kx, A, 0o644, etag)]
    assert _log(a, kz, start) == []
    assert _log(a, kx, start) == []


def test_a_stored_file_through_a_temp_name_keeps_its_own_attributes_over_another_claim(
        mount_factory, uniq):
    """A's stored a.txt (0600, 'A OLD'), open for writing ('A NEW' written), goes to a temp
    name a.txt.tmp (its object leaves the store, its row follows, unclaimed). On mount c, C
    creates a.txt.tmp and holds it open (his claim takes that row: uid C, 0644). A renames
    a.txt.tmp over B's y.txt, still open, and closes: y.txt must be hers (A, 0600) bound to
    her object, C may not read it; C's claim at a.txt.tmp is left alone (his, 0644; a temp
    name's file is never stored, so it stays his after his close too). Logged after C's
    create: at y one 'move' from a.txt.tmp (A, 0600), nothing at a.txt.tmp."""
    a, pa, w0, b_etag = _setup(mount_factory, uniq)
    w0.close()
    ky, kt = f"{uniq}/y.txt", f"{uniq}/a.txt.tmp"
    assert as_user(A, f"open({pa('a.txt')!r}, 'w').write('A OLD')",
                   f"os.chmod({pa('a.txt')!r}, 0o600)") == ["ok", "ok"]
    w = FHolder(A, pa("a.txt"), os.O_WRONLY)
    wc = None
    try:
        assert w.op("w", "A NEW") == "ok"
        assert _mvs(A, (pa("a.txt"), pa("a.txt.tmp"))) == ["ok"]
        c = _other(mount_factory)
        wc = FHolder(C, c.path("inbox", kt), os.O_WRONLY | os.O_CREAT)
        assert wc.op("w", "C TMP") == "ok"
        start = _last_id(a)
        c_row = _row(a, kt)
        moved = _mvs(A, (pa("a.txt.tmp"), pa("y.txt")))
        mid = (_row(a, kt), _row(a, ky))
        closed = w.op("c")
        after = _row(a, kt)
        c_closed = wc.op("c")
    finally:
        w.close()
        if wc:
            wc.close()
    etag = _etag(a, ky)
    final = (_row(a, ky), as_user(C, f"open({pa('y.txt')!r}).read()"), _body(a, ky))
    assert (c_row["uid"], c_row["mode"], c_row["etag"]) == (C, 0o644, None)
    assert (moved, closed, c_closed) == (["ok"], "ok", "ok")
    assert final == ({"uid": A, "mode": 0o600, "etag": etag, "claimed_by": None},
                     ["EACCES"], b"A NEW"), (final, mid)
    assert mid[0] == c_row and after == c_row, (mid, after, c_row)
    assert (mid[1]["uid"], mid[1]["mode"], mid[1]["etag"]) == (B, 0o600, b_etag)
    # a temp name's file is local (never stored): C's claim stays his until it lapses
    assert _body(a, kt) == "'NoSuchKey'"
    assert (_row(a, kt)["uid"], _row(a, kt)["mode"], _row(a, kt)["etag"]) == (C, 0o644, None)
    assert (_pending(a, ky), _pending(a, kt)) == ([], [])
    assert [(op, f, uid, mode, e) for op, f, uid, mode, e, _ in _log(a, ky, start)] == \
        [("move", kt, A, 0o600, etag)]
    assert [(op, f, uid, mode) for op, f, uid, mode, e, _ in _log(a, kt, start)] == []


def test_a_stored_file_through_a_temp_name_drops_only_its_own_row_there(mount_factory, uniq):
    """X2's fix, the file's own row: A's stored a.txt (0600), open for writing, goes to
    a.txt.tmp (its row follows, bound to its old object) and over B's y.txt. Its row at
    a.txt.tmp is its own (bound to the object it was loaded from): it goes at the rename,
    logged once ('drop', A, 0600) after its 'move' there from a.txt, and the close logs one
    'move' at y (A, 0600); every row logged for a.txt.tmp, y.txt and a.txt since the first
    rename is counted."""
    a, pa, w0, b_etag = _setup(mount_factory, uniq)
    w0.close()
    ka, ky, kt = f"{uniq}/a.txt", f"{uniq}/y.txt", f"{uniq}/a.txt.tmp"
    assert as_user(A, f"open({pa('a.txt')!r}, 'w').write('A OLD')",
                   f"os.chmod({pa('a.txt')!r}, 0o600)") == ["ok", "ok"]
    old = _etag(a, ka)
    w = FHolder(A, pa("a.txt"), os.O_WRONLY)
    try:
        assert w.op("w", "A NEW") == "ok"
        start = _last_id(a)
        assert _mvs(A, (pa("a.txt"), pa("a.txt.tmp"))) == ["ok"]
        at_tmp = _row(a, kt)
        mid = _last_id(a)
        assert _mvs(A, (pa("a.txt.tmp"), pa("y.txt"))) == ["ok"]
        gone = _row(a, kt)
        closed = w.op("c")
    finally:
        w.close()
    etag = _etag(a, ky)
    assert (at_tmp, gone, closed) == (
        {"uid": A, "mode": 0o600, "etag": old, "claimed_by": None}, None, "ok")
    assert _row(a, ky) == {"uid": A, "mode": 0o600, "etag": etag, "claimed_by": None}
    assert (_body(a, ky), as_user(C, f"open({pa('y.txt')!r}).read()")) == \
        (b"A NEW", ["EACCES"])
    assert [(op, f, uid, mode, e) for op, f, uid, mode, e, _ in _log(a, kt, start)] == \
        [("move", ka, A, 0o600, old), ("drop", None, A, 0o600, old)]
    assert [c[0] for c in _log(a, kt, mid)] == ["drop"]
    assert _log(a, ka, start) == []
    assert [(op, f, uid, mode, e) for op, f, uid, mode, e, _ in _log(a, ky, start)] == \
        [("move", kt, A, 0o600, etag)]
    assert (_pending(a, ky), _row(a, kt)) == ([], None)
