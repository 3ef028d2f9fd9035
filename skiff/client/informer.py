"""Informers: list, then watch, into an indexed local cache, with event handlers.

client-go's ``tools/cache`` for Skiff, in three parts:

- the *reflector* (:meth:`Informer._run`): list the kind (paged, consistent, all pages at
  one resource version), put the result in the :class:`~skiff.client.store.Store`, then
  watch from the list's resource version with bookmarks. Each event updates the store
  and is passed to the handlers; bookmarks only move the last-seen version on. A watch
  that breaks (``Unavailable``: the apiserver went away; the client moves to the next
  address) or ends (the server's watch timeout, or it dropped a watcher that fell
  behind) is resumed from the last-seen version, so nothing is lost and nothing comes
  twice. A watch that answers ``Gone`` (the version fell out of the apiserver's watch
  cache) re-lists, and the handlers get the *difference* between the cache and the new
  list (:func:`~skiff.client.store.relist_diff`): adds, updates, and deletes carrying
  the last known object.
- the *store*: :mod:`skiff.client.store`, read by controllers through ``informer.store``.
- the *processor*: each :class:`HandlerRegistration` has its own queue and task, so a
  slow handler delays only itself, never the watch or the other handlers. Handlers
  may be plain functions or coroutine functions; an exception in one is logged and the
  next notification is delivered as usual. Per registration, notifications come in
  the order the informer saw the changes: per object, resource versions only go up.

:class:`SharedInformerFactory` hands out one informer per (kind, namespace, selectors),
so the components of one process share a cache and a watch.

Invariants the informer keeps, between two awaits:

- ``store`` holds the state of the watched objects at ``last_sync_resource_version``;
- every change applied to ``store`` has been queued, in order, to every registration
  (a registration added later is queued an add for each object in ``store``).

An informer stopped with :meth:`Informer.stop` keeps its store and version; started
again, it resumes watching where it stopped (re-listing only if that is ``Gone``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from google.protobuf.message import Message

from skiff.api import errors
from skiff.api.kinds import Kind, lookup
from skiff.client.clock import RealClock
from skiff.client.store import (
    ADDED,
    DELETED,
    UPDATED,
    Indexers,
    Store,
    key_of,
    relist_diff,
)
from skiff.logging import get_logger
from skiff.tasks import spawn

_log = get_logger("skiff.client.informer")

#: Objects asked for per page of a list (Kubernetes' reflector uses 500 too).
LIST_PAGE_SIZE = 500
#: A watch asks the server to end it after a random time in this range (seconds), so
#: that watches spread again over apiservers that came back (client-go does the same).
WATCH_TIMEOUT_RANGE = (300, 600)
#: Backoff between failed lists or watches: full jitter from BASE doubling up to CAP.
BACKOFF_BASE = 0.1
BACKOFF_CAP = 3.0
#: A registration yields the event loop after this many notifications in a row, so a
#: long backlog delivered to plain-function handlers does not starve the watch.
DELIVERY_BATCH = 500

# The watch event types the apiserver sends.
_ADDED, _MODIFIED, _DELETED, _BOOKMARK = "ADDED", "MODIFIED", "DELETED", "BOOKMARK"

OnAdd = Callable[[Message], Awaitable[None] | None]
OnUpdate = Callable[[Message, Message], Awaitable[None] | None]
OnDelete = Callable[[Message], Awaitable[None] | None]
OnList = Callable[[str], Awaitable[None] | None]

#: The notification that a list (the first, or a re-list) follows, carrying its version.
LISTED = "LISTED"


class Clock(Protocol):
    """Time as the informer sees it: injected so tests move time instead of sleeping."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


#: The real clock (:class:`skiff.client.clock.RealClock` has both methods).
SYSTEM_CLOCK = RealClock()


class ListerWatcher(Protocol):
    """What the informer needs of a kind's client (a :class:`~skiff.client.ResourceClient`)."""

    async def list(self, namespace: str = "", *, label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "",
                   resource_version: str = "") -> Any: ...

    def watch(self, namespace: str = "", *, resource_version: str = "",
              label_selector: str = "", field_selector: str = "",
              allow_bookmarks: bool = False, timeout_seconds: int = 0
              ) -> AsyncIterator[Any]: ...


