"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, built by tests/kube/build.sh. No kubelet runs; see nodesim.py for the nodes.

- Every component listens on 127.0.0.1, on free ports chosen at start.
- TLS with a throwaway CA (certs.py); static bearer tokens (a token file) for people and
  components; RBAC authorization on, so a user bound only to the product's ClusterRole can do
  exactly what that role allows.
- The node-lifecycle controller is off: with no kubelet to heartbeat, it would mark every node
  NotReady and evict everything; likewise the TaintNodesByCondition admission plugin, whose
  not-ready taint on new nodes only that controller would remove. The ServiceAccount admission
  plugin is off too: pods here need no API credentials, and it would make every pod wait for its
  namespace's default account.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .certs import write_pki

BUILD_SCRIPT = Path(__file__).with_name("build.sh")
ADMIN_TOKEN = "admin-token"
READY_TIMEOUT = 90


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message says what to do."""


def binaries_dir() -> Path:
    """Where build.sh keeps the binaries, building them first if need be."""
    try:
        out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise ControlPlaneError(
            f"tests/kube/build.sh failed (exit {exc.returncode}); run it by hand to see why:\n"
            f"{exc.stderr[-2000:]}") from None
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class User:
    name: str
    token: str
    groups: tuple[str, ...] = ()


@dataclass
class ControlPlane:
    """Start with `start()`, stop with `stop()` (also registered at exit)."""

    extra_users: list[User] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="spot-rebalancer-kube-")))
    bin_dir: Path | None = None
    api_port: int = 0
    server: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    started_seconds: float = 0.0
    _processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    @property
    def ca_file(self) -> str:
        return str(self.files["ca"])

    def start(self) -> ControlPlane:
        began = time.monotonic()
        self.bin_dir = self.bin_dir or binaries_dir()
        self.files = write_pki(self.workdir)
        users = [User("admin", ADMIN_TOKEN, ("system:masters",)), *self.extra_users]
        tokens = self.workdir / "tokens.csv"
        tokens.write_text("".join(f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"\n' for u in users))
        atexit.register(self.stop)
        etcd_port, etcd_peer = free_port(), free_port()
        self._spawn("etcd", [
            "etcd", "--data-dir", str(self.workdir / "etcd"), "--name", "test",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{etcd_peer}"])
        self.api_port = free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"
        f = self.files
        self._spawn("kube-apiserver", [
            "kube-apiserver", f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--secure-port={self.api_port}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--tls-cert-file={f['serving_cert']}", f"--tls-private-key-file={f['serving_key']}",
            f"--token-auth-file={tokens}", "--authorization-mode=Node,RBAC",
            f"--service-account-key-file={f['sa_pub']}",
            f"--service-account-signing-key-file={f['sa_key']}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/16", "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition", "--profiling=false"])
        self._wait_https(f"{self.server}/readyz", "kube-apiserver")
        kubeconfig = self.write_kubeconfig(self.workdir / "components.kubeconfig", self.server,
                                           ADMIN_TOKEN)
        cm_port, sched_port = free_port(), free_port()
        self._spawn("kube-controller-manager", [
            "kube-controller-manager", f"--kubeconfig={kubeconfig}", "--leader-elect=false",
            "--controllers=*,-nodelifecycle,-serviceaccount-token,-cloud-node-lifecycle",
            f"--service-account-private-key-file={f['sa_key']}", f"--root-ca-file={f['ca']}",
            "--port=0", f"--secure-port={cm_port}", "--bind-address=127.0.0.1",
            "--profiling=false"])
        self._spawn("kube-scheduler", [
            "kube-scheduler", f"--kubeconfig={kubeconfig}", "--leader-elect=false",
            "--port=0", f"--secure-port={sched_port}", "--bind-address=127.0.0.1",
            "--profiling=false"])
        self._wait_https(f"https://127.0.0.1:{cm_port}/healthz", "kube-controller-manager",
                         verify=False)
        self._wait_https(f"https://127.0.0.1:{sched_port}/healthz", "kube-scheduler", verify=False)
        self.started_seconds = time.monotonic() - began
        return self

    def write_kubeconfig(self, path: Path, server: str, token: str, context: str = "local") -> Path:
        """A kubeconfig for `server` (the apiserver or the proxy) with a bearer token."""
        path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: {context}
  cluster:
    server: {server}
    certificate-authority: {self.files['ca']}
users:
- name: {context}
  user:
    token: {token}
contexts:
- name: {context}
  context:
    cluster: {context}
    user: {context}
current-context: {context}
""")
        return path

    def stop(self) -> None:
        """Stop every component (TERM, then KILL after 10 s) and remove the work directory."""
        for _, process in reversed(self._processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        self._processes.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- internals -----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        binary = str(self.bin_dir / argv[0])
        # A process group of its own, so stop() ends it and anything it started.
        process = subprocess.Popen([binary, *argv[1:]], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        self._processes.append((name, process))

    def _wait_https(self, url: str, name: str, verify: bool = True) -> None:
        context = ssl.create_default_context(cafile=self.ca_file)
        if not verify:  # the component's own self-signed serving certificate
            context = ssl._create_unverified_context()
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for other, process in self._processes:
                if process.poll() is not None:
                    raise ControlPlaneError(f"{other} exited with {process.returncode}; last log lines:\n"
                                            f"{self.log_tail(other)}")
            with (contextlib.suppress(OSError),
                  urllib.request.urlopen(request, context=context, timeout=2) as response):
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} not healthy after {READY_TIMEOUT}s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
