"""A move is planned only where the default scheduler, scoring every feasible node, would put the
replacement on a node its preferred affinity favours (the issue's measured failures, one by one)."""

from dataclasses import replace
from datetime import UTC, datetime

from spot_rebalancer.config import Settings
from spot_rebalancer.objects import (
    Affinity,
    Container,
    ContainerImage,
    PodAffinity,
    PodAffinityTerm,
    TopologySpreadConstraint,
    WeightedPodAffinityTerm,
)
from spot_rebalancer.rebalance import History, SkipCode, plan
from spot_rebalancer.rebalance.cluster import ClusterState
from spot_rebalancer.rebalance.prediction import Predictor
from spot_rebalancer.scheduling.placement import PlacementIndex
from spot_rebalancer.scheduling.resources import pod_requests
from spot_rebalancer.snapshot import ClusterSnapshot
from tests.unit.builders import PREFER_SPOT, make_pod, on_demand_node, selector, spot_node, taint, toleration

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
OPTIONS = Settings(max_evictions_per_workload="10", max_evictions_per_node=10,
                   move_single_replica_workloads=True)
ZONE = "topology.kubernetes.io/zone"
DELETION_CANDIDATE = taint("DeletionCandidateOfClusterAutoscaler", "PreferNoSchedule", "1700000000")


def replica(name, node, owner="web", **kwargs):
    kwargs.setdefault("preferred", [PREFER_SPOT])
    kwargs.setdefault("requests", {"cpu": "500m", "memory": "1Gi"})
    return make_pod(name, node, labels={"app": owner}, owner=("ReplicaSet", owner), **kwargs)


def run(nodes, pods, options=OPTIONS):
    return plan(ClusterSnapshot(list(nodes), list(pods), []), options, History(), NOW)


def moves(result):
    return [(e.name, e.from_node, e.to_node) for e in result.evictions]


def skips(result):
    return {s.name: s.code for s in result.skipped}


def predicted(nodes, pods, mover, options=OPTIONS):
    """The predictor's tie set and the weighted score of every feasible node for `mover`'s replacement."""
    snapshot = ClusterSnapshot(list(nodes), list(pods), [])
    cluster = ClusterState(snapshot, options.lifecycle_label_key)
    index = PlacementIndex([n.node for n in cluster.nodes], [n.eligible for n in cluster.nodes])
    placement = index.placement(mover)
    predictor = Predictor(cluster, dict(options.scheduler_score_weights))
    source = cluster.by_name[mover.spec.node_name]
    args = (mover, pod_requests(mover), (), source, placement, False)
    prediction = predictor.predict(*args)
    return [n.name for n in prediction.nodes], {n.name: s for n, s in predictor.scores(*args)}


def test_spreading_and_room_send_the_replacement_back_to_on_demand():
    """The issue's measurement: a spot node already holding most replicas, full-ish, against empty
    on-demand nodes. Preferred affinity alone says spot; the scheduler's spreading and least-allocated
    scores say on-demand, so the move would fail: it is not planned."""
    nodes = [on_demand_node("od-1"), on_demand_node("od-2"), spot_node("spot")]
    pods = [replica(f"web-{i}", "spot") for i in range(6)] + [replica("web-6", "od-1")]
    result = run(nodes, pods)
    assert moves(result) == []
    assert skips(result)["web-6"] is SkipCode.SCHEDULER_ELSEWHERE
    assert "od-2" in result.skipped[-1].detail


def test_an_empty_spot_node_wins_when_spreading_agrees():
    nodes = [on_demand_node("od-1"), on_demand_node("od-2"), spot_node("spot")]
    pods = [replica("web-0", "od-1"), replica("web-1", "od-2")]
    assert moves(run(nodes, pods)) == [("web-0", "od-1", "spot"), ("web-1", "od-2", "spot")]


