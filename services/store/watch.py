"""Watch streams, served from the replica's own applied history.

A watcher is a cursor: the next revision it must see. Nothing is pushed into
per-watcher buffers; after each applied batch the stream's sender reads the store's
event history from each cursor on, sends what matches, and advances the cursor. So a
slow client never makes the writer wait or buffer without bound (its cursor just
lags, until compaction passes it and the watch is cancelled with compact_revision,
as etcd does), and since revisions are identical on every replica, a client whose
replica died resumes on another from its last revision with nothing lost or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from services.store import errors
from services.store.errors import EtcdError
from services.store.mvcc import RevisionEvents
from services.store.raft import Replica
from skiff.store.v1 import kv_pb2, rpc_pb2

Event = kv_pb2.Event
WatchCreateRequest = rpc_pb2.WatchCreateRequest

#: Revisions read per cursor per pass, and the size at which a response is cut.
MAX_REVISIONS_PER_READ = 1000
MAX_RESPONSE_BYTES = 1024 * 1024
#: What etcd answers as the id of a watch it could not create, or of a progress reply.
INVALID_WATCH_ID = -1


@dataclass
class Watcher:
    """One watch on a stream: its range, options, and the next revision it must see."""

    watch_id: int
    key: bytes
    range_end: bytes
    next_revision: int
    prev_kv: bool
    no_put: bool
    no_delete: bool
    progress_notify: bool

    def signature(self) -> tuple[object, ...]:
        """What this watcher's next responses depend on, besides the store's state."""
        return (self.watch_id, self.key, self.range_end, self.next_revision, self.prev_kv,
                self.no_put, self.no_delete)

    def matches(self, kv: kv_pb2.KeyValue, is_delete: bool) -> bool:
        """Whether this watcher reports a change of ``kv`` (a pure function of the watch)."""
        if (self.no_delete if is_delete else self.no_put):
            return False
        key = kv.key
        if not self.range_end:
            return key == self.key
        if self.range_end == b"\0":
            return key >= self.key
        return self.key <= key < self.range_end

    def events(self, revisions: list[RevisionEvents]) -> list[Event]:
        """This watcher's events among ``revisions``, in order."""
        out = []
        for revision in revisions:
            for kv, prev in revision.changes:
                is_delete = kv.version == 0
                if self.matches(kv, is_delete):
                    event = Event(type=Event.DELETE if is_delete else Event.PUT, kv=kv)
                    if self.prev_kv and prev is not None:
                        event.prev_kv.CopyFrom(prev)
                    out.append(event)
        return out


@dataclass(frozen=True)
class Shared:
    """A watcher's serialized event responses, and where its cursor goes after them."""

    responses: list[bytes]
    next_revision: int


class SharedResponses:
    """Event responses computed since the last applied batch, shared across streams.

    Watchers of the same range with the same options and cursor (typically every
    up-to-date client of one prefix, each on its own stream with watch id 0) get
    byte-identical responses: they are built and serialized once per applied batch,
    not once per stream. Cleared on every apply, since the store's state moved on.
    """

    def __init__(self, replica: Replica) -> None:
        self._entries: dict[tuple[object, ...], Shared] = {}
        replica.add_applied_listener(self._entries.clear)

    def get(self, signature: tuple[object, ...]) -> Shared | None:
        return self._entries.get(signature)

    def put(self, signature: tuple[object, ...], shared: Shared) -> None:
        self._entries[signature] = shared


