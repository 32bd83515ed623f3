"""``custodyfs reconcile`` and ``custodyfs cleanup`` (issue 7 item 3), run as subprocesses of the
binary with the harness's config, against the real PostgreSQL and S3 server, no mount running
while they run. Results are checked with boto3 and psycopg2: every reception_audit row of each
key (removed ones too), every storage_audit row, both buckets' keys and ETags."""
import hashlib
import os
import time

import checks
from checks import promote
from test_promote import dhead, drop, journal, project, proxied, srows  # noqa: F401 (proxied: a fixture)
from test_tools import _cfg, _cli, _json, _put_foreign, _snapshot

GRACE_WAIT = 3.2  # past the harness's foreign_grace_ms (1 s) and LastModified's whole seconds


def sha(b):
    return hashlib.sha256(b).hexdigest()


def _reconcile(m, *extra):
    r = _cli(m, "reconcile", "-o", _cfg(m), "--json", *extra, timeout=300)
    return r, _json(r)


UNSAFE = "--unsafe-unconditional-delete"


def _ignores_if_match(m):
    """s3rver (like MinIO) deletes whatever is there on a DELETE If-Match a wrong ETag; Swift's
    s3api answers 412."""
    return m.stack.backend == "s3rver"


def _probe_keys(m):
    return [o["Key"] for o in m.s3.list_objects_v2(Bucket=m.storage_bucket,
                                                   Prefix=".custodyfs-probe/").get("Contents", [])]


def _cleanup(m, *extra, cfg=None):
    """A cleanup run. A real run on a store that ignores If-Match is first refused (exit 1,
    nothing done: checked), then run again with --unsafe-unconditional-delete."""
    args = ["cleanup", "-o", cfg or _cfg(m), "--json", *extra]
    if _ignores_if_match(m) and "--dry-run" not in extra and UNSAFE not in extra:
        r = _cli(m, *args, timeout=300)
        out = _json(r)
        assert r.returncode == 1, (r.stdout, r.stderr)
        if "If-Match" not in (out["error"] or ""):
            return r, out  # failed before the probe (store or database down)
        assert out["ok"] is False and out["objects"] == [] and out["objects_seen"] == 0
        assert UNSAFE in r.stderr and "ignores If-Match" in r.stderr, r.stderr
        assert _probe_keys(m) == []
        args.append(UNSAFE)
    r = _cli(m, *args, timeout=300)
    return r, _json(r)


def _by_key(out, field="objects"):
    return {o["key"]: o for o in out[field]}


def _etag(m, bucket, key):
    return m.s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def _other_tool_promotion(m, key, prefix, reception_id=True, meta_sha=None, sha256=True):
    """A promotion by another tool that copies and never deletes the source (the seed's
    pipeline did exactly that): a server-side copy into the storage bucket and a storage_audit
    row; with reception_id=True the row names the reception row and carries its size and
    SHA-256 (the ones this system computed), and the copy carries the sha256 metadata our
    promotion writes; with reception_id=False the row is the seed's kind (source key, size, no
    reception id, no hash). Returns the storage key."""
    dest = prefix + "/" + key
    live = checks.live_rows(m, key)
    assert len(live) == 1
    row = live[0]
    extra = {}
    if reception_id:
        extra = {"MetadataDirective": "REPLACE",
                 "Metadata": {"sha256": meta_sha or row["sha256"]}}
    m.s3.copy_object(Bucket=m.storage_bucket, Key=dest,
                     CopySource={"Bucket": m.reception_bucket, "Key": key}, **extra)
    m.sql("insert into storage_audit (project_prefix, project_name, dest_bucket, dest_key,"
          " size_bytes, moved_at, source_bucket, source_key, reception_id, outcome, sha256,"
          " moved_by) values (%s, %s, %s, %s, %s, now(), %s, %s, %s, %s, %s, %s)",
          (prefix, prefix, m.storage_bucket, dest, row["size_bytes"], m.reception_bucket, key,
           row["id"] if reception_id else None, "copied" if reception_id else None,
           row["sha256"] if reception_id and sha256 else None, "another tool"))
    return dest


# ---- reconcile -------------------------------------------------------------------------------

