import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from spot_rebalancer.aws import AutoScaling, Ec2, LifecycleAction, boto_config
from spot_rebalancer.ownership import cluster_from_tags
from spot_rebalancer.results import StepOutcome
from tests.ec2 import node_group

REGION = "eu-west-1"


@pytest.fixture
def ec2_client():
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def launch(client, *, spot: bool, tags: dict[str, str]) -> str:
    image = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    extra: dict = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
    if tags:
        extra["TagSpecifications"] = [{"ResourceType": "instance",
                                       "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    reservation = client.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                       InstanceType="m6g.large", **extra)
    return reservation["Instances"][0]["InstanceId"]


def throttle(client, operation: str, times: int) -> list:
    """Answer the first `times` sends of `operation` with EC2's throttling error, before the
    request leaves botocore, so its real retry logic handles them."""
    sent: list = []

    def respond(request, **_):
        if len(sent) < times:
            sent.append(429)
            body = (b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
                    b"<Message>Request limit exceeded.</Message></Error></Errors></Response>")
            return AWSResponse(request.url, 503, {}, _Raw(body))
        sent.append("passed")
        return None

    client.meta.events.register_first(f"before-send.ec2.{operation}", respond)
    return sent


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_):
        yield self._body


def test_describe_reads_lifecycle_dns_zone_and_tags(ec2_client):
    spot = launch(ec2_client, spot=True, tags={"eks:cluster-name": "prod"})
    on_demand = launch(ec2_client, spot=False, tags={"kubernetes.io/cluster/dev": "owned"})
    found = Ec2(ec2_client).describe([spot, on_demand, "i-0000000000000dead"])
    assert set(found) == {spot, on_demand}, "an id that no longer exists is left out, not an error"
    assert found[spot].lifecycle == "spot"
    assert found[on_demand].lifecycle == "on-demand"
    assert found[spot].private_dns_name.endswith(".internal")
    assert found[spot].availability_zone.startswith(REGION)
    assert cluster_from_tags(found[spot].tags) == "prod"
    assert cluster_from_tags(found[on_demand].tags) == "dev"


def test_describe_batches_by_a_thousand_ids():
    client = boto3.client("ec2", region_name=REGION, config=boto_config())
    ids = [f"i-{n:017x}" for n in range(2500)]
    with Stubber(client) as stub:
        for start in (0, 1000, 2000):
            batch = sorted(ids)[start:start + 1000]
            stub.add_response("describe_instances", {"Reservations": []},
                              {"Filters": [{"Name": "instance-id", "Values": batch}]})
        assert Ec2(client).describe(ids) == {}
        stub.assert_no_pending_responses()


def test_throttled_describe_is_retried():
    with mock_aws():
        client = boto3.client("ec2", region_name=REGION, config=boto_config())
        instance = launch(client, spot=True, tags={})
        sent = throttle(client, "DescribeInstances", times=2)
        found = Ec2(client).describe([instance])
    assert found[instance].lifecycle == "spot"
    assert sent == [429, 429, "passed"], "two throttled attempts, then the real call"


def test_tag_writes_the_lifecycle_tag(ec2_client):
    instance = launch(ec2_client, spot=True, tags={})
    Ec2(ec2_client).tag([instance], "Lifecycle", "spot")
    assert Ec2(ec2_client).describe([instance])[instance].tags["Lifecycle"] == "spot"


def test_lifecycle_calls_carry_the_hook_and_token():
    client = boto3.client("autoscaling", region_name=REGION)
    token = "6b4ea2a6-4bd1-4d1c-9e3a-5a6d7f0c2b11"
    action = LifecycleAction(group="ng-spot", hook="drain", token=token, instance_id="i-1")
    expected = {"AutoScalingGroupName": "ng-spot", "LifecycleHookName": "drain",
                "LifecycleActionToken": token, "InstanceId": "i-1"}
    with Stubber(client) as stub:
        stub.add_response("record_lifecycle_action_heartbeat", {}, expected)
        stub.add_response("complete_lifecycle_action", {},
                          {**expected, "LifecycleActionResult": "CONTINUE"})
        asg = AutoScaling(client)
        asg.heartbeat(action)
        asg.complete(action, "CONTINUE")
        stub.assert_no_pending_responses()


def test_raise_desired_capacity_stops_at_max_size():
    with mock_aws():
        client, _ = node_group(REGION, desired=2, maximum=3)
        asg = AutoScaling(client)
        assert asg.raise_desired_capacity("ng-spot", 5) == 1
        assert asg.raise_desired_capacity("ng-spot", 5) == 0
        group = client.describe_auto_scaling_groups(AutoScalingGroupNames=["ng-spot"])
        assert group["AutoScalingGroups"][0]["DesiredCapacity"] == 3


def test_scale_in_terminates_through_a_managed_group_and_never_below_its_minimum():
    with mock_aws():
        client, (first, second) = node_group(REGION, desired=2, maximum=3, minimum=1, name="ng-od",
                                             tags={"kubernetes.io/cluster/prod": "owned"})
        asg = AutoScaling(client)
        seen: list[tuple[str, dict[str, str]]] = []

        def managed(group: str, tags: dict[str, str]) -> bool:
            seen.append((group, tags))
            return tags.get("kubernetes.io/cluster/prod") == "owned"

        assert asg.scale_in(first, lambda _group, _tags: False) is StepOutcome.NOT_MANAGED
        assert asg.scale_in("i-0000000000000dead", managed) is StepOutcome.NOT_MANAGED
        assert asg.scale_in(first, managed) is StepOutcome.SCALED_IN
        assert seen[-1] == ("ng-od", {"kubernetes.io/cluster/prod": "owned"})
        group = client.describe_auto_scaling_groups(AutoScalingGroupNames=["ng-od"])["AutoScalingGroups"][0]
        assert group["DesiredCapacity"] == 1, "the group is decremented, not refilled"
        assert asg.scale_in(second, managed) is StepOutcome.AT_MINIMUM
        group = client.describe_auto_scaling_groups(AutoScalingGroupNames=["ng-od"])["AutoScalingGroups"][0]
        assert (group["DesiredCapacity"], [i["InstanceId"] for i in group["Instances"]]) == (1, [second])


@pytest.mark.parametrize(("message", "ended"), [
    ("No active Lifecycle Action found with instance ID i-1", True),
    ("No active Lifecycle Action found with token 6b4ea2a6", True),
    ("1 validation error detected: Value at 'lifecycleHookName' failed to satisfy constraint", False),
], ids=["already ended by instance id", "already ended by token", "validation error raises"])
def test_a_lifecycle_action_that_already_ended_is_an_outcome_other_errors_raise(message, ended):
    client = boto3.client("autoscaling", region_name=REGION)
    action = LifecycleAction(group="ng-spot", hook="drain", token="6b4ea2a6-4bd1-4d1c-9e3a-5a6d7f0c2b11",
                             instance_id="i-1")
    with Stubber(client) as stub:
        for operation in ("record_lifecycle_action_heartbeat", "complete_lifecycle_action"):
            stub.add_client_error(operation, service_error_code="ValidationError",
                                  service_message=message, http_status_code=400)
        asg = AutoScaling(client)
        if ended:
            assert asg.heartbeat(action) is False
            assert asg.complete(action, "CONTINUE") == "already-ended"
        else:
            with pytest.raises(ClientError):
                asg.heartbeat(action)
            with pytest.raises(ClientError):
                asg.complete(action, "CONTINUE")
        stub.assert_no_pending_responses()


def status(instance_id: str, instance: str, system: str) -> dict:
    """One InstanceStatuses entry as EC2 documents it."""
    def summary(value: str) -> dict:
        return {"Status": value, "Details": [{"Name": "reachability",
                                              "Status": "failed" if value == "impaired" else "passed"}]}
    return {"InstanceId": instance_id, "AvailabilityZone": "eu-west-1a",
            "InstanceState": {"Code": 16, "Name": "running"},
            "InstanceStatus": summary(instance), "SystemStatus": summary(system)}


def test_impaired_instances_are_listed_by_check_over_every_page():
    """moto reports every status ok: EC2's answers for impaired instances come from the Stubber."""
    client = boto3.client("ec2", region_name=REGION, config=boto_config(), aws_access_key_id="k",
                          aws_secret_access_key="s")
    def impaired(check: str, token: str = "") -> dict:
        return {"Filters": [{"Name": f"{check}-status.status", "Values": ["impaired"]}],
                **({"NextToken": token} if token else {})}
    with Stubber(client) as stub:
        stub.add_response("describe_instance_status", {
            "InstanceStatuses": [status("i-0a1b2c3d4e5f60718", "impaired", "ok")], "NextToken": "page-2"},
            impaired("instance"))
        stub.add_response("describe_instance_status", {
            "InstanceStatuses": [status("i-0e4b6d8f0a2c35791", "impaired", "impaired")]},
            impaired("instance", "page-2"))
        stub.add_response("describe_instance_status", {
            "InstanceStatuses": [status("i-0e4b6d8f0a2c35791", "impaired", "impaired"),
                                 status("i-0b2c3d4e5f6071829", "ok", "impaired")]},
            impaired("system"))
        assert Ec2(client).impaired_instances() == {
            "i-0a1b2c3d4e5f60718": ("instance",), "i-0e4b6d8f0a2c35791": ("instance", "system"),
            "i-0b2c3d4e5f6071829": ("system",)}
        stub.assert_no_pending_responses()
