"""Hostile review G, G1 (doc/reviews/review-G.md): an upload whose request reached the store
but whose answer was lost (a 5xx, a reset after the write took effect) is not "nothing of
mine is at the key". Its object is there: the daemon must find out, by the object's own bytes
(never by metadata another client could write), and then finish the file -- row, attributes,
close or rename returning 0 -- instead of failing while the object stays, shown with the
defaults (0644) and later logged as a foreign upload. An upload that did not land still fails
and changes nothing. Two allow_other mounts, users A and B as in test_perms.py; every row of
the key is counted."""
import contextlib
import hashlib
import os
import time

import pytest

from checks import rows
from faultproxy import INTERNAL, FaultProxy
from test_perms import A, B, FOREIGN, as_user, open_to_others, rd  # noqa: F401
from test_rename_attrs import etag, mode_owner
from test_review_e import pending_rows, proxied_pair  # noqa: F401


def upload_to(key, action):
    """A rule: the upload of key (a PUT without x-amz-copy-source, or the completion of its
    multipart upload) gets action."""
    def rule(meth, path, h):
        p, _, q = path.partition("?")
        if not p.endswith("/" + key):
            return None
        if meth == "PUT" and "uploadId=" not in q and \
                not any(k.lower() == "x-amz-copy-source" for k in h.keys()):
            return action
        if meth == "POST" and "uploadId=" in q:
            return action
        return None
    return rule


LOST = ("after", (500, INTERNAL))       # the write took effect, its answer is an error
REFUSED = ("status", 500, INTERNAL)     # the write never reached the store


def sha(b):
    return hashlib.sha256(b).hexdigest()


@contextlib.contextmanager
def proxied_mount(stack, mount_factory, uniq, s3=None, fs=None):
    """(mount, proxy): an allow_other mount behind a FaultProxy (one retry; the foreign
    owner of test_perms), with a sticky world-writable directory uniq of inbox/."""
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url, "max_retries": "1", **(s3 or {})},
                                  "fs": {**FOREIGN["fs"], **(fs or {})}}, opts="allow_other")
        open_to_others(m)
        os.mkdir(m.path("inbox", uniq))
        os.chmod(m.path("inbox", uniq), 0o1777)
        yield m, px
    finally:
        px.rule = None
        px.release.set()
        px.close()


def wait_mode(m, path, want, what):
    m.wait_until(lambda: os.path.exists(path) and mode_owner(path) == want, timeout=30,
                 what=what)


@pytest.mark.parametrize("target", ["public", "none"])
def test_a_publish_whose_answer_was_lost_is_stored_as_written(proxied_pair, target):
    """G1 case 1: A saves a private file as editors do (x.tmp 0600 renamed over y.txt); every
    PUT of y.txt reaches the store and is answered 500. The object is A's secret: the rename
    must end as if answered (0, x.tmp gone, y.txt A's 0600 on both mounts, one live row of
    A's upload with the hash of those bytes, no foreign row), never a failure that leaves the
    secret shown 0644."""
    a, b, px, d = proxied_pair
    to = f"{d}/y.txt"
    pt, py, pyb = a.path("inbox", f"{d}/x.tmp"), a.path("inbox", to), b.path("inbox", to)
    if target == "public":
        assert as_user(A, f"open({py!r}, 'wb').write(b'old public')",
                       f"os.chmod({py!r}, 0o644)") == ["ok", "ok"]
    assert as_user(A, f"open({pt!r}, 'wb').write(b'NEW SECRET')",
                   f"os.chmod({pt!r}, 0o600)", umask=0o077) == ["ok", "ok"]
    px.rule = upload_to(to, LOST)
    try:
        r = as_user(A, f"os.rename({pt!r}, {py!r})")
    finally:
        px.rule = None
    assert any(act == "after" for _, _, act in px.log), "the upload was not answered 500"
    assert r == ["ok"], r
    assert not os.path.exists(pt)
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=to)["Body"].read() == b"NEW SECRET"
    assert mode_owner(py) == (0o600, A, A)
    wait_mode(b, pyb, (0o600, A, A), "mount b shows y.txt as A's 0600 file")
    for p in (py, pyb):
        assert as_user(B, rd(p)) == ["EACCES"], mode_owner(p)
    assert as_user(A, rd(py)) == ["NEW SECRET"]
    rs = rows(a, to)
    live = [x for x in rs if x["removed_at"] is None]
    assert len(live) == 1, rs
    assert live[0]["origin"] == "mount" and live[0]["sha256"] == sha(b"NEW SECRET"), rs
    assert live[0]["etag"] == etag(a, to), rs
    assert len(rs) == (2 if target == "public" else 1), rs
    assert not [x for x in rs if x["origin"] == "foreign"], rs
    assert pending_rows(a, to) == 0


