"""The product works with exactly the shipped ClusterRole, on the real apiserver with RBAC on."""

from __future__ import annotations

import json
import logging
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainService
from spot_rebalancer.events import parse_event
from spot_rebalancer.kube import KubeClient
from spot_rebalancer.label_selector import parse_selector
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.tagging import LaunchCompleter, LifecycleTagger
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import launch_instance, launched_ago
from tests.events_function import sample_event
from tests.kube.cluster import PRODUCT_USER
from tests.kube.workloads import (
    bare_pod,
    deployment,
    pdb,
    pods,
    preferred_affinity,
    running,
    statefulset,
    wait_for,
)

REPO = Path(__file__).parents[2]
MANIFEST = REPO / "infra" / "rbac" / "spot-rebalancer.yaml"
SAMPLE = REPO / "tests" / "events" / "spot-interruption-terminate.json"


@pytest.fixture(scope="module")
def product_kube(cluster) -> KubeClient:
    subprocess.run([str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig),
                    "apply", "-f", str(MANIFEST)], check=True, capture_output=True)
    kubeconfig = cluster.kubeconfig_for(PRODUCT_USER.token, PRODUCT_USER.name)
    return KubeClient.from_kubeconfig(str(kubeconfig))


def test_a_spot_interruption_drains_the_node_with_only_the_shipped_role(api, product_kube, namespace, nodes,
                                                                       caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        instance = launch_instance(ec2)
        doomed = nodes(lifecycle="spot", instance_id=instance)
        deployment(api, namespace, "web", replicas=2)
        wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "2 web pods")
        nodes(lifecycle="on-demand")  # room for the replacements
        pdb(api, namespace, "web", "web", max_unavailable=1)

        raw = json.loads(SAMPLE.read_text())
        raw["detail"]["instance-id"] = instance
        raw["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        metrics = MetricsRecorder()
        handler = DrainService(Settings(cluster_name="test"), Ec2(ec2),
                                      AutoScaling(boto3.client("autoscaling", region_name="eu-west-1")),
                                      lambda _: product_kube, metrics)
        result = handler.handle(parse_event(raw)[0], budget_seconds=100)

    node = api.get(f"/api/v1/nodes/{doomed.name}")
    assert node["spec"]["unschedulable"] is True
    assert {"key": "spot-rebalancer/spot-interruption", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert not [p for p in pods(api, namespace) if p["spec"].get("nodeName") == doomed.name]
    assert result.continue_at is None
    assert metrics.total("PodsEvicted") == 2
    assert {s.action for s in result.steps} >= {"taint", "cordon", "evict"}
    events = api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    assert any(e["reason"] == "Evicted" and "spot-rebalancer" in e["message"] for e in events)
    # The bearer token never reaches a log, even at DEBUG.
    printed = capsys.readouterr()
    assert caplog.records, "nothing was logged at DEBUG: the check below would prove nothing"
    for text in (caplog.text, printed.out, printed.err):
        assert PRODUCT_USER.token not in text


def test_the_role_cannot_read_secrets_or_delete_pods(api, product_kube, namespace, nodes):
    nodes()
    deployment(api, namespace, "web")
    pod = wait_for(lambda: running(pods(api, namespace, "web")), "a running pod")[0]["metadata"]["name"]
    assert product_kube.request("GET", f"/api/v1/namespaces/{namespace}/secrets").status == 403
    assert product_kube.request("GET", "/api/v1/secrets").status == 403
    assert product_kube.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod}").status == 403
    assert product_kube.request("DELETE", f"/api/v1/nodes/{pod}").status == 403
    # What it may do, it can: read the cluster-wide lists it plans from.
    assert product_kube.list_pods() and product_kube.list_nodes()
    assert product_kube.list_pdbs() is not None


def event(sample: str, instance_id: str):
    (parsed,) = parse_event(sample_event(sample, instance_id))
    return parsed


def granted(manifest: Path) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of every rule of the manifest's ClusterRole."""
    import yaml

    with manifest.open() as stream:
        [role] = [doc for doc in yaml.safe_load_all(stream) if doc["kind"] == "ClusterRole"]
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def authorised(audit_events: list[dict], user: str) -> set[tuple[str, str, str]]:
    """What the apiserver's audit log says it allowed `user` to do, as RBAC names it."""
    found = set()
    for event in audit_events:
        if event["user"]["username"] != user:
            continue
        assert event["annotations"]["authorization.k8s.io/decision"] == "allow", event
        ref = event.get("objectRef", {})
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        found.add((ref.get("apiGroup", ""), resource, event["verb"]))
    return found


def test_the_cluster_role_is_exactly_what_the_code_is_authorised_to_do(cluster, api, product_kube, namespace,
                                                                       nodes):
    """Least privilege proved rather than pinned: every kind of work the functions do (a rebalance
    tick that moves a Deployment's and a StatefulSet's pods of a namespace its namespaceSelector
    selects, a spot drain, a lifecycle label, a rebalance recommendation and its revert, a launch
    check), done as a user bound only to the shipped ClusterRole; the apiserver's audit log then
    names each verb and resource it allowed, and the manifest must grant exactly those."""
    before = len(cluster.control_plane.audited())
    # The rebalancer selects pods by their namespace's labels, so it lists namespaces too.
    api.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {"team": "shop"}}})
    settings = Settings(cluster_name="test", min_pod_age_seconds=0, move_single_replica_workloads=True,
                        namespace_selector=parse_selector("team=shop"))
    prefer_spot = preferred_affinity("eks.amazonaws.com/capacityType", ["SPOT"])
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        od_instance, spot_instance = launch_instance(ec2), launch_instance(ec2)
        on_demand = nodes(lifecycle="on-demand", instance_id=od_instance, capacity_label=False)
        deployment(api, namespace, "web", replicas=2, affinity=prefer_spot)
        statefulset(api, namespace, "db", affinity=prefer_spot)
        pdb(api, namespace, "web", "web", max_unavailable=1)
        wait_for(lambda: len(running(pods(api, namespace))) == 3, "web and db running on on-demand")
        nodes(lifecycle="spot", instance_id=spot_instance)

        tick = Rebalancer(settings, product_kube, MetricsRecorder(), None).tick()
        assert {e.workload.kind for e in tick.cycle.evicted} == {"ReplicaSet", "StatefulSet"}

        autoscaling = AutoScaling(boto3.client("autoscaling", region_name="eu-west-1"))
        tagger = LifecycleTagger(settings, Ec2(ec2), lambda _: product_kube, MetricsRecorder())
        labelled = tagger.handle(event("state-change-running.json", od_instance))
        assert "label" in {s.action for s in labelled.steps}
        drains = DrainService(settings, Ec2(ec2), autoscaling, lambda _: product_kube, MetricsRecorder())
        drained = drains.handle(event("spot-interruption-terminate.json", spot_instance), budget_seconds=100)
        assert "evict" in {s.action for s in drained.steps}
        recommended = drains.handle(event("rebalance-recommendation.json", od_instance))
        assert "taint" in {s.action for s in recommended.steps}
        later = datetime.now(UTC) + timedelta(seconds=settings.recommendation_ttl_seconds + 1)
        swept = Rebalancer(settings, product_kube, MetricsRecorder(), None, now=lambda: later).sweep()
        assert ("revert", on_demand.name) in {(s.action, s.node) for s in swept.steps}
        launches = LaunchCompleter(settings, Ec2(ec2), autoscaling, lambda _: product_kube)
        assert launches.targets.resolve(od_instance).node.metadata.name == on_demand.name

    done = authorised(cluster.control_plane.audited()[before:], PRODUCT_USER.name)
    assert done == granted(MANIFEST), (f"granted but never used: {sorted(granted(MANIFEST) - done)}; "
                                       f"used but not granted: {sorted(done - granted(MANIFEST))}")


