"""Daemon lifecycle and listing cache (issue 5, points 9 and 10): unmount while a background
listing refresh is in flight is clean (no use-after-free under ASan, no hang), and concurrent
listings of one directory send one LIST to the store, not one each.

The S3 endpoint sits behind tests/integration/faultproxy.py, which sees (and here delays or
holds) every request, so LIST requests are counted at the store side, not by the daemon."""
import os
import threading
import traceback
import time
import urllib.parse

import pytest
from checks import bucket_keys, expected_history, history, write
from faultproxy import FaultProxy

TTL_MS = 2000  # [fs] cache_ttl_ms for these mounts: a listing is "slightly stale" for 2..8 s


def is_list_of(path, prefix):
    """True when the request path is a ListObjectsV2 of exactly this prefix."""
    u = urllib.parse.urlsplit(path)
    q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
    return "list-type" in q and q.get("prefix", [""])[0] == prefix


@pytest.fixture
def proxied(stack, mount_factory):
    """(mount, proxy): a daemon whose S3 endpoint is a FaultProxy; the proxy outlives it."""
    px = FaultProxy(stack.endpoint)
    m = mount_factory(config={"s3": {"endpoint": px.url},
                              "fs": {"cache_ttl_ms": TTL_MS}})
    yield m, px
    px.rule = None
    px.release.set()
    m.unmount(check=False)
    px.close()


def start_background_refresh(m, px, d, name, action):
    """Lists d (fresh), waits until that listing is stale but still usable, installs `action`
    for LISTs of d, and stats d/name: the daemon answers from the stale listing and refreshes
    it in the background. Returns once that refresh's LIST has reached the proxy."""
    prefix = d + "/"
    assert name in os.listdir(os.path.join(m.inbox, d))
    seen = threading.Event()

    def rule(method, path, headers):
        if method == "GET" and is_list_of(path, prefix):
            seen.set()
            return action()
        return None

    time.sleep(TTL_MS / 1000 + 0.7)  # stale (> TTL), well below 4 x TTL
    px.rule = rule
    st = os.stat(os.path.join(m.inbox, d, name))  # answered at once from the stale listing
    assert st.st_size > 0
    assert seen.wait(20), "no background refresh of the listing reached the store"


def test_unmount_while_a_background_refresh_runs(proxied, uniq):
    """Point 9: the refresh thread ends after unmount began; nothing it touches may have been
    freed (the daemon under ASan reports a use-after-free otherwise; the harness fails the test
    on any sanitizer report, a crash, or a daemon that does not exit)."""
    m, px = proxied
    os.mkdir(os.path.join(m.inbox, uniq))
    write(os.path.join(m.inbox, uniq, "a.txt"), b"listed")
    m.s3.put_object(Bucket=m.reception_bucket, Key=f"{uniq}/foreign.txt", Body=b"other route")

    def slow():
        time.sleep(4)  # the LIST is answered 4 s late, after the unmount started
        return None

    start_background_refresh(m, px, uniq, "a.txt", slow)
    m.unmount()  # raises on a sanitizer report, a crash, or no exit within 30 s
    assert m.proc.returncode == 0, m.log_tail()


def test_unmount_is_bounded_when_a_refresh_hangs(proxied, uniq):
    """Point 9: a LIST that never answers does not hold the unmount for the S3 timeouts
    (30 s per request, retried): the daemon gives the refresh a bounded wait, then exits
    cleanly without freeing what the refresh still uses."""
    m, px = proxied
    os.mkdir(os.path.join(m.inbox, uniq))
    write(os.path.join(m.inbox, uniq, "a.txt"), b"listed")
    start_background_refresh(m, px, uniq, "a.txt", lambda: ("hang",))
    t0 = time.monotonic()
    m.unmount(timeout=30)  # SIGTERM after 30 s counts as a failure
    waited = time.monotonic() - t0
    assert m.proc.returncode == 0, m.log_tail()
    print(f"unmount with a hung refresh took {waited:.1f} s")


