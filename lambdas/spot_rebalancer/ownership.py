"""Which EKS cluster an EC2 instance belongs to, by its tags, and whether this deployment manages it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

CLUSTER_NAME_TAGS = ("eks:cluster-name", "aws:eks:cluster-name")
# Instances and Auto Scaling groups of cluster X carry `kubernetes.io/cluster/X` ("owned" or "shared");
# EKS managed node groups, Karpenter and eksctl set it.
CLUSTER_TAG_PREFIX = "kubernetes.io/cluster/"
OWNED = "owned"

Tags = Mapping[str, str] | Iterable[Mapping[str, str]]


def cluster_from_tags(tags: Tags, default: str = "") -> str:
    """The EKS cluster an instance belongs to, by its EC2 tags; `default` when no tag names one.

    `tags` is a {key: value} mapping or EC2's [{"Key": ..., "Value": ...}] list. A name tag
    (`eks:cluster-name`, then `aws:eks:cluster-name`) wins. Otherwise the `kubernetes.io/cluster/<name>`
    tags decide: the configured `default` if it is among them (an instance can be shared by clusters),
    else one marked "owned", else the first name in alphabetical order.
    """
    tag_map = _tag_map(tags)
    for key in CLUSTER_NAME_TAGS:
        if tag_map.get(key):
            return tag_map[key]
    tagged = sorted((key.removeprefix(CLUSTER_TAG_PREFIX), value) for key, value in tag_map.items()
                    if key.startswith(CLUSTER_TAG_PREFIX) and len(key) > len(CLUSTER_TAG_PREFIX))
    if not tagged:
        return default
    names = [name for name, _ in tagged]
    if default in names:
        return default
    owned = [name for name, value in tagged if value == "owned"]
    return (owned or names)[0]


def managed_cluster(tags: Tags, configured: str) -> str:
    """The cluster this deployment manages the instance for, or "" when it is not ours: with a
    configured cluster, instances tagged for another cluster belong to that cluster's deployment."""
    cluster = cluster_from_tags(tags, configured)
    if configured and cluster != configured:
        return ""
    return cluster


def owned_tag(cluster: str) -> tuple[str, str]:
    """The tag an instance (or Auto Scaling group) of `cluster` carries when the cluster owns it. The
    one rule for what the product may write tags on: the code checks it and IAM's conditions say it."""
    return CLUSTER_TAG_PREFIX + cluster, OWNED


def owned_by(tags: Tags, cluster: str) -> bool:
    key, value = owned_tag(cluster)
    return _tag_map(tags).get(key) == value


def manages_group(name: str, tags: Tags, cluster: str, named: tuple[str, ...]) -> bool:
    """Whether this deployment may act on an Auto Scaling group: one of the named groups, or, when
    none are named, one the cluster owns (the scope IAM gives the roles on groups, too)."""
    return name in named if named else owned_by(tags, cluster)


def _tag_map(tags: Tags) -> dict[str, str]:
    if isinstance(tags, Mapping):
        return dict(tags)
    return {tag["Key"]: tag.get("Value", "") for tag in tags}
