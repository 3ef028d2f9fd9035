"""The endpoints controller's plan: which pods become which addresses, on which ports."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from services.controller_manager.endpoints import (
    desired_subsets,
    endpoints_changed,
    manages_endpoints,
    resolve_target_port,
)
from skiff.api.v1 import core_pb2, meta_pb2


def service(*ports: core_pb2.ServicePort, publish: bool = False) -> core_pb2.Service:
    svc = core_pb2.Service(metadata=meta_pb2.ObjectMeta(name="web", namespace="ns",
                                                        labels={"app": "web"}))
    svc.spec.selector["app"] = "web"
    svc.spec.ports.extend(ports)
    svc.spec.publish_not_ready_addresses = publish
    return svc


def port(name: str, number: int, target: int | str = 0) -> core_pb2.ServicePort:
    p = core_pb2.ServicePort(name=name, port=number, protocol="TCP")
    if isinstance(target, str):
        p.target_port.type = meta_pb2.IntOrString.STRING
        p.target_port.str_val = target
    else:
        p.target_port.int_val = target
    return p


def pod(name: str, ip: str, *, ready: bool = True, ports: dict[str, int] | None = None,
        deleting: bool = False, node: str = "n1") -> core_pb2.Pod:
    p = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace="ns", uid=f"uid-{name}",
                                                  labels={"app": "web"}))
    container = p.spec.containers.add(name="c", image="busybox")
    for port_name, number in (ports or {}).items():
        container.ports.add(name=port_name, container_port=number)
    p.spec.node_name = node
    p.status.pod_ip = ip
    p.status.conditions.add(type="Ready", status="True" if ready else "False")
    if deleting:
        p.metadata.deletion_timestamp.CopyFrom(Timestamp(seconds=1))
    return p


def ips(addresses) -> list[str]:
    return [a.ip for a in addresses]


def test_ready_and_not_ready_pods_are_split_and_sorted():
    subsets = desired_subsets(service(port("http", 80, 8080)),
                              [pod("b", "10.0.0.2"), pod("a", "10.0.0.1"),
                               pod("c", "10.0.0.3", ready=False)])
    assert len(subsets) == 1
    assert ips(subsets[0].addresses) == ["10.0.0.1", "10.0.0.2"]
    assert ips(subsets[0].not_ready_addresses) == ["10.0.0.3"]
    assert [(p.name, p.port, p.protocol) for p in subsets[0].ports] == [("http", 8080, "TCP")]
    first = subsets[0].addresses[0]
    assert first.node_name == "n1"
    assert (first.target_ref.kind, first.target_ref.name, first.target_ref.namespace,
            first.target_ref.uid) == ("Pod", "a", "ns", "uid-a")


def test_pods_without_ip_or_terminating_are_left_out():
    subsets = desired_subsets(service(port("http", 80)),
                              [pod("a", ""), pod("b", "10.0.0.2", deleting=True)])
    assert subsets == []


def test_publish_not_ready_addresses_puts_everyone_in_addresses():
    subsets = desired_subsets(service(port("http", 80), publish=True),
                              [pod("a", "10.0.0.1", ready=False)])
    assert ips(subsets[0].addresses) == ["10.0.0.1"]
    assert not subsets[0].not_ready_addresses


def test_target_port_defaults_to_the_service_port():
    assert resolve_target_port(port("http", 80), pod("a", "1.1.1.1")) == 80
    assert resolve_target_port(port("http", 80, 9000), pod("a", "1.1.1.1")) == 9000


def test_named_ports_resolve_per_pod_and_group_into_subsets():
    svc = service(port("http", 80, "web"), port("metrics", 9090, "metrics"))
    both = pod("a", "10.0.0.1", ports={"web": 8080, "metrics": 9100})
    other_number = pod("b", "10.0.0.2", ports={"web": 8081, "metrics": 9100})
    web_only = pod("c", "10.0.0.3", ports={"web": 8080})
    neither = pod("d", "10.0.0.4", ports={})
    subsets = desired_subsets(svc, [web_only, other_number, both, neither])
    groups = [(sorted((p.name, p.port) for p in s.ports), ips(s.addresses)) for s in subsets]
    assert sorted(groups) == sorted([
        ([("http", 8080), ("metrics", 9100)], ["10.0.0.1"]),
        ([("http", 8081), ("metrics", 9100)], ["10.0.0.2"]),
        ([("http", 8080)], ["10.0.0.3"]),
    ])
    # Deterministic: the same pods in another order give the same subsets.
    assert desired_subsets(svc, [neither, both, web_only, other_number]) == subsets


def test_a_service_without_ports_lists_addresses_only():
    subsets = desired_subsets(service(), [pod("a", "10.0.0.1")])
    assert ips(subsets[0].addresses) == ["10.0.0.1"] and not subsets[0].ports


def test_changed_compares_subsets_and_labels():
    svc = service(port("http", 80))
    subsets = desired_subsets(svc, [pod("a", "10.0.0.1")])
    current = core_pb2.EndpointsObject(metadata=meta_pb2.ObjectMeta(
        name="web", namespace="ns", labels={"app": "web"}), subsets=subsets)
    assert not endpoints_changed(current, svc, subsets)
    assert endpoints_changed(None, svc, subsets)
    assert endpoints_changed(current, svc, [])
    svc.metadata.labels["tier"] = "front"
    assert endpoints_changed(current, svc, subsets)


def test_only_selector_services_that_are_no_alias_get_endpoints_from_the_controller():
    selector = {"app": "db"}
    assert manages_endpoints(core_pb2.Service(spec=core_pb2.ServiceSpec(selector=selector)))
    assert not manages_endpoints(core_pb2.Service(spec=core_pb2.ServiceSpec()))
    assert not manages_endpoints(core_pb2.Service(spec=core_pb2.ServiceSpec(
        type="ExternalName", external_name="db.example.org", selector=selector)))
