"""Ownership and permissions of inbox/ (issue 9): attributes persisted in PostgreSQL
(file_attrs, with every chmod/chown/utimens logged in the append-only file_attr_changes),
seen across a remount and by a second mount sharing the database.

Every result is checked through the mount (stat, errno) and independently: the tables with
psycopg2 (the harness's sql helpers), the bucket with boto3, and EVERY reception_audit row of
a key (checks.rows), removed ones included."""
import errno
import os
import stat
import time

import psycopg2
import pytest

import checks
from checks import rows, write


def attrs_row(m, key):
    r = m.sql_dicts("select * from file_attrs where bucket = %s and object_key = %s",
                    (m.reception_bucket, key))
    return r[0] if r else None


def changes(m, key, every=False):
    """chmod/chown/utimens logged for key (every: create, mkdir, move and drop too)."""
    return [c for c in m.sql_dicts("select * from file_attr_changes where bucket = %s"
                                   " and object_key = %s order by id", (m.reception_bucket, key))
            if every or c["op"] in ("chmod", "chown", "utimens")]


def wait_stat(m, path, pred, what, timeout=10):
    """stat(path) until pred(st) (another mount's change shows within the cache TTL)."""
    m.wait_until(lambda: pred(os.stat(path)), timeout=timeout, what=what)


# --------------------------------------------------------------------------- persisted attributes

def test_chmod_chown_utimens_persist_across_remount(fresh_mount, uniq):
    m = fresh_mount
    key = f"{uniq}.txt"
    p = m.path("inbox", key)
    write(p, b"hello")
    os.chmod(p, 0o640)
    os.chown(p, 2001, 2002)
    os.utime(p, ns=(1_600_000_000_111_222_333, 1_500_000_000_123_456_789))
    st = os.stat(p)
    assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == (2001, 2002)
    m.restart()
    st = os.stat(p)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (2001, 2002)
    assert st.st_mtime_ns == 1_500_000_000_123_456_789
    assert st.st_atime_ns == 1_600_000_000_111_222_333
    r = attrs_row(m, key)
    assert (r["mode"], r["uid"], r["gid"]) == (0o640, 2001, 2002)
    assert r["mtime_ns"] == 1_500_000_000_123_456_789
    # one change row per call, each naming who (the caller: root here) and when
    ch = changes(m, key)
    assert [c["op"] for c in ch] == ["chmod", "chown", "utimens"], ch
    assert ch[0]["mode"] == 0o640 and (ch[1]["uid"], ch[1]["gid"]) == (2001, 2002)
    assert ch[2]["mtime_ns"] == 1_500_000_000_123_456_789
    assert ch[2]["atime_ns"] == 1_600_000_000_111_222_333
    for c in ch:
        assert c["changed_uid"] == 0 and c["changed_user"] == "root"
        assert c["changed_host"] == os.uname().nodename and c["changed_at"] is not None
        assert "(uid 0)" in c["changed_by"]
    # the file itself: one upload, one live row
    assert len(rows(m, key)) == 1


def test_attr_change_log_is_append_only(fresh_mount, uniq):
    m = fresh_mount
    p = m.path("inbox", f"{uniq}.txt")
    write(p, b"x")
    os.chmod(p, 0o600)
    for q in ("update file_attr_changes set mode = 511",
              "delete from file_attr_changes",
              "truncate file_attr_changes"):
        with pytest.raises(psycopg2.Error) as ei:
            m.sql(q)
        assert "append-only" in str(ei.value)
    assert [c["mode"] for c in changes(m, f"{uniq}.txt")] == [0o600]


def test_second_mount_sees_changes_within_seconds(mount_factory, uniq):
    a = mount_factory(name="a")
    b = mount_factory(reset=False, name="b")
    key = f"{uniq}.txt"
    write(a.path("inbox", key), b"shared")
    pb = b.path("inbox", key)
    b.wait_until(lambda: os.path.exists(pb), timeout=10, what="file seen by mount b")
    os.chmod(a.path("inbox", key), 0o604)
    wait_stat(b, pb, lambda st: stat.S_IMODE(st.st_mode) == 0o604, "chmod seen by mount b")
    os.chown(pb, 2003, 2004)  # and the other way round
    wait_stat(a, a.path("inbox", key), lambda st: (st.st_uid, st.st_gid) == (2003, 2004),
              "chown seen by mount a")
    os.utime(pb, (1_400_000_000, 1_400_000_001))
    wait_stat(a, a.path("inbox", key), lambda st: st.st_mtime == 1_400_000_001,
              "utimens seen by mount a")


def test_attrs_follow_rename_and_go_with_removal(fresh_mount, uniq):
    m = fresh_mount
    d = m.path("inbox", uniq)
    os.mkdir(d)
    write(os.path.join(d, "f"), b"1")
    os.chmod(os.path.join(d, "f"), 0o611)
    os.rename(os.path.join(d, "f"), os.path.join(d, "g"))
    assert attrs_row(m, f"{uniq}/f") is None
    assert attrs_row(m, f"{uniq}/g")["mode"] == 0o611
    os.rename(d, d + "-2")
    assert attrs_row(m, f"{uniq}-2/g")["mode"] == 0o611
    assert attrs_row(m, f"{uniq}/g") is None
    m.restart()
    assert stat.S_IMODE(os.stat(os.path.join(d + "-2", "g")).st_mode) == 0o611
    # a new file under the old name inherits nothing
    write(os.path.join(d + "-2", "h"), b"2")
    os.unlink(os.path.join(d + "-2", "g"))
    assert attrs_row(m, f"{uniq}-2/g") is None
    # the change log keeps the chmod, under the name it had then
    assert [c["op"] for c in changes(m, f"{uniq}/f")] == ["chmod"]
    write(os.path.join(d + "-2", "g"), b"3")
    assert stat.S_IMODE(os.stat(os.path.join(d + "-2", "g")).st_mode) != 0o611


# --------------------------------------------------------------------------- as other users

A, B = 2001, 2002  # numeric uids/gids without passwd entries
FOREIGN = {"fs": {"foreign_uid": "3000", "foreign_gid": "3001"}}

# Runs as the given user: each line of the script is one operation; prints one JSON list with
# "ok", the errno name, or what the operation returned. A file object closed when dropped
# (`open(p, 'wb').write(b)`) reports its close's error as "close:<errno name>" before the
# operation's entry (-X dev: otherwise Python drops that error silently), since a failed close
# is a failed write.
_AS = r"""
import errno, json, os, sys
out = []
def _unraisable(u):
    e = u.exc_value
    out.append("close:" + (errno.errorcode.get(e.errno, str(e.errno))
                           if isinstance(e, OSError) else repr(e)))
sys.unraisablehook = _unraisable
os.umask(int(sys.argv[1], 8))
for line in sys.argv[2:]:
    try:
        r = eval(line)
        out.append("ok" if r is None or isinstance(r, int) else r)
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))
print(json.dumps(out))
"""


def as_user(uid, *ops, umask=0o022):
    """Run ops (Python expressions, os imported) as uid:uid with no other group."""
    import json
    import subprocess
    p = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                        "/usr/bin/python3", "-X", "dev", "-c", _AS, f"{umask:o}", *ops],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def rd(path):
    return f"open({path!r}, 'rb').read().decode()"


@pytest.fixture
def shared(mount_factory):
    """One allow_other mount (the daemon runs as root) with a configured foreign owner."""
    m = mount_factory(config=FOREIGN, opts="allow_other")
    for d in (m.stack.tmp, os.path.dirname(m.base), m.base, m.mnt):
        os.chmod(d, os.stat(d).st_mode | 0o055)  # other users must reach the mount point
    return m


def test_writer_owns_its_file_and_umask_applies(shared, uniq):
    m = shared
    f, d = m.path("inbox", f"{uniq}-a.txt"), m.path("inbox", f"{uniq}-d")
    assert as_user(A, f"open({f!r}, 'w').write('from A')", umask=0o027) == ["ok"]
    assert as_user(B, f"os.mkdir({d!r}, 0o777)", umask=0) == ["ok"]
    st = os.stat(f)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (A, A, 0o640)
    st = os.stat(d)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (B, B, 0o777)
    st = os.stat(m.inbox)
    assert stat.S_IMODE(st.st_mode) == 0o1777 and st.st_uid == 0
    assert stat.S_IMODE(os.stat(m.mnt).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(m.audit).st_mode) == 0o555
    # the audit row names the writer
    (r,) = rows(m, f"{uniq}-a.txt")
    assert r["received_uid"] == A and "(uid 2001)" in r["received_by"]
    # and so does the object's metadata, as s3fs writes it (mode with the file type, mtime
    # in decimal seconds)
    h = m.s3.head_object(Bucket=m.reception_bucket, Key=f"{uniq}-a.txt")["Metadata"]
    assert h["mode"] == str(stat.S_IFREG | 0o640)
    assert (h["uid"], h["gid"]) == (str(A), str(A))
    assert h["mtime"] == str(int(os.stat(f).st_mtime))
    # surviving a remount: the owner is the database's, not the daemon's memory
    m.restart()
    st = os.stat(f)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (A, A, 0o640)


