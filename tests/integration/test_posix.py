"""POSIX semantics of inbox/ (issue 5 point 13b): what pjdfstest's open, mkdir, rmdir, unlink,
rename, truncate, ftruncate, chmod and utimensat groups check that inbox/ supports, so CI
guards it without pjdfstest. Every result is checked through the mount (errno, stat, read,
readdir) and independently: the reception bucket through boto3 and EVERY reception_audit row
of the key, removed ones included (checks.rows), so a phantom row fails the test.

Not here (an object store cannot hold them, see README's pjdfstest table): device nodes,
FIFOs, sockets, symlinks, hard links. Ownership and permission enforcement (two users on an
allow_other mount) is in test_perms.py."""
import ctypes
import errno
import hashlib
import os
import stat
import time

import pytest
from checks import bucket_keys, expected_history, get_object, history, read, rows, write


# --------------------------------------------------------------------------- helpers

def err(fn, *codes, what=""):
    """fn() must fail with one of codes; returns the errno."""
    with pytest.raises(OSError) as ei:
        fn()
    assert ei.value.errno in codes, f"{what}: expected {[errno.errorcode[c] for c in codes]}, " \
        f"got {errno.errorcode.get(ei.value.errno)}"
    return ei.value.errno


def sha(b):
    return hashlib.sha256(b).hexdigest()


def assert_stored(m, key, data, hist):
    """The bucket holds data under key and the rows of key are exactly hist, a list of
    contents (bytes) oldest first, the last one live and all others removed."""
    assert get_object(m, key) == data, f"{key!r}: bucket does not hold the expected {len(data)} bytes"
    assert history(m, key) == expected_history(hist), f"rows of {key!r}: {rows(m, key)}"


def assert_gone(m, key, hist):
    """No object under key; its rows are exactly hist (contents, oldest first), all removed."""
    assert get_object(m, key) is None, f"{key!r} is still in the bucket"
    assert history(m, key) == expected_history(hist, live_last=False), f"rows of {key!r}: {rows(m, key)}"


def ls(d):
    return sorted(os.listdir(d))


@pytest.fixture
def d(mount, uniq):
    p = os.path.join(mount.inbox, uniq)
    os.mkdir(p)
    return p


# --------------------------------------------------------------------------- open-unlinked files

def test_open_unlinked_file_works_and_leaves_nothing(mount, d, uniq):
    """open, unlink, then write/read/ftruncate/fstat/fchmod on the descriptor: all work as
    POSIX says (st_nlink 0), close uploads nothing and logs nothing, the mount stays up."""
    m = mount
    key, p = f"{uniq}/tmpfile", os.path.join(d, "tmpfile")
    write(p, b"received first")
    assert_stored(m, key, b"received first", [b"received first"])
    fd = os.open(p, os.O_RDWR)
    try:
        os.unlink(p)
        assert ls(d) == []
        assert_gone(m, key, [b"received first"])
        assert os.pread(fd, 100, 0) == b"received first"
        assert os.pwrite(fd, b"RECEIVED", 0) == 8
        assert os.pread(fd, 100, 0) == b"RECEIVED first"
        os.ftruncate(fd, 4)
        st = os.fstat(fd)
        assert st.st_size == 4 and st.st_nlink == 0, st
        os.ftruncate(fd, 10)
        assert os.pread(fd, 100, 0) == b"RECE" + b"\0" * 6
        os.fchmod(fd, 0o600)
        st = os.fstat(fd)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_nlink == 0 and st.st_size == 10
        os.fsync(fd)
    finally:
        os.close(fd)
    assert mount.alive()
    assert ls(d) == []
    assert_gone(m, key, [b"received first"])
    assert bucket_keys(m, f"{uniq}/") == []
    # the mount still works
    write(os.path.join(d, "after"), b"ok")
    assert_stored(m, f"{uniq}/after", b"ok", [b"ok"])


