"""Kubernetes API access over urllib3: one connection pool per cluster, raw JSON decoded light, every
request bounded in time.

The typed models of the `kubernetes` package cost ~1.1 s and ~65 KB per 1,000 pods / per pod to
deserialise; here every response is read as bytes and decoded by msgspec into `objects` structs.
Importing `kubernetes.client` costs ~0.6 s, so only `from_kubeconfig` (the CLI, tests) imports it,
to read a kubeconfig; the functions' clients (`with_token`) never do.

Timing: one retry loop here and none underneath (urllib3's own retries are off). Each attempt has
connect and read timeouts, each request a total budget, and a client made by `bounded(until=...)`
ends every request, retries and waits included, by `until`: a caller hands a bounded client to
whatever runs within its deadline, across threads.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

import msgspec
import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, ProtocolError, ReadTimeoutError

from .objects import (
    ListMeta,
    Namespace,
    Node,
    ObjectList,
    PartialObjectMetadata,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    PodDisruptionBudget,
    collector_paused,
)
from .snapshot import ClusterSnapshot

T = TypeVar("T")

PAGE_SIZE = 500
# Content negotiation for lists of metadata only (served since Kubernetes 1.15).
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
# Threads issuing requests at once share one connection pool; size it to the drain's concurrency.
MAX_CONNECTIONS = 32
CONNECT_TIMEOUT_SECONDS = 3.0
# No answer for this long: the endpoint is hung or overloaded, and asking again would not help.
READ_TIMEOUT_SECONDS = 10.0
# Every request ends within this, retries and waits included, even on an unbounded client.
REQUEST_BUDGET_SECONDS = 30.0
RETRY_ATTEMPTS = 4
RETRY_BASE_SECONDS = 0.2
RETRY_STATUSES = {429, 500, 502, 503, 504}
# Reads and patches are safe to repeat (a patch sets state, it does not add to it); a POST is sent
# once, since only its caller knows whether repeating it is safe.
REPEATABLE_METHODS = {"GET", "PATCH"}
_READ_CHUNK = 65536


def equal_jitter(seconds: float) -> float:
    """A wait between half and all of `seconds`: clients refused together do not retry together."""
    return random.uniform(seconds / 2, seconds)


@dataclass(frozen=True, slots=True)
class Pacing:
    """The clock requests are bounded on, how they wait and how their waits are spread (tests
    inject their own)."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[float], float] = equal_jitter


class KubeApiError(Exception):
    """A Kubernetes API request that failed: an unexpected status, or no answer at all (status 0:
    unreachable, hung, or out of time), named with its endpoint."""

    def __init__(self, method: str, host: str, path: str, status: int, message: str) -> None:
        where = f"{method} {host}{path}"
        super().__init__(f"{where}: HTTP {status}: {message}" if status else f"{where}: {message}")
        self.method = method
        self.host = host
        self.path = path
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    data: bytes
    retry_after: float | None = None  # seconds, from a Retry-After header

    @property
    def message(self) -> str:
        """The `message` of a Status body, or the start of the raw body."""
        try:
            return str(json.loads(self.data).get("message", ""))
        except (ValueError, AttributeError):
            return self.data[:200].decode("utf-8", "replace")


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form, which the apiserver never sends, is ignored."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class _MetadataList(msgspec.Struct, Generic[T], rename="camel"):
    """A PartialObjectMetadataList page: its `items` is null, not [], when there are none."""

    metadata: ListMeta = msgspec.field(default_factory=ListMeta)
    items: list[T] | None = None


_decoders: dict[tuple[type, bool], msgspec.json.Decoder] = {}


def _decoder(item_type: type, metadata_only: bool) -> msgspec.json.Decoder:
    decoder = _decoders.get((item_type, metadata_only))
    if decoder is None:
        page_type = _MetadataList if metadata_only else ObjectList
        decoder = _decoders[item_type, metadata_only] = msgspec.json.Decoder(page_type[item_type])
    return decoder


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """One cluster's API server: where it is, the pool of connections to it, and the value of the
    Authorization header (computed per request: tokens expire)."""

    host: str
    pool: urllib3.PoolManager
    authorization: Callable[[], str | None]
    pacing: Pacing = field(default_factory=Pacing)
    renew_token: Callable[[], None] | None = None


