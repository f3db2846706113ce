"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, built by tests/kube/build.sh. No kubelet runs; see nodesim.py for the nodes.

- Every component listens on 127.0.0.1, on ports free at start, in a temporary work directory that
  `stop()` removes.
- TLS with a throwaway CA (certs.py); the apiserver's serving certificate also serves the
  controller-manager's and scheduler's health ports, so every health check verifies it.
- Static bearer tokens (a token file): the admin (group system:masters), plus any `extra_users`
  given at start (the file is read once, so users cannot be added later). RBAC authorization is on,
  so a user bound only to the product's ClusterRole can do exactly what that role allows.
- The controller-manager and scheduler use the admin token (no per-controller service accounts).
- The scheduler runs the default profile with the 1.31+ score weights (a KubeSchedulerConfiguration),
  the weights the planner predicts with.
- The node-lifecycle controller is off: with no kubelet to heartbeat, it would mark every node
  NotReady and evict everything; likewise the TaintNodesByCondition admission plugin, whose
  not-ready taint on new nodes only that controller would remove. So a simulated node stays Ready
  with no heartbeat. The ServiceAccount admission plugin (and the token controller) is off too:
  pods here need no API credentials, and it would make every pod wait for its namespace's default
  account.
- Components run in process groups of their own, under `setpriv --pdeathsig KILL`, so they die with
  the process that started them even when it is killed outright; `stop()` (also run at exit)
  ends them with SIGTERM, then SIGKILL. The death signal follows the *thread* that started them:
  call `start()` from a thread that outlives the control plane (the main thread, normally).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
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

from spot_rebalancer.config import DEFAULT_SCORE_WEIGHTS

from .certs import write_pki

BUILD_SCRIPT = Path(__file__).with_name("build.sh")
READY_TIMEOUT = 90
STOP_TIMEOUT = 10
START_ATTEMPTS = 3
_ports = random.SystemRandom()  # not the `random` module: tests may seed that one


class ControlPlaneError(RuntimeError):
    """The control plane could not be started; the message says why and what to do."""


class _PortTaken(ControlPlaneError):
    """A component found its port taken by someone else between our check and its bind."""


@dataclass(frozen=True)
class User:
    """A static-token user: `groups` decide what RBAC grants it."""

    name: str
    token: str
    groups: tuple[str, ...] = ()


ADMIN = User("admin", "admin-token", ("system:masters",))


