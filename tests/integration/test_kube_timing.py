"""The client's timing against the real control plane: Retry-After honoured while there is time for
it, a hung endpoint failing the record within its budget and naming the endpoint (and the next
delivery succeeding once it answers), and no drain, nor any invocation of the events function,
outliving its budget on a slow API server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.drain import KUBE_CALLS_RESERVE_SECONDS, DrainService
from spot_rebalancer.events import parse_event
from spot_rebalancer.kube import KubeApiError, KubeClient, Pacing
from spot_rebalancer.telemetry import MetricsRecorder
from tests.ec2 import launch_instance
from tests.events_function import REGION, events_function, sample_event
from tests.kube.controlplane import ADMIN
from tests.kube.gate import Gate
from tests.kube.workloads import deployment, pods, running, wait_for


def refusal(status: int, retry_after: int) -> tuple[int, bytes, dict[str, str]]:
    body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status,
                       "message": "injected: come back later"}).encode()
    return status, body, {"Retry-After": str(retry_after)}


class Refusals:
    """A proxy fault hook refusing the first `times` requests to `path` with `answer`."""

    def __init__(self, path: str, times: int, answer: tuple) -> None:
        self.path, self.left, self.answer = path, times, answer

    def __call__(self, method: str, path: str):
        if path.split("?", 1)[0] != self.path or self.left == 0:
            return None
        self.left -= 1
        return self.answer


class Waits:
    """A real sleep that records its waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds)


@pytest.fixture
def paced(cluster) -> tuple[KubeClient, Waits]:
    waits = Waits()
    return KubeClient.from_kubeconfig(str(cluster.kubeconfig),
                                      pacing=Pacing(sleep=waits, jitter=lambda seconds: seconds)), waits


def test_a_read_refused_with_retry_after_is_sent_again_after_it(cluster, nodes, paced):
    kube, waits = paced
    node = nodes(lifecycle="spot")
    path = f"/api/v1/nodes/{node.name}"
    cluster.proxy.reset_counts()
    cluster.proxy.set_fault(Refusals(path, 2, refusal(503, 1)))
    try:
        found = kube.get_node(node.name)
    finally:
        cluster.proxy.set_fault(None)
    assert found is not None and found.metadata.name == node.name
    assert waits.waits == [1.0, 1.0], "the server's Retry-After, longer than the backoff, is waited"
    assert cluster.proxy.requests[("GET", path)] == 3


def test_a_retry_after_past_the_bound_is_not_waited_and_the_refusal_names_the_endpoint(cluster, nodes, paced):
    kube, waits = paced
    node = nodes(lifecycle="spot")
    path = f"/api/v1/nodes/{node.name}"
    cluster.proxy.reset_counts()
    cluster.proxy.set_fault(Refusals(path, 1, refusal(429, 30)))
    try:
        with pytest.raises(KubeApiError) as refused:
            kube.bounded(until=time.monotonic() + 5).get_node(node.name)
    finally:
        cluster.proxy.set_fault(None)
    assert str(refused.value) == f"GET {cluster.proxy.url}{path}: HTTP 429: injected: come back later"
    assert waits.waits == []
    assert cluster.proxy.requests[("GET", path)] == 1


@pytest.fixture
def spot_node(api, namespace, nodes):
    """A spot node of a fresh instance running two web pods, with an on-demand node for them to go to."""
    def make(ec2) -> tuple[str, str]:
        instance = launch_instance(ec2)
        node = nodes(lifecycle="spot", instance_id=instance).name
        deployment(api, namespace, "web", replicas=2)
        wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "web pods running")
        nodes(lifecycle="on-demand")
        return instance, node
    return make


