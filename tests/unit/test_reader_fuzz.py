"""Fuzzing the snapshot reader and the CLI with arbitrary JSON: a typed error naming the input or
a snapshot, never another exception; the CLI exits 2 with a message."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spot_rebalancer.cli import main
from spot_rebalancer.snapshot import SnapshotError, read_list

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=20)
fields = st.sampled_from(["metadata", "spec", "status", "items", "kind", "name", "labels", "nodeName",
                          "containers", "resources", "requests", "taints", "affinity", "providerID"])
kinds = st.sampled_from(["Pod", "Node", "PodDisruptionBudget", "Service", "", 7])
items = st.dictionaries(fields, json_values, max_size=5).flatmap(
    lambda item: kinds.map(lambda kind: {**item, "kind": kind}))
documents = (st.fixed_dictionaries({"kind": st.sampled_from(["List", "PodList", "Pod", 3]),
                                    "items": st.lists(items, max_size=4) | json_values})
             | json_values)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_the_reader_returns_a_snapshot_or_a_snapshot_error_naming_the_source(document):
    try:
        snapshot = read_list(json.dumps(document), source="fuzz.json")
    except SnapshotError as exc:
        assert str(exc).startswith("fuzz.json: ")
    else:
        assert all(type(n).__name__ == "Node" for n in snapshot.nodes)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_the_reader_survives_arbitrary_bytes(data):
    try:
        read_list(data, source="bytes")
    except SnapshotError as exc:
        assert str(exc).startswith("bytes: ")


# capsys is read (and so emptied) in every example, which is all the reset it needs.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents)
@example({"kind": "Pod", "items": []})
def test_the_cli_exits_2_with_a_message_on_bad_lists(tmp_path_factory, capsys, document):
    path = tmp_path_factory.mktemp("fuzz") / "list.json"
    path.write_text(json.dumps(document))
    code = main(["census", "--from-file", str(path)])
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        assert err.startswith("spot-rebalancer: ") and str(path) in err
