"""`spot-rebalancer handle --dry-run` on every sample event: each shows the decision the events
function makes, its node read from a `kubectl get -o json` List file."""

import json
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import boto3
import msgspec
import pytest
from botocore.stub import Stubber

from spot_rebalancer.cli import main
from tests.ec2 import capacity_block_answers
from tests.unit.builders import make_pod, spot_node

EVENTS = Path(__file__).parents[1] / "events"
INSTANCE_ID = re.compile(r"\bi-(?:[0-9a-f]{17}|[0-9a-f]{8})\b")


def write_cluster(tmp_path, instance_ids) -> str:
    """One node per instance, each with a web pod and an agent."""
    nodes = [spot_node(f"node-{i}", provider_id=f"aws:///eu-west-1a/{i}") for i in instance_ids]
    pods = [make_pod(f"web-{n}", f"node-{i}") for n, i in enumerate(instance_ids)]
    pods += [make_pod(f"agent-{n}", f"node-{i}", owner=("DaemonSet", "agent"))
             for n, i in enumerate(instance_ids)]
    items = ([{"kind": "Node", **msgspec.to_builtins(n)} for n in nodes]
             + [{"kind": "Pod", **msgspec.to_builtins(p)} for p in pods])
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return str(path)


def handle(tmp_path, capsys, raw: dict, also: tuple[str, ...] = ()) -> list[dict]:
    """The dry run's steps for the event, over one node per instance it names (and `also`)."""
    event = tmp_path / "event.json"
    event.write_text(json.dumps(raw))
    cluster = write_cluster(tmp_path, dict.fromkeys([*INSTANCE_ID.findall(json.dumps(raw)), *also]))
    assert main(["handle", "--event", str(event), "--from-file", cluster, "--dry-run", "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def sample(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


# The instances EC2 (stubbed: moto knows no capacity reservations) says run in the sample's block.
BLOCK_INSTANCES = {"i-0d2f4a6c8e0b13579": "prod", "i-0e3a5c7e9b1d24680": "prod"}


def block_in_ec2(monkeypatch, raw: dict) -> dict:
    """The Capacity Block sample re-timed to now (its block ends in 40 minutes), and the CLI's EC2
    client answering for its reservation and instances."""
    now = datetime.now(UTC).replace(microsecond=0)
    ends = now + timedelta(minutes=40)
    raw = {**raw, "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
           "detail": {**raw["detail"], "end-date": ends.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    client = boto3.client("ec2", region_name="us-east-2", aws_access_key_id="k", aws_secret_access_key="s")
    stub = Stubber(client)
    capacity_block_answers(stub, raw["detail"]["capacity-reservation-id"], ends, BLOCK_INSTANCES)
    stub.activate()
    monkeypatch.setattr(boto3, "client", lambda service, **_: client if service == "ec2" else None)
    return raw


DRAIN = ["taint", "cordon", "skip", "evict"]
DECISIONS = {
    "spot-interruption-terminate.json": DRAIN,
    "spot-interruption-hibernate.json": DRAIN,
    "capacity-reservation-interruption.json": DRAIN,
    "capacity-block-expiration-warning.json": [*DRAIN, *DRAIN],  # both instances of the block
    "lifecycle-terminate-warm-pool.json": DRAIN,
    "lifecycle-launch-warm-pool.json": ["ignore"],
    "lifecycle-launch-from-warm-pool.json": ["ignore"],
    "state-change-stopped.json": DRAIN,  # a backstop: the node still has pods
    "rebalance-recommendation.json": ["taint"],  # the default recommendation action
    "lifecycle-terminate.json": DRAIN,
    "lifecycle-launch.json": ["ignore"],
    "launch-successful.json": ["ignore"],
    "state-change-stopping.json": DRAIN,
    "state-change-shutting-down.json": DRAIN,
    "state-change-running.json": ["ignore"],
    "state-change-terminated.json": DRAIN,
    "health-instance-retirement.json": DRAIN,  # its start (in 2024) has long come
    # The third instance's entity is resolved: nothing was done to its node, nothing to undo.
    "health-stop-scheduled-several.json": [*DRAIN, *DRAIN, "ignore"],
    "health-reboot-maintenance.json": DRAIN,
    "health-reboot-maintenance-closed.json": ["ignore"],
    "health-store-drive-degraded-backup.json": DRAIN,
    "health-operational-issue-public.json": ["ignore"],
    # The schedule function's own message for an impaired status check: drained as degraded hardware.
    "status-check-impaired.json": DRAIN,
}


def test_every_sample_has_its_decision():
    assert set(DECISIONS) == {p.name for p in EVENTS.glob("*.json")} - {"scheduled-event.json"}


@pytest.mark.parametrize("name", sorted(DECISIONS))
def test_each_sample_shows_its_decision(tmp_path, capsys, monkeypatch, name):
    raw = sample(name)
    if raw["detail-type"] == "Capacity Block Expiration Warning":
        raw = block_in_ec2(monkeypatch, raw)
    steps = handle(tmp_path, capsys, raw, also=tuple(BLOCK_INSTANCES))
    assert [s["action"] for s in steps] == DECISIONS[name]


def test_a_capacity_block_drains_each_of_its_instances_until_ec2_terminates_them(tmp_path, capsys,
                                                                                   monkeypatch):
    raw = block_in_ec2(monkeypatch, sample("capacity-block-expiration-warning.json"))
    steps = handle(tmp_path, capsys, raw, also=tuple(BLOCK_INSTANCES))
    assert [s["node"] for s in steps if s["action"] == "cordon"] == [f"node-{i}" for i in BLOCK_INSTANCES]
    assert {s["reason"] for s in steps if s["action"] == "taint"} == {"spot-rebalancer/capacity-block-expiry"}


def test_a_scheduled_change_days_away_waits_for_its_drain_time_as_the_function_does(tmp_path, capsys):
    """The dry run once planned a drain now for a change ten days off, which the function leaves
    alone until its lead time."""
    raw = sample("health-instance-retirement.json")
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    raw["detail"]["startTime"] = format_datetime(starts, usegmt=True)
    (step,) = handle(tmp_path, capsys, raw)
    assert step["action"] == "continue"
    assert step["reason"] == f"drain at {(starts - timedelta(seconds=3600)).isoformat()}"
    assert step["node"] == "node-i-07d1e3f5a9b2c4680"
