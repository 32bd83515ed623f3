"""A small HTTP proxy put in front of the test S3 endpoint to inject faults the servers cannot
produce on demand: 500/503 answers, a 200 OK whose body is an S3 error, a server that accepts
the request and never answers. Used by test_faults.py / test_hangs.py (not by conftest.py).

    px = FaultProxy(stack.endpoint)
    m = mount_factory(config={"s3": {"endpoint": px.url}})
    px.rule = lambda method, path, headers: ("status", 503, SLOWDOWN) if method == "PUT" else None
    ...
    px.close()

The Host header is forwarded unchanged, so SigV4 signatures (checked by Swift) stay valid.
"""
import http.client
import http.server
import socket
import socketserver
import struct
import threading
import urllib.parse

HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
       "upgrade", "expect"}


SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b'<Message>Please reduce your request rate.</Message></Error>')
INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
            b'<Message>We encountered an internal error. Please try again.</Message></Error>')


class FaultProxy:
    """rule: None (pass everything through) or callable(method, path, headers) returning None
    (pass) or an action: ("status", code, body) answer without forwarding; ("hang",) never
    answer (until release is set or the proxy closes); ("close",) drop the connection;
    ("after", (code, body)) forward, then answer code/body instead of the real reply;
    ("reset_after",) forward, then reset the connection (TCP RST) instead of answering (the
    request has taken effect at the store; its caller gets no answer at all);
    ("late", seconds) forward, then hold the real reply that long (the request has taken
    effect at the store; its caller does not know yet); ("hold", seconds) hold the request
    that long before forwarding it (it has not reached the store yet).
    Both wait at most until release is set.
    log: (method, path, action) of every request."""

    def __init__(self, upstream):
        u = urllib.parse.urlsplit(upstream)
        self.up_host, self.up_port = u.hostname, u.port
        self.rule = None
        self.log = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        proxy = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        n = int(self.rfile.readline().split(b";")[0], 16)
                        if n == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(n)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _answer(self, code, body, headers=()):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                if not any(k.lower() == "content-type" for k, _ in headers):
                    self.send_header("Content-Type", "application/xml")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self):
                body = self._body()
                rule = proxy.rule
                action = rule(self.command, self.path, self.headers) if rule else None
                with proxy.lock:
                    proxy.log.append((self.command, self.path, action[0] if action else "pass"))
                if action and action[0] == "status":
                    return self._answer(action[1], action[2])
                if action and action[0] == "hang":
                    proxy.release.wait(600)
                    self.close_connection = True
                    return
                if action and action[0] == "close":
                    self.close_connection = True
                    return
                if action and action[0] == "hold":
                    proxy.release.wait(action[1])
                c = http.client.HTTPConnection(proxy.up_host, proxy.up_port, timeout=120)
                try:
                    hdrs = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                    c.putrequest(self.command, self.path, skip_host=True,
                                 skip_accept_encoding=True)
                    for k, v in hdrs.items():
                        c.putheader(k, v)
                    if "content-length" not in {k.lower() for k in hdrs} and body:
                        c.putheader("Content-Length", str(len(body)))
                    c.endheaders(body if body else None)
                    r = c.getresponse()
                    data = r.read()
                finally:
                    c.close()
                if action and action[0] == "after":
                    return self._answer(action[1][0], action[1][1])
                if action and action[0] == "reset_after":
                    # SO_LINGER 0: close() sends a RST, not a FIN
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()  # (its fd closes with rfile/wfile, no FIN)
                    return
                if action and action[0] == "late":
                    proxy.release.wait(action[1])
                rh = [(k, v) for k, v in r.getheaders()
                      if k.lower() not in HOP and k.lower() != "content-length"]
                self.send_response(r.status, r.reason)
                for k, v in rh:
                    self.send_header(k, v)
                # a HEAD answer has no body but the length of the object it describes
                length = r.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = S(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
