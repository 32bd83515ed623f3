"""Hostile review G, the open and read path of inbox/ (doc/reviews/review-G.md G2, G3): a
handle reads the object whose attributes were checked for its caller, never another one,
neither through the store (G2) nor through the kernel's page cache (G3). Two allow_other
mounts on one database and bucket; users A and B as in test_perms.py."""
import json
import os
import subprocess
import threading
import time
import uuid

import pytest

from faultproxy import FaultProxy
from test_perms import (A, B, FOREIGN, LONG_TTL, as_user, open_to_others, rd,  # noqa: F401
                        two_mounts)
from test_review_e import late_upload_to, proxied_pair  # noqa: F401
from test_rename_attrs import mode_owner


class Holder:
    """A process of user uid holding one descriptor open on path (open flags flags, O_RDONLY
    by default): each `read()` reads the whole file again from offset 0 through that
    descriptor and returns its text, or the errno name; `write(text)` writes text at offset 0
    ("ok" or the errno name); `fsync()`, `close_now()` likewise. uncached: each read first drops the file's clean pages
    (POSIX_FADV_DONTNEED), so it reaches the daemon."""

    def __init__(self, uid, path, uncached=False, flags=os.O_RDONLY):
        self.p = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
             "/usr/bin/python3", "-c",
             "import errno, json, os, sys\n"
             f"fd = os.open({path!r}, {flags})\n"
             "print(json.dumps('open'), flush=True)\n"
             "for line in sys.stdin:\n"
             "    try:\n"
             "        if line.startswith('w'):\n"
             "            os.pwrite(fd, json.loads(line[1:]).encode(), 0)\n"
             "            print(json.dumps('ok'), flush=True)\n"
             "            continue\n"
             "        if line.startswith('s'):\n"
             "            os.fsync(fd)\n"
             "            print(json.dumps('ok'), flush=True)\n"
             "            continue\n"
             "        if line.startswith('c'):\n"
             "            fd, old = -1, fd\n"
             "            os.close(old)\n"
             "            print(json.dumps('ok'), flush=True)\n"
             "            continue\n"
             + ("        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)\n"
                if uncached else "") +
             "        r = os.pread(fd, 1 << 16, 0).decode()\n"
             "    except OSError as e:\n"
             "        r = errno.errorcode[e.errno]\n"
             "    print(json.dumps(r), flush=True)\n"
             "if fd >= 0:\n"
             "    os.close(fd)\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.answer() == "open"

    def answer(self):
        line = self.p.stdout.readline()
        assert line, "the holder died"
        return json.loads(line)

    def read(self):
        self.p.stdin.write("r\n")
        self.p.stdin.flush()
        return self.answer()

    def write(self, text):
        self.p.stdin.write("w" + json.dumps(text) + "\n")
        self.p.stdin.flush()
        return self.answer()

    def fsync(self):
        """fsync(2) of the descriptor: "ok" or the errno name."""
        self.p.stdin.write("s\n")
        self.p.stdin.flush()
        return self.answer()

    def close_now(self):
        """close(2) of the descriptor: "ok" or the errno name (the process stays)."""
        self.p.stdin.write("c\n")
        self.p.stdin.flush()
        return self.answer()

    def close(self):
        self.p.stdin.close()
        assert self.p.wait(timeout=60) == 0


@pytest.mark.xfail(strict=True, reason="review-G G3 / review-T T1: the kernel's page cache is "
                   "one per name, and another mount's replacement keeps the name's inode; making "
                   "the other object's handles direct_io does not isolate them from mmap "
                   "(MAP_PRIVATE fills the cache through a direct handle). Open.")
