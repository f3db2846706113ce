"""`make cluster`: the local control plane, the policy/v1 proxy and four simulated nodes (spot and
on-demand, amd64 and arm64), in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import sys

from .cluster import PRODUCT_USER, LocalCluster


def main() -> int:
    # SIGTERM stops it like Ctrl-C does, whenever it comes: during start-up too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cluster = LocalCluster()
    try:
        cluster.start()
        for lifecycle in ("spot", "on-demand"):
            for arch in ("amd64", "arm64"):
                cluster.nodes.add_node(lifecycle=lifecycle, arch=arch, lifecycle_label=True)
        cp = cluster.control_plane
        product = cluster.kubeconfig_for(PRODUCT_USER.token, PRODUCT_USER.name)
        print(f"control plane ready in {cp.started_seconds:.1f}s")
        print(f"kubeconfig: {cluster.kubeconfig}")
        print(f"apiserver: {cp.server} (direct); proxy presenting policy/v1: {cluster.proxy.url}")
        print(f"user {PRODUCT_USER.name} (group {PRODUCT_USER.groups[0]}, no bindings yet): {product}")
        print(f"try: {cluster.bin_dir / 'kubectl'} --kubeconfig {cluster.kubeconfig} get nodes")
        print("Ctrl-C stops it.", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
