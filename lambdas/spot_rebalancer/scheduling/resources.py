"""Resource requests and node room, counted the scheduler's way (NodeResourcesFit's filter).

CPU is in millicores, everything else in whole units. A pod needs the larger of its app containers'
sum and its heaviest init step, plus its overhead, plus one pod slot; a node's free room is its
allocatable minus what its non-terminal pods request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from operator import add, sub

from ..objects import Container, Node, Pod
from ..quantity import QuantityError, milli, units

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

_Extended = tuple[tuple[str, int], ...]
_Items = tuple[tuple[str, str | int | float], ...]  # a resource list's items, as given


def _combine(a: _Extended, b: _Extended, op: Callable[[int, int], int]) -> _Extended:
    """Extended resources name by name; a name missing on one side counts as zero there."""
    if not a and not b:
        return ()
    merged = dict(a)
    for name, value in b:
        merged[name] = op(merged.get(name, 0), value)
    return tuple(sorted(merged.items()))


@dataclass(frozen=True, slots=True)
class Resources:
    """A vector of resources: CPU millicores, memory and ephemeral storage bytes, pod slots, and
    extended resources (GPUs, hugepages, ...) as sorted (name, units) pairs."""

    cpu: int = 0
    memory: int = 0
    ephemeral_storage: int = 0
    pods: int = 0
    extended: _Extended = ()

    @staticmethod
    def from_list(resources: Mapping[str, str | int | float]) -> Resources:
        """From a Kubernetes resource list (`requests`, `allocatable`, `overhead`). Replicas repeat a
        few lists, so the answer is memoised per list."""
        return _from_items(tuple(resources.items()))

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory,
                         self.ephemeral_storage + other.ephemeral_storage, self.pods + other.pods,
                         _combine(self.extended, other.extended, add))

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory,
                         self.ephemeral_storage - other.ephemeral_storage, self.pods - other.pods,
                         _combine(self.extended, other.extended, sub))

    def max(self, other: Resources) -> Resources:
        """Resource by resource, the larger of the two."""
        return Resources(max(self.cpu, other.cpu), max(self.memory, other.memory),
                         max(self.ephemeral_storage, other.ephemeral_storage), max(self.pods, other.pods),
                         _combine(self.extended, other.extended, max))


@lru_cache(maxsize=4096)
def _from_items(items: _Items) -> Resources:
    cpu = memory = storage = pods = 0
    extended = []
    for name, quantity in items:
        try:
            if name == "cpu":
                cpu = milli(quantity)
            elif name == "memory":
                memory = units(quantity)
            elif name == "ephemeral-storage":
                storage = units(quantity)
            elif name == "pods":
                pods = units(quantity)
            else:
                extended.append((name, units(quantity)))
        except QuantityError as exc:
            raise QuantityError(f"{name}: {exc}") from None
    return Resources(cpu, memory, storage, pods, tuple(sorted(extended)))


ZERO = Resources()
ONE_POD = Resources(pods=1)


def pod_requests(pod: Pod) -> Resources:
    """What the scheduler reserves for the pod.

    Native sidecars (init containers with `restartPolicy: Always`) keep running, so they add to the
    app containers and to every init step after them; a regular init step needs its own requests on
    top of the sidecars started before it. The pod needs the larger of the app phase and its heaviest
    init step, plus overhead, plus one pod slot. Replicas ask alike, so the answer is memoised per
    set of container requests.
    """
    spec = pod.spec
    try:
        return _pod_requests(tuple(_items(c) for c in spec.containers),
                             tuple((_items(c), c.restart_policy == "Always") for c in spec.init_containers),
                             tuple(spec.overhead.items()))
    except QuantityError as exc:
        raise QuantityError(f"pod {pod.metadata.namespace}/{pod.metadata.name}: requests: {exc}") from None


def _items(container: Container) -> _Items:
    return tuple(container.resources.requests.items())


@lru_cache(maxsize=4096)
def _pod_requests(containers: tuple[_Items, ...], init_containers: tuple[tuple[_Items, bool], ...],
                  overhead: _Items) -> Resources:
    total = ZERO
    for items in containers:
        total = total + _from_items(items)
    sidecars = ZERO
    heaviest_init = ZERO
    for init_items, sidecar in init_containers:
        requests = _from_items(init_items)
        if sidecar:
            total = total + requests
            sidecars = sidecars + requests
            step = sidecars
        else:
            step = requests + sidecars
        heaviest_init = heaviest_init.max(step)
    if init_containers:
        total = total.max(heaviest_init)
    return total + _from_items(overhead) + ONE_POD


def node_allocatable(node: Node) -> Resources:
    try:
        return Resources.from_list(node.status.allocatable)
    except QuantityError as exc:
        raise QuantityError(f"node {node.metadata.name}: allocatable: {exc}") from None


def is_terminal(pod: Pod) -> bool:
    """Succeeded and Failed pods hold no resources (the scheduler does not see them)."""
    return pod.status.phase in TERMINAL_PHASES


def shortfall(requests: Resources, free: Resources) -> list[str]:
    """The resources the pod asks for (more than zero of) that the free room cannot cover."""
    short = []
    if requests.cpu > 0 and requests.cpu > free.cpu:
        short.append("cpu")
    if requests.memory > 0 and requests.memory > free.memory:
        short.append("memory")
    if requests.ephemeral_storage > 0 and requests.ephemeral_storage > free.ephemeral_storage:
        short.append("ephemeral-storage")
    if requests.pods > 0 and requests.pods > free.pods:
        short.append("pods")
    if requests.extended:
        available = dict(free.extended)
        short.extend(name for name, value in requests.extended
                     if value > 0 and value > available.get(name, 0))
    return short
