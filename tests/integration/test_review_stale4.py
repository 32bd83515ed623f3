"""Fourth hostile read of w/stale (8e057f1, doc/reviews/review-held.md, tenth read): rows of
another mount's new file (its live claim) must survive every path of a rename on this mount.
K1: a rename over a target held open here (libfuse hides it first) must not move another
mount's live claim away from the name (the EBUSY rule of review-stale3 S1 applies)."""
import os
import stat
import threading
import time

import psycopg2
import pytest

from checks import rows
from faultproxy import INTERNAL, FaultProxy
from test_perms import A, B, FOREIGN, as_user, attrs_row, changes, open_to_others
from test_review_held_commit import GHolder
from test_review_held_rename import _mvs


def _two(mount_factory, uniq, mode=0o777, b_config=FOREIGN):
    """Mounts a and b (b with b_config) on one stack, both allow_other, and inbox/uniq with
    mode; returns (a, b, pa, pb), pa/pb giving a name's path under it on each."""
    a = mount_factory(config=FOREIGN, opts="allow_other", name="a")
    b = mount_factory(config=b_config, reset=False, opts="allow_other", name="b")
    for m in (a, b):
        open_to_others(m)
    d = a.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, mode)
    pa = lambda n: a.path("inbox", f"{uniq}/{n}")  # noqa
    pb = lambda n: b.path("inbox", f"{uniq}/{n}")  # noqa
    return a, b, pa, pb


