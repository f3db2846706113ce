"""Events the instance lives through, undone on the local control plane: the events function (as
deployed, on moto) drains the node, and once the instance runs again (its node Ready with another
boot id) the sweep, the `running` state change or the Health change's `closed` event undo what the
product did, never the user's own cordon or taints. A closed change calls off a drain still to come."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import boto3
import pytest

from spot_rebalancer.config import Settings
from spot_rebalancer.drain_policy import ACTION_ANNOTATION, SCHEDULED_CHANGES_ANNOTATION
from spot_rebalancer.rebalancer import Rebalancer
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import launch_instance
from tests.events_function import REGION, events_function, sample_event
from tests.kube.workloads import deployment, pods, running, wait_for

USER_TAINT = {"key": "team", "value": "data", "effect": "PreferNoSchedule"}
SURVIVABLE = {
    "spot stop or hibernation": ("spot-interruption-hibernate.json", "spot-stop"),
    "stopped, a backstop": ("state-change-stopped.json", "instance-stopped"),
    "stopping": ("state-change-stopping.json", "instance-stopping"),
    "health reboot maintenance": ("health-reboot-maintenance.json", "scheduled-maintenance"),
}


def boot(api, node: str, boot_id: str) -> None:
    """The node's kubelet reporting in after the machine (re)started."""
    api.patch(f"/api/v1/nodes/{node}/status", {"status": {"nodeInfo": {"bootID": boot_id}}})


def node_state(api, node: str) -> tuple[list[str], bool, set[str]]:
    found = api.get(f"/api/v1/nodes/{node}")
    return ([t["key"] for t in found["spec"].get("taints", [])], bool(found["spec"].get("unschedulable")),
            set(found["metadata"].get("annotations", {})) & {ACTION_ANNOTATION, SCHEDULED_CHANGES_ANNOTATION})


@pytest.fixture
def drained_node(api, namespace, nodes):
    """A node carrying a web pod, the user's own taint and a boot id."""
    def make(instance: str) -> str:
        node = nodes(lifecycle="spot", instance_id=instance, taints=[USER_TAINT]).name
        boot(api, node, "boot-1")
        deployment(api, namespace, "web")
        wait_for(lambda: running(pods(api, namespace, "web")), "web running")
        nodes(lifecycle="on-demand")
        return node
    return make


def sweep(kube) -> list[tuple[str, str, str]]:
    steps = Rebalancer(Settings(cluster_name="test"), kube, MetricsRecorder(), None).sweep().steps
    return [(s.action, s.node, s.outcome) for s in steps if s.action == "revert"]


@pytest.mark.parametrize("case", SURVIVABLE)
def test_the_sweep_undoes_a_survivable_drain_once_the_instance_runs_again(
        api, kube, namespace, nodes, monkeypatch, drained_node, case):
    sample, reason = SURVIVABLE[case]
    with events_function(monkeypatch, lambda _cluster: kube) as function:
        instance = launch_instance(boto3.client("ec2", region_name=REGION))
        node = drained_node(instance)
        assert function.invoke([sample_event(sample, instance)]) == {"batchItemFailures": []}
    assert node_state(api, node) == (["team", f"spot-rebalancer/{reason}"], True, {ACTION_ANNOTATION})
    assert not [p for p in pods(api, namespace, "web") if p["spec"].get("nodeName") == node]

    assert sweep(kube) == [], "the instance has not started again yet"
    boot(api, node, "boot-2")
    assert sweep(kube) == [("revert", node, "reverted")]
    assert node_state(api, node) == (["team"], False, set()), "the user's taint stays"


def test_a_drain_of_an_instance_that_ends_is_never_undone(api, kube, nodes, monkeypatch, drained_node):
    with events_function(monkeypatch, lambda _cluster: kube) as function:
        instance = launch_instance(boto3.client("ec2", region_name=REGION))
        node = drained_node(instance)
        assert function.invoke([sample_event("spot-interruption-terminate.json", instance)]) == {
            "batchItemFailures": []}
    boot(api, node, "boot-2")
    assert sweep(kube) == []
    assert node_state(api, node) == (["team", "spot-rebalancer/spot-interruption"], True, {ACTION_ANNOTATION})


def test_a_user_cordon_survives_the_undo(api, kube, monkeypatch, drained_node):
    with events_function(monkeypatch, lambda _cluster: kube) as function:
        instance = launch_instance(boto3.client("ec2", region_name=REGION))
        node = drained_node(instance)
        api.patch(f"/api/v1/nodes/{node}", {"spec": {"unschedulable": True}})
        assert function.invoke([sample_event("state-change-stopping.json", instance)]) == {
            "batchItemFailures": []}
    boot(api, node, "boot-2")
    assert sweep(kube) == [("revert", node, "reverted")]
    assert node_state(api, node) == (["team"], True, set())


