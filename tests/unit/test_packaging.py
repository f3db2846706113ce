"""pyproject.toml's dependency ranges and the Lambda asset's exact lock agree."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "lambdas" / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_the_lock_pins_every_declared_dependency_inside_its_range():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = _lock()
    outside = {}
    for requirement in map(Requirement, declared):
        pinned = lock.get(canonicalize_name(requirement.name))
        if pinned is None or not requirement.specifier.contains(pinned):
            outside[requirement.name] = (str(requirement.specifier), pinned)
    assert outside == {}