FORCE_MANIFEST = REPO / "infra" / "rbac" / "spot-rebalancer-force-at-deadline.yaml"


def test_the_force_at_deadline_role_is_exactly_what_its_last_resort_adds(cluster, api, product_kube,
                                                                        namespace, nodes):
    """With the optional role bound too, a forced drain that deletes a pod its budget still blocks is
    allowed exactly the default role's grants plus the optional one's."""
    kubectl = [str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig)]
    subprocess.run([*kubectl, "apply", "-f", str(FORCE_MANIFEST)], check=True, capture_output=True)
    try:
        before = len(cluster.control_plane.audited())
        with mock_aws():
            ec2 = boto3.client("ec2", region_name="eu-west-1")
            instance = launch_instance(ec2)
            launched_ago(instance, 3600)
            node = nodes(lifecycle="spot", instance_id=instance).name
            bare_pod(api, namespace, "stuck", node=node)
            pdb(api, namespace, "stuck", "stuck", min_available=1)
            wait_for(lambda: running(pods(api, namespace, "stuck")), "the pod running")
            warning = json.loads(sample_event("spot-interruption-terminate.json", instance))
            warning["time"] = (datetime.now(UTC) - timedelta(seconds=105)).strftime("%Y-%m-%dT%H:%M:%SZ")
            drains = DrainService(Settings(cluster_name="test", force_at_deadline=True), Ec2(ec2),
                                  AutoScaling(boto3.client("autoscaling", region_name="eu-west-1")),
                                  lambda _: product_kube, MetricsRecorder())
            result = drains.handle(parse_event(warning)[0], budget_seconds=100)
        assert [s.outcome for s in result.steps if s.action == "evict"] == ["deleted"]
        done = authorised(cluster.control_plane.audited()[before:], PRODUCT_USER.name)
    finally:
        subprocess.run([*kubectl, "delete", "-f", str(FORCE_MANIFEST)], check=True, capture_output=True)
    assert done - granted(MANIFEST) == granted(FORCE_MANIFEST) == {("", "pods", "delete")}
