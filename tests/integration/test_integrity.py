"""inbox/ integrity (issue 5, SPEC §2): the open-file path. Every reception row tells exactly
what was written; only writers commit; a shell redirect logs one reception; close() returning 0
means stored and logged; no user action kills the mount (open, unlinked files work as POSIX
says). Checked with boto3 and SQL, counting EVERY reception_audit row of a key (removed ones
too), never only through the mount."""
import errno
import os
import stat
import subprocess
import threading
import time

import pytest
from checks import (bucket_keys, expected_history, get_object, history, live_rows, read, rows,
                    write)


def sh(cmd, timeout=120):
    p = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"{cmd!r} exited {p.returncode}: {p.stdout}{p.stderr}"
    return p


@pytest.fixture
def d(mount, uniq):
    p = os.path.join(mount.inbox, uniq)
    os.mkdir(p)
    return p


def no_hidden_names(m, uniq, d):
    """Nothing named .fuse_hidden* was ever listed, uploaded or logged."""
    assert not [k for k in bucket_keys(m, uniq + "/") if ".fuse_hidden" in k]
    assert not [n for n in os.listdir(d) if n.startswith(".fuse_hidden")], os.listdir(d)
    assert m.sql_value("select count(*) from reception_audit where object_key like %s",
                       ("%.fuse_hidden%",)) == 0


def one_row(m, key, data):
    """Exactly one reception row ever for key, live, describing data; the bucket holds data."""
    rs = rows(m, key)
    seen = [(r["size_bytes"], r["removed_at"]) for r in rs]
    assert len(rs) == 1, f"{len(rs)} rows for {key!r}: {seen}"
    assert rs[0]["removed_at"] is None
    assert rs[0]["sha256"] == m.sha256_bytes(data)
    assert rs[0]["size_bytes"] == len(data)
    assert get_object(m, key) == data


# --------------------------------------------------------------------------- 0. open, unlinked

def test_open_unlinked_new_file_works_and_is_never_stored(mount, d, uniq):
    """open, unlink, write, ftruncate, fstat, fchmod, read back, close (the pattern of temp
    files, SQLite, editors): every call works, nothing is uploaded or logged, the daemon lives
    (it died of SIGSEGV at ftruncate; fstat/fchmod answered ESTALE)."""
    m = mount
    p = os.path.join(d, "tmpfile.bin")
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.unlink(p)
        assert not os.path.exists(p)
        assert os.write(fd, b"hello, unlinked world") == 21
        os.ftruncate(fd, 5)
        st = os.fstat(fd)
        assert st.st_size == 5
        assert st.st_nlink == 0
        os.fchmod(fd, 0o600)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        os.ftruncate(fd, 8)
        assert os.pread(fd, 100, 0) == b"hello\0\0\0"
        os.fsync(fd)
    finally:
        os.close(fd)
    assert m.alive(), "the daemon died"
    assert rows(m, f"{uniq}/tmpfile.bin") == []
    assert get_object(m, f"{uniq}/tmpfile.bin") is None
    assert os.listdir(d) == []
    no_hidden_names(m, uniq, d)