def test_reconcile_reports_drift_and_changes_nothing_without_apply(mount_factory, uniq):
    """Every kind of drift, found and reported (JSON and text) with exit 3, while every row of
    every table and every object of both buckets stays exactly as it was; then --apply logs the
    unlogged object (hashed from its bytes: never its metadata), logs the replacing upload of a
    mismatched one (its old row closed as replaced), closes the row of the gone object (by id,
    with a reason), reports the hash mismatch (not repairable) and still exits 3; a second
    --apply changes nothing more."""
    m = mount_factory()
    drop(m, "ok.txt", b"fine\n")
    drop(m, "gone.txt", b"will vanish\n")
    drop(m, "swapped.txt", b"first upload\n")
    drop(m, "lied.bin", b"x" * 100)
    m.unmount()
    # drift made by other routes
    m.s3.delete_object(Bucket=m.reception_bucket, Key="gone.txt")
    swapped = b"second upload, longer\n"
    m.s3.put_object(Bucket=m.reception_bucket, Key="swapped.txt", Body=swapped)
    foreign = os.urandom(3000)
    # the uploader's metadata claims a hash: never taken
    m.s3.put_object(Bucket=m.reception_bucket, Key="d/foreign.bin", Body=foreign,
                    Metadata={"sha256": "0" * 64})
    m.s3.put_object(Bucket=m.reception_bucket, Key="d/", Body=b"")  # a marker: not a file
    # a row written by another tool with a hash that is not the object's (same ETag, size)
    lied = checks.live_rows(m, "lied.bin")[0]
    m.sql("update reception_audit set removed_at = now(), removal_reason = 'test' where id = %s",
          (lied["id"],))
    m.sql("insert into reception_audit (source_bucket, file_name, object_key, size_bytes,"
          " uploaded_at, sha256, etag, received_by) values (%s, 'lied.bin', 'lied.bin', 100,"
          " now(), %s, %s, 'another tool')",
          (m.reception_bucket, "f" * 64, _etag(m, m.reception_bucket, "lied.bin")))
    time.sleep(GRACE_WAIT)
    before = _snapshot(m)

    r, out = _reconcile(m)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert out["ok"] is True and out["clean"] is False and out["applied"] is False
    assert (out["unlogged"], out["mismatch"], out["gone"], out["hash_mismatch"]) == (1, 1, 1, 0)
    assert out["objects"] == 4  # the marker is not a file
    d = {(x["kind"], x["key"]) for x in out["drift"]}
    assert d == {("unlogged", "d/foreign.bin"), ("mismatch", "swapped.txt"),
                 ("gone", "gone.txt")}
    g = [x for x in out["drift"] if x["kind"] == "gone"][0]
    assert g["row_id"] == checks.live_rows(m, "gone.txt")[0]["id"]
    assert _snapshot(m) == before

    r, out = _reconcile(m, "--verify-hashes")
    assert r.returncode == 3
    assert out["hash_mismatch"] == 1
    h = [x for x in out["drift"] if x["kind"] == "hash_mismatch"][0]
    assert h["key"] == "lied.bin" and sha(b"x" * 100) in h["detail"]
    assert _snapshot(m) == before

    t = _cli(m, "reconcile", "-o", _cfg(m))
    assert t.returncode == 3
    assert "1 unlogged, 1 mismatched, 1 gone" in t.stdout
    assert "d/foreign.bin" in t.stdout and "gone.txt" in t.stdout
    assert _snapshot(m) == before

    r, out = _reconcile(m, "--apply", "--verify-hashes")
    assert r.returncode == 3, (r.stdout, r.stderr)  # the hash mismatch is left
    assert out["applied"] is True and out["logged"] == 2 and out["drift_left"] == 1
    fixed = {x["key"]: (x["fixed"], x["applied"]) for x in out["drift"]}
    assert fixed["d/foreign.bin"] == (True, "logged")
    assert fixed["swapped.txt"] == (True, "logged")
    assert fixed["gone.txt"] == (True, "row closed")
    assert fixed["lied.bin"][0] is False
    # the unlogged object: one row, hashed from its bytes, origin foreign
    rows = checks.rows(m, "d/foreign.bin")
    assert len(rows) == 1 and rows[0]["removed_at"] is None
    assert rows[0]["sha256"] == sha(foreign) and rows[0]["xxh128"] == m.xxh128_bytes(foreign)
    assert rows[0]["origin"] == "foreign" and rows[0]["size_bytes"] == 3000
    assert rows[0]["etag"] == _etag(m, m.reception_bucket, "d/foreign.bin")
    # the replaced one: the mount's row closed as replaced, the new upload's row live
    rows = checks.rows(m, "swapped.txt")
    assert [(x["sha256"], x["removed_at"] is None) for x in rows] == \
        [(sha(b"first upload\n"), False), (sha(swapped), True)]
    assert "replaced" in rows[0]["removal_reason"]
    # the gone one: its only row closed, by id, with who did it
    rows = checks.rows(m, "gone.txt")
    assert len(rows) == 1 and rows[0]["removed_at"] is not None
    assert "custodyfs reconcile" in rows[0]["removal_reason"]
    assert f"uid {os.getuid()}" in rows[0]["removal_reason"]
    # untouched: the clean one, the lying row, the marker, every object
    assert len(checks.rows(m, "ok.txt")) == 1 and checks.live_rows(m, "ok.txt")
    assert [x["sha256"] for x in checks.live_rows(m, "lied.bin")] == ["f" * 64]
    assert checks.rows(m, "d/") == []
    after = _snapshot(m)
    assert after["rbucket"] == before["rbucket"] and after["sbucket"] == before["sbucket"]
    assert len(after["reception"]) == len(before["reception"]) + 2
    assert after["storage"] == before["storage"] and after["journal"] == before["journal"]

    # again: nothing more to do but the mismatch, which stays
    r, out = _reconcile(m, "--apply", "--verify-hashes")
    assert r.returncode == 3 and out["logged"] == 0
    assert [(x["kind"], x["key"]) for x in out["drift"]] == [("hash_mismatch", "lied.bin")]
    assert _snapshot(m) == after
    # without hashes the store and the table agree: exit 0
    r, out = _reconcile(m)
    assert r.returncode == 0 and out["clean"] is True and out["drift"] == []


def test_reconcile_leaves_a_recent_upload_to_its_uploader(mount_factory, uniq):
    """An object younger than the grace period (a mount may be committing its row) is
    reported but not logged by --apply (exit 3); once older, --apply logs it once (exit 0)."""
    m = mount_factory(config={"fs": {"foreign_grace_ms": "600000"}}, start=False)
    m.s3.put_object(Bucket=m.reception_bucket, Key="fresh.bin", Body=b"just arrived")
    r, out = _reconcile(m, "--apply")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert out["unlogged"] == 1 and out["logged"] == 0 and out["drift_left"] == 1
    assert "too recent" in out["drift"][0]["applied"]
    assert checks.rows(m, "fresh.bin") == []
    m.write_config({"fs": {"foreign_grace_ms": "1000"}})
    time.sleep(GRACE_WAIT)
    r, out = _reconcile(m, "--apply")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert out["logged"] == 1 and out["drift_left"] == 0
    assert [x["sha256"] for x in checks.rows(m, "fresh.bin")] == [sha(b"just arrived")]
    r, out = _reconcile(m, "--apply")
    assert r.returncode == 0 and out["clean"] is True
    assert len(checks.rows(m, "fresh.bin")) == 1


def test_reconcile_with_the_store_or_database_down_changes_nothing(mount_factory, uniq):
    m = mount_factory()
    drop(m, "a.txt", b"a\n")
    m.unmount()
    _put_foreign(m, "u.bin", b"unlogged")
    m.s3.delete_object(Bucket=m.reception_bucket, Key="a.txt")
    time.sleep(GRACE_WAIT)
    before = _snapshot(m)
    m.stop_s3()
    r, out = _reconcile(m, "--apply")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert out["ok"] is False and "store" in out["error"]
    m.start_s3()
    assert _snapshot(m) == before
    m.stop_pg()
    r, out = _reconcile(m, "--apply")
    assert r.returncode == 1 and out["ok"] is False and "database" in out["error"]
    m.start_pg()
    assert _snapshot(m) == before
    r, out = _reconcile(m, "--apply")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert out["logged"] == 1 and out["gone"] == 1 and out["drift_left"] == 0


# ---- cleanup ---------------------------------------------------------------------------------

