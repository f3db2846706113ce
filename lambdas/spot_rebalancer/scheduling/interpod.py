"""Required pod anti-affinity on the hostname topology (InterPodAffinity's filter, in part).

Both directions count: the incoming pod's terms against the pods on the node, and the node's pods'
terms against the incoming pod. Two simplifications, both conservative (they can only refuse more):
the hostname domain is taken to be the node itself (EKS gives every node its own hostname label),
and a term with a namespaceSelector is taken to reach every namespace, since a snapshot has no
namespace labels. Constraints this module does not evaluate (required pod affinity, anti-affinity
over zones or other wide topologies, either the pod's own or other pods' against it) are reported
by `unsupported_constraint` and `wide_repeller` so callers can leave such pods alone; so are, by
`unscored_affinity` and `scoring_neighbour`, the terms InterPodAffinity's score weighs that pick
namespaces by label. `weighted_terms` and `own_preferred_terms` give `scoring` the terms it weighs.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..objects import Pod, PodAffinityTerm
from .labels import selector_matches

HOSTNAME_KEY = "kubernetes.io/hostname"
# kube-scheduler's default InterPodAffinityArgs.hardPodAffinityWeight.
HARD_POD_AFFINITY_WEIGHT = 1


def required_anti_affinity(pod: Pod) -> list[PodAffinityTerm]:
    affinity = pod.spec.affinity
    if affinity is None or affinity.pod_anti_affinity is None:
        return []
    return affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution


def hostname_anti_affinity(pod: Pod) -> list[PodAffinityTerm]:
    return [t for t in required_anti_affinity(pod) if t.topology_key == HOSTNAME_KEY]


def wide_anti_affinity(pod: Pod) -> list[PodAffinityTerm]:
    """Required anti-affinity terms over topologies other than a single node (zones, regions)."""
    return [t for t in required_anti_affinity(pod) if t.topology_key != HOSTNAME_KEY]


def unsupported_constraint(pod: Pod) -> str | None:
    """Which of the pod's own constraints the scheduler may refuse nodes for that we do not model."""
    affinity = pod.spec.affinity
    if affinity is not None and affinity.pod_affinity is not None \
            and affinity.pod_affinity.required_during_scheduling_ignored_during_execution:
        return "required pod affinity"
    for term in wide_anti_affinity(pod):
        return f"required pod anti-affinity on {term.topology_key or 'no topology key'}"
    return None


def own_preferred_terms(pod: Pod) -> list[tuple[int, PodAffinityTerm]]:
    """The pod's preferred affinity (+weight) and anti-affinity (-weight) terms: what its own
    placement is scored by."""
    affinity = pod.spec.affinity
    if affinity is None:
        return []
    groups = ((1, affinity.pod_affinity), (-1, affinity.pod_anti_affinity))
    return [(sign * t.weight, t.pod_affinity_term) for sign, group in groups if group is not None
            for t in group.preferred_during_scheduling_ignored_during_execution]


def weighted_terms(pod: Pod) -> list[tuple[int, PodAffinityTerm]]:
    """The pod's terms InterPodAffinity's score weighs when other pods are placed, signed: its
    preferred ones and its required affinity (+1, the default hardPodAffinityWeight)."""
    affinity = pod.spec.affinity
    terms = own_preferred_terms(pod)
    if affinity is not None and affinity.pod_affinity is not None:
        terms.extend((HARD_POD_AFFINITY_WEIGHT, t)
                     for t in affinity.pod_affinity.required_during_scheduling_ignored_during_execution)
    return terms


def scoring_terms(pod: Pod) -> list[PodAffinityTerm]:
    """The pod's terms InterPodAffinity's score reads when other pods are placed."""
    return [term for _, term in weighted_terms(pod)]


def unknown_namespaces(term: PodAffinityTerm) -> bool:
    """Whether the term picks namespaces by their labels, which a snapshot does not hold (an empty
    namespaceSelector, every namespace, is known)."""
    selector = term.namespace_selector
    return selector is not None and bool(selector.match_labels or selector.match_expressions)


def unscored_affinity(pod: Pod) -> str | None:
    """Why InterPodAffinity's score of the pod's replacement cannot be simulated: its own preferred
    terms pick namespaces by label."""
    if any(unknown_namespaces(term) for _, term in own_preferred_terms(pod)):
        return "preferred pod (anti-)affinity with a namespaceSelector"
    return None


def scoring_neighbour(pod: Pod, others: Iterable[Pod]) -> Pod | None:
    """The first of the other pods whose InterPodAffinity scoring terms may select the pod through a
    namespaceSelector (which a snapshot cannot evaluate), if any."""
    labels = pod.metadata.labels
    for other in others:
        if any(unknown_namespaces(t) and selector_matches(t.label_selector, labels)
               for t in scoring_terms(other)):
            return other
    return None


def wide_repeller(pod: Pod, others: Iterable[Pod]) -> Pod | None:
    """The first of the other pods whose wide required anti-affinity selects the pod, if any."""
    for other in others:
        if any(term_selects(t, other.metadata.namespace, pod) for t in wide_anti_affinity(other)):
            return other
    return None


def term_selects(term: PodAffinityTerm, term_namespace: str, pod: Pod) -> bool:
    """Whether a term of a pod in `term_namespace` selects `pod`: by its namespaces (default: its
    own), then by its label selector."""
    namespace = pod.metadata.namespace
    if term.namespace_selector is None:
        namespaces = term.namespaces or (term_namespace,)
        if namespace not in namespaces:
            return False
    return selector_matches(term.label_selector, pod.metadata.labels)


def anti_affinity_conflict(pod: Pod, node_pods: Iterable[Pod]) -> Pod | None:
    """The first pod on the node that the incoming pod repels or that repels it, if any."""
    own_terms = hostname_anti_affinity(pod)
    namespace = pod.metadata.namespace
    for other in node_pods:
        if any(term_selects(t, namespace, other) for t in own_terms):
            return other
        other_namespace = other.metadata.namespace
        if any(term_selects(t, other_namespace, pod) for t in hostname_anti_affinity(other)):
            return other
    return None
