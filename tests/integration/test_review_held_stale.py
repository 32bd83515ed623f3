"""Sixth hostile read of w/held (b7a2b6f; the reviewer's tests): an open file renamed over
another file or through a temp name, its base and its commit. P1: a rename over a stale view
of a file removed on another mount (fixed: the rename HEADs its target; a temp-named open file
claims a free name). Controls: editor saves with the descriptor open, second renames."""
import os
import time

import pytest

from test_perms import A, B, FOREIGN, LONG_TTL, as_user, two_mounts
from test_review_held_commit import GHolder
from test_review_held_rename import _mvs, _sticky_dir, _store_body
from test_review_held_untagged import _put


@pytest.mark.parametrize("y_kind", ["own", "own0444", "others0777", "untagged_put",
                                    "untagged_mpu", "none"])
@pytest.mark.parametrize("x_kind", ["new", "stored"])
@pytest.mark.parametrize("fsync", [False, True], ids=["close", "fsync"])
def test_editor_save_with_descriptor_open_is_stored(mount_factory, uniq, y_kind, x_kind, fsync):
    """One mount, a 0777 directory. A holds x.txt open (new, or her stored file), writes,
    renames x -> x.tmp -> y.txt over y (hers, hers 0444, B's 0644, an SDK upload), writes
    more (after an fsync), closes. Nothing else touches y: the commit must be stored."""
    m = mount_factory(config=FOREIGN, opts="allow_other")
    d = m.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o777)
    key = f"{uniq}/y.txt"
    py, px, pt = (m.path("inbox", f"{uniq}/{n}") for n in ("y.txt", "x.txt", "x.tmp"))
    if y_kind.startswith("own"):
        assert as_user(A, f"open({py!r}, 'w').write('Y OLD')") == ["ok"]
        if y_kind == "own0444":
            assert as_user(A, f"os.chmod({py!r}, 0o444)") == ["ok"]
    elif y_kind == "others0777":
        assert as_user(B, f"open({py!r}, 'w').write('B FILE')") == ["ok"]
    elif y_kind.startswith("untagged"):
        _put(m, key, y_kind.endswith("mpu"))
        m.wait_until(lambda: os.path.exists(py), timeout=30, what="listed")
    if x_kind == "stored":
        assert as_user(A, f"open({px!r}, 'w').write('x old')") == ["ok"]
    flags = os.O_RDWR | (os.O_CREAT if x_kind == "new" else 0)
    w = GHolder(A, px, flags)
    try:
        got = [w.op("w", "A DRAFT")]
        got += _mvs(A, (px, pt), (pt, py))
        if fsync:
            got.append(w.op("s"))
        got.append(w.op("w", "A DRAFT MORE"))
        got.append(w.op("c"))
    finally:
        w.close()
    time.sleep(1)
    assert (got, _store_body(m, key)) == (["ok"] * len(got), b"A DRAFT MORE")


@pytest.mark.parametrize("then", ["to_free", "to_existing", "via_temp_existing", "back_to_temp"])
def test_open_file_renamed_again_after_replacing(mount_factory, uniq, then):
    """A's open new x.txt replaces her y.txt (x -> x.tmp -> y: base = y's old object), then
    is renamed again before its close: y -> z (free or hers), y -> y.tmp -> z, or y -> y.tmp
    and back y.tmp -> y. Her close stores her draft at the final name; y's old content is
    stored nowhere it should not be."""
    m = mount_factory(opts="allow_other")
    d = m.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o777)
    p = {n: m.path("inbox", f"{uniq}/{n}") for n in ("x.txt", "x.tmp", "y.txt", "y.tmp", "z.txt")}
    assert as_user(A, f"open({p['y.txt']!r}, 'w').write('Y OLD')") == ["ok"]
    if then != "to_free":
        assert as_user(A, f"open({p['z.txt']!r}, 'w').write('Z OLD')") == ["ok"]
    w = GHolder(A, p["x.txt"], os.O_RDWR | os.O_CREAT)
    try:
        got = [w.op("w", "A DRAFT")]
        got += _mvs(A, (p["x.txt"], p["x.tmp"]), (p["x.tmp"], p["y.txt"]))
        got.append(w.op("w", "A DRAFT 2"))
        if then in ("to_free", "to_existing"):
            got += _mvs(A, (p["y.txt"], p["z.txt"]))
            final = "z.txt"
        elif then == "via_temp_existing":
            got += _mvs(A, (p["y.txt"], p["y.tmp"]), (p["y.tmp"], p["z.txt"]))
            final = "z.txt"
        else:
            got += _mvs(A, (p["y.txt"], p["y.tmp"]), (p["y.tmp"], p["y.txt"]))
            final = "y.txt"
        got.append(w.op("w", "A DRAFT 3"))
        got.append(w.op("c"))
    finally:
        w.close()
    time.sleep(1)
    bodies = {n: _store_body(m, f"{uniq}/{n}") for n in ("y.txt", "z.txt")}
    want = {"y.txt": "'NoSuchKey'", "z.txt": "'NoSuchKey'" if then == "to_free" else b"Z OLD"}
    want[final] = b"A DRAFT 3"
    assert (got, bodies) == (["ok"] * len(got), want)


