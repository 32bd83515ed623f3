"""The attributes of a file renamed in inbox/ (review-perm2 O1, issue 9): a single-file rename
copies the file's file_attrs row to the new name BEFORE the store step (copy, rows, source
delete) and drops the old row after it; a store step that fails before its copy landed puts
the new name's rows back as they were (none, or the replaced target's own). So:

- a crash between the store step and the attributes never leaves the file at its new name with
  the default mode (0600 -> 0644, readable by all), nor a replaced target's row on its new
  content (O1);
- a failed rename leaves no row at the new name that a later object with the same ETag there
  would inherit (F3);
- a target renamed over keeps its own row when the rename fails, and loses it when the rename
  took place (F4).

Faults come from a FaultProxy between the daemon and the store (a copy or a delete refused, or
held while the daemon is killed). Every result is checked by stat after a remount and in
file_attrs with psycopg2, the bucket with boto3, and every reception_audit row of the keys."""
import errno
import os
import stat
import time

import pytest
from checks import rows, write
from races import crash_held, let_go, remount, rename_in_thread

from faultproxy import INTERNAL

def attrs_row(m, key):
    r = m.sql_dicts("select * from file_attrs where bucket = %s and object_key = %s",
                    (m.reception_bucket, key))
    return r[0] if r else None


def etag(m, key):
    return m.s3.head_object(Bucket=m.reception_bucket, Key=key)["ETag"].strip('"')


def keys(m, prefix):
    """The objects under prefix (directory markers left out)."""
    return sorted(o["Key"] for o in m.s3.list_objects_v2(
        Bucket=m.reception_bucket, Prefix=prefix).get("Contents", []) if o["Key"][-1] != "/")


def live(m, key):
    return [r for r in rows(m, key) if r["removed_at"] is None]


def logged_ops(m, key):
    """(op, from_key) of every file_attr_changes row of key, in order."""
    return [(c["op"], c["from_key"]) for c in m.sql_dicts(
        "select * from file_attr_changes where bucket = %s and object_key = %s order by id",
        (m.reception_bucket, key))]


def mode_owner(path):
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def is_copy_to(key):
    """A rule: the store's copy onto key (CopyObject: a PUT with x-amz-copy-source)."""
    def rule(meth, path, h):
        if meth == "PUT" and path.split("?")[0].endswith("/" + key) \
                and any(k.lower() == "x-amz-copy-source" for k in h.keys()):
            return ("status", 500, INTERNAL)
        return None
    return rule


def is_delete_of(key, action):
    def rule(meth, path, h):
        if meth == "DELETE" and path.split("?")[0].endswith("/" + key):
            return action
        return None
    return rule


def secret(m, key, body, mode, uid, gid):
    p = m.path("inbox", key)
    write(p, body)
    os.chmod(p, mode)
    os.chown(p, uid, gid)
    assert mode_owner(p) == (mode, uid, gid)
    return p


def rename_killed_in_the_source_delete(m, px, frm, to):
    """rename(frm, to) with the store step held at its last request (the source's DELETE: the
    copy and its rows are done), then the daemon killed there; remounted without faults."""
    px.rule = is_delete_of(frm, ("hang",))
    t, out = rename_in_thread(m, frm, to)
    m.wait_until(lambda: any(meth == "DELETE" and a == "hang" for meth, _, a in px.log),
                 timeout=30, what="the source delete held")
    crash_held(m, px, t)
    assert out and out[0] != "ok", out
    remount(m, px)


