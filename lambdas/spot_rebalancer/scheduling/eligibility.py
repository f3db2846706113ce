"""Which nodes may receive moved pods at all: Ready, schedulable, not being deleted and not tainted
by spot-rebalancer itself (a node it is draining or about to lose)."""

from __future__ import annotations

from ..objects import Node, Taint

OWN_TAINT_PREFIX = "spot-rebalancer/"


def own_taint(node: Node) -> Taint | None:
    """The first taint spot-rebalancer put on the node, if any."""
    return next((t for t in node.spec.taints if t.key.startswith(OWN_TAINT_PREFIX)), None)


def ineligibility(node: Node) -> str | None:
    """Why no pod should be moved to the node, or None when it may receive pods."""
    if not node.ready:
        return "not ready"
    if node.spec.unschedulable:
        return "unschedulable"
    if node.metadata.deletion_timestamp is not None:
        return "being deleted"
    taint = own_taint(node)
    if taint is not None:
        return f"tainted {taint.key}"
    return None
