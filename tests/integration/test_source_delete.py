"""Deleting sources (issue 6 / issue 5, hostile review): the promotion's cleanup deletes the
promoted upload only, under the key lock a mount's reception commit takes, and a mount whose
object is deleted before its row uploads it again (bounded) instead of answering close() == 0
with nothing stored. The promotion (or the commit) is held at a FaultProxy at the right moment,
the competing upload/delete is done meanwhile; then every reception and storage row of the keys
(removed ones too) and the objects are checked with boto3 and psycopg2."""
import errno
import hashlib
import os
import threading
import time

import checks
from test_promote import dget, dhead, journal, project, promote, proxied, srows  # noqa: F401


def sha(b):
    return hashlib.sha256(b).hexdigest()


def md5(b):
    return hashlib.md5(b).hexdigest()


def _in_thread(fn, res):
    """Runs fn() in a thread; appends 0 or the errno it raised to res."""
    def go():
        try:
            fn()
            res.append(0)
        except OSError as e:
            res.append(e.errno)
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def _is(meth, path, want_meth, bucket, key):
    return meth == want_meth and path.split("?")[0] == "/%s/%s" % (bucket, key)


def _etag(m, key):
    h = checks.head(m, key)
    return h["ETag"].strip('"') if h else None


def _history(m, key):
    return [(r["sha256"], r["removed_at"] is None) for r in checks.rows(m, key)]


