"""The planner's prediction against the real scheduler (the harness's, run with the 1.31+ default
score weights): many small seeded random clusters, one planned move each, evicted; the replacement
must land on the predicted node or on one tied with it, and never on a node its preferred affinity
scores no better than the one it left. Where a cluster gives no move but a pod held back because the
scheduler would put it elsewhere (`scheduler-elsewhere`), that pod is evicted instead (the product
never would): its replacement must land where predicted too, so the refusals are checked as well as
the moves. The agreement rate is printed.

The clusters mix capacity types, zones, node sizes and fill, cluster-autoscaler's PreferNoSchedule
mark on some spot nodes, the system default spreading over replicas, and on some workloads preferred
pod anti-affinity to their own replicas over nodes (InterPodAffinity). The 1.20 scheduler normalises
InterPodAffinity between min(0, lowest) and max(0, highest), 1.22+ between the lowest and highest: the
same here, since the spot nodes, cordoned while the workloads start, hold none of their replicas and
score 0. Requests are in the nodes' CPU:memory shape, so NodeResourcesBalancedAllocation scores
every node alike: its formula changed after the 1.20 scheduler here (half the difference, requests
as given), and the 1.31 formula is
table-tested in tests/unit/scheduling/test_scoring.py. What the 1.20 scheduler lacks (pod-level
resources, in-place resize, dynamic resource allocation) is unit-tested only.

One fixed cluster checks DoNotSchedule spreading: the random ones have none, since with their spot
nodes cordoned at the start a zone of only spot nodes would leave replicas Pending.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes import client

from spot_rebalancer.config import Settings
from spot_rebalancer.rebalance import History, SkipCode, plan
from spot_rebalancer.rebalance.cluster import ClusterState
from spot_rebalancer.rebalance.prediction import Predictor
from spot_rebalancer.scheduling.node_affinity import preferred_score
from spot_rebalancer.scheduling.placement import PlacementIndex
from spot_rebalancer.scheduling.resources import pod_requests
from spot_rebalancer.scheduling.spread import blocking_constraints
from spot_rebalancer.scheduling.volume_zone import claims_volumes
from tests.kube.workloads import pod_template, pods, preferred_affinity, running, wait_for

SEED = 14
MOVES_WANTED = 40
MAX_CLUSTERS = 60
ROUND_LABEL = "agreement.test/round"
CAPACITY = "eks.amazonaws.com/capacityType"
ZONES = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
GI_PER_CPU = 4
SETTINGS = Settings(min_pod_age_seconds=0, max_evictions_per_cycle=1, max_evictions_per_node=1,
                    max_evictions_per_namespace=1, max_evictions_per_workload="1",
                    move_single_replica_workloads=True)


@dataclass(frozen=True)
class Outcome:
    planned: bool  # a move the planner chose, or a pod it held back
    predicted: tuple[str, ...]
    landed: str
    better: bool
    apart: bool  # the pod has preferred anti-affinity to its replicas


def test_replacements_land_where_the_planner_predicts(cluster, api, kube, k8s):
    rng = random.Random(SEED)
    simulator = cluster.nodes
    # An evicted pod stays terminating a while, holding its room, as a kubelet's grace period keeps
    # it; the planner counts on that.
    simulator.deletion_delay, delay_before = 5.0, simulator.deletion_delay
    outcomes: list[Outcome] = []
    try:
        for round_number in range(MAX_CLUSTERS):
            if len(outcomes) >= MOVES_WANTED:
                break
            outcome = _one_cluster(rng, round_number, cluster, api, kube, k8s)
            if outcome is not None:
                outcomes.append(outcome)
    finally:
        simulator.deletion_delay = delay_before
    agreed = sum(o.landed in o.predicted for o in outcomes)
    moves = [o for o in outcomes if o.planned]
    worse = [o for o in moves if not o.better]
    rate = agreed / len(outcomes)
    apart = sum(o.apart for o in outcomes)
    print(f"\nprediction agreement: {agreed}/{len(outcomes)} replacements ({rate:.1%}) landed on the "
          f"predicted node or one tied with it ({len(moves)} planned moves, "
          f"{len(outcomes) - len(moves)} pods held back, {apart} with preferred pod anti-affinity); "
          f"{len(worse)} moves on a node no better")
    assert len(moves) >= MOVES_WANTED // 2, "the random clusters should give moves to check"
    assert not worse, worse
    assert rate >= 0.99, [o for o in outcomes if o.landed not in o.predicted]


def test_a_zone_spread_replacement_goes_where_the_recounted_skew_lets_it(cluster, api, kube, k8s):
    """DoNotSchedule spreading against the real scheduler: both replicas start in zone a, then the
    only zone (maxSkew 1). Once zone b has a spot node too, a replacement may not stay in zone a (a
    skew of 2), however roomy the spot node there: the planner moves one to zone b's, predicting only
    it, and the scheduler puts it there."""
    simulator = cluster.nodes
    namespace, selector = "agree-spread", {ROUND_LABEL: "spread"}
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    made = [simulator.add_node(lifecycle="on-demand", zone=ZONES[0], labels=selector)]
    try:
        spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                   "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]
        _deploy(api, namespace, "web", 2, 500, selector, preferred_affinity(CAPACITY, ["SPOT"]), spread)
        _settle(api, namespace, {"web": 2})
        roomy_in_a = simulator.add_node(lifecycle="spot", zone=ZONES[0], cpu="8", memory="32Gi",
                                        labels=selector)
        in_b = simulator.add_node(lifecycle="spot", zone=ZONES[1], labels=selector)
        made += [roomy_in_a, in_b]
        snapshot = kube.snapshot()
        result = plan(snapshot, SETTINGS, History(), datetime.now(UTC))
        assert [e.to_node for e in result.evictions] == [in_b.name]
        name = result.evictions[0].name
        mover = next(p for p in snapshot.pods if (p.metadata.namespace, p.metadata.name) == (namespace, name))
        assert _tie_set(snapshot, mover) == (in_b.name,)
        owner = mover.metadata.controller.uid
        before = {p["metadata"]["uid"] for p in pods(api, namespace) if _owned_by(p, owner)}
        _evict(k8s, namespace, name)
        assert _replacement_node(api, namespace, owner, before) == in_b.name
    finally:
        api.delete(f"/api/v1/namespaces/{namespace}")
        for node in made:
            simulator.remove_node(node.name)


def _one_cluster(rng: random.Random, number: int, cluster, api, kube, k8s) -> Outcome | None:
    """Build one random cluster, plan one move, evict it and see where the replacement lands."""
    simulator = cluster.nodes
    namespace = f"agree{number}"
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    made = []
    try:
        count = rng.randint(4, 8)
        kinds = ["spot", "on-demand"] + [rng.choice(["spot", "on-demand"]) for _ in range(count - 2)]
        for kind in kinds:
            cpu = rng.choice([2, 4, 8])
            taints = [{"key": "DeletionCandidateOfClusterAutoscaler", "value": "1700000000",
                       "effect": "PreferNoSchedule"}] if kind == "spot" and rng.random() < 0.25 else []
            made.append(simulator.add_node(lifecycle=kind, zone=rng.choice(ZONES), cpu=str(cpu),
                                           memory=f"{cpu * GI_PER_CPU}Gi", taints=taints,
                                           labels={ROUND_LABEL: str(number)}))
        spot = [n.name for n, kind in zip(made, kinds, strict=True) if kind == "spot"]
        for name in spot:  # the preferring workloads start on on-demand, as after an interruption
            api.patch(f"/api/v1/nodes/{name}", {"spec": {"unschedulable": True}})
        selector = {ROUND_LABEL: str(number)}
        workloads = {}
        for w in range(rng.randint(1, 3)):
            name, replicas = f"app{w}", rng.randint(1, 4)
            workloads[name] = replicas
            millicores = rng.choice([250, 500, 1000])
            affinity = preferred_affinity(CAPACITY, ["SPOT"], weight=rng.choice([10, 50, 100]))
            # Soft spreading of its own replicas over nodes, drawn apart so the clusters stay as seeded.
            apart = random.Random(f"{SEED}/{number}/{name}")
            if apart.random() < 0.35:
                affinity["podAntiAffinity"] = {"preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": apart.choice([10, 100]), "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app": name}},
                        "topologyKey": "kubernetes.io/hostname"}}]}
            _deploy(api, namespace, name, replicas, millicores, selector, affinity)
        _settle(api, namespace, workloads)
        for name in spot:
            api.patch(f"/api/v1/nodes/{name}", {"spec": {"unschedulable": False}})
        fillers = {f"fill{f}": rng.randint(1, 4) for f in range(rng.randint(0, 2))}
        for name, replicas in fillers.items():
            _deploy(api, namespace, name, replicas, rng.choice([500, 1000, 1500]), selector, None)
        _settle(api, namespace, {**workloads, **fillers})

        snapshot = kube.snapshot()
        result = plan(snapshot, SETTINGS, History(), datetime.now(UTC))
        held = [s for s in result.skipped if s.code is SkipCode.SCHEDULER_ELSEWHERE]
        planned = bool(result.evictions)
        if not planned and not held:
            return None
        name = result.evictions[0].name if planned else held[0].name
        mover = next(p for p in snapshot.pods if (p.metadata.namespace, p.metadata.name) == (namespace, name))
        predicted = _tie_set(snapshot, mover)
        owner = mover.metadata.controller.uid
        before = {p["metadata"]["uid"] for p in pods(api, namespace) if _owned_by(p, owner)}
        _evict(k8s, namespace, name)
        landed = _replacement_node(api, namespace, owner, before)
        nodes = {n.metadata.name: n for n in snapshot.nodes}
        source_score = preferred_score(mover, nodes[mover.spec.node_name])
        better = preferred_score(mover, nodes[landed]) > source_score
        affinity = mover.spec.affinity
        apart = affinity is not None and affinity.pod_anti_affinity is not None
        return Outcome(planned, predicted, landed, better, apart)
    finally:
        api.delete(f"/api/v1/namespaces/{namespace}")
        for node in made:
            simulator.remove_node(node.name)


def _deploy(api, namespace: str, name: str, replicas: int, millicores: int, selector: dict,
            affinity: dict | None, spread: list[dict] | None = None) -> None:
    template = pod_template(name, cpu=f"{millicores}m", memory=f"{millicores * GI_PER_CPU * 1024 // 1000}Mi",
                            affinity=affinity)
    if spread:
        template["spec"]["topologySpreadConstraints"] = spread
    # Pods of one round stay on its nodes: a straggler of an earlier round cannot land here.
    template["spec"]["nodeSelector"] = selector
    api.post(f"/apis/apps/v1/namespaces/{namespace}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template}})


def _settle(api, namespace: str, replicas: dict[str, int]) -> None:
    """Every replica Running and Ready, and no other pod (Pending or terminating) left."""
    want = sum(replicas.values())

    def check():
        found = pods(api, namespace)
        return len(running(found)) == want == len(found)

    wait_for(check, f"{want} pods running in {namespace}", timeout=60)


def _tie_set(snapshot, mover) -> tuple[str, ...]:
    """The nodes the planner's prediction ties for the mover's replacement (one move a cycle: the
    plan's simulation is the snapshot itself)."""
    state = ClusterState(snapshot, SETTINGS.lifecycle_label_key)
    index = PlacementIndex([n.node for n in state.nodes], [n.eligible for n in state.nodes])
    predictor = Predictor(state, dict(SETTINGS.scheduler_score_weights))
    pinned = claims_volumes(mover) or bool(blocking_constraints(mover))
    prediction = predictor.predict(mover, pod_requests(mover), (), state.by_name[mover.spec.node_name],
                                   index.placement(mover), pinned)
    assert prediction is not None
    return tuple(n.name for n in prediction.nodes)


def _evict(k8s, namespace: str, name: str) -> None:
    body = client.V1Eviction(api_version="policy/v1", kind="Eviction",
                             metadata=client.V1ObjectMeta(name=name, namespace=namespace))
    client.CoreV1Api(k8s).create_namespaced_pod_eviction(name, namespace, body)


def _owned_by(pod: dict, owner_uid: str) -> bool:
    return any(r["uid"] == owner_uid for r in pod["metadata"].get("ownerReferences", []))


def _replacement_node(api, namespace: str, owner_uid: str, before: set[str]) -> str:
    """The node of the controller's new pod once the scheduler has bound it."""
    def scheduled():
        return next((p["spec"]["nodeName"] for p in pods(api, namespace)
                     if _owned_by(p, owner_uid) and p["metadata"]["uid"] not in before
                     and p["spec"].get("nodeName")), None)

    return wait_for(scheduled, "the replacement to be scheduled", timeout=30)
