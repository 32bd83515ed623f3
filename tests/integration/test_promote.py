"""Promotion: rename(inbox/<file>, projects/<prefix>/<name>) (SPEC §3, issue 6 items 2-3).

Every outcome, checked with boto3 (the objects, their metadata) and psycopg2 (every row of the
key in storage_audit and reception_audit, removed ones too, and the promotion journal), never
through the mount. The project is created by an INSERT into projects_registry (mkdir in
projects/ is another change)."""
import base64
import errno
import hashlib
import os
import signal
import threading
import time

import pytest
from botocore.exceptions import ClientError

import checks
from checks import drop, project, promote

CUSTODYFS_CONFIG = {"fs": {"promote_workers": "3"}}


# ---- helpers ---------------------------------------------------------------------------------

def srows(m, key):
    """Every storage_audit row of key, oldest first."""
    return m.sql_dicts("select * from storage_audit where dest_key = %s order by id", (key,))


def journal(m, key):
    return m.sql_dicts("select * from promotion_journal where dest_key = %s order by id", (key,))


def dhead(m, key):
    try:
        return m.s3.head_object(Bucket=m.storage_bucket, Key=key)
    except ClientError as e:
        if e.response["Error"]["Code"] in ("NoSuchKey", "404", "NotFound"):
            return None
        raise


def dget(m, key):
    return m.s3.get_object(Bucket=m.storage_bucket, Key=key)["Body"].read()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def check_stored(m, key, data, src_name, outcomes):
    """The object of key holds data, with our hashes as metadata; its rows are exactly
    `outcomes` (oldest first), each with the data's hashes; the source is gone from the
    reception bucket and every one of its rows is removed with a 'promoted to' reason."""
    assert dget(m, key) == data
    h = dhead(m, key)
    assert h["Metadata"]["sha256"] == sha(data)
    assert h["Metadata"]["xxh128"] == m.xxh128_bytes(data)
    rows = srows(m, key)
    assert [r["outcome"] for r in rows] == outcomes
    for r in rows:
        assert r["sha256"] == sha(data) and r["size_bytes"] == len(data)
        assert r["dest_bucket"] == m.storage_bucket
        assert r["project_prefix"] == key.split("/")[0]
        assert r["project_name"] == "Projeto " + key.split("/")[0]
        assert r["moved_by"] and str(os.getuid()) in r["moved_by"]
    assert checks.get_object(m, src_name) is None
    rrows = checks.rows(m, src_name)
    assert rrows and all(r["removed_at"] is not None for r in rrows)
    assert rrows[-1]["removal_reason"] == "promoted to %s/%s" % (m.storage_bucket, key)
    assert rows[-1]["reception_id"] == rrows[-1]["id"]
    # (entries refused before anything was stored end 'failed'; the tests count those)
    assert [j["state"] for j in journal(m, key) if j["state"] != "failed"] == \
        ["done"] * len(outcomes)
    return rows


# ---- outcomes --------------------------------------------------------------------------------

def test_copied_then_duplicate_keeps_object_untouched(mount, uniq):
    m = mount
    p = project(m, uniq)
    data = os.urandom(70000)
    drop(m, uniq + "-a.bin", data)
    promote(m, uniq + "-a.bin", p, "a.bin")
    key = p + "/a.bin"
    check_stored(m, key, data, uniq + "-a.bin", ["copied"])
    first = dhead(m, key)
    assert not os.path.exists(os.path.join(m.inbox, uniq + "-a.bin"))

    time.sleep(1.1)  # LastModified has a one-second resolution
    drop(m, uniq + "-a.bin", data)
    promote(m, uniq + "-a.bin", p, "a.bin")
    rows = check_stored(m, key, data, uniq + "-a.bin", ["copied", "duplicate"])
    again = dhead(m, key)
    assert again["LastModified"] == first["LastModified"]
    assert again["ETag"] == first["ETag"]
    assert len(checks.rows(m, uniq + "-a.bin")) == 2
    assert rows[1]["reception_id"] != rows[0]["reception_id"]


@pytest.mark.parametrize("name", ["a b.txt", 'q"uote.txt', "plus+sign.txt", "pct%20.txt",
                                  "amp&eq=.txt", "ção é.txt", "tilde~semi;.txt"])
def test_names_with_characters_urls_escape_are_promoted(mount, uniq, name):
    """The copy source is the key URL-encoded as S3 asks: a space, a quote, '+', '%', '&',
    '=' or UTF-8 in a name neither fails the copy nor copies another key."""
    m = mount
    p = project(m, uniq)
    data = os.urandom(3000)
    src = uniq + "-" + name
    drop(m, src, data)
    if m.stack.backend == "s3rver" and any(c in name for c in "+&=;"):
        # s3rver decodes x-amz-copy-source with decodeURI, which leaves %2B %26 %3D %3B as
        # they are (lib/controllers/object.js): boto3's own copy fails there the same way.
        # On such a store the rename fails cleanly and loses nothing.
        with pytest.raises(ClientError):
            m.s3.copy_object(Bucket=m.storage_bucket, Key=uniq + "-boto3",
                             CopySource={"Bucket": m.reception_bucket, "Key": src})
        with pytest.raises(OSError):
            promote(m, src, p, name)
        assert checks.get_object(m, src) == data and len(checks.live_rows(m, src)) == 1
        assert srows(m, p + "/" + name) == []
        assert m.s3.list_objects_v2(Bucket=m.storage_bucket, Prefix=p + "/").get("KeyCount") == 0
        return
    promote(m, src, p, name)
    check_stored(m, p + "/" + name, data, src, ["copied"])
    assert os.listdir(os.path.join(m.projects, p)) == [name]


def test_conflict_is_eexist_and_keeps_both(mount, uniq):
    m = mount
    p = project(m, uniq)
    a, b = b"first content\n", b"other content\n"
    drop(m, uniq + "-c.txt", a)
    promote(m, uniq + "-c.txt", p, "c.txt")
    drop(m, uniq + "-c.txt", b)
    with pytest.raises(OSError) as ei:
        promote(m, uniq + "-c.txt", p, "c.txt")
    assert ei.value.errno == errno.EEXIST
    assert dget(m, p + "/c.txt") == a
    assert [r["outcome"] for r in srows(m, p + "/c.txt")] == ["copied"]
    assert checks.get_object(m, uniq + "-c.txt") == b
    assert checks.read(os.path.join(m.inbox, uniq + "-c.txt")) == b
    live = checks.live_rows(m, uniq + "-c.txt")
    assert len(live) == 1 and live[0]["sha256"] == sha(b)
    assert len(checks.rows(m, uniq + "-c.txt")) == 2
    assert [j["state"] for j in journal(m, p + "/c.txt")] == ["done"]


def test_vanished_object_is_restored(mount, uniq):
    m = mount
    p = project(m, uniq)
    data = b"restore me " * 1000
    drop(m, uniq + "-r.txt", data)
    promote(m, uniq + "-r.txt", p, "r.txt")
    m.s3.delete_object(Bucket=m.storage_bucket, Key=p + "/r.txt")
    drop(m, uniq + "-r.txt", data)
    promote(m, uniq + "-r.txt", p, "r.txt")
    check_stored(m, p + "/r.txt", data, uniq + "-r.txt", ["copied", "restored"])


