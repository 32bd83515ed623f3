"""inbox/ — reception (SPEC §2, §5, §7): every check goes through an independent client
(boto3 for the bucket, SQL for the rows), not only through the mount."""
import errno
import os
import re
import socket
import subprocess
import time

import pytest
from botocore.exceptions import ClientError
from checks import bucket_keys, expected_history, get_object, head, history, read, rows, write

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX64 = re.compile(r"[0-9a-f]{64}")

TEMP_NAMES = [
    ".goutputstream-AB12CD",
    "x.part",
    "x.crdownload",
    "x.tmp",
    "~$doc.docx",
    ".~lock.doc.odt#",
    ".x.swp",
]


# --------------------------------------------------------------------------- helpers

def sh(cmd, timeout=120, check=True, **kw):
    """Run a shell command, bounded; returns CompletedProcess (text)."""
    p = subprocess.run(cmd, shell=isinstance(cmd, str), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    if check:
        assert p.returncode == 0, f"{cmd!r} exited {p.returncode}: {p.stdout}{p.stderr}"
    return p


def rows_under(m, prefix):
    return m.sql_dicts("select * from reception_audit where source_bucket = %s and"
                       " starts_with(object_key, %s) order by id", (m.reception_bucket, prefix))


def check_received(m, key, data, n_rows=1):
    """The object holds data, its metadata carries the hashes (a single PUT's object must;
    a multipart one may go without, SPEC §2), and the key has exactly n_rows rows in all,
    removed ones included: the last one live and describing data, every earlier one removed
    with a reason. Returns the live row."""
    got = get_object(m, key)
    assert got is not None, f"{key!r} is not in the bucket"
    assert got == data, f"{key!r}: bucket holds {len(got)} bytes, expected {len(data)}"
    sha = m.sha256_bytes(data)
    xxh = m.xxh128_bytes(data)
    h = head(m, key)
    assert h["ContentLength"] == len(data)
    meta = h["Metadata"]
    # a multipart object: its ETag says so ("md5-N"), except on s3rver, whose multipart ETag
    # is a plain MD5; no object up to 5 MiB (the smallest part size) is multipart
    multipart = "-" in h.get("ETag", "") or len(data) > 5 << 20
    if not multipart or "sha256" in meta or "xxh128" in meta:
        assert meta.get("sha256") == sha, f"metadata {meta}"
        assert meta.get("xxh128") == xxh, f"metadata {meta}"
    every = rows(m, key)
    assert len(every) == n_rows, f"{len(every)} rows for {key!r}, expected {n_rows}: {every}"
    for old in every[:-1]:
        assert old["removed_at"] is not None and old["removal_reason"], \
            f"an earlier row of {key!r} is not closed: {old}"
    r = every[-1]
    assert r["removed_at"] is None, f"the last row of {key!r} is removed: {r}"
    assert r["size_bytes"] == len(data)
    assert r["sha256"] == sha
    assert r["xxh128"] == xxh
    assert r["object_key"] == key
    assert r["file_name"] == key.rsplit("/", 1)[-1]
    assert r["source_bucket"] == m.reception_bucket
    assert r["uploaded_at"] is not None
    return r


def no_trace(m, key):
    # listed, not fetched: s3rver answers a GET of an over-long key with a 500
    assert key not in bucket_keys(m, key.rsplit("/", 1)[0] + "/", markers=True), \
        f"{key!r} reached the bucket"
    assert rows(m, key) == [], f"{key!r} got rows: {rows(m, key)}"


@pytest.fixture
def d(mount, uniq):
    """A fresh directory inbox/<uniq> (its key prefix is '<uniq>/')."""
    p = os.path.join(mount.inbox, uniq)
    os.mkdir(p)
    return p


# --------------------------------------------------------------------------- writes

def test_cp_small_file(mount, d, uniq, tmp_path):
    m = mount
    data = b"chain of custody\n" * 100 + os.urandom(333)
    src = tmp_path / "small.bin"
    src.write_bytes(data)
    sh(["cp", str(src), os.path.join(d, "small.bin")])
    key = f"{uniq}/small.bin"
    r = check_received(m, key, data)
    assert HEX32.fullmatch(r["xxh128"]) and HEX64.fullmatch(r["sha256"])
    by = r["received_by"] or ""
    assert "root" in by and re.search(r"\b0\b", by) and socket.gethostname() in by, by
    # and the mount reads it back
    assert read(os.path.join(d, "small.bin")) == data
    assert os.stat(os.path.join(d, "small.bin")).st_size == len(data)


def test_xxh128_is_canonical_xxh3_128(mount, d, uniq):
    """xxh128 is XXH3-128 in canonical (big-endian) hex, what `xxhsum -H2` prints."""
    m = mount
    data = b"abc"
    write(os.path.join(d, "abc.txt"), data)
    r = rows(m, f"{uniq}/abc.txt")
    assert len(r) == 1 and r[0]["removed_at"] is None, r
    assert r[0]["xxh128"] == "06b05ab6733a618578af5f94892f3950"  # xxhsum -H2 of "abc"
    assert r[0]["sha256"] == m.sha256_bytes(data)


def test_durable_at_fsync(mount, d, uniq):
    """fsync returning 0 means the object is in the bucket and the row committed."""
    m = mount
    key = f"{uniq}/synced.bin"
    data = os.urandom(50000)
    fd = os.open(os.path.join(d, "synced.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
        check_received(m, key, data)
        os.write(fd, b"tail")
        os.fsync(fd)
        check_received(m, key, data + b"tail", n_rows=2)
    finally:
        os.close(fd)
    # nothing written since the last fsync: the close logs no third reception
    check_received(m, key, data + b"tail", n_rows=2)


def test_empty_file(mount, d, uniq):
    m = mount
    sh(["touch", os.path.join(d, "empty")])
    check_received(m, f"{uniq}/empty", b"")
    assert os.path.getsize(os.path.join(d, "empty")) == 0


def test_large_file_multipart(mount, d, uniq, tmp_path):
    m = mount
    src = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for i in range(64):
            f.write(block[i:] + block[:i])
    data = src.read_bytes()
    assert len(data) == 64 << 20
    sh(["cp", str(src), os.path.join(d, "big.bin")], timeout=180)
    key = f"{uniq}/big.bin"
    h = head(m, key)
    assert h and h["ContentLength"] == len(data)
    # no multipart upload left behind
    try:
        ups = m.s3.list_multipart_uploads(Bucket=m.reception_bucket, Prefix=f"{uniq}/")
        assert ups.get("Uploads", []) == []
    except ClientError as e:   # s3rver: NotImplemented
        if e.response["Error"]["Code"] != "NotImplemented":
            raise
    r = check_received(m, key, data)
    assert r["size_bytes"] == 64 << 20
    assert m.sha256(os.path.join(d, "big.bin")) == m.sha256_bytes(data)


def _vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.custodyfs_config({"fs": {"part_size": str(5 << 20), "upload_workers": "2"}})
def test_large_file_is_spooled_not_held_in_memory(fresh_mount, tmp_path):
    """SPEC §2: spooled on disk, never the whole file in memory."""
    m = fresh_mount
    src = tmp_path / "huge.bin"
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for i in range(96):
            f.write(block[i:] + block[:i])
    os.mkdir(os.path.join(m.inbox, "mem"))
    before = _vm_hwm_kib(m.pid)
    sh(["cp", str(src), os.path.join(m.inbox, "mem", "huge.bin")], timeout=240)
    grew = _vm_hwm_kib(m.pid) - before
    assert grew < 64 * 1024, f"daemon peak RSS grew by {grew} KiB for a 96 MiB file"
    h = head(m, "mem/huge.bin")
    assert h["ContentLength"] == 96 << 20
    assert h["Metadata"].get("sha256") in (None, m.sha256(str(src)))
    r = rows(m, "mem/huge.bin")
    assert len(r) == 1 and r[0]["removed_at"] is None, r
    assert r[0]["sha256"] == m.sha256(str(src))
    assert get_object(m, "mem/huge.bin") == src.read_bytes()


def test_parallel_writers(mount, d, uniq):
    import concurrent.futures as cf
    m = mount
    datas = {f"p{i:02d}.bin": os.urandom(1000 + 997 * i) for i in range(24)}

    def one(item):
        name, data = item
        write(os.path.join(d, name), data)
        return name
    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(one, datas.items()))
    assert bucket_keys(m, f"{uniq}/") == sorted(f"{uniq}/{n}" for n in datas)
    for n, data in datas.items():
        check_received(m, f"{uniq}/{n}", data)
    assert sorted(os.listdir(d)) == sorted(datas)


def test_nested_directories(mount, d, uniq):
    m = mount
    sh(["mkdir", "-p", os.path.join(d, "a", "b", "c")])
    files = {"top.txt": b"top", "a/one.txt": b"one", "a/b/two.txt": b"two",
             "a/b/c/three.txt": b"three"}
    for rel, data in files.items():
        write(os.path.join(d, rel), data)
    assert sorted(os.listdir(d)) == ["a", "top.txt"]
    assert sorted(os.listdir(os.path.join(d, "a"))) == ["b", "one.txt"]
    assert sorted(os.listdir(os.path.join(d, "a", "b"))) == ["c", "two.txt"]
    assert os.listdir(os.path.join(d, "a", "b", "c")) == ["three.txt"]
    assert os.path.isdir(os.path.join(d, "a", "b"))
    assert bucket_keys(m, f"{uniq}/") == sorted(f"{uniq}/{k}" for k in files)
    for rel, data in files.items():
        check_received(m, f"{uniq}/{rel}", data)


SPECIAL_NAMES = [
    "relatório ação ñ 日本語 🙂.txt",
    "name with  spaces .txt",
    "it's \"quoted\".txt",
    "a+b=c.txt",
    "100% done %41%2F.txt",
    "'; DROP TABLE storage_audit; --.pdf",
    "semi;colon&amp<>|*?[x].txt",
    "back\\slash.txt",
]


@pytest.mark.parametrize("name", SPECIAL_NAMES, ids=range(len(SPECIAL_NAMES)))
def test_special_names_stored_literally(mount, d, uniq, name):
    m = mount
    data = ("content of " + name).encode()
    write(os.path.join(d, name), data)
    key = f"{uniq}/{name}"
    assert bucket_keys(m, f"{uniq}/") == [key]
    r = check_received(m, key, data)
    assert r["file_name"] == name
    assert name in os.listdir(d)
    assert read(os.path.join(d, name)) == data
    assert m.sql_value("select to_regclass('storage_audit') is not null")


# --------------------------------------------------------------------------- refused names

def _expect_errno(fn, *codes):
    with pytest.raises(OSError) as ei:
        fn()
    assert ei.value.errno in codes, f"errno {ei.value.errno} ({os.strerror(ei.value.errno)})"


def test_component_of_256_bytes_refused(mount, d, uniq):
    m = mount
    name = "n" * 252 + ".txt"
    assert len(name.encode()) == 256
    p = os.path.join(d, name)
    _expect_errno(lambda: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
                  errno.ENAMETOOLONG)
    _expect_errno(lambda: os.mkdir(p), errno.ENAMETOOLONG)
    # multibyte: 128 x 2-byte chars = 256 bytes
    name2 = "é" * 128
    _expect_errno(lambda: os.open(os.path.join(d, name2), os.O_WRONLY | os.O_CREAT, 0o644),
                  errno.ENAMETOOLONG)
    assert bucket_keys(m, f"{uniq}/") == []
    no_trace(m, f"{uniq}/{name}")
    no_trace(m, f"{uniq}/{name2}")


def test_component_of_255_bytes_accepted(mount, d, uniq):
    m = mount
    if m.stack.backend == "s3rver":
        # s3rver stores each object as '<key>._S3rver_object' on its disk: a 255-byte
        # component makes it crash (ENAMETOOLONG, unhandled 'error' event)
        pytest.skip("s3rver cannot hold a 255-byte key component")
    ok = "o" * 251 + ".txt"
    assert len(ok.encode()) == 255
    write(os.path.join(d, ok), b"ok")
    check_received(m, f"{uniq}/{ok}", b"ok")
    assert bucket_keys(m, f"{uniq}/") == [f"{uniq}/{ok}"]


def test_key_over_1024_bytes_refused(mount, d, uniq):
    m = mount
    parts = ["d" * 200] * 4
    deep = os.path.join(d, *parts)
    os.makedirs(deep)
    prefix = "/".join([uniq] + parts) + "/"
    room = 1024 - len(prefix.encode())
    assert 0 < room < 255
    ok, bad = "k" * room, "b" * (room + 1)
    _expect_errno(lambda: os.open(os.path.join(deep, bad), os.O_WRONLY | os.O_CREAT, 0o644),
                  errno.ENAMETOOLONG)
    _expect_errno(lambda: os.mkdir(os.path.join(deep, bad)), errno.ENAMETOOLONG)
    write(os.path.join(deep, ok), b"fits")          # exactly 1024 bytes of key
    check_received(m, prefix + ok, b"fits")
    _expect_errno(lambda: os.rename(os.path.join(deep, ok), os.path.join(deep, bad)),
                  errno.ENAMETOOLONG)
    assert bucket_keys(m, f"{uniq}/") == [prefix + ok]
    assert [r["object_key"] for r in rows_under(m, f"{uniq}/")] == [prefix + ok]


@pytest.mark.parametrize("name", ["ctl\x01char.txt", "new\nline.txt", "tab\tname.txt",
                                  "esc\x1b.txt", "del\x7f.txt"],
                         ids=["x01", "newline", "tab", "esc", "del"])
def test_control_characters_refused(mount, d, uniq, name):
    m = mount
    p = os.path.join(d, name)
    _expect_errno(lambda: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), errno.EINVAL)
    _expect_errno(lambda: os.mkdir(p), errno.EINVAL)
    assert name not in os.listdir(d)
    assert bucket_keys(m, f"{uniq}/") == []
    assert rows_under(m, f"{uniq}/") == []


def test_rename_to_control_character_name_refused(mount, d, uniq):
    m = mount
    write(os.path.join(d, "good.txt"), b"good")
    _expect_errno(lambda: os.rename(os.path.join(d, "good.txt"), os.path.join(d, "bad\x01.txt")),
                  errno.EINVAL)
    assert bucket_keys(m, f"{uniq}/") == [f"{uniq}/good.txt"]
    check_received(m, f"{uniq}/good.txt", b"good")


def test_invalid_utf8_refused(mount, d, uniq):
    m = mount
    p = os.path.join(os.fsencode(d), b"bad\xff\xfe.txt")
    _expect_errno(lambda: os.open(p, os.O_WRONLY | os.O_CREAT, 0o644), errno.EINVAL, errno.EILSEQ)
    assert bucket_keys(m, f"{uniq}/") == []
    assert rows_under(m, f"{uniq}/") == []


# --------------------------------------------------------------------------- temp names

@pytest.mark.parametrize("name", TEMP_NAMES, ids=range(len(TEMP_NAMES)))
def test_temp_names_stay_local(mount, d, uniq, name):
    m = mount
    p = os.path.join(d, name)
    data = b"temporary " + name.encode()
    write(p, data)
    with open(p, "ab") as f:   # reopened and written again: still local
        f.write(b"+more")
        f.flush()
        os.fsync(f.fileno())
    assert name in os.listdir(d)
    assert read(p) == data + b"+more"
    assert os.stat(p).st_size == len(data) + 5
    assert bucket_keys(m, f"{uniq}/") == []
    assert rows_under(m, f"{uniq}/") == []
    os.unlink(p)
    assert name not in os.listdir(d)
    assert bucket_keys(m, f"{uniq}/") == []
    assert rows_under(m, f"{uniq}/") == []


def test_gnome_save_pattern(mount, d, uniq):
    """gedit/GNOME Files: write .goutputstream-XXXX, then rename it onto the final name."""
    m = mount
    key = f"{uniq}/report.txt"
    tmp1 = os.path.join(d, ".goutputstream-Q1W2E3")
    write(tmp1, b"version 1\n")
    assert bucket_keys(m, f"{uniq}/") == []
    os.rename(tmp1, os.path.join(d, "report.txt"))
    assert os.listdir(d) == ["report.txt"]
    r1 = check_received(m, key, b"version 1\n")
    assert bucket_keys(m, f"{uniq}/") == [key]
    # the second save replaces the existing file
    tmp2 = os.path.join(d, ".goutputstream-Z9X8C7")
    write(tmp2, b"version 2, longer\n")
    os.rename(tmp2, os.path.join(d, "report.txt"))
    assert os.listdir(d) == ["report.txt"]
    r2 = check_received(m, key, b"version 2, longer\n", n_rows=2)
    assert bucket_keys(m, f"{uniq}/") == [key]
    all_rows = rows(m, key)
    assert [r["id"] for r in all_rows] == [r1["id"], r2["id"]]
    assert all_rows[0]["removed_at"] is not None and all_rows[0]["removal_reason"]
    assert not any(".goutputstream" in r["object_key"] for r in rows_under(m, f"{uniq}/"))


def test_temp_part_renamed_to_final(mount, d, uniq):
    """Browsers: download into x.part / x.crdownload, then rename."""
    m = mount
    for tmp, final in (("dl.pdf.part", "dl.pdf"), ("img.jpg.crdownload", "img.jpg")):
        data = os.urandom(5000)
        write(os.path.join(d, tmp), data)
        os.rename(os.path.join(d, tmp), os.path.join(d, final))
        check_received(m, f"{uniq}/{final}", data)
    assert bucket_keys(m, f"{uniq}/") == [f"{uniq}/dl.pdf", f"{uniq}/img.jpg"]
    assert sorted(r["object_key"] for r in rows_under(m, f"{uniq}/")) == \
        [f"{uniq}/dl.pdf", f"{uniq}/img.jpg"]


# --------------------------------------------------------------------------- changes

def test_overwrite(mount, d, uniq, tmp_path):
    m = mount
    key = f"{uniq}/doc.txt"
    p = os.path.join(d, "doc.txt")
    (tmp_path / "a").write_bytes(b"first content\n")
    (tmp_path / "b").write_bytes(b"second, different\n")
    sh(["cp", str(tmp_path / "a"), p])
    r1 = check_received(m, key, b"first content\n")
    sh(["cp", str(tmp_path / "b"), p])
    r2 = check_received(m, key, b"second, different\n", n_rows=2)
    assert r2["id"] != r1["id"]
    old = [r for r in rows(m, key) if r["id"] == r1["id"]][0]
    assert old["removed_at"] is not None
    assert old["removal_reason"], old
    assert len(rows(m, key)) == 2
    assert read(p) == b"second, different\n"


def test_one_live_row_per_key_after_many_overwrites(mount, d, uniq):
    m = mount
    key = f"{uniq}/often.txt"
    for i in range(5):
        write(os.path.join(d, "often.txt"), f"v{i}\n".encode())
    check_received(m, key, b"v4\n", n_rows=5)
    n = m.sql_value("select count(*) from (select object_key from reception_audit where "
                    "removed_at is null group by source_bucket, object_key having count(*) > 1) x")
    assert n == 0


def test_truncate(mount, d, uniq):
    m = mount
    key = f"{uniq}/t.bin"
    p = os.path.join(d, "t.bin")
    data = os.urandom(10000)
    write(p, data)
    check_received(m, key, data)
    sh(["truncate", "-s", "4000", p])
    check_received(m, key, data[:4000], n_rows=2)
    sh(["truncate", "-s", "6000", p])
    check_received(m, key, data[:4000] + b"\0" * 2000, n_rows=3)
    sh(["truncate", "-s", "0", p])
    check_received(m, key, b"", n_rows=4)
    assert os.path.getsize(p) == 0
    assert len(rows(m, key)) == 4


def test_ftruncate_then_write(mount, d, uniq):
    m = mount
    key = f"{uniq}/ft.txt"
    p = os.path.join(d, "ft.txt")
    write(p, b"0123456789")
    fd = os.open(p, os.O_RDWR)
    try:
        os.ftruncate(fd, 3)
        os.pwrite(fd, b"XY", 5)
    finally:
        os.close(fd)
    check_received(m, key, b"012\0\0XY", n_rows=2)


def test_append(mount, d, uniq):
    m = mount
    key = f"{uniq}/log.txt"
    p = os.path.join(d, "log.txt")
    write(p, b"line one\n")
    sh(f"echo more >> '{p}'")
    check_received(m, key, b"line one\nmore\n", n_rows=2)
    sh(f"echo again >> '{p}'")
    check_received(m, key, b"line one\nmore\nagain\n", n_rows=3)
    assert read(p) == b"line one\nmore\nagain\n"


def test_partial_overwrite_in_place(mount, d, uniq):
    """Open O_RDWR without O_TRUNC and change the middle: the rest of the file is kept."""
    m = mount
    key = f"{uniq}/mid.bin"
    p = os.path.join(d, "mid.bin")
    data = bytearray(os.urandom(200000))
    write(p, bytes(data))
    with open(p, "r+b") as f:
        f.seek(100000)
        f.write(b"PATCH")
    data[100000:100005] = b"PATCH"
    check_received(m, key, bytes(data), n_rows=2)


def test_rm(mount, d, uniq):
    m = mount
    key = f"{uniq}/gone.txt"
    p = os.path.join(d, "gone.txt")
    write(p, b"soon gone")
    r = check_received(m, key, b"soon gone")
    sh(["rm", p])
    assert not os.path.exists(p)
    assert "gone.txt" not in os.listdir(d)
    assert get_object(m, key) is None
    after = rows(m, key)
    assert len(after) == 1 and after[0]["id"] == r["id"]
    assert after[0]["removed_at"] is not None
    assert after[0]["removal_reason"]
    assert after[0]["sha256"] == r["sha256"] and after[0]["size_bytes"] == r["size_bytes"]


def test_rename_file(mount, d, uniq):
    m = mount
    old, new = f"{uniq}/old name.txt", f"{uniq}/new name.txt"
    data = os.urandom(7000)
    write(os.path.join(d, "old name.txt"), data)
    r_old = check_received(m, old, data)
    sh(["mv", os.path.join(d, "old name.txt"), os.path.join(d, "new name.txt")])
    assert os.listdir(d) == ["new name.txt"]
    assert get_object(m, old) is None
    r_new = check_received(m, new, data)
    assert r_new["sha256"] == r_old["sha256"]
    o = rows(m, old)
    assert len(o) == 1 and o[0]["removed_at"] is not None
    assert "new name.txt" in (o[0]["removal_reason"] or ""), o[0]["removal_reason"]
    assert read(os.path.join(d, "new name.txt")) == data


def test_rename_file_into_subdirectory(mount, d, uniq):
    m = mount
    os.mkdir(os.path.join(d, "sub"))
    write(os.path.join(d, "f.txt"), b"moving down")
    os.rename(os.path.join(d, "f.txt"), os.path.join(d, "sub", "f.txt"))
    assert bucket_keys(m, f"{uniq}/") == [f"{uniq}/sub/f.txt"]
    check_received(m, f"{uniq}/sub/f.txt", b"moving down")
    o = rows(m, f"{uniq}/f.txt")
    assert len(o) == 1 and o[0]["removed_at"] is not None, o


def test_rename_onto_existing_file(mount, d, uniq):
    m = mount
    write(os.path.join(d, "a.txt"), b"AAA")
    write(os.path.join(d, "b.txt"), b"BBBB")
    rb = check_received(m, f"{uniq}/b.txt", b"BBBB")
    os.rename(os.path.join(d, "a.txt"), os.path.join(d, "b.txt"))
    assert os.listdir(d) == ["b.txt"]
    assert bucket_keys(m, f"{uniq}/") == [f"{uniq}/b.txt"]
    check_received(m, f"{uniq}/b.txt", b"AAA", n_rows=2)
    assert rows(m, f"{uniq}/b.txt")[0]["id"] == rb["id"]
    o = rows(m, f"{uniq}/a.txt")
    assert len(o) == 1 and o[0]["removed_at"] is not None and o[0]["size_bytes"] == 3, o


def test_rename_directory(mount, d, uniq):
    m = mount
    files = {"x.txt": b"x" * 10, "inner/y.txt": b"y" * 20, "inner/deeper/z.txt": b"z" * 30}
    os.makedirs(os.path.join(d, "dir1", "inner", "deeper"))
    for rel, data in files.items():
        write(os.path.join(d, "dir1", rel), data)
    before = {rel: check_received(m, f"{uniq}/dir1/{rel}", data) for rel, data in files.items()}
    sh(["mv", os.path.join(d, "dir1"), os.path.join(d, "dir2")])
    assert os.listdir(d) == ["dir2"]
    assert sorted(os.listdir(os.path.join(d, "dir2"))) == ["inner", "x.txt"]
    assert bucket_keys(m, f"{uniq}/") == sorted(f"{uniq}/dir2/{rel}" for rel in files)
    for rel, data in files.items():
        r = check_received(m, f"{uniq}/dir2/{rel}", data)
        assert r["sha256"] == before[rel]["sha256"]
        o = rows(m, f"{uniq}/dir1/{rel}")
        assert len(o) == 1 and o[0]["removed_at"] is not None
        assert f"dir2/{rel}" in (o[0]["removal_reason"] or ""), o[0]["removal_reason"]
        assert read(os.path.join(d, "dir2", rel)) == data


def test_rename_empty_directory(mount, d, uniq):
    os.mkdir(os.path.join(d, "e1"))
    os.rename(os.path.join(d, "e1"), os.path.join(d, "e2"))
    assert os.listdir(d) == ["e2"]
    assert os.path.isdir(os.path.join(d, "e2"))


def test_rmdir(mount, d, uniq):
    m = mount
    os.mkdir(os.path.join(d, "full"))
    os.mkdir(os.path.join(d, "empty"))
    write(os.path.join(d, "full", "f.txt"), b"f")
    _expect_errno(lambda: os.rmdir(os.path.join(d, "full")), errno.ENOTEMPTY, errno.EEXIST)
    assert os.path.isdir(os.path.join(d, "full"))
    check_received(m, f"{uniq}/full/f.txt", b"f")
    os.rmdir(os.path.join(d, "empty"))
    assert sorted(os.listdir(d)) == ["full"]
    os.unlink(os.path.join(d, "full", "f.txt"))
    os.rmdir(os.path.join(d, "full"))
    assert os.listdir(d) == []
    # no file and no directory marker is left below the removed directories
    assert [k for k in bucket_keys(m, f"{uniq}/", markers=True) if k != f"{uniq}/"] == []


def test_chmod_chown_touch(mount, d, uniq):
    m = mount
    p = os.path.join(d, "meta.txt")
    write(p, b"metadata")
    sh(["chmod", "600", p])
    sh(["chown", "root:root", p])
    sh(["chown", "1234:1234", p])
    sh(["touch", "-d", "2020-01-02 03:04:05 UTC", p])
    sh(["touch", "-m", "-d", "2019-05-06 07:08:09 UTC", p])
    sh(["chmod", "755", d])
    sh(["touch", "-d", "2021-01-01 00:00:00 UTC", d])
    # the content and the row are untouched
    check_received(m, f"{uniq}/meta.txt", b"metadata")
    assert read(p) == b"metadata"


def test_cp_p_and_rsync_a(mount, d, uniq, tmp_path):
    m = mount
    src = tmp_path / "tree"
    files = {"a.txt": b"alpha\n", "sub/b.txt": b"beta\n" * 100, "sub/deep/c.bin": os.urandom(9000),
             "sub/empty.txt": b""}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
        os.utime(src / rel, (1577836800, 1577836800))
        os.chmod(src / rel, 0o640)
    sh(["cp", "-rp", str(src), os.path.join(d, "cp")])
    sh(["rsync", "-a", str(src) + "/", os.path.join(d, "rs") + "/"], timeout=180)
    for kind in ("cp", "rs"):
        assert bucket_keys(m, f"{uniq}/{kind}/") == sorted(f"{uniq}/{kind}/{r}" for r in files)
        for rel, data in files.items():
            check_received(m, f"{uniq}/{kind}/{rel}", data)
            assert read(os.path.join(d, kind, rel)) == data
    # no live row for any other key (rsync's .name.XXXXXX temp files)
    live = sorted(r["object_key"] for r in rows_under(m, f"{uniq}/") if r["removed_at"] is None)
    assert live == sorted(f"{uniq}/{k}/{r}" for k in ("cp", "rs") for r in files)
    # rsync again: nothing to do, exits 0, nothing new logged
    n = len(rows_under(m, f"{uniq}/"))
    sh(["rsync", "-a", str(src) + "/", os.path.join(d, "rs") + "/"], timeout=180)
    assert len(rows_under(m, f"{uniq}/")) == n


def test_rename_while_open(mount, d, uniq):
    """write, rename the open file, write more, close: the new name holds everything."""
    m = mount
    f = open(os.path.join(d, "draft.txt"), "wb")
    try:
        f.write(b"part one\n")
        f.flush()
        os.rename(os.path.join(d, "draft.txt"), os.path.join(d, "final.txt"))
        f.write(b"part two\n")
    finally:
        f.close()
    assert os.listdir(d) == ["final.txt"]
    assert bucket_keys(m, f"{uniq}/") == [f"{uniq}/final.txt"]
    check_received(m, f"{uniq}/final.txt", b"part one\npart two\n")
    assert rows(m, f"{uniq}/draft.txt") == []  # never committed under its first name


def test_renamed_while_open_visible_after_close(mount, d, uniq):
    """Written, synced, renamed, closed with no more writes: the new name must be found at
    once (past the kernel's 1 s caches, inside the daemon's listing cache), not only after the
    next directory listing."""
    m = mount
    os.listdir(d)  # the daemon now holds a fresh listing of d without final2.txt
    f = open(os.path.join(d, "draft2.txt"), "wb")
    try:
        f.write(b"synced then renamed\n")
        f.flush()
        os.fsync(f.fileno())
        os.rename(os.path.join(d, "draft2.txt"), os.path.join(d, "final2.txt"))
    finally:
        f.close()
    time.sleep(1.2)
    assert os.stat(os.path.join(d, "final2.txt")).st_size == 20
    assert read(os.path.join(d, "final2.txt")) == b"synced then renamed\n"
    check_received(m, f"{uniq}/final2.txt", b"synced then renamed\n")
    o = rows(m, f"{uniq}/draft2.txt")  # fsync'ed under the first name, then renamed
    assert len(o) == 1 and o[0]["removed_at"] is not None, o


def test_temp_renamed_while_open(mount, d, uniq):
    m = mount
    f = open(os.path.join(d, "doc.odt.tmp"), "wb")
    try:
        f.write(b"saved by an office suite")
        f.flush()
        os.rename(os.path.join(d, "doc.odt.tmp"), os.path.join(d, "doc.odt"))
        f.write(b", end")
    finally:
        f.close()
    assert os.listdir(d) == ["doc.odt"]
    check_received(m, f"{uniq}/doc.odt", b"saved by an office suite, end")
    assert rows(m, f"{uniq}/doc.odt.tmp") == []
    assert bucket_keys(m, f"{uniq}/") == [f"{uniq}/doc.odt"]


def test_stored_file_rewritten_and_renamed_while_open(mount, d, uniq):
    """A received file appended to, renamed while still open for writing, written again and
    closed: the stored version moves with the name (rows as for any rename), the writer's close
    logs the final content under the new name, once; no row ever describes the half-written
    content, and a reader meanwhile sees it without committing it."""
    m = mount
    a, b = os.path.join(d, "a.txt"), os.path.join(d, "b.txt")
    write(a, b"v1")
    check_received(m, f"{uniq}/a.txt", b"v1")
    f = open(a, "ab")
    try:
        f.write(b"+half")
        f.flush()
        os.rename(a, b)
        assert read(b) == b"v1+half"  # a reader's open and close commit nothing
        f.write(b"+end")
    finally:
        f.close()
    assert os.listdir(d) == ["b.txt"]
    assert bucket_keys(m, f"{uniq}/") == [f"{uniq}/b.txt"]
    assert history(m, f"{uniq}/a.txt") == expected_history([b"v1"], live_last=False)
    assert history(m, f"{uniq}/b.txt") == expected_history([b"v1", b"v1+half+end"])
    check_received(m, f"{uniq}/b.txt", b"v1+half+end", n_rows=2)


@pytest.mark.parametrize("how", ["reader", "unwritten-writer"])
def test_temp_renamed_with_no_writer_left_is_stored_at_rename(mount, d, uniq, how):
    """x.part written and closed, still open by a reader (or by a writable descriptor that
    writes nothing): no close will commit it, so the rename to x.bin uploads and logs it; the
    descriptor's close adds nothing."""
    m = mount
    part, final = os.path.join(d, "x.part"), os.path.join(d, "x.bin")
    write(part, b"downloaded")
    fd = os.open(part, os.O_RDONLY if how == "reader" else os.O_WRONLY)
    try:
        os.rename(part, final)
        check_received(m, f"{uniq}/x.bin", b"downloaded")  # before any close
        if how == "reader":
            assert os.pread(fd, 100, 0) == b"downloaded"
    finally:
        os.close(fd)
    check_received(m, f"{uniq}/x.bin", b"downloaded")
    assert rows(m, f"{uniq}/x.part") == []
    assert bucket_keys(m, f"{uniq}/") == [f"{uniq}/x.bin"]


def test_unlink_while_open(mount, d, uniq):
    m = mount
    f = open(os.path.join(d, "vanish.txt"), "wb")
    try:
        f.write(b"written, then unlinked before close")
        f.flush()
        os.unlink(os.path.join(d, "vanish.txt"))
        f.write(b" more")
    finally:
        f.close()
    assert os.listdir(d) == []
    assert bucket_keys(m, f"{uniq}/") == []
    # never committed, so never a row (not even a removed one)
    assert rows_under(m, f"{uniq}/") == []


def test_final_renamed_to_temp_name(mount, d, uniq):
    """mv report.txt report.txt.part: the name is now a temp name; the received object does
    not stay listed under its old name and the row is closed."""
    m = mount
    write(os.path.join(d, "report.txt"), b"received")
    check_received(m, f"{uniq}/report.txt", b"received")
    os.rename(os.path.join(d, "report.txt"), os.path.join(d, "report.txt.part"))
    assert os.listdir(d) == ["report.txt.part"]
    assert read(os.path.join(d, "report.txt.part")) == b"received"
    assert get_object(m, f"{uniq}/report.txt") is None
    o = rows(m, f"{uniq}/report.txt")
    assert len(o) == 1 and o[0]["removed_at"] is not None, o
    assert rows(m, f"{uniq}/report.txt.part") == []


def test_rename_directory_holding_temp_files(mount, d, uniq):
    m = mount
    os.mkdir(os.path.join(d, "w1"))
    write(os.path.join(d, "w1", "kept.txt"), b"kept")
    write(os.path.join(d, "w1", ".kept.txt.swp"), b"swap")
    os.rename(os.path.join(d, "w1"), os.path.join(d, "w2"))
    assert sorted(os.listdir(os.path.join(d, "w2"))) == [".kept.txt.swp", "kept.txt"]
    assert read(os.path.join(d, "w2", ".kept.txt.swp")) == b"swap"
    assert bucket_keys(m, f"{uniq}/") == [f"{uniq}/w2/kept.txt"]
    check_received(m, f"{uniq}/w2/kept.txt", b"kept")


def test_changes_to_a_file_known_only_from_the_bucket(mount, d, uniq):
    """After a remount the spool is cold: append, truncate, partial overwrite and rename must
    start from the bucket's content."""
    m = mount
    data = os.urandom(100000)
    for n in ("app.bin", "trunc.bin", "patch.bin", "ren.bin"):
        write(os.path.join(d, n), data)
    m.restart()
    d = os.path.join(m.inbox, uniq)
    with open(os.path.join(d, "app.bin"), "ab") as f:
        f.write(b"APPENDED")
    check_received(m, f"{uniq}/app.bin", data + b"APPENDED", n_rows=2)
    os.truncate(os.path.join(d, "trunc.bin"), 5000)
    check_received(m, f"{uniq}/trunc.bin", data[:5000], n_rows=2)
    with open(os.path.join(d, "patch.bin"), "r+b") as f:
        f.seek(50000)
        f.write(b"PATCH")
    check_received(m, f"{uniq}/patch.bin", data[:50000] + b"PATCH" + data[50005:], n_rows=2)
    os.rename(os.path.join(d, "ren.bin"), os.path.join(d, "renamed.bin"))
    check_received(m, f"{uniq}/renamed.bin", data)
    assert get_object(m, f"{uniq}/ren.bin") is None
    o = rows(m, f"{uniq}/ren.bin")
    assert len(o) == 1 and o[0]["removed_at"] is not None, o


@pytest.mark.volume
def test_many_foreign_objects_listed(mount, uniq):
    """More than one ListObjects page (1000 keys)."""
    import concurrent.futures as cf
    m = mount
    n = 1100
    names = [f"f{i:05d}.txt" for i in range(n)]

    def put(name):
        m.s3.put_object(Bucket=m.reception_bucket, Key=f"{uniq}/{name}", Body=name.encode())
    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(put, names))
    ddir = os.path.join(m.inbox, uniq)
    m.wait_until(lambda: sorted(os.listdir(ddir)) == names, timeout=60, interval=1,
                 what=f"{n} entries in ls")
    m.wait_until(lambda: len(rows_under(m, f"{uniq}/")) >= n, timeout=120, interval=1,
                 what=f"{n} reception rows")
    time.sleep(1)
    r = rows_under(m, f"{uniq}/")
    assert len(r) == n
    assert len({x["object_key"] for x in r}) == n
    assert read(os.path.join(ddir, names[-1])) == names[-1].encode()


