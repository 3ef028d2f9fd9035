"""What the apiserver's integration tests share: a thin typed client over the raw gRPC
stubs, a watch that can be read with a deadline, error codes asserted exactly, and
small builders of valid objects.

The client deliberately is not ``skiff.client``: these tests check the wire (the gRPC
status code and its details), so nothing here retries or translates errors, except
:func:`retrying`, which the HA tests use to ride out a store outage as a real client
would (UNAVAILABLE means "try again").

Every wait has a deadline; nothing sleeps in place of a condition. To show that
something did *not* happen (an event filtered out), a test writes a later sentinel
and checks that it is the next thing seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message

from skiff.api.kinds import KINDS, Kind
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc

T = TypeVar("T")
#: How long a test waits for something the apiserver should do at once.
DEADLINE = 15.0
ADDED, MODIFIED, DELETED, BOOKMARK = "ADDED", "MODIFIED", "DELETED", "BOOKMARK"
OK = grpc.StatusCode.OK
NOT_FOUND = grpc.StatusCode.NOT_FOUND
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
ABORTED = grpc.StatusCode.ABORTED
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

_names = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test uses (a DNS-1123 label)."""
    return f"{prefix}-{next(_names)}-{random.randrange(16**6):06x}"


# ---------------------------------------------------------------------- the client


class Resource:
    """The verbs of one kind, as plain stub calls with a deadline."""

    def __init__(self, kind: Kind, channel: grpc.aio.Channel) -> None:
        self.kind = kind
        self.stub = kind.stub(channel)

    async def create(self, obj: Message) -> Any:
        return await self.stub.Create(obj, timeout=DEADLINE)

    async def get(self, name: str, namespace: str = "default", *,
                  resource_version: str = "") -> Any:
        return await self.stub.Get(meta_pb2.GetRequest(
            namespace=namespace, name=name, resource_version=resource_version),
            timeout=DEADLINE)

    async def list(self, namespace: str = "", **options: Any) -> Any:
        """One List call; ``namespace`` "" is every namespace."""
        return await self.stub.List(meta_pb2.ListOptions(namespace=namespace, **options),
                                    timeout=DEADLINE)

    async def names(self, namespace: str = "", **options: Any) -> list[str]:
        return [o.metadata.name for o in (await self.list(namespace, **options)).items]

    async def update(self, obj: Message) -> Any:
        return await self.stub.Update(obj, timeout=DEADLINE)

    async def update_status(self, obj: Message) -> Any:
        return await self.stub.UpdateStatus(obj, timeout=DEADLINE)

    async def delete(self, name: str, namespace: str = "default", *,
                     grace: int | None = None, uid: str | None = None,
                     resource_version: str | None = None,
                     propagation_policy: str = "") -> Any:
        request = meta_pb2.DeleteRequest(namespace=namespace, name=name,
                                         propagation_policy=propagation_policy)
        if grace is not None:
            request.grace_period_seconds = grace
        if uid is not None:
            request.preconditions.uid = uid
        if resource_version is not None:
            request.preconditions.resource_version = resource_version
        return await self.stub.Delete(request, timeout=DEADLINE)

    async def exists(self, name: str, namespace: str = "default") -> bool:
        try:
            await self.get(name, namespace)
        except grpc.aio.AioRpcError as e:
            if e.code() == NOT_FOUND:
                return False
            raise
        return True

    def watch(self, namespace: str = "", **options: Any) -> Watch:
        """A Watch call, read in the background; close it (or use ``async with``)."""
        return Watch(self.stub.Watch(meta_pb2.ListOptions(namespace=namespace, **options)))


class Client:
    """One channel to one apiserver and a :class:`Resource` per kind."""

    namespaces: Resource
    pods: Resource
    nodes: Resource
    services: Resource
    endpoints: Resource
    replicationcontrollers: Resource
    replicasets: Resource
    deployments: Resource
    events: Resource
    leases: Resource
    configmaps: Resource
    secrets: Resource
    serviceaccounts: Resource

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address)
        self.resources: dict[str, Resource] = {}
        for kind in KINDS:
            resource = Resource(kind, self.channel)
            self.resources[kind.kind] = resource
            setattr(self, kind.plural, resource)

    def of(self, kind: Kind | str) -> Resource:
        return self.resources[kind if isinstance(kind, str) else kind.kind]

    async def bind(self, name: str, node: str, namespace: str = "default", *,
                   uid: str = "") -> core_pb2.Binding:
        binding = core_pb2.Binding(metadata=meta_pb2.ObjectMeta(
            name=name, namespace=namespace, uid=uid),
            target=meta_pb2.ObjectReference(kind="Node", name=node))
        return await self.pods.stub.Bind(binding, timeout=DEADLINE)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# ------------------------------------------------------------------------ watching


