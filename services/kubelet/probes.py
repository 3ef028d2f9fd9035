"""Container probes: liveness, readiness and startup, as the Kubernetes kubelet runs them.

One worker task per (pod, container, probe kind) probes on its period and publishes a
result only after ``success_threshold`` / ``failure_threshold`` identical outcomes in a
row (:func:`observe`, pure). The :class:`ProbeManager` holds the published results and
answers the kubelet's questions about them (:meth:`~ProbeManager.ready`,
:meth:`~ProbeManager.started`, :meth:`~ProbeManager.liveness_failed`); whenever a
published result of a pod changes it calls ``on_change(pod_uid)`` so the pod worker
syncs again (it restarts a container whose liveness failed, writes status for readiness).

Semantics follow Kubernetes' ``pkg/kubelet/prober``:

- results belong to one container *instance* (its Docker id): a new id for a name, the
  container having restarted, starts that container's workers again with fresh results;
- liveness and readiness do not probe until the startup probe succeeded; the startup
  worker stops once it has; a failed startup probe counts as a failed liveness probe;
- readiness starts as failure, liveness as success, startup as "not yet";
- ``initial_delay_seconds`` counts from the container's start, not from startup success;
- once liveness (or startup) failed, that worker holds: the container is to be restarted,
  and the restarted instance has a new id and new workers;
- a probe that cannot be run at all (Docker answered an error, a named port that does not
  exist) changes nothing and is logged: it says nothing about the container's health.

The three kinds of action (:func:`run_exec`, :func:`run_http_get`, :func:`run_tcp_socket`)
are plain coroutines of what they need, so other parts (and tests) can call them directly.
Time comes from an injected :class:`~skiff.client.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiodocker
import aiohttp

from services.kubelet.runtime import ContainerRef
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.clock import Clock, RealClock, with_timeout
from skiff.logging import get_logger
from skiff.tasks import spawn

log = get_logger("kubelet.probes")

# Kubernetes' defaults for fields left at zero.
DEFAULT_PERIOD_SECONDS = 10
DEFAULT_TIMEOUT_SECONDS = 1
DEFAULT_SUCCESS_THRESHOLD = 1
DEFAULT_FAILURE_THRESHOLD = 3
#: How much of a probe's output is kept for the log line (Kubernetes keeps 10 KiB).
MAX_OUTPUT = 10 * 1024
USER_AGENT = "skiff-probe/1.0"


class ProbeKind(enum.Enum):
    LIVENESS = "liveness"
    READINESS = "readiness"
    STARTUP = "startup"


class Result(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    #: The probe could not be run (not the container's fault): nothing is published.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Outcome:
    """One probe's result and a human-readable reason (output, status, error)."""

    result: Result
    message: str = ""


@dataclass(frozen=True)
class ProbeSettings:
    """A Probe's timing with Kubernetes' defaults filled in for fields left at zero."""

    initial_delay: float = 0.0
    period: float = DEFAULT_PERIOD_SECONDS
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD

    @classmethod
    def of(cls, probe: core_pb2.Probe, kind: ProbeKind) -> ProbeSettings:
        success = probe.success_threshold or DEFAULT_SUCCESS_THRESHOLD
        if kind is not ProbeKind.READINESS:
            success = 1  # Kubernetes' validation: liveness and startup must use 1
        return cls(initial_delay=max(0, probe.initial_delay_seconds),
                   period=probe.period_seconds or DEFAULT_PERIOD_SECONDS,
                   timeout=probe.timeout_seconds or DEFAULT_TIMEOUT_SECONDS,
                   success_threshold=success,
                   failure_threshold=probe.failure_threshold or DEFAULT_FAILURE_THRESHOLD)


# ---- thresholds (pure) ----


@dataclass(frozen=True)
class ThresholdState:
    """A worker's count of identical outcomes in a row and what it last published.

    ``published`` is None until a result was published (for readiness and liveness the
    manager then shows the kind's initial value).
    """

    last: Result | None = None
    run: int = 0
    published: Result | None = None


