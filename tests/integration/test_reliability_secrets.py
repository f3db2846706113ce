"""The bearer token never reaches a log: the events function as deployed, with every logger at
DEBUG (powertools' and every library's), drains a node as the least-privileged user, its token
handed over by the refresh hook as in production; recording Kubernetes Events fails on the way
(a logged warning) and a second event fails its invocation. The token is in no log record,
nothing printed, no stored idempotency record and no failure. And a token past its age is minted
again before the next request."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from spot_rebalancer.eks_auth import TOKEN_REFRESH_SECONDS
from spot_rebalancer.kube import CachedToken, KubeClient
from tests.ec2 import launch_instance
from tests.events_function import REGION, events_function, sample_event
from tests.kube.cluster import PRODUCT_USER
from tests.kube.controlplane import ADMIN
from tests.kube.workloads import deployment, pods, running, wait_for

MANIFEST = Path(__file__).parents[2] / "infra" / "rbac" / "spot-rebalancer.yaml"


def refused(status: int, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status,
                               "message": message}).encode()


@pytest.fixture
def product_kube(cluster) -> tuple[KubeClient, list[str]]:
    """The product's client as the shipped ClusterRole's user, and the tokens its hook handed out."""
    subprocess.run([str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig),
                    "apply", "-f", str(MANIFEST)], check=True, capture_output=True)
    handed: list[str] = []

    def token() -> str:
        handed.append(PRODUCT_USER.token)
        return PRODUCT_USER.token

    ca_pem = Path(cluster.control_plane.ca_file).read_text()
    return KubeClient.with_token(cluster.proxy.url, ca_pem, token), handed


def test_the_bearer_token_is_in_no_log_output_state_or_failure(api, cluster, namespace, nodes, product_kube,
                                                               monkeypatch, caplog, capfd):
    kube, handed = product_kube
    caplog.set_level(logging.DEBUG)
    # powertools keeps the level of the logger's first set-up in this process, maybe another test's.
    caplog.set_level(logging.DEBUG, logger="spot-rebalancer")
    with events_function(monkeypatch, lambda _cluster: kube, POWERTOOLS_LOG_LEVEL="DEBUG") as function:
        instance = launch_instance(boto3.client("ec2", region_name=REGION))
        node = nodes(lifecycle="spot", instance_id=instance).name
        deployment(api, namespace, "web", replicas=2)
        wait_for(lambda: len(running(pods(api, namespace, "web"))) == 2, "web pods running")
        nodes(lifecycle="on-demand")
        cluster.proxy.set_fault(lambda method, path: refused(500, "etcd is unhappy")
                                if method == "POST" and path.endswith("/events") else None)
        try:
            drained = function.invoke([sample_event("spot-interruption-terminate.json", instance)])
            cluster.proxy.set_fault(lambda method, path: refused(401, "Unauthorized")
                                    if method == "PATCH" else None)
            with pytest.raises(BatchProcessingError) as failed:
                function.invoke([sample_event("rebalance-recommendation.json", instance)])
        finally:
            cluster.proxy.set_fault(None)
        stored = json.dumps(function.idempotency_records())

    printed = capfd.readouterr()
    # Each record whole (structured extras, arguments), besides its formatted text.
    records = [json.dumps(vars(r), default=str) for r in caplog.records]
    logged = "\n".join((caplog.text, *records, printed.out, printed.err))
    assert drained == {"batchItemFailures": []}
    assert not [p for p in pods(api, namespace) if p["spec"].get("nodeName") == node]
    assert handed, "the token never went through the refresh hook: the check below proves nothing"
    assert any(r.name == "spot-rebalancer" and r.getMessage() == "event" for r in caplog.records)
    assert "could not record event" in caplog.text, "the failed Event recording was not logged"
    assert any(r.levelno == logging.DEBUG and r.name.startswith("urllib3") for r in caplog.records)
    failure = str(failed.value.child_exceptions)
    assert "401" in failure
    for where, text in (("logs", logged), ("idempotency records", stored), ("the failure", failure)):
        assert PRODUCT_USER.token not in text, f"the bearer token is in {where}"


def test_a_fifteen_minute_old_token_is_minted_again_before_the_next_request(cluster):
    """The token in the request follows the refresh: minted as the least-privileged user, then,
    15 minutes on, as the admin, whose fresh token may list Secrets where the old one may not."""
    now = [0.0]
    tokens = iter([PRODUCT_USER.token, ADMIN.token])
    minted = CachedToken(lambda: next(tokens), TOKEN_REFRESH_SECONDS, lambda: now[0])
    kube = KubeClient.with_token(cluster.proxy.url, Path(cluster.control_plane.ca_file).read_text(), minted)

    assert kube.request("GET", "/api/v1/secrets").status == 403
    now[0] = 15 * 60
    assert kube.request("GET", "/api/v1/secrets").status == 200


@pytest.mark.parametrize(("tokens", "statuses", "minted"), [
    (["revoked-session", PRODUCT_USER.token], [200], 2),  # refused once: a new token, and it is taken
    (["revoked-session", "revoked-again"], [401], 2),  # refused again: the 401 is the answer
], ids=["renewed token taken", "renewed token refused too"])
def test_a_token_the_api_server_refuses_is_minted_again_once(cluster, tokens, statuses, minted):
    handed = iter(tokens)
    count = [0]

    def mint() -> str:
        count[0] += 1
        return next(handed)

    token = CachedToken(mint, TOKEN_REFRESH_SECONDS, lambda: 0.0)
    kube = KubeClient.with_token(cluster.proxy.url, Path(cluster.control_plane.ca_file).read_text(), token,
                                 renew=token.renew)
    assert [kube.request("GET", "/api/v1/nodes").status] == statuses
    assert count[0] == minted
