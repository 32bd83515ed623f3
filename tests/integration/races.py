"""Helpers shared by the integration tests that hold a request at a FaultProxy while something
else happens (a crash, the database going down): an operation run in a thread, the proxy let
go, the daemon killed and mounted again."""
import errno
import os
import threading


def errname(e):
    """The errno name of an OSError (its number as a string when it has none)."""
    return errno.errorcode.get(e.errno, str(e.errno))


def rename_in_thread(m, frm, to):
    """rename(inbox/frm, inbox/to) on mount m in a daemon thread, started; returns (thread,
    out): out gets "ok" or the errno name once the rename returns."""
    out = []

    def go():
        try:
            os.rename(m.path("inbox", frm), m.path("inbox", to))
            out.append("ok")
        except OSError as e:
            out.append(errname(e))
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, out


def let_go(px, t, timeout=30):
    """The proxy passes every request again and lets the held ones go; then t is joined (for
    timeout seconds at the most)."""
    px.rule = None
    px.release.set()
    t.join(timeout)


def crash_held(m, px, t):
    """m's daemon killed while t's request is held at px; then let_go(px, t)."""
    m.crash()
    let_go(px, t)


def remount(m, px):
    """After crash_held: px holds again what a rule holds, and m is mounted again."""
    px.release.clear()
    m.mount()
