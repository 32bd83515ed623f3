"""Many files: a directory of more than 1000 files (issue 6, Tests: S3 listings are paged by
1000 keys) listed in inbox/, promoted by one rename into a project, and listed there; files
moved one rename each without a listing of the destination per file.

Checked with boto3 (both buckets, every key) and psycopg2 (every row of every key, removed ones
too, and the journal), never through the mount alone. Bounded: 1100 files of a few bytes, put
by 8 boto3 threads, promoted by the mount's promote_workers."""
import concurrent.futures as cf
import hashlib
import os
import subprocess
import time
import urllib.parse

import pytest

import checks
from checks import project

CUSTODYFS_CONFIG = {"fs": {"promote_workers": "4"}}

N = 1100  # two ListObjectsV2 pages, and two pages of the project's listing


def _keys(m, bucket, prefix):
    out = []
    for page in m.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
    return out


@pytest.mark.volume
def test_directory_of_more_than_1000_files_lists_and_promotes(mount, uniq):
    m = mount
    p = project(m, uniq)
    src = f"big-{uniq}"
    names = [f"f{i:05d}.txt" for i in range(N)]
    body = {n: f"{uniq} {n}\n".encode() for n in names}  # distinct: no content duplicates

    def put(n):
        m.s3.put_object(Bucket=m.reception_bucket, Key=f"{src}/{n}", Body=body[n])
    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(put, names))

    # inbox/: the whole directory, each name once, across the listing's pages
    d = os.path.join(m.inbox, src)
    m.wait_until(lambda: sorted(os.listdir(d)) == names, timeout=90, interval=1,
                 what=f"{N} entries in ls inbox/{src}")
    listed = os.listdir(d)
    assert len(listed) == len(set(listed)) == N
    # received: one live row per key, hashed from the bytes by the daemon
    live = lambda: m.sql_value(  # noqa: E731
        "select count(*) from reception_audit where source_bucket = %s and"
        " starts_with(object_key, %s) and removed_at is null", (m.reception_bucket, src + "/"))
    m.wait_until(lambda: live() >= N, timeout=180, interval=1, what=f"{N} reception rows")
    time.sleep(1)
    assert live() == N

    t0 = time.monotonic()
    os.rename(d, os.path.join(m.projects, p, "big"))
    secs = time.monotonic() - t0
    print(f"rename of {N} files: {secs:.1f} s ({N / secs:.0f} files/s)")  # information only

    # storage: exactly the N objects, each with its bytes' hash as our metadata
    stored = dict(_keys(m, m.storage_bucket, f"{p}/big/"))
    assert sorted(stored) == [f"{p}/big/{n}" for n in names]
    assert all(stored[f"{p}/big/{n}"] == len(body[n]) for n in names)
    for n in (names[0], names[999], names[1000], names[-1]):  # both sides of the page break
        k = f"{p}/big/{n}"
        assert m.s3.get_object(Bucket=m.storage_bucket, Key=k)["Body"].read() == body[n]
        h = m.s3.head_object(Bucket=m.storage_bucket, Key=k)
        assert h["Metadata"]["sha256"] == hashlib.sha256(body[n]).hexdigest()
    # reception: nothing left, not even the directory
    assert _keys(m, m.reception_bucket, f"{src}/") == []
    assert _keys(m, m.reception_bucket, src) == []
    assert not os.path.exists(d)

    # every row of every key: one storage row 'copied' with the right hash, one reception row
    # (removed, promoted to that key), and the journal entries all done
    srows = m.sql_dicts("select dest_key, outcome, sha256, size_bytes, reception_id from"
                        " storage_audit where starts_with(dest_key, %s)", (p + "/",))
    assert len(srows) == N
    by_key = {r["dest_key"]: r for r in srows}
    assert len(by_key) == N
    rrows = m.sql_dicts("select id, object_key, removed_at, removal_reason from reception_audit"
                        " where source_bucket = %s and starts_with(object_key, %s)",
                        (m.reception_bucket, src + "/"))
    assert len(rrows) == N and len({r["object_key"] for r in rrows}) == N
    rid = {r["object_key"]: r for r in rrows}
    for n in names:
        s, rr = by_key[f"{p}/big/{n}"], rid[f"{src}/{n}"]
        assert s["outcome"] == "copied" and s["size_bytes"] == len(body[n])
        assert s["sha256"] == hashlib.sha256(body[n]).hexdigest()
        assert s["reception_id"] == rr["id"]
        assert rr["removed_at"] is not None
        assert rr["removal_reason"] == f"promoted to {m.storage_bucket}/{p}/big/{n}"
    states = m.sql_dicts("select state, count(*) as n from promotion_journal"
                         " where starts_with(dest_key, %s) group by state", (p + "/",))
    assert states == [{"state": "done", "n": N}]

    # projects/: the whole directory, each name once, across the listing's pages
    pd = os.path.join(m.projects, p, "big")
    m.wait_until(lambda: sorted(os.listdir(pd)) == names, timeout=60, interval=1,
                 what=f"{N} entries in ls projects/{p}/big")
    listed = os.listdir(pd)
    assert len(listed) == len(set(listed)) == N
    assert checks.read(os.path.join(pd, names[-1])) == body[names[-1]]


