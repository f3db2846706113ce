"""Interruption storm: a spot pool of 40 nodes reclaimed at once, through the real events handler.

On the local control plane (tests/kube) with moto for AWS (EC2, the DynamoDB idempotency table,
the SQS work queue), served by moto's server so that every process shares it: 40 spot nodes of 25
pods each (1,000 pods: Deployments whose budgets allow 20% unavailable, pods that stop in 2, 15 or
40 s; node 0 and node 10 also hold pods whose budget never allows an eviction, node 10 also three
system-critical pods), on-demand room for every replacement. All 40 spot interruption warnings are
sent to the work queue at once, dated that moment; their two-minute notice is real time, not
scaled. The queue is read as Lambda's SQS event source reads it: batches of up to 10, at most
eventsMaxConcurrency (5) invocations at once, each a call of the events handler in a warm
"container" process of its own (module imported, runtime and Kubernetes client built), with a
Lambda context counting down from the function's 110 s timeout; records it does not report failed
are deleted, continuations it queues are delivered in turn. At each notice's end its instance goes
(the node and its pods removed).

Watches on the apiserver itself note when each node is cordoned and when each pod's eviction is
accepted (first seen terminating), when it has stopped (deleted for good), and every Ready count of
the budgeted apps (a violation: below the budget's floor before the notice ends).

`.venv/bin/python bench/storm.py [--code REF ...] [--nodes]` runs the code at each REF (a detached
git worktree of it; `.` is this checkout) with the same harness, side by side; by default the code
before the storm work (BEFORE) and this checkout. `--nodes` prints every node's figures too.
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lambda_context import REGION, LambdaContext

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The last commit before the storm work of issue #13 (its first: "Kubernetes calls bounded in time").
BEFORE = "12f5029"
SPOT_NODES = 40
PODS_PER_NODE = 25
NOTICE_SECONDS = 120  # a spot interruption warning's notice
# As the stack deploys the events function (infra/construct.py, infra/config.py's default).
BATCH_SIZE = 10
INVOCATION_SECONDS = 110
VISIBILITY_TIMEOUT_SECONDS = 6 * INVOCATION_SECONDS
EVENTS_MAX_CONCURRENCY = 5
NAMESPACE = "storm"
ACCOUNT = "123456789012"
MARGIN_GOAL_SECONDS = 30
CORDON_GOAL_SECONDS = 5
BLOCKED_NODES = (0, 10)  # the first node of the first two batches
CRITICAL_NODE = 10
# (app, replicas, terminationGracePeriodSeconds, seconds its containers take to stop)
DEPLOYMENTS = ([(f"web-{n}", 100, 30, 2) for n in range(8)] + [(f"worker-{n}", 35, 30, 15) for n in range(4)]
               + [("batch", 53, 60, 40)])
# Pinned to their node: (app, node index, pods, priority class); the ledger's budget lets none go.
PINNED = [("ledger-a", 0, 2, ""), ("ledger-b", 10, 2, ""),
          ("coredns", 10, 2, "system-cluster-critical"), ("ingress", 10, 1, "system-cluster-critical")]
BLOCKED_APPS = ("ledger-a", "ledger-b")
CRITICAL_APPS = ("coredns", "ingress")
ON_DEMAND_NODES = 10  # 110 pods each: room for every replacement


def budget_floor(replicas: int) -> int:
    """The Ready pods a maxUnavailable 20% budget keeps (the API rounds the percentage up)."""
    return replicas - math.ceil(replicas * 0.2)


# --- the container: one Lambda execution environment of the events function ---------------------


def container(code: str, kubeconfig: str, results) -> None:
    """Warm up as a used container is (handler imported, runtime and Kubernetes client built, one
    request sent), say so, then run one invocation per batch read from stdin."""
    sys.path[:0] = [str(Path(code) / "lambdas")]
    import spot_rebalancer.eks_auth
    from spot_rebalancer.handlers import events
    from spot_rebalancer.kube import KubeClient

    kube = KubeClient.from_kubeconfig(kubeconfig)
    spot_rebalancer.eks_auth.client_for_cluster = lambda _name: kube  # the EKS token: not here
    events._runtime()
    kube.list_nodes()
    print(json.dumps({"ready": True}), file=results, flush=True)
    for line in sys.stdin:
        records = json.loads(line)
        entry = time.time()
        try:
            response = events.handler({"Records": records}, LambdaContext(INVOCATION_SECONDS, "events", 512))
            failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
            error = ""
        except Exception as exc:  # the whole batch failed: SQS delivers all of it again
            failed, error = [r["messageId"] for r in records], f"{type(exc).__name__}: {exc}"
            print(error, file=sys.stderr, flush=True)
            error = error[:300]
        print(json.dumps({"entry": entry, "returned": time.time(), "records": len(records),
                          "failed": failed, "error": error}), file=results, flush=True)


@dataclass
class Container:
    process: subprocess.Popen
    invocations: list[dict] = field(default_factory=list)

    def invoke(self, records: list[dict]) -> dict:
        self.process.stdin.write(json.dumps(records) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("a container process ended")
        self.invocations.append(json.loads(line))
        return self.invocations[-1]


class EventSource:
    """Lambda's SQS event source: batches of up to BATCH_SIZE, one per free container, records not
    reported failed deleted after their invocation."""

    def __init__(self, sqs, queue_url: str, containers: list[Container]) -> None:
        self._sqs, self._queue_url, self._containers = sqs, queue_url, containers
        self._receiving = threading.Lock()  # one poller: batches are the queue's order, 10 by 10
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in containers]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, box: Container) -> None:
        while not self._stop.is_set():
            with self._receiving:
                messages = self._sqs.receive_message(
                    QueueUrl=self._queue_url, MaxNumberOfMessages=BATCH_SIZE, WaitTimeSeconds=1,
                    AttributeNames=["All"]).get("Messages", [])
            if not messages or self._stop.is_set():
                continue
            records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                        "attributes": m.get("Attributes", {}), "messageAttributes": {},
                        "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
                        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:work", "awsRegion": REGION}
                       for m in messages]
            try:
                outcome = box.invoke(records)
            except RuntimeError:
                return  # stopped under it
            done = [r for r in records if r["messageId"] not in outcome["failed"]]
            if done and not self._stop.is_set():
                self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=[
                    {"Id": str(n), "ReceiptHandle": r["receiptHandle"]} for n, r in enumerate(done)])


# --- the stage -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server on a loopback port, for every process of the run; its endpoint."""
    import urllib3

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib3.request("GET", endpoint + "/moto-api/", retries=False, timeout=1)
                break
            except urllib3.exceptions.HTTPError:
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait()


