"""Review finding E10a: audit exports must never starve the custody path of database connections.

An open of audit/<table>.csv copies the table (one COPY) into a spool file on a pooled
connection; the COPY of a large table holds that connection for as long as it streams (up to
the 600 s server bound). Before the fix, 8 such exports at once held the whole pool of 8:
a close in inbox/ waited the 20 s pool bound and failed with EIO (sqlstate=pool), or waited
that long for a slot an export let go. Now the exports hold at most pool_size - 2
connections (common/db_pool.c, db_run_bulk): the last two stay for the custody path.

A slow export is made here by a lock: the test holds ACCESS EXCLUSIVE on storage_audit (which
the reception path never touches), so every COPY of it waits on the server, holding its
connection until the daemon's 20 s silence bound drops it; the exporters open it again at once.
A reader that stopped reading mid-way holds no connection at all (the view is a spool file)."""
import os
import threading
import time

import psycopg2

from checks import drop, rows

EXPORTERS = 8  # the default pool_size


def _copies_waiting(m):
    return m.sql_value(
        "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
        " and query like 'COPY (SELECT%%storage_audit%%'")


def test_e10a_exports_never_starve_closes_in_inbox(stack, mount_factory, uniq):
    m = mount_factory()
    # Stalled readers: opened and read part-way before anything else; kept open throughout.
    drop(m, f"{uniq}-seed.txt", b"a row so that the views are not empty\n")
    stalled = []
    for name in ("reception_audit.csv", "reception_audit.jsonl", "projects_registry.csv"):
        f = open(os.path.join(m.audit, name), "rb")
        assert f.read(8)
        stalled.append(f)

    lock = psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="custody",
                            dbname="custody", connect_timeout=10)
    stop = threading.Event()
    opened = {"ok": 0, "err": 0}

    def exporter():
        while not stop.is_set():
            try:
                with open(os.path.join(m.audit, "storage_audit.csv"), "rb") as f:
                    f.read()
                opened["ok"] += 1
            except OSError:
                opened["err"] += 1  # dropped by the silence bound, or its share full: EIO

    threads = []
    try:
        with lock.cursor() as cur:
            cur.execute("LOCK TABLE storage_audit IN ACCESS EXCLUSIVE MODE")
        for _ in range(EXPORTERS):
            t = threading.Thread(target=exporter, daemon=True)
            t.start()
            threads.append(t)
        # Every export connection the daemon allows is waiting on the lock (8 before the
        # fix: the whole pool; 6 after).
        m.wait_until(lambda: _copies_waiting(m) >= EXPORTERS - 2, timeout=20,
                     what="the exports waiting on storage_audit's lock")
        time.sleep(1)
        print("exports waiting on the lock:", _copies_waiting(m))
        took = []
        for i in range(4):
            name = f"{uniq}-{i}.txt"
            t0 = time.monotonic()
            try:
                drop(m, name, f"file {i} received while exports run\n".encode())
                rc = 0
            except OSError as e:
                rc = e.errno
            took.append((name, rc, round(time.monotonic() - t0, 2)))
        print("closes:", took)
    finally:
        lock.rollback()
        lock.close()
        stop.set()
        for t in threads:
            t.join(60)
    print("exports:", opened)
    for name, rc, secs in took:
        assert rc == 0, f"the close of inbox/{name} failed: errno {rc} ({secs} s)"
        # a close does not wait for an export's connection (the pool bound is 20 s)
        assert secs < 10, f"the close of inbox/{name} took {secs} s: it waited for the pool"
    for name, _, _ in took:
        assert len(rows(m, name)) == 1, rows(m, name)
    # The stalled readers read their snapshot to the end.
    for f in stalled:
        rest = f.read()
        assert rest.endswith(b"\n")
        f.close()
    with open(os.path.join(m.audit, "storage_audit.csv"), "rb") as f:
        assert f.read().startswith(b"id,")
    m.unmount()