# --------------------------------------------------------------------------- reads

def test_read_back(mount, d, uniq, tmp_path):
    src = tmp_path / "r.bin"
    data = os.urandom(3 * 1024 * 1024 + 123)
    src.write_bytes(data)
    p = os.path.join(d, "r.bin")
    sh(["cp", str(src), p])
    out = subprocess.run(["cat", p], stdout=subprocess.PIPE, timeout=60, check=True).stdout
    assert out == data
    sh(["cmp", str(src), p])
    for skip, count in ((0, 1), (100, 10), (767, 2), (3 * 256, 1)):
        out = subprocess.run(["dd", f"if={p}", "bs=4096", f"skip={skip}", f"count={count}",
                              "status=none"], stdout=subprocess.PIPE, timeout=60, check=True).stdout
        assert out == data[skip * 4096:(skip + count) * 4096], (skip, count)
    with open(p, "rb") as f:
        f.seek(len(data) - 10)
        assert f.read(100) == data[-10:]
        assert f.read(100) == b""


def test_copy_within_inbox(mount, d, uniq):
    m = mount
    data = os.urandom(2 * 1024 * 1024 + 5)
    write(os.path.join(d, "orig.bin"), data)
    sh(["cp", os.path.join(d, "orig.bin"), os.path.join(d, "copy.bin")])
    check_received(m, f"{uniq}/orig.bin", data)
    check_received(m, f"{uniq}/copy.bin", data)


