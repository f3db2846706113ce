"""What the benchmarks see happen on the apiserver itself (not through the proxy the product uses):
watches that note when each node was first seen cordoned and when each pod's eviction was accepted,
it left, and how many of each app's pods were Ready."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from tests.kube.api import Api
from tests.kube.cluster import LocalCluster
from tests.kube.controlplane import ADMIN

WATCH_SECONDS = 1800


class _Watch:
    """One watch of `path` on a thread of its own, from the state a list of it gives."""

    def __init__(self, cluster: LocalCluster, path: str, clock: Callable[[], float]) -> None:
        cp = cluster.control_plane
        self._api = Api(cp.server, ADMIN.token, cp.ca_file)
        self._path = path
        self.clock = clock
        self._closing = False
        self.lock = threading.Lock()
        listing = self._api.get(path)
        for item in listing["items"]:
            self.seen("ADDED", item)
        self._thread = threading.Thread(target=self._run, args=(listing["metadata"]["resourceVersion"],),
                                        daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._closing = True
        self._api.close()

    def seen(self, kind: str, item: dict) -> None:
        raise NotImplementedError

    def _run(self, version: str) -> None:
        try:
            for event in self._api.watch(self._path, version, timeout_seconds=WATCH_SECONDS):
                with self.lock:
                    self.seen(event["type"], event["object"])
        except Exception:
            if not self._closing:  # closing the watch cuts it mid-stream
                raise


class CordonWatch(_Watch):
    """When each node was first seen unschedulable, by `clock` (time.monotonic by default: the same
    clock in every process of the machine)."""

    def __init__(self, cluster: LocalCluster, clock: Callable[[], float] = time.monotonic) -> None:
        self.cordoned: dict[str, float] = {}
        super().__init__(cluster, "/api/v1/nodes", clock)

    def seen(self, kind: str, item: dict) -> None:
        name = item["metadata"]["name"]
        if item["spec"].get("unschedulable") and name not in self.cordoned:
            self.cordoned[name] = self.clock()


@dataclass
class PodFate:
    name: str
    app: str
    node: str
    evicted: float | None = None  # first seen terminating: the eviction (or deletion) was accepted
    gone: float | None = None  # deleted for good: its containers stopped (or its node went)


def is_ready(pod: dict) -> bool:
    status = pod.get("status", {})
    return (status.get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])))


class PodWatch(_Watch):
    """Every pod of a namespace: its fate (by uid), and for the apps given floors, how many separate
    times their Ready pods dropped below the floor while `counting` is set."""

    def __init__(self, cluster: LocalCluster, namespace: str, floors: dict[str, int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pods: dict[str, PodFate] = {}
        self.floors = floors
        self.counting = False  # not while the pods are listed one by one
        self.drops: dict[str, int] = defaultdict(int)
        self.fewest: dict[str, int] = {}
        self._ready: dict[str, set[str]] = defaultdict(set)
        self._below: set[str] = set()
        super().__init__(cluster, f"/api/v1/namespaces/{namespace}/pods", clock)
        self.fewest = {app: len(self._ready[app]) for app in floors}
        self.counting = True

    def seen(self, kind: str, item: dict) -> None:
        meta = item["metadata"]
        uid, app = meta["uid"], meta.get("labels", {}).get("app", "")
        fate = self.pods.setdefault(uid, PodFate(meta["name"], app, ""))
        fate.node = item["spec"].get("nodeName") or fate.node
        if meta.get("deletionTimestamp") and fate.evicted is None:
            fate.evicted = self.clock()
        if kind == "DELETED":
            fate.gone = fate.gone or self.clock()
        ready = self._ready[app]
        if kind != "DELETED" and is_ready(item):
            ready.add(uid)
        else:
            ready.discard(uid)
        if app in self.floors and self.counting:
            self.fewest[app] = min(self.fewest.get(app, len(ready)), len(ready))
            if len(ready) < self.floors[app] and app not in self._below:
                self.drops[app] += 1
            if len(ready) < self.floors[app]:
                self._below.add(app)
            else:
                self._below.discard(app)
