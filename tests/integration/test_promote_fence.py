"""Promotion across processes (review of issue 6: C1 cross-process, H2, M5): journal entries
belong to an owner id whose lock a living process holds; every step is fenced by that owner, a
process that is gone has its entries taken over (by recovery, or by the promotion they block),
and recovery runs while the mount already answers. Checked with boto3 and psycopg2: every
storage row, every reception row of the key (removed ones too), the journal."""
import errno
import os
import signal
import threading
import time

import checks
from test_promote import (_no_open_entries, check_stored, dhead, drop, journal, project,
                          promote, proxied, srows)  # noqa: F401 (proxied: a fixture)


def _is_copy(meth, h):
    return meth == "PUT" and "x-amz-copy-source" in {k.lower() for k in h.keys()}


def _in_thread(fn, res):
    """Runs fn() in a thread; appends 0 or the errno it raised to res."""
    def go():
        try:
            fn()
            res.append(0)
        except OSError as e:
            res.append(e.errno)
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def _run(m, name, p, res):
    return _in_thread(lambda: promote(m, name, p), res)


def test_steps_are_fenced_by_owner_after_a_database_restart(stack, mount_factory, proxied,
                                                            uniq):
    """Review C1, cross-process. Mount A's copy is held at the proxy (it never reaches the
    store); PostgreSQL restarts, so A's owner lock is gone; mount B starts and its recovery
    takes A's entry over and copies again, its copy reaching the store a few seconds late.
    Meanwhile A's copy fails (500): A, which still believes the entry its own, must not mark it
    failed (B's copy would then be an object without a row, and the file would stay in
    reception): its step is refused by the fence, it deletes nothing, and B finishes the
    entry: one object, one row, the source gone."""
    from faultproxy import INTERNAL
    px = proxied
    ma = mount_factory(config={"s3": {"endpoint": px.url, "max_retries": "1"}})
    p = project(ma, uniq)
    data = os.urandom(7000)
    drop(ma, "fence.bin", data)
    copies = []

    def rule(meth, path, h):
        if _is_copy(meth, h) and "fence.bin" in path:
            copies.append(path)
            if len(copies) == 1:
                return ("hang",)  # A's copy: never reaches the store
            if len(copies) == 2:
                # B's copy: A's copy ends now (no answer, then 500s); B's reaches the
                # store only after A has had time to settle its entry.
                px.release.set()
                time.sleep(6)
                return None
            return ("status", 500, INTERNAL)
        return None
    px.rule = rule
    res = []
    t = _run(ma, "fence.bin", p, res)
    ma.wait_until(lambda: copies, timeout=20, what="A's copy sent")
    assert [j["state"] for j in journal(ma, p + "/fence.bin")] == ["intent"]
    stack.stop_pg("immediate")
    stack.start_pg()
    mb = mount_factory(config={"s3": {"endpoint": px.url}}, reset=False)
    t.join(90)
    assert not t.is_alive()
    assert len(copies) >= 2  # B's recovery copied again
    _no_open_entries(mb)
    px.rule = None
    # A's rename failed (or saw B finish the entry); whatever A did, the file is stored once
    assert res and res[0] in (0, errno.EIO, errno.EBUSY), res
    assert [j["state"] for j in journal(mb, p + "/fence.bin")] == ["done"]
    check_stored(mb, p + "/fence.bin", data, "fence.bin", ["copied"])
    assert len(checks.rows(mb, "fence.bin")) == 1
    assert "taken over" in ma.daemon_log()


def test_dead_mounts_entry_is_taken_over_by_a_live_mount(stack, mount_factory, proxied, uniq):
    """Review H2: two mounts on one database and store; B starts a promotion whose copy takes
    effect but is answered late, and B is killed (not remounted). A renames the same file: the
    entry blocking it belongs to a process that is gone (its owner lock is free), so A takes it
    over and finishes it (no 120 s wait ending in EBUSY): one object, one row, source gone."""
    px = proxied
    ma = mount_factory()
    mb = mount_factory(config={"s3": {"endpoint": px.url}}, reset=False)
    p = project(ma, uniq)
    data = os.urandom(6000)
    drop(ma, "dead.bin", data)
    px.rule = lambda meth, path, h: (("late", 300) if _is_copy(meth, h) and "dead.bin" in path
                                     else None)
    res_b = []
    _run(mb, "dead.bin", p, res_b)
    mb.wait_until(lambda: any(meth == "PUT" and "/storage-unique/" in path and "dead.bin" in path
                              for meth, path, a in list(px.log)), timeout=20, what="B's copy")
    assert [j["state"] for j in journal(ma, p + "/dead.bin")] == ["intent"]
    owner_b = journal(ma, p + "/dead.bin")[0]["owner"]
    mb.crash(signal.SIGKILL)
    promote(ma, "dead.bin", p)  # an EBUSY after the 120 s wait fails here
    js = journal(ma, p + "/dead.bin")
    assert [j["state"] for j in js] == ["done"]
    assert js[0]["owner"] != owner_b  # taken over
    check_stored(ma, p + "/dead.bin", data, "dead.bin", ["copied"])
    assert len(checks.rows(ma, "dead.bin")) == 1
    px.release.set()