def test_cluster_autoscalers_deletion_candidate_taint_keeps_the_replacement_on_on_demand():
    """cluster-autoscaler marks the emptiest nodes (often the fresh spot ones) PreferNoSchedule:
    TaintToleration, weighted 3, outweighs preferred affinity, weighted 2."""
    nodes = [on_demand_node("od-1"), spot_node("spot", taints=[DELETION_CANDIDATE])]
    result = run(nodes, [replica("web-0", "od-1")])
    assert skips(result) == {"web-0": SkipCode.SCHEDULER_ELSEWHERE}
    # Another spot node without the mark takes it; a pod tolerating the mark goes either way.
    nodes.append(spot_node("spot-2"))
    assert moves(run(nodes, [replica("web-0", "od-1")])) == [("web-0", "od-1", "spot-2")]
    tolerant = replica("web-0", "od-1", tolerations=[toleration("DeletionCandidateOfClusterAutoscaler",
                                                                "Exists")])
    tie, _ = predicted(nodes, [tolerant], tolerant)
    assert tie == ["spot", "spot-2"]


def test_the_weights_are_a_setting():
    nodes = [on_demand_node("od-1"), spot_node("spot", taints=[DELETION_CANDIDATE])]
    weights = dict(OPTIONS.scheduler_score_weights) | {"TaintToleration": 0}
    options = replace(OPTIONS, scheduler_score_weights=tuple(sorted(weights.items())))
    assert moves(run(nodes, [replica("web-0", "od-1")], options)) == [("web-0", "od-1", "spot")]


def test_alike_nodes_tie_and_the_move_is_planned_when_every_one_of_them_is_better():
    nodes = [on_demand_node("od-1"), spot_node("spot-b"), spot_node("spot-a")]
    mover = replica("web-0", "od-1")
    tie, scores = predicted(nodes, [mover], mover)
    assert tie == ["spot-a", "spot-b"]
    assert scores["spot-a"] == scores["spot-b"] > scores["od-1"]
    assert moves(run(nodes, [mover])) == [("web-0", "od-1", "spot-a")]


def only(plugin):
    """Settings scoring with one plugin alone, so a node's total is that plugin's normalised score."""
    weights = {name: 0 for name, _ in OPTIONS.scheduler_score_weights} | {plugin: 1}
    return replace(OPTIONS, scheduler_score_weights=tuple(sorted(weights.items())))


def test_the_evicted_replica_no_longer_counts_for_spreading_but_still_holds_its_room():
    """The scheduler skips a terminating pod when counting for spreading, but counts its requests
    until it is deleted."""
    nodes = [on_demand_node("od-1"), on_demand_node("od-2")]
    mover = replica("web-0", "od-1")
    pods = [mover, replica("web-1", "od-2")]
    # Hostname spreading only (no zone labels): od-1 counts 0 replicas (2 raw), od-2 one (3 raw).
    assert predicted(nodes, pods, mover, only("PodTopologySpread"))[1] == {"od-1": 100, "od-2": 66}
    # Least allocated, 4 CPU / 16Gi nodes: od-1 still holds the mover's 500m / 1Gi besides the
    # replacement's, od-2 web-1's.
    assert predicted(nodes, [mover], mover, only("NodeResourcesFit"))[1] == {"od-1": 81, "od-2": 90}
    assert predicted(nodes, pods, mover, only("NodeResourcesFit"))[1] == {"od-1": 81, "od-2": 81}


def test_own_schedule_anyway_constraints_replace_the_system_defaults():
    zones = [{ZONE: "a"}, {ZONE: "a"}, {ZONE: "b"}]
    nodes = [*(spot_node(f"spot-{i}", labels=z) for i, z in enumerate(zones)),
             on_demand_node("od", labels={ZONE: "b"})]
    spread = [TopologySpreadConstraint(topology_key=ZONE, max_skew=1, when_unsatisfiable="ScheduleAnyway",
                                       label_selector=selector({"app": "web"}))]
    pods = [replica("web-0", "spot-0", spread=spread), replica("web-1", "spot-1", spread=spread)]
    mover = replica("web-2", "od", spread=spread)
    tie, scores = predicted(nodes, [*pods, mover], mover)
    assert tie == ["spot-2"]  # zone b holds none of the others once the mover is gone
    assert scores["spot-2"] > scores["spot-0"] == scores["spot-1"]


