"""No secret in the functions' environment: every variable the synthesized templates set is a
setting the code reads (or powertools' name, namespace and log level), and no value is a
credential. The EKS token is minted in memory from the function's role, never configured."""

from __future__ import annotations

import json
import re

import pytest

from spot_rebalancer.config import Settings

CLUSTERS = ("prod", "batch", "ops_private")
POWERTOOLS = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|CREDENTIAL|ACCESS_KEY|PRIVATE", re.IGNORECASE)
SECRET_VALUE = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|k8s-aws-v1\.|PRIVATE KEY|Bearer ")


class _ReadNames(dict):
    """An empty environment that remembers every name asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, name, default=None):
        self.asked.add(name)
        return default


def settings_read() -> set[str]:
    env = _ReadNames()
    Settings.from_env(env)
    return env.asked


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_function_environments_hold_settings_and_no_secret(synth, cluster):
    functions = synth.resources(cluster, "AWS::Lambda::Function", "SpotRebalancer")
    assert len(functions) == 2, "the events and schedule functions"
    allowed = settings_read() | POWERTOOLS
    for logical_id, function in functions.items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert set(variables) <= allowed, f"{logical_id}: {set(variables) - allowed}"
        assert not [name for name in variables if SECRET_NAME.search(name)]
        for name, value in variables.items():
            text = value if isinstance(value, str) else json.dumps(value)
            assert not SECRET_VALUE.search(text), f"{logical_id}: {name} looks like a credential"
