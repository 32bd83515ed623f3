"""The commit of a file open here over an object that is not the one its content is based on
(of->base_tag, the UPLOAD_TAG of the object loaded or last committed): stored only if every
user who opened it for writing may write that object (review-t4c F2 / T10; the second
hostile read of w/held, F1-F5). Two allow_other mounts on one database and bucket
(test_perms.two_mounts); users A, B as in test_perms.py (no passwd entries)."""
import json
import os
import subprocess
import time

from test_metrics import parse
from test_perms import A, B, as_user, attrs_row, rd, two_mounts
from test_rename_attrs import mode_owner
from test_review_g_open import Holder
from test_review_t4_held import (_dir, as_file_on_two, foreign_0666_on_two,
                                  removed_on_a_listed_on_b)

OLD = "OLD SECRET".ljust(64)


class GHolder(Holder):
    """Like test_review_g_open.Holder, with the process's groups (setpriv --groups) and an
    mmap write ("m"): each op answers "ok" or the errno name."""

    def __init__(self, uid, path, flags, gid=None, groups=()):
        grp = ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
        self.p = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={gid if gid is not None else uid}", *grp,
             "/usr/bin/python3", "-c",
             "import errno, json, mmap, os, sys\n"
             f"fd = os.open({path!r}, {flags})\n"
             "print(json.dumps('open'), flush=True)\n"
             "for line in sys.stdin:\n"
             "    try:\n"
             "        op, arg = line[0], line[1:]\n"
             "        if op == 'w':\n"
             "            os.pwrite(fd, json.loads(arg).encode(), 0)\n"
             "        elif op == 'm':\n"
             "            b = json.loads(arg).encode()\n"
             "            mm = mmap.mmap(fd, len(b), mmap.MAP_SHARED,\n"
             "                           mmap.PROT_READ | mmap.PROT_WRITE)\n"
             "            try:\n"
             "                mm[0:len(b)] = b\n"
             "                mm.flush()\n"
             "            finally:\n"
             "                mm.close()  # its own dup of fd: the last close is 'c'\n"
             "        elif op == 's':\n"
             "            os.fsync(fd)\n"
             "        elif op == 'c':\n"
             "            fd, old = -1, fd\n"
             "            os.close(old)\n"
             "        r = 'ok'\n"
             "    except OSError as e:\n"
             "        r = errno.errorcode[e.errno]\n"
             "    print(json.dumps(r), flush=True)\n"
             "if fd >= 0:\n"
             "    os.close(fd)\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.answer() == "open"

    def op(self, c, arg=""):
        self.p.stdin.write(c + json.dumps(arg) + "\n")
        self.p.stdin.flush()
        return self.answer()


def _bs_file(a, py_a, pz_a, body="B SECRET"):
    assert as_user(A, f"os.rename({py_a!r}, {pz_a!r})") == ["ok"]
    assert as_user(B, f"open({py_a!r}, 'w').write({body!r})", umask=0o077) == ["ok"]
    assert mode_owner(py_a) == (0o600, B, B)


def test_truncating_open_draft_is_not_stored_over_bs_object(mount_factory, uniq):
    """F1: as test_same_content_object_is_not_taken_for_the_open_files, but A's descriptor on
    b is a truncating open (O_WRONLY|O_TRUNC: `>`, cp, most savers). On 75f04d0 that open set
    of->loaded, never of->base_tag: the commit checked nothing, and A's draft replaced B's
    newer 0600 object and took B's row (B read it, as his). Now fsync and close: EACCES."""
    a, b, py_a, py_b, pz_a = as_file_on_two(mount_factory, uniq, OLD, 0o600)
    w = GHolder(A, py_b, os.O_WRONLY | os.O_TRUNC)
    try:
        assert w.op("w", "A DRAFT SECRET") == "ok"
        _bs_file(a, py_a, pz_a)
        time.sleep(3.5)
        got = [w.op("s"), w.op("c")]
    finally:
        w.close()
    time.sleep(1)
    res = {"fsync": got, "B reads": as_user(B, rd(py_a)),
           "row": {k: attrs_row(a, f"{uniq}/y.txt")[k] for k in ("mode", "uid")}}
    assert res == {"fsync": ["EACCES", "EACCES"], "B reads": ["B SECRET"],
                   "row": {"mode": 0o600, "uid": B}}, res


