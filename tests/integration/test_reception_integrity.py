"""Integrity of the reception log (issue 5, points 5, 6, 7, 9): a row holds only hashes this
system computed, a failed commit deletes only what is provably its own upload, an upload is
logged by its uploader and not also as "foreign" by another mount, and unmount does not wait
for a whole scan. Every check counts ALL reception_audit rows of a key (removed ones too), and
reads the bucket and the table with independent clients (boto3, SQL).

The grace period before an observer logs an upload from another route is set per mount with
the config key [fs] foreign_grace_ms."""
import hashlib
import os
import socket
import subprocess
import threading
import time

import pytest
from checks import bucket_keys, get_object, head, live_rows, read, rows, write
from faultproxy import FaultProxy

BOUND = 90  # seconds: any single operation here ends well within this


def grace(ms, config=None):
    """config with [fs] foreign_grace_ms = ms merged in."""
    cfg = {sec: dict(kv) for sec, kv in (config or {}).items()}
    cfg.setdefault("fs", {})["foreign_grace_ms"] = str(ms)
    return cfg


def start(cmd):
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def finish(p, timeout=BOUND):
    try:
        _, err = p.communicate(timeout=timeout)
        return p.returncode, err
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate(timeout=30)
        return None, "still running"


def write_close_in_thread(fd, data):
    """Writes data to fd and closes it in a thread; res["rc"] is 0 or the errno."""
    res = {}

    def run():
        try:
            v = memoryview(data)
            while v:
                v = v[os.write(fd, v):]
            os.close(fd)
            res["rc"] = 0
        except OSError as e:
            res["rc"] = e.errno

    t = threading.Thread(target=run)
    t.start()
    return t, res


def etag_of(m, key):
    h = head(m, key)
    return h["ETag"].strip('"') if h else None


class TcpProxy:
    """A TCP relay in front of PostgreSQL for one mount: hold() stops forwarding what the
    client sends (a statement then waits, as on a partitioned network), cut() drops every
    connection and refuses new ones (the database is gone for this mount only), resume()
    forwards again."""

    def __init__(self, port):
        self.up = ("127.0.0.1", port)
        self.held = threading.Event()
        self.refusing = threading.Event()
        self.socks = []
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            if self.refusing.is_set():
                c.close()
                continue
            try:
                u = socket.create_connection(self.up, timeout=10)
            except OSError:
                c.close()
                continue
            u.settimeout(None)
            with self.lock:
                self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, False), daemon=True).start()

    def _pump(self, a, b, from_client):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                # bounded: the test always resumes or cuts
                for _ in range(1200):
                    if not (from_client and self.held.is_set()) or self.refusing.is_set():
                        break
                    time.sleep(0.05)
                if self.refusing.is_set():
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def hold(self):
        self.held.set()

    def cut(self):
        self.refusing.set()
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def resume(self):
        self.refusing.clear()
        self.held.clear()

    def close(self):
        self.closed = True
        self.cut()
        self.srv.close()


@pytest.fixture
def pgproxy(stack):
    px = TcpProxy(stack.pg_port)
    yield px
    px.close()


@pytest.fixture
def s3proxy(stack):
    px = FaultProxy(stack.endpoint)
    yield px
    px.rule = None
    px.close()


def hold_db_at_upload(s3proxy, pgproxy, key):
    """Holds the database (pgproxy) as the request that makes key's object goes out (its PUT,
    or the completion of its multipart upload), so the upload lands and its row then waits.
    (Holding it before the writes would stop the upload itself: a mount records the file's
    attributes in the database before it uploads.)"""
    def rule(method, path, headers):
        p, _, q = path.partition("?")
        if p.endswith("/" + key) and ((method == "PUT" and "partNumber" not in q) or
                                      (method == "POST" and "uploadId" in q)):
            pgproxy.held_at = time.monotonic()
            pgproxy.hold()
        return None
    s3proxy.rule = rule


def conninfo_via(stack, port):
    return f"host=127.0.0.1 port={port} dbname=custody user=custody connect_timeout=3"


# --------------------------------------------------------------------------- 5: hashes

def test_foreign_forged_metadata_gets_computed_hashes(mount_factory):
    """An object put by an SDK with x-amz-meta-sha256/xxh128 claiming other content gets a row
    with the hashes of its bytes (read in several ranged GETs: 9 MB)."""
    m = mount_factory(config=grace(500))
    key = "forged/claims-zero.bin"
    data = os.urandom(9 << 20)
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=data,
                    Metadata={"sha256": "0" * 64, "xxh128": "0" * 32})
    ddir = os.path.join(m.inbox, "forged")
    m.wait_until(lambda: os.path.isdir(ddir) and "claims-zero.bin" in os.listdir(ddir),
                 timeout=30, what="forged object listed")

    def one_row():
        os.listdir(ddir)  # seen again: logged once its grace has passed
        r = rows(m, key)
        return r if r else None
    r = m.wait_until(one_row, timeout=60, interval=0.5, what="row of the forged object")
    time.sleep(2)
    r = rows(m, key)
    assert len(r) == 1, r
    assert r[0]["sha256"] == hashlib.sha256(data).hexdigest(), "hash copied from metadata"
    assert r[0]["xxh128"] == m.xxh128_bytes(data)
    assert r[0]["size_bytes"] == len(data)
    assert r[0]["removed_at"] is None
    assert r[0]["etag"] == etag_of(m, key)


