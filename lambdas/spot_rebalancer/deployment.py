"""The settings a deployment runs with, for the CLI's dry runs: the deployed stack's own (its schedule
function's environment) or the CDK app's context (cdk.json and `-c key=value`), read through the one
schema, `config.Settings`.

The AWS clients are passed in, so importing this module costs nothing (the CDK app reads the output
name from here).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .config import ConfigError, Settings, Text, TextList, cluster_overrides, read_setting

# The stack output naming the schedule function, whose environment holds the deployed settings (the
# events function's is the same).
SCHEDULE_FUNCTION_OUTPUT = "ScheduleFunctionName"


class DeploymentError(ValueError):
    """A stack or an app context that does not say what is deployed; the message says why."""


def stack_settings(stack: str, cloudformation: Any, lambda_client: Any) -> Settings:
    """The settings the stack's functions run with (cloudformation:DescribeStacks, then
    lambda:GetFunctionConfiguration). API errors (no such stack, no access) propagate."""
    outputs = {o["OutputKey"]: o["OutputValue"]
               for o in cloudformation.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])}
    function = outputs.get(SCHEDULE_FUNCTION_OUTPUT)
    if function is None:
        raise DeploymentError(f"stack {stack} has no {SCHEDULE_FUNCTION_OUTPUT} output: it is not a "
                              "spot-rebalancer stack, or one deployed before the output existed (deploy it "
                              "again)")
    configuration = lambda_client.get_function_configuration(FunctionName=function)
    environment = configuration.get("Environment", {}).get("Variables", {})
    try:
        return Settings.from_env(environment)
    except ConfigError as exc:
        raise DeploymentError(f"stack {stack}: function {function}: {exc}") from None


def context_settings(cdk_json: Path | None, pairs: Iterable[str]) -> Settings:
    """The settings `cdk synth` would give one cluster's functions: cdk.json's context (when
    `cdk_json` is given), `key=value` pairs over it, then that cluster's clusterOverrides."""
    context: dict[str, Any] = {}
    if cdk_json is not None:
        try:
            app = json.loads(cdk_json.read_bytes())
        except ValueError as exc:
            raise DeploymentError(f"{cdk_json}: not JSON: {exc}") from None
        if not isinstance(app, dict) or not isinstance(app.get("context", {}), dict):
            raise DeploymentError(f"{cdk_json}: expected an object with a \"context\" object")
        context.update(app.get("context", {}))
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise DeploymentError(f"-c {pair}: expected key=value")
        context[key] = value
    return cluster_settings(context)


def cluster_settings(context: Mapping[str, Any]) -> Settings:
    """One cluster's settings from app context; clusterName must name at most one cluster."""
    raw_names = context.get("clusterName")
    names: tuple[str, ...] = read_setting(TextList(Text()), "clusterName", raw_names) if raw_names else ()
    if len(names) > 1:
        raise DeploymentError(f"clusterName names {len(names)} clusters ({', '.join(names)}): choose one "
                              "with -c clusterName=NAME")
    own = cluster_overrides(context.get("clusterOverrides")).get(names[0], {}) if names else {}
    return Settings.from_context({**context, **own, **({"clusterName": names[0]} if names else {})})
