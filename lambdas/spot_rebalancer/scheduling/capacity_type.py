"""Whether a node is spot or on-demand capacity, and its CPU architecture, from its labels.

EKS managed node groups, Karpenter and spot-rebalancer's own lifecycle label each say it their way;
the first of them present with a known value wins.
"""

from __future__ import annotations

from ..objects import Node

SPOT = "spot"
ON_DEMAND = "on-demand"
UNKNOWN = "unknown"

EKS_CAPACITY_LABEL = "eks.amazonaws.com/capacityType"
KARPENTER_CAPACITY_LABEL = "karpenter.sh/capacity-type"
LIFECYCLE_LABEL = "node.kubernetes.io/lifecycle"
ARCH_LABEL = "kubernetes.io/arch"

# Values seen in the wild, lower-cased without separators: EKS says SPOT / ON_DEMAND, Karpenter
# spot / on-demand / reserved (on-demand capacity reservations), lifecycle labels often "normal".
_VALUES = {"spot": SPOT, "ec2spot": SPOT, "ondemand": ON_DEMAND, "normal": ON_DEMAND, "reserved": ON_DEMAND}


def capacity_type(node: Node, lifecycle_label: str = LIFECYCLE_LABEL) -> str:
    """SPOT, ON_DEMAND or UNKNOWN."""
    labels = node.metadata.labels
    for key in (EKS_CAPACITY_LABEL, KARPENTER_CAPACITY_LABEL, lifecycle_label):
        value = labels.get(key)
        if value is not None:
            kind = _VALUES.get(value.lower().replace("-", "").replace("_", ""))
            if kind is not None:
                return kind
    return UNKNOWN


def architecture(node: Node) -> str:
    return node.metadata.labels.get(ARCH_LABEL, UNKNOWN)
