"""The commit check over another object (test_review_held_commit.py) for objects without
the upload tag, and the fourth hostile read of w/held (ed4de89): false refusals of the
untagged-ETag base check on one mount. An untagged object (an SDK upload, single PUT or multipart) opened for writing
by A while it is 0666; then its owner (root here) makes it 0644. A's close commits over the
same object (or its rename's copy on this mount): it must be stored, as for a tagged one
(no check: the same object). Refused (EACCES) only if the base ETag the mount kept
(of->loaded from GET / listing, of->committed from a copy) is not the HEAD's form."""
import os
import time

import pytest

from test_perms import A, B, FOREIGN, as_user, rd
from test_review_held_commit import GHolder, _mv
from test_review_t4_held import removed_on_a_listed_on_b

MB = 1 << 20


def _put(m, key, multipart):
    if not multipart:
        m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=b"FOREIGN".ljust(64))
        return
    up = m.s3.create_multipart_upload(Bucket=m.reception_bucket, Key=key)
    parts = []
    for n, body in ((1, b"F" * (5 * MB)), (2, b"G" * 1000)):
        r = m.s3.upload_part(Bucket=m.reception_bucket, Key=key, UploadId=up["UploadId"],
                             PartNumber=n, Body=body)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    m.s3.complete_multipart_upload(Bucket=m.reception_bucket, Key=key,
                                   UploadId=up["UploadId"], MultipartUpload={"Parts": parts})


@pytest.mark.parametrize("multipart", [False, True], ids=["put", "mpu"])
@pytest.mark.parametrize("how", ["load", "trunc", "rename", "dirrename"])
def test_untagged_same_object_commit_after_chmod_is_stored(mount_factory, uniq, how,
                                                          multipart):
    m = mount_factory(config=FOREIGN, opts="allow_other")
    os.mkdir(m.path("inbox", uniq))
    os.chmod(m.path("inbox", uniq), 0o777)
    key = f"{uniq}/y.txt"
    py = m.path("inbox", key)
    _put(m, key, multipart)
    m.wait_until(lambda: os.path.exists(py), timeout=30, what="listed")
    os.chmod(py, 0o666)
    flags = os.O_WRONLY | os.O_TRUNC if how == "trunc" else os.O_RDWR
    w = GHolder(A, py, flags)
    try:
        assert w.op("w", "A DRAFT") == "ok"
        final = py
        if how == "rename":
            final = m.path("inbox", f"{uniq}/z.txt")
            _mv(m, py, final)
        if how == "dirrename":
            final = m.path("inbox", f"{uniq}2/y.txt")
            _mv(m, m.path("inbox", uniq), m.path("inbox", uniq + "2"))
        os.chmod(final, 0o644)  # root: A may no longer open it for writing
        time.sleep(1)
        heads = {k: m.s3.head_object(Bucket=m.reception_bucket,
                                     Key=os.path.relpath(final, m.path("inbox")))["ETag"]
                 for k in ["head"]}
        got = [w.op("s"), w.op("c")]
    finally:
        w.close()
    body = open(final, "rb").read(7)
    assert (got, body) == (["ok", "ok"], b"A DRAFT"), (got, body, heads)


@pytest.mark.parametrize("closed_first", [False, True], ids=["open", "closed_first"])
@pytest.mark.parametrize("target", ["b_file", "untagged"])
def test_open_file_renamed_via_temp_over_another_is_stored_by_its_owner(mount_factory, uniq,
                                                                        target, closed_first):
    """ofile_rename_uncommitted(replaces): the object the close replaces is y's (the rename
    over it, allowed by the directory). On 7921663 the base stayed x's: the close's HEAD found
    'another object' and checked the writers against the row (moved from x.tmp: A's 0444):
    the owner of a 0444 file, whose descriptor writes, was refused (EACCES) although she
    renamed it there herself, and her bytes were stored nowhere. Now the rename makes the
    base unknown: stored."""
    m = mount_factory(config=FOREIGN, opts="allow_other")
    os.mkdir(m.path("inbox", uniq))
    os.chmod(m.path("inbox", uniq), 0o777)
    px, pt, py = (m.path("inbox", f"{uniq}/{n}") for n in ("x.txt", "x.tmp", "y.txt"))
    assert as_user(A, f"open({px!r}, 'w').write('v1')") == ["ok"]
    if target == "b_file":
        assert as_user(B, f"open({py!r}, 'w').write('B FILE')") == ["ok"]
    else:
        m.s3.put_object(Bucket=m.reception_bucket, Key=f"{uniq}/y.txt", Body=b"SDK")
        m.wait_until(lambda: os.path.exists(py), timeout=30, what="listed")
    w = GHolder(A, px, os.O_RDWR)
    try:
        got = [w.op("w", "A DRAFT")]
        got += as_user(A, f"os.chmod({px!r}, 0o444)", f"os.rename({px!r}, {pt!r})")
        if closed_first:
            got += [w.op("c")] + as_user(A, f"os.rename({pt!r}, {py!r})")
        else:
            got += as_user(A, f"os.rename({pt!r}, {py!r})") + [w.op("c")]
    finally:
        w.close()
    time.sleep(1)
    res = {"got": got, "y": as_user(A, rd(py))}
    assert res == {"got": ["ok"] * 5, "y": ["A DRAFT"]}, res


@pytest.mark.parametrize("op", ["truncate0", "trunc_open_no_creat", "truncate_grow"])
def test_truncate_of_a_file_removed_on_another_mount_is_enoent(mount_factory, uniq, op):
    """ESTALE from ofile_base_head (the object gone): truncate(2) and a truncating open
    without O_CREAT retry once with LOOKUP_REVAL, find nothing: ENOENT, never ESTALE; and
    nothing is stored."""
    a, key, py_a, py_b = removed_on_a_listed_on_b(mount_factory, uniq)
    expr = {"truncate0": f"os.truncate({py_b!r}, 0)",
            "truncate_grow": f"os.truncate({py_b!r}, 10)",
            "trunc_open_no_creat": f"os.close(os.open({py_b!r}, os.O_WRONLY | os.O_TRUNC))"}[op]
    got = as_user(A, expr)
    time.sleep(1)
    keys = [o["Key"] for o in a.s3.list_objects_v2(Bucket=a.reception_bucket,
                                                   Prefix=uniq).get("Contents", [])]
    assert (got, [k for k in keys if k.endswith("y.txt")]) == (["ENOENT"], []), (got, keys)


@pytest.mark.parametrize("mode", ["a", "r+creat"])
def test_appending_create_of_a_file_removed_on_another_mount_recreates_it(mount_factory,
                                                                        uniq, mode):
    """R2's sibling: `echo v2 >> y` (O_WRONLY|O_CREAT|O_APPEND) or O_RDWR|O_CREAT on b, whose
    listing still shows y, removed on a. The kernel sends OPEN; the load's GET finds nothing:
    on ed4de89 only a truncating open gave ESTALE, the loading one failed with ENOENT although
    O_CREAT was asked. Now ESTALE: the kernel looks the name up again and creates it."""
    a, key, py_a, py_b = removed_on_a_listed_on_b(mount_factory, uniq)
    expr = (f"open({py_b!r}, 'a').write('v2')" if mode == "a" else
            f"os.close(os.open({py_b!r}, os.O_RDWR | os.O_CREAT, 0o644))")
    got = as_user(A, expr)
    time.sleep(1)
    try:
        body = a.s3.get_object(Bucket=a.reception_bucket, Key=key)["Body"].read()
    except Exception as e:  # noqa: BLE001
        body = repr(type(e).__name__)
    assert got == ["ok"], (got, body)
