"""Hostile review revF: failing tests for findings of review-F.md (E5's leftover rule).
Each asserts what the product contract (SPEC §2: data is never silently lost; every upload
logged exactly once; audit rows are evidence) requires."""
import errno
import os
import time

import pytest

from faultproxy import FaultProxy


def rows(m, key):
    return [(r["origin"], r["removed_at"] is None, r["removal_reason"])
            for r in m.sql_dicts("select origin, removed_at, removal_reason from reception_audit"
                                 " where source_bucket = %s and object_key = %s order by id",
                                 (m.reception_bucket, key))]


def test_a_renames_copy_is_never_taken_for_the_leftover_of_an_earlier_rename(stack,
                                                                            mount_factory,
                                                                            uniq):
    """F1: z.txt (logged) is renamed to a.txt on mount M1 and at once back to z.txt. The second
    rename's copy lands at z.txt (same bytes, so the ETag of z.txt's newest row, closed
    'renamed to a.txt' a moment ago), its answer held at the proxy (M1 has no rows for it yet).
    Mount M2 (same database and bucket) looks at z.txt meanwhile: on ffe9639 it takes that copy
    for the leftover of the first rename and deletes it; the second rename then records a live
    row for z.txt, deletes a.txt and returns 0: the file is gone. The file must be at z.txt
    with its bytes, with exactly the rows of the two renames."""
    from races import let_go, rename_in_thread
    px = FaultProxy(stack.endpoint)
    try:
        m1 = mount_factory(config={"s3": {"endpoint": px.url}}, name="m1")
        m2 = mount_factory(reset=False, name="m2")
        os.mkdir(m1.path("inbox", uniq))
        z, a = f"{uniq}/z.txt", f"{uniq}/a.txt"
        body = b"the only copy of this file"
        with open(m1.path("inbox", z), "wb") as f:
            f.write(body)
        m1.wait_until(lambda: len(rows(m1, z)) == 1, timeout=30, what="z.txt's row")
        os.rename(m1.path("inbox", z), m1.path("inbox", a))

        def rule(meth, path, h):
            if meth == "PUT" and path.split("?")[0].endswith("/" + z) \
                    and any(k.lower() == "x-amz-copy-source" for k in h.keys()):
                return ("late", 6)
            return None
        px.rule = rule
        t, out = rename_in_thread(m1, a, z)
        m1.wait_until(lambda: any(act == "late" for _, _, act in px.log), timeout=30,
                      what="the copy of a.txt to z.txt landed, its answer held")
        time.sleep(0.5)
        os.listdir(m2.path("inbox", uniq))
        try:
            os.stat(m2.path("inbox", z))
        except OSError:
            pass
        time.sleep(2)  # M2's look at z.txt (its worker) is done
        let_go(px, t)
        assert not t.is_alive(), "the rename did not return"
        time.sleep(1)

        def body_of(key):
            try:
                return m1.s3.get_object(Bucket=m1.reception_bucket, Key=key)["Body"].read()
            except m1.s3.exceptions.NoSuchKey:
                return None
        res = {"rename": out, "z.txt": body_of(z), "a.txt": body_of(a),
               "z.txt rows": rows(m1, z), "a.txt rows": rows(m1, a)}
        assert res == {"rename": ["ok"], "z.txt": body, "a.txt": None,
                       "z.txt rows": [("mount", False, f"renamed to {a}"),
                                      ("rename", True, None)],
                       "a.txt rows": [("rename", False, f"renamed to {z}")]}, res
    finally:
        px.rule = None
        px.release.set()
        px.close()


@pytest.mark.both_backends  # depends on what the store does (copies, parts, ETags)
def test_the_same_bytes_uploaded_again_after_a_rename_are_logged_not_deleted(mount_factory,
                                                                             uniq):
    """F2 (narrowed): A.txt, uploaded through mount m1 some seconds ago and logged, is renamed
    to B.txt; right after, another route (boto3, straight to the store) uploads the very same
    bytes to A.txt (the same ETag). On ffe9639 the next look at A.txt (mount m2) takes that upload for
    the rename's leftover (same ETag, its row closed 'renamed to B.txt' within the slack) and
    deletes it, with no row. An object newer than the upload its row logged is not that
    upload: it must stay, logged once as a new arrival. (Within ~2 s of the first upload's
    row the two are not told apart by time: F2 is narrowed, not closed.)"""
    m = mount_factory(name="m1")
    m2 = mount_factory(reset=False, name="m2")  # never saw A.txt's upload
    os.mkdir(m.path("inbox", uniq))
    a, b = f"{uniq}/A.txt", f"{uniq}/B.txt"
    body = b"bytes someone drops twice"
    with open(m.path("inbox", a), "wb") as f:
        f.write(body)
    m.wait_until(lambda: len(rows(m, a)) == 1, timeout=30, what="A.txt's row")
    time.sleep(5)  # well past the leftover rule's slack after A.txt's row
    os.rename(m.path("inbox", a), m.path("inbox", b))
    m.s3.put_object(Bucket=m.reception_bucket, Key=a, Body=body)

    def logged():
        os.listdir(m2.path("inbox", uniq))
        try:
            os.stat(m2.path("inbox", a))
        except OSError:
            pass
        return len(rows(m, a)) == 2
    m.wait_until(logged, timeout=60, interval=1, what="the new upload of A.txt logged")
    time.sleep(2)
    in_store = "Contents" in m.s3.list_objects_v2(Bucket=m.reception_bucket, Prefix=a)
    res = {"A.txt in store": in_store, "A.txt rows": rows(m, a), "B.txt rows": rows(m, b)}
    assert res == {"A.txt in store": True,
                   "A.txt rows": [("mount", False, f"renamed to {b}"), ("foreign", True, None)],
                   "B.txt rows": [("rename", True, None)]}, res