def test_read_after_remount(mount, d, uniq):
    """Once the spool is gone, reading comes from the bucket."""
    m = mount
    data = os.urandom(300000)
    write(os.path.join(d, "persist.bin"), data)
    m.restart()
    p = os.path.join(m.inbox, uniq, "persist.bin")
    assert os.path.getsize(p) == len(data)
    assert read(p) == data
    with open(p, "rb") as f:
        f.seek(123456)
        assert f.read(1000) == data[123456:124456]
    os.listdir(os.path.join(m.inbox, uniq))
    time.sleep(1.5)   # a listing logs in the background: give a wrong re-log time to show
    assert len(rows(m, f"{uniq}/persist.bin")) == 1


# --------------------------------------------------------------------------- foreign uploads

def _one_row(m, key):
    def f():
        r = rows(m, key)
        return r if len(r) == 1 else None
    return f


def test_foreign_upload_logged_once(mount, uniq):
    m = mount
    key = f"{uniq}/from-console.bin"
    data = os.urandom(12345)
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=data)
    ddir = os.path.join(m.inbox, uniq)
    m.wait_until(lambda: "from-console.bin" in os.listdir(ddir), timeout=30,
                 what="foreign upload in ls")
    assert os.listdir(m.inbox).count(uniq) == 1
    r = m.wait_until(_one_row(m, key), timeout=30, what="reception row of the foreign upload")[0]
    assert r["sha256"] == m.sha256_bytes(data)
    assert r["size_bytes"] == len(data)
    assert r["removed_at"] is None
    assert r["file_name"] == "from-console.bin"
    assert os.stat(os.path.join(ddir, "from-console.bin")).st_size == len(data)
    assert read(os.path.join(ddir, "from-console.bin")) == data
    # listing again, stat, reading, remounting: never logged again
    for _ in range(3):
        os.listdir(ddir)
        os.stat(os.path.join(ddir, "from-console.bin"))
    m.restart()
    os.listdir(os.path.join(m.inbox, uniq))
    os.stat(os.path.join(m.inbox, uniq, "from-console.bin"))
    time.sleep(2)
    assert len(rows(m, key)) == 1


