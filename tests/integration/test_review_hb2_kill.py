"""A write's clearing of set-id bits (hostile reads of w/hb2, doc/reviews/review-T-Hb.md).

The database checks a change of attributes on the row as it is. A write's clearing of
setuid/setgid is checked as its own kind: through a descriptor open for writing it is allowed
whatever the mode says now (POSIX checks write permission at open; the kernel's clearing is
forced), and its mode is computed from the row's. Without default_permissions, the daemon lets
through exactly the bits the kernel's rule clears (setgid stays without group execute)."""
import json
import os
import subprocess
import time

import pytest

from test_perms import A, B, FOREIGN, as_user, attrs_row, open_to_others, two_mounts
from test_rename_attrs import mode_owner

# Runs the steps given (lambdas of fd), each "ok" or its errno's name, printed as JSON
STEPS = r"""
def steps(*fns):
    out = []
    for fn in fns:
        try:
            fn()
            out.append("ok")
        except OSError as e:
            out.append(errno.errorcode[e.errno])
    print(json.dumps(out), flush=True)
"""

# B opens the file for writing, waits for a line on stdin, then writes or truncates
WRITER = "import errno, json, os, sys\n" + STEPS + r"""
p, how = sys.argv[1], sys.argv[2]
fd = os.open(p, os.O_WRONLY)
print("open", flush=True)
sys.stdin.readline()
steps(lambda: os.write(fd, b"B") if how == "write" else os.ftruncate(fd, 0),
      lambda: os.close(fd))
"""


def as_file(mount_factory, uniq, mode, opts="allow_other", name=".sh"):
    """A mount (opts) open to others, and A's file inbox/<uniq><name> ('#!') with mode.
    Returns the mount, the key and the path."""
    m = mount_factory(config=FOREIGN, opts=opts)
    open_to_others(m)
    key = f"{uniq}{name}"
    f = m.path("inbox", key)
    assert as_user(A, f"open({f!r}, 'w').write('#!')", f"os.chmod({f!r}, {mode})") == \
        ["ok", "ok"]
    return m, key, f


def kills_and_chmods(m, key, ops=("kill_priv", "chmod")):
    return [(c["op"], c["changed_uid"], c["mode"]) for c in
            m.sql_dicts("select * from file_attr_changes where bucket = %s and"
                        " object_key = %s and op = any(%s) order by id",
                        (m.reception_bucket, key, list(ops)))]