def test_cleanup_removes_only_promoted_verified_logged_objects(mount_factory, uniq):
    """Promoted by a tool that did not delete its sources: cleanup removes exactly those
    objects (and gives their rows removed_at with a reason naming the storage row), and keeps,
    with a reason each, everything else: an unlogged object, a logged but unpromoted one, one
    replaced after its promotion, one whose stored copy is missing, one whose stored copy's
    recorded hash differs, one whose row records no ETag. --dry-run first changes nothing."""
    m = mount_factory()
    p = project(m, uniq)
    files = {"p1.txt": b"promoted one\n", "sub/p2.bin": os.urandom(20000),
             "seed.bin": os.urandom(777), "kept.txt": b"only received\n",
             "replaced.txt": b"promoted, then replaced\n", "lost.txt": b"copy lost\n",
             "badhash.txt": b"copy altered\n"}
    os.makedirs(os.path.join(m.inbox, "sub"))
    for k, b in files.items():
        drop(m, k, b)
    m.unmount()
    for k in ("p1.txt", "sub/p2.bin", "replaced.txt", "lost.txt"):
        _other_tool_promotion(m, k, p)
    _other_tool_promotion(m, "seed.bin", p, reception_id=False)
    _other_tool_promotion(m, "badhash.txt", p, meta_sha="e" * 64)
    m.s3.delete_object(Bucket=m.storage_bucket, Key=p + "/lost.txt")
    m.s3.put_object(Bucket=m.reception_bucket, Key="replaced.txt", Body=b"a new upload\n")
    _put_foreign(m, "foreign.bin", b"nobody logged me")
    # a row of another tool without an ETag (the seed's kind), and its copy stored
    m.s3.put_object(Bucket=m.reception_bucket, Key="noetag.txt", Body=b"seed era\n")
    m.sql("insert into reception_audit (source_bucket, file_name, object_key, size_bytes,"
          " uploaded_at, sha256) values (%s, 'noetag.txt', 'noetag.txt', 9, now(), %s)",
          (m.reception_bucket, sha(b"seed era\n")))
    _other_tool_promotion(m, "noetag.txt", p)
    before = _snapshot(m)

    r, out = _cleanup(m, "--dry-run")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert out["ok"] is True and out["dry_run"] is True
    objs = _by_key(out)
    would = sorted(k for k, o in objs.items() if o["action"] == "would remove")
    assert would == ["p1.txt", "seed.bin", "sub/p2.bin"]
    assert out["would_remove"] == 3 and out["kept"] == 6 and out["failed"] == 0
    assert _snapshot(m) == before

    r, out = _cleanup(m)
    assert r.returncode == 0, (r.stdout, r.stderr)
    objs = _by_key(out)
    assert sorted(k for k, o in objs.items() if o["action"] == "removed") == \
        ["p1.txt", "seed.bin", "sub/p2.bin"]
    assert out["removed"] == 3 and out["kept"] == 6
    assert out["bytes_removed"] == sum(len(files[k]) for k in ("p1.txt", "sub/p2.bin",
                                                                "seed.bin"))
    reasons = {k: o["reason"] for k, o in objs.items() if o["action"] == "kept"}
    assert "not logged" in reasons["foreign.bin"]
    assert "not promoted" in reasons["kept.txt"]
    assert "replaced" in reasons["replaced.txt"]
    assert "missing" in reasons["lost.txt"]
    assert "SHA-256" in reasons["badhash.txt"]
    assert "no ETag" in reasons["noetag.txt"]
    for k in ("p1.txt", "sub/p2.bin", "seed.bin"):
        assert checks.head(m, k) is None
        rows = checks.rows(m, k)
        assert len(rows) == 1 and rows[0]["removed_at"] is not None
        assert "custodyfs cleanup" in rows[0]["removal_reason"]
        st = srows(m, p + "/" + k)
        assert len(st) == 1 and f"storage_audit {st[0]['id']}" in rows[0]["removal_reason"]
        # the stored copy untouched
        assert m.s3.get_object(Bucket=m.storage_bucket,
                               Key=p + "/" + k)["Body"].read() == files[k]
    after = _snapshot(m)
    # the directory marker mkdir made is not a received file: it stays
    kept = {"kept.txt", "replaced.txt", "lost.txt", "badhash.txt", "foreign.bin", "noetag.txt",
            "sub/"}
    assert after["rbucket"] == {k: v for k, v in before["rbucket"].items() if k in kept}
    assert after["sbucket"] == before["sbucket"]
    assert after["storage"] == before["storage"] and after["journal"] == before["journal"]
    assert len(after["reception"]) == len(before["reception"])  # no row added
    changed = [(b, a) for b, a in zip(before["reception"], after["reception"]) if b != a]
    assert len(changed) == 3
    for k in ("kept.txt", "lost.txt", "badhash.txt"):
        assert len(checks.live_rows(m, k)) == 1
    # a second run removes nothing
    r, out = _cleanup(m)
    assert r.returncode == 0 and out["removed"] == 0 and out["kept"] == 6
    assert _snapshot(m) == after


def test_cleanup_removes_a_renames_staged_copy_only_once_no_rename_holds_it(mount_factory, uniq):
    """review-H M2, review-L L1/L6: a rename over an existing file stages its copy at
    .custodyfs-rename/<token> of the STORAGE bucket. One left by a rename that ended or crashed
    (no in-flight marker, or a lapsed one) is removed by cleanup; one whose rename's marker
    still holds is kept. An upload at that name in the inbox is an ordinary upload: never
    removed as a staged copy. No reception row is written or changed."""
    m = mount_factory()
    m.unmount()
    left, lapsed, held = (f".custodyfs-rename/{uniq}-{n}" for n in ("left", "lapsed", "held"))
    inbox_k = f".custodyfs-rename/{uniq}-left"  # the same name in the inbox: someone's upload
    for k in (left, lapsed, held):
        m.s3.put_object(Bucket=m.storage_bucket, Key=k, Body=b"a staged copy " + k.encode())
    m.s3.put_object(Bucket=m.reception_bucket, Key=inbox_k, Body=b"an uploader's file")
    for k, until in ((lapsed, "now() - interval '1 second'"), (held, "now() + interval '1 hour'")):
        m.sql("insert into file_attrs_pending (bucket, object_key, token, pending_until)"
              f" values (%s || '/renaming', %s, %s, {until})", (m.storage_bucket, k, uniq))

    def staged(k):
        try:
            return m.s3.head_object(Bucket=m.storage_bucket, Key=k)
        except m.s3.exceptions.ClientError:
            return None
    before = _snapshot(m)
    r, out = _cleanup(m, "--dry-run")
    assert r.returncode == 0, (r.stdout, r.stderr)
    objs = [o for o in out["objects"] if o["key"] in (left, lapsed, held)]
    assert sorted((o["key"], o["action"]) for o in objs) == \
        sorted([(left, "would remove"), (left, "kept"), (lapsed, "would remove"),
                (held, "kept")]), objs
    assert _snapshot(m) == before
    r, out = _cleanup(m)
    assert r.returncode == 0, (r.stdout, r.stderr)
    objs = [o for o in out["objects"] if o["key"] in (left, lapsed, held)]
    assert sorted((o["key"], o["action"]) for o in objs) == \
        sorted([(left, "removed"), (left, "kept"), (lapsed, "removed"), (held, "kept")]), objs
    assert any("in flight" in (o["reason"] or "") for o in objs if o["key"] == held)
    assert [staged(k) is None for k in (left, lapsed, held)] == [True, True, False]
    assert checks.get_object(m, inbox_k) == b"an uploader's file"
    assert m.sql("select count(*) from reception_audit where object_key like %s",
                 (".custodyfs-rename/%",))[0][0] == 0
    assert _snapshot(m)["reception"] == before["reception"]


