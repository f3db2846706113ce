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
