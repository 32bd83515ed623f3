"""Hostile review revD: failing tests for findings D1.. of the revD report (change
fcf0af8..w/int: claims, per-file tokens, rm-wins undo, rename source delete, R6/R7/R8).
Each asserts the behaviour the product contract requires."""
import errno
import os
import threading

import pytest

from test_perms import A, B, as_user, attrs_row, open_to_others, rd, two_mounts  # noqa: F401
from test_rename_attrs import etag, mode_owner, proxied, secret  # noqa: F401


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
    out = []

    def go():
        try:
            os.rename(m.path("inbox", tmp), m.path("inbox", to))
            out.append("ok")
        except OSError as e:
            out.append(errno.errorcode.get(e.errno, str(e.errno)))
    t = threading.Thread(target=go, daemon=True)
    t.start()
    m.wait_until(lambda: any(a == ("hang",) or a == "hang" for _, _, a in px.log),
                 timeout=30, what="the publish upload held")
    return t, out


@pytest.mark.xfail(strict=True, reason="revD D1: ofile_publish copies the temp's row over the "
                   "target's before its upload; a crash leaves the old object with it")
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
    m.crash()
    px.rule = None
    px.release.set()
    t.join(30)
    px.release.clear()
    m.mount()
    r = attrs_row(m, to)
    res = {"etag": etag(m, to) == ey,
           "content": open(m.path("inbox", to), "rb").read(),
           "shown": mode_owner(m.path("inbox", to)),
           "row": r and (r["mode"], r["uid"], r["etag"] == ey, r["claimed_by"])}
    assert res == {"etag": True, "content": b"old secret of y", "shown": (0o600, 2003, 2004),
                   "row": (0o600, 2003, True, None)}, res