def test_new_file_unlinked_before_close_leaves_no_row(mount, d, uniq):
    """Created, written, unlinked, written again, closed: never a row, never an object."""
    m = mount
    key, p = f"{uniq}/scratch", os.path.join(d, "scratch")
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"a" * 5000)
        os.unlink(p)
        os.write(fd, b"b" * 5000)
        os.ftruncate(fd, 7000)
        assert os.fstat(fd).st_size == 7000
        assert os.pread(fd, 10000, 0) == b"a" * 5000 + b"b" * 2000
    finally:
        os.close(fd)
    assert m.alive()
    assert ls(d) == []
    assert_gone(m, key, [])


def test_unlinked_descriptor_is_independent_of_a_new_file_of_the_same_name(mount, d, uniq):
    """open f, unlink f, create a new f: writes through the old descriptor never reach the
    new file, its object or its rows."""
    m = mount
    key, p = f"{uniq}/same", os.path.join(d, "same")
    write(p, b"old")
    old = os.open(p, os.O_RDWR)
    try:
        os.unlink(p)
        write(p, b"NEW CONTENT")
        assert_stored(m, key, b"NEW CONTENT", [b"old", b"NEW CONTENT"])
        os.pwrite(old, b"written through the unlinked descriptor", 0)
        os.ftruncate(old, 5)
        assert os.pread(old, 100, 0) == b"writt"
        assert os.fstat(old).st_nlink == 0
    finally:
        os.close(old)
    assert m.alive()
    assert read(p) == b"NEW CONTENT"
    assert ls(d) == ["same"]
    assert_stored(m, key, b"NEW CONTENT", [b"old", b"NEW CONTENT"])


# --------------------------------------------------------------------------- rename

def test_rename_over_existing_file_replaces_it(mount, d, uniq):
    """Atomic replace: the target name holds the source's content; the old target's row is
    closed, the source's row is closed, one live row for the new content."""
    m = mount
    a, b = os.path.join(d, "a"), os.path.join(d, "b")
    write(a, b"source content")
    write(b, b"target content, longer")
    assert ls(d) == ["a", "b"]
    os.rename(a, b)
    assert ls(d) == ["b"]
    assert read(b) == b"source content"
    assert os.stat(b).st_size == len(b"source content")
    err(lambda: os.stat(a), errno.ENOENT)
    assert_gone(m, f"{uniq}/a", [b"source content"])
    assert_stored(m, f"{uniq}/b", b"source content", [b"target content, longer", b"source content"])
    assert bucket_keys(m, f"{uniq}/") == [f"{uniq}/b"]


def test_descriptor_open_before_rename_over_reads_the_replaced_file(mount, d, uniq):
    """POSIX: a descriptor names a file, not a path. A reader that opened b before
    `rename(a, b)` keeps reading the old b, not the new content of the name."""
    m = mount
    a, b = os.path.join(d, "a"), os.path.join(d, "b")
    write(a, b"source content")
    write(b, b"target content, longer")
    reader = os.open(b, os.O_RDONLY)
    try:
        os.rename(a, b)
        assert read(b) == b"source content"
        assert os.pread(reader, 100, 0) == b"target content, longer"
        assert os.fstat(reader).st_size == len(b"target content, longer")
    finally:
        os.close(reader)
    assert m.alive()
    assert_stored(m, f"{uniq}/b", b"source content", [b"target content, longer", b"source content"])


