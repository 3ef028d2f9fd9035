"""Service environment variables, named as Kubernetes names them (services/kubelet/envvars.py)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from services.kubelet.envvars import container_env, service_env, services_for_pod
from skiff.api.v1 import core_pb2


def service(name: str, namespace: str = "shop", cluster_ip: str = "10.96.3.4",
            ports: list[dict[str, Any]] | None = None) -> core_pb2.Service:
    s = core_pb2.Service()
    json_format.ParseDict({"metadata": {"name": name, "namespace": namespace},
                           "spec": {"clusterIP": cluster_ip,
                                    "ports": ports if ports is not None else [{"port": 80}]}},
                          s)
    return s


def pod(namespace: str = "shop", env: dict[str, str] | None = None,
        **spec: Any) -> core_pb2.Pod:
    p = core_pb2.Pod()
    container = {"name": "c", "image": "busybox",
                 "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}
    json_format.ParseDict({"metadata": {"name": "web", "namespace": namespace},
                           "spec": {"containers": [container], **spec}}, p)
    return p


KUBERNETES = service("kubernetes", "default", "10.96.0.1", [{"name": "https", "port": 443}])


def test_one_unnamed_tcp_port():
    assert dict(service_env([service("redis-primary", ports=[{"port": 6379}])])) == {
        "REDIS_PRIMARY_SERVICE_HOST": "10.96.3.4",
        "REDIS_PRIMARY_SERVICE_PORT": "6379",
        "REDIS_PRIMARY_PORT": "tcp://10.96.3.4:6379",
        "REDIS_PRIMARY_PORT_6379_TCP": "tcp://10.96.3.4:6379",
        "REDIS_PRIMARY_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_PRIMARY_PORT_6379_TCP_PORT": "6379",
        "REDIS_PRIMARY_PORT_6379_TCP_ADDR": "10.96.3.4",
    }


def test_several_named_ports_and_udp():
    env = service_env([service("dns-server", cluster_ip="10.96.0.10", ports=[
        {"name": "dns-udp", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        {"name": "metrics", "port": 9153}])])
    assert env == [
        ("DNS_SERVER_SERVICE_HOST", "10.96.0.10"),
        ("DNS_SERVER_SERVICE_PORT", "53"),
        ("DNS_SERVER_SERVICE_PORT_DNS_UDP", "53"),
        ("DNS_SERVER_SERVICE_PORT_DNS_TCP", "53"),
        ("DNS_SERVER_SERVICE_PORT_METRICS", "9153"),
        ("DNS_SERVER_PORT", "udp://10.96.0.10:53"),
        ("DNS_SERVER_PORT_53_UDP", "udp://10.96.0.10:53"),
        ("DNS_SERVER_PORT_53_UDP_PROTO", "udp"),
        ("DNS_SERVER_PORT_53_UDP_PORT", "53"),
        ("DNS_SERVER_PORT_53_UDP_ADDR", "10.96.0.10"),
        ("DNS_SERVER_PORT_53_TCP", "tcp://10.96.0.10:53"),
        ("DNS_SERVER_PORT_53_TCP_PROTO", "tcp"),
        ("DNS_SERVER_PORT_53_TCP_PORT", "53"),
        ("DNS_SERVER_PORT_53_TCP_ADDR", "10.96.0.10"),
        ("DNS_SERVER_PORT_9153_TCP", "tcp://10.96.0.10:9153"),
        ("DNS_SERVER_PORT_9153_TCP_PROTO", "tcp"),
        ("DNS_SERVER_PORT_9153_TCP_PORT", "9153"),
        ("DNS_SERVER_PORT_9153_TCP_ADDR", "10.96.0.10"),
    ]


def test_an_ipv6_cluster_ip_is_bracketed_in_urls():
    env = dict(service_env([service("v6", cluster_ip="fd00::a", ports=[{"port": 80}])]))
    assert env["V6_PORT"] == "tcp://[fd00::a]:80"
    assert env["V6_SERVICE_HOST"] == env["V6_PORT_80_TCP_ADDR"] == "fd00::a"


def test_services_without_a_cluster_ip_give_nothing():
    headless = service("headless", cluster_ip="None")
    external = service("external", cluster_ip="", ports=[])
    assert service_env([headless, external]) == []
    assert services_for_pod(pod(), [headless, external]) == []


def test_the_pods_namespace_and_the_master_service_only():
    mine, other = service("web"), service("web", namespace="other")
    default_other = service("db", namespace="default")
    chosen = services_for_pod(pod(), [other, KUBERNETES, mine, default_other])
    assert chosen == [KUBERNETES, mine]


def test_a_pod_in_default_gets_its_namespace_services():
    chosen = services_for_pod(pod("default"), [KUBERNETES, service("db", "default")])
    assert [s.metadata.name for s in chosen] == ["db", "kubernetes"]


def test_a_kubernetes_service_of_the_pods_namespace_wins_over_the_master():
    own = service("kubernetes", cluster_ip="10.96.9.9")
    assert services_for_pod(pod(), [own, KUBERNETES]) == [own]
    assert services_for_pod(pod(), [KUBERNETES, own]) == [own]


def test_no_service_links_keeps_only_the_master_service():
    chosen = services_for_pod(pod(enableServiceLinks=False), [service("web"), KUBERNETES])
    assert chosen == [KUBERNETES]
    # ... and its own namespace's "kubernetes" does not replace it then.
    own = service("kubernetes", cluster_ip="10.96.9.9")
    assert services_for_pod(pod(enableServiceLinks=False), [own, KUBERNETES]) == [KUBERNETES]


def test_without_a_master_service_nothing_is_invented():
    assert services_for_pod(pod(enableServiceLinks=False), [service("web")]) == []


def test_service_links_default_to_on():
    p = pod()
    assert not p.spec.HasField("enable_service_links")
    assert services_for_pod(p, [service("web")]) == [service("web")]


def test_container_env_puts_service_variables_first_and_the_containers_own_win():
    p = pod(env={"WEB_SERVICE_HOST": "mine", "GREETING": "hi"})
    env = container_env(p, p.spec.containers[0], [service("web")])
    assert env[-2:] == ["WEB_SERVICE_HOST=mine", "GREETING=hi"]
    assert "WEB_SERVICE_PORT=80" in env[:-2]
    assert [e for e in env if e.startswith("WEB_SERVICE_HOST=")] == ["WEB_SERVICE_HOST=mine"]


def test_container_env_without_services_is_the_containers_own():
    p = pod(env={"A": "1"})
    assert container_env(p, p.spec.containers[0], []) == ["A=1"]
