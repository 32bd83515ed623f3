"""The database's own rules (SPEC §5): audit tables are append-only for every role (superuser
`postgres` included), except setting removed_at once; migrations adopt the seed's tables and
are safe when several mounts start at once."""
import os
import threading

import psycopg2
import pytest

AUDIT_TABLES = ["reception_audit", "storage_audit"]

RECEPTION_COLS = {"id", "source_bucket", "file_name", "object_key", "size_bytes", "uploaded_at",
                  "xxh128", "sha256", "received_by", "removed_at", "removal_reason"}
STORAGE_COLS = {"id", "project_prefix", "project_name", "dest_bucket", "dest_key", "size_bytes",
                "moved_at", "source_bucket", "source_key", "reception_id", "outcome",
                "duplicate_of", "xxh128", "sha256", "moved_by"}
PROJECTS_COLS = {"id", "prefix", "name", "created_at", "created_by"}


def columns(m, table):
    return {r[0] for r in m.sql("select column_name from information_schema.columns"
                                " where table_schema = 'public' and table_name = %s", (table,))}


def refused(m, query, params=None, user="postgres"):
    """True when the statement fails in the database (and nothing changed)."""
    try:
        m.sql(query, params, user=user)
    except psycopg2.Error:
        return True
    return False


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture
def rows_in_both(mount, uniq):
    """A live reception row (through the mount) and a storage row (inserted directly: INSERT is
    allowed) to try changes on. Returns (reception_id, storage_id)."""
    m = mount
    os.mkdir(os.path.join(m.inbox, uniq))
    write(os.path.join(m.inbox, uniq, "row.txt"), b"a row to protect")
    got = m.sql("select id, removed_at from reception_audit where object_key = %s",
                (f"{uniq}/row.txt",))
    assert len(got) == 1 and got[0][1] is None, got
    rid = got[0][0]
    sid = m.sql_value(
        "insert into storage_audit (project_prefix, project_name, dest_bucket, dest_key,"
        " size_bytes, moved_at, source_bucket, source_key, outcome, sha256)"
        " values (%s, %s, 'storage-unique', %s, 16, now(), 'recepcao-raw', %s, 'copied', %s)"
        " returning id",
        (uniq, uniq, f"{uniq}/row.txt", f"{uniq}/row.txt", "0" * 64), user="postgres")
    assert sid is not None
    return rid, sid


def _row(m, table, rid):
    return m.sql_dicts(f"select * from {table} where id = %s", (rid,))


# --------------------------------------------------------------------------- append-only

@pytest.mark.parametrize("user", ["postgres", "custody"])
@pytest.mark.parametrize("table", AUDIT_TABLES)
def test_update_refused(mount, rows_in_both, table, user):
    m = mount
    rid = rows_in_both[AUDIT_TABLES.index(table)]
    before = _row(m, table, rid)
    assert refused(m, f"update {table} set size_bytes = size_bytes + 1 where id = %s", (rid,),
                   user=user)
    assert refused(m, f"update {table} set sha256 = %s where id = %s", ("f" * 64, rid), user=user)
    assert refused(m, f"update {table} set id = id + 100000 where id = %s", (rid,), user=user)
    assert refused(m, f"update {table} set size_bytes = size_bytes", user=user)  # whole table
    assert _row(m, table, rid) == before


@pytest.mark.parametrize("user", ["postgres", "custody"])
@pytest.mark.parametrize("table", AUDIT_TABLES)
def test_delete_refused(mount, rows_in_both, table, user):
    m = mount
    rid = rows_in_both[AUDIT_TABLES.index(table)]
    n = m.sql_value(f"select count(*) from {table}")
    assert refused(m, f"delete from {table} where id = %s", (rid,), user=user)
    assert refused(m, f"delete from {table}", user=user)
    assert refused(m, f"delete from {table} where id = -1", user=user)  # even when none match
    assert m.sql_value(f"select count(*) from {table}") == n
    assert _row(m, table, rid)


@pytest.mark.parametrize("user", ["postgres", "custody"])
@pytest.mark.parametrize("table", AUDIT_TABLES)
def test_truncate_refused(mount, rows_in_both, table, user):
    m = mount
    n = m.sql_value(f"select count(*) from {table}")
    assert refused(m, f"truncate {table}", user=user)
    assert refused(m, f"truncate {table} cascade", user=user)
    assert m.sql_value(f"select count(*) from {table}") == n


