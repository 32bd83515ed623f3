"""Hostile review (threads): findings C2, C6, C7 and F6 on the daemon's threads and logs.

C6: a rename whose source DELETE the store refuses still changed rows (the new row, the
source's row closed): its "renamed" line is written, and the failure has an error line with
the errno and the S3 code (test_logging_rows.match_rows_and_lines checks every row).

C7: the promotion's rename (fs/ops_promote.c) and audit/'s open (fs/ops_audit.c) notified the
kernel from inside their handlers; the notification drops the inode's pages and waits for a
page locked by a read in flight, so the handler (and the rename) waited as long as that read.
They go through fs/inval.c's worker now, waited for a bounded time."""
import errno
import os
import threading
import time

import pytest

import checks
from checks import drop, project
from faultproxy import FaultProxy
from test_logging_rows import event_lines, match_rows_and_lines, check_who
from test_rm_races import grace, on_key

DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
          b"<Message>Access Denied</Message></Error>")


def test_c6_a_rename_whose_source_delete_fails_logs_its_rows_and_the_error(stack,
                                                                           mount_factory):
    """The store answers the DELETE of the rename's source 403 AccessDenied. The rows have
    changed by then (to.txt's row, from.txt's row closed "renamed to"): before the fix the
    only line was an error line op=rename without the row ids, so the new row had no line
    and match_rows_and_lines failed; and the error line did not say which request failed."""
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config=grace(600000, {"s3": {"endpoint": px.url}}))
        drop(m, "from.txt", b"renamed, its source stays\n")
        px.rule = on_key("from.txt", "DELETE", ("status", 403, DENIED))
        try:
            os.rename(os.path.join(m.inbox, "from.txt"), os.path.join(m.inbox, "to.txt"))
            rc = 0
        except OSError as e:
            rc = e.errno
        px.rule = None
        assert ("DELETE", "pass") not in [(meth, a) for meth, p, a in px.log
                                          if p.endswith("/from.txt")]
        assert any(meth == "DELETE" and a == "status" for meth, p, a in px.log)
        print("rename:", rc)
        m.unmount()
    finally:
        px.rule = None
        px.close()
    evs = event_lines(m.daemon_log())
    print([e for _, e in evs])
    match_rows_and_lines(m, evs)
    ren = [e for _, e in evs if e["event"] == "renamed"]
    assert len(ren) == 1 and ren[0]["key"] == "to.txt" and ren[0]["from"] == "from.txt", ren
    errs = [(lvl, e) for lvl, e in evs if e["event"] == "error"]
    assert len(errs) == 1, errs
    lvl, e = errs[0]
    assert lvl == "error" and e["key"] == "from.txt", e
    assert e["errno"] == "EACCES" and e["s3_code"] == "AccessDenied" and e["http"] == "403", e
    check_who(e)


def abort_connection(m):
    """Aborts m's FUSE connection (fusectl, mounted if needed): the only way out of a daemon
    stuck in the kernel, so that a failing test does not hang the suite."""
    import subprocess
    conns = "/sys/fs/fuse/connections"
    if not os.listdir(conns):
        subprocess.run(["mount", "-t", "fusectl", "fusectl", conns], check=False)
    with open("/proc/self/mountinfo") as f:
        for ln in f:
            part = ln.split()
            if part[4] == m.mnt:
                with open(f"{conns}/{part[2].split(':')[1]}/abort", "w") as a:
                    a.write("1")


def test_c7_a_promotion_rename_does_not_wait_for_a_read_in_flight(fusectl_exclusive, stack,
                                                                  mount_factory, uniq):
    """A reader of inbox/big.bin has READs in flight, the first one's ranged GET held by the
    store (a FaultProxy, 5 s); meanwhile mv inbox/big.bin projects/p/. Before the fix the
    rename's handler called fuse_invalidate_path, which drops the inode's pages and so waits
    for a page a later READ holds locked, while that READ's handler waits for the file the
    rename still holds: a deadlock (the rename never returns; the connection is aborted to
    end the test). After, the notification is the worker's, waited for at most 200 ms."""
    px = FaultProxy(stack.endpoint)
    hold = 5
    try:
        m = mount_factory(config=grace(600000, {"s3": {"endpoint": px.url}}))
        p = project(m, uniq)
        data = os.urandom(1 << 20)
        drop(m, "big.bin", data)
        got = {}
        px.rule = lambda meth, path, hdrs: ("hold", hold) \
            if meth == "GET" and path.split("?")[0].endswith("/big.bin") \
            and hdrs.get("Range") else None

        def reader():
            try:
                with open(os.path.join(m.inbox, "big.bin"), "rb") as f:
                    got["data"] = f.read()
            except OSError as e:
                got["err"] = e.errno

        def renamer():
            try:
                os.rename(os.path.join(m.inbox, "big.bin"),
                          os.path.join(m.projects, p, "big.bin"))
                got["rename"] = 0
            except OSError as e:
                got["rename"] = e.errno

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        m.wait_until(lambda: any(meth == "GET" and a == "hold" for meth, _, a in list(px.log)),
                     timeout=10, what="the reader's GET held")
        t0 = time.monotonic()
        tr = threading.Thread(target=renamer, daemon=True)
        tr.start()
        tr.join(hold + 30)
        took = time.monotonic() - t0
        stuck = tr.is_alive()
        if stuck:
            m.expected_death = True
            abort_connection(m)
            tr.join(30)
            th.join(30)
            m.crash()
        assert not stuck, f"the rename is stuck ({took:.0f} s): handler deadlocked in the kernel"
        th.join(60)
        print("rename took", took, got.get("rename"), "reader", got.get("err"))
        assert got["rename"] == 0
        # the reader ends too (its later READs may find the source promoted away: ENOENT)
        assert not th.is_alive() and ("err" in got or got["data"] == data), got.get("err")
        st = os.stat(os.path.join(m.projects, p, "big.bin"))
        assert st.st_size == len(data)
        m.unmount()
    finally:
        px.rule = None
        px.close()
