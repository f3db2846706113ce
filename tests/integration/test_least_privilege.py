"""Least privilege, proved by the code: every call each function makes on the state table is one its
role is granted, and each granted call is made (the stack's grants: infra/construct.py, which
tests/infra/test_cdk_template.py holds against the synthesized template)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.client import BaseClient
from moto import mock_aws

from infra.construct import HISTORY_CALLS, IDEMPOTENCY_CALLS
from tests.ec2 import launch_instance
from tests.events_function import REGION, events_function, sample_event
from tests.kube.workloads import deployment, pods, running, wait_for
from tests.state_table import create_state_table


@pytest.fixture
def dynamodb_calls(monkeypatch) -> Iterator[set[str]]:
    """The DynamoDB operations any client makes (recorded on their way into botocore)."""
    made: set[str] = set()
    real = BaseClient._make_api_call

    def recorded(client, operation, params):
        if client.meta.service_model.service_name == "dynamodb":
            made.add(f"dynamodb:{operation}")
        return real(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recorded)
    yield made


def test_the_events_function_makes_exactly_its_granted_calls(api, cluster, kube, namespace, nodes,
                                                             monkeypatch, dynamodb_calls):
    with events_function(monkeypatch, lambda _cluster: kube) as function:
        instance = launch_instance(boto3.client("ec2", region_name=REGION))
        nodes(lifecycle="spot", instance_id=instance)
        deployment(api, namespace, "web", replicas=1)
        wait_for(lambda: running(pods(api, namespace, "web")), "web running")
        nodes(lifecycle="on-demand")
        warning = sample_event("spot-interruption-terminate.json", instance)
        # A delivery that fails (the API server refuses every node patch): its record is deleted so
        # that SQS's retry can act.
        refused = json.dumps({**json.loads(warning), "id": "refused-once"})
        cluster.proxy.set_fault(lambda method, path: (500, b'{"kind": "Status", "code": 500}')
                                if method == "PATCH" else None)
        try:
            with pytest.raises(BatchProcessingError):  # the batch's one record failed
                function.invoke([refused])
        finally:
            cluster.proxy.set_fault(None)
        dynamodb_calls.discard("dynamodb:CreateTable")  # the test's own table
        assert function.invoke([warning]) == {"batchItemFailures": []}
        assert function.invoke([warning]) == {"batchItemFailures": []}  # a duplicate: read, not redone
    dynamodb_calls.discard("dynamodb:Scan")
    assert dynamodb_calls == set(IDEMPOTENCY_CALLS)


def test_the_schedule_function_makes_exactly_its_granted_calls(api, nodes, kube, monkeypatch, dynamodb_calls):

    from spot_rebalancer import eks_auth
    from spot_rebalancer.handlers import schedule

    with mock_aws():
        create_state_table(boto3.client("dynamodb", region_name="eu-west-1"))
        dynamodb_calls.clear()
        for name, value in {"CLUSTER_NAME": "test", "STATE_TABLE": "state",
                            "AWS_DEFAULT_REGION": "eu-west-1"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(eks_auth, "client_for_cluster", lambda cluster: kube)
        schedule._runtime.cache_clear()
        try:
            schedule.handler({}, None)
        finally:
            schedule._runtime.cache_clear()
    assert dynamodb_calls == set(HISTORY_CALLS)
