"""Which Kubernetes node an EC2 instance is."""

from __future__ import annotations

from collections.abc import Iterable

from .objects import Node

HOSTNAME_LABEL = "kubernetes.io/hostname"


def short_name(dns_name: str) -> str:
    return dns_name.split(".", 1)[0]


def match_node(nodes: Iterable[Node], instance_id: str, private_dns_name: str = "") -> Node | None:
    """The node for an instance: by `spec.providerID` first, then the private DNS name (full or
    short) as node name, then the hostname label. None when no node matches."""
    nodes = list(nodes)
    for node in nodes:
        if node.instance_id == instance_id:
            return node
    if not private_dns_name:
        return None
    names = {private_dns_name, short_name(private_dns_name)}
    for node in nodes:
        if node.metadata.name in names and not node.instance_id:
            return node
    for node in nodes:
        if node.metadata.labels.get(HOSTNAME_LABEL) in names and not node.instance_id:
            return node
    return None
