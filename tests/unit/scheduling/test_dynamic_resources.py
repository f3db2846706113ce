import msgspec

from spot_rebalancer.objects import PodResourceClaim
from spot_rebalancer.scheduling.dynamic_resources import unproven_claims
from tests.unit.builders import make_pod


def with_claims(*names):
    pod = make_pod("p")
    return msgspec.structs.replace(pod, spec=msgspec.structs.replace(
        pod.spec, resource_claims=[PodResourceClaim(name=n) for n in names]))


def test_a_pod_without_resource_claims_is_not_held_back():
    assert unproven_claims(make_pod("p")) is None


def test_a_pod_with_resource_claims_is_named_with_its_claims():
    assert unproven_claims(with_claims("gpu")) == "dynamic resource claims (gpu)"
    assert unproven_claims(with_claims("a", "b", "c", "d")) == "dynamic resource claims (a, b, c, ...)"
