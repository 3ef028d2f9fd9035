"""What ``skiff up`` puts into a new cluster, and how it checks that it answers.

- The cluster DNS Service ``kube-system/kube-dns`` (selectorless, cluster IP
  10.96.0.10, ports ``dns`` 53/UDP and ``dns-tcp`` 53/TCP): the DNS programs register
  their own addresses in its Endpoints (``skiff-dns --register-endpoints``), as no
  pod backs it. Created idempotently; ``kube-system`` too if it is missing.
- ``examples/`` (the code path of ``skiffctl apply -f examples/``): the ``hello``
  Deployment behind a NodePort, and the two-tier guestbook whose frontend calls its
  backend by Service name.
- The checks: real GETs through each Service's NodePort on the first node and through
  its cluster IP from the host, until a pod answers (the proxies may not have the
  endpoints yet when a Deployment turns available). Cluster IPs are tried only where
  the service range has a route of its own on the machine (the ``bridge`` plugin's
  kubelets keep one): elsewhere a packet to one could leave by the default route.

Every wait polls with the one deadline of ``skiff up``, never a fixed sleep.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from skiff.api import errors
from skiff.api.addresses import KUBE_DNS_IP
from skiff.api.namespaces import KUBE_SYSTEM
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client import Client
from skiff.health import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: The cluster DNS Service: Kubernetes' name and its tenth address of the range.
KUBE_DNS = "kube-dns"
#: The demo's Deployment and Service (examples/deployment.yaml), in namespace default.
DEMO = "hello"
DEMO_NAMESPACE = "default"
#: The guestbook (examples/guestbook.yaml): its namespace and its two tiers.
GUESTBOOK_NAMESPACE, FRONTEND, BACKEND = "guestbook", "frontend", "backend"


class UpFailed(Exception):
    """``skiff up`` cannot go on; the message says what to do."""


class Deadline:
    """One time budget shared by the successive waits of ``skiff up``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.1, self._end - time.monotonic())


# ------------------------------------------------------------------ cluster DNS


def kube_dns_service() -> core_pb2.Service:
    """The selectorless ``kube-system/kube-dns`` Service (pure)."""
    return core_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name=KUBE_DNS, namespace=KUBE_SYSTEM,
                                     labels={"k8s-app": KUBE_DNS}),
        spec=core_pb2.ServiceSpec(type="ClusterIP", cluster_ip=KUBE_DNS_IP, ports=[
            core_pb2.ServicePort(name="dns", port=53, protocol="UDP",
                                 target_port=meta_pb2.IntOrString(int_val=53)),
            core_pb2.ServicePort(name="dns-tcp", port=53, protocol="TCP",
                                 target_port=meta_pb2.IntOrString(int_val=53))]))


async def ensure_kube_dns(client: Client) -> core_pb2.Service:
    """Namespace ``kube-system`` and the ``kube-dns`` Service, created if missing; an
    existing Service is kept (UpFailed when its address is not 10.96.0.10, which every
    kubelet's --cluster-dns names)."""
    with contextlib.suppress(errors.AlreadyExists):
        await client.namespaces.create(core_pb2.Namespace(
            metadata=meta_pb2.ObjectMeta(name=KUBE_SYSTEM)))
    try:
        service = await client.services.create(kube_dns_service())
    except errors.AlreadyExists:
        service = await client.services.get(KUBE_DNS, KUBE_SYSTEM)
    except errors.Invalid as e:
        raise UpFailed(f"cannot create the cluster DNS Service {KUBE_SYSTEM}/{KUBE_DNS} "
                       f"at {KUBE_DNS_IP}: {e}") from None
    if service.spec.cluster_ip != KUBE_DNS_IP:
        raise UpFailed(f"Service {KUBE_SYSTEM}/{KUBE_DNS} has cluster IP "
                       f"{service.spec.cluster_ip}, not {KUBE_DNS_IP}: delete it "
                       f"(skiffctl delete svc {KUBE_DNS} -n {KUBE_SYSTEM}) and run skiff "
                       "up again")
    return service


# ------------------------------------------------------------------ examples/