def test_old_handle_never_reads_the_new_objects_cached_pages(mount_factory, uniq):
    """G3: B holds a descriptor on A's public y.txt on mount b. A replaces y.txt from mount a
    with a 0600 secret of the same size; A (allowed) then reads it on mount b, which fills
    b's page cache of that inode. B's old descriptor must not be served the secret from
    that cache (it reads the old file, or fails): it was opened on another object."""
    a, b = two_mounts(mount_factory)
    os.mkdir(a.path("inbox", uniq))
    os.chmod(a.path("inbox", uniq), 0o1777)
    y, x = f"{uniq}/y.txt", f"{uniq}/x.tmp"
    py_a, py_b, px_a = a.path("inbox", y), b.path("inbox", y), a.path("inbox", x)
    old, new = "old public".ljust(64), "NEW SECRET".ljust(64)
    assert as_user(A, f"open({py_a!r}, 'w').write({old!r})", f"os.chmod({py_a!r}, 0o644)") == \
        ["ok", "ok"]
    b.wait_until(lambda: as_user(B, rd(py_b)) == [old], timeout=30, what="B reads y on b")
    h = Holder(B, py_b)
    try:
        assert h.read() == old
        assert as_user(A, f"open({px_a!r}, 'w').write({new!r})", f"os.chmod({px_a!r}, 0o600)",
                       f"os.rename({px_a!r}, {py_a!r})", umask=0o077) == ["ok", "ok", "ok"]
        assert mode_owner(py_a) == (0o600, A, A)
        b.wait_until(lambda: as_user(A, rd(py_b)) == [new], timeout=30,
                     what="A reads the secret on mount b (its pages cached there)")
        assert as_user(B, rd(py_b)) == ["EACCES"]
        got = []
        for _ in range(10):  # A's read fills the page cache, B's old descriptor reads at once
            assert as_user(A, rd(py_b)) == [new]
            got.append(h.read())
        assert new not in got, got
        assert all(r in (old, "EACCES", "ESTALE", "EIO") for r in got), got
    finally:
        h.close()


def test_open_checks_the_object_it_pins_not_a_stale_one(proxied_pair):
    """G2: the kernel checks open(2) against attributes it cached up to a second ago; the
    handle is pinned to the ETag the daemon's listing shows at that moment. When the listing
    has moved on to a new 0600 object meanwhile, B's open must not read it: the daemon checks
    the caller against the object it pins."""
    a, b, px, d = proxied_pair
    py, pyb, pt = (a.path("inbox", f"{d}/y.txt"), b.path("inbox", f"{d}/y.txt"),
                   a.path("inbox", f"{d}/x.tmp"))
    assert as_user(A, f"open({py!r}, 'wb').write(b'old public')", f"os.chmod({py!r}, 0o644)") \
        == ["ok", "ok"]
    b.wait_until(lambda: as_user(B, rd(pyb)) == ["old public"], timeout=30, what="b sees y")
    assert as_user(A, f"open({pt!r}, 'wb').write(b'NEW SECRET')", f"os.chmod({pt!r}, 0o600)",
                   umask=0o077) == ["ok", "ok"]
    px.rule = late_upload_to(f"{d}/y.txt", 15)
    out = []
    th = threading.Thread(target=lambda: out.extend(as_user(A, f"os.rename({pt!r}, {py!r})")),
                          daemon=True)
    th.start()
    try:
        a.wait_until(lambda: any(act == "late" for _, _, act in px.log), timeout=30,
                     what="the secret's upload landed")
        time.sleep(3.5)  # mount b's listing is older than its cache_ttl (3 s)
        absent = b.path("inbox", f"{d}/absent-{uuid.uuid4().hex}")
        # one process: stat (the kernel caches the old object's 0644 for 1 s), a lookup of an
        # absent name (mount b lists the directory again: the new object), open + read
        r = as_user(B, f"os.stat({pyb!r}).st_mode", f"os.path.exists({absent!r})", rd(pyb))
    finally:
        px.rule = None
        px.release.set()
        th.join(60)
    assert out == ["ok"], out
    assert r[2] != "NEW SECRET", r