@pytest.mark.parametrize("target", ["public", "none"])
def test_a_publish_that_never_reached_the_store_fails_and_changes_nothing(proxied_pair, target):
    """The other side of G1: every PUT of y.txt is refused before it reaches the store. The
    rename fails, x.tmp is intact, y.txt is what it was (B still reads the public file), no
    row is added for y.txt and no pending row of the failed publish is left behind."""
    a, b, px, d = proxied_pair
    to = f"{d}/y.txt"
    pt, py, pyb = a.path("inbox", f"{d}/x.tmp"), a.path("inbox", to), b.path("inbox", to)
    if target == "public":
        assert as_user(A, f"open({py!r}, 'wb').write(b'old public')",
                       f"os.chmod({py!r}, 0o644)") == ["ok", "ok"]
    assert as_user(A, f"open({pt!r}, 'wb').write(b'NEW SECRET')",
                   f"os.chmod({pt!r}, 0o600)", umask=0o077) == ["ok", "ok"]
    before = rows(a, to)
    px.rule = upload_to(to, REFUSED)
    try:
        r = as_user(A, f"os.rename({pt!r}, {py!r})")
    finally:
        px.rule = None
    assert r != ["ok"], r
    assert as_user(A, rd(pt)) == ["NEW SECRET"]
    assert mode_owner(pt) == (0o600, A, A)
    assert rows(a, to) == before
    assert pending_rows(a, to) == 0
    if target == "public":
        for p in (py, pyb):
            assert as_user(B, rd(p)) == ["old public"]
    else:
        assert not os.path.exists(py)


@pytest.mark.parametrize("size", [10, 6 << 20], ids=["put", "multipart"])
def test_a_write_whose_answer_was_lost_is_closed_with_its_row(stack, mount_factory, uniq, size):
    """G1 for a plain write: every PUT (or CompleteMultipartUpload) of z.bin reaches the store
    and is answered 500. close returns 0 with one live row of the mount's upload (hash of the
    bytes written), the file is the writer's, and no foreign row is ever logged for it."""
    with proxied_mount(stack, mount_factory, uniq,
                       fs={"part_size": "5M", "foreign_grace_ms": "200",
                           "scan_interval": "1"}) as (m, px):
        key = f"{uniq}/z.bin"
        p = m.path("inbox", key)
        body = os.urandom(size)
        src = f"/tmp/{uniq}-z.bin"
        with open(src, "wb") as f:
            f.write(body)
        os.chmod(src, 0o644)
        px.rule = upload_to(key, LOST)
        try:
            r = as_user(A, f"open({p!r}, 'wb').write(open({src!r}, 'rb').read())")
        finally:
            px.rule = None
        os.unlink(src)
        assert any(act == "after" for _, _, act in px.log), "the upload was not answered 500"
        assert r == ["ok"], r  # (a failed close reads "close:EIO")
        assert m.s3.get_object(Bucket=m.reception_bucket, Key=key)["Body"].read() == body
        assert mode_owner(p) == (0o644, A, A), m.log_tail(40)
        rs = rows(m, key)
        live = [x for x in rs if x["removed_at"] is None]
        assert len(live) == 1 and live[0]["origin"] == "mount", rs
        assert live[0]["sha256"] == sha(body) and live[0]["etag"] == etag(m, key), rs
        # a restart scans the bucket for objects without rows (then every second, grace
        # 0.2 s): it must find nothing to log. A canary object put by boto3 is logged
        # foreign by that scan, so the scan has run when it is.
        m.restart()
        assert os.path.getsize(p) == size
        m.s3.put_object(Bucket=m.reception_bucket, Key=f"{uniq}/canary", Body=b"c")
        m.wait_until(lambda: [x for x in rows(m, f"{uniq}/canary") if x["origin"] == "foreign"],
                     timeout=30, what="the foreign-upload scan logged the canary")
        rs2 = rows(m, key)
        assert not [x for x in rs2 if x["origin"] == "foreign"], rs2
        assert len(rs2) == len(rs), rs2


