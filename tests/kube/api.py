"""A minimal JSON client for the harness itself (node simulator, fixtures), over urllib3.

The product's own client (spot_rebalancer.kube) is what tests exercise; this one only sets the
stage, so it stays small: JSON in, JSON out, a bearer token and the test CA.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import urllib3


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")
        self.status = status


class Api:
    def __init__(self, server: str, token: str, ca_file: str, maxsize: int = 16) -> None:
        self.server = server
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._pool = urllib3.PoolManager(ca_certs=ca_file, cert_reqs="CERT_REQUIRED", maxsize=maxsize,
                                         retries=False, timeout=urllib3.Timeout(connect=5, read=30))
        self._watches: set[urllib3.BaseHTTPResponse] = set()

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json", ok: tuple[int, ...] = (200, 201)) -> Any:
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        response = self._pool.request(method, self.server + path, body=data, headers=headers)
        if response.status not in ok:
            raise ApiError(method, path, response.status, response.data.decode("utf-8", "replace"))
        return json.loads(response.data) if response.data else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Any, strategic: bool = False) -> Any:
        kind = "strategic-merge-patch" if strategic else "merge-patch"
        return self.request("PATCH", path, body, content_type=f"application/{kind}+json")

    def delete(self, path: str, body: Any = None, ok: tuple[int, ...] = (200, 202, 404)) -> Any:
        return self.request("DELETE", path, body, ok=ok)

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 60) -> Iterator[dict]:
        """Events of a watch, one JSON object per line, until the server closes it."""
        sep = "&" if "?" in path else "?"
        url = (f"{self.server}{path}{sep}watch=1&resourceVersion={resource_version}"
               f"&timeoutSeconds={timeout_seconds}&allowWatchBookmarks=false")
        response = self._pool.request("GET", url, headers=self._headers, preload_content=False,
                                      timeout=urllib3.Timeout(connect=5, read=timeout_seconds + 10))
        self._watches.add(response)
        try:
            if response.status != 200:
                raise ApiError("WATCH", path, response.status, response.read().decode("utf-8", "replace"))
            buffer = b""
            for chunk in response.stream(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            self._watches.discard(response)
            response.release_conn()

    def close(self) -> None:
        """End the watches under way (an apiserver asked to stop waits for its open watches) and
        drop the idle connections."""
        for response in list(self._watches):
            response.shutdown()
        self._pool.clear()
