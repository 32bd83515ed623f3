"""Hostile read of 9aaf042 (review-31 R1's fix): db_live_watch takes a lost liveness lock back
within a second, noticing the session's end without a round trip; the start sweeps wait
DB_LIVE_GRACE_MS (5 s) when a claimer's lock is free and drop only what is still free then.
Each test failed on 9aaf042 for the reason its docstring gives (review-36.md); all are fixed."""
import os
import socket
import threading
import time

import pytest

from test_perms import A, B, FOREIGN, as_user, changes, open_to_others
from test_review_held_commit import GHolder
from test_review_held_rename import _mvs
from test_review_hide import _fd_stat, _hidden
from test_review_31 import LOCK_PID, _claimer

# db_pool.c's db_sql_live_lock, as libpq sends it in its Parse message
LIVE_MARK = b"pg_try_advisory_lock(hashtextextended($1::text, 7310303))"


def _end(x):
    """shutdown first: a close alone sends no FIN while another thread is in recv on it."""
    for f in (lambda: x.shutdown(socket.SHUT_RDWR), x.close):
        try:
            f()
        except OSError:
            pass


class PgLive:
    """A TCP proxy in front of PostgreSQL for one mount. A connection that sends LIVE_MARK is
    that mount's liveness connection. sever(): each liveness connection's server side is
    closed (the server ends the session, its lock is free) while its client side stays open
    and silent, as after a failover to a standby or a middlebox that reaped the connection
    without telling the client: nothing reaches the client until its keepalives (30 s idle +
    3 x 10 s) or a write find out. refuse: new connections are closed at once (the server
    is at max_connections, pg_hba, a path that does not work from this host for now)."""

    def __init__(self, port):
        self.up = port
        self.refuse = threading.Event()
        self.live = []  # (client, server, state) of liveness connections
        self.cut = []  # client sockets of severed ones, kept open
        self.mu = threading.Lock()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def conninfo(self, stack):
        return stack.conninfo.replace(f"port={self.up}", f"port={self.port}") + \
            " sslmode=disable"

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            if self.refuse.is_set():
                self.refused += 1
                c.close()
                continue
            threading.Thread(target=self._open, args=(c,), daemon=True).start()

    def _open(self, c):
        s = socket.create_connection(("127.0.0.1", self.up))
        st = {"severed": False}
        threading.Thread(target=self._c2s, args=(c, s, st), daemon=True).start()
        threading.Thread(target=self._s2c, args=(c, s, st), daemon=True).start()

    def _c2s(self, c, s, st):
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                if LIVE_MARK in b:
                    with self.mu:
                        self.live.append((c, s, st))
                if st["severed"]:
                    continue  # swallowed: the server is gone, the client is never told
                s.sendall(b)
        except OSError:
            pass
        if not st["severed"]:
            _end(c)
        _end(s)

    def _s2c(self, c, s, st):
        try:
            while True:
                b = s.recv(65536)
                if not b or st["severed"]:
                    break
                c.sendall(b)
        except OSError:
            pass
        if not st["severed"]:
            _end(c)
            _end(s)

    def sever(self):
        with self.mu:
            live = list(self.live)
            self.live.clear()
        for c, s, st in live:
            st["severed"] = True
            with self.mu:
                self.cut.append(c)
            _end(s)
        return len(live)

    def unsever(self):
        """The severed connections' client sides are closed too (the client learns)."""
        with self.mu:
            cut = list(self.cut)
            self.cut.clear()
        for c in cut:
            _end(c)

    def close(self):
        self.refuse.clear()
        self.unsever()
        self.ls.close()