def key_lock_obj(bucket, key):
    """The advisory lock object id the daemon takes for (bucket, key) (db_reception.c)."""
    h = 2166136261
    for c in bucket.encode():
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    h = (h * 16777619) & 0xFFFFFFFF
    for c in key.encode():
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def test_a_publish_whose_row_timed_out_keeps_its_attributes(stack, mount_factory, uniq):
    """G1 case 2: the publish's object landed over A's public y.txt, but its row cannot be
    written (the key lock is held by another session past the statement deadline) while the
    database answers other statements. The rename fails; the overwrite cannot be undone and
    is logged late once the lock is free. Its attributes must stay pending meanwhile and then
    become y.txt's row: y.txt is A's 0600 secret on both mounts, never shown with the
    defaults (0644, readable by B). One mount: another mount's foreign-upload logger would
    log the object as foreign before this mount's undo logs it (doc/reviews/review-W.md W1,
    open)."""
    import threading
    cfg = {"fs": {**FOREIGN["fs"], "claim_lease": "4"}}
    a = mount_factory(config=cfg, opts="allow_other", name="a")
    open_to_others(a)
    os.mkdir(a.path("inbox", uniq))
    os.chmod(a.path("inbox", uniq), 0o1777)
    to = f"{uniq}/y.txt"
    pt, py = a.path("inbox", f"{uniq}/x.tmp"), a.path("inbox", to)
    assert as_user(A, f"open({py!r}, 'wb').write(b'old public')",
                   f"os.chmod({py!r}, 0o644)") == ["ok", "ok"]
    assert as_user(A, f"open({pt!r}, 'wb').write(b'NEW SECRET')",
                   f"os.chmod({pt!r}, 0o600)", umask=0o077) == ["ok", "ok"]
    conn = stack._connect()
    cur = conn.cursor()
    cur.execute("begin")
    cur.execute("select pg_advisory_xact_lock(%s::integer, %s::integer)",
                (1129665364, key_lock_obj(a.reception_bucket, to)))
    out = []
    th = threading.Thread(target=lambda: out.extend(as_user(A, f"os.rename({pt!r}, {py!r})")),
                          daemon=True)
    th.start()
    try:
        th.join(90)
    finally:
        conn.rollback()
        conn.close()
    assert not th.is_alive()
    assert out != ["ok"], out
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=to)["Body"].read() == b"NEW SECRET"
    seen = []
    a.wait_until(lambda: seen.append((mode_owner(py), as_user(B, rd(py))[0])) or
                 (len(rows(a, to)) == 2 and pending_rows(a, to) == 0), timeout=40,
                 what="the overwrite logged late and its attributes settled")
    assert all(s == ((0o600, A, A), "EACCES") for s in seen), seen
    assert mode_owner(py) == (0o600, A, A)
    assert as_user(B, rd(py)) == ["EACCES"]
    rs = rows(a, to)
    live = [x for x in rs if x["removed_at"] is None]
    assert len(live) == 1 and live[0]["sha256"] == sha(b"NEW SECRET"), rs
    assert live[0]["origin"] == "mount", rs
    assert pending_rows(a, to) == 0


def test_a_refused_publish_drops_its_pending_row_whatever_else_waits(stack, mount_factory,
                                                                     uniq):
    """review-W finding 3: an undo of an earlier upload of y.txt waits for the database (its
    row timed out on the key lock). A's publish over y.txt is then refused by the store (it
    never landed): its pending attributes must go at once -- they are not that waiting
    upload's, and settling them onto it would give root's bytes the publish's mode."""
    import threading
    conn = None
    with proxied_mount(stack, mount_factory, uniq) as (m, px), \
            contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: conn is not None and (conn.rollback(), conn.close()))
        to = f"{uniq}/y.txt"
        pt, py = m.path("inbox", f"{uniq}/x.tmp"), m.path("inbox", to)
        assert as_user(A, f"open({py!r}, 'wb').write(b'first')", f"os.chmod({py!r}, 0o666)") \
            == ["ok", "ok"]
        assert as_user(A, f"open({pt!r}, 'wb').write(b'NEW SECRET')",
                       f"os.chmod({pt!r}, 0o600)", umask=0o077) == ["ok", "ok"]
        conn = stack._connect()
        cur = conn.cursor()
        cur.execute("begin")
        cur.execute("select pg_advisory_xact_lock(%s::integer, %s::integer)",
                    (1129665364, key_lock_obj(m.reception_bucket, to)))
        err = []

        def overwrite():
            try:
                with open(py, "wb") as f:
                    f.write(b"root's second")
            except OSError as e:
                err.append(e.errno)
        th = threading.Thread(target=overwrite, daemon=True)
        th.start()
        th.join(90)
        assert not th.is_alive() and err, err      # its row timed out: its undo waits
        px.rule = upload_to(to, REFUSED)
        try:
            r = as_user(A, f"os.rename({pt!r}, {py!r})")
        finally:
            px.rule = None
        assert r != ["ok"], r
        assert pending_rows(m, to) == 0
        conn.rollback()
        conn.close()
        conn = None
        m.wait_until(lambda: len([x for x in rows(m, to) if x["removed_at"] is None]) == 1
                     and rows(m, to)[-1]["sha256"] == sha(b"root's second"), timeout=40,
                     what="the overwrite logged late")
        assert pending_rows(m, to) == 0
        assert mode_owner(py)[0] != 0o600, mode_owner(py)   # never the publish's attributes
        assert as_user(A, rd(pt)) == ["NEW SECRET"]


