"""The local control plane behaves like a cluster: what every other integration test relies on.

These tests drive it with the official `kubernetes` client, kubectl and raw HTTP, never with the
product's code, so a harness fault and a product fault cannot hide each other.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, config, watch

from tests.kube.api import ApiError
from tests.kube.cluster import PRODUCT_USER
from tests.kube.proxy import RESET
from tests.kube.workloads import deployment, pods, preferred_affinity, running, wait_for

CAPACITY = "eks.amazonaws.com/capacityType"
REPO = Path(__file__).parents[2]


def evict(k8s, namespace: str, name: str) -> int:
    """A policy/v1 Eviction through the proxy; the HTTP status (ApiException carries the errors)."""
    body = client.V1Eviction(api_version="policy/v1", kind="Eviction",
                             metadata=client.V1ObjectMeta(name=name, namespace=namespace))
    _, status, _ = client.CoreV1Api(k8s).create_namespaced_pod_eviction_with_http_info(name, namespace, body)
    return status


def create_pdb(k8s, namespace: str, app: str, min_available: int) -> client.V1PodDisruptionBudget:
    budget = client.V1PodDisruptionBudget(
        api_version="policy/v1", kind="PodDisruptionBudget", metadata=client.V1ObjectMeta(name=app),
        spec=client.V1PodDisruptionBudgetSpec(min_available=min_available,
                                              selector=client.V1LabelSelector(match_labels={"app": app})))
    return client.PolicyV1Api(k8s).create_namespaced_pod_disruption_budget(namespace, budget)


def settled_pdb(k8s, namespace: str, name: str, allowed: int) -> client.V1PodDisruptionBudget:
    """The PDB once the disruption controller has judged its current generation."""
    def check():
        budget = client.PolicyV1Api(k8s).read_namespaced_pod_disruption_budget(name, namespace)
        judged = budget.status and budget.status.observed_generation == budget.metadata.generation
        return budget if judged and budget.status.disruptions_allowed == allowed else None

    return wait_for(check, f"PDB {name} to allow {allowed} disruptions")


def test_an_evicted_pod_is_recreated_and_scheduled_where_its_preference_points(api, k8s, namespace, nodes):
    on_demand = nodes(lifecycle="on-demand")
    spot = nodes(lifecycle="spot")
    api.patch(f"/api/v1/nodes/{spot.name}", {"spec": {"unschedulable": True}})
    deployment(api, namespace, "web", affinity=preferred_affinity(CAPACITY, ["SPOT"]))
    first = wait_for(lambda: running(pods(api, namespace, "web")), "the first pod")[0]
    assert first["spec"]["nodeName"] == on_demand.name, "spot was cordoned, so on-demand it is"

    api.patch(f"/api/v1/nodes/{spot.name}", {"spec": {"unschedulable": False}})
    assert evict(k8s, namespace, first["metadata"]["name"]) == 201

    def replacement():
        return [p for p in running(pods(api, namespace, "web"))
                if p["metadata"]["uid"] != first["metadata"]["uid"]]

    moved = wait_for(replacement, "the replacement pod")[0]
    assert moved["spec"]["nodeName"] == spot.name
    wait_for(lambda: [p["metadata"]["uid"] for p in pods(api, namespace)] == [moved["metadata"]["uid"]],
             "the evicted pod to be gone")


def test_the_scheduler_scores_with_the_1_31_default_weights(api, namespace, nodes):
    """TaintToleration weighs 3 and NodeAffinity 2: a spot node marked PreferNoSchedule loses every
    replica to an alike on-demand node, preferred affinity notwithstanding (1.20's own defaults, 1
    and 1, would tie them and spread the replicas over both)."""
    on_demand = nodes(lifecycle="on-demand")
    nodes(lifecycle="spot", taints=[{"key": "DeletionCandidateOfClusterAutoscaler", "value": "1",
                                     "effect": "PreferNoSchedule"}])
    deployment(api, namespace, "web", replicas=6, affinity=preferred_affinity(CAPACITY, ["SPOT"]))
    placed = wait_for(lambda: (lambda r: r if len(r) == 6 else None)(running(pods(api, namespace, "web"))),
                      "six running replicas")
    assert {p["spec"]["nodeName"] for p in placed} == {on_demand.name}


def test_an_eviction_a_pdb_forbids_gets_429_and_201_once_it_allows_it(api, k8s, namespace, nodes):
    nodes()
    deployment(api, namespace, "web", replicas=2)
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "2 web pods running")
    create_pdb(k8s, namespace, "web", min_available=2)
    settled = settled_pdb(k8s, namespace, "web", allowed=0)
    assert settled.status.current_healthy == 2, "the controller counted the pods, not just defaulted"
    victim = running(pods(api, namespace, "web"))[0]["metadata"]["name"]

    with pytest.raises(client.ApiException) as refused:
        evict(k8s, namespace, victim)
    assert refused.value.status == 429
    assert "disruption budget" in json.loads(refused.value.body)["message"]

    client.PolicyV1Api(k8s).patch_namespaced_pod_disruption_budget(
        "web", namespace, {"spec": {"minAvailable": 1}})
    settled_pdb(k8s, namespace, "web", allowed=1)
    assert evict(k8s, namespace, victim) == 201
    wait_for(lambda: victim not in {p["metadata"]["name"] for p in pods(api, namespace)}, "the victim gone")


def test_kubectl_lists_the_simulated_nodes(cluster, nodes):
    made = nodes.pool(2, lifecycle="spot", arch="arm64", lifecycle_label=True)
    out = subprocess.run([str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig),
                          "get", "nodes", "-o", "wide", "-L", f"{CAPACITY},node.kubernetes.io/lifecycle"],
                         check=True, capture_output=True, text=True).stdout
    for node in made:
        line = next((line for line in out.splitlines() if line.startswith(node.name + " ")), "")
        assert line.split()[1] == "Ready", out
        assert node.internal_ip in line.split() and line.split()[-2:] == ["SPOT", "spot"], out


def test_simulated_nodes_look_like_eks_workers(api, nodes):
    pool = nodes.pool(2, lifecycle="spot", zones=("us-east-1a", "us-east-1b"))
    assert [n.zone for n in pool] == ["us-east-1a", "us-east-1b"]
    spot = pool[0]
    on_demand = nodes(lifecycle="on-demand", arch="arm64", capacity_label=False, lifecycle_label=True)
    node = api.get(f"/api/v1/nodes/{spot.name}")
    labels = node["metadata"]["labels"]
    assert spot.name == spot.private_dns_name == f"ip-{spot.internal_ip.replace('.', '-')}.ec2.internal"
    assert labels["topology.kubernetes.io/zone"] == spot.zone == "us-east-1a"
    assert labels[CAPACITY] == "SPOT" and labels["kubernetes.io/arch"] == "amd64"
    assert node["spec"]["providerID"] == f"aws:///us-east-1a/{spot.instance_id}"
    assert {"type": "InternalIP", "address": spot.internal_ip} in node["status"]["addresses"]
    assert {"type": "Hostname", "address": spot.private_dns_name} in node["status"]["addresses"]
    assert node["status"]["allocatable"]["pods"] == "110"
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    other = api.get(f"/api/v1/nodes/{on_demand.name}")["metadata"]["labels"]
    assert other["node.kubernetes.io/lifecycle"] == "on-demand" and CAPACITY not in other
    assert on_demand.name.endswith(".eu-west-1.compute.internal")
    assert other["node.kubernetes.io/instance-type"] == "m6g.xlarge"


def test_pdbs_are_presented_as_policy_v1(api, k8s, namespace):
    create_pdb(k8s, namespace, "web", min_available=1)
    policy = client.PolicyV1Api(k8s)
    listing = policy.list_namespaced_pod_disruption_budget(namespace)
    assert listing.api_version == "policy/v1"
    assert [i.metadata.name for i in listing.items] == ["web"]
    assert policy.read_namespaced_pod_disruption_budget("web", namespace).api_version == "policy/v1"
    raw = api.get("/apis/policy/v1/poddisruptionbudgets")
    assert raw["apiVersion"] == "policy/v1"
    assert namespace in {i["metadata"]["namespace"] for i in raw["items"]}
    assert "policy/v1beta1" not in json.dumps(raw)


@pytest.mark.parametrize("kind", ["configmaps", "poddisruptionbudgets"])
def test_watches_stream_through_the_proxy_event_by_event(api, k8s, namespace, kind):
    """A second object made after the first event arrived is seen at once, long before the watch
    ends: the proxy forwards each event as it comes, also where it rewrites policy/v1."""
    core, policy = client.CoreV1Api(k8s), client.PolicyV1Api(k8s)
    make, lister = {
        "configmaps": (lambda name: core.create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name))), core.list_namespaced_config_map),
        "poddisruptionbudgets": (lambda name: create_pdb(k8s, namespace, name, min_available=1),
                                 policy.list_namespaced_pod_disruption_budget),
    }[kind]
    since = lister(namespace).metadata.resource_version
    make("first")
    seen, began = [], time.monotonic()
    stream = watch.Watch()
    for event in stream.stream(lister, namespace, resource_version=since, timeout_seconds=60):
        raw = event["raw_object"]
        if event["type"] != "ADDED" or raw["metadata"]["name"] not in ("first", "second"):
            continue  # the namespace's own kube-root-ca.crt, or a PDB's status update
        seen.append((raw["metadata"]["name"], raw["apiVersion"]))
        if len(seen) == 1:
            make("second")
        else:
            stream.stop()
    version = "policy/v1" if kind == "poddisruptionbudgets" else "v1"
    assert seen == [("first", version), ("second", version)]
    assert time.monotonic() - began < 20, "the events waited for the watch to end"


def test_graceful_deletion_is_completed_by_the_simulator_after_its_delay(cluster, api, namespace, nodes,
                                                                       monkeypatch):
    monkeypatch.setattr(cluster.nodes, "deletion_delay", 2)
    nodes()
    deployment(api, namespace, "web")
    pod = wait_for(lambda: running(pods(api, namespace, "web")), "a running pod")[0]
    path = f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}"
    asked = time.monotonic()
    terminating = api.delete(path)
    assert terminating["metadata"]["deletionTimestamp"], "a graceful deletion, which the kubelet completes"

    def gone():
        try:
            return api.get(path)["metadata"]["uid"] != pod["metadata"]["uid"]
        except ApiError as exc:
            return exc.status == 404

    wait_for(gone, "the pod to be gone")
    assert time.monotonic() - asked >= 2, "deleted before the simulated containers stopped"


def test_a_removed_node_takes_its_pods_and_they_are_recreated_elsewhere(cluster, api, namespace, nodes):
    doomed = nodes(lifecycle="spot")
    deployment(api, namespace, "web", replicas=3)
    wait_for(lambda: len(running(pods(api, namespace, "web"))) == 3, "3 web pods on the doomed node")
    survivor = nodes(lifecycle="on-demand")

    cluster.nodes.remove_node(doomed.name)
    with pytest.raises(ApiError) as missing:
        api.get(f"/api/v1/nodes/{doomed.name}")
    assert missing.value.status == 404
    wait_for(lambda: not [p for p in pods(api, namespace) if p["spec"].get("nodeName") == doomed.name],
             "no pod left on the removed node", timeout=5)
    moved = wait_for(lambda: len(running(pods(api, namespace, "web"))) == 3
                     and running(pods(api, namespace, "web")), "3 replacements running")
    assert {p["spec"]["nodeName"] for p in moved} == {survivor.name}


def test_a_full_node_of_110_pods_is_running_within_seconds(api, namespace, nodes):
    node = nodes(cpu="64", memory="256Gi", pods=120)
    began = time.monotonic()
    deployment(api, namespace, "many", replicas=110, cpu="10m", memory="16Mi")
    ready = wait_for(lambda: len(running(pods(api, namespace, "many"))) == 110
                     and running(pods(api, namespace, "many")), "110 pods running", timeout=30, interval=0.5)
    assert {p["spec"]["nodeName"] for p in ready} == {node.name}
    assert len({p["status"]["podIP"] for p in ready}) == 110, "every pod has an IP of its own"
    assert {p["status"]["hostIP"] for p in ready} == {node.internal_ip}
    assert time.monotonic() - began < 30


def test_a_registered_user_is_authenticated_and_held_to_rbac(cluster, api, namespace, tmp_path):
    as_product = config.new_client_from_config(
        config_file=str(cluster.kubeconfig_for(PRODUCT_USER.token, PRODUCT_USER.name)))
    stranger = config.new_client_from_config(config_file=str(cluster.control_plane.write_kubeconfig(
        tmp_path / "stranger.kubeconfig", cluster.proxy.url, "not-a-registered-token")))
    with as_product, stranger:
        with pytest.raises(client.ApiException) as forbidden:
            client.CoreV1Api(as_product).list_namespaced_config_map(namespace)
        assert forbidden.value.status == 403
        assert f'User "{PRODUCT_USER.name}"' in json.loads(forbidden.value.body)["message"]
        with pytest.raises(client.ApiException) as unknown:
            client.CoreV1Api(stranger).list_namespaced_config_map(namespace)
        assert unknown.value.status == 401

        # A binding to the user's group is what lets it in: groups come from the token file.
        api.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles", {
            "metadata": {"name": "read-config"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]})
        api.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", {
            "metadata": {"name": "read-config"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-config"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                          "name": PRODUCT_USER.groups[0]}]})

        def allowed():
            try:
                return client.CoreV1Api(as_product).list_namespaced_config_map(namespace).items is not None
            except client.ApiException as exc:
                assert exc.status == 403, exc
                return False

        wait_for(allowed, "the binding to take effect")


def test_the_proxy_counts_requests_by_method_and_path(cluster, api, namespace):
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    before = cluster.proxy.requests[("GET", path)], cluster.proxy.responses[("GET", path, 200)]
    for limit in (1, 2, 3):
        api.get(f"{path}?limit={limit}")
    after = cluster.proxy.requests[("GET", path)], cluster.proxy.responses[("GET", path, 200)]
    assert (after[0] - before[0], after[1] - before[1]) == (3, 3)


def test_a_fault_hook_answers_or_drops_requests_in_the_apiservers_place(cluster, api, namespace):
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    outage = json.dumps({"kind": "Status", "apiVersion": "v1", "code": 503}).encode()
    answers = {f"{path}?fault=503": (503, outage), f"{path}?fault=reset": RESET}
    http = urllib3.PoolManager(ca_certs=cluster.control_plane.ca_file, retries=False)
    cluster.proxy.set_fault(lambda method, asked: answers.get(asked))
    try:
        assert http.request("GET", f"{cluster.proxy.url}{path}?fault=503").status == 503
        # A TCP reset on the wire; under TLS, Python reports it as the connection closed.
        with pytest.raises(urllib3.exceptions.ProtocolError):
            http.request("GET", f"{cluster.proxy.url}{path}?fault=reset")
        assert api.get(path)["kind"] == "ConfigMapList", "requests the hook lets through reach the apiserver"
    finally:
        cluster.proxy.set_fault(None)
    assert cluster.proxy.responses[("GET", path, 503)] == 0, "an injected answer is not the apiserver's"


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its command line."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = command_line(child)
            todo.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["terminated", "killed"])
def test_make_cluster_prints_a_kubeconfig_and_leaves_no_process_behind(cluster, stop):
    process = subprocess.Popen([sys.executable, "-m", "tests.kube"], stdout=subprocess.PIPE, text=True,
                               cwd=REPO, start_new_session=True)
    try:
        printed = next((line for line in process.stdout if line.startswith("kubeconfig: ")), "")
        kubeconfig = Path(printed.removeprefix("kubeconfig: ").strip())
        assert printed and kubeconfig.is_file(), f"no kubeconfig printed: {printed!r}"
        kubectl = [str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(kubeconfig)]
        out = subprocess.run([*kubectl, "get", "nodes", "--no-headers"],
                             check=True, capture_output=True, text=True).stdout
        assert len(out.splitlines()) == 4 and all(" Ready " in line for line in out.splitlines()), out
        components = descendants(process.pid)
        assert len(components) == 4, components  # etcd, apiserver, controller-manager, scheduler
    finally:
        process.send_signal(stop)
        process.wait(timeout=30)

    def left_running():
        return {pid: cmd for pid, cmd in components.items() if command_line(pid) == cmd}

    # A killed parent leaves its components to the death signal, and to init to reap.
    wait_for(lambda: not left_running(), "every component to exit", timeout=10)
    if stop == signal.SIGTERM:
        assert process.returncode == 0
        assert not kubeconfig.parent.exists(), "the work directory was left behind"
    else:
        shutil.rmtree(kubeconfig.parent)


def test_a_control_plane_without_its_binaries_says_how_to_build_them(tmp_path, monkeypatch):
    from tests.kube.controlplane import ControlPlane, ControlPlaneError

    monkeypatch.setenv("SPOT_REBALANCER_CACHE", str(tmp_path))
    with pytest.raises(ControlPlaneError, match=r"run tests/kube/build\.sh"):
        ControlPlane(workdir=tmp_path / "work").start()


def test_concurrent_evictions_through_the_proxy_each_get_their_own_answer(api, k8s, namespace, nodes):
    nodes(cpu="8")
    deployment(api, namespace, "web", replicas=12)
    victims = [p["metadata"]["name"] for p in wait_for(
        lambda: len(running(pods(api, namespace, "web"))) == 12 and running(pods(api, namespace, "web")),
        "12 web pods")]
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda v=v: statuses.append(evict(k8s, namespace, v)))
               for v in victims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [201] * 12
