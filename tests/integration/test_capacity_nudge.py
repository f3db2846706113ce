"""The capacity nudge: misplaced pods with no room on the nodes they prefer raise the desired
capacity of those nodes' Auto Scaling group, bounded by its max size, and evict nothing."""

from __future__ import annotations

from dataclasses import replace

import boto3
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import node_group
from tests.kube.workloads import deployment, pods, preferred_affinity, running, wait_for

CAPACITY = "eks.amazonaws.com/capacityType"
REGION = "eu-west-1"
SETTINGS = Settings(cluster_name="test", min_pod_age_seconds=0, capacity_nudge=True)


def test_full_spot_group_is_raised_by_the_nodes_needed_within_its_max(api, kube, namespace, nodes):
    with mock_aws():
        autoscaling, (instance,) = node_group(REGION, desired=1, maximum=2)
        spot = nodes(lifecycle="spot", cpu="1", instance_id=instance)
        deployment(api, namespace, "filler", cpu="900m")
        wait_for(lambda: [p for p in running(pods(api, namespace, "filler"))
                          if p["spec"]["nodeName"] == spot.name], "the filler on spot")
        nodes(lifecycle="on-demand", cpu="4")
        deployment(api, namespace, "web", replicas=3, cpu="500m",
                   affinity=preferred_affinity(CAPACITY, ["SPOT"]))
        wait_for(lambda: len(running(pods(api, namespace, "web"))) == 3, "web on on-demand")

        rebalancer = Rebalancer(SETTINGS, kube, MetricsRecorder(), None,
                                autoscaling=AutoScaling(autoscaling),
                                ec2=Ec2(boto3.client("ec2", region_name=REGION)))
        result = rebalancer.cycle()
        assert result.plan.evictions == ()
        # Three 500m pods need two 1-CPU nodes; the group may grow by one only.
        (request,) = result.plan.capacity
        assert (request.group.name, request.nodes) == ("ng-spot", 2)
        assert result.capacity_added == {"ng-spot": 1}
        group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["ng-spot"])
        assert group["AutoScalingGroups"][0]["DesiredCapacity"] == 2

        off = Rebalancer(replace(SETTINGS, capacity_nudge=False), kube, MetricsRecorder(), None,
                         autoscaling=AutoScaling(autoscaling))
        assert off.cycle().capacity_added == {}
