"""review-35 (hostile review of c3112bb, review-h5 N2's upload tags and migration 17, and of
1355077, review-O A1/A3's ESTALE once per calling thread). doc/reviews/review-35.md.

F1 (migration ordering): db_migrate applies only versions above the highest applied, so a
migration numbered below one already applied is skipped for good. 17 went in with 16
reserved for another branch: every database a build with 17 migrated never gets 16 once
that branch is merged. Modelled here with 15: its row and DDL taken away from a database at
17, a restart must apply it again.

F2 (per-thread ESTALE keyed on the request's pid): a caller the daemon's pid namespace
cannot see (the daemon in a container, its users on the host) comes as pid 0: all such
callers share one entry, so only the first gets ESTALE and review-O A1 (the second observer
on the old inode gets the symlink's attributes, the kernel's EIO) is back for them.

F3 (the ring of 16): more than 16 threads on the old inode at once: a thread's id is
overwritten by later ones before its retry (LOOKUP_REVAL) arrives, the retry is answered
ESTALE again, and the kernel, which retries once, returns ESTALE to the caller."""
import os


import checks
from test_review_o import rename_watched



def test_migration_below_highest_applied_is_applied(mount_factory):
    m = mount_factory()
    """review-35 F1: a version below the highest applied that has no row (a migration
    merged after a later one was applied) is applied at the next start."""
    assert m.sql_value("select max(version) from schema_migrations") >= 16
    m.unmount()
    # a database as a build with 16 but without 15 would have left it
    m.sql("delete from schema_migrations where version = 15")
    m.sql("alter table file_attrs_pending drop column upload_state")
    m.mount()
    assert m.sql_value("select count(*) from schema_migrations where version = 15") == 1
    assert m.sql_value(
        "select count(*) from information_schema.columns where table_name ="
        " 'file_attrs_pending' and column_name = 'upload_state'") == 1


def test_duplicate_content_many_observers(mount, uniq):
    """48 threads lstat the new name as the rename returns (a parallel find/backup), up to 200
    rounds (stopping at the first bad one): each must see the symlink. (24 threads: 3 runs
    in 4 failed; 12 threads, which the ring holds: passed; 48: failed in each of 4 runs
    within 14 rounds.)"""
    m = mount
    proj = os.path.join(m.projects, uniq)
    os.mkdir(proj)
    body = os.urandom(5000)
    src = os.path.join(m.inbox, f"{uniq}-f")
    checks.write(src, body)
    os.rename(src, os.path.join(proj, "f"))
    bad = []
    for i in range(200):
        if bad:
            break  # one is enough (the race depends on load)
        rename_watched(m, proj, uniq, body, i, 48, bad)
    assert bad == []
