"""projects/ (SPEC §3, issue 6 items 1 and 6): the registry as directories, mkdir/rmdir of
projects, the name as the xattr user.custodyfs.name, the storage bucket's objects read through
the mount (listings, ranged reads), duplicate_content rows as symlinks, and immutability.

Checked with independent clients: psycopg2 (rows of projects_registry and storage_audit) and
boto3 (objects put straight into storage-unique)."""
import errno
import hashlib
import os
import stat
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError

from checks import read

SETPRIV = ["setpriv", "--reuid=2001", "--regid=2001", "--clear-groups"]


def registry(m, prefix):
    """Every projects_registry row of prefix: (prefix, name, created_by)."""
    return m.sql("select prefix, name, created_by from projects_registry where prefix = %s"
                 " order by id", (prefix,))


def put(m, key, data, **kw):
    m.s3.put_object(Bucket=m.storage_bucket, Key=key, Body=data, **kw)


def stored_row(m, prefix, key, outcome="copied", duplicate_of=None, sha="0" * 64, size=1):
    """A storage_audit row as the promotion writes one (INSERT: allowed by the triggers)."""
    return m.sql_value(
        "insert into storage_audit (project_prefix, project_name, dest_bucket, dest_key,"
        " size_bytes, moved_at, source_bucket, source_key, outcome, duplicate_of, sha256)"
        " values (%s, %s, %s, %s, %s, now(), 'recepcao-raw', %s, %s, %s, %s) returning id",
        (prefix, prefix, m.storage_bucket, key, size, key, outcome, duplicate_of, sha))


def expect_errno(code, fn, *args, **kw):
    with pytest.raises(OSError) as ei:
        fn(*args, **kw)
    assert ei.value.errno == code, (ei.value, errno.errorcode.get(ei.value.errno))


# --------------------------------------------------------------------------- the registry

def test_registry_lists_rows_of_other_tools(mount, uniq):
    m = mount
    # The seed's way: only prefix and name.
    m.sql("insert into projects_registry (prefix, name) values (%s, %s)", (uniq, "Projeto Seed"))
    m.wait_until(lambda: uniq in os.listdir(m.projects), timeout=10,
                 what="a row inserted by another tool shows in projects/")
    st = os.stat(os.path.join(m.projects, uniq))
    assert (st.st_mode & 0o170000) == 0o040000
    assert os.listdir(os.path.join(m.projects, uniq)) == []
    # A row with a prefix the contract does not allow is not shown (and nothing breaks).
    m.sql("insert into projects_registry (prefix, name) values (%s, 'bad')", (uniq + "/x",))
    m.sql("insert into projects_registry (prefix, name) values (%s, 'bad')", ("UP" + uniq,))
    time.sleep(2.5)
    names = os.listdir(m.projects)
    assert uniq in names and "UP" + uniq not in names
    expect_errno(errno.ENOENT, os.stat, os.path.join(m.projects, "UP" + uniq))


def test_registry_lookup_sees_new_row_without_listing(mount, uniq):
    m = mount
    os.listdir(m.projects)
    m.sql("insert into projects_registry (prefix, name) values (%s, %s)", (uniq, uniq))
    m.wait_until(lambda: os.path.isdir(os.path.join(m.projects, uniq)), timeout=10,
                 what="stat of a new project")


# --------------------------------------------------------------------------- mkdir

def test_mkdir_registers_project(mount, uniq):
    m = mount
    os.mkdir(os.path.join(m.projects, uniq))
    rows = registry(m, uniq)
    assert len(rows) == 1
    prefix, name, by = rows[0]
    assert name == uniq
    assert by is not None and "uid 0" in by and "root" in by, by
    assert m.sql_value("select created_at is not null and created_at > now() - interval '1 min'"
                       " from projects_registry where prefix = %s", (uniq,))
    assert uniq in os.listdir(m.projects)
    expect_errno(errno.EEXIST, os.mkdir, os.path.join(m.projects, uniq))
    assert len(registry(m, uniq)) == 1


