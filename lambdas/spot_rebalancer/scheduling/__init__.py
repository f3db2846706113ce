"""Pure scheduling predicates, one small module each, following kube-scheduler's plugin semantics.

Each module answers one question about a pod and a node from plain snapshot objects, with no I/O:
`node_affinity` (NodeAffinity), `taints` (TaintToleration), `resources` (NodeResourcesFit), `ports`
(NodePorts), `interpod` (required pod anti-affinity on the hostname topology), `volume_zone`
(VolumeBinding and VolumeZone for bound claims), `spread` (PodTopologySpread's filter),
`dynamic_resources` (DynamicResources, refused), `eligibility` (nodes we may target at all) and
`labels` (label selectors); `scoring` holds the default profile's score plugins. `capacity_type`
says spot or on-demand; `placement` memoises affinity and taint verdicts over a node fleet.
"""
