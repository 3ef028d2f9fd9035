"""The smallest end-to-end check of the store: a write on one replica, read on another."""

from __future__ import annotations

import grpc

from skiff.store.v1 import rpc_pb2, rpc_pb2_grpc


async def test_put_on_one_replica_is_read_linearizably_on_another(store_cluster):
    first, second = store_cluster.endpoints[0], store_cluster.endpoints[1]
    async with grpc.aio.insecure_channel(first) as a, grpc.aio.insecure_channel(second) as b:
        put = await rpc_pb2_grpc.KVStub(a).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"))
        got = await rpc_pb2_grpc.KVStub(b).Range(rpc_pb2.RangeRequest(key=b"k"))
    assert [(kv.key, kv.value) for kv in got.kvs] == [(b"k", b"v")]
    assert got.kvs[0].mod_revision == put.header.revision
