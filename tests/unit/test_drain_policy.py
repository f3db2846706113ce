import copy
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from spot_rebalancer.config import RecommendationPolicy, Settings
from spot_rebalancer.drain import drain_reason
from spot_rebalancer.drain_policy import (
    ACTION_ANNOTATION,
    EXCLUDE_FROM_LOAD_BALANCERS_LABEL,
    MIN_GRACE_SECONDS,
    SCHEDULED_CHANGES_ANNOTATION,
    Action,
    BudgetState,
    DrainReason,
    NodeAction,
    Revert,
    SkipReason,
    backoff_seconds,
    blocked_pods,
    capacity_block_end,
    capped_grace_seconds,
    decide_pods,
    deletion_time,
    drain_deadline,
    drain_starts_at,
    eviction_message,
    eviction_waves,
    impaired_to_drain,
    node_drain_patch,
    node_revert_patch,
    plan_drain,
    plan_undo,
    recorded_action,
    retry_times,
    scheduled_change_patch,
    scheduled_change_reason,
    scheduled_changes,
    waiting_step,
    wave_issue_times,
)
from spot_rebalancer.events import block_instance_event, parse_event
from spot_rebalancer.evictions import EvictionSchedule, evict_one
from spot_rebalancer.objects import Node, NodeCondition, NodeSystemInfo, Pod, Taint, Volume
from spot_rebalancer.results import EvictionOutcome as Outcome
from spot_rebalancer.results import EvictionResult, StepOutcome
from tests.unit.builders import make_node, make_pdb, make_pod

NOW = datetime(2024, 3, 14, 9, 27, 0, tzinfo=UTC)
DEFAULTS = Settings()
TTL = Settings(recommendation_ttl_seconds=1800)
FORCED = DrainReason.SPOT_INTERRUPTION
DISCRETIONARY = DrainReason.REBALANCE_RECOMMENDATION


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(name: str = "web-1", *, deletion: datetime | None = None, priority_class: str = "",
        grace: int | None = None, empty_dir: bool = False, **options) -> Pod:
    """make_pod plus the fields a drain looks at that it does not take."""
    built = make_pod(name, node="node-1", **options)
    meta = replace(built.metadata, deletion_timestamp=iso(deletion) if deletion else None)
    spec = replace(built.spec, priority_class_name=priority_class, termination_grace_period_seconds=grace,
                   volumes=[Volume(name="scratch", empty_dir={})] if empty_dir else built.spec.volumes)
    return replace(built, metadata=meta, spec=spec)


def decide_one(subject: Pod, reason: DrainReason = FORCED, config: Settings = DEFAULTS, **kwargs):
    (decision,) = decide_pods([subject], config, reason, NOW, **kwargs)
    return decision.action, decision.skip_reason


# --- which pods --------------------------------------------------------------------------------

MIRROR = {"kubernetes.io/config.mirror": "2f0b8a"}
OPT_OUT = {DEFAULTS.opt_out_annotation: "true"}


@pytest.mark.parametrize(("subject", "reason", "expected"), [
    (pod(), FORCED, (Action.EVICT, None)),
    (pod(), DISCRETIONARY, (Action.EVICT, None)),
    (pod(owner=("StatefulSet", "db")), FORCED, (Action.EVICT, None)),
    (pod(empty_dir=True), FORCED, (Action.EVICT, None)),
    (pod(owner=("Node", "node-1"), annotations=MIRROR), FORCED, (Action.SKIP, SkipReason.MIRROR)),
    (pod(owner=None, annotations=MIRROR, deletion=NOW), FORCED, (Action.SKIP, SkipReason.MIRROR)),
    (pod(phase="Succeeded"), FORCED, (Action.SKIP, SkipReason.FINISHED)),
    (pod(phase="Failed", owner=None), FORCED, (Action.SKIP, SkipReason.FINISHED)),
    (pod(owner=("DaemonSet", "fluent-bit")), FORCED, (Action.SKIP, SkipReason.DAEMONSET)),
    # A DaemonSet pod being deleted is the DaemonSet's business, as in kubectl: not waited for.
    (pod(owner=("DaemonSet", "fluent-bit"), deletion=NOW), FORCED, (Action.SKIP, SkipReason.DAEMONSET)),
    (pod(deletion=NOW + timedelta(seconds=30)), FORCED, (Action.WAIT, None)),
    (pod(deletion=NOW - timedelta(seconds=60)), FORCED, (Action.WAIT, None)),
    (pod(deletion=NOW - timedelta(seconds=61)), FORCED, (Action.SKIP, SkipReason.STUCK_TERMINATING)),
    # Terminating pods leave anyway: opt-out, namespace and ownership rules do not keep them.
    (pod(deletion=NOW, annotations=OPT_OUT, namespace="kube-system", owner=None), DISCRETIONARY,
     (Action.WAIT, None)),
    (pod(annotations=OPT_OUT), FORCED, (Action.SKIP, SkipReason.OPTED_OUT)),
    (pod(annotations=OPT_OUT), DISCRETIONARY, (Action.SKIP, SkipReason.OPTED_OUT)),
    (pod(annotations={DEFAULTS.opt_out_annotation: ""}), FORCED, (Action.SKIP, SkipReason.OPTED_OUT)),
    (pod(annotations={DEFAULTS.opt_out_annotation: "false"}), FORCED, (Action.EVICT, None)),
    (pod(namespace="kube-system"), DISCRETIONARY, (Action.SKIP, SkipReason.EXCLUDED_NAMESPACE)),
    (pod(namespace="kube-system"), FORCED, (Action.EVICT, None)),
    (pod(owner=None), FORCED, (Action.EVICT, None)),
], ids=["plain pod on a forced drain", "plain pod on a recommendation", "statefulset pod",
        "pod with an emptydir", "mirror pod", "terminating mirror pod", "succeeded pod", "failed bare pod",
        "daemonset pod", "terminating daemonset pod", "terminating within its grace",
        "terminating for a minute", "stuck terminating past a minute",
        "terminating pod ignores opt-out and namespace", "opted out on a forced drain",
        "opted out on a recommendation", "empty opt-out annotation opts out", "opt-out annotation false",
        "excluded namespace on a recommendation", "excluded namespace on a forced drain", "bare pod"])
def test_decisions_with_default_settings(subject, reason, expected):
    assert decide_one(subject, reason) == expected


@pytest.mark.parametrize("reason", list(DrainReason))
def test_only_a_rebalance_recommendation_is_discretionary(reason):
    assert reason.forced is (reason is not DrainReason.REBALANCE_RECOMMENDATION)


def test_unowned_pods_skipped_when_settings_say_so():
    config = Settings(unowned_pods="skip")
    assert decide_one(pod(owner=None), FORCED, config) == (Action.SKIP, SkipReason.UNOWNED)
    assert decide_one(pod(), FORCED, config) == (Action.EVICT, None)


