"""What deploying needs: the CDK app runs in a venv made for deploying, without the test bed."""

from __future__ import annotations

import os
import subprocess
import sys

from cdk_support import REPO


def test_the_app_imports_no_runtime_only_library_at_synth():
    """The deploy venv's CDK app reads the product's settings and names, never its runtime."""
    probe = ("import sys, app; from infra.config import load_app_config; load_app_config("
             "{'clusterName': 'x', 'rebalanceWindows': [{'cron': '0 1 * * *', 'minutes': 5}]}); "
             "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": f"{REPO / 'lambdas'}:{REPO}"})
    loaded = set(result.stdout.split())
    assert loaded & {"msgspec", "kubernetes", "boto3", "botocore", "aws_lambda_powertools", "yaml"} == set()
    assert "spot_rebalancer" in loaded