def test_foreign_upload_nested_keys(mount, uniq):
    """Keys several levels deep with no directory markers (what `mc cp -r` leaves)."""
    m = mount
    if m.stack.backend == "s3rver":
        # s3rver 3.7.1 ListObjects with a delimiter drops a common prefix whose objects all
        # lie two or more levels below it (lib/stores/filesystem.js prunes those dirs)
        pytest.skip("s3rver does not list common prefixes of deeply nested keys")
    keys = {f"{uniq}/a/b/c/deep.bin": os.urandom(100), f"{uniq}/a/top.bin": os.urandom(50)}
    for k, v in keys.items():
        m.s3.put_object(Bucket=m.reception_bucket, Key=k, Body=v)
    deep = os.path.join(m.inbox, uniq, "a", "b", "c")
    m.wait_until(lambda: "deep.bin" in os.listdir(deep), timeout=30, what="deep foreign key")
    assert sorted(os.listdir(os.path.join(m.inbox, uniq, "a"))) == ["b", "top.bin"]
    for k, v in keys.items():
        r = m.wait_until(_one_row(m, k), timeout=30, what=f"row of {k}")[0]
        assert r["sha256"] == m.sha256_bytes(v)
        assert read(os.path.join(m.inbox, k)) == v


@pytest.mark.custodyfs_config({"fs": {"scan_interval": "2"}})
def test_foreign_upload_logged_by_periodic_scan(fresh_mount):
    """Nobody lists or looks it up: the periodic scan logs it."""
    m = fresh_mount
    data = b"arrived while nobody looked"
    m.s3.put_object(Bucket=m.reception_bucket, Key="scan/unseen.txt", Body=data)
    r = m.wait_until(_one_row(m, "scan/unseen.txt"), timeout=30, interval=0.5,
                     what="row written by the periodic scan")[0]
    assert r["sha256"] == m.sha256_bytes(data) and r["size_bytes"] == len(data)
    time.sleep(5)   # two more scans: still one row
    assert len(rows(m, "scan/unseen.txt")) == 1


