"""Bound volumes (VolumeBinding's and VolumeZone's filters for claims already bound).

A pod's PersistentVolumeClaims name their PersistentVolumes; a bound volume can only be used on a
node its `nodeAffinity` accepts (local volumes, CSI topology such as the EBS driver's zone key) and,
when it carries a zone or region label, only in that zone or region (values joined by "__" name
several). A claim the snapshot does not show bound to a volume it holds (a List without PVs and
PVCs, an unbound claim) falls back to the conservative rule: the pod moves only within the
`topology.kubernetes.io/zone` of the node it runs on, and not at all from a node without one.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..objects import Node, PersistentVolume, PersistentVolumeClaim, Pod
from .node_affinity import term_matches

ZONE_LABEL = "topology.kubernetes.io/zone"
# The labels VolumeZone compares between a volume and a node (the beta ones still on older volumes).
TOPOLOGY_LABELS = (ZONE_LABEL, "topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
                   "failure-domain.beta.kubernetes.io/region")

Volumes = Mapping[tuple[str, str], PersistentVolume]  # (namespace, claim name) -> its bound volume


def bound_volumes(pvs: list[PersistentVolume],
                  pvcs: list[PersistentVolumeClaim]) -> dict[tuple[str, str], PersistentVolume]:
    """Each claim's bound volume, by (namespace, claim name); unbound claims are left out."""
    by_name = {pv.metadata.name: pv for pv in pvs}
    return {(c.metadata.namespace, c.metadata.name): by_name[c.spec.volume_name]
            for c in pvcs if c.spec.volume_name in by_name}


def claims_volumes(pod: Pod) -> bool:
    return any(v.persistent_volume_claim is not None for v in pod.spec.volumes)


def volume_allows(volume: PersistentVolume, node: Node) -> bool:
    """Whether the node may use the bound volume: its required node affinity (terms ORed) and its
    zone and region labels (on a node that has any)."""
    labels = node.metadata.labels
    affinity = volume.spec.node_affinity
    terms = affinity.required.node_selector_terms if affinity is not None and affinity.required else None
    if terms is not None and not any(term_matches(t, labels, node.metadata.name) for t in terms):
        return False
    if not any(key in labels for key in TOPOLOGY_LABELS):
        return True  # VolumeZone passes a node with no topology label at all (a single-zone cluster)
    for key in TOPOLOGY_LABELS:
        wanted = volume.metadata.labels.get(key)
        if wanted is not None and labels.get(key) not in wanted.split("__"):
            return False
    return True


def zone_allows(pod: Pod, source: Node, target: Node, volumes: Volumes | None = None) -> bool:
    """Whether every claim of the pod can follow it from source to target."""
    for volume in pod.spec.volumes:
        claim = volume.persistent_volume_claim
        if claim is None:
            continue
        bound = (volumes or {}).get((pod.metadata.namespace, claim.claim_name))
        if bound is not None:
            if not volume_allows(bound, target):
                return False
            continue
        zone = source.metadata.labels.get(ZONE_LABEL)
        if zone is None or target.metadata.labels.get(ZONE_LABEL) != zone:
            return False
    return True
