"""Which cluster an instance belongs to, by its tags."""

import pytest

from spot_rebalancer.ownership import cluster_from_tags, managed_cluster


@pytest.mark.parametrize(("tags", "default", "expected"), [
    ({"eks:cluster-name": "prod"}, "", "prod"),
    ({"aws:eks:cluster-name": "prod"}, "other", "prod"),
    ({"eks:cluster-name": "prod", "aws:eks:cluster-name": "stage"}, "", "prod"),
    ({"eks:cluster-name": "prod", "kubernetes.io/cluster/stage": "owned"}, "", "prod"),
    ({"kubernetes.io/cluster/prod": "owned"}, "", "prod"),
    ({"kubernetes.io/cluster/prod": "shared"}, "other", "prod"),
    # Shared by several clusters: the configured one if it is among them...
    ({"kubernetes.io/cluster/a": "shared", "kubernetes.io/cluster/prod": "shared"}, "prod", "prod"),
    # ...else the owner, else the first by name.
    ({"kubernetes.io/cluster/a": "shared", "kubernetes.io/cluster/b": "owned"}, "other", "b"),
    ({"kubernetes.io/cluster/b": "shared", "kubernetes.io/cluster/a": "shared"}, "", "a"),
    ({"kubernetes.io/cluster/": "owned"}, "fallback", "fallback"),
    ({"eks:cluster-name": ""}, "fallback", "fallback"),
    ({"Name": "worker"}, "fallback", "fallback"),
    ({}, "", ""),
    # EC2's own shape.
    ([{"Key": "Name", "Value": "worker"}, {"Key": "eks:cluster-name", "Value": "prod"}], "", "prod"),
    ([{"Key": "kubernetes.io/cluster/prod"}], "", "prod"),
], ids=["eks tag", "aws eks tag over the default", "eks tag before aws eks tag",
        "eks tag before kubernetes tag", "owned kubernetes tag", "shared kubernetes tag over the default",
        "shared by several including the configured one", "shared by several the owner wins",
        "shared by several the first by name", "kubernetes tag without a name", "empty eks tag",
        "no cluster tag", "no tags and no default", "ec2 tag list", "ec2 tag without a value"])
def test_cluster_from_tags(tags, default, expected):
    assert cluster_from_tags(tags, default) == expected


@pytest.mark.parametrize(("tags", "configured", "expected"), [
    ({"eks:cluster-name": "prod"}, "prod", "prod"),
    ({"eks:cluster-name": "dev"}, "prod", ""),  # another deployment's
    ({"Name": "worker"}, "prod", "prod"),  # no tag names a cluster: the configured one's
    ({"kubernetes.io/cluster/dev": "owned"}, "", "dev"),  # nothing configured: whatever the tags say
], ids=["ours", "another cluster's", "untagged", "unconfigured"])
def test_managed_cluster(tags, configured, expected):
    assert managed_cluster(tags, configured) == expected
