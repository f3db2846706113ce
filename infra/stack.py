"""The stack `app.py` deploys: one `SpotRebalancer` and the outputs an operator needs next."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from spot_rebalancer.deployment import SCHEDULE_FUNCTION_OUTPUT

from .config import SpotRebalancerConfig
from .construct import KUBERNETES_GROUP, SpotRebalancer

RBAC_MANIFEST = "infra/rbac/spot-rebalancer.yaml"
# Bound only with forceAtDeadline on: it lets the functions delete pods.
FORCE_RBAC_MANIFEST = "infra/rbac/spot-rebalancer-force-at-deadline.yaml"


def rbac_command(config: SpotRebalancerConfig) -> str:
    """What the operator applies: the ClusterRole, and the pod deletions only forceAtDeadline needs."""
    manifests = [RBAC_MANIFEST, *([FORCE_RBAC_MANIFEST] if config.force_at_deadline else [])]
    return "kubectl apply " + " ".join(f"-f {manifest}" for manifest in manifests)


class SpotRebalancerStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: SpotRebalancerConfig,
                 code: lambda_.Code | None = None, **stack_props: Any) -> None:
        super().__init__(scope, construct_id,
                         description=f"spot-rebalancer for EKS cluster {config.cluster_name}", **stack_props)
        self.rebalancer = SpotRebalancer(self, "SpotRebalancer", config=config, code=code)
        CfnOutput(self, "EventsRoleArn", value=self.rebalancer.events_role.role_arn,
                  description=f"Mapped to Kubernetes group {KUBERNETES_GROUP} by an EKS access entry")
        CfnOutput(self, "ScheduleRoleArn", value=self.rebalancer.schedule_role.role_arn,
                  description=f"Mapped to Kubernetes group {KUBERNETES_GROUP} by an EKS access entry")
        CfnOutput(self, "RbacCommand", value=rbac_command(config),
                  description="Run once per cluster, as a cluster administrator, from the repository root")
        CfnOutput(self, "WorkQueueUrl", value=self.rebalancer.work_queue.queue_url)
        CfnOutput(self, SCHEDULE_FUNCTION_OUTPUT, value=self.rebalancer.schedule_function.function_name,
                  description="Its environment holds the deployed settings: spot-rebalancer plan --stack")
        CfnOutput(self, "AlarmTopicArn", value=self.rebalancer.monitoring.topic.topic_arn)
        CfnOutput(self, "DashboardName", value=self.rebalancer.monitoring.dashboard.dashboard_name)
        if config.vpc_attached and not config.security_group_ids:
            CfnOutput(self, "FunctionSecurityGroupId",
                      value=self.rebalancer.security_group_ids[0],
                      description="Allow it inbound on 443 in the cluster security group")
