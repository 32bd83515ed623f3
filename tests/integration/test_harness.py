"""Sanity checks of the test servers and the harness itself (no custodyfs daemon involved)."""
import configparser
import os
import stat
import uuid

import pytest


def test_buckets_exist(stack):
    names = {b["Name"] for b in stack.s3.list_buckets()["Buckets"]}
    assert {stack.reception_bucket, stack.storage_bucket} <= names


def test_s3_put_get_copy_delete(stack):
    s3 = stack.s3
    key = f"harness/{uuid.uuid4().hex}/relatório final (1).txt"
    body = b"chain of custody\n" * 1000
    s3.put_object(Bucket=stack.reception_bucket, Key=key, Body=body,
                  Metadata={"sha256": stack_sha(body)})
    got = s3.get_object(Bucket=stack.reception_bucket, Key=key)
    assert got["Body"].read() == body
    head = s3.head_object(Bucket=stack.reception_bucket, Key=key)
    assert head["ContentLength"] == len(body)
    assert head["Metadata"].get("sha256") == stack_sha(body)
    rng = s3.get_object(Bucket=stack.reception_bucket, Key=key, Range="bytes=5-9")
    assert rng["Body"].read() == body[5:10]
    keys = [o["Key"] for o in
            s3.list_objects_v2(Bucket=stack.reception_bucket, Prefix=key.rsplit("/", 1)[0] + "/")
            .get("Contents", [])]
    assert keys == [key]
    # server-side copy keeps the metadata (what promotion relies on)
    s3.copy_object(Bucket=stack.storage_bucket, Key=key,
                   CopySource={"Bucket": stack.reception_bucket, "Key": key})
    h2 = s3.head_object(Bucket=stack.storage_bucket, Key=key)
    assert h2["ContentLength"] == len(body)
    assert h2["Metadata"].get("sha256") == stack_sha(body)
    for b in (stack.reception_bucket, stack.storage_bucket):
        s3.delete_object(Bucket=b, Key=key)
        assert "Contents" not in s3.list_objects_v2(Bucket=b, Prefix=key)


def stack_sha(b):
    import hashlib
    return hashlib.sha256(b).hexdigest()


def test_pg_select_1(stack):
    assert stack.sql("select 1") == [(1,)]
    assert stack.sql_value("select current_user") == "custody"
    assert stack.sql_value("select current_database()") == "custody"
    # the custody role owns its database: it can create what the daemon's migrations need
    stack.sql("create table if not exists harness_probe (id bigserial primary key, v text)")
    stack.sql("insert into harness_probe (v) values (%s)", ("'; DROP TABLE x; --",))
    assert stack.sql_dicts("select v from harness_probe")[-1]["v"] == "'; DROP TABLE x; --"
    assert stack.sql("drop table harness_probe") == []


def test_reset_gives_a_clean_store(stack):
    stack.sql("create table leftover (x int)")
    stack.sql("create sequence leftover_seq")
    stack.sql("create function leftover_fn() returns int language sql as 'select 1'")
    stack.s3.put_object(Bucket=stack.storage_bucket, Key="left/over", Body=b"x")
    held = stack._connect()  # a session left open (a daemon's that has not gone yet)
    try:
        with held.cursor() as cur:
            cur.execute("select pg_advisory_lock(42)")
        stack.reset()
    finally:
        try:
            held.close()
        except Exception:
            pass
    assert stack.sql_value("select count(*) from pg_tables where tablename = 'leftover'") == 0
    assert stack.sql_value("select count(*) from pg_class c join pg_namespace n"
                           " on n.oid = c.relnamespace where n.nspname = 'public'") == 0
    assert stack.sql_value("select count(*) from pg_proc p join pg_namespace n"
                           " on n.oid = p.pronamespace where n.nspname = 'public'") == 0
    assert stack.sql_value("select count(*) from pg_locks where locktype = 'advisory'") == 0
    # the public schema as a new database has it (template1's), and custody may create there
    shape = "select nspowner::regrole::text, nspacl::text from pg_namespace where nspname = 'public'"
    assert stack.sql(shape) == stack.sql(shape, user="postgres", dbname="template1")
    stack.sql("create table probe_after_reset (x int)")
    stack.sql("drop table probe_after_reset")
    for b in (stack.reception_bucket, stack.storage_bucket):
        assert "Contents" not in stack.s3.list_objects_v2(Bucket=b)