def test_concurrent_fetches_of_one_directory_send_one_list(proxied, uniq):
    """Point 10: threads that need one directory's listing at once (lookups of its names, and a
    listing) share one LIST (single flight) instead of sending one each.

    The kernel sends first-time LOOKUPs and READDIRs of one directory one after another, and a
    readdir always asks the store again (that is where uploads from other routes show up), so
    the concurrency comes from revalidation: the names are known to the kernel, their cached
    entries have expired, and the daemon's listing is too old to answer from; each thread
    stats another name (the kernel revalidates each in parallel) and one thread lists the
    directory meanwhile."""
    m, px = proxied
    n_threads = 8
    d = os.path.join(m.inbox, uniq)
    names = {f"f{i:02d}.txt" for i in range(n_threads)}
    for n in names:  # by another route: the daemon has no listing of the directory yet
        m.s3.put_object(Bucket=m.reception_bucket, Key=f"{uniq}/{n}", Body=n.encode())
    assert uniq in os.listdir(m.inbox)  # the root listing knows the directory
    for n in names:  # the kernel knows every name (LOOKUP once each)
        os.stat(os.path.join(d, n))
    # entries expire (1 s) and the daemon's listing gets too old to answer (4 x TTL)
    time.sleep(4 * TTL_MS / 1000 + 1)
    prefix = uniq + "/"
    arrivals = []
    lock = threading.Lock()

    def rule(method, path, headers):
        if method == "GET" and is_list_of(path, prefix):
            with lock:
                arrivals.append(time.monotonic())
            time.sleep(2)  # slow enough that every thread asks while the first LIST runs
        return None

    px.rule = rule
    barrier = threading.Barrier(n_threads + 1)
    results = {}

    def stat_one(name):
        barrier.wait(30)
        try:
            results[name] = os.stat(os.path.join(d, name)).st_size
        except OSError as e:
            results[name] = e

    def list_dir():
        barrier.wait(30)
        try:
            results["ls"] = set(os.listdir(d))
        except OSError as e:
            results["ls"] = e

    threads = [threading.Thread(target=stat_one, args=(n,)) for n in sorted(names)]
    threads.append(threading.Thread(target=list_dir))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    px.rule = None
    assert not any(t.is_alive() for t in threads), "a lookup or listing did not finish"
    for n in names:
        assert results[n] == len(n.encode()), f"stat {n}: {results[n]!r}"
    assert results["ls"] == names, f"ls: {results['ls']!r}"
    print("LIST arrivals (s after the first):",
          [round(t - arrivals[0], 2) for t in arrivals])
    # one LIST shared by all; a second only if the listing thread ran after the first ended
    assert 1 <= len(arrivals) <= 2, \
        f"{len(arrivals)} LISTs of {prefix!r} for {n_threads} lookups and 1 listing at once"


def test_listing_joins_the_refresh_under_way(proxied, uniq):
    """Point 10 (single flight in the daemon): a readdir that arrives while a background
    refresh of the same directory is fetching joins that fetch (one LIST), and sees what the
    fetch found (an object put by another route just before it)."""
    m, px = proxied
    os.mkdir(os.path.join(m.inbox, uniq))
    write(os.path.join(m.inbox, uniq, "a.txt"), b"listed")
    lists = []

    def slow():
        lists.append(time.monotonic())
        time.sleep(3)  # the refresh's LIST is answered 3 s late
        return None

    m.s3.put_object(Bucket=m.reception_bucket, Key=f"{uniq}/late.txt", Body=b"other route")
    start_background_refresh(m, px, uniq, "a.txt", slow)
    got = set(os.listdir(os.path.join(m.inbox, uniq)))  # arrives while the refresh is held
    px.rule = None
    assert got == {"a.txt", "late.txt"}, got
    assert len(lists) == 1, f"{len(lists)} LISTs: the listing did not join the refresh under way"