@pytest.mark.parametrize("table", AUDIT_TABLES)
def test_replica_mode_does_not_bypass(mount, rows_in_both, table):
    """session_replication_role = replica skips ordinary triggers: not these."""
    m = mount
    rid = rows_in_both[AUDIT_TABLES.index(table)]
    assert refused(m, f"set session_replication_role = replica; delete from {table} where id = %s",
                   (rid,))
    assert refused(m, f"set session_replication_role = replica; update {table}"
                      f" set size_bytes = 0 where id = %s", (rid,))
    assert _row(m, table, rid)


@pytest.mark.parametrize("table", AUDIT_TABLES)
def test_removed_at_set_once(mount, rows_in_both, table):
    m = mount
    rid = rows_in_both[AUDIT_TABLES.index(table)]
    before = _row(m, table, rid)[0]
    # together with another column: refused
    assert refused(m, f"update {table} set removed_at = now(), size_bytes = 0 where id = %s",
                   (rid,))
    # alone (with its reason): allowed, once
    m.sql(f"update {table} set removed_at = now(), removal_reason = 'test: removed by hand'"
          f" where id = %s", (rid,), user="postgres")
    after = _row(m, table, rid)[0]
    assert after["removed_at"] is not None
    assert after["removal_reason"] == "test: removed by hand"
    assert {k: v for k, v in after.items() if k not in ("removed_at", "removal_reason")} == \
        {k: v for k, v in before.items() if k not in ("removed_at", "removal_reason")}
    # a second change is refused: a new time, clearing it, changing the reason
    assert refused(m, f"update {table} set removed_at = now() + interval '1 day' where id = %s",
                   (rid,))
    assert refused(m, f"update {table} set removed_at = null where id = %s", (rid,))
    assert refused(m, f"update {table} set removal_reason = 'rewritten' where id = %s", (rid,))
    assert _row(m, table, rid)[0] == after


def test_insert_allowed(mount, uniq):
    """Append-only, not read-only: other tools may add rows."""
    m = mount
    rid = m.sql_value("insert into reception_audit (source_bucket, file_name, object_key,"
                      " size_bytes, uploaded_at) values ('recepcao-raw', 'x', %s, 1, now())"
                      " returning id", (f"{uniq}/external-tool",), user="postgres")
    assert rid


# --------------------------------------------------------------------------- migrations

SEED_DDL = [
    "CREATE TABLE reception_audit (id serial primary key, source_bucket text, file_name text,"
    " object_key text, size_bytes bigint, uploaded_at timestamp)",
    "CREATE TABLE projects_registry (id serial, prefix text unique, name text)",
    "CREATE TABLE storage_audit (id serial, project_prefix text, project_name text,"
    " dest_bucket text, dest_key text, size_bytes bigint, moved_at timestamp,"
    " source_bucket text)",
    "INSERT INTO reception_audit (source_bucket, file_name, object_key, size_bytes, uploaded_at)"
    " VALUES ('recepcao-raw', 'old1.pdf', 'lote1/old1.pdf', 1234, '2023-05-01 10:00:00'),"
    "        ('recepcao-raw', 'relatório final.xlsx', 'lote1/relatório final.xlsx', 99,"
    "         '2023-05-02 11:30:00')",
    "INSERT INTO projects_registry (prefix, name) VALUES ('proj-a', 'Projeto A'),"
    " ('proj-b', 'Projeto B')",
    "INSERT INTO storage_audit (project_prefix, project_name, dest_bucket, dest_key, size_bytes,"
    " moved_at, source_bucket) VALUES ('proj-a', 'Projeto A', 'storage-unique',"
    " 'proj-a/old1.pdf', 1234, '2023-05-03 09:00:00', 'recepcao-raw')",
]


def _snapshot(m):
    return {
        "reception_audit": m.sql("select id, source_bucket, file_name, object_key, size_bytes,"
                                 " uploaded_at::timestamp from reception_audit order by id"),
        "projects_registry": m.sql("select id, prefix, name from projects_registry order by id"),
        "storage_audit": m.sql("select id, project_prefix, project_name, dest_bucket, dest_key,"
                               " size_bytes, moved_at::timestamp, source_bucket"
                               " from storage_audit order by id"),
    }


