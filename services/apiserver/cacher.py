"""The watch cache: one store watch per kind, fanned out to every API watcher.

Kubernetes' ``cacher``, for Skiff. The apiserver keeps one :class:`Cacher` per kind. It
lists the kind's prefix once, then follows one
:class:`~services.apiserver.storage_watch.StoreWatch` from the list's revision + 1, and
from that single stream it keeps:

- the current objects (key -> decoded object, ``metadata.resource_version`` set), from
  which lists and gets are answered without touching the store;
- ``revision``: every change up to it has been applied (and dispatched). Progress
  notifications advance it on a quiet prefix, so a client's resource version from
  another kind's write becomes "fresh" here too (:meth:`Cacher.wait_fresh`);
- a ring of the last ``capacity`` events (:class:`EventRing`), from which a watch that
  starts at a resource version is replayed; one older than the ring is ``Gone``
  (Kubernetes' 410), and the client re-lists.

Fan-out: each store change is decoded once into a :class:`CacheEvent`; each watcher
filters it (:func:`translate`, a pure function: Kubernetes' rules for objects that
start or stop matching a selector) and takes it into a bounded buffer without
awaiting anything. A watcher whose buffer is full has fallen behind: it is
terminated (its iterator ends after what it holds, and its client re-watches from
the last version it saw), so one slow client never slows the dispatcher or the
others. Everything runs on the event loop; nothing here blocks.

Objects handed out (by ``list``, ``get`` and watch events) are shared between all
callers and the cache itself: they must be treated as read-only. Copy before
changing one.

If the store watch fails with ``Gone`` (the cache fell behind a compaction, say after a
long store outage), the cache re-lists and starts over, terminating its watchers:
they re-watch, as Kubernetes' clients do. So does a store watch that delivers a change
at or below a revision it had already reported (:class:`HistoryHole`): the store broke
its word, a change in between may be missing, and only a list can tell; it is never
skipped silently. If the store is merely unavailable, the
cache keeps serving what it has and resumes the watch where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from google.protobuf.message import DecodeError, Message
from sortedcontainers import SortedDict

from services.apiserver.storage import Storage
from services.apiserver.storage_types import (
    Change,
    WatchBatch,
    decode,
    key_after,
    kind_prefix,
    prefix_end,
)
from services.apiserver.storage_watch import StoreWatch
from skiff.api import errors
from skiff.api.kinds import Kind
from skiff.logging import get_logger
from skiff.tasks import spawn

_log = get_logger("skiff.apiserver.cacher")

ADDED, MODIFIED, DELETED, BOOKMARK = "ADDED", "MODIFIED", "DELETED", "BOOKMARK"
CacheEventType = Literal["ADDED", "MODIFIED", "DELETED"]
Predicate = Callable[[Message], bool]

#: Events a watcher may hold undelivered before it counts as fallen behind.
DEFAULT_QUEUE_SIZE = 1000
#: Keys read per page when (re-)listing the kind.
LIST_PAGE_SIZE = 500
#: Longest wait between attempts to list or watch while the store is down.
RETRY_CAP = 5.0


def everything(obj: Message) -> bool:
    """The predicate that matches every object."""
    return True


# ------------------------------------------------------------------------- values


@dataclass(frozen=True)
class WatchEvent:
    """What a watcher receives: ADDED, MODIFIED, DELETED or BOOKMARK, and the object.

    ``encoded`` is shared by every watcher's event made from one :class:`CacheEvent`:
    the API's encoding of it by type, filled in by the first watcher to send it (see
    ``Registry.watch``), so the object is serialized once, not once per watcher.
    """

    type: str
    object: Message
    encoded: dict[str, bytes] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CacheEvent:
    """One change of one object, as the cache saw it.

    ``object`` is the new state; for DELETED it is the last state, with
    resource_version set to the deletion's revision (as Kubernetes does).
    ``prev_object`` is the state before (None for ADDED).
    """

    type: CacheEventType
    key: str
    object: Message
    prev_object: Message | None
    revision: int
    #: Watch events made from this one, encoded, by type (see WatchEvent.encoded).
    encoded: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)


class HistoryHole(Exception):
    """The store watch delivered a change at or below a revision it had already
    reported complete: the cache's history may have a hole (it re-lists)."""


# ---------------------------------------------------------------- pure decisions


