"""One synth of the real app per test session: three clusters covering the configuration's branches.

- `prod`: only `clusterName` on top of cdk.json's context, as `cdk deploy -c clusterName=prod` would.
- `batch`: named Auto Scaling groups, launch hook, capacity nudge, status checks, recommendation
  policies, private endpoint with a security group made for it, e-mail alarms, a spot-share target.
- `ops_private`: private endpoint with given security groups, an existing alarm topic, and the
  misplaced-pods alarm switched off.

The Lambda code is bundled for real (copied from the bundle cache after the first run).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cdk_support import OVERRIDES, REPO, Synth

from app import build_app
from infra.config import load_app_config


@pytest.fixture(scope="session")
def cdk_json_context() -> dict[str, Any]:
    return json.loads((REPO / "cdk.json").read_text())["context"]


@pytest.fixture(scope="session")
def session_context(cdk_json_context: dict[str, Any]) -> dict[str, Any]:
    # As the CDK CLI leaves cdk.json after `cdk acknowledge` and `cdk cli-telemetry --disable`, with the
    # overrides of a cluster this deploy leaves out.
    return {**cdk_json_context, "clusterName": "prod,batch,ops_private",
            "acknowledged-issue-numbers": [34892], "cli-telemetry": False,
            "clusterOverrides": {**OVERRIDES, "staging": {"dryRun": True}}}


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory, session_context: dict[str, Any]) -> Synth:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = build_app(session_context, outdir=str(outdir))
    assembly = app.synth()
    settings = load_app_config(session_context)
    templates = {config.cluster_name: assembly.get_stack_by_name(name).template
                 for name, config in zip(settings.stack_names, settings.clusters, strict=True)}
    return Synth(app=app, outdir=outdir, templates=templates)
