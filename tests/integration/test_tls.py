"""TLS to the store (SPEC §6: "TLS is verified by default"; [s3] verify_tls and ca_file;
examples/minio-tls.conf; issue 8 item 6).

The store is reached over HTTPS through a TLS-terminating proxy (tlsproxy.py) whose
certificate a throwaway CA, made for this test, signed. What the mount wrote is checked in the
plain store with boto3 and in reception_audit, never through the mount.

The daemon's environment names the system's CA store explicitly (SSL_CERT_FILE, SSL_CERT_DIR:
OpenSSL's defaults on Debian), and the harness drops AWS_CA_BUNDLE and CURL_CA_BUNDLE, so what
is trusted comes from the config file alone, whatever the shell that runs the tests sets."""
import os
import subprocess
import time

import pytest

from conftest import BIN, _mountinfo_has
from tlsproxy import ThrowawayCA, TlsProxy

SYSTEM_CAS = {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
              "SSL_CERT_DIR": "/etc/ssl/certs"}


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return ThrowawayCA(str(tmp_path_factory.mktemp("tls-ca")))


@pytest.fixture
def https(stack, ca):
    px = TlsProxy(stack.endpoint, ca)
    yield px
    px.close()


def _received(m, name, data):
    """The file written through the mount is in the plain store and has its one row."""
    with open(m.path("inbox", name), "wb") as f:
        f.write(data)
    body = m.s3.get_object(Bucket=m.reception_bucket, Key=name)["Body"].read()
    assert body == data
    rows = m.sql("SELECT size_bytes, sha256 FROM reception_audit WHERE object_key = %s "
                 "AND removed_at IS NULL", (name,))
    assert rows == [(len(data), m.sha256_bytes(data))], rows


def test_ca_file_of_a_private_ca_is_trusted(mount_factory, https, ca, uniq):
    m = mount_factory({"s3": {"endpoint": https.url, "verify_tls": "true",
                              "ca_file": ca.ca_pem}}, env=SYSTEM_CAS)
    assert sorted(os.listdir(m.mnt)) == ["audit", "inbox", "projects"]
    _received(m, f"{uniq}.txt", b"over TLS, verified against ca_file\n")
    assert os.listdir(m.inbox) == [f"{uniq}.txt"]
    assert https.handshakes >= 1 and https.refused == 0


def test_verify_tls_false_accepts_any_certificate(mount_factory, https, uniq):
    m = mount_factory({"s3": {"endpoint": https.url, "verify_tls": "false"}}, env=SYSTEM_CAS)
    _received(m, f"{uniq}.txt", b"over TLS, not verified\n")
    assert https.handshakes >= 1 and https.refused == 0


@pytest.mark.parametrize("case", ["unknown-ca", "missing-ca-file"])
def test_untrusted_certificate_is_refused_and_nothing_is_mounted(mount_factory, https, case):
    """unknown-ca: verify_tls on (the default: the key is left out) and no ca_file, so the
    proxy's certificate is from a CA the system does not trust; missing-ca-file: ca_file names
    no file. The daemon says so on stderr (the journal under systemd), with curl's reason and
    what to set, and exits 1 without mounting; the database is not touched."""
    s3 = {"endpoint": https.url, "verify_tls": None}
    if case == "missing-ca-file":
        s3["ca_file"] = "/nonexistent/custodyfs-test-ca.pem"
    m = mount_factory({"s3": s3}, start=False)
    env = m._daemon_env()
    env.update(SYSTEM_CAS)
    log_path = os.path.join(m.base, f"{case}.log")
    with open(log_path, "w") as log:
        p = subprocess.Popen([BIN, "-f", "-o", f"config={m.config}", m.mnt], env=env,
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        mounted = False
        while p.poll() is None and time.monotonic() < deadline:
            mounted = mounted or _mountinfo_has(m.mnt)
            time.sleep(0.05)
        rc = p.poll()
        text = open(log_path).read()
        assert rc is not None, "the daemon still runs against a store it cannot trust\n" + text
        assert rc == 1, text
        assert not mounted and not _mountinfo_has(m.mnt), text
        assert https.handshakes == 0, (https.refused, https.handshakes)
        if case == "unknown-ca":
            assert https.refused >= 1  # curl broke the handshake off
            assert "certificate" in text.lower(), text
        else:
            assert "/nonexistent/custodyfs-test-ca.pem" in text, text
        # a clear message: which endpoint, that its certificate cannot be verified, what to set
        assert f"[s3] endpoint {https.url}: the store's TLS certificate cannot be verified: " \
            in text, text
        assert "Set [s3] ca_file" in text, text
        assert m.stack.secret_key not in text
        assert "mounted" not in text, text
        # refused before the database is opened: not even the migrations ran
        assert m.sql_value("SELECT to_regclass('reception_audit') IS NULL"), text
    finally:
        if p.poll() is None:
            subprocess.run(["fusermount3", "-uz", m.mnt], capture_output=True)
            p.kill()
            p.wait(timeout=30)
