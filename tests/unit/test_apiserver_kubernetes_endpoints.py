"""The pure parts of the kubernetes Service's keeping and of cluster IP allocation:
subsets from the live apiservers, lease expiry, and the static band."""

from __future__ import annotations

import ipaddress
import random

from services.apiserver.admission.service_allocation import (
    Ranges,
    ServiceAllocation,
    first_address,
    static_band_size,
)
from services.apiserver.endpoint_reconciler import (
    ENDPOINT_ANNOTATION,
    desired_subsets,
    expired,
    lease_endpoint,
    lease_name,
)
from skiff.api.v1 import coordination_pb2, core_pb2, meta_pb2


def test_subsets_group_the_apiservers_by_port_sorted():
    subsets = desired_subsets([("127.0.0.2", 6443), ("127.0.0.1", 6443), ("10.0.0.1", 7000)])
    assert [([a.ip for a in s.addresses], [(p.name, p.port, p.protocol) for p in s.ports])
            for s in subsets] == [(["127.0.0.1", "127.0.0.2"], [("https", 6443, "TCP")]),
                                  (["10.0.0.1"], [("https", 7000, "TCP")])]
    assert desired_subsets([]) == []


def test_a_lease_expires_after_its_duration_and_names_its_endpoint():
    lease = coordination_pb2.Lease(metadata=meta_pb2.ObjectMeta(
        annotations={ENDPOINT_ANNOTATION: "127.0.0.1:6443"}))
    lease.spec.lease_duration_seconds = 15
    lease.spec.renew_time.FromSeconds(1000)
    assert not expired(lease, 1014.9) and expired(lease, 1015.1)
    assert lease_endpoint(lease) == ("127.0.0.1", 6443)
    assert lease_endpoint(coordination_pb2.Lease()) is None
    assert lease_name("127.0.0.1", 6443) == lease_name("127.0.0.1", 6443)
    assert lease_name("127.0.0.1", 6443) != lease_name("127.0.0.1", 6444)


def test_the_static_band_is_kubernetes():
    assert static_band_size(2**20) == 256  # a /12
    assert static_band_size(256) == 16  # a /24
    assert static_band_size(8) == 0
    assert first_address(ipaddress.IPv4Network("10.96.0.0/12")) == "10.96.0.1"


def test_dynamic_ips_come_from_the_upper_band_until_it_is_full():
    network = ipaddress.IPv4Network("10.96.0.0/27")  # 32 addresses: a band of 16
    allocation = ServiceAllocation(Ranges(network), lambda: [], rng=random.Random(1))
    picks = {allocation._pick_ip() for _ in range(200)}
    assert all(16 <= int(ip.rpartition(".")[2]) <= 30 for ip in picks)
    # With the upper band taken, the lower one serves (never the network address).
    taken = [core_pb2.Service(spec=core_pb2.ServiceSpec(cluster_ip=f"10.96.0.{i}"))
             for i in range(16, 31)]
    allocation = ServiceAllocation(Ranges(network), lambda: taken, rng=random.Random(1))
    assert all(1 <= int(allocation._pick_ip().rpartition(".")[2]) < 16 for _ in range(50))
