"""Watchers at every layer for the chaos runs, each recording what it saw.

The chaos suites kill store replicas and apiservers under load; these watchers follow
one key prefix through it, each as a client of its layer would, and record into a
:class:`~skiff.watchcheck.WatchRecord` that :func:`~skiff.watchcheck.check_watch` then
holds against the store's history (:func:`read_history`, read after the run):

- :func:`run_store_watcher`: an etcd Watch stream with progress notifications (asked
  for every ``progress_interval``), resuming on the next replica from the last revision
  it was told of (its last event's, or a progress notification's) + 1, as the
  apiserver's own store watch does;
- :func:`run_api_watcher`: an API watch with bookmarks (a reflector without a cache):
  list, watch from the list's version, resume from the last version seen on the next
  apiserver, re-list on Gone;
- :class:`InformerWatcher`: a real :class:`~skiff.client.informer.Informer` whose
  handlers (with ``on_list``) feed a :class:`~skiff.watchcheck.HandlerRecorder`.

:class:`LayerWatchers` runs a set of them for :func:`skiff.chaos.run_chaos`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from skiff.api import errors
from skiff.api.kinds import Kind, lookup
from skiff.client.client import Client
from skiff.client.informer import Informer
from skiff.health import wait_for
from skiff.store.v1 import kv_pb2, rpc_pb2, rpc_pb2_grpc
from skiff.watchcheck import (
    Change,
    HandlerRecorder,
    History,
    WatchRecord,
    check_watch,
    history_from,
)

UNANSWERED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
#: A stream that answers nothing this long (not even progress) is abandoned.
STALL_SECONDS = 10.0
RETRY_PAUSE = 0.1
#: A restarted replica must be usable again soon (gRPC's default backoff grows to minutes).
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 500),
                   ("grpc.max_receive_message_length", 256 * 1024 * 1024)]


def prefix_end(prefix: str) -> bytes:
    raw = prefix.encode()
    return raw[:-1] + bytes([raw[-1] + 1])


async def _hold_open(first: rpc_pb2.WatchRequest, progress: asyncio.Event,
                     interval: float) -> AsyncIterator[rpc_pb2.WatchRequest]:
    yield first
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), interval)
        progress.clear()
        yield rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())


async def run_store_watcher(endpoints: Sequence[str], record: WatchRecord, *, first: int = 0,
                            progress_interval: float = 0.5) -> None:
    """Watch ``record.prefix`` from ``record.start + 1`` until cancelled (see the module
    docstring). A watch cancelled by compaction ends it with ``errors.Gone``."""
    position = record.start  # every change up to here was delivered
    wake = asyncio.Event()
    for attempt in itertools.count(first):
        endpoint = endpoints[attempt % len(endpoints)]
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=record.prefix.encode(), range_end=prefix_end(record.prefix),
            start_revision=position + 1, progress_notify=True))
        async with grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS) as channel:
            call = rpc_pb2_grpc.WatchStub(channel).Watch(
                _hold_open(create, wake, progress_interval))
            try:
                while True:
                    response = await asyncio.wait_for(call.read(), STALL_SECONDS)
                    if response is grpc.aio.EOF:
                        break
                    if response.canceled:
                        if response.compact_revision:
                            raise errors.Gone(f"{record.name}: compacted past {position} "
                                              f"({response.compact_revision})")
                        break
                    if response.created:
                        continue
                    for event in response.events:
                        record.event(event.kv.mod_revision, event.kv.key.decode(),
                                     deleted=event.type == kv_pb2.Event.DELETE)
                    # An events response is complete up to its last event (etcd heads a
                    # backlog's responses with its current revision); one without
                    # events is a progress notification.
                    if response.events:
                        position = max(position, response.events[-1].kv.mod_revision)
                    elif response.header.revision > position:
                        position = response.header.revision
                        record.progress(position)
            except (grpc.aio.AioRpcError, TimeoutError):
                # Any broken stream: a killed replica's may end UNAVAILABLE, or INTERNAL
                # ("Internal error from Core"). One that never recovers stays short of
                # the final revision, which the check reports.
                pass
            finally:
                call.cancel()
        record.resumes += 1
        await asyncio.sleep(RETRY_PAUSE)


def _api_key(prefix: str, obj: Any) -> str:
    return prefix + obj.metadata.name


async def run_api_watcher(addresses: Sequence[str], kind: Kind | str, namespace: str,
                          record: WatchRecord, *, first: int = 0) -> None:
    """List then watch (with bookmarks) one namespace's objects of ``kind`` until
    cancelled, resuming on the next apiserver from the last version seen; re-list on
    Gone. Keys recorded are ``record.prefix`` + the object's name."""
    found = lookup(kind) if isinstance(kind, str) else kind
    ordered = [*addresses[first % len(addresses):], *addresses[:first % len(addresses)]]
    async with Client(ordered, retry_deadline=120) as client:
        resource = client.resource(found)
        version = ""
        while True:
            try:
                if not version:
                    listed = await resource.list(namespace)
                    version = listed.metadata.resource_version
                    record.listed(int(version), {_api_key(record.prefix, o): int(
                        o.metadata.resource_version) for o in listed.items})
                async for event in resource.watch(namespace, resource_version=version,
                                                  allow_bookmarks=True):
                    obj = event.object
                    version = obj.metadata.resource_version
                    if event.type == "BOOKMARK":
                        record.progress(int(version))
                    else:
                        record.event(int(version), _api_key(record.prefix, obj),
                                     deleted=event.type == "DELETED")
            except errors.Gone:
                version = ""  # fell out of the watch cache: only a list can tell
            except errors.APIError:
                await asyncio.sleep(RETRY_PAUSE)
            record.resumes += 1