def _close_write(path, data):
    """open/write/close, the errno of close() raised as OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)


def test_promotion_cleanup_keeps_an_upload_that_landed_during_its_delete(
        stack, mount_factory, proxied, uniq):
    """Mount A promotes inbox/<key>; its cleanup's DELETE of the source is held at the proxy.
    Meanwhile mount B writes inbox/<key> again (new bytes): its PUT lands, its reception commit
    waits for the key lock the cleanup holds. Then the DELETE goes on. The new file must
    survive with its row live: where the store honours If-Match (Swift) the DELETE is refused
    and the new object kept; where it ignores it (s3rver) the new object is deleted, but B's
    commit then finds no object under the lock and uploads its spool again. Before: the DELETE
    was not under the key lock, B's row was committed first, and the promotion deleted the new
    object: a live row without its object."""
    px = proxied
    ma = mount_factory(config={"s3": {"endpoint": px.url}})
    mb = mount_factory(reset=False, name=uniq + "-b")
    p = project(ma, uniq)
    name = uniq + ".txt"
    old, new = b"the promoted bytes\n" * 300, b"a newer upload of the same name\n" * 300
    checks.drop(ma, name, old)
    held, go = threading.Event(), threading.Event()

    def rule(meth, path, h):
        if _is(meth, path, "DELETE", ma.reception_bucket, name) and not held.is_set():
            held.set()
            go.wait(60)  # then forwarded
        return None
    px.rule = rule
    res, wres = [], []
    t = _in_thread(lambda: promote(ma, name, p), res)
    try:
        assert held.wait(60), "the cleanup's DELETE was not seen"
        tw = _in_thread(lambda: _close_write(os.path.join(mb.inbox, name), new), wres)
        # B's PUT has landed (its commit is under way, or waits for the key lock)
        ma.wait_until(lambda: _etag(ma, name) == md5(new), timeout=30, what="B's upload")
        time.sleep(1.5)
    finally:
        go.set()
    t.join(90)
    tw.join(90)
    px.rule = None
    assert res == [0] and wres == [0]
    # storage: the promoted bytes, one row, the entry done
    key = p + "/" + name
    assert dget(ma, key) == old
    assert dhead(ma, key)["Metadata"]["sha256"] == sha(old)
    rows = srows(ma, key)
    assert [(r["outcome"], r["sha256"]) for r in rows] == [("copied", sha(old))]
    assert [j["state"] for j in journal(ma, key)] == ["done"]
    # reception: the promoted row removed, the new upload's row live, its object there
    rr = checks.rows(ma, name)
    assert _history(ma, name) == [(sha(old), False), (sha(new), True)], rr
    assert checks.get_object(ma, name) == new, "the newer upload's object was deleted"
    assert rr[1]["etag"] == _etag(ma, name)
    # (B's row may be committed before the promotion's 'done': the promoted row is then
    # removed as overwritten by B, which it was)
    assert rr[0]["removal_reason"] == "promoted to %s/%s" % (ma.storage_bucket, key) or \
        rr[0]["removal_reason"].startswith("overwritten by")
    assert rows[0]["reception_id"] == rr[0]["id"]
    # the event line of the cleanup
    ev = [ln for ln in ma.daemon_log().splitlines() if "event=source_delete_verified" in ln
          and "key=%s " % name in ln + " "]
    assert len(ev) == 1, ev
    assert "etag=%s" % md5(old) in ev[0] and "journal=" in ev[0]
    # Swift refuses the DELETE (If-Match) and the new object is kept; s3rver ignores If-Match
    # and deletes it: then B, whose commit found no object under the key lock, uploaded again
    if "result=deleted" in ev[0]:
        assert "deleted before its row was written" in mb.daemon_log()
    else:
        assert "result=kept" in ev[0] and "current_etag=%s" % md5(new) in ev[0], ev[0]


def test_promotion_cleanup_deletes_and_logs_verified(mount, uniq):
    """The ordinary case: the source goes, and the event line says it was verified gone."""
    m = mount
    p = project(m, uniq)
    name = uniq + ".txt"
    data = b"plain promotion\n" * 50
    checks.drop(m, name, data)
    promote(m, name, p)
    assert checks.get_object(m, name) is None
    assert _history(m, name) == [(sha(data), False)]
    assert [r["outcome"] for r in srows(m, p + "/" + name)] == ["copied"]
    ev = [ln for ln in m.daemon_log().splitlines() if "event=source_delete_verified" in ln
          and "key=%s " % name in ln + " "]
    assert len(ev) == 1, ev
    assert "result=deleted" in ev[0] and "after=absent" in ev[0]


def _delete_at_commit(m, px, name, times):
    """A rule: after each PUT of name (the upload), the next HEAD of it (the commit's check
    under the key lock) finds it deleted by another client, `times` times. Returns the list
    of PUTs seen."""
    puts, state = [], {"armed": False, "done": 0}

    def rule(meth, path, h):
        if _is(meth, path, "PUT", m.reception_bucket, name) and \
                "x-amz-copy-source" not in {k.lower() for k in h.keys()}:
            puts.append(path)
            state["armed"] = True
        elif _is(meth, path, "HEAD", m.reception_bucket, name) and state["armed"] and \
                state["done"] < times:
            state["armed"] = False
            state["done"] += 1
            m.s3.delete_object(Bucket=m.reception_bucket, Key=name)  # directly, not proxied
        return None
    px.rule = rule
    return puts


def test_object_deleted_before_its_row_is_uploaded_again(mount_factory, proxied, uniq):
    """The object this mount has just uploaded is deleted by another client before its
    reception row is committed: the commit's HEAD under the key lock finds none, the mount
    uploads its spool again and commits that: close() == 0 with the object and exactly one
    row (live). Before: the vanished upload was logged as a removed row and close() returned 0
    with nothing stored."""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    name = uniq + ".bin"
    data = os.urandom(9000)
    puts = _delete_at_commit(m, px, name, 1)
    _close_write(os.path.join(m.inbox, name), data)
    px.rule = None
    assert len(puts) == 2
    assert checks.get_object(m, name) == data
    assert _history(m, name) == [(sha(data), True)]
    assert checks.rows(m, name)[0]["etag"] == _etag(m, name)


def test_object_deleted_before_its_row_every_time_fails_close(mount_factory, proxied, uniq):
    """Deleted before its row every time: 1 + 3 uploads, then close() fails with EIO; no row
    for anything, no object (nothing claimed stored)."""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    name = uniq + ".bin"
    data = os.urandom(5000)
    puts = _delete_at_commit(m, px, name, 100)
    try:
        _close_write(os.path.join(m.inbox, name), data)
        rc = 0
    except OSError as e:
        rc = e.errno
    px.rule = None
    assert rc == errno.EIO
    assert len(puts) == 4
    assert checks.get_object(m, name) is None
    assert checks.rows(m, name) == []
