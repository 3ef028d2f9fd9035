"""Chaos against a whole cluster: SIGKILL its parts under load, then check what clients saw.

The store-only chaos test (``tests/chaos/test_store_chaos.py``) kills store replicas
under raw etcd clients. This module does the same one level up, through the API, with
every component running, and is usable two ways:

- ``tests/chaos/test_cluster_chaos.py`` starts its own cluster (:class:`ProcessTarget`:
  three store replicas, two apiservers, two schedulers and two controller-managers
  leader-elected with short leases, one or two kubelets on the real Docker engine);
- ``skiff chaos --duration 300`` runs it against a local cluster started by ``skiff up``
  (:class:`SupervisorTarget`: kills through ``supervisorctl signal KILL``).

Both are a :class:`Target`; :func:`run_chaos` needs nothing else. It lives in ``skiff``
rather than ``skiff.testing`` because it is an operator's tool as much as a test: the
only test machinery it uses (``skiff.testing.processes``) is behind ProcessTarget.

What runs at once, for ``seconds``:

- writers: each owns a few Leases in a namespace of the run's own (Leases are the
  ConfigMaps here: plain objects no controller touches outside ``kube-system`` and
  ``kube-node-lease``). Each writer creates, updates (with the resource_version it last
  saw as precondition) and deletes (with the same precondition) its objects; every
  write carries a unique value (``spec.holderIdentity``) and is recorded with what the
  client learnt: acknowledged (with its resourceVersion), rejected (an API error: it
  wrote nothing), failed (no connection: never sent) or ambiguous (sent, no answer).
  Calls are single attempts: an unanswered one moves the writer to the next apiserver,
  and the object's state is read back before its next write. Preconditions make a late
  ambiguous write unable to overwrite a newer state, so the history is checkable.
- a scaler: a Deployment of busybox pods (really run by the kubelets in Docker) scaled
  to a random size every few seconds;
- a killer: every few seconds SIGKILL one component, restart it after a moment, wait
  until it is healthy (and, for a leader-elected one, until a leader renews the Lease
  again). Mostly a store replica (the raft leader or a follower), sometimes an
  apiserver, the scheduler leader or the controller-manager leader (found from their
  Leases' holderIdentity).

Then, with everything back, the checks (pure functions, unit-tested): every acknowledged
write's final state is what the API and every store replica's keyspace hold (the replicas
hash and read identically at one revision); the Deployment converged (status equal to
spec, one active ReplicaSet, exactly spec.replicas live pods, all Running and Ready, none
twice); Docker's running pod containers on the run's nodes match those pods one to one
(one sandbox and one container per spec container each, nothing of a pod that is gone).
:func:`run_chaos` returns a JSON-able report: operations by kind and outcome, kills by
component and role, failed calls, time to recover per kill kind, and the problems found.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import functools
import ipaddress
import json
import math
import random
import re
import secrets
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc

from skiff.api import errors
from skiff.api.v1 import apps_pb2, coordination_pb2, core_pb2, meta_pb2
from skiff.chaos_watch import LayerWatchers
from skiff.client.client import Client
from skiff.health import grpc_healthy, wait_for
from skiff.kubelet import labels as kubelet_labels
from skiff.kubelet.images import BUSYBOX_IMAGE
from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc

T = TypeVar("T")

# Component kinds, as the report names them.
STORE = "store"
APISERVER = "apiserver"
SCHEDULER = "scheduler"
CONTROLLER_MANAGER = "controller-manager"
KUBELET = "kubelet"
#: The leader-election Lease (in kube-system) of each leader-elected kind.
LEADER_LEASES = {SCHEDULER: "kube-scheduler", CONTROLLER_MANAGER: "kube-controller-manager"}
LEADER_ELECTED = frozenset(LEADER_LEASES)
#: How often each kind is the victim: the store most, as the issue asks; now and then a
#: kubelet too, whose successor must adopt its containers (no duplicate sandbox, no leak).
KILL_WEIGHTS = {STORE: 0.5, APISERVER: 0.15, SCHEDULER: 0.14, CONTROLLER_MANAGER: 0.14,
                KUBELET: 0.07}

WRITERS = 4
OBJECTS_PER_WRITER = 6
#: The share of writes to an existing object that delete it (the rest update it).
DELETE_SHARE = 0.25
#: Pause between one writer's operations: keeps the control plane and the kubelet of a
#: two-core CI machine alive under load (deliberate pacing, not a wait on a condition).
WRITE_PAUSE = 0.1
#: Each attempt's bound; the apiserver itself retries the store for up to 10 s.
CALL_TIMEOUT = 5.0
RETRY_BACKOFF = 0.1
SCALE_INTERVAL = (2.0, 5.0)
MAX_REPLICAS = 4
FINAL_REPLICAS = 2
#: Seconds between one kill (victim healthy again) and the next.
KILL_INTERVAL = (2.0, 5.0)
#: Seconds a victim stays dead before it is restarted.
RESTART_DELAY = (0.1, 1.5)
#: The same for a scheduler or controller-manager leader: a restarted one has the same
#: identity (ProcessTarget) and takes its Lease straight back, so it must sometimes stay
#: dead past the lease duration (ELECTION_FLAGS: 4 s) for the standby to take over.
LEADER_RESTART_DELAY = (0.1, 6.0)
HEALTHY_TIMEOUT = 60.0
#: How long the cluster gets, after the last kill, to converge.
CONVERGENCE_TIMEOUT = 180.0
DEPLOYMENT = "chaos-web"
#: Leader-election timings for ProcessTarget's schedulers and controller-managers.
ELECTION_FLAGS = ["--leader-elect-lease-duration", "4", "--leader-elect-renew-deadline", "3",
                  "--leader-elect-retry-period", "0.5"]
#: Kubelet flags: short back-offs and frequent relists, as the e2e tests use.
KUBELET_FLAGS = ["--crash-backoff-initial", "1", "--crash-backoff-max", "4",
                 "--sync-frequency", "3", "--node-status-update-frequency", "2",
                 "--node-lease-renew-interval", "2", "--container-gc-period", "2"]
UNANSWERED_STORE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


# ------------------------------------------------------------------ the target


@dataclass(frozen=True)
class Component:
    """One killable process: its name (unique in the target), kind, and, for a store
    replica, its client endpoint."""

    name: str
    kind: str
    endpoint: str = ""


class Target(Protocol):
    """A running cluster the chaos can kill parts of."""

    @property
    def apiservers(self) -> list[str]: ...

    @property
    def store_endpoints(self) -> list[str]: ...

    @property
    def nodes(self) -> list[str]: ...

    def components(self) -> list[Component]:
        """Every component: store replicas, apiservers, schedulers, controller-managers
        and kubelets."""
        ...

    async def kill(self, component: Component) -> None:
        """SIGKILL it (no chance to clean up or release a Lease)."""
        ...

    async def restart(self, component: Component) -> None:
        """Start it again (a no-op if something already restarted it)."""
        ...

    async def wait_healthy(self, component: Component, timeout: float) -> None:
        """Return once it serves again (TimeoutError otherwise)."""
        ...

    async def identity(self, component: Component) -> str | None:
        """Its leader-election identity (for a scheduler or controller-manager)."""
        ...


async def _free_cidrs(count: int) -> list[str]:
    """``count`` /24s in 10.100.0.0-10.199.255.0 that no Docker network overlaps."""
    import aiodocker

    docker = aiodocker.Docker()
    try:
        taken = [ipaddress.ip_network(c["Subnet"], strict=False)
                 for network in await docker.networks.list()
                 for c in (network.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]
    finally:
        await docker.close()
    chosen: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for _ in range(1000):
        candidate = ipaddress.ip_network(
            f"10.{secrets.randbelow(100) + 100}.{secrets.randbelow(256)}.0/24")
        if not any(candidate.overlaps(t) for t in [*taken, *chosen] if t.version == 4):
            chosen.append(candidate)
            if len(chosen) == count:
                return [str(c) for c in chosen]
    raise RuntimeError("no free /24 for the pod networks")


class ProcessTarget:
    """A cluster of child processes on free loopback ports (``skiff.testing.processes``):
    three store replicas, two apiservers (so clients fail over), two schedulers and two
    controller-managers (leader-elected, short leases), ``nodes`` kubelets on Docker.
    No proxy: nothing here goes through Services."""

    def __init__(self, base_dir: Path, *, nodes: int = 1, log_level: str = "info") -> None:
        from skiff.testing import processes as p  # test machinery: only this target needs it

        self._p = p
        self.base_dir = base_dir
        self.store = p.StoreCluster(base_dir / "store", log_level=log_level)
        self.apiserver_processes = [
            p.APIServer(base_dir / "apiserver", self.store.endpoints, name=f"apiserver-{i}",
                        log_level=log_level) for i in range(2)]
        servers = [a.address for a in self.apiserver_processes]
        self.schedulers = [p.Scheduler(base_dir / "scheduler", servers, name=f"scheduler-{i}",
                                       extra_args=ELECTION_FLAGS, log_level=log_level)
                           for i in range(2)]
        self.controller_managers = [
            p.ControllerManager(base_dir / "controller-manager", servers,
                                name=f"controller-manager-{i}", extra_args=ELECTION_FLAGS,
                                log_level=log_level) for i in range(2)]
        run = secrets.token_hex(3)
        self._node_names = [f"chaos-{run}-{i}" for i in range(nodes)]
        self.kubelets: list[Any] = []
        self._log_level = log_level

    @property
    def apiservers(self) -> list[str]:
        return [a.address for a in self.apiserver_processes]

    @property
    def store_endpoints(self) -> list[str]:
        return self.store.endpoints

    @property
    def nodes(self) -> list[str]:
        return list(self._node_names)

    def _processes(self) -> dict[str, Any]:
        return {proc.name: proc for proc in (*self.apiserver_processes, *self.schedulers,
                                             *self.controller_managers, *self.kubelets)}

    def components(self) -> list[Component]:
        stores = [Component(m.name, STORE, m.endpoint) for m in self.store.members]
        kinds = {**{a.name: APISERVER for a in self.apiserver_processes},
                 **{s.name: SCHEDULER for s in self.schedulers},
                 **{c.name: CONTROLLER_MANAGER for c in self.controller_managers},
                 **{k.name: KUBELET for k in self.kubelets}}
        return [*stores, *(Component(name, kind) for name, kind in kinds.items())]

    async def start(self) -> None:
        """Start everything and wait until it serves (kubelets: their Node Ready)."""
        self.store.start()
        await self.store.wait_healthy(timeout=HEALTHY_TIMEOUT)
        for server in self.apiserver_processes:
            server.start()
        for server in self.apiserver_processes:
            await server.wait_healthy(timeout=HEALTHY_TIMEOUT)
        for process in (*self.schedulers, *self.controller_managers):
            process.start()
        cidrs = await _free_cidrs(len(self._node_names))
        self.kubelets = [self._p.Kubelet(self.base_dir / "kubelet", self.apiservers,
                                         node_name=name, pod_cidr=cidr,
                                         extra_args=KUBELET_FLAGS, log_level=self._log_level)
                         for name, cidr in zip(self._node_names, cidrs, strict=True)]
        for kubelet in self.kubelets:
            kubelet.start()
        for kubelet in self.kubelets:
            await kubelet.wait_ready(timeout=HEALTHY_TIMEOUT)

    async def stop(self) -> None:
        """Stop every process, then remove the nodes' containers and networks (kubelets
        leave them running on purpose, for their successor to adopt): the Docker
        network, and what a kubelet's bridge plugin put into the kernel (links,
        routes, its nftables table, DOCKER-USER entries: nothing for the docker plugin)."""
        for process in self._processes().values():
            process.stop()
        self.store.stop()
        import aiodocker

        from skiff.kubelet import podnet
        from skiff.kubelet.containers import remove_node

        docker = aiodocker.Docker()
        try:
            for node in self._node_names:
                await remove_node(docker, node)
                await podnet.remove_pod_network(node)
        finally:
            await docker.close()

    def logs(self, lines: int = 80) -> str:
        return "\n".join([self.store.logs(lines),
                          *(p.logs(lines) for p in self._processes().values())])

    async def kill(self, component: Component) -> None:
        if component.kind == STORE:
            self.store.kill(self._store_index(component))
        else:
            self._processes()[component.name].kill()

    async def restart(self, component: Component) -> None:
        if component.kind == STORE:
            self.store.restart(self._store_index(component))
        else:
            self._processes()[component.name].restart()

    async def wait_healthy(self, component: Component, timeout: float) -> None:
        if component.kind == STORE:
            await self.store.wait_healthy(timeout=timeout,
                                          members=[self._store_index(component)])
            return
        process = self._processes()[component.name]
        if component.kind == APISERVER:
            await process.wait_healthy(timeout=timeout)
        elif component.kind == KUBELET:
            await process.wait_ready(timeout=timeout)
        else:
            # Schedulers and controller-managers serve no health check here: alive is
            # all there is to see (whether one leads is measured from its Lease).
            async def alive() -> bool:
                return bool(process.alive)
            await wait_for(alive, timeout=timeout, what=f"{component.name} running")

    async def identity(self, component: Component) -> str | None:
        # Schedulers and controller-managers are started with --identity <name>.
        return component.name if component.kind in LEADER_LEASES else None

    def _store_index(self, component: Component) -> int:
        return [m.name for m in self.store.members].index(component.name)


class SupervisorTarget:
    """The local cluster ``skiff up`` runs under supervisord from ``data_dir``.

    What runs where is read from the cluster's own supervisord.conf (program names and
    their listen flags), so any ports ``skiff up`` chose work. Kills are
    ``supervisorctl signal KILL <program>``; supervisord's autorestart may bring the
    victim back before :meth:`restart` asks it to. Identities are the daemons'
    default, ``<hostname>_<pid>``.
    """

    def __init__(self, data_dir: Path) -> None:
        self.config = data_dir / "supervisord.conf"
        if not self.config.exists():
            raise RuntimeError(f"no cluster configured in {data_dir} (skiff up starts one)")
        self._programs = supervised_programs(self.config.read_text())
        if not any(c.kind == APISERVER for c in self._programs):
            raise RuntimeError(f"{self.config} runs no apiserver")

    @property
    def apiservers(self) -> list[str]:
        return [c.endpoint for c in self._programs if c.kind == APISERVER]

    @property
    def store_endpoints(self) -> list[str]:
        return [c.endpoint for c in self._programs if c.kind == STORE]

    @property
    def nodes(self) -> list[str]:
        return [c.name.removeprefix("kubelet-") for c in self._programs if c.kind == KUBELET]

    def components(self) -> list[Component]:
        return list(self._programs)

    async def _ctl(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "supervisorctl", "-c", str(self.config), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await process.communicate()
        return out.decode(errors="replace").strip()

    async def kill(self, component: Component) -> None:
        await self._ctl("signal", "KILL", component.name)

    async def restart(self, component: Component) -> None:
        # "already started" when autorestart was quicker: fine.
        await self._ctl("start", component.name)

    async def wait_healthy(self, component: Component, timeout: float) -> None:
        if component.kind in (STORE, APISERVER):
            address = component.endpoint
        else:
            async def running() -> bool:
                return "RUNNING" in await self._ctl("status", component.name)
            await wait_for(running, timeout=timeout, interval=0.2,
                           what=f"{component.name} running")
            return
        await wait_for(lambda: grpc_healthy(address), timeout=timeout,
                       what=f"{component.name} healthy")

    async def identity(self, component: Component) -> str | None:
        pid = await self._ctl("pid", component.name)
        return f"{socket.gethostname()}_{pid}" if pid.isdigit() and pid != "0" else None


def supervised_programs(config_text: str) -> list[Component]:
    """The components a supervisord.conf of ``skiff up`` runs, by program: store
    replicas (``services.store``, endpoint from --listen-client-urls), apiservers
    (``services.apiserver``, endpoint from --listen), schedulers, controller-managers
    and kubelets (``services.<name>``). Other programs (proxies) are left alone."""
    kinds = {"store": STORE, "apiserver": APISERVER, "scheduler": SCHEDULER,
             "controller_manager": CONTROLLER_MANAGER, "kubelet": KUBELET}
    found = []
    for name, body in re.findall(r"^\[program:([^\]]+)\]\n(.*?)(?=^\[|\Z)", config_text,
                                 flags=re.M | re.S):
        command = re.search(r"^command=.*?-m services\.(\w+)(.*)$", body, flags=re.M)
        if command is None or command.group(1) not in kinds:
            continue
        kind = kinds[command.group(1)]
        flag = {STORE: r"--listen-client-urls\s+(?:https?://)?([^\s,]+)",
                APISERVER: r"--listen\s+([^\s,]+)"}.get(kind)
        listen = re.search(flag, command.group(2)) if flag else None
        found.append(Component(name, kind, listen.group(1) if listen else ""))
    return found


# ------------------------------------------------------------------ the history


class Outcome(enum.Enum):
    """What a client learnt of one write."""

    ACKNOWLEDGED = "acknowledged"  # answered OK
    REJECTED = "rejected"          # answered with an API error: wrote nothing
    FAILED = "failed"              # no connection, so never sent: wrote nothing
    AMBIGUOUS = "ambiguous"        # sent, not answered: wrote or not


@dataclass(frozen=True)
class Write:
    """One write of a writer's Lease ``name``: ``value`` is its unique holderIdentity
    (for a delete, the value it would leave: none)."""

    name: str
    verb: str  # create, update, delete
    value: str
    outcome: Outcome
    revision: int  # the acknowledged resourceVersion (0 for a delete, or not acknowledged)
    started: float
    finished: float
    error: str = ""


@dataclass(frozen=True)
class Scale:
    replicas: int
    outcome: Outcome
    at: float


@dataclass(frozen=True)
class FailedCall:
    """A call answered UNAVAILABLE or not at all (each moved its client on)."""

    at: float
    client: str
    error: str


@dataclass
class Kill:
    component: str
    kind: str
    role: str  # leader, follower (store), standby, or "-" (apiserver)
    at: float
    wall: float  # time.time() at the kill: Lease times are wall-clock
    healthy: float = 0.0
    #: When a leader renewed the kind's Lease after the kill (leader-elected kinds).
    led: float | None = None


@dataclass
class History:
    """Everything the clients did and saw, in the order they saw it."""

    writes: list[Write] = field(default_factory=list)
    scales: list[Scale] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    failed_calls: list[FailedCall] = field(default_factory=list)
    #: time.monotonic() when load began.
    began: float = 0.0

    def acknowledged_writes(self) -> list[Write]:
        return [w for w in self.writes if w.outcome is Outcome.ACKNOWLEDGED]


def outcome_of(error: errors.Unavailable) -> Outcome:
    """FAILED when the client never reached an apiserver (nothing sent), else AMBIGUOUS.

    The apiserver's own "store unavailable: ..." may mention a failed connection to a
    replica after an earlier attempt went through, so only the client's own connection
    failure (the message's start) counts as never sent.
    """
    return Outcome.FAILED if str(error).startswith("failed to connect") else Outcome.AMBIGUOUS


class Failover:
    """Single-attempt clients, one per apiserver: an unanswered call is recorded and the
    next call goes to the next apiserver. The retrying :class:`Client` would hide what
    became of each attempt; here every outcome is the history's."""

    def __init__(self, addresses: Sequence[str], history: History, *, name: str,
                 first: int = 0) -> None:
        self._clients = [Client(a, timeout=CALL_TIMEOUT, retry_deadline=0) for a in addresses]
        self._history = history
        self._name = name
        self._current = first % len(self._clients)

    async def close(self) -> None:
        for client in self._clients:
            await client.close()

    async def call(self, what: Callable[[Client], Awaitable[T]]) -> T:
        try:
            return await what(self._clients[self._current])
        except errors.Unavailable as e:
            self._history.failed_calls.append(FailedCall(time.monotonic(), self._name,
                                                         str(e)[:160]))
            self._current = (self._current + 1) % len(self._clients)
            raise


# ------------------------------------------------------------------ the workload

#: A writer's knowledge of one of its objects: the Lease as last acknowledged, None
#: (absent), or UNKNOWN (an unanswered or refused write since: read it back first).
UNKNOWN = object()


def lease(namespace: str, name: str, value: str) -> coordination_pb2.Lease:
    return coordination_pb2.Lease(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace),
        spec=coordination_pb2.LeaseSpec(holder_identity=value, lease_duration_seconds=3600))


