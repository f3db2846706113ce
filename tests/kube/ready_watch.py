"""A background poll of one namespace's pods, to check budgets while something evicts: every poll
records how many pods of each app are Running, Ready and not terminating."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

from spot_rebalancer.kube import KubeClient


class ReadyWatch:
    def __init__(self, kube: KubeClient, namespace: str, interval: float = 0.1) -> None:
        self._kube = kube
        self._namespace = namespace
        self._interval = interval
        self.polls: list[Counter[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReadyWatch:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def fewest(self, apps: Iterable[str] | None = None) -> dict[str, int]:
        """The fewest ready pods seen per app (by default every app seen in any poll)."""
        names = set(apps) if apps is not None else {app for poll in self.polls for app in poll}
        return {app: min(poll[app] for poll in self.polls) for app in names}

    def times_below(self, app: str, floor: int) -> int:
        """How many separate times the app's ready pods dropped below the floor."""
        drops, below = 0, False
        for poll in self.polls:
            if poll[app] < floor and not below:
                drops += 1
            below = poll[app] < floor
        return drops

    def _run(self) -> None:
        while not self._stop.is_set():
            listed = self._kube.list_pods(namespace=self._namespace)
            self.polls.append(Counter(p.metadata.labels.get("app") for p in listed
                                      if p.status.phase == "Running" and p.ready
                                      and p.metadata.deletion_timestamp is None))
            self._stop.wait(self._interval)
