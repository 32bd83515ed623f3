"""Hostile review revD: failing tests for findings D1.. of the revD report (change
fcf0af8..w/int: claims, per-file tokens, rm-wins undo, rename source delete, R6/R7/R8).
Each asserts the behaviour the product contract requires."""
import os
import threading

import pytest
from conftest import FOREIGN_IDS, proxied_mount
from races import crash_held, errname, remount, rename_in_thread

from test_claims_review import EXCL, PLAIN, hold, lapse_claim, release
from test_perms import A, B, as_user, attrs_row, open_to_others, rd, two_mounts  # noqa: F401
from test_rename_attrs import etag, mode_owner, secret


def is_upload_to(key):
    """A rule: the upload of key (a PUT without x-amz-copy-source, or a multipart's parts)."""
    def rule(meth, path, h):
        if meth in ("PUT", "POST") and path.split("?")[0].endswith("/" + key) \
                and not any(k.lower() == "x-amz-copy-source" for k in h.keys()):
            return ("hang",)
        return None
    return rule


def publish_held(m, px, tmp, to):
    """rename(tmp, to) of a closed local temp file (ofile_publish), its upload to `to` held by
    the proxy; returns (thread, out) once the upload hangs."""
    px.rule = is_upload_to(to)
    t, out = rename_in_thread(m, tmp, to)
    m.wait_until(lambda: any(a == ("hang",) or a == "hang" for _, _, a in px.log),
                 timeout=30, what="the publish upload held")
    return t, out


def plain_create_while_held(fa, fb):
    """A's new file fa ("A secret") held open on mount a while A's plain open(O_CREAT) of the
    same name fb on mount b runs: (that open's result, how A's close went)."""
    pa = hold(A, fa, "A secret")
    try:
        create = as_user(A, f"os.close(os.open({fb!r}, {PLAIN}, 0o644))")
    finally:
        closed = release(pa)
    return create, closed


def test_crash_during_publish_over_a_target_keeps_the_targets_attributes(proxied):
    """D1: a local temp file (x.tmp, 0644 root) renamed over a stored 0600 file y.txt of uid
    2003: ofile_publish (511cf6c) copies x.tmp's row, unbound, over y.txt's before uploading.
    The daemon dies while that upload is in flight (never landed): y.txt still holds its old
    content and must show its own mode and owner after a remount, never x.tmp's."""
    m, px, d = proxied
    tmp, to = f"{d}/x.tmp", f"{d}/y.txt"
    secret(m, to, b"old secret of y", 0o600, 2003, 2004)
    ey = etag(m, to)
    with open(m.path("inbox", tmp), "wb") as f:
        f.write(b"new content")
    os.chmod(m.path("inbox", tmp), 0o644)
    t, out = publish_held(m, px, tmp, to)
    crash_held(m, px, t)
    remount(m, px)
    r = attrs_row(m, to)
    res = {"etag": etag(m, to) == ey,
           "content": open(m.path("inbox", to), "rb").read(),
           "shown": mode_owner(m.path("inbox", to)),
           "row": r and (r["mode"], r["uid"], r["etag"] == ey, r["claimed_by"])}
    assert res == {"etag": True, "content": b"old secret of y", "shown": (0o600, 2003, 2004),
                   "row": (0o600, 2003, True, None)}, res


@pytest.fixture
def proxied_shared(stack, mount_factory, uniq):
    """(mount, proxy, dir): an allow_other mount (other users reach it) behind a FaultProxy."""
    with proxied_mount(stack, mount_factory, FOREIGN_IDS, opts="allow_other") as (m, px):
        open_to_others(m)
        os.mkdir(m.path("inbox", uniq))
        os.chmod(m.path("inbox", uniq), 0o1777)
        yield m, px, uniq


