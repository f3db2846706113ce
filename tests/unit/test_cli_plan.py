"""`spot-rebalancer plan` and `census` on a `kubectl get -o json` List file."""

import json
import socket

import msgspec
import pytest

from spot_rebalancer.cli import EXIT_API_ERROR, EXIT_BAD_INPUT, main
from spot_rebalancer.config import Settings
from tests.unit.builders import (
    PREFER_SPOT,
    make_pdb,
    make_pod,
    on_demand_node,
    spot_node,
    taint,
    write_list,
)

GI = 2**30


@pytest.fixture(autouse=True)
def single_replicas_movable(monkeypatch):
    """The fleets here have one replica per workload: let them move."""
    monkeypatch.setenv("MOVE_SINGLE_REPLICA_WORKLOADS", "true")


def fleet(tmp_path) -> str:
    """Two pods on on-demand that prefer spot, a spot node with room, one budget per workload."""
    pods = [make_pod("web-1", "od-1", labels={"app": "web"}, preferred=[PREFER_SPOT],
                     requests={"cpu": "1", "memory": "1Gi"}, owner=("ReplicaSet", "web-1")),
            make_pod("api-1", "od-1", labels={"app": "api"}, preferred=[PREFER_SPOT],
                     requests={"cpu": "1", "memory": "2Gi"}, owner=("ReplicaSet", "api-1")),
            make_pod("db-1", "od-1", labels={"app": "db"}, requests={"cpu": "500m"},
                     owner=("StatefulSet", "db"))]
    return write_list(tmp_path, [on_demand_node("od-1"), spot_node("spot-1")], pods,
                      [make_pdb("web", {"app": "web"}, 1), make_pdb("api", {"app": "api"}, 0)])


