"""Every class of bad input a hostile pass found, fed to the CLI and the event parser: the CLI exits 2
with one line naming the problem (or 0 when the input is fine after all), the parser raises
EventError; never another exception, and never a run long enough to pass for a hang."""

from __future__ import annotations

import contextlib
import copy
import json
from datetime import timedelta
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spot_rebalancer.cli import main
from spot_rebalancer.events import EventError, parse_event
from tests.unit.builders import PREFER_SPOT, make_pdb, make_pod, on_demand_node, spot_node

EVENTS = Path(__file__).parents[1] / "events"
# The CLI decides these offline; a Capacity Block's warning reads its instances from EC2 (the parser's
# fuzzing in test_events.py covers it).
SAMPLES = sorted(p.name for p in EVENTS.glob("*.json") if p.name != "capacity-block-expiration-warning.json")
# Far longer than any of these takes; an input that costs this much is a denial of service.
HANG = timedelta(seconds=10)

hostile_quantities = st.sampled_from([
    "-1", "-0.5Gi", "1_000", "\uff11", "1e3m", "1e999999", "9" * 4300, "1e400", "8Ei", "NaN", "inf",
    "", "1 000", "0x10", "1e", "..5", "+-1", -1, 1e400, True,
])
hostile_numbers = st.sampled_from([2**31, -(2**31) - 1, 10**30, 0, 101, -5])
hostile_times = st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+05:00", "1970-01-01T00:00:00Z",
                                 "2024-13-01T00:00:00Z", "2024-03-14T09:27:00", "yesterday"])
hostile_ids = st.sampled_from(["i-0123456789abcdef0\n", " i-0123456789abcdef0", "i-0123456789ABCDEF0",
                               "i-0123", "arn:aws:ec2:eu-west-1:123456789012:instance/", "\x00"])


def fleet() -> dict:
    pods = [make_pod("web-1", "od-1", labels={"app": "web"}, preferred=[PREFER_SPOT],
                     requests={"cpu": "1", "memory": "1Gi"}, owner=("ReplicaSet", "web-1"))]
    nodes = (on_demand_node("od-1"), spot_node("spot-1"))
    items = ([{"kind": "Node", **msgspec.to_builtins(n)} for n in nodes]
             + [{"kind": "Pod", **msgspec.to_builtins(p)} for p in pods]
             + [{"kind": "PodDisruptionBudget", **msgspec.to_builtins(make_pdb("web", {"app": "web"}, 1))}])
    return {"apiVersion": "v1", "kind": "List", "items": items}


@st.composite
def hostile_lists(draw) -> bytes:
    """A List that is fine but for one thing of one class."""
    document = fleet()
    node, pod = document["items"][0], document["items"][2]
    harm = draw(st.sampled_from(["allocatable", "request", "overhead", "priority", "weight", "duplicate",
                                 "providerID", "not utf-8", "nesting"]))
    if harm == "allocatable":
        resource = draw(st.sampled_from(["cpu", "memory", "pods"]))
        node["status"]["allocatable"][resource] = draw(hostile_quantities)
    elif harm == "request":
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = draw(hostile_quantities)
    elif harm == "overhead":
        pod["spec"]["overhead"] = {"memory": draw(hostile_quantities)}
    elif harm == "priority":
        pod["spec"]["priority"] = draw(hostile_numbers)
    elif harm == "weight":
        terms = pod["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        terms[0]["weight"] = draw(hostile_numbers)
    elif harm == "duplicate":
        document["items"].append(copy.deepcopy(draw(st.sampled_from(document["items"]))))
    elif harm == "providerID":
        for item in document["items"][:2]:
            item["spec"]["providerID"] = "aws:///eu-west-1a/i-0123456789abcdef0"
    text = json.dumps(document).encode()
    if harm == "not utf-8":
        return text.replace(b'"od-1"', b'"od-\xff"', 1)
    if harm == "nesting":
        depth = draw(st.integers(1_000, 200_000))
        return text[:-2] + b", " + b"[" * depth + b"]" * depth + b"]}"
    return text


@st.composite
def hostile_events(draw) -> dict:
    event = json.loads((EVENTS / draw(st.sampled_from(SAMPLES))).read_text())
    harm = draw(st.sampled_from(["time", "instance", "health start"]))
    if harm == "time":
        event["time"] = draw(hostile_times)
    elif harm == "instance" and "instance-id" in event["detail"]:
        event["detail"]["instance-id"] = draw(hostile_ids)
    elif harm == "instance" and "EC2InstanceId" in event["detail"]:
        event["detail"]["EC2InstanceId"] = draw(hostile_ids)
    elif harm == "health start" and "startTime" in event["detail"]:
        event["detail"]["startTime"] = draw(st.sampled_from(["Fri, 31 Dec 9999 23:00:00 GMT", "soon", "",
                                                             "Mon, 01 Jan 1900 00:30:00 GMT"]))
    return event


def exits_cleanly(argv: list[str], capsys) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        assert err.startswith("spot-rebalancer: ") and err.count("\n") == 1, err


@settings(max_examples=60, deadline=HANG, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile_lists(), st.sampled_from(["plan", "census", "tick"]))
def test_hostile_lists_exit_2_with_one_line(tmp_path_factory, capsys, data, command):
    path = tmp_path_factory.mktemp("fuzz") / "list.json"
    path.write_bytes(data)
    exits_cleanly([command, "--from-file", str(path)], capsys)


@settings(max_examples=60, deadline=HANG, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile_events())
def test_hostile_events_are_event_errors_and_exit_2(tmp_path_factory, capsys, event):
    with contextlib.suppress(EventError):  # nothing but an EventError may come out of it
        parse_event(event)
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "event.json").write_text(json.dumps(event))
    (directory / "list.json").write_text(json.dumps(fleet()))
    exits_cleanly(["handle", "--event", str(directory / "event.json"),
                   "--from-file", str(directory / "list.json"), "--dry-run"], capsys)


@settings(max_examples=20, deadline=HANG, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["MAX_EVICTIONS_PER_CYCLE", "DRAIN_TIMEOUT_SECONDS", "MAX_PRIORITY",
                        "RECOMMENDATION_TTL_SECONDS"]),
       st.sampled_from([str(10**30), "9" * 5000, "-" + "9" * 5000, "1e3", "", " ", "0x10"]))
def test_hostile_settings_exit_2_naming_the_variable(tmp_path_factory, capsys, monkeypatch, name, value):
    path = tmp_path_factory.mktemp("fuzz") / "list.json"
    path.write_text(json.dumps(fleet()))
    with monkeypatch.context() as env:
        env.setenv(name, value)
        assert main(["plan", "--from-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"spot-rebalancer: {name}: ") and err.count("\n") == 1 and len(err) < 400, err
