"""The typed async client of the cluster API: one :class:`ResourceClient` per kind.

A :class:`Client` holds a gRPC channel to each apiserver address it is given and
sends every call to one of them; when that one answers UNAVAILABLE (or does not answer
at all) the call moves to the next address and is retried with jittered exponential
backoff until its retry deadline. Errors come back as the API's own exceptions
(``NotFound``, ``Conflict``, ``Gone``, ...) through :func:`skiff.api.errors.from_grpc`,
so callers never see gRPC codes.

Watches are not retried here: a broken watch ends with ``Unavailable`` and the caller
(an :class:`~skiff.client.informer.Informer`) decides where to resume.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.kinds import KINDS, Kind, lookup
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.logging import get_logger

log = get_logger("skiff.client")

T = TypeVar("T")

#: Kubernetes' default apiserver address for Skiff (DESIGN.md).
DEFAULT_SERVER = "127.0.0.1:6443"
#: Largest message accepted: a list of many thousands of objects.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Keepalive pings find a dead apiserver under an idle watch within ~30 s.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
#: Codes after which another address (or the same one, later) may succeed.
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def parse_addresses(addresses: str | Sequence[str]) -> tuple[str, ...]:
    """``"a:1,b:2"`` or ``["a:1", "http://b:2"]`` -> ``("a:1", "b:2")``."""
    items = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    parsed = tuple(a.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
                   for a in items if a.strip())
    if not parsed:
        raise ValueError("no apiserver address given")
    return parsed


def backoff(attempt: int, *, base: float = 0.05, cap: float = 2.0) -> float:
    """Full-jitter exponential backoff: a random delay up to ``base * 2**attempt``."""
    return random.uniform(0, min(cap, base * (2 ** attempt)))


class Client:
    """Connections to the apiservers and a typed client per kind.

    ``timeout`` bounds each attempt of a call; ``retry_deadline`` bounds all attempts.
    Use as ``async with Client("127.0.0.1:6443") as client: await client.pods.get(...)``.
    """

    def __init__(self, addresses: str | Sequence[str] = DEFAULT_SERVER, *,
                 timeout: float = 10.0, retry_deadline: float = 30.0) -> None:
        self.addresses = parse_addresses(addresses)
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self._current = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._resources: dict[str, ResourceClient] = {}
        self._stubs: dict[tuple[str, str], Any] = {}

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        self._stubs.clear()
        for channel in channels.values():
            await channel.close()

    @property
    def address(self) -> str:
        """The address calls go to now."""
        return self.addresses[self._current]

    def channel(self, address: str | None = None) -> grpc.aio.Channel:
        address = address or self.address
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
            self._channels[address] = channel
        return channel

    def stub(self, kind: Kind, address: str) -> Any:
        """The kind's service stub on ``address``'s channel (made once: stubs cost)."""
        stub = self._stubs.get((kind.kind, address))
        if stub is None:
            stub = self._stubs[(kind.kind, address)] = kind.stub(self.channel(address))
        return stub

    def _fail_over(self, address: str) -> None:
        if self.addresses[self._current] == address and len(self.addresses) > 1:
            self._current = (self._current + 1) % len(self.addresses)
            log.info("apiserver unavailable, moving on", failed=address, next=self.address)

    def resource(self, kind: Kind | str) -> ResourceClient:
        """The client of one kind, by Kind or by any of its names (``po``, ``pods``)."""
        found = lookup(kind) if isinstance(kind, str) else kind
        client = self._resources.get(found.kind)
        if client is None:
            client = self._resources[found.kind] = ResourceClient(self, found)
        return client

    async def call(self, kind: Kind, method: str, request: Message) -> Any:
        """One unary call with retries across addresses; API errors raised as such."""
        deadline = time.monotonic() + self.retry_deadline
        attempt = 0
        while True:
            address = self.address
            stub = self.stub(kind, address)
            try:
                return await getattr(stub, method)(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as e:
                if e.code() not in _RETRYABLE or time.monotonic() >= deadline:
                    raise errors.from_grpc(e) from None
                self._fail_over(address)
            await asyncio.sleep(min(backoff(attempt), max(0.0, deadline - time.monotonic())))
            attempt += 1

    # Typed shortcuts for the kinds, as clientset.CoreV1().Pods() would be.
    @property
    def namespaces(self) -> ResourceClient:
        return self.resource("Namespace")

    @property
    def pods(self) -> ResourceClient:
        return self.resource("Pod")

    @property
    def nodes(self) -> ResourceClient:
        return self.resource("Node")

    @property
    def services(self) -> ResourceClient:
        return self.resource("Service")

    @property
    def endpoints(self) -> ResourceClient:
        return self.resource("Endpoints")

    @property
    def replication_controllers(self) -> ResourceClient:
        return self.resource("ReplicationController")

    @property
    def replica_sets(self) -> ResourceClient:
        return self.resource("ReplicaSet")

    @property
    def deployments(self) -> ResourceClient:
        return self.resource("Deployment")

    @property
    def events(self) -> ResourceClient:
        return self.resource("Event")

    @property
    def leases(self) -> ResourceClient:
        return self.resource("Lease")

    @property
    def config_maps(self) -> ResourceClient:
        return self.resource("ConfigMap")

    @property
    def secrets(self) -> ResourceClient:
        return self.resource("Secret")

    @property
    def service_accounts(self) -> ResourceClient:
        return self.resource("ServiceAccount")


class ResourceClient:
    """Create, get, list, update, delete and watch objects of one kind."""

    def __init__(self, client: Client, kind: Kind) -> None:
        self.client = client
        self.kind = kind

    def _namespace(self, namespace: str) -> str:
        return namespace if self.kind.namespaced else ""

    async def _call(self, method: str, request: Message) -> Any:
        return await self.client.call(self.kind, method, request)

    async def create(self, obj: Message) -> Message:
        return await self._call("Create", obj)

    async def get(self, name: str, namespace: str = "default", *,
                  resource_version: str = "") -> Message:
        return await self._call("Get", meta_pb2.GetRequest(
            namespace=self._namespace(namespace), name=name, resource_version=resource_version))

    async def list(self, namespace: str = "", *, label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "",
                   resource_version: str = "") -> Message:
        """One page (or all, without ``limit``) of objects; namespace "" means all."""
        return await self._call("List", meta_pb2.ListOptions(
            namespace=self._namespace(namespace), label_selector=label_selector,
            field_selector=field_selector, limit=limit, continue_token=continue_token,
            resource_version=resource_version))

    async def update(self, obj: Message) -> Message:
        return await self._call("Update", obj)

    async def update_status(self, obj: Message) -> Message:
        if not self.kind.has_status:
            raise errors.BadRequest(f"{self.kind.plural} have no status")
        return await self._call("UpdateStatus", obj)

    async def delete(self, name: str, namespace: str = "default", *,
                     grace_period_seconds: int | None = None, uid: str | None = None,
                     resource_version: str | None = None,
                     propagation_policy: str = "") -> Message:
        request = meta_pb2.DeleteRequest(namespace=self._namespace(namespace), name=name,
                                         propagation_policy=propagation_policy)
        if grace_period_seconds is not None:
            request.grace_period_seconds = grace_period_seconds
        if uid is not None:
            request.preconditions.uid = uid
        if resource_version is not None:
            request.preconditions.resource_version = resource_version
        return await self._call("Delete", request)

    async def bind(self, binding: core_pb2.Binding) -> core_pb2.Binding:
        if self.kind.kind != "Pod":
            raise errors.BadRequest("only pods are bound")
        return await self._call("Bind", binding)

    async def finalize(self, namespace: core_pb2.Namespace) -> core_pb2.Namespace:
        """Write a namespace's spec.finalizers (the finalize subresource); a deleting
        namespace left with no finalizers is removed."""
        if self.kind.kind != "Namespace":
            raise errors.BadRequest("only namespaces are finalized")
        return await self._call("Finalize", namespace)

    async def watch(self, namespace: str = "", *, resource_version: str = "",
                    label_selector: str = "", field_selector: str = "",
                    allow_bookmarks: bool = False, timeout_seconds: int = 0
                    ) -> AsyncIterator[Message]:
        """The kind's WatchEvents from ``resource_version`` on, until the stream ends.

        A stream that breaks raises the API error it broke with (``Gone`` when the
        version was compacted, ``Unavailable`` when the apiserver went away); resuming
        is the caller's choice.
        """
        options = meta_pb2.ListOptions(
            namespace=self._namespace(namespace), resource_version=resource_version,
            label_selector=label_selector, field_selector=field_selector,
            allow_bookmarks=allow_bookmarks, timeout_seconds=timeout_seconds)
        address = self.client.address
        call = self.client.stub(self.kind, address).Watch(options)
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as e:
            if e.code() in _RETRYABLE:
                self.client._fail_over(address)
            raise errors.from_grpc(e) from None
        finally:
            call.cancel()


async def retrying(what: Callable[[], Awaitable[T]], *, deadline: float,
                   retry_on: tuple[type[BaseException], ...] = (errors.Unavailable,)) -> T:
    """``await what()``, retried with backoff on ``retry_on`` until ``deadline`` seconds."""
    end = time.monotonic() + deadline
    attempt = 0
    while True:
        try:
            return await what()
        except retry_on:
            if time.monotonic() >= end:
                raise
        await asyncio.sleep(backoff(attempt))
        attempt += 1


__all__ = ["DEFAULT_SERVER", "KINDS", "Client", "ResourceClient", "backoff", "parse_addresses",
           "retrying"]
