"""Hostile read (review 34) of n17 X1/X2 (2729079), review-hide H6/H7 (4878d63) and review-31
R4/R7/R6 (b3e240e, ebd46b1, 0825654). See doc/reviews/review-34.md. Each test is a strict
xfail until its finding is fixed."""
import os
import time

import pytest

from test_perms import B, FOREIGN, as_user, changes, open_to_others
from test_review_hide import C, _fd_stat, _hidden, _hide_on_a


def _b(mount_factory, uniq):
    b = mount_factory(config=FOREIGN, reset=False, opts="allow_other", name="b")
    open_to_others(b)
    b.wait_until(lambda: os.path.isdir(b.path("inbox", uniq)), timeout=40,
                 what="b lists the directory")
    return b


@pytest.mark.xfail(strict=True, reason="review-34 Z1 (High): since H6 another mount's hidden "
                   "name shows as a file to every user of b (hidden_taken); unlinking it on b "
                   "drops a's live tagged row (attrov_drop(hidden, 0)), logged as C's 'drop'; "
                   "B's open file on a then shows the defaults")
def test_a_user_of_another_mount_cannot_unlink_a_live_hidden_row(mount_factory, uniq):
    """a: B's y.txt (0600) held open by B, A renames x.txt over it: a's hidden name H keeps
    B's row, tagged with a's claimer. On b, user C (no right to B's file, write access to the
    0777 directory) looks H up and unlinks it. Before H6 the lookup said ENOENT and nothing
    reached the daemon; now getattr says 'taken' (a placeholder), so the kernel sends the
    unlink, and inbox_unlink's hidden branch (no open file of b's there) drops whatever row
    is at H. Expected: C's unlink changes nothing (refused), a's row stays with its tag, no
    row is logged at H after the create, B's handle on a still shows (B, 0600)."""
    a, pa, reader, row = _hide_on_a(mount_factory, uniq)
    try:
        h = row["object_key"]
        before = len(changes(a, h, every=True))
        b = _b(mount_factory, uniq)
        ph = b.path("inbox", h)
        seen_b = as_user(C, f"os.stat({ph!r})")
        gone = as_user(C, f"os.unlink({ph!r})")
        time.sleep(3)  # past a's attribute cache
        after = [(r["object_key"], r["uid"], r["mode"], r["claimed_by"])
                 for r in _hidden(a, uniq)]
        logged = [(c["op"], c["changed_by"], c["uid"], c["mode"])
                  for c in changes(a, h, every=True)][before:]
        fd = _fd_stat(reader, a)
    finally:
        reader.close()
    assert (gone != ["ok"], after, logged, fd) == \
        (True, [(h, B, 0o600, row["claimed_by"])], [], (B, 0o600)), (seen_b, gone)
