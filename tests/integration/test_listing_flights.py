"""A listing that was being fetched when a change made the cache forget what it knew (a
directory promotion, a directory rename: dcache_invalidate_*, the fetch marked "lost") is not
handed to a readdir that starts after that change returned (review revC C5).

The fetch is a background refresh (a lookup found the cached listing a little stale): the
kernel's directory lock does not order it with a rename. The proxy forwards its LIST at once
(the store answers as of then) and holds the answer a few seconds, so the rename happens while
the answer is on its way."""
import os
import threading
import time
import urllib.parse

import checks
from checks import project, promote
from conftest import wait_until
from faultproxy import FaultProxy

TTL_MS = 1500


def _list_rule(bucket, prefix, seconds, held):
    """("late", seconds) for the first ListObjectsV2 of bucket with exactly that prefix."""
    def rule(method, path, headers):
        p, _, q = path.partition("?")
        args = urllib.parse.parse_qs(q)
        if (method == "GET" and "list-type" in args and args.get("prefix") == [prefix]
                and p.strip("/").split("/")[0] == bucket and not held.is_set()):
            held.set()
            return ("late", seconds)
        return None
    return rule


def test_readdir_after_a_directory_promotion_shows_it_when_a_refresh_was_under_way(
        stack, mount_factory, uniq):
    """The rename's lookup of its target is answered from the fresh listing; the promotion's
    copy is held 2.5 s by the proxy, during which the listing turns stale and a stat of a file
    beside (a dentry revalidation: no directory lock) starts a background refresh, whose LIST
    the store answers before the copy landed and the proxy delivers 4 s late. The rename
    returns while that refresh is still under way; a listing asked for after it must show the
    promoted directory."""
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url},
                                  "fs": {"cache_ttl_ms": str(TTL_MS)}})
        p = project(m, uniq)
        checks.drop(m, "seed.txt", b"seed\n")
        promote(m, "seed.txt", p)
        os.mkdir(os.path.join(m.inbox, "dir"))
        checks.write(os.path.join(m.inbox, "dir", "f.txt"), b"in a directory\n")
        assert len(checks.live_rows(m, "dir/f.txt")) == 1
        pdir = os.path.join(m.projects, p)
        time.sleep(1.5)  # every entry the kernel cached has timed out (1 s)

        copy_held, list_held = threading.Event(), threading.Event()
        list_rule = _list_rule(m.storage_bucket, p + "/", 4, list_held)

        def rule(method, path, headers):
            if method == "PUT" and headers.get("x-amz-copy-source") and not copy_held.is_set():
                copy_held.set()
                return ("hold", 2.5)
            return list_rule(method, path, headers)

        assert os.listdir(pdir) == ["seed.txt"]  # fetched now
        t = time.monotonic()
        px.rule = rule
        res = {}

        def mv():
            try:
                os.rename(os.path.join(m.inbox, "dir"), os.path.join(pdir, "dir"))
                res["rc"] = 0
            except OSError as e:
                res["rc"] = e.errno
            res["t"] = time.monotonic()
        th = threading.Thread(target=mv)
        th.start()
        wait_until(copy_held.is_set, timeout=5, interval=0.01, what="the promotion's copy")
        time.sleep(max(0, t + TTL_MS / 1000 + 0.1 - time.monotonic()))
        # the listing is stale now: this revalidation is answered from it and refreshes it
        # behind; the store lists p/ before the copy landed
        os.stat(os.path.join(pdir, "seed.txt"))
        wait_until(list_held.is_set, timeout=5, interval=0.01, what="the refresh's LIST")
        th.join(60)
        assert res.get("rc") == 0, res
        assert res["t"] - t < TTL_MS / 1000 + 3.5, "the refresh ended before the rename"
        assert sorted(os.listdir(pdir)) == ["dir", "seed.txt"]
        assert os.listdir(os.path.join(pdir, "dir")) == ["f.txt"]
    finally:
        px.rule = None
        px.release.set()
        px.close()
