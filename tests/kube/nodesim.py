"""Simulated nodes, the way kwok does it: Node objects without kubelets.

- `add_node` creates a Node as an EKS worker would register: capacity and allocatable (cpu,
  memory, pods, ephemeral-storage), well-known labels (hostname, zone, region, arch, os, instance
  type, and capacity-type labels on request), `spec.providerID: aws:///<az>/<instance-id>`,
  InternalIP / Hostname / InternalDNS addresses with an EC2-style private DNS name, and kubelet-like
  conditions (Ready). The node-lifecycle controller is off (controlplane.py), so Ready stays true
  without heartbeats.
- A background thread lists and watches all pods (relisting every RESYNC_SECONDS and after any
  error) and plays kubelet for pods bound to its nodes: a pod the scheduler bound is marked Running
  and Ready, with a pod IP, the node's host IP and container statuses; a pod being deleted
  gracefully is deleted for good (grace period 0) once the simulated containers have stopped:
  after the pod's STOP_SECONDS_ANNOTATION (how long its containers take to stop) or, without it,
  `deletion_delay` seconds; never after its grace period, when a kubelet kills what is left.
- `remove_node` is the instance terminating: the Node goes, and so do its pods, at once (the pod
  garbage collector would only remove them after its 40-second quarantine). Pods the scheduler
  binds to a removed node in that moment are deleted on sight.
Each pod is handled once per step; a failed API call is retried at the next event or relist.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from .api import Api, ApiError

RESYNC_SECONDS = 30
# On a pod: seconds its simulated containers take to stop once asked to (a pod slow to stop).
STOP_SECONDS_ANNOTATION = "sim.spot-rebalancer.io/stop-seconds"
CAPACITY_TYPE_LABEL = "eks.amazonaws.com/capacityType"
LIFECYCLE_LABEL = "node.kubernetes.io/lifecycle"
_node_numbers = itertools.count(1)
_pod_numbers = itertools.count(1)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SimNode:
    name: str
    instance_id: str
    zone: str
    private_dns_name: str
    internal_ip: str


def private_dns_name(ip: str, region: str) -> str:
    """EC2's private DNS name: ip-10-0-0-1.ec2.internal in us-east-1, <region>.compute.internal else."""
    domain = "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"
    return f"ip-{ip.replace('.', '-')}.{domain}"


