"""The pure edits a skiff-dns instance makes to the kube-dns Endpoints, and its flags."""

from __future__ import annotations

import pytest

from services.dns.config import parse_args
from services.dns.registration import (
    has_addresses,
    parse_key,
    with_addresses,
    without_addresses,
)
from skiff.api.v1 import core_pb2, meta_pb2


def empty() -> core_pb2.EndpointsObject:
    return core_pb2.EndpointsObject(metadata=meta_pb2.ObjectMeta(name="kube-dns",
                                                                 namespace="kube-system"))


def listed(endpoints: core_pb2.EndpointsObject) -> list[tuple[list[str], list[tuple]]]:
    return [([a.ip for a in s.addresses], [(p.name, p.port, p.protocol) for p in s.ports])
            for s in endpoints.subsets]


def test_adding_makes_a_subset_with_both_dns_ports():
    ep = with_addresses(empty(), [("10.244.1.1", 53)])
    assert listed(ep) == [(["10.244.1.1"], [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")])]
    assert has_addresses(ep, [("10.244.1.1", 53)])
    assert not has_addresses(ep, [("10.244.1.1", 5353)])
    assert not has_addresses(None, [("10.244.1.1", 53)])


def test_a_second_instance_joins_the_subset_sorted_and_adding_twice_changes_nothing():
    ep = with_addresses(empty(), [("10.244.2.1", 53)])
    ep = with_addresses(ep, [("10.244.1.1", 53)])
    assert listed(ep) == [(["10.244.1.1", "10.244.2.1"],
                           [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")])]
    assert with_addresses(ep, [("10.244.1.1", 53)]) == ep


def test_removing_keeps_the_others_and_drops_an_empty_subset():
    ep = with_addresses(empty(), [("10.244.1.1", 53), ("10.244.2.1", 53)])
    ep = without_addresses(ep, ["10.244.1.1"])
    assert listed(ep) == [(["10.244.2.1"], [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")])]
    assert listed(without_addresses(ep, ["10.244.2.1"])) == []


def test_another_port_is_another_subset_and_a_moved_instance_leaves_the_old_one():
    ep = with_addresses(empty(), [("127.0.0.2", 5301), ("127.0.0.3", 5302)])
    assert sorted(listed(ep)) == [
        (["127.0.0.2"], [("dns", 5301, "UDP"), ("dns-tcp", 5301, "TCP")]),
        (["127.0.0.3"], [("dns", 5302, "UDP"), ("dns-tcp", 5302, "TCP")])]
    moved = with_addresses(ep, [("127.0.0.2", 5302)])
    assert listed(moved) == [(["127.0.0.2", "127.0.0.3"],
                              [("dns", 5302, "UDP"), ("dns-tcp", 5302, "TCP")])]


def test_foreign_subsets_are_kept():
    ep = empty()
    other = ep.subsets.add()
    other.addresses.add(ip="10.1.1.1")
    other.ports.add(name="metrics", port=9153, protocol="TCP")
    ep = with_addresses(ep, [("10.244.1.1", 53)])
    assert (["10.1.1.1"], [("metrics", 9153, "TCP")]) in listed(ep)
    assert len(ep.subsets) == 2


def test_register_endpoints_flag():
    config = parse_args(["--upstream", "127.0.0.1", "--listen", "10.244.1.1:53",
                         "--register-endpoints", "kube-system/kube-dns"])
    assert config.register_endpoints == ("kube-system", "kube-dns")
    assert parse_args(["--upstream", "127.0.0.1"]).register_endpoints is None
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        parse_key("kube-dns")


@pytest.mark.parametrize("listen", ["0.0.0.0:53", "localhost:53", "10.244.1.1:0"])
def test_register_endpoints_needs_a_specific_ipv4_listen_address(listen, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--upstream", "127.0.0.1", "--listen", listen,
                    "--register-endpoints", "kube-system/kube-dns"])
    assert "--register-endpoints" in capsys.readouterr().err
