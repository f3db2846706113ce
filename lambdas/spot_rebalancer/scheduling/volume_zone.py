"""Volume zones, conservatively (VolumeZone's filter without PersistentVolumes).

A bound zonal volume (EBS) can only attach in its zone. A snapshot has no PersistentVolumes, so a
pod with any PersistentVolumeClaim is only allowed to move to a node in the same
`topology.kubernetes.io/zone` as the node it runs on now, and not at all when that node has no zone
label. This refuses some moves the scheduler would allow (regional or unbound volumes) but never
plans one that it would refuse for the volume's zone.
"""

from __future__ import annotations

from ..objects import Node, Pod

ZONE_LABEL = "topology.kubernetes.io/zone"


def claims_volumes(pod: Pod) -> bool:
    return any(v.persistent_volume_claim is not None for v in pod.spec.volumes)


def zone_allows(pod: Pod, source: Node, target: Node) -> bool:
    if not claims_volumes(pod):
        return True
    zone = source.metadata.labels.get(ZONE_LABEL)
    return zone is not None and target.metadata.labels.get(ZONE_LABEL) == zone