@contextmanager
def code_at(ref: str) -> Iterator[Path]:
    """The repository's files at `ref` (a detached worktree, removed after); `.` is this checkout."""
    if ref == ".":
        yield REPO
        return
    with tempfile.TemporaryDirectory(prefix="storm-code-") as scratch:
        where = Path(scratch) / "code"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(where), ref],
                       check=True)
        try:
            yield where
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(where)], check=True)


def aws_environment(endpoint: str, queue_url: str = "") -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "CLUSTER_NAME": "test",
            "STATE_TABLE": "state",
            "WORK_QUEUE_URL": queue_url, "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING"}


def stage(cluster, instances: list[tuple[str, str]]) -> None:
    """The spot pool full (25 pods a node), the pinned pods and every budget; then on-demand room."""
    from tests.kube.nodesim import STOP_SECONDS_ANNOTATION
    from tests.kube.workloads import bare_pod, deployment, pdb, pods, running, wait_for

    api = cluster.admin
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for instance_id, dns in instances:
        cluster.nodes.add_node(lifecycle="spot", name=dns, instance_id=instance_id, pods=PODS_PER_NODE)
    for app, node, count, priority_class in PINNED:
        for n in range(count):
            bare_pod(api, NAMESPACE, f"{app}-{n}", node=instances[node][1], app=app, cpu="10m", memory="16Mi",
                     priority_class=priority_class, annotations={STOP_SECONDS_ANNOTATION: "2"})
    for app in BLOCKED_APPS:
        count = next(c for a, _, c, _ in PINNED if a == app)
        pdb(api, NAMESPACE, app, app, min_available=count)
    for app, replicas, grace, stop in DEPLOYMENTS:
        deployment(api, NAMESPACE, app, replicas=replicas, cpu="10m", memory="16Mi", grace=grace,
                   annotations={STOP_SECONDS_ANNOTATION: str(stop)})
        pdb(api, NAMESPACE, app, app, max_unavailable="20%")
    total = SPOT_NODES * PODS_PER_NODE
    wait_for(lambda: len(running(pods(api, NAMESPACE))) == total, f"{total} pods running", timeout=600,
             interval=2)
    for _ in range(ON_DEMAND_NODES):
        cluster.nodes.add_node(lifecycle="on-demand", cpu="64", memory="256Gi", pods=110)
    time.sleep(5)  # the budgets' status catches up with the pods Ready


