"""A generated `kubectl get nodes,pods,pdb -A -o json` List, the same for the same arguments.

Nodes are spot or on-demand, amd64 or arm64, over three zones, with the labels, allocatable,
conditions and addresses EKS managed node groups carry; one in ten has a NoSchedule taint. Every
node runs three DaemonSet pods in kube-system; the rest of its pods come from Deployments (through
their ReplicaSets) and StatefulSets spread over 60 namespaces, dealt to nodes at random, so a pod
that prefers spot often sits on on-demand (or amd64 when it prefers arm64): what the planner must
find. Pods carry what `kubectl get -o json` prints (service-account volume, default tolerations,
conditions, container statuses), about 3.5 KB each, because parse time is mostly bytes.

    python bench/gen.py NODES PODS_PER_NODE OUT.json [--seed N]
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

# Pods are created a day before this, so none is too young to move.
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DAEMONSETS = ("aws-node", "kube-proxy", "ebs-csi-node")
NAMESPACES = 60
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
# instance type -> (architecture, vCPUs, memory GiB)
INSTANCE_TYPES = {
    "m5.2xlarge": ("amd64", 8, 32), "m6i.2xlarge": ("amd64", 8, 32), "c5.4xlarge": ("amd64", 16, 32),
    "m6g.2xlarge": ("arm64", 8, 32), "c7g.4xlarge": ("arm64", 16, 32),
}
ARCH_TYPES = {arch: [name for name, spec in INSTANCE_TYPES.items() if spec[0] == arch]
              for arch in ("amd64", "arm64")}
CAPACITY_LABEL = "eks.amazonaws.com/capacityType"


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Generator:
    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.created = _stamp(NOW - timedelta(days=1))
        self.suffixes: set[str] = set()

    def uid(self) -> str:
        hex32 = f"{self.random.getrandbits(128):032x}"
        return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"

    def suffix(self, length: int) -> str:
        """A random suffix never drawn before: names made with it are unique (at 5,000 nodes a
        DaemonSet's five-letter pod suffixes collide, and the API server would never list a pod twice)."""
        while True:
            drawn = "".join(self.random.choices("bcdfghjklmnpqrstvwxz2456789", k=length))
            if drawn not in self.suffixes:
                self.suffixes.add(drawn)
                return drawn

    def node(self, index: int) -> dict:
        rng = self.random
        capacity = "SPOT" if rng.random() < 0.6 else "ON_DEMAND"
        arch = "arm64" if rng.random() < 0.3 else "amd64"
        instance_type = rng.choice(ARCH_TYPES[arch])
        _, cpus, memory_gib = INSTANCE_TYPES[instance_type]
        zone = ZONES[index % len(ZONES)]
        group = f"{capacity.lower().replace('_', '-')}-{arch}"
        address = f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"
        name = f"ip-{address.replace('.', '-')}.ec2.internal"
        instance_id = f"i-{rng.getrandbits(68):017x}"
        labels = {
            "beta.kubernetes.io/arch": arch, "beta.kubernetes.io/instance-type": instance_type,
            "beta.kubernetes.io/os": "linux", CAPACITY_LABEL: capacity,
            "eks.amazonaws.com/nodegroup": group,
            "eks.amazonaws.com/nodegroup-image": "ami-0a1b2c3d4e5f67890",
            "failure-domain.beta.kubernetes.io/region": "us-east-1",
            "failure-domain.beta.kubernetes.io/zone": zone,
            "k8s.io/cloud-provider-aws": "a94967527effcefb5f5829f529c0a1b9", "kubernetes.io/arch": arch,
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": instance_type, "topology.ebs.csi.aws.com/zone": zone,
            "topology.kubernetes.io/region": "us-east-1", "topology.kubernetes.io/zone": zone,
        }
        spec: dict = {"providerID": f"aws:///{zone}/{instance_id}"}
        if rng.random() < 0.1:
            spec["taints"] = [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]
        conditions = [
            {"type": kind, "status": "False", "reason": f"KubeletHasNo{kind}",
             "message": f"kubelet has no {kind}", "lastHeartbeatTime": self.created,
             "lastTransitionTime": self.created}
            for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
        ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
              "message": "kubelet is posting ready status", "lastHeartbeatTime": self.created,
              "lastTransitionTime": self.created}]
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": self.uid(), "resourceVersion": str(rng.randrange(10**8)),
                         "creationTimestamp": self.created, "labels": labels,
                         "annotations": {"alpha.kubernetes.io/provided-node-ip": address,
                                         "node.alpha.kubernetes.io/ttl": "0",
                                         "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
            "spec": spec,
            "status": {
                "capacity": {"cpu": str(cpus), "ephemeral-storage": "83873772Ki", "hugepages-1Gi": "0",
                             "hugepages-2Mi": "0", "memory": f"{memory_gib * 1024 * 1024 - 500000}Ki",
                             "pods": "110"},
                "allocatable": {"cpu": f"{cpus * 1000 - 90}m", "ephemeral-storage": "76224326324",
                                "hugepages-1Gi": "0", "hugepages-2Mi": "0",
                                "memory": f"{memory_gib * 1024 * 1024 - 1400000}Ki", "pods": "110"},
                "conditions": conditions,
                "addresses": [{"type": "InternalIP", "address": address},
                              {"type": "Hostname", "address": name},
                              {"type": "InternalDNS", "address": name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"architecture": arch, "bootID": self.uid(), "containerRuntimeVersion":
                             "containerd://1.7.11", "kernelVersion": "5.10.205-195.807.amzn2.x86_64",
                             "kubeProxyVersion": "v1.29.0-eks-5e0fdde",
                             "kubeletVersion": "v1.29.0-eks-5e0fdde",
                             "machineID": f"{rng.getrandbits(128):032x}", "operatingSystem": "linux",
                             "osImage": "Amazon Linux 2", "systemUUID": f"ec2{rng.getrandbits(116):029x}"},
            },
        }

    def workloads(self, pods: int) -> list[dict]:
        """Enough Deployments and StatefulSets for `pods` replicas, each with its scheduling habits."""
        rng = self.random
        workloads, total = [], 0
        while total < pods:
            namespace = f"team-{rng.randrange(NAMESPACES):02d}"
            app = f"svc-{len(workloads):05d}"
            stateful = rng.random() < 0.1
            habit = rng.random()
            workloads.append({
                "namespace": namespace, "app": app, "stateful": stateful,
                "owner": app if stateful else f"{app}-{self.suffix(10)}",
                "owner_uid": self.uid(),
                "prefers": "spot" if habit < 0.4 else "arm64" if habit < 0.5 else None,
                "cpu": rng.choice((50, 100, 100, 200, 250, 500)),
                "memory": rng.choice((64, 128, 256, 256, 512, 1024)),
                "tolerates_batch": rng.random() < 0.2,
                "port": rng.choice((8080, 8443, 9090, 3000)),
            })
            total += rng.randint(2, 40)
        return workloads

    def pod(self, node: dict, workload: dict, ordinal: int) -> dict:
        rng = self.random
        namespace, app = workload["namespace"], workload["app"]
        if workload["stateful"]:
            name, kind = f"{app}-{ordinal}", "StatefulSet"
        elif workload["namespace"] == "kube-system":
            name, kind = f"{app}-{self.suffix(5)}", "DaemonSet"
        else:
            name, kind = f"{workload['owner']}-{self.suffix(5)}", "ReplicaSet"
        affinity = None
        if workload["prefers"] == "spot":
            affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": [
                    {"key": CAPACITY_LABEL, "operator": "In", "values": ["SPOT"]}]}}]}}
        elif workload["prefers"] == "arm64":
            affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}}]}}
        tolerations = [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
        ]
        if workload["tolerates_batch"] or kind == "DaemonSet":
            tolerations.append({"key": "dedicated", "operator": "Equal", "value": "batch",
                                "effect": "NoSchedule"})
        node_name = node["metadata"]["name"]
        host_ip = node["status"]["addresses"][0]["address"]
        pod_ip = f"10.{rng.randrange(64, 128)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        container = {
            "name": app, "image": f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{app}:v1.{ordinal % 7}.0",
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": "http", "containerPort": workload["port"], "protocol": "TCP"}],
            "env": [{"name": "APP_NAME", "value": app}, {"name": "LOG_LEVEL", "value": "info"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                                    "fieldPath": "metadata.name"}}}],
            "resources": {"requests": {"cpu": f"{workload['cpu']}m", "memory": f"{workload['memory']}Mi"},
                          "limits": {"memory": f"{workload['memory'] * 2}Mi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": workload["port"], "scheme": "HTTP"},
                               "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1,
                               "failureThreshold": 3},
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
            "volumeMounts": [{"name": "kube-api-access", "readOnly": True,
                              "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        }
        started = self.created
        spec = {
            "containers": [container], "dnsPolicy": "ClusterFirst", "enableServiceLinks": True,
            "nodeName": node_name, "preemptionPolicy": "PreemptLowerPriority", "priority": 0,
            "restartPolicy": "Always", "schedulerName": "default-scheduler", "securityContext": {},
            "serviceAccount": "default", "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30, "tolerations": tolerations,
            "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}],
        }
        if affinity is not None:
            spec["affinity"] = affinity
        if kind == "DaemonSet":
            spec["priorityClassName"], spec["priority"] = "system-node-critical", 2000001000
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "namespace": namespace, "uid": self.uid(),
                "resourceVersion": str(rng.randrange(10**8)), "creationTimestamp": self.created,
                "generateName": name.rsplit("-", 1)[0] + "-",
                "labels": {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": namespace,
                           "pod-template-hash" if kind == "ReplicaSet" else "controller-revision-hash":
                           workload["owner"].rsplit("-", 1)[-1]},
                "annotations": {"kubectl.kubernetes.io/restartedAt": self.created},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind,
                                     "name": workload["owner"], "uid": workload["owner_uid"],
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": spec,
            "status": {
                "phase": "Running", "hostIP": host_ip, "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
                "qosClass": "Burstable", "startTime": started,
                "conditions": [{"type": condition, "status": "True", "lastProbeTime": None,
                                "lastTransitionTime": started}
                               for condition in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
                "containerStatuses": [{"name": app, "ready": True, "restartCount": 0, "started": True,
                                       "image": container["image"],
                                       "imageID": f"{container['image']}@sha256:{rng.getrandbits(256):064x}",
                                       "containerID": f"containerd://{rng.getrandbits(256):064x}",
                                       "state": {"running": {"startedAt": started}}, "lastState": {}}],
            },
        }

    def pdb(self, workload: dict) -> dict:
        spec: dict = {"selector": {"matchLabels": {"app.kubernetes.io/name": workload["app"]}}}
        if self.random.random() < 0.5:
            spec["maxUnavailable"] = 1
        else:
            spec["minAvailable"] = "50%"
        return {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": workload["app"], "namespace": workload["namespace"], "uid": self.uid(),
                         "resourceVersion": str(self.random.randrange(10**8)),
                         "creationTimestamp": self.created},
            "spec": spec,
            "status": {"currentHealthy": 3, "desiredHealthy": 2, "disruptionsAllowed": 1,
                       "expectedPods": 3, "observedGeneration": 1},
        }

    def items(self, nodes: int, pods_per_node: int) -> Iterator[dict]:
        node_items = [self.node(index) for index in range(nodes)]
        yield from node_items
        workload_pods = pods_per_node - len(DAEMONSETS)
        workloads = self.workloads(nodes * workload_pods)
        ordinals = dict.fromkeys((w["app"] for w in workloads), 0)
        daemonsets = [{"namespace": "kube-system", "app": app, "stateful": False, "owner": app,
                       "owner_uid": self.uid(), "prefers": None, "cpu": 25, "memory": 64,
                       "tolerates_batch": True, "port": 61678 + i} for i, app in enumerate(DAEMONSETS)]
        for node in node_items:
            for daemonset in daemonsets:
                yield self.pod(node, daemonset, 0)
            for workload in self.random.choices(workloads, k=workload_pods):
                yield self.pod(node, workload, ordinals[workload["app"]])
                ordinals[workload["app"]] += 1
        for workload in workloads:
            if self.random.random() < 0.5:
                yield self.pdb(workload)


def write_list(out: Path, nodes: int, pods_per_node: int, seed: int = 1) -> int:
    """Write the List to `out`, an item at a time (never the whole tree in memory); its size in bytes."""
    generator = _Generator(seed)
    with out.open("wb") as file:
        file.write(b'{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[')
        for index, item in enumerate(generator.items(nodes, pods_per_node)):
            if index:
                file.write(b",")
            file.write(orjson.dumps(item))
        file.write(b"]}")
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nodes", type=int)
    parser.add_argument("pods_per_node", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    size = write_list(args.out, args.nodes, args.pods_per_node, args.seed)
    print(f"{args.out}: {size / 1e6:.1f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
