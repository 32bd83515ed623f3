"""The daemon under the system call sandbox of its own systemd unit (mount-helpers/
custodyfs@.service.in), without systemd.

The unit allows only SystemCallFilter=@system-service @mount (the rest: EPERM), the socket
families of RestrictAddressFamilies=, no writable+executable memory, no namespaces, no
realtime, no set-uid bits, a locked personality, no new privileges and only three capabilities
(CapabilityBoundingSet=). A system call that the daemon, libfuse, libcurl, libpq, OpenSSL or
glibc needs outside that would make a real install fail with EPERM, and no other test would see
it (they run the daemon bare; this machine has no systemd as PID 1). Here the settings are read
from the unit file itself, its @groups expanded by `systemd-analyze syscall-filter`
(tests/integration/unit_sandbox.py), and the daemon is started through unit_sandbox.py, which
loads the same seccomp filters systemd would and execs it, with allow_other as ExecStart= has
it.

Under it, the daemon's whole life as a unit lives it: the store over HTTPS by host name
(localhost: getaddrinfo, OpenSSL, a private CA in ca_file; tlsproxy.py), $NOTIFY_SOCKET and
$WATCHDOG_USEC (READY=1, WATCHDOG=1: a datagram socket bound by the test plays systemd), the
mount; files written into inbox/ (a small one, one of three multipart parts, one by another
user), a rename, a project made with mkdir and a file moved into it, the audit/ views read,
chmod, and a stop by SIGTERM (systemctl stop) as well as an unmount by fusermount3 -u; every
step checked with boto3 and psycopg2, the daemon's exit status 0 and its log free of
"Operation not permitted".

The same life under a deliberately narrowed filter (the unit's minus @mount, @network-io,
ftruncate, or unlink and unlinkat) must fail, and is asserted to: the test cannot pass
vacuously, and its log grep catches a syscall whose EPERM the daemon only logs."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import checks
import pytest
import seccomp  # noqa: F401  python3-seccomp (.ci/run): unit_sandbox.py loads the filters
from conftest import REPO, HarnessError, _mountinfo_has
from tlsproxy import ThrowawayCA, TlsProxy

import unit_sandbox

UNIT = REPO / "mount-helpers" / "custodyfs@.service.in"
PART = 5 << 20
# The narrowed filters: the unit's less one of these, each a way a missing syscall shows.
#   @mount           mount(2): the daemon cannot mount (fusermount3's fallback fails too)
#   @network-io      socket(2) and the rest: no database, the daemon exits
#   ftruncate        mounted, but an operation fails (audit/*.csv cannot take its snapshot)
#   unlink unlinkat  every operation works; only the log shows it (a spool journal left
#                    behind): what the EPERM grep of the daemon log is there for
NARROWED = ["@mount", "@network-io", "ftruncate", "unlink unlinkat"]
EPERM_RE = re.compile(r"Operation not permitted|\bEPERM\b")


def eperm_lines(m):
    return [ln for ln in m.daemon_log().splitlines() if EPERM_RE.search(ln)]


def sandbox(tmp_path, drop=()):
    """The wrapper command: unit_sandbox.py with the unit's settings (minus `drop`)."""
    spec = unit_sandbox.sandbox_spec(unit_sandbox.unit_settings(UNIT), drop=drop)
    path = tmp_path / ("sandbox-spec%s.json" % "".join("-" + d.strip("@") for d in drop))
    path.write_text(json.dumps(spec, indent=1))
    return [sys.executable, str(REPO / "tests" / "integration" / "unit_sandbox.py"), str(path)]


def status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(ln.split(":", 1) for ln in f.read().splitlines() if ":" in ln)


class NotifyReader:
    """The notify socket read all along, as systemd reads it: a socket nobody reads fills
    (net.unix.max_dgram_qlen datagrams, 10 by default) and the daemon's next sd_notify
    blocks, so its stop hangs (CI 4 of stop 37: the second mount's unmount waited 30 s for
    its watchdog thread's WATCHDOG=1 on a socket this test had stopped reading)."""

    def __init__(self, sock):
        self.sock = sock
        self.msgs = []
        self.cv = threading.Condition()
        self.stop = threading.Event()
        self.sock.settimeout(0.2)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                b = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.cv:
                self.msgs += b.decode().split("\n")
                self.cv.notify_all()

    def take(self, seconds):
        """The messages received so far and within seconds from now (each returned once)."""
        time.sleep(seconds)
        with self.cv:
            out, self.msgs = self.msgs, []
        return out


def notifications(reader, seconds):
    """The messages that arrive on the notify socket within seconds (and any not taken
    yet)."""
    return reader.take(seconds)


@pytest.fixture
def https(stack, tmp_path):
    ca = ThrowawayCA(str(tmp_path / "ca"))
    px = TlsProxy(stack.endpoint, ca)
    px.ca_pem = ca.ca_pem
    yield px
    px.close()


