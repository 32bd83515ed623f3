"""Direct writes into a project: creating projects/<prefix>/[sub/]name is a drop plus a
promotion (SPEC §3, issue 6 item 5).

The bytes are received under the reserved reception key .custodyfs-direct/<prefix>/<relpath>
(object + reception_audit row, as any drop), then promoted by the same code as a rename. Every
check is made with boto3 on both buckets and with SQL on both audit tables (every row of the
keys, removed ones too), never through the mount."""
import errno
import hashlib
import os
import stat
import subprocess

import pytest

import checks

STAGING = ".custodyfs-direct"


def project(m, prefix):
    m.sql("insert into projects_registry (prefix, name) values (%s, %s)",
          (prefix, "Projeto " + prefix))
    return prefix


def sha(b):
    return hashlib.sha256(b).hexdigest()


def srows(m, key):
    return m.sql_dicts("select * from storage_audit where dest_key = %s order by id", (key,))


def dget(m, key):
    return m.s3.get_object(Bucket=m.storage_bucket, Key=key)["Body"].read()


def dhead(m, key):
    from botocore.exceptions import ClientError
    try:
        return m.s3.head_object(Bucket=m.storage_bucket, Key=key)
    except ClientError as e:
        if e.response["Error"]["Code"] in ("NoSuchKey", "404", "NotFound"):
            return None
        raise


def journal(m, key):
    return m.sql_dicts("select * from promotion_journal where dest_key = %s order by id", (key,))


def staged_keys(m, key):
    """The staging keys (.custodyfs-direct/<host>.<pid>/<key>) any reception row names for
    projects/<key>, from the database (the mount's tag is not assumed)."""
    rows = m.sql_dicts("select distinct object_key from reception_audit"
                       " where source_bucket = %s and object_key like %s",
                       (m.reception_bucket, STAGING + "/%"))
    out = []
    for r in rows:
        k = r["object_key"]
        if k.endswith("/" + key) and "/" not in k[len(STAGING) + 1:-len(key) - 1]:
            out.append(k)
    return sorted(out)


def staged(m, key):
    ks = staged_keys(m, key)
    assert len(ks) == 1, ks
    return ks[0]


def staged_objects(m, p):
    """Objects in the reception bucket's staging area for project p."""
    return [k for k in checks.bucket_keys(m, STAGING + "/") if "/" + p + "/" in k]


def check_direct(m, key, data, outcomes):
    """key ("p/rel") is stored with data; its storage rows are exactly `outcomes`; each was
    received under the staging key (one reception row per commit, every one removed with a
    'promoted to' reason, each storage row pointing at its own); nothing is left staged."""
    assert dget(m, key) == data
    h = dhead(m, key)
    assert h["Metadata"]["sha256"] == sha(data)
    assert h["Metadata"]["xxh128"] == m.xxh128_bytes(data)
    rows = srows(m, key)
    assert [r["outcome"] for r in rows] == outcomes
    rrows = checks.rows(m, staged(m, key))
    assert len(rrows) == len(outcomes)
    for r, rr in zip(rows, rrows):
        assert r["sha256"] == sha(data) and r["size_bytes"] == len(data)
        assert r["source_bucket"] == m.reception_bucket
        assert r["source_key"] == staged(m, key)
        assert r["reception_id"] == rr["id"]
        assert r["project_prefix"] == key.split("/")[0]
        assert r["moved_by"] and str(os.getuid()) in r["moved_by"]
        assert rr["sha256"] == sha(data) and rr["size_bytes"] == len(data)
        assert rr["xxh128"] == m.xxh128_bytes(data)
        assert rr["received_by"] and str(os.getuid()) in rr["received_by"]
        assert rr["removed_at"] is not None
        assert rr["removal_reason"] == "promoted to %s/%s" % (m.storage_bucket, key)
    assert checks.get_object(m, staged(m, key)) is None
    assert [j["state"] for j in journal(m, key) if j["state"] != "failed"] == \
        ["done"] * len(outcomes)
    return rows