# ---- F3: a multipart source swapped A-B-A during a copy ----------------------------------------

def put_parts(s3, bucket, key, data, part=5 << 20):
    """data uploaded to key in parts of `part` bytes (boto3, straight to the store); its ETag."""
    u = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for i, off in enumerate(range(0, len(data), part), 1):
        r = s3.upload_part(Bucket=bucket, Key=key, PartNumber=i, UploadId=u,
                           Body=data[off:off + part])
        parts.append({"ETag": r["ETag"], "PartNumber": i})
    r = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=u,
                                     MultipartUpload={"Parts": parts})
    return r["ETag"].strip('"')


def sha(b):
    import hashlib
    return hashlib.sha256(b).hexdigest()


def aba_rule(m, stack, src_key, dest_path_end, x, y, state):
    """A proxy rule: on the copy of src_key whose path ends with dest_path_end (the one request
    whose copy takes effect: on Swift, which refuses the If-Match of a multipart source, the
    retry without it), y is put at src_key straight to the store before the copy is forwarded
    (so the copy copies y), and 0.3 s later x is uploaded again with the same parts (so the
    source has its old ETag again when the copy answers, held 2 s)."""
    import threading
    import urllib.parse

    def again():
        time.sleep(0.3)
        state["etag_again"] = put_parts(m.s3, m.reception_bucket, src_key, x)

    def rule(meth, path, h):
        hk = {k.lower(): v for k, v in h.items()}
        src = urllib.parse.unquote(hk.get("x-amz-copy-source", ""))
        if meth != "PUT" or not src.split("?")[0].endswith("/" + src_key) or \
                not path.split("?")[0].endswith(dest_path_end) or state.get("fired"):
            return None
        if stack.backend == "swift" and "x-amz-copy-source-if-match" in hk:
            return None  # refused by Swift for a multipart source: the retry is the copy
        state["fired"] = True
        m.s3.put_object(Bucket=m.reception_bucket, Key=src_key, Body=y)
        t = threading.Thread(target=again, daemon=True)
        t.start()
        state["thread"] = t
        return ("late", 2)
    return rule


def aba_rename(m, stack, px, src_key, dest_path_end, dest_path, on_ready=None):
    """X (three parts, uploaded straight to the store) at inbox/src_key, logged by m as a
    foreign arrival; then (on_ready() called first, if given) rename(inbox/src_key, dest_path)
    on m while aba_rule swaps the source A-B-A during the copy whose path ends with
    dest_path_end. (out: "ok" or the errno, x, y)."""
    from checks import live_rows
    x = os.urandom((10 << 20) + 4321)
    y = os.urandom(len(x))
    # (Swift's ETag is of the parts, "-3"; s3rver's is the MD5 of the bytes, which a copy of
    # other bytes cannot answer: there the swap is seen by ETag, as it should be)
    etag = put_parts(m.s3, m.reception_bucket, src_key, x)

    def logged():
        os.listdir(m.inbox)
        return len(live_rows(m, src_key)) == 1
    m.wait_until(logged, timeout=60, interval=1, what="X's foreign row")
    assert live_rows(m, src_key)[0]["sha256"] == sha(x)
    if on_ready:
        on_ready()
    state = {}
    px.rule = aba_rule(m, stack, src_key, dest_path_end, x, y, state)
    try:
        os.rename(os.path.join(m.inbox, src_key), dest_path)
        out = "ok"
    except OSError as e:
        out = e.errno
    px.rule = None
    assert state.get("fired"), "the copy was not seen"
    state["thread"].join(30)
    assert state.get("etag_again") == etag, "X's second upload has another ETag"
    return out, x, y


