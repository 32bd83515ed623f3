"""`rm inbox/k` racing another mount's upload of k, two mounts sharing one store and one
database (issue 5, hostile review R1 and R2). Mount A goes through a FaultProxy so that one of
its requests can be held at the right moment; mount B talks to the store directly.

The invariant checked after every race, with independent clients (boto3, SQL), counting EVERY
reception_audit row of the key (removed ones too): the key's object exists exactly when one
live row describes it (same sha256 and ETag), and every upload is logged exactly once."""
import errno
import hashlib
import os
import threading

import pytest
from checks import get_object, head, rows, write
from faultproxy import FaultProxy

BOUND = 90  # seconds: any single operation here ends well within this


def grace(ms, config=None):
    """config with [fs] foreign_grace_ms = ms merged in (no foreign logging during a test)."""
    cfg = {sec: dict(kv) for sec, kv in (config or {}).items()}
    cfg.setdefault("fs", {})["foreign_grace_ms"] = str(ms)
    return cfg


def in_thread(fn, *args):
    """Runs fn(*args) in a thread; res["rc"] is 0 or the errno of the OSError it raised."""
    res = {}

    def run():
        try:
            fn(*args)
            res["rc"] = 0
        except OSError as e:
            res["rc"] = e.errno

    t = threading.Thread(target=run)
    t.start()
    return t, res


def race_mounts(mount_factory, pa, pb=None, key=None, body=None, on="a"):
    """Mounts host-a through FaultProxy pa and host-b (through pb, or straight to the store),
    one store and one database, no foreign logging during a test (grace 60 s). With key: the
    directory race/ made and key written (body) through mount `on` ("a" or "b")."""
    a = mount_factory(config=grace(60000, {"s3": {"endpoint": pa.url}}), name="host-a")
    b = mount_factory(reset=False, config=grace(60000, pb and {"s3": {"endpoint": pb.url}}),
                      name="host-b")
    if key is not None:
        m = a if on == "a" else b
        os.mkdir(os.path.join(m.inbox, "race"))
        write(os.path.join(m.inbox, key), body)
    return a, b


def release_join(px, *threads):
    """px lets its held requests go; each thread joined (BOUND seconds at the most)."""
    px.release.set()
    for t in threads:
        t.join(BOUND)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def etag_of(m, key):
    h = head(m, key)
    return h["ETag"].strip('"') if h else None


def on_key(key, method, action):
    """A proxy rule: action for method on key (not its multipart parts), else pass."""
    def rule(m, path, headers):
        p, _, q = path.partition("?")
        if m == method and p.endswith("/" + key) and "partNumber" not in q:
            return action
        return None
    return rule


def assert_consistent(m, key, uploads):
    """The object of key exists exactly when one live row describes it; each of uploads (the
    contents written, in order) has exactly one row. Returns (object bytes or None, rows)."""
    obj = get_object(m, key)
    r = rows(m, key)
    assert sorted(x["sha256"] for x in r) == sorted(sha(u) for u in uploads), r
    live = [x for x in r if x["removed_at"] is None]
    if obj is None:
        assert live == [], f"a live row claims an object the store does not hold: {live}"
    else:
        assert len(live) == 1, f"the object has {len(live)} live rows: {r}"
        assert live[0]["sha256"] == sha(obj), "the live row is not the object's"
        assert live[0]["etag"] == etag_of(m, key)
    return obj, r


