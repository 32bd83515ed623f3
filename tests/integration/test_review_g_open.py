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
from test_perms import A, B, FOREIGN, as_user, open_to_others, rd, two_mounts  # noqa: F401
from test_review_e import late_upload_to, proxied_pair  # noqa: F401
from test_rename_attrs import mode_owner


class Holder:
    """A process of user uid holding one descriptor open on path (O_RDONLY): each `read()`
    reads the whole file again from offset 0 through that descriptor and returns its text,
    or the errno name."""

    def __init__(self, uid, path):
        self.p = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
             "/usr/bin/python3", "-c",
             "import errno, json, os, sys\n"
             f"fd = os.open({path!r}, os.O_RDONLY)\n"
             "print(json.dumps('open'), flush=True)\n"
             "for line in sys.stdin:\n"
             "    try:\n"
             "        r = os.pread(fd, 1 << 16, 0).decode()\n"
             "    except OSError as e:\n"
             "        r = errno.errorcode[e.errno]\n"
             "    print(json.dumps(r), flush=True)\n"
             "os.close(fd)\n"],
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
