import pytest

from spot_rebalancer.objects import (
    NodeSelector,
    ObjectMeta,
    PersistentVolume,
    PersistentVolumeClaim,
    PersistentVolumeClaimSpec,
    PersistentVolumeSpec,
    VolumeNodeAffinity,
)
from spot_rebalancer.scheduling.volume_zone import ZONE_LABEL, bound_volumes, volume_allows, zone_allows
from tests.unit.builders import make_node, make_pod, requirement, term

IN_A = make_node("a1", labels={ZONE_LABEL: "eu-west-1a"})
ALSO_A = make_node("a2", labels={ZONE_LABEL: "eu-west-1a"})
IN_B = make_node("b1", labels={ZONE_LABEL: "eu-west-1b"})
NO_ZONE = make_node("x")


@pytest.mark.parametrize(("claims", "source", "target", "expected"), [
    ((), IN_A, IN_B, True),  # no claims, no constraint
    ((), NO_ZONE, IN_B, True),
    (("data",), IN_A, ALSO_A, True),
    (("data",), IN_A, IN_B, False),
    (("data",), IN_A, NO_ZONE, False),
    # Without a zone on the current node, nothing is known to be safe.
    (("data",), NO_ZONE, NO_ZONE, False),
], ids=["no claims", "no claims and no zone", "claim within its zone", "claim to another zone",
        "claim to a node without a zone", "claim from a node without a zone"])
def test_zone_allows(claims, source, target, expected):
    assert zone_allows(make_pod("p", claims=claims), source, target) is expected


def volume(name, *terms, labels=None):
    affinity = VolumeNodeAffinity(required=NodeSelector(node_selector_terms=list(terms))) if terms else None
    return PersistentVolume(metadata=ObjectMeta(name=name, labels=dict(labels or {})),
                            spec=PersistentVolumeSpec(node_affinity=affinity))


def claim(name, volume_name, namespace="default"):
    return PersistentVolumeClaim(metadata=ObjectMeta(name=name, namespace=namespace),
                                 spec=PersistentVolumeClaimSpec(volume_name=volume_name))


EBS_ZONE = "topology.ebs.csi.aws.com/zone"
EBS_IN_B = volume("pv-ebs", term(requirement(EBS_ZONE, "In", "eu-west-1b")))
LOCAL_ON_A1 = volume("pv-local", term(requirement("kubernetes.io/hostname", "In", "a1")))
LABELLED_A_OR_B = volume("pv-old", labels={ZONE_LABEL: "eu-west-1a__eu-west-1b"})
B_WITH_EBS = make_node("b2", labels={ZONE_LABEL: "eu-west-1b", EBS_ZONE: "eu-west-1b"})
A_WITH_EBS = make_node("a3", labels={ZONE_LABEL: "eu-west-1a", EBS_ZONE: "eu-west-1a"})


@pytest.mark.parametrize(("pv", "target", "expected"), [
    (EBS_IN_B, B_WITH_EBS, True),
    (EBS_IN_B, A_WITH_EBS, False),
    (EBS_IN_B, IN_B, False),  # the driver's topology key is missing on the node
    (LOCAL_ON_A1, IN_A, True),
    (LOCAL_ON_A1, ALSO_A, False),
    (LABELLED_A_OR_B, IN_B, True),
    (LABELLED_A_OR_B, make_node("c1", labels={ZONE_LABEL: "eu-west-1c"}), False),
    (LABELLED_A_OR_B, NO_ZONE, True),
    (volume("pv-anywhere"), NO_ZONE, True),
], ids=["an EBS volume's zone key matches", "an EBS volume in another zone",
        "node without the EBS driver's topology key",
        "TestVolumeBinding: all bound with local volumes", "a local volume on another node",
        "TestMultiZone: zone label matched", "TestSingleZone: zone label doesn't match",
        "TestSingleZone: node without labels", "PV without affinity or zone goes anywhere"])
def test_a_bound_volume_decides_where_its_pod_may_go(pv, target, expected):
    volumes = bound_volumes([pv], [claim("data", pv.metadata.name)])
    pod = make_pod("p", claims=["data"])
    assert volume_allows(pv, target) is expected
    # Its own rule replaces the conservative one: from a node without a zone, too.
    assert zone_allows(pod, NO_ZONE, target, volumes) is expected


def test_an_unbound_or_unlisted_claim_keeps_the_conservative_zone_rule():
    pod = make_pod("p", claims=["data"])
    unbound = bound_volumes([EBS_IN_B], [claim("data", "")])
    other_namespace = bound_volumes([EBS_IN_B], [claim("data", "pv-ebs", namespace="team")])
    for volumes in (unbound, other_namespace, None):
        assert zone_allows(pod, IN_A, ALSO_A, volumes) is True
        assert zone_allows(pod, IN_A, B_WITH_EBS, volumes) is False