def test_plan_json_names_each_eviction_and_why_the_rest_stay(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAX_EVICTIONS_PER_CYCLE", raising=False)
    assert main(["plan", "--from-file", fleet(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(e["namespace"], e["name"], e["from_node"], e["to_node"], e["score_gain"])
            for e in out["evictions"]] == [("default", "web-1", "od-1", "spot-1", 100)]
    assert [(c["name"], c["code"]) for c in out["considered"]] == [("api-1", "pdb-exhausted")]


def test_plan_respects_max_evictions(tmp_path, capsys):
    assert main(["plan", "--from-file", fleet(tmp_path), "--max-evictions", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["evictions"] == []
    # The cap is checked before budgets: with none left, nothing else is worth asking.
    assert {c["name"]: c["code"] for c in out["considered"]} == {"web-1": "cycle-cap",
                                                                 "api-1": "cycle-cap"}


def test_plan_table_lists_moves_then_kept_pods(tmp_path, capsys):
    assert main(["plan", "--from-file", fleet(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    # A header, and each column as wide as its widest cell.
    assert lines == ["VERDICT   POD             NODE   TARGET   REASON",
                     "evict     default/web-1   od-1   spot-1   score 0 -> 100",
                     "keep      default/api-1   od-1   -        pdb-exhausted",
                     "1 to evict, 1 kept, 0 on-demand node(s) emptied"]


def test_census_json_counts_the_fleet(tmp_path, capsys):
    assert main(["census", "--from-file", fleet(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == [
        {"capacity_type": "on-demand", "architecture": "unknown", "nodes": 1, "allocatable_cpu": 4000,
         "allocatable_memory": 16 * GI, "requested_cpu": 2500, "requested_memory": 3 * GI},
        {"capacity_type": "spot", "architecture": "unknown", "nodes": 1, "allocatable_cpu": 4000,
         "allocatable_memory": 16 * GI, "requested_cpu": 0, "requested_memory": 0}]
    assert out["spot_cpu_share"] == 0.0
    assert (out["pods_with_preferences"], out["misplaced_pods"]) == (2, 2)


def test_census_table(tmp_path, capsys):
    assert main(["census", "--from-file", fleet(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["on-demand", "unknown", "1", "4.00", "2.50", "16.0Gi", "3.0Gi"]
    assert out[-2] == "spot share of requested CPU: 0.0%"
    assert out[-1] == "pods with a preferred node affinity: 2, misplaced: 2"


@pytest.mark.parametrize("command", ["plan", "census"])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, command):
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "Pod"}')
    assert main([command, "--from-file", str(bad)]) == EXIT_BAD_INPUT
    assert "expected a Kubernetes List" in capsys.readouterr().err
    assert main([command, "--from-file", str(tmp_path / "missing.json")]) == EXIT_BAD_INPUT


def test_a_quantity_the_api_server_would_refuse_exits_2(tmp_path, capsys):
    pod = make_pod("web-1", "od-1", preferred=[PREFER_SPOT], requests={"cpu": "lots"})
    path = write_list(tmp_path, [on_demand_node("od-1"), spot_node("spot-1")], [pod])
    assert main(["plan", "--from-file", path]) == EXIT_BAD_INPUT
    assert "spot-rebalancer:" in capsys.readouterr().err


def test_bad_settings_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAX_EVICTIONS_PER_CYCLE", "many")
    assert main(["plan", "--from-file", fleet(tmp_path)]) == EXIT_BAD_INPUT
    assert "MAX_EVICTIONS_PER_CYCLE" in capsys.readouterr().err


def test_the_selectors_narrow_what_plan_moves(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POD_SELECTOR", "app in (web,db)")
    monkeypatch.setenv("NAMESPACE_SELECTOR", "team=shop")
    pods = [make_pod(f"{app}-1", "od-1", namespace, labels={"app": app}, preferred=[PREFER_SPOT],
                     owner=("ReplicaSet", f"{app}-1"))
            for namespace, app in (("shop", "web"), ("shop", "api"), ("lab", "web"))]
    path = write_list(tmp_path, [on_demand_node("od-1"), spot_node("spot-1")], pods,
                      namespaces={"shop": {"team": "shop"}, "lab": {"team": "lab"}})
    assert main(["plan", "--from-file", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(e["namespace"], e["name"]) for e in out["evictions"]] == [("shop", "web-1")]
    assert {(c["namespace"], c["name"]): c["code"] for c in out["considered"]} == {
        ("shop", "api-1"): "not-selected", ("lab", "web-1"): "namespace-not-selected"}
    assert main(["explain", "lab/web-1", "--from-file", path]) == 0
    shown = capsys.readouterr().out
    assert "keep: namespace-not-selected" in shown
    assert "namespace lab's labels do not match namespaceSelector 'team=shop'" in shown


def test_a_namespace_selector_needs_the_namespaces_in_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NAMESPACE_SELECTOR", "team=shop")
    assert main(["plan", "--from-file", fleet(tmp_path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "namespaceSelector is set" in err and "namespaces" in err
    monkeypatch.delenv("NAMESPACE_SELECTOR")
    assert main(["plan", "--from-file", fleet(tmp_path)]) == 0  # without it, none are needed


@pytest.mark.parametrize(("variable", "value"), [("POD_SELECTOR", "app in web"),
                                                 ("NAMESPACE_SELECTOR", "team=a,team=b")])
def test_a_bad_selector_setting_exits_2_naming_it(tmp_path, capsys, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert main(["plan", "--from-file", fleet(tmp_path)]) == EXIT_BAD_INPUT
    assert f"{variable}: {value!r}" in capsys.readouterr().err


def recommended_long_ago(node):
    """The node as a rebalance recommendation's taint left it, far past the TTL."""
    from datetime import UTC, datetime

    from spot_rebalancer.drain_policy import DrainReason, node_drain_patch

    patch = node_drain_patch(node, DrainReason.REBALANCE_RECOMMENDATION, Settings(),
                             datetime(2020, 1, 1, tzinfo=UTC))
    annotations = patch.body["metadata"]["annotations"]
    ours = taint(DrainReason.REBALANCE_RECOMMENDATION.taint_key, "PreferNoSchedule")
    return msgspec.structs.replace(node, spec=msgspec.structs.replace(node.spec, taints=[ours]),
                                   metadata=msgspec.structs.replace(node.metadata, annotations=annotations))


def test_tick_runs_the_sweep_the_census_and_the_cycle_as_a_dry_run(tmp_path, capsys):
    """What the schedule function does in one period, on the same List as `plan` and `census`."""
    pods = [make_pod("web-1", "od-1", labels={"app": "web"}, preferred=[PREFER_SPOT],
                     requests={"cpu": "1", "memory": "1Gi"}, owner=("ReplicaSet", "web-1"))]
    path = write_list(tmp_path, [on_demand_node("od-1"), recommended_long_ago(spot_node("spot-1"))], pods)

    assert main(["tick", "--from-file", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dryRun"] is True
    assert out["sweep"] == [{"action": "revert", "node": "spot-1",
                             "reason": "rebalance recommendation expired", "outcome": "dry-run"}]
    # The sweep changes nothing in a dry run: the census and the plan still see the spot node tainted
    # by the recommendation, so the pod counts as placed as well as it can be and nothing moves.
    assert out["misplacedPods"] == out["census"]["misplaced_pods"] == 0
    assert out["planned"] == 0
    assert [(c["name"], c["code"]) for c in out["plan"]["considered"]] == [("web-1", "well-placed")]


def test_tick_table(tmp_path, capsys):
    assert main(["tick", "--from-file", fleet(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sweep: 0 step(s)"
    assert "census:" in out
    assert "spot share of requested CPU: 0.0%" in out
    assert out[-1] == "1 to evict, 1 kept, 0 on-demand node(s) emptied"


def test_census_prices_the_fleet_with_the_configured_prices(tmp_path, capsys, monkeypatch):
    """Offline (a List file), the CLI knows only the prices the settings give."""
    typed = {"node.kubernetes.io/instance-type": "m6i.large", "topology.kubernetes.io/zone": "eu-west-1a"}
    path = write_list(tmp_path, [on_demand_node("od-1", labels=typed), spot_node("spot-1", labels=typed)])
    monkeypatch.setenv("PRICE_OVERRIDES", '{"m6i.large": {"onDemand": 0.096, "spot": 0.04}}')
    assert main(["census", "--from-file", path, "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)["cost"]
    assert (cost["per_hour"], cost["spot_saving_per_hour"], cost["unpriced"]) == (0.136, 0.056, [])
    assert main(["census", "--from-file", path]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == ("cost per hour: $0.1360 (on-demand unknown $0.0960, "
                                                        "spot unknown $0.0400); spot saves $0.0560 an hour")


BROKEN_KUBECONFIGS = {
    "yaml-syntax": "apiVersion: v1\nkind: Config\nclusters: [unclosed\n",
    "no-current-context": "hello: world\n",
    "not-a-mapping": "- just\n- a list\n",
}


@pytest.mark.parametrize("content", BROKEN_KUBECONFIGS.values(), ids=BROKEN_KUBECONFIGS.keys())
def test_an_unusable_kubeconfig_is_one_line_and_exit_2(tmp_path, capsys, content):
    path = tmp_path / "kubeconfig"
    path.write_text(content)
    assert main(["plan", "--kubeconfig", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"spot-rebalancer: {path}: unusable kubeconfig")


def test_an_unreachable_api_server_is_one_line_and_exit_1(tmp_path, capsys):
    with socket.socket() as closed:  # bound, never listening: connections are refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        path = tmp_path / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                   "insecure-skip-tls-verify": True}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
        assert main(["census", "--kubeconfig", str(path)]) == EXIT_API_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(port) in err and "Traceback" not in err
