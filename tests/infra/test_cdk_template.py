"""The synthesized templates: functions, queues, rules, table, permissions, cluster access, alarms."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match
from cdk_support import BATCH_GROUPS, EXISTING_TOPIC, NOTICES_KEY, NOTICES_TOPIC

from infra.construct import (
    EVENTS_HANDLER,
    KUBERNETES_GROUP,
    LAUNCH_HOOK_NAME,
    SCHEDULE_HANDLER,
    TERMINATE_HOOK_NAME,
)
from spot_rebalancer.config import RecommendationPolicy, Settings
from spot_rebalancer.deployment import SCHEDULE_FUNCTION_OUTPUT
from spot_rebalancer.ownership import owned_by, owned_tag

CLUSTERS = ("prod", "batch", "ops_private")
FUNCTION = "AWS::Lambda::Function"
POLICY = "AWS::IAM::Policy"


def att(logical_id: str, attribute: str = "Arn") -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def ref(logical_id: str) -> dict[str, str]:
    return {"Ref": logical_id}


def ids(synth, cluster: str) -> dict[str, str]:
    """Logical ids of the resources the assertions refer to."""
    find = synth.logical_id
    return {
        "events": find(cluster, FUNCTION, "SpotRebalancerEventsFunction"),
        "schedule": find(cluster, FUNCTION, "SpotRebalancerScheduleFunction"),
        "work": find(cluster, "AWS::SQS::Queue", "SpotRebalancerWorkQueue"),
        "work_dlq": find(cluster, "AWS::SQS::Queue", "SpotRebalancerWorkDeadLetterQueue"),
        "delivery_dlq": find(cluster, "AWS::SQS::Queue", "SpotRebalancerDeliveryDeadLetterQueue"),
        "table": find(cluster, "AWS::DynamoDB::Table", "SpotRebalancerStateTable"),
        "events_role": find(cluster, "AWS::IAM::Role", "SpotRebalancerEventsRole"),
        "schedule_role": find(cluster, "AWS::IAM::Role", "SpotRebalancerScheduleRole"),
    }


def statements(synth, cluster: str, role: str) -> list[dict[str, Any]]:
    policy = synth.resource(cluster, POLICY, f"SpotRebalancer{role}RoleDefaultPolicy")
    return policy["Properties"]["PolicyDocument"]["Statement"]


def actions_of(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def granting(stmts: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [s for s in stmts if action in actions_of(s)]


# ---- functions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_functions_are_arm64_python313_untraced_with_their_own_logs(synth, cluster):
    template = synth.template(cluster)
    functions = synth.resources(cluster, FUNCTION)
    assert len(functions) == 2
    for function in functions.values():
        props = function["Properties"]
        assert props["Architectures"] == ["arm64"]
        assert props["Runtime"] == "python3.13"
        # X-Ray is off (README "Tracing"): no tracing mode, and no role may send traces.
        assert "TracingConfig" not in props
        log_group = props["LoggingConfig"]["LogGroup"]["Ref"]
        retention = synth.templates[cluster]["Resources"][log_group]["Properties"]["RetentionInDays"]
        assert retention == {"batch": 90}.get(cluster, 30)
    template.resource_count_is("AWS::Logs::LogGroup", 2)
    for role in ("Events", "Schedule"):
        granted = {a for statement in statements(synth, cluster, role) for a in actions_of(statement)}
        assert not any(a.startswith("xray:") for a in granted), role


def test_the_events_function_fits_the_spot_notice_and_may_continue_itself(synth):
    props = synth.resource("prod", FUNCTION, "SpotRebalancerEventsFunction")["Properties"]
    assert props["Handler"] == EVENTS_HANDLER
    assert props["Timeout"] == 110 < 120
    assert props["MemorySize"] == 512
    assert props["RecursiveLoop"] == "Allow"
    # Its own share of the account, as much as the event source ever asks for (eventsMaxConcurrency).
    assert props["ReservedConcurrentExecutions"] == 5


@pytest.mark.parametrize(("cluster", "period_seconds", "timeout", "memory"),
                         [("prod", 300, 270, 1024), ("ops_private", 600, 300, 2048)])
def test_the_schedule_function_never_overlaps_itself(synth, cluster, period_seconds, timeout, memory):
    i = ids(synth, cluster)
    props = synth.resource(cluster, FUNCTION, "SpotRebalancerScheduleFunction")["Properties"]
    assert props["Handler"] == SCHEDULE_HANDLER
    assert props["ReservedConcurrentExecutions"] == 1
    assert props["Timeout"] == timeout < period_seconds
    assert props["MemorySize"] == memory
    synth.template(cluster).has_resource_properties("AWS::Lambda::EventInvokeConfig", {
        "FunctionName": ref(i["schedule"]),
        "MaximumRetryAttempts": 1,
        "MaximumEventAgeInSeconds": period_seconds,
        "DestinationConfig": {"OnFailure": {"Destination": att(i["delivery_dlq"])}},
    })


def _environment(synth, cluster: str, function: str) -> dict[str, str]:
    variables = synth.resource(cluster, FUNCTION, f"SpotRebalancer{function}Function")["Properties"][
        "Environment"]["Variables"]
    i = ids(synth, cluster)
    assert variables["STATE_TABLE"] == ref(i["table"])
    assert variables["WORK_QUEUE_URL"] == ref(i["work"])
    return {**variables, "STATE_TABLE": "table", "WORK_QUEUE_URL": "https://queue"}


@pytest.mark.parametrize("function", ["Events", "Schedule"])
def test_the_environment_is_what_the_functions_parse_into_the_configured_settings(synth, function):
    env = _environment(synth, "batch", function)
    settings = Settings.from_env(env)
    assert settings.cluster_name == "batch"
    assert settings.recommendation_policies == (
        RecommendationPolicy({"eks.amazonaws.com/nodegroup": "batch-spot"}, "drain"),
        RecommendationPolicy({"workload": "stateful"}, "none"),
    )
    assert settings.drain_timeout_seconds == 900
    assert settings.lifecycle_default_result == "ABANDON"
    assert settings.launch_lifecycle_hook is True
    assert settings.capacity_nudge is True
    assert (settings.scale_in_emptied_nodes, settings.scale_in_settle_seconds) == (True, 900)
    assert settings.asg_names == tuple(BATCH_GROUPS), "scale-in acts only on the named groups"
    assert settings.dry_run is False
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "SpotRebalancer"
    assert env["POWERTOOLS_SERVICE_NAME"] == "spot-rebalancer"
    assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"
    assert Settings.from_env(_environment(synth, "prod", function)) == Settings(
        cluster_name="prod", state_table="table", work_queue_url="https://queue")


@pytest.mark.parametrize(("module", "handler"), [
    ("spot_rebalancer.handlers.events", EVENTS_HANDLER),
    ("spot_rebalancer.handlers.schedule", SCHEDULE_HANDLER),
])
def test_handlers_name_functions_in_the_package(module, handler):
    imported = pytest.importorskip(module, reason="handler module not written yet")
    assert callable(getattr(imported, handler.rsplit(".", 1)[1]))


# ---- queues and the event source ---------------------------------------------------------------


def test_events_reach_the_function_through_a_bounded_queue(synth):
    i = ids(synth, "batch")
    template = synth.template("batch")
    template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "EventSourceArn": att(i["work"]),
        "FunctionName": ref(i["events"]),
        "BatchSize": 10,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": 8},
        "MaximumBatchingWindowInSeconds": Match.absent(),
    })
    synth.template("prod").has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "ScalingConfig": {"MaximumConcurrency": 5}})


def test_the_work_queue_outlasts_six_invocations_and_redrives_to_its_dead_letter_queue(synth):
    i = ids(synth, "prod")
    work = synth.templates["prod"]["Resources"][i["work"]]["Properties"]
    assert work["VisibilityTimeout"] >= 6 * 110
    assert work["RedrivePolicy"] == {"deadLetterTargetArn": att(i["work_dlq"]), "maxReceiveCount": 5}
    for dlq in ("work_dlq", "delivery_dlq"):
        retention = synth.templates["prod"]["Resources"][i[dlq]]["Properties"]["MessageRetentionPeriod"]
        assert retention == 14 * 86400


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_every_queue_is_encrypted_and_refuses_plain_http(synth, cluster):
    queues = synth.resources(cluster, "AWS::SQS::Queue")
    assert len(queues) == 3
    policies = synth.resources(cluster, "AWS::SQS::QueuePolicy").values()
    for logical_id, queue in queues.items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
        denials = [s for p in policies if ref(logical_id) in p["Properties"]["Queues"]
                   for s in p["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert denials == [{"Action": "sqs:*", "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            "Effect": "Deny", "Principal": {"AWS": "*"}, "Resource": att(logical_id)}]


# ---- rules -------------------------------------------------------------------------------------


def _rules(synth, cluster: str) -> dict[str, dict[str, Any]]:
    return synth.resources(cluster, "AWS::Events::Rule")


@pytest.mark.parametrize(("cluster", "count"), [("prod", 9), ("batch", 10)])
def test_every_event_rule_delivers_to_the_work_queue_with_retries_and_a_dead_letter_queue(
        synth, cluster, count):
    i = ids(synth, cluster)
    rules = {k: v for k, v in _rules(synth, cluster).items() if "EventPattern" in v["Properties"]}
    assert len(rules) == count - 1
    queue_policy = synth.resource(cluster, "AWS::SQS::QueuePolicy", "SpotRebalancerWorkQueuePolicy")
    allowed_sources = [s["Condition"]["ArnEquals"]["aws:SourceArn"]
                       for s in queue_policy["Properties"]["PolicyDocument"]["Statement"]
                       if s.get("Principal") == {"Service": "events.amazonaws.com"}]
    for logical_id, rule in rules.items():
        assert rule["Properties"]["Targets"] == [{
            "Arn": att(i["work"]), "Id": "Target0",
            "DeadLetterConfig": {"Arn": att(i["delivery_dlq"])},
            "RetryPolicy": {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185},
        }], logical_id
        assert att(logical_id) in allowed_sources, logical_id


@pytest.mark.parametrize(("cluster", "rate"),
                         [("prod", "rate(5 minutes)"), ("ops_private", "rate(10 minutes)")])
def test_the_schedule_invokes_its_function_directly_with_retries_and_a_dead_letter_queue(
        synth, cluster, rate):
    i = ids(synth, cluster)
    [schedule] = [r for r in _rules(synth, cluster).values() if "ScheduleExpression" in r["Properties"]]
    assert schedule["Properties"]["ScheduleExpression"] == rate
    [target] = schedule["Properties"]["Targets"]
    assert target["Arn"] == att(i["schedule"])
    assert target["DeadLetterConfig"] == {"Arn": att(i["delivery_dlq"])}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 3


def test_lifecycle_and_launch_rules_are_scoped_to_our_hooks_and_the_named_groups(synth):
    patterns = {k: v["Properties"]["EventPattern"] for k, v in _rules(synth, "batch").items()
                if "EventPattern" in v["Properties"]}
    lifecycle = {p["detail-type"][0]: p["detail"]
                 for p in patterns.values() if p["source"] == ["aws.autoscaling"]}
    assert lifecycle == {
        "EC2 Instance-terminate Lifecycle Action": {"LifecycleHookName": [TERMINATE_HOOK_NAME],
                                                    "AutoScalingGroupName": BATCH_GROUPS},
        "EC2 Instance-launch Lifecycle Action": {"LifecycleHookName": [LAUNCH_HOOK_NAME],
                                                 "AutoScalingGroupName": BATCH_GROUPS},
        "EC2 Instance Launch Successful": {"AutoScalingGroupName": BATCH_GROUPS},
    }


# ---- state table ---------------------------------------------------------------------------------


def test_the_state_table_has_the_idempotency_layout_ttl_recovery_and_encryption(synth):
    synth.template("prod").has_resource_properties("AWS::DynamoDB::Table", {
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
        "TimeToLiveSpecification": {"AttributeName": "expiration", "Enabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
        "BillingMode": "PAY_PER_REQUEST",
    })


# ---- permissions -------------------------------------------------------------------------------

RESOURCE_STAR_ALLOWED = {"ec2:DescribeInstances", "autoscaling:DescribeAutoScalingGroups",
                         "autoscaling:DescribeAutoScalingInstances", "pricing:GetProducts",
                         "ec2:DescribeSpotPriceHistory", "ec2:DescribeCapacityReservations",
                         "ec2:DescribeInstanceStatus"}


@pytest.mark.parametrize("cluster", CLUSTERS)
@pytest.mark.parametrize("role", ["Events", "Schedule"])
def test_only_actions_without_resource_level_permissions_get_resource_star(synth, cluster, role):
    for statement in statements(synth, cluster, role):
        assert statement["Effect"] == "Allow"
        assert not any("*" in action for action in actions_of(statement)), statement
        if statement["Resource"] == "*":
            assert actions_of(statement) <= RESOURCE_STAR_ALLOWED, statement


@pytest.mark.parametrize("role", ["Events", "Schedule"])
def test_instance_tagging_is_limited_to_the_lifecycle_tag_on_the_clusters_instances(synth, role):
    [tagging] = granting(statements(synth, "prod", role), "ec2:CreateTags")
    assert actions_of(tagging) == {"ec2:CreateTags"}
    assert json.dumps(tagging["Resource"]).endswith(':instance/*"]]}')
    assert tagging["Condition"] == {
        "StringEquals": {"aws:ResourceTag/kubernetes.io/cluster/prod": "owned",
                         "aws:RequestTag/Lifecycle": ["spot", "on-demand"]},
        "ForAllValues:StringEquals": {"aws:TagKeys": ["Lifecycle"]},
    }
    # One rule: the tag IAM requires is the one the code checks before it sends CreateTags.
    key, value = owned_tag("prod")
    assert tagging["Condition"]["StringEquals"][f"aws:ResourceTag/{key}"] == value
    assert owned_by({key: value}, "prod")
    assert not owned_by({key: "shared", "eks:cluster-name": "prod"}, "prod")


@pytest.mark.parametrize("role", ["Events", "Schedule"])
def test_each_role_reaches_only_its_own_cluster(synth, role):
    [describe] = granting(statements(synth, "batch", role), "eks:DescribeCluster")
    assert json.dumps(describe["Resource"]).endswith(':cluster/batch"]]}')


def test_only_the_events_role_completes_lifecycle_actions(synth):
    assert not granting(statements(synth, "batch", "Schedule"), "autoscaling:CompleteLifecycleAction")
    [named] = granting(statements(synth, "batch", "Events"), "autoscaling:CompleteLifecycleAction")
    assert actions_of(named) == {"autoscaling:CompleteLifecycleAction",
                                 "autoscaling:RecordLifecycleActionHeartbeat"}
    assert [json.dumps(arn).split(":autoScalingGroup:*:autoScalingGroupName/")[1][:-4]
            for arn in named["Resource"]] == BATCH_GROUPS
    assert "Condition" not in named
    [tagged] = granting(statements(synth, "prod", "Events"), "autoscaling:CompleteLifecycleAction")
    assert json.dumps(tagged["Resource"]).endswith(':autoScalingGroup:*:autoScalingGroupName/*"]]}')
    assert tagged["Condition"] == {
        "StringEquals": {"autoscaling:ResourceTag/kubernetes.io/cluster/prod": "owned"}}


def test_only_the_events_role_reads_capacity_reservations(synth):
    """A Capacity Block's warning is fanned out by the events function alone."""
    [reads] = granting(statements(synth, "prod", "Events"), "ec2:DescribeCapacityReservations")
    assert actions_of(reads) == {"ec2:DescribeCapacityReservations"}
    assert not granting(statements(synth, "prod", "Schedule"), "ec2:DescribeCapacityReservations")