class NodeSimulator:
    def __init__(self, api: Api, deletion_delay: float = 0.0, workers: int = 8) -> None:
        self.api = api
        self.deletion_delay = deletion_delay
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nodesim")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._nodes: dict[str, SimNode] = {}
        self._removed: set[str] = set()
        self._claimed: set[tuple[str, str]] = set()  # (pod uid, step) under way or done
        self._due = threading.Condition(self._lock)
        self._deletions: list[tuple[float, int, dict]] = []  # a heap of (when, tie-breaker, pod)
        self._threads = [threading.Thread(target=self._watch_pods, name="nodesim-watch", daemon=True),
                         threading.Thread(target=self._delete_when_due, name="nodesim-delay", daemon=True)]

    def start(self) -> NodeSimulator:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._due:
            self._due.notify()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()

    # --- nodes ---------------------------------------------------------------------------------

    def add_node(self, *, lifecycle: str = "on-demand", arch: str = "amd64",
                 zone: str = "eu-west-1a", cpu: str = "4", memory: str = "16Gi", pods: int = 110,
                 labels: dict[str, str] | None = None, taints: list[dict] | None = None,
                 name: str | None = None, instance_id: str | None = None,
                 capacity_label: bool = True, lifecycle_label: bool = False) -> SimNode:
        """A Ready node. `lifecycle` is "spot" or "on-demand"; it shows in the EKS capacity-type
        label (unless `capacity_label` is false) and in node.kubernetes.io/lifecycle if
        `lifecycle_label`. The name is the private DNS name unless given."""
        n = next(_node_numbers)
        instance_id = instance_id or f"i-{n:017x}"
        ip = f"10.0.{n // 250 % 256}.{n % 250 + 1}"
        region = zone[:-1]
        dns = private_dns_name(ip, region)
        name = name or dns
        node_labels = {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
            "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": region,
            "node.kubernetes.io/instance-type": "m6g.xlarge" if arch == "arm64" else "m6i.xlarge",
        }
        if capacity_label:
            node_labels[CAPACITY_TYPE_LABEL] = "SPOT" if lifecycle == "spot" else "ON_DEMAND"
        if lifecycle_label:
            node_labels[LIFECYCLE_LABEL] = lifecycle
        node_labels.update(labels or {})
        node = SimNode(name, instance_id, zone, dns, ip)
        with self._lock:
            self._nodes[name] = node
            self._removed.discard(name)
        self.api.post("/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": node_labels},
            "spec": {"providerID": f"aws:///{zone}/{instance_id}", "taints": taints or []}})
        resources = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "100Gi"}
        stamp = now_iso()
        conditions = [{"type": kind, "status": "False", "reason": f"KubeletHasNo{kind}",
                       "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
                      for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "lastHeartbeatTime": stamp, "lastTransitionTime": stamp})
        self.api.patch(f"/api/v1/nodes/{name}/status", {"status": {
            "capacity": resources, "allocatable": resources, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": dns},
                          {"type": "InternalDNS", "address": dns}],
            "nodeInfo": {"architecture": arch, "operatingSystem": "linux", "kubeletVersion": "v1.20.2",
                         "kubeProxyVersion": "v1.20.2", "containerRuntimeVersion": "sim://1",
                         "kernelVersion": "", "osImage": "simulated", "machineID": "", "systemUUID": "",
                         "bootID": ""}}})
        return node

    def add_nodes(self, count: int, *, zones: tuple[str, ...] = ("eu-west-1a", "eu-west-1b", "eu-west-1c"),
                  **kwargs) -> list[SimNode]:
        """A pool of `count` alike nodes (add_node's arguments), spread over `zones` in turn."""
        return [self.add_node(zone=zones[i % len(zones)], **kwargs) for i in range(count)]

    def remove_node(self, name: str) -> None:
        """The instance is gone: the Node object, then every pod on it, at once."""
        with self._lock:
            self._removed.add(name)
            self._nodes.pop(name, None)
        self.api.delete(f"/api/v1/nodes/{name}")
        on_node = self.api.get(f"/api/v1/pods?fieldSelector=spec.nodeName%3D{name}")["items"]
        list(self._pool.map(self._delete_now, on_node))

    # --- pods ----------------------------------------------------------------------------------

    def _watch_pods(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.api.get("/api/v1/pods")
                for pod in listing["items"]:
                    self._consider(pod)
                for event in self.api.watch("/api/v1/pods", listing["metadata"]["resourceVersion"],
                                            timeout_seconds=RESYNC_SECONDS):
                    if self._stop.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._consider(event["object"])
                    elif event["type"] == "DELETED":
                        self._forget(event["object"]["metadata"]["uid"])
                    # ERROR (the resource version expired, say): the server ends the watch; relist.
            except Exception:  # the apiserver restarting or a dropped watch: list again
                self._stop.wait(0.5)

    def _consider(self, pod: dict) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        node = spec.get("nodeName")
        with self._lock:
            removed, ours = node in self._removed, node in self._nodes
        if removed:
            self._once(pod, "delete", self._delete_now)
        elif not ours:
            return  # unbound, or on a node this simulator does not run
        elif meta.get("deletionTimestamp"):
            self._once(pod, "delete", self._delete_after_grace)
        elif pod.get("status", {}).get("phase", "Pending") == "Pending":
            self._once(pod, "run", self._run)

    def _once(self, pod: dict, step: str, action: Callable[[dict], None]) -> None:
        key = (pod["metadata"]["uid"], step)
        with self._lock:
            if key in self._claimed:
                return
            self._claimed.add(key)
        self._pool.submit(self._attempt, key, action, pod)

    def _attempt(self, key: tuple[str, str], action: Callable[[dict], None], pod: dict) -> None:
        try:
            action(pod)
        except Exception:
            with self._lock:  # let the next event or relist try again
                self._claimed.discard(key)

    def _forget(self, uid: str) -> None:
        with self._lock:
            self._claimed.difference_update({(uid, "run"), (uid, "delete")})

    def _run(self, pod: dict) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        with self._lock:
            node = self._nodes.get(spec["nodeName"])
        if node is None:  # removed meanwhile
            return
        n = next(_pod_numbers)
        stamp = now_iso()
        conditions = [{"type": t, "status": "True", "lastTransitionTime": stamp}
                      for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]
        containers = [{"name": c["name"], "ready": True, "started": True, "restartCount": 0,
                       "image": c.get("image", ""), "imageID": "",
                       "containerID": f"sim://{meta['uid']}-{c['name']}",
                       "state": {"running": {"startedAt": stamp}}} for c in spec["containers"]]
        pod_ip = f"10.244.{n // 250 % 256}.{n % 250 + 1}"
        body = {"status": {"phase": "Running", "conditions": conditions, "startTime": stamp,
                           "hostIP": node.internal_ip, "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
                           "containerStatuses": containers}}
        try:
            self.api.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status", body)
        except ApiError as exc:
            if exc.status != 404:  # deleted meanwhile is fine; anything else is tried again
                raise

    def _delete_after_grace(self, pod: dict) -> None:
        meta = pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        stop = meta.get("annotations", {}).get(STOP_SECONDS_ANNOTATION)
        delay = float(stop) if stop is not None else self.deletion_delay
        delay = min(delay, grace) if grace is not None else delay
        if delay <= 0:
            self._delete_now(pod)
            return
        with self._due:
            heapq.heappush(self._deletions, (time.monotonic() + delay, next(_pod_numbers), pod))
            self._due.notify()

    def _delete_when_due(self) -> None:
        with self._due:
            while not self._stop.is_set():
                wait = self._deletions[0][0] - time.monotonic() if self._deletions else None
                if wait is None or wait > 0:
                    self._due.wait(wait)
                    continue
                _, _, pod = heapq.heappop(self._deletions)
                key = (pod["metadata"]["uid"], "delete")
                with contextlib.suppress(RuntimeError):  # the pool is shut down: we are stopping
                    self._pool.submit(self._attempt, key, self._delete_now, pod)

    def _delete_now(self, pod: dict) -> None:
        meta = pod["metadata"]
        self.api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                        {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                         "preconditions": {"uid": meta["uid"]}}, ok=(200, 202, 404, 409))
