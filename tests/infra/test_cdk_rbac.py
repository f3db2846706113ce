"""The shipped RBAC manifest grants the access entries' group exactly what the functions call."""

from __future__ import annotations

import yaml
from cdk_support import REPO

from infra.config import SpotRebalancerConfig
from infra.construct import KUBERNETES_GROUP
from infra.stack import FORCE_RBAC_MANIFEST, RBAC_MANIFEST, rbac_command


def documents(manifest: str = RBAC_MANIFEST) -> dict[str, dict]:
    with (REPO / manifest).open() as stream:
        return {doc["kind"]: doc for doc in yaml.safe_load_all(stream)}


def test_the_cluster_role_names_plain_verbs_on_plain_resources():
    """What it grants is proved equal to what the code does in tests/integration/test_rbac.py; here,
    that it can say nothing broader: no wildcards, no escalation, no secrets."""
    rules = documents()["ClusterRole"]["rules"]
    assert all("resourceNames" not in rule and "nonResourceURLs" not in rule for rule in rules)
    for rule in rules:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        forbidden = {"escalate", "bind", "impersonate", "delete", "deletecollection"}
        assert not forbidden & set(rule["verbs"]), rule
        assert "secrets" not in rule["resources"], rule


def test_the_binding_gives_it_to_the_access_entries_group():
    docs = documents()
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": docs["ClusterRole"]["metadata"]["name"]}
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                    "name": KUBERNETES_GROUP}]
    assert set(docs) == {"ClusterRole", "ClusterRoleBinding"}


def test_pod_deletions_are_a_role_of_their_own_bound_only_with_force_at_deadline():
    docs = documents(FORCE_RBAC_MANIFEST)
    assert set(docs) == {"ClusterRole", "ClusterRoleBinding"}
    assert docs["ClusterRole"]["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]
    assert docs["ClusterRoleBinding"]["roleRef"]["name"] == docs["ClusterRole"]["metadata"]["name"]
    assert docs["ClusterRoleBinding"]["subjects"] == documents()["ClusterRoleBinding"]["subjects"]
    assert rbac_command(SpotRebalancerConfig(cluster_name="prod")) == f"kubectl apply -f {RBAC_MANIFEST}"
    assert rbac_command(SpotRebalancerConfig(cluster_name="prod", force_at_deadline=True)) == (
        f"kubectl apply -f {RBAC_MANIFEST} -f {FORCE_RBAC_MANIFEST}")
