"""Simulated nodes, the way kwok does it: Node objects without kubelets.

- `add_node` creates a Node with capacity, allocatable, labels (hostname, zone, arch, instance type,
  capacity type), `spec.providerID: aws:///<az>/<instance-id>`, addresses and a Ready condition.
  The node-lifecycle controller is off (controlplane.py), so Ready stays true.
- A background thread watches pods: a pod the scheduler bound to a node is marked Running and Ready;
  a pod being deleted gracefully is deleted for good after `deletion_delay` seconds (what a kubelet
  does once the containers stop); pods on a removed node are deleted as the instance goes away.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from .api import Api, ApiError

_ids = itertools.count(1)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SimNode:
    name: str
    instance_id: str
    zone: str
    private_dns_name: str


class NodeSimulator:
    def __init__(self, api: Api, deletion_delay: float = 0.0, workers: int = 8) -> None:
        self.api = api
        self.deletion_delay = deletion_delay
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nodesim")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nodesim", daemon=True)
        self._handled: set[tuple[str, str]] = set()  # (uid, what) already done
        self._lock = threading.Lock()

    # --- nodes ---------------------------------------------------------------------------------

    def add_node(self, *, lifecycle: str = "on-demand", arch: str = "amd64",
                 zone: str = "eu-west-1a", cpu: str = "4", memory: str = "16Gi", pods: int = 110,
                 labels: dict[str, str] | None = None, taints: list[dict] | None = None,
                 name: str | None = None, instance_id: str | None = None,
                 capacity_label: bool = True) -> SimNode:
        n = next(_ids)
        instance_id = instance_id or f"i-{n:017x}"
        ip = f"10.0.{n // 250}.{n % 250 + 1}"
        dns = f"ip-{ip.replace('.', '-')}.eu-west-1.compute.internal"
        name = name or dns
        node_labels = {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
            "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": zone[:-1],
            "node.kubernetes.io/instance-type": "m6g.xlarge" if arch == "arm64" else "m6i.xlarge",
        }
        if capacity_label:
            node_labels["eks.amazonaws.com/capacityType"] = "SPOT" if lifecycle == "spot" else "ON_DEMAND"
        node_labels.update(labels or {})
        self.api.post("/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": node_labels},
            "spec": {"providerID": f"aws:///{zone}/{instance_id}", "taints": taints or []}})
        resources = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "100Gi"}
        self.api.patch(f"/api/v1/nodes/{name}/status", {"status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": now_iso(), "lastTransitionTime": now_iso()}],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": dns},
                          {"type": "InternalDNS", "address": dns}],
            "nodeInfo": {"architecture": arch, "operatingSystem": "linux", "kubeletVersion": "v1.20.2",
                         "kubeProxyVersion": "v1.20.2", "containerRuntimeVersion": "sim://1",
                         "kernelVersion": "", "osImage": "simulated", "machineID": "", "systemUUID": "",
                         "bootID": ""}}}, strategic=True)
        return SimNode(name, instance_id, zone, dns)

    def remove_node(self, name: str) -> None:
        """The instance is gone: its pods go with it, then the Node object."""
        pods = self.api.get(f"/api/v1/pods?fieldSelector=spec.nodeName={name}")["items"]
        for pod in pods:
            self._delete_now(pod)
        self.api.delete(f"/api/v1/nodes/{name}")

    # --- pods ----------------------------------------------------------------------------------

    def start(self) -> NodeSimulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.api.get("/api/v1/pods")
                for pod in listing["items"]:
                    self._consider(pod)
                for event in self.api.watch("/api/v1/pods", listing["metadata"]["resourceVersion"],
                                            timeout_seconds=30):
                    if self._stop.is_set():
                        return
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._consider(event["object"])
            except Exception:  # the apiserver restarting or a dropped watch: list again
                time.sleep(0.5)

    def _once(self, pod: dict, what: str) -> bool:
        key = (pod["metadata"]["uid"], what)
        with self._lock:
            if key in self._handled:
                return False
            self._handled.add(key)
            return True

    def _consider(self, pod: dict) -> None:
        meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
        if not spec.get("nodeName"):
            return
        if meta.get("deletionTimestamp"):
            if self._once(pod, "delete"):
                self._pool.submit(self._finish_deletion, pod)
        elif status.get("phase", "Pending") == "Pending" and self._once(pod, "run"):
            self._pool.submit(self._run_pod, pod)

    def _run_pod(self, pod: dict) -> None:
        meta = pod["metadata"]
        stamp = now_iso()
        conditions = [{"type": t, "status": "True", "lastTransitionTime": stamp}
                      for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]
        containers = [{"name": c["name"], "ready": True, "started": True, "restartCount": 0,
                       "image": c.get("image", ""), "imageID": "", "containerID": f"sim://{meta['uid']}",
                       "state": {"running": {"startedAt": stamp}}} for c in pod["spec"]["containers"]]
        body = {"status": {"phase": "Running", "conditions": conditions, "startTime": stamp,
                           "podIP": "10.244.0.1", "hostIP": "10.0.0.1", "containerStatuses": containers}}
        with contextlib.suppress(ApiError):  # deleted meanwhile
            self.api.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status", body)

    def _finish_deletion(self, pod: dict) -> None:
        if self.deletion_delay:
            time.sleep(self.deletion_delay)
        self._delete_now(pod)

    def _delete_now(self, pod: dict) -> None:
        meta = pod["metadata"]
        self.api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                        {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                         "preconditions": {"uid": meta["uid"]}}, ok=(200, 202, 404, 409))