@pytest.mark.both_backends  # depends on what the store does (copies, parts, ETags)
def test_a_multipart_source_swapped_during_its_promotion_is_never_vouched_by_etag(stack,
                                                                                   mount_factory,
                                                                                   uniq):
    """F3: X (uploaded in three parts, logged with its SHA-256) is promoted. During the copy
    its source is replaced by Y (same size) and, before the copy answers, by X again with the
    same parts: the source's ETag before and after the copy is X's, the copy holds Y. On
    9b5842e the verification vouches for the destination by the copy's own ETag (never hashed):
    Y is recorded with X's SHA-256 and X's source is deleted. Whatever the rename answers, every
    storage row must describe the bytes at its key, and X must still be kept somewhere with a
    live row that describes it."""
    from checks import live_rows, project
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url}})
        p = project(m, uniq)
        name = uniq + "-aba.bin"
        out, x, y = aba_rename(m, stack, px, name, f"/{m.storage_bucket}/{p}/{name}",
                               os.path.join(m.projects, p, name))
        dest = p + "/" + name
        try:
            stored = m.s3.get_object(Bucket=m.storage_bucket, Key=dest)["Body"].read()
        except m.s3.exceptions.NoSuchKey:
            stored = None
        srows = m.sql_dicts("select outcome, sha256 from storage_audit where dest_key = %s"
                            " order by id", (dest,))
        src = None
        try:
            src = m.s3.get_object(Bucket=m.reception_bucket, Key=name)["Body"].read()
        except m.s3.exceptions.NoSuchKey:
            pass
        res = {"rename": out,
               "storage rows describe the stored bytes":
                   all(stored is not None and r["sha256"] == sha(stored) for r in srows),
               "X kept": (stored == x and len(srows) == 1) or
                         (src == x and [r["sha256"] for r in live_rows(m, name)] == [sha(x)])}
        assert res["rename"] in ("ok", errno.EBUSY, errno.EIO), res
        assert res["storage rows describe the stored bytes"] and res["X kept"], res
        # review H1: never an object in the definitive bucket without its row (the swapped
        # copy is removed), and X, kept in inbox/, is promoted by the next mv
        assert stored is None or srows, ("an object without its storage row",
                                         stored is not None and sha(stored) == sha(y))
        if out != "ok":
            os.rename(os.path.join(m.inbox, name), os.path.join(m.projects, p, name))
            assert m.s3.get_object(Bucket=m.storage_bucket, Key=dest)["Body"].read() == x
            assert [r["sha256"] for r in m.sql_dicts(
                "select sha256 from storage_audit where dest_key = %s", (dest,))] == [sha(x)]
    finally:
        px.rule = None
        px.release.set()
        px.close()


@pytest.mark.both_backends  # depends on what the store does (copies, parts, ETags)
def test_a_multipart_source_swapped_during_an_inbox_rename_is_never_vouched_by_etag(
        stack, mount_factory, uniq):
    """F3, inbox rename: the same A-B-A swap during the copy of inbox/a to inbox/b. On 9b5842e
    b's row carries a's hashes (the ETag copied is the row's) although b holds Y, and a (X) is
    deleted. Every live row of a and b must describe the bytes at its key, and X must be kept
    with a live row."""
    from checks import live_rows
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url}})
        a, b = uniq + "-a.bin", uniq + "-b.bin"
        out, x, y = aba_rename(m, stack, px, a, f"/{m.reception_bucket}/{b}",
                               os.path.join(m.inbox, b))
        time.sleep(1)

        def obj(k):
            try:
                return m.s3.get_object(Bucket=m.reception_bucket, Key=k)["Body"].read()
            except m.s3.exceptions.NoSuchKey:
                return None
        have = {k: obj(k) for k in (a, b)}
        live = {k: [r["sha256"] for r in live_rows(m, k)] for k in (a, b)}
        res = {"rename": out,
               "rows describe the bytes": all(have[k] is not None and s == sha(have[k])
                                              for k in (a, b) for s in live[k]),
               "X kept": any(have[k] == x and live[k] == [sha(x)] for k in (a, b))}
        assert res["rename"] in ("ok", errno.EBUSY, errno.EIO), res
        assert res["rows describe the bytes"] and res["X kept"], (res, live)
    finally:
        px.rule = None
        px.release.set()
        px.close()


# ---- review-H M2: a rename over an existing file stages and checks its copy first ----------

STAGING = ".custodyfs-rename"


def all_rows(m, key):
    """Every row of key (removed ones too), in id order: what a failed rename must not touch."""
    return m.sql_dicts("select id, origin, removed_at, removal_reason, etag, size_bytes, sha256,"
                       " received_by from reception_audit where source_bucket = %s and"
                       " object_key = %s order by id", (m.reception_bucket, key))


