"""`make demo`: the product's main job, end to end, on the local control plane and moto.

A small fleet (spot and on-demand, amd64 and arm64) runs workloads that prefer spot. A storm of
spot interruption warnings goes through the events Lambda handler as EventBridge events on SQS; the
drained spot instances go away and the pods fall back to on-demand. Spot capacity comes back, and
the schedule Lambda handler runs rebalancer cycles until the pods are home. It prints the fleet
before and after, and per cycle the pods on spot and on-demand and the fleet's cost per hour, and
writes a PNG timeline of both: pods on spot vs on-demand above, cost per hour below (every node, and
without the on-demand nodes holding none of the pods, what the fleet costs once scale-in or an
autoscaler removes them). Costs are the product's own `fleet_cost` over `priceOverrides`, since
moto serves no Price List API: DEMO_PRICES, about the us-east-1 list prices, spot at 40% of them.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).parents[2]
CLUSTER = "demo"
REGION = "eu-west-1"
TABLE = "spot-rebalancer-state"
APPS = ("web", "api", "cart", "search")
REPLICAS = 4
CAPACITY = "eks.amazonaws.com/capacityType"
TIMELINE = REPO / "out" / "demo-timeline.png"
SPOT_SAMPLE = REPO / "tests" / "events" / "spot-interruption-terminate.json"
DEMO_PRICES = {"m6i.xlarge": {"onDemand": 0.192, "spot": 0.0768},
               "m6g.xlarge": {"onDemand": 0.154, "spot": 0.0616}}


class LambdaContext:
    """What the handlers read of a Lambda context."""

    function_name = "spot-rebalancer-demo"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:spot-rebalancer-demo"

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return int((self._end - time.monotonic()) * 1000)


def configure_environment(queue_url: str) -> None:
    os.environ.update({
        "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "CLUSTER_NAME": CLUSTER,
        "STATE_TABLE": TABLE, "WORK_QUEUE_URL": queue_url, "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_TRACE_DISABLED": "true",
        # The demo's pods are minutes old at most: let the rebalancer move them at once.
        "MIN_POD_AGE_SECONDS": "0", "MAX_EVICTIONS_PER_CYCLE": "20",
        "MAX_EVICTIONS_PER_NODE": "20", "MAX_EVICTIONS_PER_NAMESPACE": "20",
        "PRICE_OVERRIDES": json.dumps(DEMO_PRICES)})


def spot_warning(instance_id: str) -> dict:
    event = json.loads(SPOT_SAMPLE.read_text())
    event["id"] = str(uuid.uuid4())
    event["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event["resources"] = [f"arn:aws:ec2:{REGION}:123456789012:instance/{instance_id}"]
    event["detail"]["instance-id"] = instance_id
    return event


def sqs_batch(events: list[dict]) -> dict:
    return {"Records": [{"messageId": str(uuid.uuid4()), "receiptHandle": "demo", "body": json.dumps(e),
                         "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                         "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:work", "awsRegion": REGION}
                        for e in events]}


class Fleet:
    """Simulated nodes backed by moto EC2 instances, so the handlers find them as in AWS."""

    def __init__(self, cluster, ec2) -> None:
        self.cluster = cluster
        self.ec2 = ec2
        self.image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        self.spot: list = []

    def add(self, lifecycle: str, arch: str, zone: str):
        extra = {"InstanceMarketOptions": {"MarketType": "spot"}} if lifecycle == "spot" else {}
        instance = self.ec2.run_instances(
            ImageId=self.image, MinCount=1, MaxCount=1,
            InstanceType="m6g.xlarge" if arch == "arm64" else "m6i.xlarge",
            Placement={"AvailabilityZone": zone},
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "eks:cluster-name", "Value": CLUSTER},
                {"Key": f"kubernetes.io/cluster/{CLUSTER}", "Value": "owned"}]}], **extra,
        )["Instances"][0]
        node = self.cluster.nodes.add_node(lifecycle=lifecycle, arch=arch, zone=zone, cpu="4",
                                           memory="16Gi", instance_id=instance["InstanceId"])
        if lifecycle == "spot":
            self.spot.append(node)
        return node

    def terminate(self, node) -> None:
        self.cluster.nodes.remove_node(node.name)
        self.ec2.terminate_instances(InstanceIds=[node.instance_id])
        self.spot.remove(node)


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    on_spot: int
    on_demand: int
    cost: float  # $/hour, every node
    cost_without_empty: float  # $/hour, less the on-demand nodes holding none of the demo's pods


class Timeline(threading.Thread):
    """Samples where the demo's pods run and what the fleet costs, once a second, with labels for
    what happened when."""

    def __init__(self, api, kube, namespace: str, capacity_of) -> None:
        from spot_rebalancer.config import Settings
        from spot_rebalancer.rebalance import PriceBook

        super().__init__(daemon=True)
        self.api, self.kube, self.namespace, self.capacity_of = api, kube, namespace, capacity_of
        self.book = PriceBook(overrides=dict(Settings.from_env().price_overrides))
        self.start_time = time.monotonic()
        self.samples: list[Sample] = []
        self.marks: list[tuple[float, str]] = []
        self.stopped = threading.Event()

    def mark(self, label: str) -> None:
        self.marks.append((time.monotonic() - self.start_time, label))
        print(f"[{time.monotonic() - self.start_time:5.1f}s] {label}", flush=True)

    def sample(self) -> Sample:
        from spot_rebalancer.rebalance import fleet_cost
        from tests.kube.workloads import pods, running

        nodes = self.kube.list_nodes()
        here = running(pods(self.api, self.namespace))
        busy = {p["spec"]["nodeName"] for p in here}
        placed = [self.capacity_of(p["spec"]["nodeName"]) for p in here]
        kept = [n for n in nodes
                if n.metadata.name in busy or n.metadata.labels.get(CAPACITY) != "ON_DEMAND"]
        return Sample(time.monotonic() - self.start_time, placed.count("SPOT"), placed.count("ON_DEMAND"),
                      fleet_cost(nodes, self.book).per_hour, fleet_cost(kept, self.book).per_hour)

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            self.samples.append(self.sample())

    def draw(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        seconds = [s.seconds for s in self.samples]
        fig, (pods_ax, cost_ax) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                               gridspec_kw={"height_ratios": [3, 2]})
        pods_ax.stackplot(seconds, [s.on_spot for s in self.samples], [s.on_demand for s in self.samples],
                          labels=["pods on spot", "pods on on-demand"], colors=["#2a9d8f", "#e76f51"])
        cost_ax.plot(seconds, [s.cost for s in self.samples], color="#264653", label="every node")
        cost_ax.plot(seconds, [s.cost_without_empty for s in self.samples], color="#e9c46a", linestyle="--",
                     label="without the empty on-demand nodes (once removed)")
        cost_ax.set_ylim(bottom=0)
        for ax in (pods_ax, cost_ax):
            for at, _ in self.marks:
                ax.axvline(at, color="#444", linestyle=":", linewidth=1)
        for at, label in self.marks:
            pods_ax.text(at, pods_ax.get_ylim()[1] * 0.97, f" {label}", rotation=90, va="top", fontsize=8)
        pods_ax.set_ylabel("running pods")
        pods_ax.set_title("spot-rebalancer demo: a spot interruption storm and the way back")
        pods_ax.legend(loc="lower right")
        cost_ax.set_xlabel("seconds")
        cost_ax.set_ylabel("fleet cost, $ per hour")
        cost_ax.legend(loc="lower right", fontsize=8)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=110)


def print_sample(when: str, sample: Sample) -> None:
    print(f"{when}: pods on spot {sample.on_spot}, on on-demand {sample.on_demand}; cost per hour "
          f"${sample.cost:.3f}, ${sample.cost_without_empty:.3f} without the empty on-demand nodes")


def fleet_table(title: str) -> None:
    from spot_rebalancer.cli import main as cli

    print(f"\n{title}")
    cli(["census", "--kubeconfig", os.environ["DEMO_KUBECONFIG"]])


def main() -> int:
    import boto3
    from moto import mock_aws

    from spot_rebalancer import eks_auth
    from spot_rebalancer.handlers import events as events_handler
    from spot_rebalancer.handlers import schedule as schedule_handler
    from spot_rebalancer.kube import KubeClient
    from tests.kube.cluster import LocalCluster
    from tests.kube.workloads import deployment, pdb, pods, preferred_affinity, running, wait_for
    from tests.state_table import create_state_table

    cluster = LocalCluster().start()
    mock = mock_aws()
    mock.start()
    try:
        os.environ["DEMO_KUBECONFIG"] = str(cluster.kubeconfig)
        kube = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
        # The handlers reach the cluster as they would EKS; here, through the local kubeconfig.
        eks_auth.client_for_cluster = lambda _name: kube
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_state_table(dynamodb, TABLE)
        queue_url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="work")["QueueUrl"]
        configure_environment(queue_url)

        fleet = Fleet(cluster, boto3.client("ec2", region_name=REGION))
        for lifecycle, arch, zone in (("spot", "amd64", "eu-west-1a"), ("spot", "arm64", "eu-west-1b"),
                                      ("spot", "amd64", "eu-west-1b"), ("spot", "arm64", "eu-west-1a"),
                                      ("on-demand", "amd64", "eu-west-1a"),
                                      ("on-demand", "arm64", "eu-west-1b"),
                                      ("on-demand", "amd64", "eu-west-1b")):
            fleet.add(lifecycle, arch, zone)
        api, namespace = cluster.admin, "shop"
        api.post("/api/v1/namespaces",
                 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for app in APPS:
            deployment(api, namespace, app, replicas=REPLICAS, cpu="500m", memory="256Mi",
                       affinity=preferred_affinity(CAPACITY, ["SPOT"]))
            pdb(api, namespace, app, app, max_unavailable=1)
        total = len(APPS) * REPLICAS
        wait_for(lambda: len(running(pods(api, namespace))) == total, f"{total} pods running", timeout=60)

        capacities: dict[str, str] = {}

        def capacity_of(node_name: str) -> str:
            if node_name not in capacities:
                node = api.get(f"/api/v1/nodes/{node_name}")
                capacities[node_name] = node["metadata"]["labels"].get(CAPACITY, "?")
            return capacities[node_name]

        timeline = Timeline(api, kube, namespace, capacity_of)
        timeline.start()
        fleet_table("Fleet before the storm:")
        print_sample("before the storm", timeline.sample())
        time.sleep(2)

        timeline.mark("spot interruption storm")
        doomed = list(fleet.spot)
        result = events_handler.handler(sqs_batch([spot_warning(n.instance_id) for n in doomed]),
                                        LambdaContext(110))
        failures = result.get("batchItemFailures", [])
        print(f"events handler: {len(doomed)} warnings, {len(failures)} failed")
        for node in doomed:
            fleet.terminate(node)
        timeline.mark("spot instances gone")
        wait_for(lambda: len(running(pods(api, namespace))) == total, "pods back up on on-demand", timeout=90)
        time.sleep(3)
        fleet_table("Fleet after the storm:")
        print_sample("after the storm", timeline.sample())

        timeline.mark("spot capacity back")
        for arch, zone in (("amd64", "eu-west-1a"), ("arm64", "eu-west-1b"), ("amd64", "eu-west-1b"),
                           ("arm64", "eu-west-1a")):
            fleet.add("spot", arch, zone)
        time.sleep(3)
        print_sample("spot capacity back", timeline.sample())
        # A cycle moves in waves (a share of each workload at a time, the next once its replacements
        # are Ready), so one cycle usually brings every workload home; the loop stops at a quiet one.
        for cycle in range(1, REPLICAS + 3):
            timeline.mark(f"rebalancer cycle {cycle}")
            summary = schedule_handler.handler({"detail-type": "Scheduled Event"}, LambdaContext(300))
            print(f"cycle {cycle}: planned {summary['planned']}, evicted {summary['evicted']}, "
                  f"misplaced before {summary['misplacedPods']}")
            wait_for(lambda: len(running(pods(api, namespace))) == total, "replacements running", timeout=90)
            time.sleep(3)
            print_sample(f"after cycle {cycle}", timeline.sample())
            if summary["planned"] == 0:
                break
        on_spot = sum(1 for p in running(pods(api, namespace))
                      if capacity_of(p["spec"]["nodeName"]) == "SPOT")
        fleet_table("Fleet after rebalancing:")
        time.sleep(2)
        timeline.stopped.set()
        timeline.join()
        timeline.draw(TIMELINE)
        print(f"\n{on_spot}/{total} spot-preferring pods on spot; timeline: {TIMELINE.relative_to(REPO)}")
        return 0 if on_spot >= 0.95 * total else 1
    finally:
        mock.stop()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
