"""custodyfs integration-test harness (pytest, run with Debian's /usr/bin/python3).

Run:  /usr/bin/python3 -m pytest tests/integration            (or: bash tests/run.sh)

What it does
------------
Once per session it starts, on free loopback ports in a temp dir (/tmp/custodyfs-it-*):
  * PostgreSQL (tests/servers/pg.sh): role + database ``custody``, trust auth;
  * an S3 server chosen by ``CUSTODYFS_S3_BACKEND`` = ``s3rver`` (default; tests/servers/s3rver.sh,
    needs ``npm ci``) or ``swift`` (tests/servers/swift.sh; verifies SigV4 signatures);
  * the buckets ``recepcao-raw`` and ``storage-unique``.
Each mount runs ``build/fs/custodyfs -f -o config=FILE MNT`` (``CUSTODYFS_BIN`` overrides the
binary) with a 0600 config written by the harness, its stdout+stderr in a log file.

Fixtures
--------
``stack``         (session) the servers. Attributes: ``backend``, ``endpoint``, ``access_key``,
                  ``secret_key``, ``region``, ``conninfo``, ``reception_bucket``,
                  ``storage_bucket``, ``s3`` (boto3 client, path-style), ``tmp`` (session dir),
                  ``upload_part_copy`` / ``verifies_sigv4`` (False on s3rver: skip such tests).
                  Methods: ``sql()``, ``sql_value()``, ``sql_dicts()``, ``stop_s3()``,
                  ``start_s3()``, ``stop_pg(mode="fast"|"immediate")``, ``start_pg()``,
                  ``reset()`` (fresh database + empty buckets), ``empty_buckets()``.
``mount``         (module) one daemon per test module, started on a clean store: database
                  ``custody`` dropped and recreated, both buckets emptied, new spool dir. Tests
                  of one module share it, so use ``uniq`` for names. A module may set
                  ``CUSTODYFS_CONFIG = {"fs": {"dedup": "path"}}`` to change its config.
``fresh_mount``   (function) the same, but clean for this one test; config overrides from
                  ``@pytest.mark.custodyfs_config({...})`` or the module's CUSTODYFS_CONFIG.
                  Mixing with ``mount`` in one module works: the reset unmounts the module
                  daemon, which is remounted (on the now clean store) before its next test.
``mount_factory`` (function) ``mount_factory(config=None, reset=True, start=True, env=None,
                  name=None, opts=None, wrapper=None)`` -> Mount (opts: extra ``-o`` mount
                  options, e.g. ``"allow_other"`` for tests run as other users; wrapper: a
                  command prefix that execs the daemon, e.g. tests/integration/unit_sandbox.py,
                  so .pid/.proc are the daemon's); every mount it made is torn down after the test.
                  ``reset=False`` gives a second mount on the same store and database (several
                  hosts sharing one store); ``start=False`` lets a test prepare the database
                  (e.g. the seed's old tables) before ``m.mount()``.
``uniq``          (function) a short unique name for this test, valid as a project prefix and as
                  a file name: ``t7-promote-dup``.
``s3``            (session) the stack's boto3 client.

The Mount object (what ``mount`` / ``fresh_mount`` / ``mount_factory`` give)
  .mnt                 mountpoint (str); .path("inbox", "a.txt") joins onto it
  .inbox .projects .audit   the three top directories (str)
  .s3                  boto3 client (path-style, SigV4, short timeouts) for independent checks
  .reception_bucket .storage_bucket
  .sql(query, params=None, user="custody") -> list of row tuples (autocommit; [] when no rows)
  .sql_value(query, params=None) -> first column of the first row, or None
  .sql_dicts(query, params=None) -> list of dicts
  .config              path of the 0600 config file; .write_config(overrides) rewrites it
                       (overrides: {"section": {"key": "value" | None to drop}})
  .spool               spool_dir of this mount
  .mount() .unmount()  explicit control; .restart(config=None) = unmount + (rewrite) + mount
  .crash(sig=SIGKILL)  kill the daemon as a crash would, lazily unmount; then .mount() again
                       (for journal/recovery tests; the crash is not reported as a failure)
  .stop_s3()/.start_s3()  S3 endpoint down/up (s3rver: the server; swift: only the proxy)
  .stop_pg(mode="fast"|"immediate")/.start_pg()  PostgreSQL down/up (same data)
  .daemon_log()        the daemon's log text (all mounts of this Mount object)
  .cli(*args, timeout=120, input=None, env=None) -> CompletedProcess of ``custodyfs ARGS``
                       (batch tools: promote/recover/reconcile/cleanup/status), text mode
  .pid, .alive()
  .wait_until(fn, timeout=10, interval=0.1, what="...")  poll until fn() is truthy
  .sha256(path) / .sha256_bytes(b) / .xxh128_bytes(b)  hex digests for checks

Failure detection: after every test the harness checks each live daemon; if one died, or wrote
a sanitizer report (AddressSanitizer, LeakSanitizer, UndefinedBehaviorSanitizer "runtime
error:", ThreadSanitizer "WARNING: ThreadSanitizer": a -Db_sanitize=thread daemon gets
TSAN_OPTIONS with tests/tsan.supp unless the environment sets it), the test fails with the log
excerpt. It also checks the servers: one that died on its
own fails the test (with its log) and is restarted; one a test stopped (stop_s3/stop_pg) and
left down is restarted silently, so no test needs a finally: for that. Teardown unmounts (``fusermount3 -u``, then
``-uz``), waits for the daemon (then SIGTERM, SIGKILL), and fails the same way on a crash.

Environment
  CUSTODYFS_S3_BACKEND   s3rver | swift             (default s3rver)
  CUSTODYFS_BIN          daemon binary              (default build/fs/custodyfs)
  CUSTODYFS_LOWLEVEL     1: mount with -o lowlevel  (libfuse's low-level API, fs/ll.c)
  CUSTODYFS_KEEP_TMP=1   keep the session temp dir (logs, data) after the run (it is kept
                         anyway when a test failed)
  CUSTODYFS_TEST_TMP     parent of the session temp dir (default /tmp; must be reachable
                         by the postgres user)
  CUSTODYFS_MOUNT_TIMEOUT  seconds to wait for a mount to appear (default 30)
  CUSTODYFS_DESELECT_REGRESSIONS=1  leave out the regression files of hostile reviews
                         (test_review_*.py, test_*_review*.py) except their tests marked
                         ``both_backends`` (those that depend on what the store does: copies,
                         multipart ETags, versioning, metadata). tests/run.sh sets it for the
                         Swift pass of a whole-suite run, and for the plain s3rver pass when
                         the sanitizer passes run: those files run on s3rver under ASan, and
                         the plain passes stay within their bound.
                         Tests marked ``store_independent`` (the database alone) are left
                         out of that pass too.
  CUSTODYFS_DESELECT_VOLUME=1  leave out the tests marked ``volume`` (scale: thousands of files
                         or rows); tests/run.sh sets it for the sanitizer passes of a whole-suite
                         run (the plain passes run them).
                         The deselected tests are named in pytest's summary line, never
                         counted as passed or skipped.
Everything is bounded: server starts (pg.sh/s3rver.sh/swift.sh), mount waits, unmounts, every
subprocess; pytest-timeout (python3-pytest-timeout) limits each test (pytest.ini).
"""