def test_foreign_reupload_logs_new_row(mount, uniq):
    m = mount
    key = f"{uniq}/re.bin"
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=b"first upload")
    ddir = os.path.join(m.inbox, uniq)
    m.wait_until(lambda: "re.bin" in os.listdir(ddir), timeout=30, what="ls")
    r1 = m.wait_until(_one_row(m, key), timeout=30, what="first row")[0]
    assert r1["sha256"] == m.sha256_bytes(b"first upload")
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=b"second, different upload")

    def two_rows():
        os.listdir(ddir)
        try:
            os.stat(os.path.join(ddir, "re.bin"))
        except OSError:
            pass
        r = rows(m, key)
        return r if len(r) == 2 else None
    both = m.wait_until(two_rows, timeout=60, interval=0.5, what="second row")
    assert both[0]["id"] == r1["id"] and both[0]["removed_at"] is not None
    assert both[1]["removed_at"] is None
    assert both[1]["sha256"] == m.sha256_bytes(b"second, different upload")
    assert both[1]["size_bytes"] == len(b"second, different upload")
    assert len(rows(m, key)) == 2
    m.wait_until(lambda: read(os.path.join(ddir, "re.bin")) == b"second, different upload",
                 timeout=30, what="new content through the mount")


def test_foreign_delete_disappears(mount, d, uniq):
    m = mount
    write(os.path.join(d, "x.txt"), b"x")
    m.s3.delete_object(Bucket=m.reception_bucket, Key=f"{uniq}/x.txt")
    m.wait_until(lambda: "x.txt" not in os.listdir(d), timeout=60, interval=0.5,
                 what="externally deleted object gone from ls")