async def run_writer(index: int, apiservers: Sequence[str], history: History, *,
                     namespace: str, stop: asyncio.Event, rng: random.Random) -> None:
    """Create, update and delete this writer's Leases until ``stop``; record each write."""
    kv = Failover(apiservers, history, name=f"writer-{index}", first=index)
    names = [f"w{index}-{k}" for k in range(OBJECTS_PER_WRITER)]
    known: dict[str, Any] = dict.fromkeys(names)
    sequence = 0
    try:
        while not stop.is_set():
            name = rng.choice(names)
            state = known[name]
            if state is UNKNOWN:
                try:
                    known[name] = await kv.call(lambda c, n=name: _get_lease(c, namespace, n))
                except errors.APIError:
                    await asyncio.sleep(RETRY_BACKOFF)
                continue
            sequence += 1
            value = f"w{index}-{sequence}"
            if state is None:
                verb = "create"
            elif rng.random() < DELETE_SHARE:
                verb, value = "delete", ""
            else:
                verb = "update"
            call = functools.partial(_write, verb=verb, namespace=namespace, name=name,
                                     value=value, state=state)
            started = time.monotonic()
            try:
                answer = await call_and_classify(kv, call)
            except _Classified as c:
                history.writes.append(Write(name, verb, value, c.outcome, 0, started,
                                            time.monotonic(), c.error))
                if c.outcome is not Outcome.FAILED:
                    known[name] = UNKNOWN
            else:
                revision = int(answer.metadata.resource_version) if verb != "delete" else 0
                history.writes.append(Write(name, verb, value, Outcome.ACKNOWLEDGED, revision,
                                            started, time.monotonic()))
                known[name] = None if verb == "delete" else answer
            await asyncio.sleep(WRITE_PAUSE)
    finally:
        await kv.close()


