"""The store's gRPC edge: etcd's KV, Watch, Lease, Cluster and Maintenance services.

Each method validates, delegates to the replica, and lets :func:`_unary` map an
:class:`EtcdError` to its status and fill the response header. No decision about the
data is made here.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from prometheus_client import Counter, Histogram

from services.store import errors, validation
from services.store.config import StoreConfig
from services.store.errors import EtcdError
from services.store.lessor import Lessor
from services.store.raft import Replica
from services.store.watch import SharedResponses, WatchStream
from skiff.serialized import accepting_bytes
from skiff.store.v1 import raft_pb2, rpc_pb2, rpc_pb2_grpc

#: etcd's bounds on a lease's TTL (its minimum follows from election timeouts; ours
#: elect within a second).
MIN_LEASE_TTL = 1
MAX_LEASE_TTL = 9_000_000_000
#: What Status reports as the server version: the etcd release whose API and watch
#: semantics the store follows. 3.5.13 and later answer a progress request in order with
#: the stream's events, as this store does; clients (Skiff's apiserver, Kubernetes') ask
#: earlier releases for no progress (services/apiserver/storage.py: orders_progress).
API_VERSION = "3.5.13"

REQUESTS = Counter("skiff_store_requests_total", "gRPC requests answered", ["method", "code"])
LATENCY = Histogram("skiff_store_request_seconds", "gRPC request latency", ["method"],
                    buckets=(.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))

Response = TypeVar("Response")


class Context:
    """What every servicer shares: the replica, the lessor, the config, and headers."""

    def __init__(self, config: StoreConfig, replica: Replica, lessor: Lessor) -> None:
        self.config = config
        self.replica = replica
        self.lessor = lessor
        self._member_ids = {m.peer_address: m.id for m in config.initial_cluster}
        self._cluster_id = config.cluster_id
        self._member_id = config.member.id

    def fill_header(self, header: rpc_pb2.ResponseHeader) -> None:
        header.cluster_id = self._cluster_id
        header.member_id = self._member_id
        header.raft_term = self.replica.term
        if not header.revision:
            header.revision = self.replica.store.revision

    @property
    def leader_id(self) -> int:
        address = self.replica.leader_address
        return self._member_ids.get(address, 0) if address else 0

    async def propose(self, command: raft_pb2.Command) -> Any:
        return await self.replica.propose(command, timeout=self.config.request_timeout)

    async def barrier(self) -> None:
        await self.replica.read_barrier(timeout=self.config.request_timeout)


def _unary(method: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Response]]
           ) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Response]]:
    """Map EtcdError to its gRPC status, fill the header, and count the call."""
    name = method.__name__
    answered, latency = REQUESTS.labels(name, "OK"), LATENCY.labels(name)

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Response:
        started = time.perf_counter()
        try:
            response = await method(self, request, context)
        except EtcdError as e:
            REQUESTS.labels(name, e.code.name).inc()
            await context.abort(e.code, e.message)
        self.ctx.fill_header(response.header)  # type: ignore[attr-defined]
        answered.inc()
        latency.observe(time.perf_counter() - started)
        return response

    return wrapper


def _is_read_only(request: rpc_pb2.TxnRequest) -> bool:
    for op in (*request.success, *request.failure):
        kind = op.WhichOneof("request")
        if kind in ("request_put", "request_delete_range"):
            return False
        if kind == "request_txn" and not _is_read_only(op.request_txn):
            return False
    return True


class KVService(rpc_pb2_grpc.KVServicer):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @_unary
    async def Range(self, request, context):
        validation.check_range(request)
        if not request.serializable:
            await self.ctx.barrier()
        with self.ctx.replica.lock:
            return self.ctx.replica.store.range(request)

    @_unary
    async def Put(self, request, context):
        validation.check_put(request)
        validation.check_size(request)
        return await self.ctx.propose(raft_pb2.Command(put=request))

    @_unary
    async def DeleteRange(self, request, context):
        validation.check_delete_range(request)
        return await self.ctx.propose(raft_pb2.Command(delete_range=request))

    @_unary
    async def Txn(self, request, context):
        validation.check_txn(request)
        validation.check_size(request)
        if _is_read_only(request):
            # Nothing to replicate: a barrier makes it linearizable, then answer locally.
            await self.ctx.barrier()
            with self.ctx.replica.lock:
                return self.ctx.replica.store.read_txn(request)
        return await self.ctx.propose(raft_pb2.Command(txn=request))

    @_unary
    async def Compact(self, request, context):
        return await self.ctx.propose(raft_pb2.Command(compaction=request))


class WatchService(rpc_pb2_grpc.WatchServicer):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.shared = SharedResponses(ctx.replica)

    async def Watch(self, request_iterator, context
                    ) -> AsyncIterator[rpc_pb2.WatchResponse | bytes]:
        stream = WatchStream(self.ctx.replica, self.ctx.fill_header,
                             progress_interval=self.ctx.config.progress_notify_interval,
                             shared=self.shared)
        async for response in stream.serve(request_iterator):
            yield response


def _add_watch_service(servicer: WatchService, server: grpc.aio.Server) -> None:
    """Register Watch as the generated code would, but with a serializer that also
    takes the shared, already serialized responses."""
    handler = accepting_bytes(grpc.stream_stream_rpc_method_handler(
        servicer.Watch, request_deserializer=rpc_pb2.WatchRequest.FromString,
        response_serializer=rpc_pb2.WatchResponse.SerializeToString))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "etcdserverpb.Watch", {"Watch": handler}),))


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @_unary
    async def LeaseGrant(self, request, context):
        if request.TTL > MAX_LEASE_TTL:
            raise errors.LEASE_TTL_TOO_LARGE
        # The id is chosen here, before proposing, so that applying stays deterministic.
        grant = rpc_pb2.LeaseGrantRequest(ID=request.ID or random.getrandbits(62) + 1,
                                          TTL=max(request.TTL, MIN_LEASE_TTL))
        return await self.ctx.propose(raft_pb2.Command(lease_grant=grant))

    @_unary
    async def LeaseRevoke(self, request, context):
        return await self.ctx.propose(raft_pb2.Command(lease_revoke=request))

    async def LeaseKeepAlive(self, request_iterator, context):
        async for request in request_iterator:
            try:
                response = await self.ctx.propose(raft_pb2.Command(lease_keep_alive=request))
            except EtcdError as e:
                await context.abort(e.code, e.message)
            self.ctx.fill_header(response.header)
            yield response

    @_unary
    async def LeaseTimeToLive(self, request, context):
        await self.ctx.barrier()
        with self.ctx.replica.lock:
            lease = self.ctx.replica.store.lease(request.ID)
            if lease is None:
                return rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
            response = rpc_pb2.LeaseTimeToLiveResponse(
                ID=request.ID, grantedTTL=lease.ttl,
                TTL=self.ctx.lessor.remaining(request.ID, lease.ttl))
            if request.keys:
                response.keys.extend(sorted(lease.keys))
        return response

    @_unary
    async def LeaseLeases(self, request, context):
        await self.ctx.barrier()
        with self.ctx.replica.lock:
            ids = self.ctx.replica.store.lease_ids()
        return rpc_pb2.LeaseLeasesResponse(leases=[rpc_pb2.LeaseStatus(ID=i) for i in ids])


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @_unary
    async def MemberList(self, request, context):
        if request.linearizable:
            await self.ctx.barrier()
        published = self.ctx.replica.store.members
        response = rpc_pb2.MemberListResponse()
        for member in self.ctx.config.initial_cluster:
            entry = response.members.add(ID=member.id, name=member.name,
                                         peerURLs=[member.peer_url])
            if member.id in published:
                entry.clientURLs.extend(published[member.id].clientURLs)
        return response


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @_unary
    async def Alarm(self, request, context):
        return rpc_pb2.AlarmResponse()  # no alarms are raised: there is no space quota

    @_unary
    async def Status(self, request, context):
        replica = self.ctx.replica
        size = sum(f.stat().st_size for f in self.ctx.config.data_dir.iterdir() if f.is_file())
        response = rpc_pb2.StatusResponse(
            version=API_VERSION, dbSize=size, dbSizeInUse=size, leader=self.ctx.leader_id,
            raftIndex=replica.commit_index, raftTerm=replica.term,
            raftAppliedIndex=replica.applied_index,
        )
        if not self.ctx.leader_id:
            response.errors.append(errors.NO_LEADER.message)
        return response

    @_unary
    async def HashKV(self, request, context):
        with self.ctx.replica.lock:
            crc, revision = self.ctx.replica.store.hash_kv(request.revision)
            compact_revision = self.ctx.replica.store.compact_revision
        response = rpc_pb2.HashKVResponse(hash=crc, compact_revision=compact_revision,
                                          hash_revision=revision)
        response.header.revision = revision
        return response


def add_services(server: grpc.aio.Server, ctx: Context) -> None:
    """Register every etcd service of the store on ``server``."""
    rpc_pb2_grpc.add_KVServicer_to_server(KVService(ctx), server)
    _add_watch_service(WatchService(ctx), server)
    rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseService(ctx), server)
    rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterService(ctx), server)
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceService(ctx), server)


SERVICE_NAMES = tuple(
    rpc_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("KV", "Watch", "Lease", "Cluster", "Maintenance")
)