def test_other_user_cannot_remove_rename_or_overwrite(shared, uniq):
    m = shared
    key = f"{uniq}.txt"
    f = m.path("inbox", key)
    mine = m.path("inbox", f"{uniq}-b.txt")
    assert as_user(A, f"open({f!r}, 'w').write('A wrote this')") == ["ok"]
    assert as_user(B, f"open({mine!r}, 'w').write('B')") == ["ok"]
    got = as_user(B, rd(f),
                  f"os.unlink({f!r})",
                  f"os.rename({f!r}, {f + '.moved'!r})",
                  f"os.rename({mine!r}, {f!r})",
                  f"open({f!r}, 'r+b').write(b'x')",
                  f"os.open({f!r}, os.O_WRONLY | os.O_TRUNC)",
                  f"os.truncate({f!r}, 0)",
                  f"open({f!r}, 'ab').write(b'x')",
                  f"os.chmod({f!r}, 0o666)",
                  f"os.chown({f!r}, {B}, {B})",
                  f"os.utime({f!r}, (1, 1))")
    assert got == ["A wrote this", "EPERM", "EPERM", "EPERM", "EACCES", "EACCES", "EACCES",
                   "EACCES", "EPERM", "EPERM", "EPERM"], got
    # nothing changed: the object, its one row, B's own file, no attribute change logged
    assert m.s3.get_object(Bucket=m.reception_bucket, Key=key)["Body"].read() == b"A wrote this"
    (r,) = rows(m, key)
    assert r["removed_at"] is None and r["received_uid"] == A
    assert len(rows(m, f"{uniq}-b.txt")) == 1 and rows(m, f"{uniq}-b.txt")[0]["removed_at"] is None
    assert changes(m, key) == []
    assert not os.path.exists(f + ".moved")
    # the owner may remove its own; root may remove anyone's
    assert as_user(A, f"os.rename({f!r}, {f + '.2'!r})", f"os.unlink({f + '.2'!r})") == ["ok", "ok"]
    os.unlink(mine)
    for k in (key, f"{uniq}.txt.2", f"{uniq}-b.txt"):
        assert all(r["removed_at"] is not None for r in rows(m, k)), k
        assert "Contents" not in m.s3.list_objects_v2(Bucket=m.reception_bucket, Prefix=k)


def test_chmod_600_hides_content_and_chown_is_roots(shared, uniq):
    m = shared
    key = f"{uniq}.txt"
    f = m.path("inbox", key)
    assert as_user(A, f"open({f!r}, 'w').write('secret')", f"os.chmod({f!r}, 0o600)",
                   f"os.chown({f!r}, {B}, -1)", f"os.chown({f!r}, -1, {B})",
                   f"os.chown({f!r}, -1, {A})") == ["ok", "ok", "EPERM", "EPERM", "ok"]
    assert as_user(B, rd(f)) == ["EACCES"]
    assert as_user(A, rd(f)) == ["secret"]
    os.chown(f, B, B)  # root may
    assert as_user(B, rd(f)) == ["secret"]
    assert as_user(A, rd(f)) == ["EACCES"]
    ch = changes(m, key)
    assert [(c["op"], c["changed_uid"]) for c in ch] == \
        [("chmod", A), ("chown", A), ("chown", 0)], ch
    assert (ch[2]["uid"], ch[2]["gid"]) == (B, B)


def test_setuid_cleared_on_write_by_another_user(shared, uniq):
    m = shared
    key = f"{uniq}.sh"
    f = m.path("inbox", key)
    assert as_user(A, f"open({f!r}, 'w').write('#!/bin/sh')", f"os.chmod({f!r}, 0o6777)") == \
        ["ok", "ok"]
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o6777
    assert as_user(B, f"open({f!r}, 'ab').write(b'# B')") == ["ok"]
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o777
    assert attrs_row(m, key)["mode"] == 0o777  # persisted: the kernel asked through chmod
    m.restart()
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o777
    assert m.s3.get_object(Bucket=m.reception_bucket, Key=key)["Body"].read() == b"#!/bin/sh# B"


def test_foreign_upload_gets_the_configured_owner_whatever_its_metadata(shared, uniq):
    m = shared
    key = f"{uniq}.bin"
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=b"from the console",
                    Metadata={"uid": "0", "gid": "0", "mode": str(stat.S_IFREG | 0o4777)})
    f = m.path("inbox", key)
    m.wait_until(lambda: os.path.exists(f), timeout=10, what="foreign object listed")
    st = os.stat(f)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (3000, 3001, 0o644)
    # so another user may read it but not change or remove it
    assert as_user(A, rd(f), f"open({f!r}, 'ab').write(b'x')", f"os.unlink({f!r})") == \
        ["from the console", "EACCES", "EPERM"]
    assert m.s3.get_object(Bucket=m.reception_bucket, Key=key)["Body"].read() == b"from the console"


def test_second_mount_enforces_a_chmod_made_on_the_first(mount_factory, uniq):
    a = mount_factory(opts="allow_other", name="a")
    b = mount_factory(reset=False, opts="allow_other", name="b")
    for m in (a, b):
        for d in (m.stack.tmp, os.path.dirname(m.base), m.base, m.mnt):
            os.chmod(d, os.stat(d).st_mode | 0o055)
    key = f"{uniq}.txt"
    fa, fb = a.path("inbox", key), b.path("inbox", key)
    assert as_user(A, f"open({fa!r}, 'w').write('A')") == ["ok"]
    b.wait_until(lambda: as_user(B, rd(fb)) == ["A"], timeout=10, what="B reads on mount b")
    assert os.stat(fb).st_uid == A
    assert as_user(A, f"os.chmod({fa!r}, 0o600)") == ["ok"]
    b.wait_until(lambda: as_user(B, rd(fb)) == ["EACCES"], timeout=10,
                 what="chmod 600 on mount a enforced on mount b")
    assert as_user(B, f"os.unlink({fb!r})") == ["EPERM"]
    assert len(rows(a, key)) == 1 and rows(a, key)[0]["removed_at"] is None


@pytest.mark.parametrize("how", ["config", "option"])
def test_permission_checks_can_be_turned_off(mount_factory, uniq, how):
    """A single-user mount may turn the kernel's checks off ([fs] default_permissions = false
    or -o no_default_permissions): then another user's removal goes through."""
    if how == "config":
        m = mount_factory(config={"fs": {"default_permissions": "false"}}, opts="allow_other")
    else:
        m = mount_factory(opts="allow_other,no_default_permissions")
    for d in (m.stack.tmp, os.path.dirname(m.base), m.base, m.mnt):
        os.chmod(d, os.stat(d).st_mode | 0o055)
    f = m.path("inbox", f"{uniq}.txt")
    assert as_user(A, f"open({f!r}, 'w').write('A')", f"os.chmod({f!r}, 0o600)") == ["ok", "ok"]
    # chmod and chown are recorded in the shared database, honoured by enforcing mounts: the
    # daemon keeps the kernel's rules for them (review-perm item 8)
    assert as_user(B, f"os.chown({f!r}, {B}, {B})", f"os.chown({f!r}, -1, {B})",
                   f"os.chmod({f!r}, 0o666)") == ["EPERM", "EPERM", "EPERM"]
    assert as_user(A, f"os.chown({f!r}, {B}, -1)", f"os.chown({f!r}, -1, {B})",
                   f"os.chown({f!r}, -1, {A})", f"os.chmod({f!r}, 0o640)") == \
        ["EPERM", "EPERM", "ok", "ok"]
    r = attrs_row(m, f"{uniq}.txt")
    assert (r["uid"], r["gid"], r["mode"]) == (A, A, 0o640)
    assert [(c["op"], c["changed_uid"]) for c in changes(m, f"{uniq}.txt")] == \
        [("chmod", A), ("chown", A), ("chmod", A)]
    assert as_user(B, rd(f), f"os.unlink({f!r})") == ["A", "ok"]
    assert all(r["removed_at"] is not None for r in rows(m, f"{uniq}.txt"))


def test_help_documents_the_permission_options():
    import subprocess
    from conftest import BIN
    out = subprocess.run([BIN, "--help"], capture_output=True, text=True, timeout=10).stdout
    assert "no_default_permissions" in out and "default_permissions = false" in out
    assert "still refuses (EPERM) a chmod" in out


