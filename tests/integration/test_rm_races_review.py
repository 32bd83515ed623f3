"""Hostile review (revA) of the reception path's rm / commit / rename races.

Each test states the interleaving; the invariant is test_rm_races.assert_consistent's (the
key's object exists exactly when one live row describes it, every upload logged once), checked
with independent clients (boto3, SQL), counting every reception_audit row of the key."""
import errno
import os
import time

from checks import get_object, live_rows, read, write
from faultproxy import FaultProxy
from test_rm_races import assert_consistent, grace, on_key, sha



def test_rm_and_recreate_by_another_mount_while_a_stale_writer_is_open(stack, mount_factory):
    """revA F1. Mount A opens k (stored) for writing and rewrites it; mount B then runs `rm k`
    and writes k again (B's close returns 0). Then A closes.

    Before the fix, A's commit finds a removal newer than A's open and applies "the rm wins": it
    deletes the object under k if its ETag is A's upload -- which has just overwritten B's new
    file -- and leaves B's live row alone: a live row for an object the store does not hold,
    B's file lost after its close returned 0. Whatever A's close returns, no row may lie."""
    key = "race/r.bin"
    old, stale, newer = os.urandom(3000), os.urandom(3001), os.urandom(3002)
    a = mount_factory(config=grace(60000), name="host-a")
    b = mount_factory(reset=False, config=grace(60000), name="host-b")
    os.mkdir(os.path.join(a.inbox, "race"))
    write(os.path.join(a.inbox, key), old)
    fd = os.open(os.path.join(a.inbox, key), os.O_WRONLY | os.O_TRUNC)
    rc_a = None
    try:
        os.write(fd, stale)
        time.sleep(0.5)  # the rm comes well after A's open
        os.unlink(os.path.join(b.inbox, key))
        write(os.path.join(b.inbox, key), newer)
        assert get_object(b, key) == newer
        assert [x["sha256"] for x in live_rows(b, key)] == [sha(newer)]
    finally:
        try:
            os.close(fd)
            rc_a = 0
        except OSError as e:
            rc_a = e.errno
    print("A's close:", rc_a)
    assert_consistent(a, key, [old, stale, newer])


def test_rename_of_an_open_file_onto_a_name_removed_since_its_open(stack, mount_factory):
    """revA F2, one mount. x is created and written (still open); y (stored) is removed; x is
    renamed to y; then x's descriptor closes. POSIX: y holds x's bytes, close returns 0.

    Before the fix, the file's base (based_ms) is its open, the removal note is per key: the commit
    of y finds y removed after x's open, deletes the upload and reports ENOENT: the file is
    gone from both names."""
    m = mount_factory(config=grace(60000))
    x, y = os.path.join(m.inbox, "x.bin"), os.path.join(m.inbox, "y.bin")
    old, data = os.urandom(3000), os.urandom(4000)
    write(y, old)
    fd = os.open(x, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    rc = None
    try:
        os.write(fd, data)
        time.sleep(0.5)
        os.unlink(y)
        os.rename(x, y)
    finally:
        try:
            os.close(fd)
            rc = 0
        except OSError as e:
            rc = e.errno
    assert rc == 0, f"close after the rename: {errno.errorcode.get(rc, rc)}"
    assert read(y) == data
    obj, r = assert_consistent(m, "y.bin", [old, data])
    assert obj == data


NOSUCHUPLOAD = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchUpload</Code>'
                b'<Message>The specified upload does not exist.</Message></Error>')


def test_an_upload_error_that_maps_to_enoent_is_not_a_removal(stack, mount_factory):
    """revA F11, one mount. k is stored; two descriptors are open for writing. The store
    answers the first close's upload with 404 NoSuchUpload (a multipart upload aborted by
    another client or a lifecycle rule; here injected on the PUT). Before the fix, ofile_commit_key
    takes every -ENOENT for "another mount's rm won": the file is marked unlinked and clean,
    so the second descriptor's writes and close commit nothing and close returns 0, k keeps
    its old bytes."""
    px = FaultProxy(stack.endpoint)
    key = "k2.bin"
    old, new, more = os.urandom(3000), os.urandom(3001), os.urandom(100)
    try:
        m = mount_factory(config=grace(60000, {"s3": {"endpoint": px.url}}))
        path = os.path.join(m.inbox, key)
        write(path, old)
        fd1 = os.open(path, os.O_WRONLY | os.O_TRUNC)
        fd2 = os.open(path, os.O_WRONLY)
        os.write(fd1, new)
        px.rule = on_key(key, "PUT", ("status", 404, NOSUCHUPLOAD))
        try:
            os.close(fd1)
            rc1 = 0
        except OSError as e:
            rc1 = e.errno
        px.rule = None
        os.pwrite(fd2, more, len(new))
        try:
            os.close(fd2)
            rc2 = 0
        except OSError as e:
            rc2 = e.errno
    finally:
        px.rule = None
        px.close()
    print("close 1:", rc1, "close 2:", rc2)
    assert rc1 != 0
    if rc2 == 0:
        assert get_object(m, key) == new + more, \
            "the second close returned 0 but the store does not hold what was written"
        assert_consistent(m, key, [old, new + more])