def observe(state: ThresholdState, result: Result, settings: ProbeSettings) -> ThresholdState:
    """The state after one probe outcome (pure): a result is published once it has been
    seen ``success_threshold`` (or ``failure_threshold``) times in a row; UNKNOWN changes
    nothing."""
    if result is Result.UNKNOWN:
        return state
    run = state.run + 1 if result is state.last else 1
    needed = (settings.success_threshold if result is Result.SUCCESS
              else settings.failure_threshold)
    published = result if run >= needed else state.published
    return ThresholdState(last=result, run=run, published=published)


# ---- the probe actions ----


def resolve_port(port: meta_pb2.IntOrString, container: core_pb2.Container) -> int:
    """A probe's port: a number, or the name of one of the container's ports.

    Raises ValueError naming the port when no container port has that name.
    """
    if port.type == meta_pb2.IntOrString.STRING:
        text = port.str_val
        if text.isdigit():
            return int(text)
        for declared in container.ports:
            if declared.name == text:
                return declared.container_port
        raise ValueError(f"container {container.name!r} has no port named {text!r}")
    if not 0 < port.int_val < 65536:
        raise ValueError(f"invalid port {port.int_val}")
    return port.int_val


async def run_exec(docker: aiodocker.Docker, container_id: str, command: list[str],
                   timeout: float) -> Outcome:
    """Run ``command`` in the container (docker exec): exit code 0 is success.

    Past ``timeout`` seconds it is a failure (Kubernetes enforces exec probe timeouts);
    Docker cannot kill an exec, so the process may run on, but its result is ignored.
    """
    if not command:
        return Outcome(Result.UNKNOWN, "exec probe has no command")
    try:
        async with asyncio.timeout(timeout):
            exit_code, output = await exec_command(docker, container_id, command)
    except TimeoutError:
        return Outcome(Result.FAILURE, f"command timed out after {timeout:g}s")
    except aiodocker.DockerError as e:
        return Outcome(Result.UNKNOWN, f"docker exec: {e.message}")
    text = output[-MAX_OUTPUT:].decode(errors="replace").strip()
    if exit_code == 0:
        return Outcome(Result.SUCCESS, text)
    return Outcome(Result.FAILURE, f"exit code {exit_code}: {text}" if text
                   else f"exit code {exit_code}")


async def exec_command(docker: aiodocker.Docker, container_id: str, command: list[str],
                       ) -> tuple[int, bytes]:
    """Run ``command`` in a container to its end: its exit code and combined output."""
    stdout, stderr, code = await exec_collect(docker, container_id, command)
    return code, stdout + stderr


async def exec_collect(docker: aiodocker.Docker, container_id: str, command: list[str],
                       ) -> tuple[bytes, bytes, int]:
    """Run ``command`` in a container to its end: (stdout, stderr, exit code)."""
    container = docker.containers.container(container_id)
    execution = await container.exec(command, stdout=True, stderr=True, tty=False)
    out, err = bytearray(), bytearray()
    async with execution.start(detach=False) as stream:
        while (message := await stream.read_out()) is not None:
            (err if message.stream == 2 else out).extend(message.data)
    # The output ends when the process does, but Docker may record the exit code a moment
    # later: poll the exec until it says it is no longer running (the caller's timeout
    # bounds this).
    while True:
        info = await execution.inspect()
        if not info.get("Running"):
            return bytes(out), bytes(err), int(info.get("ExitCode") or 0)
        await asyncio.sleep(0.01)


async def run_http_get(session: aiohttp.ClientSession, *, scheme: str, host: str, port: int,
                       path: str, headers: Mapping[str, str], timeout: float) -> Outcome:
    """GET the URL: a status in 200-399 is success; anything else, or no answer within
    ``timeout``, is failure. Redirects are not followed (a 3xx counts as success)."""
    scheme = (scheme or "HTTP").lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{host}:{port}{path}"
    request_headers = {"User-Agent": USER_AGENT, "Accept": "*/*", **headers}
    # Kubernetes skips certificate verification for HTTPS probes.
    tls: ssl.SSLContext | bool = False if scheme == "https" else True
    try:
        async with session.get(url, headers=request_headers, allow_redirects=False,
                               ssl=tls, timeout=aiohttp.ClientTimeout(total=timeout)
                               ) as response:
            body = await response.content.read(MAX_OUTPUT)
            status = response.status
    except TimeoutError:
        return Outcome(Result.FAILURE, f"GET {url}: timed out after {timeout:g}s")
    except (aiohttp.ClientError, OSError, ValueError) as e:
        return Outcome(Result.FAILURE, f"GET {url}: {e!r}")
    if 200 <= status < 400:
        return Outcome(Result.SUCCESS, f"HTTP {status}")
    return Outcome(Result.FAILURE, f"GET {url}: HTTP {status}: "
                                   f"{body.decode(errors='replace').strip()}")


