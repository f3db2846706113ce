"""The client's timing on real sockets: an endpoint that accepts and never answers, one that refuses
connections, and a bound that leaves no time. What the API server answers is tested on the local
control plane (tests/integration/test_kube_timing.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from spot_rebalancer import kube as kube_module
from spot_rebalancer.kube import RETRY_ATTEMPTS, KubeApiError, KubeClient, Pacing, equal_jitter
from tests.kube.gate import Gate


@pytest.fixture
def hung() -> Iterator[Gate]:
    """An endpoint that accepts every connection and never answers on it."""
    gate = Gate()
    yield gate
    gate.close()


@pytest.fixture
def refusing() -> str:
    """The URL of a local port nothing listens on: connections are refused."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    return f"https://127.0.0.1:{port}"


class Sleeps:
    """A sleep that records its waits and lets no time pass."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client(url: str, sleep=time.sleep) -> KubeClient:
    return KubeClient.with_token(url, "", lambda: "token",
                                 pacing=Pacing(sleep=sleep, jitter=lambda seconds: seconds))


def test_a_hung_endpoint_fails_a_read_after_one_read_timeout_naming_the_endpoint(hung, monkeypatch):
    monkeypatch.setattr(kube_module, "READ_TIMEOUT_SECONDS", 0.5)
    sleeps = Sleeps()
    with pytest.raises(KubeApiError) as failed:
        client(hung.url, sleeps).list_nodes()
    assert str(failed.value) == f"GET {hung.url}/api/v1/nodes: no answer within 0.5 s (read timeout)"
    assert failed.value.status == 0
    assert len(hung.held) == 1, "a request the server took and never answered is not sent again"
    assert sleeps.waits == []


def test_a_bounded_request_to_a_hung_endpoint_ends_by_its_bound(hung):
    kube = client(hung.url).bounded(until=time.monotonic() + 0.3)
    started = time.monotonic()
    with pytest.raises(KubeApiError, match=r"no answer within 0\.[0-3]\d* s"):
        kube.get_node("node-1")
    assert time.monotonic() - started < kube_module.READ_TIMEOUT_SECONDS / 2


def test_a_request_with_no_time_left_fails_without_connecting(hung):
    kube = client(hung.url).bounded(until=time.monotonic() - 1)
    with pytest.raises(KubeApiError) as failed:
        kube.patch_node("node-1", {"spec": {"unschedulable": True}})
    assert str(failed.value) == f"PATCH {hung.url}/api/v1/nodes/node-1: no time left for the request"
    time.sleep(0.05)
    assert hung.held == []


def test_refused_connections_of_a_read_are_tried_again_with_backoff_then_fail_naming_the_endpoint(refusing):
    sleeps = Sleeps()
    with pytest.raises(KubeApiError) as failed:
        client(refusing, sleeps).list_pods("node-1")
    assert str(failed.value).startswith(f"GET {refusing}/api/v1/pods: NewConnectionError")
    assert len(sleeps.waits) == RETRY_ATTEMPTS - 1
    assert sleeps.waits == [0.2, 0.4, 0.8]


def test_a_post_is_sent_once(refusing):
    sleeps = Sleeps()
    with pytest.raises(KubeApiError, match="NewConnectionError"):
        client(refusing, sleeps).create_event(namespace="default", kind="Node", name="node-1", uid="u",
                                              reason="Cordoned", message="m")
    assert sleeps.waits == []


def test_retries_stop_when_the_next_wait_would_end_past_the_bound(refusing):
    sleeps = Sleeps()
    kube = client(refusing, sleeps).bounded(until=time.monotonic() + 0.5)
    with pytest.raises(KubeApiError, match="NewConnectionError"):
        kube.list_nodes()
    assert sleeps.waits == [0.2, 0.4], "the third wait, 0.8 s, would end past the bound"


def test_bounds_only_tighten():
    kube = client("https://127.0.0.1:1")
    assert kube.until is None and kube.time_left() is None
    assert kube.bounded(until=10).bounded(until=20).until == 10
    assert kube.bounded(until=20).bounded(until=10).until == 10


@pytest.mark.parametrize("seconds", [0.2, 1.0, 30.0], ids=["short", "one", "cap"])
def test_equal_jitter_waits_between_half_and_all(seconds):
    waits = [equal_jitter(seconds) for _ in range(200)]
    assert all(seconds / 2 <= w <= seconds for w in waits)
    assert len(set(waits)) > 1
