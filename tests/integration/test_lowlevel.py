"""-o lowlevel (fs/ll.c, doc/reviews/design-lowlevel.md step 1): the daemon on libfuse's
low-level API keeps a node table of its own. What the rest of the suite cannot see:

- every node the kernel looked up is forgotten once the kernel lets go of it: after a
  workload (files written, read, renamed over while open, unlinked while open, a directory
  made and removed) and the kernel's dentry and inode caches dropped, the table holds only
  the root and the two nodes that reading audit/stats itself looks up (audit, stats);
- the mount says it runs on the low-level API, and the default mount does not.

The behaviour of every operation is the rest of the suite's, run with CUSTODYFS_LOWLEVEL=1."""
import errno
import os
import threading
import time

import pytest

from checks import read, write
from faultproxy import INTERNAL, FaultProxy

FORGET_WAIT_S = 60  # forgets are sent by the kernel asynchronously: polled, never timed


def ll_nodes(m):
    for line in read(os.path.join(m.mnt, "audit", "stats")).decode().splitlines():
        key, _, val = line.partition(" ")
        if key == "ll.nodes":
            return int(val)
    return None


def drop_kernel_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")  # dentries and inodes: the kernel sends FORGET for ours


def test_every_node_is_forgotten_when_the_kernel_drops_it(mount_factory, uniq):
    m = mount_factory(opts="lowlevel")
    d = os.path.join(m.inbox, f"ll-{uniq}")
    os.mkdir(d)
    for i in range(20):
        write(os.path.join(d, f"f{i}.txt"), b"x" * (i + 1))
    for i in range(20):
        assert read(os.path.join(d, f"f{i}.txt")) == b"x" * (i + 1)
    assert sorted(os.listdir(d)) == sorted(f"f{i}.txt" for i in range(20))
    # an open file renamed over, and one unlinked, while open (hidden names)
    over = os.path.join(d, "f1.txt")
    fd = os.open(over, os.O_RDONLY)
    try:
        os.rename(os.path.join(d, "f2.txt"), over)
        assert os.pread(fd, 100, 0) == b"x" * 2
    finally:
        os.close(fd)
    fd = os.open(os.path.join(d, "f3.txt"), os.O_RDWR)
    try:
        os.unlink(os.path.join(d, "f3.txt"))
        assert os.fstat(fd).st_nlink == 0
        assert not [n for n in os.listdir(d) if n.startswith(".fuse_hidden")]
    finally:
        os.close(fd)
    for n in os.listdir(d):
        os.unlink(os.path.join(d, n))
    os.rmdir(d)
    assert ll_nodes(m) is not None, "audit/stats has no ll.nodes with -o lowlevel"

    deadline = time.monotonic() + FORGET_WAIT_S
    while True:
        drop_kernel_caches()
        n = ll_nodes(m)
        if n == 3:  # the root, audit, stats
            break
        assert time.monotonic() < deadline, f"{n} nodes left after the kernel dropped its caches"
        time.sleep(0.5)
    m.unmount()
    log = open(m.log_path, encoding="utf-8", errors="replace").read()
    assert "low-level API" in log
    assert "not known" not in log, "a FORGET for a node the table did not hold"


def test_default_mount_is_the_high_level_api(mount_factory):
    if os.environ.get("CUSTODYFS_LOWLEVEL") == "1":
        return  # every mount is low-level in this run
    m = mount_factory()
    assert ll_nodes(m) is None
    m.unmount()
    assert "low-level API" not in open(m.log_path, encoding="utf-8", errors="replace").read()


@pytest.mark.parametrize("held", ["reader", "writer"])
def test_failed_rename_over_an_open_file_gives_the_node_its_name_back(stack, mount_factory,
                                                                      uniq, held):
    """review-ll M2: a rename over a file held open hides it first (.fuse_hidden…); when the
    rename then fails (here the server-side copy answers 500), the daemon gives the file its
    name back, and so must the node table: the open handle still has a link, the name still
    opens and reads the file's bytes, a writer's later write and close land at the name, and
    nothing hidden is left behind after the close."""
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url}}, opts="lowlevel")
        d = os.path.join(m.inbox, f"ll-{uniq}")
        os.mkdir(d)
        x, y = os.path.join(d, "x.txt"), os.path.join(d, "y.txt")
        write(x, b"X NEW")
        write(y, b"Y OLD")
        fd = os.open(y, os.O_RDONLY if held == "reader" else os.O_RDWR)
        try:
            px.rule = lambda method, path, headers: \
                ("status", 500, INTERNAL) \
                if method == "PUT" and "x-amz-copy-source" in headers else None
            try:
                os.rename(x, y)
                renamed = "ok"
            except OSError as e:
                renamed = errno.errorcode[e.errno]
            px.rule = None
            got = (renamed != "ok", os.fstat(fd).st_nlink, os.pread(fd, 100, 0), read(y),
                   read(x))
            if held == "writer":
                os.pwrite(fd, b"Y NEW", 0)
        finally:
            os.close(fd)
        assert got == (True, 1, b"Y OLD", b"Y OLD", b"X NEW"), got
        assert read(y) == (b"Y OLD" if held == "reader" else b"Y NEW")
        assert sorted(os.listdir(d)) == ["x.txt", "y.txt"]
    finally:
        px.close()


def test_directory_rename_is_not_starved_by_readers_below_it(mount_factory, uniq):
    """review-ll M1: a rename of a directory waits for the requests holding paths below it,
    then must get its turn: readers that come after it wait behind it (libfuse's lock queue).
    Four threads open, read and close a file in the directory in a loop (each bounded to
    LOOPS rounds) while the directory is renamed: the rename must return while they still run,
    counted in rounds (never timed)."""
    loops = 4000
    m = mount_factory(opts="lowlevel")
    d, e = os.path.join(m.inbox, f"ll-{uniq}"), os.path.join(m.inbox, f"ll-{uniq}-moved")
    os.mkdir(d)
    write(os.path.join(d, "f.txt"), b"F" * 100)
    done, stop, started = [0] * 4, threading.Event(), threading.Barrier(5)

    def loader(i):
        started.wait()
        for _ in range(loops):
            if stop.is_set():
                return
            try:
                with open(os.path.join(d, "f.txt"), "rb") as f:
                    f.read()
            except OSError:
                pass  # renamed away: the loop goes on until stopped
            done[i] += 1

    ts = [threading.Thread(target=loader, args=(i,), daemon=True) for i in range(4)]
    for t in ts:
        t.start()
    started.wait()
    for _ in range(6000):  # until each has done some full open/read/close rounds
        if min(done) >= 10:
            break
        time.sleep(0.01)
    at_start = list(done)
    os.rename(d, e)
    at_end = list(done)
    stop.set()
    for t in ts:
        t.join(timeout=120)
    assert all(n < loops for n in at_end), (at_start, at_end)
    assert os.listdir(e) == ["f.txt"]
