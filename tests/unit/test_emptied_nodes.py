"""Which on-demand nodes the rebalancer emptied, and when each has settled enough to be scaled in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spot_rebalancer.rebalance.scale_in import EmptiedNode, newly_emptied, settled
from spot_rebalancer.snapshot import ClusterSnapshot
from tests.unit.builders import make_pod, on_demand_node, spot_node

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LABEL = "lifecycle"
SETTLE = 600


def provider(instance: str) -> str:
    return f"aws:///eu-west-1a/{instance}"


def daemon(name: str, node: str):
    return make_pod(name, node, namespace="kube-system", owner=("DaemonSet", "aws-node"))


MIRROR = {"kubernetes.io/config.mirror": "abc"}

NODES = {
    "od": on_demand_node("od", provider_id=provider("i-0od")),
    "spot": spot_node("spot", provider_id=provider("i-0spot")),
    "bare": on_demand_node("bare"),  # no providerID: not an EC2 instance this product can scale in
}


@pytest.mark.parametrize(("node", "pods", "evicted", "emptied"), [
    ("od", [make_pod("web-1", "od"), daemon("aws-node-1", "od")], {"uid-default-web-1"}, True),
    ("od", [make_pod("web-1", "od"), make_pod("web-2", "od")], {"uid-default-web-1"}, False),
    ("od", [make_pod("web-1", "od"), make_pod("kube-proxy", "od", annotations=MIRROR, owner=None),
            make_pod("job-1", "od", phase="Succeeded", owner=("Job", "job"))], {"uid-default-web-1"}, True),
    ("od", [make_pod("web-1", "od"), make_pod("web-2", "od", deleting=True)], {"uid-default-web-1"}, True),
    ("od", [make_pod("web-2", "od", deleting=True)], set(), False),
    ("od", [daemon("aws-node-1", "od")], set(), False),
    ("spot", [make_pod("web-1", "spot")], {"uid-default-web-1"}, False),
    ("bare", [make_pod("web-1", "bare")], {"uid-default-web-1"}, False),
], ids=["last busy pod moved, a DaemonSet pod left", "one busy pod still there",
        "mirror and finished pods stay behind",
        "the rest moved earlier and still stopping", "only someone else's pod stopping",
        "only daemons already: not this cycle's doing",
        "a spot node is not scaled in", "a node without an instance id"])
def test_newly_emptied(node, pods, evicted, emptied):
    snapshot = ClusterSnapshot(nodes=[NODES[node]], pods=pods)
    expected = (EmptiedNode(node, NODES[node].instance_id, NOW),) if emptied else ()
    assert newly_emptied(snapshot, evicted, NOW, LABEL) == expected


RECORD = EmptiedNode("od", "i-0od", NOW - timedelta(seconds=SETTLE))


@pytest.mark.parametrize(("record", "nodes", "pods", "state"), [
    (RECORD, [NODES["od"]], [daemon("aws-node-1", "od")], "ready"),
    (EmptiedNode("od", "i-0od", NOW - timedelta(seconds=SETTLE - 1)), [NODES["od"]], [], "waiting"),
    (RECORD, [], [], "forgotten"),
    (RECORD, [on_demand_node("od", provider_id=provider("i-0other"))], [], "forgotten"),
    (RECORD, [NODES["od"]], [make_pod("web-9", "od")], "forgotten"),
], ids=["empty for the settle time", "a second short", "the node is gone",
        "the name is another instance's now", "a pod landed on it again"])
def test_settled(record, nodes, pods, state):
    result = settled([record], ClusterSnapshot(nodes=nodes, pods=pods), NOW, SETTLE)
    expected = {"ready": ((record,), ()), "waiting": ((), (record,)), "forgotten": ((), ())}[state]
    assert (result.ready, result.waiting) == expected
