"""Cold-start benchmark, in two parts.

1. Module import: the import time of each Lambda handler module in a fresh interpreter (this
   machine's Python, the package compiled first). Lambda imports the handler module once per new
   container (its "init" phase); the heavy clients (boto3, powertools) are imported on the first
   invocation instead, and are not counted here. Each round starts, in turn, a bare interpreter and
   one per handler; a handler's figure is its process time minus the bare interpreter's in the same
   round, and, as a cross-check, the import statement alone timed inside the process.
2. First invocation of a cold container: a new CPython 3.13 process (the one the synth compiles
   the asset with) with only a bundle of the Lambda asset on its path, built by the asset's own
   recipe (infra/bundling.py) but for this machine's platform (the asset's arm64 wheels do not load
   here), with and without bytecode. It imports the events handler, builds everything the handler
   builds and handles one SQS batch with one spot interruption warning against the local control
   plane and a moto server, until a watch on the apiserver sees the node cordoned. Only the EKS
   endpoint is replaced: the real DescribeCluster (on moto) and token signing run, and the client
   then talks to the local apiserver with its token.
Run: .venv/bin/python bench/coldstart.py [rounds] [--invocations N]  (N cold containers per variant;
0 skips part 2)
"""

from __future__ import annotations

import argparse
import compileall
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HANDLERS = ("spot_rebalancer.handlers.events", "spot_rebalancer.handlers.schedule")
GOAL_MS = 300
ROUNDS = 20
INVOCATIONS = 5
FIRST_INVOCATION_GOAL_SECONDS = 1.5
PODS_PER_NODE = 5
REGION = "eu-west-1"
CLUSTER = "test"
TOP = 8
# Timed inside the child: the import statement alone, printed in seconds.
TIMED_IMPORT = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def run(code: str) -> tuple[float, str]:
    """Wall time of a fresh interpreter running `code`, and its output."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - start, out


def import_times(code: str) -> list[tuple[str, int]]:
    """(module, self microseconds) of every import in one `-X importtime` run of `code`."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], check=True,
                         capture_output=True, text=True).stderr
    return parse_import_times(err)


def parse_import_times(output: str) -> list[tuple[str, int]]:
    """(module, self microseconds) of each `-X importtime` line in `output`."""
    rows = []
    for line in output.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line.removeprefix("import time:").split("|")
        rows.append((name.strip(), int(self_us)))
    return rows


def by_origin(rows: list[tuple[str, int]]) -> dict[str, int]:
    """Self time summed by where a module comes from: the product, the standard library, or a
    third-party package by its top-level name."""
    totals: dict[str, int] = defaultdict(int)
    for name, self_us in rows:
        top = name.split(".", 1)[0]
        origin = top if top not in sys.stdlib_module_names else "(standard library)"
        totals[origin] += self_us
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def module_imports(rounds: int) -> None:
    import spot_rebalancer

    compileall.compile_dir(Path(spot_rebalancer.__file__).parent, quiet=1)
    for module in HANDLERS:  # warm run: bytecode of everything it imports, and the page cache
        run(f"import {module}")

    bare: list[float] = []
    process: dict[str, list[float]] = {m: [] for m in HANDLERS}
    statement: dict[str, list[float]] = {m: [] for m in HANDLERS}
    for _ in range(rounds):
        bare_s, _ = run("pass")
        bare.append(bare_s)
        for module in HANDLERS:
            wall, out = run(TIMED_IMPORT.format(module=module))
            process[module].append(wall - bare_s)
            statement[module].append(float(out))

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:8.0f}"

    print(f"cold start: handler module import in a fresh interpreter, ms ({rounds} rounds, "
          f"Python {sys.version.split()[0]}, bytecode compiled)")
    print(f"bare interpreter start: median {statistics.median(bare) * 1000:.0f}, best {min(bare) * 1000:.0f}")
    print(f"{'':36}{'median':>8}{'best':>8}{'import alone: median':>22}{'best':>8}")
    for module in HANDLERS:
        print(f"{module:36}{ms(statistics.median(process[module]))}{ms(min(process[module]))}"
              f"{ms(statistics.median(statement[module])):>22}{ms(min(statement[module]))}")
    at_start = {name for name, _ in import_times("pass")}  # the bare interpreter's, e.g. site
    for module in HANDLERS:
        rows = [row for row in import_times(f"import {module}") if row[0] not in at_start | {module}]
        print(f"\n{module}: top self times under -X importtime (one run, which itself adds overhead), ms")
        for name, self_us in sorted(rows, key=lambda row: -row[1])[:TOP]:
            print(f"  {name:44}{self_us / 1000:6.1f}")
        # -X importtime also lists failed attempts (the standard library's `copy` tries Jython's
        # `org.python.core`): those take no time and are left out here.
        origins = [(origin, us) for origin, us in by_origin(rows).items() if us >= 500]
        print("  by origin: " + ", ".join(f"{origin} {us / 1000:.0f}" for origin, us in origins))
    worst = max(statistics.median(times) for times in process.values()) * 1000
    print(f"\ngoal: each <= {GOAL_MS} ms (median, process minus bare interpreter): "
          f"{'met' if worst <= GOAL_MS else 'missed'} (slowest {worst:.0f} ms)")


