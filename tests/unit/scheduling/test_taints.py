import pytest

from spot_rebalancer.scheduling.taints import tolerates, untolerated_taint
from tests.unit.builders import taint, toleration

SPOT = taint("spot", "NoSchedule", "true")


@pytest.mark.parametrize(("tol", "expected"), [
    (toleration("spot", "Equal", "true", "NoSchedule"), True),
    (toleration("spot", "Equal", "false", "NoSchedule"), False),
    (toleration("spot", "Exists", effect="NoSchedule"), True),
    (toleration("spot", "Exists"), True),  # an empty effect matches every effect
    (toleration("spot", "Exists", effect="NoExecute"), False),
    (toleration("other", "Exists"), False),
    (toleration("", "Exists"), True),  # an empty key with Exists tolerates everything
    (toleration("spot", "", "true"), True),  # an empty operator means Equal
    (toleration("spot", "", ""), False),
    (toleration("spot", "Gte", "true"), False),  # operators it does not know tolerate nothing
], ids=["equal with the value", "equal with another value", "exists with the effect",
        "exists with any effect", "exists with another effect", "another key",
        "empty key tolerates everything", "empty operator means equal", "empty operator with another value",
        "unknown operator"])
def test_tolerates(tol, expected):
    assert tolerates(tol, SPOT) is expected


@pytest.mark.parametrize(("taints", "tolerations", "blocking"), [
    ([], [], None),
    ([SPOT], [], SPOT),
    ([SPOT], [toleration("spot", "Exists")], None),
    # PreferNoSchedule never keeps a pod off a node.
    ([taint("busy", "PreferNoSchedule")], [], None),
    ([taint("gone", "NoExecute")], [], taint("gone", "NoExecute")),
    ([SPOT, taint("gpu", "NoSchedule")], [toleration("spot", "Exists")], taint("gpu", "NoSchedule")),
    ([SPOT, taint("gpu", "NoSchedule")], [toleration(operator="Exists")], None),
], ids=["no taints", "untolerated taint", "tolerated taint", "prefer no schedule never blocks",
        "no execute blocks", "the second taint untolerated", "wildcard toleration"])
def test_untolerated_taint(taints, tolerations, blocking):
    assert untolerated_taint(tolerations, taints) == blocking
