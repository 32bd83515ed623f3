"""A store or database that stops answering (SPEC §7: "down, slow, ... makes operations fail
with an error after bounded retries with backoff — the mount stays up"): the S3 server accepts
requests and never answers (a FaultProxy that hangs), PostgreSQL is frozen (SIGSTOP: a hung
host or a network partition, where no TCP reset ever comes). Kept apart from test_faults.py
because a failing case here costs up to HANG_BOUND seconds."""
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
from checks import rows, write

# The daemon's defaults (5 s connect timeout, 4 retries with backoff) leave room for an error
# well within this.
HANG_BOUND = 90
QUICK = 15  # an operation that does not need the hung server


def start(cmd):
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def finish(p, timeout):
    """(returncode or None when still running after timeout, stderr, seconds waited)."""
    t0 = time.monotonic()
    try:
        _, err = p.communicate(timeout=timeout)
        return p.returncode, err, time.monotonic() - t0
    except subprocess.TimeoutExpired:
        return None, "", time.monotonic() - t0


def reap(p, timeout=120):
    """After the server is back: let p end (SIGKILL if it still runs)."""
    if p.poll() is None:
        try:
            p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate(timeout=30)


# --------------------------------------------------------------------------- hung S3

@pytest.fixture
def hung(stack, mount_factory):
    """(mount, proxy) with the S3 endpoint behind a FaultProxy (default daemon config)."""
    from faultproxy import FaultProxy
    px = FaultProxy(stack.endpoint)
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    os.mkdir(os.path.join(m.inbox, "h"))
    yield m, px
    px.rule = None
    px.release.set()
    # unmount before the proxy goes away (the daemon may still talk to it)
    m.unmount(check=False)
    px.close()


def _hang_uploads_of(key):
    def rule(method, path, headers):
        if method in ("PUT", "POST") and path.split("?")[0].endswith("/" + key):
            return ("hang",)
        return None
    return rule


def test_hung_s3_upload_fails_within_bound(hung, tmp_path):
    m, px = hung
    src = tmp_path / "small.bin"
    src.write_bytes(os.urandom(5000))
    px.rule = _hang_uploads_of("h/hung.bin")
    p = start(["cp", str(src), os.path.join(m.inbox, "h", "hung.bin")])
    rc, err, secs = finish(p, HANG_BOUND)
    px.rule = None
    px.release.set()
    reap(p)
    assert rc is not None, (f"cp of a 5 kB file still blocked after {HANG_BOUND}s with the S3 "
                            f"server not answering ({len(px.log)} requests seen by the proxy)")
    assert rc != 0, "cp succeeded although no upload was ever answered"
    assert rows(m, "h/hung.bin") == []
    assert m.alive()


def test_other_operations_continue_during_a_hung_upload(hung, tmp_path):
    m, px = hung
    write(os.path.join(m.inbox, "h", "exists.txt"), b"readable")
    src = tmp_path / "x.bin"
    src.write_bytes(os.urandom(4000))
    px.rule = _hang_uploads_of("h/hung.bin")
    p = start(["cp", str(src), os.path.join(m.inbox, "h", "hung.bin")])
    try:
        time.sleep(1.5)
        assert p.poll() is None, "the upload did not hang"
        for cmd in (["ls", m.inbox], ["ls", os.path.join(m.inbox, "h")],
                    ["cat", os.path.join(m.inbox, "h", "exists.txt")],
                    ["cp", str(src), os.path.join(m.inbox, "h", "other.bin")],
                    ["cp", str(src), os.path.join(m.inbox, "h", "local.tmp")]):
            q = start(cmd)
            rc, err, secs = finish(q, QUICK)
            if rc is None:
                px.release.set()
                reap(q)
            assert rc == 0, f"{' '.join(cmd)}: {'blocked' if rc is None else err} " \
                            f"while another upload hangs"
        r = rows(m, "h/other.bin")
        assert len(r) == 1 and r[0]["removed_at"] is None, f"other.bin: one live row expected: {r}"
        assert rows(m, "h/local.tmp") == [], "a temp name was logged"
    finally:
        px.rule = None
        px.release.set()
        reap(p)


# --------------------------------------------------------------------------- frozen PostgreSQL

def _pg_pids(stack):
    with open(os.path.join(stack.pg_dir, "pg", "data", "postmaster.pid")) as f:
        pm = int(f.readline())
    kids = subprocess.run(["pgrep", "-P", str(pm)], stdout=subprocess.PIPE, text=True,
                          timeout=10).stdout.split()
    return [pm] + [int(k) for k in kids]


@contextlib.contextmanager
def pg_frozen(stack):
    pids = _pg_pids(stack)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def test_frozen_pg_upload_fails_within_bound(mount, uniq, tmp_path):
    m = mount
    os.mkdir(os.path.join(m.inbox, uniq))
    write(os.path.join(m.inbox, uniq, "warm.txt"), b"pool is warm")
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(5000))
    key = f"{uniq}/frozen.bin"
    with pg_frozen(m.stack):
        p = start(["cp", str(src), os.path.join(m.inbox, key)])
        rc, err, secs = finish(p, HANG_BOUND)
    reap(p)
    assert rc is not None, f"cp still blocked in close() after {HANG_BOUND}s with PostgreSQL " \
                           f"not answering"
    assert rc != 0, "cp succeeded although its row could not be committed"
    assert rows(m, key) == []

    def keys():
        return [o["Key"] for o in m.s3.list_objects_v2(
            Bucket=m.reception_bucket, Prefix=f"{uniq}/").get("Contents", [])]
    # removed once the database answers again and shows no row records it
    m.wait_until(lambda: key not in keys(), timeout=60, interval=0.5,
                 what="the unrowed upload removed")
    assert rows(m, key) == []
    assert key not in keys(), "the object stayed in the bucket without its row"
    assert m.alive()