# --------------------------------------------------------------------------- 6: undo

def _hang_put(key):
    def rule(method, path, headers):
        if method in ("PUT", "POST") and path.split("?")[0].endswith("/" + key):
            return ("hang",)
        return None
    return rule


def _db_lost_between_upload_and_row(stack, mount_factory, tmp_path, key, old):
    """Writes key through a mount whose upload is held until PostgreSQL is stopped, so the
    upload lands and its row cannot be committed. Returns (mount, new data, close errno)."""
    px = FaultProxy(stack.endpoint)
    m = mount_factory(config=grace(60000, {"s3": {"endpoint": px.url}}))
    try:
        os.makedirs(os.path.join(m.inbox, "lost"), exist_ok=True)
        if old is not None:
            write(os.path.join(m.inbox, key), old)
            assert len(rows(m, key)) == 1
        new = os.urandom(20000)
        src = tmp_path / "new.bin"
        src.write_bytes(new)
        px.rule = _hang_put(key)
        p = start(["cp", str(src), os.path.join(m.inbox, key)])
        m.wait_until(lambda: any(a == "hang" for _, _, a in px.log), timeout=30,
                     what="upload held")
        stack.stop_pg()
        px.rule = None
        px.release.set()
        rc, err = finish(p)
        assert rc is not None and rc != 0, \
            f"cp returned {rc} although the row could not be committed ({err})"
        stack.start_pg()
        return m, new, px
    except BaseException:
        px.close()
        raise


def test_overwrite_with_db_lost_is_logged_when_db_returns(stack, mount_factory, tmp_path):
    """Overwrite: the old content is gone once the upload lands; when the database is back the
    bucket and the table agree: the new object and exactly one live row, the uploader's."""
    key = "lost/over.bin"
    old = b"old content " * 100
    m, new, px = _db_lost_between_upload_and_row(stack, mount_factory, tmp_path, key, old)
    try:
        def agree():
            live = live_rows(m, key)
            return live if (len(live) == 1 and live[0]["etag"] == etag_of(m, key)) else None
        m.wait_until(agree, timeout=60, interval=0.5, what="bucket and table agree")
        assert get_object(m, key) == new
        all_rows = rows(m, key)
        assert len(all_rows) == 2, all_rows
        first, second = all_rows
        assert first["removed_at"] is not None and first["sha256"] == m.sha256_bytes(old)
        assert second["removed_at"] is None
        assert second["sha256"] == m.sha256_bytes(new)
        assert second["xxh128"] == m.xxh128_bytes(new)
        assert second["origin"] == "mount", second
        assert "another route" not in (second["received_by"] or ""), second
        assert second["received_uid"] == os.getuid()
    finally:
        m.unmount(check=False)
        px.close()


def test_new_file_with_db_lost_is_removed_when_db_returns(stack, mount_factory, tmp_path):
    """New key: close failed, so once the database answers the object goes and no row
    claims it."""
    key = "lost/new.bin"
    m, new, px = _db_lost_between_upload_and_row(stack, mount_factory, tmp_path, key, None)
    try:
        m.wait_until(lambda: get_object(m, key) is None, timeout=60, interval=0.5,
                     what="unrowed upload removed")
        time.sleep(2)
        assert get_object(m, key) is None
        assert rows(m, key) == []
    finally:
        m.unmount(check=False)
        px.close()


