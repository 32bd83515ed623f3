"""Hostile review revB (claims, attributes): failing tests for findings R1..R8 of
/work/notes/review-revB.md. Each asserts the behaviour the product contract requires."""
import json
import os
import stat
import subprocess
import time

import psycopg2
import pytest
from checks import rows, write
from races import crash_held, remount, rename_in_thread

from faultproxy import SLOWDOWN, FaultProxy
from test_perms import A, B, FOREIGN, LONG_TTL, as_user, attrs_row, open_to_others, rd, two_mounts
from test_rename_attrs import etag, is_copy_to, mode_owner, secret

EXCL = "os.O_WRONLY | os.O_CREAT | os.O_EXCL"
PLAIN = "os.O_WRONLY | os.O_CREAT"

# Holds a file open (flags, mode given), tag written, until a line on stdin; then closes and
# prints "closed" or the close's errno name.
_HOLD = r"""
import errno, os, sys
os.umask(0)
fd = os.open(sys.argv[1], eval(sys.argv[3]), int(sys.argv[4], 8))
os.write(fd, sys.argv[2].encode())
print("open", flush=True)
sys.stdin.readline()
try:
    os.close(fd)
    print("closed", flush=True)
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)
"""


def hold(uid, path, tag, flags=EXCL, mode=0o600):
    p = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                          "/usr/bin/python3", "-c", _HOLD, path, tag, flags, f"{mode:o}"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    line = p.stdout.readline()
    assert line == "open\n", (line, p.stderr.read() if p.poll() is not None else "")
    return p


def release(p):
    o, e = p.communicate("close\n", timeout=180)
    assert p.returncode == 0, e
    return o.strip()


def claim(m, key):
    return m.sql_dicts("select claimed_by, claim_until > now() as live, uid, mode, etag"
                       " from file_attrs where bucket = %s and object_key = %s",
                       (m.reception_bucket, key))


def while_held(a, key, fa, op):
    """B's op while A's new 0600 file fa ("A secret") is held open on mount a: (op's result,
    key's claim rows meanwhile, how A's close went)."""
    p = hold(A, fa, "A secret")
    try:
        got = as_user(B, op)
        during = claim(a, key)
    finally:
        closed = release(p)
    return got, during, closed


def lapse_claim(a, key):
    """key's live claim (its row with no object yet) lapsed now, as if its lease had run out;
    returns a row (1,) per claim lapsed."""
    return a.sql("update file_attrs set claim_until = now() - interval '1 second'"
                 " where bucket = %s and object_key = %s and etag is null returning 1",
                 (a.reception_bucket, key))


def shown(path):
    st = os.stat(path)
    return st.st_uid, stat.S_IMODE(st.st_mode)


def test_rename_onto_another_mounts_live_claim(mount_factory, uniq):
    """R1: A writes a new 0600 file on mount a (open, not stored: its name is A's live claim).
    On mount b, B renames its own file onto that name: the name is A's file (sticky inbox/),
    EPERM; A's file is then stored as A's 0600 file, unreadable by B."""
    a, b = two_mounts(mount_factory)
    key, mine = f"{uniq}.txt", f"{uniq}-b.txt"
    fa, fb, mb = a.path("inbox", key), b.path("inbox", key), b.path("inbox", mine)
    assert as_user(B, f"open({mb!r}, 'w').write('B file')") == ["ok"]
    got, during, closed = while_held(a, key, fa, f"os.rename({mb!r}, {fb!r})")
    ar = attrs_row(a, key)
    res = {"rename": got, "close": closed, "claim during": [(c["uid"], c["live"]) for c in during],
           "row": ar and (ar["uid"], ar["mode"], ar["etag"] is not None),
           "shown on a": shown(fa), "B reads": as_user(B, rd(fa))}
    assert res == {"rename": ["EPERM"], "close": "closed", "claim during": [(A, True)],
                   "row": (A, 0o600, True), "shown on a": (A, 0o600),
                   "B reads": ["EACCES"]}, res


def test_mkdir_over_another_mounts_live_claim(mount_factory, uniq):
    """R2: A's new 0600 file open on mount a; B's mkdir of that name on mount b must fail
    (EEXIST) and leave A's claim; A's file is stored as A's 0600 file."""
    a, b = two_mounts(mount_factory)
    key = f"{uniq}.txt"
    fa, fb = a.path("inbox", key), b.path("inbox", key)
    got, during, closed = while_held(a, key, fa, f"os.mkdir({fb!r}, 0o777)")
    ar = attrs_row(a, key)
    res = {"mkdir": got, "close": closed, "claim during": [(c["uid"], c["live"]) for c in during],
           "row": ar and (ar["uid"], ar["mode"])}
    assert res == {"mkdir": ["EEXIST"], "close": "closed", "claim during": [(A, True)],
                   "row": (A, 0o600)}, res