def test_cp_into_project_is_drop_plus_promotion(mount, uniq, tmp_path):
    m = mount
    p = project(m, uniq)
    data = os.urandom(300000)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    subprocess.run(["cp", str(src), os.path.join(m.projects, p, "a.bin")], check=True)
    check_direct(m, p + "/a.bin", data, ["copied"])
    # read back through the mount right after close
    assert checks.read(os.path.join(m.projects, p, "a.bin")) == data
    assert "a.bin" in os.listdir(os.path.join(m.projects, p))
    # the staging area never shows in inbox/
    assert STAGING not in os.listdir(m.inbox)


def test_shell_redirect_and_dd_in_subdirectory(mount, uniq):
    m = mount
    p = project(m, uniq)
    os.mkdir(os.path.join(m.projects, p, "sub"))
    a, b = b"written by the shell\n", os.urandom(70000)
    subprocess.run(["sh", "-c", 'printf "written by the shell\\n" > "$1"', "sh",
                    os.path.join(m.projects, p, "sub", "cat.txt")], check=True)
    subprocess.run(["dd", "of=" + os.path.join(m.projects, p, "sub", "dd.bin"), "bs=4096",
                    "status=none"], input=b, check=True)
    check_direct(m, p + "/sub/cat.txt", a, ["copied"])
    check_direct(m, p + "/sub/dd.bin", b, ["copied"])


def test_same_bytes_under_two_names_is_duplicate_content(mount, uniq):
    m = mount
    p = project(m, uniq)
    data = os.urandom(9000)
    checks.write(os.path.join(m.projects, p, "one.bin"), data)
    checks.write(os.path.join(m.projects, p, "two.bin"), data)
    check_direct(m, p + "/one.bin", data, ["copied"])
    rows = srows(m, p + "/two.bin")
    assert [r["outcome"] for r in rows] == ["duplicate_content"]
    assert rows[0]["duplicate_of"] == p + "/one.bin"
    assert dhead(m, p + "/two.bin") is None  # not stored twice
    rr = checks.rows(m, staged(m, p + "/two.bin"))
    assert len(rr) == 1 and rr[0]["removed_at"] is not None
    assert rows[0]["reception_id"] == rr[0]["id"]
    assert checks.get_object(m, staged(m, p + "/two.bin")) is None
    link = os.path.join(m.projects, p, "two.bin")
    # (the kernel keeps the regular file it created for up to its entry timeout)
    m.wait_until(lambda: os.path.islink(link), timeout=10, what="two.bin a symlink")
    assert checks.read(link) == data


def test_duplicate_content_written_shows_symlink_at_once(mount, uniq):
    """The close that promotes a content duplicate makes the name a symlink while the kernel
    holds the regular file it created there: the lstat right after the close (and ls -l of
    the project) must see the symlink, never EIO (review-H, the end; issue 6). A few
    names, as the kernel's caches decide which request comes first."""
    m = mount
    p = project(m, uniq)
    d = os.path.join(m.projects, p)
    data = os.urandom(9000)
    checks.write(os.path.join(d, "one.bin"), data)
    names = []
    for i in range(3):
        name = f"two{i}.bin"
        checks.write(os.path.join(d, name), data)
        st = os.lstat(os.path.join(d, name))  # at once: no EIO
        assert stat.S_ISLNK(st.st_mode), (name, oct(st.st_mode))
        assert os.readlink(os.path.join(d, name)) == "one.bin"
        names.append(name)
        for e in sorted(os.listdir(d)):  # ls -l
            assert stat.S_ISLNK(os.lstat(os.path.join(d, e)).st_mode) == (e != "one.bin"), e
    for name in names:
        rows = srows(m, p + "/" + name)
        assert [(r["outcome"], r["duplicate_of"]) for r in rows] == [
            ("duplicate_content", p + "/one.bin")]


