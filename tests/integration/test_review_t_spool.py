"""Hostile review T, T2 (doc/reviews/review-T.md): when a file open for reading leaves the store
through this mount (unlink, rename over it, rename to a temp name), its readers keep the
content they opened from a spool. That spool is filled from the store: it must hold the object
each reader was opened on (and checked for), never another mount's newer replacement, which
the reader's user may not read. Two allow_other mounts on one database and bucket; users A and
B as in test_perms.py."""
import json
import os
import subprocess

import pytest

from test_perms import A, B, FOREIGN, as_user, open_to_others, rd, two_mounts
from test_rename_attrs import mode_owner
from test_review_g_open import Holder

OLD, NEW = "old public".ljust(64), "NEW SECRET".ljust(64)


def _leave(how, path, other):
    """The operation, run as A on mount b, that takes y.txt (path) out of the store."""
    if how == "unlink":
        return [f"os.unlink({path!r})"]
    if how == "rename_over":
        return [f"open({other!r}, 'w').write('z')", f"os.rename({other!r}, {path!r})"]
    assert how == "rename_to_temp"
    return [f"os.rename({path!r}, {path + '.tmp'!r})"]


def _setup(mount_factory, uniq):
    a, b = two_mounts(mount_factory)
    os.mkdir(a.path("inbox", uniq))
    os.chmod(a.path("inbox", uniq), 0o1777)
    py_a, py_b = a.path("inbox", f"{uniq}/y.txt"), b.path("inbox", f"{uniq}/y.txt")
    assert as_user(A, f"open({py_a!r}, 'w').write({OLD!r})", f"os.chmod({py_a!r}, 0o644)") == \
        ["ok", "ok"]
    b.wait_until(lambda: as_user(B, rd(py_b)) == [OLD], timeout=30, what="B reads y on b")
    return a, b, py_a, py_b


@pytest.mark.parametrize("how", ["unlink", "rename_over", "rename_to_temp"])
def test_reader_never_gets_another_mounts_replacement_in_its_spool(mount_factory, uniq, how):
    """T2: B holds y.txt open on mount b (opened on A's public object, not read yet). A
    replaces it from mount a with a 0600 secret, then takes it out of the store on mount b.
    B's descriptor must not be served the secret: it reads the old content or fails."""
    a, b, py_a, py_b = _setup(mount_factory, uniq)
    px_a = a.path("inbox", f"{uniq}/x.tmp")
    h = Holder(B, py_b)
    try:
        assert as_user(A, f"open({px_a!r}, 'w').write({NEW!r})", f"os.chmod({px_a!r}, 0o600)",
                       f"os.rename({px_a!r}, {py_a!r})", umask=0o077) == ["ok", "ok", "ok"]
        assert mode_owner(py_a) == (0o600, A, A)
        if how == "rename_over":
            # mount b shows the new object (its owner, hence the sticky check, is A's); the
            # other two go at once, while b may still show the old object's attributes (the
            # temp name must take the secret's all the same)
            b.wait_until(lambda: mode_owner(py_b) == (0o600, A, A), timeout=30,
                         what="b shows the secret's attributes")
        ops = _leave(how, py_b, b.path("inbox", f"{uniq}/z.txt"))
        assert as_user(A, *ops) == ["ok"] * len(ops)
        got = [h.read() for _ in range(3)]
        assert NEW not in got, got
        assert all(r in (OLD, "ESTALE") for r in got), got
    finally:
        h.close()
    if how == "rename_to_temp":
        # the temp file is the object A renamed (the secret), kept for A alone
        tmp = py_b + ".tmp"
        assert as_user(A, rd(tmp)) == [NEW]
        assert as_user(B, rd(tmp)) == ["EACCES"]


@pytest.mark.parametrize("how", ["unlink", "rename_over", "rename_to_temp"])
def test_reader_keeps_its_content_when_its_object_leaves(mount_factory, uniq, how):
    """The case T2's fix must not break: nothing replaced the object, so B's descriptor on
    mount b reads the content it opened after A takes the file out of the store there, and
    again after a second read (POSIX: an open file outlives its name)."""
    a, b, py_a, py_b = _setup(mount_factory, uniq)
    h = Holder(B, py_b)
    try:
        ops = _leave(how, py_b, b.path("inbox", f"{uniq}/z.txt"))
        assert as_user(A, *ops) == ["ok"] * len(ops)
        assert [h.read() for _ in range(2)] == [OLD, OLD]
    finally:
        h.close()
    assert as_user(B, f"str(os.path.exists({py_b!r}))") == [str(how == "rename_over")]