def _hide_on(a, uniq):
    """_hide_on_a's steps on a given mount a: B's y.txt (0600) held open by B, A's rename of
    x.txt over it; a's hidden name keeps B's row, tagged with a's claimer."""
    open_to_others(a)
    d = a.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o777)
    pa = lambda n: a.path("inbox", f"{uniq}/{n}")  # noqa
    assert as_user(B, f"open({pa('y.txt')!r}, 'w').write('B SECRET')",
                   f"os.chmod({pa('y.txt')!r}, 0o600)") == ["ok", "ok"]
    assert as_user(A, f"open({pa('x.txt')!r}, 'w').write('A NEW')") == ["ok"]
    reader = GHolder(B, pa("y.txt"), os.O_RDONLY)
    assert _mvs(A, (pa("x.txt"), pa("y.txt"))) == ["ok"]
    rows = _hidden(a, uniq)
    assert len(rows) == 1 and rows[0]["claimed_by"].endswith("!hidden") and \
        (rows[0]["uid"], rows[0]["mode"]) == (B, 0o600), rows
    return pa, reader, rows[0]


def _lock_pids(m, claimer):
    return [r["pid"] for r in m.sql_dicts(LOCK_PID, (claimer,))]


def _proxied_a(stack, mount_factory, uniq):
    px = PgLive(int(stack.conninfo.split("port=")[1].split()[0]))
    a = mount_factory(config={"postgres": {"conninfo": px.conninfo(stack)}, **FOREIGN},
                      opts="allow_other", name="a")
    pa, reader, row = _hide_on(a, uniq)
    a.wait_until(lambda: px.live, timeout=10, what="a's liveness connection seen")
    return px, a, pa, reader, row


def _b_starts_and_a_keeps(a, b_factory, uniq, row, reader):
    """b starts (its sweeps run), then what a's hidden name shows: (a alive, the hidden rows'
    keys, the changes logged for the hidden key since, B's fd stat on a)."""
    before = len(changes(a, row["object_key"], every=True))
    b = b_factory()
    b.wait_until(lambda: os.path.isdir(b.path("inbox", uniq)), timeout=40,
                 what="b lists the directory")
    time.sleep(3)  # past a's attribute cache
    after = _hidden(a, uniq)
    logged = [(c["op"], c["changed_by"]) for c in
              changes(a, row["object_key"], every=True)][before:]
    return (a.proc.poll(), [r["object_key"] for r in after], logged, _fd_stat(reader, a))


def test_a_liveness_session_lost_silently_keeps_the_live_processs_hidden_rows(
        stack, mount_factory, uniq):
    """R1 (Medium-High): db_live_watch notices the end of a's liveness session only from what
    the server sent (PQconsumeInput, no round trip). When the session ends and nothing
    reaches the client (a failover to a standby behind the same address, a NAT or firewall
    that dropped the idle connection's state, the server host gone), a's connection looks
    fine until its keepalives give up, 30 to 60 s later (keepalives_idle 30, interval 10,
    count 3), while on the server (the new primary) a's lock is free. Any sweep in that
    time waits 5 s, finds the lock still free, and drops a's live hidden row, logged as the
    sweeping mount's root 'drop'. Here the proxy closes the server side of a's liveness
    connection and keeps the client side open and silent (its kernel answers keepalives, so
    the client never learns: a real peer would let it learn after 30-60 s, still 6-12 times
    the grace). Since review-36 R4's fix the liveness connection has its own keepalives
    (idle 5, interval 2, count 3: about 11 s) and tcp_user_timeout 10 s, still more than
    twice the grace. Expected: a's row stays and nothing is logged."""
    px, a, pa, reader, row = _proxied_a(stack, mount_factory, uniq)
    try:
        claimer = _claimer(row)
        assert len(_lock_pids(a, claimer)) == 1
        assert px.sever() == 1
        a.wait_until(lambda: not _lock_pids(a, claimer), timeout=20, interval=0.05,
                     what="the severed session's lock is free on the server")
        got = _b_starts_and_a_keeps(
            a, lambda: mount_factory(config=FOREIGN, reset=False, opts="allow_other",
                                     name="b"), uniq, row, reader)
        assert got == (None, [row["object_key"]], [], (B, 0o600)), (row, got)
    finally:
        reader.close()
        px.close()


