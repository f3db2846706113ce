"""PodDisruptionBudgets as allowances the plan spends: never more evictions among a budget's pods
than its `status.disruptionsAllowed`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from ..objects import Pod, PodDisruptionBudget
from ..scheduling.labels import selector_matches


class DisruptionBudgets:
    def __init__(self, pdbs: Iterable[PodDisruptionBudget]) -> None:
        self._by_namespace: dict[str, list[PodDisruptionBudget]] = {}
        # Per namespace, budgets by index: by one of their matchLabels pairs (a pod without that pair
        # is never theirs), and those without matchLabels, which any pod may be.
        self._by_pair: dict[str, dict[tuple[str, str], list[int]]] = {}
        self._without_pairs: dict[str, list[int]] = {}
        self._covering: dict[tuple[str, frozenset], list[str]] = {}
        self.remaining: dict[str, int] = {}
        for pdb in pdbs:
            namespace, selector = pdb.metadata.namespace, pdb.spec.selector
            budgets = self._by_namespace.setdefault(namespace, [])
            pair = next(iter(selector.match_labels.items()), None) if selector is not None else None
            if pair is None:
                self._without_pairs.setdefault(namespace, []).append(len(budgets))
            else:
                self._by_pair.setdefault(namespace, {}).setdefault(pair, []).append(len(budgets))
            budgets.append(pdb)
            self.remaining[self.key(pdb)] = pdb.status.disruptions_allowed

    @staticmethod
    def key(pdb: PodDisruptionBudget) -> str:
        return f"{pdb.metadata.namespace}/{pdb.metadata.name}"

    def covering(self, pod: Pod) -> list[str]:
        """The budgets whose selector picks the pod, in its namespace, in their order (raises
        SelectorError when a selector is invalid). Replicas share their labels, so the answer is kept
        per label set."""
        namespace, labels = pod.metadata.namespace, pod.metadata.labels
        memo_key = (namespace, frozenset(labels.items()))
        keys = self._covering.get(memo_key)
        if keys is None:
            by_pair = self._by_pair.get(namespace, {})
            candidates = set(self._without_pairs.get(namespace, ()))
            for pair in labels.items():
                candidates.update(by_pair.get(pair, ()))
            budgets = self._by_namespace.get(namespace, [])
            keys = self._covering[memo_key] = [
                self.key(budgets[i]) for i in sorted(candidates)
                if selector_matches(budgets[i].spec.selector, labels)]
        return keys

    def exhausted(self, keys: Iterable[str]) -> str | None:
        """The first of these budgets with no disruption left, if any."""
        return next((k for k in keys if self.remaining[k] <= 0), None)

    def spend(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.remaining[key] -= 1

    def refund(self, keys: Iterable[str]) -> None:
        """Give back what `spend` took, for a move taken back."""
        for key in keys:
            self.remaining[key] += 1


def budgets_caught_up(pdbs: Sequence[PodDisruptionBudget], pods: Iterable[Pod], moved: Iterable[Pod]) -> bool:
    """Whether every budget covering a moved pod counts as healthy exactly the pods that are (Ready,
    not being deleted): the disruption controller has seen the replacements, so the allowance a plan
    reads now is the one the Eviction API will grant."""
    budgets = DisruptionBudgets(pdbs)
    watched = {key for pod in moved for key in budgets.covering(pod)}
    if not watched:
        return True
    healthy = Counter(key for pod in pods if pod.ready and pod.metadata.deletion_timestamp is None
                      for key in budgets.covering(pod))
    return all(pdb.status.current_healthy == healthy[key] for pdb in pdbs
               if (key := DisruptionBudgets.key(pdb)) in watched)
