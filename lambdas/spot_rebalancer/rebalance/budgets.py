"""PodDisruptionBudgets as allowances the plan spends: never more evictions among a budget's pods
than its `status.disruptionsAllowed`."""

from __future__ import annotations

from collections.abc import Iterable

from ..objects import Pod, PodDisruptionBudget
from ..scheduling.labels import selector_matches


class DisruptionBudgets:
    def __init__(self, pdbs: Iterable[PodDisruptionBudget]) -> None:
        self._by_namespace: dict[str, list[PodDisruptionBudget]] = {}
        self._covering: dict[tuple[str, frozenset], list[str]] = {}
        self.remaining: dict[str, int] = {}
        for pdb in pdbs:
            self._by_namespace.setdefault(pdb.metadata.namespace, []).append(pdb)
            self.remaining[self.key(pdb)] = pdb.status.disruptions_allowed

    @staticmethod
    def key(pdb: PodDisruptionBudget) -> str:
        return f"{pdb.metadata.namespace}/{pdb.metadata.name}"

    def covering(self, pod: Pod) -> list[str]:
        """The budgets whose selector picks the pod, in its namespace (raises SelectorError when a
        selector is invalid). Replicas share their labels, so the answer is kept per label set."""
        namespace, labels = pod.metadata.namespace, pod.metadata.labels
        memo_key = (namespace, frozenset(labels.items()))
        keys = self._covering.get(memo_key)
        if keys is None:
            keys = self._covering[memo_key] = [
                self.key(pdb) for pdb in self._by_namespace.get(namespace, ())
                if selector_matches(pdb.spec.selector, labels)]
        return keys

    def exhausted(self, keys: Iterable[str]) -> str | None:
        """The first of these budgets with no disruption left, if any."""
        return next((k for k in keys if self.remaining[k] <= 0), None)

    def spend(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.remaining[key] -= 1