def test_the_running_state_change_undoes_the_stop_once_the_node_is_back(api, kube, monkeypatch, drained_node):
    with events_function(monkeypatch, lambda _cluster: kube) as function:
        instance = launch_instance(boto3.client("ec2", region_name=REGION))
        node = drained_node(instance)
        assert function.invoke([sample_event("state-change-stopping.json", instance)]) == {
            "batchItemFailures": []}
        # The instance runs again; its kubelet has not reported in yet.
        assert function.invoke([sample_event("state-change-running.json", instance)]) == {
            "batchItemFailures": []}
        ((hop, delay),) = function.delayed()
        assert 50 <= delay <= 60, "looked at again in a minute"
        assert node_state(api, node)[1], "still cordoned: the node is not back"
        boot(api, node, "boot-2")
        assert function.invoke([hop]) == {"batchItemFailures": []}
        assert function.delayed() == [], "done: nothing more to look at"
    assert node_state(api, node) == (["team"], False, set())


def change(sample: str, instance: str, starts_in: timedelta) -> str:
    raw = json.loads(sample_event(sample, instance))
    raw["detail"]["startTime"] = format_datetime(datetime.now(UTC) + starts_in, usegmt=True)
    return json.dumps(raw)


def test_a_closed_change_calls_off_the_drain_still_to_come(api, kube, monkeypatch, drained_node):
    """The chain once re-read its own copy of the first event and drained a change that had been
    cancelled days before."""
    with events_function(monkeypatch, lambda _cluster: kube) as function:
        instance = launch_instance(boto3.client("ec2", region_name=REGION))
        node = drained_node(instance)
        assert function.invoke([change("health-reboot-maintenance.json", instance, timedelta(days=10))]) == {
            "batchItemFailures": []}
        ((hop, delay),) = function.delayed()
        assert delay == 900, "the longest SQS delay: the change is ten days off"
        assert node_state(api, node) == (["team"], False, {SCHEDULED_CHANGES_ANNOTATION})

        closed = change("health-reboot-maintenance-closed.json", instance, timedelta(days=10))
        assert function.invoke([closed]) == {"batchItemFailures": []}
        assert node_state(api, node) == (["team"], False, set())
        assert function.invoke([hop]) == {"batchItemFailures": []}
        assert function.delayed() == [], "the chain ended"
    assert node_state(api, node) == (["team"], False, set())


def test_a_change_closed_after_its_drain_undoes_it_without_a_reboot(api, kube, monkeypatch, drained_node):
    with events_function(monkeypatch, lambda _cluster: kube) as function:
        instance = launch_instance(boto3.client("ec2", region_name=REGION))
        node = drained_node(instance)
        assert function.invoke([sample_event("health-reboot-maintenance.json", instance)]) == {
            "batchItemFailures": []}
        assert node_state(api, node)[:2] == (["team", "spot-rebalancer/scheduled-maintenance"], True)
        assert function.invoke([sample_event("health-reboot-maintenance-closed.json", instance)]) == {
            "batchItemFailures": []}
    assert node_state(api, node) == (["team"], False, set())


def test_a_chain_whose_instance_is_gone_ends(api, kube, monkeypatch, drained_node):
    with events_function(monkeypatch, lambda _cluster: kube) as function:
        ec2 = boto3.client("ec2", region_name=REGION)
        instance = launch_instance(ec2)
        drained_node(instance)
        assert function.invoke([change("health-instance-retirement.json", instance, timedelta(days=10))]) == {
            "batchItemFailures": []}
        ((hop, _delay),) = function.delayed()
        ec2.terminate_instances(InstanceIds=[instance])
        assert function.invoke([hop]) == {"batchItemFailures": []}
        assert function.delayed() == [], "the chain ended"


def test_a_backstop_drains_what_is_left_once_and_never_loops(api, kube, namespace, nodes, monkeypatch,
                                                              drained_node):
    """The earlier events were lost: `terminated` finds the node still listed with its pods."""
    with events_function(monkeypatch, lambda _cluster: kube) as function:
        ec2 = boto3.client("ec2", region_name=REGION)
        instance = launch_instance(ec2)
        node = drained_node(instance)
        ec2.terminate_instances(InstanceIds=[instance])
        for _ in range(2):  # delivered twice: the second finds nothing left
            assert function.invoke([sample_event("state-change-terminated.json", instance)]) == {
                "batchItemFailures": []}
        assert function.delayed() == [], "nothing continued"
    assert node_state(api, node) == (["team", "spot-rebalancer/instance-terminated"], True,
                                     {ACTION_ANNOTATION})
    assert not [p for p in pods(api, namespace, "web") if p["spec"].get("nodeName") == node]


def test_a_backstop_leaves_a_node_with_nothing_to_drain_alone(api, kube, nodes, monkeypatch):
    with events_function(monkeypatch, lambda _cluster: kube) as function:
        ec2 = boto3.client("ec2", region_name=REGION)
        instance = launch_instance(ec2)
        node = nodes(lifecycle="spot", instance_id=instance).name
        assert function.invoke([sample_event("state-change-stopped.json", instance)]) == {
            "batchItemFailures": []}
    assert node_state(api, node) == ([], False, set())