def test_failed_commit_keeps_another_mounts_object(stack, mount_factory, pgproxy, s3proxy,
                                                   tmp_path):
    """Mount A uploads a new key; before A's row commits, mount B writes the same key and
    commits its row; then A loses the database. A must not delete B's object (it is not the
    one A uploaded, and it has a row); bucket and table agree on B's file."""
    a = mount_factory(config=grace(60000, {"postgres": {"conninfo": conninfo_via(stack, pgproxy.port)},
                                           "s3": {"endpoint": s3proxy.url}}), name="host-a")
    b = mount_factory(reset=False, config=grace(60000), name="host-b")
    os.mkdir(os.path.join(a.inbox, "two"))
    key = "two/same.bin"
    data_a = b"written by a " * 500
    data_b = b"written by b " * 700
    hold_db_at_upload(s3proxy, pgproxy, key)
    fd = os.open(os.path.join(a.inbox, key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t, res = write_close_in_thread(fd, data_a)
    try:
        a.wait_until(lambda: get_object(a, key) == data_a, timeout=30, what="a's upload")
        write(os.path.join(b.inbox, key), data_b)
        assert len(rows(b, key)) == 1
        pgproxy.cut()
        t.join(BOUND)
        assert not t.is_alive() and res.get("rc") not in (None, 0), \
            f"a's close returned {res.get('rc')} without its row"
    finally:
        pgproxy.resume()
        t.join(BOUND)
    a.wait_until(lambda: "nothing to undo" in a.daemon_log(), timeout=60, interval=0.5,
                 what="a resolved its failed upload")
    assert get_object(a, key) == data_b, "a deleted or replaced b's object"
    r = rows(a, key)
    assert len(r) == 1, r
    assert r[0]["removed_at"] is None
    assert r[0]["etag"] == etag_of(a, key)
    assert r[0]["sha256"] == a.sha256_bytes(data_b)
    assert r[0]["origin"] == "mount"


def _shows(path, data):
    """What the mount shows at path, read by a fresh open: None when it is data (stat size and
    bytes), else a description of what it shows instead."""
    size = os.stat(path).st_size
    if size != len(data):
        return f"stat size {size}, the store holds {len(data)}"
    got = read(path)
    if got != data:
        return f"read {len(got)} bytes, not the store's {len(data)}"
    return None


@pytest.mark.parametrize("holder", ["closed", "reader-kept"])
@pytest.mark.parametrize("size", [3000, 12 << 20], ids=["put", "multipart"])
def test_late_row_of_a_replaced_upload_never_becomes_the_live_one(stack, mount_factory, size,
                                                                  holder):
    """Mount A's upload lands at the store, but its answer is late (so A's row is not written
    yet); meanwhile mount B writes the same key and commits its row. When A's row goes in, the
    object is B's: A's row must not become the live row (it would describe bytes the bucket no
    longer holds, and B's upload would then be logged a second time, as another route's).
    Both uploads are logged once each; the live row is B's and describes the object; A's
    close still reports success (its bytes were stored, then replaced).

    And mount A shows what the store holds, B's file, as soon as A's close returned (not its
    own bytes until a listing or the kernel's attribute cache times out): stat and a fresh
    read, whether A's file was closed (holder "closed") or a reader on A kept a handle of it
    open across the replacement ("reader-kept"), and again once that reader closed."""
    px = FaultProxy(stack.endpoint)
    key = "late/same.bin"
    data_a = os.urandom(size)
    data_b = os.urandom(size + 1)
    rfd = None
    try:
        a = mount_factory(config=grace(60000, {"s3": {"endpoint": px.url},
                                               "fs": {"part_size": str(5 << 20)}}),
                          name="host-a")
        b = mount_factory(reset=False, config=grace(60000), name="host-b")
        os.mkdir(os.path.join(a.inbox, "late"))
        path_a = os.path.join(a.inbox, key)

        def last_request(method, path, headers):
            p, _, q = path.partition("?")
            if not p.endswith("/" + key):
                return None
            if size < (5 << 20) and method == "PUT" and "partNumber" not in q:
                return ("late", 120)
            if size >= (5 << 20) and method == "POST" and "uploadId" in q:
                return ("late", 120)
            return None
        px.rule = last_request
        fd = os.open(path_a, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        v = memoryview(data_a)
        while v:
            v = v[os.write(fd, v):]
        if holder == "reader-kept":
            rfd = os.open(path_a, os.O_RDONLY)
            assert os.pread(rfd, 100, 0) == data_a[:100]
        t, res = write_close_in_thread(fd, b"")
        a.wait_until(lambda: get_object(a, key) == data_a, timeout=60, what="a's upload")
        write(os.path.join(b.inbox, key), data_b)
        assert len(rows(b, key)) == 1
        px.release.set()  # a learns its upload landed, then writes its row
        t.join(BOUND)
        assert not t.is_alive()
        assert res.get("rc") == 0, f"a's close: {res.get('rc')}"
        assert get_object(a, key) == data_b
        # at once: well within the 1 s the kernel caches attributes and the 3 s of a listing
        deadline = time.monotonic() + 0.5
        while True:
            why = _shows(path_a, data_b)
            if why is None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert why is None, f"mount a does not show the store's object: {why}"
    finally:
        px.rule = None
        px.close()
        if rfd is not None:
            os.close(rfd)
    assert _shows(path_a, data_b) is None, "after the reader closed"
    r = rows(a, key)
    assert len(r) == 2, r
    live = [x for x in r if x["removed_at"] is None]
    assert len(live) == 1, r
    assert live[0]["sha256"] == a.sha256_bytes(data_b), "the live row is not the object's"
    assert live[0]["etag"] == etag_of(a, key)
    assert live[0]["size_bytes"] == len(data_b)
    gone = [x for x in r if x["removed_at"] is not None]
    assert gone[0]["sha256"] == a.sha256_bytes(data_a)
    assert gone[0]["size_bytes"] == len(data_a)
    assert {x["origin"] for x in r} == {"mount"}


# --------------------------------------------------------------------------- 7: one logger

@pytest.mark.parametrize("size", [3000, 12 << 20], ids=["put", "multipart"])
def test_other_mounts_upload_is_logged_by_it_not_as_foreign(stack, mount_factory, pgproxy,
                                                             s3proxy, tmp_path, size):
    """Mount A's commit is held after its upload landed; mount B lists the key and scans the
    bucket meanwhile. The one row is A's (origin mount, A's user), not a "foreign" row by B."""
    a = mount_factory(config=grace(15000, {"postgres": {"conninfo": conninfo_via(stack, pgproxy.port)},
                                           "s3": {"endpoint": s3proxy.url},
                                           "fs": {"part_size": str(5 << 20)}}), name="host-a")
    b = mount_factory(reset=False, config=grace(15000, {"fs": {"scan_interval": "1"}}),
                      name="host-b")
    os.mkdir(os.path.join(a.inbox, "race"))
    key = "race/by-a.bin"
    data = os.urandom(size)
    bdir = os.path.join(b.inbox, "race")
    hold_db_at_upload(s3proxy, pgproxy, key)
    fd = os.open(os.path.join(a.inbox, key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t, res = write_close_in_thread(fd, data)
    try:
        a.wait_until(lambda: get_object(a, key) == data, timeout=60, what="a's upload")
        # b sees it (listing and its periodic scan) while a's row is not committed
        b.wait_until(lambda: "by-a.bin" in os.listdir(bdir), timeout=30, interval=0.5,
                     what="b lists a's object")
        time.sleep(3)
        os.listdir(bdir)
    finally:
        held = time.monotonic() - getattr(pgproxy, "held_at", time.monotonic())
        pgproxy.resume()
    t.join(BOUND)
    # a statement waits 20 s for an answer (DB_STATEMENT_TIMEOUT_MS): a longer hold is an
    # outage the close must report (EIO), not this test's case
    assert not t.is_alive() and res.get("rc") == 0, \
        f"a's close failed: {res}; the database was held {held:.1f} s\n{a.log_tail()}"
    # past b's grace: b looks again and finds a's row
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        os.listdir(bdir)
        time.sleep(1)
    r = rows(a, key)
    assert len(r) == 1, r
    assert r[0]["origin"] == "mount", r[0]
    assert "another route" not in (r[0]["received_by"] or ""), r[0]
    assert r[0]["sha256"] == a.sha256_bytes(data)
    assert r[0]["etag"] == etag_of(a, key)
    assert r[0]["removed_at"] is None


def test_own_upload_awaiting_its_answer_is_not_logged_as_foreign(stack, mount_factory):
    """This mount's PUT has landed at the store but its answer is late (so its row is not
    written yet) while the same mount lists and scans the bucket with no grace at all: the key
    is busy, the observer leaves it alone, and the one row is the uploader's."""
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config=grace(0, {"s3": {"endpoint": px.url},
                                           "fs": {"scan_interval": "1"}}))
        ddir = os.path.join(m.inbox, "late")
        os.mkdir(ddir)
        key = "late/own.bin"
        data = os.urandom(3000)
        px.rule = lambda method, path, headers: (
            ("late", 6) if method == "PUT" and path.split("?")[0].endswith("/" + key)
            else None)
        errors = []

        def writer():
            try:
                write(os.path.join(ddir, "own.bin"), data)  # close waits for the answer
            except OSError as e:
                errors.append(e)
        t = threading.Thread(target=writer)
        t.start()
        m.wait_until(lambda: get_object(m, key) == data, timeout=30, interval=0.2,
                     what="the PUT landed at the store")
        while t.is_alive():  # the answer is late: list meanwhile (the scan runs each second)
            os.listdir(ddir)
            time.sleep(0.3)
        t.join(BOUND)
        assert not errors, errors
        time.sleep(3)  # more scans: nothing changes
    finally:
        px.rule = None
        px.close()
    r = rows(m, key)
    assert len(r) == 1, r
    assert r[0]["origin"] == "mount", r[0]
    assert r[0]["sha256"] == m.sha256_bytes(data)
    assert r[0]["removed_at"] is None


def test_foreign_upload_still_logged_once_after_grace(mount_factory):
    """The grace period delays an observer's row, it does not lose it: two mounts see the same
    console upload, exactly one row results."""
    a = mount_factory(config=grace(2000, {"fs": {"scan_interval": "1"}}), name="host-a")
    b = mount_factory(reset=False, config=grace(2000, {"fs": {"scan_interval": "1"}}),
                      name="host-b")
    key = "console/one.bin"
    data = os.urandom(70000)
    a.s3.put_object(Bucket=a.reception_bucket, Key=key, Body=data,
                    Metadata={"sha256": "f" * 64})
    a.wait_until(lambda: rows(a, key), timeout=60, interval=0.5, what="row of console upload")
    time.sleep(4)  # both scanners run several times more
    r = rows(a, key)
    assert len(r) == 1, r
    assert r[0]["origin"] == "foreign"
    assert r[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert b.alive()


# --------------------------------------------------------------------------- 9: unmount

def test_unmount_does_not_wait_for_a_whole_scan(stack, mount_factory):
    """A scan of many objects on a store that answers every HEAD and read slowly (3 s): unmount stops
    it at the next object instead of hashing the rest (which would take minutes; the harness
    fails an unmount that does not end within 30 s)."""
    n = 60
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config=grace(0, {"s3": {"endpoint": px.url}, "fs": {"scan_interval": "1"}}), start=False)
        for i in range(n):
            m.s3.put_object(Bucket=m.reception_bucket, Key=f"slow/{i:04d}.bin", Body=b"x" * 100)

        def is_read(method, path):
            return method in ("GET", "HEAD") and "/slow/" in path.split("?")[0]

        def slow_reads(method, path, headers):
            if is_read(method, path):
                time.sleep(3)
            return None
        px.rule = slow_reads
        m.mount()
        m.wait_until(lambda: any(is_read(meth, path) for meth, path, _ in px.log), timeout=30,
                     what="the scan is hashing")
        m.unmount()
        assert not m.alive()
        reads = sum(1 for meth, path, _ in px.log if is_read(meth, path))
        assert reads < n // 2, f"{reads} of {n} objects were read: the scan went on"
    finally:
        px.rule = None
        px.close()


# ---- hostile review 2: reproductions (each failed before its fix) ----


def test_overwrite_of_seed_row_key_is_logged(mount_factory):
    """A key whose live row came from the seed (no etag: valid per SPEC 5) is overwritten
    through the mount: that upload must get its own row."""
    m = mount_factory(config=grace(60000))
    key = "seed/old.txt"
    old = b"seed content\n"
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=old)
    m.sql("INSERT INTO reception_audit (source_bucket, file_name, object_key, size_bytes)"
          " VALUES (%s, %s, %s, %s)", (m.reception_bucket, "old.txt", key, len(old)))
    new = b"brand new content written through the mount\n" * 10
    write(os.path.join(m.inbox, key), new)
    assert get_object(m, key) == new
    r = rows(m, key)
    assert len(r) == 2, f"mount's overwrite not logged; rows: {r}"
    assert r[1]["removed_at"] is None and r[1]["sha256"] == m.sha256_bytes(new)


def test_same_content_rewrite_is_a_distinct_upload(mount_factory):
    """Two writes of the same bytes (a second cp) are two uploads: two rows."""
    m = mount_factory(config=grace(60000))
    os.makedirs(os.path.join(m.inbox, "same"), exist_ok=True)
    key = "same/f.bin"
    data = b"identical bytes " * 100
    write(os.path.join(m.inbox, key), data)
    time.sleep(1)
    write(os.path.join(m.inbox, key), data)
    r = rows(m, key)
    assert len(r) == 2, r


def test_rename_over_existing_with_db_down_keeps_target(stack, mount_factory, pgproxy):
    """rename(a, b) with the database unreachable fails; b must still be there with its
    content, and no live row may claim an object that is gone."""
    m = mount_factory(config=grace(60000, {"postgres": {"conninfo": conninfo_via(stack, pgproxy.port)}}))
    d = os.path.join(m.inbox, "ren")
    os.makedirs(d, exist_ok=True)
    da, db_ = b"AAAA content of a\n" * 50, b"BBBB content of b\n" * 70
    write(os.path.join(d, "a.bin"), da)
    write(os.path.join(d, "b.bin"), db_)
    pgproxy.cut()
    err = None
    try:
        os.rename(os.path.join(d, "a.bin"), os.path.join(d, "b.bin"))
    except OSError as e:
        err = e
    pgproxy.resume()
    time.sleep(12)  # undo retries at 2 s, 4 s...
    objb = get_object(m, "ren/b.bin")
    lb = live_rows(m, "ren/b.bin")
    print("rename err", err, "b object", None if objb is None else objb[:10], "live rows b", lb)
    print(m.daemon_log()[-3000:])
    if err is not None:
        assert objb == db_, "failed rename destroyed the target"
    for row in lb:
        assert objb is not None and row["etag"] == etag_of(m, "ren/b.bin"), \
            f"live row claims an object that is gone/different: {row}"


def test_undo_does_not_delete_a_later_same_content_write(stack, mount_factory, pgproxy):
    """Write 1 of a new key fails at its row (db cut) -> undo pending. The user runs cp again
    (same bytes); its PUT lands, its answer is late. The pending undo must not delete write 2's
    object: write 2's close returns 0, so the object must be there with its row."""
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config=grace(60000, {
            "s3": {"endpoint": px.url},
            "postgres": {"conninfo": conninfo_via(stack, pgproxy.port)}}))
        d = os.path.join(m.inbox, "undo")
        os.makedirs(d, exist_ok=True)
        key = "undo/f.bin"
        path = os.path.join(d, "f.bin")
        data = b"same bytes twice " * 300
        pgproxy.cut()
        with pytest.raises(OSError):
            write(path, data)
        t0 = time.monotonic()
        px.rule = lambda method, path, headers: (
            ("late", 8) if method == "PUT" and path.split("?")[0].endswith("/" + key) else None)
        errs, enoent = [], []

        def writer():
            for _ in range(20):
                try:
                    write(path, data)
                    return
                except FileNotFoundError as e:
                    enoent.append(str(e))
                    time.sleep(0.2)
                except OSError as e:
                    errs.append(e)
                    return
            errs.append("ENOENT 20 times")
        # Write 2 starts once the database answers again (replacing an object needs it:
        # EIO before, by design), between the undo's first retry (2 s, database still
        # cut) and its second (about 6 s), which then finds write 2's object in place.
        time.sleep(max(0, 3.5 - (time.monotonic() - t0)))
        pgproxy.resume()
        t = threading.Thread(target=writer)
        t.start()
        t.join(60)
        px.rule = None
        print("write2 ENOENT retries:", len(enoent), "errors:", errs)
        assert not errs, errs  # write 2's close returned 0
        time.sleep(6)
        print(m.daemon_log()[-2500:])
        obj = get_object(m, key)
        r = rows(m, key)
        assert obj == data, f"close returned 0 but the object is gone; rows: {r}"
        assert len([x for x in r if x["removed_at"] is None]) == 1, r
    finally:
        px.rule = None
        px.close()


def theirs_after_failed_rows(m, px, pgproxy, key, data, act, is_ours, tag):
    """act() (a write or a rename onto key) fails because the database is cut as the request
    that lands key's object (is_ours(method, path, headers)) goes out; that object carries
    the x-amz-meta tag named tag. Then another client stores the same bytes at key (the same
    ETag, without the tag) and the database answers again: the ETag they share."""
    def cut(method, path, headers):
        if path.split("?")[0].endswith("/" + key) and is_ours(method, path, headers):
            pgproxy.cut()
        return None
    px.rule = cut
    try:
        with pytest.raises(OSError):
            act()
        px.rule = None
        mine = m.s3.head_object(Bucket=m.reception_bucket, Key=key)
        assert tag in mine["Metadata"], mine["Metadata"]
        theirs = m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=data)["ETag"]
        assert theirs == mine["ETag"]  # the same bytes: the same ETag
    finally:
        px.rule = None
        pgproxy.resume()


def kept_as_theirs(m, key, data, tag, undone):
    """Once the undo ran (undone()), key still holds the other client's object."""
    m.wait_until(lambda: undone() or get_object(m, key) is None, timeout=90,
                 what="the undo ran")
    assert get_object(m, key) is not None, "the undo deleted another client's object"
    got = m.s3.get_object(Bucket=m.reception_bucket, Key=key)
    assert got["Body"].read() == data and tag not in got["Metadata"], got["Metadata"]


def test_undo_does_not_delete_another_clients_same_bytes(stack, mount_factory, pgproxy):
    """review-W finding 4b, the undo's side: write 1 of a new key lands but its row fails
    (the database is cut as its PUT goes out), so its undo is to delete the object. Before
    it runs, another client stores the same bytes at the key (the same ETag). That object is
    not this upload's (it lacks the upload's x-amz-meta-custodyfs-upload tag): the undo
    leaves it in place, and no live row of the mount names it."""
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config=grace(600000, {
            "s3": {"endpoint": px.url},
            "postgres": {"conninfo": conninfo_via(stack, pgproxy.port)}}))
        os.makedirs(os.path.join(m.inbox, "undo2"), exist_ok=True)
        key = "undo2/f.bin"
        data = os.urandom(8192)

        theirs_after_failed_rows(m, px, pgproxy, key, data,
                                 lambda: write(os.path.join(m.inbox, key), data),
                                 lambda meth, path, h: meth == "PUT", "custodyfs-upload")
        kept_as_theirs(m, key, data, "custodyfs-upload",
                       lambda: "no longer the upload whose row failed" in m.daemon_log())
        assert not [x for x in rows(m, key)
                    if x["origin"] == "mount" and x["removed_at"] is None]
    finally:
        px.rule = None
        px.close()


