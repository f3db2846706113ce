"""The default profile's score plugins, row by row from kube-scheduler's own test tables (the row id
names the Go test and its case)."""

import pytest

from spot_rebalancer.objects import (
    Affinity,
    ContainerImage,
    LabelSelector,
    LabelSelectorRequirement,
    PodAffinity,
    PodAffinityTerm,
    WeightedPodAffinityTerm,
)
from spot_rebalancer.scheduling.scoring import (
    HOSTNAME_KEY,
    balanced_allocation,
    go_round,
    image_index,
    image_locality,
    inter_pod_score,
    inter_pod_scores,
    intolerable_preferences,
    least_allocated,
    normalize,
    normalize_min_max,
    normalized_image,
    spread_scores,
)
from tests.unit.builders import make_node, make_pod, taint, toleration

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


# --- InterPodAffinity: rows from interpodaffinity/scoring_test.go TestPreferredAffinity ---------------
# As there: nodes labelled region China or India, or az az1 or az2; pods labelled security S1 or S2.

CHINA, INDIA, AZ1, AZ2 = {"region": "China"}, {"region": "India"}, {"az": "az1"}, {"az": "az2"}
CHINA_AZ1 = {**CHINA, **AZ1}
S1, S2 = {"security": "S1"}, {"security": "S2"}
PREFERRED = "TestPreferredAffinity: "


def security(operator, *values):
    return LabelSelectorRequirement(key="security", operator=operator, values=list(values))


def weighted(weight, key, *requirements):
    return WeightedPodAffinityTerm(weight=weight, pod_affinity_term=PodAffinityTerm(
        label_selector=LabelSelector(match_expressions=list(requirements)), topology_key=key))


def affinity(prefer=(), avoid=(), required=()):
    return Affinity(
        pod_affinity=PodAffinity(preferred_during_scheduling_ignored_during_execution=list(prefer),
                                 required_during_scheduling_ignored_during_execution=list(required))
        if prefer or required else None,
        pod_anti_affinity=PodAffinity(preferred_during_scheduling_ignored_during_execution=list(avoid))
        if avoid else None)


WITH_S1_IN_REGION = affinity([weighted(5, "region", security("In", "S1"))])
WITH_S2_IN_REGION = affinity([weighted(6, "region", security("In", "S2"))])
AFFINITY_3 = affinity([weighted(8, "region", security("NotIn", "S1"), security("In", "S2")),
                       weighted(2, "region", security("Exists"),
                                LabelSelectorRequirement(key="wrongkey", operator="DoesNotExist"))])
HARD = affinity(required=[
    PodAffinityTerm(label_selector=LabelSelector(match_expressions=[security("In", "S1", "value2")]),
                    topology_key="region"),
    PodAffinityTerm(label_selector=LabelSelector(match_expressions=[
        security("Exists"), LabelSelectorRequirement(key="wrongkey", operator="DoesNotExist")]),
        topology_key="region")])
AWAY_FROM_S1_IN_AZ = affinity(avoid=[weighted(5, "az", security("In", "S1"))])
AWAY_FROM_S2_IN_AZ = affinity(avoid=[weighted(5, "az", security("In", "S2"))])
WITH_S1_IN_REGION_AWAY_FROM_S2_IN_AZ = affinity([weighted(8, "region", security("In", "S1"))],
                                                [weighted(5, "az", security("In", "S2"))])


def pod_of(labels=None, pod_affinity=None, node=""):
    pod = make_pod("p", node, labels=labels)
    pod.spec.affinity = pod_affinity
    return pod