def test_cleanup_removes_every_version_of_a_staged_copy_no_rename_holds(stack, mount_factory,
                                                                       uniq):
    """review-N N2: on a versioned storage bucket a staged copy's DELETE leaves its bytes as a
    noncurrent version (a rename that crashed, or a store that refused the version DELETE).
    cleanup removes every version and delete marker of a staged key no rename holds; a held
    key's versions are kept; versions of keys outside .custodyfs-rename/ are never touched."""
    from test_review_k_rename import versioned_bucket, versions
    vb = versioned_bucket(stack, uniq)
    m = mount_factory(config={"s3": {"storage_bucket": vb}})
    m.unmount()
    left, held = (f".custodyfs-rename/{uniq}-{n}" for n in ("left", "held"))
    other = f"{uniq}-other/kept.bin"
    for k in (left, held, other):
        m.s3.put_object(Bucket=vb, Key=k, Body=b"one " + k.encode())
        m.s3.put_object(Bucket=vb, Key=k, Body=b"two " + k.encode())
    m.s3.delete_object(Bucket=vb, Key=left)
    m.s3.delete_object(Bucket=vb, Key=other)
    m.sql("insert into file_attrs_pending (bucket, object_key, token, pending_until)"
          " values (%s || '/renaming', %s, %s, now() + interval '1 hour')", (vb, held, uniq))
    want_other = versions(m.s3, vb, f"{uniq}-other/")
    assert want_other == [(other, "marker"), (other, "version"), (other, "version")]
    r, out = _cleanup(m, "--dry-run")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert len(versions(m.s3, vb, ".custodyfs-rename/")) == 5  # nothing removed
    dry = sorted((o["key"].split("?")[0], o["action"]) for o in out["objects"]
                 if o["key"].startswith(".custodyfs-rename/"))
    assert dry == [(held, "kept"), (left, "would remove"), (left, "would remove")], \
        out["objects"]
    r, out = _cleanup(m)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert versions(m.s3, vb, ".custodyfs-rename/") == [(held, "version"), (held, "version")]
    assert m.s3.get_object(Bucket=vb, Key=held)["Body"].read() == b"two " + held.encode()
    assert versions(m.s3, vb, f"{uniq}-other/") == want_other
    assert out["removed"] == 2 and out["failed"] == 0, out
    real = sorted((o["key"].split("?")[0], o["action"]) for o in out["objects"]
                  if o["key"].startswith(".custodyfs-rename/"))
    assert real == [(held, "kept"), (left, "removed"), (left, "removed")], out["objects"]


def test_cleanup_verify_hashes_reads_the_stored_bytes(mount_factory, uniq):
    """A stored copy whose bytes were replaced by another of the same size while its metadata
    still claims the recorded hash: HEAD cannot tell, --verify-hashes does (kept)."""
    m = mount_factory()
    p = project(m, uniq)
    drop(m, "v.bin", b"A" * 5000)
    m.unmount()
    dest = _other_tool_promotion(m, "v.bin", p)
    m.s3.put_object(Bucket=m.storage_bucket, Key=dest, Body=b"B" * 5000,
                    Metadata={"sha256": sha(b"A" * 5000)})
    before = _snapshot(m)
    r, out = _cleanup(m, "--verify-hashes", "--dry-run")
    assert r.returncode == 0
    o = _by_key(out)["v.bin"]
    assert o["action"] == "kept" and "bytes" in o["reason"]
    r, out = _cleanup(m, "--verify-hashes")
    assert r.returncode == 0 and out["removed"] == 0
    assert _snapshot(m) == before
    # without --verify-hashes too: its row records no ETag (no journal entry), so its bytes
    # are hashed; the metadata that agrees proves nothing
    r, out = _cleanup(m, "--dry-run")
    o = _by_key(out)["v.bin"]
    assert r.returncode == 0 and o["action"] == "kept" and "bytes" in o["reason"], o


def test_cleanup_trusts_a_stored_object_only_with_its_recorded_etag(stack, mount_factory,
                                                                    proxied, uniq):
    """Gap 2j in cleanup: a.bin and b.bin promoted by `custodyfs promote` (the verification's
    ETag recorded in their journal entries), their sources left in reception (the store
    refused the source DELETE; the entries then closed as a promotion whose cleanup was lost).
    Another client overwrites the stored a.bin with other bytes of the same size and a.bin's
    sha256/xxh128 in its metadata. cleanup without --verify-hashes: a.bin's stored object no
    longer has the recorded ETag, so its bytes are hashed and differ: the reception object
    stays, its row live, nothing changed for it; b.bin (the recorded ETag) is removed."""
    px = proxied
    m = mount_factory()
    p = project(m, uniq)
    files = {"a.bin": os.urandom(6000), "b.bin": os.urandom(3000)}
    for k, b in files.items():
        drop(m, k, b)
    m.unmount()
    m.write_config({"s3": {"endpoint": px.url}})
    px.rule = lambda meth, path, h: (("status", 503, b"") if meth == "DELETE"
                                     and "/recepcao-raw/" in path else None)
    r = _cli(m, "promote", "--project", p, "-o", _cfg(m), "--json", timeout=300)
    assert r.returncode == 1, (r.stdout, r.stderr)
    px.rule = None
    m.write_config({"s3": {"endpoint": stack.endpoint}})
    for k, b in files.items():
        js = journal(m, p + "/" + k)
        assert [j["state"] for j in js] == ["stored"]
        assert js[0]["dest_etag"] == _etag(m, m.storage_bucket, p + "/" + k)
        assert checks.get_object(m, k) == b
    m.sql("update promotion_journal set state = 'done' where dest_key = any(%s)",
          ([p + "/" + k for k in files],))
    a = p + "/a.bin"
    theirs = os.urandom(len(files["a.bin"]))
    m.s3.put_object(Bucket=m.storage_bucket, Key=a, Body=theirs,
                    Metadata=dhead(m, a)["Metadata"])
    forged = dhead(m, a)
    assert forged["Metadata"]["sha256"] == sha(files["a.bin"])
    assert forged["ETag"].strip('"') != journal(m, a)[0]["dest_etag"]
    before = _snapshot(m)

    r, out = _cleanup(m, "--dry-run")
    assert r.returncode == 0, (r.stdout, r.stderr)
    o = _by_key(out)["a.bin"]
    assert o["action"] == "kept" and "bytes" in o["reason"], o
    assert _by_key(out)["b.bin"]["action"] == "would remove"
    assert _snapshot(m) == before

    r, out = _cleanup(m)
    assert r.returncode == 0, (r.stdout, r.stderr)
    objs = _by_key(out)
    assert objs["a.bin"]["action"] == "kept" and "bytes" in objs["a.bin"]["reason"]
    assert objs["b.bin"]["action"] == "removed"
    assert out["removed"] == 1 and out["kept"] == 1 and out["failed"] == 0
    # a.bin: the reception object and its only row, untouched
    assert checks.get_object(m, "a.bin") == files["a.bin"]
    rows = checks.rows(m, "a.bin")
    assert len(rows) == 1 and rows[0]["removed_at"] is None
    # the stored objects untouched; every storage row and journal entry of the key unchanged
    assert m.s3.get_object(Bucket=m.storage_bucket, Key=a)["Body"].read() == theirs
    assert dhead(m, a)["ETag"] == forged["ETag"]
    assert [s["outcome"] for s in srows(m, a)] == ["copied"]
    assert m.sql_value("select count(*) from storage_audit where dest_key = %s", (a,)) == 1
    assert [j["state"] for j in journal(m, a)] == ["done"]
    # b.bin: removed, its only row closed by cleanup
    assert checks.head(m, "b.bin") is None
    rows = checks.rows(m, "b.bin")
    assert len(rows) == 1 and "custodyfs cleanup" in rows[0]["removal_reason"]
    after = _snapshot(m)
    assert after["storage"] == before["storage"] and after["journal"] == before["journal"]
    assert after["sbucket"] == before["sbucket"]
    assert {k: v for k, v in after["rbucket"].items()} == \
        {k: v for k, v in before["rbucket"].items() if k != "b.bin"}
    assert len(after["reception"]) == len(before["reception"])