def test_publish_over_a_secret_never_shows_it_with_the_temps_mode(proxied_shared):
    """D2: A's stored 0600 file y.txt; A writes x.tmp (0644) and renames it over y.txt. While
    the upload of the new content is in flight (slow store), y.txt still holds A's old
    secret, but its row is already x.tmp's copy (unbound: it applies to any object): B must
    never read the old secret."""
    m, px, d = proxied_shared
    tmp, to = f"{d}/x.tmp", f"{d}/y.txt"
    pt, py = m.path("inbox", tmp), m.path("inbox", to)
    assert as_user(A, f"open({py!r}, 'wb').write(b'old secret of y')",
                   f"os.chmod({py!r}, 0o600)", umask=0o077) == ["ok", "ok"]
    assert as_user(B, rd(py)) == ["EACCES"]
    assert as_user(A, f"open({pt!r}, 'wb').write(b'new, public')",
                   f"os.chmod({pt!r}, 0o644)") == ["ok", "ok"]
    px.rule = is_upload_to(to)
    out = []

    def go():
        out.extend(as_user(A, f"os.rename({pt!r}, {py!r})"))
    t = threading.Thread(target=go, daemon=True)
    t.start()
    m.wait_until(lambda: any(a in ("hang", ("hang",)) for _, _, a in px.log),
                 timeout=30, what="the publish upload held")
    import time
    time.sleep(2)  # past the kernel's attribute cache
    try:
        during = as_user(B, rd(py))
    finally:
        px.rule = None
        px.release.set()
        t.join(60)
    assert during != ["old secret of y"], (during, out)


def test_joined_file_shows_and_keeps_the_content_stored_by_its_writer(mount_factory, uniq):
    """D3: A's new file X is being written on mount a (its live claim); A's plain
    open(O_CREAT) of X on mount b must not join it (mount b knows nothing of its content):
    EBUSY, nothing changed. A's writer on a then closes: X is stored ("A secret", A's 0600
    row). On mount b, once it shows X, a new open reads "A secret" and an append keeps it."""
    a, b = two_mounts(mount_factory)
    key = f"{uniq}.txt"
    fa, fb = a.path("inbox", key), b.path("inbox", key)
    create, closed = plain_create_while_held(fa, fb)
    stored = a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read()
    r = attrs_row(a, key)
    b.wait_until(lambda: os.path.exists(fb), timeout=60, what="mount b shows X")
    seen = as_user(A, rd(fb))
    app = as_user(A, f"open({fb!r}, 'ab').write(b' more')")
    final = a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read()
    r2 = attrs_row(a, key)
    res = {"b's create": create, "a closed": closed, "stored": stored,
           "row": r and (r["uid"], r["mode"]), "b reads": seen, "append": app,
           "final": final, "row after": r2 and (r2["uid"], r2["mode"]),
           "B reads": as_user(B, rd(fa))}
    assert res == {"b's create": ["EBUSY"], "a closed": "closed", "stored": b"A secret",
                   "row": (A, 0o600), "b reads": ["A secret"], "append": ["ok"],
                   "final": b"A secret more", "row after": (A, 0o600),
                   "B reads": ["EACCES"]}, res


def test_joined_file_failed_commit_never_leaves_a_row_without_its_object(
        stack, mount_factory, uniq):
    """D4: A's new file X is open on mount a; its claim lapses and A's O_EXCL create of X on
    mount b takes the name (R7: b's file is new there, not in the store). A's writer on a
    closes: X is stored with its row. Then b's file is written and closed, and b's database
    is lost just as its upload lands (its PUT has replaced a's object). Whether b's commit
    is an overwrite is decided from the database under the key lock (a live row: yes), never
    from b's belief that the key is new: its undo must not delete the object that replaced
    a live row's (it logs it late). Bucket and table must agree afterwards: the key's live
    row has its object."""
    from test_perms import FOREIGN
    from test_reception_integrity import TcpProxy, conninfo_via, hold_db_at_upload
    from faultproxy import FaultProxy
    from checks import rows
    pg = TcpProxy(stack.pg_port)
    s3 = FaultProxy(stack.endpoint)
    try:
        a = mount_factory(config=FOREIGN, opts="allow_other", name="a")
        b = mount_factory(config={"fs": FOREIGN["fs"],
                                  "postgres": {"conninfo": conninfo_via(stack, pg.port)},
                                  "s3": {"endpoint": s3.url}},
                          reset=False, opts="allow_other", name="b")
        for m in (a, b):
            open_to_others(m)
        key = f"{uniq}.txt"
        fa, fb = a.path("inbox", key), b.path("inbox", key)
        pa = hold(A, fa, "A secret")
        n = lapse_claim(a, key)
        assert len(n) == 1
        pb = hold(A, fb, "B", EXCL, 0o600)
        out = []
        t = None
        try:
            assert release(pa) == "closed"
            assert len(rows(a, key)) == 1
            hold_db_at_upload(s3, pg, key)
            t = threading.Thread(target=lambda: out.append(release(pb)), daemon=True)
            t.start()
            a.wait_until(lambda: a.s3.get_object(Bucket=a.reception_bucket,
                                                 Key=key)["Body"].read() == b"B",
                         timeout=30, what="b's upload landed")
            pg.cut()
            t.join(90)
        finally:
            s3.rule = None
            pg.resume()
            if t is None:
                release(pb)
            else:
                t.join(90)
        import time
        time.sleep(8)  # b's undo retries (UNDO_RETRY_MS 2 s)
        live = [r for r in rows(a, key) if r["removed_at"] is None]
        try:
            obj = a.s3.head_object(Bucket=a.reception_bucket, Key=key)["ETag"].strip('"')
        except Exception:
            obj = None
        res = {"live rows": len(live), "object": obj is not None,
               "row is the object's": bool(live) and live[0]["etag"] == obj}
        assert res == {"live rows": 1, "object": True, "row is the object's": True}, (
            res, out, b.daemon_log()[-3000:])
    finally:
        s3.rule = None
        s3.release.set()
        s3.close()
        pg.close()