def test_mmap_draft_is_not_stored_over_bs_object(mount_factory, uniq):
    """F3: the same through a shared writable mmap (O_RDWR, loaded: base_tag known). The
    kernel's writepage WRITE carries no caller's credentials (uid 0): on 75f04d0 root was the
    writer, allowed anything. The writers are those who opened it for writing."""
    a, b, py_a, py_b, pz_a = as_file_on_two(mount_factory, uniq, OLD, 0o600)
    w = GHolder(A, py_b, os.O_RDWR)
    try:
        _bs_file(a, py_a, pz_a, "B SECRET".ljust(64))
        time.sleep(3.5)
        m = w.op("m", "A DRAFT SECRET")
        got = [w.op("s"), w.op("c")]
    finally:
        w.close()
    time.sleep(1)
    res = {"mmap": m, "fsync": got, "B reads": as_user(B, rd(py_a))}
    # msync(MS_SYNC) may be the call that reports the refused commit
    assert res["mmap"] in ("ok", "EACCES"), res
    assert res["fsync"] == ["EACCES", "EACCES"], res
    assert res["B reads"] == ["B SECRET".ljust(64)], res


def test_group_writer_may_store_over_a_group_writable_object(mount_factory, uniq):
    """F2 (false refusal on 75f04d0): A (uid 2001, gid 2001, no passwd entry) holds her y.txt
    open on b; on a she renames it away and B's new y.txt is made group 2001, 0660: A may
    write it. Her write on b is stored: the writer's groups are those of her open request
    (75f04d0 read them from the user database only)."""
    a, b, py_a, py_b, pz_a = as_file_on_two(mount_factory, uniq, "v1", 0o600)
    w = GHolder(A, py_b, os.O_RDWR)
    try:
        _bs_file(a, py_a, pz_a)
        os.chown(py_a, B, A)
        os.chmod(py_a, 0o660)
        assert as_user(A, f"'yes' if os.access({py_a!r}, os.W_OK) else 'no'") == ["yes"]
        time.sleep(3.5)
        assert w.op("w", "A!") == "ok"
        got = [w.op("s"), w.op("c")]
    finally:
        w.close()
    assert got == ["ok", "ok"]


def test_foreign_upload_over_owners_open_file(mount_factory, uniq):
    """F4 (refused on 75f04d0): A's 0600 y.txt is open for writing by A (single mount); another
    route (an SDK: boto3) replaces the object, which has no row of its own. A's row at the
    name is what her write is checked on: stored over it (last writer wins, as before
    75f04d0)."""
    a, b = two_mounts(mount_factory)
    _dir(a, uniq)
    py_a = a.path("inbox", f"{uniq}/y.txt")
    assert as_user(A, f"open({py_a!r}, 'w').write('v1')", umask=0o077) == ["ok"]
    w = GHolder(A, py_a, os.O_RDWR)
    try:
        a.s3.put_object(Bucket=a.reception_bucket, Key=f"{uniq}/y.txt", Body=b"theirs")
        assert w.op("w", "mine") == "ok"
        got = [w.op("s"), w.op("c")]
    finally:
        w.close()
    time.sleep(1)
    body = a.s3.get_object(Bucket=a.reception_bucket, Key=f"{uniq}/y.txt")["Body"].read()
    assert (got, body) == (["ok", "ok"], b"mine"), (got, body)


