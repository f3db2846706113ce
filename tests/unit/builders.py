"""Small builders for API objects in tests: only what a test states differs from a plain, healthy
default (a Ready node with room; a Running, Ready pod of a ReplicaSet, an hour old)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from spot_rebalancer.objects import (
    Affinity,
    Container,
    ContainerPort,
    LabelSelector,
    LabelSelectorRequirement,
    Node,
    NodeAffinity,
    NodeCondition,
    NodeSelector,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    NodeSpec,
    NodeStatus,
    ObjectMeta,
    OwnerReference,
    PersistentVolumeClaimSource,
    Pod,
    PodAffinity,
    PodAffinityTerm,
    PodCondition,
    PodDisruptionBudget,
    PodDisruptionBudgetSpec,
    PodDisruptionBudgetStatus,
    PodSpec,
    PodStatus,
    PreferredSchedulingTerm,
    ResourceRequirements,
    Taint,
    Toleration,
    TopologySpreadConstraint,
    Volume,
)

CREATED = "2024-05-01T10:00:00Z"
DEFAULT_ALLOCATABLE = {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "100Gi", "pods": "110"}

SPOT_LABELS = {"eks.amazonaws.com/capacityType": "SPOT"}
ON_DEMAND_LABELS = {"eks.amazonaws.com/capacityType": "ON_DEMAND"}


def make_node(name: str, labels: Mapping[str, str] | None = None,
              allocatable: Mapping[str, str] | None = None, taints: Iterable[Taint] = (),
              ready: bool = True, unschedulable: bool = False, provider_id: str = "") -> Node:
    """A node; its hostname label is its name unless `labels` says otherwise."""
    return Node(
        metadata=ObjectMeta(name=name, uid=f"uid-{name}",
                            labels={"kubernetes.io/hostname": name, **(labels or {})}),
        spec=NodeSpec(unschedulable=unschedulable, taints=list(taints), provider_id=provider_id),
        status=NodeStatus(allocatable=dict(DEFAULT_ALLOCATABLE if allocatable is None else allocatable),
                          conditions=[NodeCondition(type="Ready", status="True" if ready else "False")]),
    )


def spot_node(name: str, **kwargs) -> Node:
    labels = {**SPOT_LABELS, **kwargs.pop("labels", {})}
    return make_node(name, labels=labels, **kwargs)


def on_demand_node(name: str, **kwargs) -> Node:
    labels = {**ON_DEMAND_LABELS, **kwargs.pop("labels", {})}
    return make_node(name, labels=labels, **kwargs)


def taint(key: str, effect: str = "NoSchedule", value: str = "") -> Taint:
    return Taint(key=key, effect=effect, value=value)


def toleration(key: str = "", operator: str = "Equal", value: str = "", effect: str = "") -> Toleration:
    return Toleration(key=key, operator=operator, value=value, effect=effect)


def requirement(key: str, operator: str, *values: str) -> NodeSelectorRequirement:
    return NodeSelectorRequirement(key=key, operator=operator, values=list(values))


def term(*expressions: NodeSelectorRequirement,
         fields: Iterable[NodeSelectorRequirement] = ()) -> NodeSelectorTerm:
    return NodeSelectorTerm(match_expressions=list(expressions), match_fields=list(fields))


def preference(weight: int, node_term: NodeSelectorTerm) -> PreferredSchedulingTerm:
    return PreferredSchedulingTerm(weight=weight, preference=node_term)


def prefer(weight: int, key: str, *values: str, operator: str = "In") -> PreferredSchedulingTerm:
    """A preferred term with one requirement (`key In values` by default)."""
    return preference(weight, term(requirement(key, operator, *values)))


PREFER_SPOT = prefer(100, "eks.amazonaws.com/capacityType", "SPOT")


def selector(match_labels: Mapping[str, str] | None = None,
             *expressions: tuple[str, str, list[str]]) -> LabelSelector:
    return LabelSelector(match_labels=dict(match_labels or {}),
                         match_expressions=[LabelSelectorRequirement(key=k, operator=o, values=list(v))
                                            for k, o, v in expressions])


def anti_affinity_term(match_labels: Mapping[str, str], topology_key: str = "kubernetes.io/hostname",
                       namespaces: Iterable[str] = (),
                       namespace_selector: LabelSelector | None = None) -> PodAffinityTerm:
    return PodAffinityTerm(label_selector=selector(match_labels), topology_key=topology_key,
                           namespaces=list(namespaces), namespace_selector=namespace_selector)


def container(requests: Mapping[str, str] | None = None, host_ports: Iterable[int | ContainerPort] = (),
              restart_policy: str = "", name: str = "app") -> Container:
    ports = [p if isinstance(p, ContainerPort) else ContainerPort(container_port=p, host_port=p)
             for p in host_ports]
    return Container(name=name, resources=ResourceRequirements(requests=dict(requests or {})),
                     ports=ports, restart_policy=restart_policy)


def make_pod(name: str, node: str = "", namespace: str = "default", *,
             labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None,
             requests: Mapping[str, str] | None = None, containers: Iterable[Container] | None = None,
             init_containers: Iterable[Container] = (), overhead: Mapping[str, str] | None = None,
             host_ports: Iterable[int] = (),
             owner: tuple[str, str] | None = ("ReplicaSet", "web-7d4b9"),
             preferred: Iterable[PreferredSchedulingTerm] = (),
             required: Iterable[NodeSelectorTerm] | None = None,
             node_selector: Mapping[str, str] | None = None,
             anti_affinity: Iterable[PodAffinityTerm] = (), pod_affinity: Iterable[PodAffinityTerm] = (),
             tolerations: Iterable[Toleration] = (), claims: Iterable[str] = (),
             spread: Iterable[TopologySpreadConstraint] = (),
             phase: str = "Running", ready: bool = True, created: str | None = CREATED,
             deleting: bool = False, priority: int | None = None, uid: str | None = None) -> Pod:
    """A pod; `requests` goes on its single app container unless `containers` is given, `owner` is
    its controller (kind, name) or None for a bare pod."""
    preferred, anti_affinity, pod_affinity = list(preferred), list(anti_affinity), list(pod_affinity)
    affinity = None
    if preferred or required is not None or anti_affinity or pod_affinity:
        affinity = Affinity(
            node_affinity=NodeAffinity(
                required_during_scheduling_ignored_during_execution=(
                    NodeSelector(node_selector_terms=list(required)) if required is not None else None),
                preferred_during_scheduling_ignored_during_execution=preferred),
            pod_anti_affinity=(PodAffinity(required_during_scheduling_ignored_during_execution=anti_affinity)
                               if anti_affinity else None),
            pod_affinity=(PodAffinity(required_during_scheduling_ignored_during_execution=pod_affinity)
                          if pod_affinity else None),
        )
    owners = [OwnerReference(kind=owner[0], name=owner[1], controller=True, uid=f"uid-{owner[1]}")] \
        if owner else []
    return Pod(
        metadata=ObjectMeta(name=name, namespace=namespace, uid=uid or f"uid-{namespace}-{name}",
                            labels=dict(labels or {}), annotations=dict(annotations or {}),
                            owner_references=owners, creation_timestamp=created,
                            deletion_timestamp="2024-05-01T11:00:00Z" if deleting else None),
        spec=PodSpec(
            node_name=node, node_selector=dict(node_selector or {}), affinity=affinity,
            tolerations=list(tolerations), topology_spread_constraints=list(spread),
            containers=list(containers) if containers is not None else [container(requests, host_ports)],
            init_containers=list(init_containers), overhead=dict(overhead or {}), priority=priority,
            volumes=[Volume(name=c, persistent_volume_claim=PersistentVolumeClaimSource(claim_name=c))
                     for c in claims]),
        status=PodStatus(phase=phase,
                         conditions=[PodCondition(type="Ready", status="True" if ready else "False")]),
    )


def make_pdb(name: str, match_labels: Mapping[str, str] | None, disruptions_allowed: int,
             namespace: str = "default") -> PodDisruptionBudget:
    """A PodDisruptionBudget; `match_labels=None` gives it no selector at all."""
    return PodDisruptionBudget(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=PodDisruptionBudgetSpec(selector=selector(match_labels) if match_labels is not None else None),
        status=PodDisruptionBudgetStatus(disruptions_allowed=disruptions_allowed),
    )


def write_list(directory: Path, nodes: Iterable[Node] = (), pods: Iterable[Pod] = (),
               pdbs: Iterable[PodDisruptionBudget] = (), namespaces: Mapping[str, Mapping[str, str]] = {}
               ) -> str:
    """A `kubectl get nodes,pods,pdb,namespaces -A -o json` List file of these objects (`namespaces`:
    each one's name and labels); its path."""
    items = ([{"kind": "Node", **msgspec.to_builtins(n)} for n in nodes]
             + [{"kind": "Pod", **msgspec.to_builtins(p)} for p in pods]
             + [{"kind": "PodDisruptionBudget", **msgspec.to_builtins(b)} for b in pdbs]
             + [{"kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}
                for name, labels in namespaces.items()])
    path = directory / "list.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return str(path)
