"""Failover between two controller-manager processes on one leader-election Lease.

Two ``skiff-controller-manager`` processes (identities of their own, the same
``kube-system/kube-controller-manager`` Lease, short lease flags) run against the
session's shared store and apiserver. What is checked is what an operator sees:

- exactly one of them leads: the Lease names it, and only its log says it started
  leading and running controllers;
- a ReplicationController converges under the leader;
- the leader SIGKILLed (no chance to release): the other takes the Lease once it has
  gone unrenewed for about the lease duration (not before), and keeps the RC converged:
  deleted pods come back, a scale-up is met, and no pod is ever created twice (every
  pod the namespace ever saw is counted through a watch);
- the leader SIGTERMed: it releases the Lease on its way out (client-go's
  ReleaseOnCancel), so the other takes over long before the lease would have expired.

Every wait polls a condition with a deadline; none sleeps in place of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from skiff.api import errors
from skiff.api.manifest import from_dict
from skiff.api.v1 import core_pb2
from skiff.client.client import Client
from skiff.health import wait_for
from skiff.testing.fixtures import election_flags, failed
from skiff.testing.processes import ControllerManager

#: The Lease every controller-manager competes for (services/controller_manager/config.py).
LEASE_NAME, LEASE_NAMESPACE = "kube-controller-manager", "kube-system"
#: How long a test waits for the controllers to do something (a slow shared machine).
DEADLINE = 30.0
#: Seconds between a candidate's looks at the Lease (and the holder's renewals).
RETRY_PERIOD = 0.5


@dataclass
class Pair:
    """Controller-manager candidates started by one test, by identity."""

    base: Path
    server: str
    flags: list[str]
    managers: dict[str, ControllerManager] = field(default_factory=dict)

    def start(self, identity: str) -> ControllerManager:
        """Start a candidate running the replication controllers as ``identity``."""
        manager = ControllerManager(self.base, [self.server], name=identity,
                                    controllers=["replication", "garbagecollector"],
                                    extra_args=self.flags)
        manager.start()
        self.managers[identity] = manager
        return manager

    def stop(self) -> None:
        for manager in self.managers.values():
            manager.stop()


MakePair = Callable[[float, float], Pair]


@pytest.fixture
def make_pair(shared_cluster, tmp_path, request) -> Iterator[MakePair]:
    """``make_pair(lease_duration, renew_deadline)``: a Pair whose managers are stopped
    (and their logs shown if the test failed) afterwards."""
    pairs: list[Pair] = []

    def make(lease_duration: float, renew_deadline: float) -> Pair:
        pair = Pair(tmp_path / f"pair-{len(pairs)}", shared_cluster.apiserver.address,
                    election_flags(lease_duration, renew_deadline, RETRY_PERIOD))
        pairs.append(pair)
        return pair

    try:
        yield make
    finally:
        for pair in pairs:
            pair.stop()
        if failed(request):
            for pair in pairs:
                for manager in pair.managers.values():
                    print(manager.logs(80))


@pytest.fixture
async def client(shared_cluster) -> AsyncIterator[Client]:
    async with Client(shared_cluster.apiserver.address, retry_deadline=DEADLINE) as api:
        yield api


@pytest.fixture
async def ns(client: Client) -> str:
    name = f"failover-{secrets.token_hex(4)}"
    await client.namespaces.create(from_dict(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    return name


# ------------------------------------------------------------------ helpers


def rc_manifest(name: str, ns: str, replicas: int) -> Any:
    labels = {"app": name}
    return from_dict({"apiVersion": "v1", "kind": "ReplicationController",
                      "metadata": {"name": name, "namespace": ns},
                      "spec": {"replicas": replicas, "selector": labels,
                               "template": {"metadata": {"labels": labels},
                                            "spec": {"containers": [{"name": "app",
                                                                     "image": "busybox"}]}}}})


async def holder(client: Client) -> str:
    """Who the controller-manager Lease names ("" when none or no Lease yet)."""
    try:
        lease = await client.leases.get(LEASE_NAME, LEASE_NAMESPACE)
    except errors.NotFound:
        return ""
    return lease.spec.holder_identity  # type: ignore[attr-defined,no-any-return]


async def wait_holder(client: Client, candidates: set[str], *, timeout: float = DEADLINE) -> str:
    """Wait until one of ``candidates`` holds the Lease; which one."""
    async def held() -> str:
        found = await holder(client)
        return found if found in candidates else ""
    return await wait_for(held, timeout=timeout, interval=0.05,
                          what=f"one of {sorted(candidates)} holding the lease")


def log_events(manager: ControllerManager) -> list[str]:
    """The ``event`` of every JSON line the manager logged."""
    events = []
    for line in manager.daemon.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                events.append(str(record.get("event", "")))
    return events


async def start_and_elect(client: Client, pair: Pair, identities: set[str]) -> str:
    """Start a candidate per identity; the one that leads, checked to lead alone."""
    for identity in sorted(identities):
        pair.start(identity)
    leader = await wait_holder(client, identities)
    await assert_sole_leader(client, pair, leader)
    return leader


async def assert_sole_leader(client: Client, pair: Pair, leader: str) -> None:
    """The Lease names ``leader``, only its log says it leads and runs controllers, and
    it keeps renewing (the Lease does not change hands meanwhile)."""
    lease = await client.leases.get(LEASE_NAME, LEASE_NAMESPACE)
    first_renewal = lease.spec.renew_time.ToNanoseconds()  # type: ignore[attr-defined]

    async def renewed() -> bool:
        now = await client.leases.get(LEASE_NAME, LEASE_NAMESPACE)
        assert now.spec.holder_identity == leader  # type: ignore[attr-defined]
        return now.spec.renew_time.ToNanoseconds() > first_renewal  # type: ignore[attr-defined]

    await wait_for(renewed, timeout=DEADLINE, what="the leader renewing its lease")
    for identity, manager in pair.managers.items():
        events = log_events(manager)
        leading = "started leading" in events and "running controllers" in events
        assert leading == (identity == leader), (identity, leader)


@dataclass
class PodHistory:
    """Every pod a namespace ever had, from a watch begun before the first one."""

    uids: set[str] = field(default_factory=set)

    async def follow(self, client: Client, ns: str, resource_version: str) -> None:
        async for event in client.pods.watch(ns, resource_version=resource_version):
            if event.type == "ADDED":  # type: ignore[attr-defined]
                self.uids.add(event.object.metadata.uid)  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def pod_history(client: Client, ns: str) -> AsyncIterator[PodHistory]:
    listed = await client.pods.list(ns)
    assert not listed.items  # type: ignore[attr-defined]
    history = PodHistory()
    task = asyncio.create_task(
        history.follow(client, ns, listed.metadata.resource_version),  # type: ignore[attr-defined]
        name=f"pod history {ns}")
    try:
        yield history
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, errors.APIError):
            await task


def owned_by(pod: core_pb2.Pod, rc: Any) -> bool:
    return any(r.uid == rc.metadata.uid and r.controller for r in pod.metadata.owner_references)


async def wait_converged(client: Client, ns: str, rc: Any, replicas: int,
                         what: str) -> list[core_pb2.Pod]:
    """Wait until exactly ``replicas`` non-terminating pods are in ``ns``, all owned by
    ``rc``, and the RC's status says so."""
    async def check() -> list[core_pb2.Pod] | None:
        listed = await client.pods.list(ns)
        pods = [p for p in listed.items  # type: ignore[attr-defined]
                if not p.metadata.HasField("deletion_timestamp")]
        if len(pods) != replicas or not all(owned_by(p, rc) for p in pods):
            return None
        current = await client.replication_controllers.get(rc.metadata.name, ns)
        if current.status.replicas != replicas:  # type: ignore[attr-defined]
            return None
        return pods
    return await wait_for(check, timeout=DEADLINE, interval=0.1, what=what)


