"""Hostile review revA (w/int), part 2: rm / commit / rename races (F3, F4, F5, F8).

Each test states the interleaving; the invariant is test_rm_races.assert_consistent's (the
key's object exists exactly when one live row describes it, every upload logged once), checked
with independent clients (boto3, SQL), counting every reception_audit row of the key."""
import errno
import os
import time

import pytest

from checks import get_object, live_rows, rows, write
from faultproxy import FaultProxy
from test_rm_races import (BOUND, assert_consistent, in_thread, on_key, race_mounts, release_join,
                           sha)


@pytest.mark.parametrize("hold", ["hold", "late"])
def test_rm_after_open_wins_even_when_its_delete_is_slow(stack, mount_factory, hold):
    """revA F3. R2 of test_rm_races with the rm's DELETE slow instead of the writer's PUT.
    Mount B opens k (stored) and rewrites it; 0.3 s later mount A runs `rm k`, whose DELETE is
    held at A's proxy (under the key lock); B closes: its PUT lands, its commit waits for A's
    key lock; then A's DELETE goes on (deleting B's upload) and A commits.

    R2's rule: the rm came after B's open, so it wins: B's close reports ENOENT, no object, no
    live row. On w/int B's guard compares the removal with "now - based_ms_ago", based_ms_ago
    measured before the lock wait: the 3 s wait makes B's open look 3 s younger than it is,
    the removal is not seen, the ordinary check finds no object (-ENODATA) and the re-upload
    loop puts B's file back ("hold"; its second commit, measured again, sees the removal), or
    ("late": the DELETE took effect before B's PUT, so B's object stands) the check finds B's
    object and logs it live: close 0, k there again after A's rm returned 0."""
    px = FaultProxy(stack.endpoint)
    key = "race/s.bin"
    old, new = os.urandom(3000), os.urandom(3001)
    try:
        a, b = race_mounts(mount_factory, px, key=key, body=old, on="b")
        assert os.path.exists(os.path.join(a.inbox, key))
        fd = os.open(os.path.join(b.inbox, key), os.O_WRONLY | os.O_TRUNC)
        os.write(fd, new)
        time.sleep(0.3)
        px.rule = on_key(key, "DELETE", (hold, 120))
        t_rm, res_rm = in_thread(os.unlink, os.path.join(a.inbox, key))
        a.wait_until(lambda: any(x[0] == "DELETE" for x in px.log), timeout=60,
                     what="a's DELETE at the proxy")
        if hold == "late":  # the DELETE took effect; a's answer (and key lock) held
            a.wait_until(lambda: get_object(b, key) is None, timeout=60, what="a's DELETE")
        t_c, res_c = in_thread(os.close, fd)
        a.wait_until(lambda: get_object(b, key) == new, timeout=60, what="b's upload")
        time.sleep(3)  # b's commit waits for a's key lock meanwhile
        release_join(px, t_rm, t_c)
        assert not t_rm.is_alive() and not t_c.is_alive()
    finally:
        px.rule = None
        px.close()
    assert res_rm.get("rc") == 0, f"a's rm: {res_rm.get('rc')}"
    obj, r = assert_consistent(a, key, [old, new])
    assert res_c.get("rc") == errno.ENOENT, f"b's close: {res_c.get('rc')} (the rm came after b's open)"
    assert obj is None, "the rm, after b's open, won"



@pytest.mark.both_backends  # depends on what the store does (copies, parts, ETags)
def test_rename_never_gives_the_copy_hashes_of_other_bytes(stack, mount_factory):
    """revA F8. Mount A renames f to g (f stored, not open on A); its CopyObject is held at
    A's proxy. Meanwhile mount B rewrites f with other bytes of the same size: B's PUT lands
    (its answer held at B's proxy, so B has no row yet). Then A's copy goes on: it copies B's
    bytes to g; A's rows give g the hashes of f's live row (the old bytes: sizes agree) and
    A deletes f (B's upload) outside the key lock. Then B's answer comes back: B finds no
    object and uploads again.

    On w/int g's live row carries the sha256 of bytes g never held (a hash not computed from
    its bytes). Every live row must describe its object."""
    pa, pb = FaultProxy(stack.endpoint), FaultProxy(stack.endpoint)
    src, dst = "race/f.bin", "race/g.bin"
    old, new = os.urandom(3000), os.urandom(3000)
    try:
        a, b = race_mounts(mount_factory, pa, pb, key=src, body=old)
        assert os.path.exists(os.path.join(b.inbox, src))
        pa.rule = on_key(dst, "PUT", ("hold", 120))
        t_mv, res_mv = in_thread(os.rename, os.path.join(a.inbox, src),
                                 os.path.join(a.inbox, dst))
        a.wait_until(lambda: any(x[0] == "PUT" for x in pa.log), timeout=60,
                     what="a's copy at the proxy")
        pb.rule = on_key(src, "PUT", ("late", 120))
        t_w, res_w = in_thread(write, os.path.join(b.inbox, src), new)
        a.wait_until(lambda: get_object(a, src) == new, timeout=60, what="b's upload")
        pa.release.set()
        t_mv.join(BOUND)
        pb.release.set()
        t_w.join(BOUND)
        assert not t_mv.is_alive() and not t_w.is_alive()
    finally:
        pa.rule = pb.rule = None
        pa.close()
        pb.close()
    print("a's rename:", res_mv, "b's write:", res_w)
    for key in (src, dst):
        obj = get_object(a, key)
        live = live_rows(a, key)
        if obj is None:
            assert live == [], f"{key}: a live row claims an object the store does not hold"
        else:
            assert len(live) == 1, f"{key}: {len(live)} live rows: {rows(a, key)}"
            assert live[0]["sha256"] == sha(obj), \
                f"{key}: its live row's sha256 is not its bytes' (old: {sha(old)}, new: {sha(new)})"



