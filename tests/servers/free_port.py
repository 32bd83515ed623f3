#!/usr/bin/env python3
"""Prints a free loopback TCP port P such that P+OFFSET is free too for every OFFSET given.

usage: free_port.py [--prefer PORT] [OFFSET...]   (or import it: free_port.find())
With --prefer, PORT is printed when it (and its offsets) are free; otherwise a random free one.
"""
import random
import socket
import sys


def free(p):
    """Can a server bind p? With SO_REUSEADDR, as every server here binds (node, PostgreSQL,
    Swift, Python's HTTPServer): a port only in TIME_WAIT from closed connections is free
    for them; one a listener or a live connection holds is not."""
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()


def find(offsets=(0,), prefer=None):
    """A port P such that P+o is free on 127.0.0.1 for every o in offsets (0 is always
    included): prefer when it qualifies, else a random free one; None when none is found."""
    offs = [0] + [int(o) for o in offsets]

    def ok(p):
        return p + max(offs) < 65000 and all(free(p + o) for o in offs)

    if prefer is not None and ok(prefer):
        return prefer
    low = ephemeral_low()
    for _ in range(200):
        if low - max(offs) > PORT_FLOOR + 100:
            # Below the ephemeral range: no outgoing connection (a pool's, a client's) is
            # ever given one of these ports, so a server restarted on the same port (the
            # harness's heal, stop_s3/start_s3) finds it free again. In the range, one
            # long-lived connection that got P as its local port made Swift's bind fail for
            # 30 s (CI, stop 36: the whole Swift pass lost its buckets).
            p = random.randrange(PORT_FLOOR, low - max(offs))
        else:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
            s.close()
        if ok(p):
            return p
    return None


PORT_FLOOR = 10000


def ephemeral_low():
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def main(argv):
    prefer = None
    if argv[:1] == ["--prefer"]:
        prefer, argv = int(argv[1]), argv[2:]
    p = find(argv, prefer)
    if p is None:
        print("no free port", file=sys.stderr)
        return 1
    print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
