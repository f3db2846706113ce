import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spot_rebalancer.objects import ContainerStatus, PodCondition, ResourceRequirements
from spot_rebalancer.quantity import QuantityError, milli
from spot_rebalancer.scheduling.resources import (
    ZERO,
    Resources,
    held_requests,
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


# --- pod-level resources and in-place resize, rows from kube-scheduler's own tables -------------------
# component-helpers' resource helpers, which NodeResourcesFit calls: TestPodLevelResourceRequests and
# TestPodResourceRequests (in Mi and m, as there; plus the pod slot the scheduler also counts).

MI = 2**20


def with_pod_level(pod, requests):
    return msgspec.structs.replace(pod, spec=msgspec.structs.replace(
        pod.spec, resources=ResourceRequirements(requests=requests)))


def with_statuses(pod, statuses, init_statuses=(), conditions=(), resize=""):
    status = msgspec.structs.replace(pod.status, container_statuses=list(statuses),
                                     init_container_statuses=list(init_statuses),
                                     conditions=[*pod.status.conditions, *conditions], resize=resize)
    return msgspec.structs.replace(pod, status=status)


@pytest.mark.parametrize(("pod_level", "pod_kwargs", "expected"), [
    ({"memory": "2Mi"}, {"containers": []}, Resources(memory=2 * MI, pods=1)),
    ({"memory": "2Mi"}, {"containers": [container({"cpu": "2m"})]}, Resources(cpu=2, memory=2 * MI, pods=1)),
    ({"storage": "2Mi"}, {"containers": [container({"storage": "3Mi"})]},
     Resources(pods=1, extended=(("storage", 3 * MI),))),
    ({"storage": "2Mi"}, {"containers": [container({"memory": "3Mi"})]}, Resources(memory=3 * MI, pods=1)),
    ({"memory": "6Mi", "cpu": "8m"}, {"containers": [container({"memory": "3Mi", "cpu": "2m"})]},
     Resources(cpu=8, memory=6 * MI, pods=1)),
    ({"memory": "15Mi", "cpu": "18m"},
     {"containers": [container({"memory": "3Mi", "cpu": "2m"})],
      "init_containers": [container({"memory": "5Mi", "cpu": "4m"}, restart_policy="Always"),
                          container({"memory": "6Mi", "cpu": "8m"})]},
     Resources(cpu=18, memory=15 * MI, pods=1)),
    # Hugepages are a pod-level resource too; the pod's overhead still comes on top.
    ({"hugepages-2Mi": "4Mi"},
     {"containers": [container({"hugepages-2Mi": "2Mi"})], "overhead": {"cpu": "1"}},
     Resources(cpu=1000, pods=1, extended=(("hugepages-2Mi", 4 * MI),))),
], ids=["TestPodLevelResourceRequests: pod level memory resource with SkipPodLevelResources false",
        "TestPodLevelResourceRequests: pod level memory and container level cpu resources",
        "TestPodLevelResourceRequests: pod level unsupported resources set at both pod-level and "
        "container-level",
        "TestPodLevelResourceRequests: pod level unsupported resources set at pod-level",
        "TestPodLevelResourceRequests: both container-level and pod-level resources set",
        "TestPodLevelResourceRequests: pod-level resources, container-level resources, init and sidecar "
        "container set", "hugepages at pod level, overhead on top"])
def test_pod_level_requests_replace_the_containers_sum(pod_level, pod_kwargs, expected):
    pod = with_pod_level(make_pod("p", **pod_kwargs), pod_level)
    assert pod_requests(pod) == expected
    assert held_requests(pod) == expected


def resized_pod(spec_cpu, status_cpu=None, allocated_cpu=None, **kwargs):
    pod = make_pod("p", containers=[container({"cpu": spec_cpu}, name="container-1")])
    status = ContainerStatus(
        name="container-1", allocated_resources={"cpu": allocated_cpu} if allocated_cpu else {},
        resources=ResourceRequirements(requests={"cpu": status_cpu}) if status_cpu else None)
    return with_statuses(pod, [status], **kwargs)


INFEASIBLE = PodCondition(type="PodResizePending", status="True", reason="Infeasible")
DEFERRED = PodCondition(type="PodResizePending", status="True", reason="Deferred")


@pytest.mark.parametrize(("pod", "held"), [
    (resized_pod("4", status_cpu="2", conditions=[INFEASIBLE]), 2000),
    (resized_pod("4", status_cpu="2", resize="Infeasible"), 2000),
    (resized_pod("4", status_cpu="2"), 4000),
    (resized_pod("1", status_cpu="2"), 2000),
    (resized_pod("1", allocated_cpu="3"), 3000),
    (resized_pod("1", status_cpu="2", allocated_cpu="3", conditions=[DEFERRED]), 3000),
    (resized_pod("4", allocated_cpu="1", status_cpu="1", conditions=[INFEASIBLE]), 1000),
], ids=["TestPodResourceRequests (1.33+, the PodResizePending condition): resized, infeasible",
        "TestPodResourceRequests (1.32, status.resize): resized, infeasible",
        "TestPodResourceRequests: resized, no resize status",
        "scaled down in the spec, not yet actuated: the status counts",
        "allocated above the spec counts",
        "deferred: the largest of spec, actuated and allocated",
        "infeasible: the spec is left out"])
def test_a_bound_pod_holds_the_largest_of_spec_status_and_allocated_while_resizing(pod, held):
    assert held_requests(pod) == Resources(cpu=held, pods=1)
    # A replacement is a new pod: only its spec counts.
    assert pod_requests(pod) == Resources(cpu=milli(pod.spec.containers[0].resources.requests["cpu"]), pods=1)


_EXTENDED = st.lists(st.tuples(st.sampled_from(["nvidia.com/gpu", "hugepages-2Mi", "example.com/x"]),
                               st.integers(-3, 3)), unique_by=lambda pair: pair[0], max_size=3)
_RESOURCES = st.builds(Resources, st.integers(-10, 10), st.integers(-10, 10), st.integers(0, 5),
                       st.integers(0, 3), _EXTENDED.map(lambda pairs: tuple(sorted(pairs))))


@given(st.lists(_RESOURCES, max_size=6))
def test_a_total_is_the_sum_one_by_one(many):
    one_by_one = ZERO
    for resources in many:
        one_by_one = one_by_one + resources
    assert Resources.total(many) == one_by_one
