"""A loopback HTTPS proxy in front of the apiserver that presents it as serving `policy/v1`.

v1.20 serves Eviction and PodDisruptionBudget only as `policy/v1beta1`; every EKS version the
product supports serves `policy/v1`, and the product speaks only that. The proxy rewrites:
- the body of POST .../pods/<name>/eviction: apiVersion policy/v1 -> policy/v1beta1;
- paths /apis/policy/v1[/...] -> /apis/policy/v1beta1[/...], with apiVersion policy/v1 in their
  request bodies made policy/v1beta1, and "policy/v1beta1" made "policy/v1" in their responses,
  line by line so that watches stream too (the fields the product reads are the same in both).
Everything else passes through untouched and streamed chunk by chunk, so watches work. Upgrades
(exec, port-forward) and request bodies without a Content-Length are not supported.

Each client connection gets one kept-alive upstream connection, used by its handler thread only.

It counts requests by (method, path) and the apiserver's answers by (method, path, status), and a
test can inject failures with `set_fault`: the hook sees each request before it is forwarded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import ssl
import struct
import sys
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_POLICY_V1 = re.compile(r"^/apis/policy/v1(?=/|$|\?)")
_EVICTION = re.compile(r"^/api/v1/namespaces/[^/]+/pods/[^/]+/eviction$")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "content-length"}
_CHUNK = 65536

# A fault hook gets (method, path with query) and returns None to forward the request, RESET to
# drop the connection with a TCP reset, or (status, JSON body) or (status, JSON body, headers) to
# answer in the apiserver's place. It may sleep first to add latency. It runs on the request's
# handler thread.
RESET = "reset"
Fault = Callable[[str, str], "tuple[int, bytes] | tuple[int, bytes, dict[str, str]] | str | None"]


def _status(code: int, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                       "message": message}).encode()


def _to_v1beta1(body: bytes) -> bytes:
    """The request object with apiVersion policy/v1 made policy/v1beta1; other bodies unchanged."""
    try:
        obj = json.loads(body)
    except ValueError:
        return body
    if isinstance(obj, dict) and obj.get("apiVersion") == "policy/v1":
        obj["apiVersion"] = "policy/v1beta1"
        return json.dumps(obj).encode()
    return body


def _to_v1(line: bytes) -> bytes:
    return line.replace(b'"policy/v1beta1"', b'"policy/v1"')


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops connections a storm's drains open at once (clients
    # then time out connecting, which an apiserver's backlog would never make them do).
    request_queue_size = 1024

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.to_reset: set[socket.socket] = set()

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away mid-answer (a request it timed out): nothing to report
        super().handle_error(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        if request in self.to_reset:
            # No orderly shutdown first: with SO_LINGER 0, close() alone sends a TCP reset.
            self.to_reset.discard(request)
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_request(request)
        else:
            super().shutdown_request(request)


class PolicyProxy:
    def __init__(self, upstream: str, ca_file: str, cert_file: str, key_file: str) -> None:
        self.upstream = urlsplit(upstream)
        self._upstream_tls = ssl.create_default_context(cafile=ca_file)
        self.requests: Counter[tuple[str, str]] = Counter()
        # What the apiserver itself answered: faults injected here are not in it.
        self.responses: Counter[tuple[str, str, int]] = Counter()
        self._lock = threading.Lock()
        self._fault: Fault | None = None
        self._upstreams: set[http.client.HTTPSConnection] = set()
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(cert_file, key_file)
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.socket = server_tls.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="policy-proxy",
                                        daemon=True)

    def start(self) -> PolicyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut the upstream connections still open (an apiserver asked to stop
        waits for its open watches)."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            upstreams = list(self._upstreams)
        for conn in upstreams:
            if conn.sock:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)

    def set_fault(self, fault: Fault | None) -> None:
        self._fault = fault

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.responses.clear()

    def _count(self, counter: Counter, key: tuple) -> None:
        with self._lock:
            counter[key] += 1

    def _connect(self) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(self.upstream.hostname, self.upstream.port,
                                           context=self._upstream_tls, timeout=120)
        with self._lock:
            self._upstreams.add(conn)
        return conn

    def _disconnect(self, conn: http.client.HTTPSConnection) -> None:
        conn.close()
        with self._lock:
            self._upstreams.discard(conn)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream: http.client.HTTPSConnection | None = None

            def log_message(self, *args) -> None:  # quiet: tests read the counters instead
                pass

            def finish(self) -> None:
                super().finish()
                self._drop_upstream()

            def _drop_upstream(self) -> None:
                if self.upstream:
                    proxy._disconnect(self.upstream)
                    self.upstream = None

            def _handle(self) -> None:
                method, path = self.command, self.path
                plain_path = path.split("?", 1)[0]
                proxy._count(proxy.requests, (method, plain_path))
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    self._reply(411, _status(411, "the test proxy needs a Content-Length"))
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._fault(method, path) if proxy._fault else None
                if fault == RESET:
                    proxy._server.to_reset.add(self.connection)
                    self.close_connection = True
                    return
                if fault is not None:
                    self._reply(*fault)
                    return
                policy = bool(_POLICY_V1.match(path))
                if policy:
                    path = _POLICY_V1.sub("/apis/policy/v1beta1", path)
                if body and (policy or (method == "POST" and _EVICTION.match(plain_path))):
                    body = _to_v1beta1(body)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                try:
                    upstream = self._forward(method, path, headers, body)
                except (OSError, http.client.HTTPException) as exc:
                    self._drop_upstream()
                    self._reply(502, _status(502, f"the test proxy could not reach the apiserver: {exc!r}"))
                    self.close_connection = True
                    return
                proxy._count(proxy.responses, (method, plain_path, upstream.status))
                self.send_response(upstream.status, upstream.reason)
                for key, value in upstream.getheaders():
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                if upstream.status in (204, 304):  # no body, and none may be sent
                    self.end_headers()
                    upstream.read()
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    self._relay(upstream, _to_v1 if policy else None)
                except (OSError, http.client.HTTPException):
                    # One side went away mid-response (a watch the client stopped reading, or the
                    # proxy stopping): the other is mid-response too, so neither can be reused.
                    self.close_connection = True
                    self._drop_upstream()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes | None):
                """Send upstream on this client's kept-alive connection. Only a connection the
                apiserver closed while it sat idle is retried (on a fresh one): then the request
                never arrived."""
                reused = self.upstream is not None
                self.upstream = self.upstream or proxy._connect()
                try:
                    self.upstream.request(method, path, body=body, headers=headers)
                    return self.upstream.getresponse()
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    self._drop_upstream()
                    if not reused:
                        raise
                self.upstream = proxy._connect()
                self.upstream.request(method, path, body=body, headers=headers)
                return self.upstream.getresponse()

            def _relay(self, upstream: http.client.HTTPResponse, rewrite: Callable[[bytes], bytes] | None):
                """Copy the response body as it arrives. A rewrite is applied to whole lines (JSON
                objects, one per line in a watch), so a match is never split across chunks."""
                pending = b""
                while chunk := upstream.read1(_CHUNK):
                    if rewrite:
                        pending += chunk
                        cut = pending.rfind(b"\n") + 1
                        chunk, pending = rewrite(pending[:cut]), pending[cut:]
                    self._send_chunk(chunk)
                if pending:  # a rewritten response's last line, if it had no newline
                    self._send_chunk(rewrite(pending))
                # read1 leaves an empty body's response unfinished, which would block the connection.
                upstream.read()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _send_chunk(self, data: bytes) -> None:
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()

            def _reply(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
