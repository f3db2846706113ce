"""`SpotRebalancer`: everything one EKS cluster's rebalancer needs, as one reusable construct.

Event paths. Every EC2, Auto Scaling and Health event goes through the SQS work queue to the events
function, never straight to it: the queue absorbs an interruption storm and the event source's
maximum concurrency bounds how many invocations talk to the API server at once; failed records come
back (partial batch responses) and, after `WORK_MAX_RECEIVES` tries, land in a dead-letter queue. A
drain that outlives one invocation continues through the same queue. The schedule invokes its
function directly: one event per period needs no buffer, and reserved concurrency 1 keeps cycles
from overlapping. EventBridge retries every delivery and dead-letters what it cannot deliver.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from aws_cdk import Acknowledgment, ArnFormat, Duration, RemovalPolicy, Stack, Token, Validations
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks as eks
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spot_rebalancer.ownership import owned_tag
from spot_rebalancer.state_keys import HISTORY_KEY_PREFIX, IMPAIRED_KEY_PREFIX, history_key, impaired_key
from spot_rebalancer.telemetry import NAMESPACE

from .bundling import lambda_code
from .config import LOG_RETENTION_DAYS, SpotRebalancerConfig
from .monitoring import Monitoring

# The Kubernetes group the functions' access entries map to; infra/rbac/ binds it to its ClusterRole.
KUBERNETES_GROUP = "spot-rebalancer"
SERVICE_NAME = "spot-rebalancer"
EVENTS_HANDLER = "spot_rebalancer.handlers.events.handler"
SCHEDULE_HANDLER = "spot_rebalancer.handlers.schedule.handler"
# Lifecycle rules match only these hooks, so the function never completes another tool's actions.
TERMINATE_HOOK_NAME = "spot-rebalancer-drain"
LAUNCH_HOOK_NAME = "spot-rebalancer-launch"
LAUNCH_HEARTBEAT_SECONDS = 300
LIFECYCLE_TAG_VALUES = ("spot", "on-demand")
CAPACITY_BLOCK_WARNINGS = ("Capacity Block Expiration Warning",
                           "Capacity Block Reservation Expiration Warning")
# The state table calls each function makes (tests/integration/test_least_privilege.py records them):
# powertools' idempotency records (a conditional put returns the record it finds, so no get), and the
# move history.
IDEMPOTENCY_CALLS = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
HISTORY_CALLS = ["dynamodb:GetItem", "dynamodb:PutItem"]

# The events function works inside a spot instance's two-minute notice.
EVENTS_TIMEOUT = Duration.seconds(110)
EVENTS_MEMORY_MB = 512
EVENTS_BATCH_SIZE = 10
SCHEDULE_MAX_TIMEOUT_SECONDS = 300
# AWS advises a queue visibility timeout of at least six times the consuming function's timeout.
WORK_VISIBILITY_TIMEOUT = Duration.seconds(6 * int(EVENTS_TIMEOUT.to_seconds()))
WORK_MAX_RECEIVES = 5
DEAD_LETTER_RETENTION = Duration.days(14)
# EventBridge's longest retry: a late event is still delivered, and the code decides it is stale.
DELIVERY_RETRY_ATTEMPTS = 185
DELIVERY_MAX_EVENT_AGE = Duration.hours(24)
RETENTION = dict(zip(LOG_RETENTION_DAYS, (
    logs.RetentionDays.ONE_DAY, logs.RetentionDays.THREE_DAYS, logs.RetentionDays.FIVE_DAYS,
    logs.RetentionDays.ONE_WEEK, logs.RetentionDays.TWO_WEEKS, logs.RetentionDays.ONE_MONTH,
    logs.RetentionDays.TWO_MONTHS, logs.RetentionDays.THREE_MONTHS, logs.RetentionDays.FOUR_MONTHS,
    logs.RetentionDays.FIVE_MONTHS, logs.RetentionDays.SIX_MONTHS, logs.RetentionDays.ONE_YEAR,
    logs.RetentionDays.THIRTEEN_MONTHS, logs.RetentionDays.EIGHTEEN_MONTHS, logs.RetentionDays.TWO_YEARS,
    logs.RetentionDays.THREE_YEARS, logs.RetentionDays.FIVE_YEARS, logs.RetentionDays.SIX_YEARS,
    logs.RetentionDays.SEVEN_YEARS, logs.RetentionDays.EIGHT_YEARS, logs.RetentionDays.NINE_YEARS,
    logs.RetentionDays.TEN_YEARS), strict=True))


def schedule_timeout(config: SpotRebalancerConfig) -> Duration:
    """Short enough that a cycle ends well before the next one starts."""
    return Duration.seconds(min(SCHEDULE_MAX_TIMEOUT_SECONDS, config.schedule_minutes * 60 - 30))


def runtime_environment(config: SpotRebalancerConfig, table_name: str, work_queue_url: str) -> dict[str, str]:
    """The variables `spot_rebalancer.config.Settings.from_env` reads, plus Powertools'."""
    settings = dataclasses.replace(config, state_table=table_name, work_queue_url=work_queue_url)
    return {**settings.to_env(), "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE}


def event_patterns(config: SpotRebalancerConfig) -> dict[str, events.EventPattern]:
    """Rule id to pattern for every event the events function handles."""
    in_named_groups = {"AutoScalingGroupName": list(config.asg_names)} if config.asg_names else {}

    def lifecycle_action(detail_type: str, hook_name: str) -> events.EventPattern:
        return events.EventPattern(source=["aws.autoscaling"], detail_type=[detail_type],
                                   detail={"LifecycleHookName": [hook_name], **in_named_groups})

    patterns = {
        "SpotInterruptionWarningRule": events.EventPattern(
            source=["aws.ec2"], detail_type=["EC2 Spot Instance Interruption Warning"]),
        "CapacityReservationInterruptionRule": events.EventPattern(
            source=["aws.ec2"], detail_type=["EC2 Capacity Reservation Instance Interruption Warning"]),
        # A Capacity Block's instances are terminated from 30 minutes before its end; the warning
        # comes 10 minutes before that. AWS's pages name its detail-type both ways.
        "CapacityBlockExpirationRule": events.EventPattern(
            source=["aws.ec2"], detail_type=list(CAPACITY_BLOCK_WARNINGS)),
        "RebalanceRecommendationRule": events.EventPattern(
            source=["aws.ec2"], detail_type=["EC2 Instance Rebalance Recommendation"]),
        "TerminateLifecycleActionRule": lifecycle_action("EC2 Instance-terminate Lifecycle Action",
                                                         TERMINATE_HOOK_NAME),
        "LaunchSuccessfulRule": events.EventPattern(
            source=["aws.autoscaling"], detail_type=["EC2 Instance Launch Successful"],
            detail=in_named_groups or None),
        # stopping and shutting-down: drain before the instance goes; running: tag and label it, undo
        # a stop's drain; stopped and terminated: a backstop when the earlier event was lost.
        "InstanceStateChangeRule": events.EventPattern(
            source=["aws.ec2"], detail_type=["EC2 Instance State-change Notification"],
            detail={"state": ["stopping", "shutting-down", "running", "stopped", "terminated"]}),
        # Scheduled retirements, stops and reboots, and issues with this account's instances (e.g. a
        # degraded instance-store drive). Not by eventScopeCode: AWS's own EC2 samples carry none;
        # an event that names no instance is acknowledged without action.
        "HealthEventRule": events.EventPattern(
            source=["aws.health"], detail_type=["AWS Health Event"],
            detail={"service": ["EC2"], "eventTypeCategory": ["scheduledChange", "issue"]}),
    }
    if config.launch_lifecycle_hook:
        patterns["LaunchLifecycleActionRule"] = lifecycle_action("EC2 Instance-launch Lifecycle Action",
                                                                 LAUNCH_HOOK_NAME)
    return patterns


def _ack(rule_id: str, reason: str) -> Acknowledgment:
    """A cdk-nag finding accepted on purpose, with the reason it is right here."""
    return Acknowledgment(id=rule_id, reason=reason)


def _stable_id(prefix: str, name: str) -> str:
    # Logical ids follow the group's name, not its position, so reordering asgNames replaces nothing.
    return prefix + hashlib.sha256(name.encode()).hexdigest()[:8]


class SpotRebalancer(Construct):
    """Drains interrupted EKS nodes, tags and labels lifecycle, and moves drifted pods back.

    `code` defaults to the repository's Lambda package bundled locally; pass another `lambda_.Code`
    to deploy a bundle built elsewhere (it must hold the `spot_rebalancer` package and its lock).
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: SpotRebalancerConfig,
                 code: lambda_.Code | None = None) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        code = code or lambda_code(self)

        # Idempotency records (Powertools' layout: key `id`, expiry `expiration`) and drain, move
        # and recommendation state share one table: every item is keyed by a prefixed `id`.
        self.table = dynamodb.Table(
            self, "StateTable",
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
            time_to_live_attribute="expiration",
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            # Only short-lived state: nothing worth keeping once the stack is gone.
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.work_dead_letter_queue = self._queue("WorkDeadLetterQueue",
                                                  retention_period=DEAD_LETTER_RETENTION)
        self.delivery_dead_letter_queue = self._queue("DeliveryDeadLetterQueue",
                                                      retention_period=DEAD_LETTER_RETENTION)
        Validations.of(self.delivery_dead_letter_queue).acknowledge(_ack(
            "AwsSolutions-SQS3",
            "This queue is itself the dead-letter queue for EventBridge deliveries and failed schedule "
            "cycles; an alarm fires when it holds anything."))
        self.work_queue = self._queue(
            "WorkQueue", visibility_timeout=WORK_VISIBILITY_TIMEOUT,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.work_dead_letter_queue,
                                                  max_receive_count=WORK_MAX_RECEIVES))

        environment = runtime_environment(config, self.table.table_name, self.work_queue.queue_url)
        self.security_group_ids: list[str] = []
        network = self._network()
        self.events_role = self._role("EventsRole", "spot-rebalancer events function")
        self.schedule_role = self._role("ScheduleRole", "spot-rebalancer schedule function")

        self.events_function = self._function(
            "EventsFunction", role=self.events_role, code=code, handler=EVENTS_HANDLER,
            description=f"spot-rebalancer for {config.cluster_name}: interruptions, lifecycle, health",
            timeout=EVENTS_TIMEOUT, memory_size=EVENTS_MEMORY_MB, environment=environment, network=network,
            # Drains are never throttled by the rest of the account; the event source never asks for more.
            reserved_concurrent_executions=config.events_max_concurrency,
            # A drain longer than one invocation continues by re-enqueueing itself on its own
            # trigger queue; Lambda's loop detection would otherwise stop it after a few hops.
            recursive_loop=lambda_.RecursiveLoop.ALLOW)
        # The event source grants consuming the work queue, ChangeMessageVisibility included: the
        # function hands its failed records back early with it (on this queue only).
        self.events_function.add_event_source(event_sources.SqsEventSource(
            self.work_queue, batch_size=EVENTS_BATCH_SIZE, report_batch_item_failures=True,
            max_concurrency=config.events_max_concurrency))
        self.work_queue.grant_send_messages(self.events_role)

        period = Duration.minutes(config.schedule_minutes)
        self.schedule_function = self._function(
            "ScheduleFunction", role=self.schedule_role, code=code, handler=SCHEDULE_HANDLER,
            description=f"spot-rebalancer for {config.cluster_name}: sweep, census, rebalance cycle",
            timeout=schedule_timeout(config), memory_size=config.schedule_memory_mb, environment=environment,
            network=network, reserved_concurrent_executions=1,
            # A cycle is worth retrying once; one older than a period is replaced by the next.
            retry_attempts=1, max_event_age=period,
            on_failure=destinations.SqsDestination(self.delivery_dead_letter_queue))

        self._grant_common(self.events_role)
        self._grant_common(self.schedule_role)
        not_history = {"ForAllValues:StringNotLike": {"dynamodb:LeadingKeys": [
            f"{HISTORY_KEY_PREFIX}*", f"{IMPAIRED_KEY_PREFIX}*"]}}
        self._grant_state(self.events_role, "IdempotencyRecords", IDEMPOTENCY_CALLS, not_history)
        self._grant_state(self.schedule_role, "MoveHistory", HISTORY_CALLS,
                          {"ForAllValues:StringEquals": {
                              "dynamodb:LeadingKeys": [history_key(config.cluster_name)]}})
        self._grant_lifecycle_actions(self.events_role)
        # A Capacity Block's warning names its reservation: its end and instances are read from EC2.
        self.events_role.add_to_policy(iam.PolicyStatement(
            sid="ReadCapacityBlocks", actions=["ec2:DescribeCapacityReservations"], resources=["*"]))
        if config.capacity_nudge:
            self._grant_capacity_nudge(self.schedule_role)
        if config.scale_in_emptied_nodes:
            self._grant_scale_in(self.schedule_role)
        if config.instance_status_checks:
            self._grant_status_checks(self.schedule_role)
        # The census prices the fleet: list prices and current spot prices (neither has resources).
        self.schedule_role.add_to_policy(iam.PolicyStatement(
            sid="PriceTheFleet", actions=["pricing:GetProducts", "ec2:DescribeSpotPriceHistory"],
            resources=["*"]))

        if config.notification_topic_arn:
            for role in (self.events_role, self.schedule_role):
                self._grant_notifications(role)

        self.rules = self._rules(period)
        self._lifecycle_hooks()
        self.access_entries = [
            eks.CfnAccessEntry(self, f"{name}AccessEntry", cluster_name=config.cluster_name,
                               principal_arn=role.role_arn, kubernetes_groups=[KUBERNETES_GROUP],
                               type="STANDARD")
            for name, role in (("Events", self.events_role), ("Schedule", self.schedule_role))
        ]
        self.monitoring = Monitoring(
            self, "Monitoring", config=config, events_function=self.events_function,
            schedule_function=self.schedule_function, work_queue=self.work_queue,
            dead_letter_queues={"WorkDeadLetterQueue": self.work_dead_letter_queue,
                                "DeliveryDeadLetterQueue": self.delivery_dead_letter_queue},
            batch_size=EVENTS_BATCH_SIZE)

    # ---- building blocks -------------------------------------------------------------------------

    def _grant_notifications(self, role: iam.Role) -> None:
        """Publishing to the notification topic only; with a customer managed key, what SNS asks of
        the publisher on that key only (it encrypts each message with a data key)."""
        config = self.config
        role.add_to_policy(iam.PolicyStatement(
            sid="Notify", actions=["sns:Publish"], resources=[config.notification_topic_arn]))
        if config.notification_topic_key_arn:
            role.add_to_policy(iam.PolicyStatement(
                sid="NotifyEncrypted", actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=[config.notification_topic_key_arn]))

    def _queue(self, construct_id: str, **props: Any) -> sqs.Queue:
        return sqs.Queue(self, construct_id, encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
                         **props)

    def _network(self) -> lambda_.CfnFunction.VpcConfigProperty | None:
        """Subnets and security groups for a private cluster endpoint. Given as plain ids: the L2 VPC
        types would look the VPC up in the account at synth time, which this needs no part of."""
        config = self.config
        if not config.vpc_attached:
            return None
        group_ids = list(config.security_group_ids)
        if not group_ids:
            # Outbound HTTPS only: the cluster endpoint and the AWS APIs. The cluster's security group
            # must let this group in on 443 (the stack outputs its id).
            group = ec2.CfnSecurityGroup(
                self, "FunctionSecurityGroup", vpc_id=config.vpc_id,
                group_description="spot-rebalancer functions: HTTPS out only",
                security_group_egress=[ec2.CfnSecurityGroup.EgressProperty(
                    ip_protocol="tcp", from_port=443, to_port=443, cidr_ip="0.0.0.0/0",
                    description="Kubernetes API server and AWS service endpoints")])
            group_ids = [group.attr_group_id]
        self.security_group_ids = group_ids
        return lambda_.CfnFunction.VpcConfigProperty(subnet_ids=list(config.subnet_ids),
                                                     security_group_ids=group_ids)

    def _role(self, construct_id: str, purpose: str) -> iam.Role:
        role = iam.Role(self, construct_id, assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description=f"{purpose} for EKS cluster {self.config.cluster_name}")
        if self.config.vpc_attached:
            role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name(
                "service-role/AWSLambdaVPCAccessExecutionRole"))
            Validations.of(role).acknowledge(_ack(
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSLambdaVPCAccessExecutionRole]",
                "AWS's own policy for the network interfaces of a VPC-attached function; Lambda "
                "creates the interfaces before their ids exist, so they cannot be named in a policy."))
        return role

    def _function(self, construct_id: str, *, role: iam.Role,
                  network: lambda_.CfnFunction.VpcConfigProperty | None, **props: Any) -> lambda_.Function:
        log_group = logs.LogGroup(self, f"{construct_id}Logs",
                                  retention=RETENTION[self.config.log_retention_days])
        log_group.grant_write(role)
        function = lambda_.Function(
            self, construct_id, runtime=lambda_.Runtime.PYTHON_3_13, architecture=lambda_.Architecture.ARM_64,
            tracing=lambda_.Tracing.DISABLED, log_group=log_group, role=role, **props)
        if network is not None:
            resource = function.node.default_child
            assert isinstance(resource, lambda_.CfnFunction)
            resource.vpc_config = network
        Validations.of(function).acknowledge(_ack(
            "AwsSolutions-L1",
            "Pinned to python3.13: the runtime lock (lambdas/requirements.txt) is installed as "
            "cp313 wheels and the code is tested on 3.13; moving runtime is a deliberate upgrade."))
        return function

    def _arn(self, service: str, resource: str, name: str, *, colon: bool = False) -> str:
        return Stack.of(self).format_arn(
            service=service, resource=resource, resource_name=name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME if colon else ArnFormat.SLASH_RESOURCE_NAME)

    def _nag_arn(self, service: str, resource: str) -> str:
        """An ARN as cdk-nag names it in a finding: pseudo parameters as <AWS::...>, known values as is."""
        stack = Stack.of(self)

        def shown(value: str, pseudo: str) -> str:
            return f"<AWS::{pseudo}>" if Token.is_unresolved(value) else value

        return (f"arn:{shown(stack.partition, 'Partition')}:{service}:{shown(stack.region, 'Region')}:"
                f"{shown(stack.account, 'AccountId')}:{resource}")

    def _grant_common(self, role: iam.Role) -> None:
        config = self.config
        owned_key, owned_value = owned_tag(config.cluster_name)
        ownership = {f"aws:ResourceTag/{owned_key}": owned_value}
        role.add_to_policy(iam.PolicyStatement(
            sid="FindInstances", actions=["ec2:DescribeInstances"], resources=["*"]))
        role.add_to_policy(iam.PolicyStatement(
            sid="TagInstanceLifecycle", actions=["ec2:CreateTags"],
            resources=[self._arn("ec2", "instance", "*")],
            conditions={
                "StringEquals": {**ownership,
                                 f"aws:RequestTag/{config.lifecycle_tag_key}": list(LIFECYCLE_TAG_VALUES)},
                "ForAllValues:StringEquals": {"aws:TagKeys": [config.lifecycle_tag_key]},
            }))
        role.add_to_policy(iam.PolicyStatement(
            sid="ConnectToCluster", actions=["eks:DescribeCluster"],
            resources=[self._arn("eks", "cluster", config.cluster_name)]))
        Validations.of(role).acknowledge(
            _ack(
                "AwsSolutions-IAM5[Resource::*]",
                "ec2:DescribeInstances, ec2:DescribeCapacityReservations, ec2:DescribeInstanceStatus, "
                "ec2:DescribeSpotPriceHistory, pricing:GetProducts, "
                "autoscaling:DescribeAutoScalingGroups/DescribeAutoScalingInstances have no "
                "resource-level permissions; AWS requires Resource *."),
            _ack(
                f"AwsSolutions-IAM5[Resource::{self._nag_arn('ec2', 'instance/*')}]",
                f"CreateTags is limited by condition to instances tagged {owned_key}={owned_value} and "
                f"to the single tag "
                f"{config.lifecycle_tag_key}=spot|on-demand."),
        )

    def _grant_state(self, role: iam.Role, sid: str, actions: list[str], keys: dict[str, Any]) -> None:
        """Exactly the calls the role makes on the state table, on its own items only: the events
        function's idempotency records (powertools: conditional put, update, delete), the schedule
        function's move history (get, conditional put). Neither may touch the other's items."""
        role.add_to_policy(iam.PolicyStatement(sid=sid, actions=actions, resources=[self.table.table_arn],
                                               conditions=keys))

    def _autoscaling_scope(self, role: iam.Role) -> tuple[list[str], dict[str, Any] | None]:
        """The named groups by ARN, or else any group of the cluster by its ownership tag."""
        config = self.config
        if config.asg_names:
            arns = [self._arn("autoscaling", "autoScalingGroup", f"*:autoScalingGroupName/{name}", colon=True)
                    for name in config.asg_names]
            Validations.of(role).acknowledge(*(_ack(
                f"AwsSolutions-IAM5[Resource::"
                f"{self._nag_arn('autoscaling', f'autoScalingGroup:*:autoScalingGroupName/{name}')}]",
                "An Auto Scaling group ARN holds a generated id unknown at synth time; the group's "
                "name is exact.") for name in config.asg_names))
            return arns, None
        any_group = self._nag_arn("autoscaling", "autoScalingGroup:*:autoScalingGroupName/*")
        Validations.of(role).acknowledge(_ack(
            f"AwsSolutions-IAM5[Resource::{any_group}]",
            f"No asgNames configured: limited by condition to groups tagged "
            f"{'='.join(owned_tag(config.cluster_name))}."))
        arn = self._arn("autoscaling", "autoScalingGroup", "*:autoScalingGroupName/*", colon=True)
        owned_key, owned_value = owned_tag(config.cluster_name)
        condition = {"StringEquals": {f"autoscaling:ResourceTag/{owned_key}": owned_value}}
        return [arn], condition

    def _grant_lifecycle_actions(self, role: iam.Role) -> None:
        resources, conditions = self._autoscaling_scope(role)
        role.add_to_policy(iam.PolicyStatement(
            sid="CompleteLifecycleActions",
            actions=["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
            resources=resources, conditions=conditions))

    def _grant_capacity_nudge(self, role: iam.Role) -> None:
        resources, conditions = self._autoscaling_scope(role)
        role.add_to_policy(iam.PolicyStatement(
            sid="ReadGroupCapacity", actions=["autoscaling:DescribeAutoScalingGroups"], resources=["*"]))
        role.add_to_policy(iam.PolicyStatement(
            sid="RaiseGroupCapacity", actions=["autoscaling:SetDesiredCapacity"],
            resources=resources, conditions=conditions))

    def _grant_scale_in(self, role: iam.Role) -> None:
        """Terminate an emptied node through its group (and decrement it): only in the groups this
        deployment manages, the code's rule too (ownership.manages_group)."""
        resources, conditions = self._autoscaling_scope(role)
        role.add_to_policy(iam.PolicyStatement(
            sid="FindEmptiedNodesGroups",
            actions=["autoscaling:DescribeAutoScalingInstances", "autoscaling:DescribeAutoScalingGroups"],
            resources=["*"]))
        role.add_to_policy(iam.PolicyStatement(
            sid="ScaleInEmptiedNodes", actions=["autoscaling:TerminateInstanceInAutoScalingGroup"],
            resources=resources, conditions=conditions))

    def _grant_status_checks(self, role: iam.Role) -> None:
        """Find impaired instances, record each drain queued (its own items only) and queue it for the
        events function: what instanceStatusChecks needs, and only with it."""
        role.add_to_policy(iam.PolicyStatement(
            sid="FindImpairedInstances", actions=["ec2:DescribeInstanceStatus"], resources=["*"]))
        self._grant_state(role, "ImpairedDrainRecords", ["dynamodb:PutItem"], {"ForAllValues:StringLike": {
            "dynamodb:LeadingKeys": [impaired_key(self.config.cluster_name, "*")]}})
        role.add_to_policy(iam.PolicyStatement(
            sid="QueueImpairedDrains", actions=["sqs:SendMessage"], resources=[self.work_queue.queue_arn]))

    def _rules(self, period: Duration) -> dict[str, events.Rule]:
        rules = {}
        for rule_id, pattern in event_patterns(self.config).items():
            rules[rule_id] = events.Rule(self, rule_id, event_pattern=pattern, targets=[targets.SqsQueue(
                self.work_queue, dead_letter_queue=self.delivery_dead_letter_queue,
                retry_attempts=DELIVERY_RETRY_ATTEMPTS, max_event_age=DELIVERY_MAX_EVENT_AGE)])
        rules["ScheduleRule"] = events.Rule(
            self, "ScheduleRule", schedule=events.Schedule.rate(period), targets=[targets.LambdaFunction(
                self.schedule_function, dead_letter_queue=self.delivery_dead_letter_queue,
                retry_attempts=3, max_event_age=period)])
        return rules

    def _lifecycle_hooks(self) -> None:
        config = self.config
        # Lifecycle events carry it, so a function can tell its cluster's actions without a lookup.
        metadata = json.dumps({"cluster": config.cluster_name})
        for name in config.asg_names:
            autoscaling.CfnLifecycleHook(
                self, _stable_id("TerminateHook", name), auto_scaling_group_name=name,
                lifecycle_hook_name=TERMINATE_HOOK_NAME,
                lifecycle_transition="autoscaling:EC2_INSTANCE_TERMINATING",
                heartbeat_timeout=config.lifecycle_heartbeat_seconds,
                default_result=config.lifecycle_default_result, notification_metadata=metadata)
            if config.launch_lifecycle_hook:
                # A launch goes ahead even if the function never answers: labels are not worth an instance.
                autoscaling.CfnLifecycleHook(
                    self, _stable_id("LaunchHook", name), auto_scaling_group_name=name,
                    lifecycle_hook_name=LAUNCH_HOOK_NAME,
                    lifecycle_transition="autoscaling:EC2_INSTANCE_LAUNCHING",
                    heartbeat_timeout=LAUNCH_HEARTBEAT_SECONDS, default_result="CONTINUE",
                    notification_metadata=metadata)
