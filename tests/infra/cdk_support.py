"""Shared by the infra tests: the session's cluster settings and a view of the synthesized app."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import App
from aws_cdk.assertions import Template

REPO = Path(__file__).resolve().parents[2]
# The first is the group in the AWS sample events of tests/events.
BATCH_GROUPS = ["eks-workers-spot", "eks-workers-on-demand"]
EXISTING_TOPIC = "arn:aws:sns:eu-west-1:111122223333:platform-alarms"
NOTICES_TOPIC = "arn:aws:sns:eu-west-1:111122223333:platform-notices"
NOTICES_KEY = "arn:aws:kms:eu-west-1:111122223333:key/0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"

# Per-cluster settings on top of cdk.json's context; `prod` takes none.
OVERRIDES: dict[str, dict[str, Any]] = {
    "batch": {
        "asgNames": BATCH_GROUPS,
        "launchLifecycleHook": True,
        "capacityNudge": True,
        "scaleInEmptiedNodes": True,
        "scaleInSettleSeconds": 900,
        "instanceStatusChecks": True,
        "lifecycleDefaultResult": "ABANDON",
        "drainTimeoutSeconds": 900,
        "recommendationPolicies": [
            {"selector": {"eks.amazonaws.com/nodegroup": "batch-spot"}, "action": "drain"},
            {"selector": {"workload": "stateful"}, "action": "none"},
        ],
        "vpcId": "vpc-0a1b2c3d4e5f60718",
        "subnetIds": ["subnet-0a1b2c3d4e5f60718", "subnet-1a1b2c3d4e5f60718"],
        "alarmEmail": "oncall@example.com",
        "spotShareTargetPercent": 60,
        "eventsMaxConcurrency": 8,
        "logRetentionDays": 90,
        "notificationTopicArn": NOTICES_TOPIC,
        "notificationTopicKeyArn": NOTICES_KEY,
    },
    "ops_private": {
        "vpcId": "vpc-0fedcba987654321f",
        "subnetIds": ["subnet-0fedcba987654321f"],
        "securityGroupIds": ["sg-0fedcba987654321f"],
        "alarmTopicArn": EXISTING_TOPIC,
        "misplacedPodsThreshold": "",
        "moveFailureAlarmPercent": "",
        "notificationTopicArn": EXISTING_TOPIC.replace("alarms", "notices"),
        "scheduleMinutes": 10,
        "scheduleMemoryMb": 2048,
    },
}


@dataclass
class Synth:
    app: App
    outdir: Path
    templates: dict[str, dict[str, Any]]  # cluster name -> CloudFormation template

    def template(self, cluster: str) -> Template:
        return Template.from_json(self.templates[cluster])

    def resources(self, cluster: str, kind: str, id_prefix: str = "") -> dict[str, dict[str, Any]]:
        """Resources of a type, optionally only those whose logical id starts with a construct path."""
        return {k: v for k, v in self.templates[cluster]["Resources"].items()
                if v["Type"] == kind and k.startswith(id_prefix)}

    def logical_id(self, cluster: str, kind: str, id_prefix: str) -> str:
        found = self.resources(cluster, kind, id_prefix)
        assert len(found) == 1, f"{kind} {id_prefix}: {list(found)}"
        return next(iter(found))

    def resource(self, cluster: str, kind: str, id_prefix: str = "") -> dict[str, Any]:
        return self.templates[cluster]["Resources"][self.logical_id(cluster, kind, id_prefix)]
