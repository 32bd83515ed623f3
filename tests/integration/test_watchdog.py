"""systemd's watchdog (issue 8 item 2c; doc/custodyfs.1, WatchdogSec=): under a unit with
WatchdogSec= systemd starts the daemon with $WATCHDOG_USEC (and $WATCHDOG_PID) and expects
WATCHDOG=1 on $NOTIFY_SOCKET at least once per interval, else it kills and restarts it. The
daemon sends it every half interval, only while it is healthy: the FUSE loop takes requests
and the database pool hands out a connection that answers.

systemd is played by a datagram socket bound by the test ($NOTIFY_SOCKET), as in
test_install.py; what is checked is what arrives there, when, against what the test did to the
database (stopped: PostgreSQL's own pg_ctl) and to the FUSE loop (every one of its threads kept
busy by reads the store never answers: a FaultProxy)."""
import os
import socket
import subprocess
import time

import pytest

from checks import recv_timed
from faultproxy import FaultProxy

INTERVAL = 2.0  # $WATCHDOG_USEC in seconds: a ping every second


def _pings(msgs):
    return [t for t, m in msgs if "WATCHDOG=1" in m.split("\n")]


def _drain(sock):
    sock.setblocking(False)
    try:
        while True:
            sock.recv(4096)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


def _assert_regular(pings, seconds):
    """What systemd needs over `seconds`: pings all along, never a gap of a whole interval
    (WatchdogSec: systemd would kill the daemon), and about one per half interval, not a
    stream. Bounds are loose: this process or the daemon can be late by a fraction of a
    second on a loaded machine (the pings queued meanwhile then arrive together)."""
    want = seconds / (INTERVAL / 2)
    assert want / 2 <= len(pings) <= want + 3, (len(pings), want, pings)
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert gaps and max(gaps) < INTERVAL, gaps


@pytest.fixture
def notify_sock(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    yield s, path
    s.close()


def _wd_env(path, **extra):
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(int(INTERVAL * 1e6))}
    env.update(extra)
    return env


def test_watchdog_pings_while_healthy_and_while_the_database_is_down(mount_factory,
                                                                    notify_sock, uniq):
    """Pings at half the interval while the daemon is healthy; a database outage is not a
    hang of the daemon (a restart would not end it and would cut every open file): the pings
    go on through it, and the mount answers (EIO for what needs the database)."""
    sock, path = notify_sock
    m = mount_factory(env=_wd_env(path))
    # healthy, in use: a file written meanwhile
    with open(m.path("inbox", f"{uniq}.txt"), "wb") as f:
        f.write(b"watched\n")
    _drain(sock)
    msgs = recv_timed(sock, 8)
    _assert_regular(_pings(msgs), 8)
    assert "watchdog: telling systemd every 1000 ms" in m.daemon_log()

    m.stop_pg("fast")
    try:
        _drain(sock)
        msgs = recv_timed(sock, 4)
        _assert_regular(_pings(msgs), 4)
        assert m.alive()
        assert "watchdog: not telling systemd" not in m.daemon_log()
    finally:
        m.start_pg()
    _drain(sock)
    _assert_regular(_pings(recv_timed(sock, 4)), 4)


def test_watchdog_stops_while_the_fuse_loop_takes_no_request(stack, mount_factory, notify_sock,
                                                             uniq):
    """Both threads of the loop ([fs] max_threads = 2) wait in reads of objects whose GET the
    store never answers: nothing takes the kernel's next request, and the pings stop; they
    come again once the store answers."""
    sock, path = notify_sock
    px = FaultProxy(stack.endpoint)
    cfg = {"fs": {"max_threads": "2"},
           "s3": {"endpoint": px.url, "request_timeout_ms": "60000", "max_retries": "0"}}
    try:
        m = mount_factory(cfg, env=_wd_env(path))
        for n in ("a.bin", "b.bin"):  # foreign objects: a read is a GET in the handler
            stack.s3.put_object(Bucket=stack.reception_bucket, Key=f"{uniq}/{n}",
                                Body=b"x" * 4096)
        d = m.path("inbox", uniq)
        m.wait_until(lambda: sorted(os.listdir(d)) == ["a.bin", "b.bin"], timeout=30,
                     what="the foreign objects listed")
        _drain(sock)
        _assert_regular(_pings(recv_timed(sock, 4)), 4)

        def rule(method, path_, headers):
            if method == "GET" and path_.split("?")[0].endswith(("/a.bin", "/b.bin")):
                return ("hang",)
            return None
        px.rule = rule
        readers = [subprocess.Popen(["timeout", "120", "cat", os.path.join(d, n)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                   for n in ("a.bin", "b.bin")]
        try:
            m.wait_until(lambda: sum(1 for a in list(px.log) if a[0] == "GET"
                                     and a[1].split("?")[0].endswith((".bin"))) >= 2,
                         timeout=30, what=f"both GETs held by the store")
            t0 = time.monotonic()
            msgs = recv_timed(sock, 3 * INTERVAL)
            # a beat just before the loop's last request came back may still go out
            late = [t - t0 for t in _pings(msgs) if t - t0 > INTERVAL + 0.5]
            assert late == [], f"WATCHDOG=1 {late} s into the stuck loop"
            assert all(r.poll() is None for r in readers)
            assert "watchdog: not telling systemd the daemon is alive: the FUSE loop took " \
                   "no request" in m.daemon_log(), m.log_tail()
        finally:
            px.rule = None
            px.release.set()
            for r in readers:
                try:
                    r.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    r.kill()
                    r.wait(timeout=30)
        _drain(sock)
        msgs = recv_timed(sock, 6)
        assert len(_pings(msgs)) >= 3, (msgs, m.log_tail())
        assert "watchdog: healthy again" in m.daemon_log()
        m.unmount()
    finally:
        px.rule = None
        px.release.set()
        px.close()


def test_watchdog_for_another_process_sends_nothing(mount_factory, notify_sock):
    """$WATCHDOG_PID names another process (the service's main process is not this one): no
    WATCHDOG=1, while READY=1 comes as usual."""
    sock, path = notify_sock
    m = mount_factory(env=_wd_env(path, WATCHDOG_PID=str(os.getpid())))
    msgs = recv_timed(sock, 3 * INTERVAL)
    assert any("READY=1" in x.split("\n") for _, x in msgs), msgs
    assert _pings(msgs) == [], msgs
    assert "watchdog: telling" not in m.daemon_log()


def test_watchdog_pid_of_this_process_pings(mount_factory, notify_sock):
    """$WATCHDOG_PID is the daemon's own (a unit's main process): pings at half the interval.
    The daemon's pid is known only once it runs: it is started by a shell that sets
    WATCHDOG_PID=$$ and execs it."""
    sock, path = notify_sock
    m = mount_factory(start=False, env=_wd_env(path))
    import conftest
    real = conftest.BIN
    wrapper = os.path.join(m.base, "as-pid.sh")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nWATCHDOG_PID=$$ exec {real} "$@"\n')
    os.chmod(wrapper, 0o755)
    conftest.BIN = wrapper
    try:
        m.mount()
    finally:
        conftest.BIN = real
    assert open(f"/proc/{m.pid}/environ", "rb").read().split(b"\0").count(
        f"WATCHDOG_PID={m.pid}".encode()) == 1
    _drain(sock)
    _assert_regular(_pings(recv_timed(sock, 6)), 6)