def test_cleanup_older_than_keeps_recent_receptions(mount_factory, uniq):
    """--older-than D: a reception logged two days ago (a row of another tool, dated then) is
    removed, one logged now is kept (by the database's clock); a bad D is usage (exit 2)."""
    m = mount_factory()
    p = project(m, uniq)
    drop(m, "new.txt", b"new\n")
    m.unmount()
    m.s3.put_object(Bucket=m.reception_bucket, Key="old.txt", Body=b"old\n")
    m.sql("insert into reception_audit (source_bucket, file_name, object_key, size_bytes,"
          " uploaded_at, sha256, etag, received_by) values (%s, 'old.txt', 'old.txt', 4,"
          " now() - interval '2 days', %s, %s, 'another tool')",
          (m.reception_bucket, sha(b"old\n"), _etag(m, m.reception_bucket, "old.txt")))
    _other_tool_promotion(m, "old.txt", p)
    _other_tool_promotion(m, "new.txt", p)
    r, out = _cleanup(m, "--older-than", "3d", "--dry-run")
    assert r.returncode == 0 and out["would_remove"] == 0 and out["kept"] == 2
    r, out = _cleanup(m, "--older-than", "1d")
    assert r.returncode == 0, (r.stdout, r.stderr)
    objs = _by_key(out)
    assert objs["old.txt"]["action"] == "removed"
    assert objs["new.txt"]["action"] == "kept" and "older-than" in objs["new.txt"]["reason"]
    assert checks.head(m, "old.txt") is None and checks.head(m, "new.txt") is not None
    assert len(checks.live_rows(m, "new.txt")) == 1 and checks.live_rows(m, "old.txt") == []
    r = _cli(m, "cleanup", "-o", _cfg(m), "--older-than", "3 days")
    assert r.returncode == 2


def test_cleanup_keeps_an_open_promotion_then_recover_finishes_it(stack, mount_factory, proxied,
                                                                   uniq):
    """A promotion whose source DELETE the store refused stays open in the journal (stored,
    not cleaned up): cleanup keeps that object (the journal owns it) and changes nothing;
    recover finishes it; cleanup then has nothing to do."""
    px = proxied
    m = mount_factory()
    p = project(m, uniq)
    data = os.urandom(4000)
    drop(m, "j.bin", data)
    m.unmount()
    m.write_config({"s3": {"endpoint": px.url}})
    px.rule = lambda meth, path, h: (("status", 503, b"") if meth == "DELETE"
                                     and "/recepcao-raw/" in path else None)
    r = _cli(m, "promote", "--project", p, "-o", _cfg(m), "--json", timeout=300)
    assert r.returncode == 1, (r.stdout, r.stderr)
    px.rule = None
    m.write_config({"s3": {"endpoint": stack.endpoint}})
    assert [j["state"] for j in m.sql_dicts(
        "select state from promotion_journal where source_key = 'j.bin'")] == ["stored"]
    assert checks.get_object(m, "j.bin") == data
    before = _snapshot(m)
    r, out = _cleanup(m)
    assert r.returncode == 0, (r.stdout, r.stderr)
    o = _by_key(out)["j.bin"]
    assert o["action"] == "kept" and "in progress" in o["reason"]
    assert _snapshot(m) == before
    r = _cli(m, "recover", "-o", _cfg(m), timeout=300)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert checks.head(m, "j.bin") is None
    r, out = _cleanup(m)
    assert r.returncode == 0 and out["objects_seen"] == 0


def test_cleanup_with_the_store_or_database_down_changes_nothing(mount_factory, uniq):
    m = mount_factory()
    p = project(m, uniq)
    drop(m, "c.txt", b"promoted\n")
    m.unmount()
    _other_tool_promotion(m, "c.txt", p)
    before = _snapshot(m)
    m.stop_s3()
    r, out = _cleanup(m)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert out["ok"] is False and "store" in out["error"] and out["objects"] == []
    assert "nothing done" in r.stderr
    m.start_s3()
    assert _snapshot(m) == before
    m.stop_pg()
    r, out = _cleanup(m)
    assert r.returncode == 1 and out["ok"] is False and "database" in out["error"]
    m.start_pg()
    assert _snapshot(m) == before
    r, out = _cleanup(m)
    assert r.returncode == 0 and out["removed"] == 1
    assert checks.head(m, "c.txt") is None