def staged_keys(m):
    """review-L L1: a rename stages its copy in the storage bucket (custodyfs's own)."""
    keys = set()
    pg = m.s3.get_paginator("list_objects_v2")
    for page in pg.paginate(Bucket=m.storage_bucket, Prefix=STAGING + "/"):
        keys |= {o["Key"] for o in page.get("Contents", [])}
    return keys


def staged_object(m, key):
    return m.s3.get_object(Bucket=m.storage_bucket, Key=key)["Body"].read()


def test_a_refused_rename_over_an_existing_file_leaves_the_file_and_its_rows(stack,
                                                                             mount_factory,
                                                                             uniq):
    """review-H M2: the F3 inbox A-B-A (X swapped for Y and back during the copy) with inbox/b
    holding T (logged) first. On 300854d the copy of Y lands straight on b, its hash is refused
    (EBUSY, "not renamed"), yet T is gone and the undo logs Y as the user's rename over b. A
    refused rename must leave b as it was: its bytes, every row of it, and a's rows; and no
    staged copy may be left behind."""
    from checks import live_rows, write
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url}})
        a, b = uniq + "-a.bin", uniq + "-b.bin"
        t = os.urandom(4096) + b"the target's own content"
        write(os.path.join(m.inbox, b), t)
        m.wait_until(lambda: len(live_rows(m, b)) == 1, timeout=30, what="b's row")
        snap = {}

        def ready():
            snap["a"], snap["b"] = all_rows(m, a), all_rows(m, b)
            snap["staged"] = staged_keys(m)
        # the copy whose source is a, wherever it goes (on 300854d: b itself)
        out, x, y = aba_rename(m, stack, px, a, "", os.path.join(m.inbox, b), on_ready=ready)
        time.sleep(1)

        def obj(k):
            try:
                return m.s3.get_object(Bucket=m.reception_bucket, Key=k)["Body"].read()
            except m.s3.exceptions.NoSuchKey:
                return None
        res = {"rename": out, "b holds t": obj(b) == t, "b holds y": obj(b) == y,
               "a holds x": obj(a) == x,
               "b's live rows": [r["sha256"] for r in live_rows(m, b)] == [sha(t)],
               "b's rows unchanged": all_rows(m, b) == snap["b"],
               "a's rows unchanged": all_rows(m, a) == snap["a"],
               "staged copies left": sorted(staged_keys(m) - snap["staged"])}
        assert res == {"rename": errno.EBUSY, "b holds t": True, "b holds y": False,
                       "a holds x": True, "b's live rows": True, "b's rows unchanged": True,
                       "a's rows unchanged": True, "staged copies left": []}, \
            (res, all_rows(m, b))
        assert sorted(os.listdir(m.inbox)).count(STAGING) == 0
    finally:
        px.rule = None
        px.release.set()
        px.close()


def test_a_rename_over_an_existing_file_copies_through_a_hidden_staging_key(stack,
                                                                            mount_factory,
                                                                            uniq):
    """review-H M2: mv inbox/a inbox/b with b existing copies a to a private staging key
    (.custodyfs-rename/<token> of the storage bucket: review-L L1) and only then to b. While the copy to b is held at the proxy:
    the staged copy holds a's bytes, b still holds its own, and inbox/ neither lists nor
    reaches the staging key. Then b holds a's bytes with the rows of a rename over a file (b's
    old row closed 'replaced by rename from a', a's closed 'renamed to b', b's new live row
    with a's SHA-256), and no staged copy is left."""
    from checks import get_object, live_rows, write
    from races import let_go, rename_in_thread
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url}})
        a, b = uniq + "-ra.txt", uniq + "-rb.txt"
        da, db_ = b"A's bytes\n" * 300, b"B's older bytes\n" * 200
        write(os.path.join(m.inbox, a), da)
        write(os.path.join(m.inbox, b), db_)
        m.wait_until(lambda: len(live_rows(m, a)) == len(live_rows(m, b)) == 1, timeout=30,
                     what="a's and b's rows")
        rb = all_rows(m, b)
        before = staged_keys(m)
        import threading
        import urllib.parse
        held = threading.Event()

        def rule(meth, path, h):
            hk = {k.lower(): v for k, v in h.items()}
            src = urllib.parse.unquote(hk.get("x-amz-copy-source", ""))
            if meth == "PUT" and ("/" + STAGING + "/") in src and \
                    path.split("?")[0].endswith("/" + b):
                held.set()
                return ("hold", 4)
            return None
        px.rule = rule
        th, out = rename_in_thread(m, a, b)
        seen = {}
        if held.wait(30):
            new = sorted(staged_keys(m) - before)
            seen = {"staged": len(new),
                    "staged holds a": len(new) == 1 and staged_object(m, new[0]) == da,
                    "b untouched": get_object(m, b) == db_,
                    "listed": STAGING in os.listdir(m.inbox)}
            for p in [os.path.join(m.inbox, STAGING)] + \
                    [os.path.join(m.inbox, k) for k in new]:
                try:
                    os.stat(p)
                    seen["reached " + p] = True
                except OSError as e:
                    assert e.errno == errno.ENOENT, (p, e)
        let_go(px, th)
        assert not th.is_alive(), "the rename did not return"
        assert seen == {"staged": 1, "staged holds a": True, "b untouched": True,
                        "listed": False}, seen
        assert out == ["ok"], out
        assert get_object(m, b) == da and get_object(m, a) is None
        rows_b = all_rows(m, b)
        assert rows_b[:-1] == [dict(rb[0], removed_at=rows_b[0]["removed_at"],
                                    removal_reason=f"replaced by rename from {a}")], rows_b
        assert rows_b[0]["removed_at"] is not None
        assert [(r["origin"], r["removed_at"] is None, r["sha256"]) for r in rows_b[-1:]] == \
            [("rename", True, sha(da))], rows_b
        assert [(r["removed_at"] is not None, r["removal_reason"]) for r in all_rows(m, a)] == \
            [(True, f"renamed to {b}")]
        assert sorted(staged_keys(m) - before) == []
        names = os.listdir(m.inbox)
        assert b in names and a not in names and STAGING not in names
    finally:
        px.rule = None
        px.release.set()
        px.close()