def test_truncate_by_path_checks_the_object_it_acts_on(proxied_pair):
    """review-T T6: truncate(2) by path of a name not open here is G2's O_TRUNC case. The
    kernel checks MAY_WRITE against attributes it cached up to a second ago (y.txt's old
    0666 object); the listing has moved on to A's new 0600 object meanwhile (its upload's
    answer held, so its late commit). B's truncate must be refused (EACCES), and A's new
    object stay intact: the daemon checks the caller against the object it would rewrite."""
    a, b, px, d = proxied_pair
    key = f"{d}/y.txt"
    py, pyb, pt = (a.path("inbox", key), b.path("inbox", key), a.path("inbox", f"{d}/x.tmp"))
    assert as_user(A, f"open({py!r}, 'wb').write(b'old public')", f"os.chmod({py!r}, 0o666)") \
        == ["ok", "ok"]
    b.wait_until(lambda: as_user(B, rd(pyb)) == ["old public"], timeout=30, what="b sees y")
    assert as_user(A, f"open({pt!r}, 'wb').write(b'NEW SECRET')", f"os.chmod({pt!r}, 0o600)",
                   umask=0o077) == ["ok", "ok"]
    px.rule = late_upload_to(key, 15)
    out = []
    th = threading.Thread(target=lambda: out.extend(as_user(A, f"os.rename({pt!r}, {py!r})")),
                          daemon=True)
    th.start()
    try:
        a.wait_until(lambda: any(act == "late" for _, _, act in px.log), timeout=30,
                     what="the secret's upload landed")
        time.sleep(3.5)  # mount b's listing is older than its cache_ttl (3 s)
        absent = b.path("inbox", f"{d}/absent-{uuid.uuid4().hex}")
        # one process: stat (the kernel caches the old object's 0666 for 1 s), a lookup of an
        # absent name (mount b lists the directory again: the new object), truncate by path
        r = as_user(B, f"os.stat({pyb!r}).st_mode", f"os.path.exists({absent!r})",
                    f"os.truncate({pyb!r}, 3)")
    finally:
        px.rule = None
        px.release.set()
        th.join(60)
    assert out == ["ok"], out
    assert r[2] == "EACCES", r
    assert as_user(A, rd(py)) == ["NEW SECRET"]
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read() == b"NEW SECRET"
    assert mode_owner(py) == (0o600, A, A)


@pytest.mark.parametrize("size", [0, 3])
def test_truncate_by_path_of_a_replaced_object_it_may_write(proxied_pair, size):
    """review-T T6, the allowed side: y.txt replaced from mount a by a new 0666 object while
    mount b's kernel still holds the old one's attributes; B's truncate(2) by path on b
    acts on the new object (the one it was checked against) and is committed at once."""
    a, b, px, d = proxied_pair
    key = f"{d}/y.txt"
    py, pyb, pt = (a.path("inbox", key), b.path("inbox", key), a.path("inbox", f"{d}/x.tmp"))
    assert as_user(A, f"open({py!r}, 'wb').write(b'old public')", f"os.chmod({py!r}, 0o666)") \
        == ["ok", "ok"]
    b.wait_until(lambda: as_user(B, rd(pyb)) == ["old public"], timeout=30, what="b sees y")
    assert as_user(A, f"open({pt!r}, 'wb').write(b'NEW PUBLIC')", f"os.chmod({pt!r}, 0o666)",
                   f"os.rename({pt!r}, {py!r})") == ["ok", "ok", "ok"]
    time.sleep(3.5)  # mount b's listing is older than its cache_ttl (3 s)
    absent = b.path("inbox", f"{d}/absent-{uuid.uuid4().hex}")
    r = as_user(B, f"os.stat({pyb!r}).st_mode", f"os.path.exists({absent!r})",
                f"os.truncate({pyb!r}, {size})", rd(pyb))
    assert r == ["ok", "ok", "ok", "NEW PUBLIC"[:size]], r
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read() == \
        b"NEW PUBLIC"[:size]
    # (read on mount b: mount a, behind the proxy, may read y.txt while its listing still
    # shows the old size; a GET past the end of the empty object fails through the proxy)
    assert as_user(A, rd(pyb)) == ["NEW PUBLIC"[:size]]
    assert mode_owner(pyb) == (0o666, A, A)


