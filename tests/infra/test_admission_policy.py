"""The optional ValidatingAdmissionPolicy (infra/rbac/spot-rebalancer-admission.yaml) lets through
every node update the product makes and refuses the others. The local apiserver (1.20) predates
admission policies, so its CEL expressions are evaluated here with a CEL interpreter, against updates
made by the product's own patch functions."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import celpy
import msgspec
import pytest
import yaml
from cdk_support import REPO

from spot_rebalancer.config import Settings
from spot_rebalancer.drain_policy import DrainReason, node_drain_patch, node_revert_patch
from spot_rebalancer.objects import Node
from spot_rebalancer.tagging import label_patch

POLICY_FILE = REPO / "infra" / "rbac" / "spot-rebalancer-admission.yaml"
NOW = datetime(2024, 3, 14, 9, 27, tzinfo=UTC)
NODE = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": "ip-10-0-0-1.eu-west-1.compute.internal", "resourceVersion": "7",
                 "labels": {"kubernetes.io/hostname": "ip-10-0-0-1",
                            "eks.amazonaws.com/capacityType": "SPOT"},
                 "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
    "spec": {"providerID": "aws:///eu-west-1a/i-0123456789abcdef0",
             "taints": [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]},
}


def policy() -> dict[str, Any]:
    with POLICY_FILE.open() as stream:
        docs = {doc["kind"]: doc for doc in yaml.safe_load_all(stream)}
    assert docs["ValidatingAdmissionPolicyBinding"]["spec"]["policyName"] == docs[
        "ValidatingAdmissionPolicy"]["metadata"]["name"]
    return docs["ValidatingAdmissionPolicy"]["spec"]


def refused_by(old: dict, new: dict, groups: list[str]) -> list[str]:
    """The messages of the validations the update fails (none when it is let through, or when the
    policy does not apply to the user)."""
    spec, env = policy(), celpy.Environment()

    def evaluate(expression: str, activation: dict) -> Any:
        return env.program(env.compile(expression)).evaluate(activation)

    activation: dict[str, Any] = {"object": celpy.json_to_cel(new), "oldObject": celpy.json_to_cel(old),
                                  "request": celpy.json_to_cel({"userInfo": {"groups": groups}})}
    if not all(evaluate(c["expression"], activation) for c in spec["matchConditions"]):
        return []
    variables: dict[str, Any] = {}
    for variable in spec["variables"]:
        variables[variable["name"]] = evaluate(variable["expression"],
                                               {**activation, "variables": celpy.celtypes.MapType(variables)})
    activation["variables"] = celpy.celtypes.MapType(variables)
    return [v["message"] for v in spec["validations"] if not evaluate(v["expression"], activation)]


def merged(node: dict, patch: dict) -> dict:
    """A strategic merge patch as the apiserver applies the product's: labels and annotations merge by
    key (None removes), the taint list is replaced whole, spec fields are set."""
    after = copy.deepcopy(node)
    for part in ("labels", "annotations"):
        for key, value in patch.get("metadata", {}).get(part, {}).items():
            if value is None:
                after["metadata"].get(part, {}).pop(key, None)
            else:
                after["metadata"].setdefault(part, {})[key] = value
    after["spec"].update(patch.get("spec", {}))
    return after


def decoded(node: dict) -> Node:
    return msgspec.json.decode(msgspec.json.encode(node), type=Node)


def product_updates() -> list[tuple[str, dict, dict]]:
    lb = Settings(exclude_from_load_balancers=True, recommendation_default="drain")
    drained = merged(NODE, node_drain_patch(decoded(NODE), DrainReason.SPOT_INTERRUPTION, lb, NOW).body)
    recommended = merged(NODE, node_drain_patch(decoded(NODE), DrainReason.REBALANCE_RECOMMENDATION, lb,
                                                NOW).body)
    later = NOW + timedelta(days=1)
    reverted = merged(recommended, node_revert_patch(decoded(recommended), later, lb).body)
    labelled = merged(NODE, label_patch(decoded(NODE), "node.kubernetes.io/lifecycle", "spot"))
    return [("spot drain", NODE, drained), ("recommendation", NODE, recommended),
            ("revert", recommended, reverted), ("lifecycle label", NODE, labelled)]


@pytest.mark.parametrize(("old", "new"), [(old, new) for _, old, new in product_updates()],
                         ids=[name for name, _, _ in product_updates()])
def test_every_update_the_product_makes_is_let_through(old, new):
    assert new != old
    assert refused_by(old, new, ["spot-rebalancer", "system:authenticated"]) == []


def hostile(change) -> dict:
    after = copy.deepcopy(NODE)
    change(after)
    return after


@pytest.mark.parametrize(("new", "message"), [
    (hostile(lambda n: n["spec"].update(taints=[])), "only its own taints"),
    (hostile(lambda n: n["spec"]["taints"].append({"key": "evil", "effect": "NoExecute"})),
     "only its own taints"),
    (hostile(lambda n: n["metadata"]["labels"].update({"eks.amazonaws.com/capacityType": "ON_DEMAND"})),
     "only the lifecycle and load-balancer exclusion labels"),
    (hostile(lambda n: n["metadata"]["labels"].pop("kubernetes.io/hostname")),
     "only the lifecycle and load-balancer exclusion labels"),
    (hostile(lambda n: n["metadata"]["annotations"].update({"other": "x"})),
     "only its own action annotation"),
    (hostile(lambda n: n["spec"].update(providerID="aws:///eu-west-1a/i-0fedcba9876543210")), "providerID"),
], ids=["removes another's taint", "adds a taint not its own", "changes another label", "removes a label",
        "adds another annotation", "changes the providerID"])
def test_any_other_change_is_refused(new, message):
    [refused] = refused_by(NODE, new, ["spot-rebalancer"])
    assert message in refused


def test_other_users_are_not_its_business():
    anything = hostile(lambda n: n["spec"].update(taints=[], providerID=""))
    assert refused_by(NODE, anything, ["system:masters"]) == []
