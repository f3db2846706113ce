"""The status-check signal's dry run: the impaired node is reported, nothing is recorded or queued."""

import boto3
from botocore.stub import Stubber
from moto import mock_aws

from spot_rebalancer.aws import Ec2
from spot_rebalancer.config import Settings
from spot_rebalancer.results import StepAction
from spot_rebalancer.state import DrainClaims
from spot_rebalancer.status_checks import CLAIM_SECONDS, StatusChecks
from tests.state_table import create_state_table
from tests.unit.builders import make_node

REGION = "eu-west-1"


def test_a_dry_run_reports_the_drain_it_would_queue_and_queues_none():
    with mock_aws():
        dynamodb, sqs = boto3.client("dynamodb", region_name=REGION), boto3.client("sqs", region_name=REGION)
        create_state_table(dynamodb)
        queue = sqs.create_queue(QueueName="work")["QueueUrl"]
        statuses = boto3.client("ec2", region_name=REGION)
        settings = Settings(cluster_name="prod", dry_run=True, work_queue_url=queue,
                            instance_status_checks=True)
        claims = DrainClaims(dynamodb, "state", CLAIM_SECONDS)
        checks = StatusChecks(settings, Ec2(statuses), claims, sqs, REGION)
        node = make_node("ip-10-0-3-17", provider_id="aws:///eu-west-1a/i-0e4b6d8f0a2c35791")
        with Stubber(statuses) as stub:
            stub.add_response("describe_instance_status", {"InstanceStatuses": [
                {"InstanceId": "i-0e4b6d8f0a2c35791", "InstanceStatus": {"Status": "impaired"}}]})
            stub.add_response("describe_instance_status", {"InstanceStatuses": []})
            [step] = checks.check([node])
        assert (step.action, step.node, step.reason) == (
            StepAction.CONTINUE, "ip-10-0-3-17", "instance status check impaired: a drain would be queued")
        assert "Messages" not in sqs.receive_message(QueueUrl=queue)
        assert dynamodb.scan(TableName="state")["Items"] == []
