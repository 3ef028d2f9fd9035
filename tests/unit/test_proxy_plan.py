"""The proxy's planning: endpoint port mapping by name, listeners per service type,
affinity timeout defaulting, the node's address."""

from __future__ import annotations

from services.proxy.loadbalancer import (
    DEFAULT_AFFINITY_TIMEOUT,
    ServicePortName,
    affinity_timeout,
    backends_for_port,
)
from services.proxy.proxier import node_internal_ip, plan_service
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
            cluster_ip: str = "127.10.0.7", affinity: str = "None",
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


def test_cluster_ip_service_listens_on_its_cluster_ip_per_port():
    svc = service(("http", 80, 0), ("https", 443, 0))
    eps = endpoints((["10.0.0.1"], [], [("http", 8080, "TCP"), ("https", 8443, "TCP")]))
    plans = plan_service(svc, eps, node_address="127.0.1.3")
    assert plans == {
        ServicePortName("ns", "web", "http"): PortPlan(
            (("127.10.0.7", 80),), (("10.0.0.1", 8080),), None),
        ServicePortName("ns", "web", "https"): PortPlan(
            (("127.10.0.7", 443),), (("10.0.0.1", 8443),), None),
    }


def test_node_port_service_also_listens_on_the_node_address():
    svc = service(("", 80, 30080), type_="NodePort", affinity="ClientIP")
    plans = plan_service(svc, None, node_address="127.0.1.3")
    assert plans == {ServicePortName("ns", "web", ""): PortPlan(
        (("127.10.0.7", 80), ("127.0.1.3", 30080)), (), 10800.0)}


def test_headless_deleted_and_non_tcp_plan_no_listener():
    assert plan_service(service(("", 80, 0), cluster_ip="None"), None,
                        node_address="127.0.0.1") == {}
    assert plan_service(None, None, node_address="127.0.0.1") == {}
    udp = service(("dns", 53, 0))
    udp.spec.ports[0].protocol = "UDP"
    assert plan_service(udp, None, node_address="127.0.0.1") == {}


def test_node_internal_ip_from_status_addresses():
    node = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name="n3"))
    assert node_internal_ip(node) is None and node_internal_ip(None) is None
    node.status.addresses.add(type="Hostname", address="n3")
    node.status.addresses.add(type="InternalIP", address="127.0.1.3")
    assert node_internal_ip(node) == "127.0.1.3"