def test_orphaned_daemonset_pods_are_unowned():
    orphan = pod(owner=("DaemonSet", "gone"))
    alive = pod(owner=("DaemonSet", "fluent-bit"))
    existing = {("default", "fluent-bit")}
    assert decide_one(orphan, daemonsets=existing) == (Action.EVICT, None)
    assert decide_one(alive, daemonsets=existing) == (Action.SKIP, SkipReason.DAEMONSET)
    assert decide_one(orphan, FORCED, Settings(unowned_pods="skip"), daemonsets=existing) == (
        Action.SKIP, SkipReason.UNOWNED)
    # Without the list every DaemonSet is taken to exist.
    assert decide_one(orphan) == (Action.SKIP, SkipReason.DAEMONSET)


def test_configured_namespaces_and_annotation():
    config = Settings(excluded_namespaces=("batch",), opt_out_annotation="example.com/keep")
    assert decide_one(pod(namespace="batch"), DISCRETIONARY, config) == (
        Action.SKIP, SkipReason.EXCLUDED_NAMESPACE)
    assert decide_one(pod(namespace="kube-system"), DISCRETIONARY, config) == (Action.EVICT, None)
    assert decide_one(pod(annotations={"example.com/keep": "yes"}), FORCED, config) == (
        Action.SKIP, SkipReason.OPTED_OUT)
    assert decide_one(pod(annotations=OPT_OUT), FORCED, config) == (Action.EVICT, None)


def test_unreadable_deletion_timestamp_is_waited_for():
    subject = replace(pod(), metadata=replace(pod().metadata, deletion_timestamp="soon"))
    assert decide_one(subject) == (Action.WAIT, None)


EVENTS = Path(__file__).parents[1] / "events"


@pytest.mark.parametrize(("sample", "reason"), [
    ("spot-interruption-terminate.json", DrainReason.SPOT_INTERRUPTION),
    ("spot-interruption-hibernate.json", DrainReason.SPOT_STOP),
    ("rebalance-recommendation.json", DrainReason.REBALANCE_RECOMMENDATION),
    ("lifecycle-terminate.json", DrainReason.ASG_TERMINATION),
    ("state-change-stopping.json", DrainReason.INSTANCE_STOPPING),
    ("state-change-shutting-down.json", DrainReason.INSTANCE_SHUTTING_DOWN),
    ("health-instance-retirement.json", DrainReason.SCHEDULED_RETIREMENT),
    ("health-stop-scheduled-several.json", DrainReason.SCHEDULED_RETIREMENT),
    ("health-reboot-maintenance.json", DrainReason.SCHEDULED_MAINTENANCE),
    ("health-store-drive-degraded-backup.json", DrainReason.DEGRADED_HARDWARE),
    ("state-change-running.json", None),
    ("state-change-stopped.json", DrainReason.INSTANCE_STOPPED),
    ("state-change-terminated.json", DrainReason.INSTANCE_TERMINATED),
    ("capacity-reservation-interruption.json", DrainReason.CAPACITY_RESERVATION_INTERRUPTION),
    ("lifecycle-terminate-warm-pool.json", DrainReason.ASG_TO_WARM_POOL),
    ("lifecycle-launch.json", None),
    ("status-check-impaired.json", DrainReason.DEGRADED_HARDWARE),
], ids=lambda value: value if isinstance(value, str) else str(value))
def test_drain_reason_of_each_sample(sample, reason):
    event = parse_event((EVENTS / sample).read_text())[0]
    assert drain_reason(event) is reason


def test_every_reason_has_its_spec_row_and_some_event():
    assert all(reason.spec.reason is reason for reason in DrainReason), "every reason has its spec row"
    spot = parse_event((EVENTS / "spot-interruption-terminate.json").read_text())[0]
    stopped = dataclasses.replace(spot, action="stop")
    assert drain_reason(stopped) is DrainReason.SPOT_STOP


@pytest.mark.parametrize(("code", "reason"), [
    ("AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED", DrainReason.SCHEDULED_RETIREMENT),
    ("AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED", DrainReason.SCHEDULED_RETIREMENT),
    ("AWS_EC2_INSTANCE_STOP_SCHEDULED", DrainReason.SCHEDULED_RETIREMENT),
    ("AWS_EC2_INSTANCE_TERMINATION_SCHEDULED", DrainReason.SCHEDULED_RETIREMENT),
    ("AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED", DrainReason.SCHEDULED_MAINTENANCE),
    ("AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED", DrainReason.SCHEDULED_MAINTENANCE),
    ("AWS_EC2_INSTANCE_NETWORK_MAINTENANCE_SCHEDULED", DrainReason.SCHEDULED_MAINTENANCE),
    ("AWS_EC2_INSTANCE_POWER_MAINTENANCE_SCHEDULED", DrainReason.SCHEDULED_MAINTENANCE),
    # Not in the table: by what the name says.
    ("AWS_EC2_DEDICATED_HOST_RETIREMENT_SCHEDULED", DrainReason.SCHEDULED_RETIREMENT),
    ("AWS_EC2_INSTANCE_STORAGE_MAINTENANCE_SCHEDULED", DrainReason.SCHEDULED_MAINTENANCE),
    ("AWS_EC2_STOPPED_INSTANCE_SCHEDULED", DrainReason.SCHEDULED_MAINTENANCE),  # "STOPPED" is no word of ours
], ids=lambda value: value if isinstance(value, str) else str(value))
def test_scheduled_changes_by_code(code, reason):
    assert scheduled_change_reason(code) is reason
    assert (reason.spec.revert is Revert.NEVER) is (reason is DrainReason.SCHEDULED_RETIREMENT)


def test_what_each_reason_leaves_and_how_it_is_undone():
    assert {r: r.spec.revert for r in DrainReason} == {
        DrainReason.SPOT_INTERRUPTION: Revert.NEVER, DrainReason.SPOT_STOP: Revert.WHEN_BACK,
        DrainReason.CAPACITY_RESERVATION_INTERRUPTION: Revert.NEVER,
        DrainReason.CAPACITY_BLOCK_EXPIRY: Revert.NEVER,
        DrainReason.ASG_TO_WARM_POOL: Revert.WHEN_BACK,
        DrainReason.INSTANCE_STOPPED: Revert.WHEN_BACK, DrainReason.INSTANCE_TERMINATED: Revert.NEVER,
        DrainReason.REBALANCE_RECOMMENDATION: Revert.AFTER_TTL, DrainReason.ASG_TERMINATION: Revert.NEVER,
        DrainReason.INSTANCE_STOPPING: Revert.WHEN_BACK, DrainReason.INSTANCE_SHUTTING_DOWN: Revert.NEVER,
        DrainReason.SCHEDULED_RETIREMENT: Revert.NEVER, DrainReason.SCHEDULED_MAINTENANCE: Revert.WHEN_BACK,
        DrainReason.DEGRADED_HARDWARE: Revert.NEVER}


# --- deadlines and lead times ------------------------------------------------------------------


BLOCK_ENDS = NOW + timedelta(minutes=40)