def test_open_unlinked_file_in_removed_directory(mount, d, uniq):
    """The directory of an open, unlinked file is removed (POSIX allows it): libfuse then has
    no path for the file and passes NULL to the handlers; data operations on the descriptor
    still work and the daemon lives. (fstat/fchmod there answer ESTALE: the kernel sends no
    file handle with them and libfuse's high-level API cannot name an orphaned node.)"""
    m = mount
    sub = os.path.join(d, "sub")
    os.mkdir(sub)
    fd = os.open(os.path.join(sub, "f"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"0123456789")
        os.unlink(os.path.join(sub, "f"))
        os.rmdir(sub)
        assert not os.path.exists(sub)
        os.ftruncate(fd, 4)
        os.pwrite(fd, b"ab", 4)
        assert os.pread(fd, 100, 0) == b"0123ab"
        os.ftruncate(fd, 8)
        assert os.pread(fd, 100, 0) == b"0123ab\0\0"
        os.fsync(fd)
    finally:
        os.close(fd)
    assert m.alive(), "the daemon died"
    assert bucket_keys(m, uniq + "/") == []
    assert m.sql_value("select count(*) from reception_audit where starts_with(object_key, %s)",
                       (uniq + "/",)) == 0


def test_open_unlinked_stored_file(mount, d, uniq):
    """A received file opened for writing, then unlinked: the object goes, its one row gets
    removed_at and "deleted by"; the open descriptor keeps working and nothing more is stored."""
    m = mount
    key = f"{uniq}/stored.txt"
    p = os.path.join(d, "stored.txt")
    write(p, b"original content")
    one_row(m, key, b"original content")
    fd = os.open(p, os.O_RDWR)
    try:
        os.unlink(p)
        assert get_object(m, key) is None
        os.ftruncate(fd, 8)
        os.pwrite(fd, b"+more", 8)
        st = os.fstat(fd)
        assert (st.st_size, st.st_nlink) == (13, 0)
        os.fchmod(fd, 0o640)
        assert os.pread(fd, 100, 0) == b"original+more"
    finally:
        os.close(fd)
    assert m.alive()
    rs = rows(m, key)
    assert len(rs) == 1, rs
    assert rs[0]["removed_at"] is not None and "deleted by" in rs[0]["removal_reason"]
    assert get_object(m, key) is None
    no_hidden_names(m, uniq, d)


def test_reader_keeps_content_of_unlinked_file(mount, d, uniq):
    """POSIX: a read-only descriptor of a file that is unlinked keeps reading what it opened."""
    m = mount
    key = f"{uniq}/r.bin"
    data = os.urandom(300000)
    write(os.path.join(d, "r.bin"), data)
    m.restart()  # no spool: the reader reads from the store
    with open(os.path.join(d, "r.bin"), "rb", buffering=0) as f:
        head = f.read(1000)
        os.unlink(os.path.join(d, "r.bin"))
        assert get_object(m, key) is None
        rest = f.read()
        assert os.fstat(f.fileno()).st_size == len(data)
    assert head + rest == data
    assert m.alive()
    assert len(rows(m, key)) == 1 and live_rows(m, key) == []
    no_hidden_names(m, uniq, d)


def test_rename_over_open_file(mount, d, uniq):
    """rename(a, b) while b is open: b's reader keeps b's old content; b now holds a's."""
    m = mount
    a, b = os.path.join(d, "a.txt"), os.path.join(d, "b.txt")
    write(a, b"new content for b")
    write(b, b"old b")
    with open(b, "rb", buffering=0) as f:
        os.rename(a, b)
        assert f.read() == b"old b"
        assert os.fstat(f.fileno()).st_nlink == 0
    assert read(b) == b"new content for b"
    assert get_object(m, f"{uniq}/b.txt") == b"new content for b"
    assert len(live_rows(m, f"{uniq}/b.txt")) == 1
    assert live_rows(m, f"{uniq}/b.txt")[0]["sha256"] == m.sha256_bytes(b"new content for b")
    assert m.alive()
    no_hidden_names(m, uniq, d)


def test_reader_follows_rename(mount, d, uniq):
    """A read-only descriptor keeps reading its file after the file (or its directory) is
    renamed: the object moved, the content did not."""
    m = mount
    os.mkdir(os.path.join(d, "sub"))
    data = os.urandom(400000)
    write(os.path.join(d, "sub", "a.bin"), data)
    m.restart()  # no spool: the reader reads from the store
    with open(os.path.join(d, "sub", "a.bin"), "rb", buffering=0) as f:
        first = f.read(1000)
        os.rename(os.path.join(d, "sub", "a.bin"), os.path.join(d, "sub", "b.bin"))
        second = f.read(150000)
        os.rename(os.path.join(d, "sub"), os.path.join(d, "sub2"))
        rest = f.read()
    assert first + second + rest == data
    assert get_object(m, f"{uniq}/sub2/b.bin") == data
    assert m.alive()


def test_hidden_names_are_reserved(mount, d):
    for op in (lambda p: os.open(p, os.O_WRONLY | os.O_CREAT, 0o644), os.mkdir):
        with pytest.raises(OSError) as e:
            op(os.path.join(d, ".fuse_hidden0000000100000001"))
        assert e.value.errno == errno.EINVAL


# --------------------------------------------------------------------------- 1. only writers

def test_reader_close_uploads_nothing(mount, d, uniq):
    """A reader opening and closing a file another process is writing commits nothing: no
    partial object, no row with the reader as received_by; the writer's close logs once."""
    m = mount
    key = f"{uniq}/growing.log"
    p = os.path.join(d, "growing.log")
    w = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(w, b"first half, ")
        with open(p, "rb") as r:  # an indexer, tail, a thumbnailer
            assert r.read() == b"first half, "
        with open(p, "r+b") as r:  # read-write open that only reads
            r.read()
        assert rows(m, key) == [], "a reader's close logged a reception"
        assert get_object(m, key) is None, "a reader's close uploaded the partial file"
        os.write(w, b"second half")
    finally:
        os.close(w)
    one_row(m, key, b"first half, second half")


# --------------------------------------------------------------------------- 2. one reception

def test_two_descriptions_truncate_is_stored_at_its_close(mount, d, uniq):
    """A process holding the file open read-write (no writes) opens it again with O_TRUNC and
    closes that: the close that returns 0 has stored the truncation (the other descriptor is
    not a dup of the closed one, so nothing is left to it)."""
    m = mount
    key = f"{uniq}/two.txt"
    p = os.path.join(d, "two.txt")
    write(p, b"to be truncated")
    fd1 = os.open(p, os.O_RDWR)
    try:
        fd2 = os.open(p, os.O_WRONLY | os.O_TRUNC)
        os.close(fd2)
        assert get_object(m, key) == b""
        assert len(live_rows(m, key)) == 1
        assert live_rows(m, key)[0]["sha256"] == m.sha256_bytes(b"")
    finally:
        os.close(fd1)
    assert len(rows(m, key)) == 2  # the original (overwritten) and the truncation


def test_dup_then_write_logs_one_reception(mount, d, uniq):
    """open(O_CREAT|O_TRUNC), dup2, close the original, write through the dup, close: what a
    shell redirect does, done by hand; also from a thread other than the opener."""
    m = mount
    key = f"{uniq}/dup.txt"
    fd = os.open(os.path.join(d, "dup.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    fd2 = os.dup(fd)
    os.close(fd)
    assert rows(m, key) == [], "the close of the original (a dup remains) logged a reception"
    t = threading.Thread(target=lambda: os.write(fd2, b"through the dup"))
    t.start()
    t.join(60)
    os.close(fd2)
    one_row(m, key, b"through the dup")


@pytest.mark.parametrize("how", ["echo", "printf-append", "dd"])
def test_shell_redirect_logs_one_reception(mount, d, uniq, how, tmp_path):
    m = mount
    p = os.path.join(d, f"{how}.txt")
    key = f"{uniq}/{how}.txt"
    if how == "echo":
        sh(f"bash -c 'echo x > {p}'")
        data = b"x\n"
    elif how == "printf-append":
        sh(f"bash -c 'printf abc >> {p}'")
        data = b"abc"
    else:
        src = tmp_path / "src.bin"
        data = os.urandom(70000)
        src.write_bytes(data)
        sh(f"dd if={src} of={p} bs=16k status=none")
    one_row(m, key, data)


def test_redirects_after_earlier_writers_closed(mount, d, uniq):
    """Each redirect onto a file written and closed before logs one reception (earlier,
    closed writers do not count as other descriptions)."""
    m = mount
    key = f"{uniq}/log.txt"
    p = os.path.join(d, "log.txt")
    write(p, b"line 1\n")
    sh(f"bash -c 'echo line 2 >> {p}'")
    sh(f"bash -c 'echo line 3 >> {p}'")
    with open(p, "r+b") as f:  # a read-write open that writes nothing
        f.read()
    sh(f"bash -c 'echo new > {p}'")
    rs = rows(m, key)
    assert [r["sha256"] for r in rs] == [m.sha256_bytes(x) for x in (
        b"line 1\n", b"line 1\nline 2\n", b"line 1\nline 2\nline 3\n", b"new\n")], \
        [(r["size_bytes"], r["removed_at"]) for r in rs]
    assert get_object(m, key) == b"new\n"


def test_redirect_whose_commands_are_children_logs_once(mount, d, uniq):
    """{ a; b; } > f: each command is a child that inherited the redirected stdout and closes
    it at exit (a flush): only the last close of the description commits (review r1)."""
    m = mount
    p = os.path.join(d, "group.log")
    subprocess.run(["sh", "-c", '{ /bin/echo a; /bin/echo b; } > "$1"', "sh", p],
                   check=True, timeout=60)
    assert history(m, f"{uniq}/group.log") == expected_history([b"a\nb\n"])
    one_row(m, f"{uniq}/group.log", b"a\nb\n")


def test_popen_parent_closes_first_logs_once(mount, d, uniq):
    """Popen(stdout=f), then the parent closes f before the child writes: the parent's close
    is not the last of the description and logs nothing; the child's exit logs the content
    (review r4)."""
    m = mount
    key = f"{uniq}/popen.out"
    with open(os.path.join(d, "popen.out"), "wb") as fh:
        proc = subprocess.Popen(["sh", "-c", "sleep 1; /bin/echo hello"], stdout=fh)
    try:
        assert rows(m, key) == [], "the parent's close logged a reception"
    finally:
        proc.wait(timeout=60)
    assert history(m, key) == expected_history([b"hello\n"])
    one_row(m, key, b"hello\n")


def test_writable_fd_on_another_file_does_not_defer(mount, d, uniq):
    """A writable descriptor on ANOTHER file whose path merely ends in /inbox/<rel> is not a
    dup of the closed one: the close of the created file commits it, so its result is the
    commit's (review r2). With the store down the close fails; before, it returned 0 and
    left the commit to release, whose failure nobody sees."""
    m = mount
    key = f"{uniq}/f.txt"
    os.makedirs(os.path.join(d, "x", "inbox", uniq))
    decoy = os.open(os.path.join(d, "x", "inbox", uniq, "f.txt"),
                    os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        fd = os.open(os.path.join(d, "f.txt"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        m.stop_s3()
        try:
            with pytest.raises(OSError):
                os.close(fd)
        finally:
            m.start_s3()
        assert rows(m, key) == [] and get_object(m, key) is None
        fd = os.open(os.path.join(d, "f.txt"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.close(fd)  # returned 0: stored and logged now
        one_row(m, key, b"")
    finally:
        os.close(decoy)


def test_fsync_through_a_descriptor_that_did_not_write(mount, d, uniq):
    """fsync(2) is a durability request for the FILE: fd2 (O_RDWR, never written) fsyncs
    while fd1 wrote: the data is stored and logged when fsync returns 0 (review r6)."""
    m = mount
    key = f"{uniq}/journal.db"
    p = os.path.join(d, "journal.db")
    fd1 = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        fd2 = os.open(p, os.O_RDWR)
        try:
            os.write(fd1, b"journal")
            os.fsync(fd2)
            one_row(m, key, b"journal")
            import pwd
            assert pwd.getpwuid(os.getuid()).pw_name in (rows(m, key)[0]["received_by"] or "")
        finally:
            os.close(fd2)
    finally:
        os.close(fd1)
    one_row(m, key, b"journal")


def test_truncate_existing_and_touch_log_one_reception(mount, d, uniq):
    m = mount
    p = os.path.join(d, "existing.txt")
    write(p, b"some content")
    sh(f"bash -c ': > {p}'")
    rs = rows(m, f"{uniq}/existing.txt")
    assert len(rs) == 2, rs  # the original (now overwritten) and the empty one
    assert len(live_rows(m, f"{uniq}/existing.txt")) == 1
    assert live_rows(m, f"{uniq}/existing.txt")[0]["sha256"] == m.sha256_bytes(b"")
    assert get_object(m, f"{uniq}/existing.txt") == b""
    t = os.path.join(d, "touched")
    sh(f"touch {t}")
    one_row(m, f"{uniq}/touched", b"")
    sh(f"cp /dev/null {os.path.join(d, 'empty-copy')}")
    one_row(m, f"{uniq}/empty-copy", b"")


@pytest.mark.custodyfs_config({"fs": {"part_size": "5M"}})
def test_large_dd_logs_one_reception(fresh_mount, tmp_path):
    """dd of= a file over two part sizes: one row, the right content."""
    m = fresh_mount
    src = tmp_path / "big.bin"
    data = os.urandom(12 * 1024 * 1024 + 12345)
    src.write_bytes(data)
    sh(f"dd if={src} of={os.path.join(m.inbox, 'big.bin')} bs=1M status=none")
    one_row(m, "big.bin", data)


@pytest.mark.parametrize("how", ["redirect", "dd"])
def test_large_redirect_and_dd_stream_their_parts(stack, mount_factory, tmp_path, how):
    """A large file written by a shell redirect (open, dup2, close the original, write) or by
    dd is streamed while it is written (issue 5 item 2: the first close must not turn
    streaming off for the rest of the file's life): its one multipart upload is created
    before the hashes are known (no x-amz-meta-sha256 on the CreateMultipartUpload, which an
    upload again from the spool carries), each part is sent once, and one row describes it."""
    from faultproxy import FaultProxy
    px = FaultProxy(stack.endpoint)
    creates, parts = [], []
    data = os.urandom((17 << 20) + 4321)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url},
                                  "fs": {"part_size": str(5 << 20)}})
        os.mkdir(os.path.join(m.inbox, "big"))
        key = f"big/{how}.bin"
        p = os.path.join(m.inbox, key)

        def watch(method, path, headers):
            q = path.partition("?")
            if q[0].endswith("/" + key):
                if method == "POST" and q[2].startswith("uploads"):
                    creates.append({k.lower() for k in headers.keys()})
                elif method == "PUT" and "partNumber" in q[2]:
                    parts.append(q[2])
            return None
        px.rule = watch
        if how == "redirect":
            sh(f"bash -c 'cat {src} > {p}'")
        else:
            sh(f"dd if={src} of={p} bs=1M status=none")
    finally:
        px.rule = None
        px.close()
    assert len(creates) == 1, creates
    assert "x-amz-meta-sha256" not in creates[0], "uploaded again from the spool, not streamed"
    assert len(parts) == 4, parts  # 5+5+5+2 MiB, each sent once
    one_row(m, key, data)


# --------------------------------------------------------------------------- rename over open

def _stored_pair(m, d, uniq):
    """a.txt put by another client (listed, so the mount knows it), b.txt written through the
    mount; returns (a path, b path, b key)."""
    m.s3.put_object(Bucket=m.reception_bucket, Key=f"{uniq}/a.txt", Body=b"source")
    write(os.path.join(d, "b.txt"), b"precious")
    os.listdir(d)
    assert os.stat(os.path.join(d, "a.txt")).st_size == 6
    # a.txt is logged (hashes computed from its bytes) once its grace has passed: the rename
    # row of b.txt then carries those hashes
    m.wait_until(lambda: live_rows(m, f"{uniq}/a.txt") or (os.listdir(d) and None),
                 timeout=30, interval=0.3, what="a.txt logged as another route's upload")
    return os.path.join(d, "a.txt"), os.path.join(d, "b.txt"), f"{uniq}/b.txt"


def test_failed_rename_over_open_reader_target_keeps_it(mount, d, uniq):
    """rename(a, b) with b open read-only: libfuse hides b first (the store's unlink of b,
    before); then the rename fails (a was deleted by another client meanwhile). POSIX: the
    rename did not happen, so b's object and its one live row are untouched (review r5)."""
    m = mount
    a, b, key = _stored_pair(m, d, uniq)
    with open(b, "rb", buffering=0) as r:
        m.s3.delete_object(Bucket=m.reception_bucket, Key=f"{uniq}/a.txt")
        with pytest.raises(OSError):
            os.rename(a, b)
        assert get_object(m, key) == b"precious"
        assert history(m, key) == expected_history([b"precious"])
        assert r.read() == b"precious"
    m.wait_until(lambda: os.path.exists(b), timeout=10, what="b listed again")
    assert read(b) == b"precious"
    assert history(m, key) == expected_history([b"precious"])
    no_hidden_names(m, uniq, d)


def test_failed_rename_over_open_writer_target_keeps_it(mount, d, uniq):
    """The same with b open for writing: the failed rename leaves b as it was, and the
    writer's later close stores and logs b with what it wrote (before, b was deleted at the
    hide and the writer's close stored nothing)."""
    m = mount
    a, b, key = _stored_pair(m, d, uniq)
    with open(b, "ab", buffering=0) as w:
        w.write(b" and more")
        m.s3.delete_object(Bucket=m.reception_bucket, Key=f"{uniq}/a.txt")
        with pytest.raises(OSError):
            os.rename(a, b)
        assert get_object(m, key) == b"precious"
        assert history(m, key) == expected_history([b"precious"])
        w.write(b", still")
    assert get_object(m, key) == b"precious and more, still"
    assert history(m, key) == expected_history([b"precious", b"precious and more, still"])
    no_hidden_names(m, uniq, d)


def test_rename_over_open_writer_target(mount, d, uniq):
    """rename(a, b) with b open for writing succeeds: b holds a's content, b's old row is
    superseded, and the writer's close (of the replaced file) uploads and logs nothing."""
    m = mount
    a, b, key = _stored_pair(m, d, uniq)
    with open(b, "ab", buffering=0) as w:
        w.write(b" and more")
        os.rename(a, b)
        w.write(b", lost")
    assert get_object(m, key) == b"source"
    assert history(m, key) == expected_history([b"precious", b"source"])
    assert rows(m, f"{uniq}/a.txt") == [] or live_rows(m, f"{uniq}/a.txt") == []
    assert get_object(m, f"{uniq}/a.txt") is None
    no_hidden_names(m, uniq, d)


# --------------------------------------------------------------------------- create over arrivals

def test_o_excl_over_an_object_that_arrived_after_the_listing(mount, d, uniq):
    """An object arrives by another route after a listing said the name was free: O_EXCL on
    that name fails with EEXIST (the store is asked, not the cache), and the object and its
    rows are as the other client left them (review r8)."""
    m = mount
    key = f"{uniq}/x.lock"
    p = os.path.join(d, "x.lock")
    os.listdir(d)
    assert not os.path.exists(p)
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=b"theirs")
    with pytest.raises(FileExistsError):
        os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    assert get_object(m, key) == b"theirs"
    assert [r for r in rows(m, key) if r["origin"] == "mount"] == []


def test_create_over_an_object_that_arrived_is_an_overwrite(mount, d, uniq):
    """Without O_EXCL the arrived object is overwritten, never taken as created: with the
    database down the close fails and the object stays as it was (a "created" object is
    deleted again when its row fails, and before that the upload had replaced it)."""
    m = mount
    key = f"{uniq}/y.txt"
    p = os.path.join(d, "y.txt")
    os.listdir(d)
    assert not os.path.exists(p)
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=b"theirs")
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, b"mine")
    m.stop_pg("fast")
    try:
        with pytest.raises(OSError):
            os.close(fd)
    finally:
        m.start_pg()
    assert get_object(m, key) == b"theirs"
    assert [r for r in rows(m, key) if r["origin"] == "mount"] == []


# --------------------------------------------------------------------------- 3. durable at close

def test_failed_temp_to_final_rename_keeps_the_source(mount, d, uniq):
    """x.part -> x.bin with the store down fails and leaves x.part as it was (rename happens or
    not); x.bin never exists as a local-only file whose close would return 0 with nothing
    stored. With the store back, the rename uploads and logs it."""
    m = mount
    part, final = os.path.join(d, "x.part"), os.path.join(d, "x.bin")
    write(part, b"downloaded ")
    m.stop_s3()
    try:
        with pytest.raises(OSError):
            os.rename(part, final)
        assert read(part) == b"downloaded "  # a local file: no store needed
        # appending to the (still temp) file is local and fine
        with open(part, "ab") as f:
            f.write(b"data")
    finally:
        m.start_s3()
    names = os.listdir(d)
    assert names == ["x.part"], names
    assert rows(m, f"{uniq}/x.bin") == []
    os.rename(part, final)
    one_row(m, f"{uniq}/x.bin", b"downloaded data")
    assert rows(m, f"{uniq}/x.part") == []
    assert get_object(m, f"{uniq}/x.part") is None


def test_temp_renamed_while_written_then_failed_close_is_loud(stack, mount_factory, uniq):
    """x.part open for writing is renamed to x.bin: nothing is stored then (its writer's close
    stores it, once). With every upload refused at that close, close reports the failure and
    nothing, no row and no object, claims x.bin or x.part.
    The store is failed through the in-process proxy, not by stopping it: no process may be
    forked while the descriptor is open (a child's copy, closed at its exec, is a close of
    this file too, which commits it)."""
    from faultproxy import INTERNAL, FaultProxy
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url}})
        d = os.path.join(m.inbox, uniq)
        os.mkdir(d)
        part, final = os.path.join(d, "x.part"), os.path.join(d, "x.bin")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"first")
            os.rename(part, final)
            assert rows(m, f"{uniq}/x.bin") == [] and bucket_keys(m, f"{uniq}/") == []
            os.write(fd, b" second")
            px.rule = lambda meth, path, h: (("status", 500, INTERNAL)
                                             if meth in ("PUT", "POST") else None)
        except BaseException:
            os.close(fd)
            raise
        with pytest.raises(OSError):
            os.close(fd)  # the descriptor is released even so
        px.rule = None
        # gone once its release (sent by the kernel in the background) has arrived
        m.wait_until(lambda: os.listdir(d) == [], what="x.bin unlisted")
        assert rows(m, f"{uniq}/x.bin") == []
        assert rows(m, f"{uniq}/x.part") == []
        assert bucket_keys(m, f"{uniq}/") == []
        assert m.alive()
    finally:
        px.rule = None
        px.release.set()
        _later.append(px)