def test_crash_after_the_store_step_keeps_the_files_attributes(proxied):
    """O1: the daemon dies after the rename's copy and rows, before anything else: the file at
    its new name still has its mode and owner (its row was copied first), never the defaults
    (0644, the configured owner)."""
    m, px, d = proxied
    frm, to = f"{d}/x.txt", f"{d}/y.txt"
    secret(m, frm, b"secret", 0o600, 2001, 2002)
    e = etag(m, frm)
    rename_killed_in_the_source_delete(m, px, frm, to)
    assert [r["origin"] for r in live(m, to)] == ["rename"]
    assert etag(m, to) == e
    r = attrs_row(m, to)
    assert r is not None, "no attributes at the new name"
    assert (r["mode"], r["uid"], r["gid"], r["etag"]) == (0o600, 2001, 2002, e)
    assert mode_owner(m.path("inbox", to)) == (0o600, 2001, 2002)
    assert open(m.path("inbox", to), "rb").read() == b"secret"


def test_failed_source_delete_keeps_the_files_attributes(proxied):
    """O1 without a crash: the source's DELETE fails after the copy and its rows (the rename
    returns 0 all the same, review K2: it is durable; the file's old object is left over): it
    shows its own mode and owner at its new name, before and after a remount, never the
    defaults."""
    m, px, d = proxied
    frm, to = f"{d}/x.txt", f"{d}/y.txt"
    secret(m, frm, b"secret", 0o600, 2001, 2002)
    e = etag(m, frm)
    px.rule = is_delete_of(frm, ("status", 500, INTERNAL))
    os.rename(m.path("inbox", frm), m.path("inbox", to))
    assert any(meth == "DELETE" and a == "status" for meth, _, a in px.log), px.log
    px.rule = None
    assert [r["origin"] for r in live(m, to)] == ["rename"]
    r = attrs_row(m, to)
    assert r is not None, "no attributes at the new name"
    assert (r["mode"], r["uid"], r["gid"], r["etag"]) == (0o600, 2001, 2002, e)
    m.restart()
    assert mode_owner(m.path("inbox", to)) == (0o600, 2001, 2002)


def test_failed_copy_leaves_no_attributes_at_the_new_name(proxied):
    """F3: the rename's copy fails after the row was copied: the copied row goes again, so an
    object with the same content (same ETag) uploaded to that name later by another route gets
    the configured owner and mode, not the file's."""
    m, px, d = proxied
    frm, to = f"{d}/x.txt", f"{d}/y.txt"
    secret(m, frm, b"secret", 0o600, 2001, 2002)
    e = etag(m, frm)
    px.rule = is_copy_to(to)
    with pytest.raises(OSError) as ei:
        os.rename(m.path("inbox", frm), m.path("inbox", to))
    px.rule = None
    assert ei.value.errno == errno.EIO, ei.value
    assert any(meth == "PUT" and a == "status" for meth, _, a in px.log), "no copy was refused"
    assert keys(m, f"{d}/") == [frm]
    assert rows(m, to) == []
    assert attrs_row(m, to) is None, "a failed rename left a row at the new name"
    r = attrs_row(m, frm)
    assert (r["mode"], r["uid"], r["gid"], r["etag"]) == (0o600, 2001, 2002, e)
    assert mode_owner(m.path("inbox", frm)) == (0o600, 2001, 2002)
    # the same content arrives at the new name by another route
    time.sleep(1.1)
    m.s3.put_object(Bucket=m.reception_bucket, Key=to, Body=b"secret")
    assert etag(m, to) == e

    def logged():
        os.listdir(m.path("inbox", d))
        return any(r["origin"] == "foreign" for r in rows(m, to))
    m.wait_until(logged, timeout=30, interval=0.5, what="the upload logged")
    assert attrs_row(m, to) is None
    m.restart()
    assert mode_owner(m.path("inbox", to)) == (0o644, 3000, 3001)
    assert mode_owner(m.path("inbox", frm)) == (0o600, 2001, 2002)