# --- part 2: the first invocation of a cold container -------------------------------------------


class _Context:
    """What powertools reads from a Lambda context."""

    function_name = "events"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:events"
    aws_request_id = "cold-start"

    def get_remaining_time_in_millis(self) -> int:
        return 100_000


def cold_container(spec_file: str) -> None:
    """The container's side, in CPython 3.13 with only the bundle on its path: import the handler,
    then one invocation. Writes its clock readings (time.monotonic, shared by every process of the
    machine) to the spec's results file."""
    started = time.monotonic()
    spec = json.loads(Path(spec_file).read_text())
    import spot_rebalancer.handlers.events as events
    imported = time.monotonic()

    entry = time.monotonic()
    import spot_rebalancer.eks_auth as eks_auth

    # The product's client_for_cluster runs as it is, with its DescribeCluster request (on moto) and
    # its token signing; only their results are replaced by the local apiserver's endpoint, CA and
    # token (moto's cluster has no usable CA, and the apiserver knows no IAM).
    mint_token = eks_auth.mint_token

    def local_endpoint(eks_client: Any, name: str) -> eks_auth.ClusterEndpoint:
        eks_client.describe_cluster(name=name)
        return eks_auth.ClusterEndpoint(endpoint=spec["endpoint"], ca_pem=spec["ca_pem"])

    def local_token(sts_client: Any, name: str) -> str:
        mint_token(sts_client, name)
        return spec["token"]

    eks_auth.describe_cluster, eks_auth.mint_token = local_endpoint, local_token
    response = events.handler(spec["event"], _Context())
    returned = time.monotonic()
    Path(spec["results"]).write_text(json.dumps({
        "started": started, "imported": imported, "entry": entry, "returned": returned,
        "failures": response["batchItemFailures"]}))


def _sqs_event(body: str) -> dict[str, Any]:
    record = {"messageId": f"m-{abs(hash(body))}", "receiptHandle": "r", "body": body, "attributes": {},
              "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
              "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:work", "awsRegion": REGION}
    return {"Records": [record]}


