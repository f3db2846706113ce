"""The closed loop: judging where replacements landed, and backing off after failures."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from spot_rebalancer.config import Settings
from spot_rebalancer.rebalance import (
    Backoff,
    History,
    MoveRecord,
    NaiveClockError,
    Outcome,
    SkipCode,
    WorkloadRef,
    move_records,
    plan,
    review,
)
from spot_rebalancer.snapshot import ClusterSnapshot
from tests.unit.builders import PREFER_SPOT, make_pod, on_demand_node, spot_node

MOVED_AT = datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)
WEB = WorkloadRef("default", "ReplicaSet", "web-7d4b9")
OPTIONS = Settings(move_single_replica_workloads=True, replacement_timeout_seconds=600,
                   backoff_base_seconds=300, backoff_cap_seconds=3600)
NODES = [on_demand_node("od"), spot_node("spot")]
REASON = "preferred-node-affinity"


def stamp(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def record(pod="web-1", workload=WEB, moved_at=MOVED_AT):
    return MoveRecord("default", pod, f"uid-{pod}", workload, "od", "spot", 0, 100, moved_at)


def replica(name, node="", created=MOVED_AT, owner=("ReplicaSet", "web-7d4b9"), uid=None, **kwargs):
    return make_pod(name, node, owner=owner, preferred=[PREFER_SPOT], created=stamp(created), uid=uid,
                    **kwargs)


def judge(pods, records=None, after=timedelta(minutes=2), backoffs=()):
    history = History(in_flight=tuple(records or [record()]), backoffs=tuple(backoffs))
    return review(history, ClusterSnapshot(NODES, list(pods)), MOVED_AT + after, OPTIONS)


def test_a_replacement_ready_on_a_node_scoring_as_expected_succeeded():
    result = judge([replica("web-new", "spot")])
    (judgement,) = result.judgements
    assert judgement.outcome is Outcome.SUCCEEDED
    assert (judgement.replacement, judgement.node, judgement.score) == ("web-new", "spot", 100)
    assert result.metrics == {"MovesSucceeded": 1, "MovesFailed": 0, "MovesInFlight": 0}
    assert result.history == History()


def test_a_replacement_on_a_worse_node_failed_and_backs_its_workload_off():
    result = judge([replica("web-new", "od")])
    (judgement,) = result.judgements
    assert judgement.outcome is Outcome.FAILED
    assert "scoring 0, expected 100" in judgement.detail
    now = MOVED_AT + timedelta(minutes=2)
    assert result.history.backoffs == (Backoff(WEB, REASON, 1, now + timedelta(seconds=300)),)
    assert result.metrics["MovesFailed"] == 1


@pytest.mark.parametrize("pods", [
    [],  # no replacement yet
    [replica("web-new")],  # not scheduled
    [replica("web-new", "spot", ready=False)],  # scheduled well, not Ready
    [replica("web-new", "spot", phase="Pending")],
], ids=["none", "unscheduled", "not-ready", "pending"])
def test_waiting_is_in_flight_until_the_timeout_then_a_failure(pods):
    waiting = judge(pods)
    assert [j.outcome for j in waiting.judgements] == [Outcome.IN_FLIGHT]
    assert waiting.history.in_flight == (record(),)
    assert waiting.history.backoffs == ()
    late = judge(pods, after=timedelta(minutes=11))
    assert [j.outcome for j in late.judgements] == [Outcome.FAILED]
    assert late.history.in_flight == ()
    assert "after 600s" in late.judgements[0].detail


def test_replacements_are_newer_pods_of_the_same_controller():
    before = MOVED_AT - timedelta(minutes=5)
    pods = [
        replica("web-1", "od", deleting=True, uid="uid-web-1"),  # the evicted pod, still terminating
        replica("web-2", "od", created=before),  # an older sibling
        replica("api-new", "spot", owner=("ReplicaSet", "api-1234")),  # another workload
    ]
    assert [j.outcome for j in judge(pods).judgements] == [Outcome.IN_FLIGHT]
    # Creation times have whole seconds: created in the second of the move counts.
    same_second = replica("web-new", "spot", created=MOVED_AT.replace(microsecond=0))
    assert [j.outcome for j in judge([*pods, same_second]).judgements] == [Outcome.SUCCEEDED]


def test_a_sibling_created_in_the_second_of_the_move_but_before_it_is_not_the_replacement():
    """A workload that fell back to on-demand a moment before the cycle: its other replica was
    created in the same second as the move. The record remembers it from the planning snapshot."""
    second = MOVED_AT.replace(microsecond=0)
    pods = [make_pod("web-1", "od", preferred=[PREFER_SPOT], requests={"cpu": "1"}, created=stamp(second)),
            make_pod("web-2", "od", preferred=[PREFER_SPOT], requests={"cpu": "1"}, created=stamp(second))]
    planned = plan(ClusterSnapshot(NODES, pods), replace(OPTIONS, min_pod_age_seconds=0), History(),
                   MOVED_AT)
    (moved,) = move_records(planned.evictions, History(), MOVED_AT, ClusterSnapshot(NODES, pods))
    assert moved.pod == "web-1"
    assert moved.earlier_uids == ("uid-default-web-1", "uid-default-web-2")

    sibling = replica("web-2", "od", uid="uid-default-web-2")  # still on on-demand, same second
    replacement = replica("web-3", "spot", created=second + timedelta(seconds=1))
    (waiting,) = judge([sibling], records=[moved]).judgements
    assert (waiting.outcome, waiting.replacement) == (Outcome.IN_FLIGHT, "")
    (landed,) = judge([sibling, replacement], records=[moved]).judgements
    assert (landed.outcome, landed.replacement) == (Outcome.SUCCEEDED, "web-3")
    # Without the record of what was there, the sibling would be taken for a failed replacement.
    (mistaken,) = judge([sibling, replacement], records=[replace(moved, earlier_uids=())]).judgements
    assert (mistaken.outcome, mistaken.replacement) == (Outcome.FAILED, "web-2")


def test_a_statefulset_replacement_keeps_the_evicted_pods_name():
    db = WorkloadRef("default", "StatefulSet", "db")
    pods = [replica("db-1", "spot", owner=("StatefulSet", "db"), uid="new-uid"),
            replica("db-2", "od", owner=("StatefulSet", "db"))]
    result = judge(pods, records=[record("db-1", workload=db)])
    assert [(j.outcome, j.replacement) for j in result.judgements] == [(Outcome.SUCCEEDED, "db-1")]
    # The same name with the evicted pod's uid is the evicted pod itself.
    result = judge([replica("db-1", "od", owner=("StatefulSet", "db"), uid="uid-db-1")],
                   records=[record("db-1", workload=db)])
    assert [j.outcome for j in result.judgements] == [Outcome.IN_FLIGHT]


def test_each_move_of_a_workload_gets_its_own_replacement():
    records = [record("web-1"), record("web-2", moved_at=MOVED_AT + timedelta(seconds=1))]
    pods = [replica("web-a", "spot"), replica("web-b", "od", created=MOVED_AT + timedelta(seconds=2))]
    result = judge(pods, records=records)
    assert [(j.record.pod, j.replacement, j.outcome) for j in result.judgements] == [
        ("web-1", "web-a", Outcome.SUCCEEDED), ("web-2", "web-b", Outcome.FAILED)]


def test_back_off_doubles_per_failure_up_to_the_cap():
    now = MOVED_AT + timedelta(minutes=2)
    delays = []
    backoffs = ()
    for _ in range(6):
        result = judge([replica("web-new", "od")], backoffs=backoffs)
        (backoff,) = result.history.backoffs
        delays.append((backoff.failures, (backoff.until - now).total_seconds()))
        backoffs = result.history.backoffs
    assert delays == [(1, 300), (2, 600), (3, 1200), (4, 2400), (5, 3600), (6, 3600)]


def test_a_success_clears_the_back_off():
    earlier = Backoff(WEB, REASON, 3, MOVED_AT)
    assert judge([replica("web-new", "spot")], backoffs=[earlier]).history.backoffs == ()


def test_a_back_off_over_for_longer_than_the_cap_is_forgotten():
    now = MOVED_AT + timedelta(minutes=2)
    recent = Backoff(WEB, REASON, 3, now - timedelta(minutes=30))
    old = Backoff(WorkloadRef("default", "ReplicaSet", "old"), REASON, 3, now - timedelta(hours=2))
    result = judge([replica("web-new", "spot", ready=False)], backoffs=[recent, old])
    assert result.history.backoffs == (recent,)


def test_move_records_count_attempts_per_workload_and_reason():
    pods = [make_pod("web-1", "od", preferred=[PREFER_SPOT], requests={"cpu": "1"})]
    now = MOVED_AT + timedelta(hours=1)
    history = History(backoffs=(Backoff(WEB, REASON, 2, now - timedelta(minutes=1)),))
    result = plan(ClusterSnapshot(NODES, pods), OPTIONS, history, now)
    (moved,) = move_records(result.evictions, history, now, ClusterSnapshot(NODES, pods))
    assert moved == MoveRecord("default", "web-1", "uid-default-web-1", WEB, "od", "spot", 0, 100, now,
                               REASON, attempt=3)


def test_the_loop_plans_reviews_and_waits_for_the_replacement():
    start = MOVED_AT
    pods = [make_pod("web-1", "od", preferred=[PREFER_SPOT], requests={"cpu": "1"}),
            make_pod("web-2", "od", preferred=[PREFER_SPOT], requests={"cpu": "1"})]
    first = plan(ClusterSnapshot(NODES, pods), OPTIONS, History(), start)
    assert [e.name for e in first.evictions] == ["web-1"]
    history = History().with_moves(move_records(first.evictions, History(), start,
                                                ClusterSnapshot(NODES, pods)))

    # A minute later the replacement is scheduled on spot but not Ready: web-2 waits its turn.
    later = start + timedelta(minutes=1)
    pending = replica("web-3", "spot", created=start + timedelta(seconds=5), ready=False)
    snapshot = ClusterSnapshot(NODES, [pods[1], pending])
    reviewed = review(history, snapshot, later, OPTIONS)
    assert reviewed.metrics == {"MovesSucceeded": 0, "MovesFailed": 0, "MovesInFlight": 1}
    second = plan(snapshot, replace(OPTIONS, min_pod_age_seconds=0), reviewed.history, later)
    assert second.evictions == ()
    assert {s.name: s.code for s in second.skipped}["web-2"] is SkipCode.MOVE_IN_FLIGHT

    # Once it is Ready the move succeeded and the next replica may go.
    ready = replica("web-3", "spot", created=start + timedelta(seconds=5))
    snapshot = ClusterSnapshot(NODES, [pods[1], ready])
    reviewed = review(reviewed.history, snapshot, later + timedelta(minutes=1), OPTIONS)
    assert reviewed.metrics["MovesSucceeded"] == 1
    third = plan(snapshot, OPTIONS, reviewed.history, later + timedelta(minutes=1))
    assert [e.name for e in third.evictions] == ["web-2"]


def test_history_round_trips_through_json():
    import msgspec

    history = History(in_flight=(record(), replace(record("web-2"), earlier_uids=("uid-a", "uid-b"))),
                      backoffs=(Backoff(WEB, REASON, 2, MOVED_AT),))
    assert msgspec.json.decode(msgspec.json.encode(history), type=History) == history


def test_a_clock_without_a_time_zone_is_refused():
    with pytest.raises(NaiveClockError):
        review(History(in_flight=(record(),)), ClusterSnapshot(NODES, []), datetime(2024, 5, 1), OPTIONS)