def test_mount_answers_while_recovery_runs(stack, mount_factory, proxied, uniq):
    """Review M5: recovery runs in the background. A mount killed during a copy is mounted
    again while the store holds recovery's copy: the mount point answers (inbox/ lists the
    file still received) before recovery ends; once the copy goes through, recovery finishes
    the entry."""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    p = project(m, uniq)
    data = os.urandom(5000)
    drop(m, "rec.bin", data)
    px.rule = lambda meth, path, h: ("hang",) if _is_copy(meth, h) and "rec.bin" in path else None
    res = []
    _run(m, "rec.bin", p, res)
    m.wait_until(lambda: any(meth == "PUT" and "/storage-unique/" in path and "rec.bin" in path
                             for meth, path, a in list(px.log)), timeout=20, what="copy sent")
    m.crash(signal.SIGKILL)
    n_before = sum(1 for meth, path, a in list(px.log) if meth == "PUT" and "/storage-unique/" in path and "rec.bin" in path)
    m.mount()  # a recovery before the loop holds the mount point while its copy hangs
    m.wait_until(lambda: sum(1 for meth, path, a in list(px.log)
                             if meth == "PUT" and "/storage-unique/" in path and "rec.bin" in path) > n_before,
                 timeout=20, what="recovery's copy sent")
    assert "rec.bin" in os.listdir(m.inbox)  # answered while recovery's copy is held
    assert [j["state"] for j in journal(m, p + "/rec.bin")] == ["intent"]
    assert dhead(m, p + "/rec.bin") is None
    px.rule = None
    px.release.set()
    _no_open_entries(m)
    assert [j["state"] for j in journal(m, p + "/rec.bin")] == ["done"]
    check_stored(m, p + "/rec.bin", data, "rec.bin", ["copied"])
    assert len(checks.rows(m, "rec.bin")) == 1



def test_write_during_directory_promotion_waits_for_it(stack, mount_factory, proxied, uniq):
    """Review M3, this mount's writers: a file inside a directory being promoted is opened for
    writing while the promotion's cleanup looks at its source (that HEAD answered late). The
    open waits for the rename (libfuse's path locks) and then finds the file moved (stored:
    EPERM): a new version never lands between the cleanup's HEAD and its DELETE. (Passes
    before the fence change too: it guards the reason why this mount needs no key lock.)"""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}, "fs": {"promote_workers": "1"}})
    p = project(m, uniq)
    os.makedirs(os.path.join(m.inbox, "wd"))
    old, new = os.urandom(4000), os.urandom(4100)
    checks.write(os.path.join(m.inbox, "wd", "f.bin"), old)
    os.stat(os.path.join(m.inbox, "wd", "f.bin"))  # its dentry cached: no lookup later
    held = threading.Event()
    res = []
    px.rule = _hold_cleanup_head("wd/f.bin", held)
    t = _run_dir(m, "wd", p, res)
    assert held.wait(30)
    try:
        with open(os.path.join(m.inbox, "wd", "f.bin"), "r+b") as f:
            f.write(new)
        wrote = 0
    except OSError as e:
        wrote = e.errno
    t.join(60)
    assert not t.is_alive()
    px.rule = None
    _no_open_entries(m)
    assert res == [0]
    assert wrote in (errno.EPERM, errno.EBUSY, errno.ENOENT)
    check_stored(m, p + "/wd/f.bin", old, "wd/f.bin", ["copied"])
    assert len(checks.rows(m, "wd/f.bin")) == 1


def _hold_cleanup_head(name, held):
    # copy, then the verification's HEAD of the destination, then the cleanup's HEAD of the
    # source, then its DELETE
    state = {"copied": False, "verified": False, "held": False}

    def rule(meth, path, h):
        if _is_copy(meth, h) and name in path:
            state["copied"] = True
        elif (meth == "HEAD" and state["copied"] and "/storage-unique/" in path
              and name in path):
            state["verified"] = True
        elif (meth == "HEAD" and state["verified"] and not state["held"]
              and ("/recepcao-raw/" + name) in path):
            state["held"] = True
            held.set()
            return ("late", 4)  # the cleanup's HEAD took effect; its answer is late
        return None
    return rule


def _run_dir(m, d, p, res):
    return _in_thread(lambda: os.rename(os.path.join(m.inbox, d),
                                        os.path.join(m.projects, p, d)), res)


