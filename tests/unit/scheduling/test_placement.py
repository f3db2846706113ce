import pytest

from spot_rebalancer.label_selector import SelectorError
from spot_rebalancer.scheduling.node_affinity import fits_required, preferred_score
from spot_rebalancer.scheduling.placement import PlacementIndex
from spot_rebalancer.scheduling.taints import untolerated_taint
from tests.unit.builders import (
    PREFER_SPOT,
    make_node,
    make_pod,
    on_demand_node,
    prefer,
    preference,
    requirement,
    spot_node,
    taint,
    term,
    toleration,
)

ARM = {"kubernetes.io/arch": "arm64"}
NODES = [
    spot_node("spot-arm", labels=ARM),
    spot_node("spot-x86"),
    spot_node("spot-tainted", taints=[taint("dedicated", value="gpu")]),
    on_demand_node("od-arm", labels=ARM),
    on_demand_node("od-x86"),
    make_node("plain"),
    spot_node("spot-notready", ready=False),
]
ELIGIBLE = [n.ready for n in NODES]

PODS = [
    make_pod("spot-lover", preferred=[PREFER_SPOT]),
    make_pod("arm-lover", preferred=[prefer(50, "kubernetes.io/arch", "arm64"), PREFER_SPOT]),
    make_pod("tolerant", preferred=[PREFER_SPOT], tolerations=[toleration("dedicated", "Exists")]),
    make_pod("arm-only", required=[term(requirement("kubernetes.io/arch", "In", "arm64"))],
             preferred=[PREFER_SPOT]),
    make_pod("likes-plain",
             preferred=[preference(9, term(fields=[requirement("metadata.name", "In", "plain")]))]),
]


@pytest.mark.parametrize("pod", PODS, ids=lambda p: p.metadata.name)
def test_placement_agrees_with_the_predicates_on_every_node(pod):
    placement = PlacementIndex(NODES, ELIGIBLE).placement(pod)
    for index, node in enumerate(NODES):
        assert placement.score(index) == preferred_score(pod, node), node.metadata.name
        fits = fits_required(pod, node) and untolerated_taint(pod.spec.tolerations, node.spec.taints) is None
        assert placement.fits(index) == fits, node.metadata.name


def names(levels):
    return [(score, [NODES[i].metadata.name for i in members]) for score, members in levels]


def test_levels_hold_eligible_fitting_nodes_above_a_score_best_first():
    placement = PlacementIndex(NODES, ELIGIBLE).placement(PODS[1])
    assert names(placement.levels_above(0)) == [(150, ["spot-arm"]), (100, ["spot-x86"]), (50, ["od-arm"])]
    assert names(placement.levels_above(100)) == [(150, ["spot-arm"])]
    assert placement.levels_above(150) == []
    assert placement.best_score == 150


def test_best_score_is_none_when_no_eligible_node_fits():
    pod = make_pod("p", node_selector={"pool": "none"}, preferred=[PREFER_SPOT])
    assert PlacementIndex(NODES, ELIGIBLE).placement(pod).best_score is None


def test_pods_with_the_same_signature_share_a_placement():
    index = PlacementIndex(NODES, ELIGIBLE)
    same = make_pod("other-name", labels={"x": "y"}, preferred=[PREFER_SPOT])
    assert index.placement(PODS[0]) is index.placement(same)
    assert index.placement(PODS[0]) is not index.placement(PODS[2])


def test_invalid_affinity_raises_selector_error():
    pod = make_pod("p", preferred=[prefer(1, "cores", "many", operator="Gt")])
    with pytest.raises(SelectorError):
        PlacementIndex(NODES, ELIGIBLE).placement(pod)


def test_eligible_must_cover_every_node():
    with pytest.raises(ValueError):
        PlacementIndex(NODES, ELIGIBLE[:-1])