def translate(event: CacheEvent, matches: Predicate) -> WatchEvent | None:
    """What a watcher filtering with ``matches`` sees of ``event`` (pure).

    Kubernetes' rules: a modification that makes an object stop matching is, to this
    watcher, its deletion (of the new state); one that makes it start matching is its
    addition; one that touches only objects it does not match is nothing.
    """
    if event.type == MODIFIED:
        now = matches(event.object)
        before = event.prev_object is not None and matches(event.prev_object)
        if now:
            return WatchEvent(MODIFIED if before else ADDED, event.object, event.encoded)
        return WatchEvent(DELETED, event.object, event.encoded) if before else None
    if not matches(event.object):
        return None
    return WatchEvent(event.type, event.object, event.encoded)


class EventRing:
    """The last ``capacity`` events, oldest first, and what can be replayed from them.

    Invariant: every event with revision > ``floor`` is held, so a watch that starts
    at a revision N >= ``floor`` can be replayed exactly (events after N); one that
    starts below ``floor`` cannot, and is Gone. ``floor`` starts at the revision of
    the list the cache was built from and rises to the revision of each evicted event
    (a transaction's events share a revision: evicting one of them makes the whole
    revision unreplayable).
    """

    def __init__(self, capacity: int, floor: int) -> None:
        if capacity < 1:
            raise ValueError("an event ring holds at least one event")
        self.capacity = capacity
        self.floor = floor
        # Events live in _events[_start:]; evicted ones are dropped in bulk, not one by
        # one (list.pop(0) would copy the whole ring for every event).
        self._events: list[CacheEvent] = []
        self._start = 0

    def __len__(self) -> int:
        return len(self._events) - self._start

    @property
    def oldest_revision(self) -> int | None:
        """The revision of the oldest event held, if any."""
        return self._events[self._start].revision if len(self) else None

    def append(self, event: CacheEvent) -> None:
        """Add ``event`` (revisions never go down), evicting the oldest if full."""
        self._events.append(event)
        if len(self) > self.capacity:
            self.floor = max(self.floor, self._events[self._start].revision)
            self._start += 1
            if self._start >= self.capacity:
                del self._events[:self._start]
                self._start = 0

    def since(self, revision: int) -> list[CacheEvent]:
        """Every event with revision > ``revision``, oldest first; Gone if evicted."""
        if revision < self.floor:
            raise errors.Gone(f"too old resource version: {revision} ({self.floor})")
        first = bisect_right(self._events, revision, lo=self._start,
                             key=lambda e: e.revision)
        return self._events[first:]


# ----------------------------------------------------------------------- watchers


