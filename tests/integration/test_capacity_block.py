"""A Capacity Block's expiration warning on the local control plane: the events worker reads the
block's reservation and instances (botocore Stubber, in EC2's documented shapes: moto knows no
capacity reservations), queues one drain per instance on the (moto) work queue, and each drain,
delivered as its own message, empties its node before EC2 starts terminating the block."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from botocore.stub import Stubber
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.capacity_blocks import CapacityBlocks
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainService
from spot_rebalancer.tagging import LaunchCompleter, LifecycleTagger
from spot_rebalancer.telemetry import MetricsRecorder
from spot_rebalancer.work import EventsWorker, act_on_batch, read_message
from tests.ec2 import capacity_block_answers, capacity_block_responses, launch_instance
from tests.events_function import delayed_messages, events_function
from tests.kube.workloads import deployment, pods, running, wait_for

SAMPLE = Path(__file__).parents[1] / "events" / "capacity-block-expiration-warning.json"
REGION = "eu-west-1"


def test_a_capacity_block_warning_drains_every_node_of_the_block_and_no_other(api, kube, namespace,
                                                                              nodes):
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        in_block = [launch_instance(ec2) for _ in range(2)]
        outside = launch_instance(ec2)
        block_nodes = [nodes(lifecycle="on-demand", instance_id=i) for i in in_block]
        deployment(api, namespace, "web", replicas=3)
        wait_for(lambda: len(running(pods(api, namespace, "web"))) == 3, "web on the block's nodes")
        other = nodes(lifecycle="on-demand", instance_id=outside)  # room for the replacements

        now = datetime.now(UTC).replace(microsecond=0)
        ends = now + timedelta(minutes=40)
        raw = json.loads(SAMPLE.read_text())
        raw["time"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        raw["detail"]["end-date"] = ends.strftime("%Y-%m-%dT%H:%M:%SZ")
        sqs = boto3.client("sqs", region_name=REGION)
        queue = sqs.create_queue(QueueName="work")["QueueUrl"]
        settings = Settings(cluster_name="test", drain_timeout_seconds=60, work_queue_url=queue)
        metrics = MetricsRecorder()
        autoscaling = AutoScaling(boto3.client("autoscaling", region_name=REGION))
        drains = DrainService(settings, Ec2(ec2), autoscaling, lambda _cluster: kube, metrics)
        reservations = boto3.client("ec2", region_name=REGION)
        worker = EventsWorker(settings, drains, CapacityBlocks(settings, Ec2(reservations)),
                              LifecycleTagger(settings, Ec2(ec2), lambda _c: kube, metrics),
                              LaunchCompleter(settings, Ec2(ec2), autoscaling, lambda _c: kube), sqs, metrics)

        (warning,) = read_message(json.dumps(raw))
        with Stubber(reservations) as stub:
            # The block also holds another cluster's instance, which this deployment leaves alone.
            capacity_block_answers(stub, raw["detail"]["capacity-reservation-id"], ends,
                                   {**dict.fromkeys(in_block, "test"), "i-0f0e0d0c0b0a09080": "dev"},
                                   region=REGION)
            fanned = worker.act(warning, 100)
            stub.assert_no_pending_responses()
        queued = delayed_messages(queue)
        assert [max(0, delay) for _, delay in queued] == [0, 0], "each drain starts at once (moto: <= 0)"
        assert [json.loads(body)["continuation"]["instanceId"] for body, _ in queued] == in_block
        assert [s["action"] for s in fanned["steps"]] == ["continue", "continue"]
        untouched = [not api.get(f"/api/v1/nodes/{n.name}")["spec"].get("unschedulable") for n in block_nodes]
        assert untouched == [True, True], "the fan-out touches no node"

        outcomes = act_on_batch([body for body, _ in queued],
                                lambda work, member: worker.act(work, 100, member))

    assert all(isinstance(o, list) and not o[0]["continued"] for o in outcomes), outcomes
    for node in block_nodes:
        after = api.get(f"/api/v1/nodes/{node.name}")
        assert after["spec"].get("unschedulable") is True
        assert [(t["key"], t["effect"]) for t in after["spec"]["taints"]] == [
            ("spot-rebalancer/capacity-block-expiry", "NoSchedule")]
    assert not api.get(f"/api/v1/nodes/{other.name}")["spec"].get("unschedulable")
    assert metrics.total("PodsEvicted", Source="drain") == 3
    wait_for(lambda: {p["spec"].get("nodeName") for p in running(pods(api, namespace, "web"))}
             == {other.name}, "the replacements on the node outside the block")


def test_the_events_function_as_deployed_fans_a_block_out_and_drains_each_node_once(api, kube, namespace,
                                                                                    nodes, monkeypatch):
    """The Lambda handler built from its environment (powertools idempotency on moto DynamoDB, the
    moto work queue): the warning, then the two messages it queued, then those again (a duplicate
    delivery acts once)."""
    from botocore import xform_name
    from botocore.client import BaseClient

    with events_function(monkeypatch, lambda _cluster: kube) as function:
        ec2 = boto3.client("ec2", region_name=REGION)
        in_block = [launch_instance(ec2) for _ in range(2)]
        block_nodes = [nodes(lifecycle="on-demand", instance_id=i) for i in in_block]
        deployment(api, namespace, "web", replicas=2)
        wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "web on the block's nodes")
        nodes(lifecycle="on-demand")

        now = datetime.now(UTC).replace(microsecond=0)
        ends = now + timedelta(minutes=40)
        raw = json.loads(SAMPLE.read_text())
        raw.update(time=now.strftime("%Y-%m-%dT%H:%M:%SZ"), region=REGION)
        raw["detail"]["end-date"] = ends.strftime("%Y-%m-%dT%H:%M:%SZ")
        # moto knows no capacity reservations: EC2's answers to the fan-out's two calls, as the
        # Stubber tests check their shapes; every other call goes to moto.
        answers = {operation: (response, params) for operation, response, params in capacity_block_responses(
            raw["detail"]["capacity-reservation-id"], ends, dict.fromkeys(in_block, "test"), region=REGION)}
        real_call = BaseClient._make_api_call

        def answered(client, operation, params):
            answer = answers.get(xform_name(operation))
            if answer is not None and answer[1] == params:
                return answer[0]
            return real_call(client, operation, params)

        monkeypatch.setattr(BaseClient, "_make_api_call", answered)
        assert function.invoke([json.dumps(raw)]) == {"batchItemFailures": []}
        drains = function.queued()
        assert sorted(json.loads(body)["continuation"]["instanceId"] for body in drains) == sorted(in_block)
        assert function.invoke(drains) == {"batchItemFailures": []}
        assert function.invoke(drains) == {"batchItemFailures": []}  # duplicates: read, not redone
        assert function.queued() == [], "no drain continued"

    for node in block_nodes:
        taints = api.get(f"/api/v1/nodes/{node.name}")["spec"]["taints"]
        assert [t["key"] for t in taints] == ["spot-rebalancer/capacity-block-expiry"]
    on_block = [p for p in pods(api, namespace, "web") if p["spec"].get("nodeName") in
                {n.name for n in block_nodes} and not p["metadata"].get("deletionTimestamp")]
    assert on_block == []
