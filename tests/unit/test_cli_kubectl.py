"""The CLI's kubectl habits: optional kubeconfig, -o table|wide|json|yaml, -n/-A, -l, --version,
YAML and stdin input, `explain`, and a quiet closed pipe."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spot_rebalancer import __version__
from spot_rebalancer.cli import EXIT_BAD_INPUT, EXIT_CLOSED_PIPE, main
from tests.unit.builders import PREFER_SPOT, make_pdb, make_pod, on_demand_node, spot_node, write_list

REPO = Path(__file__).resolve().parents[2]
EVENT = REPO / "tests" / "events" / "spot-interruption-terminate.json"
INSTANCE = "i-0a1b2c3d4e5f60718"  # the event's


@pytest.fixture(autouse=True)
def single_replicas_movable(monkeypatch):
    """The listing has one replica per workload: let them move."""
    monkeypatch.setenv("MOVE_SINGLE_REPLICA_WORKLOADS", "true")


@pytest.fixture
def listing(tmp_path) -> str:
    """web-1 (app=web, default) moves, api-1 (app=api, shop) is kept by its budget."""
    pods = [make_pod("web-1", "od-1", labels={"app": "web"}, preferred=[PREFER_SPOT], requests={"cpu": "1"},
                     owner=("ReplicaSet", "web-1")),
            make_pod("api-1", "od-1", "shop", labels={"app": "api"}, preferred=[PREFER_SPOT],
                     requests={"cpu": "1"}, owner=("ReplicaSet", "api-1"))]
    node = on_demand_node("od-1", provider_id=f"aws:///eu-west-1a/{INSTANCE}")
    return write_list(tmp_path, [node, spot_node("spot-1")], pods,
                      [make_pdb("api", {"app": "api"}, 0, namespace="shop")])


def names(capsys) -> dict[str, str]:
    out = json.loads(capsys.readouterr().out)
    return {**{f"{e['namespace']}/{e['name']}": "evict" for e in out["evictions"]},
            **{f"{c['namespace']}/{c['name']}": c["code"] for c in out["considered"]}}


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"spot-rebalancer {__version__}\n"


def test_namespace_and_selector_choose_what_is_shown(listing, capsys):
    assert main(["plan", "-f", listing, "-o", "json"]) == 0
    assert names(capsys) == {"default/web-1": "evict", "shop/api-1": "pdb-exhausted"}
    assert main(["plan", "-f", listing, "-A", "-o", "json"]) == 0
    assert names(capsys) == {"default/web-1": "evict", "shop/api-1": "pdb-exhausted"}
    assert main(["plan", "-f", listing, "-n", "shop", "-o", "json"]) == 0
    assert names(capsys) == {"shop/api-1": "pdb-exhausted"}
    assert main(["plan", "-f", listing, "-l", "app in (web, db)", "-o", "json"]) == 0
    assert names(capsys) == {"default/web-1": "evict"}
    assert main(["plan", "-f", listing, "-l", "app!=web", "--namespace", "default", "-o", "json"]) == 0
    assert names(capsys) == {}


def test_a_bad_selector_is_bad_input(listing, capsys):
    assert main(["plan", "-f", listing, "-l", "app in web"]) == EXIT_BAD_INPUT
    assert "'app in web': the values of app's set go in parentheses" in capsys.readouterr().err


def test_namespace_and_all_namespaces_exclude_each_other(listing, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["plan", "-f", listing, "-n", "shop", "-A"])
    assert exited.value.code == 2


def test_wide_adds_columns_and_yaml_holds_what_json_does(listing, capsys):
    assert main(["plan", "-f", listing, "-o", "wide"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["VERDICT", "POD", "NODE", "TARGET", "REASON", "DETAIL"]
    assert lines[2].endswith("PodDisruptionBudget shop/api allows no more")
    assert main(["plan", "-f", listing, "-o", "json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert main(["plan", "-f", listing, "-o", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == as_json


def as_yaml(path: str) -> str:
    """The List as `kubectl get -o yaml` writes it, but with timestamps unquoted, as people do."""
    text = yaml.safe_dump(json.loads(Path(path).read_text()))
    return text.replace("'2024-05-01T10:00:00Z'", "2024-05-01T10:00:00Z")


def test_a_yaml_list_plans_as_its_json_does(listing, tmp_path, capsys):
    assert main(["plan", "-f", listing, "-o", "json"]) == 0
    from_json = capsys.readouterr().out
    path = tmp_path / "list.yaml"
    path.write_text(as_yaml(listing))
    assert "creationTimestamp: 2024-05-01T10:00:00Z" in path.read_text()
    assert main(["plan", "-f", str(path), "-o", "json"]) == 0
    assert capsys.readouterr().out == from_json


def stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_the_list_can_come_from_stdin(listing, capsys, monkeypatch):
    stdin(monkeypatch, as_yaml(listing).encode())
    assert main(["plan", "-f", "-", "-o", "json"]) == 0
    assert names(capsys) == {"default/web-1": "evict", "shop/api-1": "pdb-exhausted"}


def test_the_event_can_come_from_stdin(listing, capsys, monkeypatch):
    stdin(monkeypatch, EVENT.read_bytes())
    assert main(["handle", "--event", "-", "-f", listing, "--dry-run", "-o", "json"]) == 0
    steps = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {s["action"] for s in steps} >= {"cordon", "evict"}
    assert {s["pod"] for s in steps if s["action"] == "evict"} == {"web-1", "api-1"}


def test_handle_shows_only_the_namespace_asked_for(listing, capsys):
    assert main(["handle", "--event", str(EVENT), "-f", listing, "--dry-run", "-n", "shop"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ACTION", "NODE", "POD", "REASON"]
    evicted = [line.split()[2] for line in lines[1:] if line.startswith("evict")]
    assert evicted == ["shop/api-1"]
    assert any(line.startswith("cordon") for line in lines)  # the node's own steps stay


def test_event_and_list_cannot_both_be_stdin(listing, capsys):
    assert main(["handle", "--event", "-", "-f", "-", "--dry-run"]) == EXIT_BAD_INPUT
    assert "cannot both read stdin" in capsys.readouterr().err


BILLION_LAUGHS = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]",
                            *(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]"
                              for i in range(8))])


def test_yaml_aliases_are_refused_before_they_expand(tmp_path, capsys):
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    assert main(["plan", "-f", str(path)]) == EXIT_BAD_INPUT
    assert "line 2: YAML aliases are refused" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [
    ("kind: List\nitems: [\n", "not YAML or JSON"),
    ("kind: List\nitems: !!binary aGk=\n", "a value JSON cannot"),
    ("kind: List\n---\nkind: List\n", "not YAML or JSON"),
    ("!!python/object:os.system {}\n", "not YAML or JSON"),
], ids=["unclosed", "binary", "two documents", "python object"])
def test_yaml_that_is_not_plain_data_is_bad_input(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["plan", "-f", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_the_kubeconfig_defaults_to_the_environments(tmp_path, capsys, monkeypatch):
    broken = tmp_path / "kubeconfig"
    broken.write_text("not: [a kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(broken))
    assert main(["census"]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith(f"spot-rebalancer: {broken}: unusable kubeconfig")


def test_explain_a_moved_pod(listing, capsys):
    assert main(["explain", "default/web-1", "-f", listing]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["POD", "NODE", "VERDICT"]
    assert lines[1].split()[:2] == ["default/web-1", "od-1"]
    assert lines[1].endswith("evict: its replacement goes to spot-1 (score 0 -> 100)")
    assert lines[3].split() == ["RULE", "RESULT", "DETAIL"]
    assert all(line.split()[-1] == "pass" for line in lines[4:])


def test_explain_a_kept_pod_as_json(listing, capsys):
    assert main(["explain", "shop/api-1", "-f", listing, "-o", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["verdict"], out["target"]) == ("keep", None)
    failed = [(r["code"], r["detail"]) for r in out["rules"] if r["result"] == "fail"]
    assert failed == [("pdb-exhausted", "PodDisruptionBudget shop/api allows no more")]


@pytest.mark.parametrize(("pod", "message"), [("web-1", "expected NAMESPACE/POD"),
                                              ("default/nope", "pod default/nope is not in the cluster")],
                         ids=["no namespace", "unknown pod"])
def test_explain_names_a_pod_of_the_cluster(listing, capsys, pod, message):
    assert main(["explain", pod, "-f", listing]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(tmp_path):
    pods = [make_pod(f"web-{i}", "od-1", preferred=[PREFER_SPOT], owner=("ReplicaSet", f"web-{i}"))
            for i in range(3000)]
    listing = write_list(tmp_path, [on_demand_node("od-1")], pods)
    reader = subprocess.Popen(["head", "-n", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    result = subprocess.run([sys.executable, "-m", "spot_rebalancer.cli", "plan", "-f", listing],
                            stdout=reader.stdin, stderr=subprocess.PIPE, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(REPO / "lambdas")})
    reader.stdin.close()
    reader.wait()
    assert (result.returncode, result.stderr) == (EXIT_CLOSED_PIPE, "")