def test_foreign_object_blocks_exclusive_create(mount, d, uniq):
    m = mount
    os.listdir(d)
    m.s3.put_object(Bucket=m.reception_bucket, Key=f"{uniq}/taken.txt", Body=b"foreign")
    time.sleep(3.5)   # past any listing cache
    _expect_errno(lambda: os.open(os.path.join(d, "taken.txt"),
                                  os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), errno.EEXIST)
    assert get_object(m, f"{uniq}/taken.txt") == b"foreign"


def test_foreign_odd_keys_do_not_break_listing(mount, uniq):
    """Keys no file name can hold (empty components, a file and a directory of one name,
    control characters) must not break the directory or the daemon."""
    m = mount
    good = f"{uniq}/good.txt"
    odd = [f"{uniq}//double-slash.txt", f"{uniq}/clash", f"{uniq}/clash/inner.txt",
           f"{uniq}/ctl\x01name.txt", f"{uniq}/new\nline.txt"]
    m.s3.put_object(Bucket=m.reception_bucket, Key=good, Body=b"good")
    if m.stack.backend == "s3rver":
        # s3rver ignores encoding-type=url and puts the raw control character into its XML
        # listing, which no XML 1.0 parser accepts (the whole directory then fails, EPROTO)
        odd = [k for k in odd if not any(ord(c) < 32 for c in k)]
    stored = []
    for k in odd:
        try:   # s3rver (files on disk) cannot hold some of them
            m.s3.put_object(Bucket=m.reception_bucket, Key=k, Body=b"odd")
            stored.append(k)
        except ClientError:
            pass
    assert stored, "the server took none of the odd keys"
    ddir = os.path.join(m.inbox, uniq)
    m.wait_until(lambda: "good.txt" in os.listdir(ddir), timeout=30, what="good.txt listed")
    names = os.listdir(ddir)
    assert len(names) == len(set(names)), f"duplicate names: {names}"
    assert "" not in names and "." not in names and ".." not in names
    assert read(os.path.join(ddir, "good.txt")) == b"good"
    m.wait_until(_one_row(m, good), timeout=30, what="row of good.txt")
    time.sleep(1)
    assert m.alive()
    assert sorted(os.listdir(m.inbox)).count(uniq) == 1


