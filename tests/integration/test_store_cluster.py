"""The cluster: status and membership, replicas that agree, linearizable reads, and
replicas (leader or not) SIGKILLed and restarted from their data directories.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from storeclient import DEADLINE, Client, WatchStream, connect, connect_all, prefix_end

from services.store.snapshots import MAGIC
from skiff.store.v1 import rpc_pb2
from skiff.testing.processes import StoreCluster, wait_for


async def status(client: Client) -> rpc_pb2.StatusResponse:
    return await client.maintenance.Status(rpc_pb2.StatusRequest(), timeout=DEADLINE)


async def hashes(clients: list[Client], revision: int) -> set[tuple[int, int, int]]:
    """(hash, compact_revision, hash_revision) of each replica, after a read barrier on it."""
    out = set()
    for client in clients:
        await client.get(b"\0", count_only=True)
        h = await client.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=revision))
        out.add((h.hash, h.compact_revision, h.hash_revision))
    return out


async def write_keys(clients: list[Client], prefix: str, count: int) -> list[int]:
    """Put ``prefix/i = i`` round-robin through ``clients``; the revisions, in order."""
    return [(await clients[i % len(clients)].put(f"{prefix}/{i:03}".encode(),
                                                 str(i).encode())).header.revision
            for i in range(count)]


async def dumps_written(cluster: StoreCluster, members) -> bool:
    """Whether each of ``members`` has written a dump of its state (snapshots.py's format)."""
    return all((cluster.members[i].data_dir / "snapshot").is_file()
               and (cluster.members[i].data_dir / "snapshot").read_bytes().startswith(MAGIC)
               for i in members)


async def rejoin(cluster: StoreCluster, clients: list[Client], index: int, *,
                 revision: int) -> Client:
    """Restart replica ``index``; its client, once it has applied up to ``revision``."""
    cluster.restart(index)
    await cluster.wait_healthy(members=[index])
    client = clients[index]

    async def caught_up() -> bool:
        return (await client.get(b"\0", count_only=True, serializable=True)
                ).header.revision == revision

    await wait_for(caught_up, timeout=DEADLINE, what=f"replica {index} at revision {revision}")
    return client


async def test_status_and_member_list_agree_on_every_replica(store_cluster):
    async with connect_all(store_cluster.endpoints) as clients:
        async def agreed() -> list[rpc_pb2.StatusResponse] | None:
            statuses = [await status(c) for c in clients]
            same = len({(s.leader, s.raftTerm) for s in statuses}) == 1
            return statuses if same and statuses[0].leader else None

        statuses = await wait_for(agreed, timeout=DEADLINE, what="replicas agree on a leader")
        member_ids = [s.header.member_id for s in statuses]
        assert len(set(member_ids)) == 3
        assert statuses[0].leader in member_ids
        assert len({s.header.cluster_id for s in statuses}) == 1
        for s in statuses:
            assert (s.version, list(s.errors), s.isLearner) == ("3.5.13", [], False)
            assert s.raftTerm >= 1 and s.raftIndex >= 1 and s.raftAppliedIndex >= 1
            assert s.dbSize > 0
        assert statuses[await store_cluster.leader()].header.member_id == statuses[0].leader
        # Writes move the raft index on.
        before = statuses[0].raftIndex
        await clients[1].put(b"k", b"v")
        assert (await status(clients[0])).raftIndex > before

        async def published(client: Client) -> rpc_pb2.MemberListResponse | None:
            members = await client.cluster.MemberList(
                rpc_pb2.MemberListRequest(linearizable=True), timeout=DEADLINE)
            return members if all(m.clientURLs for m in members.members) else None

        for client in clients:
            members = await wait_for(lambda c=client: published(c), timeout=DEADLINE,
                                     what="every member's client URLs published")
            listed = sorted((m.name, m.ID, list(m.clientURLs), len(m.peerURLs), m.isLearner)
                            for m in members.members)
            assert listed == [(f"s{i}", member_ids[i], [f"http://{endpoint}"], 1, False)
                              for i, endpoint in enumerate(store_cluster.endpoints)]
            assert members.header.member_id in member_ids


async def test_replicas_hash_the_same_at_the_same_revision(store_cluster):
    async with connect_all(store_cluster.endpoints) as clients:
        revisions = await write_keys(clients, "h", 30)
        await clients[0].delete(b"h/010", b"h/020")                       # 32
        await clients[1].txn(success=[rpc_pb2.RequestOp(
            request_put=rpc_pb2.PutRequest(key=b"h/t", value=b"t"))])   # 33
        assert revisions == list(range(2, 32))
        at_33 = await hashes(clients, 33)
        assert len(at_33) == 1 and next(iter(at_33))[1:] == (0, 33)
        at_20 = await hashes(clients, 20)
        assert len(at_20) == 1 and at_20 != at_33
        assert await hashes(clients, 0) == at_33  # 0: the current revision


async def test_a_read_on_one_replica_sees_a_write_just_made_on_another(store_cluster):
    async with connect_all(store_cluster.endpoints) as clients:
        for i in range(150):
            writer, reader = clients[i % 3], clients[(i + 1 + i // 3) % 3]
            if reader is writer:
                reader = clients[(i + 2) % 3]
            put = await writer.put(b"lin", str(i).encode())
            assert put.header.revision == i + 2
            got = await reader.get(b"lin")
            assert [(kv.value, kv.mod_revision) for kv in got.kvs] == [
                (str(i).encode(), i + 2)], (i, writer.endpoint, reader.endpoint)


async def test_concurrent_writes_get_one_revision_each(store_cluster):
    async with connect_all(store_cluster.endpoints) as clients:
        puts = await asyncio.gather(*(clients[i % 3].put(f"c/{i}".encode(), str(i).encode())
                                      for i in range(90)))
        assert sorted(p.header.revision for p in puts) == list(range(2, 92))
        got = await clients[2].get(b"c/", prefix_end(b"c/"))
        by_key = {kv.key: kv.mod_revision for kv in got.kvs}
        assert by_key == {f"c/{i}".encode(): p.header.revision for i, p in enumerate(puts)}


async def _writer(clients: list[Client], log: list[tuple[int, bytes, bytes]],
                  stop: asyncio.Event) -> None:
    """Put w/<n> = n through ``clients`` in turn until ``stop``; record each revision."""
    n = 0
    while not stop.is_set():
        key, value = f"w/{n % 7}".encode(), str(n).encode()
        put = await clients[n % len(clients)].put(key, value)
        log.append((put.header.revision, key, value))
        n += 1
        await asyncio.sleep(0.005)  # pacing the writer, not waiting for anything


async def _collect(stream: WatchStream, seen: list[tuple[int, bytes, bytes]],
                   until: int) -> None:
    """Append (revision, key, value) of each event until revision ``until`` was seen."""
    while not seen or seen[-1][0] < until:
        response = await stream.next()
        assert not response.canceled, response
        seen.extend((e.kv.mod_revision, e.kv.key, e.kv.value) for e in response.events)


async def test_a_watcher_resumes_on_another_replica_after_its_replica_is_killed(store_cluster):
    leader = await store_cluster.leader()
    victim = (leader + 1) % 3
    others = [i for i in range(3) if i != victim]
    async with connect_all(store_cluster.endpoints) as clients:
        log: list[tuple[int, bytes, bytes]] = []
        seen: list[tuple[int, bytes, bytes]] = []
        stop = asyncio.Event()
        writer = asyncio.get_running_loop().create_task(
            _writer([clients[i] for i in others], log, stop))
        try:
            async with clients[victim].watch() as stream:
                await stream.create(b"w/", prefix_end(b"w/"), start_revision=2)
                await _collect(stream, seen, until=30)
                store_cluster.kill(victim)
                # Whatever the dying replica had already sent is kept; then the stream ends.
                try:
                    while True:
                        response = await stream.next()
                        seen.extend((e.kv.mod_revision, e.kv.key, e.kv.value)
                                    for e in response.events)
                except grpc.aio.AioRpcError as e:
                    assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            async with clients[others[0]].watch() as stream:
                await stream.create(b"w/", prefix_end(b"w/"), start_revision=seen[-1][0] + 1)
                await _collect(stream, seen, until=seen[-1][0] + 40)
                stop.set()
                await writer
                await _collect(stream, seen, until=log[-1][0])
        finally:
            stop.set()
            await asyncio.gather(writer, return_exceptions=True)
    assert [revision for revision, _, _ in seen] == list(range(2, log[-1][0] + 1))
    assert seen == log


async def test_a_killed_follower_restarts_from_its_data_and_catches_up(store_cluster):
    leader = await store_cluster.leader()
    victim = (leader + 2) % 3
    live = [i for i in range(3) if i != victim]
    async with connect_all(store_cluster.endpoints) as clients:
        lease = (await clients[leader].lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600))).ID
        before = await write_keys(clients, "before", 20)                  # 2..21
        store_cluster.kill(victim)
        during = await write_keys([clients[i] for i in live], "during", 40)   # 22..61
        await clients[live[0]].delete(b"before/000", b"before/010")       # 62
        await clients[live[1]].put(b"leased", lease=lease)                # 63
        assert (before[-1], during) == (21, list(range(22, 62)))
        restarted = await rejoin(store_cluster, clients, victim, revision=63)
        got = await restarted.get(b"\0", b"\0", serializable=True, keys_only=True)
        assert [kv.key for kv in got.kvs] == (
            [f"before/{i:03}".encode() for i in range(10, 20)]
            + [f"during/{i:03}".encode() for i in range(40)] + [b"leased"])
        assert await restarted.values(b"during/039") == [(b"during/039", b"39")]
        assert len(await hashes(clients, 63)) == 1
        ttl = await restarted.lease.LeaseTimeToLive(
            rpc_pb2.LeaseTimeToLiveRequest(ID=lease, keys=True))
        assert list(ttl.keys) == [b"leased"]
        # And it takes writes again.
        assert (await restarted.put(b"after", b"x")).header.revision == 64
        assert await clients[live[0]].values(b"after") == [(b"after", b"x")]


async def test_a_killed_leader_is_replaced_and_catches_up_after_restart(store_cluster):
    old_leader = await store_cluster.leader()
    live = [i for i in range(3) if i != old_leader]
    async with connect_all(store_cluster.endpoints) as clients:
        term = (await status(clients[old_leader])).raftTerm
        assert await write_keys(clients, "a", 10) == list(range(2, 12))
        store_cluster.kill(old_leader)
        new_leader = await store_cluster.leader()
        assert new_leader in live
        assert (await status(clients[new_leader])).raftTerm > term
        assert await write_keys([clients[i] for i in live], "b", 20) == list(range(12, 32))
        store_cluster.restart(old_leader)
        await store_cluster.wait_healthy(members=[old_leader])
        rejoined = clients[old_leader]
        # A linearizable read on the old leader sees everything written while it was dead.
        assert (await rejoined.get(b"b/", prefix_end(b"b/"), count_only=True)).count == 20
        assert await rejoined.values(b"b/019") == [(b"b/019", b"19")]
        assert len(await hashes(clients, 31)) == 1
        statuses = [await status(c) for c in clients]
        assert {s.leader for s in statuses} == {statuses[new_leader].header.member_id}


@pytest.mark.parametrize("flags", [(), ("--snapshot-count", "20")], ids=["journal", "dumps"])
async def test_the_whole_cluster_killed_and_restarted_keeps_its_data(make_store_cluster, flags):
    """From journals alone, and (every 20 entries) from dumps plus the journal since."""
    cluster = await make_store_cluster(*flags)
    async with connect_all(cluster.endpoints) as clients:
        lease = (await clients[0].lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600))).ID
        await write_keys(clients, "d", 90)                                 # 2..91
        await clients[1].put(b"d/leased", b"l", lease=lease)               # 92
        await clients[2].kv.Compact(rpc_pb2.CompactionRequest(revision=10))
        if flags:
            await wait_for(lambda: dumps_written(cluster, range(3)), timeout=DEADLINE,
                           what="every replica dumps its state")
        await write_keys(clients, "e", 7)                                  # 93..99
        before = await hashes(clients, 99)
    cluster.crash_all()
    await cluster.wait_healthy()
    async with connect_all(cluster.endpoints) as clients:
        assert await hashes(clients, 99) == before
        for client in clients:
            assert await client.revision() == 99
            assert (await client.get(b"d/", prefix_end(b"d/"), count_only=True)).count == 91
            assert (await client.get(b"d/003", revision=10)).kvs[0].value == b"3"
            ttl = await client.lease.LeaseTimeToLive(
                rpc_pb2.LeaseTimeToLiveRequest(ID=lease, keys=True))
            assert (ttl.grantedTTL, list(ttl.keys)) == (600, [b"d/leased"])
        assert (await clients[0].put(b"d/next")).header.revision == 100


async def test_a_client_of_a_killed_replica_can_use_any_other(store_cluster):
    async with connect(store_cluster.endpoints[0]) as first:
        await first.put(b"k", b"v")
    store_cluster.kill(0)
    async with connect_all(store_cluster.endpoints[1:]) as (b, c):
        await wait_for(lambda: b.put(b"k2", b"v2"), timeout=DEADLINE, what="a write on s1")
        assert await c.values(b"\0", b"\0") == [(b"k", b"v"), (b"k2", b"v2")]