def test_reader_keeps_content_through_this_mounts_rename_and_unlink(mount_factory, uniq):
    """A reader of y.txt on mount b, read once; A renames y.txt to w.txt on b (a server-side
    copy: the reader follows it), then unlinks w.txt on b. The reader still reads the content
    it opened: the copy is its object, not another one (a positive control of the fix)."""
    a, b, py_a, py_b = _setup(mount_factory, uniq)
    pw_b = b.path("inbox", f"{uniq}/w.txt")
    h = Holder(B, py_b)
    try:
        assert h.read() == OLD
        assert as_user(A, f"os.rename({py_b!r}, {pw_b!r})") == ["ok"]
        assert as_user(A, f"os.unlink({pw_b!r})") == ["ok"]
        assert [h.read() for _ in range(2)] == [OLD, OLD]
    finally:
        h.close()


class LoopReader:
    """A process of user uid that opens path O_RDONLY, then preads it from offset 0 in a loop
    (posix_fadvise DONTNEED first, so each read reaches the daemon) until its stdin closes;
    `close()` returns the set of answers (text or errno names)."""

    def __init__(self, uid, path):
        self.p = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
             "/usr/bin/python3", "-c",
             "import errno, json, os, sys, threading\n"
             f"fd = os.open({path!r}, os.O_RDONLY)\n"
             "seen, done = set(), threading.Event()\n"
             "threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True)"
             ".start()\n"
             "print('open', flush=True)\n"
             "n = 0\n"
             "while not done.is_set() and n < 20000:\n"
             "    n += 1\n"
             "    try:\n"
             "        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)\n"
             "        seen.add(os.pread(fd, 1 << 16, 0).decode())\n"
             "    except OSError as e:\n"
             "        seen.add(errno.errorcode[e.errno])\n"
             "print(json.dumps(sorted(seen)), flush=True)\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().strip() == "open"

    def close(self):
        self.p.stdin.close()
        out = json.loads(self.p.stdout.readline())
        assert self.p.wait(timeout=60) == 0
        return set(out)


def test_readers_reading_during_the_unlink_never_get_the_replacement(mount_factory, uniq):
    """T2's fix decides stale and spool under one lock: readers that read in a loop while A's
    unlink on mount b runs (their GET fails as the object goes, then they turn to the spool)
    never get another mount's replacement. Bounded: 4 rounds of 3 readers."""
    a, b = two_mounts(mount_factory)
    os.mkdir(a.path("inbox", uniq))
    os.chmod(a.path("inbox", uniq), 0o1777)
    for i in range(4):
        py_a, py_b = a.path("inbox", f"{uniq}/y{i}.txt"), b.path("inbox", f"{uniq}/y{i}.txt")
        px_a = a.path("inbox", f"{uniq}/x{i}.tmp")
        assert as_user(A, f"open({py_a!r}, 'w').write({OLD!r})",
                       f"os.chmod({py_a!r}, 0o644)") == ["ok", "ok"]
        b.wait_until(lambda: as_user(B, rd(py_b)) == [OLD], timeout=30, what="b sees y")
        readers = [LoopReader(B, py_b) for _ in range(3)]
        try:
            assert as_user(A, f"open({px_a!r}, 'w').write({NEW!r})",
                           f"os.chmod({px_a!r}, 0o600)", f"os.rename({px_a!r}, {py_a!r})",
                           umask=0o077) == ["ok", "ok", "ok"]
            b.wait_until(lambda: mode_owner(py_b) == (0o600, A, A), timeout=30,
                         what="b shows the secret's attributes")
            assert as_user(A, f"os.unlink({py_b!r})") == ["ok"]
        finally:
            seen = set().union(*(r.close() for r in readers))
        assert NEW not in seen, seen
        assert seen <= {OLD, "ESTALE", "EACCES", "ENOENT", "EIO"}, seen


