"""Event-handling benchmark: from the events Lambda handler's entry to the node cordoned, warm.

The handler runs in a process of its own (as in Lambda) with moto for AWS (EC2, the DynamoDB
idempotency table, SQS) and the local control plane for Kubernetes. It is given one SQS batch per
spot interruption warning, each for a fresh instance whose node carries a few pods. The first
invocation builds the handler's runtime (deferred imports, clients) and is reported apart; the next
ones are the warm figures. This process watches the nodes on the apiserver itself and notes when
each one turns unschedulable: the cordon patch has been accepted by then.
Run: .venv/bin/python bench/event_latency.py [events]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from watches import CordonWatch

from tests.kube.cluster import LocalCluster
from tests.kube.workloads import deployment, pods, running, wait_for
from tests.state_table import create_state_table

EVENTS = 20
PODS_PER_NODE = 10
GOAL_SECONDS = 1.0
NAMESPACE = "bench"
REGION = "eu-west-1"


def handler_process(kubeconfig: str, count: int, results) -> None:
    """The Lambda's side: `count` instances on moto, then one invocation per instance once told to go."""
    import boto3
    from moto import mock_aws

    import spot_rebalancer.eks_auth
    from spot_rebalancer.kube import KubeClient
    from tests.ec2 import launch_instance
    from tests.integration.test_interruption_sqs import Deployed, spot_warning

    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        instance_ids = [launch_instance(ec2) for _ in range(count)]
        described = ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
        dns = {i["InstanceId"]: i["PrivateDnsName"] for r in described for i in r["Instances"]}
        create_state_table(boto3.client("dynamodb", region_name=REGION))
        queue_url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="work")["QueueUrl"]
        os.environ.update({"AWS_DEFAULT_REGION": REGION, "CLUSTER_NAME": "test", "STATE_TABLE": "state",
                           "WORK_QUEUE_URL": queue_url, "POWERTOOLS_METRICS_DISABLED": "true"})
        # The EKS token and endpoint are the only part replaced: the local apiserver takes the
        # kubeconfig's token. Built on first use, as the real client is.
        clients: list[KubeClient] = []

        def client_for_cluster(_name: str) -> KubeClient:
            clients[:] = clients or [KubeClient.from_kubeconfig(kubeconfig)]
            return clients[0]

        spot_rebalancer.eks_auth.client_for_cluster = client_for_cluster
        print(json.dumps([[i, dns[i]] for i in instance_ids]), file=results, flush=True)
        sys.stdin.readline()  # the nodes and pods are in place

        runs = []
        for instance_id in instance_ids:
            body = spot_warning(instance_id)
            entry = time.monotonic()
            response = Deployed(queue_url, "state", instance_id, dns[instance_id]).deliver(body)
            runs.append({"node": dns[instance_id], "entry": entry, "returned": time.monotonic(),
                         "failures": response["batchItemFailures"]})
        print(json.dumps(runs), file=results, flush=True)


def on_node(name: str) -> dict:
    """Required node affinity to one node: its pods stay Pending once it is cordoned."""
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [name]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def place_nodes(cluster: LocalCluster, instances: list[list[str]]) -> None:
    """A spot node per instance, named after its private DNS name as on EKS, each with its own pods."""
    api = cluster.admin
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for n, (instance_id, dns) in enumerate(instances):
        cluster.nodes.add_node(lifecycle="spot", name=dns, instance_id=instance_id)
        deployment(api, NAMESPACE, f"app{n}", replicas=PODS_PER_NODE, cpu="10m", affinity=on_node(dns))
    total = len(instances) * PODS_PER_NODE
    wait_for(lambda: len(running(pods(api, NAMESPACE))) == total, f"{total} pods running",
             timeout=180, interval=1)


def main() -> int:
    count = (int(sys.argv[1]) if len(sys.argv) > 1 else EVENTS) + 1  # one more to warm up with
    cluster = LocalCluster().start()
    try:
        with tempfile.TemporaryFile("w+") as log:
            # The handler's logs and metrics go to stdout in Lambda; here to a file, so stdout
            # carries only its results.
            child = subprocess.Popen([sys.executable, __file__, "--handler", str(cluster.kubeconfig),
                                      str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log, text=True)
            instances = json.loads(child.stdout.readline() or "null")
            if instances is None:
                log.seek(0)
                raise RuntimeError(f"the handler process failed:\n{log.read()[-3000:]}")
            place_nodes(cluster, instances)
            with CordonWatch(cluster) as watch:
                child.stdin.write("go\n")
                child.stdin.flush()
                runs = json.loads(child.stdout.readline() or "null")
                if child.wait() != 0 or runs is None:
                    log.seek(0)
                    raise RuntimeError(f"the handler process failed:\n{log.read()[-3000:]}")
        failed = [r["node"] for r in runs if r["failures"] or r["node"] not in watch.cordoned]
        if failed:
            raise RuntimeError(f"not drained: {failed}")
        report(runs, watch.cordoned)
        return 0
    finally:
        cluster.stop()


def report(runs: list[dict], cordoned: dict[str, float]) -> None:
    to_cordon = [cordoned[r["node"]] - r["entry"] for r in runs]
    to_return = [r["returned"] - r["entry"] for r in runs]
    warm_cordon, warm_return = to_cordon[1:], to_return[1:]

    def line(label: str, values: list[float]) -> str:
        p90 = statistics.quantiles(values, n=10, method="inclusive")[-1]
        return (f"{label:34}{statistics.median(values):8.3f}{p90:8.3f}{max(values):8.3f}"
                f"{min(values):8.3f}")

    print(f"events handler, spot interruption warning -> node cordoned, seconds ({len(warm_cordon)} warm "
          f"invocations, {PODS_PER_NODE} pods a node)")
    print(f"{'':34}{'median':>8}{'p90':>8}{'max':>8}{'best':>8}")
    print(line("entry to node cordoned", warm_cordon))
    print(line("entry to return (drain done)", warm_return))
    print(f"first invocation (builds the runtime): {to_cordon[0]:.3f} to cordoned, "
          f"{to_return[0]:.3f} to return")
    worst = max(warm_cordon)
    print(f"goal: every warm entry to cordoned <= {GOAL_SECONDS:g} s: "
          f"{'met' if worst <= GOAL_SECONDS else 'missed'} (max {worst:.3f})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--handler"]:
        # Everything printed by the handler goes to stderr; the results to the real stdout.
        results = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        handler_process(sys.argv[2], int(sys.argv[3]), results)
        sys.exit(0)
    sys.exit(main())
