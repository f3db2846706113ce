"""The default profile's score plugins, row by row from kube-scheduler's own test tables (the row id
names the Go test and its case)."""

import pytest

from spot_rebalancer.scheduling.scoring import (
    HOSTNAME_KEY,
    balanced_allocation,
    go_round,
    intolerable_preferences,
    least_allocated,
    normalize,
    spread_scores,
)
from tests.unit.builders import taint, toleration

PREFER = "PreferNoSchedule"


def prefer_taint(key, value):
    return taint(key, PREFER, value)


ARM, SSD = prefer_taint("cpu-type", "arm64"), prefer_taint("disk-type", "ssd")
NO_SCHEDULE = "NoSchedule"


@pytest.mark.parametrize(("tolerations", "nodes", "expected"), [
    ([toleration("foo", "Equal", "bar", PREFER)],
     [[prefer_taint("foo", "bar")], [prefer_taint("foo", "blah")]], [100, 0]),
    ([toleration("cpu-type", "Equal", "arm64", PREFER), toleration("disk-type", "Equal", "ssd", PREFER)],
     [[], [ARM], [ARM, SSD]], [100, 100, 100]),
    ([toleration("foo", "Equal", "bar", PREFER)],
     [[], [ARM], [ARM, SSD]], [100, 50, 0]),
    ([toleration("cpu-type", "Equal", "arm64", NO_SCHEDULE),
      toleration("disk-type", "Equal", "ssd", NO_SCHEDULE)],
     [[], [taint("cpu-type", NO_SCHEDULE, "arm64")], [ARM, SSD]], [100, 100, 0]),
    ([], [[], [ARM]], [100, 0]),
    # cluster-autoscaler's mark on the emptiest nodes: the scheduler steers away from them.
    ([], [[prefer_taint("DeletionCandidateOfClusterAutoscaler", "1700000000")], []], [0, 100]),
], ids=["TestTaintTolerationScore: node with taints tolerated by the pod, gets a higher score than those "
        "node with intolerable taints",
        "TestTaintTolerationScore: the nodes that all of their taints are tolerated by the pod, get the same "
        "score, no matter how many tolerable taints a node has",
        "TestTaintTolerationScore: the more intolerable taints a node has, the lower score it gets.",
        "TestTaintTolerationScore: only taints and tolerations that have effect PreferNoSchedule are checked",
        "TestTaintTolerationScore: Default behaviour No taints and tolerations, lands on node with no taints",
        "cluster-autoscaler deletion candidate"])
def test_taint_toleration(tolerations, nodes, expected):
    raw = [intolerable_preferences(tolerations, taints) for taints in nodes]
    assert normalize(raw, reverse=True) == expected


# (requested, allocatable) of CPU and memory per node, the incoming pod's requests included.
@pytest.mark.parametrize(("nodes", "expected"), [
    ([((0, 4000), (0, 10000)), ((0, 4000), (0, 10000))], [100, 100]),
    ([((3000, 4000), (5000, 10000)), ((3000, 6000), (5000, 10000))], [37, 50]),
    ([((6000, 10000), (0, 20000)), ((6000, 10000), (5000, 20000))], [70, 57]),
    ([((6000, 10000), (5000, 20000)), ((6000, 10000), (10000, 20000))], [57, 45]),
    ([((6000, 10000), (5000, 20000)), ((6000, 10000), (10000, 50000))], [57, 60]),
    ([((6000, 4000), (0, 10000)), ((6000, 4000), (5000, 10000))], [50, 25]),
    ([((3000, 0), (0, 0)), ((3000, 0), (5000, 0))], [0, 0]),
], ids=["TestLeastAllocatedScoringStrategy: nothing scheduled, nothing requested",
        "TestLeastAllocatedScoringStrategy: nothing scheduled, resources requested, differently sized "
        "nodes",
        "TestLeastAllocatedScoringStrategy: no resources requested, pods scheduled with resources",
        "TestLeastAllocatedScoringStrategy: resources requested, pods scheduled with resources",
        "TestLeastAllocatedScoringStrategy: resources requested, pods scheduled with resources, differently "
        "sized nodes",
        "TestLeastAllocatedScoringStrategy: requested resources exceed node capacity",
        "TestLeastAllocatedScoringStrategy: zero node resources, pods scheduled with resources"])
def test_least_allocated(nodes, expected):
    assert [least_allocated(cpu, memory) for cpu, memory in nodes] == expected


@pytest.mark.parametrize(("nodes", "expected"), [
    ([((3000, 4000), (5000, 10000)), ((3000, 6000), (5000, 10000))], [87, 100]),
    ([((6000, 10000), (5000, 20000)), ((6000, 10000), (10000, 20000))], [82, 95]),
    ([((6000, 10000), (5000, 20000)), ((6000, 10000), (10000, 50000))], [82, 80]),
    ([((6000, 6000), (0, 10000)), ((6000, 6000), (5000, 10000))], [50, 75]),
    ([((3000, 3500), (5000, 40000)), ((3000, 3500), (5000, 40000))], [63, 63]),
], ids=["TestNodeResourcesBalancedAllocation: nothing scheduled, resources requested, differently "
        "sized nodes",
        "TestNodeResourcesBalancedAllocation: resources requested, pods scheduled with resources",
        "TestNodeResourcesBalancedAllocation: resources requested, pods scheduled with resources, "
        "differently sized nodes",
        "TestNodeResourcesBalancedAllocation: requested resources at node capacity",
        "TestNodeResourcesBalancedAllocation: node without the scalar resource should skip the scalar "
        "resource"])