def test_a_live_process_that_cannot_reconnect_for_a_while_keeps_its_hidden_rows(
        stack, mount_factory, uniq):
    """R2 (Medium): the grace (DB_LIVE_GRACE_MS, 5 s) is the whole margin between 'a's
    session ended' and 'a is gone'. a's watch takes the lock back only if a new connection
    succeeds within about 4 s; while a's new connections fail (the server at max_connections
    as every client reconnects after a restart, a slow or failing route or DNS from a's
    host, connect_timeout's 5 s each try), a lives, serves, and keeps tagging hidden names
    (no request checks the lock any more), and any other mount's start sweep takes it for
    gone and drops its rows, logged as that mount's root 'drop'. Here a's session is ended
    by pg_terminate_backend (a notices at once) while the proxy refuses a's new
    connections; b starts. Expected: a's row stays while a lives (a failed re-take is no
    evidence of death). Fixed: a's pool still works, so its heartbeat stays fresh (the
    heartbeat lease, as R1)."""
    px, a, pa, reader, row = _proxied_a(stack, mount_factory, uniq)
    try:
        claimer = _claimer(row)
        pids = _lock_pids(a, claimer)
        assert len(pids) == 1
        px.refuse.set()
        a.sql("select pg_terminate_backend(%s)", (pids[0],))
        a.wait_until(lambda: not _lock_pids(a, claimer), timeout=20, interval=0.05,
                     what="a's liveness lock is free")
        try:
            a.wait_until(lambda: px.refused >= 1, timeout=20, what="a tried to take it again")
        except Exception:
            print(a.log_tail(40))
            raise
        got = _b_starts_and_a_keeps(
            a, lambda: mount_factory(config=FOREIGN, reset=False, opts="allow_other",
                                     name="b"), uniq, row, reader)
        px.refuse.clear()
        assert got == (None, [row["object_key"]], [], (B, 0o600)), (row, got)
    finally:
        px.refuse.clear()
        reader.close()
        px.close()


def test_rmdir_on_another_mount_while_the_lock_is_being_taken_back_keeps_a_live_hidden_row(
        stack, mount_factory, uniq):
    """R3 (Low-Medium): the sweeps got a grace in 9aaf042, the tree drops did not:
    db_sql_attrs_drop with spare keeps a tagged row only while LIVE_TAG finds its lock held
    now, in pg_locks. In the window between a's liveness session's end and the watch's
    re-take (up to DB_LIVE_WATCH_MS plus a connect, or as long as the re-take fails), an
    rmdir (or a directory rename) on another mount drops a's live hidden row, logged as the
    remover's 'drop', and B's open file on a shows the defaults (3000, 0644). The window is
    held open here (the proxy refuses a's new connections, as in R2); without it it is about
    a second after every session end. Expected: the rmdir keeps the row (or ENOTEMPTY).
    Fixed: LIVE_TAG spares a tag unless its process is gone by the sweeps' rule (lock free
    and heartbeat stale)."""
    px, a, pa, reader, row = _proxied_a(stack, mount_factory, uniq)
    try:
        b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
        open_to_others(b)
        pb = lambda n: b.path("inbox", f"{uniq}/{n}")  # noqa
        b.wait_until(lambda: os.path.exists(pb("y.txt")), timeout=40, what="b lists y")
        claimer = _claimer(row)
        pids = _lock_pids(a, claimer)
        assert len(pids) == 1
        px.refuse.set()
        a.sql("select pg_terminate_backend(%s)", (pids[0],))
        a.wait_until(lambda: not _lock_pids(a, claimer), timeout=20, interval=0.05,
                     what="a's liveness lock is free")
        done = as_user(A, f"os.unlink({pb('y.txt')!r})")
        try:
            os.rmdir(b.path("inbox", uniq))
            done.append("ok")
        except OSError as e:
            import errno
            done.append(errno.errorcode[e.errno])
        px.refuse.clear()
        time.sleep(3)  # past a's attribute cache
        after = _hidden(a, uniq)
        logged = [op for op, in [(c["op"],) for c in changes(a, row["object_key"], every=True)]]
        seen = _fd_stat(reader, a)
        assert done[1] == "ENOTEMPTY" or \
            ([r["object_key"] for r in after], "drop" in logged, seen) == \
            ([row["object_key"]], False, (B, 0o600)), (done, after, logged, seen)
    finally:
        px.refuse.clear()
        reader.close()
        px.close()


