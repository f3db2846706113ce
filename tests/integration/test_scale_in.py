"""Scale-in of emptied nodes on the real control plane, with the Auto Scaling group on moto: the
on-demand nodes the rebalancer emptied are terminated through their group once they have settled,
decrementing it and never below its minimum; a node that was empty already is left alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import boto3
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling
from spot_rebalancer.config import Settings
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.results import StepOutcome
from spot_rebalancer.state import HistoryStore
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import node_group
from tests.kube.workloads import deployment, pods, preferred_affinity, running, wait_for
from tests.state_table import create_state_table

CAPACITY = "eks.amazonaws.com/capacityType"
CLUSTER = "test"
REGION = "eu-west-1"
TABLE = "state"
SETTLE = 600
APPS = ("web", "api")
SETTINGS = Settings(cluster_name=CLUSTER, state_table=TABLE, min_pod_age_seconds=0,
                    move_single_replica_workloads=True, scale_in_emptied_nodes=True,
                    scale_in_settle_seconds=SETTLE)


def history_store() -> HistoryStore:
    client = boto3.client("dynamodb", region_name=REGION)
    create_state_table(client, TABLE)
    return HistoryStore(client, TABLE)


def group_state(autoscaling) -> tuple[int, set[str]]:
    (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["ng-od"])["AutoScalingGroups"]
    return group["DesiredCapacity"], {i["InstanceId"] for i in group["Instances"]}


def test_emptied_on_demand_nodes_are_scaled_in_once_settled_never_below_the_minimum(api, kube, namespace,
                                                                                   nodes):
    with mock_aws():
        autoscaling, instances = node_group(REGION, desired=3, maximum=3, minimum=2, name="ng-od",
                                            tags={f"kubernetes.io/cluster/{CLUSTER}": "owned"})
        od = [nodes(lifecycle="on-demand", cpu="1", instance_id=i) for i in instances[:2]]
        for app in APPS:  # one pod each, too big to share a node
            deployment(api, namespace, app, cpu="600m", affinity=preferred_affinity(CAPACITY, ["SPOT"]))
        wait_for(lambda: {p["spec"]["nodeName"] for app in APPS for p in running(pods(api, namespace, app))}
                 == {n.name for n in od}, "one pod on each on-demand node")
        idle = nodes(lifecycle="on-demand", cpu="1", instance_id=instances[2])
        nodes(lifecycle="spot", cpu="4")

        start = datetime.now(UTC)
        clock = [start]
        metrics = MetricsRecorder()
        rebalancer = Rebalancer(SETTINGS, kube, metrics, history_store(), now=lambda: clock[0],
                                autoscaling=AutoScaling(autoscaling))
        moved = rebalancer.cycle()
        assert len(moved.evicted) == 2
        assert set(moved.emptied) == {n.name for n in od}, "the idle node was empty already"
        assert metrics.total("OnDemandNodesEmptied", ClusterName=CLUSTER) == 2
        wait_for(lambda: all(running(pods(api, namespace, app)) for app in APPS), "both replaced")

        clock[0] = start + timedelta(seconds=SETTLE - 1)
        assert rebalancer.cycle().scaled_in == {}, "not settled yet"
        assert group_state(autoscaling) == (3, set(instances))

        clock[0] = start + timedelta(seconds=SETTLE)
        outcomes = rebalancer.cycle().scaled_in
        assert sorted(outcomes.values()) == sorted([StepOutcome.SCALED_IN, StepOutcome.AT_MINIMUM])
        assert idle.name not in outcomes
        (gone,) = [n for n in od if outcomes[n.name] is StepOutcome.SCALED_IN]
        desired, left = group_state(autoscaling)
        assert (desired, gone.instance_id in left, idle.instance_id in left) == (2, False, True)
        assert metrics.total("NodesScaledIn", ClusterName=CLUSTER) == 1

        # The one at the minimum stays remembered, and is scaled in once the group may shrink.
        autoscaling.update_auto_scaling_group(AutoScalingGroupName="ng-od", MinSize=1)
        clock[0] = start + timedelta(seconds=SETTLE + 60)
        (kept,) = [n for n in od if n is not gone]
        assert rebalancer.cycle().scaled_in == {kept.name: StepOutcome.SCALED_IN}
        assert group_state(autoscaling)[0] == 1


def test_scale_in_is_off_unless_asked_for(api, kube, namespace, nodes):
    with mock_aws():
        autoscaling, (instance,) = node_group(REGION, desired=1, maximum=1, name="ng-od",
                                              tags={f"kubernetes.io/cluster/{CLUSTER}": "owned"})
        nodes(lifecycle="on-demand", cpu="1", instance_id=instance)
        deployment(api, namespace, "web", cpu="600m", affinity=preferred_affinity(CAPACITY, ["SPOT"]))
        wait_for(lambda: running(pods(api, namespace, "web")), "web on on-demand")
        nodes(lifecycle="spot", cpu="4")
        start = datetime.now(UTC)
        clock = [start]
        rebalancer = Rebalancer(replace(SETTINGS, scale_in_emptied_nodes=False), kube, MetricsRecorder(),
                                history_store(), now=lambda: clock[0], autoscaling=AutoScaling(autoscaling))
        assert len(rebalancer.cycle().emptied) == 1, "emptied nodes are counted either way"
        clock[0] = start + timedelta(seconds=SETTLE)
        assert rebalancer.cycle().scaled_in == {}
        assert group_state(autoscaling) == (1, {instance})
