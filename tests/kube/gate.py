"""A TCP endpoint for timing tests: while shut it accepts every connection and never answers on it
(a hung API server, TLS handshake included); once opened, it relays each new connection to its
upstream (the policy proxy, say), byte for byte, so the client sees that server at the gate's
address."""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit

_CHUNK = 65536


class Gate:
    def __init__(self, upstream: str | None = None) -> None:
        self._upstream = urlsplit(upstream) if upstream else None
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._server.getsockname()[1]}"
        self.is_open = False
        self.held: list[socket.socket] = []  # the connections accepted while shut
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="gate", daemon=True).start()

    def open(self) -> None:
        """Relay the connections made from now on (those held stay unanswered)."""
        if self._upstream is None:
            raise ValueError("a gate without an upstream cannot open")
        self.is_open = True

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for sock in [*self.held, *self._sockets]:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # closed
                return
            with self._lock:
                (self._sockets if self.is_open else self.held).append(client)
            if self.is_open:
                threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        assert self._upstream is not None and self._upstream.hostname and self._upstream.port
        upstream = socket.create_connection((self._upstream.hostname, self._upstream.port))
        with self._lock:
            self._sockets.append(upstream)
        threading.Thread(target=_copy, args=(upstream, client), daemon=True).start()
        _copy(client, upstream)


def _copy(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(_CHUNK):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)
