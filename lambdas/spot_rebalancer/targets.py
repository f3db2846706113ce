"""From an EC2 instance id to what acts on it: the instance, the cluster this deployment manages it
for, that cluster's API and the instance's node. Drains, tagging and launch completion resolve their
targets here, and each stops at the first step that misses, with the reason."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .aws import Ec2, Instance
from .config import Settings
from .kube import KubeClient
from .nodes import match_node, short_name
from .objects import Node
from .ownership import managed_cluster


class Miss(enum.StrEnum):
    """Why an instance is not acted on; each value is the reason reported."""

    NO_INSTANCE = "instance no longer exists"
    TERMINATED = "instance is already terminated"
    NOT_MANAGED = "instance belongs to no managed cluster"
    NOT_A_NODE = "instance is not a node of the cluster"
    STALE = "instance started again after the event"


@dataclass(frozen=True, slots=True)
class ManagedInstance:
    instance: Instance
    cluster: str


@dataclass(frozen=True, slots=True)
class Target:
    instance: Instance
    cluster: str
    kube: KubeClient
    node: Node


class TargetResolver:
    def __init__(self, settings: Settings, ec2: Ec2, kube_for: Callable[[str], KubeClient]) -> None:
        self._settings = settings
        self._ec2 = ec2
        self.kube_for = kube_for

    def instance(self, instance_id: str, *, live: bool = False,
                 since: datetime | None = None) -> ManagedInstance | Miss:
        """The instance and the cluster this deployment manages it for. With `live`, a terminated
        instance is a miss: its node may still be listed for a while, but its pods went with it.
        With `since` (an event's time), an instance that started running after it is a miss: the
        event was about its previous run (a late delivery, or a replay from a dead-letter queue)."""
        instance = self._ec2.describe([instance_id]).get(instance_id)
        if instance is None:
            return Miss.NO_INSTANCE
        if live and instance.state == "terminated":
            return Miss.TERMINATED
        # Both times have whole seconds at AWS: an instance launched in the event's second is its own.
        launched = instance.launched_at.replace(microsecond=0) if instance.launched_at else None
        if since is not None and launched is not None and launched > since:
            return Miss.STALE
        cluster = managed_cluster(instance.tags, self._settings.cluster_name)
        if not cluster:
            return Miss.NOT_MANAGED
        return ManagedInstance(instance, cluster)

    def node(self, managed: ManagedInstance, until: float | None = None) -> Target | Miss:
        """The managed instance's node, on its cluster; with `until`, the target's client is bounded
        by it (KubeClient.bounded)."""
        kube = self.kube_for(managed.cluster)
        if until is not None:
            kube = kube.bounded(until)
        node = locate_node(kube, managed.instance.instance_id, managed.instance.private_dns_name)
        if node is None:
            return Miss.NOT_A_NODE
        return Target(managed.instance, managed.cluster, kube, node)

    def resolve(self, instance_id: str, *, live: bool = False, since: datetime | None = None,
                until: float | None = None) -> Target | Miss:
        managed = self.instance(instance_id, live=live, since=since)
        return managed if isinstance(managed, Miss) else self.node(managed, until)


def locate_node(kube: KubeClient, instance_id: str, private_dns_name: str = "") -> Node | None:
    """Find the instance's node with as few requests as possible.

    On EKS the node is usually named after the private DNS name, so one GET settles it when the
    providerID agrees; otherwise the node list is searched.
    """
    for name in dict.fromkeys(filter(None, (private_dns_name, short_name(private_dns_name)))):
        node = kube.get_node(name)
        if node is not None and node.instance_id == instance_id:
            return node
    return match_node(kube.list_nodes(), instance_id, private_dns_name)
