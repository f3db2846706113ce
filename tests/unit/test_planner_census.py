"""The census: fleet make-up by capacity type and architecture, spot share, misplaced pods."""

from spot_rebalancer.rebalance.census import Census, CensusRow, census
from spot_rebalancer.snapshot import ClusterSnapshot
from tests.unit.builders import (
    PREFER_SPOT,
    make_node,
    make_pod,
    on_demand_node,
    prefer,
    spot_node,
    taint,
)

GI = 2**30
ARM = {"kubernetes.io/arch": "arm64"}
AMD = {"kubernetes.io/arch": "amd64"}


def test_nodes_and_requests_by_capacity_type_and_architecture():
    nodes = [spot_node("s1", labels=ARM), spot_node("s2", labels=ARM), on_demand_node("o1", labels=AMD),
             make_node("plain")]
    pods = [make_pod("a", "s1", requests={"cpu": "500m", "memory": "1Gi"}),
            make_pod("b", "s2", requests={"cpu": "1", "memory": "2Gi"}),
            make_pod("c", "o1", requests={"cpu": "500m"}),
            make_pod("done", "o1", requests={"cpu": "3"}, phase="Succeeded"),  # holds nothing
            make_pod("pending", "", requests={"cpu": "3"}, phase="Pending")]  # on no node yet
    result = census(ClusterSnapshot(nodes, pods))
    assert result.rows == (
        CensusRow("on-demand", "amd64", 1, 4000, 16 * GI, 500, 0),
        CensusRow("spot", "arm64", 2, 8000, 32 * GI, 1500, 3 * GI),
        CensusRow("unknown", "unknown", 1, 4000, 16 * GI, 0, 0),
    )
    assert result.spot_cpu_share == 0.75


def test_spot_share_is_none_when_nothing_requests_cpu():
    assert census(ClusterSnapshot([spot_node("s")], [])).spot_cpu_share is None
    assert census(ClusterSnapshot()) == Census((), None, 0, 0)


def test_misplaced_pods_score_below_the_best_eligible_node_they_may_run_on():
    nodes = [on_demand_node("od"), spot_node("spot"), spot_node("spot-full", allocatable={"cpu": "0"})]
    pods = [
        make_pod("on-od", "od", preferred=[PREFER_SPOT]),  # misplaced
        make_pod("on-spot", "spot", preferred=[PREFER_SPOT]),  # well placed
        make_pod("no-prefs", "od"),  # not counted at all
        make_pod("prefers-od", "od", preferred=[prefer(10, "eks.amazonaws.com/capacityType", "ON_DEMAND")]),
        make_pod("daemon", "od", owner=("DaemonSet", "x"), preferred=[PREFER_SPOT]),  # counted too
        make_pod("done", "od", preferred=[PREFER_SPOT], phase="Failed"),  # not running
    ]
    result = census(ClusterSnapshot(nodes, pods))
    assert (result.pods_with_preferences, result.misplaced_pods) == (4, 2)


def test_nodes_a_pod_cannot_use_do_not_make_it_misplaced():
    nodes = [on_demand_node("od"), spot_node("spot-tainted", taints=[taint("dedicated")]),
             spot_node("spot-down", ready=False),
             spot_node("spot-ours", taints=[taint("spot-rebalancer/draining", "PreferNoSchedule")])]
    result = census(ClusterSnapshot(nodes, [make_pod("p", "od", preferred=[PREFER_SPOT])]))
    assert (result.pods_with_preferences, result.misplaced_pods) == (1, 0)


def test_pods_with_invalid_affinity_are_counted_but_never_misplaced():
    pod = make_pod("p", "od", preferred=[prefer(1, "cores", "x", operator="Gt")])
    result = census(ClusterSnapshot([on_demand_node("od")], [pod]))
    assert (result.pods_with_preferences, result.misplaced_pods) == (1, 0)
