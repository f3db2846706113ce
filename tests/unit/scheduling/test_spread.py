"""PodTopologySpread's filter, row by row from kube-scheduler's own test tables (the row id names the
Go test and its case): pkg/scheduler/framework/plugins/podtopologyspread/filtering_test.go, and
test/integration/scheduler/filters/filters_test.go for minDomains. As there, `zone` and `node` are
the topology keys, nodes node-a and node-b in zone1, node-x and node-y in zone2, and pods labelled
foo match the selector `foo exists`."""

import itertools

import msgspec
import pytest

from spot_rebalancer.objects import LabelSelector, LabelSelectorRequirement, Pod, TopologySpreadConstraint
from spot_rebalancer.scheduling.node_affinity import fits_required
from spot_rebalancer.scheduling.spread import domain_counts, hard_constraints, spread_filter
from tests.unit.builders import make_node, make_pod, requirement, taint, term, toleration

FOO = LabelSelector(match_expressions=[LabelSelectorRequirement(key="foo", operator="Exists")])
BAR = LabelSelector(match_expressions=[LabelSelectorRequirement(key="bar", operator="Exists")])
ZONES = {"node-a": "zone1", "node-b": "zone1", "node-x": "zone2", "node-y": "zone2"}
UNSCHEDULABLE = taint("node.kubernetes.io/unschedulable", "NoSchedule")


def nodes(*names, zoned=True, **extra):
    """Nodes labelled node=<name> and, with `zoned`, zone=<its zone>; `extra` maps a name to more
    labels, or "taints" to the names that carry the unschedulable taint."""
    tainted = extra.pop("taints", ())
    return [make_node(n, labels={"node": n, **({"zone": ZONES[n]} if zoned and n in ZONES else {}),
                                 **extra.get(n.replace("-", "_"), {})},
                      taints=[UNSCHEDULABLE] if n in tainted else []) for n in names]


def hard(max_skew, key, selector=FOO, **fields):
    return TopologySpreadConstraint(topology_key=key, max_skew=max_skew, when_unsatisfiable="DoNotSchedule",
                                    label_selector=selector, **fields)


def incoming(*constraints, labels=None, **kwargs):
    return make_pod("p", labels={"foo": ""} if labels is None else labels, spread=constraints, **kwargs)


def on(node, labels=None, namespace="default", deleting=False):
    """An existing pod on the node, labelled foo unless said otherwise."""
    labels = {"foo": ""} if labels is None else labels
    return make_pod(f"{node}-{next(_serial)}", node, namespace, labels=labels, deleting=deleting)


_serial = itertools.count()


def placed(spec):
    """Existing pods: "node:count" for that many labelled foo, or a pod."""
    pods = []
    for item in spec:
        if isinstance(item, str):
            node, count = item.split(":")
            pods.extend(on(node) for _ in range(int(count)))
        else:
            pods.append(item)
    return pods


def verdicts(pod: Pod, fleet, existing):
    by_node = [[p for p in existing if p.spec.node_name == n.metadata.name] for n in fleet]
    allowed = spread_filter(pod, fleet, by_node, [fits_required(pod, n) for n in fleet])
    return {n.metadata.name for n, ok in zip(fleet, allowed, strict=True) if ok}


ALL = ("node-a", "node-b", "node-x", "node-y")
SPREAD_2_1_0_3 = ("node-a:2", "node-b:1", "node-y:3")


@pytest.mark.parametrize(("pod", "fleet", "existing", "passing"), [
    (incoming(hard(1, "zone")), nodes(*ALL), (), set(ALL)),
    (incoming(hard(1, "zone", BAR)), nodes(*ALL), (), set(ALL)),
    (incoming(hard(1, "zone")), nodes(*ALL),
     (on("node-a", namespace="ns1"), on("node-a", namespace="ns2"), on("node-x"), on("node-y")),
     {"node-a", "node-b"}),
    (incoming(hard(1, "zone")), nodes(*ALL), ("node-a:2", "node-b:1", "node-y:3"), set(ALL)),
    (incoming(hard(1, "zone")),
     [*nodes("node-a"), make_node("node-b", labels={"zon": "zone1", "node": "node-b"}),
      *nodes("node-x", "node-y")],
     ("node-a:1", "node-b:1", "node-x:1", "node-y:1"), {"node-a"}),
    (incoming(hard(1, "rack")), nodes("node-a", "node-x"), (), set()),
    (incoming(hard(1, "node")), nodes(*ALL), SPREAD_2_1_0_3, {"node-x"}),
    (incoming(hard(2, "node")), nodes(*ALL), SPREAD_2_1_0_3, {"node-b", "node-x"}),
    (incoming(hard(1, "node"), labels={"bar": ""}), nodes(*ALL), SPREAD_2_1_0_3, {"node-b", "node-x"}),
    # Only node-a and node-y count (2/3): node-a fits; node-b and node-x pass spreading here, the
    # node affinity filter refuses them.
    (incoming(hard(1, "node"), required=[term(requirement("node", "In", "node-a", "node-y"))]),
     nodes(*ALL), SPREAD_2_1_0_3, {"node-a", "node-b", "node-x"}),
    (incoming(hard(1, "node")), nodes("node-a", "node-b", zoned=False),
     (on("node-a", deleting=True), on("node-b")), {"node-a"}),
], ids=[
    "TestSingleConstraint: no existing pods",
    "TestSingleConstraint: no existing pods, incoming pod doesn't match itself",
    "TestSingleConstraint: existing pods in a different namespace do not count",
    "TestSingleConstraint: pods spread across zones as 3/3, all nodes fit",
    "TestSingleConstraint: pods spread across zones as 1/2 due to absence of label 'zone' on node-b",
    "TestSingleConstraint: pod cannot be scheduled as all nodes don't have label 'rack'",
    "TestSingleConstraint: pods spread across nodes as 2/1/0/3, only node-x fits",
    "TestSingleConstraint: pods spread across nodes as 2/1/0/3, maxSkew is 2, node-b and node-x fit",
    "TestSingleConstraint: pods spread across nodes as 2/1/0/3, but pod doesn't match itself",
    "TestSingleConstraint: incoming pod has nodeAffinity, pods spread as 2/~1~/~0~/3, hence node-a fits",
    "TestSingleConstraint: terminating Pods should be excluded",
])
def test_single_constraint(pod, fleet, existing, passing):
    assert verdicts(pod, fleet, placed(existing)) == passing