def test_an_object_put_under_the_staging_prefix_in_the_inbox_is_an_ordinary_upload(
        mount_factory, uniq):
    """review-L L6: the inbox reserves nothing (SPEC 2: every upload is logged once and
    listed). An object put straight to the store (boto3) at inbox .custodyfs-rename/x gets one
    foreign row and shows in inbox/; a staged copy of the storage bucket never shows in
    projects/."""
    from checks import live_rows
    m = mount_factory(config={"fs": {"scan_interval": "1"}})
    planted = f"{STAGING}/{uniq}-planted"
    staged = f"{STAGING}/{uniq}-staged"
    try:
        m.s3.put_object(Bucket=m.reception_bucket, Key=planted, Body=b"a received file")
        m.s3.put_object(Bucket=m.storage_bucket, Key=staged, Body=b"a staged copy")
        m.wait_until(lambda: len(live_rows(m, planted)) == 1, timeout=60, interval=0.5,
                     what="the scan's row for the object under the staging prefix")
        time.sleep(3)  # more scans, each past the grace: still one row
        assert [(r["origin"], r["removed_at"]) for r in all_rows(m, planted)] == \
            [("foreign", None)], all_rows(m, planted)
        assert STAGING in os.listdir(m.inbox)
        assert os.path.basename(planted) in os.listdir(os.path.join(m.inbox, STAGING))
        with open(os.path.join(m.inbox, planted), "rb") as f:
            assert f.read() == b"a received file"
        assert STAGING not in os.listdir(os.path.join(m.mnt, "projects"))
    finally:
        m.s3.delete_object(Bucket=m.storage_bucket, Key=staged)


# ---- F4: a rename moves only what its caller was shown, and logs an arrival first -------------

def test_a_rename_never_closes_the_row_of_a_file_another_upload_replaced(mount, uniq):
    """F4: k (logged, E1) is replaced by another route (G, not logged yet) and at once renamed
    through the mount. On 9b5842e the rename moves G and closes E1's row 'renamed to k2': the
    audit says E1 was renamed, and G's arrival is never logged. rename(2) acts on the name, so
    moving G is right, but only with G's arrival logged first: E1's row closed as replaced,
    G's own row closed as renamed, k2's row with G's hash. While G is too recent to be logged
    (its uploader may still log it) the rename is EBUSY, nothing moved."""
    from checks import rows
    m = mount
    os.mkdir(m.path("inbox", uniq))
    k, k2 = f"{uniq}/k.txt", f"{uniq}/k2.txt"
    e1, g = b"the file as written\n", b"another route replaced it, longer\n"
    with open(m.path("inbox", k), "wb") as f:
        f.write(e1)
    m.wait_until(lambda: len(rows(m, k)) == 1, timeout=30, what="k's row")
    assert os.stat(m.path("inbox", k)).st_size == len(e1)
    m.s3.put_object(Bucket=m.reception_bucket, Key=k, Body=g)
    first = None
    try:
        os.rename(m.path("inbox", k), m.path("inbox", k2))
        first = "ok"
    except OSError as e:
        first = e.errno
    deadline = time.monotonic() + 60
    out = first
    while out != "ok" and time.monotonic() < deadline:
        time.sleep(1)
        os.listdir(m.path("inbox", uniq))
        try:
            if os.stat(m.path("inbox", k)).st_size != len(g):
                continue
            os.rename(m.path("inbox", k), m.path("inbox", k2))
            out = "ok"
        except OSError as e:
            out = e.errno
    got = m.s3.get_object(Bucket=m.reception_bucket, Key=k2)["Body"].read() if out == "ok" \
        else None
    rk = [(r["origin"], r["sha256"], r["removal_reason"]) for r in rows(m, k)]
    rk2 = [(r["origin"], r["sha256"], r["removal_reason"]) for r in rows(m, k2)]
    res = {"first": first, "then": out, "k2": got, "k rows": rk, "k2 rows": rk2}
    assert res["first"] in (errno.EBUSY, "ok"), res
    res["first"] = "EBUSY or ok"
    assert res == {"first": "EBUSY or ok", "then": "ok", "k2": g,
                   "k rows": [("mount", sha(e1), "replaced by a new upload"),
                              ("foreign", sha(g), f"renamed to {k2}")],
                   "k2 rows": [("rename", sha(g), None)]}, res