class _Classified(Exception):
    def __init__(self, outcome: Outcome, error: str) -> None:
        super().__init__(error)
        self.outcome, self.error = outcome, error


async def call_and_classify(kv: Failover, call: Callable[[Client], Awaitable[T]]) -> T:
    """The call's answer, or :class:`_Classified` with what became of the write."""
    try:
        return await kv.call(call)
    except errors.Unavailable as e:
        raise _Classified(outcome_of(e), f"Unavailable: {str(e)[:120]}") from e
    except errors.APIError as e:
        raise _Classified(Outcome.REJECTED, f"{type(e).__name__}: {str(e)[:120]}") from e


async def _write(client: Client, *, verb: str, namespace: str, name: str, value: str,
                 state: coordination_pb2.Lease | None) -> Any:
    """One write of a writer's object; updates and deletes carry the resource_version
    last acknowledged as precondition, so a late ambiguous one cannot undo a newer state."""
    if verb == "create":
        return await client.leases.create(lease(namespace, name, value))
    assert state is not None
    if verb == "delete":
        return await client.leases.delete(name, namespace,
                                          resource_version=state.metadata.resource_version)
    updated = coordination_pb2.Lease()
    updated.CopyFrom(state)
    updated.spec.holder_identity = value
    return await client.leases.update(updated)


