"""The C database layer (common/db.c) against the suite's real PostgreSQL.

tests/db/test_db*.c is a TAP program; this runs it with the harness's server
as the superuser (it creates and drops its own databases, and checks that the
append-only triggers hold even for superusers) and fails on any "not ok".
"""
import os
import re
import subprocess

import pytest

BUILD = os.environ.get("CUSTODYFS_BUILD", "build")


@pytest.mark.store_independent
def test_db_layer_tap(stack):
    exe = os.path.join(BUILD, "tests", "test_db")
    if not os.path.exists(exe):
        pytest.fail(f"{exe} is not built (meson compile -C {BUILD})")
    servers = os.path.join(os.path.dirname(__file__), "..", "servers", "pg.sh")
    env = dict(os.environ)
    env["CUSTODYFS_TEST_PG"] = (
        f"host=127.0.0.1 port={stack.pg_port} dbname=postgres user=postgres")
    # pg.sh start on a running cluster is a no-op, so stop first.
    env["CUSTODYFS_TEST_PG_RESTART"] = (
        f"{servers} stop {stack.pg_dir} fast && "
        f"{servers} start {stack.pg_dir} {stack.pg_port} >/dev/null")
    p = subprocess.run([exe], env=env, capture_output=True, text=True,
                       timeout=600)
    out = p.stdout + p.stderr
    oks = re.findall(r"^ok \d+", p.stdout, re.M)
    bad = re.findall(r"^not ok \d+.*$", p.stdout, re.M)
    assert not bad, "\n".join(bad) + "\n" + out[-4000:]
    assert p.returncode == 0, out[-4000:]
    assert len(oks) >= 50, f"only {len(oks)} checks ran:\n{out[-4000:]}"
