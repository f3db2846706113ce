"""Node-aware order: the planner empties whole on-demand nodes before anything else, undoes the moves
off a node that would stay, and says which nodes it expects to empty; and the per-workload rails
(a share of the replicas at a time, single replicas kept)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spot_rebalancer.config import ConfigError, Settings, share_of
from spot_rebalancer.rebalance import History, SkipCode, plan
from spot_rebalancer.snapshot import ClusterSnapshot
from tests.unit.builders import PREFER_SPOT, make_pdb, make_pod, on_demand_node, prefer, spot_node

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CAPACITY = "eks.amazonaws.com/capacityType"
OPTIONS = Settings(max_evictions_per_workload="100%", max_evictions_per_node=100,
                   max_evictions_per_namespace=100, max_evictions_per_cycle=100)
PREFER_SPOT_LESS = prefer(50, CAPACITY, "SPOT")
ROOM_FOR_TWO = {"cpu": "1", "memory": "4Gi", "pods": "110"}


def pod(name, node, owner, *, weight=PREFER_SPOT, **kwargs):
    """A spot-preferring replica of `owner` asking for 400m: two fit a one-CPU node."""
    kwargs.setdefault("requests", {"cpu": "400m"})
    return make_pod(name, node, owner=("ReplicaSet", owner), labels={"app": owner}, preferred=[weight],
                    **kwargs)


def daemon(name, node):
    return make_pod(name, node, owner=("DaemonSet", "agent"), requests={"cpu": "10m"})


def run(nodes, pods, pdbs=(), options=OPTIONS):
    return plan(ClusterSnapshot(list(nodes), list(pods), list(pdbs)), options, History(), NOW)


def moved(result):
    return sorted((e.name, e.from_node) for e in result.evictions)


def half_full_fleet():
    """Two on-demand nodes, each with a replica gaining 100 and one gaining 50, and spot room for two
    pods: by gain alone the two 100s would go, one off each node, and both nodes would stay."""
    nodes = [on_demand_node("od-1"), on_demand_node("od-2"), spot_node("spot", allocatable=ROOM_FOR_TWO)]
    pods = [pod("a-1", "od-1", "a"), pod("c-1", "od-1", "c", weight=PREFER_SPOT_LESS),
            pod("b-1", "od-2", "b"), pod("d-1", "od-2", "d", weight=PREFER_SPOT_LESS),
            pod("a-2", "spot", "a", requests={}), pod("b-2", "spot", "b", requests={}),
            pod("c-2", "spot", "c", requests={}), pod("d-2", "spot", "d", requests={}),
            daemon("agent-1", "od-1"), daemon("agent-2", "od-2")]
    return nodes, pods


def test_a_whole_node_is_emptied_rather_than_half_of_each():
    result = run(*half_full_fleet())
    assert moved(result) == [("a-1", "od-1"), ("c-1", "od-1")]
    assert result.emptying == ("od-1",)
    assert {s.name: s.code for s in result.skipped if s.name in ("b-1", "d-1")} == {
        "b-1": SkipCode.NO_ROOM, "d-1": SkipCode.NO_ROOM}


CASES = {
    # name: (on-demand nodes and their pods, spot room in pods, expected moves, expected emptying)
    # od-big cannot be emptied with the room left: its moves are undone, and it comes last.
    "fewest pods first": ({"od-big": ["a", "b", "c"], "od-small": ["d"]}, 2, ["a", "d"], ["od-small"]),
    "every node that fits": ({"od-1": ["a"], "od-2": ["b"], "od-3": ["c"]}, 3, ["a", "b", "c"],
                             ["od-1", "od-2", "od-3"]),
    "a node that cannot be emptied comes last": (
        {"od-pinned": ["a", "kept"], "od-free": ["b", "c"]}, 2, ["b", "c"], ["od-free"]),
    "no room for a whole node: its pods still move, by gain": (
        {"od-1": ["a", "b", "c"]}, 2, ["a", "b"], []),
    "names break ties": ({"od-b": ["a"], "od-a": ["b"]}, 1, ["b"], ["od-a"]),
}


@pytest.mark.parametrize("on_demand, room, expected, emptying", CASES.values(), ids=CASES.keys())
def test_node_order(on_demand, room, expected, emptying):
    nodes = [on_demand_node(name) for name in on_demand]
    nodes.append(spot_node("spot", allocatable={"cpu": f"{room * 400}m", "memory": "4Gi", "pods": "110"}))
    pods = []
    for node, apps in on_demand.items():
        for app in apps:
            # "kept" prefers nothing: its node cannot be emptied. Every app has a replica on spot
            # already (asking for nothing), so none is a single replica.
            preferred = {"weight": prefer(1, "none", "x")} if app == "kept" else {}
            pods.append(pod(f"{app}-1", node, app, **preferred))
            pods.append(pod(f"{app}-2", "spot", app, requests={}))
    result = run(nodes, pods)
    assert sorted(e.name.split("-")[0] for e in result.evictions) == expected
    assert list(result.emptying) == emptying


def test_a_cap_holds_a_node_back_for_a_later_wave_without_undoing_its_other_moves():
    """A budget allows one of a's two replicas now: b goes, a-1 goes, a-2 waits; the node is not
    expected empty from this plan, and its moves stand."""
    nodes = [on_demand_node("od"), spot_node("spot")]
    pods = [pod("a-1", "od", "a"), pod("a-2", "od", "a"), pod("b-1", "od", "b"), pod("b-2", "spot", "b")]
    result = run(nodes, pods, [make_pdb("a", {"app": "a"}, 1)])
    assert moved(result) == [("a-1", "od"), ("b-1", "od")]
    assert {s.name: s.code for s in result.skipped} == {"a-2": SkipCode.PDB_EXHAUSTED,
                                                        "b-2": SkipCode.WELL_PLACED}
    assert result.emptying == ()


def test_moves_off_a_node_that_stays_are_undone_and_their_room_given_to_a_node_that_goes():
    """od-1 has fewer pods and comes first, but one of its pods cannot move (a host port): its other
    move is undone, and the spot room goes to od-2, which empties."""
    nodes = [on_demand_node("od-1"), on_demand_node("od-2"), spot_node("spot", allocatable=ROOM_FOR_TWO),
             spot_node("spot-port", allocatable=ROOM_FOR_TWO)]
    pods = [pod("a-1", "od-1", "a"), pod("p-1", "od-1", "p", host_ports=[80]),
            make_pod("holder", "spot", owner=None, host_ports=[80]),
            make_pod("holder-2", "spot-port", owner=None, host_ports=[80], requests={"cpu": "1"}),
            pod("b-1", "od-2", "b"), pod("c-1", "od-2", "c"),
            pod("d-1", "od-2", "d", requests={"cpu": "100m"})]
    pods += [pod(f"{app}-2", "spot", app, requests={}) for app in "abcdp"]
    result = run(nodes, pods)
    assert result.emptying == ("od-2",)
    assert {e.name for e in result.evictions} >= {"b-1", "c-1", "d-1"}
    assert "p-1" not in {e.name for e in result.evictions}


def test_a_plan_that_moves_everything_reports_every_emptied_node_and_only_on_demand_ones():
    nodes = [on_demand_node("od"), spot_node("spot-old"), spot_node("spot-new", labels={"tier": "better"})]
    better = prefer(10, "tier", "better")
    pods = [pod("a-1", "od", "a"), pod("a-2", "spot-old", "a", weight=better)]
    result = run(nodes, pods)
    assert result.emptying == ("od",)


# --- per-workload share and single replicas ------------------------------------------------------


@pytest.mark.parametrize("value, replicas, allowed", [
    ("25%", 20, 5), ("25%", 7, 1), ("25%", 3, 1), ("50%", 3, 1), ("100%", 3, 3), ("2", 10, 2), ("0", 10, 0),
    ("1%", 1, 1)], ids=lambda v: str(v))
def test_share_of_rounds_down_but_allows_one(value, replicas, allowed):
    assert share_of(value, replicas) == allowed


@pytest.mark.parametrize("value", ["0%", "101%", "1001", "1.5", "-1", "25 %", "a"])
def test_a_share_that_is_neither_a_count_nor_a_percentage_is_refused(value):
    with pytest.raises(ConfigError, match=r"^maxEvictionsPerWorkload: .*count from 0 to 1000 or a percent"):
        Settings.from_context({"maxEvictionsPerWorkload": value})


def test_a_json_number_is_a_count():
    assert Settings.from_context({"maxEvictionsPerWorkload": 3}).max_evictions_per_workload == "3"


def test_a_workload_moves_a_share_of_its_replicas_at_a_time():
    nodes = [on_demand_node("od", allocatable={"cpu": "16", "memory": "64Gi", "pods": "110"}),
             spot_node("spot", allocatable={"cpu": "16", "memory": "64Gi", "pods": "110"})]
    pods = [pod(f"a-{i}", "od", "a") for i in range(8)]
    result = run(nodes, pods, options=Settings(max_evictions_per_node=100, max_evictions_per_namespace=100))
    assert len(result.evictions) == 2, "25% of 8"
    assert {s.code for s in result.skipped} == {SkipCode.WORKLOAD_CAP}
    assert "2 moves of default/ReplicaSet/a at a time (25%)" in result.skipped[0].detail


def test_the_only_replica_of_a_workload_stays_unless_allowed():
    nodes = [on_demand_node("od"), spot_node("spot")]
    pods = [pod("solo-1", "od", "solo"), pod("pair-1", "od", "pair"), pod("pair-2", "od", "pair")]
    result = run(nodes, pods)
    assert {e.name for e in result.evictions} == {"pair-1", "pair-2"}
    assert {s.name: s.code for s in result.skipped} == {"solo-1": SkipCode.SINGLE_REPLICA}
    assert result.emptying == ()
    allowed = run(nodes, pods, options=Settings(max_evictions_per_workload="100%",
                                                move_single_replica_workloads=True))
    assert len(allowed.evictions) == 3 and allowed.emptying == ("od",)
