"""examples/ (issue 8): the auditors' SQL (examples/sql/*.sql) runs against the real database of
a mount and returns the expected rows for a small known history made through the mount; the
legacy-tool drop script (examples/drop.sh) drops files that are then in the bucket with one
row each. (The example configs are checked by the meson test examples_config.)
"""

import os
import shutil
import subprocess

import psycopg2
import pytest

from conftest import REPO

SQL = REPO / "examples" / "sql"


def _query(m, name):
    """Rows of examples/sql/NAME as dicts, run as-is by an independent client (psycopg2)."""
    text = (SQL / name).read_text()
    conn = psycopg2.connect(m.stack.conninfo)
    try:
        with conn.cursor() as cur:
            cur.execute(text)
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        conn.close()


def test_every_sql_example_is_tested():
    assert sorted(p.name for p in SQL.glob("*.sql")) == sorted(
        ["received.sql", "deduplicated.sql", "project_totals.sql", "in_reception.sql"])


def test_auditor_sql(fresh_mount, uniq):
    m = fresh_mount
    p = uniq
    other = uniq + "-empty"
    x, y, z = b"content X\n" * 3, b"content Y\n" * 5, b"still here\n"
    files = {"a.txt": x, "b.txt": x, "c.txt": y, "d.txt": z, "e.txt": x}
    for name, data in files.items():
        with open(m.path("inbox", name), "wb") as f:
            f.write(data)
    os.mkdir(m.path("projects", p))
    os.mkdir(m.path("projects", other))
    os.rename(m.path("inbox", "a.txt"), m.path("projects", p, "a.txt"))   # copied
    os.rename(m.path("inbox", "b.txt"), m.path("projects", p, "b.txt"))   # duplicate_content
    os.rename(m.path("inbox", "c.txt"), m.path("projects", p, "c.txt"))   # copied
    os.rename(m.path("inbox", "e.txt"), m.path("projects", p, "a.txt"))   # duplicate
    # d.txt stays in reception

    # the history as the tables hold it (every row, removed ones too)
    outcomes = m.sql("SELECT source_key, outcome FROM storage_audit ORDER BY id")
    assert outcomes == [("a.txt", "copied"), ("b.txt", "duplicate_content"),
                        ("c.txt", "copied"), ("e.txt", "duplicate")]
    a_key = m.sql_value("SELECT dest_key FROM storage_audit WHERE source_key = 'a.txt'")

    rec = _query(m, "received.sql")
    assert [r["object_key"] for r in rec] == ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"]
    for r in rec:
        data = files[r["object_key"]]
        assert r["size_bytes"] == len(data) and r["sha256"] == m.sha256_bytes(data)
        assert r["received_by"] and r["uploaded_at"] is not None
        assert (r["removed_at"] is None) == (r["object_key"] == "d.txt")
    assert len(rec) == m.sql_value("SELECT count(*) FROM reception_audit")

    dup = _query(m, "deduplicated.sql")
    assert [(r["source_key"], r["outcome"], r["stored_as"]) for r in dup] == [
        ("b.txt", "duplicate_content", a_key), ("e.txt", "duplicate", a_key)]
    assert all(r["sha256"] == m.sha256_bytes(x) and r["project_prefix"] == p for r in dup)

    tot = {r["prefix"]: r for r in _query(m, "project_totals.sql")}
    assert set(tot) == {p, other}
    assert (tot[p]["files"], tot[p]["bytes"], tot[p]["duplicates"],
            tot[p]["duplicates_content"]) == (2, len(x) + len(y), 1, 1)
    assert (tot[other]["files"], tot[other]["bytes"], tot[other]["duplicates"],
            tot[other]["duplicates_content"]) == (0, 0, 0, 0)

    left = _query(m, "in_reception.sql")
    assert [(r["object_key"], r["size_bytes"]) for r in left] == [("d.txt", len(z))]
    # ... and it is indeed the one object left in the reception bucket
    keys = [o["Key"] for o in m.s3.list_objects_v2(Bucket=m.reception_bucket).get("Contents", [])]
    assert keys == ["d.txt"]


def test_drop_script(fresh_mount, uniq, tmp_path):
    m = fresh_mount
    src = tmp_path / f"{uniq}.pdf"
    src.write_bytes(b"%PDF-1.4 legacy\n" * 100)
    missing = tmp_path / "missing.pdf"
    drop = str(REPO / "examples" / "drop.sh")
    r = subprocess.run([drop, m.mnt, "-d", "scanner", str(src), str(missing)],
                       capture_output=True, text=True, timeout=120)
    # one file missing: exit 1, the other still dropped
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"received: scanner/{uniq}.pdf" in r.stdout
    assert "missing.pdf" in r.stderr
    key = f"scanner/{uniq}.pdf"
    data = src.read_bytes()
    assert m.s3.get_object(Bucket=m.reception_bucket, Key=key)["Body"].read() == data
    # every row, removed ones too: exactly one, for the final name; the temp name never logged
    rows = m.sql("SELECT object_key, size_bytes, sha256, removed_at FROM reception_audit")
    assert rows == [(key, len(data), m.sha256_bytes(data), None)]
    keys = [o["Key"] for o in m.s3.list_objects_v2(Bucket=m.reception_bucket).get("Contents", [])]
    assert [k for k in keys if not k.endswith("/")] == [key]  # "scanner/": mkdir's marker
    assert sorted(os.listdir(m.path("inbox", "scanner"))) == [f"{uniq}.pdf"]
    # usage errors
    r = subprocess.run([drop, m.mnt], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