async def _get_lease(client: Client, namespace: str, name: str) -> Any:
    try:
        return await client.leases.get(name, namespace)
    except errors.NotFound:
        return None


def deployment(namespace: str, replicas: int) -> apps_pb2.Deployment:
    """busybox sleeping, grace 1 s (sleep ignores SIGTERM), pulled never: built locally."""
    labels = {"app": DEPLOYMENT}
    container = core_pb2.Container(name="sleep", image=BUSYBOX_IMAGE,
                                   image_pull_policy="IfNotPresent",
                                   command=["sleep", "3600"])
    return apps_pb2.Deployment(
        metadata=meta_pb2.ObjectMeta(name=DEPLOYMENT, namespace=namespace),
        spec=apps_pb2.DeploymentSpec(
            replicas=replicas, selector=meta_pb2.LabelSelector(match_labels=labels),
            template=core_pb2.PodTemplateSpec(
                metadata=meta_pb2.ObjectMeta(labels=labels),
                spec=core_pb2.PodSpec(containers=[container],
                                      termination_grace_period_seconds=1))))


async def scale(kv: Failover, namespace: str, replicas: int) -> Outcome:
    """One read-modify-write of the Deployment's spec.replicas."""
    try:
        current = await call_and_classify(
            kv, lambda c: c.deployments.get(DEPLOYMENT, namespace))
        current.spec.replicas = replicas
        await call_and_classify(kv, lambda c: c.deployments.update(current))
    except _Classified as c:
        return c.outcome
    return Outcome.ACKNOWLEDGED


async def run_scaler(apiservers: Sequence[str], history: History, *, namespace: str,
                     stop: asyncio.Event, rng: random.Random) -> None:
    """Scale the Deployment to a random size every few seconds until ``stop``."""
    kv = Failover(apiservers, history, name="scaler")
    try:
        while not stop.is_set():
            with_timeout = asyncio.create_task(stop.wait())
            # Deliberate pacing; ``stop`` cuts it short.
            await asyncio.wait([with_timeout], timeout=rng.uniform(*SCALE_INTERVAL))
            with_timeout.cancel()
            if stop.is_set():
                break
            replicas = rng.randint(1, MAX_REPLICAS)
            history.scales.append(Scale(replicas, await scale(kv, namespace, replicas),
                                        time.monotonic()))
    finally:
        await kv.close()