def test_impaired_nodes_are_drained_unless_a_forced_drain_already_marked_them():
    def marked(name: str, reason: DrainReason) -> Node:
        node = make_node(name, provider_id=f"aws:///eu-west-1a/i-{name}")
        patch = node_drain_patch(node, reason, DEFAULTS, NOW)
        return msgspec.structs.replace(node, metadata=msgspec.structs.replace(
            node.metadata, annotations=patch.body["metadata"]["annotations"]))

    fresh = make_node("0000000a", provider_id="aws:///eu-west-1a/i-0000000a")
    recommended = marked("0000000b", DrainReason.REBALANCE_RECOMMENDATION)  # a voluntary taint
    retiring = marked("0000000c", DrainReason.SCHEDULED_MAINTENANCE)  # forced: being drained
    degraded = marked("0000000d", DrainReason.DEGRADED_HARDWARE)  # drained already
    healthy = make_node("0000000e", provider_id="aws:///eu-west-1a/i-0000000e")
    elsewhere = make_node("kind-node")  # no EC2 instance
    impaired = {f"i-0000000{c}": ("system",) for c in "abcd"} | {"i-0000000f": ("instance",)}
    found = impaired_to_drain([fresh, recommended, retiring, degraded, healthy, elsewhere], impaired)
    assert [(node.metadata.name, checks) for node, checks in found] == [
        ("0000000a", ("system",)), ("0000000b", ("system",))]


@pytest.mark.parametrize(("reservation_type", "ends_at", "announced", "outcome"), [
    ("capacity-block", BLOCK_ENDS, BLOCK_ENDS, BLOCK_ENDS),
    ("capacity-block", BLOCK_ENDS, None, BLOCK_ENDS),  # the warning announced no end
    # Extended since the warning: its instances run on.
    ("capacity-block", BLOCK_ENDS + timedelta(days=1), BLOCK_ENDS,
     f"extended to {(BLOCK_ENDS + timedelta(days=1)).isoformat()}"),
    ("capacity-block", NOW - timedelta(minutes=1), None,
     f"ended at {(NOW - timedelta(minutes=1)).isoformat()}"),  # a replay: its instances are gone
    ("default", BLOCK_ENDS, BLOCK_ENDS, "not a Capacity Block (reservation type default)"),
    ("capacity-block", None, BLOCK_ENDS, "not a Capacity Block (reservation type capacity-block)"),
], ids=["as announced", "nothing announced", "extended", "over", "an On-Demand reservation", "no end"])
def test_when_an_ending_capacity_block_ends_or_why_it_drains_nothing(reservation_type, ends_at, announced,
                                                                      outcome):
    assert capacity_block_end(reservation_type, ends_at, announced, NOW) == outcome


def test_a_capacity_block_drain_ends_when_ec2_starts_terminating_not_at_the_blocks_end():
    (warning,) = parse_event((EVENTS / "capacity-block-expiration-warning.json").read_text())
    event = block_instance_event(warning, "i-0a1b2c3d4e5f60718", warning.ends_at)
    assert drain_reason(event) is DrainReason.CAPACITY_BLOCK_EXPIRY
    assert event.deadline == warning.ends_at - timedelta(minutes=30) == warning.time + timedelta(minutes=10)
    started = warning.time
    assert drain_deadline(DrainReason.CAPACITY_BLOCK_EXPIRY.spec, event.deadline, DEFAULTS, started) == (
        event.deadline)
    assert drain_starts_at(DrainReason.CAPACITY_BLOCK_EXPIRY.spec, event.deadline, DEFAULTS) is None

STARTED = NOW
TWO_MINUTES = NOW + timedelta(minutes=2)
NEXT_WEEK = NOW + timedelta(days=7)


@pytest.mark.parametrize(("reason", "event_deadline", "expected"), [
    (DrainReason.SPOT_INTERRUPTION, TWO_MINUTES, TWO_MINUTES),  # the notice, inside the timeout
    (DrainReason.SPOT_INTERRUPTION, NOW + timedelta(hours=1), NOW + timedelta(seconds=600)),
    (DrainReason.ASG_TERMINATION, None, NOW + timedelta(seconds=600)),
    (DrainReason.REBALANCE_RECOMMENDATION, None, NOW + timedelta(seconds=600)),
    # A Health change starts days off: that is the instance's end, not the drain's.
    (DrainReason.SCHEDULED_RETIREMENT, NEXT_WEEK, NOW + timedelta(seconds=600)),
    (DrainReason.DEGRADED_HARDWARE, None, NOW + timedelta(seconds=600)),
    # A backstop: the instance is stopped or gone already, so what is evicted is evicted at once.
    (DrainReason.INSTANCE_STOPPED, None, NOW),
    (DrainReason.INSTANCE_TERMINATED, None, NOW),
], ids=["spot warning", "event deadline past the timeout", "asg termination", "recommendation",
        "health scheduled change", "health issue", "instance stopped", "instance terminated"])
def test_drain_deadline_by_spec(reason, event_deadline, expected):
    timeout = Settings(drain_timeout_seconds=600)
    assert drain_deadline(reason.spec, event_deadline, timeout, STARTED) == expected


@pytest.mark.parametrize(("reason", "event_deadline", "expected"), [
    (DrainReason.SCHEDULED_RETIREMENT, NEXT_WEEK, NEXT_WEEK - timedelta(hours=2)),
    (DrainReason.SCHEDULED_MAINTENANCE, NEXT_WEEK, NEXT_WEEK - timedelta(hours=2)),
    (DrainReason.DEGRADED_HARDWARE, None, None),  # at once
    (DrainReason.SPOT_INTERRUPTION, TWO_MINUTES, None),  # at once, whatever its deadline
], ids=["health retirement", "health maintenance", "health issue", "spot warning"])
def test_only_health_scheduled_changes_wait_for_their_lead_time(reason, event_deadline, expected):
    lead_time = Settings(health_lead_time_seconds=7200)
    assert drain_starts_at(reason.spec, event_deadline, lead_time) == expected


def test_a_drain_whose_start_is_to_come_waits_and_says_until_when():
    lead_time = Settings(health_lead_time_seconds=7200)
    spec = DrainReason.SCHEDULED_MAINTENANCE.spec
    step = waiting_step(spec, NEXT_WEEK, lead_time, NOW, "node-1")
    assert (step.action, step.node, step.reason) == (
        "continue", "node-1", f"drain at {(NEXT_WEEK - timedelta(hours=2)).isoformat()}")
    assert waiting_step(spec, NEXT_WEEK, lead_time, NEXT_WEEK - timedelta(hours=2)) is None
    assert waiting_step(DrainReason.SPOT_INTERRUPTION.spec, TWO_MINUTES, lead_time, NOW) is None


# --- against kubectl drain --ignore-daemonsets --delete-emptydir-data --force --------------------


def kubectl_deletes(subject: Pod, daemonsets: set[tuple[str, str]]) -> bool:
    """kubectl's filter chain (1.20 and later) with those flags and no --skip-wait-for-delete-timeout."""
    finished = subject.status.phase in ("Succeeded", "Failed")
    controller = subject.metadata.controller
    # daemonSetFilter: finished pods pass; an existing DaemonSet's pods are skipped; orphans pass (--force).
    if (controller is not None and controller.kind == "DaemonSet" and not finished
            and (subject.metadata.namespace, controller.name) in daemonsets):
        return False
    # mirrorPodFilter; localStorageFilter passes (--delete-emptydir-data); unreplicatedFilter passes
    # (--force); skipDeletedFilter passes everything without a timeout.
    return "kubernetes.io/config.mirror" not in subject.metadata.annotations


