"""Events: what components tell users about objects (``Scheduled``, ``FailedScheduling``).

An :class:`EventRecorder` writes core/v1 Events in the involved object's namespace,
in the background so a component never waits on its own bookkeeping. As Kubernetes'
correlator does, a repeat of the same event (same object, type, reason and message)
within the aggregation window bumps the stored Event's ``count`` and
``lastTimestamp`` instead of creating another object. The queue of pending writes is
bounded: under a flood, events are dropped (and counted), never the component.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from skiff.api import errors
from skiff.api.kinds import for_message
from skiff.api.v1 import core_pb2, meta_pb2
from skiff.client.client import Client
from skiff.logging import get_logger
from skiff.tasks import spawn

log = get_logger("skiff.client.events")

NORMAL, WARNING = "Normal", "Warning"
#: Pending writes kept before new events are dropped.
MAX_PENDING = 1000
#: Distinct recent events remembered for aggregation.
MAX_REMEMBERED = 4096
#: A repeat after this many seconds is a new Event rather than a bump of the old one.
AGGREGATION_WINDOW = 600.0


@dataclass(frozen=True)
class _Identity:
    namespace: str
    uid: str
    type: str
    reason: str
    message: str


@dataclass
class _Remembered:
    name: str
    count: int
    first: Timestamp
    seen_at: float


def reference(obj: Message) -> meta_pb2.ObjectReference:
    """An ObjectReference to ``obj`` (kind and apiVersion from the kinds table)."""
    kind = for_message(obj)
    md = obj.metadata  # type: ignore[attr-defined]
    return meta_pb2.ObjectReference(kind=kind.kind, api_version=kind.api_version,
                                    namespace=md.namespace, name=md.name, uid=md.uid,
                                    resource_version=md.resource_version)


class EventRecorder:
    """Records Events for one component (and host), writing them in the background."""

    def __init__(self, client: Client, component: str, *, host: str = "") -> None:
        self.client = client
        self.component = component
        self.host = host
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[_Identity, meta_pb2.ObjectReference]] = (
            asyncio.Queue(MAX_PENDING))
        self._recent: OrderedDict[_Identity, _Remembered] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    def event(self, obj: Message, type_: str, reason: str, message: str) -> None:
        """Record an event about ``obj`` (returns at once; written in the background)."""
        ref = reference(obj)
        identity = _Identity(ref.namespace or "default", ref.uid, type_, reason, message)
        try:
            self._queue.put_nowait((identity, ref))
        except asyncio.QueueFull:
            self.dropped += 1
            return
        if self._task is None or self._task.done():
            self._task = spawn(self._drain(), name=f"events {self.component}")

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was recorded so far is written (tests, shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)

    async def _drain(self) -> None:
        while not self._queue.empty():
            identity, ref = await self._queue.get()
            try:
                await self._write(identity, ref)
            except errors.APIError as e:
                log.info("event not written", reason=identity.reason, object=ref.name,
                         error=str(e))
            finally:
                self._queue.task_done()

    async def _write(self, identity: _Identity, ref: meta_pb2.ObjectReference) -> None:
        now = Timestamp()
        now.GetCurrentTime()
        remembered = self._recent.get(identity)
        if remembered is not None and time.monotonic() - remembered.seen_at < AGGREGATION_WINDOW:
            remembered.count += 1
            remembered.seen_at = time.monotonic()
            self._recent.move_to_end(identity)
            if await self._bump(identity, remembered, now):
                return
        name = f"{ref.name}.{uuid.uuid4().hex[:16]}"
        event = core_pb2.Event(
            api_version="v1", kind="Event",
            metadata=meta_pb2.ObjectMeta(name=name, namespace=identity.namespace),
            involved_object=ref, reason=identity.reason, message=identity.message,
            type=identity.type, count=1, first_timestamp=now, last_timestamp=now,
            source=core_pb2.EventSource(component=self.component, host=self.host),
            reporting_component=self.component, reporting_instance=self.host)
        await self.client.events.create(event)
        self._recent[identity] = _Remembered(name, 1, now, time.monotonic())
        while len(self._recent) > MAX_REMEMBERED:
            self._recent.popitem(last=False)

    async def _bump(self, identity: _Identity, remembered: _Remembered,
                    now: Timestamp) -> bool:
        """Count a repeat on the stored Event; False if it is gone (then create anew)."""
        try:
            event = await self.client.events.get(remembered.name, identity.namespace)
        except errors.NotFound:
            del self._recent[identity]
            return False
        event.count = max(event.count + 1, remembered.count)  # type: ignore[attr-defined]
        event.last_timestamp.CopyFrom(now)  # type: ignore[attr-defined]
        with contextlib.suppress(errors.Conflict):
            await self.client.events.update(event)
        return True