@pytest.mark.both_backends  # depends on what the store does (copies, parts, ETags)
def test_rename_copy_never_moves_a_newer_upload_under_the_old_rows_hashes(stack, mount_factory,
                                                                           uniq):
    """D5: mount a renames stored F to G. Its store step HEADs F (ETag E1, for the ETag-checked
    source DELETE), then copies F to G. Between the two, mount b overwrites F (its upload
    lands; its row waits for the database). The copy (no x-amz-copy-source-if-match) takes
    b's bytes; G's row is a copy of F's old row (E1's hashes). Every live row must describe
    the bytes of its object."""
    import hashlib
    from faultproxy import FaultProxy
    from test_reception_integrity import TcpProxy, conninfo_via, hold_db_at_upload
    from checks import rows, write
    pxa = FaultProxy(stack.endpoint)
    pg = TcpProxy(stack.pg_port)
    s3b = FaultProxy(stack.endpoint)
    try:
        a = mount_factory(config={"s3": {"endpoint": pxa.url}}, name="a")
        b = mount_factory(config={"postgres": {"conninfo": conninfo_via(stack, pg.port)},
                                  "s3": {"endpoint": s3b.url}}, reset=False, name="b")
        os.mkdir(a.path("inbox", uniq))
        f, g = f"{uniq}/f.txt", f"{uniq}/g.txt"
        write(a.path("inbox", f), b"old content of f")
        b.wait_until(lambda: os.path.exists(b.path("inbox", f)), timeout=30, what="f on b")

        def copy_to_g(meth, path, h):
            if meth == "PUT" and path.split("?")[0].endswith("/" + g) and \
                    any(k.lower() == "x-amz-copy-source" for k in h.keys()):
                return ("hold", 60)
            return None
        pxa.rule = copy_to_g
        rb = []
        t1, ra = rename_in_thread(a, f, g)
        a.wait_until(lambda: any(act and act[0] == "hold" for _, _, act in pxa.log
                                 if isinstance(act, tuple)) or
                     any(act == "hold" for _, _, act in pxa.log),
                     timeout=30, what="a's copy held")
        hold_db_at_upload(s3b, pg, f)

        def wr():
            try:
                write(b.path("inbox", f), b"NEWER content written on b")
                rb.append("ok")
            except OSError as e:
                rb.append(errname(e))
        t2 = threading.Thread(target=wr, daemon=True)
        t2.start()
        a.wait_until(lambda: a.s3.get_object(Bucket=a.reception_bucket, Key=f)["Body"].read()
                     == b"NEWER content written on b", timeout=30, what="b's upload landed")
        pxa.release.set()
        t1.join(60)
        s3b.rule = None
        pg.resume()
        t2.join(60)
        bad = {}
        for k in (f, g):
            try:
                body = a.s3.get_object(Bucket=a.reception_bucket, Key=k)["Body"].read()
            except Exception:
                body = None
            for r in rows(a, k):
                if r["removed_at"] is None and (body is None or
                                                r["sha256"] != hashlib.sha256(body).hexdigest()):
                    bad[k] = (body, r["size_bytes"], r["origin"])
        assert bad == {}, (bad, ra, rb)
    finally:
        for px in (pxa, s3b):
            px.rule = None
            px.release.set()
            px.close()
        pg.close()