@pytest.mark.parametrize(("incoming", "placed", "nodes", "expected"), [
    (pod_of(S1), [(S1, None, 0), (S2, None, 1), (S1, None, 2)], [CHINA, INDIA, AZ1], [0, 0, 0]),
    (pod_of(S1, WITH_S1_IN_REGION), [(S1, None, 0), (S2, None, 1), (S1, None, 2)], [CHINA, INDIA, AZ1],
     [100, 0, 0]),
    (pod_of(None, WITH_S1_IN_REGION), [(S1, None, 0)], [CHINA, CHINA_AZ1, INDIA], [100, 100, 0]),
    (pod_of(S1, WITH_S2_IN_REGION), [(S2, None, i) for i in (0, 0, 1, 2, 3, 4)],
     [CHINA, INDIA, CHINA, CHINA, INDIA], [100, 0, 100, 100, 0]),
    (pod_of(S1, AFFINITY_3), [(S1, None, 0), (S2, None, 1), (S1, None, 2)], [CHINA, INDIA, AZ1],
     [20, 100, 0]),
    (pod_of(S2), [(S1, WITH_S1_IN_REGION, 0), (S2, WITH_S2_IN_REGION, 1)], [CHINA, INDIA, AZ1], [0, 100, 0]),
    (pod_of(S1), [(S1, HARD, 0), (S2, HARD, 1)], [CHINA, INDIA, AZ1], [100, 100, 0]),
    (pod_of(S1, AWAY_FROM_S1_IN_AZ), [(S1, None, 0), (S2, None, 1)], [AZ1, CHINA], [0, 100]),
    (pod_of(S1, AWAY_FROM_S1_IN_AZ), [(S1, None, 0), (S1, None, 1)], [AZ1, CHINA], [0, 100]),
    (pod_of(S1, AWAY_FROM_S1_IN_AZ), [(S1, None, 0), (S1, None, 0), (S2, None, 1)], [AZ1, INDIA], [0, 100]),
    (pod_of(S2), [(S1, AWAY_FROM_S2_IN_AZ, 0), (S2, AWAY_FROM_S1_IN_AZ, 1)], [AZ1, AZ2], [0, 100]),
    (pod_of(S1, WITH_S1_IN_REGION_AWAY_FROM_S2_IN_AZ), [(S1, None, 0), (S1, None, 1)], [CHINA, AZ1],
     [100, 0]),
    (pod_of(S1, WITH_S1_IN_REGION_AWAY_FROM_S2_IN_AZ), [(S1, None, i) for i in (0, 0, 1, 2, 2, 3, 4)],
     [CHINA_AZ1, INDIA, CHINA, CHINA, INDIA], [100, 0, 100, 100, 0]),
    (pod_of(S1, WITH_S1_IN_REGION_AWAY_FROM_S2_IN_AZ),
     [(S1, None, 0), (S2, None, 1), (None, WITH_S1_IN_REGION_AWAY_FROM_S2_IN_AZ, 2),
      (None, AWAY_FROM_S1_IN_AZ, 3)], [CHINA, AZ1, INDIA, AZ2], [100, 0, 100, 0]),
    (pod_of(S1), [(S1, None, 0), (None, WITH_S1_IN_REGION_AWAY_FROM_S2_IN_AZ, 1)], [CHINA, CHINA], [0, 0]),
], ids=[
    PREFERRED + "all nodes are same priority as Affinity is nil",
    PREFERRED + "Affinity: pod that matches topology key & pods in nodes will get high score comparing to "
    "otherswhich doesn't match either pods in nodes or in topology key",
    PREFERRED + "All the nodes that have the same topology key & label value with one of them has an "
    "existing pod that match the affinity rules, have the same score",
    PREFERRED + "Affinity: nodes in one region has more matching pods comparing to other region, so the "
    "region which has more matches will get high score",
    PREFERRED + "Affinity: different Label operators and values for pod affinity scheduling preference, "
    "including some match failures ",
    PREFERRED + "Affinity symmetry: considered only the preferredDuringSchedulingIgnoredDuringExecution in "
    "pod affinity symmetry",
    PREFERRED + "Affinity symmetry: considered RequiredDuringSchedulingIgnoredDuringExecution in pod "
    "affinity symmetry",
    PREFERRED + "Anti Affinity: pod that does not match existing pods in node will get high score ",
    PREFERRED + "Anti Affinity: pod that does not match topology key & match the pods in nodes will get "
    "higher score comparing to others ",
    PREFERRED + "Anti Affinity: one node has more matching pods comparing to other node, so the node which "
    "has more unmatches will get high score",
    PREFERRED + "Anti Affinity symmetry: the existing pods in node which has anti affinity match will get "
    "high score",
    PREFERRED + "Affinity and Anti Affinity: considered only "
    "preferredDuringSchedulingIgnoredDuringExecution in both pod affinity & anti affinity",
    PREFERRED + "Affinity and Anti Affinity: considering both affinity and anti-affinity, the pod to "
    "schedule and existing pods have the same labels",
    PREFERRED + "Affinity and Anti Affinity and symmetry: considered only "
    "preferredDuringSchedulingIgnoredDuringExecution in both pod affinity & anti affinity & "
    "symmetry",
    PREFERRED + "Avoid panic when partial nodes in a topology don't have pods with affinity",
])
def test_inter_pod_affinity(incoming, placed, nodes, expected):
    """`placed` are (labels, affinity, node index) of the existing pods; every node is scored."""
    existing = [(pod_of(labels, terms, f"node{index + 1}"), nodes[index]) for labels, terms, index in placed]
    topology = inter_pod_scores(incoming, existing)
    assert normalize_min_max([inter_pod_score(topology, labels) for labels in nodes]) == expected


