"""The Lambda code asset, built on this machine: no Docker.

One bundle serves every handler: the runtime lock installed for arm64 / CPython 3.13 from wheels, plus
the `spot_rebalancer` package. The installed lock is kept in the user's cache under a hash of the lock
file, so pip runs only when the lock changes; each bundle links that in and copies the package on top.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

LAMBDAS_DIR = Path(__file__).resolve().parent.parent / "lambdas"
PACKAGE = "spot_rebalancer"
LOCK_FILE = "requirements.txt"
PYTHON_VERSION = "3.13"
PLATFORM = "manylinux2014_aarch64"
# Parts of the installed lock the functions never import: the asyncio Kubernetes client (the code
# uses the synchronous one), console scripts written for this machine, and a test suite.
PRUNED = ("kubernetes/aio", "bin", "websocket/tests")
# Hashed with the lock and the code: change it whenever the recipe below changes what a bundle holds.
RECIPE = f"v1 {PLATFORM} cp{PYTHON_VERSION} prune={','.join(PRUNED)}"
KEPT_INSTALLS = 3


class BundlingError(RuntimeError):
    """The Lambda bundle could not be built; the message says which step failed and why."""


def _package_files(lambdas_dir: Path) -> list[Path]:
    return sorted(
        path for path in (lambdas_dir / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def _digest(lambdas_dir: Path, files: list[Path]) -> str:
    digest = hashlib.sha256(RECIPE.encode())
    for path in files:
        digest.update(b"\0" + path.relative_to(lambdas_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def lock_hash(lambdas_dir: Path = LAMBDAS_DIR) -> str:
    return _digest(lambdas_dir, [lambdas_dir / LOCK_FILE])


def code_hash(lambdas_dir: Path = LAMBDAS_DIR) -> str:
    """The asset hash: changes exactly when the lock, the package sources or the recipe change."""
    return _digest(lambdas_dir, [lambdas_dir / LOCK_FILE, *_package_files(lambdas_dir)])


def install_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spot-rebalancer" / "lambda-dependencies"


def _python_for_bytecode() -> str | None:
    """A CPython 3.13 that really runs (a version-manager shim may exist but fail)."""
    found = shutil.which(f"python{PYTHON_VERSION}")
    if found is None:
        return None
    probe = subprocess.run([found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, check=False)
    return found if probe.returncode == 0 and probe.stdout.strip() == PYTHON_VERSION else None


def _compile(directory: Path) -> None:
    python = _python_for_bytecode()
    if python is None:
        print(f"spot-rebalancer bundle: no python{PYTHON_VERSION} here; {directory.name} ships without "
              "bytecode (cold starts compile it)", file=sys.stderr)
        return
    # Unchecked-hash pycs are used as they are, without stat calls, on the read-only /var/task.
    compiled = subprocess.run([python, "-m", "compileall", "-q", "-j", "0",
                               "--invalidation-mode", "unchecked-hash", str(directory)],
                              capture_output=True, text=True, check=False)
    if compiled.returncode != 0:
        raise BundlingError(
            f"python{PYTHON_VERSION} -m compileall failed:\n{compiled.stdout}{compiled.stderr}")


def install_lock(lambdas_dir: Path, into: Path) -> None:
    """Install the lock's wheels for the Lambda platform into the empty directory `into`."""
    install = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--target", str(into), "--platform", PLATFORM, "--only-binary=:all:",
        "--python-version", PYTHON_VERSION, "--implementation", "cp",
        # The lock pins the whole closure, so pip resolves nothing.
        "--no-deps", "--no-compile", "-r", str(lambdas_dir / LOCK_FILE),
    ]
    result = subprocess.run(install, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise BundlingError(
            f"pip could not install {lambdas_dir / LOCK_FILE} as {PLATFORM} wheels for CPython "
            f"{PYTHON_VERSION} (exit {result.returncode}). It needs the package index (or pip's cache) "
            f"and a wheel for every pin. pip said:\n{tail}"
        )
    for relative in PRUNED:
        shutil.rmtree(into / relative, ignore_errors=True)
    _compile(into)


def cached_install(lambdas_dir: Path, cache_dir: Path) -> Path:
    """The installed lock, built on first use. Installs go to a temporary directory and are renamed
    into place, so a failed or concurrent install never leaves a partial one behind."""
    final = cache_dir / lock_hash(lambdas_dir)
    if final.is_dir():
        os.utime(final)  # recently used: kept by _forget_old_installs
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{final.name[:12]}-", dir=cache_dir))
    try:
        install_lock(lambdas_dir, building)
        try:
            building.rename(final)
        except OSError:
            if not final.is_dir():  # not a concurrent install that got there first
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    _forget_old_installs(cache_dir)
    return final


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


def build_bundle(lambdas_dir: Path, output_dir: Path, cache_dir: Path) -> None:
    shutil.copytree(cached_install(lambdas_dir, cache_dir), output_dir, copy_function=_link_or_copy,
                    dirs_exist_ok=True)
    shutil.copytree(lambdas_dir / PACKAGE, output_dir / PACKAGE,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _compile(output_dir / PACKAGE)


@jsii.implements(ILocalBundling)
class LocalPythonBundling:
    def __init__(self, lambdas_dir: Path, cache_dir: Path) -> None:
        self._lambdas_dir = lambdas_dir
        self._cache_dir = cache_dir

    def try_bundle(self, output_dir: str, _options: BundlingOptions) -> bool:
        build_bundle(self._lambdas_dir, Path(output_dir), self._cache_dir)
        return True


def lambda_code(lambdas_dir: Path = LAMBDAS_DIR, cache_dir: Path | None = None) -> lambda_.Code:
    """The code asset for every spot-rebalancer function."""
    return lambda_.Code.from_asset(
        str(lambdas_dir),
        asset_hash=code_hash(lambdas_dir),
        asset_hash_type=AssetHashType.CUSTOM,
        bundling=BundlingOptions(
            # Never pulled: local bundling always succeeds or raises a BundlingError.
            image=DockerImage.from_registry("unused"),
            # jsii hands try_bundle its options as one struct, not the keywords its Protocol spells out.
            local=LocalPythonBundling(lambdas_dir, cache_dir or install_cache_dir()),  # type: ignore[arg-type]
        ),
    )
