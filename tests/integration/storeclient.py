"""What the store's integration tests share: a client per replica, a Watch stream that
can be read with a deadline, etcd's errors asserted exactly, and etcdctl as a process.

Every wait polls or reads with a deadline; nothing sleeps in place of a condition. To
show that something did *not* happen (an event filtered out, a watch cancelled), the
tests write a later sentinel and check that it is the next thing seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from skiff.store.v1 import kv_pb2, rpc_pb2, rpc_pb2_grpc

Event = kv_pb2.Event
PUT, DELETE = Event.PUT, Event.DELETE
#: How long a test waits for something the cluster should do at once.
DEADLINE = 10.0


class WatchStream:
    """One bidirectional Watch call; responses are queued by a reader task."""

    def __init__(self, stub: rpc_pb2_grpc.WatchStub) -> None:
        self._call = stub.Watch()
        self._responses: asyncio.Queue[rpc_pb2.WatchResponse | BaseException] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="watch-reader")

    async def _read(self) -> None:
        try:
            while (response := await self._call.read()) is not grpc.aio.EOF:
                self._responses.put_nowait(response)
            self._responses.put_nowait(EOFError("watch stream ended"))
        except BaseException as e:  # handed to the test by next()
            self._responses.put_nowait(e)
            raise

    async def send(self, request: rpc_pb2.WatchRequest) -> None:
        await self._call.write(request)

    async def next(self, timeout: float = DEADLINE) -> rpc_pb2.WatchResponse:
        """The next response; raises what ended the stream, or TimeoutError."""
        item = await asyncio.wait_for(self._responses.get(), timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    async def create(self, key: bytes, range_end: bytes = b"", **options: Any
                     ) -> rpc_pb2.WatchResponse:
        """Ask for a watch and return the reply to it (created, perhaps also canceled)."""
        await self.send(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=key, range_end=range_end, **options)))
        response = await self.next()
        assert response.created, response
        return response

    async def cancel(self, watch_id: int) -> rpc_pb2.WatchResponse:
        await self.send(rpc_pb2.WatchRequest(
            cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id)))
        return await self.next()

    async def progress(self) -> rpc_pb2.WatchResponse:
        await self.send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
        return await self.next()

    async def events(self, count: int, *, watch_id: int | None = None,
                     timeout: float = DEADLINE) -> list[Event]:
        """Exactly the next ``count`` events (of ``watch_id``, if given), in order.

        Fails on any other response in between, and if a response overshoots ``count``.
        """
        events: list[Event] = []
        while len(events) < count:
            response = await self.next(timeout)
            assert response.events and not (response.created or response.canceled), response
            if watch_id is not None:
                assert response.watch_id == watch_id, response
            for event in response.events:
                # A response carries whole revisions: its header is the last one's.
                assert event.kv.mod_revision <= response.header.revision
            events.extend(response.events)
        assert len(events) == count, events
        return events

    async def events_by_watch(self, counts: dict[int, int], *,
                              timeout: float = DEADLINE) -> dict[int, list[Event]]:
        """Exactly ``counts[watch_id]`` next events for each of several watches on the stream."""
        events: dict[int, list[Event]] = {watch_id: [] for watch_id in counts}
        while any(len(events[w]) < n for w, n in counts.items()):
            response = await self.next(timeout)
            assert response.events and response.watch_id in events, response
            events[response.watch_id].extend(response.events)
        assert {w: len(e) for w, e in events.items()} == counts, events
        return events

    async def close(self) -> None:
        self._call.cancel()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


@dataclass
class Client:
    """The etcd services of one replica, over one channel."""

    endpoint: str
    channel: grpc.aio.Channel

    def __post_init__(self) -> None:
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)
        self._watch = rpc_pb2_grpc.WatchStub(self.channel)

    async def put(self, key: bytes, value: bytes = b"", **options: Any) -> rpc_pb2.PutResponse:
        return await self.kv.Put(rpc_pb2.PutRequest(key=key, value=value, **options),
                                 timeout=DEADLINE)

    async def get(self, key: bytes, range_end: bytes = b"", **options: Any
                  ) -> rpc_pb2.RangeResponse:
        return await self.kv.Range(rpc_pb2.RangeRequest(key=key, range_end=range_end, **options),
                                   timeout=DEADLINE)

    async def delete(self, key: bytes, range_end: bytes = b"", **options: Any
                     ) -> rpc_pb2.DeleteRangeResponse:
        return await self.kv.DeleteRange(
            rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end, **options),
            timeout=DEADLINE)

    async def txn(self, compare: Sequence[rpc_pb2.Compare] = (),
                  success: Sequence[rpc_pb2.RequestOp] = (),
                  failure: Sequence[rpc_pb2.RequestOp] = ()) -> rpc_pb2.TxnResponse:
        return await self.kv.Txn(rpc_pb2.TxnRequest(compare=compare, success=success,
                                                    failure=failure), timeout=DEADLINE)

    async def values(self, key: bytes, range_end: bytes = b"", **options: Any
                     ) -> list[tuple[bytes, bytes]]:
        """(key, value) of every key a Range returns, in its order."""
        return [(kv.key, kv.value) for kv in (await self.get(key, range_end, **options)).kvs]

    async def revision(self) -> int:
        """The store's current revision, read linearizably."""
        return (await self.get(b"\0", count_only=True)).header.revision

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[WatchStream]:
        stream = WatchStream(self._watch)
        try:
            yield stream
        finally:
            await stream.close()


