"""Shared fixtures for tests on the local control plane (tests/kube, see its README).

A test that uses the `cluster` fixture, directly or through another fixture (api, namespace, nodes,
kube, k8s), is marked `cluster` here at collection, so `-m "not cluster"` leaves it out. One
control plane serves the whole session; it starts on first use (about 6 s) and fails the test with
a clear error, never skips it, when the binaries are not built.

Isolation: each test gets a fresh namespace (deleted afterwards), and the nodes it makes with
`nodes` have unique names and are removed, pods and all, when it ends.
"""

from __future__ import annotations

import itertools

import pytest

from tests.kube.api import Api
from tests.kube.cluster import LocalCluster
from tests.kube.nodesim import NodeSimulator, SimNode

_namespaces = itertools.count(1)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything
def pytest_collection_modifyitems(items):
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> LocalCluster:
    """The running cluster: `.kubeconfig` (admin, through the proxy), `.proxy.url`,
    `.control_plane.server` (the apiserver itself), `.kubeconfig_for(token, name)` for a user
    registered at start (`tests.kube.cluster.PRODUCT_USER`), `.nodes` (the simulator), `.bin_dir`
    (kubectl and the components), `.proxy` (request counters, fault hook)."""
    local = LocalCluster().start()
    yield local
    local.stop()


@pytest.fixture
def api(cluster) -> Api:
    """The admin's harness client (JSON in, JSON out), through the policy/v1 proxy."""
    return cluster.admin


@pytest.fixture
def namespace(cluster) -> str:
    """A fresh namespace for this test, deleted after it."""
    name = f"t{next(_namespaces)}"
    cluster.admin.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": name}})
    yield name
    cluster.admin.delete(f"/api/v1/namespaces/{name}")


class NodeMaker:
    """`nodes(**kwargs) -> SimNode` makes one node (NodeSimulator.add_node's arguments: lifecycle,
    arch, zone, cpu, memory, pods, labels, taints, instance_id, ...); `nodes.pool(count, zones=...,
    **kwargs) -> list[SimNode]` makes alike nodes spread over zones."""

    def __init__(self, simulator: NodeSimulator) -> None:
        self._simulator = simulator
        self.made: list[SimNode] = []

    def __call__(self, **kwargs) -> SimNode:
        return self._keep([self._simulator.add_node(**kwargs)])[0]

    def pool(self, count: int, **kwargs) -> list[SimNode]:
        return self._keep(self._simulator.add_nodes(count, **kwargs))

    def _keep(self, made: list[SimNode]) -> list[SimNode]:
        self.made.extend(made)
        return made

    def remove_all(self) -> None:
        for node in self.made:
            self._simulator.remove_node(node.name)


@pytest.fixture
def nodes(cluster) -> NodeMaker:
    """Makes simulated nodes for this test; all of them are removed, with their pods, after it."""
    maker = NodeMaker(cluster.nodes)
    yield maker
    maker.remove_all()


@pytest.fixture
def kube(cluster):
    """The product's own Kubernetes client, as the admin, through the proxy."""
    from spot_rebalancer.kube import KubeClient

    return KubeClient.from_kubeconfig(str(cluster.kubeconfig))


@pytest.fixture
def k8s(cluster):
    """The official `kubernetes` client (an ApiClient), as the admin, through the proxy."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield client
    client.close()