def test_conflict_at_close_fails_and_keeps_the_bytes_in_reception(mount, uniq):
    m = mount
    p = project(m, uniq)
    a, b = b"first content\n", b"other content, same name\n"
    # another client stores other bytes under the name while our file is open
    f = open(os.path.join(m.projects, p, "c2.txt"), "wb")
    f.write(b)
    m.s3.put_object(Bucket=m.storage_bucket, Key=p + "/c2.txt", Body=a)
    with pytest.raises(OSError) as ei:
        f.close()
    assert ei.value.errno == errno.EPERM
    assert dget(m, p + "/c2.txt") == a  # nothing overwritten
    assert srows(m, p + "/c2.txt") == []
    # the bytes written are kept, received, under the staging key, and readable there
    assert checks.get_object(m, staged(m, p + "/c2.txt")) == b
    rr = checks.rows(m, staged(m, p + "/c2.txt"))
    assert len(rr) == 1 and rr[0]["removed_at"] is None and rr[0]["sha256"] == sha(b)
    assert checks.read(os.path.join(m.inbox, staged(m, p + "/c2.txt"))) == b
    # ...and can be promoted under another name
    os.rename(os.path.join(m.inbox, staged(m, p + "/c2.txt")),
              os.path.join(m.projects, p, "c2-mine.txt"))
    assert dget(m, p + "/c2-mine.txt") == b
    assert [r["outcome"] for r in srows(m, p + "/c2-mine.txt")] == ["copied"]
    assert checks.get_object(m, staged(m, p + "/c2.txt")) is None
    assert all(r["removed_at"] for r in checks.rows(m, staged(m, p + "/c2.txt")))


def test_stored_files_are_immutable(mount, uniq):
    m = mount
    p = project(m, uniq)
    path = os.path.join(m.projects, p, "im.txt")
    checks.write(path, b"stored\n")
    for flags in (os.O_WRONLY | os.O_TRUNC, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                  os.O_WRONLY | os.O_APPEND, os.O_RDWR):
        with pytest.raises(OSError) as ei:
            os.open(path, flags)
        assert ei.value.errno == errno.EPERM, flags
    with pytest.raises(OSError) as ei:
        os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert ei.value.errno == errno.EEXIST
    for op in (lambda: os.unlink(path), lambda: os.truncate(path, 0),
               lambda: os.rename(path, path + ".new")):
        with pytest.raises(OSError) as ei:
            op()
        assert ei.value.errno == errno.EPERM
    check_direct(m, p + "/im.txt", b"stored\n", ["copied"])


def test_temp_names_are_refused_and_nothing_is_stored(mount, uniq):
    m = mount
    p = project(m, uniq)
    for name in ("x.part", "y.tmp", ".goutputstream-ABC"):
        with pytest.raises(OSError) as ei:
            checks.write(os.path.join(m.projects, p, name), b"temp")
        assert ei.value.errno == errno.EPERM
        assert srows(m, p + "/" + name) == []
        assert staged_keys(m, p + "/" + name) == []
    assert staged_objects(m, p) == []


def test_rsync_inplace_works(mount, uniq, tmp_path):
    m = mount
    p = project(m, uniq)
    data = os.urandom(20000)
    (tmp_path / "r.bin").write_bytes(data)
    subprocess.run(["rsync", "--inplace", str(tmp_path / "r.bin"),
                    os.path.join(m.projects, p, "r.bin")], check=True)
    check_direct(m, p + "/r.bin", data, ["copied"])


def test_second_writer_of_the_same_new_name(mount, uniq):
    m = mount
    p = project(m, uniq)
    path = os.path.join(m.projects, p, "two.txt")
    f1 = open(path, "wb")
    f2 = open(path, "wb")  # shares the first one's file, as in inbox/
    f1.write(b"same bytes\n")
    f1.close()
    f2.close()  # wrote nothing: commits nothing
    check_direct(m, p + "/two.txt", b"same bytes\n", ["copied"])