def test_same_bytes_stored_before_the_row_are_not_this_upload(stack, mount_factory):
    """review-W W2 on the success path: the mount's PUT of f is answered 200, and before its
    row is written another client stores the same bytes there (the same ETag, without the
    upload's tag). The row's guard must not take that object for the upload: the mount's row
    is logged as superseded (removed), the close returns 0 (its upload did land), and the
    other client's upload gets its own (foreign) row, live, naming the object there."""
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config=grace(1000, {"s3": {"endpoint": px.url}}))
        os.makedirs(os.path.join(m.inbox, "cg"), exist_ok=True)
        key = "cg/f.bin"
        data = os.urandom(8192)
        st = {"put": 0, "theirs": None}

        def rule(method, path, headers):
            if not path.split("?")[0].endswith("/" + key):
                return None
            if method == "PUT":
                st["put"] += 1
            elif method == "HEAD" and st["put"] and st["theirs"] is None:
                st["theirs"] = m.s3.put_object(Bucket=m.reception_bucket, Key=key,
                                               Body=data)["ETag"].strip('"')
            return None
        px.rule = rule
        try:
            write(os.path.join(m.inbox, key), data)  # close returns 0
        finally:
            px.rule = None
        assert st["theirs"], "no HEAD after the PUT"
        got = m.s3.head_object(Bucket=m.reception_bucket, Key=key)
        assert "custodyfs-upload" not in got["Metadata"], got["Metadata"]

        def foreign_live():
            os.listdir(os.path.join(m.inbox, "cg"))  # a listing: the logger looks
            return [x for x in rows(m, key) if x["origin"] == "foreign"
                    and x["removed_at"] is None]
        m.wait_until(foreign_live, timeout=60, interval=1, what="the other upload logged")
        r = rows(m, key)
        assert len(r) == 2, r  # the upload's (removed) and the other client's
        mine = [x for x in r if x["origin"] == "mount"]
        assert len(mine) == 1 and mine[0]["removed_at"] is not None, r
        live = [x for x in r if x["removed_at"] is None]
        assert len(live) == 1 and live[0]["etag"] == st["theirs"], r
        assert live[0]["sha256"] == m.sha256_bytes(data), r
    finally:
        px.rule = None
        px.close()


