"""The scheduler as a process against a real apiserver on a real three-replica store.

There are no kubelets: Node objects are created through the API (Ready, with
allocatable cpu / memory / pods), pods are created through the API, and a test watches
for ``spec.nodeName`` to be set. What is checked is what a user sees: where each pod
went, the ``Scheduled`` / ``FailedScheduling`` Events and their messages (Kubernetes'
``0/3 nodes are available: 3 Insufficient cpu.``), and, for two schedulers sharing the
``kube-system/kube-scheduler`` Lease, that a SIGKILLed leader is replaced within about a
lease duration and no pod is ever bound twice.

One store and apiserver serve the whole module (they take seconds to start); each test
starts its own scheduler process(es), works in a namespace of its own with nodes of its
own, and on the way out stops its schedulers and deletes its pods, nodes and other
objects, so the next test's scheduler sees an empty cluster. Every wait polls a
condition with a deadline; none sleeps in place of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import signal
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from skiff.api import errors
from skiff.api.manifest import from_dict
from skiff.api.quantity import milli_value
from skiff.api.v1 import core_pb2
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.testing.fixtures import election_flags, failed, wait_serving
from skiff.testing.processes import APIServer, Scheduler, StoreCluster

#: How long a test waits for something the scheduler should do at once (a slow, shared
#: machine needs the room; a pass takes a fraction of it).
DEADLINE = 30.0
#: Leader election timings of the failover test (seconds).
LEASE, RENEW, RETRY = 3.0, 2.0, 0.3
LEASE_ARGS = election_flags(LEASE, RENEW, RETRY)
#: Everything but the failover test runs one scheduler, without leader election.
NO_ELECTION = ["--leader-elect", "false"]
#: Well under the queue's 60 s flush of unschedulable pods: what "at once" means for a
#: pod that an event (a node added, a node uncordoned) made schedulable.
EVENT_DRIVEN = 15.0

_serial = itertools.count()


# ------------------------------------------------------------------ manifests


def node_manifest(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110",
                  labels: Mapping[str, str] | None = None,
                  taints: Iterable[tuple[str, str, str]] = (), unschedulable: bool = False,
                  ready: bool = True) -> core_pb2.Node:
    """A Node as a kubelet would register it; ``taints`` as (key, value, effect)."""
    return from_dict({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {"unschedulable": unschedulable,
                 "taints": [{"key": k, "value": v, "effect": e} for k, v, e in taints]},
        "status": {"capacity": {"cpu": cpu, "memory": memory, "pods": pods},
                   "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                   "reason": "KubeletReady" if ready else "KubeletNotReady"}]},
    })  # type: ignore[return-value]


def pod_manifest(name: str, namespace: str, *, cpu: str | None = None,
                 memory: str | None = None, labels: Mapping[str, str] | None = None,
                 host_port: tuple[int, str] | None = None, **spec: Any) -> core_pb2.Pod:
    """A one-container Pod; ``host_port`` as (port, protocol); ``spec`` adds PodSpec
    fields in the manifest's camelCase (``nodeSelector``, ``affinity``, ...)."""
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    container: dict[str, Any] = {"name": "app", "image": "busybox",
                                 "resources": {"requests": requests}}
    if host_port is not None:
        port, protocol = host_port
        container["ports"] = [{"containerPort": port, "hostPort": port, "protocol": protocol}]
    return from_dict({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {"containers": [container], **spec},
    })  # type: ignore[return-value]


def required_affinity(key: str, operator: str, values: list[str]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": key, "operator": operator, "values": values}]}]}}}


def preferred_affinity(key: str, values: list[str], weight: int = 100) -> dict[str, Any]:
    return {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": weight, "preference": {"matchExpressions": [
            {"key": key, "operator": "In", "values": values}]}}]}}


def cpu_request(pod: core_pb2.Pod) -> int:
    """The pod's cpu request in millicores (its containers' sum)."""
    return sum(milli_value(c.resources.requests["cpu"]) for c in pod.spec.containers
               if "cpu" in c.resources.requests)


# ------------------------------------------------------------------- the cluster