def write_refused(m, px, key, body, rule):
    """Writes body to inbox/key through the mount while px applies rule: the errno of the
    failure, None when the close returned 0."""
    px.rule = rule
    try:
        with open(m.path("inbox", key), "wb") as f:
            f.write(body)
    except OSError as e:
        return e.errno
    finally:
        px.rule = None
    return None


def only_theirs(m, key, their_etag, body):
    """key holds the other client's object as it stored it, and no row of the mount names
    it."""
    got = m.s3.get_object(Bucket=m.reception_bucket, Key=key)
    assert got["ETag"].strip('"') == their_etag and got["Body"].read() == body
    assert "custodyfs-upload" not in got["Metadata"], got["Metadata"]
    assert not [x for x in rows(m, key) if x["origin"] == "mount"], rows(m, key)


def test_an_identical_foreign_object_is_not_taken_for_a_refused_upload(stack, mount_factory,
                                                                       uniq):
    """review-W finding 4: another client stored the same bytes under z.bin (not logged yet),
    then root writes z.bin and every PUT of it is refused (it never reached the store). The
    object there has the upload's size and hashes, but it is not this upload: the close
    fails, the other client's object stays as it was, and no row of the mount names it. No
    wait between the two: the object's time proves nothing (a store may round LastModified
    up to the next second, Swift does), only the upload's own tag does."""
    with proxied_mount(stack, mount_factory, uniq,
                       fs={"foreign_grace_ms": "600000"}) as (m, px):
        key = f"{uniq}/z.bin"
        body = os.urandom(4096)
        m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=body)
        before = etag(m, key)
        err = write_refused(m, px, key, body, upload_to(key, REFUSED))
        assert err is not None, "close returned 0 with nothing stored"
        only_theirs(m, key, before, body)


@pytest.mark.parametrize("size", [4096, 6 << 20])
def test_an_identical_upload_during_a_refused_one_is_not_taken_for_it(stack, mount_factory,
                                                                      uniq, size):
    """review-W W2: while root's upload of z.bin is on its way, another client stores the
    same bytes there, and root's request is refused (it never reached the store). The object
    is newer than root's upload began and has its bytes, yet it is not root's: the close
    fails, the other client's object stays, no row of the mount names it. 6 MiB: a
    multipart upload (its completion refused)."""
    with proxied_mount(stack, mount_factory, uniq,
                       fs={"foreign_grace_ms": "600000",
                           "part_size": str(5 << 20)}) as (m, px):
        key = f"{uniq}/z.bin"
        body = os.urandom(size)
        refuse = upload_to(key, REFUSED)
        theirs = []

        def rule(meth, path, h):
            act = refuse(meth, path, h)
            if act and not theirs:  # the other client wins the race
                theirs.append(m.s3.put_object(Bucket=m.reception_bucket, Key=key,
                                              Body=body)["ETag"].strip('"'))
            return act
        err = write_refused(m, px, key, body, rule)
        assert theirs, "the upload was not refused"
        assert err is not None, "close returned 0 with another client's object"
        only_theirs(m, key, theirs[0], body)


def test_a_lost_answer_is_recognised_by_the_uploads_tag(stack, mount_factory, uniq):
    """The other side of W2: root's PUT of z.bin lands and its answer is lost (500 after the
    write). The object carries root's upload tag and root's bytes: the close returns 0 and
    one live row of the mount logs it with the object's ETag."""
    with proxied_mount(stack, mount_factory, uniq) as (m, px):
        key = f"{uniq}/z.bin"
        body = os.urandom(4096)
        px.rule = upload_to(key, LOST)
        try:
            with open(m.path("inbox", key), "wb") as f:
                f.write(body)
        finally:
            px.rule = None
        assert any(act == "after" for _, _, act in px.log), "the upload was not answered 500"
        got = m.s3.get_object(Bucket=m.reception_bucket, Key=key)
        assert got["Body"].read() == body
        tag = got["Metadata"].get("custodyfs-upload", "")
        assert len(tag) == 32 and int(tag, 16) >= 0, got["Metadata"]
        rs = rows(m, key)
        assert len(rs) == 1 and rs[0]["origin"] == "mount", rs
        assert rs[0]["etag"] == got["ETag"].strip('"') and rs[0]["sha256"] == sha(body), rs