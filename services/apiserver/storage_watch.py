"""A watch of a store prefix that survives its replica (Kubernetes' ``storage/etcd3``
``watcher.go``): :class:`StoreWatch` follows the store's Watch stream and, when the
replica dies, resumes on the next endpoint from the last revision seen + 1, so nothing
is lost or seen twice. Progress is requested every ``progress_interval`` (and on
demand), so even a quiet prefix reports how far the store has got, but only from a
store that answers it in order with the events
(:func:`~services.apiserver.storage.orders_progress`); elsewhere a progress
notification only says the stream is alive. Made by
:meth:`~services.apiserver.storage.Storage.watch`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from services.apiserver.storage_types import (
    RETRYABLE,
    Change,
    WatchBatch,
    backoff,
    key_bytes,
    map_error,
    prefix_end,
    raise_if_cancelling,
)
from skiff.api import errors
from skiff.logging import get_logger
from skiff.store.v1 import kv_pb2, rpc_pb2, rpc_pb2_grpc
from skiff.tasks import spawn

if TYPE_CHECKING:  # the client makes watches: importing it here would be circular
    from services.apiserver.storage import Storage

log = get_logger("skiff.apiserver.storage")


class StoreWatch:
    """One watch of a prefix, kept alive across replicas: an async iterator of batches.

    Invariant: ``_next_revision`` is the first revision not yet reported; every batch
    yielded covers revisions below it, so a new stream started there (on any replica)
    continues exactly where the last one stopped. It moves past an event's revision
    only once that event was received, and past a progress notification's only when
    the store answers progress in order with events (``progress_ordered``, learnt from
    the store's version on each stream); elsewhere a progress answer only shows that
    the stream is alive.

    Ends by raising ``Gone`` when the store compacted past ``_next_revision`` (the
    caller must re-list), or ``Unavailable`` when no replica served the watch for the
    storage's ``timeout``. ``aclose()`` ends it from the consumer's side.
    """

    def __init__(self, storage: Storage, prefix: str, start_revision: int, *,
                 progress_interval: float) -> None:
        self._storage = storage
        self.prefix = prefix
        self._next_revision = start_revision
        self._progress_interval = progress_interval
        self._stall_timeout = max(storage.stall_timeout, 2 * progress_interval)
        self._progress_wanted = asyncio.Event()
        self.endpoint: str | None = None
        #: Whether the current stream's store orders progress with events (None: no stream).
        self.progress_ordered: bool | None = None
        self._batches = self._run()

    @property
    def next_revision(self) -> int:
        return self._next_revision

    def request_progress(self) -> None:
        """Ask the store now (not at the next interval) how far the prefix has got."""
        self._progress_wanted.set()

    def __aiter__(self) -> StoreWatch:
        return self

    async def __anext__(self) -> WatchBatch:
        return await self._batches.__anext__()

    async def aclose(self) -> None:
        await self._batches.aclose()

    async def _run(self) -> AsyncIterator[WatchBatch]:
        storage = self._storage
        loop = asyncio.get_running_loop()
        failures = 0
        outage_since: float | None = None
        storage._watches.add(self)
        try:
            while True:
                endpoint = storage.endpoint
                self.endpoint = endpoint
                try:
                    # aclosing: when the consumer stops, the stream's call is cancelled now,
                    # not whenever the generator happens to be collected.
                    async with contextlib.aclosing(self._stream(endpoint)) as stream:
                        async for batch in stream:
                            failures, outage_since = 0, None
                            if batch is not None:
                                yield batch
                    reason = "stream ended"
                except _StreamBroken as e:
                    reason = str(e)
                except grpc.aio.AioRpcError as e:
                    raise_if_cancelling(e)
                    if e.code() not in RETRYABLE and e.code() != grpc.StatusCode.CANCELLED:
                        raise map_error(e) from None
                    reason = f"{e.code().name}: {e.details()}"
                self.endpoint = None
                self.progress_ordered = None
                failures += 1
                now = loop.time()
                outage_since = now if outage_since is None else outage_since
                storage._fail_over(endpoint, reason)
                delay = backoff(failures)
                if now + delay - outage_since >= storage.timeout:
                    raise errors.Unavailable(
                        f"store unavailable: watch of {self.prefix} found no replica to "
                        f"serve it for {storage.timeout:g}s (last: {reason})")
                log.info("store watch broke, resuming", prefix=self.prefix, endpoint=endpoint,
                         reason=reason, next_revision=self._next_revision)
                await asyncio.sleep(delay)
        finally:
            storage._watches.discard(self)
            self.endpoint = None
            self.progress_ordered = None

    async def _stream(self, endpoint: str) -> AsyncIterator[WatchBatch | None]:
        """One Watch stream on ``endpoint``: batches, or None for "alive, nothing new"."""
        call = rpc_pb2_grpc.WatchStub(self._storage.channel(endpoint)).Watch()
        prefix = self.prefix
        create = rpc_pb2.WatchCreateRequest(
            key=key_bytes(prefix), range_end=key_bytes(prefix_end(prefix)),
            start_revision=max(self._next_revision, 0), prev_kv=True, progress_notify=True)
        progress: asyncio.Task[None] | None = None
        try:
            self.progress_ordered = await self._storage.orders_progress(
                endpoint, timeout=self._stall_timeout)
            await _write(call, rpc_pb2.WatchRequest(create_request=create))
            progress = spawn(self._request_progress(call), name=f"watch-progress {prefix}")
            while True:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a
                # cancellation that lands as the read completes, and the watch (and the
                # cache that owns it) then never stops.
                try:
                    async with asyncio.timeout(self._stall_timeout):
                        response = await call.read()
                except TimeoutError:
                    raise _StreamBroken(f"no answer for {self._stall_timeout:g}s") from None
                if response is grpc.aio.EOF:
                    raise _StreamBroken("the store ended the stream")
                if response.canceled:
                    if response.compact_revision:
                        raise errors.Gone(
                            f"too old resource version: {self._next_revision - 1} "
                            f"({response.compact_revision})")
                    raise _StreamBroken(f"watch canceled: {response.cancel_reason}")
                yield self._batch(response)
        finally:
            if progress is not None:
                progress.cancel()
            call.cancel()

    def _batch(self, response: rpc_pb2.WatchResponse) -> WatchBatch | None:
        """Advance past ``response``; the batch it reports, if it moves anything."""
        revision = response.header.revision
        if response.created:
            if self._next_revision <= 0:
                # "From now": pin it, so that a resumed stream knows where now was.
                self._next_revision = revision + 1
            return None
        if not response.events:
            # Progress: every change up to ``revision`` was sent. A replica that lags
            # behind what an earlier one reported says nothing new: never go backwards.
            # From a store that may send it ahead of those changes it proves only that
            # the stream is alive.
            if revision < self._next_revision or not self.progress_ordered:
                return None
            self._next_revision = revision + 1
            return WatchBatch(revision=revision)
        # Events: complete up to the last one, not to the header's revision. etcd sends a
        # watcher catching up its backlog in responses of at most 1,000 revisions, each
        # with the store's *current* revision in the header: taken as progress, it would
        # make the next responses look like changes already seen (and a stream resumed
        # from it skip them). Only a response without events reports progress.
        changes = tuple(_change(event) for event in response.events)
        revision = changes[-1].mod_revision
        self._next_revision = revision + 1
        return WatchBatch(revision=revision, changes=changes)

    async def _request_progress(self, call: Any) -> None:
        """Every interval (or when asked), ask the stream for a progress notification."""
        request = rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._progress_interval):
                    await self._progress_wanted.wait()
            self._progress_wanted.clear()
            try:
                await _write(call, request)
            except _StreamBroken:
                return  # the reader sees the same broken stream and reconnects


class _StreamBroken(Exception):
    """The watch stream failed in a way another replica may not: reconnect."""


async def _write(call: Any, request: rpc_pb2.WatchRequest) -> None:
    try:
        await call.write(request)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as e:
        raise _StreamBroken(f"write failed: {e!r}") from None


def _change(event: kv_pb2.Event) -> Change:
    is_delete = event.type == kv_pb2.Event.DELETE
    return Change(type="DELETE" if is_delete else "PUT", key=event.kv.key.decode(),
                  value=event.kv.value,
                  prev_value=event.prev_kv.value if event.HasField("prev_kv") else None,
                  mod_revision=event.kv.mod_revision)
