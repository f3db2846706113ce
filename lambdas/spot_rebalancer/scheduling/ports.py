"""Host ports (NodePorts' filter): two pods clash on a node when they bind the same port and
protocol on the same host IP, where 0.0.0.0 (the default) stands for every IP."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from ..objects import Pod

ANY_IP = "0.0.0.0"


class HostPort(NamedTuple):
    ip: str
    protocol: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}/{self.protocol}"


def host_ports(pod: Pod) -> tuple[HostPort, ...]:
    """The host ports the pod binds: its app containers' and its native sidecars' (init containers
    with `restartPolicy: Always`, which run as long as the pod), with the API's defaults applied."""
    spec = pod.spec
    containers = spec.containers
    if spec.init_containers:
        containers = [c for c in spec.init_containers if c.restart_policy == "Always"] + containers
    return tuple(HostPort(p.host_ip or ANY_IP, p.protocol or "TCP", p.host_port)
                 for c in containers for p in c.ports if p.host_port > 0)


def clashes(a: HostPort, b: HostPort) -> bool:
    return (a.port == b.port and a.protocol == b.protocol
            and (a.ip == b.ip or a.ip == ANY_IP or b.ip == ANY_IP))


def port_conflict(wanted: Iterable[HostPort], used: Iterable[HostPort]) -> HostPort | None:
    """The first wanted port that clashes with one already used on the node, if any."""
    used = list(used)
    for port in wanted:
        if any(clashes(port, other) for other in used):
            return port
    return None