def test_mkdir_valid_prefixes(mount, uniq):
    m = mount
    good = ["0" + uniq, uniq + ".v2", uniq + "_x-y", "z" * 63]
    for p in good:
        os.mkdir(os.path.join(m.projects, p))
        assert len(registry(m, p)) == 1, p
        assert os.path.isdir(os.path.join(m.projects, p))


@pytest.mark.parametrize("bad", ["Upper", "-lead", ".lead", "_lead", "sp ace", "x" * 64,
                                 "acento-é", "semi;colon", "a%b"])
def test_mkdir_invalid_prefix_refused(mount, bad):
    m = mount
    before = m.sql_value("select count(*) from projects_registry")
    expect_errno(errno.EINVAL, os.mkdir, os.path.join(m.projects, bad))
    assert m.sql_value("select count(*) from projects_registry") == before
    assert not os.path.exists(os.path.join(m.projects, bad))
    assert "refused project prefix" in m.daemon_log()


def test_concurrent_mkdir_one_row(mount, uniq):
    m = mount
    results = []
    barrier = threading.Barrier(2)

    def go():
        barrier.wait()
        try:
            os.mkdir(os.path.join(m.projects, uniq))
            results.append(0)
        except OSError as e:
            results.append(e.errno)

    ts = [threading.Thread(target=go) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert sorted(results) == [0, errno.EEXIST], results
    assert len(registry(m, uniq)) == 1


def test_concurrent_mkdir_two_mounts(mount_factory, uniq):
    a = mount_factory()
    b = mount_factory(reset=False, name="second")
    for i in range(5):
        p = f"{uniq}-{i}"
        results = []
        barrier = threading.Barrier(2)

        def go(m):
            barrier.wait()
            try:
                os.mkdir(os.path.join(m.projects, p))
                results.append(0)
            except OSError as e:
                results.append(e.errno)

        ts = [threading.Thread(target=go, args=(m,)) for m in (a, b)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert sorted(results) == [0, errno.EEXIST], (p, results)
        assert len(registry(a, p)) == 1


def as_other(*cmd, check=False):
    return subprocess.run(SETPRIV + list(cmd), capture_output=True, text=True, timeout=30,
                          check=check)


def test_project_group_enforced(mount_factory, uniq):
    m = mount_factory(config={"fs": {"project_group": "4242"}}, opts="allow_other")
    # uid 2001 without the group: EACCES, no row.
    r = as_other("mkdir", os.path.join(m.projects, uniq))
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    assert registry(m, uniq) == []
    # ... but it may list and read.
    r = as_other("ls", m.projects)
    assert r.returncode == 0, r
    # In the group (supplementary): allowed, and created_by names that user.
    r = subprocess.run(["setpriv", "--reuid=2001", "--regid=2001", "--groups=4242", "mkdir",
                        os.path.join(m.projects, uniq)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r
    rows = registry(m, uniq)
    assert len(rows) == 1 and "uid 2001" in rows[0][2], rows
    # Naming is restricted the same way.
    r = as_other("setfattr", "-n", "user.custodyfs.name", "-v", "Intruso",
                 os.path.join(m.projects, uniq))
    assert r.returncode != 0, r
    assert registry(m, uniq)[0][1] == uniq
    # So is rmdir.
    r = as_other("rmdir", os.path.join(m.projects, uniq))
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    assert len(registry(m, uniq)) == 1
    # Root always may.
    os.mkdir(os.path.join(m.projects, uniq + "-root"))
    assert len(registry(m, uniq + "-root")) == 1


def test_promotion_is_for_the_project_group(mount_factory, uniq):
    """Only root and project_group promote: a user outside it who drops a file may not move
    it into a project (EACCES, from the kernel's check of the project directory's mode, or
    from the daemon's own), and the file stays received; a member may, and moved_by names
    that user. Every row for both keys is counted."""
    m = mount_factory(config={"fs": {"project_group": "4242"}}, opts="allow_other")
    proj = os.path.join(m.projects, uniq)
    os.mkdir(proj)
    st = os.stat(proj)
    assert (st.st_mode & 0o7777, st.st_gid) == (0o775, 4242)
    for who, groups in (("out", None), ("in", "4242")):
        src = os.path.join(m.inbox, f"{uniq}-{who}.txt")
        pre = ["setpriv", "--reuid=2001", "--regid=2001"]
        pre += [f"--groups={groups}"] if groups else ["--clear-groups"]
        r = subprocess.run(pre + ["sh", "-c", f"echo {who} > {src}"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r
        r = subprocess.run(pre + ["mv", src, os.path.join(proj, f"{who}.txt")],
                           capture_output=True, text=True, timeout=60)
        key = f"{uniq}/{who}.txt"
        rows = m.sql("select outcome, moved_uid from storage_audit where dest_key = %s", (key,))
        rec = m.sql("select removed_at from reception_audit where object_key = %s",
                    (f"{uniq}-{who}.txt",))
        if who == "out":
            assert r.returncode != 0 and "Permission denied" in r.stderr, r
            assert rows == []
            assert len(rec) == 1 and rec[0][0] is None
            assert read(src) == b"out\n"
            with pytest.raises(ClientError):
                m.s3.head_object(Bucket=m.storage_bucket, Key=key)
        else:
            assert r.returncode == 0, r
            assert [tuple(x) for x in rows] == [("copied", 2001)]
            assert len(rec) == 1 and rec[0][0] is not None
            assert not os.path.exists(src)
            assert read(os.path.join(proj, "in.txt")) == b"in\n"


def test_project_group_by_name(mount_factory, uniq):
    m = mount_factory(config={"fs": {"project_group": "root"}}, opts="allow_other")
    r = as_other("mkdir", os.path.join(m.projects, uniq))
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    r = subprocess.run(["setpriv", "--reuid=2001", "--regid=2001", "--groups=0", "mkdir",
                        os.path.join(m.projects, uniq)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r
    assert len(registry(m, uniq)) == 1


def test_no_project_group_anyone_creates(mount_factory, uniq):
    m = mount_factory(opts="allow_other")
    r = as_other("mkdir", os.path.join(m.projects, uniq))
    assert r.returncode == 0, r
    rows = registry(m, uniq)
    assert len(rows) == 1 and "uid 2001" in rows[0][2], rows


# --------------------------------------------------------------------------- xattr

def test_name_xattr_get_set(mount, uniq):
    m = mount
    p = os.path.join(m.projects, uniq)
    os.mkdir(p)
    assert os.getxattr(p, "user.custodyfs.name") == uniq.encode()
    assert "user.custodyfs.name" in os.listxattr(p)
    r = subprocess.run(["setfattr", "-n", "user.custodyfs.name", "-v", "Projeto Ação", p],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    assert registry(m, uniq)[0][1] == "Projeto Ação"
    r = subprocess.run(["getfattr", "--only-values", "-n", "user.custodyfs.name", p],
                       capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout.decode() == "Projeto Ação", r
    # A name set by another tool shows within seconds.
    m.sql("update projects_registry set name = 'Outro' where prefix = %s", (uniq,))
    m.wait_until(lambda: os.getxattr(p, "user.custodyfs.name") == b"Outro", timeout=10,
                 what="name changed in the database")
    # Other attributes: none, and none can be set.
    expect_errno(errno.ENODATA, os.getxattr, p, "user.other")
    expect_errno(errno.EOPNOTSUPP, os.setxattr, p, "user.other", b"x")
    expect_errno(errno.EINVAL, os.setxattr, p, "user.custodyfs.name", b"")
    expect_errno(errno.EINVAL, os.setxattr, p, "user.custodyfs.name", b"a\nb")
    expect_errno(errno.EINVAL, os.setxattr, p, "user.custodyfs.name", b"\xff\xfe")
    expect_errno(errno.EEXIST, os.setxattr, p, "user.custodyfs.name", b"x", os.XATTR_CREATE)
    expect_errno(errno.EPERM, os.removexattr, p, "user.custodyfs.name")
    assert registry(m, uniq)[0][1] == "Outro"
    # SQL-looking names are stored literally.
    evil = "'; DROP TABLE storage_audit; --"
    os.setxattr(p, "user.custodyfs.name", evil.encode())
    assert registry(m, uniq)[0][1] == evil
    assert m.sql_value("select to_regclass('storage_audit') is not null")
    # Not on projects/ itself nor on inbox/.
    expect_errno(errno.ENODATA, os.getxattr, m.projects, "user.custodyfs.name")
    expect_errno(errno.EOPNOTSUPP, os.setxattr, m.projects, "user.custodyfs.name", b"x")
    assert os.listxattr(m.inbox) == []
    # A missing project.
    expect_errno(errno.ENOENT, os.getxattr, p + "-none", "user.custodyfs.name")


# --------------------------------------------------------------------------- rmdir

def test_rmdir_empty_project(mount, uniq):
    m = mount
    os.mkdir(os.path.join(m.projects, uniq))
    os.rmdir(os.path.join(m.projects, uniq))
    assert registry(m, uniq) == []
    assert uniq not in os.listdir(m.projects)
    expect_errno(errno.ENOENT, os.rmdir, os.path.join(m.projects, uniq))


def test_rmdir_project_that_stored_refused(mount, uniq):
    m = mount
    os.mkdir(os.path.join(m.projects, uniq))
    # A stored file that is gone from the bucket since: the project still "ever stored".
    stored_row(m, uniq, f"{uniq}/gone.txt")
    expect_errno(errno.ENOTEMPTY, os.rmdir, os.path.join(m.projects, uniq))
    assert len(registry(m, uniq)) == 1
    assert os.path.isdir(os.path.join(m.projects, uniq))


def test_rmdir_project_with_objects_refused(mount, uniq):
    m = mount
    os.mkdir(os.path.join(m.projects, uniq))
    put(m, f"{uniq}/stray.bin", b"no row")
    expect_errno(errno.ENOTEMPTY, os.rmdir, os.path.join(m.projects, uniq))
    assert len(registry(m, uniq)) == 1


# --------------------------------------------------------------------------- subdirectories

def test_subdirectories(mount, uniq):
    m = mount
    p = os.path.join(m.projects, uniq)
    os.mkdir(p)
    os.makedirs(os.path.join(p, "a", "b"))
    assert os.listdir(p) == ["a"]
    assert os.listdir(os.path.join(p, "a")) == ["b"]
    expect_errno(errno.EEXIST, os.mkdir, os.path.join(p, "a"))
    expect_errno(errno.ENOENT, os.mkdir, os.path.join(p, "x", "y"))
    # No marker object in storage-unique.
    got = m.s3.list_objects_v2(Bucket=m.storage_bucket, Prefix=uniq + "/")
    assert got.get("KeyCount", 0) == 0, got
    # A project with only empty subdirectories has stored nothing: rmdir of the tree works.
    expect_errno(errno.ENOTEMPTY, os.rmdir, os.path.join(p, "a"))
    expect_errno(errno.ENOTEMPTY, os.rmdir, p)
    os.rmdir(os.path.join(p, "a", "b"))
    os.rmdir(os.path.join(p, "a"))
    assert os.listdir(p) == []
    os.rmdir(p)
    assert registry(m, uniq) == []
    # Inside a missing project: nothing.
    expect_errno(errno.ENOENT, os.mkdir, os.path.join(m.projects, uniq + "-none", "a"))


def test_subdirectory_of_stored_files_not_removable(mount, uniq):
    m = mount
    os.mkdir(os.path.join(m.projects, uniq))
    put(m, f"{uniq}/d/f.txt", b"x")
    d = os.path.join(m.projects, uniq, "d")
    assert os.path.isdir(d)
    expect_errno(errno.ENOTEMPTY, os.rmdir, d)
    expect_errno(errno.EEXIST, os.mkdir, d)


# --------------------------------------------------------------------------- reading

def test_list_and_read_stored_objects(mount, uniq):
    m = mount
    os.mkdir(os.path.join(m.projects, uniq))
    small = b"hello stored world\n"
    big = os.urandom(5 * 1024 * 1024 + 12345)
    put(m, f"{uniq}/small.txt", small)
    put(m, f"{uniq}/dir/big.bin", big)
    put(m, f"{uniq}/dir/deeper/x", b"x")
    put(m, f"{uniq}/empty", b"")
    put(m, f"{uniq}-other/not-here", b"y")  # another prefix that starts the same
    p = os.path.join(m.projects, uniq)
    m.wait_until(lambda: sorted(os.listdir(p)) == ["dir", "empty", "small.txt"], timeout=10,
                 what="listing of the project")
    assert sorted(os.listdir(os.path.join(p, "dir"))) == ["big.bin", "deeper"]
    assert os.path.getsize(os.path.join(p, "small.txt")) == len(small)
    assert os.path.getsize(os.path.join(p, "dir", "big.bin")) == len(big)
    assert os.path.getsize(os.path.join(p, "empty")) == 0
    st = os.stat(os.path.join(p, "small.txt"))
    assert st.st_mode & 0o222 == 0, oct(st.st_mode)
    assert read(os.path.join(p, "small.txt")) == small
    assert read(os.path.join(p, "empty")) == b""
    # cat, cp, sha256sum, dd with odd offsets.
    assert subprocess.run(["cat", os.path.join(p, "small.txt")], capture_output=True,
                          timeout=30).stdout == small
    out = subprocess.run(["sha256sum", os.path.join(p, "dir", "big.bin")], capture_output=True,
                         text=True, timeout=60).stdout.split()[0]
    assert out == hashlib.sha256(big).hexdigest()
    dst = os.path.join(m.base, f"{uniq}-copy")
    subprocess.run(["cp", os.path.join(p, "dir", "big.bin"), dst], check=True, timeout=60)
    assert read(dst) == big
    r = subprocess.run(["dd", f"if={os.path.join(p, 'dir', 'big.bin')}", "bs=7", "skip=150001",
                        "count=1001", "status=none"], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == big[7 * 150001:7 * 150001 + 7 * 1001]
    # Random ranged reads with pread, boundaries included.
    fd = os.open(os.path.join(p, "dir", "big.bin"), os.O_RDONLY)
    try:
        for off, n in [(0, 1), (1, 4095), (4097, 70000), (len(big) - 3, 10), (len(big), 5),
                       (3 * 1024 * 1024 + 1, 1024 * 1024 + 17), (12345, 1)]:
            assert os.pread(fd, n, off) == big[off:off + n], (off, n)
    finally:
        os.close(fd)


def test_listing_over_1000_keys(mount, uniq):
    m = mount
    os.mkdir(os.path.join(m.projects, uniq))
    n = 1205
    keys = [f"{uniq}/many/f{i:05d}" for i in range(n)]

    def putmany(ks):
        for k in ks:
            put(m, k, k.encode())

    ts = [threading.Thread(target=putmany, args=(keys[i::8],)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    d = os.path.join(m.projects, uniq, "many")
    names = sorted(os.listdir(d))
    assert names == sorted(k.rsplit("/", 1)[1] for k in keys)
    assert read(os.path.join(d, "f01204")) == f"{uniq}/many/f01204".encode()


def test_symlinks_for_duplicate_content(mount, uniq):
    m = mount
    os.mkdir(os.path.join(m.projects, uniq))
    data = b"the one stored copy"
    sha = hashlib.sha256(data).hexdigest()
    put(m, f"{uniq}/docs/orig.pdf", data)
    stored_row(m, uniq, f"{uniq}/docs/orig.pdf", sha=sha, size=len(data))
    stored_row(m, uniq, f"{uniq}/docs/again.pdf", outcome="duplicate_content",
               duplicate_of=f"{uniq}/docs/orig.pdf", sha=sha, size=len(data))
    stored_row(m, uniq, f"{uniq}/other/sub/copy.pdf", outcome="duplicate_content",
               duplicate_of=f"{uniq}/docs/orig.pdf", sha=sha, size=len(data))
    p = os.path.join(m.projects, uniq)
    m.wait_until(lambda: sorted(os.listdir(p)) == ["docs", "other"], timeout=10,
                 what="directories made by a link row")
    assert sorted(os.listdir(os.path.join(p, "docs"))) == ["again.pdf", "orig.pdf"]
    link = os.path.join(p, "docs", "again.pdf")
    assert os.path.islink(link)
    assert os.readlink(link) == "orig.pdf"
    assert read(link) == data
    deep = os.path.join(p, "other", "sub", "copy.pdf")
    assert os.readlink(deep) == "../../docs/orig.pdf"
    assert read(deep) == data
    assert os.path.isdir(os.path.join(p, "other", "sub"))
    expect_errno(errno.EPERM, os.unlink, link)
    expect_errno(errno.ENOTEMPTY, os.rmdir, os.path.join(p, "other", "sub"))


# --------------------------------------------------------------------------- immutability

def test_stored_files_are_immutable(mount, uniq):
    m = mount
    os.mkdir(os.path.join(m.projects, uniq))
    data = b"immutable"
    put(m, f"{uniq}/f.txt", data)
    f = os.path.join(m.projects, uniq, "f.txt")
    m.wait_until(lambda: os.path.exists(f), timeout=10, what="stored file shows")
    etag = m.s3.head_object(Bucket=m.storage_bucket, Key=f"{uniq}/f.txt")["ETag"]
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND, os.O_RDONLY | os.O_TRUNC,
                  os.O_WRONLY | os.O_TRUNC):
        expect_errno(errno.EPERM, os.open, f, flags)
    expect_errno(errno.EPERM, os.truncate, f, 0)
    expect_errno(errno.EPERM, os.truncate, f, 100)
    expect_errno(errno.EPERM, os.unlink, f)
    expect_errno(errno.EPERM, os.rename, f, f + ".new")
    expect_errno(errno.EPERM, os.rename, f, os.path.join(m.inbox, f"{uniq}-stolen"))
    # Replacing it by an O_CREAT open is refused too (a new name is a direct write:
    # test_projects_direct.py).
    expect_errno(errno.EPERM, os.open, f, os.O_WRONLY | os.O_CREAT, 0o644)
    expect_errno(errno.EEXIST, os.open, f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    expect_errno(errno.EPERM, os.link, f, f + ".hard")
    expect_errno(errno.EPERM, os.symlink, "f.txt", f + ".sym")
    # A project directory is not renamed either.
    expect_errno(errno.EPERM, os.rename, os.path.join(m.projects, uniq),
                 os.path.join(m.projects, uniq + "-renamed"))
    # ftruncate on a read-only descriptor: the kernel's EINVAL/EBADF, never a change.
    fd = os.open(f, os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            os.ftruncate(fd, 0)
        with pytest.raises(OSError):
            os.write(fd, b"x")
    finally:
        os.close(fd)
    got = m.s3.get_object(Bucket=m.storage_bucket, Key=f"{uniq}/f.txt")
    assert got["Body"].read() == data and got["ETag"] == etag
    assert read(f) == data
    keys = [o["Key"] for o in m.s3.list_objects_v2(Bucket=m.storage_bucket,
                                                    Prefix=uniq + "/").get("Contents", [])]
    assert keys == [f"{uniq}/f.txt"]


def test_root_of_projects_takes_no_files(mount, uniq):
    m = mount
    expect_errno(errno.EPERM, os.open, os.path.join(m.projects, uniq + ".txt"),
                 os.O_WRONLY | os.O_CREAT, 0o644)
    expect_errno(errno.EBUSY, os.rmdir, m.projects)
    assert registry(m, uniq + ".txt") == []


def test_promoted_file_shows_in_its_project_at_once(mount, uniq):
    """The user's path end to end: mkdir a project, look into it (so a listing is cached),
    mv a file from inbox/ into it and into a subdirectory made there: each stored file is
    seen at once by stat, ls and read (no stale listing hides it), the inbox names are gone,
    the stored files are immutable and the project, having stored, cannot be removed."""
    m = mount
    proj = os.path.join(m.projects, uniq)
    os.mkdir(proj)
    assert os.listdir(proj) == []
    os.mkdir(os.path.join(proj, "sub"))
    assert os.listdir(os.path.join(proj, "sub")) == []
    data = {"x.txt": os.urandom(3000), "sub/y.bin": os.urandom(70000)}
    for rel, body in data.items():
        src = os.path.join(m.inbox, f"{uniq}-{os.path.basename(rel)}")
        with open(src, "wb") as f:
            f.write(body)
        os.rename(src, os.path.join(proj, rel))
        assert not os.path.exists(src)
    for rel, body in data.items():
        dst = os.path.join(proj, rel)
        assert os.stat(dst).st_size == len(body)
        assert read(dst) == body
        obj = m.s3.get_object(Bucket=m.storage_bucket, Key=f"{uniq}/{rel}")
        assert obj["Body"].read() == body
    assert sorted(os.listdir(proj)) == ["sub", "x.txt"]
    assert os.listdir(os.path.join(proj, "sub")) == ["y.bin"]
    expect_errno(errno.EPERM, os.unlink, os.path.join(proj, "x.txt"))
    expect_errno(errno.ENOTEMPTY, os.rmdir, proj)
    rows = m.sql("select dest_key, outcome from storage_audit where project_prefix = %s"
                 " order by dest_key", (uniq,))
    assert [tuple(r) for r in rows] == [(f"{uniq}/sub/y.bin", "copied"), (f"{uniq}/x.txt", "copied")]


def test_duplicate_content_rename_shows_symlink_at_once(mount, uniq):
    """The new-user check of issue 6 (review-H, the end): mv of a file into a project, then
    mv of the same bytes under another name (outcome duplicate_content: the new name is a
    symlink to the stored file), then at once lstat and ls -l of the project. The kernel
    still holds the renamed inode, a regular file, under the new name; the daemon's next
    answer is a symlink, which the kernel used to refuse with EIO (listed as l?????????).
    Every lstat right after the rename must see the symlink, never an error, and a readlink
    a moment later (no stat before it) must read the link: the kernel dropped its entry. A
    few rounds, each a new name, as the kernel's caches decide which request comes first."""
    m = mount
    proj = os.path.join(m.projects, uniq)
    os.mkdir(proj)
    body = os.urandom(5000)
    src = os.path.join(m.inbox, f"{uniq}-f")
    with open(src, "wb") as f:
        f.write(body)
    os.rename(src, os.path.join(proj, "f"))
    names = []
    for i in range(4):
        name = f"g{i}"
        src = os.path.join(m.inbox, f"{uniq}-{name}")
        with open(src, "wb") as f:
            f.write(body)
        os.stat(src)  # as mv does: the kernel knows the inode it renames
        dst = os.path.join(proj, name)
        os.rename(src, dst)
        if i % 2 == 0:
            st = os.lstat(dst)  # at once: no EIO
            assert stat.S_ISLNK(st.st_mode), (name, oct(st.st_mode))
            assert os.readlink(dst) == "f"
        else:
            # a moment later (the next command), readlink first: the kernel answers it
            # from the inode it holds, unless its entry was dropped
            time.sleep(0.3)
            assert os.readlink(dst) == "f"
            assert stat.S_ISLNK(os.lstat(dst).st_mode)
        names.append(name)
        listed = sorted(os.listdir(proj))
        assert listed == sorted(["f"] + names)
        for e in listed:  # ls -l
            st = os.lstat(os.path.join(proj, e))
            assert stat.S_ISLNK(st.st_mode) == (e != "f"), (e, oct(st.st_mode))
        assert read(dst) == body
    rows = m.sql("select dest_key, outcome, duplicate_of from storage_audit"
                 " where project_prefix = %s order by dest_key", (uniq,))
    assert [tuple(r) for r in rows] == (
        [(f"{uniq}/f", "copied", None)]
        + [(f"{uniq}/{n}", "duplicate_content", f"{uniq}/f") for n in names])


def test_duplicate_content_in_a_directory_rename_shows_symlink_at_once(mount, uniq):
    """mv of a directory into a project, one of its files a content duplicate of a stored
    file: the kernel moves the directory with the entries it knows under it, the duplicate's
    a regular file; right after the rename, lstat and ls -l of the moved directory must see
    the duplicate as a symlink and the other file as a file, never EIO (issue 6)."""
    m = mount
    proj = os.path.join(m.projects, uniq)
    os.mkdir(proj)
    body = os.urandom(5000)
    src = os.path.join(m.inbox, f"{uniq}-f")
    with open(src, "wb") as f:
        f.write(body)
    os.rename(src, os.path.join(proj, "f"))
    for i in range(2):
        d = os.path.join(m.inbox, f"{uniq}-d{i}")
        os.mkdir(d)
        for name, data in (("x", body), ("y", os.urandom(100))):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            os.lstat(os.path.join(d, name))  # the kernel knows both files
        dst = os.path.join(proj, f"d{i}")
        os.rename(d, dst)
        st = os.lstat(os.path.join(dst, "x"))  # at once: no EIO
        assert stat.S_ISLNK(st.st_mode), oct(st.st_mode)
        assert os.readlink(os.path.join(dst, "x")) == "../f"
        assert sorted(os.listdir(dst)) == ["x", "y"]
        assert stat.S_ISREG(os.lstat(os.path.join(dst, "y")).st_mode)
        assert read(os.path.join(dst, "x")) == body
    rows = m.sql("select dest_key, outcome, duplicate_of from storage_audit"
                 " where project_prefix = %s and dest_key like %s order by dest_key",
                 (uniq, f"{uniq}/d%/x"))
    assert [tuple(r) for r in rows] == [
        (f"{uniq}/d{i}/x", "duplicate_content", f"{uniq}/f") for i in range(2)]


# --------------------------------------------------------------------------- faults

def test_registry_row_removed_elsewhere_disappears(mount, uniq):
    m = mount
    os.mkdir(os.path.join(m.projects, uniq))
    assert uniq in os.listdir(m.projects)
    m.sql("delete from projects_registry where prefix = %s", (uniq,))
    m.wait_until(lambda: uniq not in os.listdir(m.projects), timeout=10,
                 what="a row deleted by another tool leaves projects/")


def test_database_down_fails_loudly_and_recovers(fresh_mount, uniq):
    m = fresh_mount
    os.mkdir(os.path.join(m.projects, uniq))
    m.stop_pg()
    time.sleep(2.5)  # past the registry's TTL: the next listing asks the database
    expect_errno(errno.EIO, os.listdir, m.projects)
    expect_errno(errno.EIO, os.mkdir, os.path.join(m.projects, uniq + "-down"))
    m.start_pg()
    m.wait_until(lambda: uniq in os.listdir(m.projects), timeout=30,
                 what="projects/ lists again once the database is back")
    assert registry(m, uniq + "-down") == []


def test_store_down_read_fails_and_recovers(fresh_mount, uniq):
    m = fresh_mount
    os.mkdir(os.path.join(m.projects, uniq))
    data = os.urandom(300000)
    put(m, f"{uniq}/f.bin", data)
    f = os.path.join(m.projects, uniq, "f.bin")
    m.wait_until(lambda: os.path.exists(f), timeout=10, what="stored file shows")
    fd = os.open(f, os.O_RDONLY)
    try:
        m.stop_s3()
        with pytest.raises(OSError) as ei:
            os.pread(fd, 4096, 0)
        assert ei.value.errno in (errno.EIO, errno.ETIMEDOUT, errno.ECONNREFUSED), ei.value
        m.start_s3()
        m.wait_until(lambda: os.pread(fd, 10, 5) == data[5:15], timeout=30,
                     what="reads work again once the store is back")
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)
