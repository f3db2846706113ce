"""Instances joining the fleet: a `Lifecycle` tag on each instance, a lifecycle label on its node,
and (opt-in) the launch lifecycle action completed once the node is Ready.

An instance is tagged when it starts running; its node is labelled once it has joined (which comes
later, so the event is retried a few times with a delay), and the scheduled sweep reconciles every
node whose label is missing or wrong. Nodes whose EKS or Karpenter capacity label already says the
lifecycle are labelled from it without asking EC2.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from .aws import AutoScaling, Ec2, Instance, LifecycleAction
from .config import Settings
from .events import WARM_POOL, Event, InstanceEvent, LifecycleHook
from .kube import KubeClient
from .objects import Node
from .ownership import managed_cluster, owned_by
from .results import HandleResult, Step, StepAction, StepOutcome
from .scheduling.capacity_type import UNKNOWN, capacity_type
from .targets import Miss, TargetResolver
from .telemetry import MetricsRecorder

log = logging.getLogger(__name__)

# How often, and how far apart, a running instance's node is looked for before the sweep takes over.
NODE_JOIN_ATTEMPTS = 5
NODE_JOIN_DELAY = timedelta(seconds=60)
# A launching instance's node is checked every 15 s for up to 10 minutes.
LAUNCH_READY_ATTEMPTS = 40
LAUNCH_READY_DELAY = timedelta(seconds=15)


def label_from_capacity_labels(node: Node) -> str:
    """SPOT/ON_DEMAND from the EKS or Karpenter capacity label alone, else UNKNOWN.

    Our own lifecycle label is left out (an empty key matches nothing): it is what is checked.
    """
    return capacity_type(node, lifecycle_label="")


def label_patch(node: Node, label_key: str, lifecycle: str) -> dict | None:
    """The node patch that sets the lifecycle label, or None when it is already right."""
    if node.metadata.labels.get(label_key) == lifecycle:
        return None
    return {"metadata": {"labels": {label_key: lifecycle}}}


class LifecycleTagger:
    def __init__(self, settings: Settings, ec2: Ec2, kube_for: Callable[[str], KubeClient],
                 metrics: MetricsRecorder, *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.ec2 = ec2
        self.targets = TargetResolver(settings, ec2, kube_for)
        self.metrics = metrics
        self.now = now

    def handle(self, event: Event, attempt: int = 0) -> HandleResult:
        """Tag a running instance, then label its node (or ask to be tried again later)."""
        result = HandleResult()
        if not isinstance(event, InstanceEvent):
            result.steps.append(Step(StepAction.IGNORE, reason=f"{event.kind} carries no instance"))
            return result
        managed = self.targets.instance(event.instance_id)
        if isinstance(managed, Miss):
            self.metrics.add("EventsIgnored", 1, ClusterName=self.settings.cluster_name)
            result.steps.append(Step(StepAction.IGNORE, reason=f"{event.instance_id}: {managed}"))
            return result
        self._tag(managed.instance, managed.cluster, result)
        target = self.targets.node(managed)
        if isinstance(target, Miss):
            if attempt + 1 < NODE_JOIN_ATTEMPTS:
                result.continue_at = self.now() + NODE_JOIN_DELAY
                result.steps.append(Step(StepAction.CONTINUE,
                                         reason=f"{managed.instance.instance_id}: node not joined yet"))
            return result
        self._label(target.kube, target.node, managed.instance.lifecycle, result)
        return result

    def reconcile(self, kube: KubeClient, cluster: str, nodes: list[Node]) -> list[Step]:
        """Label every node of the cluster whose lifecycle label is missing or wrong."""
        result = HandleResult()
        need_ec2: dict[str, Node] = {}
        for node in nodes:
            known = label_from_capacity_labels(node)
            if known != UNKNOWN:
                self._label(kube, node, known, result)
            elif node.instance_id:
                need_ec2[node.instance_id] = node
        instances = self.ec2.describe(need_ec2)
        for instance_id, node in need_ec2.items():
            instance = instances.get(instance_id)
            if instance is None or managed_cluster(instance.tags, cluster) != cluster:
                continue  # gone, or another cluster's: not ours to judge
            self._tag(instance, cluster, result)
            self._label(kube, node, instance.lifecycle, result)
        return result.steps

    def _tag(self, instance: Instance, cluster: str, result: HandleResult) -> None:
        key = self.settings.lifecycle_tag_key
        if instance.tags.get(key) == instance.lifecycle:
            return
        if not owned_by(instance.tags, cluster):
            # Shared or untagged: the cluster does not own it, and IAM lets the product tag only what
            # it owns. Its node is still ours to label.
            result.steps.append(Step(StepAction.SKIP,
                                     reason=f"{instance.instance_id}: tag {key}: not owned by {cluster}"))
            return
        if not self.settings.dry_run:
            self.ec2.tag([instance.instance_id], key, instance.lifecycle)
        result.steps.append(Step(StepAction.TAG,
                                 reason=f"{instance.instance_id}: {key}={instance.lifecycle}"))

    def _label(self, kube: KubeClient, node: Node, lifecycle: str, result: HandleResult) -> None:
        key = self.settings.lifecycle_label_key
        patch = label_patch(node, key, lifecycle)
        if patch is None:
            return
        previous = node.metadata.labels.get(key)
        if previous is not None:
            log.warning("node %s: label %s=%s contradicts its capacity (%s); correcting",
                        node.metadata.name, key, previous, lifecycle)
        if not self.settings.dry_run:
            kube.patch_node(node.metadata.name, patch)
        outcome = StepOutcome.CORRECTED if previous is not None else StepOutcome.ADDED
        result.steps.append(Step(StepAction.LABEL, node.metadata.name, reason=f"{key}={lifecycle}",
                                 outcome=outcome))


class LaunchCompleter:
    """Opt-in: complete an Auto Scaling launch lifecycle action once the instance's node is Ready,
    so the group counts the instance in service only when pods can land on it."""

    def __init__(self, settings: Settings, ec2: Ec2, autoscaling: AutoScaling,
                 kube_for: Callable[[str], KubeClient], *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.targets = TargetResolver(settings, ec2, kube_for)
        self.autoscaling = autoscaling
        self.now = now

    def handle(self, event: LifecycleHook, attempt: int = 0) -> HandleResult:
        result = HandleResult()
        if not self.settings.launch_lifecycle_hook:
            result.steps.append(Step(StepAction.IGNORE, reason="launch lifecycle completion is not enabled"))
            return result
        action = LifecycleAction(event.group, event.hook, event.token, event.instance_id)
        if event.destination == WARM_POOL:
            # Launched into the warm pool, it is stopped or hibernated there: no node will join.
            outcome = self.autoscaling.complete(action, "CONTINUE")
            result.steps.append(Step(StepAction.COMPLETE_LIFECYCLE,
                                     reason=f"{event.hook}: into the warm pool", outcome=outcome))
            return result
        target = self.targets.resolve(event.instance_id)
        if not isinstance(target, Miss) and target.node.ready:
            outcome = self.autoscaling.complete(action, "CONTINUE")
            result.steps.append(Step(StepAction.COMPLETE_LIFECYCLE, target.node.metadata.name,
                                     reason=event.hook, outcome=outcome))
        elif attempt + 1 >= LAUNCH_READY_ATTEMPTS:
            # Out of patience: let the instance in rather than have the group replace it blindly.
            result.steps.append(Step(StepAction.COMPLETE_LIFECYCLE, reason=f"{event.hook}: node never Ready",
                                     outcome=self.autoscaling.complete(action, "CONTINUE")))
        elif self.autoscaling.heartbeat(action):
            result.continue_at = self.now() + LAUNCH_READY_DELAY
            result.steps.append(Step(StepAction.CONTINUE, reason=f"{event.instance_id}: node not Ready yet"))
        else:
            result.steps.append(Step(StepAction.IGNORE,
                                     reason=f"{event.instance_id}: {event.hook} had already ended"))
        return result
