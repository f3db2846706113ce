"""Workloads for tests and the demo: Deployments, StatefulSets, PDBs and bare pods as manifests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from .api import Api

T = TypeVar("T")


def preferred_affinity(label: str, values: list[str], weight: int = 100) -> dict:
    return {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": weight,
        "preference": {"matchExpressions": [{"key": label, "operator": "In", "values": values}]}}]}}


def pod_template(app: str, *, cpu: str = "100m", memory: str = "64Mi", affinity: dict | None = None,
                 annotations: dict | None = None, grace: int = 30, priority_class: str = "") -> dict:
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": "registry.invalid/app:1",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
        "terminationGracePeriodSeconds": grace}
    if affinity:
        spec["affinity"] = affinity
    if priority_class:
        spec["priorityClassName"] = priority_class
    return {"metadata": {"labels": {"app": app}, "annotations": annotations or {}}, "spec": spec}


def deployment(api: Api, namespace: str, name: str, replicas: int = 1, **template: Any) -> dict:
    return api.post(f"/apis/apps/v1/namespaces/{namespace}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": pod_template(name, **template)}})


def statefulset(api: Api, namespace: str, name: str, replicas: int = 1, **template: Any) -> dict:
    return api.post(f"/apis/apps/v1/namespaces/{namespace}/statefulsets", {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
        "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": name}},
                 "template": pod_template(name, **template)}})


def daemonset(api: Api, namespace: str, name: str) -> dict:
    return api.post(f"/apis/apps/v1/namespaces/{namespace}/daemonsets", {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": pod_template(name, cpu="10m", memory="16Mi")}})


def bare_pod(api: Api, namespace: str, name: str, node: str = "", app: str = "", **template: Any) -> dict:
    """A pod of no controller, labelled app=<app> (by default its name)."""
    body = pod_template(app or name, **template)
    body["metadata"]["name"] = name
    if node:
        body["spec"]["nodeName"] = node
    return api.post(f"/api/v1/namespaces/{namespace}/pods", {"apiVersion": "v1", "kind": "Pod", **body})


def pdb(api: Api, namespace: str, name: str, app: str, *, min_available: int | None = None,
        max_unavailable: int | None = None) -> dict:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": app}}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return api.post(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
                    {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                     "metadata": {"name": name}, "spec": spec})


def pods(api: Api, namespace: str, app: str | None = None) -> list[dict]:
    selector = f"?labelSelector=app%3D{app}" if app else ""
    return api.get(f"/api/v1/namespaces/{namespace}/pods{selector}")["items"]


def running(items: list[dict]) -> list[dict]:
    """Pods Running and Ready, not being deleted."""
    return [p for p in items if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True"
                    for c in p["status"].get("conditions", []))]


def wait_for(check: Callable[[], T], what: str, timeout: float = 30, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def busy_spot_node(api: Api, namespace: str, nodes: Callable[..., Any], instance_id: str,
                   replicas: int = 2) -> tuple[str, set[str]]:
    """A spot node of the instance running `replicas` web pods, and an on-demand node with room
    for them (`nodes` is the harness's node fixture): the spot node's name and its pods' names."""
    node = nodes(lifecycle="spot", instance_id=instance_id).name
    deployment(api, namespace, "web", replicas=replicas)
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == replicas, "web pods running")
    nodes(lifecycle="on-demand")
    return node, {p["metadata"]["name"] for p in pods(api, namespace, "web")}
