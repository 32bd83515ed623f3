"""Multipart receptions (issue 5, point 4): no window where the object and its row disagree.

A streamed multipart upload is completed and that is its last request: the object is never
copied onto itself afterwards to add hash metadata (that copy could fail once the new content
was in place, leaving close = EIO while the bucket held the new bytes and the live row still
described the old ones; it also halved large-file throughput on Swift). The reception row is
the record of the hashes.

The S3 endpoint sits behind tests/integration/faultproxy.py: every request the daemon makes is
seen (method, path, headers) at the store side, and requests after CompleteMultipartUpload can
be failed. Checks read the bucket with boto3 (directly, not through the proxy) and
reception_audit with SQL, counting every row of the key (removed ones too)."""
import os
import subprocess
import threading

import pytest
from checks import get_object, live_rows, rows
from faultproxy import INTERNAL, FaultProxy

BOUND = 120  # seconds: any single cp here ends well within this
PART = 5 << 20


def cp(src, dst):
    try:
        return subprocess.run(["cp", str(src), str(dst)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=BOUND,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"cp {src} {dst} did not finish within {BOUND}s")


def kind(method, path, headers):
    """What S3 request this is (only the ones these tests care about)."""
    h = {k.lower() for k in headers.keys()}
    q = path.split("?", 1)[1] if "?" in path else ""
    if method == "PUT" and "x-amz-copy-source" in h:
        return "upload_part_copy" if "partNumber=" in q else "copy"
    if method == "POST" and "uploads" in [a.split("=")[0] for a in q.split("&")]:
        return "create"
    if method == "POST" and "uploadId=" in q:
        return "complete"
    if method == "PUT" and "partNumber=" in q:
        return "part"
    if method == "PUT":
        return "put"
    return method.lower()


@pytest.fixture
def proxied(stack, mount_factory):
    """(mount, proxy, seen): a daemon whose S3 endpoint is a FaultProxy; seen is the list of
    (kind, path) of every request, in arrival order, recorded by a wrapper around px.rule."""
    px = FaultProxy(stack.endpoint)
    seen = []
    lock = threading.Lock()
    inner = [None]

    def recording(method, path, headers):
        with lock:
            seen.append((kind(method, path, headers), path))
        return inner[0](method, path, headers) if inner[0] else None

    px.rule = recording
    m = mount_factory(config={"s3": {"endpoint": px.url}, "fs": {"part_size": str(PART)}})
    yield m, px, seen, inner
    inner[0] = None
    px.release.set()
    m.unmount(check=False)
    px.close()


def of_key(seen, key):
    return [k for k, path in seen if path.split("?")[0].endswith("/" + key)]


def test_streamed_multipart_reception_is_never_copied_onto_itself(proxied, uniq, tmp_path):
    """A file above part_size written by cp streams its parts, is completed, and that is all:
    no CopyObject (or UploadPartCopy) onto itself afterwards. Its one row holds the SHA-256 of
    the bytes (computed here from the bytes, not read from the object's metadata)."""
    m, px, seen, _ = proxied
    key = f"{uniq}/big.bin"
    os.mkdir(os.path.join(m.inbox, uniq))
    data = os.urandom(2 * PART + 12345)  # three parts
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    p = cp(src, os.path.join(m.inbox, uniq, "big.bin"))
    assert p.returncode == 0, p.stderr
    reqs = of_key(seen, key)
    print("requests for the key:", reqs)
    assert reqs.count("create") == 1 and reqs.count("complete") == 1, \
        f"not one streamed multipart upload: {reqs}"
    assert reqs.count("part") == 3, f"not three parts: {reqs}"
    assert "put" not in reqs, f"the file was also PUT whole: {reqs}"
    copies = [k for k, path in seen if k in ("copy", "upload_part_copy")]
    assert copies == [], f"server-side copies during a reception: {copies} ({reqs})"
    assert get_object(m, key) == data
    every = rows(m, key)
    assert len(every) == 1, every
    assert every[0]["removed_at"] is None
    assert every[0]["sha256"] == m.sha256_bytes(data)
    assert every[0]["size_bytes"] == len(data)


def test_failure_after_complete_leaves_object_and_row_agreeing(proxied, uniq, tmp_path):
    """A key already received (live row = v1) is overwritten by a streamed multipart upload
    (v2). Once CompleteMultipartUpload has reached the store (the bucket holds v2), every later
    S3 request of the daemon fails with 500. Whatever close answers, the bucket and the table
    then agree: the live row describes the bytes the bucket holds, and every row of the key
    describes bytes that were written (v1, v2). Before the fix the self-copy after Complete
    failed: close returned EIO, the bucket held v2 and the live row still said v1."""
    m, px, seen, inner = proxied
    key = f"{uniq}/over.bin"
    os.mkdir(os.path.join(m.inbox, uniq))
    v1 = os.urandom(3000)
    v2 = os.urandom(2 * PART + 777)
    s1, s2 = tmp_path / "v1", tmp_path / "v2"
    s1.write_bytes(v1)
    s2.write_bytes(v2)
    dst = os.path.join(m.inbox, uniq, "over.bin")
    p = cp(s1, dst)
    assert p.returncode == 0, p.stderr
    assert [r["sha256"] for r in live_rows(m, key)] == [m.sha256_bytes(v1)]

    completed = threading.Event()
    failed = []

    def rule(method, path, headers):
        if completed.is_set():
            failed.append((kind(method, path, headers), path))
            return ("status", 500, INTERNAL)
        if kind(method, path, headers) == "complete" and path.split("?")[0].endswith("/" + key):
            completed.set()  # this one goes through: the store now holds v2
        return None

    inner[0] = rule
    p = cp(s2, dst)
    inner[0] = None
    assert completed.is_set(), f"no CompleteMultipartUpload was made: {of_key(seen, key)}"
    print(f"cp after a failure following Complete: rc={p.returncode} {p.stderr.strip()!r};"
          f" failed requests: {[k for k, _ in failed]}")
    obj = get_object(m, key)
    assert obj == v2, "the completed upload is not in the bucket"
    # the live row describes what the bucket holds (no disagreement window)
    live = live_rows(m, key)
    assert len(live) == 1, f"{len(live)} live rows: {live}"
    assert live[0]["sha256"] == m.sha256_bytes(obj) and live[0]["size_bytes"] == len(obj), \
        f"the live row describes other content than the bucket holds (cp rc={p.returncode})"
    # every row (removed ones too) describes something that was written: v1 then v2
    every = rows(m, key)
    assert [(r["sha256"], r["removed_at"] is None) for r in every] == \
        [(m.sha256_bytes(v1), False), (m.sha256_bytes(v2), True)], every
    # close said 0 only if stored and logged: here it is both, so a failure must not be claimed
    # for an upload that is the live, logged content
    assert p.returncode == 0, f"cp failed although v2 is stored and logged: {p.stderr}"
