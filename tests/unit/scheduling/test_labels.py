import pytest

from spot_rebalancer.scheduling.labels import selector_matches
from tests.unit.builders import selector

LABELS = {"app": "web", "tier": "front"}


@pytest.mark.parametrize(("label_selector", "expected"), [
    (None, False),  # a missing selector selects nothing
    (selector(), True),  # an empty one selects everything
    (selector({"app": "web"}), True),
    (selector({"app": "web", "tier": "back"}), False),
    (selector({}, ("tier", "In", ["front", "back"])), True),
    (selector({"app": "web"}, ("tier", "NotIn", ["front"])), False),
    (selector({"app": "web"}, ("canary", "DoesNotExist", [])), True),
], ids=["missing selector selects nothing", "empty selector selects everything", "matching labels",
        "one label differs", "in expression holds", "not in expression fails", "does not exist holds"])
def test_selector(label_selector, expected):
    assert selector_matches(label_selector, LABELS) is expected