@dataclass
class ModuleCluster:
    store: StoreCluster
    apiserver: APIServer
    base: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleCluster]:
    """Three store replicas and an apiserver for the whole module."""
    base = tmp_path_factory.mktemp("scheduler")
    store = StoreCluster(base / "store")
    server = APIServer(base / "apiserver", store.endpoints)
    try:
        store.start()
        for member in store.members:
            wait_serving(member.endpoint, f"store member {member.name}", timeout=60)
        server.start()
        wait_serving(server.address, "apiserver", timeout=60)
        yield ModuleCluster(store, server, base)
    finally:
        server.stop()
        store.stop()


@dataclass
class Env:
    """One test's view of the cluster: its namespace, nodes and schedulers, and the
    helpers that create objects and wait on what the scheduler does with them."""

    api: Client
    cluster: ModuleCluster
    namespace: str
    prefix: str
    schedulers: list[Scheduler] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)

    # -- making things

    def node_name(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    async def node(self, name: str, **kwargs: Any) -> core_pb2.Node:
        """Create a node named ``<prefix>-<name>`` (removed after the test)."""
        full = self.node_name(name)
        self.nodes.append(full)
        return await self.api.nodes.create(node_manifest(full, **kwargs))  # type: ignore[return-value]

    async def pod(self, name: str, **kwargs: Any) -> core_pb2.Pod:
        return await self.api.pods.create(  # type: ignore[return-value]
            pod_manifest(name, self.namespace, **kwargs))

    async def pods(self, names: Iterable[str], **kwargs: Any) -> None:
        """Create pods all at once (concurrently), as a burst."""
        await asyncio.gather(*(self.pod(name, **kwargs) for name in names))

    def scheduler(self, name: str = "", *args: str) -> Scheduler:
        """Start a scheduler process (``--identity`` ``name``); stopped after the test."""
        name = name or f"scheduler-{next(_serial)}"
        extra = list(args) if args else NO_ELECTION
        scheduler = Scheduler(self.cluster.base / "schedulers", [self.cluster.apiserver.address],
                              name=f"{self.prefix}-{name}", extra_args=extra)
        self.schedulers.append(scheduler)
        scheduler.start()
        return scheduler

    # -- looking

    async def all_pods(self) -> dict[str, core_pb2.Pod]:
        reply = await self.api.pods.list(self.namespace)
        return {p.metadata.name: p for p in reply.items}  # type: ignore[attr-defined]

    async def placement(self) -> dict[str, str]:
        """Pod name -> node name ("" while pending), short node names (no prefix)."""
        return {name: p.spec.node_name.removeprefix(f"{self.prefix}-")
                for name, p in (await self.all_pods()).items()}

    async def wait_bound(self, names: Iterable[str], timeout: float = DEADLINE
                         ) -> dict[str, str]:
        """Wait until every pod of ``names`` has a node; pod -> node (short names)."""
        wanted = set(names)

        async def bound() -> dict[str, str] | None:
            placement = await self.placement()
            if all(placement.get(n) for n in wanted):
                return {n: placement[n] for n in wanted}
            return None

        return await wait_for(bound, timeout=timeout, interval=0.1,
                              what=f"pods {sorted(wanted)} bound")

    async def events(self, reason: str) -> dict[str, list[core_pb2.Event]]:
        """This namespace's Events with ``reason``, by involved pod."""
        found: dict[str, list[core_pb2.Event]] = defaultdict(list)
        for event in (await self.api.events.list(self.namespace)).items:  # type: ignore[attr-defined]
            if event.reason == reason:
                found[event.involved_object.name].append(event)
        return found

    async def wait_failed(self, names: Iterable[str], timeout: float = DEADLINE
                          ) -> dict[str, str]:
        """Wait until each pod of ``names`` has a FailedScheduling Event; pod -> message
        (the latest)."""
        wanted = set(names)

        async def failed() -> dict[str, str] | None:
            events = await self.events("FailedScheduling")
            if wanted <= events.keys():
                return {n: max(events[n], key=lambda e: e.last_timestamp.ToNanoseconds()
                               ).message for n in wanted}
            return None

        return await wait_for(failed, timeout=timeout, interval=0.1,
                              what=f"FailedScheduling events for {sorted(wanted)}")

    async def lease_holder(self) -> str:
        try:
            lease = await self.api.leases.get("kube-scheduler", "kube-system")
        except errors.NotFound:
            return ""
        return lease.spec.holder_identity  # type: ignore[attr-defined]

    # -- cleaning up

    async def clean_up(self) -> None:
        """Stop the schedulers, then delete what the test made (pods at once: no kubelet
        would ever finish a graceful deletion)."""
        for scheduler in self.schedulers:
            scheduler.stop()
        for pod in (await self.all_pods()).values():
            with contextlib.suppress(errors.NotFound):
                await self.api.pods.delete(pod.metadata.name, self.namespace,
                                           grace_period_seconds=0)
        for resource in (self.api.services, self.api.replica_sets):
            for obj in (await resource.list(self.namespace)).items:  # type: ignore[attr-defined]
                with contextlib.suppress(errors.NotFound):
                    await resource.delete(obj.metadata.name, self.namespace)
        for name in self.nodes:
            with contextlib.suppress(errors.NotFound):
                await self.api.nodes.delete(name)


@pytest.fixture
async def env(cluster: ModuleCluster, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    api = Client(cluster.apiserver.address)
    tag = secrets.token_hex(3)
    namespace = f"sched-{tag}"
    await api.namespaces.create(from_dict({"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": namespace}}))
    env = Env(api, cluster, namespace, prefix=f"n{tag}")
    try:
        yield env
    finally:
        try:
            await env.clean_up()
        finally:
            await api.close()
            if failed(request):
                for scheduler in env.schedulers:
                    print(scheduler.logs(80))
                print(cluster.apiserver.logs(40))


# ------------------------------------------------------------------------ tests


async def test_burst_is_bound_without_overcommitting_a_node(env: Env) -> None:
    """20 pods of 300m at once onto three 1-cpu nodes: 9 fit (3 a node) and are bound
    with a Scheduled event; the other 11 stay pending with Kubernetes' message."""
    for i in range(3):
        await env.node(f"small-{i}", cpu="1", memory="4Gi")
    env.scheduler()
    names = [f"burst-{i:02d}" for i in range(20)]
    await env.pods(names, cpu="300m", memory="64Mi")

    async def settled() -> bool:
        placement = await env.placement()
        return sum(1 for node in placement.values() if node) == 9
    await wait_for(settled, timeout=DEADLINE, interval=0.1, what="9 pods bound")
    placement = await env.placement()
    pending = sorted(n for n, node in placement.items() if not node)
    messages = await env.wait_failed(pending)
    assert set(messages.values()) == {"0/3 nodes are available: 3 Insufficient cpu."}

    pods = await env.all_pods()
    per_node: Counter[str] = Counter()
    for pod in pods.values():
        if pod.spec.node_name:
            per_node[pod.spec.node_name] += cpu_request(pod)
    assert sorted(per_node.values()) == [900, 900, 900]  # every node as full as it gets
    assert all(used <= 1000 for used in per_node.values())
    # The pending pods say why on their PodScheduled condition too.
    async def condition() -> core_pb2.PodCondition | None:
        pod = await env.api.pods.get(pending[0], env.namespace)
        return next((c for c in pod.status.conditions  # type: ignore[attr-defined]
                     if c.type == "PodScheduled"), None)
    found = await wait_for(condition, timeout=DEADLINE, interval=0.1,
                           what="the PodScheduled condition")
    assert (found.status, found.reason) == ("False", "Unschedulable")
    assert found.message == "0/3 nodes are available: 3 Insufficient cpu."

    bound = {n: node for n, node in placement.items() if node}

    async def scheduled_events() -> dict[str, list[core_pb2.Event]] | None:
        events = await env.events("Scheduled")
        return events if bound.keys() <= events.keys() else None
    events = await wait_for(scheduled_events, timeout=DEADLINE, interval=0.1,
                            what="Scheduled events")
    for name, node in bound.items():
        (event,) = events[name]
        assert event.message == (f"Successfully assigned {env.namespace}/{name} to "
                                 f"{env.node_name(node)}")
        assert (event.type, event.source.component) == ("Normal", "default-scheduler")
    assert not pending & events.keys()
    # Nothing more happens: no room appeared.
    await asyncio.sleep(1.0)
    assert await env.placement() == placement


async def test_taints_and_tolerations(env: Env) -> None:
    """NoSchedule keeps pods off unless tolerated; PreferNoSchedule is avoided when
    another node will do."""
    await env.node("gpu", taints=[("dedicated", "gpu", "NoSchedule")],
                   labels={"kind": "gpu"})
    await env.node("spot", taints=[("spot", "true", "PreferNoSchedule")])
    await env.node("plain")
    env.scheduler()
    plain = [f"plain-{i}" for i in range(6)]
    await env.pods(plain, cpu="100m")
    await env.pod("tolerates", cpu="100m", nodeSelector={"kind": "gpu"}, tolerations=[
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}])
    await env.pod("intolerant", cpu="100m", nodeSelector={"kind": "gpu"})
    # Tolerating everything: the gpu node is allowed, the spot node no worse than plain.
    await env.pod("tolerates-all", cpu="100m", tolerations=[{"operator": "Exists"}])

    placement = await env.wait_bound([*plain, "tolerates", "tolerates-all"])
    assert {placement[n] for n in plain} == {"plain"}
    assert placement["tolerates"] == "gpu"
    messages = await env.wait_failed(["intolerant"])
    assert messages["intolerant"] == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, "
        "2 node(s) didn't match Pod's node affinity/selector.")
    assert not (await env.placement())["intolerant"]


