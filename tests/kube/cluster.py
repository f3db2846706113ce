"""The whole local test cluster: control plane, policy/v1 proxy and node simulator together."""

from __future__ import annotations

from pathlib import Path

from .api import Api
from .controlplane import ADMIN_TOKEN, ControlPlane, User
from .nodesim import NodeSimulator
from .proxy import PolicyProxy

# A user bound only to the product's ClusterRole (infra/rbac), for least-privilege tests.
PRODUCT_USER = User("spot-rebalancer", "spot-rebalancer-token", ("spot-rebalancer",))


class LocalCluster:
    def __init__(self) -> None:
        self.control_plane = ControlPlane(extra_users=[PRODUCT_USER])
        self.proxy: PolicyProxy | None = None
        self.nodes: NodeSimulator | None = None

    def start(self) -> LocalCluster:
        cp = self.control_plane.start()
        try:
            self.proxy = PolicyProxy(cp.server, cp.ca_file, str(cp.files["serving_cert"]),
                                     str(cp.files["serving_key"])).start()
            self.admin = Api(self.proxy.url, ADMIN_TOKEN, cp.ca_file)
            # The simulator talks to the apiserver directly: its traffic is not the product's.
            self.nodes = NodeSimulator(Api(cp.server, ADMIN_TOKEN, cp.ca_file)).start()
        except Exception:
            self.stop()
            raise
        self.kubeconfig = self.kubeconfig_for(ADMIN_TOKEN, "admin")
        return self

    def kubeconfig_for(self, token: str, name: str) -> Path:
        """A kubeconfig through the policy/v1 proxy (what the product and kubectl use)."""
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
