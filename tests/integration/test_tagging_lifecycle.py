"""Lifecycle tags and labels against the real control plane and moto EC2: instances tagged when
they run, their nodes labelled once they join, wrong labels corrected by the sweep, EKS capacity
labels used without asking EC2, and EC2 throttling retried."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.aws import Ec2, boto_config
from spot_rebalancer.config import Settings
from spot_rebalancer.events import parse_event
from spot_rebalancer.tagging import LifecycleTagger
from spot_rebalancer.telemetry import MetricsRecorder
from tests.unit.test_aws import REGION, launch, throttle

CLUSTER = "test"
# How EKS managed node groups and Karpenter tag their instances: named, and owned by the cluster.
OWNED = {"eks:cluster-name": CLUSTER, f"kubernetes.io/cluster/{CLUSTER}": "owned"}
LABEL = "node.kubernetes.io/lifecycle"
EVENTS = Path(__file__).parents[1] / "events"
SETTINGS = Settings(cluster_name=CLUSTER)


@pytest.fixture
def ec2_client():
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION, config=boto_config())


@pytest.fixture
def describes(ec2_client) -> list[str]:
    """Every DescribeInstances call the product makes."""
    calls: list[str] = []
    ec2_client.meta.events.register("before-call.ec2.DescribeInstances",
                                    lambda **_: calls.append("DescribeInstances"))
    return calls


@pytest.fixture
def tagger(ec2_client, kube) -> LifecycleTagger:
    return LifecycleTagger(SETTINGS, Ec2(ec2_client), lambda cluster: kube, MetricsRecorder())


def running_event(instance_id: str):
    raw = json.loads((EVENTS / "state-change-running.json").read_text())
    raw["detail"]["instance-id"] = instance_id
    raw["resources"] = [f"arn:aws:ec2:{REGION}:123456789012:instance/{instance_id}"]
    (event,) = parse_event(raw)
    return event


def tags(ec2_client, instance_id: str) -> dict[str, str]:
    reservation = ec2_client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    return {t["Key"]: t["Value"] for t in reservation["Instances"][0].get("Tags", [])}


def labels(api, name: str) -> dict[str, str]:
    return api.get(f"/api/v1/nodes/{name}")["metadata"]["labels"]


def test_running_instances_are_tagged_then_their_nodes_labelled_once_they_join(api, nodes, tagger,
                                                                             ec2_client):
    owned = OWNED
    spot = launch(ec2_client, spot=True, tags=owned)
    on_demand = launch(ec2_client, spot=False, tags=owned)

    for instance_id, lifecycle in ((spot, "spot"), (on_demand, "on-demand")):
        result = tagger.handle(running_event(instance_id))
        assert [s.action for s in result.steps] == ["tag", "continue"]
        assert result.continue_at is not None, "the node has not joined: try again later"
        assert tags(ec2_client, instance_id)["Lifecycle"] == lifecycle

    joined = {instance_id: nodes(lifecycle=lifecycle, instance_id=instance_id, capacity_label=False)
              for instance_id, lifecycle in ((spot, "spot"), (on_demand, "on-demand"))}
    for instance_id, lifecycle in ((spot, "spot"), (on_demand, "on-demand")):
        result = tagger.handle(running_event(instance_id), attempt=1)
        assert [(s.action, s.node, s.outcome) for s in result.steps] == [
            ("label", joined[instance_id].name, "added")], "already tagged: only the label is new"
        assert result.continue_at is None
        assert labels(api, joined[instance_id].name)[LABEL] == lifecycle


def test_the_sweep_corrects_a_wrong_label_and_leaves_right_ones(api, kube, nodes, tagger, ec2_client):
    owned = {**OWNED, "Lifecycle": "on-demand"}
    instance_id = launch(ec2_client, spot=False, tags=owned)
    wrong = nodes(lifecycle="on-demand", instance_id=instance_id, capacity_label=False,
                  labels={LABEL: "spot"})
    right = nodes(lifecycle="spot", labels={LABEL: "spot"})

    steps = tagger.reconcile(kube, CLUSTER, kube.list_nodes())
    assert [(s.action, s.node, s.reason, s.outcome) for s in steps] == [
        ("label", wrong.name, f"{LABEL}=on-demand", "corrected")]
    assert labels(api, wrong.name)[LABEL] == "on-demand"
    assert labels(api, right.name)[LABEL] == "spot"
    assert tagger.reconcile(kube, CLUSTER, kube.list_nodes()) == [], "nothing left to do"


def test_nodes_with_capacity_labels_are_labelled_without_asking_ec2(api, kube, nodes, tagger, describes):
    eks = nodes(lifecycle="spot")  # eks.amazonaws.com/capacityType=SPOT
    karpenter = nodes(lifecycle="on-demand", capacity_label=False,
                      labels={"karpenter.sh/capacity-type": "on-demand"})

    steps = tagger.reconcile(kube, CLUSTER, kube.list_nodes())
    assert sorted((s.node, s.reason) for s in steps) == sorted(
        [(eks.name, f"{LABEL}=spot"), (karpenter.name, f"{LABEL}=on-demand")])
    assert describes == []
    assert labels(api, eks.name)[LABEL] == "spot"
    assert labels(api, karpenter.name)[LABEL] == "on-demand"


def test_a_throttled_describe_is_retried_and_the_node_still_labelled(api, kube, nodes, tagger, ec2_client,
                                                                    describes):
    instance_id = launch(ec2_client, spot=True, tags=OWNED)
    node = nodes(lifecycle="spot", instance_id=instance_id, capacity_label=False)
    sent = throttle(ec2_client, "DescribeInstances", times=2)

    steps = tagger.reconcile(kube, CLUSTER, kube.list_nodes())
    assert sent == [429, 429, "passed"]
    assert describes == ["DescribeInstances"], "one call, retried inside botocore"
    assert [(s.action, s.node) for s in steps] == [("tag", ""), ("label", node.name)]
    assert labels(api, node.name)[LABEL] == "spot"
    assert tags(ec2_client, instance_id)["Lifecycle"] == "spot"


@pytest.mark.parametrize("ownership", [
    {"eks:cluster-name": CLUSTER}, {f"kubernetes.io/cluster/{CLUSTER}": "shared"}, {},
], ids=["named, not owned", "shared", "untagged"])
def test_an_instance_the_cluster_does_not_own_is_labelled_but_never_tagged(api, kube, nodes, tagger,
                                                                             ec2_client, ownership):
    """IAM lets the product tag only instances tagged kubernetes.io/cluster/<name>=owned; the code asks
    the same rule first, so a shared or untagged node of the cluster is labelled, and no CreateTags is
    sent to be refused (it failed every schedule run, and its running event went to the DLQ)."""
    instance_id = launch(ec2_client, spot=True, tags=ownership)
    node = nodes(lifecycle="spot", instance_id=instance_id, capacity_label=False)
    sent = []
    ec2_client.meta.events.register("before-call.ec2.CreateTags", lambda **_: sent.append("CreateTags"))

    skipped = ("skip", f"{instance_id}: tag Lifecycle: not owned by {CLUSTER}")
    for steps in (tagger.reconcile(kube, CLUSTER, kube.list_nodes()),
                  tagger.handle(running_event(instance_id)).steps):
        assert skipped in {(s.action, s.reason) for s in steps}
    assert sent == []
    assert "Lifecycle" not in tags(ec2_client, instance_id)
    assert labels(api, node.name)[LABEL] == "spot"