def test_plain_create_over_another_mounts_directory_unseen(mount_factory, uniq):
    """R3: mount b's listing predates A's directory d made on mount a; B's plain
    open(O_CREAT) of d on b must not take d's row (EISDIR, as on any filesystem)."""
    a, b = two_mounts(mount_factory, LONG_TTL)
    d = f"{uniq}-d"
    fb = b.path("inbox", d)
    assert as_user(B, f"os.listdir({b.inbox!r}).clear()") == ["ok"]
    assert as_user(A, f"os.mkdir({a.path('inbox', d)!r})") == ["ok"]
    got = as_user(B, f"os.close(os.open({fb!r}, {PLAIN}))")
    r = attrs_row(a, d)
    res = {"create": got, "row": (r["uid"], r["mode"]),
           "objects": sorted(o["Key"] for o in a.s3.list_objects_v2(
               Bucket=a.reception_bucket, Prefix=d).get("Contents", []))}
    assert res == {"create": ["EISDIR"], "row": (A, 0o755), "objects": [f"{d}/"]}, res


def test_release_unclaim_never_drops_a_newer_claim_of_the_name(stack, mount_factory, uniq):
    """R4: A's new file's upload fails (503), its close fails, its last release drops its
    claim (DELETE ... claimed_by = the mount). That DELETE is held (a FOR KEY SHARE lock on
    the row, as a slow database would) while A creates the name again on the same mount (0600):
    the old file's unclaim must not remove the new file's claim; the new file is stored with
    its row (A, 0600), unreadable by B."""
    px = FaultProxy(stack.endpoint)
    m = None
    lock = None
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url}, "fs": FOREIGN["fs"]},
                          opts="allow_other")
        open_to_others(m)
        key = f"{uniq}.bin"
        f = m.path("inbox", key)
        p1 = hold(A, f, "first, never stored")
        lock = psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="custody",
                                dbname="custody")
        with lock.cursor() as cur:
            cur.execute("select 1 from file_attrs where bucket = %s and object_key = %s"
                        " for key share", (m.reception_bucket, key))
            assert cur.fetchall() == [(1,)]
        px.rule = lambda meth, path, h: (
            ("status", 503, SLOWDOWN) if meth in ("PUT", "POST")
            and path.split("?")[0].endswith("/" + key) else None)
        first = release(p1)
        assert first.startswith("E"), first  # the close failed

        def unclaim_waiting():
            return m.sql_value("select count(*) from pg_locks where not granted"
                               " and locktype in ('transactionid', 'tuple')") > 0
        m.wait_until(unclaim_waiting, timeout=90, what="the release's unclaim waiting")
        px.rule = None
        time.sleep(1.2)  # the kernel's entry for the name (entry_timeout 1 s) expires
        p2 = hold(A, f, "second, A's secret")  # O_EXCL, 0600: the name is free
        lock.commit()  # the held unclaim goes on now
        m.wait_until(lambda: not unclaim_waiting(), timeout=15, what="unclaim done")
        during = claim(m, key)
        second = release(p2)
        ar = attrs_row(m, key)
        res = {"claim during": [(c["uid"], c["mode"], c["live"]) for c in during],
               "close": second, "row": ar and (ar["uid"], ar["mode"], ar["etag"] is not None),
               "shown": shown(f), "B reads": as_user(B, rd(f))}
        assert res == {"claim during": [(A, 0o600, True)], "close": "closed",
                       "row": (A, 0o600, True), "shown": (A, 0o600),
                       "B reads": ["EACCES"]}, res
    finally:
        if lock is not None:
            lock.close()
        px.rule = None
        px.release.set()
        if m is not None:
            m.unmount(check=False)
        px.close()


def test_crash_during_the_copy_over_a_target_keeps_the_targets_attributes(proxied):
    """R5: renaming x over an existing 0600 target y, the daemon dies while the store's copy
    onto y is in flight (never landed): y still holds its own content and must still show its
    own mode and owner after a remount, never the defaults (0644, readable by all)."""
    m, px, d = proxied
    frm, to = f"{d}/x.txt", f"{d}/y.txt"
    secret(m, frm, b"new content", 0o600, 2001, 2002)
    secret(m, to, b"old secret of y", 0o600, 2003, 2004)
    ey = etag(m, to)
    copy = is_copy_to(to)
    px.rule = lambda meth, path, h: ("hang",) if copy(meth, path, h) else None
    t, out = rename_in_thread(m, frm, to)
    m.wait_until(lambda: any(meth == "PUT" and a == "hang" for meth, _, a in px.log),
                 timeout=30, what="the copy held")
    crash_held(m, px, t)
    remount(m, px)
    assert etag(m, to) == ey
    assert open(m.path("inbox", to), "rb").read() == b"old secret of y"
    assert mode_owner(m.path("inbox", to)) == (0o600, 2003, 2004)