@pytest.fixture
def proxied(stack):
    from faultproxy import FaultProxy
    px = FaultProxy(stack.endpoint)
    yield px
    px.rule = None
    px.release.set()


def test_files_moved_one_by_one_list_the_destination_once(stack, mount_factory, proxied, uniq):
    """`mv inbox/d/* projects/p/d/` (issue 6 "How fast" (c)): one rename per file. Each rename
    looks the destination name up first (mv, the kernel); a promotion puts the file it stored
    into the mount's cached listing of its directory instead of dropping every listing of
    projects/, so the destination directory is listed about once, not once per file (before:
    a LIST of a growing directory per file, quadratic). What the listing then shows is what
    the store holds: names, sizes, and times as boto3 sees them."""
    px = proxied
    m = mount_factory(config={"s3": {"endpoint": px.url},
                              "fs": {"cache_ttl_ms": "600000", "promote_workers": "2"}})
    p = project(m, uniq)
    n = 30
    files = {f"g{i:03d}.bin": os.urandom(100 + i) for i in range(n)}
    os.mkdir(os.path.join(m.inbox, "one"))
    for name, data in files.items():
        checks.write(os.path.join(m.inbox, "one", name), data)
    os.mkdir(os.path.join(m.projects, p, "one"))
    dest = os.path.join(m.projects, p, "one")

    def listing_of(path):
        u = urllib.parse.urlsplit(path)
        q = urllib.parse.parse_qs(u.query)
        return u.path.strip("/") == m.storage_bucket and "list-type" in q and \
            q.get("prefix") == [p + "/one/"]
    del px.log[:]
    assert os.listdir(dest) == []  # listed (empty), as a shell's completion would
    # (the filter below does see this mount's listings of that directory)
    assert [path for meth, path, _ in list(px.log) if meth == "GET" and listing_of(path)]
    del px.log[:]
    r = subprocess.run(["sh", "-c", 'mv "$1"/* "$2"/', "mv", os.path.join(m.inbox, "one"), dest],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lists = [path for meth, path, _ in list(px.log) if meth == "GET" and listing_of(path)]
    assert len(lists) <= 2, f"{len(lists)} listings of {p}/one/ for {n} renames"
    # the cached listing tells the truth: every file, its size and its LastModified
    assert sorted(os.listdir(dest)) == sorted(files)
    for name, data in files.items():
        key = f"{p}/one/{name}"
        h = m.s3.head_object(Bucket=m.storage_bucket, Key=key)
        st = os.stat(os.path.join(dest, name))
        assert st.st_size == len(data) == h["ContentLength"]
        assert int(st.st_mtime) == int(h["LastModified"].timestamp()), name
        assert checks.read(os.path.join(dest, name)) == data
        assert [x["outcome"] for x in m.sql_dicts(
            "select outcome from storage_audit where dest_key = %s", (key,))] == ["copied"]
    assert checks.bucket_keys(m, "one/") == []
