import pytest

from spot_rebalancer.scheduling.volume_zone import ZONE_LABEL, zone_allows
from tests.unit.builders import make_node, make_pod

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
