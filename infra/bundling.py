"""The Lambda code asset, built on this machine: no Docker.

One bundle serves every handler: the runtime lock installed for arm64 / CPython 3.13 from wheels (less
what only the CLI and the tests use), plus the `spot_rebalancer` package, byte-compiled by a CPython
3.13 when this machine has one. The installed lock is kept in the user's cache under a hash of the
lock file, the recipe and the compiler, so pip runs only when one of them changes; each bundle links
that in and copies the package on top.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jsii
from aws_cdk import Annotations, AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

LAMBDAS_DIR = Path(__file__).resolve().parent.parent / "lambdas"
PACKAGE = "spot_rebalancer"
LOCK_FILE = "requirements.txt"
PYTHON_VERSION = "3.13"
PLATFORM = "manylinux2014_aarch64"
# Distributions of the lock that only the CLI and the tests use, left out of the asset: the
# kubernetes client (kubeconfig loading; the functions talk to the API server with urllib3 and a
# signed token), the parts of its closure nothing else requires, and PyYAML (the CLI's YAML).
# tests/infra/test_cdk_bundling.py checks that what stays needs none of them.
CLI_ONLY = frozenset({
    "kubernetes", "durationpy", "websocket-client", "requests-oauthlib", "oauthlib", "requests",
    "charset-normalizer", "idna", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
    "aiohttp", "aiohttp-retry", "aiohappyeyeballs", "aiosignal", "attrs", "frozenlist", "multidict",
    "propcache", "yarl", "pyyaml",
})
# Left out of what pip installs: console scripts written for this machine, and packages' own test
# suites (any directory of this name).
PRUNED = ("bin",)
PRUNED_DIRECTORY_NAME = "tests"
# Where Lambda puts the asset: compiled files name their sources there, not on the machine that
# compiled them, so two machines with the same compiler build the same bytes.
TASK_ROOT = "/var/task"
KEPT_INSTALLS = 3
WITHOUT_BYTECODE = (
    f"no CPython {PYTHON_VERSION} found (python{PYTHON_VERSION} on PATH, a pyenv version, or the "
    f"interpreter running the synth): the Lambda asset ships without bytecode, so every cold start "
    f"compiles the code first (0.35 s more in bench/coldstart.py), and its hash says so. Install a Python "
    f"{PYTHON_VERSION} and synthesize again.")


class BundlingError(RuntimeError):
    """The Lambda bundle could not be built; the message says which step failed and why."""


def _package_files(lambdas_dir: Path) -> list[Path]:
    return sorted(
        path for path in (lambdas_dir / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def _digest(recipe: str, lambdas_dir: Path, files: list[Path]) -> str:
    digest = hashlib.sha256(recipe.encode())
    for path in files:
        digest.update(b"\0" + path.relative_to(lambdas_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Bytecode:
    """A CPython 3.13 that compiles the bundle: the command, its exact version and its bytecode's
    magic number (both go into the hashes, since they decide the bytes of every .pyc)."""

    python: str
    version: str
    magic: str

    @property
    def tag(self) -> str:
        return f"cpython-{self.version}-{self.magic}"


@dataclass(frozen=True)
class Recipe:
    """How a bundle is built: the wheels' platform and the compiler (None: no bytecode)."""

    bytecode: Bytecode | None
    platform: str = PLATFORM

    @classmethod
    def here(cls, platform: str = PLATFORM) -> Recipe:
        """This machine's recipe: its CPython 3.13, if it has one."""
        return cls(bytecode_compiler(), platform)

    def __str__(self) -> str:
        # Hashed with the lock (and the code): change it whenever what a bundle holds changes.
        compiled = self.bytecode.tag if self.bytecode else "none"
        return (f"v2 {self.platform} cp{PYTHON_VERSION} without={','.join(sorted(CLI_ONLY))} "
                f"prune={','.join(PRUNED)},**/{PRUNED_DIRECTORY_NAME} bytecode={compiled} root={TASK_ROOT}")


def lock_hash(lambdas_dir: Path = LAMBDAS_DIR, recipe: Recipe | None = None) -> str:
    """The installed lock's cache key: the lock and the recipe (this machine's unless given)."""
    return _digest(str(recipe or Recipe.here()), lambdas_dir, [lambdas_dir / LOCK_FILE])


def code_hash(lambdas_dir: Path = LAMBDAS_DIR, recipe: Recipe | None = None) -> str:
    """The asset hash: changes exactly when the lock, the package sources or the recipe change,
    the compiler included, so an asset without bytecode never stands for one with it, nor one
    compiler's for another's."""
    return _digest(str(recipe or Recipe.here()), lambdas_dir,
                   [lambdas_dir / LOCK_FILE, *_package_files(lambdas_dir)])