def test_lapsed_claim_taken_keeps_the_writers_chmod(mount_factory, uniq):
    """D6: A creates X 0644 on mount a and, still writing, chmods it 0600 (a secret). Its
    claim lapses (backdated, as if mount a could not renew it) and B's O_EXCL create on mount
    b takes the name. A's close stores A's content; the bind finds B's claim and makes the row
    A's again (R7): with A's mode as A left it (0600), never the create's 0644 that lets B
    read A's secret."""
    a, b = two_mounts(mount_factory)
    key = f"{uniq}.txt"
    fa, fb = a.path("inbox", key), b.path("inbox", key)
    pa = hold(A, fa, "A secret", EXCL, 0o644)
    assert as_user(A, f"os.chmod({fa!r}, 0o600)") == ["ok"]
    n = a.sql("update file_attrs set claim_until = now() - interval '1 second'"
              " where bucket = %s and object_key = %s and etag is null returning mode",
              (a.reception_bucket, key))
    assert n == [(0o600,)], n
    pb = hold(B, fb, "B", EXCL, 0o644)
    try:
        closed = release(pa)
        r = attrs_row(a, key)
        res = {"close": closed, "row": (r["uid"], r["mode"]), "B reads": as_user(B, rd(fa))}
    finally:
        release(pb)
    assert res == {"close": "closed", "row": (A, 0o600), "B reads": ["EACCES"]}, res


def test_rm_of_a_joined_file_removes_what_its_writer_stored(mount_factory, uniq):
    """D7: A's new 0600 file X is written on mount a; A's plain create of X on mount b must
    not join it: EBUSY, nothing changed. A's writer closes: X is stored with A's 0600 row.
    A's `rm X` on mount b (once b shows X) returns 0: X must then be gone from the store (its
    row removed_at), never left there with its attributes row dropped."""
    from checks import rows
    a, b = two_mounts(mount_factory)
    key = f"{uniq}.txt"
    fa, fb = a.path("inbox", key), b.path("inbox", key)
    create, closed = plain_create_while_held(fa, fb)
    r = attrs_row(a, key)
    stored = a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read()
    b.wait_until(lambda: os.path.exists(fb), timeout=60, what="mount b shows X")
    rm = as_user(A, f"os.unlink({fb!r})")
    # mount a's kernel keeps what it showed of X for its entry TTL: gone after that
    a.wait_until(lambda: not os.path.exists(fa), timeout=60, what="mount a shows X gone")
    objs = [o["Key"] for o in a.s3.list_objects_v2(Bucket=a.reception_bucket,
                                                   Prefix=key).get("Contents", [])]
    res = {"b's create": create, "a closed": closed, "stored": stored,
           "row": r and (r["uid"], r["mode"]), "rm": rm, "objects": objs,
           "live rows": len([r for r in rows(a, key) if r["removed_at"] is None]),
           "B reads on a": as_user(B, rd(fa)), "B reads on b": as_user(B, rd(fb))}
    assert res == {"b's create": ["EBUSY"], "a closed": "closed", "stored": b"A secret",
                   "row": (A, 0o600), "rm": ["ok"], "objects": [], "live rows": 0,
                   "B reads on a": ["ENOENT"], "B reads on b": ["ENOENT"]}, (res,
                                                                            attrs_row(a, key))


def test_late_bind_never_takes_the_row_of_a_newer_object(stack, mount_factory, uniq):
    """D8: A's new 0644 file X on mount a; its claim lapses and B's O_EXCL create (0600, a
    secret) on mount b takes the name (R7). A closes: its upload and row commit, but its bind
    is slow (here: the attributes log, which only its take path writes, is locked). B closes
    meanwhile: B's upload is the live object, B's row is bound to it. A's late bind then must
    not replace B's row (bound to B's object) by A's bound to A's gone object: B's secret
    would be shown with the defaults."""
    import psycopg2
    import time
    from checks import rows
    a, b = two_mounts(mount_factory)
    key = f"{uniq}.txt"
    fa, fb = a.path("inbox", key), b.path("inbox", key)
    pa = hold(A, fa, "A public", EXCL, 0o644)
    n = lapse_claim(a, key)
    assert len(n) == 1
    pb = hold(B, fb, "B secret", EXCL, 0o600)
    lock = psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="custody",
                            dbname="custody")
    outa, outb = [], []
    ta = tb = None
    try:
        with lock.cursor() as cur:
            cur.execute("lock table file_attr_changes in share row exclusive mode")
        ta = threading.Thread(target=lambda: outa.append(release(pa)), daemon=True)
        ta.start()

        def a_committed():
            return any(r["removed_at"] is None and r["size_bytes"] == 8 and
                       "2001" in (r["received_by"] or "") for r in
                       rows(a, key))
        a.wait_until(a_committed, timeout=60, what="a's row committed")
        time.sleep(1)
        tb = threading.Thread(target=lambda: outb.append(release(pb)), daemon=True)
        tb.start()
        tb.join(60)
        b_done = not tb.is_alive()
    finally:
        lock.commit()
        lock.close()
        if ta:
            ta.join(60)
        if tb:
            tb.join(60)
    e = a.s3.head_object(Bucket=a.reception_bucket, Key=key)["ETag"].strip('"')
    body = a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read()
    r = attrs_row(a, key)
    time.sleep(1.5)
    res = {"b closed first": b_done, "closes": (outa, outb), "stored": body,
           "row": r and (r["uid"], r["mode"], r["etag"] == e), "A reads": as_user(A, rd(fb))}
    assert res == {"b closed first": True, "closes": (["closed"], ["closed"]),
                   "stored": b"B secret", "row": (B, 0o600, True), "A reads": ["EACCES"]}, res


