"""Side by side with `kubectl drain --ignore-daemonsets --delete-emptydir-data --force` (Debian's
kubectl 1.20) on twin nodes: the same kinds of pods are evicted and the same are left alone."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import boto3
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainService
from spot_rebalancer.events import parse_event
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import launch_instance
from tests.kube.workloads import pods, running, wait_for

SAMPLE = Path(__file__).parents[1] / "events" / "spot-interruption-terminate.json"
KINDS = ("deploy", "sts", "ds", "bare", "scratch", "mirror", "finished")


def container() -> list[dict]:
    return [{"name": "app", "image": "registry.invalid/app:1",
             "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}}}]


def seed(api, namespace: str, node: str, suffix: str) -> None:
    """One pod of each kind on `node`: controller-owned, StatefulSet, DaemonSet, bare,
    emptyDir, mirror (static), and a bare one that will have finished (see `finish`)."""
    pinned = {"kubernetes.io/hostname": node}

    def template(kind: str, **spec) -> dict:
        return {"metadata": {"labels": {"kind": kind, "twin": suffix}},
                "spec": {"containers": container(), "nodeSelector": pinned, **spec}}

    apps = f"/apis/apps/v1/namespaces/{namespace}"
    api.post(f"{apps}/deployments", {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "metadata": {"name": f"deploy-{suffix}"},
                                     "spec": {"replicas": 1, "selector": {"matchLabels": {
                                         "twin": suffix, "kind": "deploy"}},
                                              "template": template("deploy")}})
    api.post(f"{apps}/statefulsets", {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                      "metadata": {"name": f"sts-{suffix}"},
                                      "spec": {"replicas": 1, "serviceName": "sts", "selector": {
                                          "matchLabels": {"twin": suffix, "kind": "sts"}},
                                               "template": template("sts")}})
    api.post(f"{apps}/daemonsets", {"apiVersion": "apps/v1", "kind": "DaemonSet",
                                    "metadata": {"name": f"ds-{suffix}"},
                                    "spec": {"selector": {"matchLabels": {"twin": suffix, "kind": "ds"}},
                                             "template": template("ds")}})
    core = f"/api/v1/namespaces/{namespace}/pods"
    for kind, extra in (("bare", {}), ("finished", {}),
                        ("scratch", {"volumes": [{"name": "tmp", "emptyDir": {}}]})):
        body = template(kind, nodeName=node, **extra)
        body["metadata"]["name"] = f"{kind}-{suffix}"
        api.post(core, {"apiVersion": "v1", "kind": "Pod", **body})
    mirror = template("mirror", nodeName=node)
    mirror["metadata"].update(name=f"mirror-{suffix}",
                              annotations={"kubernetes.io/config.mirror": "static"})
    api.post(core, {"apiVersion": "v1", "kind": "Pod", **mirror})


def finish(api, namespace: str, suffix: str) -> None:
    """Mark the `finished` pod Succeeded, as a kubelet does when its containers exit 0."""
    api.patch(f"/api/v1/namespaces/{namespace}/pods/finished-{suffix}/status", {"status": {
        "phase": "Succeeded", "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "app", "ready": False, "restartCount": 0, "image": "app",
                               "imageID": "", "state": {"terminated": {"exitCode": 0}}}]}})


def kinds_left(api, namespace: str, suffix: str, node: str) -> set[str]:
    return {p["metadata"]["labels"]["kind"] for p in pods(api, namespace)
            if p["metadata"]["labels"].get("twin") == suffix and p["spec"].get("nodeName") == node
            and not p["metadata"].get("deletionTimestamp")}


def test_ours_and_kubectl_drain_evict_and_skip_the_same_pods(cluster, api, kube, namespace, nodes):
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        instance = launch_instance(ec2)
        ours = nodes(lifecycle="spot", instance_id=instance)
        theirs = nodes(lifecycle="spot")
        seed(api, namespace, ours.name, "a")
        seed(api, namespace, theirs.name, "b")
        wait_for(lambda: len(running(pods(api, namespace))) == 2 * len(KINDS), "every pod running")
        finish(api, namespace, "a")
        finish(api, namespace, "b")
        assert kinds_left(api, namespace, "a", ours.name) == set(KINDS)

        raw = json.loads(SAMPLE.read_text())
        raw["detail"]["instance-id"] = instance
        raw["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        handler = DrainService(Settings(cluster_name="test"), Ec2(ec2),
                                      AutoScaling(boto3.client("autoscaling", region_name="eu-west-1")),
                                      lambda _: kube, MetricsRecorder())
        result = handler.handle(parse_event(raw)[0], budget_seconds=100)

    drained = subprocess.run([str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig),
                              "drain", theirs.name, "--ignore-daemonsets", "--delete-emptydir-data",
                              "--force", "--timeout=60s"], check=True, capture_output=True, text=True)

    left_by_us = kinds_left(api, namespace, "a", ours.name)
    left_by_kubectl = kinds_left(api, namespace, "b", theirs.name)
    assert left_by_kubectl == {"ds", "mirror"}
    # The documented difference (drain_policy): kubectl deletes finished pods, we leave them.
    assert left_by_us == {"ds", "mirror", "finished"}
    skipped = {s.pod.split("-")[0] for s in result.steps if s.action == "skip"}
    assert skipped == {"ds", "mirror", "finished"}
    evicted_by_us = {s.pod.split("-")[0] for s in result.steps if s.action == "evict"}
    evicted_by_kubectl = {line.split("/")[-1].split("-")[0] for line in drained.stdout.splitlines()
                          if line.startswith("evicting pod ")}
    assert evicted_by_kubectl == evicted_by_us | {"finished"}, drained.stdout
    assert evicted_by_us == {"deploy", "sts", "bare", "scratch"}