def _pool(*, ca_certs: str | None = None, ca_cert_data: str | None = None, cert_file: str | None = None,
          key_file: str | None = None, verify: bool = True, server_hostname: str | None = None,
          proxy: str | None = None) -> urllib3.PoolManager:
    options: dict[str, Any] = {
        "maxsize": MAX_CONNECTIONS, "retries": False, "cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE",
        "ca_certs": ca_certs, "ca_cert_data": ca_cert_data, "cert_file": cert_file, "key_file": key_file}
    if server_hostname:
        options["server_hostname"] = server_hostname
    return urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)


class _Unreached(Exception):
    """An attempt that got no answer and may be made again."""

    def __init__(self, error: KubeApiError) -> None:
        self.error = error


class KubeClient:
    """One cluster's API; `bounded(until=...)` gives the same client with every request ending by
    `until`."""

    def __init__(self, endpoint: _Endpoint, until: float | None = None) -> None:
        self._endpoint = endpoint
        self.host = endpoint.host
        self.until = until

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None,
                        pacing: Pacing | None = None) -> KubeClient:
        """A client as a kubeconfig says (the official client reads it: exec plugins, token files,
        certificates)."""
        from kubernetes import config
        from kubernetes.client import Configuration

        conf = Configuration()
        config.load_kube_config(config_file=path, context=context, client_configuration=conf,
                                persist_config=False)

        def authorization() -> str | None:  # refreshed by the loader's hook (exec plugins expire)
            return conf.auth_settings().get("BearerToken", {}).get("value")

        pool = _pool(ca_certs=conf.ssl_ca_cert, cert_file=conf.cert_file, key_file=conf.key_file,
                     verify=conf.verify_ssl, server_hostname=conf.tls_server_name, proxy=conf.proxy)
        return cls(_Endpoint(conf.host, pool, authorization, pacing or Pacing()))

    @classmethod
    def with_token(cls, host: str, ca_pem: str, token: Callable[[], str],
                   renew: Callable[[], None] | None = None, pacing: Pacing | None = None) -> KubeClient:
        """A client whose bearer token comes from `token()` before each request (cached there);
        `renew()` makes the next `token()` a fresh one, asked for once when the API server answers
        401 (a token it no longer takes) before the 401 is returned."""
        return cls(_Endpoint(host.rstrip("/"), _pool(ca_cert_data=ca_pem), lambda: f"Bearer {token()}",
                             pacing or Pacing(), renew))

    def bounded(self, until: float) -> KubeClient:
        """This client (same connections) with every request, retries and waits included, over by
        `until`, on the pacing's clock (time.monotonic unless injected). A request that finds no
        time left fails at once. An earlier bound stays: bounds only tighten."""
        return KubeClient(self._endpoint, until if self.until is None else min(until, self.until))

    def time_left(self) -> float | None:
        """Seconds until this client's bound, or None when it has none."""
        return None if self.until is None else self.until - self._endpoint.pacing.clock()

    # --- transport ----------------------------------------------------------------------------

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                accept: str = "application/json") -> Response:
        """Send one request; any status comes back as a Response, transport failures raise.

        Repeatable methods are tried again on connection failures, 5xx and 429, after a short,
        jittered backoff or the server's Retry-After, whichever is longer, while time is left. A
        read timeout is not: the server took the request and did not answer. `body` is a JSON-able
        object."""
        end = self._endpoint.pacing.clock() + REQUEST_BUDGET_SECONDS
        if self.until is not None:
            end = min(end, self.until)
        params = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.host + path + (f"?{urlencode(params)}" if params else "")
        headers = {"Accept": accept}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        response = self._attempts(method, path, url, headers, data, end)
        if response.status == 401 and self._endpoint.renew_token is not None:
            self._endpoint.renew_token()
            response = self._attempts(method, path, url, headers, data, end)
        return response

    def _attempts(self, method: str, path: str, url: str, headers: dict[str, str], data: bytes | None,
                  end: float) -> Response:
        """The request, tried again as `request` says, until `end`."""
        pacing = self._endpoint.pacing
        attempts = RETRY_ATTEMPTS if method in REPEATABLE_METHODS else 1
        for attempt in range(1, attempts + 1):
            response: Response | None = None
            try:
                response = self._send(method, path, url, headers, data, end)
            except _Unreached as unreached:
                failure = unreached.error
            else:
                if response.status not in RETRY_STATUSES:
                    return response
            wait = pacing.jitter(RETRY_BASE_SECONDS * 2 ** (attempt - 1))
            if response is not None and response.retry_after is not None:
                wait = max(wait, response.retry_after)
            if attempt == attempts or pacing.clock() + wait >= end:
                if response is not None:
                    return response
                raise failure
            pacing.sleep(wait)
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, url: str, headers: dict[str, str], data: bytes | None,
              end: float) -> Response:
        """One attempt, within the time left before `end`. Raises _Unreached when the request may
        be tried again (no connection, or one that broke before an answer), KubeApiError when not."""
        endpoint = self._endpoint
        left = end - endpoint.pacing.clock()
        if left <= 0:
            raise KubeApiError(method, self.host, path, 0, "no time left for the request")
        read_timeout = min(READ_TIMEOUT_SECONDS, left)
        authorization = endpoint.authorization()
        if authorization:
            headers = {**headers, "Authorization": authorization}
        try:
            raw = endpoint.pool.request(
                method, url, body=data, headers=headers, redirect=False, preload_content=False,
                timeout=urllib3.Timeout(total=left, connect=min(CONNECT_TIMEOUT_SECONDS, left),
                                        read=read_timeout))
            try:
                chunks = []
                for chunk in raw.stream(_READ_CHUNK):
                    chunks.append(chunk)
                    if endpoint.pacing.clock() >= end:  # a server trickling its answer
                        raw.close()  # half read: the connection cannot serve another request
                        raise KubeApiError(method, self.host, path, 0,
                                           f"answer not complete within {left:.1f} s")
            finally:
                raw.release_conn()
        except ReadTimeoutError:
            raise KubeApiError(method, self.host, path, 0,
                               f"no answer within {read_timeout:.1f} s (read timeout)") from None
        except (ConnectTimeoutError, ProtocolError) as exc:
            raise _Unreached(self._failed(method, path, exc)) from exc
        except HTTPError as exc:  # TLS, proxy and decoding failures: asking again would not help
            raise self._failed(method, path, exc) from exc
        return Response(raw.status, b"".join(chunks), _retry_after(raw.headers.get("Retry-After")))

    def _failed(self, method: str, path: str, exc: Exception) -> KubeApiError:
        return KubeApiError(method, self.host, path, 0, f"{type(exc).__name__}: {exc}")

    def _expect(self, response: Response, method: str, path: str, *ok: int) -> Response:
        if response.status not in ok:
            raise KubeApiError(method, self.host, path, response.status, response.message)
        return response


    # --- reads --------------------------------------------------------------------------------

    def list_all(self, path: str, item_type: type[T], *, label_selector: str | None = None,
                 field_selector: str | None = None, page_size: int = PAGE_SIZE,
                 metadata_only: bool = False) -> list[T]:
        """Every item of a collection, page by page (`limit` / `continue`); with `metadata_only`,
        only each object's metadata (a PartialObjectMetadataList: far fewer bytes).

        A continue token that expired mid-list (HTTP 410) restarts the list once from scratch,
        so the result is always one consistent view.
        """
        for attempt in range(2):
            try:
                return [item for page in self._pages(path, item_type, label_selector, field_selector,
                                                     page_size, metadata_only) for item in page]
            except KubeApiError as exc:
                if exc.status != 410 or attempt:
                    raise
        raise AssertionError("unreachable")

    def _pages(self, path: str, item_type: type[T], label_selector: str | None,
               field_selector: str | None, page_size: int, metadata_only: bool) -> Iterator[list[T]]:
        decode = _decoder(item_type, metadata_only).decode
        accept = METADATA_ONLY if metadata_only else "application/json"
        token = ""
        while True:
            query = {"limit": page_size, "continue": token or None,
                     "labelSelector": label_selector, "fieldSelector": field_selector}
            response = self._expect(self.request("GET", path, query=query, accept=accept), "GET", path, 200)
            try:
                with collector_paused():
                    page = decode(response.data)
            except msgspec.DecodeError as exc:
                raise KubeApiError("GET", self.host, path, response.status,
                                   f"undecodable list: {exc}") from None
            yield page.items or []
            token = page.metadata.continue_
            if not token:
                return

    def list_nodes(self) -> list[Node]:
        return self.list_all("/api/v1/nodes", Node)

    def list_pods(self, node_name: str | None = None, namespace: str | None = None) -> list[Pod]:
        """Pods cluster-wide or of one namespace, on any node or on `node_name`."""
        selector = f"spec.nodeName={node_name}" if node_name else None
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods" if namespace else "/api/v1/pods"
        return self.list_all(path, Pod, field_selector=selector)

    def list_pdbs(self, namespace: str | None = None) -> list[PodDisruptionBudget]:
        path = (f"/apis/policy/v1/namespaces/{quote(namespace, safe='')}/poddisruptionbudgets" if namespace
                else "/apis/policy/v1/poddisruptionbudgets")
        return self.list_all(path, PodDisruptionBudget)

    def list_pvs(self) -> list[PersistentVolume]:
        return self.list_all("/api/v1/persistentvolumes", PersistentVolume)

    def list_pvcs(self) -> list[PersistentVolumeClaim]:
        return self.list_all("/api/v1/persistentvolumeclaims", PersistentVolumeClaim)

    def list_namespaces(self) -> list[Namespace]:
        """Every namespace, metadata only (its labels are all the product reads)."""
        return [Namespace(metadata=item.metadata)
                for item in self.list_all("/api/v1/namespaces", PartialObjectMetadata, metadata_only=True)]

    def snapshot(self, *, namespaces: bool = False) -> ClusterSnapshot:
        """Nodes, pods, budgets, volumes and claims, cluster-wide, and the namespaces if asked: what
        the planner and the census work on (volumes decode only their node affinity and labels,
        claims their volume's name)."""
        return ClusterSnapshot(self.list_nodes(), self.list_pods(), self.list_pdbs(), self.list_pvs(),
                               self.list_pvcs(), self.list_namespaces() if namespaces else [])

    def get(self, path: str, item_type: type[T]) -> T | None:
        """One object, or None when it does not exist."""
        response = self.request("GET", path)
        if response.status == 404:
            return None
        self._expect(response, "GET", path, 200)
        return msgspec.json.decode(response.data, type=item_type)

    def get_node(self, name: str) -> Node | None:
        return self.get(f"/api/v1/nodes/{quote(name, safe='')}", Node)

    # --- writes -------------------------------------------------------------------------------

    def patch_node(self, name: str, patch: dict[str, Any]) -> Node:
        """Strategic-merge-patch a node (taints merge by key, labels and annotations by name)."""
        path = f"/api/v1/nodes/{quote(name, safe='')}"
        response = self.request("PATCH", path, body=patch,
                                content_type="application/strategic-merge-patch+json")
        self._expect(response, "PATCH", path, 200)
        return msgspec.json.decode(response.data, type=Node)

    def evict(self, namespace: str, name: str, grace_period_seconds: int | None = None) -> Response:
        """POST a policy/v1 Eviction. 201: accepted; 429: a PDB forbids it now; 404: pod gone.

        Statuses are returned, not raised: the caller's drain policy decides what each means.
        """
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}/eviction"
        body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction",
                                "metadata": {"name": name, "namespace": namespace}}
        if grace_period_seconds is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": grace_period_seconds}
        return self.request("POST", path, body=body)

    def delete_pod(self, namespace: str, name: str, grace_period_seconds: int | None = None) -> Response:
        """DELETE a pod, budgets or not (forceAtDeadline's last resort), with this grace period (None:
        its own). 200/202: deleting; 404: gone. Statuses are returned, as evictions' are."""
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        return self.request("DELETE", path, body=body)

    def create_event(self, *, namespace: str, kind: str, name: str, uid: str, reason: str,
                     message: str, event_type: str = "Normal", api_version: str = "v1") -> None:
        """Record a core/v1 Event on an object (best effort: events are for people, not state)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {"apiVersion": api_version, "kind": kind, "name": name,
                               "namespace": namespace if kind != "Node" else "", "uid": uid},
            "reason": reason, "message": message, "type": event_type,
            "source": {"component": "spot-rebalancer"},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": "spot-rebalancer", "reportingInstance": "spot-rebalancer",
        }
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/events"
        self._expect(self.request("POST", path, body=body), "POST", path, 201)


class CachedToken:
    """A bearer token from `mint()`, minted again `refresh_after` seconds after it was made."""

    def __init__(self, mint: Callable[[], str], refresh_after: float,
                 clock: Callable[[], float]) -> None:
        self._mint = mint
        self._refresh_after = refresh_after
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._minted_at = float("-inf")

    def __call__(self) -> str:
        with self._lock:
            if self._clock() - self._minted_at >= self._refresh_after:
                self._token = self._mint()
                self._minted_at = self._clock()
            return self._token

    def renew(self) -> None:
        """Make the next call mint a new token, whatever the age of this one."""
        with self._lock:
            self._minted_at = float("-inf")