def test_a_silently_dead_liveness_connection_never_stops_claim_renewals(
        stack, mount_factory, uniq):
    """R4 (Medium): ofile.c's claims thread renews the claims of open new files and then
    calls db_live_ensure, which sends 'SELECT 1' on the liveness connection and waits for
    the answer with no client-side timeout, holding d->live_lock (statement_timeout is the
    server's: it never sees the query). On a connection whose peer is silently gone (as in
    R1) the write is retransmitted until TCP gives up (tcp_retries2: about 15 min; keepalives
    do not run while data is unacknowledged), so the claims thread stops for that long: no
    claim of the process is renewed (a lease is 900 s by default, renewed every 225 s), and
    the watch thread and db_close wait on live_lock behind it. Here (claim_lease 4 s, renewed
    every second) a's liveness connection is severed as in R1 while A holds a new file open on
    a; its claim runs out and B's O_EXCL create of the name on b succeeds. Expected: the
    claim is renewed while A's file is open (EEXIST on b). Since 9aaf042 the watch thread
    takes the lock back, so the claims thread's db_live_ensure is not needed at all. Fixed:
    the claims thread no longer touches the liveness connection; every round trip on it is
    bounded on the client (DB_LIVE_ANSWER_MS, under live_lock) and db_live_ensure makes none
    on the old connection; the liveness connection gets fast keepalives and
    tcp_user_timeout."""
    from test_excl import EXCL, claim, hold, release
    px = PgLive(int(stack.conninfo.split("port=")[1].split()[0]))
    p = None
    try:
        lease = dict(FOREIGN["fs"], claim_lease="4")
        a = mount_factory(config={"postgres": {"conninfo": px.conninfo(stack)}, "fs": lease},
                          opts="allow_other", name="a")
        b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
        for m in (a, b):
            open_to_others(m)
        key = f"{uniq}.txt"
        a.wait_until(lambda: px.live, timeout=10, what="a's liveness connection seen")
        p = hold(A, a.path("inbox", key), "A, a long write")
        (c,) = claim(a, key)
        assert c["live"], c
        assert px.sever() == 1
        time.sleep(9)  # two leases: renewed every second while the claims thread runs
        live = claim(a, key)[0]["live"]
        got = as_user(B, f"os.close(os.open({b.path('inbox', key)!r}, {EXCL}))")
        assert (live, got) == (True, ["EEXIST"]), (live, got)
    finally:
        px.unsever()  # the claims thread's round trip fails now: it goes on
        try:
            if p:
                release(p)
        finally:
            px.close()


def test_idle_session_timeout_never_ends_the_liveness_session(stack, mount_factory, uniq):
    """R5 (Low-Medium): idle_session_timeout (a role's or database's setting, or the
    conninfo's options) ends every session idle that long. The liveness connection is idle
    for the whole life of the process and nothing of 9aaf042 keeps it from idling (the watch
    never sends anything), so the server ends it every period: each time the lock is free
    until the watch takes it back (R3's window, and R2's when the re-take is slow) and a
    warning 'liveness lock was lost' is logged (1440 a day at 60 s). Here a's conninfo sets
    idle_session_timeout=1500ms. Expected: the liveness session lives on (the session
    setup could set idle_session_timeout = 0 on it, or the watch's heartbeat keep it busy).
    Fixed: the liveness session's setup sets idle_session_timeout = 0 (PostgreSQL 14+)."""
    opts = " options='-c idle_session_timeout=1500'"
    a = mount_factory(config={"postgres": {"conninfo": stack.conninfo + opts}, **FOREIGN},
                      opts="allow_other", name="a")
    first = a.sql_value("select count(*) from pg_locks where locktype = 'advisory'"
                        " and objsubid = 1 and granted")
    samples = []  # the liveness lock's holders, every 0.2 s for 6 s
    t0 = time.monotonic()
    while time.monotonic() - t0 < 6:
        samples.append(frozenset(r["pid"] for r in a.sql_dicts(
            "select pid from pg_locks where locktype = 'advisory' and objsubid = 1"
            " and granted and pid in (select pid from pg_stat_activity"
            " where query like 'SELECT pg_try_advisory_lock(hashtextextended(%%')")))
        time.sleep(0.2)
    pids = set().union(*samples)
    unheld = sum(1 for x in samples if len(x) != 1)
    with open(a.log_path, "rb") as f:
        lost = f.read().decode("utf-8", "replace").count("liveness lock was lost")
    # held all along, by one session (a lock lost and never taken back fails too)
    assert (a.alive(), first >= 1, len(pids), unheld, lost) == (True, True, 1, 0, 0), \
        (first, pids, unheld, len(samples), lost)


