"""O_EXCL across mounts (review-perm2 O5, issue 9): two mounts sharing the store and the
database each checked only their own view, so both of two O_CREAT|O_EXCL creates of one new
name succeeded. A new file's create now claims its name in the database (its file_attrs row,
unbound, claimed_by the mount, until claim_until; migration 11): exactly one create wins.

Checked through the mounts (errno, stat) and independently: file_attrs and file_attr_changes
with psycopg2, the bucket with boto3, and EVERY reception_audit row of a key (checks.rows)."""
import json
import os
import subprocess
import time

from checks import rows
from test_perms import (A, B, FOREIGN, LONG_TTL, as_user, attrs_row, changes, open_to_others,
                        two_mounts)

EXCL = "os.O_WRONLY | os.O_CREAT | os.O_EXCL"
PLAIN = "os.O_WRONLY | os.O_CREAT"

# One racer: for each path, at start + i * 0.5 s (wall clock, shared with the other racer),
# open(O_CREAT|O_EXCL), write the tag, hold it 0.3 s, close. Prints "ok" or the errno name.
_RACE = r"""
import errno, json, os, sys, time
start, tag = float(sys.argv[1]), sys.argv[2].encode()
out = []
for i, p in enumerate(sys.argv[3:]):
    time.sleep(max(0.0, start + i * 0.5 - time.time()))
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))
        continue
    try:
        os.write(fd, tag)
        time.sleep(0.3)
        os.close(fd)
        out.append("ok")
    except OSError as e:
        out.append("close " + errno.errorcode.get(e.errno, str(e.errno)))
print(json.dumps(out))
"""

