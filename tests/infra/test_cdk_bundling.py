"""The Lambda bundle: what it holds, when its hash changes, and how a failed build reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from email.parser import Parser
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Annotations, Match
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra.bundling import (
    CLI_ONLY,
    LAMBDAS_DIR,
    WITHOUT_BYTECODE,
    BundlingError,
    Bytecode,
    Recipe,
    build_bundle,
    bytecode_compiler,
    cached_install,
    code_hash,
    install_cache_dir,
    lambda_code,
    lock_hash,
)

PYTHON_3_13_0 = Bytecode(python="python3.13", version="3.13.0", magic="f30d0d0a")


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


def test_the_hashes_follow_whether_and_by_which_python_the_bundle_is_compiled(lambdas_copy: Path):
    recipes = [Recipe(None), Recipe(PYTHON_3_13_0),
               Recipe(Bytecode(python="python3.13", version="3.13.1", magic="f30d0d0a"))]
    assert len({code_hash(lambdas_copy, recipe) for recipe in recipes}) == 3
    # The installed lock is compiled in the cache too: a cache filled without a compiler is
    # never taken for a compiled one.
    assert len({lock_hash(lambdas_copy, recipe) for recipe in recipes}) == 3
    # Where the compiler lives does not change the bytes it writes.
    assert code_hash(lambdas_copy, Recipe(PYTHON_3_13_0)) == code_hash(
        lambdas_copy, Recipe(Bytecode(python="/opt/python/bin/python3.13", version="3.13.0",
                                      magic="f30d0d0a")))


def test_a_synth_without_a_python_3_13_warns_on_the_stack_and_on_stderr(capfd):
    stack = Stack(App(), "NoCompiler")
    lambda_code(stack, recipe=Recipe(None))
    Annotations.from_stack(stack).has_warning("*", Match.string_like_regexp("without bytecode"))
    assert WITHOUT_BYTECODE in capfd.readouterr().err
    compiled = Stack(App(), "Compiler")
    lambda_code(compiled, recipe=Recipe(PYTHON_3_13_0))
    Annotations.from_stack(compiled).has_no_warning("*", Match.any_value())


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


@pytest.mark.skipif(bytecode_compiler() is None, reason="no CPython 3.13 on this machine")
def test_a_cached_install_without_its_bytecode_is_installed_again(lambdas_copy: Path, tmp_path: Path):
    (lambdas_copy / "requirements.txt").write_text("six==1.17.0\n")
    recipe = Recipe.here()
    cache = tmp_path / "cache"
    planted = cache / lock_hash(lambdas_copy, recipe)
    planted.mkdir(parents=True)
    (planted / "six.py").write_text("# an uncompiled install left under the compiled key\n")
    installed = cached_install(lambdas_copy, cache, recipe)
    assert installed == planted
    assert (installed / "__pycache__" / "six.cpython-313.pyc").is_file()
    assert "uncompiled install" not in (installed / "six.py").read_text()
    assert [p.name for p in cache.iterdir()] == [planted.name]


@pytest.mark.skipif(bytecode_compiler() is None, reason="no CPython 3.13 on this machine")
def test_the_bytecode_is_the_same_bytes_wherever_and_whenever_it_is_compiled(
        lambdas_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def package_bytecode(output: Path) -> dict[str, bytes]:
        build_bundle(lambdas_copy, output, install_cache_dir())
        package = output / "spot_rebalancer"
        return {str(p.relative_to(package)): p.read_bytes() for p in package.rglob("*.pyc")}

    first = package_bytecode(tmp_path / "one")
    for source in (lambdas_copy / "spot_rebalancer").rglob("*.py"):
        os.utime(source, (1_000_000_000, 1_000_000_000))  # other mtimes, and a build date asked for
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    second = package_bytecode(tmp_path / "elsewhere" / "two")
    assert first and first == second


def _staged_bundle(outdir: Path) -> Path:
    bundles = [p for p in outdir.glob("asset.*") if (p / "spot_rebalancer").is_dir()]
    assert len(bundles) == 1, bundles  # one asset shared by both functions of every stack
    return bundles[0]


def test_the_bundle_holds_the_package_and_arm64_wheels_and_nothing_pruned(synth):
    bundle = _staged_bundle(synth.outdir)
    assert (bundle / "spot_rebalancer" / "config.py").is_file()
    for package in ("boto3", "botocore", "aws_lambda_powertools", "msgspec", "urllib3", "cronsim"):
        assert (bundle / package).is_dir(), package
    native = [p.name for p in (bundle / "msgspec").glob("*.so")]
    assert native and all("aarch64" in name and "cpython-313" in name for name in native), native
    assert not (bundle / "bin").exists()
    assert [p for p in bundle.rglob("tests") if p.is_dir()] == []
    pycs = {p.name.split(".")[1] for p in bundle.rglob("__pycache__/*.pyc")}
    assert pycs <= {"cpython-313"}  # never this machine's bytecode


def _distributions(bundle: Path) -> dict[str, dict]:
    """name -> METADATA headers of each distribution installed in the bundle."""
    return {canonicalize_name(meta["Name"]): meta for meta in
            (Parser().parsestr(p.read_text()) for p in bundle.glob("*.dist-info/METADATA"))}


def test_the_bundle_leaves_out_the_kubernetes_client_and_all_that_only_it_needs(synth):
    bundle = _staged_bundle(synth.outdir)
    installed = _distributions(bundle)
    assert not CLI_ONLY & set(installed)
    assert not (bundle / "kubernetes").exists() and not (bundle / "yaml").exists()
    # What stays needs nothing that went: every requirement of a kept distribution, for CPython
    # 3.13 on Linux arm64 and without extras, is in the bundle too.
    lambda_environment = {"python_version": "3.13", "python_full_version": "3.13.0",
                          "platform_machine": "aarch64", "sys_platform": "linux",
                          "platform_system": "Linux", "implementation_name": "cpython",
                          "platform_python_implementation": "CPython", "extra": ""}
    missing = {
        (name, str(requirement))
        for name, meta in installed.items()
        for requirement in map(Requirement, meta.get_all("Requires-Dist") or [])
        if (requirement.marker is None or requirement.marker.evaluate(lambda_environment))
        and canonicalize_name(requirement.name) not in installed
    }
    assert missing == set()


def test_the_functions_import_nothing_the_bundle_leaves_out(tmp_path: Path):
    """Both handlers imported, the events function's runtime built and the schedule function's
    modules imported, in a fresh interpreter: none of the left-out distributions is loaded."""
    script = """