@pytest.mark.parametrize("hold", ["late", "hold"])
def test_rm_and_another_mounts_commit_never_leave_a_row_that_lies(stack, mount_factory, hold):
    """R1. Mount A runs `rm k` (k written and logged before); A's DELETE is held at the proxy,
    after it took effect at the store ("late") or before it reaches it ("hold"). Meanwhile
    mount B writes k again: its upload lands and B commits its row. Then A's DELETE goes on.

    Before the fix, A deleted the object and marked k's rows removed in separate steps outside
    the key lock B's commit takes, so with "late" A marked B's new row removed while B's object
    stayed (a file no live row describes). Now A's delete and its marking happen under the key
    lock, so B's commit waits for A's rm and then finds B's object ("late": the rm came first)
    or none ("hold": the rm's DELETE removed B's uncommitted upload), and then uploads B's file
    again: B created it after the rm began, so the rm was not of B's file. Either way no row
    lies, nothing is logged twice, and B's file is not lost."""
    px = FaultProxy(stack.endpoint)
    key = "race/k.bin"
    old, new = os.urandom(3000), os.urandom(3001)
    try:
        a, b = race_mounts(mount_factory, px, key=key, body=old)
        assert len(rows(a, key)) == 1
        px.rule = on_key(key, "DELETE", (hold, 120))
        t_rm, res_rm = in_thread(os.unlink, os.path.join(a.inbox, key))
        a.wait_until(lambda: any(x[0] == "DELETE" for x in px.log), timeout=60,
                     what="a's DELETE at the proxy")
        if hold == "late":
            a.wait_until(lambda: get_object(a, key) is None, timeout=60, what="a's DELETE")
        t_w, res_w = in_thread(write, os.path.join(b.inbox, key), new)
        a.wait_until(lambda: get_object(b, key) == new, timeout=60, what="b's upload")
        t_w.join(3)  # b commits now, unless it waits for a's key lock
        release_join(px, t_rm, t_w)
        assert not t_rm.is_alive() and not t_w.is_alive()
    finally:
        px.rule = None
        px.close()
    assert res_rm.get("rc") == 0, f"a's rm: {res_rm.get('rc')}"
    obj, r = assert_consistent(a, key, [old, new])
    assert r[0]["sha256"] == sha(old) and r[0]["removed_at"] is not None
    # "late": the rm came first. "hold": the rm's DELETE, of the file before b's, reached the
    # store after b's upload and deleted it; b's commit, under the key lock after the rm's, finds
    # no object and uploads its file again (b created it after the rm began: the rm was not of
    # b's file). Either way b's file is the file now, with one live row.
    assert res_w.get("rc") == 0, f"b's write: {res_w.get('rc')}"
    assert obj == new, "b's file, written after the rm began, is the file now"


@pytest.mark.parametrize("hold", ["late", "hold"])
def test_rm_by_another_mount_wins_over_an_upload_not_yet_committed(stack, mount_factory, hold):
    """R2. Mount A opens k (written and logged before) and rewrites it; its upload is held at
    the proxy, after it landed at the store ("late") or before it reaches it ("hold"), so A's
    row is not committed. Mount B runs `rm k`. Then A's upload goes on and A commits.

    Before the fix the rm was silently undone ("hold": A's commit logged its file live again
    after the user removed it) or A's close reported 0 for bytes the rm had deleted ("late").

    The choice made: the rm wins, as for POSIX where a file unlinked while another process
    has it open is gone by name and that process's later writes never reach the name. It is
    not refused: B's user saw k and asked for it to go, and A's upload may be held for long.
    So afterwards the key has no object and no live row; A's upload is logged once, as a
    removed row (its bytes were written, then removed); and A's close reports ENOENT instead
    of 0, since its content is not stored. A file created after the rm is stored as usual."""
    px = FaultProxy(stack.endpoint)
    key = "race/k.bin"
    old, new, newer = os.urandom(3000), os.urandom(3001), os.urandom(3002)
    try:
        a, b = race_mounts(mount_factory, px, key=key, body=old, on="b")
        assert len(rows(a, key)) == 1
        px.rule = on_key(key, "PUT", (hold, 120))
        t_w, res_w = in_thread(write, os.path.join(a.inbox, key), new)
        if hold == "late":
            a.wait_until(lambda: get_object(a, key) == new, timeout=60, what="a's upload")
        else:
            a.wait_until(lambda: any(x[0] == "PUT" for x in px.log), timeout=60,
                         what="a's PUT at the proxy")
        os.unlink(os.path.join(b.inbox, key))
        release_join(px, t_w)
        assert not t_w.is_alive()
    finally:
        px.rule = None
        px.close()
    assert res_w.get("rc") == errno.ENOENT, f"a's close: {res_w.get('rc')}"
    obj, r = assert_consistent(a, key, [old, new])
    assert obj is None, "the rm won"
    assert [x["removed_at"] is not None for x in r] == [True, True], r
    assert not os.path.exists(os.path.join(a.inbox, key))
    assert not os.path.exists(os.path.join(b.inbox, key))

    def create_on_a():  # a's kernel may still cache k's entry for a second: ENOENT then
        try:
            write(os.path.join(a.inbox, key), newer)  # opened after the rm: stored
            return True
        except FileNotFoundError:
            return False
    a.wait_until(create_on_a, timeout=30, what="a file created after the rm")
    obj, r = assert_consistent(a, key, [old, new, newer])
    assert obj == newer
