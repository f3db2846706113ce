"""A rebalance recommendation's action, recorded on the node, and undone after the TTL on the real
apiserver: our taint and cordon go, what the user had set stays."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainService
from spot_rebalancer.drain_policy import ACTION_ANNOTATION, node_revert_patch
from spot_rebalancer.events import parse_event
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import launch_instance
from tests.kube.workloads import deployment, pods, running, wait_for

SAMPLE = Path(__file__).parents[1] / "events" / "rebalance-recommendation.json"
REGION = "eu-west-1"
INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}\b")
TTL_SECONDS = 1800
USER_TAINT = {"key": "team", "value": "batch", "effect": "NoSchedule"}
OUR_TAINT = "spot-rebalancer/rebalance-recommendation"


# Each policy's effect on the pods is in test_interruption_events; here, what is undone.
@pytest.mark.parametrize(("policy", "user_cordoned"), [("taint", False), ("cordon", False), ("cordon", True)])
def test_a_recommendation_is_recorded_and_undone_after_the_ttl(api, kube, namespace, nodes, policy,
                                                               user_cordoned):
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        instance = launch_instance(ec2)
        node = nodes(lifecycle="spot", instance_id=instance)
        deployment(api, namespace, "web")
        wait_for(lambda: running(pods(api, namespace, "web")), "web on the node")
        # The user's own taint (a NoSchedule taint leaves running pods alone).
        api.patch(f"/api/v1/nodes/{node.name}", {"spec": {"taints": [USER_TAINT]}})
        if user_cordoned:
            api.patch(f"/api/v1/nodes/{node.name}", {"spec": {"unschedulable": True}})
        raw = json.loads(INSTANCE_ID.sub(instance, SAMPLE.read_text()))
        raw["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        handler = DrainService(
            Settings(cluster_name="test", recommendation_default=policy, drain_timeout_seconds=20,
                     recommendation_ttl_seconds=TTL_SECONDS),
            Ec2(ec2), AutoScaling(boto3.client("autoscaling", region_name=REGION)),
            lambda _cluster: kube, MetricsRecorder())
        handler.handle(parse_event(raw)[0], budget_seconds=100)

    acted = api.get(f"/api/v1/nodes/{node.name}")
    effect = "PreferNoSchedule" if policy == "taint" else "NoSchedule"
    assert acted["spec"]["taints"] == [USER_TAINT, {"key": OUR_TAINT, "effect": effect}]
    assert bool(acted["spec"].get("unschedulable")) is (policy != "taint" or user_cordoned)
    record = json.loads(acted["metadata"]["annotations"][ACTION_ANNOTATION])
    assert record["reason"] == "rebalance-recommendation"
    assert record["taints"] == [OUR_TAINT]
    assert (record["cordoned"], record["wasCordoned"]) == (policy != "taint", user_cordoned)
    assert [p for p in running(pods(api, namespace, "web")) if p["spec"]["nodeName"] == node.name]

    recorded = kube.get_node(node.name)
    acted_at = datetime.fromisoformat(record["at"])
    ttl = Settings(recommendation_ttl_seconds=TTL_SECONDS)
    assert node_revert_patch(recorded, acted_at + timedelta(seconds=TTL_SECONDS - 1), ttl) is None
    revert = node_revert_patch(recorded, acted_at + timedelta(seconds=TTL_SECONDS), ttl)
    kube.patch_node(node.name, revert.body)

    reverted = api.get(f"/api/v1/nodes/{node.name}")
    assert reverted["spec"]["taints"] == [USER_TAINT]
    assert bool(reverted["spec"].get("unschedulable")) is user_cordoned
    assert ACTION_ANNOTATION not in reverted["metadata"].get("annotations", {})