def test_create_over_an_unlisted_file_checks_the_access_mode(mount_factory, uniq):
    """review-T T7: mount b does not list A's y.txt (0602: others may write, not read),
    uploaded from mount a after B's failed stat left a negative dentry on b. The kernel
    sends B's open(O_CREAT|O_RDWR) as a create, having checked only the directory (0777,
    not sticky). B may write y.txt but not read it: EACCES, and A's content intact."""
    a, b = two_mounts(mount_factory, LONG_TTL)
    os.mkdir(a.path("inbox", uniq))
    os.chmod(a.path("inbox", uniq), 0o777)
    key = f"{uniq}/y.txt"
    pa, pb = a.path("inbox", key), b.path("inbox", key)
    b.wait_until(lambda: as_user(B, f"os.listdir({b.path('inbox', uniq)!r})") == [[]],
                 timeout=30, what="b lists the empty directory")
    assert as_user(B, f"os.stat({pb!r}).st_mode") == ["ENOENT"]  # b's negative dentry
    assert as_user(A, f"os.close(os.open({pa!r}, os.O_CREAT | os.O_WRONLY, 0o602))",
                   f"open({pa!r}, 'wb').write(b'secret')", f"os.chmod({pa!r}, 0o602)",
                   umask=0) == ["ok", "ok", "ok"]
    assert mode_owner(pa) == (0o602, A, A)
    r = as_user(B, f"os.stat({pb!r}).st_mode",
                f"os.fdopen(os.open({pb!r}, os.O_CREAT | os.O_RDWR), 'rb').read().decode()")
    assert r == ["ENOENT", "EACCES"], r
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read() == b"secret"
    assert as_user(A, rd(pa)) == ["secret"]
    assert mode_owner(pa) == (0o602, A, A)


@pytest.fixture
def held_b(stack, mount_factory, uniq):
    """(a, b, proxy, dir): mount a straight to the store, mount b behind a FaultProxy (its
    listing kept 30 s), both allow_other on one database and bucket, and a directory 0777
    (not sticky) of inbox/ made on mount a."""
    px = FaultProxy(stack.endpoint)
    try:
        a = mount_factory(config=FOREIGN, opts="allow_other", name="a")
        b = mount_factory(config={"s3": {"endpoint": px.url}, **LONG_TTL}, reset=False,
                          opts="allow_other", name="b")
        for m in (a, b):
            open_to_others(m)
        os.mkdir(a.path("inbox", uniq))
        os.chmod(a.path("inbox", uniq), 0o777)
        yield a, b, px, uniq
    finally:
        px.rule = None
        px.release.set()
        px.close()


def first_get_held(key):
    """A rule: the first GET of key is held (it has not reached the store) until release."""
    held = []

    def rule(meth, path, h):
        if meth == "GET" and path.split("?")[0].endswith("/" + key) and not held:
            held.append(1)
            return ("hold", 60)
        return None
    return rule


def replaced_while_loading(a, px, key, op_as_b, new_mode):
    """Run op_as_b (as_user(B, ...) arguments) while mount b's first GET of key is held; A
    replaces key from mount a meanwhile by a new object "NEW ..." of new_mode (x.tmp renamed
    over it); then the GET goes on (its If-Match no longer matches). B's result."""
    py, pt = a.path("inbox", key), a.path("inbox", os.path.dirname(key), "x.tmp")
    new = "NEW PUBLIC" if new_mode & 0o004 else "NEW SECRET"
    out = []
    px.release.clear()
    px.rule = first_get_held(key)
    th = threading.Thread(target=lambda: out.extend(as_user(B, *op_as_b)), daemon=True)
    th.start()
    try:
        a.wait_until(lambda: any(act == "hold" for _, _, act in px.log), timeout=30,
                     what="mount b loads the object it checked")
        assert as_user(A, f"open({pt!r}, 'wb').write({new.encode()!r})",
                       f"os.chmod({pt!r}, {new_mode:#o})", f"os.rename({pt!r}, {py!r})",
                       umask=0o077) == ["ok"] * 3
    finally:
        px.release.set()
        px.rule = None
        th.join(60)
    assert not th.is_alive()
    return out