async def scale(client: Client, name: str, ns: str, replicas: int) -> None:
    for _ in range(20):
        rc = await client.replication_controllers.get(name, ns)
        rc.spec.replicas = replicas  # type: ignore[attr-defined]
        try:
            await client.replication_controllers.update(rc)
            return
        except errors.Conflict:
            continue  # the controller wrote its status meanwhile
    raise AssertionError("scaling kept conflicting")


# -------------------------------------------------------------------- tests


async def test_a_killed_leader_is_replaced_and_the_rc_stays_converged(
        client: Client, ns: str, make_pair: MakePair) -> None:
    lease_duration = 5.0
    pair = make_pair(lease_duration, 3.0)
    tag = secrets.token_hex(3)
    identities = {f"cm-a-{tag}", f"cm-b-{tag}"}
    leader = await start_and_elect(client, pair, identities)

    async with pod_history(client, ns) as history:
        rc = await client.replication_controllers.create(rc_manifest("web", ns, 3))
        await wait_converged(client, ns, rc, 3, "3 pods under the first leader")

        transitions = (await client.leases.get(LEASE_NAME, LEASE_NAMESPACE)).spec.lease_transitions  # type: ignore[attr-defined]
        pair.managers[leader].kill(signal.SIGKILL)
        killed = time.monotonic()
        (successor,) = identities - {leader}
        await wait_holder(client, {successor}, timeout=lease_duration + DEADLINE)
        took = time.monotonic() - killed
        # Not before the lease could have expired (the dead leader renewed it at most a
        # retry period before dying), and not much after.
        assert lease_duration - 2 * RETRY_PERIOD - 1.0 <= took <= lease_duration + 10.0, took
        lease = await client.leases.get(LEASE_NAME, LEASE_NAMESPACE)
        assert lease.spec.lease_transitions == transitions + 1  # type: ignore[attr-defined]

        # The new leader reconciles: two pods deleted and a scale-up at once.
        pods = await wait_converged(client, ns, rc, 3, "3 pods when the successor leads")
        for pod in pods[:2]:
            await client.pods.delete(pod.metadata.name, ns, grace_period_seconds=0)
        await scale(client, "web", ns, 5)
        await wait_converged(client, ns, rc, 5, "5 pods under the successor")
        # 3 first, 2 replacements, 2 for the scale-up: nothing made twice.
        assert len(history.uids) == 7, len(history.uids)
    events = log_events(pair.managers[successor])
    assert "started leading" in events and "running controllers" in events


