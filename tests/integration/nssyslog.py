"""Run custodyfs the default way (no -f: it daemonizes and logs through syslog(3), which
writes datagrams to /dev/log) and capture what reaches /dev/log. Used by
test_logging_syslog.py, run as

    unshare -m --propagation private /usr/bin/python3 nssyslog.py BIN CONFIG MNT WORKDIR FILES

In that private mount namespace /dev is a fresh tmpfs holding binds of the host's fuse, null,
zero, random and urandom nodes, and /dev/log is a bind of a datagram socket this script bound
in WORKDIR, so nothing on the host changes and no other process's syslog is touched. FILES is
JSON: [[name, hex bytes], ...] written into inbox/ one after the other (close included). The
mount is then unmounted (umount(8): the daemon exits) and the result printed as JSON:
{"rc": the daemonizing parent's exit status, "out": its stdout+stderr, "writes": {name: errno
name or null}, "lines": [every datagram, as text]}."""
import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time


def run(cmd):
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def mounted(mnt):
    with open("/proc/self/mountinfo") as f:
        return any(ln.split()[4] == mnt for ln in f)


def main():
    binary, config, mnt, work, files = sys.argv[1:6]
    files = json.loads(files)
    sock_path = os.path.join(work, "log.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    lines = []
    done = threading.Event()

    def reader():  # drain all the time: a unix datagram queue holds only ~10 messages
        sock.settimeout(0.2)
        while not done.is_set():
            try:
                lines.append(sock.recv(65536).decode("utf-8", "replace"))
            except socket.timeout:
                continue
    t = threading.Thread(target=reader, daemon=True)
    t.start()

    olddev = os.path.join(work, "hostdev")
    os.mkdir(olddev)
    run(["mount", "--rbind", "/dev", olddev])
    run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/dev"])
    for n in ("fuse", "null", "zero", "random", "urandom"):
        open(f"/dev/{n}", "w").close()
        run(["mount", "--bind", os.path.join(olddev, n), f"/dev/{n}"])
    open("/dev/log", "w").close()
    run(["mount", "--bind", sock_path, "/dev/log"])

    env = {k: v for k, v in os.environ.items()}
    p = subprocess.run([binary, "-o", f"config={config}", mnt], capture_output=True, text=True,
                       timeout=120, env=env, stdin=subprocess.DEVNULL)
    out = {"rc": p.returncode, "out": p.stdout + p.stderr, "writes": {}, "lines": lines}
    deadline = time.monotonic() + 30
    while not mounted(mnt) and time.monotonic() < deadline:
        time.sleep(0.1)
    if mounted(mnt):
        for name, data in files:
            try:
                with open(os.path.join(mnt, "inbox", name), "wb") as f:
                    f.write(bytes.fromhex(data))
                out["writes"][name] = None
            except OSError as e:
                out["writes"][name] = errno.errorcode.get(e.errno, str(e.errno))
        subprocess.run(["umount", mnt], capture_output=True, timeout=60)
        deadline = time.monotonic() + 60  # the daemon's last line: "unmounted MNT"
        while time.monotonic() < deadline and not any(f"unmounted {mnt}" in x for x in lines):
            time.sleep(0.1)
        time.sleep(0.5)
    done.set()
    t.join()
    out["lines"] = list(lines)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
