"""The scheduled work on one cluster, a tick: the sweep, the census and the rebalance cycle.

A tick reads one snapshot; the sweep undoes what drains did once it is due (a recommendation past
its TTL, an instance that runs again) and puts lifecycle labels right; the census counts the fleet;
the cycle judges last cycle's moves against the snapshot, plans, evicts what the plan names (once
each: a PodDisruptionBudget that refuses now is asked again next cycle, with a fresh plan), records
the accepted moves and saves the history. The pure decisions live in `rebalance`; this module only
reads, writes and counts.

Given time (`until`, as the schedule function is), a cycle moves in waves: after each wave it polls
the moved pods' namespaces until every replacement is judged (Ready where predicted, or failed),
then judges them and plans the next wave from a fresh snapshot. It ends when a wave moves nothing,
the cycle cap is reached or the time is up (the replacements still coming are judged next cycle).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from .aws import AutoScaling, Ec2
from .config import Settings
from .drain_policy import node_revert_patch
from .evictions import Evictions, EvictionSchedule, Source
from .kube import KubeApiError, KubeClient
from .notices import cycle_notice
from .notifier import Notifier
from .objects import Node, PartialObjectMetadata, Pod
from .ownership import manages_group
from .pod_rules import RECREATING_KINDS
from .pricing import PriceList
from .rebalance import (
    CapacityRequest,
    Census,
    Eviction,
    History,
    MoveRecord,
    Outcome,
    Plan,
    PriceBook,
    Review,
    SkipCode,
    WorkloadRef,
    census,
    fleet_cost,
    move_records,
    plan,
    review,
)
from .rebalance.budgets import budgets_caught_up
from .rebalance.cost import INSTANCE_TYPE_LABEL
from .rebalance.scale_in import EmptiedNode, newly_emptied, settled
from .rebalance.windows import open_window
from .results import EvictionOutcome, EvictionResult, Step, StepAction, StepOutcome
from .snapshot import ClusterSnapshot
from .state import HistoryConflict, HistoryStore, StoredHistory
from .status_checks import StatusChecks
from .tagging import LifecycleTagger
from .telemetry import MetricsRecorder

log = logging.getLogger(__name__)

ASG_TAG = "aws:autoscaling:groupName"
# Saving the history loses a race only to an overlapping cycle; reading again settles it.
SAVE_ATTEMPTS = 3
# Between polls for a wave's replacements: the simulator starts pods in about a second, EKS in a few.
WAVE_POLL_SECONDS = 2.0


CONTROLLER_PATHS = {"ReplicaSet": "/apis/apps/v1/replicasets", "StatefulSet": "/apis/apps/v1/statefulsets"}


def workload_annotations(kube: KubeClient, kinds: Iterable[str]) -> dict[WorkloadRef, dict[str, str]]:
    """Controllers' annotations (a ReplicaSet carries its Deployment's), for opt-outs and floors:
    of the given kinds only, read as metadata only."""
    found: dict[WorkloadRef, dict[str, str]] = {}
    for kind in sorted(set(kinds) & CONTROLLER_PATHS.keys()):
        for controller in kube.list_all(CONTROLLER_PATHS[kind], PartialObjectMetadata,
                                        metadata_only=True):
            meta = controller.metadata
            found[WorkloadRef(meta.namespace, kind, meta.name)] = meta.annotations
    return found


def plan_with_controllers(snapshot: ClusterSnapshot, settings: Settings, history: History,
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
        planned = plan(snapshot, settings, history, now, workloads=workloads, node_groups=node_groups)
        kinds = {e.workload.kind for e in planned.evictions}
        if planned.capacity:
            kinds |= RECREATING_KINDS
        unread = kinds - done
        if not unread:
            return planned
        workloads.update(read(unread))
        done |= unread


class ClusterView(Protocol):
    """What a tick reads of its cluster."""

    def snapshot(self) -> ClusterSnapshot: ...

    def list_nodes(self) -> list[Node]: ...

    def workload_annotations(self, kinds: Set[str]) -> Mapping[WorkloadRef, Mapping[str, str]]: ...


class LiveCluster:
    """The cluster as its API serves it; its namespaces are read only when `namespaces` says so."""

    def __init__(self, kube: KubeClient, *, namespaces: bool = False) -> None:
        self._kube = kube
        self._namespaces = namespaces

    def snapshot(self) -> ClusterSnapshot:
        return self._kube.snapshot(namespaces=self._namespaces)

    def list_nodes(self) -> list[Node]:
        return self._kube.list_nodes()

    def workload_annotations(self, kinds: Set[str]) -> Mapping[WorkloadRef, Mapping[str, str]]:
        return workload_annotations(self._kube, kinds)


class SnapshotView:
    """A cluster as one `kubectl get -o json` List saw it: it holds no controllers, so only the pods'
    own annotations count."""

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self._snapshot = snapshot

    def snapshot(self) -> ClusterSnapshot:
        return self._snapshot

    def list_nodes(self) -> list[Node]:
        return self._snapshot.nodes

    def workload_annotations(self, kinds: Set[str]) -> Mapping[WorkloadRef, Mapping[str, str]]:
        return {}


@dataclass(frozen=True, slots=True)
class SweepResult:
    steps: list[Step]
    nodes_changed: bool  # a revert or a label the plan must see


@dataclass(frozen=True, slots=True)
class Wave:
    """One plan of a cycle and what came of it."""

    plan: Plan
    review: Review  # of the moves before it, on the snapshot it was planned from
    evicted: tuple[Eviction, ...] = ()  # accepted by the API
    refused: tuple[EvictionResult, ...] = ()  # blocked by a budget, gone or failed
    emptied: tuple[str, ...] = ()  # on-demand nodes its moves left with only daemons
    emptied_cost_per_hour: float | None = None  # what they cost, when they could be priced
    seconds_to_ready: float | None = None  # until every replacement was judged; None: not waited for

    def summary(self) -> dict[str, object]:
        return {"planned": len(self.plan.evictions), "evicted": len(self.evicted),
                "refused": len(self.refused), "emptying": list(self.plan.emptying),
                "emptied": list(self.emptied),
                "secondsToReady": None if self.seconds_to_ready is None else round(self.seconds_to_ready, 1)}


class CycleEnd(enum.StrEnum):
    ONE_WAVE = "one-wave"  # no time to wait was given (a dry run, the CLI): one wave only
    NOTHING_LEFT = "nothing-left"  # the last wave moved nothing
    CYCLE_CAP = "cycle-cap"
    TIME_UP = "time-up"  # replacements were still coming when the cycle's time ran out
    WINDOW_CLOSED = "window-closed"


@dataclass(frozen=True, slots=True)
class CycleResult:
    waves: tuple[Wave, ...]
    ended: CycleEnd = CycleEnd.ONE_WAVE
    capacity_added: dict[str, int] = field(default_factory=dict)  # Auto Scaling group -> instances
    scaled_in: dict[str, StepOutcome] = field(default_factory=dict)  # node -> what its scale-in did

    @property
    def plan(self) -> Plan:
        """The first wave's plan: what the snapshot the cycle started from called for."""
        return self.waves[0].plan

    @property
    def review(self) -> Review:
        """The judgement of the moves of earlier cycles."""
        return self.waves[0].review

    @property
    def window_open(self) -> bool:  # False: outside every rebalance window, nothing was planned or moved
        return self.ended is not CycleEnd.WINDOW_CLOSED

    @property
    def evicted(self) -> tuple[Eviction, ...]:
        return tuple(e for wave in self.waves for e in wave.evicted)

    @property
    def refused(self) -> tuple[EvictionResult, ...]:
        return tuple(r for wave in self.waves for r in wave.refused)

    @property
    def emptied(self) -> tuple[str, ...]:
        return tuple(node for wave in self.waves for node in wave.emptied)

    @property
    def emptied_cost_per_hour(self) -> float | None:
        costs = [w.emptied_cost_per_hour for w in self.waves if w.emptied_cost_per_hour is not None]
        return sum(costs) if costs else None

    def summary(self) -> dict[str, object]:
        return {"windowOpen": self.window_open, "planned": sum(len(w.plan.evictions) for w in self.waves),
                "evicted": len(self.evicted),
                "refused": {f"{r.namespace}/{r.name}": r.outcome.value for r in self.refused},
                "review": self.review.metrics, "skipped": self.waves[-1].plan.skip_counts(),
                "capacityAdded": self.capacity_added, "emptied": list(self.emptied),
                "scaledIn": {node: str(outcome) for node, outcome in self.scaled_in.items()},
                "waves": [w.summary() for w in self.waves], "ended": str(self.ended)}