def start_containers(code: Path, kubeconfig: str, environment: dict[str, str], log) -> list[Container]:
    boxes = [Container(subprocess.Popen([sys.executable, __file__, "--container", str(code), kubeconfig],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                        env={**os.environ, **environment}))
             for _ in range(EVENTS_MAX_CONCURRENCY)]
    for box in boxes:
        if not box.process.stdout.readline():
            log.seek(0)
            raise RuntimeError(f"a container failed to start:\n{log.read()[-3000:]}")
    return boxes


def run(ref: str, log_path: str | None = None) -> dict:
    """The storm against the code at `ref`: every figure of the report. The containers' logs go to
    `log_path` if given."""
    import boto3
    from watches import CordonWatch, PodWatch

    from tests.ec2 import launch_instance
    from tests.events_function import sample_event
    from tests.kube.cluster import LocalCluster
    from tests.state_table import create_state_table

    logs = open(log_path, "w+") if log_path else tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below)
    with code_at(ref) as code, moto_server() as endpoint, logs as log:
        aws = {"region_name": REGION, "endpoint_url": endpoint, "aws_access_key_id": "testing",
               "aws_secret_access_key": "testing"}
        ec2, sqs = boto3.client("ec2", **aws), boto3.client("sqs", **aws)
        create_state_table(boto3.client("dynamodb", **aws))
        queue_url = sqs.create_queue(QueueName="work", Attributes={
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS)})["QueueUrl"]
        ids = [launch_instance(ec2) for _ in range(SPOT_NODES)]
        described = ec2.describe_instances(InstanceIds=ids)["Reservations"]
        dns = {i["InstanceId"]: i["PrivateDnsName"] for r in described for i in r["Instances"]}
        instances = [(i, dns[i]) for i in ids]
        cluster = LocalCluster().start()
        boxes: list[Container] = []
        try:
            stage(cluster, instances)
            boxes = start_containers(code, str(cluster.kubeconfig), aws_environment(endpoint, queue_url), log)
            floors = {app: budget_floor(replicas) for app, replicas, _, _ in DEPLOYMENTS}
            floors.update({app: c for app, _, c, _ in PINNED if app in BLOCKED_APPS})
            with CordonWatch(cluster, clock=time.time) as cordons, \
                    PodWatch(cluster, NAMESPACE, floors, clock=time.time) as pods:
                with pods.lock:
                    at_start = {uid: (fate.node, fate.app) for uid, fate in pods.pods.items()}
                sent = math.ceil(time.time()) + 1.0  # a whole second: the event's time says it exactly
                time.sleep(sent - time.time())
                at = datetime.fromtimestamp(sent, UTC)
                bodies = [sample_event("spot-interruption-terminate.json", i, at) for i, _ in instances]
                for start in range(0, len(bodies), BATCH_SIZE):
                    batch = bodies[start:start + BATCH_SIZE]
                    sqs.send_message_batch(QueueUrl=queue_url, Entries=[
                        {"Id": str(n), "MessageBody": body} for n, body in enumerate(batch)])
                source = EventSource(sqs, queue_url, boxes)
                source.start()
                deadline = sent + NOTICE_SECONDS
                time.sleep(max(0.0, deadline - time.time()))
                with pods.lock:
                    pods.counting = False  # from here the instances take their pods with them
                source.stop()
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(cluster.nodes.remove_node, [d for _, d in instances]))
                with pods.lock:
                    fates = dict(pods.pods)
                    drops = dict(pods.drops)
                    fewest = dict(pods.fewest)
                cordoned = dict(cordons.cordoned)
                answers = cluster.proxy.responses.copy()
        finally:
            for box in boxes:
                box.process.kill()
                box.process.wait()
            cluster.stop()
    evictions = {status: sum(n for (method, path, code), n in answers.items()
                             if method == "POST" and path.endswith("/eviction") and code == status)
                 for status in (201, 429)}
    return figures(ref, sent, [d for _, d in instances], at_start, fates, cordoned, drops, fewest,
                   [i for box in boxes for i in box.invocations], evictions)