# ---- review-H: the F3/F4 fix reviewed --------------------------------------------------------

def test_a_rename_never_closes_the_row_of_an_upload_committed_during_its_copy(stack,
                                                                              mount_factory,
                                                                              uniq):
    """H2: m1 renames k to k2; its copy of E lands (answer held at the proxy); meanwhile user
    writes G to k through m2 and close() returns 0 (G's row committed). On 55c046f m1's rows
    then close G's row 'renamed to k2' (k2 holds E), and the next look at k takes G for the
    rename's leftover and deletes it: a committed file lost. The rename must fail EBUSY with
    its copy undone, and G stay at k with its live row."""
    from checks import live_rows, rows, write
    from races import let_go, rename_in_thread
    px = FaultProxy(stack.endpoint)
    try:
        m1 = mount_factory(config={"s3": {"endpoint": px.url}}, name="m1")
        m2 = mount_factory(reset=False, name="m2")
        os.mkdir(m1.path("inbox", uniq))
        k, k2 = f"{uniq}/k.txt", f"{uniq}/k2.txt"
        e, g = b"E" * 1000, b"G, written on m2 during m1's copy\n"
        write(m1.path("inbox", k), e)
        m1.wait_until(lambda: len(live_rows(m1, k)) == 1, timeout=30, what="k's row")

        def rule(meth, path, h):
            hk = {x.lower(): v for x, v in h.items()}
            if meth == "PUT" and "x-amz-copy-source" in hk and \
                    path.split("?")[0].endswith("/" + k2):
                return ("late", 5)
            return None
        px.rule = rule
        t, out = rename_in_thread(m1, k, k2)
        m1.wait_until(lambda: any(a == "late" for _, _, a in px.log), timeout=30,
                      what="the copy landed, its answer held")
        write(m2.path("inbox", k), g)
        assert [r["sha256"] for r in live_rows(m2, k)] == [sha(g)]
        let_go(px, t)
        assert not t.is_alive(), "the rename did not return"
        for _ in range(3):
            os.listdir(m1.path("inbox", uniq))
            os.listdir(m2.path("inbox", uniq))
            time.sleep(1.5)
        try:
            at_k = m1.s3.get_object(Bucket=m1.reception_bucket, Key=k)["Body"].read()
        except m1.s3.exceptions.NoSuchKey:
            at_k = None
        k2_in_store = "Contents" in m1.s3.list_objects_v2(Bucket=m1.reception_bucket,
                                                           Prefix=k2)
        # (review L3: the rename's in-flight marker of k2 goes with its undone copy, else
        # renames away from k2 keep their source for its hour-long lease)
        marker = m1.sql_value("select count(*) from file_attrs_pending where bucket = %s"
                              " and object_key = %s", (m1.reception_bucket + "/renaming", k2))
        res = {"rename": out, "k": at_k, "k live": [r["sha256"] for r in live_rows(m1, k)],
               "k2 in store": k2_in_store, "k2 rows": len(rows(m1, k2)), "k2 marker": marker}
        assert res == {"rename": ["EBUSY"], "k": g, "k live": [sha(g)],
                       "k2 in store": False, "k2 rows": 0, "k2 marker": 0}, res
    finally:
        px.rule = None
        px.release.set()
        px.close()


