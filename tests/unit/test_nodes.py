import pytest

from spot_rebalancer.nodes import match_node
from spot_rebalancer.objects import Node, NodeSpec, ObjectMeta


def node(name: str, provider_id: str = "", hostname: str = "") -> Node:
    labels = {"kubernetes.io/hostname": hostname} if hostname else {}
    return Node(metadata=ObjectMeta(name=name, labels=labels), spec=NodeSpec(provider_id=provider_id))


DNS = "ip-10-0-1-2.eu-west-1.compute.internal"


@pytest.mark.parametrize(("nodes", "expected"), [
    ([node("a", "aws:///eu-west-1a/i-1")], "a"),
    # providerID wins over a name that looks right but belongs to another instance.
    ([node(DNS, "aws:///eu-west-1a/i-9"), node("b", "aws:///eu-west-1a/i-1")], "b"),
    ([node(DNS)], DNS),
    ([node("ip-10-0-1-2")], "ip-10-0-1-2"),
    ([node("custom", hostname="ip-10-0-1-2")], "custom"),
    # A node with another instance's providerID is never matched by name.
    ([node(DNS, "aws:///eu-west-1a/i-9")], None),
    ([node("unrelated")], None),
    ([], None),
], ids=["by provider id", "provider id wins over a matching name", "by private dns name", "by short dns name",
        "by hostname label", "another instance's node with our name", "unrelated node", "no nodes"])
def test_match_node(nodes, expected):
    found = match_node(nodes, "i-1", DNS)
    assert (found.metadata.name if found else None) == expected


def test_without_dns_only_the_provider_id_matches():
    assert match_node([node("ip-10-0-1-2")], "i-1", "") is None
