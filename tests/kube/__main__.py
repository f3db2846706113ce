"""`make cluster`: a local control plane with a few simulated nodes, in the foreground."""

from __future__ import annotations

import signal
import sys
import threading

from .cluster import LocalCluster


def main() -> int:
    cluster = LocalCluster().start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        for lifecycle in ("spot", "on-demand"):
            for arch in ("amd64", "arm64"):
                cluster.nodes.add_node(lifecycle=lifecycle, arch=arch)
        print(f"control plane ready in {cluster.control_plane.started_seconds:.1f}s")
        print(f"kubeconfig: {cluster.kubeconfig}")
        print(f"try: {cluster.bin_dir / 'kubectl'} --kubeconfig {cluster.kubeconfig} get nodes")
        print("Ctrl-C stops it.", flush=True)
        stop.wait()
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