def test_two_mounts_share_one_store(mount_factory):
    """What one mount uploads, the other shows, and nobody logs it twice."""
    a = mount_factory(name="host-a")
    b = mount_factory(reset=False, name="host-b")
    os.mkdir(os.path.join(a.inbox, "shared"))
    write(os.path.join(a.inbox, "shared", "from-a.txt"), b"written on host a")
    bdir = os.path.join(b.inbox, "shared")
    b.wait_until(lambda: os.path.isdir(bdir) and "from-a.txt" in os.listdir(bdir), timeout=30,
                 what="a's file in b's listing")
    assert read(os.path.join(bdir, "from-a.txt")) == b"written on host a"
    write(os.path.join(bdir, "from-b.txt"), b"written on host b")
    os.listdir(os.path.join(a.inbox, "shared"))
    time.sleep(2)
    os.listdir(bdir)
    time.sleep(2)
    assert len(rows(a, "shared/from-a.txt")) == 1
    assert len(rows(a, "shared/from-b.txt")) == 1
    # b overwrites a's file: one live row, the old one closed
    write(os.path.join(bdir, "from-a.txt"), b"changed on host b")
    check_received(b, "shared/from-a.txt", b"changed on host b", n_rows=2)
    a.wait_until(lambda: read(os.path.join(a.inbox, "shared", "from-a.txt")) ==
                 b"changed on host b", timeout=30, what="a sees b's change")
    time.sleep(2)
    check_received(a, "shared/from-a.txt", b"changed on host b", n_rows=2)


