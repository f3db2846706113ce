"""The planner's indexes and caches decide nothing: the planner against a reference that asks the
scheduling predicates directly, node by node, for every pod, with no placement classes, no per-level
room, no shared failed searches and no memoised budgets or repellers. Both run the same greedy order
and rails, so every eviction and every skip code (and every capacity request) must be the same.

The clusters are hypothesis-generated and bench/gen.py's realistic fleet: workloads with one pod
template, or two for a StatefulSet mid-rollout, pinned pods, host ports, anti-affinity, budgets,
floors and taints."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.gen import NOW as GENERATED_NOW
from bench.gen import write_list
from spot_rebalancer.config import Settings
from spot_rebalancer.objects import TopologySpreadConstraint
from spot_rebalancer.rebalance import History, plan
from spot_rebalancer.rebalance.budgets import DisruptionBudgets
from spot_rebalancer.rebalance.planner import SkipCode, _Planner, _Search
from spot_rebalancer.scheduling.interpod import wide_anti_affinity, wide_repeller
from spot_rebalancer.scheduling.labels import selector_matches
from spot_rebalancer.scheduling.node_affinity import fits_required, preferred_score
from spot_rebalancer.scheduling.taints import untolerated_taint
from spot_rebalancer.scheduling.volume_zone import ZONE_LABEL
from spot_rebalancer.snapshot import ClusterSnapshot, read_list
from tests.unit.builders import anti_affinity_term, make_node, make_pdb, make_pod, prefer, taint, toleration

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CAPACITY = "eks.amazonaws.com/capacityType"
FLOOR = "spot-rebalancer.io/min-on-demand"
PREFERENCES = [prefer(100, CAPACITY, "SPOT"), prefer(50, "kubernetes.io/arch", "arm64"),
               prefer(10, ZONE_LABEL, "zone-a"), prefer(30, CAPACITY, "ON_DEMAND")]


class _DirectPlacement:
    """A pod's scores and fit, asked of the predicates node by node."""

    def __init__(self, pod, cluster) -> None:
        self.pod, self.nodes = pod, [n.node for n in cluster.nodes]
        self.scores = [preferred_score(pod, n.node) for n in cluster.nodes]
        fitting = [n for n in cluster.nodes if n.eligible and fits_required(pod, n.node)
                   and untolerated_taint(pod.spec.tolerations, n.node.spec.taints) is None]
        self.fitting = fitting
        self.best_score = max((self.scores[n.index] for n in fitting), default=None)

    def score(self, node_index: int) -> int:
        return self.scores[node_index]

    def fits(self, node_index: int) -> bool:
        node = self.nodes[node_index]
        return (fits_required(self.pod, node)
                and untolerated_taint(self.pod.spec.tolerations, node.spec.taints) is None)

    def matches_affinity(self, node_index: int) -> bool:
        return fits_required(self.pod, self.nodes[node_index])


class _DirectBudgets(DisruptionBudgets):
    def __init__(self, pdbs) -> None:
        super().__init__(pdbs)
        self.pdbs = list(pdbs)

    def covering(self, pod):
        return [self.key(b) for b in self.pdbs if b.metadata.namespace == pod.metadata.namespace
                and selector_matches(b.spec.selector, pod.metadata.labels)]


class ReferencePlanner(_Planner):
    def __init__(self, snapshot, options, history, now, workloads, node_groups) -> None:
        super().__init__(snapshot, options, history, now, workloads, node_groups)
        self.budgets = _DirectBudgets(snapshot.pdbs)
        cluster = self.cluster

        class Placements:
            def placement(self, pod):
                return _DirectPlacement(pod, cluster)

        self.placements = Placements()

    def _repelled_widely(self, pod) -> str:
        other = wide_repeller(pod, self.cluster.wide_repellers)
        return "" if other is None else f"repelled on {wide_anti_affinity(other)[0].topology_key}"

    def _search(self, c, on_demand_only: bool) -> _Search:
        """Every better node, best score first, then emptiest first (then by name), asked in turn."""
        search = _Search()
        better = [n for n in c.placement.fitting if c.placement.score(n.index) > c.score]
        better.sort(key=lambda n: (-c.placement.score(n.index), -n.free.cpu, -n.free.memory, n.name))
        for node in better:
            if self._ask(c, node, c.placement.score(node.index), on_demand_only, search):
                return search
        return search