@pytest.mark.parametrize("target", ["new", "existing"])
def test_rename_undo_does_not_take_another_clients_same_bytes(stack, mount_factory, pgproxy,
                                                              target):
    """The rename's side of the undo (review-W 4b): rename(a, b) copies a to b and its rows
    fail (the database is cut at the copy to b), so its undo is to delete the copy (a new b)
    or to log it late (an existing b, overwritten from a staged copy). Before it runs, another
    client stores the same bytes at b (the same ETag, without the rename's
    x-amz-meta-custodyfs-rename tag). The undo neither deletes that object nor logs a row of
    the rename for it; a stays as it was."""
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config=grace(600000, {
            "s3": {"endpoint": px.url},
            "postgres": {"conninfo": conninfo_via(stack, pgproxy.port)}}))
        os.makedirs(os.path.join(m.inbox, "ru"), exist_ok=True)
        data = os.urandom(8192)
        write(os.path.join(m.inbox, "ru/a.bin"), data)
        key = "ru/b.bin"
        if target == "existing":
            write(os.path.join(m.inbox, key), os.urandom(100))
        before = rows(m, key)

        theirs_after_failed_rows(
            m, px, pgproxy, key, data,
            lambda: os.rename(os.path.join(m.inbox, "ru/a.bin"), os.path.join(m.inbox, key)),
            lambda meth, path, h: meth == "PUT" and any(
                k.lower() == "x-amz-copy-source" for k in h.keys()),
            "custodyfs-rename")
        kept_as_theirs(m, key, data, "custodyfs-rename",
                       lambda: "nothing to undo" in m.daemon_log()
                       or len(rows(m, key)) > len(before))
        r = rows(m, key)
        assert [x["id"] for x in r] == [x["id"] for x in before], r  # no row for the object
        assert read(os.path.join(m.inbox, "ru/a.bin")) == data  # the source stays
    finally:
        px.rule = None
        px.close()


