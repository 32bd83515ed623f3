"""Review finding E10b (and C2): the stop path's fusectl abort.

On a stop whose kernel cache invalidation worker is stuck in the kernel, the daemon aborts its
FUSE connection through fusectl (/sys/fs/fuse/connections/<N>/abort). Before the fix N was
read from /proc/self/mountinfo by the mountpoint's PATH at mount time, the last line with that
path: whatever is mounted there, maybe another file system. Now it is the minor of the device
number of the mount's own root, taken by statx right after the mount (fs/fuseinit.c); and
when fusectl is not mounted on /sys/fs/fuse/connections, the daemon mounts it (before the fix
the abort failed with ENOENT and the daemon never exited: its invalidation thread stays in an
uninterruptible wait on a page lock, so even _exit cannot finish and /dev/fuse is never
closed).

The hang is the real one (no test hook): see the test's docstring."""
import ctypes
import os
import signal
import subprocess
import threading
import time

from checks import drop, project, rows
from faultproxy import FaultProxy
from test_rm_races import grace


def _conn(path):
    return os.minor(os.stat(path).st_dev)


FUSECTL = "/sys/fs/fuse/connections"
_libc = ctypes.CDLL(None, use_errno=True)


def _fusectl(mount):
    """fusectl mounted on (or unmounted from) FUSECTL by the system calls themselves (umount(8)
    looks at the other mounts' paths, and so would wait for a FUSE mount stuck in a READ)."""
    rc = (_libc.mount(b"fusectl", FUSECTL.encode(), b"fusectl", 0, None) if mount
          else _libc.umount2(FUSECTL.encode(), 0))
    if rc:
        raise OSError(ctypes.get_errno(), f"{'mount' if mount else 'umount'} {FUSECTL}")


def _fusectl_mounted():
    with open("/proc/self/mountinfo") as f:
        return any(ln.split()[4] == FUSECTL for ln in f)


def test_e10b_stop_stuck_in_the_kernel_aborts_only_its_own_connection(fusectl_exclusive, stack,
                                                                      mount_factory, uniq):
    """A reader of inbox/big.bin on mount a has READs in flight, their ranged GETs held by the
    store (a FaultProxy, 6 s); the promotion of big.bin (mv to projects/) queues its kernel
    cache invalidation, which waits for the pages those READs hold locked. Then SIGTERM, with
    fusectl unmounted: the loop ends after the held READs; the READs the kernel sends after it
    are never answered, so the invalidation worker stays stuck in the kernel, and the stop
    must abort the connection, a's own (the minor of a's st_dev), never b's. Checked: a exits
    within its bound (the held READs, then 2 x 2 s) with status 0; its log names a's
    connection as aborted; mount b still works; the files a closed before the stop have one
    reception row each (big.bin too: promoted or not, never twice)."""
    px = FaultProxy(stack.endpoint)
    hold = 6
    fusectl_was = _fusectl_mounted()
    stuck = False
    try:
        a = mount_factory(config=grace(600000, {"s3": {"endpoint": px.url}}), name="a")
        b = mount_factory(reset=False, name="b")
        ca, cb = _conn(a.mnt), _conn(b.mnt)
        assert ca != cb
        p = project(a, uniq)
        closed = [f"{uniq}-{i}.txt" for i in range(3)]
        for k in closed:
            drop(a, k, f"{k}: closed before the stop\n".encode())
        data = os.urandom(8 << 20)
        drop(a, "big.bin", data)
        got = {}
        px.rule = lambda meth, path, hdrs: ("hold", hold) \
            if meth == "GET" and path.split("?")[0].endswith("/big.bin") \
            and hdrs.get("Range") else None

        def reader():
            try:
                with open(os.path.join(a.inbox, "big.bin"), "rb") as f:
                    while f.read(64 << 10):
                        pass
            except OSError as e:
                got["err"] = e.errno

        def renamer():
            try:
                os.rename(os.path.join(a.inbox, "big.bin"),
                          os.path.join(a.projects, p, "big.bin"))
                got["rename"] = 0
            except OSError as e:
                got["rename"] = e.errno

        if fusectl_was:
            _fusectl(False)
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        a.wait_until(lambda: any(m == "GET" and x == "hold" for m, _, x in list(px.log)),
                     timeout=10, what="the reader's GET held")
        tr = threading.Thread(target=renamer, daemon=True)
        tr.start()
        time.sleep(1)  # the rename waits for the held READs: the stop comes meanwhile
        a.expected_death = True
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        try:
            a.proc.wait(hold + 30)
        except subprocess.TimeoutExpired:
            stuck = True
            # the way out the daemon did not take: the test's own abort of a's connection
            if not _fusectl_mounted():
                _fusectl(True)
            with open(f"{FUSECTL}/{ca}/abort", "w") as f:
                f.write("1")
            a.proc.wait(30)
        took = time.monotonic() - t0
        log = a.daemon_log()
        print("stop took", round(took, 1), "s; exit", a.proc.returncode)
        print([ln for ln in log.splitlines() if "abort" in ln or "invalidation" in ln
               or "fusectl" in ln])
        th.join(30)
        tr.join(30)
        print("reader", got.get("err"), "rename", got.get("rename"))
        a.crash()  # drops the aborted mount (the daemon is gone)
        assert not stuck, f"the daemon did not exit within {hold + 30} s of SIGTERM"
        assert took < hold + 15, took
        assert a.proc.returncode == 0
        assert "kernel cache invalidation still waiting on the kernel" in log
        aborted = [ln for ln in log.splitlines() if "aborted: the kernel cache" in ln]
        assert len(aborted) == 1 and f"FUSE connection {ca} aborted" in aborted[0], aborted
        assert f"FUSE connection {ca})" in log  # the one it noted at mount
        if fusectl_was:
            assert "mounted fusectl on " + FUSECTL in log
        # b is untouched: its connection alive, a file through it stored and read back
        assert b.alive() and _conn(b.mnt) == cb
        drop(b, f"{uniq}-after.txt", b"b works after a's stop\n")
        with open(os.path.join(b.inbox, f"{uniq}-after.txt"), "rb") as f:
            assert f.read() == b"b works after a's stop\n"
        for k in closed + [f"{uniq}-after.txt"]:
            assert len(rows(b, k)) == 1, (k, rows(b, k))
        # big.bin: its one reception row, promoted (closed, a storage row) or still live
        big = rows(b, "big.bin")
        assert len(big) == 1, big
        promoted = b.sql_value("select count(*) from storage_audit where source_key = %s",
                               ("big.bin",))
        assert promoted == (0 if big[0]["removed_at"] is None else 1), (big, promoted)
        b.unmount()
    finally:
        px.rule = None
        px.close()
        if fusectl_was and not _fusectl_mounted():
            _fusectl(True)