# --------------------------------------------------------------------------- root and audit/

def test_root_refuses_new_entries(mount, uniq):
    m = mount
    assert sorted(os.listdir(m.mnt)) == ["audit", "inbox", "projects"]
    _expect_errno(lambda: os.open(m.path(uniq), os.O_WRONLY | os.O_CREAT, 0o644), errno.EPERM,
                  errno.EACCES)
    _expect_errno(lambda: os.mkdir(m.path(uniq)), errno.EPERM, errno.EACCES)
    _expect_errno(lambda: os.rename(m.inbox, m.path(uniq)), errno.EPERM, errno.EACCES,
                  errno.EBUSY)
    _expect_errno(lambda: os.rmdir(m.inbox), errno.EPERM, errno.EACCES, errno.EBUSY,
                  errno.ENOTEMPTY)
    p = os.path.join(m.inbox, f"{uniq}.txt")
    write(p, b"x")
    _expect_errno(lambda: os.rename(p, m.path(f"{uniq}.txt")), errno.EPERM, errno.EACCES,
                  errno.EXDEV)
    assert sorted(os.listdir(m.mnt)) == ["audit", "inbox", "projects"]
    os.unlink(p)


def test_audit_refuses_new_entries(mount, uniq):
    m = mount
    a = m.audit
    _expect_errno(lambda: os.open(os.path.join(a, f"{uniq}.csv"), os.O_WRONLY | os.O_CREAT, 0o644),
                  errno.EROFS)
    _expect_errno(lambda: os.mkdir(os.path.join(a, uniq)), errno.EROFS)
    p = os.path.join(m.inbox, f"{uniq}.txt")
    write(p, b"x")
    _expect_errno(lambda: os.rename(p, os.path.join(a, f"{uniq}.txt")), errno.EROFS, errno.EXDEV)
    os.unlink(p)