class Watch:
    """One Watch stream; its events are queued by a reader task as they arrive.

    ``next`` and ``take`` read with a deadline; ``status`` waits for the stream to end
    and returns its code (and details).
    """

    def __init__(self, call: Any) -> None:
        self._call = call
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._ended: asyncio.Future[tuple[grpc.StatusCode, str]] = (
            asyncio.get_running_loop().create_future())
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="watch")

    async def _read(self) -> None:
        try:
            async for event in self._call:
                self._events.put_nowait(event)
            self._ended.set_result((OK, ""))
        except grpc.aio.AioRpcError as e:
            self._ended.set_result((e.code(), e.details() or ""))
        except asyncio.CancelledError:
            if not self._ended.done():
                self._ended.set_result((grpc.StatusCode.CANCELLED, "closed by the test"))
            raise

    async def next(self, timeout: float = DEADLINE) -> Any:
        """The next event; fails if the stream ends first or nothing comes in time."""
        get = asyncio.ensure_future(self._events.get())
        done, _ = await asyncio.wait({get, self._ended}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            return get.result()
        get.cancel()
        if self._ended in done:
            code, details = self._ended.result()
            raise AssertionError(f"the watch ended ({code.name}: {details}) before an event")
        raise TimeoutError(f"no watch event within {timeout}s")

    async def take(self, count: int, *, timeout: float = DEADLINE,
                   skip_bookmarks: bool = True) -> list[Any]:
        """Exactly the next ``count`` events (bookmarks skipped unless asked for)."""
        events: list[Any] = []
        while len(events) < count:
            event = await self.next(timeout)
            if skip_bookmarks and event.type == BOOKMARK:
                continue
            events.append(event)
        return events

    async def until(self, predicate: Callable[[Any], bool], *,
                    timeout: float = DEADLINE) -> list[Any]:
        """Events up to and including the first that matches ``predicate``."""
        events = []
        while True:
            event = await self.next(timeout)
            events.append(event)
            if predicate(event):
                return events

    async def status(self, timeout: float = DEADLINE) -> tuple[grpc.StatusCode, str]:
        """How the stream ended: its code and details."""
        return await asyncio.wait_for(asyncio.shield(self._ended), timeout)

    async def close(self) -> None:
        self._call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def summary(events: Iterable[Any]) -> list[tuple[str, str, int]]:
    """(type, name, resource version) of each event: what ordering tests compare."""
    return [(e.type, e.object.metadata.name, int(e.object.metadata.resource_version))
            for e in events]


def rv(obj: Message) -> int:
    return int(obj.metadata.resource_version)  # type: ignore[attr-defined]


# -------------------------------------------------------------------------- errors


async def fails(code: grpc.StatusCode, call: Awaitable[Any], match: str = "") -> str:
    """Await ``call``, which must fail with ``code`` (details containing ``match``);
    returns the details."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    assert error.code() == code, f"{error.code().name}: {error.details()}"
    details = error.details() or ""
    assert match in details, details
    return details


async def retrying(call: Callable[[], Awaitable[T]], *, deadline: float = 30.0) -> T:
    """``await call()``, retried on UNAVAILABLE (and DEADLINE_EXCEEDED) until ``deadline``
    seconds: what any client does while the store elects a leader."""
    end = time.monotonic() + deadline
    delay = 0.05
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as e:
            retryable = e.code() in (UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if not retryable or time.monotonic() + delay >= end:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


# ------------------------------------------------------------------ the store, raw


async def compact(endpoint: str, revision: int) -> None:
    """Compact the store at ``revision`` (etcd's KV.Compact) through one replica."""
    async with grpc.aio.insecure_channel(endpoint) as channel:
        await rpc_pb2_grpc.KVStub(channel).Compact(
            rpc_pb2.CompactionRequest(revision=revision), timeout=DEADLINE)


async def store_keys(endpoint: str, prefix: str) -> list[str]:
    """The keys under ``prefix`` in the store, read directly (what the apiserver wrote)."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    async with grpc.aio.insecure_channel(endpoint) as channel:
        response = await rpc_pb2_grpc.KVStub(channel).Range(
            rpc_pb2.RangeRequest(key=prefix.encode(), range_end=end.encode(), keys_only=True),
            timeout=DEADLINE)
    return [kv.key.decode() for kv in response.kvs]


# ------------------------------------------------------------------------ builders


def meta(name: str = "", namespace: str = "default", *, generate_name: str = "",
         labels: dict[str, str] | None = None,
         finalizers: Iterable[str] = ()) -> meta_pb2.ObjectMeta:
    return meta_pb2.ObjectMeta(name=name, namespace=namespace, generate_name=generate_name,
                               labels=labels or {}, finalizers=list(finalizers))


def pod(name: str = "", namespace: str = "default", *, labels: dict[str, str] | None = None,
        image: str = "busybox:1.36", node: str = "", generate_name: str = "",
        finalizers: Iterable[str] = (), **spec: Any) -> core_pb2.Pod:
    """A valid pod with one container (``spec`` adds PodSpec fields)."""
    return core_pb2.Pod(
        metadata=meta(name, namespace, generate_name=generate_name, labels=labels,
                      finalizers=finalizers),
        spec=core_pb2.PodSpec(containers=[core_pb2.Container(name="main", image=image)],
                              node_name=node, **spec))


def node(name: str, *, labels: dict[str, str] | None = None) -> core_pb2.Node:
    return core_pb2.Node(metadata=meta(name, "", labels=labels))


def namespace(name: str, *, labels: dict[str, str] | None = None) -> core_pb2.Namespace:
    return core_pb2.Namespace(metadata=meta(name, "", labels=labels))


def service(name: str, namespace: str = "default", *, port: int = 80,
            type: str = "ClusterIP", cluster_ip: str = "",
            node_port: int = 0) -> core_pb2.Service:
    return core_pb2.Service(
        metadata=meta(name, namespace),
        spec=core_pb2.ServiceSpec(
            type=type, cluster_ip=cluster_ip, selector={"app": name},
            ports=[core_pb2.ServicePort(port=port, node_port=node_port)]))