@contextlib.asynccontextmanager
async def connect(endpoint: str) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        yield Client(endpoint, channel)


@contextlib.asynccontextmanager
async def connect_all(endpoints: Sequence[str]) -> AsyncIterator[list[Client]]:
    """One client per endpoint, in the same order."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(connect(e)) for e in endpoints]


# ------------------------------------------------------------------ request pieces

def put_op(key: bytes, value: bytes = b"", **options: Any) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, **options))


def range_op(key: bytes, range_end: bytes = b"", **options: Any) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key, range_end=range_end,
                                                                **options))


def delete_op(key: bytes, range_end: bytes = b"", **options: Any) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
        key=key, range_end=range_end, **options))


def compare(key: bytes, target: str, result: str, operand: Any,
            range_end: bytes = b"") -> rpc_pb2.Compare:
    """``compare(b"k", "VERSION", "GREATER", 2)``: etcd's Compare by enum names."""
    field = {"VALUE": "value", "VERSION": "version", "CREATE": "create_revision",
             "MOD": "mod_revision", "LEASE": "lease"}[target]
    return rpc_pb2.Compare(key=key, range_end=range_end, target=getattr(rpc_pb2.Compare, target),
                           result=getattr(rpc_pb2.Compare, result), **{field: operand})


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for every key starting with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def summary(events: Sequence[Event]) -> list[tuple[str, bytes, bytes, int]]:
    """(type, key, value, mod_revision) of each event: what tests compare exactly."""
    return [(Event.EventType.Name(e.type), e.kv.key, e.kv.value, e.kv.mod_revision)
            for e in events]


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode, message: str) -> None:
    """``call`` fails with exactly this gRPC status and etcd's message."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert (caught.value.code(), caught.value.details()) == (code, message)


# ----------------------------------------------------------------------- etcdctl

ETCDCTL = shutil.which("etcdctl")
needs_etcdctl = pytest.mark.skipif(
    ETCDCTL is None, reason="etcdctl is not on PATH (Debian package etcd-client provides it)")


def etcdctl_argv(endpoint: str, *args: str) -> list[str]:
    """``etcdctl`` against ``endpoint`` (or several, comma-separated) with ``args``."""
    assert ETCDCTL is not None
    return [ETCDCTL, f"--endpoints={endpoint}", "--command-timeout=10s", *args]


ETCDCTL_ENV = {**os.environ, "ETCDCTL_API": "3"}


async def run_etcdctl(endpoint: str, *args: str, stdin: bytes | None = None
                      ) -> tuple[int, str, str]:
    """Run ``etcdctl`` to its end: (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *etcdctl_argv(endpoint, *args), env=ETCDCTL_ENV, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), DEADLINE)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def etcdctl(endpoint: str, *args: str, stdin: bytes | None = None) -> str:
    """Run ``etcdctl``; its stdout, after checking that it succeeded."""
    status, out, err = await run_etcdctl(endpoint, *args, stdin=stdin)
    assert status == 0, (args, out, err)
    return out