def test_published_temp_file_row_is_bound_and_unclaimed(mount_factory, uniq):
    """R8: a local temp file (*.tmp) renamed to its final name is stored; its row there must be
    bound to the stored object and carry no claim (as any stored file's)."""
    m = mount_factory(config=FOREIGN)
    tmp, final = m.path("inbox", f"{uniq}.tmp"), m.path("inbox", f"{uniq}.txt")
    write(tmp, b"published")
    os.rename(tmp, final)
    r = attrs_row(m, f"{uniq}.txt")
    e = m.s3.head_object(Bucket=m.reception_bucket, Key=f"{uniq}.txt")["ETag"].strip('"')
    res = {"etag": r["etag"], "claimed_by": r["claimed_by"], "claim_until": r["claim_until"]}
    assert res == {"etag": e, "claimed_by": None, "claim_until": None}, res


def test_plain_create_of_a_live_claim_keeps_its_mode(mount_factory, uniq):
    """R6: A's new 0600 file open on mount a; A's own plain open(O_CREAT, 0777) of the name on
    mount b (allowed by the permission checks: its owner) fails with EBUSY (the name is being
    written by another mount) and changes nothing: the claim stays mount a's, its mode 0600,
    and A's close stores A's content under A's 0600 row."""
    a, b = two_mounts(mount_factory)
    key = f"{uniq}.txt"
    fa, fb = a.path("inbox", key), b.path("inbox", key)
    p = hold(A, fa, "A secret")
    try:
        before = claim(a, key)
        got = as_user(A, f"os.close(os.open({fb!r}, {PLAIN}, 0o777))")
        during = claim(a, key)
    finally:
        closed = release(p)
    r = attrs_row(a, key)
    e = a.s3.head_object(Bucket=a.reception_bucket, Key=key)["ETag"].strip('"')
    res = {"create": got, "mode during": [c["mode"] for c in during],
           "claim kept": [c["claimed_by"] for c in during] == [c["claimed_by"] for c in before],
           "close": closed,
           "stored": a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read(),
           "row": r and (r["uid"], r["mode"], r["etag"] == e), "B reads": as_user(B, rd(fa))}
    assert res == {"create": ["EBUSY"], "mode during": [0o600], "claim kept": True,
                   "close": "closed", "stored": b"A secret", "row": (A, 0o600, True),
                   "B reads": ["EACCES"]}, res


def test_a_lapsed_claim_taken_over_never_gets_the_open_files_content(mount_factory, uniq):
    """R7: A's new 0600 file is open on mount a; its claim lapses (backdated, as if mount a
    could not renew it for claim_lease) and B's O_EXCL create on mount b takes the name (B's
    file held open). A's close then stores A's content: it must never be shown as B's file
    (B owning A's content, reading it).
    What A's close does (SPEC §2: durable at close, last writer wins): its upload is the live
    object and its close returns 0; the bind checks the claimer (file_attrs.claimed_by, the
    create's 'claimer#n' token), finds B's claim, and makes the row A's again (A's create's
    owner and mode, bound to A's object, logged 'create'), never B's row on A's bytes. B's
    later close is then the last writer and does the same for B's content."""
    a, b = two_mounts(mount_factory)
    key = f"{uniq}.txt"
    fa, fb = a.path("inbox", key), b.path("inbox", key)
    pa = hold(A, fa, "A secret")
    n = lapse_claim(a, key)
    assert len(n) == 1
    pb = hold(B, fb, "B", EXCL, 0o644)
    try:
        closed = release(pa)
        ar = attrs_row(a, key)
        e = a.s3.head_object(Bucket=a.reception_bucket, Key=key)["ETag"].strip('"')
        res = {"close": closed,
               "A's content bound to B's row": ar is not None and ar["uid"] == B
               and ar["etag"] == e,
               "B reads": as_user(B, rd(fa))}
    finally:
        release(pb)
    assert res == {"close": "closed", "A's content bound to B's row": False,
                   "B reads": ["EACCES"]}, res


