"""The shipped RBAC manifest grants the access entries' group exactly what the functions call."""

from __future__ import annotations

import yaml
from cdk_support import REPO

from infra.construct import KUBERNETES_GROUP
from infra.stack import RBAC_MANIFEST


def documents() -> dict[str, dict]:
    with (REPO / RBAC_MANIFEST).open() as stream:
        return {doc["kind"]: doc for doc in yaml.safe_load_all(stream)}


def test_the_cluster_role_is_least_privilege():
    rules = {(group, resource): sorted(rule["verbs"])
             for rule in documents()["ClusterRole"]["rules"]
             for group in rule["apiGroups"] for resource in rule["resources"]}
    assert rules == {
        ("", "nodes"): ["get", "list", "patch", "watch"],
        ("", "pods"): ["get", "list"],
        ("", "pods/eviction"): ["create"],
        ("", "events"): ["create"],
        ("events.k8s.io", "events"): ["create"],
        ("policy", "poddisruptionbudgets"): ["list"],
        ("apps", "replicasets"): ["get", "list"],
        ("apps", "statefulsets"): ["get", "list"],
        ("apps", "deployments"): ["get", "list"],
    }
    assert all("resourceNames" not in rule and "nonResourceURLs" not in rule
               for rule in documents()["ClusterRole"]["rules"])


def test_the_binding_gives_it_to_the_access_entries_group():
    docs = documents()
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": docs["ClusterRole"]["metadata"]["name"]}
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                    "name": KUBERNETES_GROUP}]
    assert set(docs) == {"ClusterRole", "ClusterRoleBinding"}
