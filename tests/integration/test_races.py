"""Races on an open file (issue 5 behaviour 12): the rename path reads an open file's key
(ofile.rel, protected by cfs.lock) while other threads write, fsync, stat and read the same
file, and the daemon's own threads (kernel cache invalidation, listing cache, claims renewal)
work on the same names.

The test drives those paths at once, bounded in operations and in time, on two files in two
directories (a rename of one walks the list of open files while the other's rename changes
its key, which libfuse's path locks do not order): for each file one thread writes it through
one descriptor and fsyncs it every few writes, another renames it back and forth (a.bin <->
b.bin) and, every few turns, renames the directory holding it (sub <-> sub2, the directory
path that locks every open file under it); one more thread stats, lists and reads them by
their current names. What it checks itself is what must hold whatever the interleaving: no
operation fails (a stat may miss a name that was just renamed), each file ends with exactly
what was written, and the store and reception_audit show it under its final name only.

Its main use is under ThreadSanitizer (tests/run.sh with CUSTODYFS_TSAN=1, or CUSTODYFS_BIN=
build-tsan/fs/custodyfs): the harness fails a test whose daemon printed "WARNING:
ThreadSanitizer" (conftest.py, SANITIZER_RE), so an unlocked read of the key on any of these
paths is a failure here, not a rare corrupted name. Checked that it can fail: with
ofile_find's scan of the keys taken out of cfs->lock (a getattr's or a rename's read of the
key), TSan reports ofile_find (fs/ofile.c) against ofile_rename_uncommitted's write of the key
in a run of this test."""
import errno
import os
import threading
import time

from checks import get_object, live_rows, read

LANES = 2              # files, each in its own directory with its own writer and renamer
WRITES = 300           # writes by each writer thread
FSYNC_EVERY = 8        # ... one fsync every this many writes
CHUNK = 4096
RENAMES = 60           # renames by each renamer thread
DIR_EVERY = 5          # ... every this many, the directory instead of the file
DEADLINE_S = 150       # every thread stops here whatever it has done (TSan is slow)


class Lane:
    """One open file: lane{k}/sub|sub2/a.bin|b.bin, its writer and its renamer."""

    def __init__(self, top, k, deadline, errors):
        self.top = os.path.join(top, f"lane{k}")
        os.mkdir(self.top)
        os.mkdir(os.path.join(self.top, "sub"))
        self.state = {"dir": "sub", "name": "a.bin"}   # its current name, under `lock`
        self.lock = threading.Lock()
        self.model = bytearray()
        self.errors = errors
        self.deadline = deadline
        self.done = threading.Event()   # the writer ended
        self.counts = {"writes": 0, "fsyncs": 0, "renames": 0, "dir_renames": 0}
        self.fd = os.open(self.path(), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)

    def path(self):
        with self.lock:
            return os.path.join(self.top, self.state["dir"], self.state["name"])

    def writer(self):
        try:
            for i in range(WRITES):
                if time.monotonic() > self.deadline:
                    break
                block = bytes([i % 251]) * CHUNK
                # mostly appends, now and then an overwrite inside the file
                off = len(self.model) if i % 5 else (i * 1013) % max(1, len(self.model))
                os.pwrite(self.fd, block, off)
                self.model[off:off + CHUNK] = block
                self.counts["writes"] += 1
                if i % FSYNC_EVERY == FSYNC_EVERY - 1:
                    os.fsync(self.fd)
                    self.counts["fsyncs"] += 1
        except OSError as e:
            self.errors.append(f"writer of {self.top}: {e!r}")
        finally:
            self.done.set()

    def renamer(self):
        st = self.state
        try:
            for i in range(RENAMES):
                if self.done.is_set() or time.monotonic() > self.deadline:
                    break
                # only this thread changes state: the rename runs unlocked (a looker may
                # then look at the old name: ENOENT), the new name is published after it
                if i % DIR_EVERY == DIR_EVERY - 1:
                    nd = "sub2" if st["dir"] == "sub" else "sub"
                    os.rename(os.path.join(self.top, st["dir"]), os.path.join(self.top, nd))
                    with self.lock:
                        st["dir"] = nd
                    self.counts["dir_renames"] += 1
                else:
                    nn = "b.bin" if st["name"] == "a.bin" else "a.bin"
                    os.rename(os.path.join(self.top, st["dir"], st["name"]),
                              os.path.join(self.top, st["dir"], nn))
                    with self.lock:
                        st["name"] = nn
                    self.counts["renames"] += 1
                time.sleep(0.01)  # let the others in between
        except OSError as e:
            self.errors.append(f"renamer of {self.top}: {e!r}")


def test_rename_while_written_fsynced_and_read(mount, uniq):
    """LANES files, each written and fsynced through one descriptor by its writer while its
    renamer renames it and its directory; one looker stats, lists and reads them all by their
    current names. Every operation succeeds (a looker's ENOENT on a name just renamed
    aside); each file ends with what was written, stored and logged under its last name
    only."""
    m = mount
    top = os.path.join(m.inbox, uniq)
    os.mkdir(top)
    errors = []
    deadline = time.monotonic() + DEADLINE_S
    lanes = [Lane(top, k, deadline, errors) for k in range(LANES)]
    looked = {"stats": 0, "reads": 0, "missed": 0}

    def looker():
        # the name it looks at may be renamed meanwhile: ENOENT then is no error
        i = 0
        while not all(ln.done.is_set() for ln in lanes) and time.monotonic() < deadline:
            p = lanes[i % LANES].path()
            i += 1
            try:
                st = os.stat(p)
                looked["stats"] += 1
                os.listdir(os.path.dirname(p))
                with open(p, "rb", buffering=0) as f:
                    f.read(CHUNK)
                    f.seek(max(0, st.st_size - CHUNK))
                    f.read(CHUNK)
                looked["reads"] += 1
            except OSError as e:
                if e.errno != errno.ENOENT:
                    errors.append(f"looker on {p}: {e!r}")
                    return
                looked["missed"] += 1

    threads = [threading.Thread(target=looker, name="looker")]
    for k, ln in enumerate(lanes):
        threads += [threading.Thread(target=ln.writer, name=f"writer{k}"),
                    threading.Thread(target=ln.renamer, name=f"renamer{k}")]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE_S + 60)
        assert not [t.name for t in threads if t.is_alive()], "a thread did not end"
    finally:
        for ln in lanes:
            ln.done.set()
            os.close(ln.fd)
    print(looked, [ln.counts for ln in lanes])
    assert errors == []
    for ln in lanes:
        c = ln.counts
        assert c["renames"] > 0 and c["dir_renames"] > 0 and c["fsyncs"] > 0, c
        final = ln.path()
        data = bytes(ln.model)
        assert read(final) == data
        rel = os.path.relpath(final, m.inbox)
        assert get_object(m, rel) == data
        live = live_rows(m, rel)
        assert len(live) == 1 and live[0]["sha256"] == m.sha256_bytes(data), live
        for dn in ("sub", "sub2"):
            for fn in ("a.bin", "b.bin"):
                other = os.path.relpath(os.path.join(ln.top, dn, fn), m.inbox)
                if other != rel:
                    assert live_rows(m, other) == [], other
                    assert get_object(m, other) is None, other
    assert m.alive()