class WatchStream:
    """Serves one client's Watch stream: its create, cancel and progress requests."""

    def __init__(self, replica: Replica, header: Callable[[rpc_pb2.ResponseHeader], None], *,
                 progress_interval: float, shared: SharedResponses) -> None:
        self._replica = replica
        self._shared = shared
        self._header = header
        self._progress_interval = progress_interval
        self._watchers: dict[int, Watcher] = {}
        self._next_id = 0
        self._control: list[rpc_pb2.WatchResponse] = []
        self._progress_requested = False
        self._wake = asyncio.Event()

    async def serve(self, requests: AsyncIterator[rpc_pb2.WatchRequest]
                    ) -> AsyncIterator[rpc_pb2.WatchResponse | bytes]:
        """Yield the stream's responses until the client goes away.

        Event responses come as serialized bytes (shared with other streams watching
        the same range, see :class:`SharedResponses`); the server's serializer passes
        bytes through.
        """
        reader = asyncio.create_task(self._read(requests), name="watch-reader")
        loop = asyncio.get_running_loop()
        wake = self._wake.set
        self._replica.add_applied_listener(wake)
        # Progress notifications follow a clock of their own, as etcd's ticker: activity
        # elsewhere in the store must not postpone them (it is what they report on).
        next_progress = loop.time() + self._progress_interval
        timer = loop.call_at(next_progress, wake)
        try:
            # A client that stops sending (half-closes) still gets its watches' events, as
            # from etcd; only a failed read of its requests ends the stream from here.
            while not _failed(reader) or self._control:
                for response in self._drain():
                    yield response
                if loop.time() >= next_progress:
                    next_progress = loop.time() + self._progress_interval
                    timer = loop.call_at(next_progress, wake)
                    for response in self._progress_notifications():
                        yield response
                await self._wake.wait()
                self._wake.clear()
        finally:
            timer.cancel()
            self._replica.remove_applied_listener(wake)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read(self, requests: AsyncIterator[rpc_pb2.WatchRequest]) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("request_union")
                if kind == "create_request":
                    self._create(request.create_request)
                elif kind == "cancel_request":
                    self._cancel(request.cancel_request.watch_id)
                elif kind == "progress_request":
                    self._progress_requested = True
                self._wake.set()
        finally:
            self._wake.set()

    def _respond(self, **fields: object) -> rpc_pb2.WatchResponse:
        response = rpc_pb2.WatchResponse(**fields)
        self._header(response.header)
        return response

    def _create(self, request: WatchCreateRequest) -> None:
        key = request.key or b"\0"  # etcd: an empty key is the smallest key
        range_end = request.range_end
        if request.start_revision < 0:
            self._control.append(self._respond(
                watch_id=INVALID_WATCH_ID, created=True, canceled=True,
                cancel_reason=errors.COMPACTED.message.removeprefix("etcdserver: ")))
            return
        if range_end and range_end != b"\0" and key >= range_end:
            self._control.append(self._respond(
                watch_id=INVALID_WATCH_ID, created=True, canceled=True,
                cancel_reason="mvcc: watcher range is empty"))
            return
        watch_id = request.watch_id
        if watch_id == 0:
            while self._next_id in self._watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self._watchers:
            self._control.append(self._respond(
                watch_id=INVALID_WATCH_ID, created=True, canceled=True,
                cancel_reason="mvcc: duplicate watch ID provided on the WatchStream"))
            return
        filters = set(request.filters)
        # One read of the revision for the cursor and the reply: raft applies in another
        # thread, and a reply claiming a later revision than the cursor starts after
        # would tell a "from now" client that the events in between were sent (one
        # resuming elsewhere from there would skip them).
        current = self._replica.store.revision
        self._watchers[watch_id] = Watcher(
            watch_id=watch_id, key=key, range_end=range_end,
            next_revision=request.start_revision or current + 1,
            prev_kv=request.prev_kv, no_put=WatchCreateRequest.NOPUT in filters,
            no_delete=WatchCreateRequest.NODELETE in filters,
            progress_notify=request.progress_notify,
        )
        self._control.append(self._respond(watch_id=watch_id, created=True,
                                           header=rpc_pb2.ResponseHeader(revision=current)))

    def _cancel(self, watch_id: int) -> None:
        if self._watchers.pop(watch_id, None) is not None:
            self._control.append(self._respond(watch_id=watch_id, canceled=True))

    def _drain(self) -> list[rpc_pb2.WatchResponse | bytes]:
        """Control replies first, then every watcher's new events, then a progress reply."""
        out: list[rpc_pb2.WatchResponse | bytes] = list(self._control)
        self._control = []
        for watcher in list(self._watchers.values()):
            out.extend(self._catch_up(watcher))
        if self._progress_requested:
            # One read of the revision for the check and the reply: raft applies in
            # another thread, and a later read could claim a revision whose events
            # this stream has not sent yet (a client would then skip them).
            current = self._replica.store.revision
            if all(w.next_revision > current for w in self._watchers.values()):
                self._progress_requested = False
                out.append(self._progress(INVALID_WATCH_ID, current))
        return out

    def _progress(self, watch_id: int, revision: int) -> rpc_pb2.WatchResponse:
        """A progress notification: every event up to ``revision`` was sent."""
        return self._respond(watch_id=watch_id,
                             header=rpc_pb2.ResponseHeader(revision=revision))

    def _catch_up(self, watcher: Watcher) -> list[bytes]:
        store = self._replica.store
        if watcher.next_revision > store.revision:
            return []
        signature = watcher.signature()
        shared = self._shared.get(signature)
        if shared is not None:
            watcher.next_revision = shared.next_revision
            return shared.responses
        responses: list[bytes] = []
        while watcher.next_revision <= store.revision:
            try:
                with self._replica.lock:
                    revisions = store.events_since(watcher.next_revision,
                                                   max_revisions=MAX_REVISIONS_PER_READ)
            except EtcdError:  # compacted past the cursor: etcd cancels the watch
                del self._watchers[watcher.watch_id]
                responses.append(self._respond(
                    watch_id=watcher.watch_id, canceled=True,
                    compact_revision=store.compact_revision).SerializeToString())
                return responses
            if not revisions:
                break
            watcher.next_revision = revisions[-1].revision + 1
            responses.extend(r.SerializeToString()
                             for r in self._event_responses(watcher, revisions))
        self._shared.put(signature, Shared(responses, watcher.next_revision))
        return responses

    def _event_responses(self, watcher: Watcher,
                         revisions: list[RevisionEvents]) -> list[rpc_pb2.WatchResponse]:
        # Cut between revisions only: a revision's events always arrive together.
        out: list[rpc_pb2.WatchResponse] = []
        events: list[Event] = []
        size = 0
        for revision in revisions:
            batch = watcher.events([revision])
            if not batch:
                continue
            events.extend(batch)
            size += sum(e.ByteSize() for e in batch)
            if size >= MAX_RESPONSE_BYTES:
                out.append(self._events_response(watcher, events, revision.revision))
                events, size = [], 0
        if events:
            out.append(self._events_response(watcher, events, revisions[-1].revision))
        return out

    def _events_response(self, watcher: Watcher, events: list[Event],
                         revision: int) -> rpc_pb2.WatchResponse:
        response = self._respond(watch_id=watcher.watch_id, events=events)
        response.header.revision = revision
        return response

    def _progress_notifications(self) -> list[rpc_pb2.WatchResponse]:
        current = self._replica.store.revision
        return [self._progress(w.watch_id, current) for w in self._watchers.values()
                if w.progress_notify and w.next_revision > current]


def _failed(task: asyncio.Task[None]) -> bool:
    return task.done() and task.exception() is not None
