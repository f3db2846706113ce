"""The capacity nudge's arithmetic: a new node's room and how many nodes the waiting pods need."""

import pytest

from spot_rebalancer.rebalance.cluster import NodeGroup, NodeState
from spot_rebalancer.rebalance.nudge import (
    RoomWanted,
    capacity_requests,
    new_node_room,
    nodes_needed,
)
from spot_rebalancer.scheduling.resources import Resources
from tests.unit.builders import make_node

GROUP = NodeGroup("nodegroup", "spot")
OTHER = NodeGroup("asg", "other")


def state(name, cpu, daemons_cpu=0, group=GROUP):
    node = make_node(name, allocatable={"cpu": str(cpu), "memory": "8Gi", "pods": "10"})
    return NodeState(index=0, node=node, eligible=True, capacity_type="spot", group=group,
                     free=Resources(), daemon_requests=Resources(cpu=daemons_cpu * 1000, pods=2))


def cpu(cores):
    return Resources(cpu=int(cores * 1000), pods=1)


def test_a_new_node_looks_like_most_of_its_group_minus_its_daemonsets():
    room = new_node_room([state("a", 4, 0.5), state("b", 4, 0.5), state("c", 8, 0.5)])
    assert room == Resources(cpu=3500, memory=8 * 2**30, pods=8)
    # On a tie, the smaller shape: better to ask for one node too many than too few.
    assert new_node_room([state("a", 8), state("b", 4)]).cpu == 4000
    assert new_node_room([]) is None


@pytest.mark.parametrize(("requests", "needed"), [
    ([], 0),
    ([cpu(1)] * 4, 1),
    ([cpu(1)] * 5, 2),
    # First fit, largest first: 3+1, 2+2 rather than 3, 2+2, 1.
    ([cpu(1), cpu(2), cpu(3), cpu(2)], 2),
    # Pods no node of the group could hold are left out.
    ([cpu(5), cpu(1)], 1),
    # Pod slots count too.
    ([Resources(pods=1)] * 25, 3),
], ids=["no pods", "four fill one node", "five need two", "first fit largest first",
        "pods too big for a node are left out", "pod slots count"])
def test_nodes_needed(requests, needed):
    assert nodes_needed(requests, Resources(cpu=4000, pods=10)) == needed


def test_counting_stops_past_the_limit():
    assert nodes_needed([cpu(4)] * 100, Resources(cpu=4000, pods=10), limit=3) == 4
    assert nodes_needed([cpu(4)] * 2, Resources(cpu=4000, pods=10), limit=3) == 2


def test_the_group_with_most_waiting_pods_goes_first():
    nodes = [state("s", 4, group=GROUP), state("o", 2, group=OTHER)]
    wanted = [RoomWanted(GROUP, cpu(4))] * 2 + [RoomWanted(OTHER, cpu(2))] * 3
    requests = capacity_requests(wanted, nodes, cap=4)
    assert [(r.group, r.nodes, r.pods) for r in requests] == [(OTHER, 3, 3), (GROUP, 1, 2)]


def test_the_cap_bounds_the_total():
    nodes = [state("s", 4, group=GROUP), state("o", 4, group=OTHER)]
    wanted = [RoomWanted(GROUP, cpu(4))] * 2 + [RoomWanted(OTHER, cpu(4))]
    requests = capacity_requests(wanted, nodes, cap=2)
    assert [(r.group, r.nodes) for r in requests] == [(GROUP, 2)]
    requests = capacity_requests(wanted, nodes, cap=5)
    assert [(r.group, r.nodes, r.pods) for r in requests] == [(GROUP, 2, 2), (OTHER, 1, 1)]
    assert capacity_requests(wanted, nodes, cap=0) == ()
