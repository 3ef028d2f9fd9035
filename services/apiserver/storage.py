"""The apiserver's storage layer: an etcd v3 client that speaks in objects, keys and revisions.

Kubernetes' ``storage/etcd3``, for Skiff. Above it, the registries and the watch
cache (``cacher.py``); below it, the store replicas (``services/store``), or any etcd.

- Keys: an object lives at ``/registry/<plural>/<namespace>/<name>`` (cluster-scoped
  kinds: ``/registry/<plural>/<name>``), as protobuf bytes (:func:`encode`).
- Resource versions: the store's ``mod_revision`` *is* the object's resource version.
  It is never stored inside the value (:func:`encode` clears it) and always set on the
  way out (:func:`decode`), so it cannot disagree with the store.
- Writes are one Txn each, guarded by a compare (``create_revision == 0`` to create,
  ``mod_revision == expected`` to update or delete): optimistic concurrency is the
  store's, not ours. A failed compare reads the keys in the same Txn, so the error
  can say what happened (it changed: :class:`KeyConflict`; it is gone:
  :class:`KeyNotFound`; it exists: :class:`KeyExists`) without a second round trip.
- Endpoints: one grpc.aio channel per replica; every call goes to the "current" one,
  and an UNAVAILABLE or DEADLINE_EXCEEDED answer (a dead replica, no leader) moves the
  current endpoint on and retries with jittered backoff until the call's total
  deadline (``timeout``, 10 s by default), then raises :class:`errors.Unavailable`.
- Ambiguous writes: a write retried after such an error may have been applied by the
  attempt that "failed". So when a retried write then fails its compare, it checks
  whether the store already holds exactly its bytes (encoding is deterministic) and if
  so reports success instead of a conflict with itself.
- Watches (:class:`StoreWatch`) follow the store's Watch stream over a prefix and
  survive the death of their replica: revisions are identical on every replica, so
  the stream resumes on the next endpoint from the last revision seen + 1 and nothing
  is lost or seen twice. Progress is requested every ``progress_interval`` (and on
  demand), so even a quiet prefix reports how far the store has got, but only from a
  store that answers it in order with the events (:func:`orders_progress`): etcd
  before 3.4.31 / 3.5.13 can announce a revision before the events up to it were sent,
  so there a progress notification only says the stream is alive.
- Errors: every store error is mapped once, in
  :data:`~services.apiserver.storage_types._ERROR_TABLE`, to the API's vocabulary
  (``skiff.api.errors``).

Files, as Kubernetes splits ``storage/etcd3``: this one is the client (``store.go``:
endpoints, failover, reads and guarded writes); :mod:`services.apiserver.storage_watch`
the watch (``watcher.go``); :mod:`services.apiserver.storage_types` what both speak
(keys, the codec, the values returned, the errors raised, the retry backoff).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from services.apiserver.storage_types import (
    REGISTRY,
    RETRYABLE,
    GuardMoved,
    KeyConflict,
    KeyExists,
    KeyNotFound,
    ListResult,
    RevisionAhead,
    StoredObject,
    backoff,
    key_bytes,
    map_error,
    prefix_end,
    raise_if_cancelling,
)
from services.apiserver.storage_watch import StoreWatch
from skiff.api import errors
from skiff.logging import get_logger
from skiff.store.v1 import kv_pb2, rpc_pb2, rpc_pb2_grpc

log = get_logger("skiff.apiserver.storage")


#: Objects are large in bulk: a list of every pod must fit in one Range response.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A restarted replica should be usable again soon, not after minutes of backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


# ------------------------------------------------------------------ request pieces


def _put(key: str, value: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key_bytes(key), value=value))


def _delete(key: str) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key_bytes(key)))


def _range(key: str) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key_bytes(key)))


def _absent(key: str) -> rpc_pb2.Compare:
    return rpc_pb2.Compare(key=key_bytes(key), target=rpc_pb2.Compare.CREATE,
                           result=rpc_pb2.Compare.EQUAL, create_revision=0)


def _at_revision(key: str, mod_revision: int) -> rpc_pb2.Compare:
    if mod_revision <= 0:  # unconditional: the key must merely exist
        return rpc_pb2.Compare(key=key_bytes(key), target=rpc_pb2.Compare.CREATE,
                               result=rpc_pb2.Compare.GREATER, create_revision=0)
    return rpc_pb2.Compare(key=key_bytes(key), target=rpc_pb2.Compare.MOD,
                           result=rpc_pb2.Compare.EQUAL, mod_revision=mod_revision)


def _stored(kv: kv_pb2.KeyValue) -> StoredObject:
    return StoredObject(key=kv.key.decode(), value=kv.value, mod_revision=kv.mod_revision,
                        create_revision=kv.create_revision)


def _failure_reads(response: rpc_pb2.TxnResponse, keys: Sequence[str]
                   ) -> dict[str, StoredObject | None]:
    """What the failure branch's Range ops (one per key, in order) found."""
    found: dict[str, StoredObject | None] = {}
    for key, op in zip(keys, response.responses, strict=True):
        kvs = op.response_range.kvs
        found[key] = _stored(kvs[0]) if kvs else None
    return found