@pytest.fixture
def notify(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    reader = NotifyReader(sock)
    yield path, reader
    reader.stop.set()
    reader.t.join(5)
    sock.close()


def dget(m, key):
    return m.s3.get_object(Bucket=m.storage_bucket, Key=key)["Body"].read()


def test_unit_settings_are_read_from_the_unit():
    """The settings the sandbox is built from are the unit's own, and what they expand to
    holds what the daemon is known to need (a guard against a parse that reads nothing)."""
    st = unit_sandbox.unit_settings(UNIT)
    assert st["SystemCallFilter"] and st["SystemCallErrorNumber"] == ["EPERM"]
    spec = unit_sandbox.sandbox_spec(st)
    allow = set(spec["allow"])
    assert {"mount", "umount2", "socket", "connect", "openat", "read", "futex"} <= allow
    assert not {"ptrace", "init_module", "reboot", "swapon"} & allow  # @debug @module ...
    assert spec["address_families"] == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert spec["MemoryDenyWriteExecute"] and spec["NoNewPrivileges"]
    assert "CAP_SYS_ADMIN" in spec["capabilities"]
    narrowed = set(unit_sandbox.sandbox_spec(st, drop=["@mount"])["allow"])
    assert "mount" not in narrowed and "umount2" not in narrowed and "read" in narrowed


PROBE = r"""
import ctypes, errno, mmap, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
def fails(code, what, fn):
    try:
        fn()
    except OSError as e:
        if e.errno != code:
            sys.exit(f"{what}: {e}, not {errno.errorcode[code]}")
        return
    sys.exit(f"{what} worked")
def c(name, *args):
    def call():
        if getattr(libc, name)(*args) == -1:
            raise OSError(ctypes.get_errno(), name)
    return call
fails(errno.EPERM, "mmap W|X", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC))
mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC).close()  # exec alone: allowed
fails(errno.EAFNOSUPPORT, "AF_NETLINK", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
fails(errno.EPERM, "unshare", c("unshare", 0x40000000))  # CLONE_NEWNET
fails(errno.EPERM, "setns", c("setns", os.open("/proc/self/ns/net", os.O_RDONLY), 0))
fails(errno.EPERM, "SCHED_FIFO", lambda: os.sched_setscheduler(0, os.SCHED_FIFO,
                                                               os.sched_param(1)))
fails(errno.EPERM, "chmod u+s", lambda: os.chmod(sys.argv[1], 0o4755))
os.chmod(sys.argv[1], 0o755)
fails(errno.EPERM, "personality", c("personality", 0x0040000))  # ADDR_NO_RANDOMIZE
fails(errno.EPERM, "swapoff (@swap)", c("swapoff", sys.argv[1].encode()))
fails(errno.EPERM, "ptrace (@debug)", c("ptrace", 16, os.getppid(), 0, 0))  # PTRACE_ATTACH
print("probe ok")
"""


def test_launcher_applies_what_systemd_would(tmp_path):
    """unit_sandbox.py itself: each restriction does what the unit asks of systemd."""
    target = tmp_path / "file"
    target.write_text("x")
    p = subprocess.run([*sandbox(tmp_path), sys.executable, "-c", PROBE, str(target)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert p.returncode == 0 and "probe ok" in p.stdout, p.stdout


def daemon(mount_factory, tmp_path, https, notify, drop=()):
    """A Mount (not mounted yet) of the daemon as the unit runs it: under unit_sandbox.py
    (the unit's filters minus `drop`), allow_other, the store over HTTPS by host name,
    $NOTIFY_SOCKET and $WATCHDOG_USEC."""
    env = {"NOTIFY_SOCKET": notify[0], "WATCHDOG_USEC": "2000000",
           "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "SSL_CERT_DIR": "/etc/ssl/certs",
           # an ASan build (run.sh's sanitizer pass): LeakSanitizer stops the world with
           # ptrace(2), which the unit rightly refuses (@debug); every other test of that pass
           # checks leaks, and the rest of ASan and UBSan still runs here
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0"
                                          ":print_summary=1") + ":detect_leaks=0"}
    config = {"s3": {"endpoint": f"https://localhost:{https.port}", "verify_tls": "true",
                     "ca_file": https.ca_pem},
              "fs": {"part_size": str(PART)}}
    return mount_factory(config=config, opts="allow_other", env=env, start=False,
                         wrapper=sandbox(tmp_path, drop=drop))


def life(m, uniq, https, nsock):
    """The daemon's life under the sandbox, every step checked (raises on the first that
    does not work)."""
    m.mount(timeout=20)
    msgs = notifications(nsock, 3)
    assert "READY=1" in msgs, msgs
    assert msgs.count("WATCHDOG=1") >= 2, msgs  # every second
    # the daemon itself (unit_sandbox.py exec'd it) runs under the filters
    s = status(m.pid)
    assert s["Seccomp"].strip() == "2" and s["NoNewPrivs"].strip() == "1", s
    assert int(s["Seccomp_filters"]) >= 2, s
    # CAP_SYS_ADMIN 21, CAP_SYS_PTRACE 19, CAP_DAC_READ_SEARCH 2: the unit's bounding set
    assert int(s["CapBnd"], 16) == int(s["CapEff"], 16) == (1 << 21) | (1 << 19) | (1 << 2), s
    assert "custodyfs" in os.readlink(f"/proc/{m.pid}/exe")

    # inbox/: a small file and a multipart one (three parts of PART)
    small, big = f"{uniq}-small.txt", f"{uniq}-big.bin"
    small_data = b"sandboxed reception\n"
    big_data = os.urandom(2 * PART + 12345)
    checks.write(m.path("inbox", small), small_data)
    checks.write(m.path("inbox", big), big_data)
    for key, data in ((small, small_data), (big, big_data)):
        assert checks.get_object(m, key) == data, key
        live = checks.live_rows(m, key)
        assert len(live) == 1 and live[0]["sha256"] == m.sha256_bytes(data), checks.rows(m, key)
    assert checks.read(m.path("inbox", big)) == big_data
    # a file of another user (allow_other; the daemon reads that writer's /proc entries with
    # the bounding set's CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH only)
    for d in (m.stack.tmp, os.path.dirname(m.base), m.base, m.mnt):
        os.chmod(d, os.stat(d).st_mode | 0o055)
    theirs = f"{uniq}-theirs.txt"
    p = subprocess.run(["setpriv", "--reuid=2001", "--regid=2001", "--clear-groups",
                        sys.executable, "-c", f"open({m.path('inbox', theirs)!r}, 'w')"
                        ".write('from uid 2001')"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    assert p.returncode == 0, p.stdout
    assert checks.get_object(m, theirs) == b"from uid 2001"
    (r,) = checks.rows(m, theirs)
    assert r["received_uid"] == 2001 and "(uid 2001)" in r["received_by"], r
    assert os.stat(m.path("inbox", theirs)).st_uid == 2001

    # rename in inbox/
    renamed = f"{uniq}-renamed.txt"
    os.rename(m.path("inbox", small), m.path("inbox", renamed))
    assert checks.get_object(m, renamed) == small_data
    assert checks.get_object(m, small) is None
    assert len(checks.live_rows(m, renamed)) == 1 and checks.live_rows(m, small) == []

    # a project by mkdir, a file moved into it (promotion to the storage bucket)
    os.mkdir(m.path("projects", uniq))
    assert m.sql("select prefix from projects_registry where prefix = %s", (uniq,)) == [(uniq,)]
    os.rename(m.path("inbox", renamed), m.path("projects", uniq, renamed))
    key = f"{uniq}/{renamed}"
    assert dget(m, key) == small_data
    srows = m.sql_dicts("select * from storage_audit where dest_key = %s order by id", (key,))
    assert [r["outcome"] for r in srows] == ["copied"], srows
    assert checks.get_object(m, renamed) is None
    assert checks.read(m.path("projects", uniq, renamed)) == small_data

    # audit/ views
    rcsv = checks.read(m.path("audit", "reception_audit.csv")).decode()
    assert big in rcsv and renamed in rcsv
    scsv = checks.read(m.path("audit", "storage_audit.csv")).decode()
    assert key in scsv
    assert key in checks.read(m.path("audit", "by-project", uniq + ".csv")).decode()

    # chmod
    os.chmod(m.path("inbox", big), 0o640)
    assert os.stat(m.path("inbox", big)).st_mode & 0o7777 == 0o640

    # stop as systemctl stop does (SIGTERM to the main process): the daemon unmounts itself
    pid = m.pid
    os.kill(pid, signal.SIGTERM)
    assert m.proc.wait(timeout=60) == 0, m.log_tail()
    assert not _mountinfo_has(m.mnt)
    m.unmount()

    # again, unmounted from outside (fusermount3 -u); the data is all still there
    m.mount()
    assert int(status(m.pid)["Seccomp_filters"]) >= 2
    assert checks.read(m.path("inbox", big)) == big_data
    assert os.stat(m.path("inbox", big)).st_mode & 0o7777 == 0o640
    assert checks.read(m.path("projects", uniq, renamed)) == small_data
    m.unmount()
    assert m.proc.returncode == 0, m.log_tail()
    assert https.handshakes > 0 and https.refused == 0
    assert eperm_lines(m) == [], m.log_tail()


def test_daemon_works_under_the_unit_sandbox(mount_factory, uniq, tmp_path, https, notify):
    life(daemon(mount_factory, tmp_path, https, notify), uniq, https, notify[1])


@pytest.mark.parametrize("drop", NARROWED)
def test_a_narrowed_filter_is_detected(mount_factory, uniq, tmp_path, https, notify, drop):
    """The same life under the unit's filter less what the daemon needs must fail, with the
    EPERM in the daemon's log that the test above greps for. If it passed, the sandbox would
    not be applied, or the test above could not see what it is there for."""
    m = daemon(mount_factory, tmp_path, https, notify, drop=drop.split())
    with pytest.raises((HarnessError, OSError, AssertionError)) as ei:
        life(m, uniq, https, notify[1])
    m.expected_death = True  # whatever the daemon did is this test's expectation
    assert eperm_lines(m), f"{ei.value}\n{m.log_tail()}"
