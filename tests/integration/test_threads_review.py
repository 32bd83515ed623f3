"""Hostile review (threads): findings C2, C6, C7 and F6 on the daemon's threads and logs.

C6: a rename whose source DELETE the store refuses still changed rows (the new row, the
source's row closed): its "renamed" line is written, and the failure has an error line with
the errno and the S3 code (test_logging_rows.match_rows_and_lines checks every row)."""
import errno
import os

import pytest

import checks
from checks import drop
from faultproxy import FaultProxy
from test_logging_rows import event_lines, match_rows_and_lines, check_who
from test_rm_races import grace, on_key

DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
          b"<Message>Access Denied</Message></Error>")


def test_c6_a_rename_whose_source_delete_fails_logs_its_rows_and_the_error(stack,
                                                                           mount_factory):
    """The store answers the DELETE of the rename's source 403 AccessDenied. The rows have
    changed by then (to.txt's row, from.txt's row closed "renamed to"): before the fix the
    only line was an error line op=rename without the row ids, so the new row had no line
    and match_rows_and_lines failed; and the error line did not say which request failed."""
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config=grace(600000, {"s3": {"endpoint": px.url}}))
        drop(m, "from.txt", b"renamed, its source stays\n")
        px.rule = on_key("from.txt", "DELETE", ("status", 403, DENIED))
        try:
            os.rename(os.path.join(m.inbox, "from.txt"), os.path.join(m.inbox, "to.txt"))
            rc = 0
        except OSError as e:
            rc = e.errno
        px.rule = None
        assert ("DELETE", "pass") not in [(meth, a) for meth, p, a in px.log
                                          if p.endswith("/from.txt")]
        assert any(meth == "DELETE" and a == "status" for meth, p, a in px.log)
        print("rename:", rc)
        m.unmount()
    finally:
        px.rule = None
        px.close()
    evs = event_lines(m.daemon_log())
    print([e for _, e in evs])
    match_rows_and_lines(m, evs)
    ren = [e for _, e in evs if e["event"] == "renamed"]
    assert len(ren) == 1 and ren[0]["key"] == "to.txt" and ren[0]["from"] == "from.txt", ren
    errs = [(lvl, e) for lvl, e in evs if e["event"] == "error"]
    assert len(errs) == 1, errs
    lvl, e = errs[0]
    assert lvl == "error" and e["key"] == "from.txt", e
    assert e["errno"] == "EACCES" and e["s3_code"] == "AccessDenied" and e["http"] == "403", e
    check_who(e)