# --- the figures ---------------------------------------------------------------------------------


def figures(ref: str, sent: float, nodes: list[str], at_start: dict[str, tuple[str, str]], fates: dict,
            cordoned: dict[str, float], drops: dict[str, int], fewest: dict[str, int],
            invocations: list[dict], evictions: dict[int, int]) -> dict:
    deadline = sent + NOTICE_SECONDS

    def by_deadline(at: float | None) -> bool:
        return at is not None and at <= deadline

    rows = []
    for index, node in enumerate(nodes):
        mine = [(uid, app) for uid, (on, app) in at_start.items() if on == node]
        evictable = [fates[uid] for uid, app in mine if app not in BLOCKED_APPS + CRITICAL_APPS]
        critical = [fates[uid] for uid, app in mine if app in CRITICAL_APPS]
        evicted = [f.evicted for f in evictable if f.evicted and by_deadline(f.evicted)]
        cordon = cordoned.get(node)
        rows.append({
            "node": index, "pods": len(mine), "evictable": len(evictable),
            "cordon": cordon - sent if cordon is not None and cordon <= deadline else None,
            "all_evicted": (max(evicted) - sent) if len(evicted) == len(evictable) else None,
            "evicted": len(evicted),
            "stopped": sum(1 for uid, _ in mine if by_deadline(fates[uid].gone)),
            "critical": len(critical),
            "critical_evicted": [f.evicted - sent for f in critical if f.evicted and by_deadline(f.evicted)],
        })
    return {"ref": ref, "rows": rows, "violations": sum(drops.values()), "fewest": fewest,
            "invocations": len(invocations), "records": sum(i["records"] for i in invocations),
            "failed": sum(len(i["failed"]) for i in invocations),
            "errors": sorted({i["error"] for i in invocations if i["error"]}),
            "longest": max((i["returned"] - i["entry"] for i in invocations), default=0.0),
            "entries": sorted(i["entry"] - sent for i in invocations), "evictions": evictions}


def summary(result: dict) -> dict[str, str]:
    rows = result["rows"]
    cordons = [r["cordon"] for r in rows if r["cordon"] is not None]
    evicted = [r["all_evicted"] for r in rows if r["all_evicted"] is not None]
    margins = [NOTICE_SECONDS - r["all_evicted"] if r["all_evicted"] is not None else None for r in rows]
    critical = [t for r in rows for t in r["critical_evicted"]]

    def p50_p100(values: list[float], of: int) -> str:
        if not values:
            return "none"
        worst = f"{max(values):.1f}" if len(values) == of else f"> {NOTICE_SECONDS}"
        return f"{statistics.median(values):.1f} / {worst}"

    met = sum(1 for m in margins if m is not None and m >= MARGIN_GOAL_SECONDS)
    return {
        "event -> cordon, p50 / p100 (s)": p50_p100(cordons, len(rows)),
        "nodes cordoned before the deadline": f"{len(cordons)}/{len(rows)}",
        "event -> all evictable pods evicted, p50 / p100 (s)": p50_p100(evicted, len(rows)),
        f"nodes with all evicted >= {MARGIN_GOAL_SECONDS} s before the deadline": f"{met}/{len(rows)}",
        "evictable pods evicted before the deadline":
            f"{sum(r['evicted'] for r in rows)}/{sum(r['evictable'] for r in rows)}",
        "pods stopped before the deadline":
            f"{sum(r['stopped'] for r in rows)}/{sum(r['pods'] for r in rows)}",
        "critical pods evicted before the deadline (latest, s)":
            f"{len(critical)}/{sum(r['critical'] for r in rows)}"
            + (f" ({max(critical):.1f})" if critical else ""),
        "budget violations": str(result["violations"]),
        "invocations / records / failed records":
            f"{result['invocations']} / {result['records']} / {result['failed']}",
        "longest invocation (s)": f"{result['longest']:.1f}",
        "first 4 invocations began at (s)": " ".join(f"{t:.1f}" for t in result["entries"][:4]),
        "eviction requests accepted / refused": f"{result['evictions'][201]} / {result['evictions'][429]}",
    }