@st.composite
def pods(draw):
    owner_kind = draw(st.sampled_from([None, "ReplicaSet", "StatefulSet", "Job", "DaemonSet", "Node"]))
    owner = (owner_kind, draw(st.sampled_from(["a", "b"]))) if owner_kind else None
    terminating = draw(st.sampled_from([None, 30, -30, -3600]))
    return pod(
        f"pod-{draw(st.integers(0, 10**6))}",
        namespace=draw(st.sampled_from(["default", "kube-system", "team-a"])),
        owner=owner,
        phase=draw(st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown"])),
        annotations=MIRROR if draw(st.booleans()) else {},
        deletion=NOW + timedelta(seconds=terminating) if terminating is not None else None,
        empty_dir=draw(st.booleans()),
        priority=draw(st.sampled_from([None, -10, 0, 1000, 2_000_000_000, 2_000_001_000])),
        priority_class=draw(st.sampled_from(["", "high", "system-cluster-critical", "system-node-critical"])),
    )


daemonset_sets = st.sets(st.tuples(st.sampled_from(["default", "kube-system", "team-a"]),
                                   st.sampled_from(["a", "b"])))


@settings(max_examples=300)
@given(subjects=st.lists(pods(), max_size=12), daemonsets=daemonset_sets,
       reason=st.sampled_from([r for r in DrainReason if r.forced]))
def test_forced_drain_matches_kubectl_drain(subjects, daemonsets, reason):
    decisions = decide_pods(subjects, DEFAULTS, reason, NOW, daemonsets=daemonsets)
    for decision in decisions:
        subject = decision.pod
        kubectl = kubectl_deletes(subject, daemonsets)
        if decision.skip_reason is SkipReason.FINISHED:  # documented difference: kubectl deletes them
            assert kubectl
            continue
        assert (decision.action in (Action.EVICT, Action.WAIT)
                or decision.skip_reason is SkipReason.STUCK_TERMINATING) == kubectl
        if decision.action is Action.WAIT or decision.skip_reason is SkipReason.STUCK_TERMINATING:
            assert subject.metadata.deletion_timestamp is not None


@settings(max_examples=200)
@given(subjects=st.lists(pods(), max_size=12), reason=st.sampled_from(list(DrainReason)),
       unowned=st.sampled_from(["evict", "skip"]))
def test_every_pod_is_decided_once_in_order(subjects, reason, unowned):
    decisions = decide_pods(subjects, Settings(unowned_pods=unowned), reason, NOW)
    assert [d.pod for d in decisions] == subjects
    for decision in decisions:
        assert (decision.skip_reason is None) == (decision.action is not Action.SKIP)


# --- waves -------------------------------------------------------------------------------------


def evicting(*subjects: Pod):
    return decide_pods(subjects, DEFAULTS, FORCED, NOW)


def wave_names(waves):
    return [(w.priority, w.system_critical, [p.metadata.name for p in w.pods]) for w in waves]


def test_waves_lowest_priority_first_system_critical_last():
    waves = eviction_waves(evicting(
        pod("dns", priority=2_000_000_000, priority_class="system-cluster-critical", namespace="kube-system"),
        pod("web-b", priority=100),
        pod("batch", priority=-5),
        pod("web-a", priority=100),
        pod("plain"),
        pod("node-agent", priority_class="system-node-critical"),  # no spec.priority: the class's
        pod("daemon", owner=("DaemonSet", "agent")),
        pod("gone", deletion=NOW),
    ))
    assert wave_names(waves) == [
        (-5, False, ["batch"]),
        (0, False, ["plain"]),
        (100, False, ["web-a", "web-b"]),
        (2_000_000_000, True, ["dns"]),
        (2_000_001_000, True, ["node-agent"]),
    ]


def test_a_system_class_is_critical_whatever_its_recorded_priority():
    waves = eviction_waves(evicting(pod("odd", priority=7, priority_class="system-node-critical"),
                                    pod("high", priority=1_000_000_000)))
    assert wave_names(waves) == [(1_000_000_000, False, ["high"]), (7, True, ["odd"])]


def test_no_pods_no_waves():
    assert eviction_waves([]) == []


@given(subjects=st.lists(pods(), max_size=15, unique_by=lambda p: p.metadata.name))
def test_waves_hold_exactly_the_evicted_pods_in_rising_order(subjects):
    decisions = decide_pods(subjects, DEFAULTS, FORCED, NOW)
    waves = eviction_waves(decisions)
    evicted = sorted(d.pod.metadata.name for d in decisions if d.action is Action.EVICT)
    assert sorted(p.metadata.name for w in waves for p in w.pods) == evicted
    keys = [(w.system_critical, w.priority) for w in waves]
    assert keys == sorted(set(keys))
    assert all(w.pods for w in waves)


# --- grace periods -----------------------------------------------------------------------------

DEADLINE = NOW + timedelta(minutes=2)


def issue_offsets(*waves_graces: list[int | None]) -> list[float]:
    """Each wave's latest start, in seconds before DEADLINE, for waves of pods with these graces."""
    subjects = [pod(f"p{wave}-{n}", priority=wave, grace=grace)
                for wave, graces in enumerate(waves_graces) for n, grace in enumerate(graces)]
    waves = eviction_waves(evicting(*subjects))
    return [(DEADLINE - at).total_seconds() for at in wave_issue_times(waves, DEADLINE)]


@pytest.mark.parametrize(("graces", "offsets"), [
    ([[30], [30]], [35, 35]),  # both at the latest when their 30 s grace still ends 5 s early
    ([[10, 60], [20]], [65, 25]),  # a wave's longest grace counts
    ([[10], [60]], [65, 65]),  # never after a later wave's: the order stays lowest first
    ([[None], [0]], [35, 5]),  # the API's default grace; a pod asking for none
    ([[600], [30]], [605, 35]),  # past already: at once, with capped graces
    ([], []),
], ids=["equal graces", "the longest grace of a wave", "a later wave's earlier start comes first",
        "default and zero graces", "a grace longer than the notice", "no waves"])
def test_a_wave_starts_no_later_than_its_grace_periods_allow(graces, offsets):
    assert issue_offsets(*graces) == offsets


@given(graces=st.lists(st.lists(st.none() | st.integers(0, 900), min_size=1, max_size=3), max_size=5))
def test_wave_starts_keep_the_order_and_the_graces(graces):
    offsets = issue_offsets(*graces)
    assert offsets == sorted(offsets, reverse=True), "a later wave never starts before an earlier one"
    for wave_graces, offset in zip(graces, offsets, strict=True):
        own = max(30 if g is None else g for g in wave_graces)
        assert offset >= own + 5, "its grace periods end 5 s before the deadline"


@pytest.mark.parametrize(("grace", "offset"), [(30, 35), (None, 35), (0, 5), (600, 605)],
                         ids=["its own grace", "the api default", "none", "longer than the notice"])
def test_a_blocked_pod_is_deleted_when_only_its_grace_is_left(grace, offset):
    assert deletion_time(pod(grace=grace), DEADLINE) == DEADLINE - timedelta(seconds=offset)


@pytest.mark.parametrize(("reason", "forced"), [
    (DrainReason.SPOT_INTERRUPTION, True), (DrainReason.ASG_TERMINATION, True),
    (DrainReason.INSTANCE_STOPPING, True), (DrainReason.SCHEDULED_RETIREMENT, True),
    (DrainReason.SPOT_STOP, True), (DrainReason.CAPACITY_RESERVATION_INTERRUPTION, True),
    (DrainReason.CAPACITY_BLOCK_EXPIRY, True),
    (DrainReason.REBALANCE_RECOMMENDATION, False), (DrainReason.DEGRADED_HARDWARE, False),
    (DrainReason.SCHEDULED_MAINTENANCE, False), (DrainReason.INSTANCE_TERMINATED, False),
], ids=lambda value: str(value))
def test_force_at_deadline_only_where_the_instance_ends(reason, forced):
    config = Settings(force_at_deadline=True, recommendation_default="drain")
    node = make_node("node-1")
    plan = plan_drain(reason, node, [pod()], config, NOW, event_deadline=DEADLINE, started=NOW)
    assert plan.force_at_deadline is forced
    assert plan_drain(reason, node, [pod()], DEFAULTS, NOW, event_deadline=DEADLINE,
                      started=NOW).force_at_deadline is False, "off by default"


@pytest.mark.parametrize(("grace", "deadline", "now", "expected"), [
    (30, DEADLINE, NOW, 30),
    (600, DEADLINE, NOW, 115),  # 120 s left, 5 s margin
    (None, DEADLINE, NOW, 30),  # the API's default
    (600, DEADLINE, DEADLINE - timedelta(seconds=10.5), 5),
    (600, DEADLINE, DEADLINE - timedelta(seconds=3), MIN_GRACE_SECONDS),
    (600, DEADLINE, DEADLINE + timedelta(minutes=1), MIN_GRACE_SECONDS),  # never negative
    (0, DEADLINE, NOW, 0),  # a pod that asks for none gets none
    (600, None, NOW, None),  # no deadline: keep the pod's own
], ids=["own grace fits before the deadline", "capped to the time left less the margin",
        "no grace means the api default", "fractional time left rounds down",
        "under the margin gives the minimum", "past the deadline never negative",
        "a pod asking for none gets none", "no deadline keeps the pod's own"])
def test_capped_grace(grace, deadline, now, expected):
    assert capped_grace_seconds(pod(grace=grace), deadline, now) == expected


@given(grace=st.none() | st.integers(0, 10**6), left=st.floats(-600, 10**5), margin=st.floats(0, 60))
def test_capped_grace_ends_before_the_deadline(grace, left, margin):
    deadline = NOW + timedelta(seconds=left)
    left = (deadline - NOW).total_seconds()  # as the clock sees it, to the microsecond
    capped = capped_grace_seconds(pod(grace=grace), deadline, NOW, margin)
    own = 30 if grace is None else grace
    assert 0 <= capped <= own
    assert capped <= max(MIN_GRACE_SECONDS, left - margin)
    if own >= MIN_GRACE_SECONDS:
        assert capped >= MIN_GRACE_SECONDS


# --- back-off ----------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_seconds(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert [backoff_seconds(n, base=0.5, cap=3) for n in range(1, 5)] == [0.5, 1, 2, 3]
    assert backoff_seconds(10**9) == 30


@pytest.mark.parametrize(("start", "until", "expected"), [
    (0, 120, [1, 3, 7, 15, 31, 61, 91]),
    (100, 104, [101, 103]),
    (0, 1, []),  # the first retry would start at the deadline
    (0, 0, []),
], ids=["two minutes from zero", "a short window", "the first retry would reach the deadline",
        "no time at all"])
def test_retry_times_stop_before_the_deadline(start, until, expected):
    assert retry_times(start, until) == expected


def test_retry_times_need_a_positive_base():
    with pytest.raises(ValueError, match="backoff base must be positive"):
        retry_times(0, 10, base=0)


@given(start=st.floats(0, 1e6), span=st.floats(0, 3600), base=st.floats(0.1, 10), cap=st.floats(0.5, 120))
def test_retry_times_properties(start, span, base, cap):
    until = start + span
    times = retry_times(start, until, base, cap)
    assert all(start < t < until for t in times)
    gaps = [b - a for a, b in zip([start, *times], times, strict=False)]
    assert gaps == pytest.approx([backoff_seconds(n, base, cap) for n in range(1, len(times) + 1)])
    # The next retry would not start before the deadline.
    assert (times[-1] if times else start) + backoff_seconds(len(times) + 1, base, cap) >= until


class AlwaysBlocked:
    """A Kubernetes client whose every eviction a PodDisruptionBudget refuses."""

    def __init__(self, delete_status: int = 200, clock=lambda: 0.0) -> None:
        self.delete_status = delete_status
        self.clock = clock
        self.deleted: list[tuple[str, int | None, float]] = []  # (pod, grace, when)

    def evict(self, namespace, name, grace_seconds):
        return type("Response", (), {"status": 429, "retry_after": None,
                                     "message": "Cannot evict pod as it would violate "
                                                "the pod's disruption budget."})()

    def delete_pod(self, namespace, name, grace_seconds=None):
        self.deleted.append((name, grace_seconds, self.clock()))
        return type("Response", (), {"status": self.delete_status, "message": "", "retry_after": None})()


def test_evictions_retry_on_this_schedule():
    clock = [1000.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    schedule = EvictionSchedule(until=1120.0, backoff=backoff_seconds, clock=lambda: clock[0], sleep=sleep,
                                jitter=lambda seconds: seconds)
    result = evict_one(AlwaysBlocked(), pod(), lambda _pod: 30, schedule)
    expected = retry_times(1000.0, 1120.0)
    assert result.outcome is Outcome.BLOCKED
    assert result.attempts == len(expected) + 1
    assert [1000.0 + sum(slept[:n]) for n in range(1, len(slept) + 1)] == expected


def fake_clock(start: float):
    clock = [start]

    def sleep(seconds):
        clock[0] += seconds

    return clock, sleep


@pytest.mark.parametrize(("delete_at", "delete_status", "outcome", "deleted_at"), [
    (1090.0, 200, Outcome.DELETED, 1090.0),  # still refused at its point: deleted then, not earlier
    (1000.0, 200, Outcome.DELETED, 1000.0),  # its point had passed: at once
    (1090.0, 404, Outcome.GONE, 1090.0),
    (1090.0, 403, Outcome.FAILED, 1090.0),
    (1200.0, 200, Outcome.BLOCKED, None),  # after the schedule ends (the invocation's): not yet
    (None, 200, Outcome.BLOCKED, None),  # forceAtDeadline off
], ids=["deleted at its point", "its point already past", "gone meanwhile", "deletion refused",
        "its point after the schedule", "off"])
def test_a_pod_budgets_still_refuse_at_its_point_is_deleted_with_its_grace(delete_at, delete_status, outcome,
                                                                            deleted_at):
    clock, sleep = fake_clock(1000.0)
    kube = AlwaysBlocked(delete_status, lambda: clock[0])
    schedule = EvictionSchedule(until=1120.0, backoff=backoff_seconds, clock=lambda: clock[0], sleep=sleep,
                                jitter=lambda seconds: seconds)
    # The grace period shrinks as the time left does: it is asked for at the deletion.
    result = evict_one(kube, pod(), lambda _pod: int(1115 - clock[0]), schedule, delete_at)
    assert result.outcome is outcome
    expected = [] if deleted_at is None else [("web-1", int(1115 - deleted_at), deleted_at)]
    assert kube.deleted == expected


# --- the blocked pods report -------------------------------------------------------------------


def test_blocked_pods_name_their_budgets():
    web = pod("web-1", labels={"app": "web"})
    db = pod("db-0", labels={"app": "db"}, namespace="data")
    lone = pod("lone", labels={"app": "lone"})
    budget = replace(make_pdb("web", {"app": "web"}, 0),
                     status=replace(make_pdb("web", {"app": "web"}, 0).status, current_healthy=2,
                                    desired_healthy=3))
    pdbs = [budget, make_pdb("web-in-other-ns", {"app": "web"}, 0, namespace="data"),
            make_pdb("db", {"app": "db"}, 0, namespace="data"), make_pdb("nothing", None, 0)]
    results = [
        EvictionResult("default", "web-1", Outcome.BLOCKED, 12, "would violate the disruption budget"),
        EvictionResult("data", "db-0", Outcome.ACCEPTED, 1),
        EvictionResult("default", "lone", Outcome.BLOCKED, 3, "too many requests"),
        EvictionResult("default", "vanished", Outcome.BLOCKED, 2, "too many requests"),
    ]
    report = blocked_pods(results, [web, db, lone], pdbs)
    assert [(b.namespace, b.name, b.attempts, b.budgets) for b in report] == [
        ("default", "web-1", 12, (BudgetState("web", 0, 2, 3),)),
        ("default", "lone", 3, ()),
        ("default", "vanished", 2, ()),
    ]
    assert report[0].describe() == (
        "default/web-1: refused 12 times by web (0 disruptions allowed, 2/3 healthy)")
    assert report[1].describe() == "default/lone: refused 3 times: too many requests"


# --- node patches ------------------------------------------------------------------------------


def node(unschedulable: bool = False, labels=None, annotations=None, taints=(),
         resource_version: str = "41") -> Node:
    built = make_node("ip-10-0-1-2.eu-west-1.compute.internal", labels=labels, taints=taints,
                      unschedulable=unschedulable)
    meta = replace(built.metadata, resource_version=resource_version, annotations=dict(annotations or {}))
    return replace(built, metadata=meta)


def record_of(patch) -> dict:
    return json.loads(patch.body["metadata"]["annotations"][ACTION_ANNOTATION])


@pytest.mark.parametrize(("reason", "policy", "effect", "cordon"), [
    (DrainReason.SPOT_INTERRUPTION, "taint", "NoSchedule", True),
    (DrainReason.ASG_TERMINATION, "taint", "NoSchedule", True),
    (DrainReason.INSTANCE_STOPPING, "none", "NoSchedule", True),
    (DrainReason.SCHEDULED_MAINTENANCE, "taint", "NoSchedule", True),
    (DrainReason.DEGRADED_HARDWARE, "taint", "NoSchedule", True),
    (DrainReason.REBALANCE_RECOMMENDATION, "taint", "PreferNoSchedule", False),
    (DrainReason.REBALANCE_RECOMMENDATION, "cordon", "NoSchedule", True),
    (DrainReason.REBALANCE_RECOMMENDATION, "drain", "NoSchedule", True),
])
def test_drain_patch(reason, policy, effect, cordon):
    patch = node_drain_patch(node(), reason, Settings(recommendation_default=policy), NOW)
    expected_spec = {"taints": [{"key": f"spot-rebalancer/{reason}", "effect": effect}]}
    if cordon:
        expected_spec["unschedulable"] = True
    assert patch.node_name == "ip-10-0-1-2.eu-west-1.compute.internal"
    assert patch.body["spec"] == expected_spec
    assert patch.body["metadata"]["resourceVersion"] == "41"
    assert "labels" not in patch.body["metadata"]
    assert record_of(patch) == {"reason": reason.value, "at": "2024-03-14T09:27:00Z",
                                "taints": [f"spot-rebalancer/{reason}"], "cordoned": cordon,
                                "wasCordoned": False, "loadBalancerLabelAdded": False, "bootId": ""}


def test_recommendation_policy_none_leaves_the_node_alone():
    assert node_drain_patch(node(), DISCRETIONARY, Settings(recommendation_default="none"), NOW) is None


def test_recommendation_policy_by_node_labels():
    config = Settings(recommendation_default="none", recommendation_policies=(
        RecommendationPolicy(selector={"tier": "batch"}, action="drain"),))
    assert node_drain_patch(node(labels={"tier": "web"}), DISCRETIONARY, config, NOW) is None
    patch = node_drain_patch(node(labels={"tier": "batch"}), DISCRETIONARY, config, NOW)
    assert patch.body["spec"]["unschedulable"] is True


def test_load_balancer_label_when_configured_and_cordoning():
    config = Settings(exclude_from_load_balancers=True, recommendation_default="taint")
    patch = node_drain_patch(node(), FORCED, config, NOW)
    assert patch.body["metadata"]["labels"] == {EXCLUDE_FROM_LOAD_BALANCERS_LABEL: "true"}
    assert record_of(patch)["loadBalancerLabelAdded"] is True
    # Only tainting leaves load balancers alone; a label the user set is not ours to record.
    assert "labels" not in node_drain_patch(node(), DISCRETIONARY, config, NOW).body["metadata"]
    labelled = node(labels={EXCLUDE_FROM_LOAD_BALANCERS_LABEL: ""})
    assert record_of(node_drain_patch(labelled, FORCED, config, NOW))["loadBalancerLabelAdded"] is False


def test_a_node_the_user_cordoned_is_recorded_as_such():
    assert record_of(node_drain_patch(node(unschedulable=True), FORCED, DEFAULTS, NOW))["wasCordoned"] is True


def test_without_a_resource_version_the_patch_is_unconditional():
    patch = node_drain_patch(node(resource_version=""), FORCED, DEFAULTS, NOW)
    assert "resourceVersion" not in patch.body["metadata"]


# A strategic merge patch as the API server applies the subset we send: maps merge (null deletes),
# spec.taints is replaced whole (it has no merge key), resourceVersion is a precondition.


class Conflict(Exception):
    pass


def apply_patch(target: Node, body: dict) -> Node:
    current = msgspec.to_builtins(target)
    expected_version = body.get("metadata", {}).get("resourceVersion")
    if expected_version is not None and expected_version != current["metadata"].get("resourceVersion"):
        raise Conflict(expected_version)
    merged = merge(current, copy.deepcopy(body))
    merged["metadata"]["resourceVersion"] = str(int(current["metadata"].get("resourceVersion") or 0) + 1)
    return msgspec.convert(merged, Node)


def merge(current: dict, patch: dict) -> dict:
    result = dict(current)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif key == "taints":
            result["taints"] = value  # no merge key: the list is replaced whole
        elif isinstance(value, dict):
            result[key] = merge(result.get(key, {}), value)
        else:
            result[key] = value
    return result


def comparable(subject: Node) -> Node:
    return replace(subject, metadata=replace(subject.metadata, resource_version=""))


USER_TAINT = Taint(key="dedicated", value="gpu", effect="NoSchedule")
LB_CONFIG = Settings(exclude_from_load_balancers=True, recommendation_default="cordon")


@pytest.mark.parametrize("original", [
    node(),
    node(unschedulable=True),  # the user's cordon survives the revert
    node(taints=[USER_TAINT], labels={"team": "a"}, annotations={"owner": "ops"}),
    node(labels={EXCLUDE_FROM_LOAD_BALANCERS_LABEL: "true"}),  # the user's label survives too
], ids=["untouched node", "user cordon survives", "user taints labels and annotations survive",
        "user load balancer label survives"])
def test_revert_after_the_ttl_restores_the_node(original):
    drained = apply_patch(original, node_drain_patch(original, DISCRETIONARY, LB_CONFIG, NOW).body)
    assert drained.spec.unschedulable
    assert node_revert_patch(drained, NOW + timedelta(seconds=1799), TTL) is None
    revert = node_revert_patch(drained, NOW + timedelta(seconds=1800), TTL)
    assert comparable(apply_patch(drained, revert.body)) == comparable(original)


def test_revert_keeps_a_user_cordon_across_several_actions():
    original = node()
    config = Settings(recommendation_default="taint")
    tainted = apply_patch(original, node_drain_patch(original, DISCRETIONARY, config, NOW).body)
    later = NOW + timedelta(minutes=5)
    cordoned = apply_patch(tainted, node_drain_patch(tainted, DISCRETIONARY, LB_CONFIG, later).body)
    assert recorded_action(cordoned) == NodeAction(
        reason=DISCRETIONARY, at=later, taints=(DISCRETIONARY.taint_key,), cordoned=True,
        was_cordoned=False, load_balancer_label_added=True)
    revert = node_revert_patch(cordoned, later + timedelta(seconds=1800), TTL)
    assert comparable(apply_patch(cordoned, revert.body)) == comparable(original)


def test_a_cordon_the_user_added_after_our_taint_survives_the_revert():
    tainted = apply_patch(node(), node_drain_patch(node(), DISCRETIONARY, Settings(), NOW).body)
    user_cordoned = apply_patch(tainted, {"spec": {"unschedulable": True}})
    cordoned = apply_patch(user_cordoned, node_drain_patch(user_cordoned, DISCRETIONARY, LB_CONFIG, NOW).body)
    reverted = apply_patch(cordoned, node_revert_patch(cordoned, NOW + timedelta(hours=1), TTL).body)
    assert reverted.spec.unschedulable
    assert reverted.spec.taints == []


def test_a_forced_drain_is_never_reverted():
    original = node()
    recommended = apply_patch(original, node_drain_patch(original, DISCRETIONARY, LB_CONFIG, NOW).body)
    interrupted = apply_patch(recommended, node_drain_patch(recommended, FORCED, LB_CONFIG, NOW).body)
    # A recommendation arriving after the interruption does not make it revertible either.
    again = apply_patch(interrupted, node_drain_patch(interrupted, DISCRETIONARY, LB_CONFIG, NOW).body)
    record = recorded_action(again)
    assert record.reason is FORCED
    assert set(record.taints) == {DISCRETIONARY.taint_key, FORCED.taint_key}
    assert record.was_cordoned is False
    assert node_revert_patch(again, NOW + timedelta(days=1), TTL) is None


def test_nothing_to_revert():
    assert node_revert_patch(node(), NOW, TTL) is None
    assert node_revert_patch(node(annotations={ACTION_ANNOTATION: "{not json"}), NOW, TTL) is None


def test_a_drain_still_under_way_is_not_reverted():
    """A recommendation's drain may last the drain timeout: the sweep waits for it, whatever the TTL."""
    drained = apply_patch(node(), node_drain_patch(node(), DISCRETIONARY, LB_CONFIG, NOW).body)
    long_drains = Settings(recommendation_ttl_seconds=3600, drain_timeout_seconds=3600)
    assert node_revert_patch(drained, NOW + timedelta(seconds=3599), long_drains) is None
    assert node_revert_patch(drained, NOW + timedelta(seconds=3600), long_drains) is not None


def test_a_recorded_time_without_a_zone_is_unreadable():
    """It cannot be compared with the clock: the record counts as none, as any unreadable one does
    (the sweep then leaves the node alone instead of failing)."""
    record = record_of(node_drain_patch(node(), DISCRETIONARY, LB_CONFIG, NOW))
    naive = node(unschedulable=True, annotations={
        ACTION_ANNOTATION: json.dumps({**record, "at": "2024-03-14T09:27:00"})})
    assert recorded_action(naive) is None
    assert node_revert_patch(naive, NOW + timedelta(days=1), TTL) is None


def test_an_unreadable_record_counts_as_none_and_never_uncordons():
    garbled = node(unschedulable=True, annotations={ACTION_ANNOTATION: '{"reason": "unknown"}'})
    assert recorded_action(garbled) is None
    assert record_of(node_drain_patch(garbled, DISCRETIONARY, LB_CONFIG, NOW))["wasCordoned"] is True


def test_a_patch_planned_on_a_stale_node_conflicts():
    original = node()
    patch = node_drain_patch(original, FORCED, DEFAULTS, NOW)
    changed = apply_patch(original, {"metadata": {"labels": {"touched": "yes"}}})
    with pytest.raises(Conflict):
        apply_patch(changed, patch.body)



# --- survivable events, undone once the instance is back ---------------------------------------


def booted(subject: Node, boot_id: str, ready: bool = True) -> Node:
    """The node as its kubelet reports it after a (re)boot."""
    status = replace(subject.status, node_info=NodeSystemInfo(boot_id=boot_id),
                     conditions=[NodeCondition(type="Ready", status="True" if ready else "False")])
    return replace(subject, status=status)


MAINTENANCE = DrainReason.SCHEDULED_MAINTENANCE
SURVIVABLE = [DrainReason.SPOT_STOP, DrainReason.INSTANCE_STOPPING, DrainReason.SCHEDULED_MAINTENANCE]


@pytest.mark.parametrize("reason", SURVIVABLE, ids=str)
@pytest.mark.parametrize("original", [
    node(), node(unschedulable=True), node(taints=[USER_TAINT], labels={"team": "a"}),
], ids=["untouched node", "user cordon survives", "user taints and labels survive"])
def test_a_survivable_drain_is_undone_once_the_node_is_ready_after_another_boot(reason, original):
    before = booted(original, "boot-1")
    drained = apply_patch(before, node_drain_patch(before, reason, LB_CONFIG, NOW).body)
    assert recorded_action(drained).boot_id == "boot-1"
    later = NOW + timedelta(days=3)
    assert node_revert_patch(drained, later, DEFAULTS) is None, "the same boot: not back yet"
    assert node_revert_patch(booted(drained, "boot-2", ready=False), later, DEFAULTS) is None, "not Ready"
    back = booted(drained, "boot-2")
    revert = node_revert_patch(back, NOW, DEFAULTS)
    assert revert.why == f"{reason}: the instance runs again"
    assert comparable(apply_patch(back, revert.body)) == comparable(booted(original, "boot-2"))


def test_a_closed_maintenance_undoes_its_drain_on_a_ready_node_without_a_reboot():
    """A cancelled change never reboots the instance: Health's closing it is the word."""
    before = booted(node(), "boot-1")
    drained = apply_patch(before, node_drain_patch(before, MAINTENANCE, DEFAULTS, NOW).body)
    assert node_revert_patch(drained, NOW, DEFAULTS) is None
    assert node_revert_patch(drained, NOW, DEFAULTS, change_closed=True).why == (
        "scheduled-maintenance: the change is closed")
    rebooting = booted(drained, "boot-1", ready=False)
    assert node_revert_patch(rebooting, NOW, DEFAULTS, change_closed=True) is None
    stopped = apply_patch(before, node_drain_patch(before, DrainReason.INSTANCE_STOPPING, DEFAULTS, NOW).body)
    assert node_revert_patch(stopped, NOW, DEFAULTS, change_closed=True) is None, "only a Health change's"


@pytest.mark.parametrize("reason", [r for r in DrainReason if r.spec.revert is Revert.NEVER], ids=str)
def test_a_drain_of_an_instance_that_ends_is_never_undone(reason):
    before = booted(node(), "boot-1")
    drained = apply_patch(before, node_drain_patch(before, reason, DEFAULTS, NOW).body)
    assert node_revert_patch(booted(drained, "boot-2"), NOW + timedelta(days=1), DEFAULTS,
                             change_closed=True) is None


@pytest.mark.parametrize(("first", "then", "kept"), [
    (DrainReason.SCHEDULED_MAINTENANCE, DrainReason.SPOT_INTERRUPTION, DrainReason.SPOT_INTERRUPTION),
    (DrainReason.SPOT_INTERRUPTION, DrainReason.INSTANCE_STOPPING, DrainReason.SPOT_INTERRUPTION),
    (DrainReason.REBALANCE_RECOMMENDATION, DrainReason.SPOT_STOP, DrainReason.SPOT_STOP),
    (DrainReason.SPOT_STOP, DrainReason.REBALANCE_RECOMMENDATION, DrainReason.SPOT_STOP),
    (DrainReason.SCHEDULED_MAINTENANCE, DrainReason.INSTANCE_STOPPING, DrainReason.INSTANCE_STOPPING),
], ids=["termination after maintenance", "stop after termination", "stop after recommendation",
        "recommendation after stop", "stop after maintenance"])
def test_a_node_marked_twice_keeps_the_record_undone_last(first, then, kept):
    before = booted(node(), "boot-1")
    once = apply_patch(before, node_drain_patch(before, first, DEFAULTS, NOW).body)
    twice = apply_patch(once, node_drain_patch(once, then, DEFAULTS, NOW + timedelta(minutes=1)).body)
    record = recorded_action(twice)
    assert record.reason is kept
    assert set(record.taints) == {first.taint_key, then.taint_key}


ARN = "arn:aws:health:eu-west-1::event/EC2/AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED/x1"


def test_a_pending_change_is_recorded_once_and_dropped_when_closed():
    drain_at = NOW + timedelta(days=9)
    pending = apply_patch(node(), scheduled_change_patch(node(), ARN, drain_at).body)
    assert scheduled_changes(pending) == {ARN: drain_at.isoformat()}
    assert scheduled_change_patch(pending, ARN, drain_at) is None, "already recorded"
    other = "arn:aws:health:eu-west-1::event/EC2/AWS_EC2_INSTANCE_STOP_SCHEDULED/x2"
    both = apply_patch(pending, scheduled_change_patch(pending, other, drain_at).body)
    closed = apply_patch(both, scheduled_change_patch(both, ARN, None).body)
    assert scheduled_changes(closed) == {other: drain_at.isoformat()}
    last = apply_patch(closed, scheduled_change_patch(closed, other, None).body)
    assert SCHEDULED_CHANGES_ANNOTATION not in last.metadata.annotations
    assert scheduled_change_patch(last, other, None) is None
    assert scheduled_changes(node(annotations={SCHEDULED_CHANGES_ANNOTATION: "[1"})) == {}


def test_undo_plans():
    before = booted(node(), "boot-1")
    drained = apply_patch(before, node_drain_patch(before, MAINTENANCE, DEFAULTS, NOW).body)
    pending = apply_patch(drained, scheduled_change_patch(drained, ARN, NOW).body)
    name = before.metadata.name
    assert [(s.action, s.reason) for s in plan_undo(drained, NOW, DEFAULTS).steps(StepOutcome.DRY_RUN)] == [
        ("continue", "undone once the instance is back")]
    closed = plan_undo(pending, NOW, DEFAULTS, closed_change=ARN)
    assert [(s.action, s.node, s.outcome) for s in closed.steps(StepOutcome.REVERTED)] == [
        ("cancel", name, ""), ("revert", name, "reverted")]
    assert [s.action for s in plan_undo(node(), NOW, DEFAULTS, closed_change=ARN).steps(
        StepOutcome.DRY_RUN)] == ["ignore"]


# --- the ecosystem's do-not-disrupt marks -----------------------------------------------------

KARPENTER = {"karpenter.sh/do-not-disrupt": "true"}
AUTOSCALER = {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}


@pytest.mark.parametrize("annotations", [KARPENTER, AUTOSCALER], ids=["karpenter", "cluster autoscaler"])
def test_a_do_not_disrupt_pod_is_kept_by_a_voluntary_drain_and_evicted_last_by_a_forced_one(annotations):
    marked = pod("marked", annotations=annotations)
    assert decide_one(marked, DISCRETIONARY) == (Action.SKIP, SkipReason.DO_NOT_DISRUPT)
    assert decide_one(marked, FORCED) == (Action.EVICT, None)
    critical = pod("dns", priority_class="system-cluster-critical")
    waves = eviction_waves(decide_pods([marked, critical, pod("web-1")], DEFAULTS, FORCED, NOW))
    assert [([p.metadata.name for p in w.pods], w.guarded) for w in waves] == [
        (["web-1"], False), (["dns"], False), (["marked"], True)]
    key = next(iter(annotations))
    assert eviction_message(marked, FORCED) == (
        f"Evicted by spot-rebalancer: spot-interruption; its annotation {key}={annotations[key]} "
        f"overridden by a forced drain")
    assert eviction_message(pod("web-1"), FORCED) == "Evicted by spot-rebalancer: spot-interruption"


def test_other_values_of_the_marks_protect_nothing():
    for annotations in ({"karpenter.sh/do-not-disrupt": "false"},
                        {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}):
        assert decide_one(pod("p", annotations=annotations), DISCRETIONARY) == (Action.EVICT, None)
