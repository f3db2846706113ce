"""Properties of every plan, over generated clusters: each move is to a node that really takes the
pod after the moves before it and scores strictly higher; no cap, budget or on-demand floor is ever
exceeded; every pod with a preferred node affinity gets exactly one verdict."""

from collections import Counter
from datetime import UTC, datetime

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from spot_rebalancer.config import Settings
from spot_rebalancer.objects import TopologySpreadConstraint
from spot_rebalancer.rebalance import History, on_demand_floor, plan
from spot_rebalancer.rebalance.workloads import WorkloadRef, workload_of
from spot_rebalancer.rebalancer import plan_with_controllers
from spot_rebalancer.scheduling.eligibility import ineligibility
from spot_rebalancer.scheduling.interpod import anti_affinity_conflict
from spot_rebalancer.scheduling.labels import selector_matches
from spot_rebalancer.scheduling.node_affinity import fits_required, preferred_score, preferred_terms
from spot_rebalancer.scheduling.ports import host_ports, port_conflict
from spot_rebalancer.scheduling.resources import is_terminal, node_allocatable, pod_requests, shortfall
from spot_rebalancer.scheduling.spread import spread_filter
from spot_rebalancer.scheduling.taints import untolerated_taint
from spot_rebalancer.scheduling.volume_zone import ZONE_LABEL, zone_allows
from spot_rebalancer.snapshot import ClusterSnapshot
from tests.unit.builders import (
    anti_affinity_term,
    make_node,
    make_pdb,
    make_pod,
    on_demand_node,
    prefer,
    selector,
    spot_node,
    taint,
    toleration,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CAPACITY = "eks.amazonaws.com/capacityType"
FLOOR = "spot-rebalancer.io/min-on-demand"
OPT_OUT = "spot-rebalancer.io/disable"
APPS = ["a", "b", "c", "d"]
TIERS = ["front", "back"]
NAMESPACES = ["default", "default", "team"]
PREFERENCES = [
    prefer(100, CAPACITY, "SPOT"),
    prefer(50, "kubernetes.io/arch", "arm64"),
    prefer(10, ZONE_LABEL, "zone-a"),
    prefer(30, CAPACITY, "ON_DEMAND"),
]
# Budgets over one app or over a tier that spans apps; overlapping ones make pods unevictable.
SELECTORS = [{"app": app} for app in APPS] + [{"tier": tier} for tier in TIERS]


def one_in(draw, n):
    return draw(st.integers(1, n)) == 1


@st.composite
def options(draw):
    caps = st.integers(0, 5) | st.integers(2, 5)  # mostly room for several moves
    return Settings(
        max_evictions_per_cycle=draw(caps), max_evictions_per_node=draw(caps),
        max_evictions_per_namespace=draw(caps), max_evictions_per_workload=str(draw(caps)),
        min_pod_age_seconds=0,
        move_single_replica_workloads=draw(st.booleans()))


@st.composite
def budgets(draw, max_allowed):
    selectors = draw(st.lists(st.sampled_from(SELECTORS), max_size=3, unique_by=str))
    return [make_pdb(f"pdb-{i}", selector, draw(st.integers(0, max_allowed)),
                     namespace=draw(st.sampled_from(NAMESPACES)))
            for i, selector in enumerate(selectors)]


@st.composite
def nodes(draw):
    result = []
    for i in range(draw(st.integers(2, 8))):
        labels = {
            CAPACITY: draw(st.sampled_from(["SPOT", "ON_DEMAND"])),
            "kubernetes.io/arch": draw(st.sampled_from(["arm64", "amd64"])),
            ZONE_LABEL: draw(st.sampled_from(["zone-a", "zone-b"])),
            "eks.amazonaws.com/nodegroup": draw(st.sampled_from(["ng-1", "ng-2"])),
        }
        allocatable = {"cpu": f"{draw(st.integers(1, 8)) * 500}m", "memory": f"{draw(st.integers(1, 8))}Gi",
                       "pods": str(draw(st.integers(2, 10)))}
        result.append(make_node(
            f"node-{i}", labels=labels, allocatable=allocatable,
            taints=[taint("dedicated", value="batch")] if one_in(draw, 6) else [],
            ready=not one_in(draw, 9), unschedulable=one_in(draw, 9)))
    return result


@st.composite
def pods(draw, node_names):
    result = []
    for i in range(draw(st.integers(0, 24))):
        app = draw(st.sampled_from(APPS))
        kind = draw(st.sampled_from(["ReplicaSet"] * 8 + ["StatefulSet", "DaemonSet", None]))
        annotations = {FLOOR: draw(st.sampled_from(["1", "2", "50%"]))} if one_in(draw, 5) else {}
        preferences = st.lists(st.sampled_from(PREFERENCES), min_size=draw(st.integers(0, 1)), max_size=3,
                               unique_by=id)
        result.append(make_pod(
            f"{app}-{i}", draw(st.sampled_from([*node_names, *node_names, ""])),
            namespace=draw(st.sampled_from(NAMESPACES)),
            labels={"app": app, "tier": draw(st.sampled_from(TIERS))}, annotations=annotations,
            owner=(kind, f"{app}-owner") if kind else None,
            requests={"cpu": f"{draw(st.integers(0, 6)) * 250}m", "memory": f"{draw(st.integers(0, 3))}Gi"},
            preferred=draw(preferences),
            anti_affinity=[anti_affinity_term({"app": app})] if one_in(draw, 4) else [],
            host_ports=[8080] if one_in(draw, 6) else [],
            claims=["data"] if one_in(draw, 5) else [],
            spread=[TopologySpreadConstraint(
                topology_key=draw(st.sampled_from([ZONE_LABEL, "kubernetes.io/hostname"])),
                max_skew=draw(st.integers(1, 2)), label_selector=selector({"app": app}))]
            if one_in(draw, 5) else [],
            tolerations=[toleration("dedicated", "Exists")] if draw(st.booleans()) else [],
            phase=draw(st.sampled_from(["Running"] * 10 + ["Pending", "Succeeded"])),
        ))
    return result


@st.composite
def clusters(draw):
    node_list = draw(nodes())
    pod_list = draw(pods([n.metadata.name for n in node_list]))
    return ClusterSnapshot(node_list, pod_list, draw(budgets(2))), draw(options())


@st.composite
def crowded_clusters(draw):
    """Many pods that all want, and fit, the spot nodes: budgets and caps are what limits moves."""
    node_list = [on_demand_node(f"od-{i}") for i in range(draw(st.integers(1, 3)))]
    sources = [n.metadata.name for n in node_list]
    node_list += [spot_node(f"spot-{i}", allocatable={"cpu": "64", "memory": "256Gi", "pods": "100"})
                  for i in range(draw(st.integers(1, 2)))]
    pod_list = [make_pod(f"p-{i}", draw(st.sampled_from(sources)),
                         namespace=draw(st.sampled_from(NAMESPACES)),
                         owner=("ReplicaSet", draw(st.sampled_from(APPS))),
                         labels={"app": draw(st.sampled_from(APPS)), "tier": draw(st.sampled_from(TIERS))},
                         requests={"cpu": "100m"}, preferred=[PREFERENCES[0]])
                for i in range(draw(st.integers(1, 14)))]
    return ClusterSnapshot(node_list, pod_list, draw(budgets(3))), draw(options())


def with_moves_applied(pods, evictions):
    """The pods with each evicted pod standing on its target, as its replacement will."""
    targets = {(e.namespace, e.name): e.to_node for e in evictions}
    return [msgspec.structs.replace(p, spec=msgspec.structs.replace(p.spec, node_name=targets[key]))
            if (key := (p.metadata.namespace, p.metadata.name)) in targets else p
            for p in pods]


def check_every_move_is_feasible_and_better(snapshot, result):
    nodes = {n.metadata.name: n for n in snapshot.nodes}
    for done, eviction in enumerate(result.evictions):
        current = with_moves_applied(snapshot.pods, result.evictions[:done])
        pod = next(p for p in current if (p.metadata.namespace, p.metadata.name) == (eviction.namespace,
                                                                                       eviction.name))
        source, target = nodes[eviction.from_node], nodes[eviction.to_node]
        neighbours = [p for p in current if p.spec.node_name == eviction.to_node and not is_terminal(p)]
        free = node_allocatable(target)
        for neighbour in neighbours:
            free = free - pod_requests(neighbour)
        assert pod.spec.node_name == eviction.from_node
        assert ineligibility(target) is None
        assert fits_required(pod, target)
        assert untolerated_taint(pod.spec.tolerations, target.spec.taints) is None
        assert shortfall(pod_requests(pod), free) == []
        assert port_conflict(host_ports(pod), [port for p in neighbours for port in host_ports(p)]) is None
        assert anti_affinity_conflict(pod, neighbours) is None
        assert zone_allows(pod, source, target)
        # The scheduler's count: previous moves' replacements on their targets, the pod itself gone.
        others = [p for p in current if p is not pod and not is_terminal(p)]
        fleet = snapshot.nodes
        allowed = spread_filter(pod, fleet, [[p for p in others if p.spec.node_name == n.metadata.name]
                                             for n in fleet], [fits_required(pod, n) for n in fleet])
        assert allowed[fleet.index(target)]
        assert preferred_score(pod, source) == eviction.from_score
        assert preferred_score(pod, target) == eviction.to_score > eviction.from_score


def check_caps_and_budgets(snapshot, options, result):
    evictions = result.evictions

    def most(key):
        return max(Counter(map(key, evictions)).values(), default=0)

    assert len(evictions) <= options.max_evictions_per_cycle
    assert most(lambda e: e.from_node) <= options.max_evictions_per_node
    assert most(lambda e: e.namespace) <= options.max_evictions_per_namespace
    assert most(lambda e: e.workload) <= int(options.max_evictions_per_workload)
    labels = {(p.metadata.namespace, p.metadata.name): p.metadata.labels for p in snapshot.pods}
    for pdb in snapshot.pdbs:
        covered = [e for e in evictions if e.namespace == pdb.metadata.namespace
                   and selector_matches(pdb.spec.selector, labels[e.namespace, e.name])]
        assert len(covered) <= max(0, pdb.status.disruptions_allowed)


def check_every_candidate_has_one_verdict(snapshot, result):
    verdicts = Counter([(e.namespace, e.name) for e in result.evictions]
                       + [(s.namespace, s.name) for s in result.skipped])
    expected = Counter((p.metadata.namespace, p.metadata.name) for p in snapshot.pods if preferred_terms(p))
    assert verdicts == expected


def check_floors(snapshot, result):
    """After every move, a workload with a floor still has that many Ready replicas on on-demand."""
    on_demand = {n.metadata.name for n in snapshot.nodes if n.metadata.labels[CAPACITY] == "ON_DEMAND"}
    for done, eviction in enumerate(result.evictions, start=1):
        pod = next(p for p in snapshot.pods if (p.metadata.namespace, p.metadata.name) == (eviction.namespace,
                                                                                             eviction.name))
        floor = pod.metadata.annotations.get(FLOOR)
        if floor is None:
            continue
        siblings = [p for p in with_moves_applied(snapshot.pods, result.evictions[:done])
                    if workload_of(p) == eviction.workload and not is_terminal(p)]
        kept = sum(1 for p in siblings if p.spec.node_name in on_demand and p.ready)
        if eviction.from_node in on_demand and eviction.to_node not in on_demand:
            assert kept >= on_demand_floor(floor, len(siblings))


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_plans_are_safe(cluster):
    snapshot, options = cluster
    result = plan(snapshot, options, History(), NOW)
    check_every_move_is_feasible_and_better(snapshot, result)
    check_caps_and_budgets(snapshot, options, result)
    check_every_candidate_has_one_verdict(snapshot, result)
    check_floors(snapshot, result)


@settings(max_examples=200, deadline=None)
@given(crowded_clusters())
def test_budgets_and_caps_hold_when_every_pod_could_move(cluster):
    snapshot, options = cluster
    result = plan(snapshot, options, History(), NOW)
    check_every_move_is_feasible_and_better(snapshot, result)
    check_caps_and_budgets(snapshot, options, result)
    check_every_candidate_has_one_verdict(snapshot, result)


@st.composite
def controller_annotations(draw):
    """Annotations on some of the generated pods' controllers: opt-outs and on-demand floors."""
    found = {}
    for namespace in sorted(set(NAMESPACES)):
        for app in APPS:
            for kind in ("ReplicaSet", "StatefulSet"):
                annotations = draw(st.sampled_from(
                    [{}, {}, {OPT_OUT: "true"}, {FLOOR: "1"}, {FLOOR: "100%"}]))
                if annotations:
                    found[WorkloadRef(namespace, kind, f"{app}-owner")] = annotations
    return found


@settings(max_examples=300, deadline=None)
@given(st.one_of(clusters(), crowded_clusters()), controller_annotations())
def test_reading_only_the_controllers_a_plan_moves_plans_the_same_moves(cluster, workloads):
    """The cycle reads controllers' annotations only of the kinds its plan moves (none in a quiet
    cycle): the moves are those a plan with every controller's annotations makes."""
    snapshot, options = cluster
    kinds_read = []

    def read(kinds):
        kinds_read.append(set(kinds))
        return {ref: annotations for ref, annotations in workloads.items() if ref.kind in kinds}

    full = plan(snapshot, options, History(), NOW, workloads=workloads)
    lazy = plan_with_controllers(snapshot, options, History(), NOW, read)
    assert lazy.evictions == full.evictions
    assert lazy.capacity == full.capacity
    bare = plan(snapshot, options, History(), NOW)
    if not bare.evictions and not bare.capacity:
        assert kinds_read == []
    if not full.capacity:
        assert set().union(*kinds_read) >= {e.workload.kind for e in full.evictions}
    opted_out = {w for w, a in workloads.items() if a.get(OPT_OUT) == "true"}
    assert not [e for e in lazy.evictions if e.workload in opted_out]
