"""Issue 10: a file's attributes row follows its upload in the transaction of the upload's
reception row (one COMMIT per close): a new file's claim is bound there, an overwritten file's
unbound row is bound there, and a published temp file's row moves to its name there (no crash
window where the new object is recorded live but its row is not moved yet). The evidence is
the database's own: the attributes row was last written by the very transaction (xmin) that
wrote the object's live reception row."""
import os


def live_xmin(m, key):
    r = m.sql("select xmin::text, etag from reception_audit where source_bucket = %s"
              " and object_key = %s and removed_at is null", (m.reception_bucket, key))
    assert len(r) == 1, r
    return r[0]


def attrs_xmin(m, key):
    return m.sql("select xmin::text, etag, mode, claimed_by from file_attrs"
                 " where bucket = %s and object_key = %s", (m.reception_bucket, key))


def write(path, data, mode=None):
    with open(path, "wb") as f:
        f.write(data)
        if mode is not None:
            os.fchmod(f.fileno(), mode)


def test_new_files_row_is_bound_in_its_reception_rows_transaction(mount, uniq):
    key = f"{uniq}.txt"
    write(mount.path("inbox", key), b"new", 0o640)
    x, e = live_xmin(mount, key)
    assert attrs_xmin(mount, key) == [(x, e, 0o640, None)]


def test_overwritten_files_row_is_bound_in_its_reception_rows_transaction(mount, uniq):
    key = f"{uniq}.txt"
    write(mount.path("inbox", key), b"first", 0o600)
    write(mount.path("inbox", key), b"second, longer")
    x, e = live_xmin(mount, key)
    assert attrs_xmin(mount, key) == [(x, e, 0o600, None)]


def test_published_files_row_moves_in_its_reception_rows_transaction(mount, uniq):
    tmp, key = f"{uniq}.tmp", f"{uniq}.txt"
    write(mount.path("inbox", tmp), b"published", 0o604)
    os.rename(mount.path("inbox", tmp), mount.path("inbox", key))
    x, e = live_xmin(mount, key)
    assert (attrs_xmin(mount, key), attrs_xmin(mount, tmp)) == ([(x, e, 0o604, None)], [])