FOO_BAR = {"foo": "", "bar": ""}


@pytest.mark.parametrize(("pod", "fleet", "existing", "passing"), [
    (incoming(hard(1, "zone"), hard(1, "node")), nodes(*ALL), SPREAD_2_1_0_3, {"node-x"}),
    (incoming(hard(1, "zone"), hard(1, "node")), nodes(*ALL), ("node-a:2", "node-b:1", "node-y:4"), set()),
    (incoming(hard(1, "zone"), hard(1, "node", BAR), labels=FOO_BAR), nodes(*ALL),
     (on("node-a"), on("node-y", {"bar": ""})), {"node-x"}),
    (incoming(hard(1, "zone"), hard(1, "node", BAR), labels=FOO_BAR), nodes(*ALL),
     (on("node-a"), on("node-x", {"bar": ""}), on("node-y", {"bar": ""})), set()),
    (incoming(hard(1, "zone"), hard(1, "node", BAR), labels=FOO_BAR), nodes(*ALL),
     (on("node-a"), on("node-a", FOO_BAR), on("node-y"), on("node-y", FOO_BAR), on("node-y")), {"node-b"}),
    (incoming(hard(1, "zone"), hard(1, "node", BAR), labels={"bar": ""}), nodes(*ALL),
     (on("node-a"), on("node-x", {"bar": ""}), on("node-y", {"bar": ""})), {"node-a", "node-b"}),
    (incoming(hard(1, "zone"), hard(1, "node")),
     [*nodes("node-a", "node-b"), make_node("node-x", labels={"zone": "zone2"}), *nodes("node-y")],
     (on("node-a"), on("node-y")), {"node-b"}),
], ids=[
    "TestMultipleConstraints: two Constraints on zone and node, spreads = [3/3, 2/1/0/3]",
    "TestMultipleConstraints: two Constraints on zone and node, spreads = [3/4, 2/1/0/4]",
    "TestMultipleConstraints: Constraints hold different labelSelectors, spreads = [1/0, 1/0/0/1]",
    "TestMultipleConstraints: Constraints hold different labelSelectors, spreads = [1/0, 0/0/1/1]",
    "TestMultipleConstraints: Constraints hold different labelSelectors, spreads = [2/3, 1/0/0/1]",
    "TestMultipleConstraints: Constraints hold different labelSelectors but pod doesn't match itself on "
    "'zone' constraint",
    "TestMultipleConstraints: two Constraints on zone and node, absence of label 'node' on node-x, "
    "spreads = [1/1, 1/0/0/1]",
])
def test_multiple_constraints(pod, fleet, existing, passing):
    assert verdicts(pod, fleet, placed(existing)) == passing


def test_fewer_domains_than_min_domains_make_the_global_minimum_zero():
    """TestPodTopologySpreadFilter (integration): pods spread across nodes as 2/2/1, maxSkew is 2, and
    the number of domains < minDomains, then the third node fits. Node affinity leaves node-0 out of
    the domains (and the node affinity filter refuses it)."""
    fleet = [make_node(f"node-{i}", labels={"node": f"node-{i}", "zone": f"zone-{i // 2}"}) for i in range(4)]
    existing = placed(("node-1:2", "node-2:2", "node-3:1"))
    not_node_0 = [term(requirement("node", "NotIn", "node-0"))]
    four = incoming(hard(2, "node", min_domains=4), required=not_node_0)
    assert verdicts(four, fleet, existing) - {"node-0"} == {"node-3"}
    # With minDomains met (3 domains, 1 the least) every node fits.
    assert verdicts(incoming(hard(2, "node", min_domains=3), required=not_node_0), fleet, existing) == {
        "node-0", "node-1", "node-2", "node-3"}