# ------------------------------------------------------------------ the killer


async def store_role(component: Component) -> str:
    """"leader" or "follower", as the replica itself says."""
    try:
        async with grpc.aio.insecure_channel(component.endpoint) as channel:
            status = await rpc_pb2_grpc.MaintenanceStub(channel).Status(
                rpc_pb2.StatusRequest(), timeout=1.0)
    except grpc.aio.AioRpcError:
        return "unknown"
    return "leader" if status.leader and status.leader == status.header.member_id else "follower"


async def lease_holder(client: Client, kind: str) -> tuple[str, float]:
    """The holderIdentity of the kind's leader Lease and its renewTime (epoch seconds)."""
    found = await client.leases.get(LEADER_LEASES[kind], "kube-system")
    return found.spec.holder_identity, found.spec.renew_time.ToNanoseconds() / 1e9


async def choose_victim(target: Target, client: Client, rng: random.Random
                        ) -> tuple[Component, str]:
    """A component to kill and its role: the store leader or a follower at random;
    an apiserver; the scheduler or controller-manager leader (from its Lease)."""
    kinds = list(KILL_WEIGHTS)
    kind = rng.choices(kinds, weights=[KILL_WEIGHTS[k] for k in kinds])[0]
    candidates = [c for c in target.components() if c.kind == kind]
    if kind == STORE:
        roles = {c.name: await store_role(c) for c in candidates}
        want = "leader" if rng.random() < 0.5 else "follower"
        chosen = [c for c in candidates if roles[c.name] == want] or candidates
        victim = rng.choice(chosen)
        return victim, roles[victim.name]
    if kind in (APISERVER, KUBELET):
        return rng.choice(candidates), "-"
    try:
        holder, _ = await lease_holder(client, kind)
    except errors.APIError:
        holder = ""
    for candidate in candidates:
        if holder and await target.identity(candidate) == holder:
            return candidate, "leader"
    return rng.choice(candidates), "standby"


async def run_killer(target: Target, history: History, *, until: float,
                     rng: random.Random, log: Callable[[str], None]) -> None:
    """Kill, restart, wait healthy (and led again), repeat until ``until``."""
    async with Client(target.apiservers, timeout=CALL_TIMEOUT, retry_deadline=30) as client:
        while time.monotonic() < until:
            await asyncio.sleep(rng.uniform(*KILL_INTERVAL))  # deliberate pacing
            victim, role = await choose_victim(target, client, rng)
            kill = Kill(victim.name, victim.kind, role, time.monotonic(), time.time())
            await target.kill(victim)
            history.kills.append(kill)
            delay = LEADER_RESTART_DELAY if victim.kind in LEADER_ELECTED else RESTART_DELAY
            await asyncio.sleep(rng.uniform(*delay))  # deliberate: dead a while
            await target.restart(victim)
            await target.wait_healthy(victim, HEALTHY_TIMEOUT)
            kill.healthy = time.monotonic()
            if victim.kind in LEADER_ELECTED:
                async def led(kind: str = victim.kind, after: float = kill.wall) -> bool:
                    holder, renewed = await lease_holder(client, kind)
                    return bool(holder) and renewed > after
                await wait_for(led, timeout=HEALTHY_TIMEOUT, interval=0.1,
                               what=f"a {victim.kind} leading again")
                kill.led = time.monotonic()
            log(f"killed {victim.name} ({role}) at {kill.at - history.began:.1f}s, "
                f"healthy after {kill.healthy - kill.at:.1f}s"
                + (f", led after {kill.led - kill.at:.1f}s" if kill.led else ""))


# ------------------------------------------------------------------ reading the outcome


@dataclass(frozen=True)
class ReplicaState:
    """One replica's HashKV and full keyspace, at one revision."""

    endpoint: str
    hash: int
    compact_revision: int
    kvs: dict[bytes, tuple[bytes, int]]  # key -> (value, mod_revision)


async def _current_revision(endpoints: Sequence[str]) -> int:
    async def read() -> int:
        for endpoint in endpoints:
            async with grpc.aio.insecure_channel(endpoint) as channel:
                try:
                    response = await rpc_pb2_grpc.KVStub(channel).Range(
                        rpc_pb2.RangeRequest(key=b"\0", count_only=True), timeout=3.0)
                except grpc.aio.AioRpcError as e:
                    if e.code() not in UNANSWERED_STORE:
                        raise
                    continue
                return int(response.header.revision)
        return 0

    return await wait_for(read, timeout=HEALTHY_TIMEOUT, what="a linearizable read")


async def read_replicas(endpoints: Sequence[str]) -> tuple[int, list[ReplicaState]]:
    """A revision every replica has applied, and each replica's HashKV and full
    serializable read at it (the components keep writing meanwhile: reading at one
    revision is what makes the replicas comparable). HashKV covers compacted history,
    so it is read again until every replica reports the same compaction."""
    revision = await _current_revision(endpoints)
    channels = [grpc.aio.insecure_channel(e) for e in endpoints]
    try:
        kv = [rpc_pb2_grpc.KVStub(c) for c in channels]
        maintenance = [rpc_pb2_grpc.MaintenanceStub(c) for c in channels]
        for i, stub in enumerate(kv):
            async def applied(stub: rpc_pb2_grpc.KVStub = stub) -> bool:
                response = await stub.Range(rpc_pb2.RangeRequest(
                    key=b"\0", serializable=True, count_only=True), timeout=3.0)
                return response.header.revision >= revision
            await wait_for(applied, timeout=HEALTHY_TIMEOUT,
                           what=f"replica {endpoints[i]} at revision {revision}")

        async def agreed() -> list[Any] | None:
            hashes = [await m.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=5.0)
                      for m in maintenance]
            return hashes if len({h.compact_revision for h in hashes}) == 1 else None

        hashes = await wait_for(agreed, timeout=HEALTHY_TIMEOUT,
                                what="replicas at the same compaction")
        states = []
        for endpoint, stub, hashed in zip(endpoints, kv, hashes, strict=True):
            response = await stub.Range(rpc_pb2.RangeRequest(
                key=b"\0", range_end=b"\0", revision=revision, serializable=True),
                timeout=30.0)
            states.append(ReplicaState(endpoint, hashed.hash, hashed.compact_revision,
                                       {k.key: (k.value, k.mod_revision) for k in response.kvs}))
        return revision, states
    finally:
        for channel in channels:
            await channel.close()