def reference_plan(snapshot, options, history, now, workloads=None, node_groups=None):
    return ReferencePlanner(snapshot, options, history, now, workloads or {}, node_groups or {}).run()


def decisions(result):
    moves = [(e.namespace, e.name, e.from_node, e.to_node, e.from_score, e.to_score)
             for e in result.evictions]
    return moves, [(s.namespace, s.name, s.code) for s in result.skipped], result.capacity


def one_in(draw, n):
    return draw(st.integers(1, n)) == 1


@st.composite
def fleets(draw):
    nodes = []
    for i in range(draw(st.integers(2, 9))):
        labels = {CAPACITY: draw(st.sampled_from(["SPOT", "ON_DEMAND"])),
                  "kubernetes.io/arch": draw(st.sampled_from(["arm64", "amd64"])),
                  ZONE_LABEL: draw(st.sampled_from(["zone-a", "zone-b"])),
                  "eks.amazonaws.com/nodegroup": draw(st.sampled_from(["ng-1", "ng-2"]))}
        allocatable = {"cpu": f"{draw(st.integers(1, 6)) * 500}m", "memory": f"{draw(st.integers(1, 6))}Gi",
                       "pods": str(draw(st.integers(2, 9)))}
        nodes.append(make_node(f"node-{i}", labels=labels, allocatable=allocatable,
                               taints=[taint("dedicated", value="batch")] if one_in(draw, 5) else [],
                               ready=not one_in(draw, 10), unschedulable=one_in(draw, 10)))
    return nodes


@st.composite
def templates(draw, app):
    """What the pods of one revision of a workload share."""
    return {
        "preferred": draw(st.lists(st.sampled_from(PREFERENCES), min_size=1, max_size=2, unique_by=id)),
        "requests": {"cpu": f"{draw(st.integers(0, 5)) * 250}m", "memory": f"{draw(st.integers(0, 2))}Gi"},
        "anti_affinity": [anti_affinity_term({"app": app})] if one_in(draw, 4) else [],
        "host_ports": [8080] if one_in(draw, 5) else [],
        "claims": ["data"] if one_in(draw, 4) else [],
        "spread": [TopologySpreadConstraint(topology_key=ZONE_LABEL)] if one_in(draw, 5) else [],
        "tolerations": [toleration("dedicated", "Exists")] if one_in(draw, 3) else [],
    }


@st.composite
def clusters(draw):
    nodes = draw(fleets())
    names = [n.metadata.name for n in nodes]
    pods, budgets = [], []
    for w in range(draw(st.integers(1, 5))):
        app, namespace = f"app{w}", draw(st.sampled_from(["default", "team"]))
        kind = draw(st.sampled_from(["ReplicaSet", "ReplicaSet", "StatefulSet"]))
        revisions = [draw(templates(app))]
        if kind == "StatefulSet" and draw(st.booleans()):
            # Mid-rollout: a second revision of the template, changed in one respect, under one owner.
            changed = draw(st.sampled_from(sorted(revisions[0])))
            revisions.append({**revisions[0], changed: draw(templates(app))[changed]})
        annotations = {FLOOR: draw(st.sampled_from(["1", "50%"]))} if one_in(draw, 5) else {}
        for ordinal in range(draw(st.integers(1, 5))):
            template = draw(st.sampled_from(revisions))
            pods.append(make_pod(f"{app}-{ordinal}", draw(st.sampled_from(names)), namespace=namespace,
                                 labels={"app": app}, annotations=annotations, owner=(kind, f"{app}-owner"),
                                 phase=draw(st.sampled_from(["Running"] * 8 + ["Succeeded"])), **template))
        if one_in(draw, 2):
            budgets.append(make_pdb(app, {"app": app}, draw(st.integers(0, 2)), namespace=namespace))
    caps = st.integers(1, 6)
    options = Settings(max_evictions_per_cycle=draw(caps), max_evictions_per_node=draw(caps),
                               max_evictions_per_namespace=draw(caps), min_pod_age_seconds=0,
                       move_single_replica_workloads=draw(st.booleans()))
    return ClusterSnapshot(nodes, pods, budgets), options


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_the_planner_decides_as_the_direct_reference(cluster):
    snapshot, options = cluster
    assert decisions(plan(snapshot, options, History(), NOW)) == \
        decisions(reference_plan(snapshot, options, History(), NOW))


