"""Helpers of the e2e tests: pod manifests and waiting on what the API says of a pod."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable

from skiff.api import errors
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.kubelet.images import BUSYBOX_IMAGE

BUSYBOX = BUSYBOX_IMAGE


def container(name: str, *command: str, image: str = BUSYBOX, policy: str = "IfNotPresent",
              env: dict[str, str] | None = None) -> core_pb2.Container:
    return core_pb2.Container(
        name=name, image=image, image_pull_policy=policy, command=list(command),
        env=[core_pb2.EnvVar(name=k, value=v) for k, v in (env or {}).items()])


def pod(name: str, namespace: str, node: str, *containers: core_pb2.Container,
        restart_policy: str = "Always", grace: int | None = None) -> core_pb2.Pod:
    spec = core_pb2.PodSpec(containers=list(containers), node_name=node,
                            restart_policy=restart_policy)
    if grace is not None:
        spec.termination_grace_period_seconds = grace
    return core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace),
                        spec=spec)


def http_server(name: str = "web", port: int = 8080, body: str = "hello") -> core_pb2.Container:
    """busybox httpd serving ``body`` at / on ``port``."""
    script = (f"mkdir -p /www && echo {body} > /www/index.html && "
              f"exec httpd -f -p {port} -h /www")
    served = container(name, "sh", "-c", script)
    served.ports.add(name="http", container_port=port, protocol="TCP")
    return served


def condition(p: core_pb2.Pod, type_: str) -> str:
    return next((c.status for c in p.status.conditions if c.type == type_), "")


def status_of(p: core_pb2.Pod, name: str) -> core_pb2.ContainerStatus | None:
    return next((s for s in p.status.container_statuses if s.name == name), None)


async def wait_pod(api: Client, namespace: str, name: str,
                   check: Callable[[core_pb2.Pod], bool], *, timeout: float = 60.0,
                   what: str = "pod condition") -> core_pb2.Pod:
    """Poll the pod until ``check(pod)``; returns it."""
    async def probe() -> core_pb2.Pod | None:
        found = await api.pods.get(name, namespace)
        return found if check(found) else None

    return await wait_for(probe, timeout=timeout, interval=0.1, what=f"{name}: {what}")


def running_ready(p: core_pb2.Pod) -> bool:
    return p.status.phase == "Running" and condition(p, "Ready") == "True"


async def wait_gone(api: Client, namespace: str, name: str, *, timeout: float = 60.0) -> None:
    async def gone() -> bool:
        try:
            await api.pods.get(name, namespace)
        except errors.NotFound:
            return True
        return False

    await wait_for(gone, timeout=timeout, interval=0.1, what=f"{name} deleted")


async def http_get(url: str, timeout: float = 2.0) -> str:
    """GET ``url`` (in a thread: urllib blocks) and return the body."""
    def get() -> str:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.read().decode()

    return await asyncio.to_thread(get)