def test_other_users_writes_into_a_shared_file_commit_twice(mount_factory, uniq):
    """Control (false refusal on one mount?): B writes into A's 0666 file twice through one
    descriptor, fsync after each: the second commit's HEAD must carry the first one's tag
    (metadata casing on Swift)."""
    a, b = two_mounts(mount_factory)
    _dir(a, uniq)
    py_a = a.path("inbox", f"{uniq}/y.txt")
    pz_a = a.path("inbox", f"{uniq}/z.txt")
    assert as_user(A, f"open({py_a!r}, 'w').write('v1')", f"os.chmod({py_a!r}, 0o666)") \
        == ["ok", "ok"]
    w = GHolder(B, py_a, os.O_RDWR)
    try:
        got = [w.op("w", "B1"), w.op("s"), w.op("w", "B2"), w.op("s")]
        # renamed here while open, written again: the copy keeps the tag
        assert as_user(A, f"os.rename({py_a!r}, {pz_a!r})") == ["ok"]
        got += [w.op("w", "B3"), w.op("s"), w.op("c")]
    finally:
        w.close()
    assert got == ["ok"] * 7
    assert as_user(A, rd(pz_a)) == ["B3"]


def test_owner_truncating_reopen_after_commit_then_rename_here(mount_factory, uniq):
    """Control: A's file, open O_RDWR, written and fsynced, truncated by a second O_TRUNC open
    here, renamed here over an existing file of hers, written again: every commit is ok."""
    a, b = two_mounts(mount_factory)
    _dir(a, uniq)
    py_a = a.path("inbox", f"{uniq}/y.txt")
    pz_a = a.path("inbox", f"{uniq}/z.txt")
    assert as_user(A, f"open({py_a!r}, 'w').write('v1')", f"open({pz_a!r}, 'w').write('z')") \
        == ["ok", "ok"]
    w = GHolder(A, py_a, os.O_RDWR)
    try:
        got = [w.op("w", "A1"), w.op("s")]
        got += as_user(A, f"open({py_a!r}, 'w').write('A2')")
        got += as_user(A, f"os.rename({py_a!r}, {pz_a!r})")
        got += [w.op("w", "A3"), w.op("s"), w.op("c")]
    finally:
        w.close()
    assert got == ["ok"] * 7, got
    assert as_user(A, rd(pz_a)) == ["A3"]


def test_owner_read_only_file_committed_twice_in_parts(mount_factory, uniq):
    """Control (multipart metadata): A's 17 MiB file (uploaded in parts) open O_RDWR; she
    writes, fsyncs, makes it 0444 (her descriptor still writes), writes and fsyncs again. The
    second commit's HEAD must carry the first one's UPLOAD_TAG (else: checked, and the owner
    of a 0444 file is refused)."""
    a, b = two_mounts(mount_factory)
    _dir(a, uniq)
    py_a = a.path("inbox", f"{uniq}/y.bin")
    assert as_user(A, f"open({py_a!r}, 'wb').write(b'x' * (17 << 20))") == ["ok"]
    w = GHolder(A, py_a, os.O_RDWR)
    try:
        got = [w.op("w", "A1"), w.op("s")]
        got += as_user(A, f"os.chmod({py_a!r}, 0o444)")
        got += [w.op("w", "A2"), w.op("s"), w.op("c")]
    finally:
        w.close()
    assert got == ["ok"] * 6, got


def _mv(m, src, dst):
    """rename(2), retried while the foreign upload is not logged yet (EBUSY)."""
    def go():
        try:
            os.rename(src, dst)
            return True
        except OSError as e:
            if e.errno != 16:
                raise
            return False
    m.wait_until(go, timeout=60, interval=1, what="the foreign upload logged, renamed")


