"""`pip install .` into a clean virtualenv gives a working CLI: the dependencies pyproject.toml declares
are enough for every command (the Lambda asset installs the exact lock instead)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.builders import PREFER_SPOT, make_pod, on_demand_node, spot_node, write_list

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("handle", "plan", "explain", "census", "tick")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CLI's bin directory in a new virtualenv without site packages, installed from a copy of
    what the repository ships (so nothing outside pyproject.toml and lambdas/ can leak in)."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copytree(REPO / "lambdas", source / "lambdas",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    bin_dir = root / "venv" / "bin"
    # The test's own pip installs into the new environment: no network fetch of pip itself.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--quiet",
                    str(source)], check=True, capture_output=True)
    return bin_dir


def run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / "spot-rebalancer"), *args], capture_output=True, text=True,
                          # Each test pod is its workload's only replica, which is not moved by default.
                          check=False, env={"PATH": str(bin_dir), "MOVE_SINGLE_REPLICA_WORKLOADS": "true"})


@pytest.mark.parametrize("command", [None, *COMMANDS], ids=["top", *COMMANDS])
def test_every_command_helps(installed: Path, command: str | None):
    result = run(installed, *([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: spot-rebalancer")


def test_the_installed_cli_plans_from_a_file(installed: Path, tmp_path: Path):
    listing = write_list(tmp_path, [on_demand_node("od-1"), spot_node("spot-1")],
                         [make_pod("web-1", "od-1", preferred=[PREFER_SPOT], requests={"cpu": "1"})])
    result = run(installed, "plan", "--from-file", listing, "--json")
    assert result.returncode == 0, result.stderr
    moves = json.loads(result.stdout)["evictions"]
    assert [(m["name"], m["from_node"], m["to_node"]) for m in moves] == [("web-1", "od-1", "spot-1")]


def test_the_installed_cli_knows_its_version(installed: Path):
    from spot_rebalancer import __version__

    result = run(installed, "--version")
    assert (result.returncode, result.stdout) == (0, f"spot-rebalancer {__version__}\n")


def test_the_installed_cli_reads_yaml(installed: Path, tmp_path: Path):
    """PyYAML is declared: a YAML List and YAML output work in the clean environment."""
    import yaml

    listing = write_list(tmp_path, [on_demand_node("od-1"), spot_node("spot-1")],
                         [make_pod("web-1", "od-1", preferred=[PREFER_SPOT], requests={"cpu": "1"})])
    as_yaml = tmp_path / "list.yaml"
    as_yaml.write_text(yaml.safe_dump(json.loads(Path(listing).read_text())))
    result = run(installed, "explain", "default/web-1", "-f", str(as_yaml), "-o", "yaml")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["target"] == "spot-1"
