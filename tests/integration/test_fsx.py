"""A model-based random exerciser in the spirit of fsx (issue 5 point 13c).

Fixed seeds; tens of thousands of random operations on one file in inbox/ through one
descriptor: pread and pwrite at random offsets and lengths (past EOF too: short reads,
holes), ftruncate shrinking and growing, appends. An in-memory bytearray is the model: every
read is compared with it, and fstat's size after every operation. After close the reception
object (boto3) equals the model byte for byte, and the rows of the key (all of them, removed
ones included) are exactly one per close that wrote, each with the size and SHA-256 of the
model at that close, only the last one live.

Bounded: the operation count and the file size are fixed (MAX_LEN), so a run takes seconds."""
import os
import random

import pytest
from checks import expected_history, get_object, history, read, rows

MAX_LEN = 3 << 20          # the file never grows past this
MAX_IO = 64 << 10          # longest single read or write
OPS = 20000


class Fsx:
    def __init__(self, path, seed, max_len=MAX_LEN):
        self.path = path
        self.max_len = max_len
        self.rng = random.Random(seed)
        self.model = bytearray()
        self.log = []          # the last operations, for the failure message
        self.fd = None
        self.dirty = False     # this handle wrote or truncated

    def open(self, flags):
        self.fd = os.open(self.path, flags, 0o644)
        self.dirty = bool(flags & os.O_TRUNC)

    def close(self):
        os.close(self.fd)
        self.fd = None

    def _note(self, what):
        self.log.append(what)
        del self.log[:-30]

    def _fail(self, msg):
        raise AssertionError(f"{msg}\nlast operations (oldest first):\n  " + "\n  ".join(self.log))

    def _check_size(self):
        size = os.fstat(self.fd).st_size
        if size != len(self.model):
            self._fail(f"fstat size {size}, model {len(self.model)}")

    def _data(self, n):
        return self.rng.randbytes(n)

    def read(self):
        r, n = self.rng, len(self.model)
        off = r.randrange(0, n + MAX_IO) if r.random() < 0.1 else r.randrange(0, max(n, 1))
        ln = r.randrange(1, MAX_IO)
        self._note(f"pread off={off} len={ln} (size {n})")
        got = os.pread(self.fd, ln, off)
        want = bytes(self.model[off:off + ln])
        if got != want:
            first = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                         min(len(got), len(want)))
            self._fail(f"pread off={off} len={ln}: got {len(got)} bytes, model {len(want)}; "
                       f"first difference at file offset {off + first}")

    def write(self):
        r, n = self.rng, len(self.model)
        ln = r.randrange(1, MAX_IO)
        hole = r.random() < 0.1
        top = min(self.max_len - ln, n + (MAX_IO if hole else 0))
        off = r.randrange(0, max(top, 0) + 1)
        data = self._data(ln)
        self._note(f"pwrite off={off} len={ln} (size {n})")
        assert os.pwrite(self.fd, data, off) == ln
        if off > n:
            self.model += bytes(off - n)
        self.model[off:off + ln] = data
        self.dirty = True

    def append(self):
        n = len(self.model)
        ln = self.rng.randrange(1, MAX_IO)
        if n + ln > self.max_len:
            return self.truncate()
        data = self._data(ln)
        self._note(f"append len={ln} at {n}")
        assert os.pwrite(self.fd, data, n) == ln
        self.model += data
        self.dirty = True

    def truncate(self):
        r, n = self.rng, len(self.model)
        size = r.randrange(0, n + 1) if r.random() < 0.5 else r.randrange(n, min(n + 4 * MAX_IO, self.max_len) + 1)
        self._note(f"ftruncate {size} (size {n})")
        os.ftruncate(self.fd, size)
        if size < n:
            del self.model[size:]
        else:
            self.model += bytes(size - n)
        self.dirty = True

    def step(self):
        x = self.rng.random()
        if x < 0.40:
            self.read()
        elif x < 0.72:
            self.write()
        elif x < 0.87:
            self.append()
        else:
            self.truncate()
        self._check_size()


def _check_store(m, key, model, commits):
    got = get_object(m, key)
    assert got is not None, f"{key!r} is not in the bucket"
    assert len(got) == len(model) and got == bytes(model), \
        f"bucket holds {len(got)} bytes, model {len(model)}; equal: {got == bytes(model)}"
    assert history(m, key) == expected_history(commits), f"rows of {key!r}: {rows(m, key)}"


