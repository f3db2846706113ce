"""Kubernetes API access: the official client's configuration and transport, raw JSON decoded light.

The typed models of the `kubernetes` package cost ~1.1 s and ~65 KB per 1,000 pods / per pod to
deserialise; here every response is read as bytes and decoded by msgspec into `objects` structs.
Importing `kubernetes.client` costs ~0.6 s, so it happens on first use, not at import.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

import msgspec

from .objects import (
    ListMeta,
    Node,
    ObjectList,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    PodDisruptionBudget,
    collector_paused,
)
from .snapshot import ClusterSnapshot

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, Configuration

T = TypeVar("T")

PAGE_SIZE = 500
# Content negotiation for lists of metadata only (served since Kubernetes 1.15).
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
# Threads issuing requests at once share one connection pool; size it to the drain's concurrency.
MAX_CONNECTIONS = 32
REQUEST_TIMEOUT = (5, 30)
RETRY_ATTEMPTS = 4
RETRY_BASE_SECONDS = 0.2
RETRY_STATUSES = {429, 500, 502, 503, 504}


class KubeApiError(Exception):
    """A Kubernetes API request that failed (transport error or an unexpected status)."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.method = method
        self.path = path
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    data: bytes

    @property
    def message(self) -> str:
        """The `message` of a Status body, or the start of the raw body."""
        try:
            return str(json.loads(self.data).get("message", ""))
        except (ValueError, AttributeError):
            return self.data[:200].decode("utf-8", "replace")


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


class KubeClient:
    """One cluster's API, over the official client's connection pool and authentication."""

    def __init__(self, configuration: Configuration) -> None:
        from kubernetes.client import ApiClient

        configuration.connection_pool_maxsize = MAX_CONNECTIONS
        self._api: ApiClient = ApiClient(configuration)
        self.host: str = configuration.host
        self._renew_token: Callable[[], None] | None = None

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> KubeClient:
        from kubernetes import config
        from kubernetes.client import Configuration

        configuration = Configuration()
        config.load_kube_config(config_file=path, context=context,
                                client_configuration=configuration, persist_config=False)
        return cls(configuration)

    @classmethod
    def with_token(cls, host: str, ca_pem: str, token: Callable[[], str],
                   renew: Callable[[], None] | None = None) -> KubeClient:
        """A client whose bearer token comes from `token()` before each request (cached there);
        `renew()` makes the next `token()` a fresh one, asked for once when the API server answers
        401 (a token it no longer takes) before the 401 is returned."""
        from kubernetes.client import Configuration

        configuration = Configuration(host=host, ca_cert_data=ca_pem)
        configuration.api_key_prefix["BearerToken"] = "Bearer"

        def refresh(conf: Configuration) -> None:
            conf.api_key["BearerToken"] = token()

        configuration.refresh_api_key_hook = refresh  # type: ignore[assignment]  # declared None, called when set
        # The client calls the hook only for a key already set: without this first one, every
        # request went out anonymous.
        refresh(configuration)
        client = cls(configuration)
        client._renew_token = renew
        return client

    # --- transport ----------------------------------------------------------------------------

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                accept: str = "application/json") -> Response:
        """Send one request; any status comes back as a Response, transport failures raise.

        Reads and patches (safe to repeat: a patch sets state, it does not add to it) are tried
        again on transport errors, 5xx and 429, with a short backoff; a POST is sent once, since
        only its caller knows whether repeating it is safe. `body` is a JSON-able object: the
        client serialises it for every JSON content type."""
        response = self._request(method, path, query, body, content_type, accept)
        if response.status == 401 and self._renew_token is not None:
            self._renew_token()
            response = self._request(method, path, query, body, content_type, accept)
        return response

    def _request(self, method: str, path: str, query: dict[str, Any] | None, body: Any,
                 content_type: str, accept: str) -> Response:
        attempts = RETRY_ATTEMPTS if method in ("GET", "PATCH") else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._send(method, path, query, body, content_type, accept)
            except KubeApiError:
                if attempt == attempts:
                    raise
            else:
                if response.status not in RETRY_STATUSES or attempt == attempts:
                    return response
            time.sleep(RETRY_BASE_SECONDS * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, query: dict[str, Any] | None, body: Any,
              content_type: str, accept: str) -> Response:
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        query_params = [(k, v) for k, v in (query or {}).items() if v is not None]
        try:
            _, url, headers, _, _ = self._api.param_serialize(
                method, path, query_params=query_params, header_params=headers,
                auth_settings=["BearerToken"])
            raw = self._api.call_api(method, url, header_params=headers, body=body,
                                     _request_timeout=REQUEST_TIMEOUT)
            return Response(raw.status, raw.read())
        except Exception as exc:  # urllib3 and the client raise many types for one cause
            raise KubeApiError(method, path, 0, f"{type(exc).__name__}: {exc}") from exc

    def _expect(self, response: Response, method: str, path: str, *ok: int) -> Response:
        if response.status not in ok:
            raise KubeApiError(method, path, response.status, response.message)
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
                raise KubeApiError("GET", path, response.status, f"undecodable list: {exc}") from None
            yield page.items or []
            token = page.metadata.continue_
            if not token:
                return

    def list_nodes(self) -> list[Node]:
        return self.list_all("/api/v1/nodes", Node)

    def list_pods(self, node_name: str | None = None) -> list[Pod]:
        selector = f"spec.nodeName={node_name}" if node_name else None
        return self.list_all("/api/v1/pods", Pod, field_selector=selector)

    def list_pdbs(self) -> list[PodDisruptionBudget]:
        return self.list_all("/apis/policy/v1/poddisruptionbudgets", PodDisruptionBudget)

    def list_pvs(self) -> list[PersistentVolume]:
        return self.list_all("/api/v1/persistentvolumes", PersistentVolume)

    def list_pvcs(self) -> list[PersistentVolumeClaim]:
        return self.list_all("/api/v1/persistentvolumeclaims", PersistentVolumeClaim)

    def snapshot(self) -> ClusterSnapshot:
        """Nodes, pods, budgets, volumes and claims, cluster-wide: what the planner and the census
        work on (volumes decode only their node affinity and labels, claims their volume's name)."""
        return ClusterSnapshot(self.list_nodes(), self.list_pods(), self.list_pdbs(), self.list_pvs(),
                               self.list_pvcs())

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