class CacheWatcher:
    """One API watch on the cache: an async iterator of :class:`WatchEvent`.

    Its events come first from ``initial`` (the snapshot or replay it started with,
    not bounded: it is already in memory), then from a buffer of at most
    ``queue_size`` live events. The dispatcher only ever calls the non-blocking
    :meth:`offer` / :meth:`bookmark`; a full buffer terminates the watcher.

    Invariants: ``last_revision`` is the highest revision the client can resume from
    after reading everything handed over; once ``done`` is set nothing more is
    added, and the iterator ends when both queues are empty.
    """

    def __init__(self, *, matches: Predicate, key_prefix: str, initial: Iterable[WatchEvent],
                 after: int, allow_bookmarks: bool = False,
                 queue_size: int = DEFAULT_QUEUE_SIZE,
                 on_close: Callable[[CacheWatcher], None] | None = None) -> None:
        self.matches = matches
        self.key_prefix = key_prefix
        self.allow_bookmarks = allow_bookmarks
        self.queue_size = queue_size
        #: Live events at or below ``after`` are already in ``initial`` (or the client
        #: asked to start past them).
        self.after = after
        self.last_revision = after
        self.done = False
        #: Why the watcher ended from the server's side (None: it did not, or the
        #: client closed it).
        self.terminated: str | None = None
        self.dispatched = 0
        self._initial: deque[WatchEvent] = deque(initial)
        self._buffer: deque[WatchEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._on_close = on_close

    # ---------------------------------------------------- the dispatcher's side

    def offer(self, event: CacheEvent) -> bool:
        """Take ``event`` if this watcher wants it; never blocks. Whether it was taken."""
        if (self.done or event.revision <= self.after
                or not event.key.startswith(self.key_prefix)):
            return False
        translated = translate(event, self.matches)
        if translated is None:
            return False
        if len(self._buffer) >= self.queue_size:
            self.terminate(f"fell behind: {self.queue_size} events not read")
            return False
        self._buffer.append(translated)
        self.last_revision = event.revision
        self.dispatched += 1
        self._wake()
        return True

    def bookmark(self, revision: int, obj: Message) -> bool:
        """Hand over a BOOKMARK at ``revision`` if allowed and it moves the client on.

        A bookmark is a courtesy: with a full buffer it is skipped, not fatal.
        """
        if (not self.allow_bookmarks or self.done or revision <= self.last_revision
                or len(self._buffer) >= self.queue_size):
            return False
        self._buffer.append(WatchEvent(BOOKMARK, obj))
        self.last_revision = revision
        self._wake()
        return True

    def terminate(self, reason: str) -> None:
        """End the watch from the server's side: what it holds is still delivered."""
        if self.done:
            return
        self.done = True
        self.terminated = reason
        self._detach()
        self._wake()

    # ------------------------------------------------------- the client's side

    def close(self) -> None:
        """End the watch from the client's side: nothing more is delivered."""
        self.done = True
        self._initial.clear()
        self._buffer.clear()
        self._detach()
        self._wake()

    def __aiter__(self) -> CacheWatcher:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            if self._initial:
                return self._initial.popleft()
            if self._buffer:
                return self._buffer.popleft()
            if self.done:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    @property
    def pending(self) -> int:
        """Events handed over but not read yet."""
        return len(self._initial) + len(self._buffer)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _detach(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)


# ------------------------------------------------------------------------- cacher


class Cacher:
    """The watch cache of one kind: current objects, recent events, live watchers.

    Invariants: ``_objects`` is the state of the kind's prefix at ``_revision``; every
    event up to ``_revision`` is in the ring (unless evicted) and was offered to every
    watcher registered before it. Watchers are registered and events dispatched
    without an ``await`` in between, so a watcher gets each event exactly once:
    either in its initial snapshot/replay or live.
    """

    def __init__(self, storage: Storage, kind: Kind, *, capacity: int = 10_000,
                 bookmark_interval: float = 1.0, queue_size: int = DEFAULT_QUEUE_SIZE,
                 page_size: int = LIST_PAGE_SIZE) -> None:
        self.storage = storage
        self.kind = kind
        self.prefix = kind_prefix(kind)
        self.capacity = capacity
        self.bookmark_interval = bookmark_interval
        self.queue_size = queue_size
        self.page_size = page_size
        self._log = _log.bind(kind=kind.kind)
        self._objects: SortedDict[str, Message] = SortedDict()
        self._revision = 0
        self._ring = EventRing(capacity, 0)
        self._watchers: dict[int, CacheWatcher] = {}
        # The dispatch loop iterates this snapshot; rebuilt only when watchers come
        # and go (rare next to events), not copied for every event.
        self._watcher_list: tuple[CacheWatcher, ...] = ()
        self._fresh: list[tuple[int, int, asyncio.Future[None]]] = []  # heap by revision
        self._seq = itertools.count()
        self._ready = asyncio.Event()
        self._watch: StoreWatch | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._failures = 0  # consecutive failed attempts to list or watch
        self._terminating_all = False
        #: Counters for metrics.
        self.events_received = 0
        self.events_dispatched = 0
        self.watchers_terminated = 0
        self.relists = 0

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start listing and watching; return once the first list is in (``ready``).

        The store may be down: listing is retried until it answers, so callers that
        must not wait forever wrap this in a timeout.
        """
        if not self._tasks:
            self._stopped = False
            self._tasks = [
                spawn(self._run(), name=f"cacher {self.kind.plural}"),
                spawn(self._send_bookmarks(), name=f"cacher bookmarks {self.kind.plural}"),
            ]
        await self._ready.wait()

    async def stop(self) -> None:
        """Stop watching the store; end every watcher and fail every freshness wait."""
        self._stopped = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._terminate_all("the watch cache stopped")
        for _, _, future in self._fresh:
            if not future.done():
                future.set_exception(errors.Unavailable(
                    f"the {self.kind.plural} watch cache stopped"))
        self._fresh.clear()
        self._ready.clear()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    @property
    def revision(self) -> int:
        """Every change of the kind up to this revision has been applied."""
        return self._revision

    @property
    def progress_ordered(self) -> bool:
        """Whether the store's progress notifications move ``revision`` on a quiet
        prefix (see :class:`StoreWatch`); if not, only events do, and :meth:`wait_fresh`
        for a revision of another prefix waits in vain."""
        return self._watch is not None and bool(self._watch.progress_ordered)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    @property
    def oldest_revision(self) -> int:
        """The oldest revision a watch can start from (older ones are Gone)."""
        return self._ring.floor

    # ---------------------------------------------------------------- reading

    async def wait_fresh(self, revision: int, timeout: float) -> None:
        """Return once the cache has seen ``revision``; Unavailable after ``timeout``."""
        if self.ready and self._revision >= revision:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._fresh, (revision, next(self._seq), future))
        if self._watch is not None:
            # Do not wait for the next progress tick: ask the store how far it got now.
            self._watch.request_progress()
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise errors.Unavailable(
                f"too large resource version: {revision}, the {self.kind.plural} watch cache "
                f"is at {self._revision} after waiting {timeout:g}s") from None

    def list(self, predicate: Predicate | None = None, namespace: str = ""
             ) -> tuple[list[Message], int]:
        """The objects (of ``namespace``, if given) that match, in key order, and the
        cache's revision (the list's resource version)."""
        self._require_ready()
        matches = predicate or everything
        prefix = kind_prefix(self.kind, namespace)
        if prefix == self.prefix:
            objects = self._objects.values()
        else:
            keys = self._objects.irange(prefix, prefix_end(prefix), inclusive=(True, False))
            objects = [self._objects[k] for k in keys]
        return [obj for obj in objects if matches(obj)], self._revision

    def get(self, key: str) -> Message | None:
        """The object at ``key`` as of ``revision``, or None."""
        self._require_ready()
        return self._objects.get(key)

    def watch(self, *, start_revision: int | None = None, predicate: Predicate | None = None,
              namespace: str = "", allow_bookmarks: bool = False) -> CacheWatcher:
        """A watcher of the objects (of ``namespace``) that match ``predicate``.

        ``start_revision`` None or 0: an ADDED for each matching object, then every
        change. N > 0: every change after N (from the ring, then live); ``Gone`` if
        the ring no longer reaches back to N. N ahead of the cache is allowed: the
        watcher simply gets the changes after N (callers that must not wait for them
        call :meth:`wait_fresh` first).
        """
        self._require_ready()
        matches = predicate or everything
        prefix = kind_prefix(self.kind, namespace)
        initial: list[WatchEvent]
        if not start_revision:
            after = self._revision
            initial = [WatchEvent(ADDED, obj)
                       for obj in self.list(matches, namespace)[0]]
        else:
            after = max(start_revision, self._revision)
            initial = [translated for event in self._ring.since(start_revision)
                       if event.key.startswith(prefix)
                       and (translated := translate(event, matches)) is not None]
        watcher = CacheWatcher(matches=matches, key_prefix=prefix, initial=initial,
                               after=after, allow_bookmarks=allow_bookmarks,
                               queue_size=self.queue_size, on_close=self._forget)
        self._watchers[id(watcher)] = watcher
        self._watcher_list = tuple(self._watchers.values())
        return watcher

    def _require_ready(self) -> None:
        if not self.ready:
            raise errors.Unavailable(f"the {self.kind.plural} watch cache is not ready yet")

    def _forget(self, watcher: CacheWatcher) -> None:
        if self._watchers.pop(id(watcher), None) is not None:
            self._watcher_list = tuple(self._watchers.values())
            if watcher.terminated is not None:
                self.watchers_terminated += 1
                if not self._terminating_all:  # those are logged once, in bulk
                    self._log.info("watcher terminated", reason=watcher.terminated,
                                   watchers=len(self._watchers))

    def _terminate_all(self, reason: str) -> None:
        watchers = self._watcher_list
        self._terminating_all = True
        try:
            for watcher in watchers:
                watcher.terminate(reason)
        finally:
            self._terminating_all = False
        if watchers:
            self._log.info("watchers terminated", reason=reason, count=len(watchers))

    # ------------------------------------------------------ following the store

    async def _run(self) -> None:
        """List, then watch from the list's revision; re-list after Gone. Forever."""
        need_list = True
        while not self._stopped:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                await self._follow()
            except errors.Gone as e:
                # The store compacted past us: our history has a hole. Start over.
                self._log.warning("watch cache fell behind compaction, re-listing",
                                  error=str(e), revision=self._revision)
                need_list = True
            except HistoryHole as e:
                self._log.error("store watch broke its order, re-listing", error=str(e),
                                revision=self._revision)
                need_list = True
            except errors.APIError as e:
                # The store is down (Storage already retried): keep serving what we
                # have, and resume the watch where it stopped once it is back.
                self._failures += 1
                delay = min(RETRY_CAP, 0.1 * 2 ** min(self._failures, 8))
                self._log.warning("store list or watch failed, retrying", error=str(e),
                                  relist=need_list, revision=self._revision, delay=delay)
                await asyncio.sleep(delay)
            except Exception:
                # A bug, not the store: the cache may be inconsistent, so rebuild it.
                self._failures += 1
                self._log.exception("watch cache failed, re-listing", revision=self._revision)
                need_list = True
                await asyncio.sleep(min(RETRY_CAP, 0.1 * 2 ** min(self._failures, 8)))

    async def _relist(self) -> None:
        started = asyncio.get_running_loop().time()
        page = await self.storage.list(self.prefix, limit=self.page_size)
        revision, items = page.revision, list(page.items)
        while page.more:
            page = await self.storage.list(self.prefix, revision=revision,
                                           start_key=key_after(items[-1].key),
                                           limit=self.page_size)
            items.extend(page.items)
        objects: SortedDict[str, Message] = SortedDict()
        for item in items:
            try:
                objects[item.key] = decode(self.kind, item.value, item.mod_revision)
            except DecodeError as e:
                self._log.error("undecodable object skipped", key=item.key, error=str(e))
        if self.ready:
            # Watchers hold state from before the hole; they must start over too.
            self._ready.clear()
            self._terminate_all("the watch cache re-listed")
            self.relists += 1
        self._objects = objects
        self._revision = revision
        self._ring = EventRing(self.capacity, revision)
        self._ready.set()
        self._wake_fresh()
        self._log.info("listed", objects=len(objects), revision=revision,
                       seconds=round(asyncio.get_running_loop().time() - started, 3))

    async def _follow(self) -> None:
        watch = self.storage.watch(self.prefix, self._revision + 1)
        self._watch = watch
        try:
            async with contextlib.aclosing(watch):
                async for batch in watch:
                    self._failures = 0
                    self.apply(batch)
        finally:
            self._watch = None

    def apply(self, batch: WatchBatch) -> None:
        """Apply one batch of store changes: update, record, dispatch, advance.

        Raises :class:`HistoryHole`, applying nothing, when the batch holds a change at
        or below :attr:`revision`: the store watch starts after the list and reports
        progress only up to what it sent, so that change came late, and what the cache
        (and its watchers) moved past may be wrong.
        """
        if batch.changes and batch.changes[0].mod_revision <= self._revision:
            first = batch.changes[0]
            raise HistoryHole(f"change of {first.key} at {first.mod_revision} after the "
                              f"watch had reported everything up to {self._revision}")
        for change in batch.changes:
            event = self._to_event(change)
            if event is None:
                continue
            self.events_received += 1
            self._ring.append(event)
            for watcher in self._watcher_list:
                if watcher.offer(event):
                    self.events_dispatched += 1
        if batch.revision > self._revision:
            self._revision = batch.revision
            self._wake_fresh()

    def _to_event(self, change: Change) -> CacheEvent | None:
        key, revision = change.key, change.mod_revision
        try:
            if change.type == "PUT":
                obj = decode(self.kind, change.value, revision)
                prev = self._objects.get(key)
                self._objects[key] = obj
                return CacheEvent(MODIFIED if prev is not None else ADDED, key, obj, prev,
                                  revision)
            prev = self._objects.pop(key, None)
            if change.prev_value is not None:
                last = decode(self.kind, change.prev_value, revision)
            elif prev is not None:
                last = type(prev)()
                last.CopyFrom(prev)  # the cached one is shared: never change it
                last.metadata.resource_version = str(revision)  # type: ignore[attr-defined]
            else:
                self._log.warning("deletion of an unknown object ignored", key=key)
                return None
            return CacheEvent(DELETED, key, last, prev, revision)
        except DecodeError as e:
            self._log.error("undecodable change skipped", key=key, revision=revision,
                            error=str(e))
            return None

    def _wake_fresh(self) -> None:
        while self._fresh and self._fresh[0][0] <= self._revision:
            _, _, future = heapq.heappop(self._fresh)
            if not future.done():
                future.set_result(None)

    async def _send_bookmarks(self) -> None:
        """Every ``bookmark_interval``, tell bookmark watchers how far the cache got."""
        while True:
            await asyncio.sleep(self.bookmark_interval)
            if not self.ready:
                continue
            revision = self._revision
            obj = self.kind.message()
            obj.metadata.resource_version = str(revision)  # type: ignore[attr-defined]
            for watcher in self._watcher_list:
                watcher.bookmark(revision, obj)
