"""EC2 on moto, as the integration tests need it: an instance of a cluster, by its tags."""

from __future__ import annotations


def launch_instance(ec2, cluster: str = "test") -> str:
    """A running instance tagged `eks:cluster-name=<cluster>`; returns its id."""
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="m6g.large",
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "eks:cluster-name", "Value": cluster}]}],
    )["Instances"][0]["InstanceId"]