#: Per etcd minor version, the first release whose answer to a progress request
#: (WatchProgressRequest) is ordered with the stream's events. Before it, the answer can
#: overtake events it claims were sent, and reaches a watcher that started from an old
#: revision before it caught up (etcd-io/etcd#15220, fixed by #15237 and #17557): a
#: cache that trusted it would skip those events for good. Kubernetes asks etcd for
#: progress only from these releases on, for the same reason.
ORDERED_PROGRESS_SINCE = {(3, 4): 31, (3, 5): 13}


def orders_progress(version: str) -> bool:
    """Whether a store reporting ``version`` (Maintenance.Status) answers progress
    requests in order with the events of the stream (pure; unparsable: no)."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version.strip())
    if match is None:
        return False
    major, minor, patch = (int(part) for part in match.groups())
    since = ORDERED_PROGRESS_SINCE.get((major, minor))
    if since is not None:
        return patch >= since
    return (major, minor) > (3, 5)


def endpoint_address(url: str) -> str:
    """``http://127.0.0.1:2379`` (an etcd client URL) or ``127.0.0.1:2379`` ->
    ``127.0.0.1:2379``."""
    return url.strip().removeprefix("http://").removeprefix("https://").rstrip("/")


# ------------------------------------------------------------------------ storage


class Storage:
    """An etcd v3 client over several endpoints (``host:port``), one channel each.

    ``timeout`` bounds a call with all its retries; ``attempt_timeout`` one attempt on
    one endpoint. Watches ask for progress every ``progress_interval`` seconds and
    abandon a replica that answers nothing for ``stall_timeout`` (default: the larger
    of 5 s and five progress intervals).

    Invariant: ``_current`` indexes the endpoint new calls go to; it moves when a call
    on that very endpoint failed with a retryable error (so concurrent failures on one
    dead replica move it once, not once each), and to the raft leader's endpoint when
    :meth:`prefer_leader` finds it elsewhere.
    """

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 10.0,
                 attempt_timeout: float = 5.0, progress_interval: float = 1.0,
                 stall_timeout: float | None = None) -> None:
        if not endpoints:
            raise ValueError("Storage needs at least one store endpoint")
        self.endpoints: tuple[str, ...] = tuple(endpoints)
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.progress_interval = progress_interval
        # A watch stream that answers nothing this long (not even the progress it is
        # asked for) is on a hung replica: give up on it and resume on another.
        self.stall_timeout = (max(5.0, 5 * progress_interval) if stall_timeout is None
                              else stall_timeout)
        self._current = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._kv: dict[str, rpc_pb2_grpc.KVStub] = {}
        self._watches: set[StoreWatch] = set()
        self._closed = False

    # ----------------------------------------------------------------- plumbing

    @property
    def endpoint(self) -> str:
        """The endpoint new calls go to."""
        return self.endpoints[self._current]

    @property
    def watch_endpoints(self) -> tuple[str, ...]:
        """The endpoint each live watch stream is connected to (tests kill these)."""
        return tuple(w.endpoint for w in self._watches if w.endpoint is not None)

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        """The channel to ``endpoint``, opened on first use (in the running loop)."""
        channel = self._channels.get(endpoint)
        if channel is None:
            if self._closed:
                # Not retryable: the caller closed it (a watch ends here, not loops).
                raise errors.Unavailable("store client closed")
            channel = grpc.aio.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
            self._channels[endpoint] = channel
            self._kv[endpoint] = rpc_pb2_grpc.KVStub(channel)
        return channel

    def _fail_over(self, endpoint: str, reason: str) -> None:
        if self.endpoints[self._current] == endpoint and len(self.endpoints) > 1:
            self._current = (self._current + 1) % len(self.endpoints)
            log.info("store endpoint failed, moving on", failed=endpoint,
                     next=self.endpoint, reason=reason)

    async def prefer_leader(self) -> None:
        """Send new calls to the raft leader's replica, if it is one of ``endpoints``.

        A write sent to a follower is forwarded to the leader and answered only once
        the follower has applied it, a hop more each way: on this store that about
        doubles a write's latency and adds to every replica's CPU. Reads lose nothing
        either. Raises gRPC's errors when the current endpoint does not answer (the
        next call fails over as usual).
        """
        endpoint = self.endpoint
        channel = self.channel(endpoint)
        try:
            status = await rpc_pb2_grpc.MaintenanceStub(channel).Status(
                rpc_pb2.StatusRequest(), timeout=self.attempt_timeout)
            if not status.leader or status.leader == status.header.member_id:
                return
            members = await rpc_pb2_grpc.ClusterStub(channel).MemberList(
                rpc_pb2.MemberListRequest(), timeout=self.attempt_timeout)
        except grpc.aio.AioRpcError as e:
            raise_if_cancelling(e)
            raise
        urls = next((m.clientURLs for m in members.members if m.ID == status.leader), [])
        for url in urls:
            address = endpoint_address(url)
            if address in self.endpoints and address != self.endpoint:
                log.info("store endpoint moves to the raft leader", previous=self.endpoint,
                         leader=address)
                self._current = self.endpoints.index(address)
                return

    async def orders_progress(self, endpoint: str, *, timeout: float | None = None) -> bool:
        """Whether the store at ``endpoint`` answers progress requests in order with
        events, by the version it reports (a store without Maintenance.Status: no).
        Raises gRPC's errors when it does not answer within ``timeout`` (default
        ``attempt_timeout``); a watch then reconnects as usual."""
        try:
            status = await rpc_pb2_grpc.MaintenanceStub(self.channel(endpoint)).Status(
                rpc_pb2.StatusRequest(), timeout=timeout or self.attempt_timeout)
        except grpc.aio.AioRpcError as e:
            raise_if_cancelling(e)
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            return False
        return orders_progress(status.version)

    async def close(self) -> None:
        """Close every channel (live watches end with an error)."""
        self._closed = True
        channels, self._channels, self._kv = self._channels, {}, {}
        for channel in channels.values():
            await channel.close()

    async def __aenter__(self) -> Storage:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, request: Message, *, what: str) -> tuple[Any, bool]:
        """``KV.<method>(request)`` on the current endpoint, failing over and retrying.

        Returns the response and whether an earlier attempt failed in a way that may
        have applied it (any retried error: "unavailable" may come after the commit).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        failures = 0
        while True:
            endpoint = self.endpoint
            self.channel(endpoint)
            remaining = deadline - loop.time()
            try:
                response = await getattr(self._kv[endpoint], method)(
                    request, timeout=max(0.001, min(self.attempt_timeout, remaining)))
                return response, failures > 0
            except grpc.aio.AioRpcError as e:
                raise_if_cancelling(e)
                if e.code() not in RETRYABLE:
                    raise map_error(e) from None
                failures += 1
                self._fail_over(endpoint, f"{e.code().name}: {e.details()}")
                delay = backoff(failures)
                if loop.time() + delay >= deadline:
                    raise errors.Unavailable(
                        f"store unavailable: {what} failed for {self.timeout:g}s on "
                        f"{', '.join(self.endpoints)} (last: {e.code().name}: {e.details()})"
                    ) from None
                log.debug("store call failed, retrying", what=what, endpoint=endpoint,
                          code=e.code().name, delay=round(delay, 3))
                await asyncio.sleep(delay)

    async def _txn(self, request: rpc_pb2.TxnRequest, *, what: str
                   ) -> tuple[rpc_pb2.TxnResponse, bool]:
        return await self._call("Txn", request, what=what)

    # -------------------------------------------------------------------- reads

    async def get(self, key: str) -> StoredObject | None:
        """``key`` as of now (a linearizable read), or None."""
        response, _ = await self._call("Range", rpc_pb2.RangeRequest(key=key_bytes(key)),
                                       what=f"get {key}")
        return _stored(response.kvs[0]) if response.kvs else None

    async def list(self, prefix: str, *, revision: int = 0, start_key: str = "",
                   limit: int = 0) -> ListResult:
        """Keys under ``prefix`` from ``start_key`` on (at most ``limit``; 0: all).

        ``revision`` 0 reads the latest (linearizably); otherwise the keys as of that
        revision: raises ``Gone`` if it was compacted, ``Unavailable`` ("too large
        resource version") if the store has not reached it.
        """
        if start_key and not start_key.startswith(prefix):
            raise errors.BadRequest(f"start key {start_key} is outside {prefix}")
        # At a fixed past revision the keys are immutable: a serializable read gives what
        # a linearizable one would, without the read barrier (a raft round trip, paid
        # by every page of a paged list), unless the replica has not applied that
        # revision yet; then the barrier catches it up.
        request = rpc_pb2.RangeRequest(key=key_bytes(start_key or prefix),
                                       range_end=key_bytes(prefix_end(prefix)),
                                       revision=max(revision, 0), limit=max(limit, 0),
                                       serializable=revision > 0)
        try:
            response, _ = await self._call("Range", request, what=f"list {prefix}")
        except RevisionAhead:
            if not request.serializable:
                raise
            request.serializable = False
            response, _ = await self._call("Range", request, what=f"list {prefix}")
        return ListResult(items=tuple(_stored(kv) for kv in response.kvs),
                          revision=revision if revision > 0 else response.header.revision,
                          more=response.more)

    async def revision(self) -> int:
        """The store's current revision (a linearizable, count-only read)."""
        request = rpc_pb2.RangeRequest(key=key_bytes(REGISTRY), count_only=True)
        response, _ = await self._call("Range", request, what="read revision")
        return response.header.revision

    # ------------------------------------------------------------------- writes

    async def create(self, key: str, value: bytes, *, puts: Sequence[tuple[str, bytes]] = (),
                     absent: Sequence[str] = (), unchanged: Mapping[str, int] | None = None,
                     ) -> int:
        """Put ``key`` (and ``puts``) if ``key`` and every ``absent`` key do not exist,
        and every ``unchanged`` key is still at its given mod_revision.

        One Txn: all or nothing. Returns the new revision (the object's resource
        version); raises :class:`KeyExists` naming the first key found, or
        :class:`GuardMoved` naming an ``unchanged`` key that moved.
        """
        guarded = [key, *absent]
        kept = dict(unchanged or {})
        request = rpc_pb2.TxnRequest(
            compare=[*(_absent(k) for k in guarded),
                     *(_at_revision(k, rev) for k, rev in kept.items())],
            success=[_put(key, value), *(_put(k, v) for k, v in puts)],
            failure=[_range(k) for k in (*guarded, *kept)])
        response, retried = await self._txn(request, what=f"create {key}")
        if response.succeeded:
            return response.header.revision
        found = _failure_reads(response, [*guarded, *kept])
        mine = found[key]
        if retried and mine is not None and mine.value == value:
            # An attempt that "failed" had committed: this is our own object.
            log.info("retried create had already succeeded", key=key)
            return mine.mod_revision
        # The failure branch read every compared key at the revision the compare failed
        # at, so one guarded key exists or one kept key moved.
        existing = next((k for k in guarded if found[k] is not None), None)
        if existing is not None:
            raise KeyExists(existing)
        raise GuardMoved(next(k for k, rev in kept.items()
                              if found[k] is None or found[k].mod_revision != rev))

    async def update(self, key: str, value: bytes, *, mod_revision: int,
                     puts: Sequence[tuple[str, bytes]] = (), deletes: Sequence[str] = (),
                     absent: Sequence[str] = ()) -> int:
        """Put ``key`` if it is still at ``mod_revision`` (0: whatever its revision) and
        every ``absent`` key does not exist; ``puts`` and ``deletes`` go with it.

        Returns the new revision; raises :class:`KeyConflict` (it changed),
        :class:`KeyNotFound` (it is gone) or :class:`KeyExists` (an ``absent`` key).
        """
        guarded = [key, *absent]
        request = rpc_pb2.TxnRequest(
            compare=[_at_revision(key, mod_revision), *(_absent(k) for k in absent)],
            success=[_put(key, value), *(_put(k, v) for k, v in puts),
                     *(_delete(k) for k in deletes)],
            failure=[_range(k) for k in guarded])
        response, retried = await self._txn(request, what=f"update {key}")
        if response.succeeded:
            return response.header.revision
        found = _failure_reads(response, guarded)
        current = found[key]
        if current is None:
            raise KeyNotFound(key)
        if retried and current.value == value and current.mod_revision > mod_revision:
            log.info("retried update had already succeeded", key=key)
            return current.mod_revision
        existing = next((k for k in absent if found[k] is not None), None)
        if existing is None or (mod_revision > 0 and current.mod_revision != mod_revision):
            raise KeyConflict(key, mod_revision, current)
        raise KeyExists(existing)

    async def delete(self, key: str, *, mod_revision: int, deletes: Sequence[str] = ()) -> int:
        """Delete ``key`` (and ``deletes``) if it is still at ``mod_revision`` (0: any).

        Returns the deletion's revision; raises :class:`KeyConflict` or
        :class:`KeyNotFound`. A retried delete that finds the key gone may have been
        applied by an earlier attempt whose answer was lost: if the store's history
        shows the version at ``mod_revision`` deleted, that deletion's revision is
        returned (never the store's current one: no event carries that, so a client
        resuming a watch from it would skip whatever happened in between); otherwise,
        or for an unconditional delete (nothing says which deletion was ours),
        :class:`KeyNotFound`.
        """
        request = rpc_pb2.TxnRequest(
            compare=[_at_revision(key, mod_revision)],
            success=[_delete(key), *(_delete(k) for k in deletes)],
            failure=[_range(key)])
        response, retried = await self._txn(request, what=f"delete {key}")
        if response.succeeded:
            return response.header.revision
        current = _failure_reads(response, [key])[key]
        if current is None:
            if retried and mod_revision > 0:
                deleted_at = await self._deletion_revision(key, mod_revision)
                log.info("retried delete finds the key gone", key=key,
                         mod_revision=mod_revision, deleted_at=deleted_at,
                         revision=response.header.revision)
                if deleted_at is not None:
                    return deleted_at
            raise KeyNotFound(key)
        raise KeyConflict(key, mod_revision, current)

    async def _deletion_revision(self, key: str, mod_revision: int) -> int | None:
        """The revision that deleted ``key`` as it was at ``mod_revision``, read from the
        store's history (a watch of the key from ``mod_revision + 1``: its first event).

        None when the key changed before it was deleted (that deletion was not of this
        version) or the history is compacted. Raises ``Unavailable`` when the current
        endpoint cannot answer within ``attempt_timeout``: the outcome stays unknown.
        """
        endpoint = self.endpoint
        call = rpc_pb2_grpc.WatchStub(self.channel(endpoint)).Watch()
        create = rpc_pb2.WatchCreateRequest(key=key_bytes(key), start_revision=mod_revision + 1,
                                            prev_kv=True)
        try:
            async with asyncio.timeout(self.attempt_timeout):
                await call.write(rpc_pb2.WatchRequest(create_request=create))
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        raise errors.Unavailable(
                            f"store unavailable: {endpoint} ended the watch that looks up "
                            f"the deletion of {key}")
                    if response.canceled:
                        return None  # compacted: the history that would tell is gone
                    if response.events:
                        event = response.events[0]
                        if (event.type == kv_pb2.Event.DELETE
                                and event.prev_kv.mod_revision == mod_revision):
                            return event.kv.mod_revision
                        return None
        except TimeoutError:
            raise errors.Unavailable(
                f"store unavailable: {endpoint} did not show the deletion of {key} within "
                f"{self.attempt_timeout:g}s") from None
        except grpc.aio.AioRpcError as e:
            raise map_error(e) from None
        finally:
            call.cancel()

    # -------------------------------------------------------------------- watch

    def watch(self, prefix: str, start_revision: int, *,
              progress_interval: float | None = None) -> StoreWatch:
        """Every change under ``prefix`` from ``start_revision`` on (0: from now), as
        :class:`WatchBatch` items; see :class:`StoreWatch`."""
        return StoreWatch(self, prefix, start_revision,
                          progress_interval=(self.progress_interval if progress_interval is None
                                             else progress_interval))
