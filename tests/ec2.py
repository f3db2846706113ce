"""EC2 and Auto Scaling on moto, as the tests need them: an instance of a cluster, by its tags, and
an Auto Scaling group."""

from __future__ import annotations

import boto3


def launch_instance(ec2, cluster: str = "test") -> str:
    """A running instance tagged as an EKS managed node group's are (`eks:cluster-name=<cluster>`,
    `kubernetes.io/cluster/<cluster>=owned`); returns its id."""
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": "eks:cluster-name", "Value": cluster},
            {"Key": f"kubernetes.io/cluster/{cluster}", "Value": "owned"}]
    return ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="m6g.large",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]


def launched_ago(instance_id: str, seconds: float, region: str = "eu-west-1",
                 account: str = "123456789012") -> None:
    """Back-date a moto instance's LaunchTime: an instance that has been running a while, as one that
    gets a late event has (EC2 offers no call that sets it)."""
    from datetime import timedelta

    from moto.ec2.models import ec2_backends

    backend = ec2_backends[account][region]
    instance = backend.get_instance(instance_id)
    instance.launch_time = instance.launch_time - timedelta(seconds=seconds)


def node_group(region: str, desired: int, maximum: int, *, name: str = "ng-spot", minimum: int = 0,
               tags: dict[str, str] | None = None) -> tuple[object, list[str]]:
    """An Auto Scaling group (`ng-spot` unless named) whose instances moto launches tagged
    aws:autoscaling:groupName; its client and its instances' ids."""
    ec2 = boto3.client("ec2", region_name=region)
    autoscaling = boto3.client("autoscaling", region_name=region)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    autoscaling.create_launch_configuration(LaunchConfigurationName=name, ImageId=image,
                                            InstanceType="m6g.large")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name, LaunchConfigurationName=name, MinSize=minimum, MaxSize=maximum,
        DesiredCapacity=desired, AvailabilityZones=[f"{region}a"],
        Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True, "ResourceId": name,
               "ResourceType": "auto-scaling-group"} for k, v in (tags or {}).items()])
    described = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return autoscaling, [i["InstanceId"] for i in described["AutoScalingGroups"][0]["Instances"]]


def capacity_block_answers(stub, reservation_id: str, ends_at, instances: dict[str, str] | None, *,
                           reservation_type: str = "capacity-block", account: str = "123456789012",
                           region: str = "us-east-2") -> None:
    """Queue on a botocore Stubber what EC2 answers for a Capacity Block (moto knows no capacity
    reservations, nor the capacity-reservation-id filter): DescribeCapacityReservations, then one
    page of DescribeInstances of its `instances` ({instance id: the cluster its tags name}; None: a
    reservation whose instances are not asked for)."""
    for operation, response, params in capacity_block_responses(
            reservation_id, ends_at, instances, reservation_type=reservation_type, account=account,
            region=region):
        stub.add_response(operation, response, params)


def capacity_block_responses(reservation_id: str, ends_at, instances: dict[str, str] | None, *,
                             reservation_type: str = "capacity-block", account: str = "123456789012",
                             region: str = "us-east-2") -> list[tuple[str, dict, dict]]:
    """What `capacity_block_answers` queues: (operation, EC2's response, the request's parameters)."""
    from datetime import timedelta

    starts = ends_at - timedelta(days=2)
    answers = [("describe_capacity_reservations", {"CapacityReservations": [{
        "CapacityReservationId": reservation_id,
        "OwnerId": account,
        "CapacityReservationArn": f"arn:aws:ec2:{region}:{account}:capacity-reservation/{reservation_id}",
        "AvailabilityZoneId": "use2-az2", "AvailabilityZone": f"{region}b",
        "InstanceType": "p5.48xlarge", "InstancePlatform": "Linux/UNIX", "Tenancy": "default",
        "TotalInstanceCount": max(2, len(instances or {})), "AvailableInstanceCount": 0,
        "EbsOptimized": True, "EphemeralStorage": False,
        "State": "active", "StartDate": starts, "EndDate": ends_at, "EndDateType": "limited",
        "InstanceMatchCriteria": "targeted", "CreateDate": starts - timedelta(days=5),
        "ReservationType": reservation_type, "Tags": []}]},
        {"CapacityReservationIds": [reservation_id]})]
    if instances is None:
        return answers
    return [*answers, ("describe_instances", {"Reservations": [{
        "ReservationId": "r-0f1e2d3c4b5a69788", "OwnerId": account,
        "Instances": [{
            "InstanceId": instance_id, "InstanceType": "p5.48xlarge",
            "State": {"Code": 16, "Name": "running"},
            "PrivateDnsName": f"ip-10-0-{n}-17.{region}.compute.internal",
            "Placement": {"AvailabilityZone": f"{region}b", "Tenancy": "default"},
            "Architecture": "x86_64", "LaunchTime": starts,
            "CapacityReservationId": reservation_id,
            "InstanceLifecycle": "capacity-block",
            "Tags": [{"Key": "eks:cluster-name", "Value": cluster},
                     {"Key": f"kubernetes.io/cluster/{cluster}", "Value": "owned"}],
        } for n, (instance_id, cluster) in enumerate(instances.items())]}]},
        {"Filters": [{"Name": "capacity-reservation-id", "Values": [reservation_id]},
                     {"Name": "instance-state-name", "Values": ["pending", "running"]}]})]