def leases_in_keyspace(kvs: dict[bytes, tuple[bytes, int]], namespace: str
                       ) -> dict[str, tuple[str, int]]:
    """The run's Leases in one replica's keyspace: name -> (holderIdentity, mod_revision)."""
    prefix = f"/registry/leases/{namespace}/".encode()
    return {key[len(prefix):].decode(): (coordination_pb2.Lease.FromString(value)
                                         .spec.holder_identity, revision)
            for key, (value, revision) in kvs.items() if key.startswith(prefix)}


@dataclass(frozen=True)
class RunningContainer:
    """One running Docker container of a kubelet, by its labels."""

    node: str
    uid: str
    pod: str
    container: str
    sandbox: bool


async def running_containers(nodes: Iterable[str]) -> list[RunningContainer]:
    """The running containers the kubelets of ``nodes`` made, read from Docker."""
    import aiodocker

    docker = aiodocker.Docker()
    found = []
    try:
        for node in nodes:
            for container in await docker.containers.list(
                    filters=json.dumps(kubelet_labels.node_filter(node))):
                got = container._container.get("Labels") or {}
                found.append(RunningContainer(
                    node, got.get(kubelet_labels.POD_UID, ""),
                    got.get(kubelet_labels.POD_NAME, ""),
                    got.get(kubelet_labels.CONTAINER_NAME, ""),
                    got.get(kubelet_labels.CONTAINER_TYPE) == kubelet_labels.SANDBOX))
    finally:
        await docker.close()
    return found


# ------------------------------------------------------------------ checks
# Pure: each returns what it found wrong, as sentences; empty when all is well.


@dataclass(frozen=True)
class Expectation:
    """What one object may hold after the run, from its writes.

    ``acknowledged``: (value, revision) of the last acknowledged write (value None for a
    delete), None if no write was acknowledged; ``possible``: the values ambiguous writes
    since then would leave (None: deleted); ``never``: values of writes that were
    refused or never sent.
    """

    acknowledged: tuple[str | None, int] | None
    possible: frozenset[str | None]
    never: frozenset[str]


def expectations(writes: Iterable[Write]) -> dict[str, Expectation]:
    by_name: dict[str, list[Write]] = defaultdict(list)
    for write in writes:
        by_name[write.name].append(write)
    result = {}
    for name, ops in by_name.items():
        acknowledged: tuple[str | None, int] | None = None
        possible: set[str | None] = set()
        for op in ops:  # in the owner's order: one writer, one call at a time
            value = op.value if op.verb != "delete" else None
            if op.outcome is Outcome.ACKNOWLEDGED:
                acknowledged, possible = (value, op.revision), set()
            elif op.outcome is Outcome.AMBIGUOUS:
                possible.add(value)
        never = frozenset(op.value for op in ops if op.verb != "delete"
                          and op.outcome in (Outcome.REJECTED, Outcome.FAILED))
        result[name] = Expectation(acknowledged, frozenset(possible), never)
    return result


def check_writes(writes: Iterable[Write], observed: dict[str, tuple[str, int]], *,
                 where: str) -> list[str]:
    """Each object as ``where`` holds it (name -> (value, revision)) against its writes:
    the last acknowledged state exactly, or what an ambiguous write since then left;
    never a refused write's value; no object nobody wrote."""
    problems = []
    expected = expectations(writes)
    for name, exp in sorted(expected.items()):
        got = observed.get(name)
        value = got[0] if got is not None else None
        if value is not None and value in exp.never:
            problems.append(f"{where}: {name} holds {value!r}, a write that was refused "
                            f"or never sent")
            continue
        if exp.acknowledged is not None:
            ack_value, ack_revision = exp.acknowledged
            if (got is None and ack_value is None) or got == (ack_value, ack_revision):
                continue
        elif got is None:
            continue  # never acknowledged, absent: nothing was lost
        if value in exp.possible:
            continue  # an ambiguous write since the last acknowledged one landed
        problems.append(f"{where}: {name} holds {got}, but its last acknowledged write left "
                        f"{exp.acknowledged} (ambiguous since: {sorted(map(str, exp.possible))})")
    strangers = sorted(set(observed) - set(expected))
    if strangers:
        problems.append(f"{where}: objects nobody wrote: {strangers[:5]}")
    return problems


def check_replicas_agree(states: Sequence[ReplicaState]) -> list[str]:
    problems = []
    if len({s.hash for s in states}) != 1:
        problems.append(f"HashKV differs between replicas: "
                        f"{ {s.endpoint: s.hash for s in states} }")
    first = states[0]
    for state in states[1:]:
        if state.kvs != first.kvs:
            differing = sorted(k for k in first.kvs.keys() | state.kvs.keys()
                               if first.kvs.get(k) != state.kvs.get(k))
            problems.append(f"replica {state.endpoint} differs from {first.endpoint} on "
                            f"{len(differing)} keys, e.g. {differing[:5]}")
    return problems


def _owned_by(obj: Any, uid: str) -> bool:
    return any(ref.uid == uid for ref in obj.metadata.owner_references)


def _ready(pod: core_pb2.Pod) -> bool:
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def check_deployment(deploy: apps_pb2.Deployment, replica_sets: Sequence[apps_pb2.ReplicaSet],
                     pods: Sequence[core_pb2.Pod]) -> list[str]:
    """Converged: status says spec; one active ReplicaSet; exactly spec.replicas live pods
    of it, Running and Ready; no pod of its ReplicaSets terminating or twice."""
    name = f"deployment {deploy.metadata.namespace}/{deploy.metadata.name}"
    want = deploy.spec.replicas
    status = deploy.status
    problems = []
    if status.observed_generation < deploy.metadata.generation:
        problems.append(f"{name}: observedGeneration {status.observed_generation} < "
                        f"generation {deploy.metadata.generation}")
    counts = {"replicas": status.replicas, "updated": status.updated_replicas,
              "ready": status.ready_replicas, "available": status.available_replicas}
    if any(v != want for v in counts.values()):
        problems.append(f"{name}: status {counts}, spec.replicas {want}")
    owned = [rs for rs in replica_sets if _owned_by(rs, deploy.metadata.uid)]
    active = [rs for rs in owned if rs.spec.replicas > 0]
    if len(active) != (1 if want else 0):
        problems.append(f"{name}: {len(active)} active ReplicaSets "
                        f"{[rs.metadata.name for rs in active]}")
    for rs in owned:
        mine = [p for p in pods if _owned_by(p, rs.metadata.uid)]
        live = [p for p in mine if not p.metadata.HasField("deletion_timestamp")]
        names = Counter(p.metadata.name for p in mine)
        uids = Counter(p.metadata.uid for p in mine)
        twice = [n for n, c in (*names.items(), *uids.items()) if c > 1]
        if twice:
            problems.append(f"{name}: pods twice in ReplicaSet {rs.metadata.name}: {twice}")
        if len(live) != len(mine):
            problems.append(f"{name}: {len(mine) - len(live)} pods of {rs.metadata.name} "
                            f"still terminating")
        if len(live) != rs.spec.replicas:
            problems.append(f"{name}: ReplicaSet {rs.metadata.name} has {len(live)} live pods, "
                            f"spec.replicas {rs.spec.replicas}")
        not_ready = [p.metadata.name for p in live if not _ready(p)]
        if not_ready:
            problems.append(f"{name}: pods not Running and Ready: {not_ready}")
    orphans = [p.metadata.name for p in pods
               if p.metadata.labels.get("app") == DEPLOYMENT
               and not any(_owned_by(p, rs.metadata.uid) for rs in owned)]
    if orphans:
        problems.append(f"{name}: pods of its template owned by none of its ReplicaSets: "
                        f"{orphans}")
    return problems