def spread_apart():
    """Preferred anti-affinity to its own replicas on the hostname, the usual soft spreading."""
    return Affinity(pod_anti_affinity=PodAffinity(preferred_during_scheduling_ignored_during_execution=[
        WeightedPodAffinityTerm(weight=100, pod_affinity_term=PodAffinityTerm(
            label_selector=selector({"app": "web"}), topology_key="kubernetes.io/hostname"))]))


def test_preferred_anti_affinity_sends_the_replacement_away_from_its_replicas():
    """InterPodAffinity (x2) puts the nodes holding a replica, the evicted one on its source
    included (it is still terminating there), at 0 and the others at 100."""
    big = {"cpu": "16", "memory": "64Gi", "pods": "110"}
    nodes = [on_demand_node("od"), spot_node("spot-big", allocatable=big), spot_node("spot-small")]
    pods = [replica("web-0", "od"), replica("web-1", "spot-big")]
    for pod in pods:
        pod.spec.affinity.pod_anti_affinity = spread_apart().pod_anti_affinity
    tied, scores = predicted(nodes, pods, pods[0])
    assert tied == ["spot-small"]
    assert moves(run(nodes, pods)) == [("web-0", "od", "spot-small")]
    plain = [replica("web-0", "od"), replica("web-1", "spot-big")]
    _, plain_scores = predicted(nodes, plain, plain[0])
    # od and spot-big -100 raw, spot-small 0: normalised 0, 0 and 100, weighed 2.
    gained = {name: scores[name] - plain_scores[name] for name in scores}
    assert gained == {"od": 0, "spot-big": 0, "spot-small": 200}


def test_images_already_on_a_node_draw_the_replacement_there():
    """ImageLocality (x1): a node that holds the pod's large image scores up to 100 more."""
    nodes = [on_demand_node("od"), spot_node("spot-a"), spot_node("spot-b")]
    nodes[2].status.images = [ContainerImage(names=["registry.example/web:1.0"], size_bytes=900 * 2**20)]
    mover = replica("web-0", "od", owner="solo")
    mover.spec.containers[0].image = "registry.example/web:1.0"
    tied, scores = predicted(nodes, [mover], mover)
    assert tied == ["spot-b"]
    # 900 MB on one of three nodes: 300 MB, (300 - 23) / (1000 - 23) of 100.
    assert scores["spot-b"] - scores["spot-a"] == 28


def test_image_locality_scores_every_node_by_the_plugin_formula():
    """Only nodes holding one of the pod's images are scored; the others score 0 as the formula gives
    them. Init containers' images count, and an untagged image is looked up as ":latest"."""
    nodes = [on_demand_node("od"), spot_node("app-and-init"), spot_node("app-only"),
             spot_node("other-images"), spot_node("none")]
    mib = 2**20
    nodes[1].status.images = [ContainerImage(names=["web:latest"], size_bytes=600 * mib),
                              ContainerImage(names=["registry.example/init:2"], size_bytes=200 * mib)]
    nodes[2].status.images = [ContainerImage(names=["web:latest"], size_bytes=600 * mib)]
    nodes[3].status.images = [ContainerImage(names=["registry.example/cache:7"], size_bytes=900 * mib)]
    mover = replica("web-0", "od", owner="solo")
    mover.spec.containers[0].image = "web"
    mover.spec.init_containers = [Container(name="init", image="registry.example/init:2")]
    weights = dict.fromkeys(dict(OPTIONS.scheduler_score_weights), 0) | {"ImageLocality": 1}
    only_images = replace(OPTIONS, scheduler_score_weights=tuple(sorted(weights.items())))
    _, scores = predicted(nodes, [mover], mover, only_images)
    # 2 containers: clamp 23 MB to 2,000 MB. web on 2 of 5 nodes: 240 MB; init on 1 of 5: 40 MB.
    assert scores == {"od": 0, "app-and-init": 100 * (280 - 23) // (2000 - 23),
                      "app-only": 100 * (240 - 23) // (2000 - 23), "other-images": 0, "none": 0}