async def run_tcp_socket(host: str, port: int, timeout: float) -> Outcome:
    """Open a TCP connection within ``timeout``: success if it connects."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return Outcome(Result.FAILURE, f"dial {host}:{port}: timed out after {timeout:g}s")
    except OSError as e:
        return Outcome(Result.FAILURE, f"dial {host}:{port}: {e.strerror or e!r}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Outcome(Result.SUCCESS)


async def container_ip(docker: aiodocker.Docker, container_id: str) -> str:
    """The IP a container is reached at: its own, or its sandbox's when it joined the
    sandbox's network namespace (``container:<id>``); loopback for host networking."""
    info = await docker.containers.container(container_id).show()
    mode = (info.get("HostConfig") or {}).get("NetworkMode") or ""
    if mode.startswith("container:"):
        return await container_ip(docker, mode.removeprefix("container:"))
    if mode == "host":
        return "127.0.0.1"
    settings = info.get("NetworkSettings") or {}
    if settings.get("IPAddress"):
        return str(settings["IPAddress"])
    for network in (settings.get("Networks") or {}).values():
        if network.get("IPAddress"):
            return str(network["IPAddress"])
    raise LookupError(f"container {container_id[:12]} has no IP address")


# ---- the manager and its workers ----

#: Runs one probe of a container instance (the real one is the manager's own; unit tests
#: of the worker logic pass a scripted one).
Prober = Callable[[core_pb2.Probe, core_pb2.Container, ContainerRef], Awaitable[Outcome]]


@dataclass
class _ContainerProbes:
    """The probes of one container instance. Invariant: ``results[kind]`` is the last
    published result of the current instance's ``kind`` worker (None: none yet)."""

    ref: ContainerRef
    spec: core_pb2.Container
    probes: dict[ProbeKind, core_pb2.Probe]
    results: dict[ProbeKind, Result | None] = field(default_factory=dict)
    #: Set once startup succeeded (at once when there is no startup probe).
    started: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    #: The pod IP found by inspecting Docker when the pod's status has none yet.
    ip: str = ""


@dataclass
class _PodProbes:
    pod: core_pb2.Pod
    containers: dict[str, _ContainerProbes] = field(default_factory=dict)


def _probes_of(spec: core_pb2.Container) -> dict[ProbeKind, core_pb2.Probe]:
    probes = {}
    for kind, name in ((ProbeKind.LIVENESS, "liveness_probe"),
                       (ProbeKind.READINESS, "readiness_probe"),
                       (ProbeKind.STARTUP, "startup_probe")):
        if spec.HasField(name):
            probes[kind] = getattr(spec, name)
    return probes