def first_invocations(count: int) -> None:
    sys.path.insert(0, str(REPO))
    import boto3
    from event_latency import CordonWatch, on_node
    from moto.server import ThreadedMotoServer

    from infra.bundling import LAMBDAS_DIR, Recipe, build_bundle, bytecode_compiler, install_cache_dir
    from tests.ec2 import launch_instance
    from tests.integration.test_interruption_sqs import spot_warning
    from tests.kube.cluster import LocalCluster
    from tests.kube.controlplane import ADMIN
    from tests.kube.workloads import deployment, pods, running, wait_for
    from tests.state_table import create_state_table

    compiler = bytecode_compiler()
    if compiler is None:
        print("\nfirst invocation: no CPython 3.13 on this machine, not measured")
        return
    host = f"manylinux2014_{platform.machine()}"
    # A cache of its own: the synth's keeps only a few installs, and these are not the asset's.
    cache_dir = install_cache_dir().parent / "coldstart-bundles"
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the moto server's request lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    cluster = LocalCluster().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            variants = {"with bytecode": Recipe(compiler, host), "without bytecode": Recipe(None, host)}
            bundles = {}
            for name, recipe in variants.items():
                bundles[name] = work / name.replace(" ", "-")
                build_bundle(LAMBDAS_DIR, bundles[name], cache_dir, recipe)
            host_ip, port = server.get_host_and_port()
            aws_env = {"AWS_ENDPOINT_URL": f"http://{host_ip}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}

            def client(service: str) -> Any:
                return boto3.client(service, region_name=REGION, endpoint_url=aws_env["AWS_ENDPOINT_URL"],
                                    aws_access_key_id="testing", aws_secret_access_key="testing")

            ec2 = client("ec2")
            subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
            client("eks").create_cluster(name=CLUSTER, roleArn="arn:aws:iam::123456789012:role/eks",
                                         resourcesVpcConfig={"subnetIds": [subnet]})
            create_state_table(client("dynamodb"))
            queue_url = client("sqs").create_queue(QueueName="work")["QueueUrl"]
            # The last container, with bytecode, runs under -X importtime: not timed, it shows
            # where the imports of a first invocation go.
            runs = [(name, False) for _ in range(count) for name in variants] + [("with bytecode", True)]
            instances = [launch_instance(ec2, CLUSTER) for _ in runs]
            described = ec2.describe_instances(InstanceIds=instances)["Reservations"]
            dns = {i["InstanceId"]: i["PrivateDnsName"] for r in described for i in r["Instances"]}

            api = cluster.admin
            api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": "bench"}})
            for n, instance in enumerate(instances):
                cluster.nodes.add_node(lifecycle="spot", name=dns[instance], instance_id=instance)
                deployment(api, "bench", f"app{n}", replicas=PODS_PER_NODE, cpu="10m",
                           affinity=on_node(dns[instance]))
            total = len(instances) * PODS_PER_NODE
            wait_for(lambda: len(running(pods(api, "bench"))) == total, f"{total} pods running",
                     timeout=180, interval=1)

            cp = cluster.control_plane
            env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": "", "PYTHONDONTWRITEBYTECODE": "1",
                   **aws_env, "CLUSTER_NAME": CLUSTER, "STATE_TABLE": "state", "WORK_QUEUE_URL": queue_url,
                   "POWERTOOLS_METRICS_DISABLED": "true"}
            results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
            with CordonWatch(cluster) as watch:
                for (name, profiled), instance in zip(runs, instances, strict=True):
                    spec = {"event": _sqs_event(spot_warning(instance)), "endpoint": cluster.proxy.url,
                            "ca_pem": Path(cp.ca_file).read_text(), "token": ADMIN.token,
                            "results": str(work / "results.json")}
                    (work / "spec.json").write_text(json.dumps(spec))
                    with (work / "container.log").open("w") as log:
                        spawned = time.monotonic()
                        # The handler's logs and metrics go to stdout in Lambda; here to a file.
                        profile = ["-X", "importtime"] if profiled else []
                        subprocess.run([compiler.python, *profile, __file__, "--cold-container",
                                        str(work / "spec.json")],
                                       env={**env, "PYTHONPATH": str(bundles[name])}, stdout=log,
                                       stderr=subprocess.STDOUT, check=False, cwd=work)
                    written = work / "results.json"
                    run = json.loads(written.read_text()) if written.exists() else None
                    if run is None or run["failures"]:
                        log_tail = (work / "container.log").read_text()[-3000:]
                        raise RuntimeError(f"the cold container failed:\n{log_tail}")
                    written.unlink()
                    node = dns[instance]
                    wait_for(lambda node=node: node in watch.seen, f"{node} cordoned", timeout=10,
                             interval=0.05)
                    if profiled:
                        imports = parse_import_times((work / "container.log").read_text())
                        continue
                    cordoned = watch.seen[node]
                    results[name].append({"start": run["started"] - spawned,
                                          "import": run["imported"] - run["started"],
                                          "invocation": cordoned - run["entry"],
                                          "total": cordoned - spawned,
                                          "return": run["returned"] - run["entry"]})
    finally:
        cluster.stop()
        server.stop()
    report_first_invocations(results, compiler.version)
    print("\nthe same, one container under -X importtime (which adds overhead): self times by origin, ms")
    origins = [(origin, us) for origin, us in by_origin(imports).items() if us >= 2000]
    print("  " + ", ".join(f"{origin} {us / 1000:.0f}" for origin, us in origins))
    print(f"  total {sum(us for _, us in imports) / 1000:.0f} ms in {len(imports)} modules; top self times:")
    for module, self_us in sorted(imports, key=lambda row: -row[1])[:TOP]:
        print(f"  {module:44}{self_us / 1000:6.1f}")


def report_first_invocations(results: dict[str, list[dict[str, float]]], python: str) -> None:
    stages = [("interpreter start", "start"), ("handler module import", "import"),
              ("first invocation: entry to cordoned", "invocation"), ("process start to cordoned", "total"),
              ("first invocation: entry to return", "return")]
    count = len(next(iter(results.values())))
    print(f"\nfirst invocation of a cold container, CPython {python}, bundle built for "
          f"{platform.machine()}, {count} containers each, seconds: median (best-worst)")
    print(f"{'':38}" + "".join(f"{name:>24}" for name in results))
    for label, key in stages:
        cells = []
        for runs in results.values():
            values = [r[key] for r in runs]
            cells.append(f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        print(f"{label:38}" + "".join(f"{cell:>24}" for cell in cells))
    worst = max(r["total"] for r in results["with bytecode"])
    print(f"goal: process start to cordoned <= {FIRST_INVOCATION_GOAL_SECONDS:g} s with bytecode, every "
          f"container: {'met' if worst <= FIRST_INVOCATION_GOAL_SECONDS else 'missed'} (worst {worst:.3f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", nargs="?", type=int, default=ROUNDS, help="module import rounds")
    parser.add_argument("--invocations", type=int, default=INVOCATIONS,
                        help="cold containers per variant (0: module imports only)")
    args = parser.parse_args()
    module_imports(args.rounds)
    if args.invocations:
        first_invocations(args.invocations)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cold-container"]:
        cold_container(sys.argv[2])
        sys.exit(0)
    sys.exit(main())