def test_failed_copy_over_a_target_keeps_the_targets_attributes(proxied):
    """F4: renaming over an existing target whose copy fails: the target keeps its content and
    its own row (mode, owner, bound to its object), the source its own, after a remount too."""
    m, px, d = proxied
    frm, to = f"{d}/x.txt", f"{d}/y.txt"
    secret(m, frm, b"secret of x", 0o600, 2001, 2002)
    secret(m, to, b"target y", 0o640, 2003, 2004)
    ex, ey = etag(m, frm), etag(m, to)
    px.rule = is_copy_to(to)
    with pytest.raises(OSError) as ei:
        os.rename(m.path("inbox", frm), m.path("inbox", to))
    px.rule = None
    assert ei.value.errno == errno.EIO, ei.value
    assert keys(m, f"{d}/") == [frm, to]
    assert etag(m, to) == ey
    r = attrs_row(m, to)
    assert r is not None, "the target's row was lost"
    assert (r["mode"], r["uid"], r["gid"], r["etag"]) == (0o640, 2003, 2004, ey)
    r = attrs_row(m, frm)
    assert (r["mode"], r["uid"], r["gid"], r["etag"]) == (0o600, 2001, 2002, ex)
    assert mode_owner(m.path("inbox", to)) == (0o640, 2003, 2004)
    m.restart()
    assert mode_owner(m.path("inbox", to)) == (0o640, 2003, 2004)
    assert mode_owner(m.path("inbox", frm)) == (0o600, 2001, 2002)
    assert open(m.path("inbox", to), "rb").read() == b"target y"
    assert [r["origin"] for r in live(m, to)] == ["mount"]
    # the target's row was never replaced (R5: the file's attributes were pending there until
    # the copy's rows, which never came): its log holds its own changes only, and no other
    # row of the key (a pending one) is left
    assert [op for op, _ in logged_ops(m, to)] == ["create", "chmod", "chown"]
    assert len(m.sql("select 1 from file_attrs where object_key = %s", (to,))) == 1
    assert [op for op, _ in logged_ops(m, frm)] == ["create", "chmod", "chown"]


def test_rename_over_a_target_takes_the_files_attributes(proxied):
    """F4: a rename over an existing target that succeeds: the name shows the file's mode and
    owner (the target's row is gone, not kept for the new content), the old name has no row."""
    m, px, d = proxied
    frm, to = f"{d}/x.txt", f"{d}/y.txt"
    secret(m, frm, b"secret of x", 0o600, 2001, 2002)
    secret(m, to, b"target y", 0o666, 2003, 2004)
    ex = etag(m, frm)
    os.rename(m.path("inbox", frm), m.path("inbox", to))
    assert keys(m, f"{d}/") == [to]
    r = attrs_row(m, to)
    assert (r["mode"], r["uid"], r["gid"], r["etag"]) == (0o600, 2001, 2002, etag(m, to))
    assert etag(m, to) == ex
    assert attrs_row(m, frm) is None
    assert mode_owner(m.path("inbox", to)) == (0o600, 2001, 2002)
    m.restart()
    assert mode_owner(m.path("inbox", to)) == (0o600, 2001, 2002)
    assert open(m.path("inbox", to), "rb").read() == b"secret of x"
    # one 'move' logs the rename (the old name's row is not logged again as a 'drop')
    assert logged_ops(m, to)[-1] == ("move", frm)
    assert [op for op, _ in logged_ops(m, frm)] == ["create", "chmod", "chown"]


def test_crash_after_the_store_step_over_a_target_shows_the_files_attributes(proxied):
    """O1/F4: the daemon dies after the copy over an existing target and its rows: the new
    content at the target's name shows the renamed file's mode and owner, not the defaults
    (the target's row, bound to the replaced object, does not describe it) nor the target's."""
    m, px, d = proxied
    frm, to = f"{d}/x.txt", f"{d}/y.txt"
    secret(m, frm, b"secret of x", 0o600, 2001, 2002)
    secret(m, to, b"target y", 0o666, 2003, 2004)
    ex = etag(m, frm)
    rename_killed_in_the_source_delete(m, px, frm, to)
    assert etag(m, to) == ex
    assert [r["origin"] for r in live(m, to)] == ["rename"]
    r = attrs_row(m, to)
    assert r is not None, "no attributes at the new name"
    assert (r["mode"], r["uid"], r["gid"], r["etag"]) == (0o600, 2001, 2002, ex)
    assert mode_owner(m.path("inbox", to)) == (0o600, 2001, 2002)
    assert open(m.path("inbox", to), "rb").read() == b"secret of x"


