"""The local control plane behaves like a cluster: what every other integration test relies on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from spot_rebalancer.kube import KubeClient
from tests.kube.workloads import deployment, pdb, pods, preferred_affinity, running, wait_for

CAPACITY = "eks.amazonaws.com/capacityType"


def ready_pdb(api, namespace, name, allowed):
    def check():
        status = api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}")["status"]
        settled = status.get("observedGeneration") and status.get("disruptionsAllowed") == allowed
        return status if settled else None

    return wait_for(check, f"PDB {name} to allow {allowed} disruptions")


def test_eviction_through_the_product_client_gets_429_from_a_pdb_and_201_when_allowed(
        api, kube: KubeClient, namespace, nodes):
    nodes(lifecycle="on-demand")
    deployment(api, namespace, "web", replicas=2)
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "2 web pods running")
    pdb(api, namespace, "web", "web", min_available=2)
    ready_pdb(api, namespace, "web", 0)
    victim = running(pods(api, namespace, "web"))[0]["metadata"]["name"]

    refused = kube.evict(namespace, victim)
    assert refused.status == 429, refused.message
    assert "disruption budget" in refused.message

    api.patch(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/web",
              {"spec": {"minAvailable": 1}})
    ready_pdb(api, namespace, "web", 1)
    accepted = kube.evict(namespace, victim)
    assert accepted.status == 201, accepted.message
    assert kube.evict(namespace, "no-such-pod").status == 404


def test_an_evicted_pod_is_recreated_and_scheduled_where_its_preference_points(api, kube, namespace, nodes):
    on_demand = nodes(lifecycle="on-demand")
    spot = nodes(lifecycle="spot", taints=[{"key": "hold", "effect": "NoSchedule"}])
    deployment(api, namespace, "web", affinity=preferred_affinity(CAPACITY, ["SPOT"]))
    first = wait_for(lambda: running(pods(api, namespace, "web")), "the first pod")[0]
    assert first["spec"]["nodeName"] == on_demand.name, "spot was closed, so on-demand it is"

    api.patch(f"/api/v1/nodes/{spot.name}", {"spec": {"taints": []}})
    assert kube.evict(namespace, first["metadata"]["name"]).status == 201

    def replacement():
        return [p for p in running(pods(api, namespace, "web"))
                if p["metadata"]["uid"] != first["metadata"]["uid"]]

    moved = wait_for(replacement, "the replacement pod")[0]
    assert moved["spec"]["nodeName"] == spot.name


def test_pdbs_are_served_as_policy_v1(api, namespace):
    pdb(api, namespace, "web", "web", max_unavailable=1)
    listing = api.get("/apis/policy/v1/poddisruptionbudgets")
    assert listing["apiVersion"] == "policy/v1"
    names = {i["metadata"]["name"] for i in listing["items"] if i["metadata"]["namespace"] == namespace}
    assert names == {"web"}


def test_kubectl_lists_the_simulated_nodes(cluster, nodes):
    made = nodes(lifecycle="spot", arch="arm64")
    out = subprocess.run([str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig),
                          "get", "nodes", "-o", "wide", "-L", CAPACITY],
                         check=True, capture_output=True, text=True).stdout
    line = next(line for line in out.splitlines() if line.startswith(made.name))
    assert " Ready " in line and "SPOT" in line


def test_graceful_deletion_is_completed_by_the_simulator(api, namespace, nodes):
    nodes()
    deployment(api, namespace, "web")
    pod = wait_for(lambda: running(pods(api, namespace, "web")), "a running pod")[0]
    api.delete(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
    wait_for(lambda: not any(p["metadata"]["uid"] == pod["metadata"]["uid"] for p in pods(api, namespace)),
             "the pod to be gone")


def test_make_cluster_prints_a_kubeconfig_and_cleans_up(cluster):
    process = subprocess.Popen([sys.executable, "-m", "tests.kube"], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).parents[2], start_new_session=True)
    try:
        kubeconfig = ""
        for line in process.stdout:
            if line.startswith("kubeconfig: "):
                kubeconfig = line.split(": ", 1)[1].strip()
                break
        assert kubeconfig, "no kubeconfig printed"
        out = subprocess.run([str(cluster.bin_dir / "kubectl"), "--kubeconfig", kubeconfig, "get", "nodes"],
                             check=True, capture_output=True, text=True).stdout
        assert len(out.strip().splitlines()) == 5, out  # a header and four simulated nodes
        workdir = Path(kubeconfig).parent
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0
    assert not workdir.exists()
    time.sleep(0.5)
    leftovers = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True).stdout
    assert leftovers == "", f"processes left running: {leftovers}"
    assert os.getpgid(os.getpid())  # this test's own process group is untouched