def test_reconcile_and_cleanup_usage(mount_factory, uniq):
    m = mount_factory(start=False)
    for args in (["reconcile", "extra", "-o", _cfg(m)], ["reconcile", "--bogus"],
                 ["cleanup", "--older-than", "-1d", "-o", _cfg(m)],
                 ["cleanup", "--older-than", "5x", "-o", _cfg(m)],
                 ["cleanup", "-o", "allow_other"], ["cleanup"], ["reconcile"]):
        r = _cli(m, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
    for t in ("reconcile", "cleanup"):
        r = _cli(m, t, "--help")
        assert r.returncode == 0 and r.stdout.startswith("usage: custodyfs " + t)
        assert "Exit status" in r.stdout
    # refused before the database was even touched
    assert m.sql_value("select to_regclass('reception_audit')") is None


def test_man_page_and_readme_document_both_tools(mount_factory):
    """Every option each tool's --help names, and each exit status, is in its section of
    doc/custodyfs.1; the README's tools section names both."""
    import re
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    man = (repo / "doc" / "custodyfs.1").read_text().replace("\\-", "-")
    m = mount_factory(start=False, reset=False)
    for tool, codes in (("reconcile", ("0", "1", "2", "3")), ("cleanup", ("0", "1", "2"))):
        start = man.index(f".SS custodyfs {tool} ")
        nxt = re.search(r"^\.S[SH] ", man[start + 4:], re.M)
        sec = man[start:start + 4 + nxt.start()]
        helptext = _cli(m, tool, "--help").stdout
        opts = set(re.findall(r"(--[a-z][a-z-]+)", helptext))
        assert {"--json", "--help"} <= opts and len(opts) >= 4, opts
        missing = [o for o in opts - {"--help"} if o not in sec]
        assert not missing, f"{tool}: not in the man page: {missing}"
        status = sec[sec.index("Exit status"):]
        for c in codes:
            assert re.search(rf"\b{c} ", status), (tool, c)
        assert f"custodyfs {tool}" in man[:man.index(".SH DESCRIPTION")]  # SYNOPSIS
    readme = (repo / "README.md").read_text()
    tools = readme[readme.index("### Batch tools"):]
    assert "custodyfs reconcile" in tools and "custodyfs cleanup" in tools
    assert "--dry-run" in tools and "--apply" in tools


def test_read_only_runs_never_migrate(mount_factory):
    """reconcile without --apply and cleanup --dry-run change nothing, not even the schema:
    on a database this program has not migrated they refuse (exit 1) and it stays empty;
    cleanup proper migrates (and finds nothing to do)."""
    m = mount_factory(start=False)
    r, out = _reconcile(m)
    assert r.returncode == 1 and out["ok"] is False and "schema" in out["error"], r.stderr
    r, out = _cleanup(m, "--dry-run")
    assert r.returncode == 1 and out["ok"] is False and "schema" in out["error"], r.stderr
    assert m.sql_value("select to_regclass('schema_migrations')") is None
    assert m.sql_value("select to_regclass('reception_audit')") is None
    r, out = _cleanup(m)
    assert r.returncode == 0 and out["objects_seen"] == 0, (r.stdout, r.stderr)
    assert m.sql_value("select to_regclass('reception_audit')") is not None


def test_reconcile_walks_the_bucket_and_the_table_page_by_page(mount_factory):
    """More objects and rows than one page of each (1000): drift on both sides of the page
    boundaries is found, exactly, and nothing else (rows of another tool, with ETags)."""
    from concurrent.futures import ThreadPoolExecutor
    m = mount_factory(start=False)
    r, out = _reconcile(m, "--apply")  # migrates; nothing there
    assert r.returncode == 0 and out["objects"] == 0, (r.stdout, r.stderr)
    keys = [f"p/k{i:05d}" for i in range(1205)]
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda k: m.s3.put_object(Bucket=m.reception_bucket, Key=k,
                                              Body=k.encode()), keys))
    listed = {}
    for page in m.s3.get_paginator("list_objects_v2").paginate(Bucket=m.reception_bucket):
        for o in page.get("Contents", []):
            listed[o["Key"]] = o["ETag"].strip('"')
    assert sorted(listed) == keys
    unlogged = {"p/k01000", "p/k00000"}
    vals = [(m.reception_bucket, k.split("/")[1], k, len(k), sha(k.encode()), listed[k])
            for k in keys if k not in unlogged]
    c = m.stack._connect()
    try:
        with c.cursor() as cur:
            cur.executemany("insert into reception_audit (source_bucket, file_name, object_key,"
                            " size_bytes, uploaded_at, sha256, etag, received_by) values"
                            " (%s, %s, %s, %s, now(), %s, %s, 'another tool')", vals)
    finally:
        c.close()
    gone = {"p/k00999", "p/k01204"}
    for k in gone:
        m.s3.delete_object(Bucket=m.reception_bucket, Key=k)
    before = _snapshot(m)
    r, out = _reconcile(m)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert out["objects"] == 1203 and out["live_rows"] == 1203
    assert out["ok_objects"] == 1201
    assert {x["key"] for x in out["drift"] if x["kind"] == "unlogged"} == unlogged
    assert {x["key"] for x in out["drift"] if x["kind"] == "gone"} == gone
    assert out["mismatch"] == 0 and len(out["drift"]) == 4
    assert _snapshot(m) == before


def test_cleanup_and_reconcile_with_a_multipart_upload(mount_factory, uniq):
    """A file the mount uploaded in parts (its ETag is a multipart one, which Swift does not
    match on a conditional DELETE): reconcile --verify-hashes finds it clean (its bytes read
    with If-Match its ETag), cleanup removes it once promoted, and its row gets removed_at."""
    m = mount_factory(config={"fs": {"part_size": str(5 << 20)}})
    p = project(m, uniq)
    data = os.urandom((11 << 20) + 123)
    drop(m, "big.bin", data)
    m.unmount()
    if m.stack.backend == "swift":  # s3rver's ETag of a multipart upload has no part count
        assert "-" in _etag(m, m.reception_bucket, "big.bin")  # uploaded in parts
    r, out = _reconcile(m, "--verify-hashes")
    assert r.returncode == 0 and out["clean"] is True and out["ok_objects"] == 1, \
        (r.stdout, r.stderr)
    dest = _other_tool_promotion(m, "big.bin", p)
    r, out = _cleanup(m, "--verify-hashes")
    assert r.returncode == 0, (r.stdout, r.stderr)
    rows = checks.rows(m, "big.bin")
    if m.stack.backend == "swift":
        # Swift refuses the DELETE If-Match a multipart ETag: never an unconditional DELETE
        # (it could remove a newer upload): kept, with the reason
        o = _by_key(out)["big.bin"]
        assert o["action"] == "kept" and "If-Match" in o["reason"], o
        assert checks.get_object(m, "big.bin") == data
        assert len(rows) == 1 and rows[0]["removed_at"] is None
        assert m.s3.get_object(Bucket=m.storage_bucket, Key=dest)["Body"].read() == data
        r, out = _reconcile(m, "--verify-hashes")
        assert r.returncode == 0 and out["clean"] is True
        _stored_copy_checked(out)
        return
    assert _by_key(out)["big.bin"]["action"] == "removed"
    assert checks.head(m, "big.bin") is None
    assert len(rows) == 1 and rows[0]["removed_at"] is not None
    assert m.s3.get_object(Bucket=m.storage_bucket, Key=dest)["Body"].read() == data
    r, out = _reconcile(m, "--verify-hashes")
    assert r.returncode == 0 and out["clean"] is True
    _stored_copy_checked(out)


def _stored_copy_checked(out):
    """The stored copy of the multipart upload was hashed, not skipped (Swift lists such a
    copy with another ETag than the one its HEAD and If-Match know)."""
    assert (out["storage_objects"], out["storage_ok_objects"]) == (1, 1), out
    assert (out["storage_unhashed"], out["storage_unchecked"], out["unchecked"]) == (0, 0, 0)


def test_cleanup_store_failing_mid_run_changes_nothing(stack, mount_factory, proxied, uniq):
    """The store answers the first checks, then fails: HEADs of the stored copies answer 503,
    then (HEADs fine) every DELETE does. Each run exits 1, reports the objects as failed and
    changes nothing (no object gone, no row closed); with the store well again it removes."""
    px = proxied
    m = mount_factory()
    p = project(m, uniq)
    drop(m, "x.txt", b"x\n")
    drop(m, "y.txt", b"y\n")
    m.unmount()
    _other_tool_promotion(m, "x.txt", p)
    _other_tool_promotion(m, "y.txt", p)
    before = _snapshot(m)
    m.write_config({"s3": {"endpoint": px.url, "max_retries": "1"}})
    # (the If-Match probe, under .custodyfs-probe/, is spared: it is not what is tested here)
    for rule in (lambda meth, path, h: ("status", 503, b"") if meth == "HEAD"
                 and "/.custodyfs-probe/" not in path else None,
                 lambda meth, path, h: ("status", 503, b"") if meth == "DELETE"
                 and "/.custodyfs-probe/" not in path else None):
        px.rule = rule
        r, out = _cleanup(m)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert out["ok"] is False and out["failed"] == 2 and out["removed"] == 0
        assert {o["action"] for o in out["objects"]} == {"failed"}
        px.rule = None
        assert _snapshot(m) == before
    r, out = _cleanup(m)
    assert r.returncode == 0 and out["removed"] == 2, (r.stdout, r.stderr)


