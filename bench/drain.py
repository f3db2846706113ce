"""Drain benchmark: a 110-pod node drained by spot-rebalancer and, in the same run on a twin node,
by Debian's `kubectl drain --ignore-daemonsets --delete-emptydir-data --force` (v1.20).

Both talk to the same local control plane through the same loopback proxy; the node simulator
completes every graceful deletion at once, so "all gone" measures the drains, not the pods.
Run: .venv/bin/python bench/drain.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from spot_rebalancer.config import Settings
from spot_rebalancer.drain import wait_until_gone
from spot_rebalancer.drain_policy import DrainReason, backoff_seconds, plan_drain
from spot_rebalancer.evictions import MAX_WORKERS, EvictionSchedule, evict_all
from spot_rebalancer.kube import KubeClient
from tests.kube.cluster import LocalCluster
from tests.kube.workloads import pods, running, wait_for

PODS = 110


def fill(api, namespace: str, node: str, name: str) -> None:
    api.post(f"/apis/apps/v1/namespaces/{namespace}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": PODS, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "nodeSelector": {"kubernetes.io/hostname": node},
                     "containers": [{"name": "app", "image": "registry.invalid/app:1",
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}})


def ours(kube: KubeClient, node_name: str) -> dict[str, float]:
    start = time.monotonic()
    node = kube.get_node(node_name)
    node_pods = kube.list_pods(node_name)
    now = datetime.now(UTC)
    plan = plan_drain(DrainReason.SPOT_INTERRUPTION, node, node_pods, Settings(), now, event_deadline=None,
                      started=now)
    kube.patch_node(node_name, plan.patch.body)
    cordoned = time.monotonic()
    schedule = EvictionSchedule(until=time.monotonic() + 60, backoff=backoff_seconds,
                                clock=time.monotonic, sleep=time.sleep)
    to_evict = [p for wave in plan.waves for p in wave.pods]
    issued = []  # when each eviction request left, as the eviction layer's threads call the client
    round_trips = []
    send = kube.evict

    def timed_evict(*args, **kwargs):
        sent = time.monotonic()
        issued.append(sent)
        response = send(*args, **kwargs)
        round_trips.append(time.monotonic() - sent)
        return response

    kube.evict = timed_evict
    evict_all(kube, to_evict, lambda _pod: None, schedule)
    accepted = time.monotonic()
    left = wait_until_gone(kube, node_name, to_evict, time.monotonic() + 60, time.monotonic, time.sleep,
                           poll_seconds=0.05)
    assert not left, f"{len(left)} pods left"
    return {"cordon": cordoned - start, "issued": max(issued) - cordoned, "requests": len(issued),
            "round_trip": statistics.median(round_trips), "workers": MAX_WORKERS,
            "accepted": accepted - start, "gone": time.monotonic() - start}


def kubectl(cluster, node_name: str) -> dict[str, float]:
    start = time.monotonic()
    process = subprocess.Popen([str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig),
                                "drain", node_name, "--ignore-daemonsets", "--delete-emptydir-data",
                                "--force", "--timeout=120s"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    marks: dict[str, float] = {}
    evicting = 0
    for line in process.stdout:
        now = time.monotonic() - start
        if line.rstrip().endswith("cordoned"):
            marks["cordon"] = now
        if line.startswith("evicting pod"):
            evicting += 1
            if evicting == PODS:
                marks["accepted"] = now  # printed before the call, not its acceptance
    if process.wait() != 0:
        raise RuntimeError("kubectl drain failed")
    marks["gone"] = time.monotonic() - start
    return marks


def main() -> int:
    cluster = LocalCluster().start()
    try:
        api = cluster.admin
        api.post("/api/v1/namespaces",
                 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
        node_a = cluster.nodes.add_node(cpu="64", memory="256Gi", pods=PODS + 10)
        node_b = cluster.nodes.add_node(cpu="64", memory="256Gi", pods=PODS + 10)
        fill(api, "bench", node_a.name, "a")
        fill(api, "bench", node_b.name, "b")
        wait_for(lambda: len(running(pods(api, "bench"))) == 2 * PODS, f"{2 * PODS} pods running",
                 timeout=180, interval=1)
        # Stop the Deployments from recreating pods on the drained nodes' twins mid-measurement.
        for name in ("a", "b"):
            api.patch(f"/apis/apps/v1/namespaces/bench/deployments/{name}", {"spec": {"paused": True}})
        # Ours runs in a process of its own, like kubectl, so it does not share an interpreter
        # (and its lock) with the loopback proxy that serves both.
        out = subprocess.run([sys.executable, __file__, "--ours", str(cluster.kubeconfig), node_a.name],
                             check=True, capture_output=True, text=True).stdout
        ours_t = json.loads(out)
        kubectl_t = kubectl(cluster, node_b.name)
        print(f"drain of a {PODS}-pod node, seconds (same cluster, same run)")
        print(f"{'':24}{'ours':>8}{'kubectl':>10}{'ratio':>8}")
        for key, label in (("cordon", "to cordon"), ("gone", "to all pods gone")):
            print(f"{label:24}{ours_t[key]:8.3f}{kubectl_t[key]:10.3f}{ours_t[key] / kubectl_t[key]:8.2f}")
        print(f"ours, all {ours_t['requests']} eviction requests issued {ours_t['issued']:.3f}s after the "
              f"cordon; all accepted at {ours_t['accepted']:.3f}s ({ours_t['workers']} at a time, median "
              f"round trip {ours_t['round_trip']:.3f}s: each later request waits for a worker to be free)")
        print(f"kubectl had printed its last 'evicting pod' at {kubectl_t['accepted']:.3f}s, before its "
              "client-side rate limit let the calls out")
        # The simulator completes a deletion as soon as the eviction is accepted, so "all pods gone"
        # is when the last eviction was accepted, plus one poll.
        ratio = ours_t["gone"] / kubectl_t["gone"]
        print(f"goal: ours <= 0.5 of kubectl: {'met' if ratio <= 0.5 else 'missed'} ({ratio:.2f})")
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ours"]:
        print(json.dumps(ours(KubeClient.from_kubeconfig(sys.argv[2]), sys.argv[3])))
        sys.exit(0)
    sys.exit(main())
