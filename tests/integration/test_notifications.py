"""Notices on the local control plane and moto (SNS to a subscribed SQS queue, as AWS Chatbot or a
mailbox would receive them): a drained node and a cycle that moved pods are each told once, with
what they did; a topic that cannot be published to fails neither."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.capacity_blocks import CapacityBlocks
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainService
from spot_rebalancer.notifier import Notifier
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.state import HistoryStore
from spot_rebalancer.tagging import LaunchCompleter, LifecycleTagger
from spot_rebalancer.telemetry import MetricsRecorder
from spot_rebalancer.work import EventsWorker, read_message
from tests.ec2 import launch_instance
from tests.events_function import delayed_messages
from tests.kube.workloads import deployment, pods, preferred_affinity, running, wait_for
from tests.sns_inbox import REGION, Inbox
from tests.state_table import create_state_table

EVENTS = Path(__file__).parents[1] / "events"
INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}\b")
CLUSTER = "test"
CAPACITY = "eks.amazonaws.com/capacityType"


@pytest.fixture
def aws():
    with mock_aws():
        yield


def spot_warning(instance_id: str) -> str:
    raw = json.loads(INSTANCE_ID.sub(instance_id, (EVENTS / "spot-interruption-terminate.json").read_text()))
    raw["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(raw)


def worker_for(kube, notifier: Notifier, metrics: MetricsRecorder, queue_url: str = "") -> EventsWorker:
    ec2 = Ec2(boto3.client("ec2", region_name=REGION))
    settings = Settings(cluster_name=CLUSTER, drain_timeout_seconds=60, work_queue_url=queue_url)
    drains = DrainService(settings, ec2, AutoScaling(boto3.client("autoscaling", region_name=REGION)),
                          lambda _cluster: kube, metrics)
    return EventsWorker(settings, drains, CapacityBlocks(settings, ec2),
                        LifecycleTagger(settings, ec2, lambda _c: kube, metrics),
                        LaunchCompleter(settings, ec2, drains.autoscaling, lambda _c: kube),
                        boto3.client("sqs", region_name=REGION), metrics, notifier)


@pytest.fixture
def spot_node(aws, api, namespace, nodes) -> tuple[str, str]:
    """(instance, node name): a spot node running two web pods, with on-demand room beside it."""
    instance = launch_instance(boto3.client("ec2", region_name=REGION))
    node = nodes(lifecycle="spot", instance_id=instance)
    deployment(api, namespace, "web", replicas=2)
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "web running")
    nodes(lifecycle="on-demand")
    return instance, node.name


def test_a_drained_node_is_told_once_with_its_node_instance_reason_and_pods(kube, spot_node):
    instance, node = spot_node
    inbox, metrics = Inbox.create(), MetricsRecorder()
    worker = worker_for(kube, Notifier(inbox.sns, inbox.topic_arn, metrics, CLUSTER), metrics)

    (work,) = read_message(spot_warning(instance))
    done = worker.act(work, 100)

    assert not done["continued"]
    ((subject, notice),) = inbox.received()
    assert subject == f"{CLUSTER}: Drained {node}"
    assert notice["metadata"]["additionalContext"] == {
        "cluster": CLUSTER, "node": node, "instanceId": instance, "reason": "spot-interruption",
        "eventKind": "spot-interruption", "deadline": "drained", "podsEvicted": "2", "podsBlocked": "0",
        "podsDeleted": "0"}
    assert notice["metadata"]["relatedResources"] == [instance, node]


def test_a_drain_continued_through_the_queue_is_told_once_with_every_pod_it_evicted(
        cluster, api, kube, namespace, spot_node, monkeypatch):
    instance, node = spot_node
    # The pods take longer to stop than the first invocation has: the drain goes on in the next.
    monkeypatch.setattr(cluster.nodes, "deletion_delay", 6)
    inbox, metrics = Inbox.create(), MetricsRecorder()
    queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="work")["QueueUrl"]
    worker = worker_for(kube, Notifier(inbox.sns, inbox.topic_arn, metrics, CLUSTER), metrics, queue)

    (work,) = read_message(spot_warning(instance))
    assert worker.act(work, 13)["continued"]
    assert inbox.received() == [], "not told before it ends"
    ((message, _delay),) = delayed_messages(queue)
    assert json.loads(message)["continuation"]["evicted"] == 2
    (next_hop,) = read_message(message)
    assert not worker.act(next_hop, 100)["continued"]

    ((_subject, notice),) = inbox.received()
    context = notice["metadata"]["additionalContext"]
    assert (context["node"], context["deadline"], context["podsEvicted"]) == (node, "drained", "2")


def test_a_topic_that_refuses_the_notice_fails_no_drain(api, kube, namespace, spot_node):
    instance, node = spot_node
    inbox, metrics = Inbox.create(), MetricsRecorder()
    gone = inbox.topic_arn.replace("platform-notices", "deleted-topic")
    worker = worker_for(kube, Notifier(inbox.sns, gone, metrics, CLUSTER), metrics)

    (work,) = read_message(spot_warning(instance))
    worker.act(work, 100)

    assert metrics.total("NotificationsFailed", ClusterName=CLUSTER) == 1
    assert metrics.total("PodsEvicted", Source="drain") == 2
    assert not [p for p in pods(api, namespace, "web") if p["spec"].get("nodeName") == node
                and not p["metadata"].get("deletionTimestamp")]


def test_a_cycle_that_moved_pods_is_told_once_and_one_that_moved_none_is_not(aws, api, kube, namespace,
                                                                             nodes):
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    create_state_table(dynamodb, "state")
    on_demand = nodes(lifecycle="on-demand", cpu="4")
    deployment(api, namespace, "web", replicas=2, cpu="200m", affinity=preferred_affinity(CAPACITY, ["SPOT"]))
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "web on on-demand")
    nodes(lifecycle="spot", cpu="4")
    inbox, metrics = Inbox.create(), MetricsRecorder()
    settings = Settings(cluster_name=CLUSTER, state_table="state", min_pod_age_seconds=0,
                        max_evictions_per_workload="100%")
    rebalancer = Rebalancer(settings, kube, metrics, HistoryStore(dynamodb, "state"),
                            notifier=Notifier(inbox.sns, inbox.topic_arn, metrics, CLUSTER))

    moved = rebalancer.tick()
    def moved_to_spot() -> bool:
        web = running(pods(api, namespace, "web"))
        return len(web) == 2 and all(p["spec"].get("nodeName") != on_demand.name for p in web)

    wait_for(moved_to_spot, "web moved to spot")
    again = rebalancer.tick()

    assert len(moved.cycle.evicted) == 2 and not again.cycle.evicted
    ((subject, notice),) = inbox.received()
    assert subject == f"{CLUSTER}: 2 pod(s) moved back to preferred capacity"
    context = notice["metadata"]["additionalContext"]
    assert (context["podsMoved"], context["podsRefused"], context["waves"]) == ("2", "0", "1")
    assert context["nodesEmptied"] == str(len(moved.cycle.emptied))
    assert "*Pods moved* 2 in 1 wave(s)" in notice["content"]["description"]