def test_a_rename_logs_a_same_bytes_reupload_it_moves(mount, uniq):
    """M1: a.txt is written and renamed to b.txt; seconds later another route uploads the very
    same bytes to a.txt, and a.txt is renamed to c.txt. On 55c046f the mount still takes
    (a.txt, its ETag) for logged, so the re-upload is moved with no row of its arrival. Its
    arrival must be logged (foreign) and then closed as renamed to c.txt."""
    from checks import rows, write
    m = mount
    os.mkdir(m.path("inbox", uniq))
    a, b, c = (f"{uniq}/{n}.txt" for n in "abc")
    body = b"same bytes twice\n"
    write(m.path("inbox", a), body)
    m.wait_until(lambda: len(rows(m, a)) == 1, timeout=30, what="a's row")
    os.rename(m.path("inbox", a), m.path("inbox", b))
    time.sleep(3)
    m.s3.put_object(Bucket=m.reception_bucket, Key=a, Body=body)
    out, deadline = None, time.monotonic() + 60
    while out != "ok" and time.monotonic() < deadline:
        try:
            os.rename(m.path("inbox", a), m.path("inbox", c))
            out = "ok"
        except OSError as e:
            out = e.errno
            time.sleep(1)
    ra = [(r["origin"], r["removal_reason"]) for r in rows(m, a)]
    rc_ = [(r["origin"], r["removed_at"] is None) for r in rows(m, c)]
    res = {"rename": out, "a rows": ra, "c rows": rc_}
    assert res == {"rename": "ok",
                   "a rows": [("mount", f"renamed to {b}"), ("foreign", f"renamed to {c}")],
                   "c rows": [("rename", True)]}, res


def test_a_directory_rename_moves_every_file_or_none(mount_factory, uniq):
    """M6: a directory holds a logged file and an upload by another route too recent to log
    (the grace period is long here). On 55c046f the rename moves the first file, then stops
    EBUSY at the second: half a directory renamed, and a retry fails ENOTEMPTY. It must fail
    before moving anything."""
    from checks import live_rows, write
    m = mount_factory(config={"fs": {"foreign_grace_ms": "120000"}})
    os.mkdir(m.path("inbox", uniq))
    d = f"{uniq}/d"
    os.mkdir(m.path("inbox", d))
    write(m.path("inbox", d, "a.txt"), b"logged\n")
    assert len(live_rows(m, f"{d}/a.txt")) == 1
    m.s3.put_object(Bucket=m.reception_bucket, Key=f"{d}/b.txt", Body=b"not logged yet\n")
    os.listdir(m.path("inbox", d))
    with pytest.raises(OSError) as ei:
        os.rename(m.path("inbox", d), m.path("inbox", f"{uniq}/d2"))
    keys = sorted(o["Key"] for o in m.s3.list_objects_v2(
        Bucket=m.reception_bucket, Prefix=uniq + "/").get("Contents", []))
    res = {"errno": ei.value.errno, "keys": [k for k in keys if not k.endswith("/")],
           "a live": len(live_rows(m, f"{d}/a.txt"))}
    assert res == {"errno": errno.EBUSY, "keys": [f"{d}/a.txt", f"{d}/b.txt"],
                   "a live": 1}, res


# ---- review-K: the rows of a rename and what is at its target --------------------------------

