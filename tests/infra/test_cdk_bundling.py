"""The Lambda bundle: what it holds, when its hash changes, and how a failed build reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infra.bundling import LAMBDAS_DIR, BundlingError, cached_install, code_hash, install_cache_dir, lock_hash


@pytest.fixture
def lambdas_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "lambdas"
    shutil.copytree(LAMBDAS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return copy


def test_the_hash_follows_the_lock_and_the_code_but_not_bytecode(lambdas_copy: Path):
    original = code_hash(lambdas_copy)
    (lambdas_copy / "spot_rebalancer" / "__pycache__").mkdir(exist_ok=True)
    (lambdas_copy / "spot_rebalancer" / "__pycache__" / "config.cpython-311.pyc").write_bytes(b"\0")
    assert code_hash(lambdas_copy) == original

    lock = lambdas_copy / "requirements.txt"
    lock.write_text(lock.read_text() + "# a comment changes the lock file\n")
    after_lock = code_hash(lambdas_copy)
    assert after_lock != original

    config = lambdas_copy / "spot_rebalancer" / "config.py"
    config.write_text(config.read_text() + "\n")
    assert code_hash(lambdas_copy) not in (original, after_lock)


def test_only_the_lock_decides_whether_pip_runs_again(lambdas_copy: Path):
    before = lock_hash(lambdas_copy)
    (lambdas_copy / "spot_rebalancer" / "new_module.py").write_text("ANSWER = 42\n")
    assert lock_hash(lambdas_copy) == before
    lock = lambdas_copy / "requirements.txt"
    lock.write_text(lock.read_text() + "# a comment changes the lock file\n")
    assert lock_hash(lambdas_copy) != before


def test_a_failing_pip_says_what_failed_and_leaves_no_bundle_behind(lambdas_copy: Path, tmp_path: Path):
    (lambdas_copy / "requirements.txt").write_text("this line is no requirement\n")
    cache = tmp_path / "cache"
    with pytest.raises(BundlingError) as raised:
        cached_install(lambdas_copy, cache)
    message = str(raised.value)
    assert "pip could not install" in message and "manylinux2014_aarch64" in message
    assert "pip said:" in message
    assert list(cache.iterdir()) == []  # the next synth tries again instead of using half a bundle


def _staged_bundle(outdir: Path) -> Path:
    bundles = [p for p in outdir.glob("asset.*") if (p / "spot_rebalancer").is_dir()]
    assert len(bundles) == 1, bundles  # one asset shared by both functions of every stack
    return bundles[0]


def test_the_bundle_holds_the_package_and_arm64_wheels_and_nothing_pruned(synth):
    bundle = _staged_bundle(synth.outdir)
    assert (bundle / "spot_rebalancer" / "config.py").is_file()
    for package in ("kubernetes", "boto3", "aws_lambda_powertools", "msgspec", "yaml"):
        assert (bundle / package).is_dir(), package
    native = [p.name for p in (bundle / "msgspec").glob("*.so")]
    assert native and all("aarch64" in name and "cpython-313" in name for name in native), native
    for pruned in ("kubernetes/aio", "bin", "websocket/tests"):
        assert not (bundle / pruned).exists(), pruned
    assert not list(bundle.rglob("__pycache__/*.cpython-311.pyc"))  # never this machine's bytecode


def test_later_synths_reuse_the_installed_lock(synth):
    assert (install_cache_dir() / lock_hash()).is_dir()


def test_both_functions_of_a_stack_deploy_the_same_asset(synth):
    functions = synth.resources("prod", "AWS::Lambda::Function")
    keys = {f["Properties"]["Code"]["S3Key"] for f in functions.values()}
    assert len(functions) == 2 and len(keys) == 1
