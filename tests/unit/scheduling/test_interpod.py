import pytest

from spot_rebalancer.scheduling.interpod import (
    anti_affinity_conflict,
    term_selects,
    unsupported_constraint,
    wide_repeller,
)
from tests.unit.builders import anti_affinity_term, make_pod, selector

WEB = {"app": "web"}


def web(name="web-1", namespace="default", **kwargs):
    return make_pod(name, namespace=namespace, labels=WEB, **kwargs)


@pytest.mark.parametrize(("term", "pod", "expected"), [
    (anti_affinity_term(WEB), web(), True),
    (anti_affinity_term({"app": "api"}), web(), False),
    # Namespaces default to the term owner's own.
    (anti_affinity_term(WEB), web(namespace="other"), False),
    (anti_affinity_term(WEB, namespaces=["other"]), web(namespace="other"), True),
    (anti_affinity_term(WEB, namespaces=["other"]), web(), False),
    # A namespace selector is taken to reach every namespace (no namespace labels in a snapshot).
    (anti_affinity_term(WEB, namespace_selector=selector({"team": "x"})), web(namespace="other"), True),
], ids=["same labels same namespace", "other labels", "namespace defaults to the owner's", "listed namespace",
        "listed namespace leaves out the owner's", "namespace selector reaches every namespace"])
def test_term_selects(term, pod, expected):
    assert term_selects(term, "default", pod) is expected


def test_nil_label_selector_selects_nothing():
    term = anti_affinity_term(WEB)
    term.label_selector = None
    assert not term_selects(term, "default", web())


SPREAD = [anti_affinity_term(WEB)]


@pytest.mark.parametrize(("incoming", "node_pods", "conflict"), [
    (web(anti_affinity=SPREAD), [], None),
    # The incoming pod's terms against the pods already there.
    (web(anti_affinity=SPREAD), [web("web-2")], "web-2"),
    (web(anti_affinity=SPREAD), [make_pod("api-1", labels={"app": "api"})], None),
    # The pods already there repel the incoming pod, even when it has no terms of its own.
    (make_pod("x", labels=WEB), [web("web-2", anti_affinity=SPREAD)], "web-2"),
    (make_pod("x", labels={"app": "api"}), [web("web-2", anti_affinity=SPREAD)], None),
    # Only the hostname topology is this predicate's business.
    (web(anti_affinity=[anti_affinity_term(WEB, topology_key="topology.kubernetes.io/zone")]),
     [web("web-2")], None),
], ids=["no pods on the node", "incoming pod's term selects a pod there",
        "incoming pod's term selects nothing", "pod there repels the incoming pod",
        "pod there ignores other labels", "zone topology is not checked"])
def test_anti_affinity_conflict(incoming, node_pods, conflict):
    found = anti_affinity_conflict(incoming, node_pods)
    assert (found.metadata.name if found else None) == conflict


@pytest.mark.parametrize(("pod", "reason"), [
    (web(), None),
    (web(anti_affinity=SPREAD), None),
    (web(anti_affinity=[anti_affinity_term(WEB, topology_key="topology.kubernetes.io/zone")]),
     "required pod anti-affinity on topology.kubernetes.io/zone"),
    (web(pod_affinity=[anti_affinity_term({"app": "cache"})]), "required pod affinity"),
], ids=["no constraints", "hostname anti-affinity", "zone anti-affinity", "required pod affinity"])
def test_unsupported_constraint(pod, reason):
    assert unsupported_constraint(pod) == reason


ZONE = "topology.kubernetes.io/zone"


@pytest.mark.parametrize(("others", "repeller"), [
    ([], None),
    ([make_pod("guard", labels={"app": "guard"}, anti_affinity=[anti_affinity_term(WEB, ZONE)])], "guard"),
    # Node-wide terms are the anti-affinity predicate's business, not this one's.
    ([make_pod("guard", anti_affinity=[anti_affinity_term(WEB)])], None),
    ([make_pod("guard", anti_affinity=[anti_affinity_term({"app": "api"}, ZONE)])], None),
    ([make_pod("guard", namespace="other", anti_affinity=[anti_affinity_term(WEB, ZONE)])], None),
], ids=["no other pods", "zone anti-affinity repels", "hostname anti-affinity is not wide",
        "term selects other labels", "repeller in another namespace"])
def test_wide_repeller(others, repeller):
    found = wide_repeller(web(), others)
    assert (found.metadata.name if found else None) == repeller