def test_rename_onto_itself_changes_nothing(mount, d, uniq):
    m = mount
    p = os.path.join(d, "self")
    write(p, b"stays")
    before = rows(m, f"{uniq}/self")
    os.rename(p, p)
    assert ls(d) == ["self"] and read(p) == b"stays"
    assert rows(m, f"{uniq}/self") == before
    assert_stored(m, f"{uniq}/self", b"stays", [b"stays"])


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _renameat2(src, dst, flags):
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        pytest.skip("libc has no renameat2")
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def test_rename_noreplace(mount, d, uniq):
    """renameat2(RENAME_NOREPLACE): EEXIST over an existing name (both files untouched),
    a plain rename onto a free name."""
    m = mount
    a, b, c = (os.path.join(d, n) for n in ("a", "b", "c"))
    write(a, b"AAA")
    write(b, b"BBBB")
    err(lambda: _renameat2(a, b, _RENAME_NOREPLACE), errno.EEXIST)
    assert ls(d) == ["a", "b"] and read(a) == b"AAA" and read(b) == b"BBBB"
    assert_stored(m, f"{uniq}/a", b"AAA", [b"AAA"])
    assert_stored(m, f"{uniq}/b", b"BBBB", [b"BBBB"])
    _renameat2(a, c, _RENAME_NOREPLACE)
    assert ls(d) == ["b", "c"] and read(c) == b"AAA"
    assert_gone(m, f"{uniq}/a", [b"AAA"])
    assert_stored(m, f"{uniq}/c", b"AAA", [b"AAA"])


def test_rename_dir_over_empty_dir_and_not_over_nonempty(mount, d, uniq):
    m = mount
    src, empty, full = (os.path.join(d, n) for n in ("src", "empty", "full"))
    for p in (src, empty, full):
        os.mkdir(p)
    write(os.path.join(src, "f"), b"in src")
    write(os.path.join(full, "g"), b"in full")
    err(lambda: os.rename(src, full), errno.ENOTEMPTY, errno.EEXIST)
    assert ls(d) == ["empty", "full", "src"]
    assert ls(src) == ["f"] and ls(full) == ["g"]
    assert_stored(m, f"{uniq}/src/f", b"in src", [b"in src"])
    assert_stored(m, f"{uniq}/full/g", b"in full", [b"in full"])
    os.rename(src, empty)
    assert ls(d) == ["empty", "full"]
    assert ls(empty) == ["f"] and read(os.path.join(empty, "f")) == b"in src"
    assert_gone(m, f"{uniq}/src/f", [b"in src"])
    assert_stored(m, f"{uniq}/empty/f", b"in src", [b"in src"])
    assert bucket_keys(m, f"{uniq}/") == [f"{uniq}/empty/f", f"{uniq}/full/g"]


def test_rename_type_mismatch_and_missing_source(mount, d, uniq):
    m = mount
    f, dd = os.path.join(d, "file"), os.path.join(d, "dir")
    write(f, b"file")
    os.mkdir(dd)
    err(lambda: os.rename(dd, f), errno.ENOTDIR)
    err(lambda: os.rename(f, dd), errno.EISDIR)
    err(lambda: os.rename(os.path.join(d, "missing"), os.path.join(d, "x")), errno.ENOENT)
    err(lambda: os.rename(f, os.path.join(d, "nodir", "x")), errno.ENOENT)
    err(lambda: os.rename(dd, os.path.join(dd, "inside")), errno.EINVAL)
    assert ls(d) == ["dir", "file"] and read(f) == b"file"
    assert_stored(m, f"{uniq}/file", b"file", [b"file"])
    assert history(m, f"{uniq}/x") == [] and history(m, f"{uniq}/nodir/x") == []


# --------------------------------------------------------------------------- open / create

