"""Full dumps and log compaction (services/store/snapshots.py) on three real replicas.

With ``--snapshot-count 20`` every replica dumps its state and truncates its raft log
every 20 entries, so these tests cross many dumps: a restart from dump + journal, and a
follower so far behind that the leader no longer has the entries it needs and sends it
its dump instead.
"""

from __future__ import annotations

from storeclient import DEADLINE, connect_all, prefix_end
from test_store_cluster import hashes, write_keys

from services.store.snapshots import MAGIC, read_dump
from skiff.store.v1 import raft_pb2, rpc_pb2
from skiff.testing.processes import wait_for

SNAPSHOT_COUNT = "20"


async def dumps_written(cluster, members) -> bool:
    return all((cluster.members[i].data_dir / "snapshot").is_file()
               and (cluster.members[i].data_dir / "snapshot").read_bytes().startswith(MAGIC)
               for i in members)


async def test_a_follower_behind_the_compacted_log_is_sent_the_leaders_dump(make_store_cluster):
    cluster = await make_store_cluster("--snapshot-count", SNAPSHOT_COUNT)
    leader = await cluster.leader()
    victim = (leader + 1) % 3
    live = [i for i in range(3) if i != victim]
    async with connect_all(cluster.endpoints) as clients:
        await write_keys(clients, "before", 10)                          # 2..11
        cluster.kill(victim)
        # One raft entry per sequential put: far more than the leader keeps after a dump.
        await write_keys([clients[i] for i in live], "during", 120)     # 12..131
        await wait_for(lambda: dumps_written(cluster, live), timeout=DEADLINE,
                       what="the live replicas dump their state")
        await clients[leader].kv.Compact(rpc_pb2.CompactionRequest(revision=50))
        cluster.restart(victim)
        await cluster.wait_healthy(members=[victim])
        rejoined = clients[victim]

        async def caught_up() -> bool:
            return (await rejoined.get(b"\0", count_only=True, serializable=True)
                    ).header.revision == 131

        await wait_for(caught_up, timeout=DEADLINE, what="the rejoined replica at revision 131")
        assert (await rejoined.get(b"during/", prefix_end(b"during/"),
                                   serializable=True, count_only=True)).count == 120
        assert await rejoined.values(b"during/119") == [(b"during/119", b"119")]
        # Compacted history stays compacted there too, and the state hashes the same.
        assert len(await hashes(clients, 131)) == 1
        assert (await rejoined.get(b"during/040", revision=60)).kvs[0].value == b"40"
        assert (await rejoined.put(b"after", b"x")).header.revision == 132
    # It caught up through a dump: the one on its disk holds what it never saw live.
    _, snapshot = read_dump(cluster.members[victim].data_dir / "snapshot")
    assert raft_pb2.Snapshot.FromString(snapshot).revision > 11


async def test_the_whole_cluster_restarts_from_dumps_and_journals(make_store_cluster):
    cluster = await make_store_cluster("--snapshot-count", SNAPSHOT_COUNT)
    async with connect_all(cluster.endpoints) as clients:
        lease = (await clients[0].lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600))).ID
        await write_keys(clients, "d", 90)                               # 2..91
        await clients[1].put(b"d/leased", b"l", lease=lease)             # 92
        await wait_for(lambda: dumps_written(cluster, range(3)), timeout=DEADLINE,
                       what="every replica dumps its state")
        await write_keys(clients, "e", 7)                                # 93..99: journal only
        before = await hashes(clients, 99)
    for i in range(3):
        cluster.kill(i)
    for i in range(3):
        cluster.restart(i)
    await cluster.wait_healthy()
    async with connect_all(cluster.endpoints) as clients:
        assert await hashes(clients, 99) == before
        for client in clients:
            assert await client.revision() == 99
            assert (await client.get(b"d/", prefix_end(b"d/"), count_only=True)).count == 91
            ttl = await client.lease.LeaseTimeToLive(
                rpc_pb2.LeaseTimeToLiveRequest(ID=lease, keys=True))
            assert (ttl.grantedTTL, list(ttl.keys)) == (600, [b"d/leased"])
        assert (await clients[2].put(b"d/next")).header.revision == 100