def test_cleanup_duplicate_content_needs_the_object_it_points_at(mount_factory, uniq):
    """A reception recorded as duplicate_content (stored once under another key) is removed
    only while the object its row points at is there with its size and hash; one pointing at
    a missing object is kept."""
    m = mount_factory()
    p = project(m, uniq)
    same = b"same bytes\n"
    for k in ("a.txt", "b.txt", "c.txt"):
        drop(m, k, same)
    m.unmount()
    stored = _other_tool_promotion(m, "a.txt", p)
    for k, of in (("b.txt", stored), ("c.txt", p + "/gone.txt")):
        row = checks.live_rows(m, k)[0]
        m.sql("insert into storage_audit (project_prefix, project_name, dest_bucket, dest_key,"
              " size_bytes, moved_at, source_bucket, source_key, reception_id, outcome,"
              " duplicate_of, sha256, moved_by) values (%s, %s, %s, %s, %s, now(), %s, %s, %s,"
              " 'duplicate_content', %s, %s, 'another tool')",
              (p, p, m.storage_bucket, p + "/" + k, len(same), m.reception_bucket, k, row["id"],
               of, row["sha256"]))
    r, out = _cleanup(m)
    assert r.returncode == 0, (r.stdout, r.stderr)
    objs = _by_key(out)
    assert objs["a.txt"]["action"] == "removed" and objs["b.txt"]["action"] == "removed"
    assert objs["b.txt"]["outcome"] == "duplicate_content"
    assert objs["c.txt"]["action"] == "kept" and "missing" in objs["c.txt"]["reason"]
    assert checks.bucket_keys(m) == ["c.txt"]
    assert len(checks.live_rows(m, "c.txt")) == 1 and checks.live_rows(m, "b.txt") == []


def test_cleanup_refuses_a_store_that_ignores_if_match(mount_factory, uniq):
    """Before a real run cleanup probes the store (a probe object under .custodyfs-probe/, a
    DELETE If-Match a wrong ETag, then the probe goes). A store that deletes it anyway (s3rver,
    MinIO) makes the run refuse: exit 1, nothing removed, the reason and the option named;
    --dry-run still works; --unsafe-unconditional-delete (documented with its risk) runs. On
    a store that honours If-Match (Swift) the run goes without the option. No probe is left."""
    m = mount_factory()
    p = project(m, uniq)
    drop(m, "c.txt", b"promoted\n")
    m.unmount()
    _other_tool_promotion(m, "c.txt", p)
    assert UNSAFE in _cli(m, "cleanup", "--help").stdout
    r = _cli(m, "cleanup", "-o", _cfg(m), "--json", timeout=300)
    out = _json(r)
    if _ignores_if_match(m):
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert out["ok"] is False and "If-Match" in out["error"] and out["objects"] == []
        assert "ignores If-Match" in r.stderr and UNSAFE in r.stderr
        assert checks.get_object(m, "c.txt") == b"promoted\n"
        assert len(checks.live_rows(m, "c.txt")) == 1 and len(checks.rows(m, "c.txt")) == 1
        assert _probe_keys(m) == []
        r, out = _cleanup(m, "--dry-run")
        assert r.returncode == 0 and out["would_remove"] == 1, (r.stdout, r.stderr)
        assert checks.get_object(m, "c.txt") == b"promoted\n"
        r, out = _cleanup(m, UNSAFE)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert out["removed"] == 1 and _by_key(out)["c.txt"]["action"] == "removed"
    assert checks.head(m, "c.txt") is None
    rows = checks.rows(m, "c.txt")
    assert len(rows) == 1 and "custodyfs cleanup" in rows[0]["removal_reason"]
    assert _probe_keys(m) == [] and checks.bucket_keys(m) == []


def test_cleanup_keeps_an_identical_reupload_logged_meanwhile(stack, mount_factory, proxied,
                                                              uniq):
    """A mount receives the same bytes again (same ETag, a new reception row) after cleanup
    checked the object: cleanup deletes under the key lock the mount logs with, and only while
    the row it verified is the key's newest live row, so the new upload stays (on every store:
    If-Match cannot tell identical bytes apart). Review finding 3."""
    px = proxied
    m = mount_factory()
    p = project(m, uniq)
    body = b"same bytes twice\n"
    drop(m, "same.txt", body)
    _other_tool_promotion(m, "same.txt", p)
    r1 = checks.live_rows(m, "same.txt")[0]["id"]
    fired = []

    def rule(meth, path, h):
        # cleanup's look at the reception object right before it deletes: the user uploads
        # the same bytes again through the mount (its close() returns 0, its row commits)
        if meth == "HEAD" and f"/{m.reception_bucket}/same.txt" in path and not fired:
            fired.append(path)
            with open(os.path.join(m.inbox, "same.txt"), "wb") as f:
                f.write(body)
        return None

    px.rule = rule
    cfg = m.config + ".cleanup"
    with open(m.config) as f:
        text = f.read()
    with open(cfg, "w") as f:
        f.write(text.replace(stack.endpoint, px.url))
    os.chmod(cfg, 0o600)
    extra = (UNSAFE,) if _ignores_if_match(m) else ()
    r = _cli(m, "cleanup", "-o", "config=" + cfg, "--json", *extra, timeout=300)
    px.rule = None
    assert fired, (r.stdout, r.stderr)
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = _json(r)
    o = _by_key(out)["same.txt"]
    assert o["action"] == "kept" and "newer upload" in o["reason"], o
    assert out["removed"] == 0
    live = checks.live_rows(m, "same.txt")
    assert len(live) == 1 and live[0]["id"] != r1
    rows = checks.rows(m, "same.txt")
    assert len(rows) == 2
    assert [x for x in rows if x["id"] == r1][0]["removed_at"] is not None
    assert "custodyfs cleanup" not in ([x for x in rows if x["id"] == r1][0]["removal_reason"]
                                       or "")
    assert checks.get_object(m, "same.txt") == body
    with open(os.path.join(m.inbox, "same.txt"), "rb") as f:
        assert f.read() == body