# Holds a new file open (O_EXCL, the tag written) until a line arrives on stdin, then closes.
_HOLD = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, sys.argv[2].encode())
print("open", flush=True)
sys.stdin.readline()
os.close(fd)
print("closed", flush=True)
"""


def _as(uid):
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/usr/bin/python3"]


def race(*racers):
    """racers: (uid, [paths], tag); all start together. Returns each racer's results."""
    start = time.time() + 2.0  # setpriv + python start-up
    procs = [subprocess.Popen(_as(uid) + ["-c", _RACE, repr(start), tag, *paths],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for uid, paths, tag in racers]
    out = []
    for p in procs:
        o, e = p.communicate(timeout=120)
        assert p.returncode == 0, e
        out.append(json.loads(o))
    return out


def hold(uid, path, tag):
    p = subprocess.Popen(_as(uid) + ["-c", _HOLD, path, tag], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line == "open\n", (line, p.stderr.read() if p.poll() is not None else "")
    return p


def release(p):
    o, e = p.communicate("close\n", timeout=120)
    assert p.returncode == 0 and o == "closed\n", (o, e)


def body(m, key):
    return m.s3.get_object(Bucket=m.reception_bucket, Key=key)["Body"].read()


def creates(m, key):
    return [c for c in changes(m, key, every=True) if c["op"] == "create"]


def assert_stored_as(m, key, uid, data):
    """key is uid's file with data: its one reception row, its row bound, no claim left."""
    assert body(m, key) == data
    (r,) = rows(m, key)
    assert r["removed_at"] is None and r["received_uid"] == uid, r
    ar = attrs_row(m, key)
    assert (ar["uid"], ar["gid"]) == (uid, uid) and ar["etag"] == r["etag"], ar
    assert ar.get("claimed_by") is None and ar.get("claim_until") is None, ar


def claim(m, key):
    return m.sql_dicts("select claimed_by, claim_until, claim_until > now() as live,"
                       " extract(epoch from claim_until - now()) as left_s from file_attrs"
                       " where bucket = %s and object_key = %s", (m.reception_bucket, key))


def backdate(m, key):
    """As if the lease ran out (15 minutes without a renewal)."""
    n = m.sql("update file_attrs set claim_until = now() - interval '1 second'"
              " where bucket = %s and object_key = %s and etag is null returning 1",
              (m.reception_bucket, key))
    assert len(n) == 1


def test_o_excl_creates_racing_on_two_mounts_have_one_winner(mount_factory, uniq):
    """A on mount a and B on mount b create the same new names with O_CREAT|O_EXCL at the same
    moment: for each name exactly one succeeds, the other gets EEXIST; the winner's content,
    one reception row (the winner's), attributes the winner's, one 'create' logged."""
    a, b = two_mounts(mount_factory)
    keys = [f"{uniq}-{i}.txt" for i in range(6)]
    ra, rb = race((A, [a.path("inbox", k) for k in keys], "A"),
                  (B, [b.path("inbox", k) for k in keys], "B"))
    for k, x, y in zip(keys, ra, rb):
        assert sorted([x, y]) == ["EEXIST", "ok"], (k, x, y)
        uid, tag = (A, b"A") if x == "ok" else (B, b"B")
        assert_stored_as(a, k, uid, tag)
        assert [c["changed_uid"] for c in creates(a, k)] == [uid], k
        for m in (a, b):
            m.wait_until(lambda: os.stat(m.path("inbox", k)).st_uid == uid, timeout=10,
                         what=f"{k} is {uid}'s on {m.name}")


def test_plain_create_never_takes_another_users_live_claim(mount_factory, uniq):
    """A writes a new file on mount a (open, not stored yet). On mount b, B's O_EXCL create of
    that name gets EEXIST and B's plain O_CREAT gets EACCES (the sticky inbox/: only the owner
    or root may replace it); A's file is then stored as A's, untouched."""
    a, b = two_mounts(mount_factory)
    key = f"{uniq}.txt"
    fb = b.path("inbox", key)
    p = hold(A, a.path("inbox", key), "A wrote this")
    try:
        got = as_user(B, f"os.close(os.open({fb!r}, {EXCL}))",
                      f"os.close(os.open({fb!r}, {PLAIN}))",
                      f"os.close(os.open({fb!r}, {PLAIN} | os.O_TRUNC))",
                      f"open({fb!r}, 'w').write('evil')")
        assert got == ["EEXIST", "EACCES", "EACCES", "EACCES"], got
        (c,) = claim(a, key)
        assert c["live"] and c["claimed_by"].startswith(os.uname().nodename + ":"), c
        assert (attrs_row(a, key)["uid"], attrs_row(a, key)["mode"]) == (A, 0o644)
        assert [x["changed_uid"] for x in creates(a, key)] == [A]
    finally:
        release(p)
    assert_stored_as(a, key, A, b"A wrote this")


def test_a_dead_mounts_claim_lapses_and_may_be_taken_over(mount_factory, uniq):
    """Mount a dies (SIGKILL) while A's new file is open there, never stored: its claim blocks
    the name (EEXIST for O_EXCL, EACCES for B's plain create) until its lease (15 minutes)
    runs out; then B's O_EXCL create on mount b takes it and B's file is stored as B's."""
    a, b = two_mounts(mount_factory)
    key = f"{uniq}.txt"
    fb = b.path("inbox", key)
    p = hold(A, a.path("inbox", key), "A, never stored")
    a.crash()
    p.kill()
    p.communicate(timeout=30)
    got = as_user(B, f"os.close(os.open({fb!r}, {EXCL}))",
                  f"os.close(os.open({fb!r}, {PLAIN}))")
    assert got == ["EEXIST", "EACCES"], got
    (c,) = claim(b, key)
    assert c["live"] and 870 < c["left_s"] <= 900, c  # [fs] claim_lease: 900 s by default
    assert rows(b, key) == [] and attrs_row(b, key)["uid"] == A
    backdate(b, key)
    got = as_user(B, f"(lambda fd: (os.write(fd, b'B took it'), os.close(fd)))"
                     f"(os.open({fb!r}, {EXCL}))")
    assert got == [[9, None]], got
    assert_stored_as(b, key, B, b"B took it")
    assert [x["changed_uid"] for x in creates(b, key)] == [A, B]


def test_a_claim_held_open_longer_than_its_lease_is_renewed(mount_factory, uniq):
    """A file open on its mount longer than the lease (claim_lease 4 s there: renewed every
    second) keeps its claim: backdated as if it had run out, the holder renews it, and B's
    O_EXCL / plain creates on mount b still fail (EEXIST, EACCES), past the lease too."""
    lease = {"fs": dict(FOREIGN["fs"], claim_lease="4")}
    a = mount_factory(config=lease, opts="allow_other", name="a")
    b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
    for m in (a, b):
        open_to_others(m)
    key = f"{uniq}.txt"
    fb = b.path("inbox", key)
    p = hold(A, a.path("inbox", key), "A, a long write")
    try:
        (c,) = claim(a, key)
        assert c["live"] and c["left_s"] <= 4, c
        backdate(a, key)
        a.wait_until(lambda: claim(a, key)[0]["live"], timeout=5, what="claim renewed")
        for _ in range(2):
            got = as_user(B, f"os.close(os.open({fb!r}, {EXCL}))",
                          f"os.close(os.open({fb!r}, {PLAIN}))")
            assert got == ["EEXIST", "EACCES"], got
            time.sleep(5)  # past the lease: renewed meanwhile
        assert claim(a, key)[0]["live"]
    finally:
        release(p)
    assert_stored_as(a, key, A, b"A, a long write")


def test_a_failed_close_frees_the_new_files_name(stack, mount_factory, uniq):
    """A's new file on mount a cannot be stored (every upload of it gets 503): its close fails
    and its last release drops its claim (still unbound), so the name is free: no row is
    left, and B's O_EXCL create on mount b then succeeds. (cp retried after a failed close:
    test_faults.py::test_s3_503_fails_bounded_then_recovers.)"""
    from faultproxy import SLOWDOWN, FaultProxy
    px = FaultProxy(stack.endpoint)
    a = None
    try:
        cfg = {"s3": {"endpoint": px.url}, "fs": FOREIGN["fs"]}
        a = mount_factory(config=cfg, opts="allow_other", name="a")
        b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
        for m in (a, b):
            open_to_others(m)
        key = f"{uniq}.bin"
        fa, fb = a.path("inbox", key), b.path("inbox", key)
        px.rule = lambda meth, path, h: (
            ("status", 503, SLOWDOWN) if meth in ("PUT", "POST")
            and path.split("?")[0].endswith("/" + key) else None)
        got = as_user(A, f"(lambda fd: (os.write(fd, b'lost'), os.close(fd)))"
                         f"(os.open({fa!r}, {EXCL}))")
        assert isinstance(got[0], str) and got[0].startswith("E"), got  # the close failed
        px.rule = None
        a.wait_until(lambda: attrs_row(a, key) is None, timeout=10, what="claim dropped")
        assert rows(a, key) == []
        assert [c["op"] for c in changes(a, key, every=True)] == ["create", "drop"]
        got = as_user(B, f"(lambda fd: (os.write(fd, b'B'), os.close(fd)))"
                         f"(os.open({fb!r}, {EXCL}))")
        assert got == [[1, None]], got
        assert_stored_as(a, key, B, b"B")
    finally:
        px.rule = None
        px.release.set()
        if a is not None:
            a.unmount(check=False)  # before its store endpoint goes
        px.close()


def test_o_excl_create_over_another_mounts_directory_unseen_in_the_listing(mount_factory, uniq):
    """Mount b's listing (TTL 30 s) does not show A's directory made on mount a; the name has a
    row (the directory's, no claim) and no object: B's O_EXCL create of it on b fails with
    EEXIST and the directory's row stays A's."""
    a, b = two_mounts(mount_factory, LONG_TTL)
    d = f"{uniq}-d"
    fb = b.path("inbox", d)
    assert as_user(B, f"os.listdir({b.inbox!r}).clear()") == ["ok"]  # b's listing: fresh
    assert as_user(A, f"os.mkdir({a.path('inbox', d)!r})") == ["ok"]
    assert as_user(B, f"os.close(os.open({fb!r}, {EXCL}))") == ["EEXIST"]
    r = attrs_row(a, d)
    assert (r["uid"], r["gid"], r["mode"]) == (A, A, 0o755), r
    assert [c["op"] for c in changes(a, d, every=True)] == ["mkdir"]
    assert rows(a, d) == []


def test_create_over_a_foreign_upload_unseen_claims_and_logs_nothing(mount_factory, uniq):
    """issue 10: a create's HEAD runs while its claim's transaction is under way, which waits
    for the HEAD before its COMMIT. An object uploaded by another route after the listing (the
    kernel's lookup said "no such name") is found by that HEAD: O_EXCL fails with EEXIST, a
    plain create opens the object as it is, and the claim is rolled back: no row in file_attrs,
    no 'create' (nor 'drop') in file_attr_changes, no reception row from the mount, the object
    untouched."""
    m = mount_factory(config=LONG_TTL)
    key = f"{uniq}.bin"
    f = m.path("inbox", key)
    assert key not in os.listdir(m.inbox)  # the listing: fresh, without the key (TTL 30 s)
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=b"from the console")
    try:
        os.close(os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        raise AssertionError("O_EXCL create over a stored object succeeded")
    except FileExistsError:
        pass
    os.close(os.open(f, os.O_WRONLY | os.O_CREAT, 0o644))  # opened as it is, nothing written
    assert body(m, key) == b"from the console"
    assert attrs_row(m, key) is None
    assert changes(m, key, every=True) == []
    for r in rows(m, key):  # the foreign upload may have been logged meanwhile: not as ours
        assert r["origin"] == "foreign" and r["removed_at"] is None, r