def test_foreign_hash_is_of_one_object_not_a_mix(stack, mount_factory):
    """A malicious uploader replaces the object (same size) while the observer hashes it in
    ranged GETs and puts the original back before the final HEAD. The row's sha256 must be of
    bytes that were actually uploaded (A or B), never a mix of both."""
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config=grace(0, {"s3": {"endpoint": px.url},
                                           "fs": {"scan_interval": "1"}}), start=False)
        key = "aba/x.bin"
        size = 10 << 20
        A = os.urandom(size)
        B = os.urandom(size)
        m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=A)
        done = []

        def rule(method, path, headers):
            if method == "GET" and path.split("?")[0].endswith("/" + key):
                rng = headers.get("Range") or ""
                if rng.startswith("bytes=4194304-") and "B" not in done:
                    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=B)
                    done.append("B")
                elif rng.startswith("bytes=8388608-") and "A" not in done:
                    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=A)
                    done.append("A")
            return None
        px.rule = rule
        time.sleep(1.5)
        m.mount()
        m.wait_until(lambda: rows(m, key), timeout=60, interval=0.5, what="row")
        px.rule = None
        r = rows(m, key)
        print("swaps:", done, "rows:", r)
        mix = hashlib.sha256(A[:4 << 20] + B[4 << 20:8 << 20] + A[8 << 20:]).hexdigest()
        assert r[-1]["sha256"] != mix, "row holds the hash of a mix nobody uploaded"
        assert r[-1]["sha256"] in (hashlib.sha256(A).hexdigest(), hashlib.sha256(B).hexdigest())
    finally:
        px.rule = None
        px.close()


