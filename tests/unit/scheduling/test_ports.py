import pytest

from spot_rebalancer.objects import ContainerPort
from spot_rebalancer.scheduling.ports import HostPort, host_ports, port_conflict
from tests.unit.builders import container, make_pod


def test_host_ports_apply_defaults_and_skip_container_only_ports():
    pod = make_pod("p", containers=[container(host_ports=[
        ContainerPort(container_port=8080),
        ContainerPort(container_port=80, host_port=80),
        ContainerPort(container_port=53, host_port=53, protocol="UDP", host_ip="10.0.0.1"),
    ])])
    assert host_ports(pod) == (HostPort("0.0.0.0", "TCP", 80), HostPort("10.0.0.1", "UDP", 53))


def test_host_ports_include_native_sidecars_but_not_init_containers():
    pod = make_pod("p", containers=[container(host_ports=[80])], init_containers=[
        container(host_ports=[9000]), container(host_ports=[9100], restart_policy="Always")])
    assert {p.port for p in host_ports(pod)} == {80, 9100}


ANY_80 = HostPort("0.0.0.0", "TCP", 80)


@pytest.mark.parametrize(("wanted", "used", "conflict"), [
    ([ANY_80], [], None),
    ([ANY_80], [ANY_80], ANY_80),
    ([ANY_80], [HostPort("0.0.0.0", "UDP", 80)], None),
    ([ANY_80], [HostPort("0.0.0.0", "TCP", 81)], None),
    # 0.0.0.0 clashes with every IP, either way round.
    ([ANY_80], [HostPort("10.0.0.1", "TCP", 80)], ANY_80),
    ([HostPort("10.0.0.1", "TCP", 80)], [ANY_80], HostPort("10.0.0.1", "TCP", 80)),
    # Two specific IPs clash only when equal.
    ([HostPort("10.0.0.1", "TCP", 80)], [HostPort("10.0.0.2", "TCP", 80)], None),
    ([HostPort("10.0.0.1", "TCP", 80)], [HostPort("10.0.0.1", "TCP", 80)], HostPort("10.0.0.1", "TCP", 80)),
], ids=["nothing in use", "same port", "other protocol", "other port", "any ip against a specific one",
        "a specific ip against any", "two different ips", "the same specific ip"])
def test_port_conflict(wanted, used, conflict):
    assert port_conflict(wanted, used) == conflict
