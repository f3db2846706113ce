"""`spot-rebalancer handle --dry-run` against the live local cluster: it prints what the function
would do to the node (taint, cordon, evict, skip) and writes nothing; a bad event exits 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.kube.workloads import daemonset, deployment, pods, running, wait_for

SAMPLE = Path(__file__).parents[1] / "events" / "spot-interruption-terminate.json"
INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}\b")


def spot_rebalancer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spot_rebalancer.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parents[2])


def test_handle_dry_run_prints_the_drain_and_changes_nothing(api, cluster, namespace, nodes, tmp_path):
    node = nodes(lifecycle="spot")
    deployment(api, namespace, "web", replicas=2)
    daemonset(api, namespace, "agent")
    wait_for(lambda: len(running(pods(api, namespace))) == 3, "web and the agent running")
    web = sorted(p["metadata"]["name"] for p in pods(api, namespace, "web"))
    (agent,) = [p["metadata"]["name"] for p in pods(api, namespace, "agent")
                if p["spec"]["nodeName"] == node.name]
    event = tmp_path / "event.json"
    event.write_text(INSTANCE_ID.sub(node.instance_id, SAMPLE.read_text()))
    cluster.proxy.reset_counts()

    done = spot_rebalancer("handle", "--kubeconfig", str(cluster.kubeconfig), "--event", str(event),
                           "--dry-run", "--json")

    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    mine = [line for line in lines if line.get("namespace", namespace) == namespace]
    assert [(line["action"], line.get("pod", "")) for line in mine] == [
        ("taint", ""), ("cordon", ""), ("skip", agent), *(("evict", name) for name in web)]
    assert all(line["node"] == node.name for line in mine)
    assert mine[0]["reason"] == "spot-rebalancer/spot-interruption"
    assert mine[2]["reason"] == "daemonset"
    # The sample's warning is long past: the grace period is cut to the shortest graceful one.
    assert {line["reason"] for line in mine[3:]} == {"spot-interruption (grace 1s)"}
    writes = [key for key in cluster.proxy.requests if key[0] not in ("GET",)]
    assert writes == [], f"a dry run wrote to the cluster: {writes}"
    after = api.get(f"/api/v1/nodes/{node.name}")
    assert not after["spec"].get("unschedulable") and not after["spec"].get("taints")
    assert len(running(pods(api, namespace, "web"))) == 2


def test_handle_with_a_bad_event_exits_2_naming_the_problem(cluster, tmp_path):
    event = tmp_path / "event.json"
    raw = json.loads(SAMPLE.read_text())
    raw["detail"]["instance-action"] = "explode"
    event.write_text(json.dumps(raw))

    done = spot_rebalancer("handle", "--kubeconfig", str(cluster.kubeconfig), "--event", str(event),
                           "--dry-run", "--json")

    assert done.returncode == 2
    assert done.stdout == ""
    assert "instance-action" in done.stderr and "1b2f6c8e" in done.stderr
