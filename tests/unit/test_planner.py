"""Planner scenarios: who moves where, and why the others stay."""

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from spot_rebalancer.config import Settings
from spot_rebalancer.objects import (
    LabelSelector,
    NodeSelector,
    ObjectMeta,
    PersistentVolume,
    PersistentVolumeClaim,
    PersistentVolumeClaimSpec,
    PersistentVolumeSpec,
    PodResourceClaim,
    TopologySpreadConstraint,
    VolumeNodeAffinity,
)
from spot_rebalancer.rebalance import (
    Backoff,
    History,
    MoveRecord,
    NaiveClockError,
    NodeGroup,
    SkipCode,
    WorkloadRef,
    plan,
)
from spot_rebalancer.snapshot import ClusterSnapshot
from tests.unit.builders import (
    PREFER_SPOT,
    anti_affinity_term,
    make_pdb,
    make_pod,
    on_demand_node,
    prefer,
    requirement,
    spot_node,
    taint,
    term,
    toleration,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
# One replica of a workload at a time, and single replicas movable: each scenario states its pods.
OPTIONS = Settings(max_evictions_per_workload="1", move_single_replica_workloads=True)
ARM = {"kubernetes.io/arch": "arm64"}
AMD = {"kubernetes.io/arch": "amd64"}
SMALL = {"cpu": "2", "memory": "8Gi", "pods": "10"}
WEB = WorkloadRef("default", "ReplicaSet", "web-7d4b9")


NO_HISTORY = History()


def run(nodes, pods, pdbs=(), options=OPTIONS, history=NO_HISTORY, **kwargs):
    return plan(ClusterSnapshot(list(nodes), list(pods), list(pdbs)), options, history, NOW, **kwargs)


def moves(result):
    return [(e.name, e.from_node, e.to_node) for e in result.evictions]


def skips(result):
    return {s.name: s.code for s in result.skipped}


def web(name, node, owner="web-7d4b9", **kwargs):
    """A spot-preferring replica asking for one CPU."""
    kwargs.setdefault("preferred", [PREFER_SPOT])
    kwargs.setdefault("requests", {"cpu": "1"})
    return make_pod(name, node, owner=("ReplicaSet", owner), **kwargs)


# --- where pods go ---------------------------------------------------------------------------------


def test_a_pod_that_fell_back_to_on_demand_moves_to_spot_with_room():
    result = run([on_demand_node("od"), spot_node("spot")], [web("web-1", "od")])
    assert moves(result) == [("web-1", "od", "spot")]
    eviction = result.evictions[0]
    assert (eviction.from_score, eviction.to_score, eviction.score_gain) == (0, 100, 100)
    assert eviction.workload == WEB
    assert eviction.uid == "uid-default-web-1"
    assert result.skipped == ()


def test_full_spot_means_no_eviction_even_with_free_on_demand_elsewhere():
    """Descheduler #1707: evicting here would only land the pod on another on-demand node, again and
    again. Nothing is evicted."""
    full = spot_node("spot", allocatable={"cpu": "1", "memory": "4Gi", "pods": "10"})
    nodes = [on_demand_node("od-1"), on_demand_node("od-2"), full]
    pods = [web("web-1", "od-1"), make_pod("filler", "spot", requests={"cpu": "500m"}, owner=None)]
    result = run(nodes, pods)
    assert result.evictions == ()
    assert skips(result) == {"web-1": SkipCode.NO_ROOM}
    assert "1 insufficient cpu" in result.skipped[0].detail
    assert result.skip_counts() == {"no-room": 1}


def test_a_pod_already_where_it_prefers_stays():
    result = run([on_demand_node("od"), spot_node("spot")], [web("web-1", "spot")])
    assert result.evictions == ()
    assert skips(result) == {"web-1": SkipCode.WELL_PLACED}


def test_equal_scores_are_not_a_reason_to_move():
    result = run([spot_node("spot-1"), spot_node("spot-2")], [web("web-1", "spot-1")])
    assert skips(result) == {"web-1": SkipCode.WELL_PLACED}


def test_arm64_preference():
    pod = web("api-1", "x86", preferred=[prefer(80, "kubernetes.io/arch", "arm64")])
    nodes = [on_demand_node("x86", labels=AMD), on_demand_node("graviton", labels=ARM)]
    assert moves(run(nodes, [pod])) == [("api-1", "x86", "graviton")]


def test_the_highest_scoring_node_wins_over_a_merely_better_one():
    pod = web("api-1", "od-x86", preferred=[prefer(60, "kubernetes.io/arch", "arm64"), PREFER_SPOT])
    nodes = [on_demand_node("od-x86", labels=AMD), spot_node("spot-x86", labels=AMD),
             spot_node("spot-arm", labels=ARM), on_demand_node("od-arm", labels=ARM)]
    result = run(nodes, [pod])
    assert moves(result) == [("api-1", "od-x86", "spot-arm")]
    assert result.evictions[0].to_score == 160


def test_among_equally_good_nodes_the_emptiest_is_the_expected_target():
    nodes = [on_demand_node("od"), spot_node("spot-busy"), spot_node("spot-idle")]
    pods = [web("web-1", "od"), make_pod("other", "spot-busy", requests={"cpu": "2"}, owner=None)]
    assert moves(run(nodes, pods)) == [("web-1", "od", "spot-idle")]


def test_pods_without_preferred_node_affinity_are_not_considered():
    result = run([on_demand_node("od"), spot_node("spot")], [web("web-1", "od", preferred=[])])
    assert result.evictions == () and result.skipped == ()


def test_required_affinity_keeps_the_pod_off_nodes_it_may_not_run_on():
    pod = web("web-1", "od", required=[term(requirement("kubernetes.io/arch", "In", "amd64"))])
    nodes = [on_demand_node("od", labels=AMD), spot_node("spot-arm", labels=ARM)]
    assert skips(run(nodes, [pod])) == {"web-1": SkipCode.WELL_PLACED}
    nodes.append(spot_node("spot-amd", labels=AMD))
    assert moves(run(nodes, [pod])) == [("web-1", "od", "spot-amd")]


def test_untolerated_taints_rule_a_node_out():
    nodes = [on_demand_node("od"), spot_node("spot", taints=[taint("dedicated", value="batch")])]
    assert skips(run(nodes, [web("web-1", "od")])) == {"web-1": SkipCode.WELL_PLACED}
    tolerant = web("web-1", "od", tolerations=[toleration("dedicated", "Equal", "batch")])
    assert moves(run(nodes, [tolerant])) == [("web-1", "od", "spot")]


@pytest.mark.parametrize("target", [
    spot_node("spot", ready=False),
    spot_node("spot", unschedulable=True),
    spot_node("spot", taints=[taint("spot-rebalancer/draining", "NoSchedule")]),
], ids=["not-ready", "cordoned", "ours"])
def test_ineligible_nodes_are_never_targets(target):
    tolerant = web("web-1", "od", tolerations=[toleration(operator="Exists")])
    result = run([on_demand_node("od"), target], [tolerant])
    assert skips(result) == {"web-1": SkipCode.WELL_PLACED}


def test_terminal_pods_do_not_hold_room():
    nodes = [on_demand_node("od"), spot_node("spot", allocatable={"cpu": "1", "memory": "4Gi", "pods": "10"})]
    done = make_pod("job-1", "spot", requests={"cpu": "1"}, owner=("Job", "job"), phase="Succeeded")
    assert moves(run(nodes, [web("web-1", "od"), done])) == [("web-1", "od", "spot")]


def test_pod_slots_count_as_room():
    nodes = [on_demand_node("od"), spot_node("spot", allocatable={"cpu": "8", "memory": "16Gi", "pods": "1"})]
    other = make_pod("other", "spot", owner=None)
    assert skips(run(nodes, [web("web-1", "od"), other]))["web-1"] is SkipCode.NO_ROOM


def test_host_ports_in_use_rule_a_node_out():
    nodes = [on_demand_node("od"), spot_node("spot-1"), spot_node("spot-2")]
    pods = [web("proxy-1", "od", host_ports=[8080]),
            make_pod("agent", "spot-1", host_ports=[8080], owner=("DaemonSet", "agent"))]
    assert moves(run(nodes, pods)) == [("proxy-1", "od", "spot-2")]
    result = run(nodes[:2], pods)
    assert skips(result)["proxy-1"] is SkipCode.CONSTRAINED
    assert "host port in use" in result.skipped[0].detail


def test_anti_affinity_both_ways():
    spread = [anti_affinity_term({"app": "web"})]
    nodes = [on_demand_node("od"), spot_node("spot-1"), spot_node("spot-2")]
    # The incoming pod repels the replica already on spot-1.
    pods = [web("web-1", "od", labels={"app": "web"}, anti_affinity=spread),
            web("web-2", "spot-1", labels={"app": "web"})]
    assert moves(run(nodes, pods)) == [("web-1", "od", "spot-2")]
    # The pod on spot-1 repels the incoming pod, which has no terms of its own.
    pods = [web("web-1", "od", labels={"app": "web"}),
            make_pod("guard", "spot-1", labels={"app": "guard"}, owner=None,
                     anti_affinity=[anti_affinity_term({"app": "web"})])]
    assert moves(run(nodes, pods)) == [("web-1", "od", "spot-2")]


def test_a_move_planned_this_cycle_repels_the_next_by_anti_affinity():
    spread = [anti_affinity_term({"app": "web"})]
    options = replace(OPTIONS, max_evictions_per_workload="5")
    nodes = [on_demand_node("od"), spot_node("spot")]
    pods = [web(f"web-{i}", "od", labels={"app": "web"}, anti_affinity=spread) for i in (1, 2)]
    result = run(nodes, pods, options=options)
    assert moves(result) == [("web-1", "od", "spot")]
    assert skips(result) == {"web-2": SkipCode.CONSTRAINED}


def test_pods_another_pods_zone_wide_anti_affinity_selects_are_left_alone():
    guard = make_pod("guard", "od", labels={"app": "guard"}, owner=None,
                     anti_affinity=[anti_affinity_term({"app": "web"}, "topology.kubernetes.io/zone")])
    pods = [web("web-1", "od", labels={"app": "web"}), web("api-1", "od", owner="api", labels={"app": "api"}),
            guard]
    result = run([on_demand_node("od"), spot_node("spot")], pods)
    assert skips(result) == {"web-1": SkipCode.UNSUPPORTED_CONSTRAINT}
    assert "default/guard repels it" in result.skipped[0].detail
    assert moves(result) == [("api-1", "od", "spot")]


def test_pods_with_claims_move_only_within_their_zone():
    zone = "topology.kubernetes.io/zone"
    nodes = [on_demand_node("od-a", labels={zone: "a"}), spot_node("spot-b", labels={zone: "b"})]
    pod = web("db-0", "od-a", owner="db", claims=["data"])
    assert skips(run(nodes, [pod])) == {"db-0": SkipCode.CONSTRAINED}
    nodes.append(spot_node("spot-a", labels={zone: "a"}))
    assert moves(run(nodes, [pod])) == [("db-0", "od-a", "spot-a")]


def test_a_bound_volumes_node_affinity_decides_where_its_pod_may_go():
    """With the claim and its PersistentVolume in the snapshot, the volume's own node affinity (here
    the EBS CSI driver's zone key) rules, not the conservative same-zone rule."""
    ebs_zone = "topology.ebs.csi.aws.com/zone"
    nodes = [on_demand_node("od"), spot_node("spot-a", labels={ebs_zone: "a"}),
             spot_node("spot-b", labels={ebs_zone: "b"})]
    pod = web("db-0", "od", owner="db", claims=["data"])
    volume = PersistentVolume(metadata=ObjectMeta(name="pv-1"), spec=PersistentVolumeSpec(
        node_affinity=VolumeNodeAffinity(required=NodeSelector(node_selector_terms=[
            term(requirement(ebs_zone, "In", "b"))]))))
    claim = PersistentVolumeClaim(metadata=ObjectMeta(name="data", namespace="default"),
                                  spec=PersistentVolumeClaimSpec(volume_name="pv-1"))
    assert skips(run(nodes, [pod])) == {"db-0": SkipCode.CONSTRAINED}  # no zone on od: unknown, held
    snapshot = ClusterSnapshot(nodes, [pod], [], [volume], [claim])
    assert moves(plan(snapshot, OPTIONS, NO_HISTORY, NOW)) == [("db-0", "od", "spot-b")]


def test_a_zone_spread_replacement_goes_where_the_recounted_skew_allows():
    """The scheduler recounts the skew with the evicted pod gone: both replicas run in zone a and
    none in zone b (a skew of 2, beyond maxSkew 1: the constraint came later, or zone b's nodes were
    lost), so a replacement may only go to zone b, however good a spot node in zone a is. With no
    better node in zone b it stays; a zone of one domain has no skew at all."""
    zone = "topology.kubernetes.io/zone"
    spread = [TopologySpreadConstraint(topology_key=zone, max_skew=1,
                                       label_selector=LabelSelector(match_labels={"app": "web"}))]
    replicas = [web(f"web-{i}", "od-a", labels={"app": "web"}, spread=spread) for i in (1, 2)]
    nodes = [on_demand_node("od-a", labels={zone: "a"}), spot_node("spot-a", labels={zone: "a"})]
    assert [to for _, _, to in moves(run(nodes, replicas))] == ["spot-a"]
    nodes.append(on_demand_node("od-b", labels={zone: "b"}))
    assert set(skips(run(nodes, replicas)).values()) == {SkipCode.CONSTRAINED}
    nodes.append(spot_node("spot-b", labels={zone: "b"}))
    assert [to for _, _, to in moves(run(nodes, replicas))] == ["spot-b"]


def test_a_hostname_spread_replacement_avoids_nodes_holding_more_than_the_least():
    host = "kubernetes.io/hostname"
    spread = [TopologySpreadConstraint(topology_key=host, max_skew=1,
                                       label_selector=LabelSelector(match_labels={"app": "web"}))]
    pods = [web("web-1", "od", labels={"app": "web"}, spread=spread),
            web("web-2", "spot-1", labels={"app": "web"}, spread=spread)]
    nodes = [on_demand_node("od"), spot_node("spot-1")]
    # With web-1 gone od holds 0 and spot-1 one: on spot-1 the skew would be 1 + 1 - 0 = 2 > 1.
    assert skips(run(nodes, pods))["web-1"] == SkipCode.CONSTRAINED
    nodes.append(spot_node("spot-2"))
    assert moves(run(nodes, pods)) == [("web-1", "od", "spot-2")]


# --- one cycle's moves share the room ----------------------------------------------------------------


def test_moves_in_one_cycle_consume_the_targets_room():
    nodes = [on_demand_node("od"), spot_node("spot", allocatable={"cpu": "2", "memory": "8Gi", "pods": "10"})]
    pods = [web("a-1", "od", owner="a", requests={"cpu": "1500m"}),
            web("b-1", "od", owner="b", requests={"cpu": "1500m"})]
    result = run(nodes, pods)
    assert moves(result) == [("a-1", "od", "spot")]
    assert skips(result) == {"b-1": SkipCode.NO_ROOM}


def test_room_a_move_frees_is_not_counted_on_by_a_later_move_of_the_cycle():
    """All moves of a cycle are evicted at once: the scheduler counts the evicted pod until it is
    gone, so the spot-preferring pod may not take the room the arm-preferring one leaves."""
    nodes = [on_demand_node("od", labels=AMD), spot_node("spot", labels=AMD, allocatable=SMALL),
             on_demand_node("arm", labels=ARM)]
    pods = [web("a-1", "spot", owner="a", requests={"cpu": "1500m"},
                preferred=[prefer(100, "kubernetes.io/arch", "arm64")]),
            web("b-1", "od", owner="b", requests={"cpu": "1500m"})]
    result = run(nodes, pods)
    assert moves(result) == [("a-1", "spot", "arm")]
    assert skips(result) == {"b-1": SkipCode.NO_ROOM}


def test_room_held_for_a_nominated_pod_of_no_lower_priority_is_not_taken():
    """The scheduler adds pending pods nominated to a node (by preemption) of priority >= the
    incoming pod's to the node when filtering (its addGENominatedPods)."""
    nodes = [on_demand_node("od"), spot_node("spot", allocatable=SMALL)]
    for nominee_priority, moved in ((0, False), (10, False), (-1, True)):
        nominee = make_pod("nominee", "", requests={"cpu": "1500m"}, phase="Pending", ready=False,
                           priority=nominee_priority)
        nominee.status.nominated_node_name = "spot"
        result = run(nodes, [web("web-1", "od", requests={"cpu": "1"}, priority=0), nominee])
        assert bool(result.evictions) is moved, nominee_priority


def test_a_pod_with_resource_claims_is_not_moved():
    pod = web("p", "od")
    pod.spec.resource_claims = [PodResourceClaim(name="gpu")]
    result = run([on_demand_node("od"), spot_node("spot")], [pod])
    assert skips(result) == {"p": SkipCode.UNSUPPORTED_CONSTRAINT}


def test_the_biggest_gain_goes_first():
    nodes = [on_demand_node("od"), spot_node("spot", allocatable={"cpu": "1", "memory": "8Gi", "pods": "10"})]
    slightly = prefer(10, "eks.amazonaws.com/capacityType", "SPOT")
    pods = [web("small-gain", "od", owner="a", preferred=[slightly]),
            web("big-gain", "od", owner="b", preferred=[PREFER_SPOT])]
    result = run(nodes, pods)
    assert moves(result) == [("big-gain", "od", "spot")]
    assert skips(result) == {"small-gain": SkipCode.NO_ROOM}


def test_a_pod_whose_best_target_was_taken_settles_for_the_next_best():
    """Both prefer arm64 spot; the first move fills it; the second still gains by going to the
    remaining spot node rather than not moving."""
    prefs = [prefer(50, "kubernetes.io/arch", "arm64"), PREFER_SPOT]
    small = {"cpu": "1", "memory": "8Gi", "pods": "10"}
    nodes = [on_demand_node("od", labels=AMD), spot_node("spot-arm", labels=ARM, allocatable=small),
             spot_node("spot-amd", labels=AMD, allocatable=small)]
    pods = [web("a-1", "od", owner="a", preferred=prefs), web("b-1", "od", owner="b", preferred=prefs)]
    result = run(nodes, pods)
    assert moves(result) == [("a-1", "od", "spot-arm"), ("b-1", "od", "spot-amd")]
    assert [e.score_gain for e in result.evictions] == [150, 100]


def test_the_plan_does_not_depend_on_the_order_of_the_snapshot():
    nodes = [on_demand_node(f"od-{i}") for i in range(3)] + [spot_node("spot-1"), spot_node("spot-2")]
    pods = [web(f"w{i}-1", f"od-{i % 3}", owner=f"w{i}") for i in range(8)]
    expected = run(nodes, pods)
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(nodes)
        rng.shuffle(pods)
        assert run(nodes, pods) == expected


# --- caps ---------------------------------------------------------------------------------------------


def many_nodes_and_pods(count, node_of=lambda i: "od", namespace_of=lambda i: "default", labels=None):
    nodes = [on_demand_node("od"), on_demand_node("od-2"),
             spot_node("spot", allocatable={"cpu": "64", "memory": "64Gi", "pods": "110"})]
    pods = [web(f"w{i}-1", node_of(i), owner=f"w{i}", namespace=namespace_of(i), labels=labels)
            for i in range(count)]
    return nodes, pods


def test_cycle_cap():
    nodes, pods = many_nodes_and_pods(6, node_of=lambda i: "od" if i % 2 else "od-2",
                                      namespace_of=lambda i: f"ns-{i}")
    result = run(nodes, pods, options=replace(OPTIONS, max_evictions_per_cycle=4))
    assert len(result.evictions) == 4
    assert sorted(skips(result).values()) == [SkipCode.CYCLE_CAP] * 2


def test_node_cap():
    nodes, pods = many_nodes_and_pods(5, namespace_of=lambda i: f"ns-{i}")
    result = run(nodes, pods, options=replace(OPTIONS, max_evictions_per_node=2))
    assert len(result.evictions) == 2
    assert set(skips(result).values()) == {SkipCode.NODE_CAP}


def test_namespace_cap():
    nodes, pods = many_nodes_and_pods(4, node_of=lambda i: "od" if i % 2 else "od-2")
    result = run(nodes, pods, options=replace(OPTIONS, max_evictions_per_namespace=1))
    assert len(result.evictions) == 1
    assert set(skips(result).values()) == {SkipCode.NAMESPACE_CAP}


def test_one_replica_of_a_workload_at_a_time():
    nodes = [on_demand_node("od"), on_demand_node("od-2"), spot_node("spot")]
    pods = [web("web-1", "od"), web("web-2", "od-2")]
    result = run(nodes, pods)
    assert len(result.evictions) == 1
    assert list(skips(result).values()) == [SkipCode.WORKLOAD_CAP]
    assert len(run(nodes, pods, options=replace(OPTIONS, max_evictions_per_workload="2")).evictions) == 2


# --- disruption budgets ------------------------------------------------------------------------------


def test_never_more_evictions_among_a_budgets_pods_than_it_allows():
    nodes, pods = many_nodes_and_pods(4, node_of=lambda i: "od" if i % 2 else "od-2",
                                      labels={"tier": "front"})
    options = replace(OPTIONS, max_evictions_per_namespace=10)
    result = run(nodes, pods, pdbs=[make_pdb("front", {"tier": "front"}, 2)], options=options)
    assert len(result.evictions) == 2
    assert set(skips(result).values()) == {SkipCode.PDB_EXHAUSTED}
    result = run(nodes, pods, pdbs=[make_pdb("front", {"tier": "front"}, 0)], options=options)
    assert result.evictions == ()


def test_budgets_apply_in_their_own_namespace_only():
    pods = [web("web-1", "od", labels={"app": "web"})]
    pdb = make_pdb("web", {"app": "web"}, 0, namespace="other")
    assert len(run([on_demand_node("od"), spot_node("spot")], pods, pdbs=[pdb]).evictions) == 1


def test_a_budget_without_selector_covers_nothing_and_an_empty_one_everything():
    nodes, pods = [on_demand_node("od"), spot_node("spot")], [web("web-1", "od", labels={"app": "web"})]
    assert len(run(nodes, pods, pdbs=[make_pdb("none", None, 0)]).evictions) == 1
    assert run(nodes, pods, pdbs=[make_pdb("all", {}, 0)]).evictions == ()


def test_pods_under_two_budgets_are_left_alone():
    """The Eviction API answers 500 for them whatever the budgets allow."""
    pods = [web("web-1", "od", labels={"app": "web", "tier": "front"})]
    pdbs = [make_pdb("web", {"app": "web"}, 5), make_pdb("front", {"tier": "front"}, 5)]
    result = run([on_demand_node("od"), spot_node("spot")], pods, pdbs=pdbs)
    assert skips(result) == {"web-1": SkipCode.MULTIPLE_PDBS}


# --- on-demand floors ---------------------------------------------------------------------------------


def floor_cluster(floor, replicas=3, where="pod"):
    nodes = [on_demand_node(f"od-{i}") for i in range(replicas)] + [spot_node("spot")]
    annotations = {"spot-rebalancer.io/min-on-demand": floor} if where == "pod" else {}
    pods = [web(f"web-{i}", f"od-{i}", annotations=annotations) for i in range(replicas)]
    return nodes, pods


@pytest.mark.parametrize(("floor", "moved"), [("2", 1), ("3", 0), ("0", 3), ("34%", 1), ("100%", 0),
                                               ("1%", 2)])
def test_on_demand_floor(floor, moved):
    nodes, pods = floor_cluster(floor)
    result = run(nodes, pods, options=replace(OPTIONS, max_evictions_per_workload="3"))
    assert len(result.evictions) == moved
    assert set(skips(result).values()) <= {SkipCode.ON_DEMAND_FLOOR}


def test_floor_from_the_workloads_annotations():
    nodes, pods = floor_cluster("", where="workload")
    workloads = {WEB: {"spot-rebalancer.io/min-on-demand": "3"}}
    result = run(nodes, pods, workloads=workloads, options=replace(OPTIONS, max_evictions_per_workload="3"))
    assert result.evictions == ()
    assert set(skips(result).values()) == {SkipCode.ON_DEMAND_FLOOR}


def test_a_floor_still_allows_moves_between_on_demand_nodes():
    pod = web("api-1", "od-x86", annotations={"spot-rebalancer.io/min-on-demand": "1"},
              preferred=[prefer(50, "kubernetes.io/arch", "arm64"), PREFER_SPOT])
    full = {"cpu": "1", "memory": "16Gi", "pods": "110"}
    nodes = [on_demand_node("od-x86", labels=AMD), on_demand_node("od-arm", labels=ARM),
             spot_node("spot-arm", labels=ARM, allocatable=full)]
    filler = make_pod("filler", "spot-arm", requests={"cpu": "1"}, owner=None)
    assert moves(run(nodes, [pod, filler])) == [("api-1", "od-x86", "od-arm")]


def test_a_floor_is_not_left_to_a_scheduler_that_would_pick_spot():
    """The replacement of a pod held on on-demand by its floor would score highest on a spot node
    with room: the scheduler, not the plan, picks the node, so it is not moved at all."""
    pod = web("api-1", "od-x86", annotations={"spot-rebalancer.io/min-on-demand": "1"},
              preferred=[prefer(50, "kubernetes.io/arch", "arm64"), PREFER_SPOT])
    nodes = [on_demand_node("od-x86", labels=AMD), on_demand_node("od-arm", labels=ARM),
             spot_node("spot-arm", labels=ARM)]
    result = run(nodes, [pod])
    assert skips(result) == {"api-1": SkipCode.SCHEDULER_ELSEWHERE}
    assert "spot-arm" in result.skipped[0].detail and "(not on-demand)" in result.skipped[0].detail


def test_an_unreadable_floor_leaves_the_pod_alone():
    nodes, pods = floor_cluster("two", replicas=1)
    result = run(nodes, pods)
    assert skips(result) == {"web-0": SkipCode.INVALID_SPEC}


# --- rails --------------------------------------------------------------------------------------------

OLD = (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
YOUNG = (NOW - timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(("pod", "code"), [
    (web("p", "od", annotations={"kubernetes.io/config.mirror": "x"}), SkipCode.MIRROR_POD),
    (make_pod("p", "od", owner=None, preferred=[PREFER_SPOT]), SkipCode.BARE_POD),
    (make_pod("p", "od", owner=("DaemonSet", "agent"), preferred=[PREFER_SPOT]), SkipCode.UNSUPPORTED_OWNER),
    (make_pod("p", "od", owner=("Job", "batch"), preferred=[PREFER_SPOT]), SkipCode.UNSUPPORTED_OWNER),
    (web("p", "od", namespace="kube-system"), SkipCode.EXCLUDED_NAMESPACE),
    (web("p", "od", annotations={"spot-rebalancer.io/disable": "true"}), SkipCode.OPTED_OUT),
    (web("p", "od", deleting=True), SkipCode.TERMINATING),
    (web("p", "od", ready=False), SkipCode.NOT_READY),
    (web("p", "od", phase="Pending"), SkipCode.NOT_READY),
    (web("p", "gone"), SkipCode.UNKNOWN_NODE),
    (web("p", "od", created=YOUNG), SkipCode.TOO_YOUNG),
    (web("p", "od", created=None), SkipCode.INVALID_SPEC),
    (web("p", "od", priority=2_000_000_000), SkipCode.HIGH_PRIORITY),
    (web("p", "od", pod_affinity=[anti_affinity_term({"app": "cache"})]), SkipCode.UNSUPPORTED_CONSTRAINT),
    (web("p", "od", anti_affinity=[anti_affinity_term({"app": "web"}, "topology.kubernetes.io/zone")]),
     SkipCode.UNSUPPORTED_CONSTRAINT),
    (web("p", "od", preferred=[prefer(10, "cores", "many", operator="Gt")]), SkipCode.INVALID_SPEC),
], ids=["mirror pod", "bare pod", "daemonset pod", "job pod", "excluded namespace", "opted out",
        "terminating", "not ready", "pending", "unknown node", "too young", "no creation time",
        "high priority", "pod affinity", "zone anti-affinity", "unreadable preferred term"])
def test_rails(pod, code):
    assert skips(run([on_demand_node("od"), spot_node("spot")], [pod])) == {"p": code}


def test_old_enough_pods_and_ordinary_priorities_pass_the_rails():
    pod = web("p", "od", created=OLD, priority=1000)
    assert len(run([on_demand_node("od"), spot_node("spot")], [pod]).evictions) == 1


def test_other_schedulers_pods_are_left_alone():
    pod = web("p", "od")
    pod.spec.scheduler_name = "volcano"
    assert skips(run([on_demand_node("od"), spot_node("spot")], [pod])) == {"p": SkipCode.OTHER_SCHEDULER}


@pytest.mark.parametrize("annotations", [
    {"karpenter.sh/do-not-disrupt": "true"}, {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
], ids=["karpenter do-not-disrupt", "cluster autoscaler safe-to-evict false"])
def test_pods_the_ecosystem_marks_do_not_disrupt_are_never_moved(annotations):
    fleet = [on_demand_node("od"), spot_node("spot")]
    assert skips(run(fleet, [web("p", "od", annotations=annotations)])) == {"p": SkipCode.DO_NOT_DISRUPT}
    unmarked = {k: ("false" if v == "true" else "true") for k, v in annotations.items()}
    assert len(run(fleet, [web("p", "od", annotations=unmarked)]).evictions) == 1


@pytest.mark.parametrize("annotations", [
    {"cluster-autoscaler.kubernetes.io/scale-down-disabled": "true"}, {"karpenter.sh/do-not-disrupt": "true"},
], ids=["scale-down disabled", "karpenter do-not-disrupt"])
def test_a_node_marked_not_to_be_emptied_keeps_its_pods_and_still_takes_others(annotations):
    kept = run([with_annotations(on_demand_node("od"), annotations), spot_node("spot")], [web("p", "od")])
    assert skips(kept) == {"p": SkipCode.NODE_PROTECTED}
    taken = run([on_demand_node("od"), with_annotations(spot_node("spot"), annotations)], [web("p", "od")])
    assert moves(taken) == [("p", "od", "spot")]


def with_annotations(node, annotations):
    node.metadata.annotations.update(annotations)
    return node


def test_workload_opt_out():
    result = run([on_demand_node("od"), spot_node("spot")], [web("web-1", "od")],
                 workloads={WEB: {"spot-rebalancer.io/disable": "True"}})
    assert skips(result) == {"web-1": SkipCode.OPTED_OUT}


@pytest.mark.parametrize(("value", "opted_out"), [
    ("true", True), ("yes", True), ("", True), (" False ", False), ("false", False)])
def test_opt_out_values_mean_the_same_to_the_planner_and_to_drains(value, opted_out):
    from spot_rebalancer.config import Settings
    from spot_rebalancer.drain_policy import Action, DrainReason, decide_pods

    pod = web("web-1", "od", annotations={"spot-rebalancer.io/disable": value})
    planned = run([on_demand_node("od"), spot_node("spot")], [pod])
    assert (skips(planned) == {"web-1": SkipCode.OPTED_OUT}) is opted_out
    workload_planned = run([on_demand_node("od"), spot_node("spot")], [web("web-1", "od")],
                           workloads={WEB: {"spot-rebalancer.io/disable": value}})
    assert (skips(workload_planned) == {"web-1": SkipCode.OPTED_OUT}) is opted_out
    (decision,) = decide_pods([pod], Settings(), DrainReason.SPOT_INTERRUPTION, NOW)
    assert (decision.action is Action.SKIP) is opted_out


def test_pods_on_a_node_we_are_draining_are_the_drains_business():
    draining = on_demand_node("od", taints=[taint("spot-rebalancer/interrupted", "NoExecute")])
    nodes = [draining, spot_node("spot")]
    pod = web("web-1", "od", tolerations=[toleration(operator="Exists")])
    assert skips(run(nodes, [pod])) == {"web-1": SkipCode.NODE_DRAINING}


def test_excluded_namespaces_and_opt_out_annotation_are_configurable():
    nodes = [on_demand_node("od"), spot_node("spot")]
    options = replace(OPTIONS, excluded_namespaces=("batch",), opt_out_annotation="example.com/pin")
    assert len(run(nodes, [web("p", "od", namespace="kube-system")], options=options).evictions) == 1
    assert skips(run(nodes, [web("p", "od", namespace="batch")], options=options)) == {
        "p": SkipCode.EXCLUDED_NAMESPACE}
    assert skips(run(nodes, [web("p", "od", annotations={"example.com/pin": "true"})], options=options)) == {
        "p": SkipCode.OPTED_OUT}


# --- history ------------------------------------------------------------------------------------------


def record(workload=WEB):
    return MoveRecord("default", "web-0", "uid-0", workload, "od", "spot", 0, 100, NOW - timedelta(minutes=1))


def test_a_workload_with_a_move_in_flight_waits():
    result = run([on_demand_node("od"), spot_node("spot")], [web("web-1", "od")],
                 history=History(in_flight=(record(),)))
    assert skips(result) == {"web-1": SkipCode.MOVE_IN_FLIGHT}
    other = WorkloadRef("default", "ReplicaSet", "other")
    assert len(run([on_demand_node("od"), spot_node("spot")], [web("web-1", "od")],
                   history=History(in_flight=(record(other),))).evictions) == 1


def test_a_workload_backing_off_waits_until_its_back_off_ends():
    nodes, pods = [on_demand_node("od"), spot_node("spot")], [web("web-1", "od")]
    running = History(backoffs=(Backoff(WEB, "preferred-node-affinity", 2, NOW + timedelta(minutes=5)),))
    assert skips(run(nodes, pods, history=running)) == {"web-1": SkipCode.BACKING_OFF}
    over = History(backoffs=(Backoff(WEB, "preferred-node-affinity", 2, NOW - timedelta(seconds=1)),))
    assert len(run(nodes, pods, history=over).evictions) == 1
    other_reason = History(backoffs=(Backoff(WEB, "consolidation", 2, NOW + timedelta(minutes=5)),))
    assert len(run(nodes, pods, history=other_reason).evictions) == 1


# --- capacity nudge ------------------------------------------------------------------------------------

SPOT_GROUP = {"eks.amazonaws.com/nodegroup": "spot-arm"}


def test_no_room_asks_the_preferred_group_for_enough_nodes():
    small = {"cpu": "2", "memory": "8Gi", "pods": "20"}
    nodes = [on_demand_node("od", allocatable={"cpu": "32", "memory": "64Gi", "pods": "110"}),
             spot_node("spot-1", labels=SPOT_GROUP, allocatable=small)]
    pods = [make_pod("daemon", "spot-1", requests={"cpu": "500m"}, owner=("DaemonSet", "agent")),
            make_pod("filler", "spot-1", requests={"cpu": "1500m"}, owner=None)]
    pods += [web(f"w{i}-1", "od", owner=f"w{i}") for i in range(5)]
    result = run(nodes, pods)
    assert result.evictions == ()
    (request,) = result.capacity
    assert request.group == NodeGroup("nodegroup", "spot-arm")
    # A new node offers 2 CPUs minus the DaemonSet's 500m: one 1-CPU pod each.
    assert (request.nodes, request.pods) == (3, 5)  # capped by max_nudge_nodes
    assert request.node_room.cpu == 1500
    uncapped = run(nodes, pods, options=replace(OPTIONS, max_nudge_nodes=10))
    assert uncapped.capacity[0].nodes == 5


def test_the_shells_asg_names_win_over_the_nodegroup_label():
    full = {"cpu": "1", "memory": "8Gi", "pods": "20"}
    nodes = [on_demand_node("od"), spot_node("spot-1", labels=SPOT_GROUP, allocatable=full)]
    pods = [make_pod("filler", "spot-1", requests={"cpu": "1"}, owner=None), web("web-1", "od")]
    result = run(nodes, pods, node_groups={"spot-1": "eks-spot-arm-asg"})
    assert result.capacity[0].group == NodeGroup("asg", "eks-spot-arm-asg")


def test_no_nudge_without_a_group_or_when_rules_not_room_keep_pods_out():
    full = {"cpu": "1", "memory": "8Gi", "pods": "20"}
    nodes = [on_demand_node("od"), spot_node("spot-1", allocatable=full)]
    pods = [make_pod("filler", "spot-1", requests={"cpu": "1"}, owner=None), web("web-1", "od")]
    assert run(nodes, pods).capacity == ()
    nodes = [on_demand_node("od"), spot_node("spot-1", labels=SPOT_GROUP)]
    pods = [make_pod("agent", "spot-1", host_ports=[80], owner=None), web("web-1", "od", host_ports=[80])]
    assert run(nodes, pods).capacity == ()


def test_a_clock_without_a_time_zone_is_refused():
    with pytest.raises(NaiveClockError):
        plan(ClusterSnapshot(), OPTIONS, History(), datetime(2024, 5, 1))