def test_mv_of_a_joined_file_moves_what_its_writer_stored(mount_factory, uniq):
    """D9: A's new 0600 file X is written on mount a; A's plain create of X on mount b must
    not join it: EBUSY, nothing changed. A's writer closes: X is stored ("A secret", A's
    0600 row). A's `mv X Y` on mount b (once b shows X) returns 0: Y must then hold
    "A secret" (0600, unreadable by B) and X be gone."""
    a, b = two_mounts(mount_factory)
    x, y = f"{uniq}.txt", f"{uniq}-moved.txt"
    fa, fb, yb = a.path("inbox", x), b.path("inbox", x), b.path("inbox", y)
    create, closed = plain_create_while_held(fa, fb)

    def body(k):
        try:
            return a.s3.get_object(Bucket=a.reception_bucket, Key=k)["Body"].read()
        except Exception:
            return None
    stored = body(x)
    r = attrs_row(a, x)
    b.wait_until(lambda: os.path.exists(fb), timeout=60, what="mount b shows X")
    mv = as_user(A, f"os.rename({fb!r}, {yb!r})")
    rx, ry = attrs_row(a, x), attrs_row(a, y)
    res = {"b's create": create, "a closed": closed, "stored": stored,
           "row": r and (r["uid"], r["mode"]), "mv": mv, "Y": body(y), "X": body(x),
           "X row": rx and rx["mode"], "Y row": ry and (ry["uid"], ry["mode"]),
           "B reads Y": as_user(B, rd(a.path("inbox", y)))}
    assert res == {"b's create": ["EBUSY"], "a closed": "closed", "stored": b"A secret",
                   "row": (A, 0o600), "mv": ["ok"], "Y": b"A secret", "X": None,
                   "X row": None, "Y row": (A, 0o600), "B reads Y": ["EACCES"]}, res


def test_a_bind_that_failed_after_the_commit_is_retried(stack, mount_factory, uniq):
    """D10: A's new 0600 file X on mount a (claim_lease 4 s: renewed every second). Its close
    stores it and commits its reception row, but the bind of its claim's row fails (the row
    locked by another session past the statement deadline, as a database gone at that moment).
    Close returns 0 (SPEC §2: stored and logged); the row must not stay unbound and claimed
    until its lease lapses (then applying to whatever object is there): once the database
    answers again it is bound to A's object, its claim ended, A's mode and owner kept."""
    import psycopg2
    from test_perms import FOREIGN
    a = mount_factory(config={"fs": dict(FOREIGN["fs"], claim_lease="4")}, opts="allow_other")
    open_to_others(a)
    key = f"{uniq}.txt"
    fa = a.path("inbox", key)
    pa = hold(A, fa, "A secret")
    lock = psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="custody",
                            dbname="custody")
    out = []
    try:
        with lock.cursor() as cur:
            cur.execute("select 1 from file_attrs where bucket = %s and object_key = %s"
                        " for update", (a.reception_bucket, key))
            assert cur.rowcount == 1
        t = threading.Thread(target=lambda: out.append(release(pa)), daemon=True)
        t.start()
        t.join(120)
    finally:
        lock.commit()
        lock.close()
    e = a.s3.head_object(Bucket=a.reception_bucket, Key=key)["ETag"].strip('"')

    def bound():
        r = attrs_row(a, key)
        return r and r["etag"] == e and r["claimed_by"] is None
    import time
    deadline = time.time() + 15
    while time.time() < deadline and not bound():
        time.sleep(0.5)
    r = attrs_row(a, key)
    res = {"close": out, "row": r and (r["uid"], r["mode"], r["etag"] == e, r["claimed_by"]),
           "B reads": as_user(B, rd(fa))}
    assert res == {"close": ["closed"], "row": (A, 0o600, True, None),
                   "B reads": ["EACCES"]}, res