def test_migration_adopts_seed_tables(mount_factory, tmp_path):
    m = mount_factory(start=False)
    for q in SEED_DDL:
        m.sql(q)
    seed = _snapshot(m)
    m.mount()
    # old rows intact
    assert _snapshot(m) == seed
    # every contract column exists
    assert RECEPTION_COLS <= columns(m, "reception_audit")
    assert STORAGE_COLS <= columns(m, "storage_audit")
    assert PROJECTS_COLS <= columns(m, "projects_registry")
    # old rows are not back-filled with invented values
    old = m.sql_dicts("select * from reception_audit where object_key = 'lote1/old1.pdf'")[0]
    assert old["sha256"] is None and old["removed_at"] is None
    # a new cp adds a row, after the old ones
    os.mkdir(os.path.join(m.inbox, "novo"))
    write(os.path.join(m.inbox, "novo", "new.txt"), b"after the migration")
    new = m.sql_dicts("select * from reception_audit where object_key = 'novo/new.txt'")
    assert len(new) == 1
    assert new[0]["sha256"] == m.sha256_bytes(b"after the migration")
    assert new[0]["id"] > max(r[0] for r in seed["reception_audit"])
    assert m.sql_value("select count(*) from reception_audit") == 3
    # the adopted tables are append-only too
    assert refused(m, "delete from reception_audit where object_key = 'lote1/old1.pdf'")
    assert refused(m, "update storage_audit set size_bytes = 1")
    # a remount changes nothing
    ver = m.sql("select version, applied_at from schema_migrations order by version")
    m.restart()
    assert m.sql("select version, applied_at from schema_migrations order by version") == ver
    assert _snapshot(m)["reception_audit"][:2] == seed["reception_audit"]


def test_migration_adopts_seed_tables_without_id(mount_factory):
    """A notebook may have created tables without an id column or a primary key."""
    m = mount_factory(start=False)
    m.sql("CREATE TABLE reception_audit (source_bucket varchar(63), file_name varchar(255),"
          " object_key varchar(255), size_bytes integer, uploaded_at timestamp)")
    m.sql("INSERT INTO reception_audit VALUES ('recepcao-raw', 'a.txt', 'x/a.txt', 5,"
          " '2022-01-01 00:00:00')")
    m.mount()
    assert RECEPTION_COLS <= columns(m, "reception_audit")
    assert m.sql("select file_name, object_key, size_bytes from reception_audit") == \
        [("a.txt", "x/a.txt", 5)]
    os.mkdir(os.path.join(m.inbox, "y"))
    write(os.path.join(m.inbox, "y", "b.txt"), b"b" * 300)
    assert m.sql_value("select size_bytes from reception_audit where object_key = 'y/b.txt'") \
        == 300


def test_concurrent_first_mounts_migrate_once(mount_factory):
    m1 = mount_factory(start=False, name="first")
    m2 = mount_factory(start=False, reset=False, name="second")
    m3 = mount_factory(start=False, reset=False, name="third")
    assert m1.sql_value("select to_regclass('schema_migrations')") is None
    errors = []
    barrier = threading.Barrier(3)

    def up(m):
        try:
            barrier.wait(timeout=30)
            m.mount()
        except Exception as e:  # reported below
            errors.append(f"{m.name}: {e}")
    ts = [threading.Thread(target=up, args=(m,)) for m in (m1, m2, m3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not errors, "\n".join(errors)
    assert all(m.alive() for m in (m1, m2, m3))
    vs = m1.sql("select version, count(*) from schema_migrations group by version")
    assert vs and all(c == 1 for _, c in vs), vs
    # triggers exist exactly once per table (no duplicate creations raced in)
    n = m1.sql_value("select count(*) from pg_trigger where tgrelid = 'reception_audit'::regclass"
                     " and not tgisinternal")
    assert n >= 1
    # every mount works on the shared store
    for i, m in enumerate((m1, m2, m3)):
        os.makedirs(os.path.join(m.inbox, "shared"), exist_ok=True)
        write(os.path.join(m.inbox, "shared", f"from{i}.txt"), b"%d" % i)
    # one row per file, counting removed rows too: no mount logged another's upload again
    got = m1.sql("select object_key, removed_at from reception_audit where object_key like 'shared/%'"
                 " order by object_key")
    assert got == [(f"shared/from{i}.txt", None) for i in range(3)], got
