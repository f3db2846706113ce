import pytest

from spot_rebalancer.quantity import QuantityError
from spot_rebalancer.scheduling.resources import (
    Resources,
    is_terminal,
    node_allocatable,
    pod_requests,
    shortfall,
)
from tests.unit.builders import container, make_node, make_pod

GI = 2**30


def test_from_list_counts_cpu_in_millicores_and_the_rest_in_units():
    resources = Resources.from_list({"cpu": "1500m", "memory": "1Gi", "ephemeral-storage": "2G",
                                     "pods": "110", "nvidia.com/gpu": "1", "hugepages-2Mi": "4Mi"})
    assert resources == Resources(cpu=1500, memory=GI, ephemeral_storage=2 * 10**9, pods=110,
                                  extended=(("hugepages-2Mi", 4 * 2**20), ("nvidia.com/gpu", 1)))


def test_from_list_answers_alike_for_the_same_list_in_any_order_and_refuses_bad_ones_every_time():
    """It is memoised per list: a repeat, or the same items in another order, must not change the
    answer, and an error must not be remembered as an answer."""
    items = [("memory", "1Gi"), ("cpu", "1500m"), ("nvidia.com/gpu", 2), ("example.com/a", "3")]
    first = Resources.from_list(dict(items))
    assert Resources.from_list(dict(items)) == first == Resources.from_list(dict(reversed(items)))
    assert first == Resources(cpu=1500, memory=GI, extended=(("example.com/a", 3), ("nvidia.com/gpu", 2)))
    for _ in range(2):
        with pytest.raises(QuantityError):
            Resources.from_list({"cpu": "lots"})


def test_pod_requests_tell_apart_pods_whose_containers_ask_alike_in_different_roles():
    """Memoised per set of container requests: the same requests as an app container, a sidecar or
    a plain init step must still give each its own answer, however often asked."""
    app = {"cpu": "500m"}
    for _ in range(2):
        assert requests_of(containers=[container(app), container(app)]) == Resources(cpu=1000, pods=1)
        assert requests_of(containers=[container(app)], init_containers=[container(app)]) \
            == Resources(cpu=500, pods=1)
        assert requests_of(containers=[container(app)],
                           init_containers=[container(app, restart_policy="Always")]) \
            == Resources(cpu=1000, pods=1)
        assert requests_of(containers=[container(app)], overhead=app) == Resources(cpu=1000, pods=1)


def test_arithmetic_is_per_resource_and_extended_by_name():
    a = Resources(cpu=100, memory=5, extended=(("gpu", 1),))
    b = Resources(cpu=50, memory=7, extended=(("fpga", 2),))
    assert a + b == Resources(cpu=150, memory=12, extended=(("fpga", 2), ("gpu", 1)))
    assert a - b == Resources(cpu=50, memory=-2, extended=(("fpga", -2), ("gpu", 1)))
    assert a.max(b) == Resources(cpu=100, memory=7, extended=(("fpga", 2), ("gpu", 1)))


def requests_of(**kwargs):
    return pod_requests(make_pod("p", **kwargs))


@pytest.mark.parametrize(("pod_kwargs", "expected"), [
    ({"containers": []}, Resources(pods=1)),
    ({"containers": [container({"cpu": "100m", "memory": "1Gi"}), container({"cpu": "250m"})]},
     Resources(cpu=350, memory=GI, pods=1)),
    # A regular init container needing more than the app phase sets the pod's need.
    ({"containers": [container({"cpu": "100m"})], "init_containers": [container({"cpu": "1"})]},
     Resources(cpu=1000, pods=1)),
    # ... resource by resource.
    ({"containers": [container({"cpu": "100m", "memory": "2Gi"})],
      "init_containers": [container({"cpu": "1", "memory": "1Gi"})]},
     Resources(cpu=1000, memory=2 * GI, pods=1)),
    # Init containers run one at a time: the heaviest counts, not their sum.
    ({"containers": [], "init_containers": [container({"cpu": "300m"}), container({"cpu": "200m"})]},
     Resources(cpu=300, pods=1)),
    # A native sidecar adds to the app containers ...
    ({"containers": [container({"cpu": "100m"})],
      "init_containers": [container({"cpu": "50m"}, restart_policy="Always")]},
     Resources(cpu=150, pods=1)),
    # ... and to every init container started after it, but not to those before it.
    ({"containers": [container({"cpu": "100m"})],
      "init_containers": [container({"cpu": "400m"}), container({"cpu": "50m"}, restart_policy="Always"),
                          container({"cpu": "300m"})]},
     Resources(cpu=400, pods=1)),
    ({"containers": [container({"cpu": "100m"})],
      "init_containers": [container({"cpu": "50m"}, restart_policy="Always"), container({"cpu": "400m"})]},
     Resources(cpu=450, pods=1)),
    # Overhead comes on top of everything.
    ({"requests": {"cpu": "100m"}, "overhead": {"cpu": "10m", "memory": "64Mi"}},
     Resources(cpu=110, memory=64 * 2**20, pods=1)),
    ({"requests": {"nvidia.com/gpu": "2"}}, Resources(pods=1, extended=(("nvidia.com/gpu", 2),))),
], ids=["no containers", "containers add up", "a heavier init container sets the need",
        "init containers count resource by resource", "the heaviest init container counts",
        "a native sidecar adds to the app", "a sidecar leaves earlier init containers alone",
        "a sidecar adds to later init containers", "overhead on top", "extended resource"])
def test_pod_requests(pod_kwargs, expected):
    assert requests_of(**pod_kwargs) == expected


def test_node_allocatable():
    node = make_node("n", allocatable={"cpu": "3920m", "memory": "15Gi", "pods": "58"})
    assert node_allocatable(node) == Resources(cpu=3920, memory=15 * GI, pods=58)


@pytest.mark.parametrize(("phase", "expected"), [
    ("Running", False), ("Pending", False), ("Succeeded", True), ("Failed", True), ("Unknown", False),
])
def test_terminal_pods_hold_nothing(phase, expected):
    assert is_terminal(make_pod("p", phase=phase)) is expected


@pytest.mark.parametrize(("requests", "free", "short"), [
    (Resources(cpu=500, pods=1), Resources(cpu=500, pods=1), []),
    (Resources(cpu=501, pods=1), Resources(cpu=500, pods=1), ["cpu"]),
    (Resources(memory=2, pods=1), Resources(memory=1, pods=0), ["memory", "pods"]),
    (Resources(ephemeral_storage=2, pods=1), Resources(pods=1), ["ephemeral-storage"]),
    # What the pod does not ask for is not checked, even on an overcommitted node.
    (Resources(cpu=100, pods=1), Resources(cpu=200, memory=-5, pods=1), []),
    (Resources(pods=1, extended=(("gpu", 1),)), Resources(pods=1), ["gpu"]),
    (Resources(pods=1, extended=(("gpu", 1),)), Resources(pods=1, extended=(("gpu", 1),)), []),
    (Resources(pods=1, extended=(("gpu", 0),)), Resources(pods=1), []),
], ids=["exact fit", "cpu short", "memory and pods short", "ephemeral storage short",
        "unrequested resources are not checked", "extended resource missing", "extended resource fits",
        "zero extended request"])
def test_shortfall(requests, free, short):
    assert shortfall(requests, free) == short
