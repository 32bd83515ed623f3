"""An HTTPS endpoint in front of the test S3 server: a throwaway certificate authority (made
with the openssl command) and a TLS-terminating TCP proxy (Python's ssl) that passes the
decrypted bytes to the plain endpoint unchanged (the Host header too, so SigV4 signatures,
which Swift checks, stay valid). Used by test_tls.py.

    ca = ThrowawayCA(dirpath)            # ca.pem, and server.pem/server.key for 127.0.0.1
    px = TlsProxy(stack.endpoint, ca)    # px.url = https://127.0.0.1:PORT
    ...
    px.close()

px.handshakes counts the TLS handshakes that completed, px.refused those a client broke off
(e.g. curl that does not trust the certificate)."""
import os
import select
import socket
import ssl
import subprocess
import threading
import urllib.parse


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr}")


class ThrowawayCA:
    """A CA and a server certificate it signed, for DNS:localhost and IP:127.0.0.1, in dirpath:
    ca.pem (the CA's certificate: what ca_file points at), server.pem, server.key."""

    def __init__(self, dirpath, name="custodyfs test CA"):
        os.makedirs(dirpath, exist_ok=True)
        self.dir = dirpath
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", f"/CN={name}", "-keyout", "ca.key", "-out", "ca.pem",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=dirpath)
        with open(os.path.join(dirpath, "server.ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                 "-keyout", "server.key", "-out", "server.csr", cwd=dirpath)
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "server.ext",
                 "-out", "server.pem", cwd=dirpath)
        self.ca_pem = os.path.join(dirpath, "ca.pem")
        self.cert = os.path.join(dirpath, "server.pem")
        self.key = os.path.join(dirpath, "server.key")


class TlsProxy:
    def __init__(self, upstream, ca):
        u = urllib.parse.urlsplit(upstream)
        self.up = (u.hostname, u.port)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(ca.cert, ca.key)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.handshakes = 0
        self.refused = 0
        self.lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(30)
        try:
            s = self.ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError):
            with self.lock:
                self.refused += 1
            c.close()
            return
        with self.lock:
            self.handshakes += 1
        try:
            up = socket.create_connection(self.up, timeout=30)
        except OSError:
            s.close()
            return
        try:
            s.settimeout(None)
            up.settimeout(None)
            self._pump(s, up)
        finally:
            for x in (s, up):
                try:
                    x.close()
                except OSError:
                    pass

    def _pump(self, s, up):
        while not self.closed:
            # bytes already decrypted and buffered in the SSL object count as readable
            ready = [s] if s.pending() else select.select([s, up], [], [], 1.0)[0]
            for r in ready:
                try:
                    data = r.recv(65536)
                except ssl.SSLWantReadError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                (up if r is s else s).sendall(data)

    def close(self):
        self.closed = True
        try:
            self.lsock.close()
        except OSError:
            pass
