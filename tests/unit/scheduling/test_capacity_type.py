import pytest

from spot_rebalancer.scheduling.capacity_type import ON_DEMAND, SPOT, UNKNOWN, architecture, capacity_type
from tests.unit.builders import make_node


@pytest.mark.parametrize(("labels", "expected"), [
    ({"eks.amazonaws.com/capacityType": "SPOT"}, SPOT),
    ({"eks.amazonaws.com/capacityType": "ON_DEMAND"}, ON_DEMAND),
    ({"karpenter.sh/capacity-type": "spot"}, SPOT),
    ({"karpenter.sh/capacity-type": "on-demand"}, ON_DEMAND),
    ({"karpenter.sh/capacity-type": "reserved"}, ON_DEMAND),
    ({"node.kubernetes.io/lifecycle": "spot"}, SPOT),
    ({"node.kubernetes.io/lifecycle": "normal"}, ON_DEMAND),
    ({}, UNKNOWN),
    ({"eks.amazonaws.com/capacityType": "CAPACITY_BLOCK"}, UNKNOWN),
    # The first label with a value it understands wins.
    ({"eks.amazonaws.com/capacityType": "SPOT", "node.kubernetes.io/lifecycle": "on-demand"}, SPOT),
    ({"eks.amazonaws.com/capacityType": "CAPACITY_BLOCK", "karpenter.sh/capacity-type": "spot"}, SPOT),
], ids=["eks spot", "eks on-demand", "karpenter spot", "karpenter on-demand",
        "karpenter reserved is on-demand", "lifecycle label spot", "lifecycle label normal is on-demand",
        "no capacity label", "eks capacity block is unknown", "the first understood label wins",
        "an unknown value gives way to the next label"])
def test_capacity_type(labels, expected):
    assert capacity_type(make_node("n", labels=labels)) == expected


def test_lifecycle_label_is_configurable():
    node = make_node("n", labels={"example.com/lifecycle": "Ec2Spot"})
    assert capacity_type(node) == UNKNOWN
    assert capacity_type(node, lifecycle_label="example.com/lifecycle") == SPOT


def test_architecture():
    assert architecture(make_node("n", labels={"kubernetes.io/arch": "arm64"})) == "arm64"
    assert architecture(make_node("n")) == UNKNOWN