LIVE_SESSIONS = ("select pid from pg_stat_activity"
                 " where query like 'SELECT pg_try_advisory_lock(hashtextextended(%%'")


def test_a_stop_during_the_start_sweeps_grace_leaves_no_dead_mount(mount_factory, uniq):
    """R6 (Low): cfs_start_workers runs the sweeps after fuse_mount and fuse_daemonize and
    before fuse_set_signal_handlers and the FUSE loop. Since 9aaf042 a sweep that finds a free
    liveness lock (any crash left a tagged or pending row) sleeps DB_LIVE_GRACE_MS there (5 s,
    10 s when both sweeps do): the mount point exists but every access to it hangs, and a
    SIGTERM (systemctl stop or restart, a supervisor's timeout) kills the daemon with the
    default action, leaving a dead FUSE mount ('Transport endpoint is not connected') for
    an admin to clear. Here a crashes (SIGKILL) with a tagged hidden row; b starts and is sent
    SIGTERM half a second after it took its liveness lock (then its sweep waits). Expected:
    b stops cleanly (its mount point unmounted). Fixed: the signal handlers are installed
    before cfs_start_workers; a stop during the grace ends the session, and the loop, once
    reached, returns at once and unmounts."""
    from conftest import _mountinfo_has
    from test_review_hide import _hide_on_a
    a, pa, reader, row = _hide_on_a(mount_factory, uniq)
    a.expected_death = True
    a._kill()  # SIGKILL: a crash; its tagged row stays, its lock is free
    try:
        reader.close()
    except Exception:  # noqa: BLE001 (its mount is gone)
        pass
    a._cleanup_after_death()
    assert [r["object_key"] for r in _hidden(a, uniq)] == [row["object_key"]]
    before = {r["pid"] for r in a.sql_dicts(LIVE_SESSIONS)}
    b = mount_factory(config=FOREIGN, reset=False, start=False, name="b")
    err = {}
    b._cleanup_after_death = lambda: None  # the harness's mount() must not clear it first

    def start():
        try:
            b.mount()
        except Exception as e:  # noqa: BLE001 (the daemon is stopped below)
            err["mount"] = str(e)[:200]
    t = threading.Thread(target=start, daemon=True)
    t.start()
    b.wait_until(lambda: {r["pid"] for r in b.sql_dicts(LIVE_SESSIONS)} - before,
                 timeout=30, interval=0.05, what="b holds its liveness lock")
    time.sleep(0.5)
    b.expected_death = True
    os.kill(b.proc.pid, 15)
    b.proc.wait(timeout=30)
    t.join(30)
    dead = _mountinfo_has(b.mnt)
    rc = b.proc.returncode
    del b._cleanup_after_death
    b._cleanup_after_death()
    assert (dead, rc) == (False, 0), (dead, rc, err)


HEARTBEAT = "select claimer, host, pid, extract(epoch from grace)::int as grace_s" \
    " from live_heartbeat where claimer = %s"


