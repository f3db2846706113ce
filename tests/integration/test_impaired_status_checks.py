"""Impaired status checks (instanceStatusChecks) on the local control plane: the schedule
function's tick finds the cluster's impaired instance (DescribeInstanceStatus through botocore's
Stubber: moto reports every instance ok), queues one drain on the (moto) work queue, and the events
worker drains its node as degraded hardware. Later ticks never queue it again: not while its record
in the (moto) state table holds, and never once a forced drain has marked the node."""

from __future__ import annotations

import json

import boto3
from botocore.stub import Stubber
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.capacity_blocks import CapacityBlocks
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainService
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.state import DrainClaims, HistoryStore
from spot_rebalancer.status_checks import CLAIM_SECONDS, StatusChecks
from spot_rebalancer.tagging import LaunchCompleter, LifecycleTagger
from spot_rebalancer.telemetry import MetricsRecorder
from spot_rebalancer.work import EventsWorker, act_on_batch
from tests.ec2 import launch_instance
from tests.events_function import delayed_messages
from tests.kube.workloads import deployment, pods, running, wait_for
from tests.state_table import create_state_table

REGION = "eu-west-1"


def impaired_answers(stub: Stubber, instance_id: str) -> None:
    """One tick's DescribeInstanceStatus calls: the instance's system check impaired, another
    cluster's instance's own check impaired."""
    def entry(instance: str, instance_status: str, system_status: str) -> dict:
        return {"InstanceId": instance, "AvailabilityZone": f"{REGION}a",
                "InstanceState": {"Code": 16, "Name": "running"},
                "InstanceStatus": {"Status": instance_status}, "SystemStatus": {"Status": system_status}}
    for check, statuses in (("instance", [entry("i-0f0e0d0c0b0a09080", "impaired", "ok")]),
                            ("system", [entry(instance_id, "ok", "impaired")])):
        stub.add_response("describe_instance_status", {"InstanceStatuses": statuses},
                          {"Filters": [{"Name": f"{check}-status.status", "Values": ["impaired"]}]})


def test_an_impaired_instance_is_drained_as_degraded_hardware_once(api, kube, namespace, nodes):
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        impaired = launch_instance(ec2)
        node = nodes(lifecycle="on-demand", instance_id=impaired)
        deployment(api, namespace, "web", replicas=2)
        wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "web on the impaired node")
        healthy = nodes(lifecycle="on-demand", instance_id=launch_instance(ec2))

        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_state_table(dynamodb)
        sqs = boto3.client("sqs", region_name=REGION)
        queue = sqs.create_queue(QueueName="work")["QueueUrl"]
        settings = Settings(cluster_name="test", drain_timeout_seconds=60, state_table="state",
                            work_queue_url=queue, instance_status_checks=True)
        statuses = boto3.client("ec2", region_name=REGION)
        metrics = MetricsRecorder()
        rebalancer = Rebalancer(settings, kube, metrics, HistoryStore(dynamodb, "state"), ec2=Ec2(ec2),
                                status_checks=StatusChecks(settings, Ec2(statuses),
                                                           DrainClaims(dynamodb, "state", CLAIM_SECONDS), sqs,
                                                           REGION))

        def tick() -> list[dict]:
            with Stubber(statuses) as stub:
                impaired_answers(stub, impaired)
                summary = rebalancer.tick().summary()
                stub.assert_no_pending_responses()
            return summary["statusChecks"]

        assert tick() == [{"action": "continue", "node": node.name,
                           "reason": "system status check impaired: drain queued"}]
        ((body, _delay),) = delayed_messages(queue)
        message = json.loads(body)
        assert (message["source"], message["detail"]) == (
            "spot-rebalancer", {"instance-id": impaired, "impaired": ["system"]})
        assert message["account"] == "123456789012"
        assert not api.get(f"/api/v1/nodes/{node.name}")["spec"].get("unschedulable"), (
            "the schedule function only queues")

        [again] = tick()
        assert again["action"] == "ignore" and "queued less than 24 h ago" in again["reason"]
        assert delayed_messages(queue) == []

        autoscaling = AutoScaling(boto3.client("autoscaling", region_name=REGION))
        drains = DrainService(settings, Ec2(ec2), autoscaling, lambda _cluster: kube, metrics)
        worker = EventsWorker(settings, drains, CapacityBlocks(settings, Ec2(ec2)),
                              LifecycleTagger(settings, Ec2(ec2), lambda _c: kube, metrics),
                              LaunchCompleter(settings, Ec2(ec2), autoscaling, lambda _c: kube), sqs, metrics)
        [outcome] = act_on_batch([body], lambda work, member: worker.act(work, 100, member))
        assert isinstance(outcome, list) and not outcome[0]["continued"], outcome

        after = api.get(f"/api/v1/nodes/{node.name}")
        assert after["spec"].get("unschedulable") is True
        assert [(t["key"], t["effect"]) for t in after["spec"]["taints"]] == [
            ("spot-rebalancer/degraded-hardware", "NoSchedule")]
        assert metrics.total("PodsEvicted", Source="drain") == 2
        wait_for(lambda: {p["spec"].get("nodeName") for p in running(pods(api, namespace, "web"))}
                 == {healthy.name}, "the replacements on the healthy node")

        # Its record expired, still impaired: the node a forced drain marked is left alone.
        dynamodb.delete_item(TableName="state", Key={"id": {"S": f"impaired#test#{impaired}"}})
        assert tick() == []
        assert delayed_messages(queue) == []


