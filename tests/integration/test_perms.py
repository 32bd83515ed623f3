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
from checks import rows, write


def attrs_row(m, key):
    r = m.sql_dicts("select * from file_attrs where bucket = %s and object_key = %s",
                    (m.reception_bucket, key))
    return r[0] if r else None


def changes(m, key):
    return m.sql_dicts("select * from file_attr_changes where bucket = %s and object_key = %s"
                       " order by id", (m.reception_bucket, key))


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