async def apply_demo(client: Client) -> None:
    """``skiffctl apply -f examples/``, through skiffctl's own apply code."""
    from skiff.api.manifest import ManifestError
    from skiff.cli.skiffctl.apply import run_apply
    from skiff.cli.skiffctl.common import CommandError, Context

    ctx = Context(client=client)
    try:
        status = await run_apply(ctx, argparse.Namespace(filename=[str(EXAMPLES)],
                                                         recursive=False))
    except (CommandError, ManifestError) as e:
        raise UpFailed(f"examples/: {e}") from None
    if status:
        raise UpFailed("applying examples/ failed (see above)")


async def wait_available(client: Client, name: str, namespace: str,
                         deadline: Deadline) -> None:
    """The Deployment rolled out and all its replicas available."""
    from skiff.cli.skiffctl.rollout import rollout_status

    async def available() -> bool:
        deploy = await client.deployments.get(name, namespace)
        done = rollout_status(deploy)[1]
        return done and deploy.status.available_replicas >= deploy.spec.replicas

    await wait_for(available, timeout=deadline.left(), interval=0.2,
                   what=f"deployment {namespace}/{name} available")


async def http_get(url: str, timeout: float = 2.0) -> str:
    """GET ``url`` (in a thread: urllib blocks); the body, stripped."""
    def get() -> str:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.read().decode().strip()

    return await asyncio.to_thread(get)


@dataclass(frozen=True)
class ServiceAnswers:
    """Where a demo Service answered a real GET, and what it said."""

    node_port_url: str
    #: Empty when the cluster IP was not tried (see the module).
    cluster_ip_url: str
    answer: str


@dataclass(frozen=True)
class DemoEndpoints(ServiceAnswers):
    """The ``hello`` Service's answers, and the guestbook's (None when the cluster has
    no DNS: its frontend finds its backend by name)."""

    guestbook: ServiceAnswers | None = None


async def _answers(client: Client, name: str, namespace: str, node_address: str,
                   path: str, accept: Callable[[str], bool], deadline: Deadline, *,
                   cluster_ip: bool) -> ServiceAnswers:
    """GET ``path`` through the Service's NodePort on ``node_address`` and (with
    ``cluster_ip``) through its cluster IP until an answer is one ``accept`` takes."""
    service = await client.services.get(name, namespace)
    port = service.spec.ports[0]
    node_port_url = f"http://{node_address}:{port.node_port}{path}"
    cluster_ip_url = f"http://{service.spec.cluster_ip}:{port.port}{path}"

    async def answered_by_a_pod(url: str) -> str:
        try:
            body = await http_get(url)
        except OSError:
            return ""  # refused, reset or timed out: the path is not ready yet
        return body if accept(body) else ""

    answer = await wait_for(lambda: answered_by_a_pod(node_port_url),
                            timeout=deadline.left(), interval=0.2,
                            what=f"GET {node_port_url}")
    if not cluster_ip:
        return ServiceAnswers(node_port_url, "", answer)
    await wait_for(lambda: answered_by_a_pod(cluster_ip_url), timeout=deadline.left(),
                   interval=0.2, what=f"GET {cluster_ip_url}")
    return ServiceAnswers(node_port_url, cluster_ip_url, answer)


def crossed_both_tiers(body: str) -> bool:
    """Whether a guestbook answer came from a frontend pod that reached a backend pod:
    ``frontend-<pod> -> backend-<pod>: ...`` (pure)."""
    head, sep, tail = body.partition(" -> ")
    return bool(sep) and head.startswith(f"{FRONTEND}-") and tail.startswith(f"{BACKEND}-")


async def check_demo_answers(client: Client, node_address: str, deadline: Deadline, *,
                             guestbook: bool, cluster_ip: bool) -> DemoEndpoints:
    """``hello`` answers /hostname from one of its pods; with ``guestbook``, the
    guestbook's frontend answers with its backend's answer inside (both tiers). With
    ``cluster_ip``, each through its cluster IP from the host too."""
    hello = await _answers(client, DEMO, DEMO_NAMESPACE, node_address, "/hostname",
                           lambda body: body.startswith(f"{DEMO}-"), deadline,
                           cluster_ip=cluster_ip)
    book = None
    if guestbook:
        for name in (BACKEND, FRONTEND):
            await wait_available(client, name, GUESTBOOK_NAMESPACE, deadline)
        book = await _answers(client, FRONTEND, GUESTBOOK_NAMESPACE, node_address, "/",
                              crossed_both_tiers, deadline, cluster_ip=cluster_ip)
    return DemoEndpoints(hello.node_port_url, hello.cluster_ip_url, hello.answer,
                         guestbook=book)
