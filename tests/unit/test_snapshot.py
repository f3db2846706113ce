"""The snapshot reader's one-pass decode against decoding each item by its kind: the same snapshot,
whether or not the List also holds kinds the reader ignores; and the collector left as it was."""

from __future__ import annotations

import gc

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.gen import write_list
from spot_rebalancer.objects import (
    Namespace,
    Node,
    ObjectMeta,
    PersistentVolume,
    PersistentVolumeClaim,
    PersistentVolumeClaimSpec,
    Pod,
    PodDisruptionBudget,
)
from spot_rebalancer.snapshot import ClusterSnapshot, SnapshotError, read_list
from tests.unit.builders import PREFER_SPOT, make_node, make_pdb, make_pod, spot_node, taint, toleration

TYPES = {"Node": Node, "Pod": Pod, "PodDisruptionBudget": PodDisruptionBudget,
         "PersistentVolume": PersistentVolume, "PersistentVolumeClaim": PersistentVolumeClaim,
         "Namespace": Namespace}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"ports": [{"port": 80}]}}


def document(items: list[dict]) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                         "items": items})


def kind_by_kind(items: list[dict]) -> ClusterSnapshot:
    """The reference: each item of a known kind converted to its type on its own."""
    by_kind: dict[str, list] = {kind: [] for kind in TYPES}
    for item in items:
        if item.get("kind") in TYPES:
            by_kind[item["kind"]].append(msgspec.convert(item, TYPES[item["kind"]]))
    return ClusterSnapshot(by_kind["Node"], by_kind["Pod"], by_kind["PodDisruptionBudget"],
                           by_kind["PersistentVolume"], by_kind["PersistentVolumeClaim"],
                           by_kind["Namespace"])


def test_a_generated_cluster_reads_the_same_with_or_without_other_kinds(tmp_path):
    path = tmp_path / "list.json"
    write_list(path, nodes=6, pods_per_node=12)
    items = orjson.loads(path.read_bytes())["items"]

    snapshot = read_list(path.read_bytes())

    assert (len(snapshot.nodes), len(snapshot.pods)) == (6, 72) and snapshot.pdbs
    assert snapshot == kind_by_kind(items)
    assert read_list(document([SERVICE, *items, SERVICE])) == snapshot
    assert not gc.is_tracked(snapshot.pods[0]), "snapshot structs are never walked by the collector"


def api_json(obj) -> dict:
    return {"kind": type(obj).__name__, **msgspec.to_builtins(obj)}


node_items = st.builds(lambda name, spot, tainted: api_json(
    (spot_node if spot else make_node)(name, taints=[taint("dedicated")] if tainted else [])),
    st.sampled_from(["a", "b", "c"]), st.booleans(), st.booleans())
pod_items = st.builds(lambda name, node, preferred, tolerant, ready: api_json(make_pod(
    name, node, preferred=[PREFER_SPOT] if preferred else [], ready=ready,
    tolerations=[toleration("dedicated", "Exists")] if tolerant else [])),
    st.sampled_from(["p", "q"]), st.sampled_from(["a", "b", ""]), st.booleans(), st.booleans(), st.booleans())
pdb_items = st.builds(lambda allowed: api_json(make_pdb("web", {"app": "web"}, allowed)), st.integers(0, 2))
volume_items = st.builds(lambda name, bound: api_json(PersistentVolumeClaim(
    metadata=ObjectMeta(name=name, namespace="default"),
    spec=PersistentVolumeClaimSpec(volume_name="pv-1" if bound else ""))), st.sampled_from(["data", "logs"]),
    st.booleans()) | st.just(api_json(PersistentVolume(metadata=ObjectMeta(name="pv-1"))))
namespace_items = st.builds(lambda name, labelled: api_json(Namespace(
    metadata=ObjectMeta(name=name, labels={"team": "shop"} if labelled else {}))),
    st.sampled_from(["shop", "lab"]), st.booleans())
other_items = st.sampled_from([SERVICE, {"kind": "ConfigMap", "data": {"a": "b"}}, {"metadata": {}}])


def identity(item: dict) -> tuple:
    """What the API server keeps unique: one object per kind, namespace and name."""
    meta = item.get("metadata", {})
    return item.get("kind"), meta.get("namespace"), meta.get("name") or id(item)


@settings(max_examples=150, deadline=None)
@given(st.lists(node_items | pod_items | pdb_items | volume_items | namespace_items | other_items,
                max_size=12, unique_by=identity))
def test_any_mix_of_items_reads_as_each_item_by_its_kind(items):
    assert read_list(document(items)) == kind_by_kind(items)


@pytest.mark.parametrize(("items", "problem"), [
    ([api_json(make_node("a")), api_json(make_node("a"))], "node a is listed twice"),
    ([api_json(make_pod("p", "a")), api_json(make_pod("p", "b"))], "pod default/p is listed twice"),
    ([api_json(make_pdb("web", {"app": "web"}, 1))] * 2, "PodDisruptionBudget default/web is listed twice"),
    ([api_json(make_node("a", provider_id="aws:///eu-west-1a/i-0123456789abcdef0")),
      api_json(make_node("b", provider_id="aws:///eu-west-1a/i-0123456789abcdef0"))],
     "nodes a and b are both i-0123456789abcdef0"),
    ([api_json(Namespace(metadata=ObjectMeta(name="shop")))] * 2, "namespace shop is listed twice"),
], ids=["a node twice", "a pod twice", "a budget twice", "two nodes of one instance", "a namespace twice"])
def test_an_object_listed_twice_is_refused_by_name(items, problem):
    with pytest.raises(SnapshotError, match=f"^in\\.json: {problem}$"):
        read_list(document(items), source="in.json")


def test_bytes_that_are_not_utf8_or_nest_too_deeply_are_refused_with_the_source_named():
    with pytest.raises(SnapshotError, match=r"^in\.json: not UTF-8 text"):
        read_list(b'{"kind": "List", "items": [{"kind": "Node", "metadata": {"name": "\xff"}}]}', "in.json")
    with pytest.raises(SnapshotError, match=r"^in\.json: nested too deeply"):
        read_list(b'{"kind": "List", "items": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "in.json")


@pytest.mark.parametrize(("field", "value", "path"), [
    ("priority", 2**31, "spec.priority"),
    ("weight", 0, "weight"),
    ("weight", 101, "weight"),
], ids=["priority past int32", "affinity weight 0", "affinity weight past 100"])
def test_values_the_api_server_refuses_are_refused_with_their_field(field, value, path):
    pod = api_json(make_pod("p", "a", preferred=[PREFER_SPOT]))
    if field == "priority":
        pod["spec"]["priority"] = value
    else:
        terms = pod["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        terms[0]["weight"] = value
    with pytest.raises(SnapshotError, match=f"item 0: .* - at `\\$.*{path}"):
        read_list(document([pod]))


def test_a_bad_item_is_named_by_its_index_and_other_kinds_are_not_checked():
    bad_pod = {"kind": "Pod", "metadata": {"name": 7}}
    expected = r"^in\.json: item 1: Expected `str`, got `int` - at `\$\.metadata\.name`"
    with pytest.raises(SnapshotError, match=expected):
        read_list(document([SERVICE, bad_pod]), source="in.json")
    assert read_list(document([{"kind": "Service", "metadata": {"name": 7}}])) == ClusterSnapshot()


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_it_was_even_after_an_error(enabled):
    was_enabled = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        read_list(document([api_json(make_node("a"))]))
        assert gc.isenabled() is enabled
        with pytest.raises(SnapshotError):
            read_list(b'{"kind": "Pod"}')
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was_enabled else gc.disable()
