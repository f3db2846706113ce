"""Light, typed views of the Kubernetes objects the product reads, decoded straight from raw JSON.

Only the fields the product uses are declared; msgspec skips the rest while decoding, which is what
keeps a 150,000-pod snapshot fast and small (the official client's models cost ~1.1 s and ~65 KB per
1,000 pods / per pod). Field names follow the API's JSON (camelCase, with the odd acronym spelled out).
Node, Pod and PodDisruptionBudget are tagged by `kind` (their class names are the API's kinds), so a
mixed List decodes in one pass; an object whose `kind` names another type does not decode as them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Generic, TypeVar

import msgspec
from msgspec import Meta, field

# What the API server's validation allows, so that an object it would have refused fails to decode
# (naming its field) instead of skewing a plan: priorities are int32, term weights 1-100, skews > 0.
Int32 = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
Weight = Annotated[int, Meta(ge=1, le=100)]
Positive = Annotated[int, Meta(ge=1)]


class _Obj(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, gc=False):
    """Base for API structs: camelCase JSON names, unknown fields ignored, defaults omitted.

    Never tracked by the garbage collector (`gc=False`): decoded API objects form no reference cycles,
    and a snapshot holds millions of them, which every full collection would otherwise walk.
    """


class OwnerReference(_Obj):
    kind: str
    name: str
    uid: str = ""
    controller: bool = False


class ObjectMeta(_Obj):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    owner_references: list[OwnerReference] = []

    @property
    def controller(self) -> OwnerReference | None:
        """The owner reference marked as controller, if any."""
        for ref in self.owner_references:
            if ref.controller:
                return ref
        return None


class ListMeta(_Obj):
    resource_version: str = ""
    continue_: str = field(default="", name="continue")


# --- scheduling vocabulary -------------------------------------------------------------------


class Taint(_Obj):
    key: str
    effect: str
    value: str = ""
    time_added: str | None = None


class Toleration(_Obj):
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""


class NodeSelectorRequirement(_Obj):
    key: str
    operator: str
    values: list[str] = []


class NodeSelectorTerm(_Obj):
    match_expressions: list[NodeSelectorRequirement] = []
    match_fields: list[NodeSelectorRequirement] = []


class NodeSelector(_Obj):
    node_selector_terms: list[NodeSelectorTerm] = []


class PreferredSchedulingTerm(_Obj):
    weight: Weight
    preference: NodeSelectorTerm


class NodeAffinity(_Obj):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = []


class LabelSelectorRequirement(_Obj):
    key: str
    operator: str
    values: list[str] = []


class LabelSelector(_Obj):
    match_labels: dict[str, str] = {}
    match_expressions: list[LabelSelectorRequirement] = []


class PodAffinityTerm(_Obj):
    label_selector: LabelSelector | None = None
    namespaces: list[str] = []
    namespace_selector: LabelSelector | None = None
    topology_key: str = ""


class WeightedPodAffinityTerm(_Obj):
    weight: Weight
    pod_affinity_term: PodAffinityTerm


class PodAffinity(_Obj):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = []
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = []


class Affinity(_Obj):
    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAffinity | None = None


class TopologySpreadConstraint(_Obj):
    topology_key: str = ""
    max_skew: Positive = 1
    when_unsatisfiable: str = "DoNotSchedule"
    label_selector: LabelSelector | None = None
    min_domains: Positive | None = None
    match_label_keys: list[str] = []
    node_affinity_policy: str = "Honor"
    node_taints_policy: str = "Ignore"


# --- pods --------------------------------------------------------------------------------------


class ResourceRequirements(_Obj):
    requests: dict[str, str | int | float] = {}


class ContainerPort(_Obj):
    container_port: int = 0
    host_port: int = 0
    host_ip: str = field(default="", name="hostIP")
    protocol: str = "TCP"


class Container(_Obj):
    name: str = ""
    image: str = ""
    resources: ResourceRequirements = field(default_factory=ResourceRequirements)
    ports: list[ContainerPort] = []
    restart_policy: str = ""  # "Always" marks a native sidecar init container


class PersistentVolumeClaimSource(_Obj):
    claim_name: str


class Volume(_Obj):
    name: str = ""
    persistent_volume_claim: PersistentVolumeClaimSource | None = None
    empty_dir: dict | None = None


class PodResourceClaim(_Obj):
    name: str = ""


class PodSpec(_Obj):
    node_name: str = ""
    node_selector: dict[str, str] = {}
    affinity: Affinity | None = None
    tolerations: list[Toleration] = []
    topology_spread_constraints: list[TopologySpreadConstraint] = []
    containers: list[Container] = []
    init_containers: list[Container] = []
    overhead: dict[str, str | int | float] = {}
    priority: Int32 | None = None
    priority_class_name: str = ""
    termination_grace_period_seconds: int | None = None
    volumes: list[Volume] = []
    scheduler_name: str = ""
    resources: ResourceRequirements | None = None  # pod-level requests (1.34+: on by default)
    resource_claims: list[PodResourceClaim] = []  # dynamic resource allocation


class PodCondition(_Obj):
    type: str
    status: str
    reason: str = ""


class ContainerStatus(_Obj):
    """What the kubelet reports of a container's resources, which differ from the spec while an
    in-place resize is under way."""

    name: str = ""
    allocated_resources: dict[str, str | int | float] = {}
    resources: ResourceRequirements | None = None


class PodStatus(_Obj):
    phase: str = ""
    conditions: list[PodCondition] = []
    nominated_node_name: str = ""
    container_statuses: list[ContainerStatus] = []
    init_container_statuses: list[ContainerStatus] = []
    resize: str = ""  # before 1.33: "Infeasible" etc.; 1.33+ says it with conditions


class Pod(_Obj, tag_field="kind", tag=True):
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: PodSpec = field(default_factory=PodSpec)
    status: PodStatus = field(default_factory=PodStatus)

    @property
    def ready(self) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)


# --- nodes -------------------------------------------------------------------------------------


class NodeSpec(_Obj):
    unschedulable: bool = False
    taints: list[Taint] = []
    provider_id: str = field(default="", name="providerID")


class NodeCondition(_Obj):
    type: str
    status: str


class NodeSystemInfo(_Obj):
    boot_id: str = field(default="", name="bootID")  # changes each time the machine starts


class ContainerImage(_Obj):
    names: list[str] = []
    size_bytes: int = 0


class NodeStatus(_Obj):
    allocatable: dict[str, str | int | float] = {}
    conditions: list[NodeCondition] = []
    node_info: NodeSystemInfo = field(default_factory=NodeSystemInfo)
    images: list[ContainerImage] = []  # what ImageLocality scores by


class Node(_Obj, tag_field="kind", tag=True):
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: NodeSpec = field(default_factory=NodeSpec)
    status: NodeStatus = field(default_factory=NodeStatus)

    @property
    def ready(self) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)

    @property
    def instance_id(self) -> str:
        """The EC2 instance id from `aws:///<az>/<instance-id>`, or "" for other providers."""
        provider_id = self.spec.provider_id
        if not provider_id.startswith("aws://"):
            return ""
        return provider_id.rsplit("/", 1)[-1]


# --- disruption budgets --------------------------------------------------------------------------


class PodDisruptionBudgetSpec(_Obj):
    selector: LabelSelector | None = None


class PodDisruptionBudgetStatus(_Obj):
    disruptions_allowed: int = 0
    current_healthy: int = 0
    desired_healthy: int = 0


class PodDisruptionBudget(_Obj, tag_field="kind", tag=True):
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: PodDisruptionBudgetSpec = field(default_factory=PodDisruptionBudgetSpec)
    status: PodDisruptionBudgetStatus = field(default_factory=PodDisruptionBudgetStatus)


# --- volumes -----------------------------------------------------------------------------------


class PersistentVolumeClaimSpec(_Obj):
    volume_name: str = ""  # the bound PersistentVolume ("" while unbound)


class PersistentVolumeClaim(_Obj, tag_field="kind", tag=True):
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: PersistentVolumeClaimSpec = field(default_factory=PersistentVolumeClaimSpec)


class VolumeNodeAffinity(_Obj):
    required: NodeSelector | None = None


class PersistentVolumeSpec(_Obj):
    node_affinity: VolumeNodeAffinity | None = None  # local volumes, CSI topology (EBS: its zone)


class PersistentVolume(_Obj, tag_field="kind", tag=True):
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: PersistentVolumeSpec = field(default_factory=PersistentVolumeSpec)


class PartialObjectMetadata(_Obj):
    """An item of a metadata-only list (its `kind` is PartialObjectMetadata, not the object's)."""

    metadata: ObjectMeta = field(default_factory=ObjectMeta)


# --- namespaces --------------------------------------------------------------------------------


class Namespace(_Obj, tag_field="kind", tag=True):
    """Only its labels matter (the rebalancer's namespaceSelector reads them)."""

    metadata: ObjectMeta = field(default_factory=ObjectMeta)


# --- lists -------------------------------------------------------------------------------------

T = TypeVar("T")


class ObjectList(_Obj, Generic[T]):
    """One page of a list response (`PodList`, `NodeList`, ...)."""

    metadata: ListMeta = field(default_factory=ListMeta)
    items: list[T] = []


@contextmanager
def collector_paused() -> Iterator[None]:
    """Decoding builds millions of containers and no cycles: a collection meanwhile would only walk
    what was just built, again and again (it tripled the decode time of 150,000 pods)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
