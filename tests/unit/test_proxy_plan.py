"""The proxy's planning: endpoint port mapping by name, listeners per service type,
affinity timeout defaulting, the node's address."""

from __future__ import annotations

from services.proxy.loadbalancer import (
    DEFAULT_AFFINITY_TIMEOUT,
    ServicePortName,
    affinity_timeout,
    backends_for_port,
)
from services.proxy.nftables_rules import NFTABLES, USERSPACE, Settings, table_name
from services.proxy.proxier import is_loopback, node_internal_ip, plan_service
from skiff.api.v1 import core_pb2, meta_pb2


def endpoints(*subsets: tuple[list[str], list[str], list[tuple[str, int, str]]]
              ) -> core_pb2.EndpointsObject:
    """Subsets of (ready ips, not-ready ips, [(port name, port, protocol)])."""
    obj = core_pb2.EndpointsObject(metadata=meta_pb2.ObjectMeta(name="web", namespace="ns"))
    for ready, not_ready, ports in subsets:
        subset = obj.subsets.add()
        for ip in ready:
            subset.addresses.add(ip=ip)
        for ip in not_ready:
            subset.not_ready_addresses.add(ip=ip)
        for name, number, protocol in ports:
            subset.ports.add(name=name, port=number, protocol=protocol)
    return obj


def service(*ports: tuple[str, int, int], type_: str = "ClusterIP",
            cluster_ip: str = "10.96.0.7", affinity: str = "None",
            timeout: int | None = None) -> core_pb2.Service:
    """Ports of (name, port, node port)."""
    svc = core_pb2.Service(metadata=meta_pb2.ObjectMeta(name="web", namespace="ns"))
    svc.spec.type = type_
    svc.spec.cluster_ip = cluster_ip
    svc.spec.session_affinity = affinity
    if timeout is not None:
        svc.spec.session_affinity_config.client_ip.timeout_seconds = timeout
    for name, number, node_port in ports:
        svc.spec.ports.add(name=name, port=number, node_port=node_port, protocol="TCP")
    return svc


def test_named_service_port_takes_the_endpoint_port_of_the_same_name():
    eps = endpoints((["10.0.0.2", "10.0.0.1"], ["10.0.0.9"],
                     [("http", 8080, "TCP"), ("metrics", 9090, "TCP")]),
                    (["10.0.1.1"], [], [("http", 8081, "TCP")]))
    assert backends_for_port(eps, "http") == [("10.0.0.1", 8080), ("10.0.0.2", 8080),
                                              ("10.0.1.1", 8081)]
    assert backends_for_port(eps, "metrics") == [("10.0.0.1", 9090), ("10.0.0.2", 9090)]
    assert backends_for_port(eps, "other") == []


def test_unnamed_service_port_takes_the_only_endpoint_port():
    eps = endpoints((["10.0.0.1"], [], [("", 8080, "TCP")]))
    assert backends_for_port(eps, "") == [("10.0.0.1", 8080)]
    named_only = endpoints((["10.0.0.1"], [], [("web", 8080, "")]))
    assert backends_for_port(named_only, "") == [("10.0.0.1", 8080)]  # the only port
    several = endpoints((["10.0.0.1"], [], [("a", 1, "TCP"), ("b", 2, "TCP")]))
    assert backends_for_port(several, "") == []


def test_only_ready_tcp_addresses_count():
    eps = endpoints((["10.0.0.1"], ["10.0.0.2"], [("dns", 53, "UDP")]),
                    ([], ["10.0.0.3"], [("dns", 53, "TCP")]))
    assert backends_for_port(eps, "dns") == []
    assert backends_for_port(None, "dns") == []


def test_affinity_timeout_defaults_to_three_hours():
    assert affinity_timeout(service(("", 80, 0)).spec) is None
    assert affinity_timeout(service(("", 80, 0), affinity="ClientIP").spec) == \
        DEFAULT_AFFINITY_TIMEOUT == 10800
    assert affinity_timeout(service(("", 80, 0), affinity="ClientIP", timeout=5).spec) == 5