class InformerWatcher:
    """An Informer of one namespace's objects of ``kind``, its handlers recorded."""

    def __init__(self, addresses: Sequence[str], kind: Kind | str, namespace: str,
                 record: WatchRecord) -> None:
        self.client = Client(list(addresses), retry_deadline=120)
        self.informer = Informer(self.client, kind, namespace=namespace)
        self.recorder = HandlerRecorder(record)
        r = self.recorder
        self.registration = self.informer.add_handler(r.on_add, r.on_update, r.on_delete,
                                                      on_list=r.on_list, name="chaos-record")

    async def start(self) -> None:
        await self.informer.start()

    @property
    def reached(self) -> int:
        """The version the handlers have been given everything up to (roughly: the
        informer's, once its notifications are delivered)."""
        version = self.informer.last_sync_resource_version
        return int(version) if version and not self.registration.pending else 0

    async def stop(self) -> WatchRecord:
        """Stop the informer; its record, ending with a progress mark at the informer's
        version if the handlers were given everything up to it (they see no bookmarks)."""
        reached = self.reached
        await self.informer.stop()
        await self.client.close()
        record = self.recorder.finish()
        if reached:
            record.progress(reached)
        record.resumes = max(0, self.informer.watches - 1)
        return record


async def read_history(endpoints: Sequence[str], prefix: str, *, base: int,
                       until: int) -> History:
    """The store's history of ``prefix``: its state at ``base`` and every change in
    (base, until], read from the first replica that answers. Raises ``errors.Gone`` if
    compacted past ``base``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60.0
    while True:
        for endpoint in endpoints:
            async with grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS) as channel:
                try:
                    return await _read_history(channel, prefix, base=base, until=until)
                except grpc.aio.AioRpcError as e:
                    if e.code() == grpc.StatusCode.OUT_OF_RANGE:
                        raise errors.Gone(f"history of {prefix} compacted past {base}") from e
                    if e.code() not in UNANSWERED:
                        raise
                except (errors.Unavailable, TimeoutError):
                    pass
        if loop.time() > deadline:
            raise errors.Unavailable(f"no store replica gave the history of {prefix}")
        await asyncio.sleep(RETRY_PAUSE)


async def _read_history(channel: grpc.aio.Channel, prefix: str, *, base: int,
                        until: int) -> History:
    kv = rpc_pb2_grpc.KVStub(channel)
    listed = await kv.Range(rpc_pb2.RangeRequest(
        key=prefix.encode(), range_end=prefix_end(prefix), revision=base), timeout=30.0)
    initial = {item.key.decode(): item.mod_revision for item in listed.kvs}
    changes: list[Change] = []
    create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=prefix.encode(), range_end=prefix_end(prefix), start_revision=base + 1,
        progress_notify=True))
    call = rpc_pb2_grpc.WatchStub(channel).Watch(_hold_open(create, asyncio.Event(), 0.2))
    try:
        async with asyncio.timeout(60.0):
            while True:
                response = await call.read()
                if response is grpc.aio.EOF or response.canceled:
                    if response is not grpc.aio.EOF and response.compact_revision:
                        raise errors.Gone(f"history of {prefix} compacted past {base}")
                    raise errors.Unavailable("the history watch ended")
                changes.extend(Change(e.kv.mod_revision, e.kv.key.decode(),
                                      e.type == kv_pb2.Event.DELETE)
                               for e in response.events if e.kv.mod_revision <= until)
                if not response.created and response.header.revision >= until:
                    return history_from(changes, base=base, initial=initial)
    finally:
        call.cancel()


class LayerWatchers:
    """Watchers of one prefix at every layer (``store_watchers`` store streams,
    ``api_watchers`` API watches, ``informers`` Informers), started together and
    checked together against the store's history.

    ``prefix`` is the namespace's prefix of ``kind`` in the store
    (``/registry/leases/<namespace>/``); ``start``: a revision at which it is known
    (the history is read from there).
    """

    def __init__(self, *, store_endpoints: Sequence[str], apiservers: Sequence[str],
                 kind: str, namespace: str, prefix: str, start: int, store_watchers: int = 2,
                 api_watchers: int = 2, informers: int = 2) -> None:
        self.store_endpoints = list(store_endpoints)
        self.prefix = prefix
        self.base = start
        self.records: list[WatchRecord] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._informers: list[InformerWatcher] = []
        for i in range(store_watchers):
            record = WatchRecord(f"store watch {i}", prefix, start)
            self.records.append(record)
            self._tasks.append(asyncio.get_running_loop().create_task(
                run_store_watcher(self.store_endpoints, record, first=i),
                name=f"chaos store watch {i}"))
        for i in range(api_watchers):
            record = WatchRecord(f"api watch {i}", prefix)
            self.records.append(record)
            self._tasks.append(asyncio.get_running_loop().create_task(
                run_api_watcher(apiservers, kind, namespace, record, first=i),
                name=f"chaos api watch {i}"))
        for i in range(informers):
            rotated = [*apiservers[i % len(apiservers):], *apiservers[:i % len(apiservers)]]
            record = WatchRecord(f"informer {i}", prefix)
            self._informers.append(InformerWatcher(rotated, kind, namespace, record))

    async def start(self) -> None:
        for informer in self._informers:
            await informer.start()

    async def cancel(self) -> None:
        """Stop every watcher without checking (the run failed; after :meth:`check`,
        nothing is left to stop)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        informers, self._informers = self._informers, []
        for informer in informers:
            await informer.stop()

    async def check(self, until: int, *, timeout: float = 60.0
                    ) -> tuple[list[str], dict[str, Any]]:
        """Wait (up to ``timeout``) until every watcher reached ``until``, stop them, and
        check each against the store's history; the problems and a report."""
        async def reached() -> bool:
            for task in self._tasks:
                if task.done():
                    task.result()  # raises what stopped it
            return (all(r.reached >= until for r in self.records)
                    and all(i.reached >= until for i in self._informers))

        problems: list[str] = []
        with contextlib.suppress(TimeoutError):
            await wait_for(reached, timeout=timeout, what=f"every watcher at {until}")
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for record, result in zip(self.records, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError):
                problems.append(f"{record.name} stopped: {result!r}")
        informers, self._informers = self._informers, []
        records = [*self.records, *[await i.stop() for i in informers]]
        try:
            history = await read_history(self.store_endpoints, self.prefix, base=self.base,
                                         until=until)
        except errors.APIError as e:
            return [*problems, f"watch checks not run: {e}"], {}
        for record in records:
            problems += check_watch(record, history, until=until)
        report = {record.name: {"events": sum(isinstance(e, Change) for e in record.entries),
                                "entries": len(record.entries), "resumes": record.resumes}
                  for record in records}
        report["history"] = {"base": history.base, "until": until,
                             "changes": len(history.changes)}
        return problems, report