def test_object_without_row_is_adopted_by_its_bytes(mount, uniq):
    m = mount
    p = project(m, uniq)
    data = os.urandom(5000)
    # Put by another client, with no row and no metadata of ours.
    m.s3.put_object(Bucket=m.storage_bucket, Key=p + "/ad.bin", Body=data)
    before = dhead(m, p + "/ad.bin")
    drop(m, uniq + "-ad.bin", data)
    promote(m, uniq + "-ad.bin", p, "ad.bin")
    rows = srows(m, p + "/ad.bin")
    assert [r["outcome"] for r in rows] == ["adopted"]
    assert rows[0]["sha256"] == sha(data) and rows[0]["size_bytes"] == len(data)
    assert dget(m, p + "/ad.bin") == data
    assert dhead(m, p + "/ad.bin")["ETag"] == before["ETag"]
    assert checks.get_object(m, uniq + "-ad.bin") is None
    assert all(r["removed_at"] for r in checks.rows(m, uniq + "-ad.bin"))


def test_adopted_object_then_same_content_is_duplicate(mount, uniq):
    # an adopted object keeps its own (no) metadata: the double check hashes its bytes
    m = mount
    p = project(m, uniq)
    data = os.urandom(4096)
    m.s3.put_object(Bucket=m.storage_bucket, Key=p + "/ad2.bin", Body=data)
    drop(m, uniq + "-ad2.bin", data)
    promote(m, uniq + "-ad2.bin", p, "ad2.bin")
    before = dhead(m, p + "/ad2.bin")
    drop(m, uniq + "-ad2.bin", data)
    promote(m, uniq + "-ad2.bin", p, "ad2.bin")
    assert [r["outcome"] for r in srows(m, p + "/ad2.bin")] == ["adopted", "duplicate"]
    assert dhead(m, p + "/ad2.bin")["ETag"] == before["ETag"]
    assert checks.get_object(m, uniq + "-ad2.bin") is None
    assert len(checks.rows(m, uniq + "-ad2.bin")) == 2
    assert all(r["removed_at"] for r in checks.rows(m, uniq + "-ad2.bin"))


def test_metadata_is_never_trusted_for_adoption(mount, uniq):
    m = mount
    p = project(m, uniq)
    mine, theirs = b"what the user drops\n", b"what another client put\n"
    # Another client claims our hash in metadata over different bytes.
    m.s3.put_object(Bucket=m.storage_bucket, Key=p + "/fake.txt", Body=theirs,
                    Metadata={"sha256": sha(mine), "xxh128": m.xxh128_bytes(mine)})
    drop(m, uniq + "-fake.txt", mine)
    with pytest.raises(OSError) as ei:
        promote(m, uniq + "-fake.txt", p, "fake.txt")
    assert ei.value.errno == errno.EEXIST
    assert dget(m, p + "/fake.txt") == theirs
    assert srows(m, p + "/fake.txt") == []
    assert checks.get_object(m, uniq + "-fake.txt") == mine
    assert len(checks.live_rows(m, uniq + "-fake.txt")) == 1


def test_same_content_under_another_key_is_duplicate_content(mount, uniq):
    m = mount
    p = project(m, uniq)
    data = os.urandom(3000)
    drop(m, uniq + "-d1.bin", data)
    promote(m, uniq + "-d1.bin", p, "d1.bin")
    drop(m, uniq + "-d2.bin", data)
    promote(m, uniq + "-d2.bin", p, "d2.bin")
    rows = srows(m, p + "/d2.bin")
    assert [r["outcome"] for r in rows] == ["duplicate_content"]
    assert rows[0]["duplicate_of"] == p + "/d1.bin"
    assert rows[0]["sha256"] == sha(data)
    assert dhead(m, p + "/d2.bin") is None  # nothing copied
    assert [r["outcome"] for r in srows(m, p + "/d1.bin")] == ["copied"]
    assert checks.get_object(m, uniq + "-d2.bin") is None
    assert all(r["removed_at"] for r in checks.rows(m, uniq + "-d2.bin"))


def test_dedup_path_stores_each_key(mount_factory, uniq):
    m = mount_factory(config={"fs": {"dedup": "path"}})
    p = project(m, uniq)
    data = os.urandom(3000)
    drop(m, "p1.bin", data)
    promote(m, "p1.bin", p)
    drop(m, "p2.bin", data)
    promote(m, "p2.bin", p)
    check_stored(m, p + "/p1.bin", data, "p1.bin", ["copied"])
    check_stored(m, p + "/p2.bin", data, "p2.bin", ["copied"])


def test_foreign_object_keeps_content_type_and_metadata(mount, uniq):
    m = mount
    p = project(m, uniq)
    data = os.urandom(2048)
    word = "=?UTF-8?B?%s?=" % base64.b64encode("Relatório ção".encode()).decode()
    name = uniq + "-f.bin"
    headers = {"ContentDisposition": 'attachment; filename="r.bin"', "ContentEncoding": "gzip",
               "ContentLanguage": "pt-BR", "CacheControl": "max-age=60"}
    m.s3.put_object(Bucket=m.reception_bucket, Key=name, Body=data,
                    ContentType="application/x-custody-test",
                    Metadata={"title": word, "sha256": "0" * 64}, **headers)
    m.wait_until(lambda: os.path.exists(os.path.join(m.inbox, name)), what="listed")
    promote(m, name, p, "f.bin")
    h = dhead(m, p + "/f.bin")
    assert h["ContentType"] == "application/x-custody-test"
    # the content headers the source has are kept (review R3)
    assert {k: h.get(k) for k in headers} == headers
    import email.header
    got = email.header.decode_header(h["Metadata"]["title"])[0]
    assert got[0].decode(got[1]) == "Relatório ção"
    # the hash on the stored object is ours, from the bytes, not the uploader's
    assert h["Metadata"]["sha256"] == sha(data)
    rows = srows(m, p + "/f.bin")
    assert [r["outcome"] for r in rows] == ["copied"] and rows[0]["sha256"] == sha(data)
    rrows = checks.rows(m, name)
    assert len(rrows) == 1 and rrows[0]["sha256"] == sha(data)
    assert rrows[0]["removed_at"] is not None


def test_missing_project_is_enoent(mount, uniq):
    m = mount
    drop(m, uniq + "-np.txt", b"x")
    with pytest.raises(OSError) as ei:
        promote(m, uniq + "-np.txt", uniq + "-nope", "np.txt")
    assert ei.value.errno == errno.ENOENT
    assert checks.get_object(m, uniq + "-np.txt") == b"x"
    assert len(checks.live_rows(m, uniq + "-np.txt")) == 1


def test_file_open_for_writing_is_ebusy(mount, uniq):
    m = mount
    p = project(m, uniq)
    path = os.path.join(m.inbox, uniq + "-open.txt")
    with open(path, "wb") as f:
        f.write(b"not yet closed")
        f.flush()
        with pytest.raises(OSError) as ei:
            os.rename(path, os.path.join(m.projects, p, "open.txt"))
        assert ei.value.errno == errno.EBUSY
    assert dhead(m, p + "/open.txt") is None
    promote(m, uniq + "-open.txt", p, "open.txt")
    check_stored(m, p + "/open.txt", b"not yet closed", uniq + "-open.txt", ["copied"])


