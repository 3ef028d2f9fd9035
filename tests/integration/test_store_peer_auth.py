"""Raft traffic between replicas is sealed with the peer password (services/store/peer_cipher.py).

pysyncobj unpickles what its peers send, so the tests aim at that: a pickle that would
run code if it were ever unpickled is sent straight to each replica's raft port, and a
replica started with another password must stay outside the cluster.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import struct
import zlib
from pathlib import Path

from storeclient import DEADLINE, connect, connect_all

from services.store.peer_cipher import PeerCipher, password_key
from skiff.store.v1 import rpc_pb2
from skiff.testing.fixtures import failed
from skiff.testing.processes import LOOPBACK, StoreCluster, wait_for


class _MakeDirectory:
    """Unpickling this creates a directory: proof that a replica unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def _frame(data: bytes) -> bytes:
    return struct.pack("i", len(data)) + data  # pysyncobj's framing


async def _closed_by_peer(port: int, payload: bytes) -> bool:
    """Send ``payload`` to a raft port; True once the replica hangs up on it."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1 << 16), DEADLINE) == b""
    finally:
        writer.close()


async def test_an_unsealed_pickle_sent_to_a_raft_port_is_never_unpickled(store_cluster, tmp_path):
    marker = tmp_path / "unpickled"
    bare = _frame(zlib.compress(pickle.dumps(_MakeDirectory(marker), 2)))
    forged = _frame(PeerCipher(password_key("not the cluster's")).encrypt_at_time(
        zlib.compress(pickle.dumps(_MakeDirectory(marker), 2)), 0))
    for member in store_cluster.members:
        assert await _closed_by_peer(member.peer_port, bare)
        assert await _closed_by_peer(member.peer_port, forged)
    assert not marker.exists()
    async with connect_all(store_cluster.endpoints) as clients:
        written = await clients[0].put(b"after", b"still serving")
        for client in clients:
            got = await client.get(b"after")
            assert [kv.value for kv in got.kvs] == [b"still serving"]
            assert got.header.revision >= written.header.revision


async def test_a_replica_with_another_password_stays_out(tmp_path, request):
    cluster = StoreCluster(tmp_path / "store")
    outsider = cluster.members[2]
    wrong = tmp_path / "wrong-password"
    wrong.write_text("a different secret")
    argv = outsider.daemon.argv
    argv[argv.index("--peer-password-file") + 1] = str(wrong)
    cluster.start()
    try:
        await cluster.wait_healthy(members=[0, 1])
        async with connect_all([m.endpoint for m in cluster.members]) as clients:
            await clients[0].put(b"k", b"v")
            # The two that share the password commit without the third.
            got = await clients[1].get(b"k")
            assert [kv.value for kv in got.kvs] == [b"v"]
            # The outsider never hears from them: no leader, nothing applied. Its status
            # is read after a later write has committed, so it had every chance to.
            await clients[0].put(b"sentinel", b"")
            inside, status = [await c.maintenance.Status(rpc_pb2.StatusRequest(),
                                                         timeout=DEADLINE)
                              for c in (clients[0], clients[2])]
            assert status.leader == 0 and list(status.errors)
            assert status.raftAppliedIndex < inside.raftAppliedIndex
            outside = await clients[2].get(b"k", serializable=True)
            assert list(outside.kvs) == []
    finally:
        cluster.stop()
        if failed(request):
            print(cluster.logs())


async def test_a_restarted_replica_rejoins_with_a_new_sender_key(store_cluster):
    """Each process seals under a key of its own: peers must accept a restarted one's."""
    leader = await store_cluster.leader()
    follower = (leader + 1) % 3
    store_cluster.restart(follower)
    await store_cluster.wait_healthy()
    async with connect(store_cluster.members[leader].endpoint) as client:
        written = await client.put(b"after-restart", b"1")
    async with connect(store_cluster.members[follower].endpoint) as client:
        async def applied() -> bool:
            got = await client.get(b"after-restart", serializable=True)
            return got.header.revision >= written.header.revision and bool(got.kvs)
        await wait_for(applied, timeout=DEADLINE, what="the restarted replica applies a write")