@pytest.mark.parametrize("new_mode", [0o666, 0o600], ids=["public", "private"])
def test_create_over_an_object_replaced_while_it_loads(held_b, new_mode):
    """review-T T7 (its second part): B's open(O_CREAT|O_RDWR) on mount b of A's 0666 y.txt,
    which b does not list, checks the object it found (HEAD) and loads that one (If-Match);
    A replaces y.txt meanwhile. The create is not answered EEXIST: it checks the new object
    and opens it (0666) or is refused (0600, EACCES)."""
    a, b, px, d = held_b
    key = f"{d}/y.txt"
    pa, pb = a.path("inbox", key), b.path("inbox", key)
    b.wait_until(lambda: as_user(B, f"os.listdir({b.path('inbox', d)!r})") == [[]],
                 timeout=30, what="b lists the empty directory")
    assert as_user(A, f"open({pa!r}, 'wb').write(b'old public')", f"os.chmod({pa!r}, 0o666)") \
        == ["ok", "ok"]
    r = replaced_while_loading(a, px, key, [
        f"os.fdopen(os.open({pb!r}, os.O_CREAT | os.O_RDWR), 'rb').read().decode()"], new_mode)
    new = "NEW PUBLIC" if new_mode == 0o666 else "NEW SECRET"
    assert r == [new if new_mode == 0o666 else "EACCES"], r
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read() == new.encode()
    assert as_user(A, rd(pa)) == [new]
    assert mode_owner(pa) == (new_mode, A, A)


@pytest.mark.parametrize("new_mode", [0o666, 0o600], ids=["public", "private"])
def test_truncate_by_path_of_an_object_replaced_while_it_loads(held_b, new_mode):
    """review-T T6: B's truncate(2) by path on mount b of A's 0666 y.txt loads the object it
    checked (If-Match); A replaces y.txt meanwhile. The truncate checks the new object: it
    truncates it (0666) or is refused (0600, EACCES), A's secret intact."""
    a, b, px, d = held_b
    key = f"{d}/y.txt"
    pa, pb = a.path("inbox", key), b.path("inbox", key)
    assert as_user(A, f"open({pa!r}, 'wb').write(b'old public')", f"os.chmod({pa!r}, 0o666)") \
        == ["ok", "ok"]
    b.wait_until(lambda: as_user(B, rd(pb)) == ["old public"], timeout=30, what="b sees y")
    r = replaced_while_loading(a, px, key, [f"os.truncate({pb!r}, 3)"], new_mode)
    new = b"NEW PUBLIC" if new_mode == 0o666 else b"NEW SECRET"
    want = new[:3] if new_mode == 0o666 else new
    assert r == ["ok" if new_mode == 0o666 else "EACCES"], r
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read() == want
    a.wait_until(lambda: as_user(A, rd(pa)) == [want.decode()], timeout=30,
                 what="A reads y.txt on mount a")
    assert mode_owner(pa) == (new_mode, A, A)


@pytest.mark.parametrize("flags", ["os.O_CREAT | os.O_RDONLY", "os.O_CREAT | os.O_WRONLY"])
def test_create_over_an_unlisted_file_needs_only_its_access_mode(mount_factory, uniq, flags):
    """Review of T7 (L1): as above, with A's y.txt 0644 (others may read, not write): B's
    O_CREAT|O_RDONLY open (flock(1) opens so) is a read, which the kernel would allow on a file
    it knew: it opens and reads the content; O_CREAT|O_WRONLY is refused (EACCES)."""
    a, b = two_mounts(mount_factory, LONG_TTL)
    os.mkdir(a.path("inbox", uniq))
    os.chmod(a.path("inbox", uniq), 0o777)
    key = f"{uniq}/y.txt"
    pa, pb = a.path("inbox", key), b.path("inbox", key)
    b.wait_until(lambda: as_user(B, f"os.listdir({b.path('inbox', uniq)!r})") == [[]],
                 timeout=30, what="b lists the empty directory")
    assert as_user(B, f"os.stat({pb!r}).st_mode") == ["ENOENT"]  # b's negative dentry
    assert as_user(A, f"open({pa!r}, 'wb').write(b'public')", f"os.chmod({pa!r}, 0o644)") == \
        ["ok", "ok"]
    reading = "RDONLY" in flags
    op = (f"os.pread(os.open({pb!r}, {flags}), 64, 0).decode()" if reading
          else f"os.close(os.open({pb!r}, {flags}))")
    r = as_user(B, f"os.stat({pb!r}).st_mode", op)
    assert r == ["ENOENT", "public" if reading else "EACCES"], r
    assert as_user(A, rd(pa)) == ["public"]
    assert mode_owner(pa) == (0o644, A, A)