def test_a_generated_fleet_is_planned_as_the_direct_reference(tmp_path):
    """bench/gen.py's fleet, packed and with caps high enough that hundreds of searches run and
    levels fill."""
    path = tmp_path / "list.json"
    write_list(path, nodes=30, pods_per_node=80)
    snapshot = read_list(path.read_bytes())
    options = Settings(max_evictions_per_cycle=400, max_evictions_per_node=30,
                               max_evictions_per_namespace=100, max_evictions_per_workload="3")

    result = plan(snapshot, options, History(), GENERATED_NOW)

    codes = Counter(s.code for s in result.skipped)
    assert len(result.evictions) > 20 and codes[SkipCode.NO_ROOM] > 100 and result.capacity, \
        "the fleet exercises moves, full levels and capacity requests alike"
    assert decisions(result) == decisions(reference_plan(snapshot, options, History(), GENERATED_NOW))


def test_two_revisions_of_a_statefulset_are_searched_apart():
    """Mid-rollout, one revision binds a host port the better node has taken and the other does not:
    the first's failed search says nothing about the second."""
    arm = {"kubernetes.io/arch": "arm64", CAPACITY: "ON_DEMAND"}
    nodes = [make_node("x86", labels={CAPACITY: "ON_DEMAND"}), make_node("arm", labels=arm)]
    revision = {"owner": ("StatefulSet", "db"), "labels": {"app": "db"}, "requests": {"cpu": "100m"},
                "preferred": [PREFERENCES[1]]}
    pods = [make_pod("db-0", "x86", host_ports=[8080], **revision), make_pod("db-1", "x86", **revision),
            make_pod("agent", "arm", host_ports=[8080], owner=("DaemonSet", "agent"))]
    snapshot = ClusterSnapshot(nodes, pods, [])
    options = Settings(min_pod_age_seconds=0)

    result = plan(snapshot, options, History(), NOW)

    assert [(e.name, e.to_node) for e in result.evictions] == [("db-1", "arm")]
    assert decisions(result) == decisions(reference_plan(snapshot, options, History(), NOW))


class FreshLevelsPlanner(_Planner):
    """Each level's nodes sorted afresh and their most room folded anew at every search."""

    def _level(self, members):
        ordered = sorted((self.cluster.nodes[i] for i in members),
                         key=lambda n: (-n.free.cpu, -n.free.memory, n.name))
        most_room = ordered[0].free
        for node in ordered[1:]:
            most_room = most_room.max(node.free)
        return most_room, ordered


def fresh_levels_plan(snapshot, options, history, now):
    return FreshLevelsPlanner(snapshot, options, history, now, {}, {}).run()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_levels_kept_across_moves_plan_as_levels_made_afresh(cluster):
    """Every detail of the plan, skip reasons' counts included, is the same."""
    snapshot, options = cluster
    assert plan(snapshot, options, History(), NOW) == fresh_levels_plan(snapshot, options, History(), NOW)


def test_a_generated_fleet_plans_as_with_levels_made_afresh(tmp_path):
    path = tmp_path / "list.json"
    write_list(path, nodes=30, pods_per_node=80)
    snapshot = read_list(path.read_bytes())
    options = Settings(max_evictions_per_cycle=400, max_evictions_per_node=30,
                       max_evictions_per_namespace=100, max_evictions_per_workload="3")
    assert plan(snapshot, options, History(), GENERATED_NOW) == \
        fresh_levels_plan(snapshot, options, History(), GENERATED_NOW)