import json, sys
import spot_rebalancer.handlers.events as events, spot_rebalancer.handlers.schedule
import spot_rebalancer.aws, spot_rebalancer.eks_auth, spot_rebalancer.pricing, spot_rebalancer.state
import aws_lambda_powertools.utilities.batch, aws_lambda_powertools.utilities.idempotency.exceptions
events._runtime()
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""
    environment = {**os.environ, "PYTHONPATH": str(LAMBDAS_DIR), "AWS_DEFAULT_REGION": "eu-west-1",
                   "CLUSTER_NAME": "prod", "STATE_TABLE": "state", "WORK_QUEUE_URL": "https://sqs.invalid/q"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env=environment, cwd=tmp_path).stdout
    loaded = set(json.loads(out))
    left_out = {module for module, names in packages_distributions().items()
                if {canonicalize_name(n) for n in names} <= CLI_ONLY}
    assert "boto3" in loaded and "urllib3" in loaded
    assert loaded & left_out == set()


@pytest.mark.skipif(bytecode_compiler() is None, reason="no CPython 3.13 on this machine")
def test_the_bundle_is_compiled_for_python_3_13_where_one_is_found(synth):
    bundle = _staged_bundle(synth.outdir)
    sources = [p for p in bundle.rglob("*.py") if "dist-info" not in str(p.parent)]
    uncompiled = [p for p in sources
                  if not (p.parent / "__pycache__" / f"{p.stem}.cpython-313.pyc").is_file()]
    assert sources and uncompiled == []
    pyc = (bundle / "spot_rebalancer" / "__pycache__" / "config.cpython-313.pyc").read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, unchecked: no mtime inside
    assert b"/var/task/spot_rebalancer/config.py" in pyc  # named as Lambda will find it


def test_later_synths_reuse_the_installed_lock(synth):
    assert (install_cache_dir() / lock_hash()).is_dir()


def test_both_functions_of_a_stack_deploy_the_same_asset(synth):
    functions = synth.resources("prod", "AWS::Lambda::Function")
    keys = {f["Properties"]["Code"]["S3Key"] for f in functions.values()}
    assert len(functions) == 2 and len(keys) == 1