class ProbeManager:
    """Runs the probes of the node's running containers and keeps their results.

    ``update_pod`` is called by the pod worker after every sync with the pod's running
    containers; it starts workers for new container instances and stops those of
    instances that are gone. Results are read synchronously; ``on_change(pod_uid)`` is
    called (from the event loop) whenever a published result of that pod changed.
    """

    def __init__(self, docker: aiodocker.Docker, on_change: Callable[[str], None], *,
                 clock: Clock | None = None, prober: Prober | None = None) -> None:
        """``prober`` replaces the real probe actions (exec, HTTP, TCP); only unit tests
        of the worker logic pass one."""
        self._docker = docker
        self._on_change = on_change
        self._clock: Clock = clock or RealClock()
        self._prober = prober
        self._pods: dict[str, _PodProbes] = {}
        #: One HTTP session for every http_get probe, made on first use (it needs the
        #: running loop). force_close: every probe opens a fresh connection, as the
        #: Kubernetes prober does (a kept-alive one would hide a server that stopped
        #: accepting).
        self._session: aiohttp.ClientSession | None = None

    # ---- the kubelet's side ----

    def update_pod(self, pod: core_pb2.Pod, containers: Mapping[str, ContainerRef]) -> None:
        """Probe the pod's running ``containers`` (by container name): workers start for
        a new instance, restart with fresh results for a new id, stop for a gone one."""
        uid = pod.metadata.uid
        entry = self._pods.setdefault(uid, _PodProbes(pod))
        entry.pod = pod
        specs = {c.name: c for c in pod.spec.containers}
        for name in list(entry.containers):
            current = entry.containers[name]
            ref = containers.get(name)
            if ref is None or ref.id != current.ref.id or name not in specs:
                self._stop_container(current)
                del entry.containers[name]
        for name, ref in containers.items():
            spec = specs.get(name)
            if spec is None or name in entry.containers:
                continue
            entry.containers[name] = self._start_container(uid, spec, ref)

    def remove_pod(self, uid: str) -> None:
        """Stop probing the pod and forget its results."""
        entry = self._pods.pop(uid, None)
        if entry is not None:
            for probes in entry.containers.values():
                self._stop_container(probes)

    def ready(self, uid: str, container: str) -> bool:
        """Readiness: False until the startup probe passed and the readiness probe
        succeeded; True for a running container without a readiness probe; False for a
        container that is not running (not given to ``update_pod``)."""
        probes = self._get(uid, container)
        if probes is None or not probes.started.is_set():
            return False
        if ProbeKind.READINESS not in probes.probes:
            return True
        return probes.results.get(ProbeKind.READINESS) is Result.SUCCESS

    def started(self, uid: str, container: str) -> bool:
        """Whether the startup probe passed (True without one) for the running instance;
        False for a container that is not running."""
        probes = self._get(uid, container)
        return probes is not None and probes.started.is_set()

    def liveness_failed(self, uid: str, container: str) -> bool:
        """Whether the current instance reached its liveness (or startup) probe's
        failure threshold: the kubelet should kill and restart it."""
        probes = self._get(uid, container)
        if probes is None:
            return False
        return Result.FAILURE in (probes.results.get(ProbeKind.LIVENESS),
                                  probes.results.get(ProbeKind.STARTUP))

    async def stop(self) -> None:
        """Stop every worker and close the HTTP session."""
        tasks = [t for entry in self._pods.values() for c in entry.containers.values()
                 for t in c.tasks]
        for uid in list(self._pods):
            self.remove_pod(uid)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- workers ----

    def _get(self, uid: str, container: str) -> _ContainerProbes | None:
        entry = self._pods.get(uid)
        return entry.containers.get(container) if entry is not None else None

    def _start_container(self, uid: str, spec: core_pb2.Container,
                         ref: ContainerRef) -> _ContainerProbes:
        probes = _ContainerProbes(ref=ref, spec=spec, probes=_probes_of(spec))
        if ProbeKind.STARTUP not in probes.probes:
            probes.started.set()
        for kind, probe in probes.probes.items():
            name = f"probe {kind.value} {uid}/{spec.name}@{ref.id[:12]}"
            probes.tasks.append(spawn(self._work(uid, probes, kind, probe), name=name))
        return probes

    @staticmethod
    def _stop_container(probes: _ContainerProbes) -> None:
        for task in probes.tasks:
            task.cancel()

    async def _work(self, uid: str, probes: _ContainerProbes, kind: ProbeKind,
                    probe: core_pb2.Probe) -> None:
        """Probe on the period until the result is final for this instance (startup
        succeeded, liveness or startup failed) or the worker is cancelled."""
        settings = ProbeSettings.of(probe, kind)
        bound = log.bind(pod_uid=uid, container=probes.spec.name, probe=kind.value,
                         container_id=probes.ref.id[:12])
        if kind is not ProbeKind.STARTUP:
            await probes.started.wait()
        # The initial delay counts from the container's start (Kubernetes' rule).
        await self._clock.sleep(probes.ref.started_at + settings.initial_delay
                                - self._clock.wall())
        state = ThresholdState()
        unknown_before = False
        while True:
            began = self._clock.now()
            outcome = await self._probe_once(uid, probes, probe, settings)
            if outcome.result is Result.UNKNOWN:
                # Once per streak: a container going away fails every probe until the
                # kubelet stops the workers.
                log_unknown = bound.debug if unknown_before else bound.warning
                log_unknown("probe could not run", reason=outcome.message)
            else:
                bound.debug("probed", result=outcome.result.value, reason=outcome.message)
            unknown_before = outcome.result is Result.UNKNOWN
            state = observe(state, outcome.result, settings)
            if state.published is not None and state.published is not probes.results.get(kind):
                self._publish(uid, probes, kind, state.published, outcome, bound)
            if kind is ProbeKind.STARTUP and state.published is Result.SUCCESS:
                return  # liveness and readiness take over
            if kind is not ProbeKind.READINESS and state.published is Result.FAILURE:
                return  # on hold: the kubelet restarts the container (a new instance)
            await self._clock.sleep(began + settings.period - self._clock.now())

    def _publish(self, uid: str, probes: _ContainerProbes, kind: ProbeKind, result: Result,
                 outcome: Outcome, bound: Any) -> None:
        probes.results[kind] = result
        if kind is ProbeKind.STARTUP and result is Result.SUCCESS:
            probes.started.set()
        if result is Result.FAILURE:
            bound.info(f"{kind.value} probe failed", reason=outcome.message)
        else:
            bound.info(f"{kind.value} probe succeeded")
        try:
            self._on_change(uid)
        except Exception:  # the callback's failure is not the prober's to handle
            bound.exception("on_change failed")

    async def _probe_once(self, uid: str, probes: _ContainerProbes, probe: core_pb2.Probe,
                          settings: ProbeSettings) -> Outcome:
        """One probe, bounded by its timeout in the clock's time."""
        if self._prober is not None:
            action = self._prober(probe, probes.spec, probes.ref)
        else:
            action = self._act(uid, probes, probe, settings)
        try:
            # A margin over the action's own timeout, which normally fires first: this
            # one only guards against an action that hangs in some unforeseen way.
            return await with_timeout(self._clock, settings.timeout + 1.0, action)
        except TimeoutError:  # the action's own timeout should have fired first
            return Outcome(Result.FAILURE, f"timed out after {settings.timeout:g}s")

    async def _act(self, uid: str, probes: _ContainerProbes, probe: core_pb2.Probe,
                   settings: ProbeSettings) -> Outcome:
        if probe.HasField("exec"):
            return await run_exec(self._docker, probes.ref.id, list(probe.exec.command),
                                  settings.timeout)
        try:
            if probe.HasField("http_get"):
                action = probe.http_get
                host = action.host or await self._pod_ip(uid, probes)
                port = resolve_port(action.port, probes.spec)
                return await run_http_get(
                    self._http(), scheme=action.scheme, host=host, port=port,
                    path=action.path or "/", timeout=settings.timeout,
                    headers={h.name: h.value for h in action.http_headers})
            if probe.HasField("tcp_socket"):
                action = probe.tcp_socket
                host = action.host or await self._pod_ip(uid, probes)
                return await run_tcp_socket(host, resolve_port(action.port, probes.spec),
                                            settings.timeout)
        except (ValueError, LookupError) as e:
            return Outcome(Result.UNKNOWN, str(e))
        except aiodocker.DockerError as e:
            return Outcome(Result.UNKNOWN, f"docker: {e.message}")
        return Outcome(Result.UNKNOWN, "the probe has no action (exec, httpGet, tcpSocket)")

    async def _pod_ip(self, uid: str, probes: _ContainerProbes) -> str:
        """The pod's IP from its status, else from Docker (the sandbox's), remembered."""
        entry = self._pods.get(uid)
        if entry is not None and entry.pod.status.pod_ip:
            return entry.pod.status.pod_ip
        if not probes.ip:
            probes.ip = await container_ip(self._docker, probes.ref.id)
        return probes.ip

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True), trust_env=False)
        return self._session


def wall_time(stamp: str) -> float:
    """Docker's RFC 3339 UTC timestamp (``State.StartedAt``, nanoseconds) -> epoch
    seconds, for :attr:`ContainerRef.started_at`; 0.0 for Docker's zero time."""
    if not stamp or stamp.startswith("0001-"):
        return 0.0
    head, _, rest = stamp.partition(".")
    digits = rest.split("Z")[0].split("+")[0].split("-")[0]
    base = datetime.fromisoformat(head.rstrip("Z")).replace(tzinfo=UTC).timestamp()
    return base + (float(f"0.{digits}") if digits else 0.0)
