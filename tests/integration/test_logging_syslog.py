"""The default log path (issue 8 item 3a; custodyfs(1), LOGGING): mounted without -f, custodyfs
daemonizes and logs through syslog(3), facility daemon, one datagram per line to /dev/log.
Every other test mounts with -f (stderr); this one does not.

The daemon runs in a private mount namespace whose /dev/log is a socket the test reads
(nssyslog.py), so the host's syslog is neither needed nor touched. What arrives is checked
against what was done: a file received (its reception_audit row: SQL) and one the store
refuses (a FaultProxy answers its PUT 403): priority <30> (daemon.info) for the first's event
line, <27> (daemon.err) for the second's, and no secret in any line."""
import json
import os
import re
import subprocess
import sys

from conftest import BIN
from faultproxy import FaultProxy

HERE = os.path.dirname(os.path.abspath(__file__))
DAEMON = 3  # LOG_DAEMON >> 3
PRI = {"err": 3, "warning": 4, "info": 6, "debug": 7}
LINE = re.compile(r"^<(\d+)>(\w{3} [ \d]\d \d\d:\d\d:\d\d) custodyfs\[(\d+)\]: (.*)$", re.S)
DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
          b"<Message>Access Denied</Message></Error>")


def parse(datagrams):
    """[(facility, severity, pid, message)] of the datagrams, each checked for syslog(3)'s form."""
    out = []
    for d in datagrams:
        mt = LINE.match(d)
        assert mt, f"not a syslog(3) datagram: {d!r}"
        pri = int(mt.group(1))
        msg = mt.group(4)
        assert "\n" not in msg.rstrip("\n"), d
        out.append((pri >> 3, pri & 7, int(mt.group(3)), msg))
    return out


def kv(msg):
    return dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', msg))


def test_default_log_path_is_syslog_daemon_facility_with_priorities(stack, mount_factory, uniq,
                                                                    tmp_path):
    px = FaultProxy(stack.endpoint)
    try:
        m = mount_factory({"s3": {"endpoint": px.url}}, start=False)
        ok, refused = f"{uniq}-ok.txt", f"{uniq}-refused.txt"
        ok_data, refused_data = b"received, logged to syslog\n", b"not for this store\n"
        px.rule = lambda meth, path, hdrs: ("status", 403, DENIED) \
            if meth == "PUT" and path.split("?")[0].endswith(refused) else None
        work = tmp_path / "ns"
        work.mkdir()
        env = m._daemon_env()
        r = subprocess.run(
            ["unshare", "-m", "--propagation", "private", sys.executable,
             os.path.join(HERE, "nssyslog.py"), BIN, m.config, m.mnt, str(work),
             json.dumps([[ok, ok_data.hex()], [refused, refused_data.hex()]])],
            capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        # the daemonizing parent: exit 0 once mounted, nothing on its stdout/stderr
        assert res["rc"] == 0 and res["out"] == "", res
        assert res["writes"] == {ok: None, refused: "EACCES"}, res["writes"]
        lines = parse(res["lines"])
        text = "\n".join(res["lines"])
        assert lines, "nothing reached /dev/log"
        # facility daemon throughout; the setup lines come from the process started, the rest
        # (events, the unmount) from the daemonized child it forked
        assert {f for f, _, _, _ in lines} == {DAEMON}, lines
        pids = {pid for _, _, pid, msg in lines
                if msg.startswith("event=") or msg.startswith("unmounted ")}
        assert len(pids) == 1, lines
        by_msg = [(s, msg) for _, s, _, msg in lines]
        assert any(s == PRI["info"] and msg.startswith(f"mounted {m.mnt} ")
                   for s, msg in by_msg), text
        assert any(s == PRI["info"] and msg == f"unmounted {m.mnt}" for s, msg in by_msg), text
        # the received file: one event line at daemon.info, matching its row
        rows = m.sql("SELECT id, size_bytes, sha256 FROM reception_audit WHERE object_key = %s",
                     (ok,))
        assert len(rows) == 1 and rows[0][2] == m.sha256_bytes(ok_data), rows
        recv = [(s, kv(msg)) for s, msg in by_msg
                if msg.startswith("event=") and kv(msg).get("key") == ok]
        assert len(recv) == 1, text
        s, e = recv[0]
        assert s == PRI["info"] and e["event"] == "received", recv
        assert e["sha256"] == rows[0][2] and e["size"] == str(rows[0][1]) \
            and e["id"] == str(rows[0][0]), e
        # the refused one: one error event at daemon.err, no row
        assert m.sql("SELECT 1 FROM reception_audit WHERE object_key = %s", (refused,)) == []
        errs = [(s, kv(msg)) for s, msg in by_msg
                if msg.startswith("event=") and kv(msg).get("key") == refused]
        assert len(errs) == 1, text
        s, e = errs[0]
        assert s == PRI["err"] and e["event"] == "error" and e["errno"] == "EACCES" \
            and e["s3_code"] == "AccessDenied", errs
        # every severity is one of the four the daemon uses; no secret anywhere
        assert {s for s, _ in by_msg} <= set(PRI.values()), by_msg
        for secret in (stack.secret_key, stack.access_key, "Authorization", "Signature="):
            assert secret not in text, secret
    finally:
        px.rule = None
        px.close()