def goals(result: dict) -> list[tuple[str, bool, str]]:
    rows = result["rows"]
    cordons = [r["cordon"] for r in rows]
    worst_cordon = max((c for c in cordons if c is not None), default=float("inf"))
    margins = [NOTICE_SECONDS - r["all_evicted"] if r["all_evicted"] is not None else -math.inf for r in rows]
    critical = [t for r in rows for t in r["critical_evicted"]]
    all_critical = sum(r["critical"] for r in rows)
    return [
        (f"p100 event -> cordon <= {CORDON_GOAL_SECONDS} s",
         None not in cordons and worst_cordon <= CORDON_GOAL_SECONDS,
         f"{worst_cordon:.1f} s" if None not in cordons else f"{cordons.count(None)} nodes never cordoned"),
        (f"every evictable pod evicted >= {MARGIN_GOAL_SECONDS} s before its deadline",
         min(margins) >= MARGIN_GOAL_SECONDS,
         f"least margin {min(margins):.1f} s" if min(margins) > -math.inf
         else f"{sum(1 for m in margins if m == -math.inf)} nodes with pods never evicted"),
        ("every system-critical pod evicted before its deadline", len(critical) == all_critical,
         f"{len(critical)}/{all_critical}"),
        ("0 budget violations", result["violations"] == 0, str(result["violations"])),
    ]


def report(results: list[dict], per_node: bool) -> None:
    print(f"interruption storm: {SPOT_NODES} spot nodes x {PODS_PER_NODE} pods, all warned at once; SQS "
          f"batches of {BATCH_SIZE} through the events handler, {EVENTS_MAX_CONCURRENCY} invocations at once "
          f"({INVOCATION_SECONDS} s each); the {NOTICE_SECONDS} s notice in real time; load average "
          f"{os.getloadavg()[0]:.1f}")
    tables = [summary(r) for r in results]
    width = max(len(k) for k in tables[0])
    print(f"{'':{width}}" + "".join(f"{r['ref']:>20}" for r in results))
    for key in tables[0]:
        print(f"{key:{width}}" + "".join(f"{t[key]:>20}" for t in tables))
    for result in results:
        for goal, met, figure in goals(result):
            print(f"{result['ref']}: goal: {goal}: {'met' if met else 'NOT met'} ({figure})")
        for error in result["errors"]:
            print(f"{result['ref']}: a failed invocation: {error}")
        if result["violations"]:
            print(f"{result['ref']}: fewest Ready pods of the budgeted apps: {result['fewest']}")
    if not per_node:
        return
    for result in results:
        print(f"{result['ref']}, per node: cordon s, all evictable evicted s, evicted/evictable, "
              "stopped/pods, critical evicted s")
        for r in result["rows"]:
            def show(v: float | None) -> str:
                return "-" if v is None else f"{v:.1f}"
            print(f"  node {r['node']:2} {show(r['cordon']):>6} {show(r['all_evicted']):>6} "
                  f"{r['evicted']:3}/{r['evictable']:<3} {r['stopped']:3}/{r['pods']:<3} "
                  + " ".join(show(t) for t in r["critical_evicted"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", action="append", metavar="REF",
                        help=f"the code to run (a git ref, or . for this checkout); default {BEFORE} and .")
    parser.add_argument("--nodes", action="store_true", help="every node's figures too")
    parser.add_argument("--log", help="write the containers' logs here (REF appended)")
    args = parser.parse_args()
    labels = {BEFORE: f"before ({BEFORE})", ".": "this checkout"}
    results = []
    for ref in args.code or [BEFORE, "."]:
        result = run(ref, f"{args.log}.{ref.strip('.') or 'this'}" if args.log else None)
        result["ref"] = labels.get(ref, ref)
        results.append(result)
    report(results, args.nodes)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--container"]:
        # The handler's logs go to stderr; the results to the real stdout.
        results = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        container(sys.argv[2], sys.argv[3], results)
        sys.exit(0)
    sys.exit(main())