def test_reader_never_gets_the_replacement_through_an_open_file_here(mount_factory, uniq):
    """T2 through an open file (review of the fix, H2): B holds y.txt open on mount b; A
    replaces it from mount a with a 0600 secret, then opens it O_RDWR on mount b (the open file
    is loaded with the secret) and unlinks it there. B's descriptor, opened on the old object,
    must not be given the open file's content."""
    a, b, py_a, py_b = _setup(mount_factory, uniq)
    px_a = a.path("inbox", f"{uniq}/x.tmp")
    h = Holder(B, py_b)
    try:
        assert as_user(A, f"open({px_a!r}, 'w').write({NEW!r})", f"os.chmod({px_a!r}, 0o600)",
                       f"os.rename({px_a!r}, {py_a!r})", umask=0o077) == ["ok", "ok", "ok"]
        b.wait_until(lambda: mode_owner(py_b) == (0o600, A, A), timeout=30,
                     what="b shows the secret's attributes")
        # A's writable descriptor on b, opened now that b shows the secret: the open file
        # holds it; the name is unlinked while that descriptor is open. (Not read through it:
        # its pages would be in the name's page cache, which B's descriptor shares: G3, open.)
        w2 = subprocess.run(
            ["setpriv", f"--reuid={A}", f"--regid={A}", "--clear-groups", "/usr/bin/python3",
             "-c", f"import os\nfd = os.open({py_b!r}, os.O_RDWR)\n"
             f"os.unlink({py_b!r})\nprint('ok')"],
            capture_output=True, text=True, timeout=60)
        assert w2.returncode == 0, w2.stderr
        got = [h.read() for _ in range(3)]
        assert NEW not in got, (got, w2.stdout)
        assert all(r in (OLD, "ESTALE") for r in got), got
    finally:
        h.close()


@pytest.mark.both_backends  # depends on what the store does (copies, parts, ETags)
@pytest.mark.parametrize("what", ["file", "directory"])
def test_reader_of_a_multipart_file_keeps_content_through_rename_and_unlink(mount_factory, uniq,
                                                                           what):
    """Review of the T2 fix, M1: a file uploaded in parts has an ETag ("...-2") its server-side
    copy may not share (Swift's does not; s3rver's copy keeps it). B holds it open (not read); A renames it (or its directory) on the same
    mount, then unlinks it there. B's descriptor was opened on that content and must still read
    it: the copy is its object (readers follow the rename's ETags), not another mount's."""
    m = mount_factory(config=FOREIGN, opts="allow_other")
    open_to_others(m)
    d = m.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o1777)
    os.mkdir(os.path.join(d, "sub"))
    os.chmod(os.path.join(d, "sub"), 0o1777)
    big = os.path.join(d, "sub", "big.bin")
    data = os.urandom(17 << 19).hex().encode()  # 17 MiB > part_size, text (Holder decodes)
    with open(big, "wb") as f:
        f.write(data)
    os.chmod(big, 0o644)
    h = Holder(B, big)
    try:
        if what == "file":
            new = os.path.join(d, "sub", "moved.bin")
            assert as_user(0, f"os.rename({big!r}, {new!r})") == ["ok"]
        else:
            assert as_user(0, f"os.rename({os.path.join(d, 'sub')!r}, "
                              f"{os.path.join(d, 'sub2')!r})") == ["ok"]
            new = os.path.join(d, "sub2", "big.bin")
        assert as_user(0, f"os.unlink({new!r})") == ["ok"]
        got = h.read()
        assert got == data[:1 << 16].decode(), got[:20]
    finally:
        h.close()