def counts(pod, fleet, existing):
    constraints = hard_constraints(pod)
    by_node = [[p for p in existing if p.spec.node_name == n.metadata.name] for n in fleet]
    return [domain_counts(c, constraints, pod, fleet, by_node, [fits_required(pod, n) for n in fleet])
            for c in constraints]


# Pods labelled bar: one on node-a, two on node-b; node-c (unschedulable-tainted, labelled bar) holds one
# unlabelled pod.
BAR_PODS = (on("node-a", {"bar": ""}), on("node-b", {"bar": ""}), on("node-b", {"bar": ""}), on("node-c", {}))


@pytest.mark.parametrize(("pod", "fleet", "existing", "expected"), [
    (incoming(hard(1, "node", BAR, node_taints_policy="Honor")),
     nodes("node-a", "node-b", "node-c", zoned=False, node_c={"bar": ""}, taints=("node-c",)), BAR_PODS,
     [{"node-a": 1, "node-b": 2}]),
    (incoming(hard(1, "node", BAR, node_taints_policy="Honor"),
              tolerations=[toleration("node.kubernetes.io/unschedulable", "Exists", effect="NoSchedule")]),
     nodes("node-a", "node-b", "node-c", zoned=False, node_c={"bar": ""}, taints=("node-c",)), BAR_PODS,
     [{"node-a": 1, "node-b": 2, "node-c": 0}]),
    (incoming(hard(1, "zone"), hard(1, "node", node_affinity_policy="Ignore"), node_selector={"foo": ""}),
     nodes("node-a", "node-b", "node-x", node_a={"foo": ""}, node_x={"foo": ""}),
     ("node-b:2", "node-x:1"), [{"zone1": 0, "zone2": 1}, {"node-a": 0, "node-b": 2, "node-x": 1}]),
    (incoming(hard(1, "zone", node_taints_policy="Honor"), hard(1, "node")),
     nodes("node-a", "node-b", "node-x", node_a={"foo": ""}, node_x={"foo": ""}, taints=("node-b",)),
     ("node-b:2", "node-x:1"), [{"zone1": 0, "zone2": 1}, {"node-a": 0, "node-b": 2, "node-x": 1}]),
    (incoming(hard(1, "zone", node_affinity_policy="Ignore"), hard(1, "node", node_taints_policy="Honor"),
              node_selector={"foo": ""}),
     nodes(*ALL, node_b={"foo": ""}, node_x={"foo": ""}, node_y={"foo": ""}, taints=("node-b",)),
     ("node-a:2", "node-x:2", "node-y:1"), [{"zone1": 2, "zone2": 3}, {"node-x": 2, "node-y": 1}]),
    (incoming(hard(1, "zone", match_label_keys=["bar"]), labels={"foo": "", "bar": "a"}), nodes(*ALL),
     (on("node-a"), on("node-a", {"foo": "", "bar": "a"}), on("node-b"),
      on("node-y", {"foo": "", "bar": "a"}), on("node-y", {"bar": ""})),
     [{"zone1": 1, "zone2": 1}]),
    (incoming(hard(1, "zone", LabelSelector(), match_label_keys=["foo"]), labels={"foo": "a"}), nodes(*ALL),
     [on(node, {"foo": "a"}) for node in ("node-a", "node-a", "node-b", "node-y", "node-y")],
     [{"zone1": 3, "zone2": 2}]),
], ids=[
    "TestPreFilterState: NodeTaintsPolicy honored",
    "TestPreFilterState: NodeTaintsPolicy honored with tolerated taints",
    "TestPreFilterState: two node inclusion Constraints, zone: honor/ignore, node: ignore/ignore",
    "TestPreFilterState: two node inclusion Constraints, zone: honor/honor, node: honor/ignore",
    "TestPreFilterState: two node inclusion Constraints, zone: ignore/ignore, node: honor/honor",
    "TestPreFilterState: matchLabelKeys ANDed with LabelSelector when LabelSelector isn't empty",
    "TestPreFilterState: matchLabelKeys ANDed with LabelSelector when LabelSelector is empty",
])
def test_pre_filter_state(pod, fleet, existing, expected):
    assert counts(pod, fleet, placed(existing)) == expected


def test_schedule_anyway_constraints_never_filter():
    pod = incoming(TopologySpreadConstraint(topology_key="rack", when_unsatisfiable="ScheduleAnyway",
                                            label_selector=FOO))
    assert verdicts(pod, nodes(*ALL), []) == set(ALL)


def test_constraints_decode_from_the_api():
    pod = msgspec.json.decode(b'{"spec": {"topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "zone",'
                              b' "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2,'
                              b' "labelSelector": {"matchLabels": {"app": "web"}}}]}}', type=Pod)
    (constraint,) = pod.spec.topology_spread_constraints
    assert (constraint.max_skew, constraint.topology_key, constraint.when_unsatisfiable,
            constraint.min_domains, constraint.label_selector.match_labels) == (
        2, "zone", "ScheduleAnyway", 2, {"app": "web"})