def test_missing_project_or_directory(mount, uniq):
    m = mount
    with pytest.raises(OSError) as ei:
        checks.write(os.path.join(m.projects, uniq + "-none", "f"), b"x")
    assert ei.value.errno == errno.ENOENT
    p = project(m, uniq)
    with pytest.raises(OSError) as ei:
        checks.write(os.path.join(m.projects, p, "nodir", "f"), b"x")
    assert ei.value.errno == errno.ENOENT
    assert staged_objects(m, p) == [] and staged_keys(m, p + "/nodir/f") == []


@pytest.fixture
def proxied(stack):
    from faultproxy import FaultProxy
    px = FaultProxy(stack.endpoint)
    yield px
    px.rule = None
    px.release.set()


@pytest.mark.parametrize("bucket", ["reception", "storage"])
def test_store_down_at_close(stack, mount_factory, proxied, uniq, bucket):
    """The store fails at close: close fails; once the store is back, the file is in exactly
    one place with its rows (never half-done) and a new write goes through."""
    from faultproxy import INTERNAL
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url, "max_retries": "1"}})
    p = project(m, uniq)
    key = p + "/down.bin"
    data = os.urandom(5000)
    name = "/" + (m.reception_bucket if bucket == "reception" else m.storage_bucket)

    def rule(meth, path, h):
        if path.startswith(name) and meth in ("PUT", "POST", "DELETE"):
            return ("status", 500, INTERNAL)
        return None
    f = open(os.path.join(m.projects, p, "down.bin"), "wb")
    f.write(data)
    px.rule = rule
    with pytest.raises(OSError) as ei:
        f.close()
    px.rule = None
    assert ei.value.errno in (errno.EIO, errno.EAGAIN)
    m.restart()
    m.wait_until(lambda: m.sql_value("select count(*) from promotion_journal"
                                     " where state in ('intent', 'stored')") == 0,
                 timeout=30, what="no open journal entry")
    rows = srows(m, key)
    if bucket == "reception":
        # nothing received, nothing stored
        assert staged_keys(m, key) == [] and rows == [] and dhead(m, key) is None
        assert staged_objects(m, p) == []
    else:
        rr = checks.rows(m, staged(m, key))
        # received; stored once (rolled forward) or still only received (rolled back)
        stored = dhead(m, key) is not None
        assert len(rr) == 1 and rr[0]["sha256"] == sha(data)
        if stored:
            check_direct(m, key, data, ["copied"])
        else:
            assert rows == [] and rr[0]["removed_at"] is None
            assert checks.get_object(m, staged(m, key)) == data
    checks.write(os.path.join(m.projects, p, "after.bin"), data + b"!")
    check_direct(m, p + "/after.bin", data + b"!", ["copied"])


def test_rsync_with_its_temp_name(mount, uniq, tmp_path):
    """rsync writes .name.XXXXXX, closes it, then renames it into place: the temp file is
    received (under its staging key) but never stored under its temp name; the rename
    promotes it under the final name (both rows, the storage row's source the temp's
    staging key)."""
    m = mount
    p = project(m, uniq)
    data = os.urandom(3000)
    (tmp_path / "t.bin").write_bytes(data)
    subprocess.run(["rsync", str(tmp_path / "t.bin"), os.path.join(m.projects, p, "t.bin")],
                   check=True)
    assert dget(m, p + "/t.bin") == data
    rows = srows(m, p + "/t.bin")
    assert [r["outcome"] for r in rows] == ["copied"] and rows[0]["sha256"] == sha(data)
    temps = m.sql_dicts("select * from storage_audit where dest_key like %s",
                        (p + "/.t.bin.%",))
    assert temps == []  # nothing stored under the temp name
    src = rows[0]["source_key"]
    assert src.startswith(STAGING + "/") and "/" + p + "/.t.bin." in src
    rr = checks.rows(m, src)
    assert len(rr) == 1 and rr[0]["id"] == rows[0]["reception_id"]
    assert rr[0]["sha256"] == sha(data) and rr[0]["removed_at"] is not None
    assert rr[0]["removal_reason"] == "promoted to %s/%s/t.bin" % (m.storage_bucket, p)
    assert staged_objects(m, p) == []
    assert sorted(os.listdir(os.path.join(m.projects, p))) == ["t.bin"]
    assert checks.read(os.path.join(m.projects, p, "t.bin")) == data