def check_containers(pods: Sequence[core_pb2.Pod], running: Sequence[RunningContainer],
                     nodes: Iterable[str]) -> list[str]:
    """Docker's running containers on ``nodes`` against the pods bound there: each
    Running pod has one sandbox and one container per spec container; nothing runs
    for a pod that is gone (a terminating pod's containers may still be stopping)."""
    nodes = set(nodes)
    bound = [p for p in pods if p.spec.node_name in nodes]
    live = {p.metadata.uid: p for p in bound if not p.metadata.HasField("deletion_timestamp")
            and p.status.phase == "Running"}
    terminating = {p.metadata.uid for p in bound if p.metadata.HasField("deletion_timestamp")}
    by_uid: dict[str, list[RunningContainer]] = defaultdict(list)
    for container in running:
        by_uid[container.uid].append(container)
    problems = []
    for uid, containers in sorted(by_uid.items()):
        if uid not in live and uid not in terminating:
            problems.append(f"leaked: {len(containers)} running containers of pod "
                            f"{containers[0].pod!r} (uid {uid}) that is not running here: "
                            f"{sorted(c.container for c in containers)}")
    for uid, pod in sorted(live.items()):
        containers = by_uid.get(uid, [])
        sandboxes = [c for c in containers if c.sandbox]
        if len(sandboxes) != 1 or len({c.node for c in containers}) > 1:
            problems.append(f"pod {pod.metadata.name} ({uid}): {len(sandboxes)} running "
                            f"sandboxes on {sorted({c.node for c in containers})}")
        apps = Counter(c.container for c in containers if not c.sandbox)
        for spec in pod.spec.containers:
            if apps[spec.name] != 1:
                problems.append(f"pod {pod.metadata.name} ({uid}): container {spec.name} "
                                f"running {apps[spec.name]} times")
        extra = set(apps) - {c.name for c in pod.spec.containers}
        if extra:
            problems.append(f"pod {pod.metadata.name} ({uid}): unknown containers {extra}")
    return problems


# ------------------------------------------------------------------ the report


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def recovery_seconds(kill: Kill, acknowledged: Sequence[Write]) -> float | None:
    """For a leader-elected kind: from the kill until a leader renewed its Lease; for a
    kubelet: until its Node is Ready again, from its successor. Else (store, apiserver):
    from the kill to the first acknowledgement of a write started after it."""
    if kill.kind in LEADER_ELECTED:
        return round(kill.led - kill.at, 3) if kill.led is not None else None
    if kill.kind == KUBELET:
        return round(kill.healthy - kill.at, 3)
    after = [w.finished for w in acknowledged if w.started >= kill.at]
    return round(min(after) - kill.at, 3) if after else None


def outcomes(items: Iterable[Write | Scale]) -> dict[str, int]:
    counts = Counter(i.outcome.value for i in items)
    return {o.value: counts[o.value] for o in Outcome}


def make_report(history: History, *, began: float, **extra: Any) -> dict[str, Any]:
    """The JSON-able report of a run: what it did, how the cluster recovered, problems."""
    acknowledged = history.acknowledged_writes()
    kill_log = []
    recoveries: dict[str, list[float]] = defaultdict(list)
    failed_during = 0
    for kill in history.kills:
        recovered = recovery_seconds(kill, acknowledged)
        end = kill.at + (recovered if recovered is not None else kill.healthy - kill.at)
        failed = sum(kill.at <= f.at <= end for f in history.failed_calls)
        failed_during += failed
        if recovered is not None:
            recoveries[kill.kind].append(recovered)
        kill_log.append({"component": kill.component, "kind": kill.kind, "role": kill.role,
                         "at_s": round(kill.at - began, 2),
                         "healthy_after_s": round(kill.healthy - kill.at, 2),
                         "recovery_s": recovered, "failed_calls": failed})
    by_component: dict[str, dict[str, int]] = defaultdict(dict)
    for (kind, role), n in sorted(Counter((k.kind, k.role) for k in history.kills).items()):
        by_component[kind][role] = n
    every = [r for rs in recoveries.values() for r in rs]
    return {
        **extra,
        "operations": {
            **{verb: outcomes(w for w in history.writes if w.verb == verb)
               for verb in ("create", "update", "delete")},
            "scale": outcomes(history.scales),
        },
        "kills": {"total": len(history.kills), "by_component": dict(by_component)},
        "failed_calls": {"total": len(history.failed_calls),
                         "by_client": dict(sorted(Counter(
                             f.client for f in history.failed_calls).items())),
                         "during_failovers": failed_during},
        "recovery_s": {
            **{kind: {"kills": len(rs), "max": max(rs), "p50": percentile(rs, 50),
                      "p90": percentile(rs, 90)} for kind, rs in sorted(recoveries.items())},
            "all": {"max": max(every, default=None), "p50": percentile(every, 50),
                    "p90": percentile(every, 90)},
        },
        "kill_log": kill_log,
    }


# ------------------------------------------------------------------ the run


def _spawn(coro: Awaitable[None], name: str) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def converged_problems(client: Client, namespace: str, nodes: Sequence[str]) -> list[str]:
    """What still keeps the run's Deployment and the nodes' containers from converged."""
    deployments = (await client.deployments.list(namespace)).items
    replica_sets = (await client.replica_sets.list(namespace)).items
    pods = (await client.pods.list("")).items
    problems = [p for d in deployments
                for p in check_deployment(d, replica_sets,
                                          [p for p in pods if p.metadata.namespace == namespace])]
    problems += check_containers(pods, await running_containers(nodes), nodes)
    return problems


