"""The predictor's grouping and per-node caches decide nothing: `Predictor.predict` (alike nodes
scored once per class, resource scores and room kept per node and refreshed where moves changed
them) against the plain path, `Predictor.scores`, which filters and scores every node one by one.

Clusters are hypothesis-generated with what the scores read (PreferNoSchedule taints, zones, own
ScheduleAnyway constraints or the system default spreading, fill levels, best-effort pods,
nominated pods, hostname anti-affinity, host ports, pinned pods, preferred pod (anti-)affinity, node
images), and bench/gen.py's fleet; the prediction is compared pod by pod while moves are simulated
and undone, and whole plans are compared with a planner that predicts the plain way."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.gen import NOW as GENERATED_NOW
from bench.gen import write_list
from spot_rebalancer.config import Settings
from spot_rebalancer.objects import (
    ContainerImage,
    LabelSelector,
    PodAffinity,
    PodAffinityTerm,
    TopologySpreadConstraint,
    WeightedPodAffinityTerm,
)
from spot_rebalancer.rebalance import History, plan
from spot_rebalancer.rebalance.cluster import ClusterState
from spot_rebalancer.rebalance.planner import _Planner
from spot_rebalancer.rebalance.prediction import Prediction, Predictor
from spot_rebalancer.scheduling.placement import PlacementIndex
from spot_rebalancer.scheduling.ports import host_ports
from spot_rebalancer.scheduling.resources import is_terminal, pod_requests
from spot_rebalancer.scheduling.volume_zone import ZONE_LABEL
from spot_rebalancer.snapshot import ClusterSnapshot, read_list
from tests.unit.builders import anti_affinity_term, make_node, make_pod, prefer, taint, toleration

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CAPACITY = "eks.amazonaws.com/capacityType"
HOSTNAME = "kubernetes.io/hostname"
PREFERENCES = [prefer(100, CAPACITY, "SPOT"), prefer(50, "kubernetes.io/arch", "arm64"),
               prefer(10, ZONE_LABEL, "zone-a")]
DELETION_CANDIDATE = taint("DeletionCandidateOfClusterAutoscaler", "PreferNoSchedule", "1700000000")


class PlainPredictor(Predictor):
    """The prediction as the best of `scores`: every node filtered and scored on its own."""

    def predict(self, pod, requests, ports, source, placement, pinned) -> Prediction | None:
        scored = self.scores(pod, requests, ports, source, placement, pinned)
        if not scored:
            return None
        best = max(score for _, score in scored)
        tied = tuple(sorted((node for node, score in scored if score == best), key=lambda n: n.name))
        return Prediction(tied, best, len(scored))


class PlainPlanner(_Planner):
    def __init__(self, snapshot, options, history, now, workloads, node_groups) -> None:
        super().__init__(snapshot, options, history, now, workloads, node_groups)
        self.predictor = PlainPredictor(self.cluster, dict(options.scheduler_score_weights))


def plain_plan(snapshot, options, history, now):
    return PlainPlanner(snapshot, options, history, now, {}, {}).run()


def one_in(draw, n):
    return draw(st.integers(1, n)) == 1


@st.composite
def fleets(draw):
    nodes = []
    for i in range(draw(st.integers(2, 12))):
        labels = {CAPACITY: draw(st.sampled_from(["SPOT", "ON_DEMAND"])),
                  "kubernetes.io/arch": draw(st.sampled_from(["arm64", "amd64"]))}
        if not one_in(draw, 8):  # a node without a zone is its own case for spreading
            labels[ZONE_LABEL] = draw(st.sampled_from(["zone-a", "zone-b", "zone-c"]))
        # Few sizes, so that nodes tie and classes have several members.
        allocatable = {"cpu": draw(st.sampled_from(["2", "4"])),
                       "memory": draw(st.sampled_from(["4Gi", "8Gi"])), "pods": str(draw(st.integers(3, 12)))}
        taints = []
        if one_in(draw, 3):
            taints.append(DELETION_CANDIDATE)
        if one_in(draw, 6):
            taints.append(taint("dedicated", "PreferNoSchedule", "batch"))
        if one_in(draw, 8):
            taints.append(taint("dedicated", value="gpu"))
        node = make_node(f"node-{i}", labels=labels, allocatable=allocatable, taints=taints,
                         ready=not one_in(draw, 12), unschedulable=one_in(draw, 12))
        if one_in(draw, 3):  # ImageLocality: an app's image pulled here
            node.status.images = [ContainerImage(names=[f"{draw(st.sampled_from(IMAGES))}:1"],
                                                 size_bytes=draw(st.sampled_from([50, 400, 1500])) * 2**20)]
        nodes.append(node)
    return nodes


IMAGES = ["app0", "app1", "app2"]


SPREADS = [
    [],  # the system defaults
    [TopologySpreadConstraint(topology_key=ZONE_LABEL, max_skew=1, when_unsatisfiable="ScheduleAnyway")],
    [TopologySpreadConstraint(topology_key=HOSTNAME, max_skew=2, when_unsatisfiable="ScheduleAnyway")],
    [TopologySpreadConstraint(topology_key=ZONE_LABEL, max_skew=2, when_unsatisfiable="ScheduleAnyway",
                              node_taints_policy="Honor"),
     TopologySpreadConstraint(topology_key=HOSTNAME, max_skew=1, when_unsatisfiable="ScheduleAnyway",
                              match_label_keys=["rev"])],
    [TopologySpreadConstraint(topology_key=ZONE_LABEL, when_unsatisfiable="DoNotSchedule")],  # pinned
]


@st.composite
def templates(draw, app):
    spread = [msgspec.structs.replace(c, label_selector=LabelSelector(match_labels={"app": app}))
              for c in draw(st.sampled_from(SPREADS))]
    return {
        "preferred": draw(st.lists(st.sampled_from(PREFERENCES), min_size=1, max_size=2, unique_by=id)),
        "requests": {"cpu": f"{draw(st.integers(0, 4)) * 250}m", "memory": f"{draw(st.integers(0, 2))}Gi"},
        "anti_affinity": [anti_affinity_term({"app": app})] if one_in(draw, 6) else [],
        "host_ports": [8080] if one_in(draw, 6) else [],
        "spread": spread,
        "tolerations": draw(st.sampled_from([
            [], [toleration("dedicated", "Exists")], [toleration("DeletionCandidateOfClusterAutoscaler",
                                                                 "Exists", effect="PreferNoSchedule")]])),
        "priority": draw(st.sampled_from([None, 0, 1000])),
    }


def with_pod_affinity(pod, app, weight, topology):
    """Preferred anti-affinity (weight < 0) or affinity to the app's pods, as InterPodAffinity scores."""
    term = WeightedPodAffinityTerm(weight=abs(weight), pod_affinity_term=PodAffinityTerm(
        label_selector=LabelSelector(match_labels={"app": app}), topology_key=topology))
    group = PodAffinity(preferred_during_scheduling_ignored_during_execution=[term])
    affinity = pod.spec.affinity
    if weight < 0:
        affinity.pod_anti_affinity = group
    else:
        affinity.pod_affinity = group


