"""The kubelet's API (``skiff.kubelet.v1.Kubelet``): container logs, exec and stats for
the pods bound to this node; ``skiffctl logs``, ``exec`` and ``top`` call it, and the
apiserver's REST edge for ``pods/exec``, ``attach``, ``portforward`` and metrics. The
streaming calls (``ExecStream``, ``Attach``, ``PortForward``) live in
:mod:`services.kubelet.streaming`, the node's own usage in :mod:`services.kubelet.node_stats`.

The edge is thin: validate the request, find the Docker container by the labels the
kubelet put on it (:mod:`skiff.kubelet.labels`), ask Docker, map errors through one
table (:func:`skiff.api.errors.to_grpc`). Which container a request means is Kubernetes'
rule: the one named with ``container``, or the pod's only one; its latest instance
(highest restart count), or with ``previous`` the one before. The pod itself comes from
the kubelet's own view (``pod_lookup(namespace, name)``), so a pod the apiserver knows
but this kubelet does not run is NOT_FOUND here.

Errors: NOT_FOUND names the pod or container that is missing; INVALID_ARGUMENT names the
field (``container`` when the pod has several and none was named, ``command`` when it is
empty); FAILED_PRECONDITION for exec into a container that is not running;
DEADLINE_EXCEEDED when an exec outlives its timeout.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiodocker
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.kubelet import node_stats, streaming
from services.kubelet.probes import exec_collect, wall_time
from skiff.api import errors
from skiff.api.v1 import core_pb2
from skiff.kubelet import labels
from skiff.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc
from skiff.logging import get_logger

log = get_logger("kubelet.server")

#: Kubernetes' kubelet port; local nodes count up from it (DESIGN.md).
DEFAULT_ADDRESS = "127.0.0.1:10250"
#: Log bytes per streamed chunk (a chunk is one gRPC message).
CHUNK_BYTES = 64 * 1024
#: Seconds at least between the two samples of the node's CPU usage.
NODE_CPU_WINDOW = 0.5
SERVICE_NAME = kubelet_pb2.DESCRIPTOR.services_by_name["Kubelet"].full_name

PodLookup = Callable[[str, str], core_pb2.Pod | None]


class NotRunning(errors.APIError):
    """The container exists but is not running (exec needs a running one)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ExecTimeout(errors.APIError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def _unary(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Turn API errors into their gRPC status; log what else goes wrong."""

    @functools.wraps(method)
    async def wrapper(self: KubeletServicer, request: Any,
                      context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except errors.APIError as e:
            await context.abort(*errors.to_grpc(e))
        except aiodocker.DockerError as e:
            log.warning("docker failed", method=method.__name__, error=e.message)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"docker: {e.message}")

    return wrapper


async def _guarded(outputs: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                   what: str) -> AsyncIterator[Any]:
    """A streaming call's replies, API errors turned into their gRPC status."""
    try:
        async for output in outputs:
            yield output
    except errors.APIError as e:
        await context.abort(*errors.to_grpc(e))
    except aiodocker.DockerError as e:
        log.warning("docker failed", method=what, error=e.message)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"docker: {e.message}")


@dataclass(frozen=True)
class Found:
    """The container a request means: its pod, its name in the pod, its Docker entry."""

    pod: core_pb2.Pod
    name: str
    id: str
    running: bool


class KubeletServicer(kubelet_pb2_grpc.KubeletServicer):
    """Logs, exec and stats of this node's pods, straight from Docker."""

    def __init__(self, docker: aiodocker.Docker, node: str, pod_lookup: PodLookup) -> None:
        self._docker = docker
        self._node = node
        self._lookup = pod_lookup

    # ---- finding containers ----

    def _pod(self, namespace: str, name: str) -> core_pb2.Pod:
        if not name:
            raise errors.BadRequest("pod: a pod name is required")
        namespace = namespace or "default"
        pod = self._lookup(namespace, name)
        if pod is None:
            raise errors.NotFound(f'pods "{name}" not found in namespace "{namespace}" '
                                  f'on node "{self._node}"')
        return pod

    async def find(self, namespace: str, pod_name: str, container: str, *,
                   previous: bool = False) -> Found:
        """The Docker container a request names (see the module's docstring)."""
        pod = self._pod(namespace, pod_name)
        names = [c.name for c in pod.spec.containers]
        if not container:
            if len(names) != 1:
                raise errors.BadRequest(
                    f"container: a container name must be specified for pod {pod_name}, "
                    f"choose one of: [{' '.join(names)}]")
            container = names[0]
        elif container not in names:
            raise errors.NotFound(f'container "{container}" not found in pod "{pod_name}" '
                                  f"(its containers: {', '.join(names)})")
        filters = labels.pod_filter(self._node, pod.metadata.uid)
        filters["label"].append(f"{labels.CONTAINER_NAME}={container}")
        listed = await self._docker.containers.list(all=True, filters=filters)
        instances = sorted(
            (c._container for c in listed),
            key=lambda c: (_restart_count(c), c.get("Created") or 0), reverse=True)
        index = 1 if previous else 0
        if len(instances) <= index:
            if previous:
                raise errors.NotFound(f'previous terminated container "{container}" in pod '
                                      f'"{pod_name}" not found')
            raise errors.NotFound(f'container "{container}" in pod "{pod_name}" has not '
                                  "been created yet")
        chosen = instances[index]
        return Found(pod=pod, name=container, id=chosen["Id"],
                     running=chosen.get("State") == "running")

    # ---- logs ----

    async def ContainerLogs(self, request: kubelet_pb2.LogsRequest,
                            context: grpc.aio.ServicerContext,
                            ) -> AsyncIterator[kubelet_pb2.LogChunk]:
        try:
            found = await self.find(request.namespace, request.pod, request.container,
                                    previous=request.previous)
            if request.HasField("tail_lines") and request.tail_lines < 0:
                raise errors.BadRequest("tail_lines: must be 0 or more")
            if request.HasField("since_seconds") and request.since_seconds < 1:
                raise errors.BadRequest("since_seconds: must be 1 or more")
        except errors.APIError as e:
            await context.abort(*errors.to_grpc(e))
        params: dict[str, Any] = {"timestamps": request.timestamps,
                                  "tail": str(request.tail_lines)
                                  if request.HasField("tail_lines") else "all"}
        if request.HasField("since_seconds"):
            params["since"] = int(time.time()) - request.since_seconds
        container = self._docker.containers.container(found.id)
        try:
            if request.follow:
                async for text in container.log(stdout=True, stderr=True, follow=True,
                                                **params):
                    yield kubelet_pb2.LogChunk(data=text.encode())
                return
            pieces = await container.log(stdout=True, stderr=True, **params)
        except aiodocker.DockerError as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"docker: {e.message}")
        data = "".join(pieces).encode()
        for start in range(0, len(data), CHUNK_BYTES):
            yield kubelet_pb2.LogChunk(data=data[start:start + CHUNK_BYTES])

    # ---- exec ----

    @_unary
    async def Exec(self, request: kubelet_pb2.ExecRequest,
                   context: grpc.aio.ServicerContext) -> kubelet_pb2.ExecResponse:
        if not request.command:
            raise errors.BadRequest("command: at least one word is required")
        if request.timeout < 0:
            raise errors.BadRequest("timeout: must be 0 (no limit) or more")
        found = await self.find(request.namespace, request.pod, request.container)
        if not found.running:
            raise NotRunning(f'container "{found.name}" in pod "{request.pod}" is not '
                             "running")
        log.debug("exec", pod=request.pod, container=found.name, command=request.command[0])
        try:
            async with asyncio.timeout(request.timeout or None):
                stdout, stderr, code = await exec_collect(self._docker, found.id,
                                                          list(request.command))
        except TimeoutError:
            raise ExecTimeout(f"command did not finish within {request.timeout:g}s "
                              "(it may still be running in the container)") from None
        return kubelet_pb2.ExecResponse(stdout=stdout, stderr=stderr, exit_code=code)

    # ---- streaming exec, attach, port-forward ----

    async def _open(self, inputs: AsyncIterator[kubelet_pb2.StreamInput], *,
                    attach: bool) -> tuple[kubelet_pb2.StreamStart, Found]:
        start = await streaming.first_message(inputs, "start")
        streaming.validate_start(start, needs_command=not attach)
        found = await self.find(start.namespace, start.pod, start.container)
        if not found.running:
            raise NotRunning(f'container "{found.name}" in pod "{start.pod}" is not '
                             "running")
        log.debug("attach" if attach else "exec stream", pod=start.pod, container=found.name)
        return start, found

    async def _exec_stream(self, inputs: AsyncIterator[kubelet_pb2.StreamInput],
                           ) -> AsyncIterator[kubelet_pb2.StreamOutput]:
        start, found = await self._open(inputs, attach=False)
        async for output in streaming.exec_stream(self._docker, found.id, start, inputs):
            yield output

    async def _attach(self, inputs: AsyncIterator[kubelet_pb2.StreamInput],
                      ) -> AsyncIterator[kubelet_pb2.StreamOutput]:
        start, found = await self._open(inputs, attach=True)
        async for output in streaming.attach_stream(self._docker, found.id, start, inputs):
            yield output

    async def _port_forward(self, inputs: AsyncIterator[kubelet_pb2.PortForwardInput],
                            ) -> AsyncIterator[kubelet_pb2.PortForwardOutput]:
        start = await streaming.first_message(inputs, "start")
        pod = self._pod(start.namespace, start.pod)
        async for output in streaming.port_forward(pod, start.port, inputs):
            yield output

    async def ExecStream(self, request_iterator: AsyncIterator[kubelet_pb2.StreamInput],
                   context: grpc.aio.ServicerContext,
                   ) -> AsyncIterator[kubelet_pb2.StreamOutput]:
        # An async generator function itself: grpc.aio tells streaming handlers by that.
        async for output in _guarded(self._exec_stream(request_iterator), context, "ExecStream"):
            yield output

    async def Attach(self, request_iterator: AsyncIterator[kubelet_pb2.StreamInput],
               context: grpc.aio.ServicerContext,
               ) -> AsyncIterator[kubelet_pb2.StreamOutput]:
        # An async generator function itself: grpc.aio tells streaming handlers by that.
        async for output in _guarded(self._attach(request_iterator), context, "Attach"):
            yield output

    async def PortForward(self, request_iterator: AsyncIterator[kubelet_pb2.PortForwardInput],
                    context: grpc.aio.ServicerContext,
                    ) -> AsyncIterator[kubelet_pb2.PortForwardOutput]:
        # An async generator function itself: grpc.aio tells streaming handlers by that.
        async for output in _guarded(self._port_forward(request_iterator), context, "PortForward"):
            yield output

    # ---- stats ----

    @_unary
    async def PodStats(self, request: kubelet_pb2.StatsRequest,
                       context: grpc.aio.ServicerContext) -> kubelet_pb2.StatsResponse:
        filters = labels.node_filter(self._node)
        filters["label"].append(f"{labels.CONTAINER_TYPE}={labels.CONTAINER}")
        if request.namespace:
            filters["label"].append(f"{labels.POD_NAMESPACE}={request.namespace}")
        listed = await self._docker.containers.list(filters=filters)  # running ones
        entries = [c._container for c in listed]
        # One-shot stats take Docker about a second (it samples twice for the CPU
        # rate): ask for every container at once, and sample the node's own CPU around
        # that wait (at least NODE_CPU_WINDOW apart).
        cpu_before = await node_stats.cpu_sample()
        samples, info, _ = await asyncio.gather(
            asyncio.gather(*(_one_stats(self._docker, e["Id"]) for e in entries)),
            self._docker.system.info(), asyncio.sleep(NODE_CPU_WINDOW))
        cpu_after = await node_stats.cpu_sample()
        pods: dict[str, kubelet_pb2.PodStats] = {}
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for entry, sample in zip(entries, samples, strict=True):
            if sample is None:
                continue  # stopped in between
            tags = entry.get("Labels") or {}
            uid = tags.get(labels.POD_UID, "")
            pod = pods.get(uid)
            if pod is None:
                pod = pods[uid] = kubelet_pb2.PodStats(
                    namespace=tags.get(labels.POD_NAMESPACE, ""),
                    name=tags.get(labels.POD_NAME, ""), uid=uid)
            cpu, memory = cpu_nanocores(sample), memory_working_set(sample)
            pod.containers.add(name=tags.get(labels.CONTAINER_NAME, ""), cpu_nanocores=cpu,
                               memory_working_set_bytes=memory)
            totals[uid][0] += cpu
            totals[uid][1] += memory
        response = kubelet_pb2.StatsResponse(node=kubelet_pb2.NodeStats(
            name=self._node, cpu_capacity_nanocores=int(info.get("NCPU") or 0) * 10**9,
            memory_capacity_bytes=int(info.get("MemTotal") or 0),
            cpu_nanocores=node_stats.cpu_rate(cpu_before, cpu_after),
            memory_working_set_bytes=await node_stats.memory_working_set()))
        response.time.GetCurrentTime()
        for uid, pod in sorted(pods.items(), key=lambda p: (p[1].namespace, p[1].name)):
            pod.cpu_nanocores, pod.memory_working_set_bytes = totals[uid]
            pod.containers.sort(key=lambda c: c.name)
            response.pods.append(pod)
            response.node.pods_cpu_nanocores += pod.cpu_nanocores
            response.node.pods_memory_working_set_bytes += pod.memory_working_set_bytes
        return response