def test_a_hung_endpoint_fails_the_record_within_its_budget_naming_it_and_the_next_delivery_succeeds(
        api, cluster, namespace, spot_node, monkeypatch):
    gate = Gate(upstream=cluster.proxy.url)
    ca_pem = Path(cluster.control_plane.ca_file).read_text()
    client = KubeClient.with_token(gate.url, ca_pem, lambda: ADMIN.token)
    try:
        with events_function(monkeypatch, lambda _cluster: client) as function:
            instance, node = spot_node(boto3.client("ec2", region_name=REGION))
            body = sample_event("spot-interruption-terminate.json", instance)

            started = time.monotonic()
            with pytest.raises(BatchProcessingError) as failed:
                function.invoke([body], remaining_ms=8_000)
            elapsed = time.monotonic() - started
            (child,) = failed.value.child_exceptions
            assert elapsed < 8, f"the record took {elapsed:.1f} s of its 8 s budget"
            assert str(child[1]).startswith(f"GET {gate.url}/api/v1/nodes"), child[1]
            assert "no answer within" in str(child[1])
            assert gate.held, "the gate took the connection"

            gate.open()
            assert function.invoke([body]) == {"batchItemFailures": []}, "the next delivery"
        assert api.get(f"/api/v1/nodes/{node}")["spec"].get("unschedulable") is True
        assert not [p for p in pods(api, namespace) if p["spec"].get("nodeName") == node], "drained"
    finally:
        gate.close()


SLOW_SECONDS = 3.0
BUDGET_SECONDS = 20.0


@contextmanager
def every_request_slow(cluster) -> Iterator[Callable[[], float]]:
    """Every request to the apiserver SLOW_SECONDS slow while inside; yields the seconds since entering."""
    def slow(method: str, path: str) -> None:
        threading.Event().wait(SLOW_SECONDS)

    cluster.proxy.set_fault(slow)
    started = time.monotonic()
    try:
        yield lambda: time.monotonic() - started
    finally:
        cluster.proxy.set_fault(None)


def test_on_a_slow_api_server_no_drain_outlives_its_invocation(api, cluster, kube, spot_node):
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        instance, _node = spot_node(ec2)
        event = parse_event(json.loads(sample_event("spot-interruption-terminate.json", instance)))[0]
        drains = DrainService(Settings(cluster_name="test"), Ec2(ec2),
                              AutoScaling(boto3.client("autoscaling", region_name=REGION)),
                              lambda _cluster: kube, MetricsRecorder())
        with every_request_slow(cluster) as taken:
            try:
                result = drains.handle(event, budget_seconds=BUDGET_SECONDS)
                outcome = f"returned: {[s.as_json() for s in result.steps]}"
            except KubeApiError as exc:
                outcome = f"failed: {exc}"
            elapsed = taken()
    # Each request takes 3 s: the drain cannot finish, but it must end in time, either way.
    assert elapsed <= BUDGET_SECONDS - KUBE_CALLS_RESERVE_SECONDS + 0.5, f"{elapsed:.1f} s: {outcome}"
    print(f"\nslow API server ({SLOW_SECONDS:g} s a request): {BUDGET_SECONDS:g} s budget, ended after "
          f"{elapsed:.1f} s, {outcome}")


def test_on_a_slow_api_server_no_invocation_of_the_events_function_outlives_its_budget(
        api, cluster, kube, namespace, nodes, monkeypatch):
    """The whole invocation, not only one drain: a batch of three spot warnings through the events
    function as deployed (idempotency records, continuations, failed records handed back), every
    request 3 s slow. Lambda would cut an invocation that runs past its budget and lose the batch's
    partial response."""
    with events_function(monkeypatch, lambda _cluster: kube) as function:
        ec2 = boto3.client("ec2", region_name=REGION)
        instances = [launch_instance(ec2) for _ in range(3)]
        for instance in instances:
            nodes(lifecycle="spot", instance_id=instance)
        deployment(api, namespace, "web", replicas=3)
        wait_for(lambda: len(running(pods(api, namespace, "web"))) == 3, "web pods running")
        nodes(lifecycle="on-demand")
        bodies = [sample_event("spot-interruption-terminate.json", instance) for instance in instances]
        with every_request_slow(cluster) as taken:
            try:
                outcome = f"returned {function.invoke(bodies, remaining_ms=int(BUDGET_SECONDS * 1000))}"
            except BatchProcessingError as exc:
                outcome = f"failed: {[str(child[1]) for child in exc.child_exceptions]}"
            elapsed = taken()
    assert elapsed <= BUDGET_SECONDS, f"{elapsed:.1f} s of a {BUDGET_SECONDS:g} s budget: {outcome}"
    print(f"\nslow API server ({SLOW_SECONDS:g} s a request), a batch of 3 warnings through the events "
          f"function: {BUDGET_SECONDS:g} s budget, ended after {elapsed:.1f} s, {outcome[:200]}")