def binaries_dir() -> Path:
    """Where build.sh keeps the binaries. Never builds: that takes a quarter of an hour."""
    check = subprocess.run(["bash", str(BUILD_SCRIPT), "--check"], capture_output=True, text=True)
    if check.returncode != 0:
        raise ControlPlaneError(
            "the local Kubernetes control plane is not built; run tests/kube/build.sh "
            f"(or `make control-plane`) first, about 15 minutes once.\n{check.stderr.strip()}")
    return Path(check.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """A port free now, taken below the kernel's ephemeral range: a component binds it a moment
    later, and an ephemeral port may meanwhile become the local end of some outgoing connection."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = _ports.randrange(max(1024, ephemeral_low - 12000), ephemeral_low)
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port


@dataclass
class ControlPlane:
    """`start()` it, `stop()` it (also done at exit). `server` is the apiserver's URL."""

    extra_users: list[User] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="spot-rebalancer-kube-")))
    bin_dir: Path | None = None
    server: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    started_seconds: float = 0.0
    _processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    @property
    def ca_file(self) -> str:
        return str(self.files["ca"])

    @property
    def users(self) -> list[User]:
        return [ADMIN, *self.extra_users]

    def start(self) -> ControlPlane:
        began = time.monotonic()
        self.bin_dir = self.bin_dir or binaries_dir()
        self.files = write_pki(self.workdir)
        self.files["tokens"] = self.workdir / "tokens.csv"
        self.files["tokens"].write_text("".join(
            f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"\n' for u in self.users))
        # The apiserver's own record of what it let the extra users (the product) do: what least
        # privilege is proved against. Everyone else's requests are left out.
        self.files["audit_policy"] = self.workdir / "audit-policy.json"
        self.files["audit_policy"].write_text(json.dumps({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            "omitStages": ["RequestReceived", "ResponseStarted"],
            "rules": [{"level": "Metadata", "users": [u.name for u in self.extra_users]},
                      {"level": "None"}]}))
        self.files["audit_log"] = self.workdir / "audit.log"
        atexit.register(self.stop)
        try:
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    self._start_components()
                    break
                except _PortTaken:
                    self._stop_processes()
                    if attempt == START_ATTEMPTS:
                        raise
        except BaseException:
            self.stop()
            raise
        self.started_seconds = time.monotonic() - began
        return self

    def write_kubeconfig(self, path: Path, server: str, token: str, context: str = "local") -> Path:
        """A kubeconfig for `server` (the apiserver or the proxy) with a bearer token. JSON, which is
        YAML too, so nothing needs quoting by hand."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": context, "cluster": {"server": server,
                                                       "certificate-authority": self.ca_file}}],
            "users": [{"name": context, "user": {"token": token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        }, indent=2))
        return path

    def stop(self) -> None:
        """Stop every component and remove the work directory. Idempotent."""
        self._stop_processes()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def audited(self) -> list[dict]:
        """The audit events of the extra users' requests so far (one JSON object a line)."""
        path = self.files["audit_log"]
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # --- internals -----------------------------------------------------------------------------

    def _start_components(self) -> None:
        f = self.files
        tls = [f"--tls-cert-file={f['serving_cert']}", f"--tls-private-key-file={f['serving_key']}"]
        etcd_port, etcd_peer, api_port, cm_port, sched_port = (free_port() for _ in range(5))
        shutil.rmtree(self.workdir / "etcd", ignore_errors=True)  # a retry starts afresh
        self._spawn("etcd", [
            "--data-dir", str(self.workdir / "etcd"), "--name", "test",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{etcd_peer}"])
        self._wait_healthy(f"http://127.0.0.1:{etcd_port}/health", "etcd")
        self.server = f"https://127.0.0.1:{api_port}"
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--secure-port={api_port}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            *tls, f"--token-auth-file={f['tokens']}", "--authorization-mode=Node,RBAC",
            f"--service-account-key-file={f['sa_pub']}",
            f"--service-account-signing-key-file={f['sa_key']}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/16", "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition", "--profiling=false",
            f"--audit-policy-file={f['audit_policy']}", f"--audit-log-path={f['audit_log']}",
            "--audit-log-format=json"])
        self._wait_healthy(f"{self.server}/readyz", "kube-apiserver")
        # The components talk to the apiserver directly, never through the policy/v1 proxy.
        kubeconfig = self.write_kubeconfig(self.workdir / "components.kubeconfig", self.server, ADMIN.token)
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={kubeconfig}", "--leader-elect=false",
            "--controllers=*,-nodelifecycle,-serviceaccount-token,-cloud-node-lifecycle",
            f"--root-ca-file={f['ca']}",
            # The default 20 requests/s makes a 110-replica ReplicaSet take five seconds to create.
            "--kube-api-qps=200", "--kube-api-burst=400",
            "--port=0", f"--secure-port={cm_port}", "--bind-address=127.0.0.1", *tls, "--profiling=false"])
        self._spawn("kube-scheduler", [
            f"--config={self._scheduler_config(kubeconfig)}",
            "--port=0", f"--secure-port={sched_port}", "--bind-address=127.0.0.1", *tls, "--profiling=false"])
        self._wait_healthy(f"https://127.0.0.1:{cm_port}/healthz", "kube-controller-manager")
        self._wait_healthy(f"https://127.0.0.1:{sched_port}/healthz", "kube-scheduler")

    def _scheduler_config(self, kubeconfig: Path) -> Path:
        """The default profile with the score weights of Kubernetes 1.31+ (the planner's defaults), so
        that the 1.20 scheduler here scores as EKS's does: NodeResourcesLeastAllocated stands for
        NodeResourcesFit's default strategy, and 1.20's NodePreferAvoidPods (gone since) is off."""
        names = {"NodeResourcesFit": "NodeResourcesLeastAllocated"}
        insecure = f"127.0.0.1:{free_port()}"
        path = self.workdir / "kube-scheduler.json"
        path.write_text(json.dumps({
            "apiVersion": "kubescheduler.config.k8s.io/v1beta1", "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)}, "leaderElection": {"leaderElect": False},
            # With a configuration file --port=0 no longer turns the insecure port off, and 1.20 takes
            # no 0 here: a free loopback port then, so that control planes side by side do not clash.
            "healthzBindAddress": insecure, "metricsBindAddress": insecure,
            "profiles": [{"schedulerName": "default-scheduler", "plugins": {"score": {
                "disabled": [{"name": "*"}],
                "enabled": [{"name": names.get(plugin, plugin), "weight": weight}
                            for plugin, weight in DEFAULT_SCORE_WEIGHTS.items() if weight]}}}],
        }, indent=2))
        return path

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.workdir / f"{name}.log", "ab") as log:
            # A session (and process group) of its own, so stop() ends it and anything it started;
            # the death signal ends it if this process dies without running stop().
            process = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--", str(self.bin_dir / name), *args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._processes.append((name, process))

    def _stop_processes(self) -> None:
        # The apiserver's clients first, then the apiserver, then etcd: each shuts down quickly
        # once nothing depends on it (an apiserver told to stop while the controller-manager still
        # watches it takes over ten seconds).
        order = (("kube-controller-manager", "kube-scheduler"), ("kube-apiserver",), ("etcd",))
        for names in order:
            _terminate([p for name, p in self._processes if name in names])
        self._processes.clear()

    def _wait_healthy(self, url: str, name: str) -> None:
        context = ssl.create_default_context(cafile=self.ca_file)
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN.token}"})
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for other, process in self._processes:
                if process.poll() is not None:
                    tail = self.log_tail(other)
                    error = _PortTaken if "address already in use" in tail else ControlPlaneError
                    raise error(f"{other} exited with {process.returncode}; last log lines:\n{tail}")
            with (contextlib.suppress(OSError),
                  urllib.request.urlopen(request, context=context, timeout=2) as response):
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise ControlPlaneError(f"{name} not healthy after {READY_TIMEOUT}s at {url}:\n{self.log_tail(name)}")


def _terminate(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to each process group, then SIGKILL to those still running after STOP_TIMEOUT."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
