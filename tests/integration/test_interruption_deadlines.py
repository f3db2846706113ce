"""Deadlines on the local control plane and moto EC2: a late spot warning shortens the pods' grace
periods so they are gone before the instance is; an AWS Health scheduled change is drained only
once its lead time has come; a `pending` state change is ignored quietly."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.capacity_blocks import CapacityBlocks
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainService
from spot_rebalancer.drain_policy import GRACE_SAFETY_MARGIN_SECONDS
from spot_rebalancer.events import parse_event
from spot_rebalancer.results import DrainEnd
from spot_rebalancer.tagging import LaunchCompleter, LifecycleTagger
from spot_rebalancer.telemetry import MetricsRecorder
from spot_rebalancer.work import EventsWorker, read_message
from tests.ec2 import launched_ago
from tests.events_function import delayed_messages
from tests.kube.workloads import daemonset, deployment, pods, running, wait_for

EVENTS = Path(__file__).parents[1] / "events"
REGION = "eu-west-1"
INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}\b")
POD_GRACE_SECONDS = 90
WARNING_AGE_SECONDS = 95  # the warning reaches us with 25 s of its two minutes left


def event_for(sample: str, instance_id: str, at: datetime) -> dict:
    raw = json.loads(INSTANCE_ID.sub(instance_id, (EVENTS / sample).read_text()))
    raw["time"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return raw


@pytest.fixture
def ec2() -> Iterator[object]:
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


@pytest.fixture
def instance(ec2) -> str:
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="m6g.large",
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "eks:cluster-name", "Value": "test"}]}],
    )["Instances"][0]["InstanceId"]
    launched_ago(instance_id, 3600)  # running before the (late) events the tests send
    return instance_id


def handler_for(ec2, kube, metrics: MetricsRecorder) -> DrainService:
    settings = Settings(cluster_name="test", drain_timeout_seconds=60, health_lead_time_seconds=3600)
    return DrainService(settings, Ec2(ec2), AutoScaling(boto3.client("autoscaling", region_name=REGION)),
                        lambda _cluster: kube, metrics)


def pods_on(api, namespace: str, node: str) -> list[dict]:
    return [p for p in pods(api, namespace) if p["spec"].get("nodeName") == node]


class GraceWatch(threading.Thread):
    """The deletionGracePeriodSeconds each pod seen terminating on the node was evicted with."""

    def __init__(self, api, namespace: str, node: str) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace, self.node = api, namespace, node
        self.seen: dict[str, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            for pod in pods_on(self.api, self.namespace, self.node):
                if pod["metadata"].get("deletionTimestamp"):
                    # The first seen: the simulator's final deletion sets it to 0.
                    meta = pod["metadata"]
                    self.seen.setdefault(meta["name"], meta["deletionGracePeriodSeconds"])


def test_a_late_spot_warning_caps_grace_periods_so_pods_are_gone_before_the_instance(
        api, kube, cluster, namespace, nodes, ec2, instance, monkeypatch):
    node = nodes(lifecycle="spot", instance_id=instance)
    deployment(api, namespace, "web", replicas=3, grace=POD_GRACE_SECONDS)
    daemonset(api, namespace, "agent")
    wait_for(lambda: len(running(pods(api, namespace))) == 4, "web and the agent running")
    nodes(lifecycle="on-demand")
    # Pods take 2 s to stop after their eviction: long enough to read their grace periods.
    monkeypatch.setattr(cluster.nodes, "deletion_delay", 2)
    warned_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=WARNING_AGE_SECONDS)
    (event,) = parse_event(event_for("spot-interruption-terminate.json", instance, warned_at))
    watch = GraceWatch(api, namespace, node.name)
    watch.start()
    metrics = MetricsRecorder()
    try:
        result = handler_for(ec2, kube, metrics).handle(event, budget_seconds=100)
    finally:
        watch.done.set()
        watch.join()
    finished = datetime.now(UTC)

    assert finished < event.deadline, "the drain outlasted the instance"
    left = (event.deadline - warned_at).total_seconds() - WARNING_AGE_SECONDS
    assert len(watch.seen) == 3, watch.seen
    for grace in watch.seen.values():
        assert left - GRACE_SAFETY_MARGIN_SECONDS - 3 <= grace <= left - GRACE_SAFETY_MARGIN_SECONDS
    after = api.get(f"/api/v1/nodes/{node.name}")
    assert after["spec"]["unschedulable"] is True
    assert {"key": "spot-rebalancer/spot-interruption", "effect": "NoSchedule"} in after["spec"]["taints"]
    assert [p["metadata"]["labels"]["app"] for p in pods_on(api, namespace, node.name)] == ["agent"]
    assert [s.pod.split("-")[0] for s in result.steps if s.action == "skip"] == ["agent"]
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == 3, "replacements elsewhere")
    assert metrics.total("PodsEvicted") == 3
    latency_ms = metrics.total("EventToCordonLatency")
    assert WARNING_AGE_SECONDS * 1000 <= latency_ms < (WARNING_AGE_SECONDS + 10) * 1000


def health_retirement(instance_id: str, starts_in: timedelta) -> dict:
    raw = event_for("health-instance-retirement.json", instance_id, datetime.now(UTC))
    raw["detail"]["startTime"] = format_datetime(datetime.now(UTC) + starts_in, usegmt=True)
    return raw


@pytest.mark.parametrize(("starts_in", "drains"), [
    (timedelta(hours=3), False),  # the drain starts in two hours: continue then, touch nothing now
    (timedelta(minutes=30), True),  # within the hour's lead time: drain now
], ids=["before the lead time", "within the lead time"])
def test_a_scheduled_retirement_drains_once_its_lead_time_has_come(
        api, kube, namespace, nodes, ec2, instance, starts_in, drains):
    node = nodes(lifecycle="on-demand", instance_id=instance)
    deployment(api, namespace, "web")
    wait_for(lambda: running(pods(api, namespace, "web")), "web running")
    nodes(lifecycle="on-demand")
    (event,) = parse_event(health_retirement(instance, starts_in))

    result = handler_for(ec2, kube, MetricsRecorder()).handle(event, budget_seconds=100)

    after = api.get(f"/api/v1/nodes/{node.name}")
    assert bool(after["spec"].get("unschedulable")) is drains
    assert bool(pods_on(api, namespace, node.name)) is not drains
    if drains:
        assert result.continue_at is None
    else:
        expected = datetime.now(UTC) + starts_in - timedelta(hours=1)
        assert result.continue_at is not None
        assert abs(result.continue_at - expected) < timedelta(minutes=1)
        assert not after["spec"].get("taints")


def test_a_retirement_announced_days_ahead_drains_with_its_whole_timeout_when_its_time_comes(
        api, kube, cluster, namespace, nodes, ec2, instance, monkeypatch):
    """Reproduced with the worker and simulated time: the hops waiting for the drain carried the
    first invocation's time, so at the drain time its deadline was ten days past, every pod got
    1 s of grace and the drain ended as a missed deadline."""
    node = nodes(lifecycle="on-demand", instance_id=instance)
    deployment(api, namespace, "web", replicas=2, grace=20)
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "web running")
    nodes(lifecycle="on-demand")
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="work")["QueueUrl"]
    settings = Settings(cluster_name="test", drain_timeout_seconds=60, health_lead_time_seconds=3600,
                        work_queue_url=queue)
    clock = [datetime.now(UTC)]
    metrics = MetricsRecorder()
    drains = DrainService(settings, Ec2(ec2), AutoScaling(boto3.client("autoscaling", region_name=REGION)),
                          lambda _cluster: kube, metrics, now=lambda: clock[0])
    worker = EventsWorker(settings, drains, CapacityBlocks(settings, Ec2(ec2)),
                          LifecycleTagger(settings, Ec2(ec2), lambda _c: kube, metrics),
                          LaunchCompleter(settings, Ec2(ec2), drains.autoscaling, lambda _c: kube), sqs,
                          metrics)
    (work,) = read_message(json.dumps(health_retirement(instance, timedelta(days=10))))

    assert worker.act(work, 100)["continued"]
    ((message, _delay),) = delayed_messages(queue)
    assert "startedAt" not in json.loads(message)["continuation"], "no drain has begun"
    assert not api.get(f"/api/v1/nodes/{node.name}")["spec"].get("unschedulable")

    clock[0] = work.event.deadline - timedelta(minutes=30)  # the drain's time has come
    monkeypatch.setattr(cluster.nodes, "deletion_delay", 2)
    watch = GraceWatch(api, namespace, node.name)
    watch.start()
    try:
        (hop,) = read_message(message)
        done = worker.act(hop, 100)
    finally:
        watch.done.set()
        watch.join()

    assert not done["continued"]
    assert sorted(watch.seen.values()) == [20, 20], "the pods' own grace: the deadline is a minute off"
    assert metrics.total("DeadlineMissed") == 0
    assert not pods_on(api, namespace, node.name)


def test_a_pending_instance_is_ignored_quietly(api, kube, nodes, ec2, instance):
    node = nodes(lifecycle="spot", instance_id=instance)
    raw = event_for("state-change-stopping.json", instance, datetime.now(UTC))
    raw["detail"]["state"] = "pending"
    metrics = MetricsRecorder()

    (result,) = [handler_for(ec2, kube, metrics).handle(e) for e in parse_event(raw)]

    assert [s.action for s in result.steps] == ["ignore"]
    assert metrics.total("EventsIgnored") == 1
    after = api.get(f"/api/v1/nodes/{node.name}")
    assert not after["spec"].get("unschedulable") and not after["spec"].get("taints")


@pytest.mark.parametrize(("sample", "end", "missed"), [
    # Hibernation begins as its warning arrives: what could go was evicted, the rest hibernates
    # with the instance and resumes with it.
    ("spot-interruption-hibernate.json", DrainEnd.NO_NOTICE, 0),
    # The same pods under a terminate warning whose two minutes are over: a real miss.
    ("spot-interruption-terminate.json", DrainEnd.DEADLINE_MISSED, 1),
], ids=["hibernation", "terminate warning too late"])
def test_a_hibernation_is_drained_at_once_and_never_counts_as_a_missed_deadline(
        api, kube, cluster, namespace, nodes, ec2, instance, monkeypatch, sample, end, missed):
    node = nodes(lifecycle="spot", instance_id=instance)
    deployment(api, namespace, "web", replicas=2, grace=POD_GRACE_SECONDS)
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "web running")
    nodes(lifecycle="on-demand")
    # The pods take a while to stop: still on the node when the drain ends.
    monkeypatch.setattr(cluster.nodes, "deletion_delay", 5)
    warned_at = datetime.now(UTC).replace(microsecond=0)
    if end is DrainEnd.DEADLINE_MISSED:
        warned_at -= timedelta(seconds=125)
    (event,) = parse_event(event_for(sample, instance, warned_at))
    metrics = MetricsRecorder()

    result = handler_for(ec2, kube, metrics).handle(event, budget_seconds=100)

    assert result.drain is not None
    assert (result.drain.end, result.drain.evicted, result.drain.blocked) == (end, 2, 0)
    assert (result.drain.node, result.drain.instance_id) == (node.name, instance)
    assert metrics.total("DeadlineMissed") == missed
    assert metrics.total("PodsEvicted", Source="drain") == 2
    assert result.continue_at is None
    assert api.get(f"/api/v1/nodes/{node.name}")["spec"]["unschedulable"] is True
