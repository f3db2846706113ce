import pytest

from spot_rebalancer.objects import TopologySpreadConstraint
from spot_rebalancer.scheduling.spread import spread_allows, unsupported_spread
from spot_rebalancer.scheduling.volume_zone import ZONE_LABEL
from tests.unit.builders import make_node, make_pod

IN_A = make_node("a1", labels={ZONE_LABEL: "a"})
ALSO_A = make_node("a2", labels={ZONE_LABEL: "a"})
IN_B = make_node("b1", labels={ZONE_LABEL: "b"})
NO_ZONE = make_node("x")


def spread(key=ZONE_LABEL, when="DoNotSchedule", min_domains=None):
    return TopologySpreadConstraint(topology_key=key, max_skew=1, when_unsatisfiable=when,
                                    min_domains=min_domains)


def pod_with(*constraints):
    pod = make_pod("p")
    pod.spec.topology_spread_constraints = list(constraints)
    return pod


@pytest.mark.parametrize(("constraints", "source", "target", "expected"), [
    ((), IN_A, IN_B, True),
    ((spread(),), IN_A, ALSO_A, True),
    ((spread(),), IN_A, IN_B, False),
    ((spread(),), IN_A, NO_ZONE, False),
    ((spread(),), NO_ZONE, NO_ZONE, False),
    # ScheduleAnyway only scores.
    ((spread(when="ScheduleAnyway"),), IN_A, IN_B, True),
    # Every blocking constraint's domain must be kept.
    ((spread(), spread("pool")), IN_A, ALSO_A, False),
], ids=["no constraints", "same zone", "other zone", "target without a zone", "neither has a zone",
        "schedule anyway only scores", "every constraint must hold"])
def test_spread_allows(constraints, source, target, expected):
    assert spread_allows(pod_with(*constraints), source, target) is expected


@pytest.mark.parametrize(("constraints", "reason"), [
    ((), None),
    ((spread(),), None),
    ((spread("kubernetes.io/hostname"),), "topology spread over nodes"),
    ((spread("kubernetes.io/hostname", when="ScheduleAnyway"),), None),
    ((spread(min_domains=3),), f"topology spread over {ZONE_LABEL} with minDomains"),
], ids=["no constraints", "zone spread", "hostname spread", "hostname spread schedule anyway", "min domains"])
def test_unsupported_spread(constraints, reason):
    assert unsupported_spread(pod_with(*constraints)) == reason


def test_constraints_decode_from_the_api():
    import msgspec

    from spot_rebalancer.objects import Pod

    pod = msgspec.json.decode(b'{"spec": {"topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "zone",'
                              b' "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2,'
                              b' "labelSelector": {"matchLabels": {"app": "web"}}}]}}', type=Pod)
    (constraint,) = pod.spec.topology_spread_constraints
    assert (constraint.max_skew, constraint.topology_key, constraint.when_unsatisfiable,
            constraint.min_domains, constraint.label_selector.match_labels) == (
        2, "zone", "ScheduleAnyway", 2, {"app": "web"})
