#!/usr/bin/python3
"""The cost of the hash chain (issue 7 item 4): reception_audit inserts per second with and
without the chain trigger, 8 concurrent writers, in the same run. A benchmark, not a test: it
measures and prints, it asserts nothing.

  chain_bench.py [--writers 8] [--seconds 8] [--rounds 2] [--fast] [--conninfo C]
                 [--bin build/fs/custodyfs]

Without --conninfo it starts its own PostgreSQL cluster (tests/servers/pg.sh, in a temp dir,
stopped at the end; --fast: fsync off, as the test harness runs it) and migrates it with
``custodyfs recover`` (the database part of the mount's start). With --conninfo the database
must be migrated already (schema 9) and the role must own reception_audit (to switch the
trigger); rows are added to it.

Each phase runs `writers` processes, each on its own connection, each doing single-row
autocommit INSERTs of a mount-shaped reception row (hashes, ETag, who) for `seconds`; the
phases alternate (unchained, chained, unchained, chained, ...) on the same table, the chain
trigger switched with ALTER TABLE ... DISABLE / ENABLE ALWAYS TRIGGER zz_custodyfs_chain. Rows
inserted while the trigger is off are not chained (chain_lane NULL): the check at the end only
asks that every lane's chain_seq be gapless.
"""
import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def writer(conninfo, tag, seconds, start_at, q):
    import psycopg2
    c = psycopg2.connect(conninfo)
    c.autocommit = True
    cur = c.cursor()
    n = 0
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    while time.time() < end:
        cur.execute(
            "insert into reception_audit (source_bucket, file_name, object_key, size_bytes,"
            " uploaded_at, xxh128, sha256, etag, origin, received_by, received_uid,"
            " received_user, received_host) values (%s, %s, %s, %s, now(), %s, %s, %s,"
            " 'mount', %s, 1000, 'bench', 'host')",
            ("recepcao-raw", f"f{n}.bin", f"bench/{tag}/f{n}.bin", 1024 + n,
             "0123456789abcdef0123456789abcdef",
             "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
             "d41d8cd98f00b204e9800998ecf8427e", "bench (uid 1000) on host"))
        n += 1
    c.close()
    q.put(n)


def phase(conninfo, chained, writers, seconds):
    import psycopg2
    c = psycopg2.connect(conninfo)
    c.autocommit = True
    with c.cursor() as cur:
        if chained:
            cur.execute("alter table reception_audit enable always trigger zz_custodyfs_chain")
        else:
            cur.execute("alter table reception_audit disable trigger zz_custodyfs_chain")
    c.close()
    q = mp.Queue()
    start_at = time.time() + 1.0
    tag = uuid.uuid4().hex[:8]
    ps = [mp.Process(target=writer, args=(conninfo, f"{tag}-{i}", seconds, start_at, q))
          for i in range(writers)]
    for p in ps:
        p.start()
    total = sum(q.get(timeout=seconds + 120) for _ in ps)
    for p in ps:
        p.join(timeout=60)
    return total / seconds


def own_cluster(fast, binary):
    tmp = tempfile.mkdtemp(prefix="chain-bench-")
    os.chmod(tmp, 0o755)
    env = dict(os.environ)
    if fast:
        env["CUSTODYFS_PG_FAST"] = "1"
    sys.path.insert(0, os.path.join(REPO, "tests", "servers"))
    import free_port
    port = str(free_port.find())
    out = subprocess.run([os.path.join(REPO, "tests/servers/pg.sh"), "start", tmp, port],
                         capture_output=True, text=True, timeout=180, env=env, check=True)
    conninfo = out.stdout.strip().splitlines()[-1]
    cfg = os.path.join(tmp, "bench.conf")
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("[s3]\nendpoint = http://127.0.0.1:9\nregion = us-east-1\n"
                "access_key_id = bench\nsecret_access_key = bench\n"
                "reception_bucket = recepcao-raw\nstorage_bucket = storage-unique\n"
                f"[postgres]\nconninfo = {conninfo}\n[fs]\nspool_dir = {tmp}\n")
    r = subprocess.run([binary, "recover", "-o", "config=" + cfg], capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
        raise SystemExit("migration (custodyfs recover) failed")
    return tmp, conninfo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fast", action="store_true", help="fsync off (own cluster only)")
    ap.add_argument("--conninfo")
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "fs", "custodyfs"))
    a = ap.parse_args()
    tmp = None
    conninfo = a.conninfo
    if not conninfo:
        tmp, conninfo = own_cluster(a.fast, a.bin)
    try:
        import psycopg2
        first = psycopg2.connect(conninfo)
        first.autocommit = True
        with first.cursor() as cur:
            cur.execute("select count(*) from reception_audit")
            rows0 = cur.fetchone()[0]
            cur.execute("show fsync")
            fsync = cur.fetchone()[0]
            cur.execute("show synchronous_commit")
            sc = cur.fetchone()[0]
        plain, chain = [], []
        for _ in range(a.rounds):
            plain.append(phase(conninfo, False, a.writers, a.seconds))
            chain.append(phase(conninfo, True, a.writers, a.seconds))
        with first.cursor() as cur:
            cur.execute("alter table reception_audit enable always trigger zz_custodyfs_chain")
            # every lane's chain_seq runs 1..n without a gap, chained rows included
            cur.execute("select count(*), count(distinct chain_lane), bool_and(n = mx) from"
                        " (select chain_lane, count(*) n, max(chain_seq) mx from reception_audit"
                        " group by chain_lane) l")
            _, lanes, gapless = cur.fetchone()
            cur.execute("select count(*) from reception_audit")
            n = cur.fetchone()[0] - rows0
        first.close()
        up = sum(plain) / len(plain)
        uc = sum(chain) / len(chain)
        print(f"chain_bench: {a.writers} writers, {a.rounds} x {a.seconds:g} s per phase,"
              f" fsync={fsync} synchronous_commit={sc}, cores={os.cpu_count()}")
        print(f"  unchained inserts/s  {' '.join(f'{x:9.0f}' for x in plain)}   mean {up:9.0f}")
        print(f"  chained   inserts/s  {' '.join(f'{x:9.0f}' for x in chain)}   mean {uc:9.0f}")
        print(f"  ratio chained/unchained  {uc / up:.2f}   (target >= 0.80)")
        print(f"  rows inserted {n}; {lanes} lanes, each "
              f"{'gapless' if gapless else 'NOT gapless'}")
    finally:
        if tmp:
            subprocess.run([os.path.join(REPO, "tests/servers/pg.sh"), "stop", tmp],
                           capture_output=True, timeout=120)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
