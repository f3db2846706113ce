"""CDK entry point: one SpotRebalancer stack per configured cluster, checked by cdk-nag at synth.

Settings come from context (cdk.json, or `-c key=value`); see "Deploying with AWS CDK" in README.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from aws_cdk import Annotations, App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra.config import SpotRebalancerConfigError, load_app_config
from infra.stack import SpotRebalancerStack


def build_app(context: Mapping[str, Any] | None = None, outdir: str | None = None) -> App:
    """The whole app. Tests pass `context`; the CDK CLI passes it through the environment."""
    app = App(context=dict(context) if context is not None else None, outdir=outdir)
    settings = load_app_config(app.node.get_all_context())
    env = Environment(account=settings.account or os.environ.get("CDK_DEFAULT_ACCOUNT"),
                      region=settings.region or os.environ.get("CDK_DEFAULT_REGION"))
    for name, config in zip(settings.stack_names, settings.clusters, strict=True):
        stack = SpotRebalancerStack(app, name, config=config, env=env)
        for warning in settings.warnings:
            Annotations.of(stack).add_warning_v2("spot-rebalancer:context", warning)
    # A finding that is neither fixed nor acknowledged with a reason stops the synth.
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    try:
        build_app().synth()
    except SpotRebalancerConfigError as exc:
        sys.exit(f"spot-rebalancer configuration: {exc}")