def test_open_stored_file_renamed_to_temp_leaves_the_store(mount, d, uniq):
    """A received file, open, renamed to a temp name: temp names stay local (never uploaded),
    its row is marked removed; renamed back to a final name it is logged again."""
    m = mount
    p, t, f2 = os.path.join(d, "doc.txt"), os.path.join(d, "doc.txt.part"), \
        os.path.join(d, "doc2.txt")
    write(p, b"v1")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        os.rename(p, t)
        os.write(fd, b"+v2")
    finally:
        os.close(fd)
    assert get_object(m, f"{uniq}/doc.txt.part") is None
    assert rows(m, f"{uniq}/doc.txt.part") == []
    assert get_object(m, f"{uniq}/doc.txt") is None
    assert live_rows(m, f"{uniq}/doc.txt") == []
    assert read(t) == b"v1+v2"
    os.rename(t, f2)
    one_row(m, f"{uniq}/doc2.txt", b"v1+v2")


# --------------------------------------------------------------------------- 8. failed download

def test_failed_download_fails_every_sharing_handle(stack, mount_factory, uniq):
    """The first opener's download of an existing object fails while a second writer opens the
    same file: the second must not get the empty spool (and later upload its bytes over the
    original). The original object and its one row stay."""
    from faultproxy import INTERNAL, FaultProxy
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url}})
        key = "victim.txt"
        p = os.path.join(m.inbox, key)
        original = b"precious original content " * 100
        write(p, original)
        one_row(m, key, original)
        m.restart()  # cold: the next writer downloads the object

        def is_get(meth, path, h):
            return meth == "GET" and path.split("?")[0].endswith("/" + key)
        px.rule = lambda meth, path, h: ("hang",) if is_get(meth, path, h) else None
        res = {}

        def opener(name):
            try:
                fd = os.open(p, os.O_RDWR)
            except OSError as e:
                res[name] = e.errno
                return
            try:
                os.pwrite(fd, b"ZZ", 0)
                os.close(fd)
                res[name] = "written"
            except OSError as e:
                res[name] = e.errno
                try:
                    os.close(fd)
                except OSError:
                    pass

        a = threading.Thread(target=opener, args=("a",))
        a.start()
        deadline = time.monotonic() + 30
        while not any(is_get(meth, path, None) for meth, path, _ in list(px.log)):
            assert time.monotonic() < deadline, "the first open never downloaded"
            time.sleep(0.05)
        b = threading.Thread(target=opener, args=("b",))
        b.start()
        time.sleep(1.0)  # b's open reaches the daemon while a's download hangs
        px.rule = lambda meth, path, h: (("status", 500, INTERNAL) if is_get(meth, path, h)
                                         else None)
        px.release.set()
        a.join(150)
        b.join(150)
        assert not a.is_alive() and not b.is_alive()
        assert res.get("a") != "written", res
        assert res.get("b") != "written", f"second writer wrote over a failed download: {res}"
        px.rule = None
        assert get_object(m, key) == original
        one_row(m, key, original)
        assert m.alive()
    finally:
        px.rule = None
        px.release.set()
        _later.append(px)