def install_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spot-rebalancer" / "lambda-dependencies"


_PROBE = ("import importlib.util, platform, sys; "
          "print(platform.python_implementation(), '%d.%d' % sys.version_info[:2], "
          "platform.python_version(), importlib.util.MAGIC_NUMBER.hex())")


def _probe(python: str) -> Bytecode | None:
    """The interpreter as a compiler if it really runs and is CPython 3.13 (a version manager's
    shim may exist on PATH and fail, or run another version)."""
    try:
        probe = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, check=False,
                               timeout=30, env=_compile_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = probe.stdout.split()
    if probe.returncode != 0 or len(fields) != 4 or fields[:2] != ["CPython", PYTHON_VERSION]:
        return None
    return Bytecode(python=python, version=fields[2], magic=fields[3])


def _pyenv_pythons() -> list[str]:
    """pyenv's CPython 3.13 installs, newest first (free-threaded and dev builds left out)."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = [p for p in root.glob(f"{PYTHON_VERSION}.*/bin/python{PYTHON_VERSION}")
             if re.fullmatch(rf"{re.escape(PYTHON_VERSION)}\.\d+", p.parent.parent.name)]
    return [str(p) for p in sorted(found, key=lambda p: int(p.parent.parent.name.rsplit(".", 1)[1]),
                                   reverse=True)]


@cache
def bytecode_compiler() -> Bytecode | None:
    """The CPython 3.13 that compiles the bundle: the interpreter running the synth if it is one,
    else `python3.13` on PATH, else the newest pyenv version; None when there is none."""
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable] if running == PYTHON_VERSION else []
    on_path = shutil.which(f"python{PYTHON_VERSION}")
    candidates += [on_path] if on_path else []
    for python in [*candidates, *_pyenv_pythons()]:
        if (found := _probe(python)) is not None:
            return found
    return None


def _compile_env() -> dict[str, str]:
    # No PYTHON* setting of this machine may change what is compiled or where it goes (a pycache
    # prefix would put the .pyc outside the bundle, -O settings would drop asserts). The hash seed
    # needs no fixing: 3.13's marshal writes set constants in a stable order.
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def _compile(bytecode: Bytecode | None, root: Path, directory: Path) -> None:
    """Byte-compile `directory` (inside `root`, which lands on TASK_ROOT) deterministically."""
    if bytecode is None:  # lambda_code has warned
        return
    # Unchecked-hash pycs embed no source mtime (so SOURCE_DATE_EPOCH changes nothing) and are used
    # as they are, without a stat of the source, on the read-only /var/task.
    compiled = subprocess.run(
        [bytecode.python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
         "-s", str(root), "-p", TASK_ROOT, str(directory)],
        capture_output=True, text=True, check=False, env=_compile_env())
    if compiled.returncode != 0:
        raise BundlingError(
            f"python{PYTHON_VERSION} -m compileall failed:\n{compiled.stdout}{compiled.stderr}")


def _runtime_lock(lambdas_dir: Path) -> str:
    """The lock's lines less the CLI_ONLY distributions."""
    def name(line: str) -> str:
        return re.sub(r"[-_.]+", "-", re.split(r"[=<>!~;\[ ]", line.strip(), maxsplit=1)[0]).lower()

    lines = (lambdas_dir / LOCK_FILE).read_text().splitlines()
    return "".join(f"{line}\n" for line in lines
                   if line.strip().startswith("#") or not line.strip() or name(line) not in CLI_ONLY)


