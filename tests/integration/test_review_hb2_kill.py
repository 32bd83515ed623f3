"""A write's clearing of set-id bits (hostile reads of w/hb2, doc/reviews/review-T-Hb.md).

The database checks a change of attributes on the row as it is. A write's clearing of
setuid/setgid is checked as its own kind: through a descriptor open for writing it is allowed
whatever the mode says now (POSIX checks write permission at open; the kernel's clearing is
forced), and its mode is computed from the row's. Without default_permissions, the daemon lets
through exactly the bits the kernel's rule clears (setgid stays without group execute)."""
import errno
import json
import os
import subprocess
import time

import pytest

from test_perms import A, B, FOREIGN, as_user, attrs_row, open_to_others
from test_rename_attrs import mode_owner

# B opens the file for writing, waits for a line on stdin, then writes or truncates
WRITER = r"""
import errno, json, os, sys
p, how = sys.argv[1], sys.argv[2]
fd = os.open(p, os.O_WRONLY)
print("open", flush=True)
sys.stdin.readline()
out = []
for step in (lambda: os.write(fd, b"B") if how == "write" else os.ftruncate(fd, 0),
             lambda: os.close(fd)):
    try:
        step()
        out.append("ok")
    except OSError as e:
        out.append(errno.errorcode[e.errno])
print(json.dumps(out), flush=True)
"""


@pytest.mark.parametrize("how", ["write", "ftruncate"])
def test_a_writer_opened_before_the_owner_took_write_away_still_writes(mount_factory, uniq,
                                                                       how):
    """A's 04666 file; B opens it for writing; A makes it 04644; B's write (or ftruncate)
    through that descriptor succeeds and clears setuid (0644), as on a local filesystem.
    On a8eb30f: EPERM on every write, the row stays 04644."""
    m = mount_factory(config=FOREIGN, opts="allow_other")
    open_to_others(m)
    key = f"{uniq}.txt"
    f = m.path("inbox", key)
    assert as_user(A, f"open({f!r}, 'w').write('A')", f"os.chmod({f!r}, 0o4666)") == \
        ["ok", "ok"]
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
    kills = [(c["op"], c["changed_uid"], c["mode"]) for c in
             m.sql_dicts("select * from file_attr_changes where bucket = %s and"
                         " object_key = %s and op = 'kill_priv' order by id",
                         (m.reception_bucket, key))]
    assert kills == [("kill_priv", B, 0o644)], kills


def test_without_default_permissions_a_write_clears_only_what_the_kernel_clears(mount_factory,
                                                                                 uniq):
    """A's 06767 file (setgid without group execute) written by B on a mount without
    default_permissions: the kernel clears setuid only (02767), and the daemon lets exactly
    that through. Before: the daemon let through only a change dropping both bits, and B's
    write failed (EPERM at close)."""
    m = mount_factory(config=FOREIGN, opts="allow_other,no_default_permissions")
    open_to_others(m)
    key = f"{uniq}.sh"
    f = m.path("inbox", key)
    assert as_user(A, f"open({f!r}, 'w').write('#!')", f"os.chmod({f!r}, 0o6767)") == \
        ["ok", "ok"]
    got = as_user(B, f"open({f!r}, 'r+b').write(b'x')")
    res = (got, oct(attrs_row(m, key)["mode"]))
    assert res == (["ok"], "0o2767"), res