@pytest.mark.parametrize("held", ["writer", "reader"])
def test_rename_over_a_name_open_here_keeps_another_mounts_new_file(mount_factory, uniq, held):
    """A's y.txt (0644) is listed on b and held open there by A (for writing: an open file
    here; or for reading). On a, A removes it and
    B makes a new y.txt (0600, 'B SECRET' written, still open: a live claim, nothing stored).
    On b, A renames x.txt over y.txt: libfuse hides the open y.txt first. The rename must fail
    (EBUSY, as over any other mount's new file), B's claim must stay at y.txt, and after B's
    close y.txt must be B's file (B's content, owner B, 0600), with nothing of A's x.txt lost."""
    a, b, pa, pb = _two(mount_factory, uniq)
    ky = f"{uniq}/y.txt"
    assert as_user(A, f"open({pa('y.txt')!r}, 'w').write('A OLD')",
                   f"open({pa('x.txt')!r}, 'w').write('A NEW')") == ["ok", "ok"]
    b.wait_until(lambda: os.path.exists(pb("y.txt")) and os.path.exists(pb("x.txt")),
                 timeout=40, what="b lists y and x")
    reader = GHolder(A, pb("y.txt"), os.O_RDWR if held == "writer" else os.O_RDONLY)
    wb = None
    try:
        assert as_user(A, f"os.unlink({pa('y.txt')!r})") == ["ok"]
        wb = GHolder(B, pa("y.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        assert as_user(B, f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok"]
        assert wb.op("w", "B SECRET") == "ok"
        claim = attrs_row(a, ky)
        assert claim and claim["uid"] == B and claim["etag"] is None, claim
        got = _mvs(A, (pb("x.txt"), pb("y.txt")))
        after = attrs_row(a, ky)
        closed = wb.op("c")
    finally:
        if wb:
            wb.close()
        reader.close()
    time.sleep(1)
    body = a.s3.get_object(Bucket=a.reception_bucket, Key=ky)["Body"].read()
    st = os.stat(pa("y.txt"))
    row = attrs_row(a, ky)
    x_there = os.path.exists(pb("x.txt"))
    assert (got, after and after["uid"], closed, body, row and row["uid"], st.st_uid,
            stat.S_IMODE(st.st_mode), x_there) == \
        (["EBUSY"], B, "ok", b"B SECRET", B, B, 0o600, True), \
        [(c["op"], c["from_key"], c["uid"]) for c in changes(a, ky, every=True)]
    # y.txt's reception rows: A's first (removed), then B's; none of A's x.txt content.
    assert [(r["size_bytes"], r["removed_at"] is None) for r in rows(a, ky)] == \
        [(5, False), (8, True)]


def copy_500(method, path, headers):
    """FaultProxy rule: every server-side copy fails (500)."""
    return ("status", 500, INTERNAL) if method == "PUT" and "x-amz-copy-source" in headers \
        else None


def _proxied(stack, mount_factory, uniq, **fs):
    """a direct, b through a proxy (the rename's copy fails there at will); fs: more of b's
    [fs] options."""
    px = FaultProxy(stack.endpoint)
    a, b, pa, pb = _two(mount_factory, uniq,
                        b_config={"s3": {"endpoint": px.url}, "fs": dict(FOREIGN["fs"], **fs)})
    return px, a, b, pa, pb


def _rename_with_copy_held(px, b, frm, to):
    """A renames frm to `to` on b (through px) in a thread, its server-side copy held (hung)
    at the proxy; returns once it is held: (thread, the list that gets the outcome)."""
    moved = []
    px.rule = lambda method, path, headers: \
        ("hang",) if method == "PUT" and "x-amz-copy-source" in headers else None
    t = threading.Thread(target=lambda: moved.extend(_mvs(A, (frm, to))), daemon=True)
    t.start()
    b.wait_until(lambda: any(m_ == "PUT" and act == "hang" for m_, _, act in px.log),
                 timeout=30, what="the rename's copy held")
    return t, moved


def _waiting(m, like):
    return m.sql_value("select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                       " and query like %s", (like,))


def _locked(stack, table, mode):
    c = psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="custody",
                         dbname="custody", connect_timeout=10)
    with c.cursor() as cur:
        cur.execute(f"LOCK TABLE {table} IN {mode} MODE")
    return c


def test_claim_made_after_the_renames_check_is_never_dropped_by_its_copy(stack, mount_factory,
                                                                        uniq):
    """K2: B's create of y.txt on a claims the name just after A's rename of her closed x.txt
    to y.txt on b has looked for a claim there. The test orders them with two table locks:
    file_attrs held (B's claim waits), file_attrs_pending held (the rename's copy of the
    attributes waits after its look at y.txt); then B's claim is let go and made, then the
    rename. The rename must not drop B's claim: it fails (EBUSY) and changes nothing, and B's
    file is B's after its close. (Since review n17 X1 the rename's look is made under the
    key lock B's claim holds: then it waits for that claim before its look.)"""
    a, b, pa, pb = _two(mount_factory, uniq)
    ky = f"{uniq}/y.txt"
    assert as_user(A, f"open({pa('x.txt')!r}, 'w').write('A NEW')",
                   f"os.chmod({pa('x.txt')!r}, 0o644)") == ["ok", "ok"]
    b.wait_until(lambda: os.path.exists(pb("x.txt")), timeout=40, what="b lists x")
    attrs = _locked(stack, "file_attrs", "SHARE ROW EXCLUSIVE")
    pend = _locked(stack, "file_attrs_pending", "EXCLUSIVE")
    made, moved = [], []
    wb = None
    try:
        t1 = threading.Thread(target=lambda: made.append(
            GHolder(B, pa("y.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)), daemon=True)
        t1.start()
        a.wait_until(lambda: _waiting(a, "%INSERT INTO file_attrs AS f%") >= 1, timeout=30,
                     what="B's claim waiting")
        t2 = threading.Thread(target=lambda: moved.extend(_mvs(A, (pb("x.txt"), pb("y.txt")))),
                              daemon=True)
        t2.start()
        # The rename waits either at its copy (file_attrs_pending) or, since its look at
        # y.txt is made under y.txt's key lock (review n17 X1, c2e329d), for that lock, which
        # B's waiting claim holds: either way B's claim is made before the copy.
        a.wait_until(lambda: _waiting(a, "%file_attrs_pending%") >= 1
                     or _waiting(a, "%") >= 2, timeout=30,
                     what="the rename waiting (its copy, or y.txt's key lock)")
        attrs.rollback()
        t1.join(30)
        assert made, "B's create did not return"
        wb = made[0]
        pend.rollback()
        t2.join(60)
        assert wb.op("w", "B SECRET") == "ok"
        after = attrs_row(a, ky)
        closed = wb.op("c")
    finally:
        attrs.close()
        pend.close()
        if wb:
            wb.close()
    time.sleep(1)
    body = a.s3.get_object(Bucket=a.reception_bucket, Key=ky)["Body"].read()
    row = attrs_row(a, ky)
    assert (moved, after and after["uid"], closed, body, row and row["uid"],
            os.path.exists(pb("x.txt"))) == (["EBUSY"], B, "ok", b"B SECRET", B, True), \
        [(c["op"], c["from_key"], c["uid"]) for c in changes(a, ky, every=True)]
    assert [(r["size_bytes"], r["removed_at"] is None) for r in rows(a, ky)] == [(8, True)]


def test_failed_rename_over_a_hidden_target_keeps_the_row_of_a_file_stored_meanwhile(
        stack, mount_factory, uniq):
    """K3: on b (through a proxy), A renames her closed x.txt over y.txt, which a reader holds
    open there (libfuse hides y first: its row moves to the hidden name). The rename's copy is
    held at the proxy; meanwhile, on a, B removes y.txt and stores his own (0600, 'B SECRET').
    The copy then fails (500). The failed rename must leave B's y.txt with B's row (owner B,
    0600): not A's old row put back, not the defaults; and A's x.txt stays."""
    px, a, b, pa, pb = _proxied(stack, mount_factory, uniq)
    try:
        ky = f"{uniq}/y.txt"
        assert as_user(A, f"open({pa('y.txt')!r}, 'w').write('A OLD')",
                       f"open({pa('x.txt')!r}, 'w').write('A NEW')") == ["ok", "ok"]
        b.wait_until(lambda: os.path.exists(pb("y.txt")) and os.path.exists(pb("x.txt")),
                     timeout=40, what="b lists y and x")
        reader = GHolder(A, pb("y.txt"), os.O_RDONLY)
        try:
            t, moved = _rename_with_copy_held(px, b, pb("x.txt"), pb("y.txt"))
            assert as_user(B, f"os.unlink({pa('y.txt')!r})",
                           f"open({pa('y.txt')!r}, 'w').write('B SECRET')",
                           f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok", "ok", "ok"]
            b_row = attrs_row(a, ky)
            px.rule = copy_500
            px.release.set()
            t.join(120)
        finally:
            reader.close()
        time.sleep(1)
        row = attrs_row(a, ky)
        body = a.s3.get_object(Bucket=a.reception_bucket, Key=ky)["Body"].read()
        st = os.stat(pa("y.txt"))
        assert (moved != ["ok"], b_row and (b_row["uid"], b_row["mode"]),
                row and (row["uid"], row["mode"]), body, st.st_uid, stat.S_IMODE(st.st_mode),
                os.path.exists(pb("x.txt"))) == \
            (True, (B, 0o600), (B, 0o600), b"B SECRET", B, 0o600, True), \
            (moved, [(c["op"], c["from_key"], c["uid"], c["mode"])
                     for c in changes(a, ky, every=True)])
    finally:
        px.close()