@dataclass(frozen=True, slots=True)
class TickResult:
    cluster: str
    dry_run: bool
    sweep: SweepResult
    census: Census
    cycle: CycleResult
    status_checks: tuple[Step, ...] = ()  # the drains queued for impaired instances (instanceStatusChecks)

    def summary(self) -> dict[str, object]:
        return {"cluster": self.cluster, "dryRun": self.dry_run,
                "sweep": [step.as_json() for step in self.sweep.steps],
                "statusChecks": [step.as_json() for step in self.status_checks],
                "misplacedPods": self.census.misplaced_pods, **self.cycle.summary()}


class Rebalancer:
    """The schedule function's work on its one cluster (settings.cluster_name). Without a Kubernetes
    client (`kube` None) it reads `view` and only plans: the settings must be a dry run."""

    def __init__(self, settings: Settings, kube: KubeClient | None, metrics: MetricsRecorder,
                 store: HistoryStore | None, *, view: ClusterView | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 sleep: Callable[[float], None] = time.sleep, autoscaling: AutoScaling | None = None,
                 ec2: Ec2 | None = None, tagger: LifecycleTagger | None = None,
                 prices: PriceList | None = None, clock: Callable[[], float] = time.monotonic,
                 status_checks: StatusChecks | None = None, notifier: Notifier | None = None) -> None:
        if view is None:
            if kube is None:
                raise ValueError("a rebalancer needs a Kubernetes client or a view of the cluster")
            view = LiveCluster(kube, namespaces=bool(settings.namespace_selector))
        if kube is None and not settings.dry_run:
            raise ValueError("a rebalancer without a Kubernetes client can only plan (a dry run)")
        self.settings = settings
        self.cluster = settings.cluster_name
        self.kube = kube
        self.view = view
        self.metrics = metrics
        self.store = store
        self.now = now
        self.sleep = sleep
        self.clock = clock  # what a cycle's `until` is measured on
        self.autoscaling = autoscaling
        self.ec2 = ec2
        self.tagger = tagger
        self.prices = prices
        self.status_checks = status_checks
        self.notifier = notifier

    def tick(self, until: float | None = None) -> TickResult:
        """One period's work: snapshot, sweep, the drains of impaired instances queued (with a
        StatusChecks), census, cycle (in waves until `until`, on `clock`); all on one snapshot, its
        nodes read again only if the sweep changed one."""
        snapshot = self._without_duplicates(self.view.snapshot())
        swept = self.sweep(snapshot.nodes)
        if swept.nodes_changed:
            snapshot = replace(snapshot, nodes=self.view.list_nodes())
        impaired = tuple(self.status_checks.check(snapshot.nodes)) if self.status_checks else ()
        fleet = self.census(snapshot)
        cycle = self.cycle(snapshot, until)
        if self.notifier is not None:
            self.notifier.send(cycle_notice(
                self.cluster, moved=len(cycle.evicted), refused=len(cycle.refused), waves=len(cycle.waves),
                emptied=cycle.emptied, emptied_cost_per_hour=cycle.emptied_cost_per_hour,
                spot_saving_per_hour=fleet.cost.spot_saving_per_hour if fleet.cost is not None else None))
        return TickResult(self.cluster, self.settings.dry_run, swept, fleet, cycle, impaired)

    def _without_duplicates(self, snapshot: ClusterSnapshot) -> ClusterSnapshot:
        """Objects listed twice are logged, counted and kept once: one bad listing must not stop the
        tick."""
        problems = snapshot.duplicates()
        for problem in problems:
            log.warning("snapshot: %s", problem)
        if problems:
            self.metrics.add("SnapshotDuplicates", len(problems), ClusterName=self.cluster)
        return snapshot.first_of_each() if problems else snapshot

    # --- the sweep ------------------------------------------------------------------------------

    def sweep(self, nodes: list[Node] | None = None) -> SweepResult:
        """Undo what drains did once their revert rule says so (a rebalance recommendation past its
        TTL, a survivable event's node back with a new boot id), then put right lifecycle labels,
        on `nodes` (as just listed) or on the nodes listed now. A node whose revert fails is
        reported and counted; the others are swept all the same."""
        steps: list[Step] = []
        now = self.now()
        nodes = self.view.list_nodes() if nodes is None else nodes
        for node in nodes:
            try:
                step = self._revert(node, now)
            except Exception as exc:  # one bad node must not stop the sweep of the fleet
                log.exception("sweep: node %s skipped", node.metadata.name)
                self.metrics.add("SweepErrors", 1, ClusterName=self.cluster)
                step = Step(StepAction.REVERT, node.metadata.name, reason=f"{type(exc).__name__}: {exc}",
                            outcome=StepOutcome.FAILED)
            if step is not None:
                steps.append(step)
        changed = any(step.outcome is StepOutcome.REVERTED for step in steps)
        if self.tagger is not None and self.kube is not None:
            labels = self.tagger.reconcile(self.kube, self.cluster, nodes)
            changed = changed or (not self.settings.dry_run
                                  and any(step.action is StepAction.LABEL for step in labels))
            steps.extend(labels)
        return SweepResult(steps, changed)

    def _revert(self, node: Node, now: datetime) -> Step | None:
        patch = node_revert_patch(node, now, self.settings)
        if patch is None:
            return None
        step = Step(StepAction.REVERT, patch.node_name, reason=patch.why, outcome=StepOutcome.DRY_RUN)
        if self.kube is None or self.settings.dry_run:
            return step
        try:
            self.kube.patch_node(patch.node_name, patch.body)
        except KubeApiError as exc:
            # 409: the node changed since it was listed; the next sweep sees it afresh.
            return Step(StepAction.REVERT, patch.node_name, reason=exc.message, outcome=StepOutcome.FAILED)
        return replace(step, outcome=StepOutcome.REVERTED)

    # --- the census -----------------------------------------------------------------------------

    def census(self, snapshot: ClusterSnapshot | None = None) -> Census:
        """Count the fleet and publish it as metrics (dimensions as the dashboard addresses them)."""
        snapshot = snapshot or self.view.snapshot()
        result = census(snapshot, self.settings.lifecycle_label_key, self._price_book(snapshot.nodes))
        for row in result.rows:
            dims = {"ClusterName": self.cluster, "CapacityType": row.capacity_type,
                    "Architecture": row.architecture}
            self.metrics.add("Nodes", row.nodes, "Count", **dims)
            self.metrics.add("AllocatableCpu", row.allocatable_cpu / 1000, "Count", **dims)
            self.metrics.add("AllocatableMemory", row.allocatable_memory, "Bytes", **dims)
            self.metrics.add("RequestedCpu", row.requested_cpu / 1000, "Count", **dims)
            self.metrics.add("RequestedMemory", row.requested_memory, "Bytes", **dims)
        if result.spot_cpu_share is not None:
            self.metrics.add("SpotShareRequestedCpu", result.spot_cpu_share * 100, "Percent",
                             ClusterName=self.cluster)
        self.metrics.add("MisplacedPods", result.misplaced_pods, "Count", ClusterName=self.cluster)
        if result.cost is not None:
            for cost in result.cost.rows:
                self.metrics.add("FleetCostPerHour", cost.per_hour, "None", ClusterName=self.cluster,
                                 CapacityType=cost.capacity_type, Architecture=cost.architecture)
            self.metrics.add("SpotSavingPerHour", result.cost.spot_saving_per_hour, "None",
                             ClusterName=self.cluster)
            self.metrics.add("UnpricedNodes", len(result.cost.unpriced), "Count", ClusterName=self.cluster)
        return result

    def _price_book(self, nodes: list[Node]) -> PriceBook | None:
        """List and spot prices for the fleet's instance types, with the configured overrides on top;
        None without either. Prices that cannot be had leave the census without them, never failed."""
        overrides = dict(self.settings.price_overrides)
        if self.prices is None:
            return PriceBook(overrides=overrides) if overrides else None
        types = {t for n in nodes if (t := n.metadata.labels.get(INSTANCE_TYPE_LABEL))}
        # A price the operator set is not asked for: private pricing, or a Region the API does not serve.
        listed = {t for t in types if (o := overrides.get(t)) is None or o.on_demand is None}
        spot = {t for t in types if (o := overrides.get(t)) is None or o.spot is None}
        try:
            return PriceBook(self.prices.on_demand(listed), self.prices.spot(spot), overrides)
        except Exception as exc:  # a Region without the API, no route to it, throttling: the census goes on
            log.warning("census: no prices this time: %s: %s", type(exc).__name__, exc)
            self.metrics.add("PricingErrors", 1, ClusterName=self.cluster)
            return PriceBook(overrides=overrides)

    # --- the cycle ------------------------------------------------------------------------------

    def cycle(self, snapshot: ClusterSnapshot | None = None, until: float | None = None) -> CycleResult:
        """Judge the last moves, scale in what has settled, then move in waves until `until` (on
        `clock`), or one wave without it."""
        snapshot = snapshot or self.view.snapshot()
        now = self.now()
        stored = self.store.load(self.cluster) if self.store is not None else None
        judged = self._review(stored.history if stored else History(), snapshot, now)
        acting = self.kube is not None and not self.settings.dry_run
        history, scaled = self._scale_in(judged.history, snapshot, now) if acting else (judged.history, {})
        if not self._window_open(now):
            # Outside every window: last moves are judged and remembered, nothing is moved.
            self._save_history(stored, history, ())
            return CycleResult((Wave(Plan(), judged),), CycleEnd.WINDOW_CLOSED, scaled_in=scaled)
        waves: list[Wave] = []
        left = self.settings.max_evictions_per_cycle
        while True:
            wave, history = self._wave(snapshot, stored, history, judged, now, left)
            left -= len(wave.evicted)
            if self.kube is None or not acting or until is None:
                waves.append(wave)
                ended = CycleEnd.ONE_WAVE
                break
            if not wave.evicted or left <= 0:
                waves.append(wave)
                ended = CycleEnd.NOTHING_LEFT if not wave.evicted else CycleEnd.CYCLE_CAP
                break
            waited = self._await_replacements(self.kube, wave, snapshot, history, until)
            waves.append(replace(wave, seconds_to_ready=waited))
            now = self.now()
            if waited is None or not self._window_open(now):
                ended = CycleEnd.TIME_UP if waited is None else CycleEnd.WINDOW_CLOSED
                break
            snapshot = self._without_duplicates(self.view.snapshot())
            stored = self.store.load(self.cluster) if self.store is not None else None
            judged = self._review(stored.history if stored else history, snapshot, now)
            history = judged.history
        added = self._nudge(waves[-1].plan.capacity) if acting else {}
        return CycleResult(tuple(waves), ended, added, scaled)

    def _window_open(self, now: datetime) -> bool:
        windows = self.settings.rebalance_windows
        return not windows or open_window(windows, now) is not None

    def _wave(self, snapshot: ClusterSnapshot, stored: StoredHistory | None, history: History,
              judged: Review, now: datetime, left: int) -> tuple[Wave, History]:
        """Plan on the snapshot (at most `left` moves), evict, record; the history with its moves."""
        node_groups = self._node_groups(snapshot) if self.settings.capacity_nudge else None
        settings = replace(self.settings, max_evictions_per_cycle=left)
        planned = plan_with_controllers(snapshot, settings, history, now,
                                        self.view.workload_annotations, node_groups)
        self.metrics.add("MovesPlanned", len(planned.evictions), "Count", ClusterName=self.cluster)
        # Budgets refuse the rebalancer every cycle they stay exhausted (drains only while they last):
        # what the planner left for a budget, and what the Eviction API refused.
        pdb_blocked = planned.skip_counts().get(SkipCode.PDB_EXHAUSTED.value, 0)
        if self.kube is None or self.settings.dry_run:
            self._count_pdb_blocked(pdb_blocked)
            return Wave(planned, judged), history
        evicted, refused = self._evict(self.kube, snapshot, planned.evictions)
        self._count_pdb_blocked(pdb_blocked + sum(r.outcome is EvictionOutcome.BLOCKED for r in refused))
        emptied = newly_emptied(snapshot, {e.uid for e in evicted}, now, self.settings.lifecycle_label_key)
        emptied_cost = self._count_emptied(snapshot, emptied)
        records = move_records(evicted, history, now, snapshot)
        kept = emptied if self.settings.scale_in_emptied_nodes else ()
        self._save_history(stored, history, records, kept)
        wave = Wave(planned, judged, tuple(evicted), tuple(refused), tuple(e.node for e in emptied),
                    emptied_cost)
        return wave, history.with_moves(records, kept)

    def _await_replacements(self, kube: KubeClient, wave: Wave, snapshot: ClusterSnapshot,
                            history: History, until: float) -> float | None:
        """Poll the moved pods' namespaces until every replacement of the wave is judged (Ready
        where predicted, or failed) and their budgets count them: the seconds it took, or None when
        `until` came first."""
        moved = {e.uid for e in wave.evicted}
        evicted = [p for p in snapshot.pods if p.metadata.uid in moved]
        records = History(in_flight=tuple(r for r in history.in_flight if r.pod_uid in moved))
        namespaces = sorted({r.namespace for r in records.in_flight})
        nodes = snapshot.nodes
        started = self.clock()
        while started < until:
            pods = [pod for namespace in namespaces for pod in kube.list_pods(namespace=namespace)]
            known = {n.metadata.name for n in nodes}
            if any(p.spec.node_name and p.spec.node_name not in known for p in pods):
                nodes = self.view.list_nodes()  # a replacement landed on a node that joined since
            judged = review(records, ClusterSnapshot(nodes, pods), self.now(), self.settings)
            if all(j.outcome is not Outcome.IN_FLIGHT for j in judged.judgements):
                budgets = [b for namespace in namespaces for b in kube.list_pdbs(namespace=namespace)]
                if budgets_caught_up(budgets, pods, evicted):
                    return self.clock() - started
            if self.clock() + WAVE_POLL_SECONDS > until:
                break
            self.sleep(WAVE_POLL_SECONDS)
        return None

    def _count_pdb_blocked(self, count: int) -> None:
        self.metrics.add("EvictionsBlockedByPdb", count, "Count", ClusterName=self.cluster,
                         Source=Source.MOVE)

    def _review(self, history: History, snapshot: ClusterSnapshot, now: datetime) -> Review:
        """Judge the last cycles' moves: counted, and each logged."""
        judged = review(history, snapshot, now, self.settings)
        for name in ("MovesSucceeded", "MovesFailed"):
            self.metrics.add(name, judged.metrics[name], "Count", ClusterName=self.cluster)
        for judgement in judged.judgements:
            log.info("move %s/%s: %s (%s; replacement %s on %s)", judgement.record.namespace,
                     judgement.record.pod, judgement.outcome, judgement.detail,
                     judgement.replacement or "-", judgement.node or "-")
        return judged

    def _save_history(self, stored: StoredHistory | None, history: History, moves: tuple[MoveRecord, ...],
                      emptied: tuple[EmptiedNode, ...] = ()) -> None:
        if self.kube is not None and not self.settings.dry_run and self.store is not None \
                and stored is not None:
            self._save(history, stored.version, moves, emptied)

    def _scale_in(self, history: History, snapshot: ClusterSnapshot, now: datetime
                  ) -> tuple[History, dict[str, StepOutcome]]:
        """Terminate the emptied nodes that have settled through their groups; the history keeps the
        ones still waiting and those a group could not let go yet (at its minimum)."""
        emptying = settled(history.emptied, snapshot, now, self.settings.scale_in_settle_seconds)
        if not emptying.ready or not self.settings.scale_in_emptied_nodes or self.autoscaling is None:
            return replace(history, emptied=emptying.waiting + emptying.ready), {}
        named = self.settings.asg_names
        outcomes = {}
        for record in emptying.ready:
            outcomes[record.node] = self.autoscaling.scale_in(
                record.instance_id, lambda group, tags: manages_group(group, tags, self.cluster, named))
            log.info("scale-in of %s (%s): %s", record.node, record.instance_id, outcomes[record.node])
        done = sum(o is StepOutcome.SCALED_IN for o in outcomes.values())
        self.metrics.add("NodesScaledIn", done, "Count", ClusterName=self.cluster)
        kept = tuple(e for e in emptying.ready if outcomes[e.node] is not StepOutcome.SCALED_IN)
        return replace(history, emptied=emptying.waiting + kept), outcomes

    def _count_emptied(self, snapshot: ClusterSnapshot, emptied: tuple[EmptiedNode, ...]) -> float | None:
        """How many on-demand nodes this cycle emptied, and what they cost an hour while they stay (also
        returned; None when they could not be priced)."""
        self.metrics.add("OnDemandNodesEmptied", len(emptied), "Count", ClusterName=self.cluster)
        names = {e.node for e in emptied}
        nodes = [n for n in snapshot.nodes if n.metadata.name in names]
        book = self._price_book(nodes) if nodes else None
        if book is not None:
            cost = fleet_cost(nodes, book, self.settings.lifecycle_label_key)
            self.metrics.add("EmptiedNodesCostPerHour", cost.per_hour, "None", ClusterName=self.cluster)
            return cost.per_hour
        return None

    def _evict(self, kube: KubeClient, snapshot: ClusterSnapshot, evictions: tuple[Eviction, ...]
               ) -> tuple[list[Eviction], list[EvictionResult]]:
        pods: dict[str, Pod] = {p.metadata.uid: p for p in snapshot.pods}
        targets = {e.uid: e.to_node for e in evictions}
        # Asked once: `until` is already reached, so a 429 or a 5xx is reported, not retried.
        schedule = EvictionSchedule(until=time.monotonic(), backoff=lambda _attempt: 0.0,
                                    clock=time.monotonic, sleep=self.sleep)
        results = Evictions(kube, self.metrics, self.cluster).evict(
            [pods[e.uid] for e in evictions], source=Source.MOVE, schedule=schedule,
            message=lambda pod: f"Evicted by spot-rebalancer: preferred node affinity better met on "
                                f"{targets[pod.metadata.uid]}")
        evicted = [e for e, r in zip(evictions, results, strict=True)
                   if r.outcome is EvictionOutcome.ACCEPTED]
        refused = [r for r in results if r.outcome is not EvictionOutcome.ACCEPTED]
        for result in refused:
            log.info("eviction of %s/%s not done: %s %s", result.namespace, result.name,
                     result.outcome.value, result.message)
        return evicted, refused

    def _save(self, history: History, version: int, records: tuple[MoveRecord, ...],
              emptied: tuple[EmptiedNode, ...] = ()) -> None:
        """Save the reviewed history with this cycle's moves; on a conflict keep the other writer's
        history and add these moves to it, which loses nothing either cycle learned."""
        assert self.store is not None
        for _ in range(SAVE_ATTEMPTS):
            try:
                self.store.save(self.cluster, history.with_moves(records, emptied), version)
                return
            except HistoryConflict:
                latest = self.store.load(self.cluster)
                history, version = latest.history, latest.version
        raise HistoryConflict(f"history of {self.cluster} kept changing over {SAVE_ATTEMPTS} attempts")

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