import contextlib
import hashlib
import http.client
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

for _v in ("AWS_CA_BUNDLE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "AWS_PROFILE"):
    os.environ.pop(_v, None)

import boto3  # noqa: E402
import psycopg2  # noqa: E402
import psycopg2.extras  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SERVERS = REPO / "tests" / "servers"
sys.path.insert(0, str(SERVERS))
import free_port as _free_port_script  # noqa: E402  (tests/servers/free_port.py)
BIN = os.environ.get("CUSTODYFS_BIN") or str(REPO / "build" / "fs" / "custodyfs")
# CUSTODYFS_LOWLEVEL=1: every mount adds -o lowlevel (libfuse's low-level API, fs/ll.c)
LOWLEVEL = os.environ.get("CUSTODYFS_LOWLEVEL") == "1"
BACKEND = os.environ.get("CUSTODYFS_S3_BACKEND", "s3rver")
KEEP_TMP = os.environ.get("CUSTODYFS_KEEP_TMP") == "1"
MOUNT_TIMEOUT = float(os.environ.get("CUSTODYFS_MOUNT_TIMEOUT", "30"))
RECEPTION = "recepcao-raw"
STORAGE = "storage-unique"
REGION = "us-east-1"

CREDENTIALS = {
    "s3rver": ("S3RVER", "S3RVER"),
    "swift": ("test:tester", "testing"),
}

# lines that mean a sanitizer found something
SANITIZER_RE = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer|MemorySanitizer)"
    r"|WARNING: ThreadSanitizer"
    r"|SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|ThreadSanitizer)"
    r"|: runtime error: "
)
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE,
                 signal.SIGILL, signal.SIGTRAP, signal.SIGSYS}

# environment variables never passed to the daemon unless a test asks (run.sh exports PG*
# for the C tests; a developer's AWS_* must not leak into the config-driven daemon)
_STRIP_ENV = re.compile(r"^(AWS_|PG|CUSTODYFS_TEST_)")


class HarnessError(Exception):
    pass


# --------------------------------------------------------------------------- utilities

