"""Configuration: context values are coerced and checked before anything is synthesized."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from cdk_support import REPO

from infra.config import (
    APP_KEYS,
    CONTEXT_KEYS,
    RecommendationPolicy,
    SpotRebalancerConfig,
    SpotRebalancerConfigError,
    load_app_config,
)
from spot_rebalancer.config import Settings, schema


def config(**context: Any) -> SpotRebalancerConfig:
    return SpotRebalancerConfig.from_context({"clusterName": "prod", **context})


BAD_INPUTS = [
    # (context, the key the message must name, a phrase it must contain)
    ({"clusterName": "-prod"}, "clusterName", "EKS cluster name"),
    ({"clusterName": "x" * 101}, "clusterName", "EKS cluster name"),
    ({"scheduleMinutes": 1}, "scheduleMinutes", "from 2 to 60"),
    ({"scheduleMinutes": "five"}, "scheduleMinutes", "whole number"),
    ({"dryRun": "yes"}, "dryRun", "true or false"),
    ({"recommendationDefault": "evict"}, "recommendationDefault", "one of none, taint, cordon, drain"),
    ({"recommendationPolicies": '[{"selector": {}, "action": "drain"}]'}, "recommendationPolicies",
     "empty selector"),
    ({"recommendationPolicies": [{"selector": {"pool": "a"}, "action": "kill"}]}, "recommendationPolicies",
     "action must be one of"),
    ({"recommendationPolicies": [{"selector": {"bad key!": "a"}, "action": "drain"}]},
     "recommendationPolicies", "not a Kubernetes label name"),
    ({"recommendationPolicies": [{"selector": {"pool": "a b"}, "action": "drain"}]},
     "recommendationPolicies", "not a Kubernetes label value"),
    ({"recommendationPolicies": [{"selector": {"pool": "a"}}]}, "recommendationPolicies",
     "exactly the keys selector and action"),
    ({"recommendationPolicies": "[{"}, "recommendationPolicies", "not valid JSON"),
    ({"recommendationPolicies": {"pool": "a"}}, "recommendationPolicies", "expected a list"),
    ({"recommendationPolicies": [{"selector": {f"pool-{i}": "a" * 40}, "action": "drain"}
                                 for i in range(50)]},
     "recommendationPolicies", "environment variables in 4 KB"),
    ({"recommendationTtlSeconds": 10}, "recommendationTtlSeconds", "from 60"),
    ({"recommendationTtlSeconds": 900, "drainTimeoutSeconds": 1200}, "recommendationTtlSeconds",
     "at least drainTimeoutSeconds"),
    ({"drainTimeoutSeconds": 7100}, "drainTimeoutSeconds", "at most 7200 s"),
    ({"drainTimeoutSeconds": 0}, "drainTimeoutSeconds", "from 1"),
    ({"pdbBlockedAlarmMinutes": 11}, "pdbBlockedAlarmMinutes", "at most drainTimeoutSeconds in minutes (10)"),
    ({"lifecycleDefaultResult": "continue"}, "lifecycleDefaultResult", "CONTINUE, ABANDON"),
    ({"unownedPods": "delete"}, "unownedPods", "evict, skip"),
    ({"forceAtDeadline": "on"}, "forceAtDeadline", "true or false"),
    ({"excludedNamespaces": ["kube-system", "Bad_NS"]}, "excludedNamespaces", "namespace name"),
    ({"healthLeadTimeSeconds": -1}, "healthLeadTimeSeconds", "from 0"),
    ({"instanceStatusChecks": "yes"}, "instanceStatusChecks", "true or false"),
    ({"lifecycleTagKey": "aws:lifecycle"}, "lifecycleTagKey", "not aws:"),
    ({"lifecycleLabelKey": "lifecycle label"}, "lifecycleLabelKey", "label name"),
    ({"optOutAnnotation": ""}, "optOutAnnotation", "annotation name"),
    ({"maxEvictionsPerCycle": -1}, "maxEvictionsPerCycle", "from 0 to 1000"),
    ({"maxEvictionsPerNode": 5000}, "maxEvictionsPerNode", "from 0 to 1000"),
    ({"maxEvictionsPerNamespace": 1.5}, "maxEvictionsPerNamespace", "whole number"),
    ({"minPodAgeSeconds": -5}, "minPodAgeSeconds", "from 0"),
    ({"capacityNudge": 1}, "capacityNudge", "true or false"),
    ({"scaleInEmptiedNodes": "sometimes"}, "scaleInEmptiedNodes", "true or false"),
    ({"scaleInSettleSeconds": 30}, "scaleInSettleSeconds", "from 60 to 86400"),
    ({"eventsMaxConcurrency": 1}, "eventsMaxConcurrency", "from 2 to 1000"),
    ({"scheduleMemoryMb": 64}, "scheduleMemoryMb", "from 128 to 10240"),
    ({"asgNames": ["a", "a"]}, "asgNames", "twice"),
    ({"asgNames": [" padded"]}, "asgNames", "not an Auto Scaling group name"),
    ({"asgNames": 3}, "asgNames", "list of strings"),
    ({"launchLifecycleHook": True}, "launchLifecycleHook", "needs asgNames"),
    ({"subnetIds": ["subnet-0123456789abcdef0"]}, "vpcId", "required"),
    ({"vpcId": "vpc-0123456789abcdef0"}, "subnetIds", "required"),
    ({"vpcId": "vpc-xyz", "subnetIds": ["subnet-0123456789abcdef0"]}, "vpcId", "vpc-<hex>"),
    ({"vpcId": "vpc-0123456789abcdef0", "subnetIds": ["sub-1"]}, "subnetIds", "subnet-<hex>"),
    ({"vpcId": "vpc-0123456789abcdef0", "subnetIds": ["subnet-0123456789abcdef0"],
      "securityGroupIds": "group-1"}, "securityGroupIds", "sg-<hex>"),
    ({"alarmTopicArn": "arn:aws:sqs:eu-west-1:111122223333:q"}, "alarmTopicArn", "SNS topic ARN"),
    ({"alarmEmail": "oncall"}, "alarmEmail", "e-mail address"),
    ({"spotShareTargetPercent": 0}, "spotShareTargetPercent", "percentage"),
    ({"spotShareTargetPercent": "150"}, "spotShareTargetPercent", "percentage"),
    ({"spotShareTargetPercent": "lots"}, "spotShareTargetPercent", "expected a number"),
    ({"misplacedPodsThreshold": -1}, "misplacedPodsThreshold", "from 0"),
    ({"moveFailureAlarmPercent": 0}, "moveFailureAlarmPercent", "percentage"),
    ({"notificationTopicArn": "arn:aws:sns:eu-west-1:111122223333:n.fifo"}, "notificationTopicArn",
     "no FIFO topic"),
    ({"notificationTopicKeyArn": "arn:aws:kms:eu-west-1:111122223333:key/k"}, "notificationTopicKeyArn",
     "needs notificationTopicArn"),
    ({"pdbBlockedAlarmMinutes": 2}, "pdbBlockedAlarmMinutes", "from 5"),
    ({"logRetentionDays": 31}, "logRetentionDays", "CloudWatch Logs accepts"),
    ({"logLevel": "TRACE"}, "logLevel", "DEBUG, INFO, WARNING, ERROR"),
    ({"maxEvictionsPerWorkload": 1001}, "maxEvictionsPerWorkload", "from 0 to 1000"),
    ({"maxEvictionsPerWorkload": "0%"}, "maxEvictionsPerWorkload", "percentage from 1% to 100%"),
    ({"moveSingleReplicaWorkloads": "if need be"}, "moveSingleReplicaWorkloads", "true or false"),
    ({"podSelector": "app in web"}, "podSelector", "go in parentheses"),
    ({"podSelector": ["app=web"]}, "podSelector", "as text"),
    ({"namespaceSelector": "team>1"}, "namespaceSelector", "compares node labels"),
    ({"maxPriority": 2**31}, "maxPriority", "to 2147483647"),
    ({"minOnDemandAnnotation": "a b"}, "minOnDemandAnnotation", "annotation name"),
    ({"schedulerNames": ["Default Scheduler"]}, "schedulerNames", "not a scheduler name"),
    ({"maxNudgeNodes": -1}, "maxNudgeNodes", "from 0 to 100"),
    ({"rebalanceWindows": [{"cron": "every night", "minutes": 60}]}, "rebalanceWindows",
     "not a cron expression"),
    ({"rebalanceWindows": [{"cron": "0 22 * * *", "minutes": 60, "timeZone": "Mars/Olympus"}]},
     "rebalanceWindows", "not a time zone"),
    ({"rebalanceWindows": [{"cron": "0 22 * * *", "minutes": 0}]}, "rebalanceWindows", "from 1 to 10080"),
    ({"rebalanceWindows": '{"cron": "0 22 * * *"}'}, "rebalanceWindows", "expected a list"),
    ({"priceOverrides": {"m6i.large": {"onDemand": -1}}}, "priceOverrides", "dollars an hour from 0"),
    ({"schedulerScoreWeights": {"NodeAffinity": -1}}, "schedulerScoreWeights",
     "NodeAffinity: must be a whole"),
    ({"schedulerScoreWeights": {"SelectorSpread": 1}}, "schedulerScoreWeights", "got SelectorSpread"),
    ({"priceOverrides": {"large": {"spot": 0.1}}}, "priceOverrides", "not an EC2 instance type"),
    ({"priceOverrides": {"m6i.large": {"reserved": 0.1}}}, "priceOverrides", "onDemand and/or spot"),
    ({"replacementTimeoutSeconds": 30}, "replacementTimeoutSeconds", "from 60"),
    ({"backoffBaseSeconds": 0}, "backoffBaseSeconds", "from 1"),
    ({"backoffBaseSeconds": 600, "backoffCapSeconds": 300}, "backoffCapSeconds",
     "not be below backoffBaseSeconds"),
]


@pytest.mark.parametrize(("context", "key", "phrase"), BAD_INPUTS,
                         ids=[f"{key}-{i}" for i, (_, key, _) in enumerate(BAD_INPUTS)])
def test_a_bad_setting_is_refused_with_its_context_key_named(context, key, phrase):
    with pytest.raises(SpotRebalancerConfigError) as raised:
        config(**context)
    message = str(raised.value)
    assert message.startswith(f"{key}: "), message
    assert phrase in message, message


def test_every_setting_has_a_bad_input_test():
    keys_tested = {key for _, key, _ in BAD_INPUTS}
    assert CONTEXT_KEYS - keys_tested == {"excludeFromLoadBalancers"}  # a boolean, like dryRun


def test_the_python_api_is_validated_like_context():
    with pytest.raises(SpotRebalancerConfigError, match=r"^drainTimeoutSeconds: "):
        SpotRebalancerConfig(cluster_name="prod", drain_timeout_seconds=8000)
    with pytest.raises(SpotRebalancerConfigError, match=r"^recommendationPolicies: item 0: action"):
        SpotRebalancerConfig(cluster_name="prod",
                             recommendation_policies=[RecommendationPolicy({"pool": "a"}, "explode")])


def test_command_line_strings_are_coerced_to_their_types():
    c = config(dryRun="true", scheduleMinutes="10", asgNames="ng-a, ng-b", spotShareTargetPercent="62.5",
               recommendationPolicies='[{"selector": {"pool": "batch"}, "action": "cordon"}]',
               excludedNamespaces='["kube-system", "monitoring"]', misplacedPodsThreshold="")
    assert c.dry_run is True
    assert c.schedule_minutes == 10
    assert c.asg_names == ("ng-a", "ng-b")
    assert c.spot_share_target_percent == 62.5
    assert c.recommendation_policies == (RecommendationPolicy({"pool": "batch"}, "cordon"),)
    assert c.excluded_namespaces == ("kube-system", "monitoring")
    assert c.misplaced_pods_threshold is None


def test_selectors_are_read_at_synth_and_reach_the_functions_written_out():
    c = config(podSelector="app in (web, api), tier != db", namespaceSelector="team=shop")
    env = c.to_env()
    assert (env["POD_SELECTOR"], env["NAMESPACE_SELECTOR"]) == ("app in (web,api),tier!=db", "team=shop")
    assert Settings.from_env(env).pod_selector == c.pod_selector
    assert c.pod_selector.matches({"app": "api", "tier": "front"})
    assert not c.pod_selector.matches({"app": "api", "tier": "db"})


def test_defaults_are_the_functions_own_defaults():
    runtime, deployed = Settings(), SpotRebalancerConfig(cluster_name="prod")
    assert deployed.drain_timeout_seconds == runtime.drain_timeout_seconds
    named = replace(runtime, cluster_name="prod")
    assert all(getattr(deployed, e.field) == getattr(named, e.field) for e in schema(Settings))
    assert deployed.excluded_namespaces == runtime.excluded_namespaces
    assert deployed.max_evictions_per_cycle == runtime.max_evictions_per_cycle
    assert deployed.lifecycle_heartbeat_seconds == runtime.drain_timeout_seconds + 120


def test_cdk_json_context_restates_the_code_defaults(cdk_json_context):
    # cdk.json shows operators the knobs; it must not silently change what the code defaults to.
    from_json = SpotRebalancerConfig.from_context({**cdk_json_context, "clusterName": "prod"})
    assert from_json == SpotRebalancerConfig(cluster_name="prod")


def test_the_readme_documents_every_context_key():
    readme = (REPO / "README.md").read_text()
    for key in sorted(CONTEXT_KEYS | APP_KEYS):
        assert f"`{key}`" in readme, key


def test_several_clusters_get_a_stack_each_with_their_own_overrides():
    app = load_app_config({"clusterName": "prod,batch_1", "dryRun": True, "region": "eu-west-1",
                           "clusterOverrides": {"batch_1": {"asgNames": ["ng-a"], "dryRun": False}}})
    assert app.stack_names == ("SpotRebalancer-prod", "SpotRebalancer-batch-1")
    prod, batch = app.clusters
    assert (prod.dry_run, prod.asg_names) == (True, ())
    assert (batch.dry_run, batch.asg_names) == (False, ("ng-a",))
    assert app.region == "eu-west-1"


@pytest.mark.parametrize(("context", "message"), [
    ({}, "clusterName: required"),
    ({"clusterName": ""}, "clusterName: required"),
    ({"clusterName": "prod", "drainTimeout": 600}, "unknown context key(s) drainTimeout"),
    ({"clusterName": "a_b,a-b"}, "clusterName: two clusters would share a stack name"),
    ({"clusterName": "prod", "region": "Ireland"}, "region: expected a region name"),
    ({"clusterName": "prod", "account": "12345"}, "account: expected a 12-digit"),
    ({"clusterName": "prod", "maxEvictionPerCycle": 3}, "unknown context key(s) maxEvictionPerCycle: did you "
                                                         "mean maxEvictionsPerCycle"),
    ({"clusterName": "prod", "ClusterOverrides": {}}, "unknown context key(s) ClusterOverrides"),
    ({"clusterName": "prod", "clusterOverrides": {"prod": {"clusterName": "x"}}}, "clusterOverrides: prod"),
    ({"clusterName": "prod", "clusterOverrides": {"prod": {"drainTimeout": 1}}}, "clusterOverrides: prod"),
    ({"clusterName": "prod", "clusterOverrides": '["prod"]'}, "clusterOverrides: expected an object"),
    ({"clusterName": "prod,batch", "clusterOverrides": {"batch": {"asgNames": "x,x"}}}, "asgNames: lists"),
], ids=["no context", "empty cluster name", "unknown key", "clusters sharing a stack name", "bad region",
        "bad account", "a near miss", "another case", "override of the cluster name",
        "override with an unknown key", "overrides not an object", "bad override value"])
def test_app_level_mistakes_are_refused(context, message):
    with pytest.raises(SpotRebalancerConfigError) as raised:
        load_app_config(context)
    assert str(raised.value).startswith(message), str(raised.value)


def test_cdk_own_context_keys_are_not_mistaken_for_settings():
    app = load_app_config({"clusterName": "prod", "aws:cdk:bundling-stacks": [],
                           "@aws-cdk/core:newStyleStackSynthesis": True})
    assert app.clusters[0].cluster_name == "prod"


def test_short_drains_still_take_the_shortest_pdb_alarm():
    config = SpotRebalancerConfig(cluster_name="prod", drain_timeout_seconds=120, pdb_blocked_alarm_minutes=5)
    assert config.pdb_blocked_alarm_minutes == 5
    with pytest.raises(SpotRebalancerConfigError, match=r"^pdbBlockedAlarmMinutes: must be at most .* \(5\)"):
        SpotRebalancerConfig(cluster_name="prod", drain_timeout_seconds=120)


def test_keys_the_cdk_cli_writes_and_overrides_of_other_clusters_only_warn():
    app = load_app_config({"clusterName": "prod", "acknowledged-issue-numbers": [34892],
                           "cli-telemetry": False,
                           "clusterOverrides": {"prod": {"dryRun": True}, "staging": {"dryRun": False}}})
    assert [c.dry_run for c in app.clusters] == [True]
    assert app.warnings == (
        "context key acknowledged-issue-numbers is not a spot-rebalancer setting; ignored",
        "context key cli-telemetry is not a spot-rebalancer setting; ignored",
        "clusterOverrides for staging ignored: staging is not in clusterName")


def test_the_synth_shows_the_warnings_on_each_stack(synth):
    from aws_cdk import Stack
    from aws_cdk.assertions import Annotations, Match

    for stack in (c for c in synth.app.node.children if isinstance(c, Stack)):
        for text in ("context key cli-telemetry", "clusterOverrides for staging ignored"):
            Annotations.from_stack(stack).has_warning("*", Match.string_like_regexp(text))