def test_frozen_pg_reads_and_listings_continue(mount, uniq):
    m = mount
    d = os.path.join(m.inbox, uniq)
    os.mkdir(d)
    write(os.path.join(d, "r.txt"), b"readable without the database")
    time.sleep(3.5)   # past the listing cache: ls must ask the store again
    results, procs = [], []
    with pg_frozen(m.stack):
        for cmd in (["ls", d], ["cat", os.path.join(d, "r.txt")], ["stat", d]):
            q = start(cmd)
            procs.append(q)
            rc, err, secs = finish(q, QUICK)
            results.append((cmd, rc, err))
    for q in procs:
        reap(q)
    for cmd, rc, err in results:
        assert rc == 0, f"{' '.join(cmd)}: {'blocked' if rc is None else err} " \
                        f"with PostgreSQL frozen"


# --------------------------------------------------------------------------- other users' streams

MIB = 1 << 20


def _sizes(paths):
    return [os.stat(p).st_size for p in paths]


# A writer that appends 1 MiB blocks at about 32 MiB/s until killed, for at most WRITER_SECS:
# long enough to be still running whatever happens to the small file, without filling the disk.
WRITER_SECS = 150
PACED_WRITER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
block, t0, n = b"z" * (1 << 20), time.monotonic(), 0
while time.monotonic() - t0 < float(sys.argv[2]):
    os.write(fd, block)
    n += 1
    ahead = n / 32 - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
os.close(fd)
"""


def test_small_close_does_not_wait_for_other_streams(stack, mount_factory, uniq):
    """review-upload M1: a file's close depends on its own bytes and its own requests only,
    never on the upload pool serving other files. One upload worker (so one hasher), two large
    files streaming, and the store holds their CreateMultipartUpload without answering (a slow
    or retrying store): a 1-byte file's close still returns, with its object and its row, while
    both large writers are still writing. (Before: the hasher ran CreateMultipartUpload itself
    and kept one upload until it caught up with its writer; every close on the mount waited
    for it, here until the held request failed after its retries.)"""
    from faultproxy import FaultProxy
    px = FaultProxy(stack.endpoint)
    m = mount_factory(config={"s3": {"endpoint": px.url}, "fs": {"upload_workers": "1"}})
    d = os.path.join(m.inbox, uniq)
    os.mkdir(d)
    bigs = [os.path.join(d, f"big{i}.bin") for i in (1, 2)]
    small = os.path.join(d, "small.txt")

    def rule(method, path, headers):
        if method == "POST" and path.split("?")[0].endswith(("/big1.bin", "/big2.bin")):
            return ("hang",)
        return None
    px.rule = rule
    writers = [start([sys.executable, "-c", PACED_WRITER, b, str(WRITER_SECS)]) for b in bigs]
    try:
        # both streaming past their first part (16 MiB): the pool holds both uploads
        m.wait_until(lambda: all(w.poll() is None for w in writers)
                     and min(_sizes(bigs)) > 48 * MIB,
                     timeout=60, interval=0.2, what="both large writers past 48 MiB")
        m.wait_until(lambda: any(a[0] == "POST" for a in list(px.log)), timeout=30,
                     interval=0.2, what="a large file's CreateMultipartUpload sent")
        p = start([sys.executable, "-c",
                   "import sys\nwith open(sys.argv[1], 'w') as f:\n    f.write('x')", small])
        rc, err, secs = finish(p, HANG_BOUND)
        running = [w.poll() is None for w in writers]
        before = _sizes(bigs)
        print(f"small close: {secs:.2f}s, large files at {before}", file=sys.stderr)
        time.sleep(1.0)
        after = _sizes(bigs)
        if rc is None:
            reap(p, timeout=5)
        assert rc == 0, f"the small file's close {'blocked' if rc is None else 'failed: ' + err}" \
                        f" after {secs:.1f}s"
        assert all(running), f"the small file's close returned after {secs:.1f}s, only once a " \
                             f"large writer had ended (running: {running}, sizes {before})"
        assert all(a > b for a, b in zip(after, before)), \
            f"the large files stopped growing while the small close returned ({before} -> {after})"
        r = rows(m, f"{uniq}/small.txt")
        assert len(r) == 1 and r[0]["size_bytes"] == 1 and r[0]["removed_at"] is None, r
        body = m.s3.get_object(Bucket=m.reception_bucket, Key=f"{uniq}/small.txt")["Body"].read()
        assert body == b"x"
        assert r[0]["sha256"] == hashlib.sha256(b"x").hexdigest()
    finally:
        # the large files go away unfinished: the store answers again (an unlink waits for
        # its file's own requests in flight), unlink them (a removed file's close uploads
        # nothing), stop the writers
        px.rule = None
        px.release.set()
        for b in bigs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(b)
        for w in writers:
            w.kill()
            w.communicate(timeout=120)
        m.unmount(check=False)
        px.close()
    for b in bigs:
        assert rows(m, f"{uniq}/{os.path.basename(b)}") == [], "an unfinished large file logged"