@pytest.mark.both_backends  # depends on what the store does (copies, parts, ETags)
def test_crash_after_the_copy_of_a_multipart_file_keeps_its_attributes(proxied):
    """R5b: as test_rename_attrs.py::test_crash_after_the_store_step_keeps_the_files_attributes,
    with a file above part_size (16 MiB): uploaded in parts, its ETag ("...-2") is not its
    copy's (one CopyObject below copy_threshold), so the row copied before the store step,
    bound to the source's ETag, does not describe the copy; the daemon dies before
    attrov_bind. The file at its new name must still show its mode and owner, never the
    defaults (0644, readable by all)."""
    from test_rename_attrs import rename_killed_in_the_source_delete
    m, px, d = proxied
    frm, to = f"{d}/x.bin", f"{d}/y.bin"
    body = os.urandom(17 << 20)
    secret(m, frm, body, 0o600, 2001, 2002)
    e = etag(m, frm)
    rename_killed_in_the_source_delete(m, px, frm, to)
    # (s3rver's copy keeps the source's ETag: passes there either way; Swift's listing shows
    # another one)
    assert mode_owner(m.path("inbox", to)) == (0o600, 2001, 2002), (
        etag(m, to), e, attrs_row(m, to)["etag"], m.s3.list_objects_v2(
            Bucket=m.reception_bucket, Prefix=to)["Contents"][0]["ETag"])


def test_rename_of_a_large_file_open_for_writing_keeps_its_attributes(mount_factory, uniq):
    """R12: a stored file above part_size (uploaded in parts) open for writing is renamed:
    the store's copy has another ETag than the moved row is bound to (attrov_move gets no
    ETag on that path), so the file shows the defaults at its new name, and the writer's close
    then drops the row as another object's (ofile_prepare_attrs): 0600 becomes 0644 for good."""
    m = mount_factory(config=FOREIGN)
    a, b = m.path("inbox", f"{uniq}-a.bin"), m.path("inbox", f"{uniq}-b.bin")
    write(a, os.urandom(17 << 20))
    os.chmod(a, 0o600)
    os.chown(a, 2001, 2002)
    fd = os.open(a, os.O_WRONLY | os.O_APPEND)
    try:
        os.rename(a, b)
        st = os.stat(b)
        after_rename = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        os.write(fd, b"more")
    finally:
        os.close(fd)
    time.sleep(1.1)  # attr_timeout
    st = os.stat(b)
    r = attrs_row(m, f"{uniq}-b.bin")
    res = {"after rename": after_rename,
           "after close": (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid),
           "row": r and (r["mode"], r["uid"], r["gid"])}
    assert res == {"after rename": (0o600, 2001, 2002), "after close": (0o600, 2001, 2002),
                   "row": (0o600, 2001, 2002)}, res


@pytest.mark.both_backends  # depends on what the store does (copies, parts, ETags)
def test_rename_of_a_multipart_file_keeps_its_attributes(proxied):
    """R5c: a file above part_size renamed (no fault): it shows its mode and owner at its new
    name, after a remount too. (Swift's s3api lists a copy of an object uploaded in parts with
    the MD5 of its content while HEAD gives the source's "...-N" ETag.)"""
    m, px, d = proxied
    frm, to = f"{d}/x.bin", f"{d}/y.bin"
    secret(m, frm, os.urandom(17 << 20), 0o600, 2001, 2002)
    os.rename(m.path("inbox", frm), m.path("inbox", to))
    m.restart()
    assert mode_owner(m.path("inbox", to)) == (0o600, 2001, 2002), (
        etag(m, to), attrs_row(m, to)["etag"], m.s3.list_objects_v2(
            Bucket=m.reception_bucket, Prefix=to)["Contents"][0]["ETag"])


@pytest.mark.both_backends  # depends on what the store does (copies, parts, ETags)
def test_chmod_after_the_rename_of_a_multipart_file_keeps_its_owner(proxied):
    """R5c: a file above part_size renamed, then chmod'ed at its new name after a remount: the
    change is made on the row of the object shown (Swift lists the copy with another ETag than
    HEAD gives and the row is bound to), never on a reset row: mode changed, owner kept, after
    a remount too."""
    m, px, d = proxied
    frm, to = f"{d}/x.bin", f"{d}/y.bin"
    secret(m, frm, os.urandom(17 << 20), 0o600, 2001, 2002)
    os.rename(m.path("inbox", frm), m.path("inbox", to))
    m.restart()  # the name as a listing shows it
    assert mode_owner(m.path("inbox", to)) == (0o600, 2001, 2002)
    os.chmod(m.path("inbox", to), 0o640)
    assert mode_owner(m.path("inbox", to)) == (0o640, 2001, 2002)
    m.restart()
    assert mode_owner(m.path("inbox", to)) == (0o640, 2001, 2002)