def test_copy_undone_after_its_rows_failed_takes_its_attributes_along(proxied):
    """F3: the copy landed at a new name, then its rows failed (the database went down): the
    copy keeps the file's attributes while it is there; when it is removed again (its undo, once
    the database answers) the copied row goes with it, so an object with the same content
    uploaded there later by another route gets the configured owner and mode."""
    m, px, d = proxied
    frm, to = f"{d}/x.txt", f"{d}/y.txt"
    secret(m, frm, b"secret", 0o600, 2001, 2002)
    e = etag(m, frm)

    def hold(meth, path, h):
        if is_copy_to(to)(meth, path, h):
            return ("late", 600)  # forwarded: the copy lands; its answer is held
        return None
    px.rule = hold
    t, out = rename_in_thread(m, frm, to)
    m.wait_until(lambda: to in keys(m, f"{d}/"), timeout=30, what="the copy landed")
    m.stop_pg()
    let_go(px, t, 120)
    assert out == ["EIO"], out
    px.release.clear()
    m.start_pg()
    # the copy without its row goes again (the undo), and its attributes with it
    m.wait_until(lambda: keys(m, f"{d}/") == [frm], timeout=60, interval=0.5,
                 what="the unrowed copy removed")
    m.wait_until(lambda: attrs_row(m, to) is None, timeout=10, what="its attributes dropped")
    assert [r["origin"] for r in live(m, frm)] == ["mount"]
    assert live(m, to) == []
    r = attrs_row(m, frm)
    assert (r["mode"], r["uid"], r["gid"], r["etag"]) == (0o600, 2001, 2002, e)
    # the same content arrives at the new name by another route
    time.sleep(1.1)
    m.s3.put_object(Bucket=m.reception_bucket, Key=to, Body=b"secret")
    assert etag(m, to) == e

    def logged():
        os.listdir(m.path("inbox", d))
        return any(r["origin"] == "foreign" for r in rows(m, to))
    m.wait_until(logged, timeout=30, interval=0.5, what="the upload logged")
    m.restart()
    assert mode_owner(m.path("inbox", to)) == (0o644, 3000, 3001)
    assert mode_owner(m.path("inbox", frm)) == (0o600, 2001, 2002)


def test_crash_after_the_copy_over_a_target_landed_shows_the_files_attributes(proxied):
    """O1/R5: renaming over an existing target, the copy lands but the daemon dies before its
    rows (the target's row is kept until then; the file's are pending there): the new content
    at the target's name shows the renamed file's mode and owner, never the defaults (0644,
    readable by all) nor the target's."""
    m, px, d = proxied
    frm, to = f"{d}/x.txt", f"{d}/y.txt"
    secret(m, frm, b"secret of x", 0o600, 2001, 2002)
    secret(m, to, b"target y", 0o666, 2003, 2004)
    ex = etag(m, frm)
    copy = is_copy_to(to)
    px.rule = lambda meth, path, h: ("late", 600) if copy(meth, path, h) else None
    t, out = rename_in_thread(m, frm, to)
    m.wait_until(lambda: etag(m, to) == ex, timeout=30, what="the copy landed")
    crash_held(m, px, t)
    assert out and out[0] != "ok", out
    remount(m, px)
    assert etag(m, to) == ex
    assert [r["origin"] for r in live(m, to)] == ["mount"]  # the copy's rows never came
    assert mode_owner(m.path("inbox", to)) == (0o600, 2001, 2002)
    assert open(m.path("inbox", to), "rb").read() == b"secret of x"
    assert mode_owner(m.path("inbox", frm)) == (0o600, 2001, 2002)