def test_balanced_allocation(nodes, expected):
    assert [balanced_allocation(cpu, memory) for cpu, memory in nodes] == expected


def test_node_affinity_normalises_by_the_best_node_and_leaves_all_zero_alone():
    """DefaultNormalizeScore, as NodeAffinity's score uses it (TestNodeAffinityPriority's "all nodes
    are same priority as NodeAffinity is nil" and its weighted cases)."""
    assert normalize([0, 0, 0]) == [0, 0, 0]
    assert normalize([2, 0, 0]) == [100, 0, 0]
    assert normalize([2, 7, 6]) == [28, 100, 85]


def test_go_rounds_halves_away_from_zero():
    assert [go_round(v) for v in (0.5, 1.5, 2.5, 2.4999, -0.5)] == [1, 2, 3, 2, -1]


NODE = {HOSTNAME_KEY: "x"}


def hostnames(*names, zone=None):
    return [{HOSTNAME_KEY: n, **({"zone": zone[i]} if zone else {})} for i, n in enumerate(names)]


@pytest.mark.parametrize(("constraints", "labels", "own", "domains", "expected"), [
    # Matching pods spread 2/1/0/3 over the nodes.
    ([(HOSTNAME_KEY, 1)], hostnames("a", "b", "c", "d"), [[2], [1], [0], [3]], [{}], [20, 60, 100, 0]),
    ([(HOSTNAME_KEY, 2)], hostnames("a", "b", "c", "d"), [[2], [1], [0], [3]], [{}], [33, 66, 100, 16]),
    # 4/3/2/1.
    ([(HOSTNAME_KEY, 3)], hostnames("a", "b", "c", "d"), [[4], [3], [2], [1]], [{}], [44, 66, 77, 100]),
    # 4/2/1 on the candidates (node-y, with 3, failed the filters).
    ([(HOSTNAME_KEY, 1)], hostnames("a", "b", "x"), [[4], [2], [1]], [{}], [33, 83, 100]),
    # node-b lacks the key: left out, 0.
    ([(HOSTNAME_KEY, 1)], [{HOSTNAME_KEY: "a"}, {"n": "b"}, {HOSTNAME_KEY: "x"}], [[4], [2], [1]], [{}],
     [16, 0, 100]),
    # Zones: zone1 holds 6 matching pods, zone2 4 (3 of them on a node that failed the filters).
    ([("zone", 1)], hostnames("a", "b", "x", zone=["zone1", "zone1", "zone2"]), [[4], [2], [1]],
     [{"zone1": 6, "zone2": 4}], [75, 75, 100]),
    # Zone and node: 2/~1~/2/~4~.
    ([("zone", 1), (HOSTNAME_KEY, 1)], hostnames("a", "x", zone=["zone1", "zone2"]), [[2, 2], [2, 2]],
     [{"zone1": 3, "zone2": 6}, {}], [100, 63]),
], ids=["TestPodTopologySpreadScore: one constraint on node, all 4 nodes are candidates",
        "TestPodTopologySpreadScore: one constraint on node, all 4 nodes are candidates, maxSkew=2",
        "TestPodTopologySpreadScore: one constraint on node, all 4 nodes are candidates, maxSkew=3",
        "TestPodTopologySpreadScore: one constraint on node, 3 out of 4 nodes are candidates",
        "TestPodTopologySpreadScore: one constraint on node, 3 out of 4 nodes are candidates, one node "
        "doesn't match topology key",
        "TestPodTopologySpreadScore: one constraint on zone, 3 out of 4 nodes are candidates",
        "TestPodTopologySpreadScore: two Constraints on zone and node, 2 out of 4 nodes are candidates"])
def test_topology_spread(constraints, labels, own, domains, expected):
    assert spread_scores(constraints, labels, own, domains, require_all=True) == expected


def test_system_default_spreading_scores_nodes_without_a_zone_by_hostname_alone():
    """TestPodTopologySpreadScore: "system defaulting, nodes don't have zone, pods match service"
    (4/3/2/1 matching pods): the same scores as one hostname constraint of maxSkew 3."""
    constraints = [(HOSTNAME_KEY, 3), ("topology.kubernetes.io/zone", 5)]
    own = [[4, 4], [3, 3], [2, 2], [1, 1]]
    assert spread_scores(constraints, hostnames("a", "b", "c", "d"), own, [{}, {}], require_all=False) \
        == [44, 66, 77, 100]
    # With its own constraints the pod would need every key: all nodes left out.
    assert spread_scores(constraints, hostnames("a", "b", "c", "d"), own, [{}, {}], require_all=True) \
        == [0, 0, 0, 0]