@pytest.mark.parametrize("how", ["write", "ftruncate"])
def test_a_writer_opened_before_the_owner_took_write_away_still_writes(mount_factory, uniq,
                                                                       how):
    """A's 04666 file; B opens it for writing; A makes it 04644; B's write (or ftruncate)
    through that descriptor succeeds and clears setuid (0644), as on a local filesystem.
    On a8eb30f: EPERM on every write, the row stays 04644."""
    m, key, f = as_file(mount_factory, uniq, 0o4666, name=".txt")
    p = subprocess.Popen(["setpriv", f"--reuid={B}", f"--regid={B}", "--clear-groups",
                          "/usr/bin/python3", "-c", WRITER, f, how],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "open"
        assert as_user(A, f"os.chmod({f!r}, 0o4644)") == ["ok"]
        p.stdin.write("go\n")
        p.stdin.flush()
        got = json.loads(p.stdout.readline())
    finally:
        p.kill()
        p.wait(timeout=60)
    res = (got, oct(attrs_row(m, key)["mode"]), oct(mode_owner(f)[0]))
    assert res == (["ok", "ok"], "0o644", "0o644"), res
    kills = kills_and_chmods(m, key, ("kill_priv",))
    assert kills == [("kill_priv", B, 0o644)], kills


def test_without_default_permissions_a_write_clears_only_what_the_kernel_clears(mount_factory,
                                                                                 uniq):
    """A's 06767 file (setgid without group execute) written by B on a mount without
    default_permissions: the kernel clears setuid only (02767), and the daemon lets exactly
    that through. Before: the daemon let through only a change dropping both bits, and B's
    write failed (EPERM at close)."""
    m, key, f = as_file(mount_factory, uniq, 0o6767, "allow_other,no_default_permissions")
    got = as_user(B, f"open({f!r}, 'r+b').write(b'x')")
    res = (got, oct(attrs_row(m, key)["mode"]))
    assert res == (["ok"], "0o2767"), res


# A holds the file open for writing until a line comes on stdin
HOLDER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
print("open", flush=True)
sys.stdin.readline()
os.close(fd)
"""


class Holder:
    """uid holds path open for writing while the with block runs."""

    def __init__(self, uid, path):
        self.p = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}",
                                   "--clear-groups", "/usr/bin/python3", "-c", HOLDER, path],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __enter__(self):
        assert self.p.stdout.readline().strip() == "open"
        return self

    def __exit__(self, *exc):
        try:
            self.p.stdin.write("x\n")
            self.p.stdin.flush()
            self.p.wait(timeout=60)
        finally:
            self.p.kill()



def test_another_users_writer_lets_nobody_else_clear_set_id_bits(mount_factory, uniq):
    """Without default_permissions, B's chmod 0755 of A's 04755 file has the shape of the
    kernel's clearing; A holding the file open for writing must not make it B's (third hostile
    read of w/hb2, Medium: any user's writable handle made a kill 'kill_open'; B cleared the
    bit, logged as a kill_priv although nobody wrote)."""
    m, key, f = as_file(mount_factory, uniq, 0o4755, "allow_other,no_default_permissions")
    with Holder(A, f):
        got = as_user(B, f"os.chmod({f!r}, 0o755)")
    res = (got, oct(attrs_row(m, key)["mode"]), kills_and_chmods(m, key))
    assert res == (["EPERM"], "0o4755", [("chmod", A, 0o4755)]), res


@pytest.mark.parametrize("setid", [False, True], ids=["plain", "setuid"])
def test_a_truncate_by_path_of_a_file_open_here_is_checked_by_the_daemon(mount_factory, uniq,
                                                                         setid):
    """A's 0666 (or 04666) file is open for writing by A on mount a; A makes it 0644 on mount
    b. Past a's cache_ttl, a stat on a is answered from its old snapshot (the kernel caches
    s|0666 for its attr_timeout, 1 s) while the snapshot is read again; B's truncate(2) by path
    on a then passes the kernel and must be refused by the daemon, which checked a path
    truncation only for a file not open here (third hostile read of w/hb2, finding 2). A's
    writer grants B no kill either."""
    a, b = two_mounts(mount_factory)
    key = f"{uniq}.sh"
    fa, fb = a.path("inbox", key), b.path("inbox", key)
    s = 0o4000 if setid else 0
    assert as_user(A, f"open({fa!r}, 'w').write('#!secret')", f"os.chmod({fa!r}, {s | 0o666})") \
        == ["ok", "ok"]
    with Holder(A, fa):
        os.stat(fa)
        assert as_user(A, f"os.chmod({fb!r}, {s | 0o644})") == ["ok"]
        time.sleep(3.5)  # past a's cache_ttl (3 s)
        os.stat(fa)  # served from the old snapshot, which is read again meanwhile
        time.sleep(0.4)
        got = as_user(B, f"os.truncate({fa!r}, 0)")
    body = a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read()
    by_b = [k for k in kills_and_chmods(a, key) if k[1] == B]
    res = ("refused" if got in (["EACCES"], ["EPERM"]) else got,
           oct(attrs_row(a, key)["mode"]), body, by_b)
    assert res == ("refused", oct(s | 0o644), b"#!secret", []), res


# root opens the file for writing, then becomes uid (a descriptor kept across setuid(), as one
# passed over a socket or inherited by `sudo -u`), and writes
DROP = "import errno, json, os, sys\n" + STEPS + r"""
p, uid = sys.argv[1], int(sys.argv[2])
fd = os.open(p, os.O_RDWR)
os.setgroups([]); os.setresgid(uid, uid, uid); os.setresuid(uid, uid, uid)
steps(lambda: os.write(fd, b"B"), lambda: os.close(fd))
"""


@pytest.mark.parametrize("opts", ["allow_other", "allow_other,no_default_permissions"],
                         ids=["default_permissions", "no_default_permissions"])
def test_a_descriptor_kept_by_another_uid_still_writes(mount_factory, uniq, opts):
    """A's 04755 file, opened for writing by root which then becomes B: B's write through that
    descriptor succeeds and clears setuid, as on a local filesystem (POSIX checks at open). The
    descriptor is the calling process's, whoever opened it (fourth hostile read of w/hb2: a
    check of the opener's uid refused it, EPERM)."""
    m, key, f = as_file(mount_factory, uniq, 0o4755, opts)
    p = subprocess.run(["/usr/bin/python3", "-c", DROP, f, str(B)], capture_output=True,
                       text=True, timeout=60)
    res = (json.loads(p.stdout), oct(attrs_row(m, key)["mode"]))
    assert res == (["ok", "ok"], "0o755"), res