async def test_node_selector_and_affinity(env: Env) -> None:
    """nodeSelector, required affinity (In / NotIn) and preferred affinity."""
    await env.node("ssd", labels={"disk": "ssd"})
    await env.node("hdd", labels={"disk": "hdd"})
    await env.node("bare")
    env.scheduler()
    await env.pod("selector", nodeSelector={"disk": "ssd"})
    await env.pod("in-hdd", affinity=required_affinity("disk", "In", ["hdd"]))
    await env.pod("not-in", affinity=required_affinity("disk", "NotIn", ["ssd", "hdd"]))
    await env.pod("prefers-hdd", affinity=preferred_affinity("disk", ["hdd"]))
    both = required_affinity("disk", "In", ["ssd", "hdd"])
    both["nodeAffinity"].update(preferred_affinity("disk", ["ssd"])["nodeAffinity"])
    await env.pod("both", affinity=both)
    await env.pod("nowhere", affinity=required_affinity("disk", "In", ["nvme"]))

    placement = await env.wait_bound(["selector", "in-hdd", "not-in", "prefers-hdd", "both"])
    assert placement == {"selector": "ssd", "in-hdd": "hdd", "not-in": "bare",
                         "prefers-hdd": "hdd", "both": "ssd"}
    messages = await env.wait_failed(["nowhere"])
    assert messages["nowhere"] == (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.")


async def test_spreading_over_equal_nodes(env: Env) -> None:
    """The pods of one Service, and of one ReplicaSet (set-based selector), spread
    evenly over four equal nodes."""
    for i in range(4):
        await env.node(f"eq-{i}")
    await env.api.services.create(from_dict({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": env.namespace},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
    await env.api.replica_sets.create(from_dict({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "api", "namespace": env.namespace},
        "spec": {"replicas": 0,
                 "selector": {"matchLabels": {"app": "api"}, "matchExpressions": [
                     {"key": "tier", "operator": "In", "values": ["backend", "cache"]}]},
                 "template": {"metadata": {"labels": {"app": "api", "tier": "backend"}},
                              "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}}))
    # Started after the Service and ReplicaSet exist: its first list has them.
    env.scheduler()
    web = [f"web-{i}" for i in range(8)]
    await env.pods(web, cpu="100m", memory="128Mi", labels={"app": "web"})
    placement = await env.wait_bound(web)
    assert sorted(Counter(placement.values()).values()) == [2, 2, 2, 2]

    backend = [f"api-{i}" for i in range(12)]
    await env.pods(backend, cpu="100m", memory="128Mi",
                   labels={"app": "api", "tier": "backend"})
    placement = await env.wait_bound(backend)
    assert sorted(Counter(placement.values()).values()) == [3, 3, 3, 3]


async def test_pending_pod_is_bound_when_a_fitting_node_appears(env: Env) -> None:
    """A pod too big for every node waits; a node it fits is added; it is bound at
    once (on the node's add event, not the queue's 60 s flush)."""
    await env.node("little", cpu="1")
    env.scheduler()
    await env.pod("big", cpu="2")
    messages = await env.wait_failed(["big"])
    assert messages["big"] == "0/1 nodes are available: 1 Insufficient cpu."
    assert not (await env.placement())["big"]

    added = time.monotonic()
    await env.node("large", cpu="8")
    placement = await env.wait_bound(["big"], timeout=EVENT_DRIVEN)
    assert placement["big"] == "large"
    assert time.monotonic() - added < EVENT_DRIVEN


async def test_unschedulable_and_not_ready_nodes_are_avoided(env: Env) -> None:
    """Cordoned and not-Ready nodes get no pods; uncordoning lets a waiting pod in."""
    await env.node("cordoned", unschedulable=True, labels={"role": "cordoned"})
    await env.node("down", ready=False)
    await env.node("up")
    env.scheduler()
    names = [f"p-{i}" for i in range(5)]
    await env.pods(names, cpu="100m")
    await env.pod("wants-cordoned", nodeSelector={"role": "cordoned"})
    placement = await env.wait_bound(names)
    assert set(placement.values()) == {"up"}
    messages = await env.wait_failed(["wants-cordoned"])
    assert messages["wants-cordoned"] == (
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) were not ready, 1 node(s) were unschedulable.")

    node = await env.api.nodes.get(env.node_name("cordoned"))
    node.spec.unschedulable = False  # type: ignore[attr-defined]
    await env.api.nodes.update(node)
    placement = await env.wait_bound(["wants-cordoned"], timeout=EVENT_DRIVEN)
    assert placement["wants-cordoned"] == "cordoned"


async def test_host_port_conflicts(env: Env) -> None:
    """Two nodes take one pod each on TCP 8080; a third waits; UDP 8080 still fits."""
    await env.node("a")
    await env.node("b")
    env.scheduler()
    await env.pods(["tcp-0", "tcp-1", "tcp-2"], host_port=(8080, "TCP"))
    await wait_for(lambda: _count_bound(env, 2), timeout=DEADLINE, interval=0.1,
                   what="two pods bound")
    placement = await env.placement()
    bound = sorted(node for node in placement.values() if node)
    assert bound == ["a", "b"]
    (waiting,) = [name for name, node in placement.items() if not node]
    messages = await env.wait_failed([waiting])
    assert messages[waiting] == ("0/2 nodes are available: 2 node(s) didn't have free ports "
                                 "for the requested pod ports.")
    await env.pod("udp", host_port=(8080, "UDP"))
    assert (await env.wait_bound(["udp"]))["udp"] in ("a", "b")
    assert not (await env.placement())[waiting]


async def _count_bound(env: Env, count: int) -> bool:
    return sum(1 for node in (await env.placement()).values() if node) >= count


async def test_scheduler_name_picks_the_scheduler(env: Env) -> None:
    """A pod for ``other-scheduler`` is left alone by the default scheduler and bound by
    a second scheduler of that name, which signs its events with it."""
    await env.node("any")
    env.scheduler("default")
    await env.pod("other", schedulerName="other-scheduler")
    # The default scheduler is up once a later pod of its own is bound.
    await env.pod("sentinel")
    await env.wait_bound(["sentinel"])
    await asyncio.sleep(0.5)
    assert not (await env.placement())["other"]
    assert "other" not in await env.events("FailedScheduling")

    env.scheduler("other", "--scheduler-name", "other-scheduler", *NO_ELECTION)
    assert (await env.wait_bound(["other"]))["other"] == "any"

    async def scheduled() -> core_pb2.Event | None:
        events = (await env.events("Scheduled")).get("other")
        return events[0] if events else None
    event = await wait_for(scheduled, timeout=DEADLINE, interval=0.1,
                           what="the other scheduler's event")
    assert event.source.component == "other-scheduler"
    assert event.reporting_component == "other-scheduler"


@dataclass
class BindingReferee:
    """Watches the namespace's pods from before the first was created and remembers
    every node each pod was ever seen on: a pod bound twice shows up with two."""

    seen: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    events: int = 0

    def record(self, pod: core_pb2.Pod) -> None:
        nodes = self.seen[pod.metadata.name]
        if pod.spec.node_name and (not nodes or nodes[-1] != pod.spec.node_name):
            nodes.append(pod.spec.node_name)

    async def run(self, api: Client, namespace: str, resource_version: str) -> None:
        async for event in api.pods.watch(namespace, resource_version=resource_version):
            if event.type in ("ADDED", "MODIFIED", "DELETED"):  # type: ignore[attr-defined]
                self.events += 1
                self.record(event.object)  # type: ignore[attr-defined]

    def rebound(self) -> dict[str, list[str]]:
        return {name: nodes for name, nodes in self.seen.items() if len(nodes) > 1}


async def test_failover_between_two_schedulers(env: Env) -> None:
    """Two leader-elected schedulers, pods created all along; the leader is SIGKILLed;
    the other takes over within about a lease duration and binds the rest; no pod was
    ever bound twice (spec.nodeName, once set, never changed)."""
    for i in range(3):
        await env.node(f"big-{i}", cpu="64", memory="256Gi", pods="1000")
    rv = (await env.api.pods.list(env.namespace)).metadata.resource_version  # type: ignore[attr-defined]
    referee = BindingReferee()
    watcher = asyncio.create_task(referee.run(env.api, env.namespace, rv), name="referee")
    schedulers = {s.name: s for s in (env.scheduler("a", *LEASE_ARGS),
                                      env.scheduler("b", *LEASE_ARGS))}

    created: list[tuple[str, float]] = []
    stop_creating = asyncio.Event()

    async def create_continuously() -> None:
        for i in itertools.count():
            if stop_creating.is_set():
                return
            name = f"ha-{i:04d}"
            await env.pod(name, cpu="10m", memory="16Mi")
            created.append((name, time.monotonic()))
            await asyncio.sleep(0.05)

    creator = asyncio.create_task(create_continuously(), name="creator")
    try:
        leader = await wait_for(_holder_among(env, set(schedulers)), timeout=DEADLINE,
                                what="a scheduler leading")
        await wait_for(lambda: _count_bound(env, 20), timeout=DEADLINE, interval=0.1,
                       what="20 pods bound by the first leader")
        killed_at = time.monotonic()
        schedulers[leader].kill(signal.SIGKILL)
        (survivor,) = set(schedulers) - {leader}

        async def survivor_leads() -> bool:
            return await env.lease_holder() == survivor
        await wait_for(survivor_leads, timeout=DEADLINE, interval=0.1,
                       what=f"{survivor} leading")
        took_lease = time.monotonic() - killed_at

        # Pods made after the kill can only be bound by the survivor.
        after_kill = next(i for i, (_, at) in enumerate(created) if at > killed_at)
        first_after = created[after_kill][0]
        await env.wait_bound([first_after])
        first_bind = time.monotonic() - killed_at
        await asyncio.sleep(2.0)  # the survivor schedules while pods keep coming
    finally:
        stop_creating.set()
        await creator
    names = [name for name, _ in created]
    placement = await env.wait_bound(names)
    assert len(placement) == len(names) >= 40

    print(f"\nfailover: {survivor} took the lease {took_lease:.1f}s after the kill and "
          f"bound a new pod {first_bind:.1f}s after it; {len(names)} pods")
    # Within about a lease duration (and a few retry periods, on a busy machine).
    assert took_lease < LEASE + RENEW + 3.0, took_lease
    assert first_bind < LEASE + RENEW + 8.0, first_bind

    # The referee saw every binding (the watch is ordered: wait for the last ones).
    await wait_for(_async(lambda: all(referee.seen.get(n) for n in names)), timeout=DEADLINE,
                   interval=0.1, what="the referee to see every pod bound")
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError, errors.APIError):
        await watcher
    assert referee.rebound() == {}
    for name in names:
        assert referee.seen[name] == [env.node_name(placement[name])]

    # Each pod has at most one Scheduled event (a Binding refused as a conflict makes
    # none); those of pods made after the kill come from the survivor.
    late = [name for name, _ in created[after_kill:]]

    async def late_events() -> dict[str, list[core_pb2.Event]] | None:
        events = await env.events("Scheduled")
        return events if set(late) <= events.keys() else None
    scheduled = await wait_for(late_events, timeout=DEADLINE, interval=0.2,
                               what="Scheduled events of the pods made after the kill")
    assert all(len(events) == 1 and events[0].count == 1 for events in scheduled.values())
    assert {scheduled[n][0].source.host for n in late} == {survivor}


def _holder_among(env: Env, identities: set[str]) -> Callable[[], Awaitable[str | None]]:
    async def holder() -> str | None:
        current = await env.lease_holder()
        return current if current in identities else None
    return holder


def _async(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()
    return check