@st.composite
def clusters(draw):
    nodes = draw(fleets())
    names = [n.metadata.name for n in nodes]
    pods = []
    for w in range(draw(st.integers(1, 5))):
        app = f"app{w}"
        template = draw(templates(app))
        # InterPodAffinity: toward or away from some app's pods, over nodes or zones.
        pod_affinity = draw(st.sampled_from([None, None, (app, -100, HOSTNAME), ("app0", 50, ZONE_LABEL),
                                             ("app1", -30, ZONE_LABEL)]))
        for ordinal in range(draw(st.integers(1, 6))):
            pod = make_pod(f"{app}-{ordinal}", draw(st.sampled_from(names)),
                           labels={"app": app, "rev": "1"}, owner=("ReplicaSet", f"{app}-rs"), **template)
            pod.spec.containers[0].image = f"{app}:1"
            if pod_affinity is not None:
                with_pod_affinity(pod, *pod_affinity)
            pods.append(pod)
    for n in range(draw(st.integers(0, 2))):  # pending pods nominated to a node hold room there
        pending = make_pod(f"pending-{n}", "", requests={"cpu": "500m"}, owner=("ReplicaSet", "pending-rs"),
                           priority=draw(st.sampled_from([0, 2000])), phase="Pending", ready=False)
        status = msgspec.structs.replace(pending.status, nominated_node_name=draw(st.sampled_from(names)))
        pods.append(msgspec.structs.replace(pending, status=status))
    return ClusterSnapshot(nodes, pods, [])


def plain_prediction(predictor, *args):
    return PlainPredictor.predict(predictor, *args)


def names(prediction):
    return None if prediction is None else ([n.name for n in prediction.nodes], prediction.score,
                                            prediction.feasible)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.randoms(use_true_random=False))
def test_grouped_predictions_are_the_plain_ones_as_moves_are_simulated(snapshot, rng):
    cluster = ClusterState(snapshot, Settings().lifecycle_label_key)
    placements = PlacementIndex([n.node for n in cluster.nodes], [n.eligible for n in cluster.nodes])
    predictor = Predictor(cluster, dict(Settings().scheduler_score_weights))
    moved = []
    for pod in snapshot.pods:
        source = cluster.by_name.get(pod.spec.node_name)
        if source is None or is_terminal(pod):
            continue
        pinned = any(c.when_unsatisfiable == "DoNotSchedule" for c in pod.spec.topology_spread_constraints)
        args = (pod, pod_requests(pod), host_ports(pod), source, placements.placement(pod), pinned)
        prediction = predictor.predict(*args)
        assert names(prediction) == names(plain_prediction(predictor, *args)), pod.metadata.name
        if prediction is not None and rng.random() < 0.6:
            target = rng.choice(prediction.nodes)
            cluster.move(pod, args[1], args[2], source, target)
            moved.append((pod, args[1], args[2], source, target))
        if moved and rng.random() < 0.2:
            cluster.undo_move(*moved.pop())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.integers(1, 8))
def test_plans_with_grouped_predictions_are_the_plain_plans(snapshot, cap):
    options = Settings(min_pod_age_seconds=0, move_single_replica_workloads=True, max_evictions_per_node=cap,
                       max_evictions_per_workload="100%")
    assert plan(snapshot, options, History(), NOW) == plain_plan(snapshot, options, History(), NOW)


def test_a_generated_fleet_is_planned_as_with_plain_predictions(tmp_path):
    """bench/gen.py's fleet with caps high enough that every candidate is predicted for."""
    path = tmp_path / "list.json"
    write_list(path, nodes=60, pods_per_node=30)
    snapshot = read_list(path.read_bytes())
    options = Settings(max_evictions_per_cycle=1000, max_evictions_per_node=30,
                       max_evictions_per_namespace=1000, max_evictions_per_workload="100%")

    result = plan(snapshot, options, History(), GENERATED_NOW)

    assert len(result.evictions) > 50, "the fleet exercises many predictions"
    assert result == plain_plan(snapshot, options, History(), GENERATED_NOW)