def test_rsync_temp_name_onto_a_conflict_loses_nothing(mount, uniq, tmp_path):
    """rsync's rename meets another file stored under the final name: it fails (nothing
    overwritten), and rsync's cleanup removes its received temp file (row closed, never
    deleted); the source is still rsync's."""
    m = mount
    p = project(m, uniq)
    m.s3.put_object(Bucket=m.storage_bucket, Key=p + "/c.bin", Body=b"theirs")
    m.wait_until(lambda: os.path.exists(os.path.join(m.projects, p, "c.bin")), timeout=10,
                 what="the foreign object listed")
    data = os.urandom(2000)
    (tmp_path / "c.bin").write_bytes(data)
    r = subprocess.run(["rsync", "--ignore-times", str(tmp_path / "c.bin"),
                        os.path.join(m.projects, p, "c.bin")], capture_output=True)
    assert r.returncode != 0
    assert dget(m, p + "/c.bin") == b"theirs" and srows(m, p + "/c.bin") == []
    temps = [x for x in m.sql_dicts("select * from reception_audit where object_key like %s",
                                     (STAGING + "/%",)) if "/" + p + "/.c.bin." in x["object_key"]]
    assert len(temps) == 1 and temps[0]["sha256"] == sha(data)
    # rsync removed its temp file: the object goes, its row is closed
    assert temps[0]["removed_at"] is not None
    assert checks.get_object(m, temps[0]["object_key"]) is None
    assert (tmp_path / "c.bin").read_bytes() == data


