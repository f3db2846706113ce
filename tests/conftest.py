"""Shared fixtures. Tests that use `cluster` (directly or through another fixture) get the
`cluster` marker and run against the real local control plane (tests/kube)."""

from __future__ import annotations

import itertools

import pytest

from tests.kube.cluster import LocalCluster
from tests.kube.nodesim import SimNode

_namespaces = itertools.count(1)


def pytest_collection_modifyitems(items):
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster():
    local = LocalCluster().start()
    yield local
    local.stop()


@pytest.fixture
def api(cluster):
    """The admin's harness client, through the policy/v1 proxy."""
    return cluster.admin


@pytest.fixture
def namespace(cluster):
    name = f"t{next(_namespaces)}"
    cluster.admin.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": name}})
    yield name
    cluster.admin.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def nodes(cluster):
    """`nodes(lifecycle=..., arch=..., ...) -> SimNode`; every node made is removed after the test."""
    made: list[SimNode] = []

    def add(**kwargs) -> SimNode:
        node = cluster.nodes.add_node(**kwargs)
        made.append(node)
        return node

    yield add
    for node in made:
        cluster.nodes.remove_node(node.name)


@pytest.fixture
def kube(cluster):
    """The product's own Kubernetes client, as the admin, through the proxy."""
    from spot_rebalancer.kube import KubeClient

    return KubeClient.from_kubeconfig(str(cluster.kubeconfig))
