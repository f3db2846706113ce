import pytest

from spot_rebalancer.objects import ObjectMeta
from spot_rebalancer.scheduling.eligibility import ineligibility, own_taint
from tests.unit.builders import make_node, taint


def deleting_node():
    node = make_node("n")
    node.metadata = ObjectMeta(name="n", deletion_timestamp="2024-05-01T10:00:00Z")
    return node


@pytest.mark.parametrize(("node", "reason"), [
    (make_node("n"), None),
    (make_node("n", ready=False), "not ready"),
    (make_node("n", unschedulable=True), "unschedulable"),
    (deleting_node(), "being deleted"),
    (make_node("n", taints=[taint("spot-rebalancer/draining")]), "tainted spot-rebalancer/draining"),
    # Other people's taints are the taint predicate's business.
    (make_node("n", taints=[taint("karpenter.sh/disrupted")]), None),
], ids=["ready and schedulable", "not ready", "cordoned", "being deleted", "our own taint",
        "someone else's taint"])
def test_ineligibility(node, reason):
    assert ineligibility(node) == reason


def test_own_taint():
    assert own_taint(make_node("n", taints=[taint("a"), taint("spot-rebalancer/x", "NoExecute")])).key \
        == "spot-rebalancer/x"
    assert own_taint(make_node("n", taints=[taint("a")])) is None