def test_only_a_schedule_role_with_status_checks_finds_impaired_instances_and_queues_their_drains(synth):
    i = ids(synth, "batch")
    schedule = statements(synth, "batch", "Schedule")
    [find] = granting(schedule, "ec2:DescribeInstanceStatus")
    assert actions_of(find) == {"ec2:DescribeInstanceStatus"}
    [queue] = [s for s in granting(schedule, "sqs:SendMessage") if s["Resource"] == att(i["work"])]
    assert actions_of(queue) == {"sqs:SendMessage"}
    [records] = [s for s in granting(schedule, "dynamodb:PutItem") if "StringLike" in json.dumps(s)]
    assert actions_of(records) == {"dynamodb:PutItem"}
    assert records["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["impaired#batch#*"]}}
    for cluster in ("prod", "ops_private"):  # off by default
        assert not granting(statements(synth, cluster, "Schedule"), "ec2:DescribeInstanceStatus")
    assert not granting(statements(synth, "batch", "Events"), "ec2:DescribeInstanceStatus")


def test_only_the_schedule_role_prices_the_fleet(synth):
    [prices] = granting(statements(synth, "prod", "Schedule"), "pricing:GetProducts")
    assert actions_of(prices) == {"pricing:GetProducts", "ec2:DescribeSpotPriceHistory"}
    assert not granting(statements(synth, "prod", "Events"), "pricing:GetProducts")


def test_only_a_schedule_role_with_capacity_nudge_may_change_capacity(synth):
    [raise_capacity] = granting(statements(synth, "batch", "Schedule"), "autoscaling:SetDesiredCapacity")
    assert len(raise_capacity["Resource"]) == len(BATCH_GROUPS)
    assert not granting(statements(synth, "batch", "Events"), "autoscaling:SetDesiredCapacity")
    assert not granting(statements(synth, "prod", "Schedule"), "autoscaling:SetDesiredCapacity")
    assert not granting(statements(synth, "prod", "Schedule"), "autoscaling:DescribeAutoScalingGroups")


def test_only_a_schedule_role_with_scale_in_may_terminate_through_a_group(synth):
    [terminate] = granting(statements(synth, "batch", "Schedule"),
                           "autoscaling:TerminateInstanceInAutoScalingGroup")
    assert actions_of(terminate) == {"autoscaling:TerminateInstanceInAutoScalingGroup"}
    assert [json.dumps(arn).split(":autoScalingGroup:*:autoScalingGroupName/")[1][:-4]
            for arn in terminate["Resource"]] == BATCH_GROUPS
    for cluster, function in (("batch", "Events"), ("prod", "Schedule")):
        assert not granting(statements(synth, cluster, function),
                            "autoscaling:TerminateInstanceInAutoScalingGroup")
        assert not granting(statements(synth, cluster, function), "autoscaling:DescribeAutoScalingInstances")


def test_queue_and_table_access_come_from_grants_on_exactly_those_resources(synth):
    i = ids(synth, "prod")
    events, schedule = statements(synth, "prod", "Events"), statements(synth, "prod", "Schedule")
    assert [s["Resource"] for s in granting(events, "sqs:ReceiveMessage")] == [att(i["work"])]
    assert not granting(schedule, "sqs:ReceiveMessage")
    # Failed records are handed back early (ChangeMessageVisibility) on the work queue only: the
    # dead-letter queues' messages stay where they are.
    assert [s["Resource"] for s in granting(events, "sqs:ChangeMessageVisibility")] == [att(i["work"])]
    assert not granting(schedule, "sqs:ChangeMessageVisibility")
    # Nothing the schedule function runs sends to the work queue: it could only forge work there.
    assert [s["Resource"] for s in granting(schedule, "sqs:SendMessage")] == [att(i["delivery_dlq"])]
    for stmts in (events, schedule):
        assert all(s["Resource"] == att(i["table"]) for s in granting(stmts, "dynamodb:PutItem"))
        assert [s["Resource"] for s in granting(stmts, "logs:PutLogEvents")] == [
            att(synth.logical_id("prod", "AWS::Logs::LogGroup", "SpotRebalancer" + (
                "Events" if stmts is events else "Schedule") + "FunctionLogs"))]


def test_each_role_makes_exactly_its_own_calls_on_its_own_items_of_the_state_table(synth):
    """The events function's idempotency records and the schedule function's move history share the
    table; neither role may read or change the other's items, nor scan, query or batch."""
    events, schedule = statements(synth, "prod", "Events"), statements(synth, "prod", "Schedule")
    [records] = [s for s in events if any(a.startswith("dynamodb:") for a in actions_of(s))]
    [history] = [s for s in schedule if any(a.startswith("dynamodb:") for a in actions_of(s))]
    assert actions_of(records) == {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
    assert records["Condition"] == {"ForAllValues:StringNotLike": {"dynamodb:LeadingKeys": [
        "history#*", "impaired#*"]}}
    assert actions_of(history) == {"dynamodb:GetItem", "dynamodb:PutItem"}
    assert history["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["history#prod"]}}


def test_roles_carry_no_managed_policy_unless_attached_to_a_vpc(synth):
    for role in synth.resources("prod", "AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role["Properties"]
    for role in synth.resources("batch", "AWS::IAM::Role").values():
        [policy] = role["Properties"]["ManagedPolicyArns"]
        assert json.dumps(policy).endswith(
            ':iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"]]}')


# ---- cluster access, lifecycle hooks, network --------------------------------------------------


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_both_roles_map_to_the_rbac_group_through_access_entries(synth, cluster):
    i = ids(synth, cluster)
    entries = [e["Properties"] for e in synth.resources(cluster, "AWS::EKS::AccessEntry").values()]
    assert sorted(entries, key=lambda e: e["PrincipalArn"]["Fn::GetAtt"][0]) == sorted([
        {"ClusterName": cluster, "KubernetesGroups": [KUBERNETES_GROUP], "Type": "STANDARD",
         "PrincipalArn": att(i[role])} for role in ("events_role", "schedule_role")],
        key=lambda e: e["PrincipalArn"]["Fn::GetAtt"][0])


def test_hooks_wait_for_the_drain_on_each_named_group(synth):
    hooks = [h["Properties"] for h in synth.resources("batch", "AWS::AutoScaling::LifecycleHook").values()]
    assert sorted(hooks, key=lambda h: (h["AutoScalingGroupName"], h["LifecycleHookName"])) == sorted([
        *({"AutoScalingGroupName": group, "LifecycleHookName": TERMINATE_HOOK_NAME,
           "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
           "HeartbeatTimeout": 900 + 120, "DefaultResult": "ABANDON",
           "NotificationMetadata": '{"cluster": "batch"}'} for group in BATCH_GROUPS),
        *({"AutoScalingGroupName": group, "LifecycleHookName": LAUNCH_HOOK_NAME,
           "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
           "HeartbeatTimeout": 300, "DefaultResult": "CONTINUE",
           "NotificationMetadata": '{"cluster": "batch"}'} for group in BATCH_GROUPS),
    ], key=lambda h: (h["AutoScalingGroupName"], h["LifecycleHookName"]))
    synth.template("prod").resource_count_is("AWS::AutoScaling::LifecycleHook", 0)


def test_private_endpoints_put_the_functions_in_the_given_subnets(synth):
    group = synth.logical_id("batch", "AWS::EC2::SecurityGroup", "SpotRebalancerFunctionSecurityGroup")
    for function in synth.resources("batch", FUNCTION).values():
        assert function["Properties"]["VpcConfig"] == {
            "SubnetIds": ["subnet-0a1b2c3d4e5f60718", "subnet-1a1b2c3d4e5f60718"],
            "SecurityGroupIds": [att(group, "GroupId")]}
    made = synth.templates["batch"]["Resources"][group]["Properties"]
    egress = [{k: v for k, v in rule.items() if k != "Description"} for rule in made["SecurityGroupEgress"]]
    assert egress == [{"CidrIp": "0.0.0.0/0", "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443}]
    assert "SecurityGroupIngress" not in made
    assert "FunctionSecurityGroupId" in synth.templates["batch"]["Outputs"]
    for function in synth.resources("ops_private", FUNCTION).values():
        assert function["Properties"]["VpcConfig"] == {"SubnetIds": ["subnet-0fedcba987654321f"],
                                                       "SecurityGroupIds": ["sg-0fedcba987654321f"]}
    synth.template("ops_private").resource_count_is("AWS::EC2::SecurityGroup", 0)
    for function in synth.resources("prod", FUNCTION).values():
        assert "VpcConfig" not in function["Properties"]


# ---- alarms and dashboard ----------------------------------------------------------------------


def _alarms(synth, cluster: str) -> dict[str, dict[str, Any]]:
    """Alarm properties by construct id (the logical id without the Monitoring prefix and hash)."""
    found = synth.resources(cluster, "AWS::CloudWatch::Alarm", "SpotRebalancerMonitoring")
    return {k.removeprefix("SpotRebalancerMonitoring")[:-8]: v["Properties"] for k, v in found.items()}


def test_alarms_cover_dead_letters_failures_deadlines_budgets_and_the_fleet(synth):
    alarms = _alarms(synth, "batch")
    assert set(alarms) == {
        "WorkDeadLetterQueueNotEmpty", "DeliveryDeadLetterQueueNotEmpty",
        "EventsFunctionErrors", "EventsFunctionThrottles",
        "ScheduleFunctionErrors", "ScheduleFunctionThrottles",
        "DrainDeadlineMissed", "EvictionsBlockedByPdb", "SpotShareBelowTarget", "MisplacedPodsAboveThreshold",
        "WorkQueueBacklog", "WorkQueueOldestMessage", "ScheduleFunctionNotInvoked", "RecordsFailed",
        "MovesFailing", "NotificationsFailed",
    }
    by_metric = {(a["Namespace"], a["MetricName"]): a for a in alarms.values()
                 if a.get("Namespace") == "SpotRebalancer"}
    cluster_only = [{"Name": "ClusterName", "Value": "batch"}]
    expectations = {
        "DeadlineMissed": ("GreaterThanOrEqualToThreshold", 1, 1),
        "RecordsFailed": ("GreaterThanOrEqualToThreshold", 1, 1),
        "SpotShareRequestedCpu": ("LessThanThreshold", 60, 3),
    }
    for metric, (comparison, threshold, periods) in expectations.items():
        alarm = by_metric["SpotRebalancer", metric]
        assert alarm["Dimensions"] == cluster_only
        assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["EvaluationPeriods"],
                alarm["DatapointsToAlarm"]) == (comparison, threshold, periods, periods), metric
    for name in ("WorkDeadLetterQueueNotEmpty", "DeliveryDeadLetterQueueNotEmpty"):
        assert alarms[name]["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarms[name]["Threshold"] == 1


def test_optional_alarms_follow_their_settings(synth):
    assert "SpotShareBelowTarget" not in _alarms(synth, "prod")
    assert "MisplacedPodsAboveThreshold" in _alarms(synth, "prod")
    assert "MisplacedPodsAboveThreshold" not in _alarms(synth, "ops_private")
    assert "MovesFailing" in _alarms(synth, "prod")
    assert "MovesFailing" not in _alarms(synth, "ops_private")
    assert "NotificationsFailed" not in _alarms(synth, "prod")
    # Census alarms look at whole schedule periods, since a census comes once a period.
    misplaced = _alarms(synth, "prod")["MisplacedPodsAboveThreshold"]["Metrics"]
    assert [m["MetricStat"]["Period"] for m in misplaced if "MetricStat" in m] == [300]


def _math(alarm: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """An alarm's expression and the metrics it reads, by id."""
    metrics = alarm["Metrics"]
    expression = next(m["Expression"] for m in metrics if "Expression" in m)
    return expression, {m["Id"]: m["MetricStat"] for m in metrics if "MetricStat" in m}


def test_work_queue_backlog_alarms_watch_its_depth_and_age(synth):
    alarms = _alarms(synth, "batch")
    queue = {"Name": "QueueName", "Value": {"Fn::GetAtt": [
        synth.logical_id("batch", "AWS::SQS::Queue", "SpotRebalancerWorkQueue"), "QueueName"]}}
    depth, age = alarms["WorkQueueBacklog"], alarms["WorkQueueOldestMessage"]
    assert (depth["MetricName"], depth["Statistic"], depth["Dimensions"]) == (
        "ApproximateNumberOfMessagesVisible", "Minimum", [queue])
    # Three rounds of the event source's batches at the cluster's concurrency (8 for batch).
    assert (depth["Threshold"], depth["EvaluationPeriods"]) == (3 * 10 * 8, 3)
    assert (age["MetricName"], age["Statistic"], age["Threshold"], age["Dimensions"]) == (
        "ApproximateAgeOfOldestMessage", "Maximum", 300, [queue])


def test_a_schedule_that_stops_running_pages(synth):
    alarm = _alarms(synth, "ops_private")["ScheduleFunctionNotInvoked"]
    function = synth.logical_id("ops_private", "AWS::Lambda::Function", "SpotRebalancerScheduleFunction")
    assert (alarm["MetricName"], alarm["Namespace"], alarm["Dimensions"]) == (
        "Invocations", "AWS/Lambda", [{"Name": "FunctionName", "Value": {"Ref": function}}])
    # ops_private runs every 10 minutes: three periods without one invocation, no data counting.
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["ComparisonOperator"], alarm["Threshold"],
            alarm["TreatMissingData"]) == (600, 3, "LessThanThreshold", 1, "breaching")


def test_drains_are_never_throttled_by_the_rest_of_the_account(synth):
    events = synth.resource("batch", "AWS::Lambda::Function", "SpotRebalancerEventsFunction")
    source = next(iter(synth.resources("batch", "AWS::Lambda::EventSourceMapping").values()))
    assert events["Properties"]["ReservedConcurrentExecutions"] == 8
    assert source["Properties"]["ScalingConfig"]["MaximumConcurrency"] == 8


def test_alarms_notify_through_an_encrypted_topic_with_an_email_subscription(synth):
    topic_id = synth.logical_id("batch", "AWS::SNS::Topic", "SpotRebalancerMonitoringAlarmTopic")
    for alarm in _alarms(synth, "batch").values():
        assert alarm["AlarmActions"] == [ref(topic_id)] and alarm["OKActions"] == [ref(topic_id)]
    topic = synth.templates["batch"]["Resources"][topic_id]["Properties"]
    key_id = topic["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = synth.templates["batch"]["Resources"][key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    cloudwatch_may_encrypt = {"Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Effect": "Allow",
                              "Principal": {"Service": "cloudwatch.amazonaws.com"}, "Resource": "*"}
    assert cloudwatch_may_encrypt in key["KeyPolicy"]["Statement"]
    template = synth.template("batch")
    ssl_only = Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})
    template.has_resource_properties("AWS::SNS::TopicPolicy", {
        "PolicyDocument": {"Statement": Match.array_with([ssl_only])}})
    template.has_resource_properties("AWS::SNS::Subscription", {
        "Protocol": "email", "Endpoint": "oncall@example.com", "TopicArn": ref(topic_id)})
    synth.template("prod").resource_count_is("AWS::SNS::Subscription", 0)


def test_an_existing_topic_is_used_instead_of_a_new_one(synth):
    synth.template("ops_private").resource_count_is("AWS::SNS::Topic", 0)
    synth.template("ops_private").resource_count_is("AWS::KMS::Key", 0)
    for alarm in _alarms(synth, "ops_private").values():
        assert alarm["AlarmActions"] == [EXISTING_TOPIC]


def test_the_dashboard_shows_fleet_mix_cost_latency_drains_and_moves(synth):
    dashboard = synth.resource("prod", "AWS::CloudWatch::Dashboard")["Properties"]
    assert dashboard["DashboardName"] == "SpotRebalancer-prod"
    body = json.dumps(dashboard["DashboardBody"])
    assert "SEARCH('{SpotRebalancer,Architecture,CapacityType,ClusterName} MetricName=" in body
    for metric in ("Nodes", "RequestedCpu", "SpotShareRequestedCpu", "EventToCordonLatency", "DrainDuration",
                   "PodsEvicted", "EvictionsBlockedByPdb", "MovesPlanned", "MovesSucceeded", "MovesFailed",
                   "MisplacedPods", "FleetCostPerHour", "SpotSavingPerHour", "OnDemandNodesEmptied",
                   "NodesScaledIn", "EmptiedNodesCostPerHour"):
        assert metric in body, metric
    # Evictions are shown by who evicted, as the code publishes them: drains and moves apart.
    text = "".join(part for part in dashboard["DashboardBody"]["Fn::Join"][1] if isinstance(part, str))
    for source in ("drain", "move"):
        assert f'"PodsEvicted","ClusterName","prod","Source","{source}"' in text, source
    # Prediction misses: failed moves over settled ones, as a percentage.
    assert '{"label":"prediction misses (%)","expression":"100 * failed / (succeeded + failed)"}' in text
    for metric, name in (("MovesFailed", "failed"), ("MovesSucceeded", "succeeded")):
        assert f'"{metric}","ClusterName","prod",{{"id":"{name}","visible":false,"stat":"Sum"}}' in text


def test_outputs_tell_the_operator_what_to_do_next(synth):
    outputs = synth.templates["prod"]["Outputs"]
    assert outputs["RbacCommand"]["Value"] == "kubectl apply -f infra/rbac/spot-rebalancer.yaml"
    assert set(outputs) >= {"EventsRoleArn", "ScheduleRoleArn", "WorkQueueUrl", "AlarmTopicArn",
                            "DashboardName"}


def test_an_output_names_the_function_whose_environment_the_cli_reads(synth):
    output = synth.templates["prod"]["Outputs"][SCHEDULE_FUNCTION_OUTPUT]
    assert output["Value"] == {"Ref": synth.logical_id("prod", "AWS::Lambda::Function",
                                                       "SpotRebalancerScheduleFunction")}


@pytest.mark.parametrize("cluster", ["prod", "batch", "ops_private"])
def test_every_arn_the_stack_builds_takes_the_stacks_partition(synth, cluster):
    """An ARN spelled arn:aws: would name nothing in aws-cn, aws-us-gov or the ISO partitions: each
    is built on AWS::Partition (only an ARN the operator configured is taken as given)."""
    text = json.dumps(synth.templates[cluster])
    for configured in (EXISTING_TOPIC, EXISTING_TOPIC.replace("alarms", "notices"), NOTICES_TOPIC,
                       NOTICES_KEY):
        text = text.replace(configured, "")
    assert "arn:aws:" not in text and "arn:aws-" not in text
    assert '{"Ref": "AWS::Partition"}' in text


def test_evictions_blocked_by_pdb_counts_drains_and_the_rebalancer(synth):
    alarm = _alarms(synth, "batch")["EvictionsBlockedByPdb"]
    expression, metrics = _math(alarm)
    assert expression == "FILL(drains, 0) + FILL(moves, 0)"
    assert {name: (m["Metric"]["MetricName"], m["Metric"]["Dimensions"], m["Stat"])
            for name, m in metrics.items()} == {
        "drains": ("EvictionsBlockedByPdb", [{"Name": "ClusterName", "Value": "batch"}], "Sum"),
        "moves": ("EvictionsBlockedByPdb", [{"Name": "ClusterName", "Value": "batch"},
                                            {"Name": "Source", "Value": "move"}], "Sum")}
    # pdbBlockedAlarmMinutes 10 (cdk.json): two periods of five, inside a 600 s drain.
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"], alarm["Threshold"]) == (2, 2, 1)


@pytest.mark.parametrize("role", ["Events", "Schedule"])
def test_notifications_may_be_published_to_their_topic_only_and_its_key(synth, role):
    assert granting(statements(synth, "batch", role), "sns:Publish") == [
        {"Sid": "Notify", "Action": "sns:Publish", "Effect": "Allow", "Resource": NOTICES_TOPIC}]
    assert granting(statements(synth, "batch", role), "kms:GenerateDataKey") == [
        {"Sid": "NotifyEncrypted", "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Effect": "Allow",
         "Resource": NOTICES_KEY}]
    # A topic without a customer managed key needs no key grant; no topic, no grant at all.
    assert not granting(statements(synth, "ops_private", role), "kms:GenerateDataKey")
    assert granting(statements(synth, "ops_private", role), "sns:Publish")
    assert not granting(statements(synth, "prod", role), "sns:Publish")


@pytest.mark.parametrize("function", ["SpotRebalancerEventsFunction", "SpotRebalancerScheduleFunction"])
def test_both_functions_are_told_the_notification_topic(synth, function):
    variables = synth.resource("batch", FUNCTION, function)["Properties"]["Environment"]["Variables"]
    assert variables["NOTIFICATION_TOPIC_ARN"] == NOTICES_TOPIC
    prod = synth.resource("prod", FUNCTION, function)["Properties"]["Environment"]["Variables"]
    assert prod.get("NOTIFICATION_TOPIC_ARN", "") == ""