# ---- multipart copy, guarded copy, faults ----------------------------------------------------

@pytest.fixture
def proxied(stack, mount_factory):
    from faultproxy import FaultProxy
    px = FaultProxy(stack.endpoint)
    yield px
    px.rule = None
    px.release.set()


def test_multipart_copy_above_threshold(stack, mount_factory, proxied, uniq):
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url, "multipart_copy_threshold": "5M"},
                              "fs": {"part_size": "5M", "promote_workers": "3"}})
    p = project(m, uniq)
    data = os.urandom((12 << 20) + 777)
    drop(m, "big.bin", data)
    del px.log[:]
    promote(m, "big.bin", p)
    check_stored(m, p + "/big.bin", data, "big.bin", ["copied"])
    parts = [path for meth, path, a in list(px.log)
             if meth == "PUT" and "/storage-unique/" in path and "partNumber=" in path]
    if stack.upload_part_copy:
        # (Swift refuses the If-Match of a multipart source: a first upload may be refused,
        # the copy is then made again without it, checked by HEAD)
        last = parts[-1].split("uploadId=")[1]
        nums = sorted(int(x.split("partNumber=")[1].split("&")[0]) for x in parts
                      if x.endswith("uploadId=" + last))
        assert nums == [1, 2, 3], "not three UploadPartCopy requests: %r" % parts
        assert dhead(m, p + "/big.bin")["ETag"].strip('"').endswith("-3")
    else:
        assert parts, "no UploadPartCopy was tried"

        # s3rver answers UploadPartCopy NotImplemented: one CopyObject instead
        assert "UploadPartCopy not implemented" in m.daemon_log()


def test_source_replaced_during_copy_stores_nothing(stack, mount_factory, proxied, uniq):
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    p = project(m, uniq)
    old, new = b"old bytes\n" * 100, b"new bytes!\n" * 100
    drop(m, "rep.txt", old)
    done = []

    def rule(meth, path, h):
        # the copy request: first replace its source behind the mount's back
        if meth == "PUT" and "x-amz-copy-source" in {k.lower() for k in h.keys()} and not done:
            done.append(1)
            stack.s3.put_object(Bucket=m.reception_bucket, Key="rep.txt", Body=new)
        return None
    px.rule = rule
    with pytest.raises(OSError) as ei:
        promote(m, "rep.txt", p)
    px.rule = None
    assert done, "no copy request was seen"
    assert ei.value.errno == errno.EBUSY
    assert dhead(m, p + "/rep.txt") is None
    assert srows(m, p + "/rep.txt") == []
    assert checks.get_object(m, "rep.txt") == new  # the newer upload stays
    assert [j["state"] for j in journal(m, p + "/rep.txt")] == ["failed"]


def test_source_replaced_after_the_copy_promotes_the_copied_upload(stack, mount_factory,
                                                                     proxied, uniq):
    """The source is replaced once the copy has taken effect at the store (its answer still
    on the way). The copy answered the promoted upload's own ETag (the MD5 of the bytes it
    copied): those bytes are stored, verified and recorded, no HEAD of the source after the
    copy is needed to know it; the newer upload stays in reception, untouched. (Before, that
    HEAD saw the newer upload and the rename failed EBUSY although the right bytes had been
    copied.)"""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    p = project(m, uniq)
    old, new = b"promoted bytes\n" * 100, b"a newer upload\n" * 100
    drop(m, "late.txt", old)
    seen, replaced = [], []

    def replace_once_copied():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if dhead(m, p + "/late.txt") is not None:  # the copy took effect
                stack.s3.put_object(Bucket=m.reception_bucket, Key="late.txt", Body=new)
                replaced.append(1)
                return
            time.sleep(0.05)

    def rule(meth, path, h):
        if meth == "PUT" and "x-amz-copy-source" in {k.lower() for k in h.keys()} and not seen:
            seen.append(1)
            threading.Thread(target=replace_once_copied, daemon=True).start()
            return ("late", 3)  # forwarded; its answer held while the source is replaced
        return None
    px.rule = rule
    promote(m, "late.txt", p)
    px.rule = None
    assert seen and replaced, "the copy was not seen, or the source not replaced in time"
    assert dget(m, p + "/late.txt") == old
    rows = srows(m, p + "/late.txt")
    assert [r["outcome"] for r in rows] == ["copied"] and rows[0]["sha256"] == sha(old)
    assert dhead(m, p + "/late.txt")["Metadata"]["sha256"] == sha(old)
    assert checks.get_object(m, "late.txt") == new  # the newer upload stays
    rr = checks.rows(m, "late.txt")
    assert rr[0]["sha256"] == sha(old) and rr[0]["removed_at"] is not None
    assert rr[0]["removal_reason"] == "promoted to %s/%s" % (m.storage_bucket, p + "/late.txt")
    assert rows[0]["reception_id"] == rr[0]["id"]
    assert all(r["removed_at"] is None and r["sha256"] in (None, sha(new)) for r in rr[1:])
    assert [j["state"] for j in journal(m, p + "/late.txt")] == ["done"]


@pytest.mark.parametrize("after", ["remount", "retry", "other"])
def test_store_outage_fails_rename_and_leaves_nothing_half_done(stack, mount_factory, proxied,
                                                                 uniq, after):
    px = proxied
    from faultproxy import INTERNAL
    m = mount_factory(config={"s3": {"endpoint": px.url, "max_retries": "1"}})
    p = project(m, uniq)
    data = os.urandom(4000)
    drop(m, "out.bin", data)
    # the storage bucket goes down right after the decision's HEAD: the intent is committed,
    # then the copy and every check of the destination fail (before it, the kernel's lookup
    # of the destination lists the project: that listing goes through)
    heads = []

    def rule(meth, path, h):
        if "/storage-unique" not in path:
            return None
        if meth in ("HEAD", "GET") and not journal(m, p + "/out.bin"):
            if meth == "HEAD":
                heads.append(path)  # the decision's look at the key
            return None
        return ("status", 500, INTERNAL)
    px.rule = rule
    with pytest.raises(OSError) as ei:
        promote(m, "out.bin", p)
    assert ei.value.errno in (errno.EIO, errno.EAGAIN)
    px.rule = None
    assert heads, "the decision never looked at the destination"
    # nothing half-done: no row, the file still received; the journal says what was meant
    assert [j["state"] for j in journal(m, p + "/out.bin")] == ["intent"]
    assert srows(m, p + "/out.bin") == []
    assert dhead(m, p + "/out.bin") is None
    assert checks.get_object(m, "out.bin") == data
    assert len(checks.live_rows(m, "out.bin")) == 1
    if after == "other":
        # another file for the same key, in the same mount: the entry left open is
        # finished first (not waited for), and the other file is then a conflict
        other = b"other content for the same name\n"
        drop(m, "other.bin", other)
        with pytest.raises(OSError) as ei:
            promote(m, "other.bin", p, "out.bin")
        assert ei.value.errno == errno.EEXIST
        check_stored(m, p + "/out.bin", data, "out.bin", ["copied"])
        assert checks.get_object(m, "other.bin") == other
        assert len(checks.live_rows(m, "other.bin")) == 1
        return
    if after == "retry":
        # the store is back: the same mount's next rename of the file finishes the entry
        promote(m, "out.bin", p)
        check_stored(m, p + "/out.bin", data, "out.bin", ["copied"])
        return
    # after the store returns: a remount recovers what was left open (here: the copy is
    # redone, the entry rolled forward), or the promotion then goes through once
    m.restart()
    _no_open_entries(m)
    if checks.get_object(m, "out.bin") is not None:
        # rolled back: nothing stored, the file still received
        assert srows(m, p + "/out.bin") == [] and dhead(m, p + "/out.bin") is None
        assert len(checks.live_rows(m, "out.bin")) == 1
        promote(m, "out.bin", p)
    # else rolled forward by the recovery (the entry's copy was redone)
    check_stored(m, p + "/out.bin", data, "out.bin", ["copied"])


