"""The whole local test cluster: control plane, policy/v1 proxy and node simulator together.

Two ways in, two kinds of kubeconfig (in the control plane's work directory):
- through the proxy, which presents policy/v1: `kubeconfig` (the admin) and `kubeconfig_for(...)`
  (another user). The product, kubectl and the tests use these;
- straight to the apiserver: components.kubeconfig, for the controller-manager and scheduler. The
  node simulator also talks to the apiserver directly, so its traffic is never the product's in the
  proxy's counters and never meets a fault a test injects there.
"""

from __future__ import annotations

from pathlib import Path

from .api import Api
from .controlplane import ADMIN, ControlPlane, User
from .nodesim import NodeSimulator
from .proxy import PolicyProxy

# A user bound only to the product's ClusterRole (infra/rbac), for least-privilege tests.
PRODUCT_USER = User("spot-rebalancer", "spot-rebalancer-token", ("spot-rebalancer",))


class LocalCluster:
    def __init__(self, extra_users: tuple[User, ...] = (PRODUCT_USER,)) -> None:
        self.control_plane = ControlPlane(extra_users=list(extra_users))
        self.proxy: PolicyProxy | None = None
        self.nodes: NodeSimulator | None = None

    def start(self) -> LocalCluster:
        cp = self.control_plane.start()
        try:
            self.proxy = PolicyProxy(cp.server, cp.ca_file, str(cp.files["serving_cert"]),
                                     str(cp.files["serving_key"])).start()
            self.admin = Api(self.proxy.url, ADMIN.token, cp.ca_file)
            self.nodes = NodeSimulator(Api(cp.server, ADMIN.token, cp.ca_file)).start()
        except BaseException:
            self.stop()
            raise
        self.kubeconfig = self.kubeconfig_for(ADMIN.token, ADMIN.name)
        return self

    def kubeconfig_for(self, token: str, name: str) -> Path:
        """A kubeconfig through the policy/v1 proxy with this bearer token, written as <name>.kubeconfig.
        The token must be one registered at start (`extra_users`)."""
        cp = self.control_plane
        return cp.write_kubeconfig(cp.workdir / f"{name}.kubeconfig", self.proxy.url, token)

    @property
    def bin_dir(self) -> Path:
        return self.control_plane.bin_dir

    def stop(self) -> None:
        if self.nodes:
            self.nodes.stop()
        if self.proxy:
            self.proxy.stop()
        self.control_plane.stop()