class _Answered:
    status_code = 200  # what botocore reads of a response a before-call handler gives


def test_the_schedule_function_as_deployed_queues_the_drain_within_its_grants(nodes, kube, monkeypatch):
    """The handler built from its environment with instanceStatusChecks on: one drain queued, and
    every state-table call on an item its role may touch (history#test, impaired#test#...)."""
    from botocore.client import BaseClient

    from infra.construct import HISTORY_CALLS
    from spot_rebalancer import eks_auth
    from spot_rebalancer.handlers import schedule

    touched: set[tuple[str, str]] = set()
    real_call = BaseClient._make_api_call

    def recorded(client, operation, params):
        if client.meta.service_model.service_name == "dynamodb" and operation != "CreateTable":
            touched.add((f"dynamodb:{operation}", (params.get("Key") or params.get("Item"))["id"]["S"]))
        return real_call(client, operation, params)

    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        impaired = launch_instance(ec2)
        node = nodes(lifecycle="on-demand", instance_id=impaired)
        create_state_table(boto3.client("dynamodb", region_name=REGION))
        queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="work")["QueueUrl"]
        for name, value in {"CLUSTER_NAME": "test", "STATE_TABLE": "state", "AWS_DEFAULT_REGION": REGION,
                            "WORK_QUEUE_URL": queue, "INSTANCE_STATUS_CHECKS": "true"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(eks_auth, "client_for_cluster", lambda cluster: kube)
        made: dict[str, object] = {}
        real_client = boto3.client

        def client(service: str, *args, **kwargs):
            made.setdefault(service, real_client(service, *args, **kwargs))
            return made[service]

        schedule._runtime.cache_clear()
        try:
            with monkeypatch.context() as building:
                building.setattr(boto3, "client", client)
                schedule._runtime()
            # moto has no impaired statuses: EC2's answer for this one call (its form-encoded filter
            # names the check), everything else moto's.
            made["ec2"].meta.events.register(
                "before-call.ec2.DescribeInstanceStatus",
                lambda params, **_: (_Answered(), {"InstanceStatuses": [
                    {"InstanceId": impaired, "InstanceStatus": {"Status": "ok"},
                     "SystemStatus": {"Status": "impaired"}}]} if "system-status" in str(params["body"])
                    else {"InstanceStatuses": []}))
            monkeypatch.setattr(BaseClient, "_make_api_call", recorded)
            summary = schedule.handler({}, None)
        finally:
            schedule._runtime.cache_clear()
        queued = delayed_messages(queue)
    assert summary["statusChecks"] == [{"action": "continue", "node": node.name,
                                        "reason": "system status check impaired: drain queued"}]
    assert [json.loads(body)["detail"]["instance-id"] for body, _ in queued] == [impaired]
    assert {call for call, _ in touched} <= set(HISTORY_CALLS)
    assert {key for _, key in touched} == {"history#test", f"impaired#test#{impaired}"}
