"""A point-in-time view of a cluster (nodes, pods, PodDisruptionBudgets, PersistentVolumes and their
claims, and namespaces when their labels are needed) and how to read one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from .objects import (
    Namespace,
    Node,
    ObjectList,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    PodDisruptionBudget,
    collector_paused,
)

Listed = TypeVar("Listed", Node, Pod, PodDisruptionBudget, PersistentVolume, PersistentVolumeClaim, Namespace)


class SnapshotError(ValueError):
    """Input that is not a Kubernetes List of nodes, pods, PodDisruptionBudgets, PersistentVolumes,
    PersistentVolumeClaims and namespaces."""


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    nodes: list[Node] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    pdbs: list[PodDisruptionBudget] = field(default_factory=list)
    pvs: list[PersistentVolume] = field(default_factory=list)
    pvcs: list[PersistentVolumeClaim] = field(default_factory=list)
    namespaces: list[Namespace] = field(default_factory=list)  # listed only for the namespaceSelector

    def duplicates(self) -> list[str]:
        """What the snapshot holds twice: an object of one kind and name (which the API server never
        serves, so a List file was put together wrongly), or two nodes of one EC2 instance."""
        found = []
        for kind, objects in (("node", self.nodes), ("pod", self.pods), ("PodDisruptionBudget", self.pdbs),
                              ("PersistentVolume", self.pvs), ("PersistentVolumeClaim", self.pvcs),
                              ("namespace", self.namespaces)):
            seen: set[tuple[str, str]] = set()
            for obj in objects:
                key = (obj.metadata.namespace, obj.metadata.name)
                if key in seen:
                    found.append(f"{kind} {'/'.join(filter(None, key))} is listed twice")
                seen.add(key)
        owners: dict[str, str] = {}
        for node in self.nodes:
            instance = node.instance_id
            if instance and instance in owners and owners[instance] != node.metadata.name:
                found.append(f"nodes {owners[instance]} and {node.metadata.name} are both {instance}")
            owners.setdefault(instance, node.metadata.name)
        return found

    def first_of_each(self) -> ClusterSnapshot:
        """The snapshot with each object that is listed twice kept once (its first listing)."""
        return ClusterSnapshot(_first(self.nodes), _first(self.pods), _first(self.pdbs), _first(self.pvs),
                               _first(self.pvcs), _first(self.namespaces))


class _Kind(msgspec.Struct):
    kind: str = ""


class _Listing(ObjectList[Node | Pod | PodDisruptionBudget | PersistentVolume | PersistentVolumeClaim
                         | Namespace]):
    """A List holding only the six kinds, decoded in one pass (items are told apart by `kind`)."""

    kind: str = ""


_ITEM_TYPES: dict[str, type] = {"Node": Node, "Pod": Pod, "PodDisruptionBudget": PodDisruptionBudget,
                                 "PersistentVolume": PersistentVolume,
                                 "PersistentVolumeClaim": PersistentVolumeClaim, "Namespace": Namespace}
_decode_listing = msgspec.json.Decoder(_Listing).decode
_decode_list = msgspec.json.Decoder(ObjectList[msgspec.Raw]).decode
_decode_kind = msgspec.json.Decoder(_Kind).decode


def _first(objects: list[Listed]) -> list[Listed]:
    kept: dict[tuple[str, str], Listed] = {}
    for obj in objects:
        kept.setdefault((obj.metadata.namespace, obj.metadata.name), obj)
    return list(kept.values())


def read_list(data: bytes | str, source: str = "input") -> ClusterSnapshot:
    """Read the output of `kubectl get nodes,pods,pdb,pv,pvc,namespaces -A -o json`.

    Items of other kinds are ignored; anything that is not such a List, or holds an object twice,
    raises SnapshotError naming `source` and, where it can, the offending item.
    """
    try:
        snapshot = _read(data, source)
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"{source}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise SnapshotError(f"{source}: nested too deeply to be a Kubernetes List") from None
    problems = snapshot.duplicates()
    if problems:
        raise SnapshotError(f"{source}: {'; '.join(problems[:5])}"
                            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    return snapshot


def _read(data: bytes | str, source: str) -> ClusterSnapshot:
    with collector_paused():
        try:
            listing = _decode_listing(data)
        except msgspec.DecodeError:
            # Other kinds, or a fault: item by item, which skips the former and names the latter.
            return _read_items(data, source)
        _check_kind(listing.kind, source)
        buckets: dict[type, list] = {item_type: [] for item_type in _ITEM_TYPES.values()}
        for item in listing.items:
            buckets[type(item)].append(item)
        return ClusterSnapshot(nodes=buckets[Node], pods=buckets[Pod], pdbs=buckets[PodDisruptionBudget],
                               pvs=buckets[PersistentVolume], pvcs=buckets[PersistentVolumeClaim],
                               namespaces=buckets[Namespace])


def _read_items(data: bytes | str, source: str) -> ClusterSnapshot:
    try:
        _check_kind(_decode_kind(data).kind, source)
        raw_items = _decode_list(data).items
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"{source}: not a Kubernetes List: {exc}") from None
    buckets: dict[str, list] = {kind: [] for kind in _ITEM_TYPES}
    for index, raw in enumerate(raw_items):
        try:
            kind = _decode_kind(raw).kind
            item_type = _ITEM_TYPES.get(kind)
            if item_type is not None:
                buckets[kind].append(msgspec.json.decode(raw, type=item_type))
        except msgspec.DecodeError as exc:
            raise SnapshotError(f"{source}: item {index}: {exc}") from None
    return ClusterSnapshot(nodes=buckets["Node"], pods=buckets["Pod"], pdbs=buckets["PodDisruptionBudget"],
                           pvs=buckets["PersistentVolume"], pvcs=buckets["PersistentVolumeClaim"],
                           namespaces=buckets["Namespace"])


def _check_kind(kind: str, source: str) -> None:
    if kind != "List" and not kind.endswith("List"):
        raise SnapshotError(f"{source}: expected a Kubernetes List, got kind {kind!r}")