def _restart_count(entry: Mapping[str, Any]) -> int:
    try:
        return int((entry.get("Labels") or {}).get(labels.RESTART_COUNT, "0"))
    except ValueError:
        return 0


async def _one_stats(docker: aiodocker.Docker, container_id: str) -> dict[str, Any] | None:
    try:
        samples = await docker.containers.container(container_id).stats(stream=False)
    except aiodocker.DockerError as e:
        if e.status in (404, 409):
            return None
        raise
    return samples[0] if samples else None


def cpu_nanocores(sample: Mapping[str, Any]) -> int:
    """CPU in use, in billionths of a core, between Docker's two samples (pure)."""
    now = (sample.get("cpu_stats") or {}).get("cpu_usage") or {}
    before = (sample.get("precpu_stats") or {}).get("cpu_usage") or {}
    read, preread = wall_time(sample.get("read", "")), wall_time(sample.get("preread", ""))
    used = int(now.get("total_usage") or 0) - int(before.get("total_usage") or 0)
    if not read or not preread or read <= preread or used <= 0:
        return 0
    return int(used / (read - preread))


def memory_working_set(sample: Mapping[str, Any]) -> int:
    """Memory usage minus inactive file cache (cgroup v1 or v2), Kubernetes' working set
    (pure)."""
    memory = sample.get("memory_stats") or {}
    stats = memory.get("stats") or {}
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0)) or 0
    return max(0, int(memory.get("usage") or 0) - int(inactive))


@dataclass
class KubeletServer:
    """The kubelet API, serving; ``port`` is the one bound (useful with port 0)."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def stop(self, grace: float = 1.0) -> None:
        """Say NOT_SERVING, let calls in flight finish for ``grace`` seconds, stop."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def serve(docker: aiodocker.Docker, node: str, pod_lookup: PodLookup, *,
                address: str = DEFAULT_ADDRESS) -> KubeletServer:
    """Start the kubelet API on ``address`` (host:port; port 0 picks a free one).

    Raises OSError when the address cannot be bound.
    """
    server = grpc.aio.server()
    kubelet_pb2_grpc.add_KubeletServicer_to_server(
        KubeletServicer(docker, node, pod_lookup), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"kubelet API: cannot listen on {address} (address in use?)") from e
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("kubelet API serving", address=address, port=port, node=node)
    return KubeletServer(server=server, port=port, health=health_servicer)