def test_chmod_with_the_database_down_fails_and_changes_nothing(fresh_mount, uniq):
    m = fresh_mount
    key = f"{uniq}.txt"
    p = m.path("inbox", key)
    write(p, b"x")
    os.chmod(p, 0o640)
    m.stop_pg()
    for op in (lambda: os.chmod(p, 0o600), lambda: os.chown(p, 2005, 2005),
               lambda: os.utime(p, (5, 5))):
        with pytest.raises(OSError) as ei:
            op()
        assert ei.value.errno == errno.EIO, ei.value
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640  # what it was: nothing half-done
    m.start_pg()
    m.wait_until(lambda: stat.S_IMODE(os.stat(p).st_mode) == 0o640 and m.alive(), timeout=20,
                 what="mount answers again")
    assert attrs_row(m, key)["mode"] == 0o640 and attrs_row(m, key)["uid"] == 0
    assert [c["op"] for c in changes(m, key)] == ["chmod"]
    os.chmod(p, 0o600)  # and it works again
    assert attrs_row(m, key)["mode"] == 0o600


def test_foreign_overwrite_of_a_users_file_takes_the_configured_owner(shared, uniq):
    """Content that another route put over A's file is not A's: once logged, it shows the
    configured owner and mode, not A's (nor the uploader's claim)."""
    m = shared
    key = f"{uniq}.txt"
    f = m.path("inbox", key)
    assert as_user(A, f"open({f!r}, 'w').write('A')", f"os.chmod({f!r}, 0o666)") == ["ok", "ok"]
    assert os.stat(f).st_uid == A
    time.sleep(1.1)  # a later second than A's chmod: Last-Modified has whole seconds
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=b"console",
                    Metadata={"uid": str(A), "gid": str(A), "mode": str(stat.S_IFREG | 0o666)})
    def logged():
        os.listdir(m.inbox)  # seen in a listing: logged once its grace has passed
        return any(r["origin"] == "foreign" for r in rows(m, key))
    m.wait_until(logged, timeout=30, interval=0.5, what="the overwrite logged")
    # A's attributes row goes in a transaction after the foreign row's
    m.wait_until(lambda: attrs_row(m, key) is None, timeout=30, what="A's attributes dropped")
    m.wait_until(lambda: os.stat(f).st_uid == 3000, timeout=10, what="configured owner shown")
    st = os.stat(f)
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (3001, 0o644)
    assert as_user(A, f"open({f!r}, 'ab').write(b'x')", f"os.unlink({f!r})") == \
        ["EACCES", "EPERM"]
    # A's chmod stays in the change log
    assert [c["op"] for c in changes(m, key)] == ["chmod"]


# --------------------------------------------------------------------------- names the kernel
# believed absent (review-perm items 1, 2, 5): a listing younger than the TTL says "absent", so
# the kernel sends CREATE/MKDIR and checks only the directory; the daemon checks the rest.

LONG_TTL = {"fs": {"foreign_uid": "3000", "foreign_gid": "3001", "cache_ttl_ms": "30000"}}


def open_to_others(m):
    for d in (m.stack.tmp, os.path.dirname(m.base), m.base, m.mnt):
        os.chmod(d, os.stat(d).st_mode | 0o055)


def two_mounts(mount_factory, b_config=None):
    a = mount_factory(config=FOREIGN, opts="allow_other", name="a")
    b = mount_factory(config=b_config or FOREIGN, reset=False, opts="allow_other", name="b")
    for m in (a, b):
        open_to_others(m)
    return a, b


WRONLY_CREAT = "os.O_WRONLY | os.O_CREAT"


def test_create_over_another_mounts_file_unseen_in_the_listing(mount_factory, uniq):
    """Mount b's listing (TTL 30 s) does not show A's file made on mount a: B's open(O_CREAT)
    there must not overwrite it nor take it (EACCES); A, its owner, opens it as it is."""
    a, b = two_mounts(mount_factory, LONG_TTL)
    key = f"{uniq}.txt"
    fa, fb = a.path("inbox", key), b.path("inbox", key)
    assert as_user(B, f"os.listdir({b.inbox!r}).clear()") == ["ok"]  # b's listing: fresh, no key
    assert as_user(A, f"open({fa!r}, 'w').write('A wrote this')") == ["ok"]
    got = as_user(B, f"open({fb!r}, 'w').write('evil')",
                  f"os.close(os.open({fb!r}, {WRONLY_CREAT} | os.O_TRUNC))",
                  f"os.close(os.open({fb!r}, {WRONLY_CREAT}))")
    assert got == ["EACCES", "EACCES", "EACCES"], got
    # nothing changed: object, its one row (A's), A's attributes, no change logged
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read() == b"A wrote this"
    (r,) = rows(a, key)
    assert r["removed_at"] is None and r["received_uid"] == A
    ar = attrs_row(a, key)
    assert (ar["uid"], ar["gid"], ar["mode"]) == (A, A, 0o644)
    assert changes(a, key) == []
    # its owner may open it on b (without O_TRUNC: content kept; nothing written: nothing logged)
    assert as_user(A, f"os.close(os.open({fb!r}, {WRONLY_CREAT}))") == ["ok"]
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read() == b"A wrote this"
    assert len(rows(a, key)) == 1
    assert (attrs_row(a, key)["uid"], attrs_row(a, key)["mode"]) == (A, 0o644)


def test_create_over_a_foreign_upload_unseen_in_the_listing(mount_factory, uniq):
    """An object uploaded by another route after the listing: the configured owner's (3000,
    0644); B's open(O_CREAT[|O_TRUNC]) on it is refused and changes nothing."""
    m = mount_factory(config=LONG_TTL, opts="allow_other")
    open_to_others(m)
    key = f"{uniq}.bin"
    f = m.path("inbox", key)
    assert as_user(B, f"os.listdir({m.inbox!r}).clear()") == ["ok"]
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=b"from the console")
    got = as_user(B, f"open({f!r}, 'w').write('evil')",
                  f"os.close(os.open({f!r}, {WRONLY_CREAT} | os.O_TRUNC))")
    assert got == ["EACCES", "EACCES"], got
    assert m.s3.get_object(Bucket=m.reception_bucket, Key=key)["Body"].read() == \
        b"from the console"
    assert attrs_row(m, key) is None and changes(m, key) == []
    # every row of the key (the foreign upload may have been logged meanwhile): none is B's
    for r in rows(m, key):
        assert r["origin"] == "foreign" and r["received_uid"] != B and r["removed_at"] is None, r
    assert len(rows(m, key)) <= 1


def test_mkdir_over_a_name_unseen_in_the_listing(mount_factory, uniq):
    """Mount b's listing (TTL 30 s) does not show A's directory and file made on mount a, nor a
    directory made by another route: B's mkdir of those names fails with EEXIST and their
    owner and mode stay (B does not get A's directory, so cannot remove what is in it)."""
    a, b = two_mounts(mount_factory, LONG_TTL)
    d, g, e = f"{uniq}-d", f"{uniq}-g", f"{uniq}-e"
    assert as_user(B, f"os.listdir({b.inbox!r}).clear()") == ["ok"]
    assert as_user(A, f"os.mkdir({a.path('inbox', d)!r})",
                   f"open({a.path('inbox', d, 'f')!r}, 'w').write('A in d')",
                   f"open({a.path('inbox', g)!r}, 'w').write('A file')") == ["ok"] * 3
    a.s3.put_object(Bucket=a.reception_bucket, Key=f"{e}/x", Body=b"console")
    got = as_user(B, f"os.mkdir({b.path('inbox', d)!r}, 0o777)",
                  f"os.mkdir({b.path('inbox', g)!r}, 0o777)",
                  f"os.mkdir({b.path('inbox', e)!r}, 0o777)",
                  f"os.unlink({b.path('inbox', d, 'f')!r})")
    assert got == ["EEXIST", "EEXIST", "EEXIST", "EACCES"], got
    for key, want in ((d, (A, A, 0o755)), (g, (A, A, 0o644))):
        r = attrs_row(a, key)
        assert (r["uid"], r["gid"], r["mode"]) == want, (key, r)
    assert attrs_row(a, e) is None
    st = os.stat(b.path("inbox", d))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (A, 0o755)
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=f"{d}/f")["Body"].read() == b"A in d"
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=g)["Body"].read() == b"A file"
    (r,) = rows(a, f"{d}/f")
    assert r["removed_at"] is None and r["received_uid"] == A
    (r,) = rows(a, g)
    assert r["removed_at"] is None and r["received_uid"] == A


