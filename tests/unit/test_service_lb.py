"""The load-balancer pool's pure decisions: addresses given once, kept, recovered."""

from __future__ import annotations

import ipaddress

import pytest

from services.controller_manager.config import parse_args
from services.controller_manager.service_lb import (
    IPPool,
    PoolExhausted,
    PoolProvider,
    parse_ip_range,
    status_of,
    wants_load_balancer,
)
from skiff.api.v1 import core_pb2


def pool(cidr: str = "10.112.0.0/29") -> IPPool:
    return IPPool(ipaddress.IPv4Network(cidr))


def test_addresses_are_given_once_without_network_and_broadcast():
    p = pool()
    given = [p.allocate(f"ns/s{i}") for i in range(6)]
    assert given == [f"10.112.0.{i}" for i in range(1, 7)]
    with pytest.raises(PoolExhausted):
        p.allocate("ns/more")
    assert p.allocate("ns/s2") == "10.112.0.3"  # a holder keeps its own


def test_a_released_address_is_the_last_to_come_back():
    p = pool()
    first = p.allocate("ns/a")
    p.allocate("ns/b")
    assert p.release("ns/a") == first
    assert p.release("ns/a") is None
    assert p.allocate("ns/c") == "10.112.0.3"
    assert p.free == 4


def test_claims_keep_what_statuses_show_and_refuse_what_another_holds():
    p = pool()
    assert p.claim("ns/a", "10.112.0.5")
    assert not p.claim("ns/b", "10.112.0.5")
    assert not p.claim("ns/b", "10.112.0.7")  # broadcast
    assert not p.claim("ns/b", "10.96.0.5")  # outside
    assert p.claim("ns/a", "10.112.0.6") and p.holder("10.112.0.5") is None
    assert p.allocate("ns/a") == "10.112.0.6"


async def test_provider_recovers_then_never_gives_a_recovered_address_again():
    provider = PoolProvider("10.112.0.0/29")
    provider.recover("ns/old", status_of(["10.112.0.1"]))
    fresh = core_pb2.Service(spec=core_pb2.ServiceSpec(type="LoadBalancer"))
    assert await provider.ensure("ns/new", fresh) == status_of(["10.112.0.2"])
    # A status claiming someone else's address gets another.
    stale = core_pb2.Service(spec=fresh.spec, status=core_pb2.ServiceStatus(
        load_balancer=status_of(["10.112.0.1"])))
    assert await provider.ensure("ns/stale", stale) == status_of(["10.112.0.3"])
    assert await provider.delete("ns/old") and not await provider.delete("ns/old")


def test_only_load_balancer_services_want_one():
    assert wants_load_balancer(core_pb2.Service(spec=core_pb2.ServiceSpec(
        type="LoadBalancer")))
    assert not wants_load_balancer(core_pb2.Service(spec=core_pb2.ServiceSpec(
        type="NodePort")))


@pytest.mark.parametrize("text", ["10.112.0.0", "10.112.0.1/24", "fd00::/64", "10.112.0.0/31",
                                  "nonsense"])
def test_bad_ranges_are_named(text):
    with pytest.raises(ValueError, match="--load-balancer-ip-range"):
        parse_ip_range(text)


def test_the_flag_reaches_the_config_and_servicelb_runs_by_default(capsys):
    config = parse_args(["--load-balancer-ip-range", "10.112.0.0/28"])
    assert config.load_balancer_ip_range == "10.112.0.0/28"
    assert "servicelb" in config.controllers
    assert parse_args([]).load_balancer_ip_range == "10.112.0.0/24"
    with pytest.raises(SystemExit):
        parse_args(["--load-balancer-ip-range", "10.112.0.0"])
    assert "--load-balancer-ip-range" in capsys.readouterr().err