def test_upload_by_another_mount_during_cleanup_is_reported(stack, mount_factory, proxied,
                                                           uniq):
    """Review M3, other writers: mount B commits a new version of a file while mount A's
    promotion of it is between its cleanup's HEAD and DELETE. The stores we serve do not honour
    a conditional DELETE, so A's DELETE removes B's upload; A must notice it afterwards and say
    so loudly with the key (B's row stays live: the integrity check finds it), and A records
    removed_at only on the promoted upload's row (B's commit may have removed that row
    first, as an overwrite: then A writes nothing to it)."""
    px = proxied
    ma = mount_factory(config={"s3": {"endpoint": px.url}})
    mb = mount_factory(reset=False)
    p = project(ma, uniq)
    old, new = os.urandom(4000), os.urandom(4100)
    drop(ma, "xw.bin", old)
    held = threading.Event()
    res = []
    px.rule = _hold_cleanup_head("xw.bin", held)
    t = _run(ma, "xw.bin", p, res)
    assert held.wait(30)
    checks.write(os.path.join(mb.inbox, "xw.bin"), new)  # B commits meanwhile
    t.join(60)
    assert not t.is_alive()
    px.rule = None
    assert res == [0]
    stored = srows(ma, p + "/xw.bin")
    assert [r["outcome"] for r in stored] == ["copied"]
    assert stored[0]["sha256"] == ma.sha256_bytes(old)
    rows = checks.rows(ma, "xw.bin")
    assert len(rows) == 2
    promoted = [r for r in rows if r["sha256"] == ma.sha256_bytes(old)]
    assert len(promoted) == 1 and promoted[0]["removed_at"] is not None
    # (B's commit of the new version may have removed it first, as an overwrite)
    assert promoted[0]["removal_reason"].startswith(("promoted to", "overwritten by"))
    newer = [r for r in rows if r["sha256"] == ma.sha256_bytes(new)]
    assert len(newer) == 1 and newer[0]["removed_at"] is None
    if checks.get_object(ma, "xw.bin") is None:
        log = ma.daemon_log()
        assert "a newer upload" in log and "recepcao-raw/xw.bin" in log
    else:
        assert checks.get_object(ma, "xw.bin") == new


def test_entry_left_by_a_failed_source_delete_is_finished_without_another_rename(
        stack, mount_factory, proxied, uniq):
    """Review H2 (second half): the source's DELETE fails (503) after the storage row is
    committed, so the rename fails and the entry stays 'stored' with the file in both places.
    Once the store answers again the mount's background sweep finishes the entry by itself,
    with no further rename of that file: one object, one row, the source gone."""
    from faultproxy import SLOWDOWN
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url, "max_retries": "1"},
                              "fs": {"recover_interval": "3"}})
    p = project(m, uniq)
    data = os.urandom(3000)
    drop(m, "sw.bin", data)
    px.rule = lambda meth, path, h: (("status", 503, SLOWDOWN)
                                     if meth == "DELETE" and "/recepcao-raw/sw.bin" in path
                                     else None)
    try:
        promote(m, "sw.bin", p)
        failed = None
    except OSError as e:
        failed = e.errno
    assert failed is not None
    assert [j["state"] for j in journal(m, p + "/sw.bin")] == ["stored"]
    assert checks.get_object(m, "sw.bin") == data
    assert [r["outcome"] for r in srows(m, p + "/sw.bin")] == ["copied"]
    px.rule = None
    m.wait_until(lambda: [j["state"] for j in journal(m, p + "/sw.bin")] == ["done"],
                 timeout=60, what="the entry finished by the mount itself")
    check_stored(m, p + "/sw.bin", data, "sw.bin", ["copied"])
    assert len(checks.rows(m, "sw.bin")) == 1


OWNER_HOLDERS = ("select pid from pg_locks where locktype = 'advisory' and classid = 1129665367"
                 " and objsubid = 2 and granted")


def test_idle_session_timeout_never_ends_the_promotion_owner_session(stack, mount_factory,
                                                                     uniq):
    """Review-36 R5, seen in passing: the promotion owner's session lock lives in a session
    that is idle between promotions; idle_session_timeout (a role's or database's setting, or
    the conninfo's options: 1.5 s here) ended it, freeing the owner lock, so another process's
    recovery could take this live process's entries over and its steps were refused. Expected:
    the owner lock held by one session all along, no 'is lost' warning, and a promotion after
    the idle period stored once."""
    opts = " options='-c idle_session_timeout=1500'"
    m = mount_factory(config={"postgres": {"conninfo": stack.conninfo + opts}})
    samples = []  # the owner locks' holders, every 0.2 s for 6 s
    t0 = time.monotonic()
    while time.monotonic() - t0 < 6:
        samples.append(frozenset(r["pid"] for r in m.sql_dicts(OWNER_HOLDERS)))
        time.sleep(0.2)
    pids = set().union(*samples)
    unheld = sum(1 for x in samples if len(x) != 1)
    p = project(m, uniq)
    data = os.urandom(3000)
    drop(m, "idle.bin", data)
    promote(m, "idle.bin", p)
    with open(m.log_path, "rb") as f:
        log = f.read().decode("utf-8", "replace")
    assert (m.alive(), len(pids), unheld, log.count("is lost"),
            log.count("journal owner")) == (True, 1, 0, 0, 1), (pids, unheld, len(samples))
    check_stored(m, p + "/idle.bin", data, "idle.bin", ["copied"])