def test_new_file_of_another_mount_never_shown_with_default_permissions(mount_factory, uniq):
    """Mount b's attribute snapshot of inbox/ predates A's 0600 file made on mount a: b must not
    show it with the defaults (0644, readable by all) but A's recorded mode, and with the
    database unreadable it fails closed (EIO), never readable by B."""
    short = {"fs": {"foreign_uid": "3000", "foreign_gid": "3001", "cache_ttl_ms": "2000"}}
    a, b = two_mounts(mount_factory, short)
    pub = f"{uniq}-pub.txt"
    assert as_user(A, f"open({a.path('inbox', pub)!r}, 'w').write('public')") == ["ok"]
    b.wait_until(lambda: os.path.exists(b.path("inbox", pub)), timeout=10, what="pub on b")
    os.stat(b.path("inbox", pub))  # b's snapshot of inbox/ attributes: loaded now
    for n, pg_down in ((1, False), (2, True)):
        key = f"{uniq}-secret{n}.txt"
        assert as_user(A, f"open({a.path('inbox', key)!r}, 'w').write('secret')",
                       umask=0o077) == ["ok"]
        assert (attrs_row(a, key)["uid"], attrs_row(a, key)["mode"]) == (A, 0o600)
        time.sleep(2.5)  # b's listing and snapshot past their TTL: the listing is fetched again
        if pg_down:
            b.stop_pg()
        got = as_user(B, rd(b.path("inbox", key)))
        assert got == (["EIO"] if pg_down else ["EACCES"]), (key, got)
        if pg_down:
            b.start_pg()
            b.wait_until(lambda: b.alive() and as_user(B, rd(b.path("inbox", key))) ==
                         ["EACCES"], timeout=20, what="b answers again")
        st = os.stat(b.path("inbox", key))
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (A, 0o600)
        assert as_user(A, rd(b.path("inbox", key))) == ["secret"]


def test_truncating_open_by_another_user_clears_setuid_and_setgid(shared, uniq):
    """open(O_TRUNC) by a non-root writer clears setuid (and setgid with group execute) as
    tmpfs does; with atomic O_TRUNC the kernel sends no chmod for it, so the daemon must."""
    m = shared
    cases = (("os.close(os.open({f!r}, os.O_WRONLY | os.O_TRUNC))", 0o4666, 0o666),
             ("open({f!r}, 'w').write('B')", 0o6676, 0o676),
             ("os.close(os.open({f!r}, os.O_RDWR | os.O_TRUNC))", 0o2666, 0o2666))
    for n, (op, before, after) in enumerate(cases):
        key = f"{uniq}-{n}.sh"
        f = m.path("inbox", key)
        assert as_user(A, f"open({f!r}, 'w').write('#!/bin/sh')",
                       f"os.chmod({f!r}, {before:#o})") == ["ok", "ok"]
        assert as_user(B, op.format(f=f)) == ["ok"]
        assert stat.S_IMODE(os.stat(f).st_mode) == after, (key, oct(os.stat(f).st_mode))
        assert attrs_row(m, key)["mode"] == after
        if after != before:
            ch = changes(m, key, every=True)
            assert [(c["op"], c["changed_uid"], c["mode"]) for c in ch][-1] == \
                ("kill_priv", B, after), ch  # the truncation's, not a chmod (review-upload L2)
    m.restart()
    for n, (_, _, after) in enumerate(cases):
        assert stat.S_IMODE(os.stat(m.path("inbox", f"{uniq}-{n}.sh")).st_mode) == after


def test_files_from_before_ownership_was_kept_are_their_writers(shared, uniq):
    """A database from before migration 5 (simulated: file_attrs emptied) has no owners: at
    mount, a file received through a mount is its writer's (reception_audit.received_uid,
    group: the configured foreign_gid), so in the sticky inbox/ its writer may still remove it
    and nobody else may; a foreign upload stays the configured owner's (review-perm item 7)."""
    m = shared
    fa, fb, fx = (m.path("inbox", f"{uniq}-{n}.txt") for n in ("a", "b", "x"))
    assert as_user(A, f"open({fa!r}, 'w').write('A')") == ["ok"]
    assert as_user(B, f"open({fb!r}, 'w').write('B')") == ["ok"]
    m.s3.put_object(Bucket=m.reception_bucket, Key=f"{uniq}-x.txt", Body=b"console")
    def logged():
        os.listdir(m.inbox)  # seen in a listing: logged once its grace has passed
        return any(r["origin"] == "foreign" for r in rows(m, f"{uniq}-x.txt"))
    m.wait_until(logged, timeout=30, interval=0.5, what="foreign upload logged")
    m.sql("delete from file_attrs")
    m.restart()
    for f, owner in ((fa, A), (fb, B), (fx, 3000)):
        st = os.stat(f)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (owner, 3001, 0o644), f
    for key, owner in ((f"{uniq}-a.txt", A), (f"{uniq}-b.txt", B)):
        r = attrs_row(m, key)
        assert (r["uid"], r["gid"], r["mode"]) == (owner, 3001, None), r
    assert attrs_row(m, f"{uniq}-x.txt") is None
    assert as_user(B, f"os.unlink({fa!r})") == ["EPERM"]
    assert as_user(A, f"os.unlink({fa!r})", f"os.unlink({fx!r})") == ["ok", "EPERM"]
    assert all(r["removed_at"] is not None for r in rows(m, f"{uniq}-a.txt"))
    (r,) = rows(m, f"{uniq}-b.txt")
    assert r["removed_at"] is None
    # a second mount start adds nothing and changes nothing
    m.restart()
    assert attrs_row(m, f"{uniq}-a.txt") is None
    assert (attrs_row(m, f"{uniq}-b.txt")["uid"], os.stat(fb).st_uid) == (B, B)


# --------------------------------------------------------------------------- object metadata

def test_large_sequential_file_and_directories_carry_mode_owner_mtime(shared, uniq):
    """review-perm 9: a file over part_size written sequentially streams as a multipart
    upload; it carries x-amz-meta-mode/uid/gid/mtime like a single PUT (mode, owner as stat
    shows; mtime that of the write that started the upload, at most stat's). A chmod while
    it is written is in the object too. Directory markers carry them as well."""
    m = shared
    f, g, d = (m.path("inbox", f"{uniq}-{n}") for n in ("big", "chmod-mid", "d"))
    t0 = int(time.time())
    res = as_user(A, f"[([os.write(fd, bytes([i]) * (1 << 20)) for i in range(20)], os.close(fd))"
                  f" for fd in [os.open({f!r}, os.O_WRONLY | os.O_CREAT, 0o666)]] and None",
                  umask=0o027)
    assert res == ["ok"]
    st = os.stat(f)
    assert st.st_size == 20 << 20
    h = m.s3.head_object(Bucket=m.reception_bucket, Key=f"{uniq}-big")
    if m.stack.backend == "swift":  # (s3rver's multipart ETag carries no part count)
        assert "-" in h["ETag"], "expected a multipart upload (ETag of the parts)"
    md = h["Metadata"]
    assert md.get("mode") == str(stat.S_IFREG | 0o640)
    assert (md.get("uid"), md.get("gid")) == (str(A), str(A))
    assert t0 <= int(md["mtime"]) <= int(st.st_mtime)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (A, A, 0o640)
    # a chmod in the middle of the stream: the object has the final mode
    res = as_user(A, f"[(os.write(fd, b'x' * (17 << 20)), os.fchmod(fd, 0o600), "
                  f"os.write(fd, b'y' * (3 << 20)), os.close(fd)) for fd in "
                  f"[os.open({g!r}, os.O_WRONLY | os.O_CREAT, 0o644)]] and None")
    assert res == ["ok"]
    md = m.s3.head_object(Bucket=m.reception_bucket, Key=f"{uniq}-chmod-mid")["Metadata"]
    assert md.get("mode") == str(stat.S_IFREG | 0o600)
    assert stat.S_IMODE(os.stat(g).st_mode) == 0o600
    # the audit row is the hashes' record, for each
    assert [r["size_bytes"] for r in rows(m, f"{uniq}-big")] == [20 << 20]
    assert [r["size_bytes"] for r in rows(m, f"{uniq}-chmod-mid")] == [20 << 20]
    # directories: mkdir, and the markers a directory rename writes
    assert as_user(A, f"os.mkdir({d!r}, 0o750)", f"os.mkdir({d + '/sub'!r}, 0o700)",
                   umask=0) == ["ok", "ok"]
    for key, mode in ((f"{uniq}-d/", 0o750), (f"{uniq}-d/sub/", 0o700)):
        md = m.s3.head_object(Bucket=m.reception_bucket, Key=key)["Metadata"]
        assert md.get("mode") == str(stat.S_IFDIR | mode), key
        assert (md.get("uid"), md.get("gid")) == (str(A), str(A)), key
        assert int(md["mtime"]) >= t0
    assert as_user(A, f"os.rename({d!r}, {d + '2'!r})") == ["ok"]
    md = m.s3.head_object(Bucket=m.reception_bucket, Key=f"{uniq}-d2/sub/")["Metadata"]
    assert md.get("mode") == str(stat.S_IFDIR | 0o700)
    assert (md.get("uid"), md.get("gid")) == (str(A), str(A))