def test_inter_pod_affinity_normalises_negative_scores_from_the_lowest():
    assert normalize_min_max([-10, -5, 0]) == [0, 50, 100]
    assert normalize_min_max([-5, -5]) == [0, 0]


# --- ImageLocality: rows from imagelocality/image_locality_test.go TestImageLocalityPriority ---------

MB = 1024 * 1024


def image_node(*images):
    """A node's status images: (size in MB, names...) each."""
    node = make_node("n")
    node.status.images = [ContainerImage(names=list(names), size_bytes=size * MB) for size, *names in images]
    return node


NODE_40_300_2000 = image_node((40, "gcr.io/40:latest", "gcr.io/40:v1", "gcr.io/40:v1"),
                              (300, "gcr.io/300:latest", "gcr.io/300:v1"), (2000, "gcr.io/2000:latest"))
NODE_250_10 = image_node((250, "gcr.io/250:latest"), (10, "gcr.io/10:latest", "gcr.io/10:v1"))
NODE_600_40_900 = image_node((600, "gcr.io/600:latest"), (40, "gcr.io/40:latest"), (900, "gcr.io/900:latest"))
NODE_300_600_900 = image_node((300, "gcr.io/300:latest"), (600, "gcr.io/600:latest"),
                              (900, "gcr.io/900:latest"))
NODE_4000_30 = image_node((4000, "gcr.io/4000:latest"), (30, "gcr.io/30:latest"))
NODE_20_30_40 = image_node((20, "gcr.io/20:latest"), (30, "gcr.io/30:latest"), (40, "gcr.io/40:latest"))
NO_IMAGES = image_node()


@pytest.mark.parametrize(("images", "nodes", "expected"), [
    (["gcr.io/40", "gcr.io/250"], [NODE_40_300_2000, NODE_250_10], [0, 5]),
    (["gcr.io/40", "gcr.io/300"], [NODE_40_300_2000, NODE_250_10], [7, 0]),
    (["gcr.io/10", "gcr.io/4000"], [NODE_4000_30, NODE_250_10], [100, 0]),
    (["gcr.io/10", "gcr.io/4000"], [NODE_4000_30, NODE_250_10, NO_IMAGES], [66, 0, 0]),
    (["gcr.io/300", "gcr.io/600", "gcr.io/900"], [NODE_600_40_900, NODE_300_600_900, NO_IMAGES], [32, 36, 0]),
    (["gcr.io/30", "gcr.io/40"], [NODE_20_30_40, NODE_4000_30], [1, 0]),
    # An init container's image counts as a container's.
    (["gcr.io/300", "gcr.io/30"], [NODE_40_300_2000, NODE_20_30_40], [6, 0]),
], ids=[
    "TestImageLocalityPriority: two images spread on two nodes, prefer the larger image one",
    "TestImageLocalityPriority: two images on one node, prefer this node",
    "TestImageLocalityPriority: if exceed limit, use limit",
    "TestImageLocalityPriority: if exceed limit, use limit (with node which has no images present)",
    "TestImageLocalityPriority: pod with multiple large images, node2 is preferred",
    "TestImageLocalityPriority: pod with multiple small images",
    "TestImageLocalityPriority: include InitContainers: two images spread on two nodes, prefer the larger "
    "image one",
])
def test_image_locality(images, nodes, expected):
    per_node, nodes_with = image_index(nodes)
    assert [image_locality(images, sizes, nodes_with, len(nodes)) for sizes in per_node] == expected


@pytest.mark.parametrize(("name", "normalized"), [
    ("root", "root:latest"), ("gcr.io:5000/root", "gcr.io:5000/root:latest"), ("root:tag", "root:tag"),
    ("root@sha256:4813494d137e1631bba301d5acab6e7bb7aa74ce1185d456565ef51d737677b2",
     "root@sha256:4813494d137e1631bba301d5acab6e7bb7aa74ce1185d456565ef51d737677b2"),
], ids=["TestNormalizedImageName: add :latest postfix 1", "TestNormalizedImageName: add :latest postfix 2",
        "TestNormalizedImageName: keep it as is 1", "TestNormalizedImageName: keep it as is 2"])
def test_normalized_image_name(name, normalized):
    assert normalized_image(name) == normalized