def test_rename_source_delete_spares_an_upload_committed_meanwhile(stack, mount_factory):
    """revA F5. Mount A renames f to g (f stored, not open on A); its DELETE of f (after the
    copy and the rows) is held at A's proxy. Meanwhile mount B writes f again and its close
    returns 0 (object and live row committed: A holds no key lock then). Then A's DELETE goes
    on: on w/int it is unconditional and outside the key lock, so it deletes B's new file:
    B's live row claims an object the store does not hold."""
    pa = FaultProxy(stack.endpoint)
    src, dst = "race/f.bin", "race/g.bin"
    old, new = os.urandom(3000), os.urandom(3001)
    try:
        a, b = race_mounts(mount_factory, pa, key=src, body=old)
        assert os.path.exists(os.path.join(b.inbox, src))
        pa.rule = on_key(src, "DELETE", ("hold", 120))
        t_mv, res_mv = in_thread(os.rename, os.path.join(a.inbox, src),
                                 os.path.join(a.inbox, dst))
        a.wait_until(lambda: any(x[0] == "DELETE" for x in pa.log), timeout=60,
                     what="a's DELETE of the source at the proxy")
        t_w, res_w = in_thread(write, os.path.join(b.inbox, src), new)
        a.wait_until(lambda: get_object(b, src) == new, timeout=60, what="b's upload")
        t_w.join(3)  # b commits now (w/int), unless it waits for a's key lock
        release_join(pa, t_mv, t_w)
        assert not t_mv.is_alive() and not t_w.is_alive()
    finally:
        pa.rule = None
        pa.close()
    print("a's rename:", res_mv, "b's write:", res_w)
    assert res_w.get("rc") == 0, f"b's write: {res_w.get('rc')}"
    obj, r = assert_consistent(a, src, [old, new])
    assert obj == new, "b's file, written (close 0) after the rename's rows, is lost"




def test_rm_wins_even_when_deleting_the_late_upload_fails(stack, mount_factory):
    """revA F4. R2 "hold" of test_rm_races (A's upload held before the store, B's rm, then A's
    upload lands and A commits), except that A's DELETE of its own late upload (the rm won)
    fails once (500 from the store). A's commit then fails and its overwrite goes to the undo,
    which on w/int logs it late as the LIVE row without asking about the removal: 2 s later the
    file B removed is back (A's close reported an error, B's rm returned 0)."""
    from faultproxy import INTERNAL
    px = FaultProxy(stack.endpoint)
    key = "race/u.bin"
    old, new = os.urandom(3000), os.urandom(3001)

    def rule_put_then_delete_fails(m, path, headers):
        p, _, q = path.partition("?")
        if not p.endswith("/" + key) or "partNumber" in q:
            return None
        if m == "DELETE":
            return ("status", 500, INTERNAL)
        if m == "PUT":
            return ("hold", 120)
        return None
    try:
        a, b = race_mounts(mount_factory, px, key=key, body=old, on="b")
        assert len(rows(a, key)) == 1
        px.rule = on_key(key, "PUT", ("hold", 120))
        t_w, res_w = in_thread(write, os.path.join(a.inbox, key), new)
        a.wait_until(lambda: any(x[0] == "PUT" for x in px.log), timeout=60,
                     what="a's PUT at the proxy")
        os.unlink(os.path.join(b.inbox, key))
        px.rule = rule_put_then_delete_fails
        release_join(px, t_w)
        assert not t_w.is_alive()
        px.rule = None  # the store answers again; the undo worker retries in 2 s, 4 s...
        time.sleep(10)
    finally:
        px.rule = None
        px.close()
    print("a's close:", res_w)
    assert res_w.get("rc") != 0, "a's content was not stored: its close must say so"
    obj, r = assert_consistent(a, key, [old, new])
    assert obj is None, "the rm (after a's open) won: a's late upload must not come back"