def test_kill_during_copy_then_recovery(stack, mount_factory, proxied, uniq):
    """SIGKILL while a copy is held at the store (it took effect; its answer is late), then a
    remount: recovery finishes the promotion from the journal, file by file invariants hold."""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    p = project(m, uniq)
    files = {"k%d.bin" % i: os.urandom(1000 + i) for i in range(4)}
    for n, b in files.items():
        drop(m, n, b)
    promote(m, "k0.bin", p)  # one done before the crash
    px.rule = lambda meth, path, h: (("late", 30) if meth == "PUT" and "/storage-unique/" in path
                                     and "k1.bin" in path else None)
    t = threading.Thread(target=lambda: _try_promote(m, "k1.bin", p), daemon=True)
    t.start()
    m.wait_until(lambda: any(j["state"] == "intent" for j in journal(m, p + "/k1.bin")),
                 timeout=20, what="journal intent")
    m.wait_until(lambda: any("k1.bin" in path and meth == "PUT" for meth, path, a in
                             list(px.log)), timeout=20, what="copy sent")
    time.sleep(0.5)
    m.crash(signal.SIGKILL)
    px.rule = None
    px.release.set()
    m.mount()
    t.join(5)
    _invariants(m, p, files)
    # the files not touched by the crash promote normally after it
    for n in ("k2.bin", "k3.bin"):
        promote(m, n, p)
    _invariants(m, p, files)
    for n in files:
        assert checks.get_object(m, n) is None
        assert dget(m, p + "/" + n) == files[n]


def _try_promote(m, name, p):
    try:
        promote(m, name, p)
    except OSError:
        pass


def _no_open_entries(m):
    # recovery runs as the mount starts; the mount point may appear a moment before it ends
    m.wait_until(lambda: m.sql_value("select count(*) from promotion_journal"
                                     " where state in ('intent', 'stored')") == 0,
                 timeout=30, what="no open journal entry")


def _invariants(m, p, files):
    """Design invariants 1-3, file by file, with no journal entry open."""
    _no_open_entries(m)
    for n, b in files.items():
        key = p + "/" + n
        src = checks.get_object(m, n)
        live = checks.live_rows(m, n)
        rows = srows(m, key)
        stored = [r for r in rows if r["outcome"] in ("copied", "restored", "adopted")]
        obj = dhead(m, key)
        in_reception = src is not None and len(live) == 1
        in_storage = obj is not None and len(stored) == 1
        assert in_reception != in_storage, (n, in_reception, in_storage)
        if in_storage:
            assert dget(m, key) == b and stored[0]["sha256"] == sha(b)
            assert obj["Metadata"]["sha256"] == sha(b)
            assert src is None and live == []
        else:
            assert src == b and rows == [] and obj is None


# ---- many mounts, one truth ------------------------------------------------------------------

def _race(pairs):
    """Runs the renames (mount, name, prefix, rel) at once; returns their errnos (0: ok)."""
    out = [None] * len(pairs)
    go = threading.Barrier(len(pairs))

    def run(i, m, name, p, rel):
        go.wait()
        try:
            promote(m, name, p, rel)
            out[i] = 0
        except OSError as e:
            out[i] = e.errno
    ts = [threading.Thread(target=run, args=(i,) + pr) for i, pr in enumerate(pairs)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return out


def test_two_mounts_race_same_key(mount_factory, uniq):
    m1 = mount_factory()
    m2 = mount_factory(reset=False)
    p = project(m1, uniq)
    same, a, b = os.urandom(30000), os.urandom(20000), os.urandom(20001)
    for n, data in (("s1.bin", same), ("s2.bin", same), ("a.bin", a), ("b.bin", b),
                    ("c1.bin", a + b), ("c2.bin", a + b)):
        drop(m1, n, data)
    m2.wait_until(lambda: all(os.path.exists(os.path.join(m2.inbox, n))
                              for n in ("s2.bin", "b.bin", "c2.bin")), what="listed in m2")
    # same content, same key: one copied, one duplicate
    assert _race([(m1, "s1.bin", p, "same.bin"), (m2, "s2.bin", p, "same.bin")]) == [0, 0]
    assert sorted(r["outcome"] for r in srows(m1, p + "/same.bin")) == ["copied", "duplicate"]
    assert dget(m1, p + "/same.bin") == same
    # different content, same key: one stored, one EEXIST with its file still received
    res = _race([(m1, "a.bin", p, "diff.bin"), (m2, "b.bin", p, "diff.bin")])
    assert sorted(res) == [0, errno.EEXIST]
    won, lost = (("a.bin", a), ("b.bin", b)) if res[0] == 0 else (("b.bin", b), ("a.bin", a))
    assert [r["outcome"] for r in srows(m1, p + "/diff.bin")] == ["copied"]
    assert dget(m1, p + "/diff.bin") == won[1]
    assert checks.get_object(m1, won[0]) is None
    assert checks.get_object(m1, lost[0]) == lost[1]
    assert len(checks.live_rows(m1, lost[0])) == 1
    # same content, two keys (dedup=content): one copied, one duplicate_content of it
    assert _race([(m1, "c1.bin", p, "k1.bin"), (m2, "c2.bin", p, "k2.bin")]) == [0, 0]
    r1, r2 = srows(m1, p + "/k1.bin"), srows(m1, p + "/k2.bin")
    outs = sorted([r1[0]["outcome"], r2[0]["outcome"]])
    assert len(r1) == 1 and len(r2) == 1 and outs == ["copied", "duplicate_content"]
    stored, dup = (r1[0], r2[0]) if r1[0]["outcome"] == "copied" else (r2[0], r1[0])
    assert dup["duplicate_of"] == stored["dest_key"]
    assert dhead(m1, dup["dest_key"]) is None and dget(m1, stored["dest_key"]) == a + b
    assert m1.sql_value("select count(*) from promotion_journal"
                        " where state <> 'done'") == 0


# ---- directories -----------------------------------------------------------------------------

def _tree(m, top, n):
    """n files under inbox/top, on three levels; {relpath: bytes}."""
    files = {}
    for sub in ("", "sub", "sub/deeper"):
        os.makedirs(os.path.join(m.inbox, top, sub), exist_ok=True)
    for i in range(n):
        rel = ("", "sub/", "sub/deeper/")[i % 3] + "f%03d.bin" % i
        files[rel] = os.urandom(500 + i)
        checks.write(os.path.join(m.inbox, top, rel), files[rel])
    return files


def test_directory_promotion(mount_factory, uniq):
    m = mount_factory(config={"fs": {"promote_workers": "3"}})
    p = project(m, uniq)
    files = _tree(m, "dir", 20)
    os.rename(os.path.join(m.inbox, "dir"), os.path.join(m.projects, p, "moved"))
    for rel, data in files.items():
        check_stored(m, p + "/moved/" + rel, data, "dir/" + rel, ["copied"])
    assert checks.bucket_keys(m, "dir/", markers=True) == []
    assert not os.path.exists(os.path.join(m.inbox, "dir"))


def test_directory_partial_failure_keeps_failed_files(mount_factory, uniq):
    m = mount_factory(config={"fs": {"promote_workers": "3"}})
    p = project(m, uniq)
    files = _tree(m, "pd", 9)
    bad = "sub/f004.bin"
    m.s3.put_object(Bucket=m.storage_bucket, Key=p + "/pd/" + bad, Body=b"someone else's")
    with pytest.raises(OSError) as ei:
        os.rename(os.path.join(m.inbox, "pd"), os.path.join(m.projects, p, "pd"))
    assert ei.value.errno == errno.EEXIST
    for rel, data in files.items():
        if rel == bad:
            continue
        check_stored(m, p + "/pd/" + rel, data, "pd/" + rel, ["copied"])
    assert checks.get_object(m, "pd/" + bad) == files[bad]
    assert len(checks.live_rows(m, "pd/" + bad)) == 1
    assert srows(m, p + "/pd/" + bad) == []
    assert dget(m, p + "/pd/" + bad) == b"someone else's"
    assert checks.read(os.path.join(m.inbox, "pd", bad)) == files[bad]


def test_kill_during_directory_promotion_then_recovery(stack, mount_factory, proxied, uniq):
    """SIGKILL while a 150-file directory is being promoted (issue 6, Tests), remount, and the
    invariants of item 3 file by file: every file in exactly one place, every storage object
    with exactly one row, every row's object there with its sha256, no source deleted without
    both rows."""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}, "fs": {"promote_workers": "3"}})
    p = project(m, uniq)
    files = _tree(m, "kd", 150)
    copies = []

    def rule(meth, path, h):
        if meth == "PUT" and "/storage-unique/" in path:
            copies.append(path)
            if len(copies) > 50:
                return ("late", 60)  # the copy takes effect, its answer never comes
        return None
    px.rule = rule
    t = threading.Thread(target=lambda: _try_rename(m, "kd", p), daemon=True)
    t.start()
    m.wait_until(lambda: len(copies) >= 53, timeout=90, what="copies under way")
    time.sleep(0.5)
    m.crash(signal.SIGKILL)
    px.rule = None
    px.release.set()
    m.mount()
    t.join(5)
    flat = {"kd/" + r: b for r, b in files.items()}
    _invariants_dir(m, p, flat)
    _store_invariants(m, p)
    n_stored = len(srows_prefix(m, p + "/"))
    assert 50 <= n_stored < len(files), n_stored  # the crash came mid-directory
    # the rest goes with the next rename of the directory
    os.rename(os.path.join(m.inbox, "kd"), os.path.join(m.projects, p, "kd"))
    _invariants_dir(m, p, flat)
    _store_invariants(m, p)
    assert len(srows_prefix(m, p + "/")) == len(files)
    assert checks.bucket_keys(m, "kd/", markers=True) == []