def _fail_first_commit(m, pgproxy, path):
    pgproxy.cut()
    with pytest.raises(OSError):
        write(path, _fail_first_commit.data)
    pgproxy.resume()


def test_undo_of_a_new_key_not_fooled_by_a_removed_row(stack, mount_factory, pgproxy):
    """K written (row), removed (row removed), then written again with the same bytes while
    the row cannot commit: close fails, so the object must go (or get the user's row) -- it
    must not stay with no live row."""
    m = mount_factory(config=grace(60000, {"postgres": {"conninfo": conninfo_via(stack, pgproxy.port)}}))
    d = os.path.join(m.inbox, "rm")
    os.makedirs(d, exist_ok=True)
    key, path = "rm/f.bin", os.path.join(d, "f.bin")
    data = b"content written, removed, written again " * 50
    write(path, data)
    os.unlink(path)
    assert get_object(m, key) is None
    _fail_first_commit.data = data
    _fail_first_commit(m, pgproxy, path)
    time.sleep(8)
    obj, live = get_object(m, key), live_rows(m, key)
    print(m.daemon_log()[-1500:])
    assert not (obj is not None and not live), \
        f"object of a failed close left in the bucket with no live row: rows {rows(m, key)}"


def test_uploaders_row_wins_over_observer_even_with_skew(stack, mount_factory, pgproxy, s3proxy,
                                                         tmp_path):
    """Observer B's grace is short relative to A's upload->row time (what a clock skew
    between B and the store does to the default grace). A's close returns 0: its row must be
    A's (origin mount), decided in the database -- not B's 'another route' row."""
    a = mount_factory(config=grace(60000, {"postgres": {"conninfo": conninfo_via(stack, pgproxy.port)},
                                           "s3": {"endpoint": s3proxy.url}}), name="host-a")
    b = mount_factory(reset=False, config=grace(300, {"fs": {"scan_interval": "1"}}), name="host-b")
    os.mkdir(os.path.join(a.inbox, "skew"))
    key = "skew/a.bin"
    data = os.urandom(5000)
    hold_db_at_upload(s3proxy, pgproxy, key)
    fd = os.open(os.path.join(a.inbox, key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t, res = write_close_in_thread(fd, data)
    try:
        a.wait_until(lambda: get_object(a, key) == data, timeout=30, what="a's upload")
        b.wait_until(lambda: rows(b, key), timeout=30, interval=0.5, what="b's foreign row")
    finally:
        pgproxy.resume()
    t.join(60)
    r = rows(a, key)
    print(r)
    assert res.get("rc") == 0, f"a's close failed: {res}"
    assert any(x["origin"] == "mount" for x in r), f"a's close returned 0, its upload has no row of its own: {r}"


def test_rename_over_existing_db_lost_after_copy_keeps_and_logs_target(stack, mount_factory,
                                                                       pgproxy):
    """rename(a, b) over an existing b: the database answers before the copy and is lost right
    after it (cut as the copy request goes out), so the rows fail with b already overwritten.
    b must not be deleted (its old content is gone, the copy is what is there), and once the
    database answers the copy gets b's live row, logged late as the rename."""
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config=grace(60000, {
            "s3": {"endpoint": px.url},
            "postgres": {"conninfo": conninfo_via(stack, pgproxy.port)}}))
        d = os.path.join(m.inbox, "rcut")
        os.makedirs(d, exist_ok=True)
        da, db_ = b"AAAA content of a\n" * 50, b"BBBB content of b\n" * 70
        write(os.path.join(d, "a.bin"), da)
        write(os.path.join(d, "b.bin"), db_)
        cut = []

        def rule(method, p, headers):
            if (method == "PUT" and p.split("?")[0].endswith("/rcut/b.bin")
                    and headers.get("x-amz-copy-source") and not cut):
                pgproxy.cut()
                cut.append(1)
            return None
        px.rule = rule
        with pytest.raises(OSError):
            os.rename(os.path.join(d, "a.bin"), os.path.join(d, "b.bin"))
        px.rule = None
        assert cut, "the copy request was not seen"
        pgproxy.resume()
        m.wait_until(lambda: [r for r in live_rows(m, "rcut/b.bin")
                              if r["etag"] == etag_of(m, "rcut/b.bin")],
                     timeout=60, interval=0.5, what="b's row for what b holds")
        print(m.daemon_log()[-2000:])
        assert get_object(m, "rcut/b.bin") == da, "the copy over b was deleted"
        assert get_object(m, "rcut/a.bin") == da
        lb, rb = live_rows(m, "rcut/b.bin"), rows(m, "rcut/b.bin")
        assert len(lb) == 1 and lb[0]["origin"] == "rename", rb
        assert len(rb) == 2, rb  # b's own upload (retired) and the rename's copy
        assert len(rows(m, "rcut/a.bin")) == 1
    finally:
        px.rule = None
        px.close()