def test_o_excl_on_existing_name(mount, d, uniq):
    m = mount
    p, dd = os.path.join(d, "f"), os.path.join(d, "sub")
    write(p, b"original")
    os.mkdir(dd)
    err(lambda: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), errno.EEXIST)
    err(lambda: os.open(dd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), errno.EEXIST)
    err(lambda: os.mkdir(p), errno.EEXIST)
    err(lambda: os.mkdir(dd), errno.EEXIST)
    assert read(p) == b"original" and ls(d) == ["f", "sub"]
    assert_stored(m, f"{uniq}/f", b"original", [b"original"])
    # O_EXCL on a free name creates it
    fd = os.open(os.path.join(d, "g"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.write(fd, b"exclusive")
    finally:
        os.close(fd)
    assert ls(d) == ["f", "g", "sub"]
    assert_stored(m, f"{uniq}/g", b"exclusive", [b"exclusive"])


def test_o_creat_without_excl_keeps_content_and_logs_nothing(mount, d, uniq):
    """O_CREAT on an existing file opens it: content kept; a handle that never wrote
    commits nothing (SPEC §2 'Only writers commit')."""
    m = mount
    p = os.path.join(d, "f")
    write(p, b"keep me")
    for flags in (os.O_WRONLY | os.O_CREAT, os.O_RDWR | os.O_CREAT, os.O_RDONLY | os.O_CREAT):
        os.close(os.open(p, flags, 0o600))
    assert read(p) == b"keep me"
    assert_stored(m, f"{uniq}/f", b"keep me", [b"keep me"])
    # O_TRUNC is a write: one new row, for the empty file
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    assert read(p) == b"" and os.stat(p).st_size == 0
    assert_stored(m, f"{uniq}/f", b"", [b"keep me", b""])


def test_enoent_cases(mount, d, uniq):
    m = mount
    miss = os.path.join(d, "missing")
    err(lambda: os.open(miss, os.O_RDONLY), errno.ENOENT)
    err(lambda: os.open(miss, os.O_WRONLY), errno.ENOENT)
    err(lambda: os.open(os.path.join(d, "nodir", "f"), os.O_WRONLY | os.O_CREAT, 0o644), errno.ENOENT)
    err(lambda: os.mkdir(os.path.join(d, "nodir", "sub")), errno.ENOENT)
    err(lambda: os.unlink(miss), errno.ENOENT)
    err(lambda: os.rmdir(miss), errno.ENOENT)
    err(lambda: os.truncate(miss, 0), errno.ENOENT)
    err(lambda: os.stat(miss), errno.ENOENT)
    err(lambda: os.chmod(miss, 0o600), errno.ENOENT)
    err(lambda: os.utime(miss, (1, 1)), errno.ENOENT)
    assert ls(d) == []
    assert bucket_keys(m, f"{uniq}/") == []
    assert m.sql_value("select count(*) from reception_audit where starts_with(object_key, %s)",
                       (f"{uniq}/",)) == 0


# --------------------------------------------------------------------------- truncate / ftruncate

def _times(p):
    st = os.stat(p)
    return st.st_mtime_ns, st.st_ctime_ns


def test_truncate_grow_and_shrink(mount, d, uniq):
    """truncate(2): sizes, zero fill, mtime and ctime change; every truncate is one row."""
    m = mount
    key, p = f"{uniq}/t", os.path.join(d, "t")
    data = os.urandom(3000)
    write(p, data)
    hist = [data]
    for size in (1000, 5000, 0, 100):
        t0 = _times(p)
        time.sleep(1.1)  # let the clock move past the file's timestamps (second granularity)
        os.truncate(p, size)
        cur = hist[-1][:size] + b"\0" * max(0, size - len(hist[-1]))
        hist.append(cur)
        st = os.stat(p)
        assert st.st_size == size
        assert read(p) == cur
        t1 = _times(p)
        assert t1[0] > t0[0] and t1[1] > t0[1], f"truncate to {size}: times {t0} -> {t1}"
        assert_stored(m, key, cur, hist)
    assert ls(d) == ["t"]


def test_truncate_to_same_size_keeps_content(mount, d, uniq):
    m = mount
    key, p = f"{uniq}/same", os.path.join(d, "same")
    write(p, b"0123456789")
    os.truncate(p, 10)
    assert read(p) == b"0123456789"
    got = history(m, key)
    assert get_object(m, key) == b"0123456789"
    # a same-size truncate may or may not be logged; if it is, it records the same content
    assert got[0] == (10, sha(b"0123456789"), len(got) == 1) and len(got) <= 2, got
    assert all(h[:2] == (10, sha(b"0123456789")) for h in got) and got[-1][2], got


def test_ftruncate_grow_and_shrink_through_one_descriptor(mount, d, uniq):
    m = mount
    key, p = f"{uniq}/ft", os.path.join(d, "ft")
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"x" * 4096)
        model = bytearray(b"x" * 4096)
        for size in (100, 70000, 3, 0, 12345):
            t0 = os.fstat(fd)
            time.sleep(1.1)
            os.ftruncate(fd, size)
            model = model[:size] + bytearray(max(0, size - len(model)))
            st = os.fstat(fd)
            assert st.st_size == size
            assert st.st_mtime_ns > t0.st_mtime_ns and st.st_ctime_ns > t0.st_ctime_ns
            assert os.pread(fd, size + 100, 0) == bytes(model)
        os.pwrite(fd, b"END", 20000)  # past EOF: a hole up to 20000
        model += bytearray(20000 - len(model)) + b"END"
        assert os.fstat(fd).st_size == 20003
    finally:
        os.close(fd)
    assert read(p) == bytes(model)
    # one handle, one close: one row with the final content
    assert_stored(m, key, bytes(model), [bytes(model)])


def test_ftruncate_needs_a_writable_descriptor(mount, d, uniq):
    m = mount
    p = os.path.join(d, "ro")
    write(p, b"read only handle")
    fd = os.open(p, os.O_RDONLY)
    try:
        err(lambda: os.ftruncate(fd, 0), errno.EINVAL, errno.EBADF)
        err(lambda: os.ftruncate(fd, -1), errno.EINVAL, errno.EBADF)
    finally:
        os.close(fd)
    err(lambda: os.truncate(p, -1), errno.EINVAL)
    assert read(p) == b"read only handle"
    assert_stored(m, f"{uniq}/ro", b"read only handle", [b"read only handle"])


# --------------------------------------------------------------------------- coherence

def test_reader_sees_write_only_handle_writes(mount, d, uniq):
    """A write-only handle writes around the page cache (direct_io, for throughput): a reader
    whose pages (read and mmap) already hold the file sees each write at once, same size or
    grown, with no attribute timeout in between; then the writer's close stores it all."""
    import mmap
    m = mount
    key, p = f"{uniq}/coherent", os.path.join(d, "coherent")
    w = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    r = mm = None
    try:
        assert os.pwrite(w, b"a" * 8192, 0) == 8192
        r = os.open(p, os.O_RDONLY)
        assert os.pread(r, 8192, 0) == b"a" * 8192  # now cached for the reader
        mm = mmap.mmap(r, 8192, prot=mmap.PROT_READ)
        assert mm[50:52] == b"aa"
        assert os.pwrite(w, b"b" * 100, 50) == 100  # same size: nothing else changes
        want = b"a" * 50 + b"b" * 100 + b"a" * (8192 - 150)
        assert os.pread(r, 8192, 0) == want
        assert mm[:] == want
        assert os.pwrite(w, b"c" * 5000, 8192) == 5000
        want += b"c" * 5000
        assert os.pread(r, 20000, 0) == want
    finally:
        if mm is not None:
            mm.close()
        if r is not None:
            os.close(r)
        os.close(w)
    assert read(p) == want
    assert_stored(m, key, want, [want])


# --------------------------------------------------------------------------- EISDIR / ENOTDIR / ENOTEMPTY

def test_eisdir(mount, d, uniq):
    m = mount
    sub = os.path.join(d, "sub")
    os.mkdir(sub)
    err(lambda: os.open(sub, os.O_WRONLY), errno.EISDIR)
    err(lambda: os.open(sub, os.O_RDWR), errno.EISDIR)
    err(lambda: os.unlink(sub), errno.EISDIR)
    err(lambda: os.truncate(sub, 0), errno.EISDIR)
    assert os.path.isdir(sub) and ls(d) == ["sub"]
    assert bucket_keys(m, f"{uniq}/") == []
    assert history(m, f"{uniq}/sub") == [] and history(m, f"{uniq}/sub/") == []


def test_enotdir(mount, d, uniq):
    m = mount
    f = os.path.join(d, "file")
    write(f, b"a file")
    under = os.path.join(f, "x")
    err(lambda: os.open(under, os.O_WRONLY | os.O_CREAT, 0o644), errno.ENOTDIR)
    err(lambda: os.open(under, os.O_RDONLY), errno.ENOTDIR)
    err(lambda: os.mkdir(under), errno.ENOTDIR)
    err(lambda: os.rmdir(f), errno.ENOTDIR)
    err(lambda: os.unlink(under), errno.ENOTDIR)
    err(lambda: os.stat(under), errno.ENOTDIR)
    err(lambda: os.rename(f, os.path.join(f, "y")), errno.ENOTDIR, errno.EINVAL)
    err(lambda: os.listdir(f), errno.ENOTDIR)
    assert read(f) == b"a file" and ls(d) == ["file"]
    assert_stored(m, f"{uniq}/file", b"a file", [b"a file"])
    assert bucket_keys(m, f"{uniq}/", markers=True) == [f"{uniq}/file"] or \
        bucket_keys(m, f"{uniq}/", markers=True) == [f"{uniq}/", f"{uniq}/file"]
    assert history(m, f"{uniq}/file/x") == []


def test_enotempty_rmdir(mount, d, uniq):
    m = mount
    sub = os.path.join(d, "sub")
    os.makedirs(os.path.join(sub, "inner"))
    err(lambda: os.rmdir(sub), errno.ENOTEMPTY, errno.EEXIST)
    assert ls(sub) == ["inner"]
    os.rmdir(os.path.join(sub, "inner"))
    write(os.path.join(sub, "f"), b"f")
    err(lambda: os.rmdir(sub), errno.ENOTEMPTY, errno.EEXIST)
    assert ls(sub) == ["f"]
    assert_stored(m, f"{uniq}/sub/f", b"f", [b"f"])
    os.unlink(os.path.join(sub, "f"))
    assert ls(sub) == []
    os.rmdir(sub)
    assert ls(d) == []
    assert_gone(m, f"{uniq}/sub/f", [b"f"])
    assert [k for k in bucket_keys(m, f"{uniq}/", markers=True) if k != f"{uniq}/"] == []


# --------------------------------------------------------------------------- ENAMETOOLONG

def test_component_over_255_bytes(mount, d, uniq):
    m = mount
    ok_name, long_name = "n" * 255, "n" * 256
    lp = os.path.join(d, long_name)
    err(lambda: os.open(lp, os.O_WRONLY | os.O_CREAT, 0o644), errno.ENAMETOOLONG)
    err(lambda: os.mkdir(lp), errno.ENAMETOOLONG)
    # every path operation, not only creation, refuses such a name (pjdfstest */02.t)
    for what, op in (("stat", os.stat), ("unlink", os.unlink), ("rmdir", os.rmdir),
                     ("truncate", lambda q: os.truncate(q, 0)),
                     ("chmod", lambda q: os.chmod(q, 0o600)), ("chown", lambda q: os.chown(q, 0, 0)),
                     ("utime", lambda q: os.utime(q, (1, 1))),
                     ("open", lambda q: os.open(q, os.O_RDONLY))):
        err(lambda: op(lp), errno.ENAMETOOLONG, what=f"{what} of a 256-byte name")
    write(os.path.join(d, "short"), b"s")
    err(lambda: os.rename(os.path.join(d, "short"), lp), errno.ENAMETOOLONG)
    # 255 bytes is fine (also as UTF-8: 85 three-byte characters)
    write(os.path.join(d, ok_name), b"255")
    utf = "\u20ac" * 85
    assert len(utf.encode()) == 255
    write(os.path.join(d, utf), b"euro")
    err(lambda: write(os.path.join(d, utf + "x"), b"x"), errno.ENAMETOOLONG)
    assert ls(d) == sorted([ok_name, "short", utf])
    assert_stored(m, f"{uniq}/{ok_name}", b"255", [b"255"])
    assert_stored(m, f"{uniq}/{utf}", b"euro", [b"euro"])
    assert_stored(m, f"{uniq}/short", b"s", [b"s"])
    assert bucket_keys(m, f"{uniq}/") == sorted([f"{uniq}/{ok_name}", f"{uniq}/short", f"{uniq}/{utf}"])
    assert m.sql_value("select count(*) from reception_audit where strpos(object_key, %s) > 0",
                       (long_name,)) == 0


def test_key_over_1024_bytes(mount, d, uniq):
    """Each component <= 255 but the key (path below inbox/) over 1024 bytes: ENAMETOOLONG,
    nothing stored; a key of exactly 1024 bytes works."""
    m = mount
    comps = ["a" * 250, "b" * 250, "c" * 250]
    deep = os.path.join(d, *comps)
    os.makedirs(deep)
    prefix = f"{uniq}/" + "/".join(comps) + "/"
    room = 1024 - len(prefix.encode())
    assert 0 < room < 255
    exact, over = "e" * room, "o" * (room + 1)
    err(lambda: write(os.path.join(deep, over), b"over"), errno.ENAMETOOLONG)
    err(lambda: os.mkdir(os.path.join(deep, over)), errno.ENAMETOOLONG)
    write(os.path.join(deep, exact), b"exactly 1024")
    err(lambda: os.rename(os.path.join(deep, exact), os.path.join(deep, over)), errno.ENAMETOOLONG)
    assert ls(deep) == [exact]
    assert len((prefix + exact).encode()) == 1024
    assert_stored(m, prefix + exact, b"exactly 1024", [b"exactly 1024"])
    assert history(m, prefix + over) == []
    assert bucket_keys(m, f"{uniq}/") == [prefix + exact]


# --------------------------------------------------------------------------- chmod / utimensat

def test_chmod_and_utimens_are_seen_by_stat(mount, d, uniq):
    m = mount
    p = os.path.join(d, "f")
    write(p, b"meta")
    for mode in (0o600, 0o644, 0o400, 0o755):
        os.chmod(p, mode)
        assert stat.S_IMODE(os.stat(p).st_mode) == mode
    os.utime(p, ns=(1_000_000_000_000_000_000, 1_500_000_000_123_456_789))
    st = os.stat(p)
    assert st.st_mtime_ns // 1_000_000_000 == 1_500_000_000
    assert st.st_atime_ns // 1_000_000_000 == 1_000_000_000
    sub = os.path.join(d, "sub")
    os.mkdir(sub)
    os.chmod(sub, 0o700)
    assert stat.S_IMODE(os.stat(sub).st_mode) == 0o700
    assert read(p) == b"meta"
    # metadata changes are not receptions
    assert_stored(m, f"{uniq}/f", b"meta", [b"meta"])


def test_create_mode_and_chmod_survive_writes(mount, d, uniq):
    """open(O_CREAT, mode) and mkdir(mode) give that mode (less the umask), and a mode set
    by chmod stays after the file is written again (pjdfstest open/00, mkdir/00, chmod/12)."""
    m = mount
    old = os.umask(0o022)
    try:
        fd = os.open(os.path.join(d, "f"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o751)
        try:
            assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o751 & ~0o022
            os.write(fd, b"one")
        finally:
            os.close(fd)
        assert stat.S_IMODE(os.stat(os.path.join(d, "f")).st_mode) == 0o751 & ~0o022
        os.mkdir(os.path.join(d, "sub"), 0o710)
        assert stat.S_IMODE(os.stat(os.path.join(d, "sub")).st_mode) == 0o710
    finally:
        os.umask(old)
    p = os.path.join(d, "f")
    os.chmod(p, 0o600)
    with open(p, "ab") as f:
        f.write(b" two")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert_stored(m, f"{uniq}/f", b"one two", [b"one", b"one two"])


def test_modes_follow_a_directory_rename(mount, d, uniq):
    """The modes of a directory and of everything under it (given at mkdir/create, or by
    chmod) follow the directory's rename; a new tree under the old name inherits none."""
    m = mount
    j = lambda *c: os.path.join(d, *c)  # noqa: E731
    old = os.umask(0o022)
    try:
        os.mkdir(j("d1"), 0o750)
        os.mkdir(j("d1", "s"), 0o700)
        fd = os.open(j("d1", "s", "f"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(fd, b"deep")
        finally:
            os.close(fd)
        write(j("d1", "g"), b"g")
        os.chmod(j("d1", "g"), 0o604)
        os.rename(j("d1"), j("d2"))
        for rel, mode in (("d2",), 0o750), (("d2", "s"), 0o700), (("d2", "s", "f"), 0o640), \
                         (("d2", "g"), 0o604):
            got = stat.S_IMODE(os.stat(j(*rel)).st_mode)
            assert got == mode, f"{rel}: {oct(got)}, expected {oct(mode)}"
        os.mkdir(j("d1"))
        os.mkdir(j("d1", "s"))
        write(j("d1", "g"), b"new g")
        for rel, mode in (("d1",), 0o755), (("d1", "s"), 0o755), (("d1", "g"), 0o644):
            got = stat.S_IMODE(os.stat(j(*rel)).st_mode)
            assert got == mode, f"{rel}: {oct(got)}, expected {oct(mode)}"
    finally:
        os.umask(old)
    assert_stored(m, f"{uniq}/d2/s/f", b"deep", [b"deep"])
    assert_stored(m, f"{uniq}/d2/g", b"g", [b"g"])
    # d1/g was received, renamed away (its row removed), then received anew
    assert_stored(m, f"{uniq}/d1/g", b"new g", [b"g", b"new g"])


def test_chmod_chown_utime_change_ctime(mount, d, uniq):
    """A metadata change is a status change: ctime moves forward (pjdfstest chmod/00,
    chown/00); the content and its rows do not change."""
    m = mount
    p = os.path.join(d, "f")
    write(p, b"ctime")
    for what, change in (("chmod", lambda: os.chmod(p, 0o640)),
                         ("chown", lambda: os.chown(p, 1234, 1234)),
                         ("utime", lambda: os.utime(p, (1_600_000_000, 1_600_000_000)))):
        before = os.stat(p).st_ctime_ns
        time.sleep(1.1)  # let the clock move past the file's ctime (second granularity)
        change()
        after = os.stat(p).st_ctime_ns
        assert after > before, f"{what}: ctime {before} -> {after}"
    assert read(p) == b"ctime"
    assert_stored(m, f"{uniq}/f", b"ctime", [b"ctime"])


def test_new_directory_has_its_creation_time(fresh_mount, uniq):
    """pjdfstest mkdir/00: a new directory's mtime and ctime are when it was made (they were
    the mount's start), kept in the database across a remount and in its marker's metadata."""
    m = fresh_mount
    started = os.stat(m.inbox).st_mtime  # inbox/ shows the mount's start
    for _ in range(40):  # bounded: until the clock is past that second
        if time.time() >= started + 1.1:
            break
        time.sleep(0.1)
    t0 = int(time.time())
    p = m.path("inbox", uniq)
    os.mkdir(p)
    st = os.stat(p)
    assert int(st.st_mtime) >= t0 and int(st.st_ctime) >= t0
    md = m.s3.head_object(Bucket=m.reception_bucket, Key=f"{uniq}/")["Metadata"]
    assert md.get("mtime") == str(int(st.st_mtime))
    m.restart()
    assert int(os.stat(p).st_mtime) == int(st.st_mtime)
