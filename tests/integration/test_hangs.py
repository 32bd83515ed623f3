"""A store or database that stops answering (SPEC §7: "down, slow, ... makes operations fail
with an error after bounded retries with backoff — the mount stays up"): the S3 server accepts
requests and never answers (a FaultProxy that hangs), PostgreSQL is frozen (SIGSTOP: a hung
host or a network partition, where no TCP reset ever comes). Kept apart from test_faults.py
because a failing case here costs up to HANG_BOUND seconds."""
import contextlib
import os
import signal
import subprocess
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
