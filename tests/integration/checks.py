"""Independent checks shared by the integration tests: what the reception bucket holds (boto3)
and what reception_audit says (SQL), never through the mount."""
import contextlib
import fcntl
import socket
import time

from botocore.exceptions import ClientError

_MISSING = ("NoSuchKey", "404", "NotFound")


def get_object(m, key):
    """Bytes of the reception object, or None when it does not exist."""
    try:
        return m.s3.get_object(Bucket=m.reception_bucket, Key=key)["Body"].read()
    except ClientError as e:
        if e.response["Error"]["Code"] in _MISSING:
            return None
        raise


def head(m, key):
    try:
        return m.s3.head_object(Bucket=m.reception_bucket, Key=key)
    except ClientError as e:
        if e.response["Error"]["Code"] in _MISSING:
            return None
        raise


def bucket_keys(m, prefix="", markers=False):
    """Keys under prefix; directory markers (keys ending in '/') only with markers=True."""
    keys = []
    pg = m.s3.get_paginator("list_objects_v2")
    for page in pg.paginate(Bucket=m.reception_bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])
                 if markers or not o["Key"].endswith("/")]
    return sorted(keys)


def rows(m, key):
    return m.sql_dicts("select * from reception_audit where source_bucket = %s and object_key = %s"
                       " order by id", (m.reception_bucket, key))


def live_rows(m, key):
    return [r for r in rows(m, key) if r["removed_at"] is None]


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def history(m, key):
    """Every row of key, removed ones too, oldest first, as (size_bytes, sha256, live?)."""
    return [(r["size_bytes"], r["sha256"], r["removed_at"] is None) for r in rows(m, key)]


def expected_history(contents, live_last=True):
    """What history() must be after the successive receptions `contents` (bytes, oldest
    first): every one removed but the last, which is live when live_last."""
    import hashlib
    return [(len(b), hashlib.sha256(b).hexdigest(), live_last and i == len(contents) - 1)
            for i, b in enumerate(contents)]


# ---- promotion helpers (through the mount; checked by the callers with SQL and boto3) ----------

def project(m, prefix):
    """A project registered by another tool (an INSERT, as the seed's notebook does)."""
    m.sql("insert into projects_registry (prefix, name) values (%s, %s)",
          (prefix, "Projeto " + prefix))
    return prefix


def drop(m, name, data):
    """A file received through the mount: object + reception row committed at close."""
    import os
    write(os.path.join(m.inbox, name), data)
    assert len(live_rows(m, name)) == 1


def promote(m, name, prefix, rel=None):
    """mv inbox/name projects/prefix/(rel or name)."""
    import os
    os.rename(os.path.join(m.inbox, name), os.path.join(m.projects, prefix, rel or name))


@contextlib.contextmanager
def fusectl_exclusive():
    """Held by a test that unmounts fusectl or leaves a daemon stuck in the kernel: the
    integration passes run side by side on one machine, and fusectl is global."""
    with open("/tmp/custodyfs-fusectl.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def recv_timed(sock, seconds):
    """[(monotonic time, text)] of every datagram arriving on sock within seconds (a fake
    $NOTIFY_SOCKET: READY=1, STATUS=, WATCHDOG=1)."""
    out = []
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return out
        sock.settimeout(left)
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            return out
        out.append((time.monotonic(), msg))