async def test_a_stopped_leader_releases_the_lease(client: Client, ns: str,
                                                   make_pair: MakePair) -> None:
    # A long lease: had the leader not released it, the successor would wait ~15 s.
    lease_duration = 15.0
    pair = make_pair(lease_duration, 10.0)
    tag = secrets.token_hex(3)
    identities = {f"cm-c-{tag}", f"cm-d-{tag}"}
    leader = await start_and_elect(client, pair, identities)
    rc = await client.replication_controllers.create(rc_manifest("api", ns, 2))
    await wait_converged(client, ns, rc, 2, "2 pods under the first leader")

    stopping = pair.managers[leader]
    stopping.kill(signal.SIGTERM)
    terminated = time.monotonic()
    (successor,) = identities - {leader}
    await wait_holder(client, {successor}, timeout=lease_duration + DEADLINE)
    took = time.monotonic() - terminated
    assert took < lease_duration / 2, took

    async def exited() -> bool:
        return not stopping.alive
    await wait_for(exited, timeout=DEADLINE, what="the stopped leader exiting")
    assert stopping.daemon.process is not None and stopping.daemon.process.returncode == 0
    assert "released the lease" in log_events(stopping)

    await scale(client, "api", ns, 4)
    await wait_converged(client, ns, rc, 4, "4 pods under the successor")