def test_concurrent_listings_of_a_cold_directory_send_one_list(proxied, uniq):
    """Point 10: 8 listings (readdir) of one directory the daemon has never listed, started
    at once, share one LIST: the first fetches, the others join that fetch instead of sending
    their own (a readdir otherwise always asks the store again). The first LIST is held 3 s
    at the proxy so that every listing arrives while it is under way.

    This needs FUSE_PARALLEL_DIROPS in the INIT reply, which libfuse before 3.17.1 never sends
    (fs/fuseinit.c adds it): without it the other 7 wait in the kernel (fuse_lock_inode in
    fuse_readdir_uncached, seen in /proc/PID/task/*/stack while the first LIST is held) and
    reach the daemon only after the first fetch ended, so no merge can happen (8 LISTs)."""
    m, px = proxied
    n_threads = 8
    d = os.path.join(m.inbox, uniq)
    names = {f"g{i:02d}.txt" for i in range(20)}
    for n in names:  # by another route: the daemon has no listing of the directory
        m.s3.put_object(Bucket=m.reception_bucket, Key=f"{uniq}/{n}", Body=n.encode())
    assert uniq in os.listdir(m.inbox)  # the root listing knows the directory (not its names)
    prefix = uniq + "/"
    arrivals = []
    lock = threading.Lock()

    def rule(method, path, headers):
        if method == "GET" and is_list_of(path, prefix):
            with lock:
                arrivals.append(time.monotonic())
                first = len(arrivals) == 1
            if first:
                time.sleep(3)
        return None

    px.rule = rule
    barrier = threading.Barrier(n_threads)
    results = [None] * n_threads

    def list_dir(i):
        barrier.wait(30)
        try:
            results[i] = set(os.listdir(d))
        except OSError as e:
            results[i] = e

    threads = [threading.Thread(target=list_dir, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    px.rule = None
    assert not any(t.is_alive() for t in threads), "a listing did not finish"
    for i, r in enumerate(results):
        assert r == names, f"listing {i}: {r!r}"
    assert len(arrivals) == 1, \
        f"{len(arrivals)} LISTs of {prefix!r} for {n_threads} concurrent listings of a cold directory"


def test_parallel_lookups_and_listings_among_changes_in_one_directory(mount_factory, uniq):
    """Point 10, a guard for fs/fuseinit.c: with FUSE_PARALLEL_DIROPS the kernel no longer
    serializes lookups and listings of one directory, so the daemon sees them at once; changes
    in the directory (create, rename, unlink, mkdir, rmdir) still exclude them (the kernel
    holds the directory's i_rwsem for those). While one thread changes the directory, 4 list
    it and 4 look names up in it (stable, changing and absent ones): none fails, every listing
    holds every file that exists throughout, and the store and reception_audit end as the
    changes say (every row of every key counted, removed ones too). Not a reproduction: it
    passed with serialized lookups too."""
    m = mount_factory()
    d = os.path.join(m.inbox, uniq)
    os.mkdir(d)
    stable = {f"s{i:02d}.txt": f"stable {i}".encode() for i in range(12)}
    for n, data in stable.items():
        write(os.path.join(d, n), data)
    stop = threading.Event()
    errors = []

    def guard(fn, kind):
        def run():
            try:
                fn()
            except Exception as e:  # reported below: which thread, which call, which name
                tb = traceback.extract_tb(e.__traceback__)[-1]
                errors.append(f"{kind}: {e!r} (filename {getattr(e, 'filename', None)!r}, "
                              f"at line {tb.lineno}: {tb.line}, t={time.monotonic():.3f})")
                stop.set()
        return run

    def lister():
        while not stop.is_set():
            names = set(os.listdir(d))
            assert set(stable) <= names, f"listing lacks {set(stable) - names}"

    def looker(t):
        k = 0
        while not stop.is_set():
            k += 1
            for n, data in stable.items():
                assert os.stat(os.path.join(d, n)).st_size == len(data)
            assert not os.path.exists(os.path.join(d, f"absent-{t}-{k}"))
            os.path.exists(os.path.join(d, f"c{k % 30:02d}.txt"))  # changing: either way

    kept = {}      # name -> content, the files that must remain
    gone = {}      # name -> content, received then removed (unlinked or renamed away)

    def changer():
        for k in range(30):
            n, data = f"c{k:02d}.txt", f"changing {k}".encode() * (k + 1)
            write(os.path.join(d, n), data)
            if k % 3 == 0:
                os.rename(os.path.join(d, n), os.path.join(d, f"k{k:02d}.txt"))
                gone[n] = data
                kept[f"k{k:02d}.txt"] = data
            elif k % 3 == 1:
                os.unlink(os.path.join(d, n))
                gone[n] = data
            else:
                kept[n] = data
            sub = os.path.join(d, f"sub{k:02d}")
            os.mkdir(sub)
            os.rmdir(sub)

    threads = [threading.Thread(target=guard(lister, "lister")) for _ in range(4)]
    threads += [threading.Thread(target=guard(lambda t=t: looker(t), f"looker {t}"))
                for t in range(4)]
    for t in threads:
        t.start()
    try:
        guard(changer, "changer")()
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads), "a lookup or listing did not finish"
    assert errors == [], (errors, [ln for ln in m.daemon_log().splitlines()
                                   if "error" in ln.lower() or "warn" in ln.lower()][-20:])
    final = {**stable, **kept}
    assert set(os.listdir(d)) == set(final)
    # The directory's own marker (mkdir) stays; no sub{k}/ marker does.
    assert bucket_keys(m, uniq + "/", markers=True) == \
        sorted([f"{uniq}/"] + [f"{uniq}/{n}" for n in final])
    for n, data in final.items():
        assert history(m, f"{uniq}/{n}") == expected_history([data]), n
    for n, data in gone.items():
        assert history(m, f"{uniq}/{n}") == expected_history([data], live_last=False), n


def test_attribute_overrides_follow_renames_and_go_with_removals(mount_factory, uniq):
    """Point 10 (attrs.c, now a hash table): chmod/utimens overrides of many files are each
    seen by stat, move with a rename, and go with an unlink (a new file under the name does
    not inherit them). A regression guard for the rewrite, not a reproduction: the old list
    behaved the same, only slower."""
    m = mount_factory()
    d = os.path.join(m.inbox, uniq)
    os.mkdir(d)
    n = 200
    for i in range(n):
        p = os.path.join(d, f"a{i:03d}.txt")
        write(p, b"x" * i)
        os.chmod(p, 0o600 | (0o040 if i % 2 else 0))
        os.utime(p, (1_600_000_000 + i, 1_600_000_000 + i))
    write(os.path.join(d, "plain.txt"), b"never changed")
    os.rename(os.path.join(d, "a000.txt"), os.path.join(d, "b000.txt"))
    os.unlink(os.path.join(d, "a001.txt"))
    write(os.path.join(d, "a001.txt"), b"new file, same name")
    time.sleep(1.5)  # past the kernel's attribute cache: stat asks the daemon
    plain = os.stat(os.path.join(d, "plain.txt"))
    for i in range(2, n):
        st = os.stat(os.path.join(d, f"a{i:03d}.txt"))
        assert st.st_mode & 0o7777 == (0o600 | (0o040 if i % 2 else 0)), f"a{i:03d}.txt"
        assert int(st.st_mtime) == 1_600_000_000 + i, f"a{i:03d}.txt"
        assert st.st_size == i
    moved = os.stat(os.path.join(d, "b000.txt"))
    assert moved.st_mode & 0o7777 == 0o600 and int(moved.st_mtime) == 1_600_000_000
    assert not os.path.exists(os.path.join(d, "a000.txt"))
    new = os.stat(os.path.join(d, "a001.txt"))
    assert new.st_mode & 0o7777 == plain.st_mode & 0o7777, "a new file inherited an override"
    assert int(new.st_mtime) != 1_600_000_001