def test_stale_reader_cannot_reopen_the_replacement_through_its_descriptor(mount_factory, uniq):
    """Review of the T2 fix (H1, M3): B's descriptor on mount b is stale once A unlinks y.txt
    there after another mount's 0600 replacement. Reopening it through /proc/self/fd (the
    hidden name it now has) must not read the replacement either, and fstat shows nothing of
    the replacement (its size: the descriptor's, or 0)."""
    a, b, py_a, py_b = _setup(mount_factory, uniq)
    px_a = a.path("inbox", f"{uniq}/x.tmp")
    big = "NEW SECRET, LONGER".ljust(100)
    p = subprocess.Popen(
        ["setpriv", f"--reuid={B}", f"--regid={B}", "--clear-groups", "/usr/bin/python3", "-c",
         "import errno, json, os, sys\n"
         f"fd = os.open({py_b!r}, os.O_RDONLY)\n"
         "print('open', flush=True)\n"
         "sys.stdin.readline()\n"
         "out = []\n"
         "def t(f):\n"
         "    try:\n"
         "        out.append(f())\n"
         "    except OSError as e:\n"
         "        out.append(errno.errorcode[e.errno])\n"
         "t(lambda: os.pread(fd, 256, 0).decode())\n"
         "t(lambda: os.fstat(fd).st_size)\n"
         "t(lambda: os.pread(os.open(f'/proc/self/fd/{fd}', os.O_RDONLY), 256, 0).decode())\n"
         "print(json.dumps(out), flush=True)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "open"
        assert as_user(A, f"open({px_a!r}, 'w').write({big!r})", f"os.chmod({px_a!r}, 0o600)",
                       f"os.rename({px_a!r}, {py_a!r})", umask=0o077) == ["ok", "ok", "ok"]
        assert as_user(A, f"os.unlink({py_b!r})") == ["ok"]
        p.stdin.write("go\n")
        p.stdin.flush()
        got = json.loads(p.stdout.readline())
    finally:
        p.stdin.close()
        p.wait(timeout=60)
    assert got[0] in (OLD, "ESTALE"), got
    assert got[1] in (len(OLD), 0), got  # never the replacement's size
    assert got[2] in (OLD, "", "ESTALE", "EACCES"), got


def test_reader_never_gets_a_truncating_writers_content_of_the_replacement(mount_factory, uniq):
    """Review of the T2 fix (H2): B holds y.txt open on mount b (the old object). Mount a
    replaces it with A's 0600 secret; A, on mount b, opens it with O_TRUNC (the replacement,
    checked), writes, and unlinks it with that descriptor open. B's descriptor is not a
    descriptor of that file: it must not read what A wrote."""
    a, b, py_a, py_b = _setup(mount_factory, uniq)
    px_a = a.path("inbox", f"{uniq}/x.tmp")
    h = Holder(B, py_b)
    try:
        assert as_user(A, f"open({px_a!r}, 'w').write({NEW!r})", f"os.chmod({px_a!r}, 0o600)",
                       f"os.rename({px_a!r}, {py_a!r})", umask=0o077) == ["ok", "ok", "ok"]
        b.wait_until(lambda: mode_owner(py_b) == (0o600, A, A), timeout=30,
                     what="b shows the secret's attributes")
        w = subprocess.run(
            ["setpriv", f"--reuid={A}", f"--regid={A}", "--clear-groups", "/usr/bin/python3",
             "-c", f"import os\nfd = os.open({py_b!r}, os.O_WRONLY | os.O_TRUNC)\n"
             f"os.write(fd, b'SECRET 2')\nos.unlink({py_b!r})\nos.close(fd)\nprint('ok')"],
            capture_output=True, text=True, timeout=60)
        assert w.returncode == 0, w.stderr
        got = [h.read() for _ in range(3)]
        assert not any("SECRET" in r for r in got), got
        assert all(r in (OLD, "ESTALE") for r in got), got
    finally:
        h.close()


def test_reader_reads_this_mounts_committed_writes_after_the_unlink(mount_factory, uniq):
    """Review of the T2 fix (M2 and the third review's M1), one mount: R holds y.txt open; W
    opens it O_RDWR, writes and fsyncs (a new object, this mount's); R reads it (the same
    file); W writes and fsyncs again, R reads again. W then unlinks y.txt with its descriptor
    open: R still reads W's content, never ESTALE (it is that file). R's reads skip the page
    cache, so each reaches the daemon."""
    m = mount_factory(config=FOREIGN, opts="allow_other")
    open_to_others(m)
    d = m.path("inbox", uniq)
    os.mkdir(d)
    os.chmod(d, 0o1777)
    y = os.path.join(d, "y.txt")
    assert as_user(A, f"open({y!r}, 'w').write({OLD!r})", f"os.chmod({y!r}, 0o644)") == \
        ["ok", "ok"]
    h = Holder(B, y, uncached=True)
    w = subprocess.Popen(
        ["setpriv", f"--reuid={A}", f"--regid={A}", "--clear-groups", "/usr/bin/python3", "-c",
         f"import os, sys\nfd = os.open({y!r}, os.O_RDWR)\n"
         "for word in (b'WRITTEN', b'AGAIN!!'):\n"
         "    os.pwrite(fd, word, 0)\n    os.fsync(fd)\n    print('synced', flush=True)\n"
         "    sys.stdin.readline()\n"
         f"os.unlink({y!r})\nprint('unlinked', flush=True)\n"
         "sys.stdin.readline()\nos.close(fd)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for word in ("WRITTEN", "AGAIN!!"):
            assert w.stdout.readline().strip() == "synced"
            # (the second may come from the read-ahead window R's first read filled)
            assert h.read() in ("WRITTEN" + OLD[7:], word + OLD[7:])
            w.stdin.write("next\n")
            w.stdin.flush()
        assert w.stdout.readline().strip() == "unlinked"
        assert [h.read() for _ in range(2)] == ["AGAIN!!" + OLD[7:]] * 2
    finally:
        w.stdin.close()
        w.wait(timeout=60)
        h.close()


@pytest.mark.both_backends  # depends on what the store does (copies, parts, ETags)
@pytest.mark.parametrize("what", ["file", "directory"])
@pytest.mark.parametrize("copy", ["CopyObject", "other_parts"])
def test_rechecked_reader_of_a_renamed_open_multipart_file_keeps_it_after_the_unlink(
        mount_factory, uniq, stack, copy, what):
    """Review V (third review) M2: a file uploaded in parts (part_size 5 MiB) is open O_RDWR
    here (W, unchanged: its identity is the ETag it loaded) while B holds a reader on it, not
    read yet. The file (or its directory) is renamed on this mount: a server-side copy, which
    may answer another ETag than the source's (MinIO's CopyObject of a multipart object; any
    store's multipart copy in other parts than the upload's: "other_parts", the mount
    restarted with part_size and copy_threshold 6 MiB, UploadPartCopy, Swift only). B's first
    read, pinned to the old ETag, is then refused (If-Match) and rechecked onto the copy. The
    name is unlinked with W open: B's descriptor was opened on this file and reads its copy,
    so it keeps reading it (the open file's spool), never ESTALE. ("CopyObject" keeps the
    ETag on s3rver and Swift here: a control.)"""
    if copy == "other_parts" and not stack.upload_part_copy:
        pytest.skip("the store has no UploadPartCopy")
    m = mount_factory(config={"fs": {**FOREIGN["fs"], "part_size": str(5 << 20)}},
                      opts="allow_other")
    open_to_others(m)
    d = m.path("inbox", uniq)
    for sub in (d, os.path.join(d, "sub")):
        os.mkdir(sub)
        os.chmod(sub, 0o1777)
    big = os.path.join(d, "sub", "big.bin")
    new, key = ((os.path.join(d, "sub", "moved.bin"), f"{uniq}/sub/moved.bin") if what == "file"
                else (os.path.join(d, "sub2", "big.bin"), f"{uniq}/sub2/big.bin"))
    data = os.urandom(7 << 19).hex()  # 7 MiB > part_size, text (Holder decodes)
    with open(big, "w") as f:
        f.write(data)
    os.chmod(big, 0o644)
    before = m.s3.head_object(Bucket=m.reception_bucket, Key=f"{uniq}/sub/big.bin")["ETag"]
    # uploaded in two parts (s3rver's ETag of a multipart object is its MD5, no "-2")
    assert before.endswith('-2"') or stack.backend == "s3rver", before
    if copy == "other_parts":
        m.restart(config={"fs": {"part_size": str(6 << 20), "copy_threshold": str(6 << 20)}})
    h = Holder(B, big, uncached=True)
    w = os.open(big, os.O_RDWR)
    try:
        if what == "file":
            os.rename(big, new)
        else:
            os.rename(os.path.join(d, "sub"), os.path.join(d, "sub2"))
        after = m.s3.head_object(Bucket=m.reception_bucket, Key=key)["ETag"]
        assert (after != before) == (copy == "other_parts"), (before, after)
        # its first read asks for the ETag it opened (refused when the copy's is another)
        assert h.read() == data[:1 << 16]
        os.unlink(new)
        got = [h.read() for _ in range(2)]
        assert got == [data[:1 << 16]] * 2, ([g[:20] for g in got], before, after)
    finally:
        os.close(w)
        h.close()