@pytest.mark.parametrize("seed", [20261130, 7])
def test_fsx_one_descriptor(mount, uniq, seed):
    """20,000 random operations through one descriptor, then one close: one row."""
    m = mount
    os.mkdir(os.path.join(m.inbox, uniq))
    key = f"{uniq}/fsx.bin"
    f = Fsx(os.path.join(m.inbox, uniq, "fsx.bin"), seed)
    f.open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        for _ in range(OPS):
            f.step()
    finally:
        f.close()
    assert m.alive()
    assert read(f.path) == bytes(f.model)
    _check_store(m, key, f.model, [bytes(f.model)])


@pytest.mark.parametrize("every", [1000, 97])
def test_fsx_reopen(mount, uniq, every):
    """The same with a close and a reopen (O_RDWR, no O_TRUNC) every `every` operations:
    each close of a handle that wrote is one row with the model's content at that moment,
    earlier rows removed; a handle that only read commits nothing."""
    m = mount
    os.mkdir(os.path.join(m.inbox, uniq))
    key = f"{uniq}/fsx.bin"
    f = Fsx(os.path.join(m.inbox, uniq, "fsx.bin"), 1000003 + every)
    commits = []
    ops = OPS // 2 if every < 1000 else OPS
    f.open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
    f.dirty = True  # created: its first close is a reception even if it only read
    try:
        for i in range(1, ops + 1):
            # every third handle only reads, so "a reader's close uploads nothing" is exercised
            if ((i - 1) // every) % 3 == 2:
                f.read()
            else:
                f.step()
            if i % every == 0:
                f.close()
                if f.dirty:
                    commits.append(bytes(f.model))
                if (i // every) % 3 == 2:
                    f.open(os.O_RDONLY)
                else:
                    f.open(os.O_RDWR)
                if i % (every * 10) == 0:
                    _check_store(m, key, f.model, commits)
    finally:
        f.close()
    if f.dirty:
        commits.append(bytes(f.model))
    assert m.alive()
    assert read(f.path) == bytes(f.model)
    _check_store(m, key, f.model, commits)
    assert len(rows(m, key)) == len(commits)


@pytest.mark.custodyfs_config({"fs": {"part_size": str(5 << 20)}})
def test_fsx_after_a_streamed_prefix(fresh_mount):
    """A 12 MiB sequential write (long enough for the upload to stream parts), then random
    operations that rewrite, cut and extend what was already streamed: the object is the
    final content, not the streamed parts."""
    m = fresh_mount
    os.mkdir(os.path.join(m.inbox, "fsxs"))
    key = "fsxs/big.bin"
    f = Fsx(os.path.join(m.inbox, "fsxs", "big.bin"), 424242, max_len=16 << 20)
    f.open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        chunk = f.rng.randbytes(1 << 20)
        for i in range(12):
            os.write(f.fd, chunk)
            f.model += chunk
        f._check_size()
        for _ in range(5000):
            f.step()
    finally:
        f.close()
    assert m.alive()
    assert read(f.path) == bytes(f.model)
    _check_store(m, key, f.model, [bytes(f.model)])


def test_fsx_with_a_concurrent_reader(mount, uniq):
    """One writer descriptor through all operations, and every 500 operations another
    descriptor opened read-only, read (it sees the model: one file, one content), closed.
    Only the writer's close is a reception: exactly one row, with the final content."""
    m = mount
    os.mkdir(os.path.join(m.inbox, uniq))
    key = f"{uniq}/fsx.bin"
    f = Fsx(os.path.join(m.inbox, uniq, "fsx.bin"), 99991)
    f.open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        for i in range(1, OPS // 2 + 1):
            f.step()
            if i % 500 == 0:
                rfd = os.open(f.path, os.O_RDONLY)
                try:
                    assert os.fstat(rfd).st_size == len(f.model)
                    off = f.rng.randrange(0, len(f.model) + 1)
                    assert os.pread(rfd, MAX_IO, off) == bytes(f.model[off:off + MAX_IO])
                finally:
                    os.close(rfd)
                assert rows(m, key) == [], f"a reader's close logged a reception: {rows(m, key)}"
    finally:
        f.close()
    assert m.alive()
    _check_store(m, key, f.model, [bytes(f.model)])