def test_foreign_object_truncating_open_draft_is_not_stored_over_bs_object(mount_factory,
                                                                           uniq):
    """Third read, R1 (High): the object A truncates on b carries no UPLOAD_TAG (an SDK
    upload, or any object stored before UPLOAD_TAG): on a71aae3 the commit then checked
    nothing. On a the name becomes B's 0600 file; A's draft must not replace it. (An object
    known and untagged: another one is one with a tag, or another ETag.)"""
    a, b, key, py_a, py_b = foreign_0666_on_two(mount_factory, uniq)
    w = GHolder(A, py_b, os.O_WRONLY | os.O_TRUNC)
    try:
        assert w.op("w", "A DRAFT SECRET") == "ok"
        _mv(a, py_a, a.path("inbox", f"{uniq}/z.txt"))
        assert as_user(B, f"open({py_a!r}, 'w').write('B SECRET')", umask=0o077) == ["ok"]
        assert mode_owner(py_a) == (0o600, B, B)
        time.sleep(3.5)
        got = [w.op("s"), w.op("c")]
    finally:
        w.close()
    time.sleep(1)
    res = {"fsync": got, "B reads": as_user(B, rd(py_a))}
    assert res == {"fsync": ["EACCES", "EACCES"], "B reads": ["B SECRET"]}, res


def test_foreign_object_rdwr_draft_is_not_stored_over_bs_object(mount_factory, uniq):
    """R1 (load path): the same with an O_RDWR open that loads the tag-less object."""
    a, b, key, py_a, py_b = foreign_0666_on_two(mount_factory, uniq)
    w = GHolder(A, py_b, os.O_RDWR)
    try:
        _mv(a, py_a, a.path("inbox", f"{uniq}/z.txt"))
        assert as_user(B, f"open({py_a!r}, 'w').write('B SECRET'.ljust(64))",
                       umask=0o077) == ["ok"]
        time.sleep(3.5)
        assert w.op("w", "A DRAFT") == "ok"
        got = [w.op("s"), w.op("c")]
    finally:
        w.close()
    time.sleep(1)
    res = {"fsync": got, "B reads": as_user(B, rd(py_a))}
    assert res == {"fsync": ["EACCES", "EACCES"], "B reads": ["B SECRET".ljust(64)]}, res


def test_truncating_open_of_a_file_removed_on_another_mount_recreates_it(mount_factory, uniq):
    """Third read, R2: `echo x > y` (O_CREAT|O_TRUNC) on b, whose listing (TTL 30 s) and
    kernel still show y, removed on a. The kernel sends OPEN (not CREATE); the truncating
    open's HEAD finds nothing: ESTALE, the kernel looks the name up again and creates it (on
    a71aae3: ENOENT; on 350135f the truncating open committed a new object)."""
    a, key, py_a, py_b = removed_on_a_listed_on_b(mount_factory, uniq)
    got = as_user(A, f"open({py_b!r}, 'w').write('v2')")
    time.sleep(1)
    body = a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read()
    assert (got, body) == (["ok"], b"v2"), (got, body)


def _heads(path):
    fams, _ = parse(path)
    fam = fams["custodyfs_s3_request_duration_seconds"]
    return {s.labels["op"]: s.value for s in fam.samples if s.name.endswith("_count")}


def test_count_requests_of_cp_over_an_existing_file(mount_factory, uniq, tmp_path):
    """Third read, R3: S3 requests of `cp` over an existing file, and of a new file, one
    mount. The truncating open of a stored file not open here HEADs the object it checked,
    for the tag its commit is checked against (the listing carries no metadata): one HEAD
    more than a new file, and no other request."""
    path = str(tmp_path / "m.prom")
    m = mount_factory({"fs": {"metrics_file": path, "metrics_interval": "1"}})
    m.wait_until(lambda: os.path.exists(path), timeout=30, what="metrics")
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1000))
    dst = m.path("inbox", f"{uniq}.bin")
    out = {}
    for what in ("new", "over1", "over2"):
        time.sleep(2.5)
        before = _heads(path)
        subprocess.run(["cp", str(src), dst], check=True, timeout=60)
        time.sleep(2.5)
        after = _heads(path)
        out[what] = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    # 350135f: {'head': 2, 'list': 1, 'put': 1} for each
    assert out["over1"] == out["over2"] == dict(out["new"], head=out["new"]["head"] + 1), out