def _store_invariants(m, p):
    """Every object of the storage bucket under p/ has exactly one row; every row of p/ that
    stores an object has it there, with the row's sha256 (its bytes hashed here)."""
    keys = []
    for page in m.s3.get_paginator("list_objects_v2").paginate(Bucket=m.storage_bucket,
                                                               Prefix=p + "/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    for k in keys:
        assert len(srows(m, k)) == 1, k
    for r in srows_prefix(m, p + "/"):
        if r["outcome"] in ("copied", "restored", "adopted"):
            assert r["dest_key"] in keys
            assert sha(dget(m, r["dest_key"])) == r["sha256"]


def srows_prefix(m, prefix):
    return m.sql_dicts("select * from storage_audit where dest_key like %s order by id",
                       (prefix + "%",))


def _try_rename(m, d, p):
    try:
        os.rename(os.path.join(m.inbox, d), os.path.join(m.projects, p, d))
    except OSError:
        pass


def _invariants_dir(m, p, files):
    _no_open_entries(m)
    for key, b in files.items():
        dest = p + "/" + key
        src = checks.get_object(m, key)
        live = checks.live_rows(m, key)
        rows = srows(m, dest)
        stored = [r for r in rows if r["outcome"] in ("copied", "restored", "adopted")]
        obj = dhead(m, dest)
        in_reception = src is not None and len(live) == 1
        in_storage = obj is not None and len(stored) == 1 and len(rows) == 1
        assert in_reception != in_storage, (key, in_reception, in_storage, rows)
        if in_storage:
            assert dget(m, dest) == b and stored[0]["sha256"] == sha(b)
            assert obj["Metadata"]["sha256"] == sha(b)
            assert live == [] and len(checks.rows(m, key)) == 1
        else:
            assert src == b and rows == [] and obj is None


@pytest.mark.parametrize("when", ["instead", "after"])
def test_copy_answered_200_with_error(stack, mount_factory, proxied, uniq, when):
    """CopyObject's classic failure: 200 OK whose body is <Error>. 'instead': the copy never
    happened -> the rename fails, nothing stored, the file stays received. 'after': the copy
    did happen at the store -> the destination verifies as ours and is recorded: 0."""
    px = proxied
    from faultproxy import INTERNAL
    m = mount_factory(config={"s3": {"endpoint": px.url, "max_retries": "1"}})
    p = project(m, uniq)
    data = os.urandom(3000)
    drop(m, "e.bin", data)
    seen = []

    def rule(meth, path, h):
        if meth == "PUT" and "x-amz-copy-source" in {k.lower() for k in h.keys()}:
            seen.append(path)
            return ("status", 200, INTERNAL) if when == "instead" else ("after", (200, INTERNAL))
        return None
    px.rule = rule
    if when == "instead":
        with pytest.raises(OSError) as ei:
            promote(m, "e.bin", p)
        assert ei.value.errno in (errno.EIO, errno.EAGAIN)
        px.rule = None
        assert seen
        assert dhead(m, p + "/e.bin") is None and srows(m, p + "/e.bin") == []
        assert checks.get_object(m, "e.bin") == data
        assert len(checks.live_rows(m, "e.bin")) == 1
        assert [j["state"] for j in journal(m, p + "/e.bin")] == ["failed"]
        promote(m, "e.bin", p)
        assert [j["state"] for j in journal(m, p + "/e.bin")] == ["failed", "done"]
    else:
        promote(m, "e.bin", p)
        px.rule = None
        assert seen
    check_stored(m, p + "/e.bin", data, "e.bin", ["copied"])


def test_database_down_after_copy(stack, mount_factory, proxied, uniq):
    """PostgreSQL goes down while the copy runs: the record step fails, rename fails, the
    destination object has no row yet but the journal says so; once the database is back the
    next rename of the file finishes it from the journal: one object, one row, source gone."""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    p = project(m, uniq)
    data = os.urandom(5000)
    drop(m, "db.bin", data)
    seen = []

    def rule(meth, path, h):
        if meth == "PUT" and "x-amz-copy-source" in {k.lower() for k in h.keys()} and not seen:
            seen.append(path)
            stack.stop_pg("immediate")
        return None
    px.rule = rule
    with pytest.raises(OSError) as ei:
        promote(m, "db.bin", p)
    px.rule = None
    assert seen
    assert ei.value.errno in (errno.EIO, errno.ETIMEDOUT, errno.ECONNREFUSED)
    assert checks.get_object(m, "db.bin") == data  # never deleted without its rows
    stack.start_pg()
    assert [j["state"] for j in journal(m, p + "/db.bin")] == ["intent"]
    assert srows(m, p + "/db.bin") == []
    promote(m, "db.bin", p)
    check_stored(m, p + "/db.bin", data, "db.bin", ["copied"])
    assert len(checks.rows(m, "db.bin")) == 1
    # the mount's owner lock died with the database's sessions: new promotions are journaled
    # under an owner whose lock the living mount holds again (else another mount's recovery
    # would take over its promotions in flight)
    drop(m, "db2.bin", b"after the restart")
    promote(m, "db2.bin", p)
    owner = journal(m, p + "/db2.bin")[0]["owner"]
    assert m.sql_value("select pg_try_advisory_lock(1129665367, %s)", (owner,)) is False


# ---- review findings -------------------------------------------------------------------------

def test_late_copy_answer_after_another_mount_finished_entry(stack, mount_factory, proxied,
                                                             uniq):
    """Review C1 (cross-process): mount A's copy takes effect but its answer is held; the
    database restarts (A's owner lock is gone), mount B starts and its recovery finishes A's
    entry (row, source deleted, done). When A's late answer comes, A finds the source gone;
    it must not delete the destination object the row records: the entry is done, so A's
    rename succeeds and the file is stored exactly once."""
    px = proxied
    ma = mount_factory(config={"s3": {"endpoint": px.url}})
    p = project(ma, uniq)
    data = os.urandom(6000)
    drop(ma, "late.bin", data)
    px.rule = lambda meth, path, h: (("late", 60) if meth == "PUT" and "/storage-unique/" in path
                                     and "late.bin" in path else None)
    res = []

    def run():
        try:
            promote(ma, "late.bin", p)
            res.append(0)
        except OSError as e:
            res.append(e.errno)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    ma.wait_until(lambda: any(j["state"] == "intent" for j in journal(ma, p + "/late.bin")),
                  timeout=20, what="journal intent")
    ma.wait_until(lambda: any("late.bin" in path and meth == "PUT" for meth, path, a in
                              list(px.log)), timeout=20, what="copy sent")
    time.sleep(0.5)
    stack.stop_pg("immediate")
    stack.start_pg()
    mb = mount_factory(reset=False)
    _no_open_entries(mb)  # B's recovery finished A's entry
    assert [r["outcome"] for r in srows(mb, p + "/late.bin")] == ["copied"]
    assert checks.get_object(mb, "late.bin") is None
    px.rule = None
    px.release.set()
    t.join(90)
    assert not t.is_alive()
    assert res == [0]
    check_stored(mb, p + "/late.bin", data, "late.bin", ["copied"])
    assert len(checks.rows(mb, "late.bin")) == 1


def test_directory_of_identical_pairs_runs_each_entry_once(stack, mount_factory, proxied, uniq):
    """Review C1: under dedup=content a directory holding pairs of identical files, promoted
    by the worker pool. The second of a pair waits for the first's entry; it must never run
    that entry itself (a second CopyObject to the key), and nothing may delete an object a
    row records. A second copy to a key is answered late, so a worker that ran the entry
    twice finds the source gone and settles. One database connection and a slow HEAD of the
    destination inside the decision: the second worker queues for the connection while the
    first decides, gets it right after the first's COMMIT, and looks for the blocking entry
    before the first can say it works on it."""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}, "postgres": {"pool_size": "1"},
                              "fs": {"promote_workers": "2", "dedup": "content"}})
    p = project(m, uniq)
    copies = {}

    def rule(meth, path, h):
        if meth == "PUT" and "x-amz-copy-source" in {k.lower() for k in h.keys()}:
            dest = path.split("?")[0]
            copies[dest] = copies.get(dest, 0) + 1
            if copies[dest] > 1:
                return ("late", 1.5)
        if meth == "HEAD" and "/storage-unique/" in path:
            return ("late", 0.3)
        return None
    px.rule = rule
    for rnd in range(2):
        d = "pairs%d" % rnd
        os.makedirs(os.path.join(m.inbox, d))
        files = {}
        for i in range(10):
            data = os.urandom(4000 + i)
            for s in ("a", "b"):
                files["%s/k%02d-%s.bin" % (d, i, s)] = data
                checks.write(os.path.join(m.inbox, d, "k%02d-%s.bin" % (i, s)), data)
        os.rename(os.path.join(m.inbox, d), os.path.join(m.projects, p, d))
        assert [c for c in copies.values() if c > 1] == [], "an entry ran twice: %r" % copies
        _no_open_entries(m)
        for i in range(10):
            pair = ["%s/k%02d-%s.bin" % (d, i, s) for s in ("a", "b")]
            data = files[pair[0]]
            rows = {k: srows(m, p + "/" + k) for k in pair}
            assert sorted(r["outcome"] for k in pair for r in rows[k]) == \
                ["copied", "duplicate_content"], rows
            for k in pair:
                assert checks.get_object(m, k) is None
                assert all(r["removed_at"] for r in checks.rows(m, k))
                if rows[k][0]["outcome"] == "copied":
                    assert dget(m, p + "/" + k) == data  # the row's object is there
                else:
                    assert dhead(m, p + "/" + k) is None