def install_lock(lambdas_dir: Path, into: Path, recipe: Recipe) -> None:
    """Install the lock's wheels (less CLI_ONLY) for the recipe's platform into the empty directory
    `into`, and compile them."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="runtime-lock-") as lock:
        lock.write(_runtime_lock(lambdas_dir))
        lock.flush()
        install = [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--target", str(into), "--platform", recipe.platform, "--only-binary=:all:",
            "--python-version", PYTHON_VERSION, "--implementation", "cp",
            # The lock pins the whole closure, so pip resolves nothing.
            "--no-deps", "--no-compile", "-r", lock.name,
        ]
        result = subprocess.run(install, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise BundlingError(
            f"pip could not install {lambdas_dir / LOCK_FILE} as {recipe.platform} wheels for CPython "
            f"{PYTHON_VERSION} (exit {result.returncode}). It needs the package index (or pip's cache) "
            f"and a wheel for every pin. pip said:\n{tail}"
        )
    for relative in PRUNED:
        shutil.rmtree(into / relative, ignore_errors=True)
    for suite in [p for p in into.rglob(PRUNED_DIRECTORY_NAME) if p.is_dir()]:
        shutil.rmtree(suite, ignore_errors=True)
    _compile(recipe.bytecode, into, into)


def cached_install(lambdas_dir: Path, cache_dir: Path, recipe: Recipe | None = None) -> Path:
    """The installed lock, built on first use. Installs go to a temporary directory and are renamed
    into place, so a failed or concurrent install never leaves a partial one behind."""
    recipe = recipe or Recipe.here()
    final = cache_dir / lock_hash(lambdas_dir, recipe)
    if final.is_dir() and _compiled_as(final, recipe):
        os.utime(final)  # recently used: kept by _forget_old_installs
        return final
    if final.is_dir():  # an install under this key without its bytecode: never shipped as compiled
        stale = Path(tempfile.mkdtemp(prefix=f".{final.name[:12]}-stale-", dir=cache_dir))
        with contextlib.suppress(FileNotFoundError):  # a concurrent synth took it away first
            final.rename(stale / final.name)
        shutil.rmtree(stale, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{final.name[:12]}-", dir=cache_dir))
    try:
        install_lock(lambdas_dir, building, recipe)
        try:
            building.rename(final)
        except OSError:
            if not final.is_dir():  # not a concurrent install that got there first
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    _forget_old_installs(cache_dir)
    return final


def _compiled_as(directory: Path, recipe: Recipe) -> bool:
    """Whether every module in `directory` has the recipe's bytecode (trivially so without a compiler)."""
    if recipe.bytecode is None:
        return True
    tag = f"cpython-{PYTHON_VERSION.replace('.', '')}"
    return all((source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc").is_file()
               for source in directory.rglob("*.py"))


def _forget_old_installs(cache_dir: Path) -> None:
    installs = sorted((p for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in installs[KEPT_INSTALLS:]:
        shutil.rmtree(stale, ignore_errors=True)


def _link_or_copy(source: str, target: str) -> None:
    # Hard links make the copy into cdk.out instant; neither side is ever modified in place.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def build_bundle(lambdas_dir: Path, output_dir: Path, cache_dir: Path, recipe: Recipe | None = None) -> None:
    recipe = recipe or Recipe.here()
    shutil.copytree(cached_install(lambdas_dir, cache_dir, recipe), output_dir,
                    copy_function=_link_or_copy, dirs_exist_ok=True)
    shutil.copytree(lambdas_dir / PACKAGE, output_dir / PACKAGE,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _compile(recipe.bytecode, output_dir, output_dir / PACKAGE)


@jsii.implements(ILocalBundling)
class LocalPythonBundling:
    def __init__(self, lambdas_dir: Path, cache_dir: Path, recipe: Recipe) -> None:
        self._lambdas_dir = lambdas_dir
        self._cache_dir = cache_dir
        self._recipe = recipe

    def try_bundle(self, output_dir: str, _options: BundlingOptions) -> bool:
        build_bundle(self._lambdas_dir, Path(output_dir), self._cache_dir, self._recipe)
        return True


@cache
def _say_without_bytecode() -> None:
    print(f"spot-rebalancer bundle: WARNING: {WITHOUT_BYTECODE}", file=sys.stderr)


def lambda_code(scope: Construct | None = None, lambdas_dir: Path = LAMBDAS_DIR,
                cache_dir: Path | None = None, recipe: Recipe | None = None) -> lambda_.Code:
    """The code asset for every spot-rebalancer function. Without a CPython 3.13 to compile it, a
    warning on `scope` (and stderr) says so."""
    recipe = recipe or Recipe.here()
    if recipe.bytecode is None:
        _say_without_bytecode()
        if scope is not None:
            Annotations.of(scope).add_warning_v2("spot-rebalancer:bundle-without-bytecode",
                                                 WITHOUT_BYTECODE)
    return lambda_.Code.from_asset(
        str(lambdas_dir),
        asset_hash=code_hash(lambdas_dir, recipe),
        asset_hash_type=AssetHashType.CUSTOM,
        bundling=BundlingOptions(
            # Never pulled: local bundling always succeeds or raises a BundlingError.
            image=DockerImage.from_registry("unused"),
            # jsii hands try_bundle its options as one struct, not the keywords its Protocol spells out.
            local=LocalPythonBundling(lambdas_dir, cache_dir or install_cache_dir(), recipe),  # type: ignore[arg-type]
        ),
    )
