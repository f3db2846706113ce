"""The CLI's dry runs with the deployed settings: `--stack` (the stack's function configuration, in
moto) or the CDK app's context (`cdk.json` and `-c key=value`)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.cli import EXIT_API_ERROR, EXIT_BAD_INPUT, main
from spot_rebalancer.config import Settings
from spot_rebalancer.deployment import SCHEDULE_FUNCTION_OUTPUT
from tests.unit.builders import PREFER_SPOT, make_pod, on_demand_node, spot_node, write_list

REGION = "eu-west-1"
STACK = "SpotRebalancer-prod"


@pytest.fixture
def listing(tmp_path) -> str:
    """One pod on on-demand that prefers spot, and a spot node with room: one move by default. Its
    workload has a second replica (that prefers nothing), so it is not a single replica's."""
    return write_list(tmp_path, [on_demand_node("od-1"), spot_node("spot-1")],
                      [make_pod("web-1", "od-1", preferred=[PREFER_SPOT], requests={"cpu": "1"}),
                       make_pod("web-2", "spot-1", requests={"cpu": "1"})])


def planned(capsys) -> dict[str, str]:
    out = json.loads(capsys.readouterr().out)
    return {**{e["name"]: "evict" for e in out["evictions"]},
            **{c["name"]: c["code"] for c in out["considered"]}}


@pytest.fixture
def aws(monkeypatch):
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def deploy(settings: Settings, outputs: dict[str, str] | None = None) -> None:
    """A stack as far as the CLI reads it: its outputs, and the function one of them names with the
    environment the stack gives its functions."""
    role = boto3.client("iam").create_role(RoleName="schedule", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    function = boto3.client("lambda").create_function(
        FunctionName="SpotRebalancer-prod-ScheduleFunction1A2B3C", Runtime="python3.13", Role=role,
        Handler="spot_rebalancer.handlers.schedule.handler", Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18},
        Environment={"Variables": {**settings.to_env(), "POWERTOOLS_SERVICE_NAME": "spot-rebalancer"}},
    )["FunctionName"]
    outputs = {SCHEDULE_FUNCTION_OUTPUT: function} if outputs is None else outputs
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {key: {"Value": value} for key, value in outputs.items()}}
    boto3.client("cloudformation").create_stack(StackName=STACK, TemplateBody=json.dumps(template))


def test_plan_with_the_stack_runs_with_what_is_deployed(aws, listing, capsys, monkeypatch):
    monkeypatch.delenv("MAX_EVICTIONS_PER_CYCLE", raising=False)
    deploy(Settings(cluster_name="prod", max_evictions_per_cycle=0))
    assert main(["plan", "--from-file", listing, "--json"]) == 0
    assert planned(capsys) == {"web-1": "evict"}  # the defaults would move it
    assert main(["plan", "--from-file", listing, "--stack", STACK, "--json"]) == 0
    assert planned(capsys) == {"web-1": "cycle-cap"}


def test_a_stack_without_the_output_is_bad_input(aws, listing, capsys):
    deploy(Settings(), outputs={"Other": "x"})
    assert main(["plan", "--from-file", listing, "--stack", STACK]) == EXIT_BAD_INPUT
    assert f"stack {STACK} has no {SCHEDULE_FUNCTION_OUTPUT} output" in capsys.readouterr().err


def test_a_stack_that_does_not_exist_is_one_line_and_exit_1(aws, listing, capsys):
    assert main(["plan", "--from-file", listing, "--stack", "nope"]) == EXIT_API_ERROR
    err = capsys.readouterr().err
    assert err.startswith("spot-rebalancer: ") and "nope" in err and err.count("\n") == 1


def write_cdk_json(tmp_path, context: dict) -> str:
    path = tmp_path / "cdk.json"
    path.write_text(json.dumps({"app": "python app.py", "context": context}))
    return str(path)


def test_plan_with_the_app_context_takes_the_clusters_overrides(tmp_path, listing, capsys):
    cdk_json = write_cdk_json(tmp_path, {"clusterName": "prod,batch", "maxEvictionsPerCycle": 5,
                                         "scheduleMinutes": 5,
                                         "clusterOverrides": {"batch": {"maxEvictionsPerCycle": 0}}})
    for cluster, verdict in (("prod", "evict"), ("batch", "cycle-cap")):
        assert main(["plan", "--from-file", listing, "--cdk-json", cdk_json, "-c", f"clusterName={cluster}",
                     "--json"]) == 0
        assert planned(capsys) == {"web-1": verdict}, cluster
    # -c wins over cdk.json, as in `cdk synth`.
    assert main(["plan", "--from-file", listing, "--cdk-json", cdk_json, "-c", "clusterName=prod",
                 "-c", "maxEvictionsPerCycle=0", "--json"]) == 0
    assert planned(capsys) == {"web-1": "cycle-cap"}


def test_cdk_json_in_the_working_directory_is_read_with_c(tmp_path, listing, capsys, monkeypatch):
    write_cdk_json(tmp_path, {"maxEvictionsPerCycle": 0})
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--from-file", listing, "-c", "clusterName=prod", "--json"]) == 0
    assert planned(capsys) == {"web-1": "cycle-cap"}


@pytest.mark.parametrize(("context", "pairs", "message"), [
    ({"clusterName": "a,b"}, [], "clusterName names 2 clusters (a, b): choose one with -c clusterName=NAME"),
    ({}, ["maxEvictionsPerCycle=lots"], "maxEvictionsPerCycle: expected a whole number"),
    ({}, ["maxEvictionsPerCycle"], "-c maxEvictionsPerCycle: expected key=value"),
    ({"clusterName": "a", "clusterOverrides": "[1]"}, [], "clusterOverrides: expected an object"),
], ids=["several-clusters", "bad-value", "not-a-pair", "bad-overrides"])
def test_unusable_app_context_is_bad_input(tmp_path, listing, capsys, context, pairs, message):
    args = ["plan", "--from-file", listing, "--cdk-json", write_cdk_json(tmp_path, context)]
    assert main([*args, *(arg for pair in pairs for arg in ("-c", pair))]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_stack_and_context_together_are_refused(listing, capsys):
    assert main(["plan", "--from-file", listing, "--stack", STACK, "-c", "dryRun=true"]) == EXIT_BAD_INPUT
    assert "give one or the other" in capsys.readouterr().err
