"""The scheduled work on one cluster: the sweep, the census and the rebalance cycle.

A cycle reads one snapshot, judges last cycle's moves against it, plans, evicts what the plan names
(once each: a PodDisruptionBudget that refuses now is asked again next cycle, with a fresh plan),
records the accepted moves and saves the history. The pure decisions live in `rebalance`; this
module only reads, writes and counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import msgspec

from .aws import AutoScaling, Ec2
from .config import Settings
from .drain_policy import node_revert_patch
from .evictor import EvictionResult, EvictionSchedule, Outcome, evict_all
from .interruption import Step
from .kube import KubeApiError, KubeClient
from .objects import Node, ObjectMeta
from .rebalance import (
    CapacityRequest,
    Census,
    Eviction,
    History,
    Plan,
    RebalanceOptions,
    Review,
    WorkloadRef,
    census,
    move_records,
    plan,
    review,
)
from .snapshot import ClusterSnapshot
from .state import HistoryConflict, HistoryStore
from .tagging import LifecycleTagger
from .telemetry import MetricsRecorder

log = logging.getLogger(__name__)

ASG_TAG = "aws:autoscaling:groupName"
EVENT_WORKERS = 8
# Saving the history loses a race only to an overlapping cycle; reading again settles it.
SAVE_ATTEMPTS = 3


class Controller(msgspec.Struct, kw_only=True):
    """A ReplicaSet or StatefulSet: only its annotations matter to the planner."""

    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)


CONTROLLER_PATHS = {"ReplicaSet": "/apis/apps/v1/replicasets", "StatefulSet": "/apis/apps/v1/statefulsets"}


def workload_annotations(kube: KubeClient, kinds: Iterable[str]) -> dict[WorkloadRef, dict[str, str]]:
    """Controllers' annotations (a ReplicaSet carries its Deployment's), for opt-outs and floors:
    of the given kinds only, read as metadata only."""
    found: dict[WorkloadRef, dict[str, str]] = {}
    for kind in sorted(set(kinds) & CONTROLLER_PATHS.keys()):
        for controller in kube.list_all(CONTROLLER_PATHS[kind], Controller, metadata_only=True):
            meta = controller.metadata
            found[WorkloadRef(meta.namespace, kind, meta.name)] = meta.annotations
    return found


def plan_with_controllers(snapshot: ClusterSnapshot, options: RebalanceOptions, history: History,
                          now: datetime,
                          read: Callable[[set[str]], Mapping[WorkloadRef, Mapping[str, str]]],
                          node_groups: Mapping[str, str] | None = None) -> Plan:
    """The plan `plan` makes with every controller's annotations, reading (`read(kinds)`) only the
    controllers of the kinds it moves.

    Workload opt-outs and on-demand floors only ever hold moves back: a plan that moves nothing
    without them moves nothing with them (a quiet cycle lists nodes, pods and budgets, nothing
    else), and those on pods a plan does not move change none of its moves. So plan, read the
    kinds it moves, plan again, until it moves no pod of a kind not read (a capacity request may
    stand for any kind)."""
    done: set[str] = set()
    workloads: dict[WorkloadRef, Mapping[str, str]] = {}
    while True:
        planned = plan(snapshot, options, history, now, workloads=workloads, node_groups=node_groups)
        kinds = {e.workload.kind for e in planned.evictions}
        if planned.capacity:
            kinds |= options.owner_kinds
        unread = kinds - done
        if not unread:
            return planned
        workloads.update(read(unread))
        done |= unread


@dataclass(frozen=True, slots=True)
class CycleResult:
    plan: Plan
    review: Review
    evicted: tuple[Eviction, ...] = ()  # accepted by the API
    refused: tuple[EvictionResult, ...] = ()  # blocked by a budget, gone or failed
    capacity_added: dict[str, int] = field(default_factory=dict)  # Auto Scaling group -> instances

    def summary(self) -> dict:
        return {"planned": len(self.plan.evictions), "evicted": len(self.evicted),
                "refused": {f"{r.namespace}/{r.name}": r.outcome.value for r in self.refused},
                "review": self.review.metrics, "skipped": self.plan.skip_counts(),
                "capacityAdded": self.capacity_added}


class Rebalancer:
    def __init__(self, settings: Settings, kube: KubeClient, metrics: MetricsRecorder,
                 store: HistoryStore | None, *, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 sleep: Callable[[float], None] = time.sleep, autoscaling: AutoScaling | None = None,
                 ec2: Ec2 | None = None, tagger: LifecycleTagger | None = None,
                 options: RebalanceOptions | None = None) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = metrics
        self.store = store
        self.now = now
        self.sleep = sleep
        self.autoscaling = autoscaling
        self.ec2 = ec2
        self.tagger = tagger
        self.options = options or RebalanceOptions.from_settings(settings)

    # --- the sweep ------------------------------------------------------------------------------

    def sweep(self, cluster: str, nodes: list[Node] | None = None) -> list[Step]:
        """Undo rebalance-recommendation actions past their TTL, then put right lifecycle labels,
        on `nodes` (as just listed) or on the nodes listed now."""
        steps: list[Step] = []
        now = self.now()
        nodes = self.kube.list_nodes() if nodes is None else nodes
        for node in nodes:
            patch = node_revert_patch(node, now, self.settings.recommendation_ttl_seconds)
            if patch is None:
                continue
            if self.settings.dry_run:
                steps.append(Step("revert", patch.node_name, reason="rebalance recommendation expired",
                                  outcome="dry-run"))
                continue
            try:
                self.kube.patch_node(patch.node_name, patch.body)
            except KubeApiError as exc:
                # 409: the node changed since it was listed; the next sweep sees it afresh.
                steps.append(Step("revert", patch.node_name, reason=exc.message, outcome="failed"))
                continue
            steps.append(Step("revert", patch.node_name, reason="rebalance recommendation expired",
                              outcome="reverted"))
        if self.tagger is not None:
            steps.extend(self.tagger.reconcile(self.kube, cluster, nodes))
        return steps

    def after_sweep(self, snapshot: ClusterSnapshot, steps: list[Step]) -> ClusterSnapshot:
        """The snapshot the sweep ran on, with its nodes read again only if the sweep changed one
        (a revert or a label the plan must see)."""
        changed = not self.settings.dry_run and any(
            step.action in ("revert", "label") and step.outcome not in ("failed", "dry-run")
            for step in steps)
        return replace(snapshot, nodes=self.kube.list_nodes()) if changed else snapshot

    # --- the census -----------------------------------------------------------------------------

    def census(self, cluster: str, snapshot: ClusterSnapshot | None = None) -> Census:
        """Count the fleet and publish it as metrics (dimensions as the dashboard addresses them)."""
        snapshot = snapshot or self.snapshot()
        result = census(snapshot, self.settings.lifecycle_label_key)
        for row in result.rows:
            dims = {"ClusterName": cluster, "CapacityType": row.capacity_type,
                    "Architecture": row.architecture}
            self.metrics.add("Nodes", row.nodes, "Count", **dims)
            self.metrics.add("AllocatableCpu", row.allocatable_cpu / 1000, "Count", **dims)
            self.metrics.add("AllocatableMemory", row.allocatable_memory, "Bytes", **dims)
            self.metrics.add("RequestedCpu", row.requested_cpu / 1000, "Count", **dims)
            self.metrics.add("RequestedMemory", row.requested_memory, "Bytes", **dims)
        if result.spot_cpu_share is not None:
            self.metrics.add("SpotShareRequestedCpu", result.spot_cpu_share * 100, "Percent",
                             ClusterName=cluster)
        self.metrics.add("MisplacedPods", result.misplaced_pods, "Count", ClusterName=cluster)
        return result

    # --- the cycle ------------------------------------------------------------------------------

    def snapshot(self) -> ClusterSnapshot:
        return self.kube.snapshot()

    def cycle(self, cluster: str, snapshot: ClusterSnapshot | None = None) -> CycleResult:
        snapshot = snapshot or self.snapshot()
        now = self.now()
        stored = self.store.load(cluster) if self.store is not None else None
        judged = review(stored.history if stored else History(), snapshot, now, self.options)
        self.metrics.add("MovesSucceeded", judged.metrics["MovesSucceeded"], "Count", ClusterName=cluster)
        self.metrics.add("MovesFailed", judged.metrics["MovesFailed"], "Count", ClusterName=cluster)
        for judgement in judged.judgements:
            log.info("move %s/%s: %s (%s; replacement %s on %s)", judgement.record.namespace,
                     judgement.record.pod, judgement.outcome, judgement.detail,
                     judgement.replacement or "-", judgement.node or "-")

        node_groups = self._node_groups(snapshot) if self.settings.capacity_nudge else None
        planned = plan_with_controllers(snapshot, self.options, judged.history, now,
                                        lambda kinds: workload_annotations(self.kube, kinds), node_groups)
        self.metrics.add("MovesPlanned", len(planned.evictions), "Count", ClusterName=cluster)
        if self.settings.dry_run:
            return CycleResult(planned, judged)

        evicted, refused = self._evict(snapshot, planned.evictions)
        self.metrics.add("PodsEvicted", len(evicted), "Count", ClusterName=cluster)
        self._record_events(evicted)
        if self.store is not None and stored is not None:
            moves = move_records(evicted, judged.history, now, snapshot)
            self._save(cluster, judged.history, stored.version, moves)
        added = self._nudge(planned.capacity)
        return CycleResult(planned, judged, tuple(evicted), tuple(refused), added)

    def _evict(self, snapshot: ClusterSnapshot, evictions: tuple[Eviction, ...]
               ) -> tuple[list[Eviction], list[EvictionResult]]:
        pods = {p.metadata.uid: p for p in snapshot.pods}
        # Asked once: `until` is already reached, so a 429 or a 5xx is reported, not retried.
        start = time.monotonic()
        schedule = EvictionSchedule(until=start, backoff=lambda _attempt: 0.0,
                                    clock=time.monotonic, sleep=self.sleep)
        results = evict_all(self.kube, [pods[e.uid] for e in evictions], lambda _pod: None, schedule)
        evicted = [e for e, r in zip(evictions, results, strict=True) if r.outcome is Outcome.ACCEPTED]
        refused = [r for r in results if r.outcome is not Outcome.ACCEPTED]
        for result in refused:
            log.info("eviction of %s/%s not done: %s %s", result.namespace, result.name,
                     result.outcome.value, result.message)
        return evicted, refused

    def _record_events(self, evicted: list[Eviction]) -> None:
        """Tell people why their pod went; an Event that cannot be written changes nothing."""
        def record(eviction: Eviction) -> None:
            try:
                self.kube.create_event(
                    namespace=eviction.namespace, kind="Pod", name=eviction.name, uid=eviction.uid,
                    reason="Evicted",
                    message=f"Evicted by spot-rebalancer: preferred node affinity better met on "
                            f"{eviction.to_node}")
            except KubeApiError as exc:
                log.warning("could not record an event on pod %s/%s: %s", eviction.namespace,
                            eviction.name, exc)

        if evicted:
            with ThreadPoolExecutor(max_workers=min(EVENT_WORKERS, len(evicted))) as pool:
                list(pool.map(record, evicted))

    def _save(self, cluster: str, history: History, version: int, records: tuple) -> None:
        """Save the reviewed history with this cycle's moves; on a conflict keep the other writer's
        history and add these moves to it, which loses nothing either cycle learned."""
        assert self.store is not None
        for _ in range(SAVE_ATTEMPTS):
            try:
                self.store.save(cluster, history.with_moves(records), version)
                return
            except HistoryConflict:
                latest = self.store.load(cluster)
                history, version = latest.history, latest.version
        raise HistoryConflict(f"history of {cluster} kept changing over {SAVE_ATTEMPTS} attempts")

    def _node_groups(self, snapshot: ClusterSnapshot) -> dict[str, str]:
        """Node name -> Auto Scaling group, from the instances' tags (only the nudge needs it)."""
        if self.ec2 is None:
            return {}
        by_instance = {n.instance_id: n.metadata.name for n in snapshot.nodes if n.instance_id}
        return {by_instance[i]: inst.tags[ASG_TAG] for i, inst in self.ec2.describe(by_instance).items()
                if ASG_TAG in inst.tags}

    def _nudge(self, requests: tuple[CapacityRequest, ...]) -> dict[str, int]:
        """Raise the desired capacity of the Auto Scaling groups the planner names, when enabled.

        EKS node group requests carry no group name to raise; they only show in the plan."""
        if not self.settings.capacity_nudge or self.autoscaling is None:
            return {}
        added = {}
        for request in requests:
            if request.group.kind != "asg":
                continue
            added[request.group.name] = self.autoscaling.raise_desired_capacity(request.group.name,
                                                                                request.nodes)
        return added
