"""Hostile review revE: failing tests for findings E1.. of the revE report (888d9da..w/int:
w/threads, w/r5 pending rename rows, w/join, w/pubbind; and 1e58a4f F8). Each asserts what
the product contract (SPEC §2: a file's owner and mode; durable, honest audit rows) requires."""
import errno
import os
import threading
import time

import pytest

from faultproxy import FaultProxy
from test_perms import A, B, FOREIGN, as_user, open_to_others, rd  # noqa: F401
from test_rename_attrs import etag, mode_owner  # noqa: F401


def late_upload_to(key, seconds):
    """A rule: the upload of key (a PUT without x-amz-copy-source) reaches the store, its
    answer held `seconds` (the object is there; the daemon does not know yet)."""
    def rule(meth, path, h):
        if meth == "PUT" and path.split("?")[0].endswith("/" + key) \
                and not any(k.lower() == "x-amz-copy-source" for k in h.keys()):
            return ("late", seconds)
        return None
    return rule


@pytest.fixture
def proxied_pair(stack, mount_factory, uniq):
    """(a, b, proxy, dir): mount a behind a FaultProxy, mount b straight to the store, both
    allow_other on one database and bucket, and a sticky world-writable directory of inbox/."""
    px = FaultProxy(stack.endpoint)
    try:
        a = mount_factory(config={"s3": {"endpoint": px.url}, **FOREIGN}, opts="allow_other",
                          name="a")
        b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
        for m in (a, b):
            open_to_others(m)
        os.mkdir(a.path("inbox", uniq))
        os.chmod(a.path("inbox", uniq), 0o1777)
        yield a, b, px, uniq
    finally:
        px.rule = None
        px.release.set()
        px.close()


@pytest.mark.xfail(strict=True, reason="revE E1: a publish's new content shows with the "
                   "target's old row (or the defaults) until its row moves: a secret readable")
@pytest.mark.parametrize("target", ["public", "none"])
def test_published_secret_is_never_readable_by_another_user(proxied_pair, target):
    """E1: A saves a private file the way editors do: x.tmp written 0600, renamed over y.txt
    (ofile_publish). Since w/pubbind, x.tmp's row (0600) moves to y.txt only after the
    upload's row commits; until then y.txt's new object (A's secret, already in the bucket)
    is shown with y.txt's old row (A's public 0644 file) or, for a new name, with no row (the
    defaults, 0644). B must never read the secret, on any mount."""
    a, b, px, d = proxied_pair
    tmp, to = f"{d}/x.tmp", f"{d}/y.txt"
    pt, py, pyb = a.path("inbox", tmp), a.path("inbox", to), b.path("inbox", to)
    if target == "public":
        assert as_user(A, f"open({py!r}, 'wb').write(b'old public')",
                       f"os.chmod({py!r}, 0o644)") == ["ok", "ok"]
        b.wait_until(lambda: as_user(B, rd(pyb)) == ["old public"], timeout=15,
                     what="B reads the public y.txt on mount b")
    assert as_user(A, f"open({pt!r}, 'wb').write(b'NEW SECRET')",
                   f"os.chmod({pt!r}, 0o600)", umask=0o077) == ["ok", "ok"]
    px.rule = late_upload_to(to, 12)
    out = []

    def go():
        out.extend(as_user(A, f"os.rename({pt!r}, {py!r})"))
    t = threading.Thread(target=go, daemon=True)
    t.start()
    seen = []
    try:
        a.wait_until(lambda: any(act == "late" for _, _, act in px.log), timeout=30,
                     what="the publish upload sent")
        end = time.monotonic() + 9
        while time.monotonic() < end:
            r = as_user(B, rd(pyb))
            seen.append(r[0])
            if r == ["NEW SECRET"]:
                break
            time.sleep(0.5)
    finally:
        px.rule = None
        px.release.set()
        t.join(60)
    assert out == ["ok"], out
    assert "NEW SECRET" not in seen, (seen, mode_owner(pyb))
    assert as_user(B, rd(pyb)) == ["EACCES"]
