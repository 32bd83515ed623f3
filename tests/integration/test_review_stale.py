"""Hostile read of w/stale (c05bcb2: the HEAD of a listed rename target; the claim a
temp-named open file takes when renamed to a free final name; the reviewer's tests,
doc/reviews/review-held.md, seventh read). F1/F2: that claim is from's row moved (logged as a
move, times kept); F3: the HEAD failing does not fail an editor's save with its draft open;
F4 (older) is open: strict xfail."""
import os
import stat
import time

import pytest

from test_perms import A, B, FOREIGN, attrs_row, changes, as_user
from test_review_held_commit import GHolder
from test_review_held_rename import _mvs, _store_body


def _dir(m, uniq):
    d = m.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o777)
    return d


def save_open_draft_via_temp(m, uniq, to):
    """A 0777 directory; A's stored x.txt (0640) held open O_RDWR, 'A DRAFT' written, renamed
    x.txt -> x.tmp -> `to` (a name in that directory) and closed. Returns each step's result
    and x.txt's path."""
    _dir(m, uniq)
    px, pt, py = (m.path("inbox", f"{uniq}/{n}") for n in ("x.txt", "x.tmp", to))
    assert as_user(A, f"open({px!r}, 'w').write('x old')", f"os.chmod({px!r}, 0o640)") == \
        ["ok", "ok"]
    w = GHolder(A, px, os.O_RDWR)
    try:
        got = [w.op("w", "A DRAFT")]
        got += _mvs(A, (px, pt), (pt, py))
        got.append(w.op("c"))
    finally:
        w.close()
    time.sleep(1)
    return got, px


MT = 1_500_000_000_123_456_789


@pytest.mark.parametrize("when", ["before_rename", "after_rename"])
def test_times_set_on_the_open_file_survive_its_rename_to_a_free_name(mount_factory, uniq,
                                                                       when):
    """A's stored x.txt, held open and written (pending), x -> x.tmp; she sets its times
    (utimens: touch -d, cp -p, rsync) under x.tmp (or after), then x.tmp -> y.txt (free),
    closes. y.txt keeps the times she set, like its mode and owner (the row moved with
    the rename before c05bcb2; the claim rename_claim takes resets it)."""
    m = mount_factory(config=FOREIGN, opts="allow_other")
    _dir(m, uniq)
    px, pt, py = (m.path("inbox", f"{uniq}/{n}") for n in ("x.txt", "x.tmp", "y.txt"))
    assert as_user(A, f"open({px!r}, 'w').write('x old')", f"os.chmod({px!r}, 0o640)") == \
        ["ok", "ok"]
    w = GHolder(A, px, os.O_RDWR)
    try:
        got = [w.op("w", "A DRAFT")]
        got += _mvs(A, (px, pt))
        if when == "before_rename":
            got += as_user(A, f"os.utime({pt!r}, ns=({MT}, {MT}))")
        got += _mvs(A, (pt, py))
        if when == "after_rename":
            got += as_user(A, f"os.utime({py!r}, ns=({MT}, {MT}))")
        got.append(w.op("c"))
    finally:
        w.close()
    time.sleep(1)
    st = os.stat(py)
    r = attrs_row(m, f"{uniq}/y.txt")
    assert (got, _store_body(m, f"{uniq}/y.txt"), stat.S_IMODE(st.st_mode), st.st_uid,
            st.st_mtime_ns, r and r["mtime_ns"]) == \
        (["ok"] * len(got), b"A DRAFT", 0o640, A, MT, MT)



def test_rename_of_an_open_file_to_a_free_name_is_logged_as_a_move(mount_factory, uniq):
    """The same rename path (stored x.txt open and written, x -> x.tmp -> y.txt free, close):
    file_attr_changes must log what happened, the attributes moving x.tmp -> y.txt ('move',
    from_key x.tmp), as before c05bcb2; not a 'drop' of x.tmp's attributes and a 'create'
    of y.txt (nobody created y.txt; x.tmp's attributes were not dropped)."""
    m = mount_factory(config=FOREIGN, opts="allow_other")
    got, _ = save_open_draft_via_temp(m, uniq, "y.txt")
    log = {n: [(c["op"], c["from_key"]) for c in changes(m, f"{uniq}/{n}", every=True)]
           for n in ("x.tmp", "y.txt")}
    assert (got, log) == (["ok"] * len(got), {
        "x.tmp": [("move", f"{uniq}/x.txt")],
        "y.txt": [("move", f"{uniq}/x.tmp")]})



