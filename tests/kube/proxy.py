"""A loopback HTTPS proxy in front of the apiserver that presents it as serving `policy/v1`.

v1.20 serves Eviction and PodDisruptionBudget only as `policy/v1beta1`; every EKS version the
product supports serves `policy/v1`, and the product speaks only that. The proxy rewrites:
- the body of POST .../pods/<name>/eviction: apiVersion policy/v1 -> policy/v1beta1;
- paths /apis/policy/v1/... -> /apis/policy/v1beta1/..., with `policy/v1` in their request bodies
  made `policy/v1beta1`, and `policy/v1beta1` back to `policy/v1` in their responses (the object
  shapes the product reads are the same in both versions).
Everything else passes through untouched; responses are streamed, so watches work.

It also counts requests (method, path) and the apiserver's answers for benchmarks and tests, and
a test can inject failures (set_fault): the hook is asked before each request is forwarded.
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_POLICY_V1 = re.compile(r"^/apis/policy/v1(?=/|$|\?)")
_EVICTION = re.compile(r"^/api/v1/namespaces/[^/]+/pods/[^/]+/eviction$")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate"}

# What a fault hook returns: None to forward the request, or (status, body) to answer instead,
# or "reset" to drop the connection.
Fault = Callable[[str, str], "tuple[int, bytes] | str | None"]


class PolicyProxy:
    def __init__(self, upstream: str, ca_file: str, cert_file: str, key_file: str) -> None:
        self.upstream = urlsplit(upstream)
        self._upstream_tls = ssl.create_default_context(cafile=ca_file)
        self.requests: Counter[tuple[str, str]] = Counter()
        # What the apiserver itself answered (faults injected here are not in it).
        self.responses: Counter[tuple[str, str, int]] = Counter()
        self._lock = threading.Lock()
        self._fault: Fault | None = None
        self._local = threading.local()
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(cert_file, key_file)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.socket = server_tls.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="policy-proxy",
                                        daemon=True)

    def start(self) -> PolicyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_fault(self, fault: Fault | None) -> None:
        self._fault = fault

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.responses.clear()

    def _count(self, method: str, path: str) -> None:
        with self._lock:
            self.requests[(method, path.split("?", 1)[0])] += 1

    def _count_response(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.responses[(method, path.split("?", 1)[0], status)] += 1

    def _connection(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.upstream.hostname, self.upstream.port,
                                               context=self._upstream_tls, timeout=120)
            self._local.conn = conn
        return conn

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes | None):
        """Send upstream on this thread's kept-alive connection. Only a connection the apiserver
        closed while it sat idle is retried (on a fresh one): then the request never arrived."""
        reused = getattr(self._local, "conn", None) is not None
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers)
            return conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            conn.close()
            self._local.conn = None
            if not reused:
                raise
        conn = self._connection()
        conn.request(method, path, body=body, headers=headers)
        return conn.getresponse()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: tests read the counters instead
                pass

            def _handle(self) -> None:
                method, path = self.command, self.path
                proxy._count(method, path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._fault(method, path) if proxy._fault else None
                if fault == "reset":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault is not None:
                    status, payload = fault
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                policy = bool(_POLICY_V1.match(path))
                if policy:
                    path = _POLICY_V1.sub("/apis/policy/v1beta1", path)
                if body and (policy or (method == "POST" and _EVICTION.match(path.split("?", 1)[0]))):
                    body = body.replace(b'"policy/v1"', b'"policy/v1beta1"')
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                upstream = proxy._forward(method, path, headers, body)
                proxy._count_response(method, self.path, upstream.status)
                self.send_response(upstream.status, upstream.reason)
                for key, value in upstream.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                if policy:
                    payload = upstream.read().replace(b'"policy/v1beta1"', b'"policy/v1"')
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while chunk := upstream.read1(65536):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                # read1 leaves an empty body's response open, which would block the connection.
                upstream.read()
                self.wfile.write(b"0\r\n\r\n")

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler
