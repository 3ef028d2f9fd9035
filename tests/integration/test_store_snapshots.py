"""Full dumps and log compaction (services/store/snapshots.py) on three real replicas.

With ``--snapshot-count 20`` every replica dumps its state and truncates its raft log
every 20 entries: a follower so far behind that the leader no longer has the entries it
needs is sent the leader's dump instead. (A whole cluster restarted from dumps and
journals is in test_store_cluster.py.)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from storeclient import DEADLINE, connect_all, prefix_end
from test_store_cluster import dumps_written, hashes, rejoin, write_keys

from services.store.snapshots import read_dump
from skiff.store.v1 import raft_pb2, rpc_pb2
from skiff.testing.processes import wait_for

SNAPSHOT_COUNT = "20"


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
        rejoined = await rejoin(cluster, clients, victim, revision=131)
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


async def test_a_replica_whose_journal_outlived_its_dump_discards_it_for_the_leaders(
        make_store_cluster):
    # A journal compacted to start past the dump it relied on (the dump lost, say on a
    # bad disk) can never be applied; the replica must not wait for that forever.
    cluster = await make_store_cluster("--snapshot-count", SNAPSHOT_COUNT)
    leader = await cluster.leader()
    victim = (leader + 1) % 3
    async with connect_all(cluster.endpoints) as clients:
        await write_keys(clients, "before", 60)                          # 2..61
        await wait_for(lambda: dumps_written(cluster, range(3)), timeout=DEADLINE,
                       what="every replica dumps its state")
        cluster.kill(victim)
        (cluster.members[victim].data_dir / "snapshot").unlink()
        # No writes meanwhile: the leader's log still holds all the victim's journal, so
        # only the victim itself can see that its journal does not connect.
        rejoined = await rejoin(cluster, clients, victim, revision=61)
        assert (await rejoined.get(b"before/", prefix_end(b"before/"),
                                   serializable=True, count_only=True)).count == 60
        assert len(await hashes(clients, 61)) == 1
        assert (await rejoined.put(b"after", b"x")).header.revision == 62
    assert "journal starts past" in cluster.members[victim].daemon.log_tail(200)


def field_boundary_near_middle(data: bytes) -> int:
    """Where in the dump ``data`` one of its Snapshot's top-level fields ends, nearest
    its middle: a cut there leaves a shorter Snapshot that still parses (the cut CI once
    hit by chance, which a dump without a length and checksum loaded as valid)."""
    snapshot = read_dump_bytes(data)
    start, pos, ends = len(data) - len(snapshot), 0, []
    while pos < len(snapshot):
        tag, pos = _varint(snapshot, pos)
        value, pos = _varint(snapshot, pos)
        pos += value if tag & 7 == 2 else 0  # length-delimited, else a varint (no others)
        ends.append(start + pos)
    return min(ends, key=lambda end: abs(end - len(data) // 2))


def read_dump_bytes(data: bytes) -> bytes:
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        return read_dump(Path(f.name))[1]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def damaged(data: bytes, damage: str) -> bytes:
    """``data`` cut short or with one byte flipped, as a torn write or a bad disk leaves it."""
    if damage == "flip":
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]
    if damage == "field_boundary":
        return data[:field_boundary_near_middle(data)]
    return data[:{"quarter": len(data) // 4, "half": len(data) // 2,
                  "all_but_one": len(data) - 1}[damage]]


@pytest.mark.parametrize("damage", ["quarter", "half", "all_but_one", "flip", "field_boundary"])
async def test_a_replica_whose_dump_cannot_be_read_moves_it_aside_for_the_leaders(
        make_store_cluster, damage):
    # A dump that does not read back whole used to either leave the replica waiting
    # forever on a journal that starts past it, or (cut at a protobuf field boundary)
    # load as a smaller valid dump, the journal replayed on top: keys silently missing.
    # The dump's length and checksum now refuse every such dump before it is applied.
    cluster = await make_store_cluster("--snapshot-count", SNAPSHOT_COUNT)
    leader = await cluster.leader()
    victim = (leader + 1) % 3
    async with connect_all(cluster.endpoints) as clients:
        await write_keys(clients, "before", 60)                          # 2..61
        await wait_for(lambda: dumps_written(cluster, range(3)), timeout=DEADLINE,
                       what="every replica dumps its state")
        cluster.kill(victim)
        dump = cluster.members[victim].data_dir / "snapshot"
        dump.write_bytes(damaged(dump.read_bytes(), damage))
        rejoined = await rejoin(cluster, clients, victim, revision=61)
        assert (await rejoined.get(b"before/", prefix_end(b"before/"),
                                   serializable=True, count_only=True)).count == 60
        assert len(await hashes(clients, 61)) == 1
        assert (await rejoined.put(b"after", b"x")).header.revision == 62
    log_tail = cluster.members[victim].daemon.log_tail(200)
    assert "the dump cannot be read" in log_tail and "journal starts past" in log_tail
    assert list(cluster.members[victim].data_dir.glob("snapshot.unreadable.*"))