@pytest.mark.parametrize("dir_owner", [0, B])
def test_rename_over_stale_view_of_removed_file_then_created_by_another(mount_factory, uniq,
                                                                        dir_owner):
    """ofile_base_to's HEAD finds nothing (fail-open): mount b (30 s listing) still shows A's
    y.txt, which A removed on mount a. On b A holds her x.txt open, writes, renames
    x -> x.tmp -> y: b's view says y exists, so replaces=1, in_store=1, the HEAD gets 404 and
    the base stays unknown; no claim is taken at y either. B then creates his own y.txt on
    a (0644; allowed: nothing there). A's close on b stores her draft over B's file,
    unchecked. A may not write or remove B's file in this sticky directory."""
    a, b = two_mounts(mount_factory, LONG_TTL)
    _sticky_dir(a, uniq, dir_owner)
    key = f"{uniq}/y.txt"
    py_a, py_b = a.path("inbox", key), b.path("inbox", key)
    px_b, pt_b = b.path("inbox", f"{uniq}/x.txt"), b.path("inbox", f"{uniq}/x.tmp")
    assert as_user(A, f"open({py_a!r}, 'w').write('A OLD')") == ["ok"]
    b.wait_until(lambda: os.path.exists(py_b), timeout=40, what="b lists y")
    assert as_user(A, f"os.stat({py_b!r}).st_uid") == ["ok"]
    assert as_user(A, f"open({px_b!r}, 'w').write('v1')") == ["ok"]
    assert as_user(A, f"os.unlink({py_a!r})") == ["ok"]
    w = GHolder(A, px_b, os.O_RDWR)
    try:
        got = [w.op("w", "A DRAFT")]
        got += _mvs(A, (px_b, pt_b), (pt_b, py_b))
        got += as_user(B, f"open({py_a!r}, 'w').write('B FILE')")
        time.sleep(1)
        got.append(w.op("c"))
    finally:
        w.close()
    time.sleep(1)
    body = _store_body(a, key)
    assert got[-2] != "ok" or body == b"B FILE", (got, body)


@pytest.mark.parametrize("multipart", [False, True], ids=["put", "mpu"])
def test_open_file_replacing_an_untagged_object_then_renamed_is_stored(mount_factory, uniq,
                                                                     multipart):
    """A's open new x.txt replaces an SDK upload y.txt (base: its untagged ETag, the HEAD's
    form), then y -> z.txt while open (the server-side copy of y's object is recorded as
    committed: ofile_copied matches the new of->loaded). The close at z is the same object:
    stored, on every ETag form (single PUT, multipart; the copy's own ETag)."""
    m = mount_factory(config=FOREIGN, opts="allow_other")
    d = m.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o777)
    p = {n: m.path("inbox", f"{uniq}/{n}") for n in ("x.txt", "x.tmp", "y.txt", "z.txt")}
    _put(m, f"{uniq}/y.txt", multipart)
    m.wait_until(lambda: os.path.exists(p["y.txt"]), timeout=30, what="listed")
    # an SDK upload is moved only once logged (EBUSY before: README, foreign_grace_ms), which
    # a listing does once it is older than the grace (1 s here)
    def logged():
        os.listdir(d)
        return m.sql("SELECT count(*) FROM reception_audit WHERE object_key = %s"
                     " AND removed_at IS NULL", (f"{uniq}/y.txt",))[0][0] == 1
    m.wait_until(logged, timeout=60, what="y logged")
    w = GHolder(A, p["x.txt"], os.O_RDWR | os.O_CREAT)
    try:
        got = [w.op("w", "A DRAFT")]
        got += _mvs(A, (p["x.txt"], p["x.tmp"]), (p["x.tmp"], p["y.txt"]), (p["y.txt"], p["z.txt"]))
        got.append(w.op("w", "A DRAFT 2"))
        got.append(w.op("c"))
    finally:
        w.close()
    time.sleep(1)
    body = _store_body(m, f"{uniq}/z.txt")
    assert (got, body[:9]) == (["ok"] * len(got), b"A DRAFT 2")