class ClientLike(Protocol):
    """Anything that gives a :class:`ListerWatcher` per kind (a :class:`~skiff.client.Client`)."""

    def resource(self, kind: Kind | str) -> Any: ...


def _backoff(attempt: int) -> float:
    """Full-jitter exponential backoff (a random delay up to BASE * 2**attempt, capped)."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 16)))


# --------------------------------------------------------------------- handlers


class HandlerRegistration:
    """One set of handlers and the notifications not yet delivered to them.

    Invariants: notifications are delivered one at a time in the order they were
    pushed; ``delivered <= pushed``. The registration has synced once everything
    pushed up to its sync mark (the informer's first list, or for a registration
    added later, the adds of the objects cached then) has been delivered.
    """

    def __init__(self, *, on_add: OnAdd | None, on_update: OnUpdate | None,
                 on_delete: OnDelete | None, log: Any, name: str,
                 on_list: OnList | None = None) -> None:
        self.on_add = on_add
        self.on_update = on_update
        self.on_delete = on_delete
        self.on_list = on_list
        self.name = name
        self.pushed = 0
        self.delivered = 0
        self.failures = 0
        self._log = log
        # (type, old, new); for LISTED, new is the list's resource version.
        self._pending: deque[tuple[str, Message | None, Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._sync_mark: int | None = None
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def has_synced(self) -> bool:
        """Whether the handlers have been given everything up to the informer's sync."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) for :attr:`has_synced`; whether it has."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), timeout)
        return self.has_synced

    @property
    def pending(self) -> int:
        """Notifications queued but not delivered yet."""
        return len(self._pending)

    # ---------------------------------------------------------- informer's side

    def push(self, type_: str, old: Message | None, new: Any) -> None:
        """Queue a notification (never blocks)."""
        self._pending.append((type_, old, new))
        self.pushed += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def mark_synced(self) -> None:
        """Everything pushed so far is the initial state: synced once it is delivered."""
        if self._sync_mark is None:
            self._sync_mark = self.pushed
            self._check_synced()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = spawn(self._run(), name=f"informer handler {self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -------------------------------------------------------------- delivering

    async def _run(self) -> None:
        pending = self._pending
        while True:
            in_a_row = 0
            while pending:
                # Taken off only once delivered: a handler cancelled mid-way (stop())
                # is given the same notification again after start().
                type_, old, new = pending[0]
                result = self._call(type_, old, new)
                if result is not None:
                    await self._finish(result, type_, old, new)
                    in_a_row = 0
                pending.popleft()
                self.delivered += 1
                in_a_row += 1
                if self._sync_mark is not None and not self._synced.is_set():
                    self._check_synced()
                if in_a_row >= DELIVERY_BATCH:
                    in_a_row = 0
                    await asyncio.sleep(0)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _call(self, type_: str, old: Message | None, new: Any) -> Awaitable[None] | None:
        """Call the handler for ``type_``; its awaitable if it returned one."""
        try:
            if type_ == LISTED:
                if self.on_list is None:
                    return None
                result = self.on_list(new)
            elif type_ == UPDATED:
                if self.on_update is None:
                    return None
                result = self.on_update(old, new)  # type: ignore[arg-type]
            elif type_ == ADDED:
                if self.on_add is None:
                    return None
                result = self.on_add(new)  # type: ignore[arg-type]
            else:
                if self.on_delete is None:
                    return None
                result = self.on_delete(old)  # type: ignore[arg-type]
        except Exception:
            self._failed(type_, old, new)
            return None
        return result if result is not None and inspect.isawaitable(result) else None

    async def _finish(self, result: Awaitable[None], type_: str, old: Message | None,
                      new: Any) -> None:
        try:
            await result
        except Exception:
            self._failed(type_, old, new)

    def _failed(self, type_: str, old: Message | None, new: Any) -> None:
        # A handler's bug is the handler's: log it, keep the informer and the rest going.
        self.failures += 1
        obj = new if isinstance(new, Message) else old
        self._log.exception("event handler failed", handler=self.name, notification=type_,
                            key=key_of(obj) if obj is not None else None)

    def _check_synced(self) -> None:
        if self._sync_mark is not None and self.delivered >= self._sync_mark:
            self._synced.set()


# ---------------------------------------------------------------------- informer


class Informer:
    """A list-then-watch cache of one kind (optionally one namespace and selectors).

    ``client`` is a :class:`~skiff.client.Client` (anything with ``resource(kind)``
    giving ``list`` and ``watch``); ``kind`` a :class:`~skiff.api.kinds.Kind` or any of
    its names. ``indexers`` add indexes to the store (``namespace`` is built in).
    ``resync_period`` > 0: every that many seconds each handler gets
    ``on_update(obj, obj)`` for every cached object (for level-triggered controllers
    that want to look at everything again now and then).
    """

    def __init__(self, client: ClientLike, kind: Kind | str, *, namespace: str = "",
                 label_selector: str = "", field_selector: str = "",
                 resync_period: float = 0, indexers: Indexers | None = None,
                 clock: Clock = SYSTEM_CLOCK, page_size: int = LIST_PAGE_SIZE) -> None:
        self.kind = lookup(kind) if isinstance(kind, str) else kind
        self.namespace = namespace if self.kind.namespaced else ""
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.page_size = page_size
        self.store = Store(indexers)
        self._resource: ListerWatcher = client.resource(self.kind)
        self._clock = clock
        self.name = _describe(self.kind, self.namespace, label_selector, field_selector)
        self._log = _log.bind(informer=self.name)
        self._handlers: list[HandlerRegistration] = []
        self._resource_version = ""
        self._synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Counters, for tests, benchmarks and metrics.
        self.lists = 0
        self.relists = 0
        self.watches = 0
        self.events = 0
        self.bookmarks = 0

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start listing and watching in the background (returns at once)."""
        if self._tasks:
            return
        self._tasks.append(spawn(self._run(), name=f"informer {self.name}"))
        if self.resync_period > 0:
            self._tasks.append(spawn(self._resync(), name=f"informer resync {self.name}"))
        for registration in self._handlers:
            registration.start()

    async def stop(self) -> None:
        """Stop watching and delivering; the store and version are kept (see module doc)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for registration in self._handlers:
            await registration.stop()

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    @property
    def has_synced(self) -> bool:
        """Whether the first list is in the store (client-go's ``HasSynced``)."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) for :attr:`has_synced`; whether it has."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), timeout)
        return self.has_synced

    @property
    def last_sync_resource_version(self) -> str:
        """The version the store is at: of the last list, event or bookmark seen."""
        return self._resource_version

    # ---------------------------------------------------------------- handlers

    def add_handler(self, on_add: OnAdd | None = None, on_update: OnUpdate | None = None,
                    on_delete: OnDelete | None = None, *, name: str | None = None,
                    on_list: OnList | None = None) -> HandlerRegistration:
        """Register handlers: ``on_add(obj)``, ``on_update(old, new)``, ``on_delete(obj)``.

        Each may be a function or a coroutine function. A registration made after the
        informer has objects is first given an add for each of them. ``on_delete``
        gets the object's final state as the watch reported it or, after a re-list,
        the last state the cache knew. ``on_list(resource_version)``, for handlers that
        check the informer itself (the chaos suites' recorders): called before the
        notifications of each list (the first, every re-list, and the adds a late
        registration is given); those at or below that version are the list's
        difference from what the handlers had, later ones come from the watch.
        """
        label = name or _handler_name(on_add, on_update, on_delete, index=len(self._handlers))
        registration = HandlerRegistration(on_add=on_add, on_update=on_update,
                                           on_delete=on_delete, on_list=on_list,
                                           log=self._log, name=f"{self.name} {label}")
        if self._resource_version:
            registration.push(LISTED, None, self._resource_version)
        for obj in self.store.list():
            registration.push(ADDED, None, obj)
        if self.has_synced:
            registration.mark_synced()
        self._handlers.append(registration)
        if self._tasks:
            registration.start()
        return registration

    async def remove_handler(self, registration: HandlerRegistration) -> None:
        """Stop delivering to ``registration``; what it had not been given is dropped."""
        if registration in self._handlers:
            self._handlers.remove(registration)
        await registration.stop()

    def add_indexers(self, indexers: Indexers) -> None:
        """Add indexes to the store (existing objects are filed at once)."""
        self.store.add_indexers(indexers)

    def _notify(self, type_: str, old: Message | None, new: Any) -> None:
        for registration in self._handlers:
            registration.push(type_, old, new)

    # --------------------------------------------------------------- reflector

    async def _run(self) -> None:
        """List (when there is nothing to resume from), then watch; forever."""
        attempt = 0
        need_list = not self._resource_version
        while True:
            listed = False
            try:
                if need_list:
                    await self._list_and_replace()
                    need_list, listed = False, True
                if await self._watch():
                    attempt = 0  # it delivered: re-watch at once
                    continue
                reason = "watch ended without events"
            except errors.Gone as e:
                # Our version left the apiserver's watch cache: only a list can tell
                # what happened since. At once, unless the list we just made is
                # already too old (or a paged list outlived its version).
                self._log.info("resource version too old, re-listing", error=str(e),
                               resource_version=self._resource_version)
                need_list = True
                if not listed and self.has_synced:
                    continue
                reason = str(e)
            except errors.APIError as e:
                # Unavailable (the client moved to the next apiserver) or refused:
                # resume from where we are after a pause.
                reason = f"{type(e).__name__}: {e}"
            except Exception:
                # A bug, not the server: the store may be off, so rebuild it by listing.
                self._log.exception("informer failed, re-listing",
                                    resource_version=self._resource_version)
                need_list = True
                reason = "internal error"
            delay = _backoff(attempt)
            attempt += 1
            self._log.warning("list or watch failed, retrying", reason=reason,
                              relist=need_list, resource_version=self._resource_version,
                              delay=round(delay, 3))
            await self._clock.sleep(delay)

    async def _list(self) -> tuple[list[Message], str]:
        """All objects, in pages, at one version (the first page's, which pins the rest)."""
        items: list[Message] = []
        token = ""
        while True:
            page = await self._resource.list(
                self.namespace, label_selector=self.label_selector,
                field_selector=self.field_selector, limit=self.page_size,
                continue_token=token)
            items.extend(page.items)
            token = page.metadata.continue_token
            if not token:
                return items, page.metadata.resource_version

    async def _list_and_replace(self) -> None:
        started = self._clock.monotonic()
        items, version = await self._list()
        listed = [(key_of(obj), obj) for obj in items]
        deltas = relist_diff(self.store.items(), listed)
        # From here to the end, no await: the store, the version and the handlers'
        # queues change together.
        self.store.replace(dict(listed))
        self._resource_version = version
        self._notify(LISTED, None, version)
        for delta in deltas:
            self._notify(delta.type, delta.old, delta.new)
        first = not self.has_synced
        self.lists += 1
        if first:
            self._synced.set()
            for registration in self._handlers:
                registration.mark_synced()
        else:
            self.relists += 1
        self._log.info("listed", objects=len(listed), resource_version=version,
                       changes=len(deltas), relist=not first,
                       seconds=round(self._clock.monotonic() - started, 3))

    async def _watch(self) -> bool:
        """Follow one watch stream until it ends; whether it delivered anything."""
        self.watches += 1
        stream = self._resource.watch(
            self.namespace, resource_version=self._resource_version,
            label_selector=self.label_selector, field_selector=self.field_selector,
            allow_bookmarks=True, timeout_seconds=random.randint(*WATCH_TIMEOUT_RANGE))
        delivered = False
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for event in stream:
                self._apply(event.type, event.object)
                delivered = True
        return delivered

    def _apply(self, type_: str, obj: Message) -> None:
        """One watch event into the store and the handlers' queues."""
        md = obj.metadata  # type: ignore[attr-defined]
        version = md.resource_version
        if type_ == _BOOKMARK:
            self.bookmarks += 1
            self._resource_version = version
            return
        self.events += 1
        namespace = md.namespace
        key = f"{namespace}/{md.name}" if namespace else md.name
        old = self.store.get(key)
        if type_ == _DELETED:
            if old is not None:  # else it was never ours (it stopped matching unseen)
                self.store.delete(key)
                self._notify(DELETED, obj, None)
        elif type_ in (_ADDED, _MODIFIED):
            if old is not None and int(old.metadata.resource_version) >= int(version):  # type: ignore[attr-defined]
                return  # seen already: an object's versions only go up
            self.store.put(obj, key)
            if old is None:
                self._notify(ADDED, None, obj)
            else:
                self._notify(UPDATED, old, obj)
        else:
            self._log.warning("unknown watch event type ignored", type=type_, key=key)
            return
        self._resource_version = version

    async def _resync(self) -> None:
        """Every ``resync_period``: on_update(obj, obj) for every cached object."""
        while True:
            await self._clock.sleep(self.resync_period)
            if self.has_synced:
                for obj in self.store.list():
                    self._notify(UPDATED, obj, obj)


def _describe(kind: Kind, namespace: str, label_selector: str, field_selector: str) -> str:
    parts = [kind.plural]
    if namespace:
        parts.append(f"namespace={namespace}")
    if label_selector:
        parts.append(f"labels={label_selector}")
    if field_selector:
        parts.append(f"fields={field_selector}")
    return " ".join(parts)


def _handler_name(*handlers: Callable[..., Any] | None, index: int = 0) -> str:
    for handler in handlers:
        if handler is not None:
            return getattr(handler, "__qualname__", repr(handler))
    return f"handler-{index}"


# ----------------------------------------------------------------------- factory

InformerKey = tuple[str, str, str, str]


class SharedInformerFactory:
    """One informer per (kind, namespace, label selector, field selector), shared.

    Components ask for informers (``factory.informer("pods")``), register handlers,
    then one of them calls :meth:`start_all` and :meth:`wait_for_cache_sync`. Informers
    asked for after ``start_all`` are started by the next ``start_all``.
    """

    def __init__(self, client: ClientLike, *, resync_period: float = 0,
                 namespace: str = "", clock: Clock = SYSTEM_CLOCK) -> None:
        self.client = client
        self.resync_period = resync_period
        self.namespace = namespace
        self.clock = clock
        self._informers: dict[InformerKey, Informer] = {}

    def informer(self, kind: Kind | str, *, namespace: str | None = None,
                 label_selector: str = "", field_selector: str = "",
                 indexers: Indexers | None = None) -> Informer:
        """The shared informer for these options, made on first request.

        ``indexers`` are added to it (an index name already defined differently is a
        ``ValueError``: the sharers would disagree on its meaning).
        """
        found = lookup(kind) if isinstance(kind, str) else kind
        ns = (self.namespace if namespace is None else namespace) if found.namespaced else ""
        key = (found.kind, ns, label_selector, field_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(self.client, found, namespace=ns,
                                label_selector=label_selector, field_selector=field_selector,
                                resync_period=self.resync_period, clock=self.clock)
            self._informers[key] = informer
        if indexers:
            informer.add_indexers(indexers)
        return informer

    @property
    def informers(self) -> Mapping[InformerKey, Informer]:
        return dict(self._informers)

    async def start_all(self) -> None:
        """Start every informer not running yet."""
        for informer in self._informers.values():
            await informer.start()

    async def wait_for_cache_sync(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds in all) until every informer has synced."""
        informers: Iterable[Informer] = list(self._informers.values())
        deadline = time.monotonic() + timeout
        for informer in informers:
            if not await informer.wait_synced(max(0.0, deadline - time.monotonic())):
                _log.warning("informer not synced in time", informer=informer.name,
                             timeout=timeout)
                return False
        return True

    async def stop_all(self) -> None:
        await asyncio.gather(*(i.stop() for i in self._informers.values()))


__all__ = ["BACKOFF_CAP", "LISTED", "LIST_PAGE_SIZE", "SYSTEM_CLOCK", "Clock",
           "HandlerRegistration", "Informer", "ListerWatcher", "SharedInformerFactory"]
