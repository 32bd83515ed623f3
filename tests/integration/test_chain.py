"""Tamper evidence (issue 7 item 4, SPEC section 4): the hash chains of the audit tables.

Every insert into projects_registry, reception_audit, storage_audit (and the chain's own
audit_chain_events), by the mount or by psycopg2 directly, is chained by the database;
``custodyfs verify`` walks the chains and names the first broken link; anchors in the storage
bucket catch a database rewritten with consistent recomputed hashes; ``audit/chain`` shows the
heads. Checked against the real PostgreSQL and S3 server of the harness, with an auditor's
own implementation of the encoding documented in doc/custodyfs.1 (TAMPER EVIDENCE), written
here from the man page, not from the C code.
"""
import datetime
import errno
import hashlib
import json
import os
import threading

import psycopg2
import pytest

import checks
from conftest import SANITIZER_RE

CUSTODYFS_CONFIG = {"fs": {"chain_anchor_interval": "0"}}

# ---- the auditor's implementation of the documented encoding --------------------------------

COLUMNS = {
    "projects_registry": ["id", "prefix", "created_at", "created_by"],
    "reception_audit": ["id", "source_bucket", "file_name", "object_key", "size_bytes",
                        "uploaded_at", "xxh128", "sha256", "received_by", "etag", "origin",
                        "received_uid", "received_user", "received_host"],
    "storage_audit": ["id", "project_prefix", "project_name", "dest_bucket", "dest_key",
                      "size_bytes", "moved_at", "source_bucket", "source_key", "reception_id",
                      "outcome", "duplicate_of", "xxh128", "sha256", "moved_by", "moved_uid",
                      "moved_user", "moved_host", "journal_id"],
    "audit_chain_events": ["id", "table_name", "row_id", "kind", "removed_at",
                           "removal_reason", "name", "event_at", "event_by", "gap_lane",
                           "gap_seq", "gap_prev", "gap_hash"],
}
TABLES = list(COLUMNS)
GENESIS = "0" * 64
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _field(v):
    if v is None:
        return b"~"
    if isinstance(v, datetime.date) and not isinstance(v, datetime.datetime):
        v = datetime.datetime(v.year, v.month, v.day)  # a date: its midnight
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:  # timestamp without time zone: its nominal value, as UTC
            v = v.replace(tzinfo=datetime.timezone.utc)
        v = str((v - EPOCH) // datetime.timedelta(microseconds=1))
    b = str(v).encode("utf-8")
    return str(len(b)).encode() + b":" + b


def encode(table, row):
    return (_field("custodyfs-chain-v1") + _field(table)
            + b"".join(_field(row[c]) for c in COLUMNS[table]))


def row_hash(table, prev, row):
    return hashlib.sha256(bytes.fromhex(prev) + encode(table, row)).hexdigest()


def audit_chain(m, table):
    """The auditor's walk: every lane's rows in chain_seq order, each link and each hash.
    Returns {lane: (rows, last chain_seq, last row_hash)}; asserts on the first break."""
    rows = m.sql_dicts(f"select * from {table} order by chain_lane nulls first, chain_seq, id")
    # links deleted with the guard's permission, each vouched for by a chained event
    gone = {(e["gap_lane"], e["gap_seq"]): e for e in m.sql_dicts(
        "select * from audit_chain_events where kind = 'deleted' and table_name = %s", (table,))}
    lanes = {}
    for r in rows:
        assert r["chain_lane"] in range(8), (table, r["id"], r["chain_lane"])
        n, seq, prev = lanes.get(r["chain_lane"], (0, 0, GENESIS))
        while r["chain_seq"] > seq + 1 and (r["chain_lane"], seq + 1) in gone:
            e = gone[(r["chain_lane"], seq + 1)]
            assert e["gap_prev"] == prev, (table, e["id"])
            seq, prev = seq + 1, e["gap_hash"]
        assert r["chain_seq"] == seq + 1, (table, r["id"], r["chain_seq"], seq + 1)
        assert r["prev_hash"] == prev, (table, r["id"])
        assert r["row_hash"] == row_hash(table, prev, r), (table, r["id"])
        lanes[r["chain_lane"]] = (n + 1, r["chain_seq"], r["row_hash"])
    return lanes


def audit_rows(m, table):
    return sum(n for n, _, _ in audit_chain(m, table).values())


# ---- helpers ---------------------------------------------------------------------------------

def _verify(m, *extra):
    r = m.cli("verify", "-o", "config=" + m.config, "--json", *extra, timeout=300)
    assert not SANITIZER_RE.search(r.stderr), r.stderr[-6000:]
    assert r.stdout.strip(), f"no JSON on stdout (rc {r.returncode}); stderr:\n{r.stderr}"
    return r.returncode, json.loads(r.stdout)


def _ok(m, *extra):
    rc, out = _verify(m, *extra)
    assert rc == 0 and out["ok"] and out["break"] is None, out
    return out


def _broken(m, table, row_id):
    rc, out = _verify(m)
    assert rc == 1 and not out["ok"], out
    b = out["break"]
    assert b is not None and b["table"] == table and b["row_id"] == row_id, out
    return b


def _as_superuser(m, *stmts):
    """A superuser's session with the triggers of the audit tables disabled: what an attacker
    with full database rights does. Runs stmts in one transaction."""
    c = psycopg2.connect(host="127.0.0.1", port=m.stack.pg_port, user="postgres",
                         dbname="custody", connect_timeout=10)
    try:
        with c, c.cursor() as cur:
            for t in TABLES:
                cur.execute(f"alter table {t} disable trigger all")
            for s in stmts:
                cur.execute(*s) if isinstance(s, tuple) else cur.execute(s)
            for t in TABLES:
                cur.execute(f"alter table {t} enable trigger all")
    finally:
        c.close()


def _anchor_keys(m):
    keys = []
    for page in m.s3.get_paginator("list_objects_v2").paginate(
            Bucket=m.storage_bucket, Prefix=".custodyfs-chain/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def _populate(m, uniq):
    """Rows from every writer: the mount (receptions, a promotion, a removal, a project and
    its rename through the xattr) and psycopg2 directly (seed-style rows with only the seed's
    columns, a removal set by UPDATE)."""
    p = uniq
    os.mkdir(os.path.join(m.projects, p))
    os.setxattr(os.path.join(m.projects, p), "user.custodyfs.name", "Projeto Çedilha".encode())
    checks.drop(m, uniq + "-a.txt", b"alpha\n")
    checks.drop(m, uniq + "-b.txt", b"beta\n")
    checks.drop(m, uniq + "-c.txt", b"gamma\n")
    checks.promote(m, uniq + "-a.txt", p)
    os.unlink(os.path.join(m.inbox, uniq + "-c.txt"))
    # the seed's notebook, through psycopg2: only its columns
    m.sql("insert into projects_registry (prefix, name) values (%s, %s)",
          (uniq + "-seed", "Semente"))
    m.sql("insert into reception_audit (source_bucket, file_name, object_key, size_bytes)"
          " values (%s, %s, %s, %s)", ("recepcao-raw", "x'; DROP TABLE t;--.pdf",
                                       "seed/x'; DROP TABLE t;--.pdf", 12))
    rid = m.sql_value("insert into reception_audit (source_bucket, file_name, object_key,"
                      " size_bytes, removed_at, removal_reason) values (%s, %s, %s, %s, now(),"
                      " 'gone') returning id", ("recepcao-raw", "y", "seed/y", None))
    m.sql("insert into storage_audit (project_prefix, project_name, dest_key, size_bytes,"
          " source_bucket) values (%s, %s, %s, %s, %s)",
          (uniq + "-seed", "Semente", uniq + "-seed/x.pdf", 12, "recepcao-raw"))
    rid2 = m.sql_value("insert into reception_audit (source_bucket, file_name, object_key)"
                       " values ('recepcao-raw', 'z', 'seed/z') returning id")
    m.sql("update reception_audit set removed_at = now(), removal_reason = 'by hand'"
          " where id = %s", (rid2,))
    m.sql("update projects_registry set name = 'Semente 2' where prefix = %s", (uniq + "-seed",))
    return rid


# ---- tests -----------------------------------------------------------------------------------

def test_verify_passes_on_untouched_database(fresh_mount, uniq):
    m = fresh_mount
    _populate(m, uniq)
    counts = {t: m.sql_value(f"select count(*) from {t}") for t in TABLES}
    assert counts["reception_audit"] >= 6 and counts["storage_audit"] >= 2
    # the auditor's own walk agrees with the database on every row ...
    assert {t: audit_rows(m, t) for t in TABLES} == counts
    # ... and with the events: each removal and each name is one
    ev = m.sql("select table_name, kind, count(*) from audit_chain_events"
               " group by 1, 2 order by 1, 2")
    removed = m.sql_value("select count(*) from reception_audit where removed_at is not null")
    assert ("reception_audit", "removed", removed) in ev
    assert m.sql_value("select count(*) from audit_chain_events where kind = 'named'") == \
        m.sql_value("select count(*) from projects_registry") + 2  # two renames
    out = _ok(m)
    assert {t["table"]: t["rows"] for t in out["tables"]} == counts
    heads = {(t, lane, seq, h) for t in TABLES for lane, (_, seq, h) in audit_chain(m, t).items()}
    assert {(h["table"], h["lane"], h["seq"], h["row_hash"]) for h in out["heads"]
            if h["seq"]} == heads
    assert out["anchors"]["checked"] == 0 and out["anchor_written"] is None
    # audit/chain: the same heads
    with open(os.path.join(m.audit, "chain"), encoding="ascii") as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("time 20") and lines[0].endswith("Z") and len(lines) == 1 + 32
    shown = {(w[0], int(w[1]), int(w[2]), w[3]) for w in map(str.split, lines[1:])}
    assert {x for x in shown if x[2]} == heads
    assert all(x[3] == GENESIS for x in shown if not x[2])
    # an anchor: written into the storage bucket under the reserved prefix, read back
    out = _ok(m, "--anchor")
    key = out["anchor_written"]
    assert key and key.startswith(".custodyfs-chain/anchors/") and _anchor_keys(m) == [key]
    body = m.s3.get_object(Bucket=m.storage_bucket, Key=key)["Body"].read().decode()
    assert body.splitlines()[0] == "custodyfs-chain-anchor 1"
    anchored = {(w[1], int(w[2]), int(w[3]), w[4])
                for w in map(str.split, body.splitlines()) if w[0] == "head"}
    assert {x for x in anchored if x[2]} == heads
    assert ".custodyfs-chain" not in os.listdir(m.projects)
    out = _ok(m)
    assert out["anchors"]["checked"] == 1 and out["anchors"]["newest"] == key


def test_replica_mode_does_not_skip_the_chain(fresh_mount, uniq):
    m = fresh_mount
    c = psycopg2.connect(host="127.0.0.1", port=m.stack.pg_port, user="postgres",
                         dbname="custody", connect_timeout=10)
    try:
        with c, c.cursor() as cur:
            cur.execute("set session_replication_role = replica")
            cur.execute("insert into reception_audit (source_bucket, file_name, object_key)"
                        " values ('recepcao-raw', 'r', %s) returning id, row_hash",
                        (uniq + "/r",))
            rid, h = cur.fetchone()
        assert h is not None
        with pytest.raises(psycopg2.Error):
            with c, c.cursor() as cur:
                cur.execute("set session_replication_role = replica")
                cur.execute("update reception_audit set size_bytes = 1 where id = %s", (rid,))
    finally:
        c.close()
    _ok(m)


@pytest.mark.parametrize("table", ["reception_audit", "storage_audit", "projects_registry"])
def test_edit_with_triggers_disabled_is_named(fresh_mount, uniq, table):
    m = fresh_mount
    _populate(m, uniq)
    _ok(m)
    ids = [r[0] for r in m.sql(f"select id from {table} order by chain_seq")]
    victim = ids[len(ids) // 2]
    col = {"reception_audit": "object_key", "storage_audit": "dest_key",
           "projects_registry": "prefix"}[table]
    _as_superuser(m, (f"update {table} set {col} = {col} || '-forged' where id = %s", (victim,)))
    b = _broken(m, table, victim)
    assert "edited" in b["reason"]


def test_edit_of_mutable_column_is_named(fresh_mount, uniq):
    m = fresh_mount
    _populate(m, uniq)
    live = m.sql_value("select id from reception_audit where removed_at is null"
                       " order by id limit 1")
    _as_superuser(m, ("update reception_audit set removed_at = now(), removal_reason = 'forged'"
                      " where id = %s", (live,)))
    b = _broken(m, "reception_audit", live)
    assert "removed_at" in b["reason"]
    # and a project's name changed behind the events' back
    pid = m.sql_value("select id from projects_registry where prefix = %s", (uniq,))
    _as_superuser(m, ("update reception_audit set removed_at = null, removal_reason = null"
                      " where id = %s", (live,)),
                  ("update projects_registry set name = 'Outro' where id = %s", (pid,)))
    b = _broken(m, "projects_registry", pid)
    assert "name" in b["reason"]


def _longest_lane(m, table):
    return m.sql_value(f"select chain_lane from {table} group by 1 order by count(*) desc,"
                       " 1 limit 1")


def test_delete_is_named(fresh_mount, uniq):
    m = fresh_mount
    _populate(m, uniq)
    lane = _longest_lane(m, "reception_audit")
    rows = m.sql("select id, chain_seq from reception_audit where chain_lane = %s"
                 " order by chain_seq", (lane,))
    assert len(rows) >= 3, rows
    (gone, seq), (after, _) = rows[1], rows[2]
    _as_superuser(m, ("delete from reception_audit where id = %s", (gone,)))
    b = _broken(m, "reception_audit", after)
    assert b["lane"] == lane and b["seq"] == seq and "missing" in b["reason"]
    assert "deleted" in b["reason"]


def test_delete_of_the_last_rows_is_caught_against_the_anchors(fresh_mount, uniq):
    m = fresh_mount
    _populate(m, uniq)
    _ok(m, "--anchor")
    lane = _longest_lane(m, "storage_audit")
    last, seq = m.sql("select id, chain_seq from storage_audit where chain_lane = %s"
                      " order by chain_seq desc limit 1", (lane,))[0]
    _as_superuser(m, ("delete from storage_audit where id = %s", (last,)))
    # the lane itself still links up: only the anchor knows it was longer
    audit_chain(m, "storage_audit")
    rc, out = _verify(m)
    b = out["break"]
    assert rc == 1 and b["table"] == "storage_audit" and b["lane"] == lane, out
    assert b["seq"] == seq and b["row_id"] is None and "not in the database" in b["reason"]
    assert b["anchor"] in _anchor_keys(m)


def test_rewritten_table_is_caught_against_the_anchors(fresh_mount, uniq):
    m = fresh_mount
    _populate(m, uniq)
    out = _ok(m, "--anchor")
    lane = _longest_lane(m, "reception_audit")
    anchored = {(h["table"], h["lane"]): h["seq"] for h in out["heads"]}
    seq = anchored[("reception_audit", lane)]
    head_id = m.sql_value("select id from reception_audit where chain_lane = %s and"
                          " chain_seq = %s", (lane, seq))
    # more rows after the anchor, by the mount
    checks.drop(m, uniq + "-later.txt", b"later\n")
    _ok(m)
    # the attacker: edits the lane's first row, recomputes every hash after it
    rows = m.sql_dicts("select * from reception_audit where chain_lane = %s order by chain_seq",
                       (lane,))
    stmts = []
    prev = GENESIS
    for r in rows:
        if r["chain_seq"] == 1:
            r["size_bytes"] = (r["size_bytes"] or 0) + 1000
            stmts.append(("update reception_audit set size_bytes = %s where id = %s",
                          (r["size_bytes"], r["id"])))
        h = row_hash("reception_audit", prev, r)
        stmts.append(("update reception_audit set prev_hash = %s, row_hash = %s where id = %s",
                      (prev, h, r["id"])))
        prev = h
    _as_superuser(m, *stmts)
    # the chain in the database is consistent again: an auditor's walk alone passes ...
    audit_chain(m, "reception_audit")
    # ... the anchor catches it, naming the anchored row
    rc, out = _verify(m)
    assert rc == 1 and not out["ok"], out
    b = out["break"]
    assert b["table"] == "reception_audit" and b["row_id"] == head_id, out
    assert b["lane"] == lane and b["seq"] == seq and "rewritten" in b["reason"]
    assert b["anchor"] in _anchor_keys(m)
    # and a broken chain is never anchored
    before = _anchor_keys(m)
    rc, out = _verify(m, "--anchor")
    assert rc == 1 and out["anchor_written"] is None and _anchor_keys(m) == before


def test_concurrent_inserts_from_eight_connections(fresh_mount, uniq):
    m = fresh_mount
    errors = []
    per = 40

    def writer(n):
        try:
            c = psycopg2.connect(host="127.0.0.1", port=m.stack.pg_port, user="custody",
                                 dbname="custody", connect_timeout=10)
            try:
                for i in range(per):
                    with c, c.cursor() as cur:
                        cur.execute("insert into reception_audit (source_bucket, file_name,"
                                    " object_key, size_bytes) values ('recepcao-raw', %s, %s,"
                                    " %s)", (f"f{i}", f"{uniq}/w{n}/f{i}", i))
                        if i % 5 == 0:  # two rows in one transaction
                            cur.execute("insert into storage_audit (project_prefix, dest_key)"
                                        " values (%s, %s)", (uniq, f"{uniq}/w{n}/f{i}"))
                    if i % 7 == 0:  # a rolled back insert leaves no gap
                        with pytest.raises(psycopg2.Error):
                            with c, c.cursor() as cur:
                                cur.execute("insert into reception_audit (source_bucket,"
                                            " file_name, object_key) values ('recepcao-raw',"
                                            " 'rb', %s)", (f"{uniq}/w{n}/rb{i}",))
                                cur.execute("select 1/0")
            finally:
                c.close()
        except Exception as e:  # reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=240)
    assert not errors and not any(t.is_alive() for t in ts), errors
    assert m.sql_value("select count(*) from reception_audit where object_key like %s",
                       (uniq + "/%",)) == 8 * per
    lanes = audit_chain(m, "reception_audit")
    assert sum(n for n, _, _ in lanes.values()) == 8 * per
    assert len(lanes) >= 2, lanes  # the writers did not all wait for one lane
    assert audit_rows(m, "storage_audit") == 8 * len(range(0, per, 5))
    out = _ok(m)
    assert {t["table"]: t["rows"] for t in out["tables"]}["reception_audit"] == 8 * per


def test_existing_rows_are_chained_by_the_migration(mount_factory, uniq):
    m = mount_factory(start=False)
    m.sql("create table projects_registry (id serial primary key, prefix varchar(63),"
          " name varchar(255))")
    m.sql("create table reception_audit (id serial primary key, source_bucket text,"
          " file_name text, object_key text, size_bytes integer,"
          " uploaded_at timestamptz default now())")
    m.sql("insert into projects_registry (prefix, name) values ('seed1', 'Um'), ('seed2', 'Dois')")
    for i in range(5):
        m.sql("insert into reception_audit (source_bucket, file_name, object_key, size_bytes)"
              " values ('recepcao-raw', %s, %s, %s)", (f"f{i}", f"old/f{i}", i))
    m.mount()
    assert m.sql("select id, chain_lane, chain_seq from reception_audit order by id") == \
        [(i, 0, i) for i in range(1, 6)]
    assert audit_rows(m, "reception_audit") == 5 and audit_rows(m, "projects_registry") == 2
    checks.drop(m, uniq + ".txt", b"new\n")
    assert audit_rows(m, "reception_audit") == 6
    _ok(m)


@pytest.mark.custodyfs_config({"fs": {"chain_anchor_interval": "1"}})
def test_mount_writes_anchors_periodically(fresh_mount, uniq):
    m = fresh_mount
    m.wait_until(lambda: _anchor_keys(m), timeout=30, what="a first anchor")
    checks.drop(m, uniq + ".txt", b"anchored\n")
    lane, seq = m.sql("select chain_lane, chain_seq from reception_audit where object_key = %s",
                      (uniq + ".txt",))[0]

    def anchored():
        keys = _anchor_keys(m)
        body = m.s3.get_object(Bucket=m.storage_bucket, Key=sorted(keys)[0])["Body"].read()
        return f"head reception_audit {lane} {seq} ".encode() in body
    m.wait_until(anchored, timeout=30, what="an anchor of the new head")
    out = _ok(m)
    assert out["anchors"]["checked"] >= 2
    assert ".custodyfs-chain" not in os.listdir(m.projects)


def test_audit_chain_is_read_only(mount):
    p = os.path.join(mount.audit, "chain")
    for what, fn in {
        "open for writing": lambda: os.open(p, os.O_WRONLY),
        "open O_TRUNC": lambda: os.open(p, os.O_RDONLY | os.O_TRUNC),
        "unlink": lambda: os.unlink(p),
        "truncate": lambda: os.truncate(p, 0),
        "chmod": lambda: os.chmod(p, 0o666),
        "rename": lambda: os.rename(p, os.path.join(mount.audit, "chain2")),
    }.items():
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno == errno.EROFS, what
    with open(p, encoding="ascii") as f:
        assert f.readline().startswith("time ")


def test_verify_with_the_store_down_fails_and_writes_nothing(fresh_mount, uniq):
    m = fresh_mount
    checks.drop(m, uniq + ".txt", b"x\n")
    m.stop_s3()
    rc, out = _verify(m, "--anchor")
    assert rc == 1 and not out["ok"] and out["anchor_written"] is None, out
    assert "anchors" in out["error"] and out["break"] is None
    m.start_s3()
    assert _anchor_keys(m) == []
    _ok(m)


# ---- regressions of the hostile review of the chain (/work/review-chain.md) -----------------

def test_rmdir_of_an_empty_project_is_vouched_for(fresh_mount, uniq):
    """Review #1: rmdir of a project that never stored a file deletes its row (the guard allows
    it); the deletion is a chained 'deleted' event naming the link, and verify accepts that
    gap, in the middle of a lane or at its end (against the anchors), and only that one."""
    m = fresh_mount
    for i in range(5):
        os.mkdir(os.path.join(m.projects, f"{uniq}{i}"))
    _ok(m, "--anchor")
    before = m.sql("select id, chain_lane, chain_seq, prev_hash, row_hash from projects_registry"
                   " where prefix in (%s, %s)", (f"{uniq}0", f"{uniq}4"))
    assert len(before) == 2
    os.rmdir(os.path.join(m.projects, f"{uniq}0"))
    os.rmdir(os.path.join(m.projects, f"{uniq}4"))  # the newest: a lane's tail, anchored
    assert not os.path.exists(os.path.join(m.projects, f"{uniq}0"))
    ev = m.sql("select row_id, gap_lane, gap_seq, gap_prev, gap_hash from audit_chain_events"
               " where kind = 'deleted' and table_name = 'projects_registry' order by row_id")
    assert sorted(ev) == sorted(tuple(r) for r in before), (ev, before)
    _ok(m)
    _ok(m, "--anchor")
    audit_chain(m, "projects_registry")
    audit_chain(m, "audit_chain_events")
    # the heads (anchors, audit/chain) keep a deleted tail as its lane's last link
    tail = next(r for r in before if r[0] == max(x[0] for x in before))
    newest = sorted(_anchor_keys(m))[0]
    body = m.s3.get_object(Bucket=m.storage_bucket, Key=newest)["Body"].read().decode()
    assert f"head projects_registry {tail[1]} {tail[2]} {tail[4]}" in body.splitlines(), body

    # new projects continue the lanes after the deleted links (no chain_seq reused)
    for i in range(5, 9):
        os.mkdir(os.path.join(m.projects, f"{uniq}{i}"))
    _ok(m, "--anchor")
    audit_chain(m, "projects_registry")

    # a deletion nobody vouched for (a superuser with the triggers off) is still named
    lane = _longest_lane(m, "projects_registry")
    rows = m.sql("select id, chain_seq from projects_registry where chain_lane = %s"
                 " order by chain_seq desc limit 2", (lane,))
    assert len(rows) == 2, rows
    (after, _), (gone, seq) = rows
    _as_superuser(m, ("delete from projects_registry where id = %s", (gone,)))
    b = _broken(m, "projects_registry", after)
    assert b["lane"] == lane and b["seq"] == seq and "deleted" in b["reason"], b


def test_forged_deleted_event_for_a_present_row_is_named(fresh_mount, uniq):
    """A 'deleted' event vouching for a row that is still there is a forgery, named by verify."""
    m = fresh_mount
    os.mkdir(os.path.join(m.projects, uniq))
    rid, lane, seq, prev, h = m.sql("select id, chain_lane, chain_seq, prev_hash, row_hash"
                                    " from projects_registry where prefix = %s", (uniq,))[0]
    _ok(m)
    m.sql("insert into audit_chain_events (table_name, row_id, kind, gap_lane, gap_seq,"
          " gap_prev, gap_hash) values ('projects_registry', %s, 'deleted', %s, %s, %s, %s)",
          (rid, lane, seq, prev, h))
    b = _broken(m, "projects_registry", rid)
    assert "still in the table" in b["reason"], b


SEED_TS_DDL = ("CREATE TABLE reception_audit (id serial primary key, source_bucket text,"
               " file_name text, object_key text, size_bytes bigint,"
               " uploaded_at timestamp default now())")


def test_seed_timestamp_columns_under_a_non_utc_time_zone(mount_factory, uniq):
    """Review #4: a seed's `timestamp without time zone` column is hashed as its nominal value
    read as UTC, whatever the TimeZone of the inserting session or of the database."""
    m = mount_factory(start=False)
    m.sql("alter database custody set timezone = 'America/Sao_Paulo'", user="postgres")
    m.sql(SEED_TS_DDL)
    m.sql("INSERT INTO reception_audit (source_bucket, file_name, object_key, size_bytes,"
          " uploaded_at) VALUES ('recepcao-raw', 'old1.pdf', 'lote1/old1.pdf', 1234,"
          " '2023-05-01 10:00:00')")
    m.mount()
    for tz in ("America/Sao_Paulo", "Asia/Tokyo", "UTC"):
        c = psycopg2.connect(host="127.0.0.1", port=m.stack.pg_port, user="custody",
                             dbname="custody", connect_timeout=10, options=f"-c timezone={tz}")
        try:
            with c, c.cursor() as cur:
                cur.execute("insert into reception_audit (source_bucket, file_name, object_key,"
                            " size_bytes) values ('recepcao-raw', %s, %s, 1)",
                            (f"n-{tz}.pdf", f"{uniq}/n-{tz}.pdf"))
                cur.execute("insert into reception_audit (source_bucket, file_name, object_key,"
                            " size_bytes, uploaded_at) values ('recepcao-raw', 'x', %s, 2,"
                            " '2026-03-08 02:30:00')", (f"{uniq}/x-{tz}",))
        finally:
            c.close()
    assert audit_rows(m, "reception_audit") == 7
    _ok(m)


def test_verify_forces_utf8_client_encoding(fresh_mount, uniq):
    """Review #5: verify hashes UTF-8 whatever PGCLIENTENCODING says."""
    m = fresh_mount
    m.sql("insert into reception_audit (source_bucket, file_name, object_key) values"
          " ('recepcao-raw', 'relatório ção', %s)", (uniq + "/relatório",))
    _ok(m)
    r = m.cli("verify", "-o", "config=" + m.config, "--json",
              env={"PGCLIENTENCODING": "LATIN1"}, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout[-2000:] + r.stderr[-2000:]


def test_seed_date_column_under_a_non_utc_time_zone(mount_factory, uniq):
    """Review #4, a `date` column: encoded as its midnight read as UTC, whatever the zone."""
    m = mount_factory(start=False)
    m.sql("alter database custody set timezone = 'Asia/Tokyo'", user="postgres")
    m.sql(SEED_TS_DDL.replace("uploaded_at timestamp default now()",
                              "uploaded_at date default current_date"))
    m.sql("INSERT INTO reception_audit (source_bucket, file_name, object_key, size_bytes,"
          " uploaded_at) VALUES ('recepcao-raw', 'old1.pdf', 'lote1/old1.pdf', 1, '2023-05-01')")
    m.mount()
    m.sql("insert into reception_audit (source_bucket, file_name, object_key, size_bytes)"
          " values ('recepcao-raw', 'n.pdf', %s, 1)", (uniq + "/n.pdf",))
    assert m.sql_value("select data_type from information_schema.columns where"
                       " table_name = 'reception_audit' and column_name = 'uploaded_at'") == "date"
    assert audit_rows(m, "reception_audit") == 2
    _ok(m)


def test_verify_usage_and_help(mount_factory):
    """`verify --help` says what the tool does, its options and exit statuses, and exits 0;
    bad usage exits 2 before the database is touched; the man page's section names the same
    options and the three exit statuses."""
    import re
    from pathlib import Path
    m = mount_factory(start=False)
    r = m.cli("verify", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: custodyfs verify"), r
    opts = set(re.findall(r"(--[a-z][a-z-]+)", r.stdout))
    assert opts == {"--anchor", "--json", "--help"}, opts
    assert "Exit status" in r.stdout
    for args in (["--bogus"], ["extra", "-o", "config=" + m.config], [],
                 ["-o", "allow_other"]):
        r = m.cli("verify", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "custodyfs verify" in r.stderr and not r.stdout.strip(), (args, r)
    # refused before the database was even touched (verify never migrates)
    assert m.sql_value("select to_regclass('reception_audit')") is None
    man = (Path(__file__).resolve().parents[2] / "doc" / "custodyfs.1").read_text()
    man = man.replace("\\-", "-")
    start = man.index(".SS custodyfs verify ")
    sec = man[start:start + 4 + re.search(r"^\.S[SH] ", man[start + 4:], re.M).start()]
    assert {"--anchor", "--json"} <= set(re.findall(r"(--[a-z][a-z-]+)", sec)), sec
    assert re.search(r"Exit status 0 .*\n?.*1 when .*\n?.*2 on bad usage", sec), sec