def test_fault_helpers_stop_and_start(stack):
    import psycopg2
    from botocore.exceptions import BotoCoreError, ClientError
    stack.s3.put_object(Bucket=stack.reception_bucket, Key="fault/keep", Body=b"kept")
    stack.stop_s3()
    with pytest.raises((BotoCoreError, ClientError)):
        stack.s3.head_object(Bucket=stack.reception_bucket, Key="fault/keep")
    stack.start_s3()
    assert stack.s3.get_object(Bucket=stack.reception_bucket,
                               Key="fault/keep")["Body"].read() == b"kept"
    stack.s3.delete_object(Bucket=stack.reception_bucket, Key="fault/keep")

    stack.sql("create table if not exists fault_probe (x int)")
    stack.stop_pg("immediate")
    with pytest.raises(psycopg2.OperationalError):
        stack.sql("select 1")
    stack.start_pg()
    assert stack.sql_value("select count(*) from fault_probe") == 0
    stack.sql("drop table fault_probe")


def test_config_file_is_private_and_complete(stack):
    m = stack.new_mount("config-check", {"fs": {"dedup": "path"}, "s3": {"verify_tls": None}})
    st = os.stat(m.config)
    assert stat.S_IMODE(st.st_mode) == 0o600
    cp = configparser.ConfigParser()
    cp.read(m.config)
    assert cp["s3"]["endpoint"] == stack.endpoint
    assert cp["s3"]["reception_bucket"] == "recepcao-raw"
    assert cp["s3"]["storage_bucket"] == "storage-unique"
    assert cp["s3"]["path_style"] == "true"
    assert "verify_tls" not in cp["s3"]
    assert cp["postgres"]["conninfo"] == stack.conninfo
    assert cp["fs"]["dedup"] == "path"
    assert cp["fs"]["spool_dir"] == m.spool
    m.write_config({"fs": {"dedup": "content"}})
    cp.read(m.config)
    assert cp["fs"]["dedup"] == "content"
    assert stat.S_IMODE(os.stat(m.config).st_mode) == 0o600


def test_uniq_is_a_valid_prefix(uniq):
    import re
    assert re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", uniq)


def test_heal_restarts_servers_that_died(stack):
    """A server that dies on its own is reported (the harness fails the running test) and
    restarted, so one crash does not cascade into every later test."""
    import signal
    import subprocess
    sub = "s3rver/s3rver.pid" if stack.backend == "s3rver" else "swift/run/proxy.pid"
    with open(os.path.join(stack.s3_dir, sub)) as f:
        os.killpg(int(f.read().split()[0]), signal.SIGKILL)  # swift: its worker too
    subprocess.run([os.path.join(os.path.dirname(__file__), "..", "servers", "pg.sh"), "stop",
                    stack.pg_dir, "immediate"], check=True, timeout=60)
    complaints = stack.heal()
    assert len(complaints) == 2
    assert "S3 server" in complaints[0] and "PostgreSQL" in complaints[1]
    assert stack.s3_up() and stack.pg_up()
    assert stack.sql("select 1") == [(1,)]
    assert {stack.reception_bucket, stack.storage_bucket} <= {
        b["Name"] for b in stack.s3.list_buckets()["Buckets"]}
    assert stack.heal() == []


def test_free_ports_are_below_the_ephemeral_range():
    """Servers are given ports the kernel never hands to an outgoing connection: a server
    restarted on its port (heal, stop_s3/start_s3) must find it free, and a long-lived client
    connection whose local port is P made Swift's bind of P fail for 30 s (CI, stop 36)."""
    import free_port
    low = free_port.ephemeral_low()
    got = [free_port.find((10, 11, 12, 20)) for _ in range(20)]
    assert all(p is not None and free_port.PORT_FLOOR <= p and p + 20 < low for p in got), got
