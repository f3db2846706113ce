"""podSelector and namespaceSelector on the real control plane: a cycle moves only the pods both
select (their namespaces' labels read from the API), and an interruption drain of the same node
evicts every pod whatever the selectors say."""

from __future__ import annotations

import boto3
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import DrainService
from spot_rebalancer.events import parse_event
from spot_rebalancer.label_selector import parse_selector
from spot_rebalancer.rebalance import SkipCode
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import launch_instance
from tests.events_function import sample_event
from tests.kube.workloads import deployment, pods, preferred_affinity, running, wait_for

PREFER_SPOT = preferred_affinity("eks.amazonaws.com/capacityType", ["SPOT"])
SETTINGS = Settings(cluster_name="test", min_pod_age_seconds=0, max_evictions_per_workload="100%",
                    pod_selector=parse_selector("app in (web,api)"),
                    namespace_selector=parse_selector("team=shop,env!=prod"))


def test_a_cycle_moves_only_what_both_selectors_select_and_a_drain_ignores_them(cluster, api, kube,
                                                                                 namespace, nodes):
    other = f"{namespace}-other"
    api.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {"team": "shop"}}})
    cluster.admin.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": other, "labels": {"team": "shop", "env": "prod"}}})
    try:
        with mock_aws():
            ec2 = boto3.client("ec2", region_name="eu-west-1")
            instance = launch_instance(ec2)
            on_demand = nodes(lifecycle="on-demand", instance_id=instance)
            for where, app in ((namespace, "web"), (namespace, "db"), (other, "web")):
                deployment(api, where, app, replicas=2, affinity=PREFER_SPOT)
            wait_for(lambda: len(running(pods(api, namespace))) == 4 == 2 + len(running(pods(api, other))),
                     "every pod running on the on-demand node")
            nodes(lifecycle="spot")

            cycle = Rebalancer(SETTINGS, kube, MetricsRecorder(), None).cycle()
            moved = {(e.namespace, e.name) for e in cycle.evicted}
            assert len(moved) == 2
            assert {(ns, name.split("-")[0]) for ns, name in moved} == {(namespace, "web")}
            skipped = {(s.namespace, s.name.split("-")[0]): s for s in cycle.plan.skipped}
            assert skipped[namespace, "db"].code is SkipCode.NOT_SELECTED
            assert "podSelector 'app in (web,api)'" in skipped[namespace, "db"].detail
            assert skipped[other, "web"].code is SkipCode.NAMESPACE_NOT_SELECTED
            assert f"namespace {other}'s labels" in skipped[other, "web"].detail

            # The instance goes: the drain evicts the pods the selectors kept, in both namespaces.
            left = {(where, p["metadata"]["name"]) for where in (namespace, other) for p in pods(api, where)
                    if p["spec"].get("nodeName") == on_demand.name}
            left -= moved
            assert len(left) == 4
            (warning,) = parse_event(sample_event("spot-interruption-terminate.json", instance))
            autoscaling = AutoScaling(boto3.client("autoscaling", region_name="eu-west-1"))
            drains = DrainService(SETTINGS, Ec2(ec2), autoscaling, lambda _: kube, MetricsRecorder())
            drained = drains.handle(warning, budget_seconds=100)
        evicted = {(s.namespace, s.pod) for s in drained.steps
                   if (s.action, s.outcome) == ("evict", "accepted")}
        assert left <= evicted
    finally:
        cluster.admin.delete(f"/api/v1/namespaces/{other}")