def test_leftover_under_the_staging_key_is_replaced_not_written_into(mount, uniq):
    """A file left received under the staging key (its promotion failed) and a new write of
    the same name once the name is free: the new file starts empty (no O_TRUNC given), the
    leftover's row is closed as an overwrite, and the stored file holds the new bytes only."""
    m = mount
    p = project(m, uniq)
    key = p + "/lo.bin"
    old, new = os.urandom(8000), b"short new content\n"
    f = open(os.path.join(m.projects, p, "lo.bin"), "wb")
    f.write(old)
    m.s3.put_object(Bucket=m.storage_bucket, Key=key, Body=b"foreign bytes")
    with pytest.raises(OSError) as ei:
        f.close()
    assert ei.value.errno == errno.EPERM
    assert checks.get_object(m, staged(m, key)) == old
    m.s3.delete_object(Bucket=m.storage_bucket, Key=key)
    m.wait_until(lambda: not os.path.exists(os.path.join(m.projects, p, "lo.bin")),
                 timeout=10, what="the foreign object gone from the listing")
    # (the kernel may still hold the name's entry: this open is then an OPEN with O_CREAT)
    fd = os.open(os.path.join(m.projects, p, "lo.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, new)
    os.close(fd)
    assert dget(m, key) == new
    rows = srows(m, key)
    assert [r["outcome"] for r in rows] == ["copied"]
    rr = checks.rows(m, staged(m, key))
    assert [x["sha256"] for x in rr] == [sha(old), sha(new)]
    assert all(x["removed_at"] is not None for x in rr)
    assert rows[0]["reception_id"] == rr[1]["id"]
    assert checks.get_object(m, staged(m, key)) is None


def test_staging_area_is_reserved_in_inbox(mount, uniq):
    """Nothing is created, made or renamed into the staging area through inbox/, and it is
    not listed there, even when a leftover makes it exist."""
    m = mount
    p = project(m, uniq)
    f = open(os.path.join(m.projects, p, "left.bin"), "wb")
    f.write(b"left over")
    m.s3.put_object(Bucket=m.storage_bucket, Key=p + "/left.bin", Body=b"foreign")
    with pytest.raises(OSError):
        f.close()
    left = staged(m, p + "/left.bin")
    area = os.path.join(m.inbox, left[:-len(p + "/left.bin") - 1])  # STAGING/<host>.<pid>
    assert checks.read(os.path.join(area, p, "left.bin")) == b"left over"
    assert STAGING not in os.listdir(m.inbox)
    with pytest.raises(OSError) as ei:
        checks.write(os.path.join(area, p, "x"), b"x")
    assert ei.value.errno == errno.EPERM
    with pytest.raises(OSError) as ei:
        os.mkdir(os.path.join(area, p, "d"))
    assert ei.value.errno == errno.EPERM
    checks.write(os.path.join(m.inbox, uniq + "-r"), b"mine")
    with pytest.raises(OSError) as ei:
        os.rename(os.path.join(m.inbox, uniq + "-r"), os.path.join(area, p, "r"))
    assert ei.value.errno == errno.EPERM
    with pytest.raises(OSError) as ei:
        os.rename(os.path.join(m.inbox, STAGING), os.path.join(m.inbox, uniq + "-moved"))
    assert ei.value.errno == errno.EPERM
    assert staged_objects(m, p) == [left]
    assert checks.get_object(m, uniq + "-r") == b"mine"
    # what is left there can be removed (its row closed, never deleted)
    os.unlink(os.path.join(area, p, "left.bin"))
    assert checks.get_object(m, left) is None
    rr = checks.rows(m, left)
    assert len(rr) == 1 and rr[0]["removed_at"] is not None


def _shared(mount_factory, config=None):
    m = mount_factory(config=config, opts="allow_other")
    for d in (m.stack.tmp, os.path.dirname(m.base), m.base, m.mnt):
        os.chmod(d, os.stat(d).st_mode | 0o055)  # other users must reach the mount point
    return m


def test_rows_name_the_writer(mount_factory, uniq):
    """received_by and moved_by name the user who wrote the file, not the daemon (root)."""
    from test_perms import as_user
    m = _shared(mount_factory)
    p = project(m, uniq)
    path = os.path.join(m.projects, p, "u.txt")
    assert as_user(2101, f"open({path!r}, 'w').write('by 2101')") == ["ok"]
    rows = check_direct_owner(m, p + "/u.txt", b"by 2101")
    assert "2101" in rows[0]["moved_by"]
    rr = checks.rows(m, staged(m, p + "/u.txt"))
    assert "2101" in rr[0]["received_by"]
    assert os.stat(path).st_size == len(b"by 2101")


def check_direct_owner(m, key, data):
    assert dget(m, key) == data
    rows = srows(m, key)
    assert [r["outcome"] for r in rows] == ["copied"]
    rr = checks.rows(m, staged(m, key))
    assert len(rr) == 1 and rr[0]["removed_at"] is not None
    assert rows[0]["reception_id"] == rr[0]["id"]
    return rows


def test_outside_the_project_group_is_eacces_and_receives_nothing(mount_factory, uniq):
    from test_perms import as_user
    m = _shared(mount_factory, {"fs": {"project_group": "4242"}})
    p = project(m, uniq)
    path = os.path.join(m.projects, p, "no.txt")
    assert as_user(2102, f"open({path!r}, 'w').write('x')") == ["EACCES"]
    assert staged_keys(m, p + "/no.txt") == [] and srows(m, p + "/no.txt") == []
    assert staged_objects(m, p) == []


@pytest.mark.parametrize("when", ["copy", "delete"])
def test_kill_during_close_then_recovery(stack, mount_factory, proxied, uniq, when):
    """SIGKILL while close promotes a direct write (its copy into the storage bucket, or the
    staging object's DELETE, under way): after a remount the file is in exactly one place,
    received under the staging key with its live row, or stored with exactly one row and
    its staging row closed; never both, never neither."""
    import signal
    import threading
    import time
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    p = project(m, uniq)
    key = p + "/k.bin"
    data = os.urandom(6000)
    seen = []

    def rule(meth, path, h):
        copy = meth == "PUT" and path.startswith("/" + m.storage_bucket + "/")
        delete = meth == "DELETE" and STAGING in path
        if (copy if when == "copy" else delete):
            seen.append(path)
            return ("late", 60)  # takes effect, its answer never comes
        return None
    px.rule = rule
    errs = []

    def writer():
        try:
            checks.write(os.path.join(m.projects, p, "k.bin"), data)
        except OSError as e:
            errs.append(e)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    m.wait_until(lambda: seen, timeout=30, what="the promotion under way")
    time.sleep(0.3)
    m.crash(signal.SIGKILL)
    px.rule = None
    px.release.set()
    m.mount()
    t.join(5)
    m.wait_until(lambda: m.sql_value("select count(*) from promotion_journal"
                                     " where state in ('intent', 'stored')") == 0,
                 timeout=30, what="no open journal entry")
    rr = checks.rows(m, staged(m, key))
    rows = srows(m, key)
    src = checks.get_object(m, staged(m, key))
    obj = dhead(m, key)
    assert len(rr) == 1 and rr[0]["sha256"] == sha(data)
    in_reception = src == data and rr[0]["removed_at"] is None
    in_storage = obj is not None and len(rows) == 1
    assert in_reception != in_storage, (in_reception, in_storage, rows, rr)
    if in_storage:
        check_direct(m, key, data, ["copied"])
    else:
        assert rows == [] and obj is None


@pytest.mark.parametrize("same", [True, False])
def test_two_mounts_write_the_same_new_name(mount_factory, uniq, same):
    """Two mounts (one store, one database) each write projects/p/x at once: each receives
    its bytes under its own staging key; the first close stores them (copied), the second is
    a duplicate (same bytes, close 0) or a conflict (close EPERM, its bytes kept received)."""
    a = mount_factory()
    b = mount_factory(reset=False)
    p = project(a, uniq)
    key = p + "/x.bin"
    da = os.urandom(7000)
    db = da if same else os.urandom(7000)
    b.wait_until(lambda: os.path.isdir(os.path.join(b.projects, p)), timeout=10,
                 what="the project on mount b")
    fa = open(os.path.join(a.projects, p, "x.bin"), "wb")
    fb = open(os.path.join(b.projects, p, "x.bin"), "wb")
    fa.write(da)
    fb.write(db)
    fa.close()
    if same:
        fb.close()
    else:
        with pytest.raises(OSError) as ei:
            fb.close()
        assert ei.value.errno == errno.EPERM
    assert dget(a, key) == da
    rows = srows(a, key)
    assert [r["outcome"] for r in rows] == (["copied", "duplicate"] if same else ["copied"])
    ks = staged_keys(a, key)
    assert len(ks) == 2  # one staging key per mount
    ra, rb = checks.rows(a, ks[0]), checks.rows(a, ks[1])
    assert len(ra) == 1 and len(rb) == 1
    by_sha = {r[0]["sha256"]: r[0] for r in (ra, rb)}
    assert set(by_sha) == {sha(da), sha(db)}
    if same:
        assert all(r[0]["removed_at"] is not None for r in (ra, rb))
        assert staged_objects(a, p) == []
    else:
        assert by_sha[sha(da)]["removed_at"] is not None
        left = by_sha[sha(db)]
        assert left["removed_at"] is None
        assert checks.get_object(a, left["object_key"]) == db
        assert staged_objects(a, p) == [left["object_key"]]


def test_fsync_promotes_and_close_adds_nothing(mount, uniq):
    """fsync is a durability request: when it returns 0 the file is stored with both rows;
    the close that follows (nothing written since) commits and promotes nothing more."""
    m = mount
    p = project(m, uniq)
    data = os.urandom(12000)
    fd = os.open(os.path.join(m.projects, p, "fs.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    check_direct(m, p + "/fs.bin", data, ["copied"])
    os.close(fd)
    check_direct(m, p + "/fs.bin", data, ["copied"])
    subprocess.run(["dd", "of=" + os.path.join(m.projects, p, "dd.bin"), "conv=fsync",
                    "status=none"], input=data[:5000], check=True)
    check_direct(m, p + "/dd.bin", data[:5000], ["copied"])
