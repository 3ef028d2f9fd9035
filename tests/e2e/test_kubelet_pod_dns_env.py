"""What a pod sees of the cluster, run by the real kubelet on Docker: its resolv.conf by
``dnsPolicy`` (mounted over /etc/resolv.conf in the sandbox and the app containers),
and the Service environment variables (on, and off with ``enableServiceLinks: false``).

Each pod prints what it sees and exits; the test reads the container's log.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from e2e_pods import container, pod, status_of, wait_gone, wait_pod

from services.kubelet.dns import parse_resolv_conf
from skiff.api import errors
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.health import wait_for
from skiff.kubelet import labels as L

CLUSTER_DNS = "10.96.0.10"


def _finished(name: str):  # type: ignore[no-untyped-def]
    def check(p) -> bool:  # type: ignore[no-untyped-def]
        s = status_of(p, name)
        return s is not None and s.state.HasField("terminated")
    return check


async def _containers(docker, node: str, uid: str, kind: str = L.CONTAINER):  # type: ignore[no-untyped-def]
    return await docker.containers.list(all=True, filters=json.dumps(
        {"label": [f"{L.NODE}={node}", f"{L.POD_UID}={uid}", f"{L.CONTAINER_TYPE}={kind}"]}))


async def _run(api, docker, node, p: core_pb2.Pod) -> tuple[core_pb2.Pod, str]:  # type: ignore[no-untyped-def]
    """Create ``p`` (one container, restart Never), wait until it exits 0; its log."""
    created = await api.pods.create(p)
    name = p.spec.containers[0].name
    done = await wait_pod(api, p.metadata.namespace, p.metadata.name, _finished(name),
                          what=f"{name} finished")
    found = await _containers(docker, node.name, created.metadata.uid)
    logs = "".join(await found[0].log(stdout=True, stderr=True)) if found else ""
    assert status_of(done, name).state.terminated.exit_code == 0, logs
    return created, logs


def _cat_resolv_conf(name: str, namespace: str, node: str) -> core_pb2.Pod:
    return pod(name, namespace, node, container("show", "cat", "/etc/resolv.conf"),
               restart_policy="Never")


async def test_dns_policy_none_is_exactly_the_dns_config(api, ns, node, docker):
    p = _cat_resolv_conf("none", ns, node.name)
    p.spec.dns_policy = "None"
    p.spec.dns_config.nameservers.extend(["10.11.12.13", "10.11.12.14"])
    p.spec.dns_config.searches.extend(["corp.example", "lab.example"])
    p.spec.dns_config.options.add(name="ndots", value="2")
    p.spec.dns_config.options.add(name="edns0")
    created, logs = await _run(api, docker, node, p)
    assert logs == ("nameserver 10.11.12.13\nnameserver 10.11.12.14\n"
                    "search corp.example lab.example\noptions ndots:2 edns0\n")
    # The sandbox has the same file mounted, read-only.
    sandbox = (await _containers(docker, node.name, created.metadata.uid, L.SANDBOX))[0]
    mounts = (await sandbox.show())["Mounts"]
    assert [(m["Destination"], m["RW"]) for m in mounts] == [("/etc/resolv.conf", False)]
    pod_dir = Path(mounts[0]["Source"]).parent
    assert pod_dir.name == created.metadata.uid and pod_dir.is_dir()
    # The pod gone, its directory goes too.
    await api.pods.delete("none", ns)
    await wait_gone(api, ns, "none")

    async def removed() -> bool:
        return not await asyncio.to_thread(pod_dir.exists)

    await wait_for(removed, timeout=30, interval=0.1, what="the pod's directory removed")


@pytest.mark.kubelet_flags("--cluster-dns", CLUSTER_DNS)
async def test_cluster_first_names_the_cluster_dns_and_the_namespace(api, ns, node, docker):
    _, logs = await _run(api, docker, node, _cat_resolv_conf("cluster", ns, node.name))
    lines = logs.splitlines()
    assert [line for line in lines if line.startswith("nameserver")] == [
        f"nameserver {CLUSTER_DNS}"]
    search = next(line for line in lines if line.startswith("search "))
    assert search.startswith(f"search {ns}.svc.cluster.local svc.cluster.local cluster.local")
    assert "options ndots:5" in lines


async def test_cluster_first_without_cluster_dns_falls_back_to_the_host(api, ns, node,
                                                                         docker):
    _, logs = await _run(api, docker, node, _cat_resolv_conf("fallback", ns, node.name))
    host = await asyncio.to_thread(Path("/etc/resolv.conf").read_text)
    assert parse_resolv_conf(logs) == parse_resolv_conf(host)

    async def warned() -> bool:
        found = await api.events.list(ns)
        return any(e.reason == "MissingClusterDNS" and e.involved_object.name == "fallback"
                   for e in found.items)

    await wait_for(warned, timeout=30, interval=0.2, what="the MissingClusterDNS event")


async def _service(api, namespace: str, name: str) -> core_pb2.Service:  # type: ignore[no-untyped-def]
    spec = core_pb2.ServiceSpec(selector={"app": name}, ports=[
        core_pb2.ServicePort(name="http", port=80, protocol="TCP"),
        core_pb2.ServicePort(name="dns-udp", port=5353, protocol="UDP")])
    return await api.services.create(core_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace), spec=spec))


async def test_service_environment_variables(api, ns, node, docker):
    svc = await _service(api, ns, "web-front")
    ip = svc.spec.cluster_ip
    assert ip, "the apiserver allocates a cluster IP"
    try:
        master = await api.services.get("kubernetes", "default")
    except errors.NotFound:
        master = None

    env = container("show", "env", env={"WEB_FRONT_SERVICE_PORT": "mine"})
    _, logs = await _run(api, docker, node, pod("links", ns, node.name, env,
                                                  restart_policy="Never"))
    variables = dict(line.split("=", 1) for line in logs.splitlines() if "=" in line)
    assert variables["WEB_FRONT_SERVICE_HOST"] == ip
    assert variables["WEB_FRONT_SERVICE_PORT"] == "mine"  # the container's own wins
    assert variables["WEB_FRONT_SERVICE_PORT_HTTP"] == "80"
    assert variables["WEB_FRONT_SERVICE_PORT_DNS_UDP"] == "5353"
    assert variables["WEB_FRONT_PORT"] == f"tcp://{ip}:80"
    assert variables["WEB_FRONT_PORT_5353_UDP"] == f"udp://{ip}:5353"
    assert variables["WEB_FRONT_PORT_5353_UDP_PROTO"] == "udp"
    assert variables["WEB_FRONT_PORT_5353_UDP_PORT"] == "5353"
    assert variables["WEB_FRONT_PORT_5353_UDP_ADDR"] == ip
    if master is not None and master.spec.cluster_ip not in ("", "None"):
        assert variables["KUBERNETES_SERVICE_HOST"] == master.spec.cluster_ip

    quiet = pod("no-links", ns, node.name, container("show", "env"), restart_policy="Never")
    quiet.spec.enable_service_links = False
    _, logs = await _run(api, docker, node, quiet)
    assert "WEB_FRONT_" not in logs
    if master is not None and master.spec.cluster_ip not in ("", "None"):
        assert f"KUBERNETES_SERVICE_HOST={master.spec.cluster_ip}" in logs.splitlines()
