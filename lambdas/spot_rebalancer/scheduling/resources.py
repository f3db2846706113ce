"""Resource requests and node room, counted the scheduler's way (NodeResourcesFit's filter).

CPU is in millicores, everything else in whole units. A pod needs the larger of its app containers'
sum and its heaviest init step (or its pod-level requests), plus its overhead, plus one pod slot; a
node's free room is its allocatable minus what its non-terminal pods hold, counting in-place resizes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import add, sub

from ..objects import Container, ContainerStatus, Node, Pod
from ..quantity import QuantityError, milli, units

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
HUGEPAGES_PREFIX = "hugepages-"

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

    @staticmethod
    def total(many: Sequence[Resources]) -> Resources:
        """The sum of many (what adding them one by one to ZERO gives), field by field in one pass."""
        extended: dict[str, int] = {}
        for resources in many:
            for name, value in resources.extended:
                extended[name] = extended.get(name, 0) + value
        return Resources(sum(r.cpu for r in many), sum(r.memory for r in many),
                         sum(r.ephemeral_storage for r in many), sum(r.pods for r in many),
                         tuple(sorted(extended.items())))

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
    """What the scheduler reserves for a new pod of this spec (a replacement, say).

    Native sidecars (init containers with `restartPolicy: Always`) keep running, so they add to the
    app containers and to every init step after them; a regular init step needs its own requests on
    top of the sidecars started before it. The pod needs the larger of the app phase and its heaviest
    init step; pod-level requests (`spec.resources`) replace that for CPU, memory and hugepages; then
    overhead, plus one pod slot. Replicas ask alike, so the answer is memoised per set of requests.
    """
    spec = pod.spec
    try:
        if len(spec.containers) == 1 and not spec.init_containers and spec.resources is None \
                and not spec.overhead:
            return _one_container(_items(spec.containers[0]))  # the common case, kept cheap
        return _pod_requests(_aggregate(tuple(_items(c) for c in spec.containers), _init_items(pod)),
                             _pod_level(pod), tuple(spec.overhead.items()))
    except QuantityError as exc:
        raise QuantityError(f"pod {pod.metadata.namespace}/{pod.metadata.name}: requests: {exc}") from None


def held_requests(pod: Pod) -> Resources:
    """What the scheduler counts for a pod already bound to a node.

    With in-place resize (1.33+) that is, resource by resource, the largest of the spec's, the
    allocated (`allocatedResources`) and the actuated (`resources`) aggregates of its containers'
    statuses; while a resize is infeasible, the spec is left out. While the statuses say what the
    spec says (always, outside a resize) it is the spec's.
    """
    status = pod.status
    if not _resizing(pod):
        return pod_requests(pod)
    spec = pod.spec
    by_name = {s.name: s for s in (*status.init_container_statuses, *status.container_statuses)}
    infeasible = resize_infeasible(pod)
    try:
        aggregates = []
        for pick in (_allocated_items, _actuated_items):
            containers = tuple(pick(c, by_name.get(c.name), infeasible) for c in spec.containers)
            inits = tuple((pick(c, by_name.get(c.name), infeasible), c.restart_policy == "Always")
                          for c in spec.init_containers)
            aggregates.append(_aggregate(containers, inits))
        need = aggregates[0].max(aggregates[1])
        if not infeasible:
            need = need.max(_aggregate(tuple(_items(c) for c in spec.containers), _init_items(pod)))
        return _pod_requests(need, _pod_level(pod), tuple(spec.overhead.items()))
    except QuantityError as exc:
        raise QuantityError(f"pod {pod.metadata.namespace}/{pod.metadata.name}: requests: {exc}") from None


def _resizing(pod: Pod) -> bool:
    """Whether a container's status reports requests other than its spec's (compared as given: a
    respelled quantity only costs the longer way)."""
    status = pod.status
    statuses = [s for s in status.container_statuses if s.allocated_resources or s.resources is not None]
    if status.init_container_statuses:
        statuses += [s for s in status.init_container_statuses
                     if s.allocated_resources or s.resources is not None]
    if not statuses:
        return False
    spec = pod.spec
    requested = {c.name: c.resources.requests for c in (*spec.init_containers, *spec.containers)}
    for container_status in statuses:
        own = requested.get(container_status.name)
        if container_status.allocated_resources and container_status.allocated_resources != own:
            return True
        actuated = container_status.resources
        if actuated is not None and actuated.requests and actuated.requests != own:
            return True
    return False


def scoring_requests(pod: Pod, requests: Resources) -> tuple[int, int]:
    """CPU millicores and memory bytes as NodeResourcesFit's score counts a pod whose requests are
    `requests`: a container (or init container) that requests no CPU counts 100m, one that requests
    no memory 200Mi; pod-level requests and overhead apply as for `pod_requests`."""
    spec = pod.spec
    if spec.resources is None and not spec.init_containers:
        for container in spec.containers:
            asked = container.resources.requests
            if "cpu" not in asked or "memory" not in asked:
                break
        else:
            return requests.cpu, requests.memory  # nothing to default: the common case, kept cheap
    try:
        containers = tuple(_defaulted(_items(c)) for c in spec.containers)
        inits = tuple((_defaulted(items), sidecar) for items, sidecar in _init_items(pod))
        need = _pod_requests(_aggregate(containers, inits), _pod_level(pod), tuple(spec.overhead.items()))
    except QuantityError as exc:
        raise QuantityError(f"pod {pod.metadata.namespace}/{pod.metadata.name}: requests: {exc}") from None
    return need.cpu, need.memory


_DEFAULT_CPU = ("cpu", "100m")
_DEFAULT_MEMORY = ("memory", 200 * 1024 * 1024)


def _defaulted(items: _Items) -> _Items:
    names = {name for name, _ in items}
    return (items + ((_DEFAULT_CPU,) if "cpu" not in names else ())
            + ((_DEFAULT_MEMORY,) if "memory" not in names else ()))


def resize_infeasible(pod: Pod) -> bool:
    """Whether the kubelet refused the pod's in-place resize: the PodResizePending condition's
    reason (1.33+) or the older `status.resize`."""
    for condition in pod.status.conditions:
        if condition.type == "PodResizePending":
            return condition.reason == "Infeasible"
    return pod.status.resize == "Infeasible"


def _allocated_items(container: Container, status: ContainerStatus | None, infeasible: bool) -> _Items:
    if status is not None and status.allocated_resources:
        return tuple(status.allocated_resources.items())
    return () if infeasible else _items(container)


def _actuated_items(container: Container, status: ContainerStatus | None, infeasible: bool) -> _Items:
    if status is not None and status.resources is not None and status.resources.requests:
        return tuple(status.resources.requests.items())
    return _allocated_items(container, status, infeasible)


def _items(container: Container) -> _Items:
    return tuple(container.resources.requests.items())


def _init_items(pod: Pod) -> tuple[tuple[_Items, bool], ...]:
    return tuple((_items(c), c.restart_policy == "Always") for c in pod.spec.init_containers)


def _pod_level(pod: Pod) -> _Items:
    resources = pod.spec.resources
    return tuple(resources.requests.items()) if resources is not None else ()


@lru_cache(maxsize=4096)
def _aggregate(containers: tuple[_Items, ...], init_containers: tuple[tuple[_Items, bool], ...]) -> Resources:
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
    return total


@lru_cache(maxsize=4096)
def _one_container(items: _Items) -> Resources:
    return _pod_requests(_aggregate((items,), ()), (), ())


@lru_cache(maxsize=4096)
def _pod_requests(containers: Resources, pod_level: _Items, overhead: _Items) -> Resources:
    total = containers
    if pod_level:
        total = _with_pod_level(total, _from_items(pod_level), {name for name, _ in pod_level})
    return total + _from_items(overhead) + ONE_POD


def _with_pod_level(total: Resources, pod_level: Resources, named: set[str]) -> Resources:
    """Pod-level requests replace the containers' sum for the resources they name among CPU, memory
    and hugepages; other names there (ephemeral storage, say) are ignored, as by the scheduler."""
    extended = dict(total.extended)
    extended.update((name, value) for name, value in pod_level.extended if name.startswith(HUGEPAGES_PREFIX))
    return Resources(pod_level.cpu if "cpu" in named else total.cpu,
                     pod_level.memory if "memory" in named else total.memory,
                     total.ephemeral_storage, total.pods, tuple(sorted(extended.items())))


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