_later = []


@pytest.fixture(autouse=True)
def _close_proxies():
    yield
    while _later:
        _later.pop().close()


# --------------------------------------------------------------------------- 10. read handles

def _mem_of(pid):
    """(accessible KiB, threads, mappings) of a process: the address space it can touch, i.e.
    every mapping but PROT_NONE ones (glibc reserves 64 MiB per malloc arena and a guard page
    per thread stack as PROT_NONE: a busy machine that makes libfuse start workers grows
    VmSize by ~72 MiB per thread without any handle costing more)."""
    kib, maps = 0, {}
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if fields[1].startswith("---"):
                continue
            kib += (hi - lo) // 1024
            maps[fields[0]] = (hi - lo) // 1024
    return kib, len(os.listdir(f"/proc/{pid}/task")), maps


def _stack_kib(pid):
    """A new thread's default stack: glibc takes RLIMIT_STACK (8 MiB unless set otherwise)."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max stack size"):
                soft = line.split()[3]
                return 8192 if soft == "unlimited" else int(soft) // 1024
    raise AssertionError("no stack limit")


def test_read_handle_of_small_file_is_small(mount, d, uniq):
    """200 open read handles of a 4 KiB file: their read-ahead buffers must not cost 8 MiB
    each (1.6 GiB of address space before the fix). Measured as the address space the daemon
    can touch, less one stack per thread it started meanwhile (libfuse starts workers when
    requests queue on a loaded machine: CI 3 at stop 36 saw VmSize grow by 434 MiB that way)."""
    m = mount
    p = os.path.join(d, "small.bin")
    data = os.urandom(4096)
    write(p, data)
    m.restart()
    with open(p, "rb") as f:  # warm up: threads, connections
        assert f.read() == data
    kib0, threads0, maps0 = _mem_of(m.pid)
    fds = []
    try:
        for _ in range(200):
            fd = os.open(p, os.O_RDONLY)
            fds.append(fd)
            assert os.pread(fd, 4096, 0) == data
        kib1, threads1, maps1 = _mem_of(m.pid)
    finally:
        for fd in fds:
            os.close(fd)
    new_threads = max(0, threads1 - threads0)
    grown = kib1 - kib0 - new_threads * _stack_kib(m.pid)
    big = sorted((v, k) for k, v in maps1.items() if k not in maps0 or maps0[k] != v)[-8:]
    assert grown < 400 * 1024, (
        f"the daemon grew by {grown // 1024} MiB for 200 handles of 4 KiB "
        f"({new_threads} new threads; largest new or changed mappings in KiB: {big})")


def test_failed_spool_write_never_leaves_a_row_hashing_other_bytes(mount_factory, uniq):
    """A write whose spool pwrite fails after some bytes landed (ENOSPC on a small spool) is a
    short write the upload knows of: a row left by close describes exactly the object stored
    (before: the bytes that landed were not reported, the last part was read from the spool
    with them while the whole-file hashes were of the old bytes, and close returned 0 with a
    row hashing other bytes; review-upload C1). Checked with boto3 and every row of the keys."""
    import hashlib
    import tempfile
    spool = tempfile.mkdtemp(prefix="tmpfs-spool-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", spool], check=True)
    fds = []
    try:
        m = mount_factory(config={"fs": {"spool_dir": spool, "part_size": "5M"}})
        f, g = m.path("inbox", f"{uniq}-f.bin"), m.path("inbox", f"{uniq}-g.bin")
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        fds.append(fd)
        size = 12288 + (6 << 20)
        for off in range(0, size, 1 << 20):
            os.write(fd, b"a" * min(1 << 20, size - off))
        time.sleep(1)  # the hashers have read every byte of f by now
        # another file fills the spool
        gd = os.open(g, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        fds.append(gd)
        for _ in range(64):
            try:
                os.write(gd, b"g" * (1 << 20))
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
        else:
            pytest.fail("the spool never filled")
        # rewrites f's last 4 KiB in place, then runs out of space: a short write or ENOSPC
        try:
            os.pwrite(fd, b"Z" * 65536, size - 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        for x in list(fds):
            fds.remove(x)
            try:
                os.close(x)
            except OSError:
                pass
        for key in (f"{uniq}-f.bin", f"{uniq}-g.bin"):
            rs = rows(m, key)
            assert len(rs) <= 1, rs
            if rs:
                body = m.s3.get_object(Bucket=m.reception_bucket, Key=key)["Body"].read()
                assert rs[0]["removed_at"] is None
                assert rs[0]["size_bytes"] == len(body)
                assert rs[0]["sha256"] == hashlib.sha256(body).hexdigest(), key
                assert rs[0]["xxh128"] == m.xxh128_bytes(body)
        m.unmount()
    finally:
        for x in fds:
            os.close(x)
        subprocess.run(["umount", "-l", spool])
        os.rmdir(spool)


# --------------------------------------------------------------------------- 3. writes after close

def test_writes_through_a_mapping_after_close_are_stored(mount, d, uniq):
    """A shared mapping outlives its descriptor: bytes written through it after close(2) reach
    the file when it is unmapped (the kernel writes the pages back, then releases the file).
    They must be stored and logged like any other change; before, the release committed only
    a deferred close, so they stayed in the spool and were gone with it (the store kept the
    content of the close, with no error anywhere)."""
    import ctypes
    import mmap
    m = mount
    key = f"{uniq}/mapped.bin"
    p = os.path.join(d, "mapped.bin")
    # libc's mmap/munmap (Python's mmap module keeps a dup of the descriptor)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"\0" * 8192)
    addr = libc.mmap(None, 8192, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    os.close(fd)  # the last descriptor: stores 8192 zeros
    assert get_object(m, key) == b"\0" * 8192
    ctypes.memmove(addr + 100, b"hello", 5)
    assert libc.munmap(addr, 8192) == 0  # written back, then released
    want = b"\0" * 100 + b"hello" + b"\0" * (8192 - 105)
    m.wait_until(lambda: get_object(m, key) == want, timeout=30, interval=0.3,
                 what="the bytes written through the mapping stored")
    m.wait_until(lambda: len(rows(m, key)) == 2, timeout=30, interval=0.3, what="two rows")
    rs = rows(m, key)
    assert rs[0]["removed_at"] is not None and rs[1]["removed_at"] is None, rs
    assert rs[1]["sha256"] == m.sha256_bytes(want)
    assert read(p) == want
