"""cdk-nag (AwsSolutions) and cfn-lint over the synthesized app."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator

import aws_cdk
import cfnlint.api
import pytest
from aws_cdk import Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

from app import build_app


def _walk(construct: IConstruct) -> Iterator[IConstruct]:
    yield construct
    for child in construct.node.children:
        yield from _walk(child)


def acknowledgments(app: aws_cdk.App) -> dict[str, str]:
    """Every acknowledged cdk-nag rule id in the app, with its reason."""
    found = {}
    for construct in _walk(app):
        for entry in construct.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for rule, reason in entry.data.items():
                    found[rule.split("::", 1)[-1]] = reason
    return {rule: reason for rule, reason in found.items() if rule.startswith("AwsSolutions-")}


def test_no_aws_solutions_finding_is_left_unacknowledged(synth):
    # The app registers the pack, so a finding would already have failed the session's synth; this
    # lists them readably should that ever happen.
    report = AwsSolutionsChecks().validate_scope(synth.app)
    assert [(v.rule_name, [r.construct_path for r in v.violating_resources]) for v in report.violations] == []
    assert report.success


def test_every_acknowledgment_gives_a_reason(synth):
    acknowledged = acknowledgments(synth.app)
    assert acknowledged
    for rule, reason in acknowledged.items():
        assert len(reason.split()) >= 8, f"{rule}: {reason!r}"


# Finding ids spell out known account and region, so acknowledgments must too.
ENVIRONMENTS = {"env-agnostic": {}, "account-and-region": {"account": "111122223333", "region": "eu-west-1"}}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_acknowledgment_answers_a_real_finding(session_context, environment, monkeypatch):
    """Acknowledgments cover every finding, and with them switched off each acknowledged id is found."""
    context = {**session_context, **ENVIRONMENTS[environment],
               "aws:cdk:bundling-stacks": []}  # findings do not depend on the code asset
    with tempfile.TemporaryDirectory() as outdir:
        app = build_app(context, outdir=outdir)
        assert AwsSolutionsChecks().validate_scope(app).violations == []

        recorded: list[aws_cdk.Acknowledgment] = []
        monkeypatch.setattr(Validations, "acknowledge", lambda _self, *rules: recorded.extend(rules))
        unacknowledged = build_app(context, outdir=outdir)
    expected = {rule.id for rule in recorded}
    found = {v.rule_name for v in AwsSolutionsChecks().validate_scope(unacknowledged).violations}
    assert found == expected


@pytest.mark.parametrize("cluster", ["prod", "batch", "ops_private"])
def test_cfn_lint_finds_no_errors(synth, cluster):
    matches = cfnlint.api.lint(json.dumps(synth.templates[cluster]), regions=["eu-west-1", "us-east-1"])
    errors = [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})"
              for m in matches if m.rule.id.startswith("E")]
    assert errors == []