def test_reconcile_reports_storage_drift_and_changes_nothing(mount_factory, uniq):
    """The storage bucket against storage_audit (SPEC §6: drift between buckets and tables),
    each kind planted directly in the bucket with boto3: an object without a row (one in a
    project, one outside any), a stored object deleted, a stored object overwritten with other
    bytes of the same size. Reported in JSON (each item naming its bucket) and text, exit 3;
    the overwritten one only with --verify-hashes (its size still matches); a duplicate_content
    row (no object of its own) and the tools' own objects (.custodyfs-*) are not drift. Nothing changes, --apply
    or not: every row of every table (psycopg2) and both buckets' keys and ETags."""
    m = mount_factory()
    p = project(m, uniq)
    for name, data in (("ok.txt", b"fine\n"), ("gone.txt", b"will vanish\n"),
                       ("swapped.bin", b"a" * 100), ("same.txt", b"fine\n")):
        drop(m, name, data)
        promote(m, name, p)
    outcomes = {r["dest_key"]: r["outcome"] for r in m.sql_dicts(
        "select dest_key, outcome from storage_audit where project_prefix = %s", (p,))}
    assert outcomes == {p + "/ok.txt": "copied", p + "/gone.txt": "copied",
                        p + "/swapped.bin": "copied", p + "/same.txt": "duplicate_content"}
    m.unmount()
    planted = os.urandom(2000)
    sb = m.storage_bucket
    m.s3.put_object(Bucket=sb, Key=p + "/planted.bin", Body=planted,
                    Metadata={"sha256": sha(planted)})  # metadata proves nothing
    m.s3.put_object(Bucket=sb, Key="stray.txt", Body=b"outside any project")
    m.s3.delete_object(Bucket=sb, Key=p + "/gone.txt")
    m.s3.put_object(Bucket=sb, Key=p + "/swapped.bin", Body=b"b" * 100)
    gone_row = srows(m, p + "/gone.txt")[0]["id"]
    swapped_row = srows(m, p + "/swapped.bin")[0]["id"]
    # the tools' own objects (a probe a killed cleanup left; anchors) are not files
    m.s3.put_object(Bucket=sb, Key=".custodyfs-probe/host.1", Body=b"probe")
    before = _snapshot(m)

    r, out = _reconcile(m)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert out["ok"] is True and out["clean"] is False
    assert (out["storage_unlogged"], out["storage_gone"], out["storage_hash_mismatch"]) == \
        (2, 1, 0)
    assert (out["unlogged"], out["mismatch"], out["gone"], out["hash_mismatch"]) == (0, 0, 0, 0)
    assert out["storage_objects"] == 4 and out["storage_live_rows"] == 3  # ok, gone, swapped
    assert out["storage_ok_objects"] == 2
    items = {(x["kind"], x["bucket"], x["key"]): x for x in out["drift"]}
    assert set(items) == {("storage_unlogged", sb, p + "/planted.bin"),
                          ("storage_unlogged", sb, "stray.txt"),
                          ("storage_gone", sb, p + "/gone.txt")}
    assert items[("storage_gone", sb, p + "/gone.txt")]["row_id"] == gone_row
    assert items[("storage_unlogged", sb, "stray.txt")]["size"] == len(b"outside any project")
    assert _snapshot(m) == before

    r, out = _reconcile(m, "--verify-hashes")
    assert r.returncode == 3
    assert out["storage_hash_mismatch"] == 1 and out["storage_unhashed"] == 0
    h = [x for x in out["drift"] if x["kind"] == "storage_hash_mismatch"]
    assert [(x["key"], x["bucket"], x["row_id"]) for x in h] == \
        [(p + "/swapped.bin", sb, swapped_row)]
    assert sha(b"b" * 100) in h[0]["detail"] and sha(b"a" * 100) in h[0]["detail"]
    assert _snapshot(m) == before

    t = _cli(m, "reconcile", "-o", _cfg(m), "--verify-hashes")
    assert t.returncode == 3, (t.stdout, t.stderr)
    assert "storage: 4 objects, 3 live rows: 2 unlogged, 1 gone, 1 hash mismatches" in t.stdout
    for k in (p + "/planted.bin", "stray.txt", p + "/gone.txt", p + "/swapped.bin"):
        assert k in t.stdout, k
    assert _snapshot(m) == before

    r, out = _reconcile(m, "--apply", "--verify-hashes")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert out["drift_left"] == 4 and out["logged"] == 0
    assert {(x["key"], x["fixed"], x["applied"]) for x in out["drift"]} == {
        (p + "/planted.bin", False, "reported only"), ("stray.txt", False, "reported only"),
        (p + "/gone.txt", False, "reported only"), (p + "/swapped.bin", False, "reported only")}
    assert _snapshot(m) == before

    # the drift undone by hand: clean again (exit 0), the duplicate_content row still no drift
    for k in (p + "/planted.bin", "stray.txt"):
        m.s3.delete_object(Bucket=sb, Key=k)
    m.s3.put_object(Bucket=sb, Key=p + "/gone.txt", Body=b"will vanish\n")
    m.s3.put_object(Bucket=sb, Key=p + "/swapped.bin", Body=b"a" * 100)
    r, out = _reconcile(m, "--verify-hashes")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert out["clean"] is True and out["drift"] == [] and out["storage_ok_objects"] == 3


def test_reconcile_walks_the_storage_bucket_and_table_page_by_page(mount_factory):
    """The storage side past one page of each (1000): objects without rows and rows without
    objects on both sides of the page boundaries are found, exactly, with a key's several rows
    (a copy and a duplicate of it) straddling a boundary; rows of another tool (no journal,
    NULL dest_bucket: the seed's) count. Nothing changes."""
    from concurrent.futures import ThreadPoolExecutor
    m = mount_factory(start=False)
    r, out = _reconcile(m, "--apply")  # migrates; nothing there
    assert r.returncode == 0 and out["storage_objects"] == 0, (r.stdout, r.stderr)
    keys = [f"p/k{i:05d}" for i in range(1205)]
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda k: m.s3.put_object(Bucket=m.storage_bucket, Key=k,
                                              Body=k.encode()), keys))
    unlogged = {"p/k01000", "p/k00000"}
    # rows 1000 and 1001 (past k00000, which has none) are the two of p/k00998
    twice = {"p/k00995", "p/k00996", "p/k00998"}
    vals = []
    for i, k in enumerate(keys):
        if k in unlogged:
            continue
        bucket = None if i % 2 else m.storage_bucket
        vals.append(("p", bucket, k, len(k), sha(k.encode()), "copied"))
        if k in twice:
            vals.append(("p", bucket, k, len(k), sha(k.encode()), "duplicate"))
    c = m.stack._connect()
    try:
        with c.cursor() as cur:
            cur.executemany("insert into storage_audit (project_prefix, dest_bucket, dest_key,"
                            " size_bytes, sha256, outcome, moved_by) values"
                            " (%s, %s, %s, %s, %s, %s, 'another tool')", vals)
    finally:
        c.close()
    gone = {"p/k00999", "p/k01204"}
    for k in gone:
        m.s3.delete_object(Bucket=m.storage_bucket, Key=k)
    before = _snapshot(m)
    r, out = _reconcile(m)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert out["storage_objects"] == 1203 and out["storage_live_rows"] == 1203 + len(twice)
    assert out["storage_ok_objects"] == 1201
    assert {x["key"] for x in out["drift"] if x["kind"] == "storage_unlogged"} == unlogged
    assert {x["key"] for x in out["drift"] if x["kind"] == "storage_gone"} == gone
    assert len(out["drift"]) == 4 and out["objects"] == 0
    assert _snapshot(m) == before