@pytest.mark.parametrize("again", [False, True])
def test_duplicate_content_of_a_vanished_object_is_copied(mount, uniq, again):
    """Review H1: p/a stored, then its object removed behind the system's back; the same bytes
    dropped as b and promoted: b must not become a duplicate_content of an object that is not
    there (its inbox source deleted, the content nowhere): b is copied. again: b had been a
    duplicate_content of a already (the re-run path, a row for the key itself)."""
    m = mount
    p = project(m, uniq)
    data = os.urandom(3500)
    a, b = uniq + "-a.bin", uniq + "-b.bin"
    drop(m, a, data)
    promote(m, a, p, "a.bin")
    if again:
        drop(m, b, data)
        promote(m, b, p, "b.bin")
        assert [r["outcome"] for r in srows(m, p + "/b.bin")] == ["duplicate_content"]
    m.s3.delete_object(Bucket=m.storage_bucket, Key=p + "/a.bin")
    drop(m, b, data)
    promote(m, b, p, "b.bin")
    outs = [r["outcome"] for r in srows(m, p + "/b.bin")]
    assert outs == (["duplicate_content", "copied"] if again else ["copied"])
    assert dget(m, p + "/b.bin") == data  # the content is somewhere: at b
    assert dhead(m, p + "/b.bin")["Metadata"]["sha256"] == sha(data)
    assert srows(m, p + "/b.bin")[-1]["sha256"] == sha(data)
    assert checks.get_object(m, b) is None
    assert all(r["removed_at"] for r in checks.rows(m, b))
    assert len(checks.rows(m, b)) == (2 if again else 1)
    assert [r["outcome"] for r in srows(m, p + "/a.bin")] == ["copied"]


