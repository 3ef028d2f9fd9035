"""The load the faults hit: writers that create, update and delete Leases with
preconditions (each write recorded with what its client learnt), and a scaler that
resizes the run's Deployment of busybox pods.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from skiff.api import errors
from skiff.api.v1 import apps_pb2, coordination_pb2, core_pb2, meta_pb2
from skiff.chaos.config import (
    DELETE_SHARE,
    DEPLOYMENT,
    MAX_REPLICAS,
    OBJECTS_PER_WRITER,
    RETRY_BACKOFF,
    SCALE_INTERVAL,
    WRITE_PAUSE,
)
from skiff.chaos.history import Failover, History, Outcome, Scale, Write, outcome_of
from skiff.client.client import Client
from skiff.kubelet.images import BUSYBOX_IMAGE

T = TypeVar("T")


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