@pytest.mark.parametrize("other", ["write", "rename", "rm"])
def test_a_renames_rows_match_what_is_at_its_target(stack, mount_factory, uniq, other):
    """K1: m1 renames a to b; its copy of E lands at b (answer held at the proxy). Meanwhile on
    m2 b is written (G, close() returns 0), or c (G, logged) is renamed over b, or b is
    removed. On 300854d m1's rows then close every live row of b 'replaced by rename from a'
    and insert a live row for b with E's hash: the audit says b holds E while the store holds
    G (or nothing). The rename did happen and something then replaced or removed its result:
    a's row is closed 'renamed to b', b's rename row is logged already removed, and b's live
    rows (G's) are left alone. Every row of a, b and c is counted."""
    from checks import get_object, rows
    from races import let_go, rename_in_thread
    px = FaultProxy(stack.endpoint)
    try:
        m1 = mount_factory(config={"s3": {"endpoint": px.url}}, name="m1")
        m2 = mount_factory(reset=False, name="m2")
        os.mkdir(m1.path("inbox", uniq))
        a, b, c = (f"{uniq}/{n}.txt" for n in "abc")
        e, g = b"E: renamed on m1\n", b"G: from m2 during m1's rename\n"
        with open(m1.path("inbox", a), "wb") as f:
            f.write(e)
        m1.wait_until(lambda: len(rows(m1, a)) == 1, timeout=30, what="a's row")
        if other == "rename":
            with open(m2.path("inbox", c), "wb") as f:
                f.write(g)
            m2.wait_until(lambda: len(rows(m2, c)) == 1, timeout=30, what="c's row")

        def rule(meth, path, h):
            if meth == "PUT" and path.split("?")[0].endswith("/" + b) and \
                    any(k.lower() == "x-amz-copy-source" for k in h.keys()):
                return ("late", 8)  # (only m1 goes through the proxy)
            return None
        px.rule = rule
        t, out = rename_in_thread(m1, a, b)
        m1.wait_until(lambda: any(act == "late" for _, _, act in px.log), timeout=30,
                      what="the copy of a to b landed, its answer held")
        m2.wait_until(lambda: b.split("/")[1] in os.listdir(m2.path("inbox", uniq)),
                      timeout=30, what="m2 lists the copy at b")
        if other == "write":
            with open(m2.path("inbox", b), "wb") as f:
                f.write(g)  # close() returns 0: G's row is committed
        elif other == "rename":
            os.rename(m2.path("inbox", c), m2.path("inbox", b))
        else:
            os.unlink(m2.path("inbox", b))
        let_go(px, t)
        assert not t.is_alive(), "the rename did not return"
        time.sleep(1)

        def rs(key):
            return [(r["origin"], r["sha256"], r["removed_at"] is None,
                     (r["removal_reason"] or "").split(" before ")[0]) for r in rows(m1, key)]
        gone = "replaced or removed"
        res = {"rename": out, "a": get_object(m1, a), "b": get_object(m1, b),
               "a rows": rs(a), "b rows": rs(b), "c rows": rs(c)}
        want = {"rename": ["ok"], "a": None, "b": None if other == "rm" else g,
                "a rows": [("mount", sha(e), False, f"renamed to {b}")],
                "b rows": {"write": [("mount", sha(g), True, ""),
                                     ("rename", sha(e), False, gone)],
                           "rename": [("rename", sha(g), True, ""),
                                      ("rename", sha(e), False, gone)],
                           "rm": [("rename", sha(e), False, gone)]}[other],
                "c rows": [("mount", sha(g), False, f"renamed to {b}")]
                if other == "rename" else []}
        assert res == want, res
    finally:
        px.rule = None
        px.release.set()
        px.close()


def test_a_rename_whose_commit_answer_is_lost_never_leaves_a_foreign_copy(mount_factory, uniq):
    """K4: the connection is lost during the COMMIT of a rename's rows and the COMMIT did not
    happen (a deferred trigger on the deletion of the rename's in-flight marker, in that
    transaction, holds the COMMIT; the backend is terminated meanwhile). On 300854d the rename
    keeps both objects and returns EIO, and the next scan logs the unrowed copy at b as a
    'foreign' arrival. The outcome must be read back: the rows did not commit, so the copy is
    undone, a stays with its row, and b has no object and no row."""
    import threading
    from checks import get_object, rows
    m = mount_factory(config={"fs": {"foreign_grace_ms": 1000}})
    os.mkdir(m.path("inbox", uniq))
    a, b = f"{uniq}/a.txt", f"{uniq}/b.txt"
    e = b"E: its rename's COMMIT is lost\n"
    with open(m.path("inbox", a), "wb") as f:
        f.write(e)
    m.wait_until(lambda: len(rows(m, a)) == 1, timeout=30, what="a's row")
    m.sql("create or replace function k4_sleep() returns trigger language plpgsql as"
          " $$ begin perform pg_sleep(10); return null; end $$")
    m.sql("create constraint trigger k4 after delete on file_attrs_pending deferrable"
          " initially deferred for each row when (old.bucket like '%/renaming')"
          " execute function k4_sleep()")
    killed = []

    def killer():
        deadline = time.monotonic() + 30
        while not killed and time.monotonic() < deadline:
            killed.extend(m.sql("select pg_terminate_backend(pid) from pg_stat_activity"
                                " where query = 'COMMIT' and wait_event = 'PgSleep'"))
            time.sleep(0.1)
    th = threading.Thread(target=killer, daemon=True)
    th.start()
    out = "ok"
    try:
        os.rename(m.path("inbox", a), m.path("inbox", b))
    except OSError as ex:
        out = errno.errorcode.get(ex.errno, ex.errno)
    finally:
        th.join(35)
        m.sql("drop trigger if exists k4 on file_attrs_pending")
    assert killed, "the rows' COMMIT was never held"
    for _ in range(3):  # past the grace: a scan of b would log an unrowed copy
        time.sleep(1.5)
        os.listdir(m.path("inbox", uniq))
    time.sleep(1)

    def rs(key):
        return [(r["origin"], r["removed_at"] is None) for r in rows(m, key)]
    res = {"rename": out, "a": get_object(m, a), "b": get_object(m, b),
           "a rows": rs(a), "b rows": rs(b)}
    assert res == {"rename": "EIO", "a": e, "b": None,
                   "a rows": [("mount", True)], "b rows": []}, res
