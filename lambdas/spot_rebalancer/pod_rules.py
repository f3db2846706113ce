"""The facts about a pod that decide whether the product may take it off its node, shared by drains
and the rebalancer. Each consumer reads them in this order and decides what each means to it (a
drain evicts a pod of an excluded namespace when the instance goes anyway; the rebalancer never
moves one)."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

from .objects import Pod
from .scheduling.resources import is_terminal

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# The ecosystem's marks on pods that must not be disrupted voluntarily (key, the value that protects).
POD_GUARDS = (("karpenter.sh/do-not-disrupt", "true"),
              ("cluster-autoscaler.kubernetes.io/safe-to-evict", "false"))
# And on nodes that must not be emptied.
NODE_GUARDS = (("cluster-autoscaler.kubernetes.io/scale-down-disabled", "true"),
               ("karpenter.sh/do-not-disrupt", "true"))
# Controllers whose pods come back elsewhere when evicted: the only ones the rebalancer moves.
RECREATING_KINDS = frozenset({"ReplicaSet", "StatefulSet"})


def opts_out(value: str | None) -> bool:
    """Whether an opt-out annotation with this value (None: absent) protects its object: any value
    but "false" does, so that a value like "yes" protects rather than silently not."""
    return value is not None and value.strip().lower() != "false"


def guarded_by(annotations: Mapping[str, str], guards: tuple[tuple[str, str], ...] = POD_GUARDS) -> str:
    """The first guard annotation set on an object, as "key=value", or ""."""
    for key, value in guards:
        if annotations.get(key, "").strip().lower() == value:
            return f"{key}={value}"
    return ""


class PodRule(enum.StrEnum):
    MIRROR = "mirror"  # a static pod: the kubelet runs it from a file and recreates what the API removes
    FINISHED = "finished"  # Succeeded or Failed: holds nothing and nothing restarts it
    DAEMONSET = "daemonset"  # its DaemonSet exists and would put it back on the node
    TERMINATING = "terminating"  # already being deleted
    OPTED_OUT = "opted-out"  # the opt-out annotation, on the pod or its workload
    DO_NOT_DISRUPT = "do-not-disrupt"  # Karpenter's or the cluster autoscaler's mark (POD_GUARDS)
    EXCLUDED_NAMESPACE = "excluded-namespace"
    UNOWNED = "unowned"  # no controller (or a DaemonSet that is gone) would recreate it
    NOT_RECREATED = "not-recreated"  # its controller (a Job, a custom one) does not recreate it elsewhere


def pod_rules(pod: Pod, *, opt_out_annotation: str, excluded_namespaces: Collection[str],
              workload_annotations: Mapping[str, str] | None = None,
              daemonsets: Collection[tuple[str, str]] | None = None) -> tuple[PodRule, ...]:
    """Every rule that applies to the pod, in the order above.

    `workload_annotations` are its controller's (a ReplicaSet carries its Deployment's); `daemonsets`
    holds the (namespace, name) of the DaemonSets that exist, None meaning "assume every DaemonSet a
    pod names exists".
    """
    meta = pod.metadata
    controller = meta.controller
    rules: list[PodRule] = []
    if MIRROR_ANNOTATION in meta.annotations:
        rules.append(PodRule.MIRROR)
    if is_terminal(pod):
        rules.append(PodRule.FINISHED)
    orphan = False
    if controller is not None and controller.kind == "DaemonSet":
        orphan = daemonsets is not None and (meta.namespace, controller.name) not in daemonsets
        if not orphan:
            rules.append(PodRule.DAEMONSET)
    if meta.deletion_timestamp is not None:
        rules.append(PodRule.TERMINATING)
    if (opts_out(meta.annotations.get(opt_out_annotation))
            or (workload_annotations is not None and opts_out(workload_annotations.get(opt_out_annotation)))):
        rules.append(PodRule.OPTED_OUT)
    if guarded_by(meta.annotations):
        rules.append(PodRule.DO_NOT_DISRUPT)
    if meta.namespace in excluded_namespaces:
        rules.append(PodRule.EXCLUDED_NAMESPACE)
    if controller is None or orphan:
        rules.append(PodRule.UNOWNED)
    elif controller.kind not in RECREATING_KINDS and controller.kind != "DaemonSet":
        rules.append(PodRule.NOT_RECREATED)
    return tuple(rules)