def test_partial_directory_rename_keeps_every_objects_attributes(shared, uniq):
    """review-perm 4: a directory rename that fails part way (here: a key that would pass
    1024 bytes under the new name) leaves the objects it moved with their attributes (copied
    before each object moves), those it did not under the old name with theirs, and both
    directories with their owner."""
    m = shared
    src, dst = f"{uniq}-d", f"{uniq}-dddddddd"
    budget = 1020 - len(src) - 1  # the deep key: 1020 bytes under src/, 1027 under dst/
    comps = []
    while budget > 201:
        comps.append("z" * 200)
        budget -= 201
    deep_dir = "/".join(comps)
    deep = f"{deep_dir}/{'y' * budget}"
    assert len(f"{src}/{deep}") <= 1024 < len(f"{dst}/{deep}")
    s, t = m.path("inbox", src), m.path("inbox", dst)
    assert as_user(A, f"os.mkdir({s!r}, 0o755)", f"open({s + '/a'!r}, 'w').write('secret')",
                   f"os.chmod({s + '/a'!r}, 0o600)", f"os.makedirs({s + '/' + deep_dir!r})",
                   f"open({s + '/' + deep!r}, 'w').write('deep')",
                   f"os.chmod({s + '/' + deep!r}, 0o600)") == ["ok"] * 6
    r = as_user(A, f"os.rename({s!r}, {t!r})")
    assert r != ["ok"], "the rename cannot move the deep key"
    # a/ moved (keys sort "a" before "z..."), with its owner and mode, in the database too
    keys = {o["Key"] for o in m.s3.list_objects_v2(Bucket=m.reception_bucket,
                                                    Prefix=f"{uniq}-")["Contents"]}
    assert f"{dst}/a" in keys and f"{src}/a" not in keys and f"{src}/{deep}" in keys
    row = attrs_row(m, f"{dst}/a")
    assert row is not None and (row["mode"], row["uid"]) == (0o600, A)
    assert attrs_row(m, f"{src}/a") is None
    row = attrs_row(m, f"{src}/{deep}")
    assert row is not None and (row["mode"], row["uid"]) == (0o600, A)
    for _ in range(2):  # through this mount, then after a remount (nothing from memory)
        # (the kernel may keep its negative entry of the target for its entry timeout)
        m.wait_until(lambda: os.path.exists(os.path.join(t, "a")), timeout=10,
                     what="the moved file shows")
        st = os.stat(os.path.join(t, "a"))
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (A, 0o600)
        assert as_user(B, rd(os.path.join(t, "a")), rd(os.path.join(s, deep))) == \
            ["EACCES", "EACCES"]
        for dd in (s, t):
            st = os.stat(dd)
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (A, 0o755), dd
        m.restart()