def _crash_with_rows(mount_factory, uniq):
    """a ([fs] live_grace 2 s) leaves, at its SIGKILL, a hidden row (B's y.txt held open by B,
    A's x.txt renamed over it) and a pending row (A's new w.txt, still open, renamed over B's
    v.txt), both naming a's claimer, and its heartbeat row. Returns (a, claimer, the hidden
    row, v's key)."""
    from test_review_hide_h5 import FHolder
    a = mount_factory(config={"fs": dict(FOREIGN["fs"], live_grace="2")}, opts="allow_other",
                      name="a")
    pa, reader, row = _hide_on(a, uniq)
    claimer = _claimer(row)
    kv = f"{uniq}/v.txt"
    assert as_user(B, f"open({pa('v.txt')!r}, 'w').write('B V')") == ["ok"]
    w = FHolder(A, pa("w.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        assert w.op("w", "A W") == "ok"
        assert _mvs(A, (pa("w.txt"), pa("v.txt"))) == ["ok"]
        assert _pending_of(a, kv, claimer), a.sql_dicts(
            "select * from file_attrs_pending where bucket = %s", (a.reception_bucket,))
        a.wait_until(lambda: a.sql_dicts(HEARTBEAT, (claimer,)), timeout=10,
                     what="a's heartbeat written")
        (hb,) = a.sql_dicts(HEARTBEAT, (claimer,))
        assert (hb["host"], hb["pid"], hb["grace_s"]) == (os.uname().nodename, a.proc.pid, 2), hb
        a.crash()
    finally:
        for h in (reader, w):
            try:
                h.close()
            except Exception:  # noqa: BLE001 (its mount is gone)
                pass
    return a, claimer, row, kv


def _pending_of(m, key, claimer):
    return m.sql_dicts("select token from file_attrs_pending where bucket = %s"
                       " and object_key = %s and token like %s",
                       (m.reception_bucket, key, claimer.replace("\\", "\\\\")
                        .replace("%", "\\%").replace("_", "\\_") + "#%"))


def test_a_crashed_processs_hidden_and_pending_rows_go_once_its_heartbeat_is_stale(
        mount_factory, uniq):
    """The other side of R1-R3's fix (the heartbeat lease): a process that really is gone
    (SIGKILL: its liveness lock is free and nothing writes its heartbeat) loses its rows once
    its heartbeat is older than its grace ([fs] live_grace, 2 s here): b's periodic sweep
    drops its hidden row and its pending row, and then its heartbeat row. Bounded wait, no
    timing assert."""
    a, claimer, row, kv = _crash_with_rows(mount_factory, uniq)
    assert not a.sql_dicts(LOCK_PID, (claimer,))
    b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
    b.wait_until(lambda: not _hidden(b, uniq) and not _pending_of(b, kv, claimer) and
                 not b.sql_dicts(HEARTBEAT, (claimer,)), timeout=60, interval=0.5,
                 what="the crashed a's hidden and pending rows and heartbeat dropped")
    assert b.alive()


def test_a_sweeps_drop_is_logged_as_the_systems_not_a_users(mount_factory, uniq):
    """R7 (Low): a sweep's drop of a gone process's hidden row was logged as a 'drop' by the
    sweeping mount's root user ('root (uid 0) @ host'), which nobody did. The row stays in
    the log (the system removed it), attributed to the sweep: changed_by 'custodyfs sweep of'
    the gone claimer, no uid nor user, the sweeping host."""
    a, claimer, row, kv = _crash_with_rows(mount_factory, uniq)
    b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
    b.wait_until(lambda: not _hidden(b, uniq), timeout=60, interval=0.5,
                 what="the crashed a's hidden row dropped")
    ch = changes(b, row["object_key"], every=True)
    assert [(c["op"], c["changed_by"], c["changed_uid"], c["changed_user"], c["changed_host"])
            for c in ch][-1] == ("drop", f"custodyfs sweep of {claimer}", None, None,
                                 os.uname().nodename), ch
    assert [c["op"] for c in ch].count("drop") == 1, ch