def test_directory_with_a_file_open_for_writing_is_ebusy(mount, uniq):
    """Review M4: inbox/d holds two stored files and one still open for writing (not
    uploaded): the rename promotes the two, fails with EBUSY, and inbox/d stays with the open
    file, which once closed is received there (nothing reappears from nowhere); renaming the
    directory again then promotes it and the directory leaves reception."""
    m = mount
    p = project(m, uniq)
    d = uniq + "-d"
    os.makedirs(os.path.join(m.inbox, d))
    files = {"f1.bin": os.urandom(900), "f2.bin": os.urandom(901)}
    for n, b in files.items():
        checks.write(os.path.join(m.inbox, d, n), b)
    fd = os.open(os.path.join(m.inbox, d, "new.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"written, not closed")
        with pytest.raises(OSError) as ei:
            os.rename(os.path.join(m.inbox, d), os.path.join(m.projects, p, "d"))
        assert ei.value.errno == errno.EBUSY
        for n, b in files.items():
            check_stored(m, p + "/d/" + n, b, d + "/" + n, ["copied"])
        assert os.path.isdir(os.path.join(m.inbox, d))
        assert srows(m, p + "/d/new.txt") == []
    finally:
        os.close(fd)
    assert checks.get_object(m, d + "/new.txt") == b"written, not closed"
    assert len(checks.live_rows(m, d + "/new.txt")) == 1
    os.rename(os.path.join(m.inbox, d), os.path.join(m.projects, p, "d"))
    check_stored(m, p + "/d/new.txt", b"written, not closed", d + "/new.txt", ["copied"])
    assert checks.bucket_keys(m, d + "/", markers=True) == []
    assert not os.path.exists(os.path.join(m.inbox, d))


def test_empty_directory_becomes_empty_directory_in_project(mount, uniq):
    """Review M4: an empty directory renamed into a project does not vanish from both sides:
    it leaves reception and is an empty directory in the project (as mkdir there makes)."""
    m = mount
    p = project(m, uniq)
    d = uniq + "-e"
    os.makedirs(os.path.join(m.inbox, d))
    os.rename(os.path.join(m.inbox, d), os.path.join(m.projects, p, "e"))
    assert not os.path.exists(os.path.join(m.inbox, d))
    assert checks.bucket_keys(m, d + "/", markers=True) == []
    assert os.path.isdir(os.path.join(m.projects, p, "e"))
    assert os.listdir(os.path.join(m.projects, p, "e")) == []
    assert m.sql_value("select count(*) from storage_audit where dest_key like %s",
                       (p + "/%",)) == 0


def test_orphan_with_our_metadata_and_same_bytes_is_adopted(mount, uniq):
    """Review M1: an object without a row but with our metadata and the very bytes (an orphan
    of a late copy, or a database restored from backup) is adopted after its bytes are hashed,
    not refused as a conflict; nothing is copied over it."""
    m = mount
    p = project(m, uniq)
    data = os.urandom(4100)
    m.s3.put_object(Bucket=m.storage_bucket, Key=p + "/x.bin", Body=data,
                    Metadata={"sha256": sha(data)})
    etag = dhead(m, p + "/x.bin")["ETag"]
    drop(m, uniq + "-x.bin", data)
    promote(m, uniq + "-x.bin", p, "x.bin")
    rows = srows(m, p + "/x.bin")
    assert [r["outcome"] for r in rows] == ["adopted"]
    assert rows[0]["sha256"] == sha(data) and rows[0]["size_bytes"] == len(data)
    assert dget(m, p + "/x.bin") == data and dhead(m, p + "/x.bin")["ETag"] == etag
    assert checks.get_object(m, uniq + "-x.bin") is None
    assert all(r["removed_at"] for r in checks.rows(m, uniq + "-x.bin"))


@pytest.mark.parametrize("same", [True, False])
def test_seed_row_without_hash_is_judged_by_the_bytes(mount, uniq, same):
    """Review M2: a seed-style storage row (no sha256, no outcome) and its object: the same
    bytes dropped again are a duplicate (the object's bytes hashed), other bytes a conflict
    (EEXIST, nothing overwritten, the file stays)."""
    m = mount
    p = project(m, uniq)
    data = os.urandom(2700)
    m.s3.put_object(Bucket=m.storage_bucket, Key=p + "/seed.bin", Body=data)
    m.sql("insert into storage_audit (project_prefix, project_name, dest_key, size_bytes,"
          " source_bucket) values (%s, %s, %s, %s, %s)",
          (p, "Projeto " + p, p + "/seed.bin", len(data), m.reception_bucket))
    etag = dhead(m, p + "/seed.bin")["ETag"]
    mine = data if same else os.urandom(2700)
    drop(m, uniq + "-seed.bin", mine)
    if same:
        promote(m, uniq + "-seed.bin", p, "seed.bin")
        rows = srows(m, p + "/seed.bin")
        assert [r["outcome"] for r in rows] == [None, "duplicate"]
        assert rows[1]["sha256"] == sha(data)
        assert checks.get_object(m, uniq + "-seed.bin") is None
        assert all(r["removed_at"] for r in checks.rows(m, uniq + "-seed.bin"))
    else:
        with pytest.raises(OSError) as ei:
            promote(m, uniq + "-seed.bin", p, "seed.bin")
        assert ei.value.errno == errno.EEXIST
        assert [r["outcome"] for r in srows(m, p + "/seed.bin")] == [None]
        assert checks.get_object(m, uniq + "-seed.bin") == mine
        assert len(checks.live_rows(m, uniq + "-seed.bin")) == 1
    assert dget(m, p + "/seed.bin") == data and dhead(m, p + "/seed.bin")["ETag"] == etag


def test_object_forged_between_copy_and_verify_is_not_recorded(stack, mount_factory, proxied,
                                                               uniq):
    """Review H3(b): after the copy and before its verification another client writes other
    bytes of the same size with our metadata (sha256 of the real file) at the key: the
    verification goes by the copy's ETag, not only size and metadata, so nothing is recorded,
    the rename fails and the file stays in inbox/."""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    p = project(m, uniq)
    data, forged = os.urandom(3000), os.urandom(3000)
    drop(m, uniq + "-v.bin", data)
    key = p + "/v.bin"
    seen = []

    def rule(meth, path, h):
        if meth == "PUT" and "x-amz-copy-source" in {k.lower() for k in h.keys()} and \
                path.split("?")[0].endswith("/v.bin"):
            seen.append("copy")
        elif meth == "HEAD" and path.split("?")[0].endswith("/storage-unique/" + key) and \
                seen == ["copy"]:
            seen.append("forged")
            stack.s3.put_object(Bucket=m.storage_bucket, Key=key, Body=forged,
                                Metadata={"sha256": sha(data),
                                          "xxh128": m.xxh128_bytes(data)})
        return None
    px.rule = rule
    with pytest.raises(OSError) as ei:
        promote(m, uniq + "-v.bin", p, "v.bin")
    px.rule = None
    assert seen == ["copy", "forged"]
    assert ei.value.errno == errno.EIO
    assert srows(m, key) == []
    assert [j["state"] for j in journal(m, key)] == ["failed"]
    assert checks.get_object(m, uniq + "-v.bin") == data
    assert len(checks.live_rows(m, uniq + "-v.bin")) == 1
    assert dget(m, key) == forged  # not ours: left alone, never recorded


def test_stat_right_after_mv_shows_the_stored_file(mount, uniq):
    """`mv f projects/p/ && ls -l projects/p` (a script, a file manager refreshing): the modes
    shown right after the rename are what is stored (read-only; a project directory's mode),
    not the writable inbox file or directory the kernel had cached for the same inode. ls and
    stat(1) ask the kernel only for the fields they print (statx), which the rename left
    cached; os.stat asks for the change time too and so always reached the daemon."""
    import subprocess
    m = mount
    p = project(m, uniq)
    drop(m, f"{uniq}-a.txt", b"a " + uniq.encode())
    os.mkdir(os.path.join(m.inbox, f"{uniq}-d"))
    drop(m, f"{uniq}-d/x.txt", b"x " + uniq.encode())

    def modes(*paths):
        out = subprocess.run(["stat", "-c", "%A"] + list(paths), check=True,
                             capture_output=True, text=True).stdout
        return out.split()

    a, d = os.path.join(m.inbox, f"{uniq}-a.txt"), os.path.join(m.inbox, f"{uniq}-d")
    assert modes(a, d) == ["-rw-r--r--", "drwxr-xr-x"]  # now cached by the kernel
    pa, pd = os.path.join(m.projects, p, f"{uniq}-a.txt"), os.path.join(m.projects, p, f"{uniq}-d")
    promote(m, f"{uniq}-a.txt", p)
    promote(m, f"{uniq}-d", p)
    shown = modes(pa, pd)
    proj = modes(os.path.join(m.projects, p))[0]
    assert shown == ["-r--r--r--", proj], (shown, proj)
    outcomes = m.sql("select outcome from storage_audit where project_prefix = %s order by id",
                     (p,))
    assert [r[0] for r in outcomes] == ["copied", "copied"]


# ---- an object overwritten behind its row (gap 2j) ---------------------------------------------

def _forge(m, key, like):
    """Another client (boto3) overwrites key with other bytes of the same size, claiming the
    hashes of `like` in its metadata. Returns its HEAD."""
    theirs = os.urandom(len(like))
    m.s3.put_object(Bucket=m.storage_bucket, Key=key, Body=theirs,
                    Metadata={"sha256": sha(like), "xxh128": m.xxh128_bytes(like)})
    h = dhead(m, key)
    assert h["ContentLength"] == len(like) and h["Metadata"]["sha256"] == sha(like)
    return theirs, h


def _promote_cli(m, p):
    """`custodyfs promote --project p` (every file received): its result and JSON summary."""
    import json
    r = m.cli("promote", "--project", p, "-o", "config=" + m.config, "--json",
              timeout=300)
    assert r.stdout.strip(), r.stderr
    return r, json.loads(r.stdout)


@pytest.mark.parametrize("via", ["rename", "cli"])
def test_object_overwritten_behind_its_row_is_not_a_duplicate(mount, uniq, via):
    """Gap 2j: p/o.bin promoted (its row, and the ETag the verification saw in its journal
    entry); then another client overwrites the stored object with other bytes of the same size
    and the original's sha256/xxh128 in its metadata. The original dropped again and promoted
    (rename, or `custodyfs promote`) is not a duplicate: the object's ETag is not the recorded
    one, so its bytes are hashed and differ: a conflict (EEXIST), the source stays received,
    the stored object untouched, no row added."""
    m = mount
    p = project(m, uniq)
    name = uniq + "-o.bin"
    key = p + "/" + name
    mine = os.urandom(6000)

    def run():
        if via == "rename":
            promote(m, name, p)
            return None
        return _promote_cli(m, p)

    drop(m, name, mine)
    r = run()
    assert r is None or r[0].returncode == 0, r[0].stderr
    check_stored(m, key, mine, name, ["copied"])
    first = dhead(m, key)

    theirs, forged = _forge(m, key, mine)
    assert forged["ETag"] != first["ETag"]
    drop(m, name, mine)
    if via == "rename":
        with pytest.raises(OSError) as ei:
            run()
        assert ei.value.errno == errno.EEXIST
    else:
        r, out = run()
        assert r.returncode == 1
        assert out["files"] == 1 and out["conflicts"] == 1 and out["duplicates"] == 0
        assert out["failures"] == [{"key": name, "error": "conflict"}]
    # the stored object: untouched
    assert dget(m, key) == theirs
    again = dhead(m, key)
    assert again["ETag"] == forged["ETag"] and again["LastModified"] == forged["LastModified"]
    # every row of the key: the first promotion's only
    assert [r["outcome"] for r in srows(m, key)] == ["copied"]
    assert [j["state"] for j in journal(m, key)] == ["done"]
    assert m.sql_value("select count(*) from storage_audit where dest_key = %s", (key,)) == 1
    # the source: still received, with its live row
    assert checks.get_object(m, name) == mine
    live = checks.live_rows(m, name)
    assert len(live) == 1 and live[0]["sha256"] == sha(mine)
    assert len(checks.rows(m, name)) == 2
    if via == "rename":
        assert checks.read(os.path.join(m.inbox, name)) == mine
    # the ETag the first promotion's verification saw is recorded with its entry
    assert [j["dest_etag"] for j in journal(m, key)] == [first["ETag"].strip('"')]


@pytest.mark.parametrize("again", [False, True])
def test_duplicate_content_of_an_overwritten_object_is_copied(mount, uniq, again):
    """Gap 2j, the duplicate_of target: p/a.bin stored, then overwritten by another client with
    other bytes of the same size and a's hashes in its metadata. The same content dropped as b
    is not a duplicate_content of a (its source deleted, the content nowhere): a's ETag is not
    the recorded one, its bytes are hashed and differ, so b is copied. again: b had been a
    duplicate_content of a already (its own row points at a)."""
    m = mount
    p = project(m, uniq)
    data = os.urandom(3500)
    a, b = uniq + "-a.bin", uniq + "-b.bin"
    drop(m, a, data)
    promote(m, a, p, "a.bin")
    if again:
        drop(m, b, data)
        promote(m, b, p, "b.bin")
        assert [r["outcome"] for r in srows(m, p + "/b.bin")] == ["duplicate_content"]
    theirs, forged = _forge(m, p + "/a.bin", data)
    drop(m, b, data)
    promote(m, b, p, "b.bin")
    outs = [r["outcome"] for r in srows(m, p + "/b.bin")]
    assert outs == (["duplicate_content", "copied"] if again else ["copied"])
    assert dget(m, p + "/b.bin") == data  # the content is somewhere: at b
    assert dhead(m, p + "/b.bin")["Metadata"]["sha256"] == sha(data)
    assert checks.get_object(m, b) is None
    assert all(r["removed_at"] for r in checks.rows(m, b))
    assert len(checks.rows(m, b)) == (2 if again else 1)
    # a: untouched, its rows unchanged
    assert dget(m, p + "/a.bin") == theirs
    assert dhead(m, p + "/a.bin")["ETag"] == forged["ETag"]
    assert [r["outcome"] for r in srows(m, p + "/a.bin")] == ["copied"]