@pytest.mark.parametrize("src", ["x.tmp", "x.txt"])
def test_save_with_descriptor_open_over_a_listed_file_while_its_head_fails(stack,
                                                                          mount_factory, uniq,
                                                                          src):
    """An editor holds its new draft (x.tmp or x.txt) open and written, renames it over
    its listed y.txt, and closes. The store does not answer a HEAD of y.txt at the moment of
    the rename (a transient outage: 503s past the retries), and answers again before the
    close. Before c05bcb2 the rename needed no store request (the base HEAD failing made it
    unknown). Decided (review-stale2 R3: trusting the listing then let a stale view replace
    another user's file): the rename fails, loudly, and changes nothing; the draft stays open
    under its name, and the same rename once the store answers saves it."""
    from conftest import FOREIGN_IDS, proxied_mount
    from faultproxy import SLOWDOWN
    with proxied_mount(stack, mount_factory, FOREIGN_IDS, opts="allow_other") as (m, px):
        _dir(m, uniq)
        ps, py = (m.path("inbox", f"{uniq}/{n}") for n in (src, "y.txt"))
        key = f"{uniq}/y.txt"
        assert as_user(A, f"open({py!r}, 'w').write('Y OLD')") == ["ok"]
        w = GHolder(A, ps, os.O_RDWR | os.O_CREAT)
        try:
            got = [w.op("w", "A DRAFT")]
            px.rule = lambda meth, path, h: ("status", 503, SLOWDOWN) \
                if meth == "HEAD" and path.split("?")[0].endswith("/" + key) else None
            got += _mvs(A, (ps, py))
            px.rule = None
            got.append(_store_body(m, key))
            got += _mvs(A, (ps, py))
            got.append(w.op("c"))
        finally:
            px.rule = None
            w.close()
        time.sleep(1)
        assert got[0] == "ok" and got[1] not in ("ok", "ENOENT", "EPERM", "EACCES"), got
        assert (got[2:], _store_body(m, key)) == ([b"Y OLD", "ok", "ok"], b"A DRAFT"), got



@pytest.mark.parametrize("held", ["r", "rw"])
@pytest.mark.parametrize("src", ["x.tmp", "x.txt"])
def test_save_over_a_target_open_here(mount_factory, uniq, held, src):
    """LibreOffice/gedit-like: y.txt is open on this mount (a reader, or a writer that wrote);
    A's draft (src, new, open and written) is renamed over y.txt (libfuse hides y first:
    the HEAD of c05bcb2 runs on a hidden target), then closed. y.txt is the draft, its
    reception rows are y's first upload (removed) and the draft's (live), and the reader
    still reads what it opened."""
    from checks import rows
    m = mount_factory(config=FOREIGN, opts="allow_other")
    _dir(m, uniq)
    ps, py = (m.path("inbox", f"{uniq}/{n}") for n in (src, "y.txt"))
    key = f"{uniq}/y.txt"
    assert as_user(A, f"open({py!r}, 'w').write('Y OLD')") == ["ok"]
    t = GHolder(A, py, os.O_RDWR if held == "rw" else os.O_RDONLY)
    w = GHolder(A, ps, os.O_RDWR | os.O_CREAT)
    try:
        got = [w.op("w", "A DRAFT")]
        if held == "rw":
            got.append(t.op("w", "Y NEW"))
        got += _mvs(A, (ps, py))
        got.append(w.op("c"))
        got.append(t.op("c"))
    finally:
        w.close()
        t.close()
    time.sleep(1)
    live = [r["size_bytes"] for r in rows(m, key) if r["removed_at"] is None]
    st = os.stat(py)
    assert (got, _store_body(m, key), live, stat.S_IMODE(st.st_mode), st.st_uid) == \
        (["ok"] * len(got), b"A DRAFT", [7], 0o755, A)