def run(cmd, timeout=60, check=True, env=None, input=None):
    """Run a command, bounded; raise HarnessError with its output on failure."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, env=env, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise HarnessError(f"timed out after {timeout}s: {' '.join(map(str, cmd))}\n"
                           f"{e.stdout or ''}{e.stderr or ''}") from None
    if check and p.returncode != 0:
        raise HarnessError(f"exit {p.returncode}: {' '.join(map(str, cmd))}\n{p.stdout}{p.stderr}")
    return p


def wait_until(fn, timeout=10.0, interval=0.1, what="condition"):
    """Poll fn() until it returns something truthy (returned); raise after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # keep polling; report the last error
            last_exc = e
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout}s waiting for {what}"
                               + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def free_port(offsets=(0,)):
    """A port P such that P+o is free on 127.0.0.1 for every o in offsets."""
    p = _free_port_script.find(offsets)
    if p is None:
        raise HarnessError("no free port")
    return p


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _mountinfo_has(mnt):
    """True when mnt is a mount point (reads /proc/self/mountinfo, never touches the mount)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return False
    for line in data.splitlines():
        parts = line.split(" ")
        if len(parts) > 4:
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
            if mp == mnt:
                return True
    return False


def _s3_client(endpoint, key, secret):
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
        region_name=REGION,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      connect_timeout=5, read_timeout=60,
                      retries={"max_attempts": 2, "mode": "standard"}))


# --------------------------------------------------------------------------- the stack

class Stack:
    """PostgreSQL + one S3 backend, started once per session."""

    def __init__(self, tmp, backend=BACKEND):
        if backend not in CREDENTIALS:
            raise HarnessError(f"CUSTODYFS_S3_BACKEND must be s3rver or swift, not {backend!r}")
        self.tmp = tmp
        self.backend = backend
        self.access_key, self.secret_key = CREDENTIALS[backend]
        self.region = REGION
        self.reception_bucket = RECEPTION
        self.storage_bucket = STORAGE
        self.pg_dir = os.path.join(tmp, "servers")
        self.s3_dir = os.path.join(tmp, "servers")
        self.pg_port = None
        self.s3_port = None
        self.conninfo = None
        self.endpoint = None
        self.s3 = None
        # what the backend can do (skip what it cannot): s3rver has no UploadPartCopy (copies
        # above [fs] copy_threshold) and does not check signatures; Swift's s3api does both
        self.upload_part_copy = backend == "swift"
        self.verifies_sigv4 = backend == "swift"
        self.s3_stopped = False  # stopped on purpose (stop_s3): not a death to report
        self.pg_stopped = False
        self.active_mounts = []   # Mount objects currently mounted or mounting
        self._mount_seq = itertools.count(1)

    # -- servers
    def _server_env(self):
        env = dict(os.environ)
        env["CUSTODYFS_PG_FAST"] = "1"
        for v in ("AWS_CA_BUNDLE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
            env.pop(v, None)
        return env

    def start(self):
        os.makedirs(self.pg_dir, exist_ok=True)
        last = None
        for _ in range(3):  # a port can be taken between the probe and the bind: retry
            self.pg_port = free_port()
            try:
                out = run([str(SERVERS / "pg.sh"), "start", self.pg_dir, str(self.pg_port)],
                          timeout=120, env=self._server_env())
                self.conninfo = out.stdout.strip().splitlines()[-1]
                break
            except HarnessError as e:
                last = e
                run([str(SERVERS / "pg.sh"), "stop", self.pg_dir, "immediate"], timeout=60,
                    check=False)
        else:
            raise HarnessError(f"PostgreSQL did not start: {last}")
        offsets = (0, 10, 11, 12, 20) if self.backend == "swift" else (0,)
        for _ in range(3):
            self.s3_port = free_port(offsets)
            try:
                out = run([str(SERVERS / f"{self.backend}.sh"), "start", self.s3_dir,
                           str(self.s3_port), RECEPTION, STORAGE],
                          timeout=180, env=self._server_env())
                self.endpoint = out.stdout.strip().splitlines()[-1]
                break
            except HarnessError as e:
                last = e
                run([str(SERVERS / f"{self.backend}.sh"), "stop", self.s3_dir], timeout=60,
                    check=False)
        else:
            raise HarnessError(f"{self.backend} did not start: {last}")
        self.s3 = _s3_client(self.endpoint, self.access_key, self.secret_key)

    def stop(self):
        for m in list(self.active_mounts):
            try:
                m.unmount(check=False)
            except Exception:
                pass
        run([str(SERVERS / f"{self.backend}.sh"), "stop", self.s3_dir], timeout=90, check=False)
        run([str(SERVERS / "pg.sh"), "stop", self.pg_dir], timeout=90, check=False)

    def stop_s3(self):
        self.s3_stopped = True
        cmd = "proxy-stop" if self.backend == "swift" else "stop"
        run([str(SERVERS / f"{self.backend}.sh"), cmd, self.s3_dir], timeout=60)

    def start_s3(self):
        if self.backend == "swift":
            run([str(SERVERS / "swift.sh"), "proxy-start", self.s3_dir], timeout=120)
        else:
            run([str(SERVERS / "s3rver.sh"), "start", self.s3_dir, str(self.s3_port),
                 RECEPTION, STORAGE], timeout=120, env=self._server_env())
        self.s3_stopped = False

    def stop_pg(self, mode="fast"):
        self.pg_stopped = True
        run([str(SERVERS / "pg.sh"), "stop", self.pg_dir, mode], timeout=90)

    def start_pg(self):
        run([str(SERVERS / "pg.sh"), "start", self.pg_dir, str(self.pg_port)], timeout=120,
            env=self._server_env())
        self.pg_stopped = False

    def s3_up(self):
        url = f"{self.endpoint}/healthcheck"  # swift's; s3rver answers it with an S3 error
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status == 200 or self.backend == "s3rver"
        except urllib.error.HTTPError:
            return self.backend == "s3rver"
        except (OSError, http.client.HTTPException):
            return False

    def pg_up(self):
        try:
            return self.sql_value("select 1", user="postgres", dbname="postgres") == 1
        except psycopg2.Error:
            return False

    def _server_log_tail(self, path, n=30):
        try:
            with open(path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return f"--- last lines of {path}\n" + "\n".join(lines[-n:])

    def heal(self):
        """Bring back a server that is down. Returns a complaint when one died on its own
        (not through stop_s3/stop_pg): the test that was running gets it as a failure."""
        complaints = []
        if not self.s3_up():
            if not self.s3_stopped:
                log = (os.path.join(self.s3_dir, "s3rver", "s3rver.log") if self.backend == "s3rver"
                       else os.path.join(self.s3_dir, "swift", "run", "proxy.log"))
                complaints.append(f"the S3 server ({self.backend}) died during this test\n"
                                  + self._server_log_tail(log))
            if self.backend == "s3rver":
                run([str(SERVERS / "s3rver.sh"), "stop", self.s3_dir], timeout=60, check=False)
                self.start_s3()
            else:  # the proxy, or else the whole swift
                try:
                    self.start_s3()
                except HarnessError:
                    run([str(SERVERS / "swift.sh"), "start", self.s3_dir, str(self.s3_port),
                         RECEPTION, STORAGE], timeout=180, env=self._server_env())
        self.s3_stopped = False
        if not self.pg_up():
            if not self.pg_stopped:
                complaints.append("PostgreSQL died during this test\n" + self._server_log_tail(
                    os.path.join(self.pg_dir, "pg", "postgres.log")))
            self.start_pg()
        self.pg_stopped = False
        return complaints

    # -- SQL
    def _connect(self, user="custody", dbname="custody"):
        c = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user=user, dbname=dbname,
                             connect_timeout=10, options="-c statement_timeout=60000")
        c.autocommit = True
        return c

    def sql(self, query, params=None, user="custody", dbname="custody"):
        """Run one statement (autocommit) and return its rows as tuples ([] when none)."""
        c = self._connect(user, dbname)
        try:
            with c.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description is not None else []
        finally:
            c.close()

    def sql_value(self, query, params=None, user="custody", dbname="custody"):
        rows = self.sql(query, params, user, dbname)
        return rows[0][0] if rows else None

    def sql_dicts(self, query, params=None, user="custody", dbname="custody"):
        c = self._connect(user, dbname)
        try:
            with c.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(query, params)
                return [dict(r) for r in cur.fetchall()] if cur.description is not None else []
        finally:
            c.close()

    # -- reset
    def empty_buckets(self, buckets=(RECEPTION, STORAGE)):
        for b in buckets:
            try:
                for u in self.s3.list_multipart_uploads(Bucket=b).get("Uploads", []):
                    self.s3.abort_multipart_upload(Bucket=b, Key=u["Key"], UploadId=u["UploadId"])
            except ClientError:
                pass
            for _ in range(1000):
                keys = [o["Key"] for o in self.s3.list_objects_v2(Bucket=b).get("Contents", [])]
                if not keys:
                    break
                try:
                    r = self.s3.delete_objects(
                        Bucket=b, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
                    if r.get("Errors"):
                        raise ClientError({"Error": {"Code": "Partial"}}, "DeleteObjects")
                except ClientError:
                    for k in keys:
                        self.s3.delete_object(Bucket=b, Key=k)
            else:
                raise HarnessError(f"could not empty bucket {b}")

    def reset(self):
        """A clean store: database 'custody' recreated, both buckets emptied."""
        busy = [m for m in self.active_mounts if m.mounted and not m.auto_remount]
        if busy:
            raise HarnessError(
                "reset while a daemon of this test is mounted (" + ", ".join(m.mnt for m in busy)
                + "): use mount_factory(reset=False) for a second mount on the same store")
        # the module-scoped `mount` steps aside; it is remounted (on the clean store) before
        # the next test that uses it
        for m in list(self.active_mounts):
            if m.mounted:
                m.unmount()
        if not self._reset_schema():
            self.sql("DROP DATABASE IF EXISTS custody WITH (FORCE)", user="postgres",
                     dbname="postgres")
            self.sql("CREATE DATABASE custody OWNER custody", user="postgres", dbname="postgres")
        self.empty_buckets()

    def _reset_schema(self):
        """The database 'custody' as CREATE DATABASE makes it, faster than dropping it (about
        a second less a reset, under load, which is most of a test's fixed cost): every other
        session ended (waited for), then the public schema, which holds everything the
        product and the tests create there, dropped and made again as PostgreSQL 15 makes it
        (owned by pg_database_owner, USAGE for PUBLIC). Refused (False: the caller drops the
        database) when the database is not there or holds another schema of its own, or a
        session would not end."""
        try:
            c = self._connect("postgres", "custody")
        except psycopg2.OperationalError:
            return False  # not there yet
        try:
            with c.cursor() as cur:
                cur.execute("SELECT pg_catalog.bool_and(pg_terminate_backend(pid, 10000))"
                            " FROM pg_stat_activity WHERE datname = 'custody'"
                            " AND pid <> pg_backend_pid()")
                ended = cur.fetchone()[0]
                cur.execute("SELECT count(*) FROM pg_namespace WHERE nspname NOT IN"
                            " ('public', 'information_schema') AND nspname NOT LIKE 'pg\\_%'")
                others = cur.fetchone()[0]
                if ended is False or others:
                    return False
                cur.execute("DROP SCHEMA public CASCADE")
                cur.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
                cur.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
                cur.execute("COMMENT ON SCHEMA public IS 'standard public schema'")
            return True
        except psycopg2.Error:
            return False
        finally:
            c.close()

    def new_mount(self, name, config=None, env=None, opts=None, wrapper=None):
        n = next(self._mount_seq)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:40] or "m"
        m = Mount(self, f"{n:03d}-{safe}", config or {}, env, opts, wrapper)
        return m


# --------------------------------------------------------------------------- a mount

class Mount:
    def __init__(self, stack, name, config_overrides, env, opts=None, wrapper=None):
        self.stack = stack
        self.opts = opts  # extra -o mount options ("allow_other"), or None
        self.wrapper = list(wrapper or [])  # command prefix that execs the daemon, or []
        self.name = name
        self.base = os.path.join(stack.tmp, "mounts", name)
        self.mnt = os.path.join(self.base, "mnt")
        self.spool = os.path.join(self.base, "spool")
        self.config = os.path.join(self.base, "custodyfs.conf")
        self.log_path = os.path.join(self.base, "daemon.log")
        self.inbox = os.path.join(self.mnt, "inbox")
        self.projects = os.path.join(self.mnt, "projects")
        self.audit = os.path.join(self.mnt, "audit")
        self.s3 = stack.s3
        self.reception_bucket = stack.reception_bucket
        self.storage_bucket = stack.storage_bucket
        self.extra_env = env or {}
        self.proc = None
        self.mounted = False
        self.expected_death = False
        self._harness_killed = False
        self.auto_remount = False  # the module `mount`: remounted before a test if it died
        self.problems = []  # crash/sanitizer findings not yet reported
        self._scanned = 0   # log offset already checked for sanitizer reports
        for d in (self.mnt, self.spool):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.spool, 0o700)
        self.overrides = {}
        self.write_config(config_overrides)

    # -- config
    def base_config(self):
        st = self.stack
        return {
            "s3": {
                "endpoint": st.endpoint,
                "region": st.region,
                "access_key_id": st.access_key,
                "secret_access_key": st.secret_key,
                "reception_bucket": st.reception_bucket,
                "storage_bucket": st.storage_bucket,
                "path_style": "true",
                "verify_tls": "true",
            },
            "postgres": {"conninfo": st.conninfo},
            # an upload by another route is logged after 1 s (default ~70 s: the time an
            # uploading mount may take to commit its own row), so tests need not wait
            "fs": {"spool_dir": self.spool, "dedup": "content", "foreign_grace_ms": "1000"},
        }

    def write_config(self, overrides=None):
        """(Re)write the 0600 config; overrides merge onto the previous ones."""
        for sec, kv in (overrides or {}).items():
            self.overrides.setdefault(sec, {}).update(kv)
        cfg = self.base_config()
        for sec, kv in self.overrides.items():
            s = cfg.setdefault(sec, {})
            for k, v in kv.items():
                if v is None:
                    s.pop(k, None)
                else:
                    s[k] = str(v).lower() if isinstance(v, bool) else str(v)
        text = "# written by tests/integration/conftest.py\n"
        for sec, kv in cfg.items():
            text += f"\n[{sec}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items())
        fd = os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        return self.config

    # -- helpers
    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def sql(self, query, params=None, user="custody"):
        return self.stack.sql(query, params, user)

    def sql_value(self, query, params=None, user="custody"):
        return self.stack.sql_value(query, params, user)

    def sql_dicts(self, query, params=None, user="custody"):
        return self.stack.sql_dicts(query, params, user)

    def stop_s3(self):
        self.stack.stop_s3()

    def start_s3(self):
        self.stack.start_s3()

    def stop_pg(self, mode="fast"):
        self.stack.stop_pg(mode)

    def start_pg(self):
        self.stack.start_pg()

    wait_until = staticmethod(wait_until)
    sha256 = staticmethod(sha256_file)

    @staticmethod
    def sha256_bytes(b):
        return hashlib.sha256(b).hexdigest()

    @staticmethod
    def xxh128_bytes(b):
        import xxhash  # python3-xxhash
        return xxhash.xxh3_128_hexdigest(b)

    def daemon_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _log_note(self, msg):
        with open(self.log_path, "a") as f:
            f.write(f"=== harness {time.strftime('%H:%M:%S')}: {msg}\n")

    def _daemon_env(self):
        env = {k: v for k, v in os.environ.items() if not _STRIP_ENV.match(k)}
        for v in ("CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            env.pop(v, None)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:print_summary=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:print_summary=1")
        # a -Db_sanitize=thread daemon: keep running after a report (the harness fails the test
        # that caused it), with the suppressions for the uninstrumented libraries only
        env.setdefault("TSAN_OPTIONS", f"suppressions={REPO}/tests/tsan.supp:halt_on_error=0"
                       ":report_signal_unsafe=0:second_deadlock_stack=1")
        env.update(self.extra_env)
        return env

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args, timeout=120, input=None, env=None):
        """Run the custodyfs binary with ARGS (batch tools); returns CompletedProcess (text)."""
        e = self._daemon_env()
        e.update(env or {})
        try:
            return subprocess.run([BIN, *map(str, args)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=timeout, env=e,
                                  input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as ex:
            raise HarnessError(f"custodyfs {' '.join(map(str, args))} timed out after {timeout}s\n"
                               f"{ex.stdout or ''}{ex.stderr or ''}") from None

    # -- lifecycle
    def mount(self, timeout=MOUNT_TIMEOUT):
        if self.mounted:
            return self
        if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
            raise HarnessError(f"custodyfs binary not found at {BIN}: build it first "
                               "(meson setup build && meson compile -C build) or set CUSTODYFS_BIN")
        if _mountinfo_has(self.mnt):  # a leftover (crash): clear it
            run(["fusermount3", "-uz", self.mnt], timeout=15, check=False)
        o = f"config={self.config}" + (f",{self.opts}" if self.opts else "")
        if LOWLEVEL:  # the daemon on libfuse's low-level API (fs/ll.c)
            o += ",lowlevel"
        argv = [*self.wrapper, BIN, "-f", "-o", o, self.mnt]
        self._log_note("mount " + " ".join(argv))
        self.expected_death = False
        self._harness_killed = False
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(argv,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=self._daemon_env(), start_new_session=True)
        finally:
            log.close()
        with open(os.path.join(self.base, "daemon.pid"), "w") as f:  # for run.sh's cleanup
            f.write(f"{self.proc.pid}\n")
        self.mounted = True
        if self not in self.stack.active_mounts:
            self.stack.active_mounts.append(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self._cleanup_after_death()
                raise HarnessError(f"custodyfs exited with {rc} before the mount appeared\n"
                                   + self.log_tail())
            if _mountinfo_has(self.mnt):
                # stat in a child: a hung daemon must not hang the harness
                p = run(["timeout", "-k", "1", "5", "test", "-d", self.inbox], timeout=10,
                        check=False)
                if p.returncode == 0:
                    return self
            if time.monotonic() > deadline:
                self._kill()
                self._cleanup_after_death()
                raise HarnessError(f"mount did not show {self.inbox} within {timeout}s\n"
                                   + self.log_tail())
            time.sleep(0.1)

    def _kill(self, sig=signal.SIGKILL):
        if self.alive():
            self._harness_killed = True
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass

    def _cleanup_after_death(self):
        if _mountinfo_has(self.mnt):
            run(["fusermount3", "-uz", self.mnt], timeout=15, check=False)
        self.mounted = False
        if self in self.stack.active_mounts:
            self.stack.active_mounts.remove(self)

    def unmount(self, timeout=30, check=True):
        """Unmount and wait for the daemon; with check, raise on a crash or sanitizer report."""
        if not self.mounted:
            return
        self._log_note("unmount")
        # -u fails with EBUSY while something still uses the mount: retry a little, then -uz
        deadline = time.monotonic() + 5
        lazy = False
        while _mountinfo_has(self.mnt):
            p = run(["fusermount3", "-u", self.mnt], timeout=15, check=False)
            if p.returncode == 0 or not _mountinfo_has(self.mnt):
                break
            if time.monotonic() > deadline or not self.alive():
                # still busy (an open file or cwd inside): detach lazily; the daemon cannot see
                # the unmount before the last user goes, so it is stopped below, blamelessly
                self._log_note(f"mount busy ({p.stderr.strip()}): lazy unmount")
                run(["fusermount3", "-uz", self.mnt], timeout=15, check=False)
                lazy = True
                break
            time.sleep(0.2)
        killed = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5 if lazy else timeout)
            except subprocess.TimeoutExpired:
                self._log_note("daemon still running after unmount: SIGTERM")
                killed = "SIGTERM"
                self._kill(signal.SIGTERM)
                if self.alive():
                    killed = "SIGKILL"
                    self._kill(signal.SIGKILL)
                if lazy:
                    killed = None
        self._cleanup_after_death()
        self._collect_problems(final=True, killed=killed)
        if check:
            self.raise_problems()

    def restart(self, config=None, timeout=MOUNT_TIMEOUT):
        self.unmount()
        if config:
            self.write_config(config)
        return self.mount(timeout=timeout)

    def crash(self, sig=signal.SIGKILL):
        """Kill the daemon like a crash (not reported as a failure) and drop the dead mount."""
        self._log_note(f"crash: killing daemon with {signal.Signals(sig).name}")
        self.expected_death = True
        self._kill(sig)
        self._cleanup_after_death()

    # -- health
    def log_tail(self, n=60):
        lines = self.daemon_log().splitlines()
        return f"--- last {min(n, len(lines))} lines of {self.log_path}\n" + "\n".join(lines[-n:])

    def _collect_problems(self, final=False, killed=None):
        text = self.daemon_log()
        new = text[self._scanned:]
        self._scanned = len(text)
        hits = [ln for ln in new.splitlines() if SANITIZER_RE.search(ln)]
        if hits:
            # show the report: from the first sanitizer line, bounded
            start = new.find(hits[0])
            excerpt = new[max(0, start - 200):start + 6000]
            self.problems.append(f"sanitizer report in the daemon log ({self.log_path}):\n{excerpt}")
        if self.proc is not None and self.proc.poll() is not None and not self.expected_death:
            rc = self.proc.returncode
            if rc < 0 and not self._harness_killed:
                sig = signal.Signals(-rc)
                what = "crashed" if sig in CRASH_SIGNALS else "was killed"
                self.problems.append(f"custodyfs daemon {what} with {sig.name}\n" + self.log_tail())
            elif rc > 0 and not final:
                self.problems.append(f"custodyfs daemon exited with status {rc} while mounted\n"
                                     + self.log_tail())
            elif rc > 0 and final and not self._harness_killed:
                self.problems.append(f"custodyfs daemon exited with status {rc} at unmount\n"
                                     + self.log_tail())
            if not final:
                self._cleanup_after_death()
        if killed:
            self.problems.append(f"custodyfs daemon did not exit after unmount; it got {killed}\n"
                                 + self.log_tail())

    def raise_problems(self):
        if self.problems:
            msg = "\n\n".join(self.problems)
            self.problems = []
            raise HarnessError(msg)

    def check(self):
        """Raise if the daemon died or reported a sanitizer error since the last check."""
        if self.mounted or self.proc is not None:
            self._collect_problems()
        self.raise_problems()


# --------------------------------------------------------------------------- fixtures

def pytest_configure(config):
    config.addinivalue_line("markers", "custodyfs_config(cfg): config overrides for fresh_mount")
    config.addinivalue_line("markers", "both_backends: a regression test that also runs on the "
                            "Swift pass of a whole-suite run (CUSTODYFS_DESELECT_REGRESSIONS)")
    config.addinivalue_line("markers", "store_independent: a test of the database alone (no S3 "
                            "behaviour): left out of the Swift pass of a whole-suite run "
                            "(CUSTODYFS_DESELECT_REGRESSIONS)")
    config.addinivalue_line("markers", "volume: a scale test (thousands of files or rows): left "
                            "out of the sanitizer passes of a whole-suite run "
                            "(CUSTODYFS_DESELECT_VOLUME)")


_REGRESSION_FILE = re.compile(r"^test_(review_.*|.*_review\d*)\.py$")


def _left_out(it):
    """Why a whole-suite run's pass leaves this test to another pass (None: it runs here)."""
    if os.environ.get("CUSTODYFS_DESELECT_REGRESSIONS") == "1":
        if (_REGRESSION_FILE.match(it.path.name) is not None
                and it.get_closest_marker("both_backends") is None):
            return "regression"
        if it.get_closest_marker("store_independent") is not None:
            return "store_independent"
    if (os.environ.get("CUSTODYFS_DESELECT_VOLUME") == "1"
            and it.get_closest_marker("volume") is not None):
        return "volume"
    return None


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for it in items:
        (keep if _left_out(it) is None else drop).append(it)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


_STACKS = []  # the live Stack (a list so the watch fixture needs no fixture lookup)


@pytest.fixture(scope="session")
def stack(request):
    parent = os.environ.get("CUSTODYFS_TEST_TMP") or "/tmp"
    tmp = tempfile.mkdtemp(prefix="custodyfs-it-", dir=parent)
    os.chmod(tmp, 0o755)  # the postgres user must reach tmp/servers/pg
    st = Stack(tmp)
    ok = False
    try:
        st.start()
        ok = True
        _STACKS.append(st)
        yield st
    finally:
        if st in _STACKS:
            _STACKS.remove(st)
        st.stop()
        if ok and not KEEP_TMP and not request.session.testsfailed:
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # daemon logs and data, for a look after a failure
            print(f"\ncustodyfs test files kept in {tmp}", file=sys.stderr)


@pytest.fixture(scope="session")
def s3(stack):
    return stack.s3


def _module_config(request):
    return getattr(request.module, "CUSTODYFS_CONFIG", None) or {}


def _teardown(m):
    try:
        m.unmount(check=False)
    finally:
        m.raise_problems()


@pytest.fixture(scope="module")
def mount(stack, request):
    stack.reset()
    m = stack.new_mount(request.module.__name__.rsplit(".", 1)[-1], _module_config(request))
    m.mount()
    m.auto_remount = True
    yield m
    m.auto_remount = False
    _teardown(m)


@pytest.fixture
def fresh_mount(stack, request):
    cfg = dict(_module_config(request))
    marker = request.node.get_closest_marker("custodyfs_config")
    if marker:
        for sec, kv in marker.args[0].items():
            cfg[sec] = {**cfg.get(sec, {}), **kv}
    stack.reset()
    m = stack.new_mount(request.node.name, cfg)
    m.mount()
    yield m
    _teardown(m)


@pytest.fixture
def mount_factory(stack, request):
    made = []

    def make(config=None, reset=True, start=True, env=None, name=None, opts=None, wrapper=None):
        if reset:
            stack.reset()
        m = stack.new_mount(name or request.node.name, config, env, opts, wrapper)
        made.append(m)
        if start:
            m.mount()
        return m

    yield make
    errors = []
    for m in reversed(made):
        try:
            _teardown(m)
        except HarnessError as e:
            errors.append(str(e))
    if errors:
        raise HarnessError("\n\n".join(errors))


# [fs] foreign_uid/gid: files with no attributes of their own show this owner
FOREIGN_IDS = {"fs": {"foreign_uid": "3000", "foreign_gid": "3001"}}


@contextlib.contextmanager
def proxied_mount(stack, mount_factory, config=None, **kw):
    """(mount, proxy): a FaultProxy in front of the stack's store and a mount through it
    (config merged over [s3] endpoint; kw to mount_factory). At the end the proxy passes
    everything, lets its held requests go, and is closed."""
    from faultproxy import FaultProxy
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory(config={"s3": {"endpoint": px.url}, **(config or {})}, **kw)
        yield m, px
    finally:
        px.rule = None
        px.release.set()
        px.close()


@pytest.fixture
def fusectl_exclusive():
    """Held for a test (its mounts' teardown too, when asked before mount_factory) that
    unmounts fusectl or leaves a daemon stuck in the kernel (checks.fusectl_exclusive)."""
    import checks
    with checks.fusectl_exclusive():
        yield


@pytest.fixture
def proxied(stack, mount_factory, uniq):
    """(mount, proxy, dir): a fresh mount (FOREIGN_IDS) whose S3 endpoint is a FaultProxy, and
    a directory of inbox/ for the test's files."""
    with proxied_mount(stack, mount_factory, FOREIGN_IDS) as (m, px):
        os.mkdir(m.path("inbox", uniq))
        yield m, px, uniq


_uniq_seq = itertools.count(1)


@pytest.fixture
def uniq(request):
    base = re.sub(r"^test_?", "", request.node.originalname or request.node.name).lower()
    base = re.sub(r"[^a-z0-9]+", "-", base).strip("-")[:40].strip("-")
    return f"t{next(_uniq_seq)}" + (f"-{base}" if base else "")


@pytest.fixture(autouse=True)
def _custodyfs_watch(request):
    """Before each test using `mount`: remount it if its daemon died, was crash()ed or stepped
    aside for a reset. After each test: fail it if a daemon died or printed a sanitizer report,
    or if a test server died; restart servers that are down (also those stopped on purpose)."""
    if "mount" in request.fixturenames:
        m = request.getfixturevalue("mount")
        if not m.mounted:
            m.mount()
    yield
    problems = []
    for st in _STACKS:
        for m in list(st.active_mounts):
            try:
                m.check()
            except HarnessError as e:
                problems.append(str(e))
        # servers a test stopped come back; one that died is this test's failure
        try:
            problems.extend(st.heal())
        except HarnessError as e:
            problems.append(f"could not restart the test servers: {e}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
