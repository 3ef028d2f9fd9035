"""Replication under a slow watch: the controller's informer sees pods a second late, yet
an RC never gets more pods than it asks for, because expectations (by pod uid) hold the
controller back until its own creates and deletes come back through the watch.

The controller runs in this process against the shared real apiserver and store; only
its view is slowed, by a client whose pod watch delivers each event after a delay. What
exists is read from the apiserver directly, through a watch of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

from services.controller_manager.replication import ReplicaSetController
from skiff.api.manifest import from_dict
from skiff.client.client import Client
from skiff.client.events import EventRecorder
from skiff.client.informer import SharedInformerFactory
from skiff.health import wait_for

#: How late the controller hears of every pod change.
LAG = 1.0
DEADLINE = 60.0


class SlowPods:
    """A client whose pods' watch events arrive ``LAG`` seconds late (all else as is)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def resource(self, kind: Any) -> Any:
        real = self._client.resource(kind)
        return _SlowResource(real) if real.kind.kind == "Pod" else real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class _SlowResource:
    def __init__(self, real: Any) -> None:
        self._real = real
        self.kind = real.kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for event in self._real.watch(*args, **kwargs):
            await asyncio.sleep(LAG)  # the injected lag itself, not a wait for a condition
            yield event


def rc(name: str, ns: str, replicas: int) -> Any:
    return from_dict({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"app": name},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})


async def test_no_pod_twice_while_the_controllers_watch_lags(shared_cluster) -> None:
    async with Client(shared_cluster.apiserver.address, retry_deadline=DEADLINE) as api:
        ns = f"slow-{secrets.token_hex(3)}"
        await api.namespaces.create(from_dict(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        slow = SlowPods(api)
        factory = SharedInformerFactory(slow, namespace=ns)
        controller = ReplicaSetController(slow, factory, EventRecorder(api, "test"),  # type: ignore[arg-type]
                                          kind="ReplicationController")
        most = 0
        live: set[str] = set()

        async def count() -> None:
            nonlocal most
            async for event in api.pods.watch(ns):
                name = event.object.metadata.name
                gone = (event.type == "DELETED"
                        or event.object.metadata.HasField("deletion_timestamp"))
                (live.discard if gone else live.add)(name)
                most = max(most, len(live))

        counter = asyncio.create_task(count())
        await factory.start_all()
        runner = asyncio.create_task(controller.run())
        try:
            created = await api.replication_controllers.create(rc("web", ns, 5))

            async def exactly(n: int) -> bool:
                return len(live) == n and len((await api.pods.list(ns)).items) == n

            await wait_for(lambda: exactly(5), timeout=DEADLINE, what="5 pods")
            # Every resync while the watch lags must not create more.
            await asyncio.sleep(3 * LAG)  # deliberately: time for a duplicate to appear
            assert most == 5
            # A deleted pod is replaced once, not once per sync during the lag.
            victim = sorted(live)[0]
            await api.pods.delete(victim, ns)
            await wait_for(lambda: exactly(5), timeout=DEADLINE, what="the pod replaced")
            scaled = await api.replication_controllers.get("web", ns)
            scaled.spec.replicas = 8
            await api.replication_controllers.update(scaled)
            await wait_for(lambda: exactly(8), timeout=DEADLINE, what="8 pods")
            await asyncio.sleep(3 * LAG)
            assert most == 8
            assert created.metadata.uid
        finally:
            runner.cancel()
            counter.cancel()
            for task in (runner, counter):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await factory.stop_all()
