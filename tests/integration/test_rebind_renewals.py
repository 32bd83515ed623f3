"""Review finding E6: a retried bind must never delay the renewal of the claims.

A new file whose row could not be bound at its close (the database failing then) is queued and
its bind tried again each claim period (D10). Before the fix the claims thread tried every
queued bind inline, after the renewal: with the database slow to answer those binds, the next
renewal came only after all of them, later than the lease, and the claims of the files still
open lapsed (another create could take their names). Now a thread of its own retries the binds
(fs/ofile.c): the claims thread only renews.

The slow database is a test-only statement trigger on file_attrs (dropped at the end): a bind
of a new file's row on its own (the statement "UPDATE file_attrs SET etag = ...", first in its
transaction) waits 3 s and fails. The binds in the reception row's transaction (a transaction
id assigned already) and the renewals (SET claim_until) are untouched. The three files' rows are
locked by the test while they are closed, so that the bind in their row transaction is skipped
(it never waits for a row) and their own bind fails: three binds queued, 9 s per round of
retries, while the lease is 4 s (renewed every second). The claim of the file held open must
stay live throughout."""
import os
import time

import psycopg2
import pytest

from checks import rows

SLOW = """
create or replace function test_slow_bind_fn() returns trigger language plpgsql as $$
begin
  if pg_catalog.pg_current_xact_id_if_assigned() is null
     and pg_catalog.current_query() like 'UPDATE file_attrs SET etag = %' then
    perform pg_catalog.pg_sleep(3);
    raise exception 'test: the database is slow for binds';
  end if;
  return null;
end $$;
create trigger test_slow_bind before update on file_attrs
  for each statement execute function test_slow_bind_fn();
"""
# The same binds, slow while holding their row: the statement trigger marks the transaction,
# a row trigger (which runs with the row locked) waits and fails.
SLOW_ROW = """
create or replace function test_slow_bind_fn() returns trigger language plpgsql as $$
begin
  if pg_catalog.pg_current_xact_id_if_assigned() is null
     and pg_catalog.current_query() like 'UPDATE file_attrs SET etag = %' then
    perform pg_catalog.set_config('custodyfs_test.slow_bind', '1', true);
  end if;
  return null;
end $$;
create or replace function test_slow_bind_row_fn() returns trigger language plpgsql as $$
begin
  if pg_catalog.current_setting('custodyfs_test.slow_bind', true) = '1' then
    perform pg_catalog.pg_sleep(3);
    raise exception 'test: the database is slow for binds (row locked)';
  end if;
  return new;
end $$;
create trigger test_slow_bind_row before update on file_attrs
  for each row execute function test_slow_bind_row_fn();
"""
UNSLOW = """
drop trigger if exists test_slow_bind on file_attrs;
drop trigger if exists test_slow_bind_row on file_attrs;
drop function if exists test_slow_bind_fn();
drop function if exists test_slow_bind_row_fn();
"""


def _claim_live(m, key):
    return m.sql_value("select claim_until > now() from file_attrs where bucket = %s"
                       " and object_key = %s and etag is null", (m.reception_bucket, key))


@pytest.mark.parametrize("slow", ["statement", "row"])
def test_e6_slow_retried_binds_never_delay_renewals(stack, mount_factory, uniq, slow):
    """statement: each retried bind waits before touching its row. row: it waits holding its
    row locked, so a renewal that waited for the row (the rows of queued binds are renewed
    too) would be as late: the renewal skips a row locked by another transaction (it is
    renewed on the next tick)."""
    m = mount_factory(config={"fs": {"claim_lease": "4"}})
    held = f"{uniq}-held.txt"
    xs = [f"{uniq}-x{i}.txt" for i in range(3)]
    fy = open(os.path.join(m.inbox, held), "wb")
    fy.write(b"held open: its claim must be renewed\n")
    fx = []
    for x in xs:
        f = open(os.path.join(m.inbox, x), "wb")
        f.write(f"{x}: its bind is queued\n".encode())
        fx.append(f)
    assert _claim_live(m, held)
    m.sql(SLOW)
    samples = []
    try:
        lock = psycopg2.connect(host="127.0.0.1", port=stack.pg_port, user="custody",
                                dbname="custody", connect_timeout=10)
        try:
            with lock.cursor() as cur:
                cur.execute("select 1 from file_attrs where bucket = %s and object_key = any(%s)"
                            " for update", (m.reception_bucket, xs))
                assert cur.rowcount == len(xs)
            for f in fx:
                f.close()  # stored and logged: 0 (its bind queued)
        finally:
            lock.rollback()
            lock.close()
        log = m.daemon_log()
        assert log.count("is retried until the database takes it") >= len(xs), log[-3000:]
        if slow == "row":
            m.sql(SLOW_ROW)
        # The renewal that waited for the test's lock on the three rows (its claim_until
        # counted from its start) is followed by one on time.
        time.sleep(2)
        # 15 s: more than a round of retries (9 s) plus the lease (4 s).
        t_end = time.monotonic() + 15
        while time.monotonic() < t_end:
            samples.append(_claim_live(m, held))
            time.sleep(0.25)
    finally:
        m.sql(UNSLOW)
    lapsed = samples.count(False) + samples.count(None)
    print("samples", len(samples), "lapsed", lapsed)
    assert lapsed == 0, f"the held file's claim lapsed in {lapsed} of {len(samples)} samples"
    fy.close()

    def bound(key):
        r = m.sql_dicts("select etag, claimed_by from file_attrs where bucket = %s"
                        " and object_key = %s", (m.reception_bucket, key))
        return len(r) == 1 and r[0]["etag"] and r[0]["claimed_by"] is None
    m.wait_until(lambda: all(bound(k) for k in xs + [held]), timeout=20,
                 what="the queued binds done once the database answers")
    for k in xs + [held]:
        assert len(rows(m, k)) == 1, rows(m, k)
    m.unmount()
