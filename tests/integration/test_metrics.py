"""Metrics for the monitoring people already run (issue 8 items 5 and 2; doc/custodyfs.1).

A mount with [fs] metrics_file and metrics_interval = 1 receives files (cp) and promotes them;
the file node_exporter's textfile collector would read is parsed with the Prometheus project's
own parser (Debian's python3-prometheus-client) and its values are checked against what was
done, counted independently (the rows in reception_audit and storage_audit, psycopg2). The
STATUS= line systemd shows is read from a fake $NOTIFY_SOCKET."""
import os
import socket
import stat
import subprocess
import time

import pytest

import checks
from checks import project, promote
from conftest import HarnessError, wait_until

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # .ci/run installs python3-prometheus-client
    text_string_to_metric_families = None

pytestmark = pytest.mark.skipif(text_string_to_metric_families is None,
                                reason="python3-prometheus-client is not installed")

PREFIX = "custodyfs_"


def parse(path):
    """{family name: Metric} of the file, every family checked for HELP, TYPE and its suffixes."""
    with open(path) as f:
        text = f.read()
    fams = {}
    for fam in text_string_to_metric_families(text):
        assert fam.name.startswith(PREFIX), fam.name
        assert fam.documentation, f"{fam.name}: no HELP"
        assert fam.type in ("counter", "histogram", "summary"), (fam.name, fam.type)
        assert fam.name not in fams, f"{fam.name} twice"
        fams[fam.name] = fam
        if fam.type == "counter":
            assert {s.name for s in fam.samples} == {fam.name + "_total"}, fam.samples
        elif fam.type == "summary":  # no quantiles: a sum and a count per label set
            assert fam.name.endswith("_seconds"), fam.name
            names = {s.name for s in fam.samples}
            assert names == {fam.name + "_sum", fam.name + "_count"}, names
        else:
            assert fam.name.endswith("_seconds"), fam.name
            names = {s.name for s in fam.samples}
            assert names == {fam.name + "_bucket", fam.name + "_sum", fam.name + "_count"}, names
    # every sample line in the text has a # TYPE line before it (the parser would guess one)
    typed = {ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE ")}
    for ln in text.splitlines():
        if ln and not ln.startswith("#"):
            name = ln.split("{")[0].split(" ")[0]
            assert any(name == t or name.startswith(t + "_") for t in typed), ln
    return fams, text


def value(fams, family, sample=None, **labels):
    """The one sample of family (sample: its full name) whose labels include `labels`."""
    fam = fams[family]
    got = [s.value for s in fam.samples
           if (sample is None or s.name == sample)
           and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(got) == 1, (family, sample, labels, fam.samples)
    return got[0]


def hist(fams, family, **labels):
    """(count, sum, [(le, cumulative)]) of one histogram series, checked for consistency."""
    fam = fams[family]
    series = [s for s in fam.samples if all(s.labels.get(k) == v for k, v in labels.items())]
    buckets = sorted(((float(s.labels["le"]), s.value) for s in series
                      if s.name.endswith("_bucket")), key=lambda b: b[0])
    count = [s.value for s in series if s.name.endswith("_count")]
    total = [s.value for s in series if s.name.endswith("_sum")]
    assert len(count) == 1 and len(total) == 1, series
    assert buckets and buckets[-1][0] == float("inf"), buckets
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), buckets  # cumulative
    assert buckets[-1][1] == count[0], (buckets, count)
    assert total[0] >= 0
    return count[0], total[0], buckets


def summary(fams, family, **labels):
    """(count, sum) of one summary series."""
    fam = fams[family]
    series = [s for s in fam.samples if all(s.labels.get(k) == v for k, v in labels.items())]
    count = [s.value for s in series if s.name.endswith("_count")]
    total = [s.value for s in series if s.name.endswith("_sum")]
    assert len(count) == 1 and len(total) == 1, series
    assert count[0] >= 0 and total[0] >= 0
    return count[0], total[0]


def s3_ops(fams):
    return {s.labels["op"] for s in fams["custodyfs_s3_request_duration_seconds"].samples}


def recv_all(sock, timeout):
    """Every datagram that arrives within timeout seconds."""
    return [m for _, m in checks.recv_timed(sock, timeout)]


def no_secrets(m, text):
    st = m.stack
    for secret in (st.secret_key, st.access_key):
        assert secret and secret not in text
    assert m.reception_bucket not in text and m.storage_bucket not in text


def test_metrics_file_matches_what_was_done(mount_factory, uniq, tmp_path):
    tdir = tmp_path / "textfile"
    tdir.mkdir()
    path = str(tdir / "custodyfs.prom")
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    try:
        m = mount_factory({"fs": {"metrics_file": path, "metrics_interval": "1"}},
                          env={"NOTIFY_SOCKET": sock_path})
        wait_until(lambda: os.path.exists(path), timeout=30, what="the metrics file")
        fams, _ = parse(path)
        assert value(fams, "custodyfs_receptions") == 0
        assert hist(fams, "custodyfs_upload_duration_seconds")[0] == 0

        # what is done: 3 files copied in with cp (two with the same bytes), two promoted
        src = tmp_path / "src"
        src.mkdir()
        data = {f"{uniq}-a.bin": os.urandom(10), f"{uniq}-b.bin": os.urandom(70000)}
        data[f"{uniq}-c.bin"] = data[f"{uniq}-a.bin"]
        for name, b in data.items():
            (src / name).write_bytes(b)
            subprocess.run(["cp", str(src / name), m.inbox + "/"], check=True, timeout=60)
        prefix = project(m, uniq)
        promote(m, f"{uniq}-a.bin", prefix)
        promote(m, f"{uniq}-c.bin", prefix)

        # counted independently: every row of those keys, removed ones too
        rrows = [r for name in data for r in checks.rows(m, name)]
        srows = m.sql_dicts("select * from storage_audit where dest_key like %s order by id",
                            (prefix + "/%",))
        assert len(rrows) == 3
        assert sorted(r["outcome"] for r in srows) == ["copied", "duplicate_content"]

        # a FUSE request is timed after its handler returns (fs/ops.c CFS_TIMED), so a
        # snapshot can hold the second promotion's row but not yet its rename request, or
        # the last flush but not its release: wait until every count has reached what was
        # done, then assert each is exactly that (an extra request still fails)
        def fuse_counts(f):
            return {s.labels["op"]: s.value for s in f["custodyfs_fuse_request_duration_"
                                                     "seconds"].samples
                    if s.name.endswith("_count")}

        def caught_up():
            f, _ = parse(path)
            fc = fuse_counts(f)
            return (value(f, "custodyfs_receptions") >= 3
                    and hist(f, "custodyfs_promotion_duration_seconds")[0] >= 2
                    and fc.get("rename", 0) >= 2 and fc.get("release", 0) >= len(data))
        wait_until(caught_up, timeout=30, what="the metrics file with the last counts")
        fams, text = parse(path)

        assert value(fams, "custodyfs_receptions") == len(rrows)
        assert value(fams, "custodyfs_received_bytes") == sum(r["size_bytes"] for r in rrows)
        assert value(fams, "custodyfs_reception_errors") == 0
        for outcome in ("copied", "restored", "adopted", "duplicate", "duplicate_content",
                        "conflict"):
            want = sum(1 for r in srows if r["outcome"] == outcome)
            assert value(fams, "custodyfs_promotions", outcome=outcome) == want, outcome
        assert value(fams, "custodyfs_promotion_errors") == 0
        assert value(fams, "custodyfs_stored_bytes") == sum(
            r["size_bytes"] for r in srows if r["outcome"] == "copied")

        count, total, _ = hist(fams, "custodyfs_upload_duration_seconds")
        assert count == len(data) and total > 0  # one commit per cp
        assert value(fams, "custodyfs_upload_failures") == 0
        count, total, _ = hist(fams, "custodyfs_promotion_duration_seconds")
        assert count == 2 and total > 0
        count, total, _ = hist(fams, "custodyfs_sql_duration_seconds")
        assert count >= len(rrows) + len(srows) and total > 0
        assert s3_ops(fams) >= {"head", "get", "list", "put", "copy", "upload_part", "multipart",
                                "delete", "other"}
        per_op = {op: hist(fams, "custodyfs_s3_request_duration_seconds", op=op)[0]
                  for op in s3_ops(fams)}
        assert per_op["put"] + per_op["upload_part"] >= len(data), per_op
        assert per_op["copy"] + per_op["put"] + per_op["upload_part"] >= len(data) + 1, per_op
        # the per-file breakdown (tests/bench/bench_small.sh): each cp is one create, at
        # least one write, a flush that commits it and a release; the two promotions are
        # renames; every commit is an upload and a reception row in a transaction
        fuse = fuse_counts(fams)
        assert fuse["create"] == len(data) and fuse["release"] == len(data), fuse
        assert fuse["write"] >= len(data) and fuse["flush"] >= len(data), fuse
        assert fuse["rename"] == 2 and fuse["getattr"] > 0, fuse
        count, total, _ = hist(fams, "custodyfs_file_open_duration_seconds")
        assert count == len(data) and total > 0
        stage = {st: summary(fams, "custodyfs_stage_duration_seconds", stage=st)
                 for st in ("spool_write", "hash", "upload_finish", "reception_row",
                            "sql_commit", "row_check", "create_check", "sql_statement",
                            "sql_prepare")}
        assert stage["spool_write"][0] == fuse["write"], stage
        assert stage["upload_finish"][0] == len(data) and stage["upload_finish"][1] > 0, stage
        assert stage["reception_row"][0] == len(data) and stage["reception_row"][1] > 0, stage
        assert stage["hash"][0] >= len(data), stage
        assert stage["sql_commit"][0] >= len(rrows) + len(srows), stage
        # each commit's row checks its object once under the key lock (a HEAD), each cp's
        # create asks the store once whether the name is there; every COMMIT is a statement
        # too, and each row's transaction runs several (lock, live rows, record)
        assert stage["row_check"][0] == len(data) and stage["row_check"][1] > 0, stage
        assert stage["create_check"][0] == len(data) and stage["create_check"][1] > 0, stage
        assert stage["sql_statement"][0] >= stage["sql_commit"][0] + 3 * len(data), stage
        assert stage["sql_statement"][1] > 0, stage
        # statements with parameters are prepared once per pooled connection, then run by
        # name: fewer prepares than statements (the same few texts on a few connections)
        assert 0 < stage["sql_prepare"][0] < stage["sql_statement"][0], stage
        whats = {s.labels["what"]: s.value for s in fams["custodyfs_sql_operation_duration_"
                                                         "seconds"].samples
                 if s.name.endswith("_count")}
        assert whats["reception record (guarded)"] == len(data), whats
        # the file's life in the mount holds its commit
        assert hist(fams, "custodyfs_file_open_duration_seconds")[1] >= stage["reception_row"][1]
        for fam in fams.values():  # one label for the whole file: the mountpoint
            for s in fam.samples:
                assert s.labels.get("mountpoint") == m.mnt, s

        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        assert sorted(os.listdir(tdir)) == ["custodyfs.prom"]  # no temporary file left
        no_secrets(m, text)

        # systemd's STATUS= line: the key counters once they changed
        msgs = recv_all(sock, 4)
        assert any("READY=1" in x.split("\n") for x in msgs), msgs
        status = [x for x in msgs if x.startswith("STATUS=") and "received 3 " in x]
        assert status, msgs
        assert f"received 3 ({sum(len(b) for b in data.values())} bytes)" in status[-1]
        assert "promoted 1 (duplicates 1)" in status[-1]
        assert "errors 0" in status[-1]
        # sent when the counters change, not every interval
        assert status.count(status[-1]) == 1, msgs
        for secret in (m.stack.secret_key, m.stack.access_key):
            assert secret not in "\n".join(msgs)

        m.unmount()
        fams, _ = parse(path)
        assert value(fams, "custodyfs_receptions") == 3
        # the final counts, nothing running: every operation is under one name
        whats = [s.value for s in fams["custodyfs_sql_operation_duration_seconds"].samples
                 if s.name.endswith("_count")]
        assert sum(whats) == hist(fams, "custodyfs_sql_duration_seconds")[0], whats
        assert sorted(os.listdir(tdir)) == ["custodyfs.prom"]
    finally:
        sock.close()


def test_metrics_file_written_again_at_unmount(mount_factory, uniq, tmp_path):
    """An interval longer than the mount's life: the file written at the start, then the
    final counts at a clean unmount, whatever the umask."""
    path = str(tmp_path / "custodyfs.prom")
    m = mount_factory({"fs": {"metrics_file": path, "metrics_interval": "3600"}})
    wait_until(lambda: os.path.exists(path), timeout=30, what="the metrics file")
    assert value(parse(path)[0], "custodyfs_receptions") == 0
    checks.write(os.path.join(m.inbox, f"{uniq}.txt"), b"final counts\n")
    assert len(checks.live_rows(m, f"{uniq}.txt")) == 1
    time.sleep(1)
    assert value(parse(path)[0], "custodyfs_receptions") == 0  # not rewritten meanwhile
    m.unmount()
    fams, text = parse(path)
    assert value(fams, "custodyfs_receptions") == 1
    assert value(fams, "custodyfs_received_bytes") == len(b"final counts\n")
    assert hist(fams, "custodyfs_upload_duration_seconds")[0] == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    no_secrets(m, text)


def test_metrics_file_config_is_checked(mount_factory, tmp_path):
    """A relative metrics_file is refused at mount (the daemon runs from /), naming the key."""
    m = mount_factory({"fs": {"metrics_file": "custodyfs.prom"}}, start=False)
    with pytest.raises(HarnessError):
        m.mount(timeout=30)
    assert "bad value for [fs] metrics_file" in open(m.log_path).read()


def _plant(make, target):
    """make(target), again while the daemon's own temporary file is there (mid-write)."""
    for _ in range(50):
        try:
            return make(target)
        except FileExistsError:
            time.sleep(0.05)
    raise HarnessError(f"could not plant {target}")


def _free_fifo(fifo):
    """Opens a planted FIFO for reading (unblocks a writer stuck in open) and drains it."""
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        time.sleep(0.5)
        try:
            while os.read(fd, 65536):
                pass
        except BlockingIOError:
            pass
    finally:
        os.close(fd)


def test_metrics_temp_name_planted_as_a_fifo_stops_neither_the_writes_nor_the_unmount(
        mount_factory, tmp_path):
    """Whoever may create files in the textfile directory (node_exporter's user owns Debian's)
    and can read the daemon's pid plants a FIFO under the next temporary name: the daemon must
    neither block in open(2) (its metrics thread, then its unmount, joined on it) nor rename
    the FIFO over the metrics file (node_exporter would block reading it)."""
    tdir = tmp_path / "textfile"
    tdir.mkdir()
    path = str(tdir / "custodyfs.prom")
    m = mount_factory({"fs": {"metrics_file": path, "metrics_interval": "1"}})
    wait_until(lambda: os.path.exists(path), timeout=30, what="the metrics file")
    fifo = str(tdir / f".custodyfs.prom.{m.pid}.tmp")
    _plant(os.mkfifo, fifo)
    try:
        before = os.stat(path).st_mtime_ns
        time.sleep(0.2)
        wait_until(lambda: os.stat(path).st_mtime_ns != before, timeout=8,
                   what="the metrics file rewritten while a FIFO sits at the temporary name")
        assert stat.S_ISREG(os.stat(path).st_mode)
        t0 = time.monotonic()
        m.unmount()  # the daemon must exit by itself
        assert time.monotonic() - t0 < 20
        assert stat.S_ISREG(os.stat(path).st_mode)
        assert value(parse(path)[0], "custodyfs_receptions") == 0
    finally:
        if os.path.exists(fifo) or os.path.exists(path):
            for p in (fifo, path):
                if os.path.exists(p) and stat.S_ISFIFO(os.stat(p).st_mode):
                    _free_fifo(p)


def test_metrics_temp_name_planted_as_a_hard_link_never_writes_through_it(
        mount_factory, tmp_path):
    """A file planted under the next temporary name (here a hard link to another file, as the
    daemon's user could not be told apart from the planter in a test) is never opened: the
    daemon writes only into a file it created itself (O_EXCL), so the linked file keeps its
    bytes and its mode."""
    tdir = tmp_path / "textfile"
    tdir.mkdir()
    path = str(tdir / "custodyfs.prom")
    victim = tmp_path / "victim.conf"
    victim.write_bytes(b"secret=1\n")
    os.chmod(victim, 0o600)
    m = mount_factory({"fs": {"metrics_file": path, "metrics_interval": "1"}})
    wait_until(lambda: os.path.exists(path), timeout=30, what="the metrics file")
    _plant(lambda t: os.link(victim, t), str(tdir / f".custodyfs.prom.{m.pid}.tmp"))
    before = os.stat(path).st_mtime_ns
    time.sleep(0.2)
    wait_until(lambda: os.stat(path).st_mtime_ns != before, timeout=8,
               what="the metrics file rewritten")
    time.sleep(1.5)
    m.unmount()
    assert victim.read_bytes() == b"secret=1\n"
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o600
    assert os.stat(victim).st_ino != os.stat(path).st_ino
    fams, _ = parse(path)
    assert value(fams, "custodyfs_receptions") == 0


def test_receptions_counter_counts_the_rows_a_promotion_writes_for_foreign_uploads(
        mount_factory, uniq, tmp_path):
    """custodyfs_receptions_total is "reception rows committed for new content by this
    process (uploads through the mount and by other routes)": an upload by another route that
    a promotion logs (before any scan did) is such a row, as audit/stats' received is."""
    path = str(tmp_path / "custodyfs.prom")
    m = mount_factory({"fs": {"metrics_file": path, "metrics_interval": "1",
                              "foreign_grace_ms": "600000", "scan_interval": "0"}})
    wait_until(lambda: os.path.exists(path), timeout=30, what="the metrics file")
    p = project(m, uniq)
    body = b"foreign, promoted at once\n"
    key = f"{uniq}-f.txt"
    m.s3.put_object(Bucket=m.reception_bucket, Key=key, Body=body)
    wait_until(lambda: os.path.exists(os.path.join(m.inbox, key)), timeout=30, what="listed")
    assert checks.rows(m, key) == []
    promote(m, key, p)
    rows = checks.rows(m, key)
    assert len(rows) == 1 and rows[0]["removed_at"] is not None  # written, then closed
    wait_until(lambda: hist(parse(path)[0], "custodyfs_promotion_duration_seconds")[0] == 1,
               timeout=30, what="the promotion in the metrics file")
    time.sleep(2)
    fams, _ = parse(path)
    assert value(fams, "custodyfs_receptions") == len(rows)
    assert value(fams, "custodyfs_received_bytes") == len(body)