async def run_chaos(target: Target, *, seconds: float, seed: int, writers: int = WRITERS,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Load, kill for ``seconds``, let the cluster converge, check; the report."""
    rng = random.Random(seed)
    namespace = f"chaos-{rng.getrandbits(24):06x}"
    history = History()
    stop = asyncio.Event()
    async with Client(target.apiservers, timeout=CALL_TIMEOUT, retry_deadline=60) as client:
        await client.namespaces.create(core_pb2.Namespace(
            metadata=meta_pb2.ObjectMeta(name=namespace)))
        await client.deployments.create(deployment(namespace, FINAL_REPLICAS))
        # Watchers of the writers' Leases at every layer, checked against the store's
        # history at the end (skiff.chaos_watch); the prefix is empty until now.
        watchers = LayerWatchers(
            store_endpoints=target.store_endpoints, apiservers=target.apiservers,
            kind="Lease", namespace=namespace, prefix=f"/registry/leases/{namespace}/",
            start=await _current_revision(target.store_endpoints))
        await watchers.start()
        began = time.monotonic()
        history.began = began
        tasks = [_spawn(run_writer(i, target.apiservers, history, namespace=namespace,
                                   stop=stop, rng=random.Random(f"{seed}-{i}")),
                        f"chaos-writer-{i}") for i in range(writers)]
        tasks.append(_spawn(run_scaler(target.apiservers, history, namespace=namespace,
                                       stop=stop, rng=random.Random(f"{seed}-scale")),
                            "chaos-scaler"))
        try:
            await run_killer(target, history, until=began + seconds, rng=rng, log=log)
            # Available again after the last kill: a write started after it acknowledged.
            last_kill = max((k.at for k in history.kills), default=began)

            async def acknowledged_since() -> bool:
                for task in tasks:
                    if task.done():
                        task.result()  # raises what stopped it
                return any(w.started >= last_kill for w in history.acknowledged_writes())

            await wait_for(acknowledged_since, timeout=HEALTHY_TIMEOUT,
                           what="a write acknowledged after the last kill")
            stop.set()
            await asyncio.gather(*tasks)
        except BaseException:
            await watchers.cancel()
            raise
        finally:
            await _cancel(tasks)
        try:
            return await _converge_and_check(target, client, history, watchers,
                                             namespace=namespace, seed=seed, seconds=seconds,
                                             writers=writers, log=log)
        finally:
            await watchers.cancel()


async def _converge_and_check(target: Target, client: Client, history: History,
                              watchers: LayerWatchers, *, namespace: str, seed: int,
                              seconds: float, writers: int, log: Callable[[str], None]
                              ) -> dict[str, Any]:
    """After the load: scale to the final size, wait for convergence, check; the report."""
    began = history.began
    load_seconds = time.monotonic() - began
    log(f"load stopped after {load_seconds:.0f}s: {len(history.writes)} writes, "
        f"{len(history.kills)} kills; converging")

    # Scale to a known size, then wait until everything matches it.
    final = Failover(target.apiservers, history, name="final")
    try:
        async def scaled() -> bool:
            return await scale(final, namespace, FINAL_REPLICAS) is Outcome.ACKNOWLEDGED
        await wait_for(scaled, timeout=HEALTHY_TIMEOUT, what="the final scale")
    finally:
        await final.close()
    problems: list[str] = []
    converge_began = time.monotonic()

    async def converged() -> bool:
        problems[:] = await converged_problems(client, namespace, target.nodes)
        return not problems

    try:
        await wait_for(converged, timeout=CONVERGENCE_TIMEOUT, interval=1.0,
                       what="convergence")
    except TimeoutError:
        problems.insert(0, f"not converged within {CONVERGENCE_TIMEOUT:.0f}s")
    convergence_seconds = round(time.monotonic() - converge_began, 1)

    revision, states = await read_replicas(target.store_endpoints)
    problems += check_replicas_agree(states)
    watch_problems, watches = await watchers.check(revision)
    problems += watch_problems
    for state in states:
        problems += check_writes(history.writes,
                                 leases_in_keyspace(state.kvs, namespace),
                                 where=f"store {state.endpoint}")
    listed = (await client.leases.list(namespace)).items
    problems += check_writes(history.writes,
                             {o.metadata.name: (o.spec.holder_identity,
                                                int(o.metadata.resource_version))
                              for o in listed}, where="the API")
    pods = [p for p in (await client.pods.list(namespace)).items]
    containers = await running_containers(target.nodes)
    report = make_report(
        history, began=began, target=type(target).__name__, seed=seed, seconds=seconds,
        load_seconds=round(load_seconds, 1), namespace=namespace, writers=writers,
        nodes=list(target.nodes), final_replicas=FINAL_REPLICAS,
        convergence_s=convergence_seconds,
        store={"revision": revision, "compact_revision": states[0].compact_revision,
               "hash": states[0].hash, "keys": len(states[0].kvs),
               "replicas": len(states)},
        objects={"leases": len(listed), "pods": len(pods),
                 "running_containers": len(containers)},
        watches=watches,
        problems=problems)
    if not problems:
        # Leave nothing behind on a cluster that outlives the run.
        await client.namespaces.delete(namespace)
    return report


# ------------------------------------------------------------------ the CLI


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``chaos`` to the ``skiff`` command's subcommands."""
    chaos = commands.add_parser(
        "chaos", help="kill parts of the running local cluster under load, then check it")
    chaos.add_argument("--duration", type=float, default=300.0,
                       help="seconds of kills under load (default 300)")
    chaos.add_argument("--seed", type=int, default=None,
                       help="the random seed (choices, not timing, are reproducible)")
    chaos.add_argument("--writers", type=int, default=WRITERS)
    # SUPPRESS: given only before the subcommand, the top-level value stands.
    chaos.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                       help="the cluster's data directory (as for skiff up)")


def run(args: argparse.Namespace, data_dir: Path) -> int:
    """Run ``skiff chaos ...`` against the cluster in ``data_dir``; the exit status."""
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    try:
        target = SupervisorTarget(data_dir)
        report = asyncio.run(run_chaos(target, seconds=args.duration, seed=seed,
                                       writers=args.writers))
    except Exception as e:  # a CLI reports what went wrong instead of a traceback
        print(f"skiff chaos: {type(e).__name__}: {e}")
        return 1
    print(json.dumps(report, indent=2))
    return 1 if report["problems"] else 0