def test_claim_taken_at_rename_goes_when_the_close_fails(stack, mount_factory, uniq):
    """N3's claim (stored x.txt open and written, x -> x.tmp -> y.txt free): the store refuses
    the close's upload (503s). The close fails; no row is left claiming y.txt (B's create of
    y.txt afterwards works and is his), and no reception row says y.txt was stored."""
    from checks import rows
    from conftest import FOREIGN_IDS, proxied_mount
    from faultproxy import SLOWDOWN
    with proxied_mount(stack, mount_factory, FOREIGN_IDS, opts="allow_other") as (m, px):
        _dir(m, uniq)
        px_, pt, py = (m.path("inbox", f"{uniq}/{n}") for n in ("x.txt", "x.tmp", "y.txt"))
        key = f"{uniq}/y.txt"
        assert as_user(A, f"open({px_!r}, 'w').write('x old')") == ["ok"]
        w = GHolder(A, px_, os.O_RDWR)
        try:
            got = [w.op("w", "A DRAFT")]
            got += _mvs(A, (px_, pt), (pt, py))
            px.rule = lambda meth, path, h: ("status", 503, SLOWDOWN) \
                if meth in ("PUT", "POST") and key in path else None
            got.append(w.op("c"))
            px.rule = None
        finally:
            px.rule = None
            w.close()
        time.sleep(1)
        row = attrs_row(m, key)
        got += as_user(B, f"open({py!r}, 'w').write('B FILE')")
        st = os.stat(py)
        assert (got[:3], got[3] != "ok", got[4], row, [r["size_bytes"] for r in rows(m, key)
                                                     if r["removed_at"] is None],
                st.st_uid) == (["ok"] * 3, True, "ok", None, [6], B)



@pytest.mark.xfail(strict=True, reason="review-stale F4 (Medium, older than w/stale): a closed "
                   "file's rename copies over its target unconditionally; another user's file put "
                   "there between the check and the copy is replaced. Open (needs a conditional "
                   "copy, which S3 stores here do not offer).")
@pytest.mark.both_backends  # depends on what the store does (copies, parts, ETags)
def test_target_replaced_by_another_user_between_the_check_and_the_copy(stack, mount_factory,
                                                                         uniq):
    """Root's 1777 directory. A renames her closed x.txt over her y.txt on mount a: the
    rename checks y (c05bcb2's HEAD: hers, allowed), then copies. Before the copy reaches
    y (held by a proxy), A removes y on mount b and B creates his own y.txt there. The copy
    then overwrites B's file (no precondition on the target the check saw): A replaced
    another user's file in a sticky directory."""
    import subprocess
    import sys
    from conftest import FOREIGN_IDS, proxied_mount
    from test_perms import open_to_others
    from test_review_held_rename import _sticky_dir
    with proxied_mount(stack, mount_factory, FOREIGN_IDS, opts="allow_other",
                       name="a") as (a, px):
        b = mount_factory(config=FOREIGN_IDS, reset=False, opts="allow_other", name="b")
        for m in (a, b):
            open_to_others(m)
        _sticky_dir(a, uniq, 0)
        key = f"{uniq}/y.txt"
        pxa, pya, pyb = a.path("inbox", f"{uniq}/x.txt"), a.path("inbox", key), \
            b.path("inbox", key)
        assert as_user(A, f"open({pya!r}, 'w').write('A OLD')",
                       f"open({pxa!r}, 'w').write('A NEW')") == ["ok", "ok"]
        os.stat(pya)
        px.rule = lambda meth, path, h: ("hold", 20) if meth == "PUT" and \
            path.split("?")[0].endswith("/" + key) and \
            "x-amz-copy-source" in {k.lower() for k in h.keys()} else None
        mv = subprocess.Popen(["setpriv", f"--reuid={A}", f"--regid={A}", "--clear-groups",
                               sys.executable, "-c",
                               f"import os\ntry:\n os.rename({pxa!r}, {pya!r}); print('ok')\n"
                               "except OSError as e:\n import errno; "
                               "print(errno.errorcode[e.errno])"],
                              stdout=subprocess.PIPE, text=True)
        a.wait_until(lambda: any(x[2] == "hold" for x in px.log), timeout=20, what="copy held")
        got = as_user(A, f"os.unlink({pyb!r})")
        got += as_user(B, f"open({pyb!r}, 'w').write('B FILE')")
        px.release.set()
        got.append(mv.communicate(timeout=60)[0].strip())
        px.rule = None
        time.sleep(1)
        body = _store_body(a, key)
        assert got[:2] == ["ok", "ok"]
        assert got[2] != "ok" or body != b"A NEW", (got, body)
        assert body == b"B FILE", (got, body)