def test_mount_root_inbox_and_projects_keep_their_modes_and_owner(shared, uniq):
    """A chmod or chown of /, inbox/ or projects/ that would change them fails with EPERM
    (root included; it used to return 0 and change nothing); one that changes nothing, and
    times, succeed. Directories under inbox/ take rsync -a as before."""
    m = shared
    for p in (m.mnt, m.inbox, m.path("projects")):
        st = os.stat(p)
        with pytest.raises(PermissionError):
            os.chmod(p, 0o700)
        with pytest.raises(PermissionError):
            os.chown(p, A, A)
        os.chmod(p, stat.S_IMODE(st.st_mode))
        os.chown(p, st.st_uid, st.st_gid)
        os.utime(p)
        st2 = os.stat(p)
        assert (st2.st_mode, st2.st_uid, st2.st_gid) == (st.st_mode, st.st_uid, st.st_gid)
    # rsync -a into a directory of inbox/ sets modes and times as usual
    import subprocess
    src = os.path.join(m.stack.tmp, f"{uniq}-src")
    os.makedirs(os.path.join(src, "sub"))
    with open(os.path.join(src, "sub", "f"), "w") as fh:
        fh.write("rsync")
    os.chmod(os.path.join(src, "sub", "f"), 0o640)
    os.chmod(os.path.join(src, "sub"), 0o750)
    os.utime(os.path.join(src, "sub", "f"), (1_600_000_000, 1_600_000_000))
    dst = m.path("inbox", f"{uniq}-rs")
    os.mkdir(dst)
    p = subprocess.run(["rsync", "-a", src + "/", dst + "/"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    st = os.stat(os.path.join(dst, "sub", "f"))
    assert (stat.S_IMODE(st.st_mode), int(st.st_mtime)) == (0o640, 1_600_000_000)
    assert stat.S_IMODE(os.stat(os.path.join(dst, "sub")).st_mode) == 0o750
    assert [r["size_bytes"] for r in rows(m, f"{uniq}-rs/sub/f")] == [5]


def test_setuid_cleared_by_every_write_even_after_a_failed_clear(shared, uniq):
    """A write by another user clears setuid/setgid before its data lands, on every write of a
    handle (direct_io handles get no chmod from the kernel): a clear that fails (database
    down) fails that write, and the next write on the same descriptor clears the bits (it
    kept them: the handle was marked checked before the clear had succeeded); a setuid bit
    set after a handle's first write is cleared by its next one (review-upload M2)."""
    import json
    import subprocess
    m = shared
    key = f"{uniq}.sh"
    f = m.path("inbox", key)
    assert as_user(A, f"open({f!r}, 'w').write('#!/bin/sh')", f"os.chmod({f!r}, 0o4777)") == \
        ["ok", "ok"]
    assert os.stat(f).st_uid == A
    child = subprocess.Popen(
        ["setpriv", f"--reuid={B}", f"--regid={B}", "--clear-groups", "/usr/bin/python3", "-c",
         "import os, sys, json\n"
         f"fd = os.open({f!r}, os.O_WRONLY | os.O_APPEND)\n"
         "print('ready', flush=True)\n"
         "for line in sys.stdin:\n"
         "    try:\n"
         "        os.write(fd, line.strip().encode()); r = 'ok'\n"
         "    except OSError as e:\n"
         "        r = __import__('errno').errorcode[e.errno]\n"
         "    print(json.dumps(r), flush=True)\n"
         "os.close(fd)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"

        def write_line(s):
            child.stdin.write(s + "\n")
            child.stdin.flush()
            return json.loads(child.stdout.readline())

        m.stop_pg()
        try:
            assert write_line("1") == "EIO"
        finally:
            m.start_pg()
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o4777  # nothing changed by the failure
        assert write_line("2") == "ok"
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o777
        # set again (root) while the handle stays open: its next write clears it again
        os.chmod(f, 0o4777)
        assert write_line("3") == "ok"
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o777
    finally:
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    assert attrs_row(m, key)["mode"] == 0o777
    assert m.s3.get_object(Bucket=m.reception_bucket, Key=key)["Body"].read() == b"#!/bin/sh23"
    # each clear recorded once, as the writer's, and as what it is (no chmod by B)
    kills = [c for c in changes(m, key, every=True) if c["changed_uid"] == B]
    assert [(c["op"], c["mode"]) for c in kills] == [("kill_priv", 0o777)] * 2, kills


@pytest.mark.parametrize("how", ["ab", "r+b"], ids=["write-only", "page-cache"])
def test_kill_priv_is_logged_as_such_not_as_a_chmod(shared, uniq, how):
    """Another user's write into a setuid/setgid file clears the bits (the kernel's rule) and
    the change log says so: op 'kill_priv' by the writer, never a 'chmod' by a user who may
    not chmod the file (review-upload L2). Both paths: a write-only handle (direct_io, the
    daemon clears) and a read-write one (page cache: the kernel sends the clear as a chmod
    by the writer). setgid without group execute stays (the kernel's rule)."""
    m = shared
    for mode, left in ((0o6777, 0o777), (0o6767, 0o2767)):
        key = f"{uniq}-{mode:o}.sh"
        f = m.path("inbox", key)
        assert as_user(A, f"open({f!r}, 'w').write('#!/bin/sh')",
                       f"os.chmod({f!r}, {mode:#o})") == ["ok", "ok"]
        assert as_user(B, f"open({f!r}, {how!r}).write(b'#')") == ["ok"]
        assert stat.S_IMODE(os.stat(f).st_mode) == left
        assert attrs_row(m, key)["mode"] == left
        by_b = [c for c in changes(m, key, every=True) if c["changed_uid"] == B]
        assert [(c["op"], c["mode"]) for c in by_b] == [("kill_priv", left)], by_b
        by_a = [c["op"] for c in changes(m, key, every=True) if c["changed_uid"] == A]
        assert by_a == ["create", "chmod"], by_a


def test_write_by_another_user_without_default_permissions_clears_setuid(mount_factory, uniq):
    """Without default_permissions, another user's write to a setuid file through a read-write
    handle (page cache: the kernel clears the bits by a chmod it sends as the writer) succeeds
    and clears them, as through a write-only handle; a chmod by that user that changes anything
    else stays EPERM (review-upload L1: the write failed with EPERM)."""
    m = mount_factory(config=FOREIGN, opts="allow_other,no_default_permissions")
    for d in (m.stack.tmp, os.path.dirname(m.base), m.base, m.mnt):
        os.chmod(d, os.stat(d).st_mode | 0o055)
    f, g = m.path("inbox", f"{uniq}-rw.sh"), m.path("inbox", f"{uniq}-wo.sh")
    assert as_user(A, f"open({f!r}, 'w').write('#!')", f"os.chmod({f!r}, 0o4666)",
                   f"open({g!r}, 'w').write('#!')", f"os.chmod({g!r}, 0o4666)") == ["ok"] * 4
    assert as_user(B, f"os.chmod({f!r}, 0o4777)") == ["EPERM"]
    assert as_user(B, f"open({f!r}, 'r+b').write(b'x')", f"open({g!r}, 'ab').write(b'y')") == \
        ["ok", "ok"]
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o666
    assert stat.S_IMODE(os.stat(g).st_mode) == 0o666
    assert m.s3.get_object(Bucket=m.reception_bucket, Key=f"{uniq}-rw.sh")["Body"].read() == b"x!"
    assert m.s3.get_object(Bucket=m.reception_bucket, Key=f"{uniq}-wo.sh")["Body"].read() == b"#!y"


# --------------------------------------------------------------------------- rows bound to objects
# (review-perm item 3): a file_attrs row describes the object (ETag) it was set on; another
# object at the same key, however it got there, has the configured owner and mode.

@pytest.mark.parametrize("delete_first", [True, False])
def test_attributes_of_a_removed_or_replaced_object_never_apply_to_the_next(shared, uniq,
                                                                            delete_first):
    m = shared
    key = f"{uniq}.txt"
    f = m.path("inbox", key)
    assert as_user(A, f"open({f!r}, 'w').write('A')", f"os.chmod({f!r}, 0o600)") == ["ok", "ok"]
    head = m.s3.head_object(Bucket=m.reception_bucket, Key=key)
    assert attrs_row(m, key)["etag"] == head["ETag"].strip('"')
    if delete_first:
        m.s3.delete_object(Bucket=m.reception_bucket, Key=key)
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=b"console",
                    Metadata={"uid": str(A), "gid": str(A), "mode": str(stat.S_IFREG | 0o600)})
    # A changes the mode at once, before the new object is listed or logged (so after its
    # upload: a name-and-time rule keeps A's row for it); refused or not, it stays A's old
    # object's
    time.sleep(1.1)
    assert as_user(A, f"os.chmod({f!r}, 0o604)")[0] in ("ok", "EPERM")
    def shown():
        os.listdir(m.inbox)
        st = os.stat(f)
        return (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (3000, 3001, 0o644)
    m.wait_until(shown, timeout=15, interval=0.5, what="the new object shown as foreign")
    # neither A (the old row's owner) nor B takes it over
    assert as_user(A, f"os.chmod({f!r}, 0o666)", f"open({f!r}, 'ab').write(b'x')",
                   f"os.unlink({f!r})") == ["EPERM", "EACCES", "EPERM"]
    assert as_user(B, f"os.chmod({f!r}, 0o666)", f"os.unlink({f!r})") == ["EPERM", "EPERM"]
    assert m.s3.get_object(Bucket=m.reception_bucket, Key=key)["Body"].read() == b"console"


def test_a_file_written_again_through_the_mount_stays_its_owners(shared, uniq):
    m = shared
    key = f"{uniq}.txt"
    f = m.path("inbox", key)
    assert as_user(A, f"open({f!r}, 'w').write('one')", f"os.chmod({f!r}, 0o640)",
                   f"open({f!r}, 'w').write('two')", f"open({f!r}, 'a').write('three')") == \
        ["ok"] * 4
    head = m.s3.head_object(Bucket=m.reception_bucket, Key=key)
    r = attrs_row(m, key)
    assert (r["uid"], r["mode"], r["etag"]) == (A, 0o640, head["ETag"].strip('"'))
    st = os.stat(f)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (A, 0o640)
    assert as_user(B, rd(f)) == ["EACCES"]
    ops = [c["op"] for c in changes(m, key, every=True)]
    assert ops[0] == "create" and "chmod" in ops


def test_initial_ownership_moves_and_drops_are_logged(shared, uniq):
    """review-perm item 11: the owner given at create/mkdir, each rename and each removal are
    in file_attr_changes, with who and the object (ETag) the row describes."""
    m = shared
    d, f, g = f"{uniq}-d", f"{uniq}.txt", f"{uniq}-2.txt"
    pd, pf, pg = m.path("inbox", d), m.path("inbox", f), m.path("inbox", g)
    assert as_user(A, f"os.mkdir({pd!r}, 0o750)", f"open({pf!r}, 'w').write('A')",
                   f"os.rename({pf!r}, {pg!r})", f"os.unlink({pg!r})") == ["ok"] * 4
    mk = changes(m, d, every=True)
    assert [(c["op"], c["uid"], c["mode"], c["changed_uid"]) for c in mk] == \
        [("mkdir", A, 0o750, A)]
    cr = changes(m, f, every=True)
    assert [(c["op"], c["uid"], c["changed_uid"]) for c in cr] == [("create", A, A)]
    mv = changes(m, g, every=True)
    assert [(c["op"], c["from_key"], c["uid"], c["changed_uid"]) for c in mv] == \
        [("move", f, A, A), ("drop", None, A, A)]
    assert mv[0]["etag"] and mv[1]["etag"] == mv[0]["etag"]
    assert attrs_row(m, g) is None and attrs_row(m, f) is None


# --------------------------------------------------------------------------- cost of reloads

def _attrs_tuples_read(m):
    """Rows of file_attrs PostgreSQL has read so far (sequential and through indexes), once
    the mount's connections have flushed their statistics (idle backends do within ~10 s):
    the value that stays put across two reads 3 s apart."""
    q = ("select coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
         " from pg_stat_user_tables where relname = 'file_attrs'")
    last = [None]

    def settled():
        time.sleep(3)
        m.sql_value("select pg_stat_clear_snapshot()")
        v = m.sql_value(q)
        done, last[0] = v == last[0], v
        return done
    m.wait_until(settled, timeout=60, what="file_attrs statistics settle")
    return last[0]


def test_attribute_reloads_read_only_the_directorys_children(mount_factory, uniq):
    """review-perm 10: a directory's attribute snapshot, reloaded every cache_ttl_ms, reads the
    rows of that directory's children, not of the whole tree under it (for inbox/ the whole
    bucket's file_attrs, every TTL, on every mount). 20000 rows deep under another directory;
    reloads of inbox/ must not read them. Counted by PostgreSQL (pg_stat_user_tables)."""
    m = mount_factory(config={"fs": {"cache_ttl_ms": "300"}})
    deep = 20000
    m.sql("insert into file_attrs (bucket, object_key, uid, gid, mode)"
          " select %s, %s || '-deep/sub/f' || g, 1, 1, 420 from generate_series(1, %s) g",
          (m.reception_bucket, uniq, deep))
    m.sql("analyze file_attrs")  # as autovacuum would on a bucket this size
    files = [m.path("inbox", f"{uniq}-{i}.txt") for i in range(3)]
    for f in files:
        write(f, b"x")
        os.chmod(f, 0o640)
    os.makedirs(m.path("inbox", f"{uniq}-deep", "sub"), exist_ok=True)
    before = _attrs_tuples_read(m)
    reloads = 6
    for _ in range(reloads):
        time.sleep(0.5)  # older than cache_ttl_ms: the next stat reloads inbox/'s snapshot
        for f in files:
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o640
        os.listdir(m.inbox)
    read = _attrs_tuples_read(m) - before
    print(f"file_attrs rows read by {reloads} reloads of inbox/ beside {deep} deeper rows:"
          f" {read}")
    # before: every reload read every row of the bucket (>= 20000 each)
    assert read < deep, read
    # the directory's own listing still shows every child's attributes
    sub = m.path("inbox", f"{uniq}-deep", "sub")
    assert m.sql_value("select count(*) from file_attrs where object_key like %s",
                       (f"{uniq}-deep/sub/%",)) == deep
    assert stat.S_IMODE(os.stat(m.path("inbox", f"{uniq}-deep")).st_mode) in (0o755, 0o777)
    assert os.path.isdir(sub)


def test_setgid_directory_passes_its_group_like_ext4(shared, uniq):
    """review-perm Low: in a setgid directory a new file or subdirectory takes the directory's
    group, not its creator's, and a subdirectory is setgid too (ext4, tmpfs); a file's own
    setgid bit is kept only when its creator is in that group."""
    m = shared
    d = m.path("inbox", f"{uniq}-d")
    os.mkdir(d)
    os.chown(d, A, 4000)
    os.chmod(d, 0o2777)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o2777
    f, s, g = os.path.join(d, "f.txt"), os.path.join(d, "s"), os.path.join(d, "g.txt")
    assert as_user(B, f"open({f!r}, 'w').write('B')", f"os.mkdir({s!r}, 0o755)",
                   f"os.close(os.open({g!r}, os.O_WRONLY | os.O_CREAT, 0o2755))", umask=0) \
        == ["ok", "ok", "ok"]
    for path, want_mode in ((f, 0o666), (s, 0o2755), (g, 0o755)):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (B, 4000, want_mode), path
    # recorded, not only shown: after a remount, and in the database
    m.restart()
    st = os.stat(s)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (B, 4000, 0o2755)
    assert attrs_row(m, f"{uniq}-d/f.txt")["gid"] == 4000
    # and the subdirectory passes it on in turn; outside a setgid directory nothing changes
    f2, f3 = os.path.join(s, "deeper.txt"), m.path("inbox", f"{uniq}-plain.txt")
    assert as_user(B, f"open({f2!r}, 'w').write('B')", f"open({f3!r}, 'w').write('B')") \
        == ["ok", "ok"]
    assert os.stat(f2).st_gid == 4000 and os.stat(f3).st_gid == B


def test_rename_with_the_database_down_never_loses_the_files_attributes(fresh_mount, uniq):
    """review-perm 11: a rename whose attributes cannot follow (the database is down) must not
    leave the file under its new name with the default mode: either the rename fails (EIO) and
    the file keeps its name and mode, or it is renamed with its mode; never 0600 -> 0644. An
    open file under a temporary name needs no reception row, so only the attributes can fail."""
    m = fresh_mount
    x, y = m.path("inbox", f"{uniq}-x.tmp"), m.path("inbox", f"{uniq}-y.tmp")
    fd = os.open(x, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"secret")
        assert stat.S_IMODE(os.stat(x).st_mode) == 0o600
        m.stop_pg()
        try:
            os.rename(x, y)
            renamed = True
        except OSError as e:
            assert e.errno == errno.EIO, e
            renamed = False
        m.start_pg()
        m.wait_until(lambda: m.alive() and os.path.exists(y if renamed else x), timeout=20,
                     what="mount answers again")
        name, key = (y, f"{uniq}-y.tmp") if renamed else (x, f"{uniq}-x.tmp")
        assert not os.path.exists(x if renamed else y)
        m.wait_until(lambda: attrs_row(m, key) is not None, timeout=10, what="attributes row")
        assert attrs_row(m, key)["mode"] == 0o600
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- review-perm2

def test_promotion_never_publishes_a_file_its_promoter_cannot_read(shared, uniq):
    """review-perm2 H1: files in projects/ are readable by everyone on the mount (0444). In a
    directory B owns (0777, not sticky) A keeps a 0600 file; the kernel lets B rename it or the
    directory (it checks the directories, not the file), so B could promote A's secret and read
    it in projects/. A promotion needs read permission on every file it stores: EACCES, the
    file stays in inbox/ as it was, nothing stored, no storage_audit row."""
    m = shared
    os.mkdir(m.path("projects", uniq))  # root's project; no project_group: anyone promotes
    d = m.path("inbox", f"{uniq}-d")
    a = os.path.join(d, "a.txt")
    assert as_user(B, f"os.mkdir({d!r}, 0o777)", umask=0) == ["ok"]
    assert as_user(A, f"open({a!r}, 'w').write('secret of A')", umask=0o077) == ["ok"]
    assert as_user(B, rd(a)) == ["EACCES"]
    one, whole = m.path("projects", uniq, "a.txt"), m.path("projects", uniq, "d")
    assert as_user(B, f"os.rename({a!r}, {one!r})", f"os.rename({d!r}, {whole!r})") \
        == ["EACCES", "EACCES"]
    st = os.stat(a)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (A, 0o600)
    assert open(a, "rb").read() == b"secret of A"
    assert m.sql_value("select count(*) from storage_audit where project_prefix = %s",
                       (uniq,)) == 0
    assert m.s3.list_objects_v2(Bucket=m.storage_bucket, Prefix=f"{uniq}/").get("KeyCount") == 0
    assert as_user(B, rd(one), rd(os.path.join(whole, "a.txt"))) == ["ENOENT", "ENOENT"]
    # its owner promotes it
    assert as_user(A, f"os.rename({a!r}, {one!r})") == ["ok"]
    assert open(one, "rb").read() == b"secret of A"


def test_rename_over_another_mounts_file_unseen_in_the_listing(mount_factory, uniq):
    """review-perm2 H2: as with create (review-perm 1), mount b's kernel believes the name
    absent (b's listing, TTL 30 s, predates A's file made on mount a), so it checks only the
    directories, not inbox/'s sticky bit against A's file. B's rename of its own file onto that
    name must not replace A's file (EPERM, the sticky rule), which stays A's with its content and row."""
    a, b = two_mounts(mount_factory, LONG_TTL)
    key, mine = f"{uniq}.txt", f"{uniq}-b.txt"
    fa, fb, mb = a.path("inbox", key), b.path("inbox", key), b.path("inbox", mine)
    assert as_user(B, f"open({mb!r}, 'w').write('evil')", f"os.listdir({b.inbox!r}).clear()") \
        == ["ok", "ok"]  # b's listing: fresh, without key
    assert as_user(A, f"open({fa!r}, 'w').write('A wrote this')") == ["ok"]
    assert as_user(B, f"os.rename({mb!r}, {fb!r})") == ["EPERM"]  # the sticky rule
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read() == b"A wrote this"
    (r,) = rows(a, key)
    assert r["removed_at"] is None and r["received_uid"] == A
    assert (attrs_row(a, key)["uid"], attrs_row(a, key)["mode"]) == (A, 0o644)
    assert [rr["removed_at"] for rr in rows(a, mine)] == [None]  # B's file stays B's, as it was
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=mine)["Body"].read() == b"evil"
    # A itself may replace its own file that way
    ma = b.path("inbox", f"{uniq}-a2.txt")
    assert as_user(A, f"open({ma!r}, 'w').write('A again')", f"os.rename({ma!r}, {fb!r})") \
        == ["ok", "ok"]
    assert a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read() == b"A again"


def test_utimens_of_another_users_file_without_default_permissions(mount_factory, uniq):
    """review-perm2 M1: without default_permissions the daemon keeps the kernel's rules for
    what goes into the shared database (review-perm 8 did for chmod/chown), utimens too: only
    the owner or root sets explicit times (EPERM), setting them to now needs write permission
    (EACCES); mounts that enforce permissions would show B's forged times on A's file."""
    m = mount_factory(config=FOREIGN, opts="allow_other,no_default_permissions")
    open_to_others(m)
    key = f"{uniq}.txt"
    f = m.path("inbox", key)
    assert as_user(A, f"open({f!r}, 'w').write('A')", f"os.utime({f!r}, (1000, 1000))") \
        == ["ok", "ok"]
    assert as_user(B, f"os.utime({f!r}, (5, 5))", f"os.utime({f!r})") == ["EPERM", "EACCES"]
    assert os.stat(f).st_mtime == 1000
    assert attrs_row(m, key)["mtime_ns"] == 1000 * 10**9
    assert [c["changed_uid"] for c in changes(m, key)] == [A]
    # its owner, and anyone it lets write, may
    assert as_user(A, f"os.chmod({f!r}, 0o666)") == ["ok"]
    assert as_user(B, f"os.utime({f!r})", f"os.utime({f!r}, (7, 7))") == ["ok", "EPERM"]
    assert os.stat(f).st_mtime > 1000


def test_directory_rename_onto_another_mounts_directory_unseen_in_the_listing(mount_factory,
                                                                             uniq):
    """review-perm2 O2: mount b's listing predates A's directory d made on mount a; B's
    rename of its own directory onto d must neither merge into A's directory nor make d
    B's: EPERM (sticky inbox/, d is A's), A's files and d's owner unchanged, B's directory
    as it was. Onto B's own non-empty directory it is ENOTEMPTY, as on any filesystem."""
    a, b = two_mounts(mount_factory, LONG_TTL)
    d, bd = f"{uniq}-d", f"{uniq}-bd"
    assert as_user(B, f"os.mkdir({b.path('inbox', bd)!r})",
                   f"open({b.path('inbox', bd, 'x.txt')!r}, 'w').write('B')",
                   f"os.listdir({b.inbox!r}).clear()") == ["ok", "ok", "ok"]
    assert as_user(A, f"os.mkdir({a.path('inbox', d)!r})",
                   f"open({a.path('inbox', d, 'f.txt')!r}, 'w').write('A')") == ["ok", "ok"]
    assert as_user(B, f"os.rename({b.path('inbox', bd)!r}, {b.path('inbox', d)!r})") \
        == ["EPERM"]
    keys = sorted(o["Key"] for o in a.s3.list_objects_v2(
        Bucket=a.reception_bucket, Prefix=f"{uniq}-").get("Contents", []))
    assert f"{d}/f.txt" in keys and f"{bd}/x.txt" in keys and f"{d}/x.txt" not in keys, keys
    assert attrs_row(a, d)["uid"] == A and attrs_row(a, bd)["uid"] == B
    assert os.stat(a.path("inbox", d)).st_uid == A
    # B's own directory made on mount a since, not empty: ENOTEMPTY, nothing merged
    bd2 = f"{uniq}-bd2"
    assert as_user(B, f"os.mkdir({a.path('inbox', bd2)!r})",
                   f"open({a.path('inbox', bd2, 'y.txt')!r}, 'w').write('B2')") == ["ok", "ok"]
    assert as_user(B, f"os.rename({b.path('inbox', bd)!r}, {b.path('inbox', bd2)!r})") \
        == ["ENOTEMPTY"]
    assert sorted(o["Key"] for o in a.s3.list_objects_v2(
        Bucket=a.reception_bucket, Prefix=f"{bd2}/")["Contents"]) == [f"{bd2}/", f"{bd2}/y.txt"]


# --------------------------------------------------------------------------- direct writes

STAGING = ".custodyfs-direct"


def staging_key(m, key):
    """The one staging key (.custodyfs-direct/<host>.<pid>/<key>) a reception row names for
    projects/<key>, from the database."""
    ks = sorted({r["object_key"] for r in m.sql_dicts(
        "select object_key from reception_audit where source_bucket = %s and object_key like %s",
        (m.reception_bucket, STAGING + "/%"))
        if r["object_key"].endswith("/" + key)
        and "/" not in r["object_key"][len(STAGING) + 1:-len(key) - 1]})
    assert len(ks) == 1, ks
    return ks[0]


def project_rows(m, p):
    """Every reception row under the staging area for project p and every storage row of p,
    removed ones included, for before/after comparisons."""
    rec = [r for r in m.sql_dicts("select * from reception_audit where source_bucket = %s and"
                                  " object_key like %s order by id",
                                  (m.reception_bucket, STAGING + "/%"))
           if "/" + p + "/" in r["object_key"]]
    sto = m.sql_dicts("select * from storage_audit where project_prefix = %s order by id", (p,))
    jnl = m.sql_dicts("select * from promotion_journal where dest_key like %s order by id",
                      (p + "/%",))
    return rec, sto, jnl


def stored_keys(m, p):
    return sorted(o["Key"] for o in m.s3.list_objects_v2(
        Bucket=m.storage_bucket, Prefix=p + "/").get("Contents", []))


@pytest.mark.parametrize("how", ["default_permissions", "no_default_permissions"])
def test_held_rsync_temp_file_is_only_its_writers_to_remove_or_rename(mount_factory, uniq,
                                                                       how):
    """review-perm2 O3: rsync's temp file (.<name>.XXXXXX) written into projects/<p> is held
    (received, not promoted) until its writer renames it into place. projects/<p> is writable
    by everyone who may promote (0777 here: no project_group) and not sticky, so B could
    unlink A's held file (its received bytes removed, row closed) or rename it to a final name
    (A's bytes stored under a name of B's choosing, moved_by B). Only the held file's writer
    (its owner, shown as such) or root may: EPERM otherwise, as the sticky bit answers, with
    and without default_permissions. Nothing of A's changes: rows, object, attributes."""
    opts = "allow_other" + (",no_default_permissions" if how.startswith("no_") else "")
    m = mount_factory(config=FOREIGN, opts=opts)
    open_to_others(m)
    p = uniq
    os.mkdir(m.path("projects", p))  # root's project; no project_group: anyone promotes
    held = ".f.bin.Ab3xYz"
    data = os.urandom(3000)
    hp, final = m.path("projects", p, held), m.path("projects", p, "f.bin")
    assert as_user(A, f"open({hp!r}, 'wb').write(bytes.fromhex({data.hex()!r}))",
                   umask=0o077) == ["ok"]
    st = os.stat(hp)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (A, A, 0o600)
    skey = staging_key(m, f"{p}/{held}")
    before = project_rows(m, p)
    assert [(r["sha256"], r["removed_at"]) for r in before[0]] == [(m.sha256_bytes(data), None)]
    assert before[1] == [] and stored_keys(m, p) == []
    attrs_before = attrs_row(m, skey)
    assert (attrs_before["uid"], attrs_before["mode"]) == (A, 0o600)
    other = m.path("projects", p, "sub")
    os.mkdir(other)
    got = as_user(B, f"os.rename({hp!r}, {final!r})",
                  f"os.rename({hp!r}, {os.path.join(other, 'g.bin')!r})",
                  f"os.unlink({hp!r})",
                  f"os.unlink({hp!r})")
    assert got == ["EPERM", "EPERM", "EPERM", "EPERM"], got
    # nothing changed: every row, the received object, its attributes; nothing stored
    assert project_rows(m, p) == before
    assert checks.get_object(m, skey) == data
    assert attrs_row(m, skey) == attrs_before
    assert stored_keys(m, p) == []
    st = os.stat(hp)
    assert (st.st_uid, stat.S_IMODE(st.st_mode), st.st_size) == (A, 0o600, len(data))
    assert not os.path.exists(final)
    # its writer renames it into place: promoted, moved_by A
    assert as_user(A, f"os.rename({hp!r}, {final!r})") == ["ok"]
    (s,) = m.sql_dicts("select * from storage_audit where dest_key = %s", (f"{p}/f.bin",))
    assert s["outcome"] == "copied" and s["moved_uid"] == A and s["source_key"] == skey
    assert m.s3.get_object(Bucket=m.storage_bucket, Key=f"{p}/f.bin")["Body"].read() == data
    # root may remove anyone's held file (row closed, object gone)
    held2 = m.path("projects", p, ".h.bin.Zz9abc")
    assert as_user(A, f"open({held2!r}, 'wb').write(b'second')", umask=0o077) == ["ok"]
    assert as_user(B, f"os.unlink({held2!r})") == ["EPERM"]
    skey2 = staging_key(m, f"{p}/.h.bin.Zz9abc")
    os.unlink(held2)
    assert [r["removed_at"] is not None for r in rows(m, skey2)] == [True]
    assert checks.get_object(m, skey2) is None
    # B's own held file is B's to rename; and B still promotes onto a stored name (a
    # duplicate), which a sticky project directory would have the kernel refuse (stored files
    # are not B's): the reason the daemon, not a sticky bit, answers for held files
    bh = m.path("projects", p, ".b.bin.Qq1xyz")
    assert as_user(B, f"open({bh!r}, 'wb').write(bytes.fromhex({data.hex()!r}))",
                   f"os.rename({bh!r}, {final!r})") == ["ok", "ok"]
    assert [r["outcome"] for r in m.sql_dicts(
        "select outcome from storage_audit where dest_key = %s order by id",
        (f"{p}/f.bin",))] == ["copied", "duplicate"]


def test_failed_direct_write_left_in_staging_keeps_its_writers_owner_and_mode(shared, uniq):
    """review-perm2 O4: a direct write whose promotion failed (a conflict at close: EPERM)
    stays received at inbox/.custodyfs-direct/<host>.<pid>/<p>/<name>, reachable by its path.
    It carries its writer's owner and mode (0600 stays 0600), across a remount too, never the
    defaults: another user cannot read the rejected bytes there."""
    import subprocess
    m = shared
    p = uniq
    os.mkdir(m.path("projects", p))
    key = f"{p}/x.txt"
    data = f"secret of A, {uniq}\n" * 50
    script = (
        "import errno, os, sys\n"
        "os.umask(0o077)\n"
        "f = open(sys.argv[1], 'wb')\n"
        "f.write(sys.argv[2].encode())\n"
        "f.flush()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "try:\n"
        "    f.close()\n"
        "    print('ok', flush=True)\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno], flush=True)\n")
    w = subprocess.Popen(["setpriv", f"--reuid={A}", f"--regid={A}", "--clear-groups",
                          "/usr/bin/python3", "-c", script, m.path("projects", p, "x.txt"),
                          data], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert w.stdout.readline().strip() == "ready"
        # another file is stored under the name meanwhile: the promotion at close conflicts
        m.s3.put_object(Bucket=m.storage_bucket, Key=key, Body=b"foreign bytes")
        out, _ = w.communicate("close\n", timeout=60)
    finally:
        if w.poll() is None:
            w.kill()
    assert out.strip() == "EPERM"
    skey = staging_key(m, key)
    left = m.path("inbox", skey)
    assert checks.get_object(m, skey) == data.encode()
    (r,) = rows(m, skey)
    assert r["removed_at"] is None and r["received_uid"] == A
    assert m.sql_value("select count(*) from storage_audit where dest_key = %s", (key,)) == 0
    assert m.s3.get_object(Bucket=m.storage_bucket, Key=key)["Body"].read() == b"foreign bytes"
    for again in (False, True):  # as written; after a remount (the database's, not memory's)
        if again:
            m.restart()
        st = os.stat(left)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (A, A, 0o600)
        assert (attrs_row(m, skey)["uid"], attrs_row(m, skey)["mode"]) == (A, 0o600)
        assert as_user(B, rd(left)) == ["EACCES"]
        assert as_user(A, rd(left)) == [data]