USERSPACE_SETTINGS = Settings(mode=USERSPACE, table="skiff-proxy-n1")
NFTABLES_SETTINGS = Settings(mode=NFTABLES, table="skiff-proxy-n1")


def test_userspace_plans_a_frontend_per_port_with_its_ready_backends():
    svc = service(("http", 80, 0), ("https", 443, 0))
    eps = endpoints((["10.244.0.1"], [], [("http", 8080, "TCP"), ("https", 8443, "TCP")]))
    plans, problems = plan_service(svc, eps, node_address="127.0.1.3",
                                   settings=USERSPACE_SETTINGS)
    assert problems == []
    http = plans[ServicePortName("ns", "web", "http")]
    assert http.frontend and http.direct is None and http.affinity_timeout is None
    assert http.backends == (("10.244.0.1", 8080),)
    assert (http.rule.cluster_ip, http.rule.port, http.rule.protocol) == \
        ("10.96.0.7", 80, "TCP")
    assert plans[ServicePortName("ns", "web", "https")].backends == (("10.244.0.1", 8443),)


def test_node_ports_on_a_loopback_node_address_get_a_direct_listener_in_both_modes():
    svc = service(("", 80, 30080), type_="NodePort", affinity="ClientIP")
    for settings in (USERSPACE_SETTINGS, NFTABLES_SETTINGS):
        plans, _ = plan_service(svc, None, node_address="127.0.1.3", settings=settings)
        plan = plans[ServicePortName("ns", "web", "")]
        assert plan.direct == ("127.0.1.3", 30080)
        assert plan.affinity_timeout == 10800.0
        assert plan.frontend == (settings.mode == USERSPACE)
        # Not on a loopback address: the kernel rules serve the NodePort.
        plans, _ = plan_service(svc, None, node_address="10.112.0.9", settings=settings)
        assert plans[ServicePortName("ns", "web", "")].direct is None


def test_udp_ports_are_planned_with_their_udp_endpoints():
    svc = service(("dns", 53, 0))
    svc.spec.ports[0].protocol = "UDP"
    eps = endpoints((["10.244.0.5"], [], [("dns", 5353, "UDP"), ("dns-tcp", 53, "TCP")]))
    plans, _ = plan_service(svc, eps, node_address="127.0.0.1", settings=USERSPACE_SETTINGS)
    plan = plans[ServicePortName("ns", "web", "dns")]
    assert plan.rule.protocol == "UDP" and plan.backends == (("10.244.0.5", 5353),)


def test_headless_deleted_and_unusable_ports_plan_nothing():
    assert plan_service(service(("", 80, 0), cluster_ip="None"), None,
                        node_address="127.0.0.1", settings=USERSPACE_SETTINGS) == ({}, [])
    assert plan_service(None, None, node_address="127.0.0.1",
                        settings=USERSPACE_SETTINGS) == ({}, [])
    # A cluster IP outside the service range (an old loopback one): left out, with why.
    plans, problems = plan_service(service(("", 80, 0), cluster_ip="127.10.0.7"), None,
                                   node_address="127.0.0.1", settings=USERSPACE_SETTINGS)
    assert plans == {}
    assert problems and "outside the service CIDR" in problems[0]


def test_loopback_addresses():
    assert is_loopback("127.0.1.2") and is_loopback("127.0.0.1")
    assert not is_loopback("10.112.0.1") and not is_loopback("not an ip")


def test_table_names_are_per_node_and_fit_nft():
    assert table_name("node-1") == "skiff-proxy-node-1"
    long = table_name("n" * 253)
    assert len(long) == 255 and long.startswith("skiff-proxy-")
    assert long != table_name("n" * 252 + "m")


def test_node_internal_ip_from_status_addresses():
    node = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name="n3"))
    assert node_internal_ip(node) is None and node_internal_ip(None) is None
    node.status.addresses.add(type="Hostname", address="n3")
    node.status.addresses.add(type="InternalIP", address="127.0.1.3")
    assert node_internal_ip(node) == "127.0.1.3"
