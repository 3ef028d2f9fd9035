"""Snapshotter: pysyncobj's dumps written off raft's thread, with real files in a temp dir.

pysyncobj's side of the protocol is played by hand here: it calls ``serialize`` and then
renames ``<dump>.tmp`` over the dump at once, polls ``check`` until the dump is done,
and calls ``deserialize`` at start and when a leader installs a dump.
"""

from __future__ import annotations

import gzip
import os
import pickle
import threading
from pathlib import Path

import pytest
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.serializer import Serializer

from services.store import dump_format, snapshots
from services.store.dump_format import DumpCorrupt
from services.store.mvcc import Store
from services.store.snapshots import MAGIC, Snapshotter
from skiff.store.v1 import raft_pb2, rpc_pb2

RAFT_STATE = ((b"entry-2", 2, 1), (b"entry-1", 1, 1), {"node"})


def filled(n: int, origin: int = 7) -> Store:
    store = Store()
    for i in range(n):
        store.apply_batch(raft_pb2.Batch(origin=origin, commands=[raft_pb2.Command(
            id=i + 1, put=rpc_pb2.PutRequest(key=b"k%d" % (i % 5), value=b"%d" % i))]))
    return store


def dump_as_pysyncobj_would(snapshotter: Snapshotter, dump: Path) -> None:
    tmp = Path(f"{dump}.tmp")
    snapshotter.serialize(str(tmp), RAFT_STATE)
    os.replace(tmp, dump)


def finished(snapshotter: Snapshotter, timeout: float = 10.0) -> int:
    snapshotter.check()  # pysyncobj's next tick: starts the writer
    assert snapshotter.wait(timeout), "the dump did not finish"
    return snapshotter.check()


def test_a_dump_restores_the_store_exactly_and_returns_the_raft_state(tmp_path):
    store, dump = filled(40), tmp_path / "snapshot"
    snapshotter = Snapshotter(store, threading.Lock(), str(dump))
    dump_as_pysyncobj_would(snapshotter, dump)
    assert finished(snapshotter) == SERIALIZER_STATE.SUCCESS
    assert snapshotter.check() == SERIALIZER_STATE.NOT_SERIALIZING  # reported once
    assert dump.read_bytes().startswith(MAGIC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot"]

    restored = Store()
    raft_state = Snapshotter(restored, threading.Lock(), str(dump)).deserialize(str(dump))
    assert raft_state == RAFT_STATE
    assert restored.snapshot() == store.snapshot()


def test_the_dump_is_of_the_state_when_asked_not_when_written(tmp_path, monkeypatch):
    store, dump = filled(10), tmp_path / "snapshot"
    expected = store.snapshot()
    release = threading.Event()
    write = snapshots.write_dump

    def slow_write(*args):
        release.wait(10)
        write(*args)

    monkeypatch.setattr(snapshots, "write_dump", slow_write)
    snapshotter = Snapshotter(store, threading.Lock(), str(dump))
    dump_as_pysyncobj_would(snapshotter, dump)
    assert snapshotter.check() == SERIALIZER_STATE.SERIALIZING
    filled_more = filled(20)  # the store moves on while the dump is written
    store.restore(filled_more.snapshot())
    release.set()
    assert finished(snapshotter) == SERIALIZER_STATE.SUCCESS
    restored = Store()
    Snapshotter(restored, threading.Lock(), str(dump)).deserialize(str(dump))
    assert restored.snapshot() == expected


def test_until_a_dump_is_written_the_previous_one_stays(tmp_path, monkeypatch):
    dump = tmp_path / "snapshot"
    first = Snapshotter(filled(5), threading.Lock(), str(dump))
    dump_as_pysyncobj_would(first, dump)
    finished(first)
    previous = dump.read_bytes()

    release = threading.Event()
    write = snapshots.write_dump
    monkeypatch.setattr(snapshots, "write_dump", lambda *a: (release.wait(10), write(*a)))
    second = Snapshotter(filled(30), threading.Lock(), str(dump))
    dump_as_pysyncobj_would(second, dump)
    assert dump.read_bytes() == previous  # pysyncobj's rename moved a link to it
    release.set()
    finished(second)
    assert dump.read_bytes() != previous


def test_the_writer_starts_after_pysyncobjs_rename_so_the_new_dump_stays(tmp_path):
    """pysyncobj renames ``<dump>.tmp`` (a link to the old dump) over the dump after
    ``serialize`` returns; a writer that landed first would be replaced by the old dump,
    and the log then truncated past it. The writer waits for the next ``check``."""
    dump = tmp_path / "snapshot"
    first = Snapshotter(filled(5), threading.Lock(), str(dump))
    dump_as_pysyncobj_would(first, dump)
    assert finished(first) == SERIALIZER_STATE.SUCCESS
    old = dump.read_bytes()
    assert old.startswith(MAGIC)

    store = filled(30)
    second = Snapshotter(store, threading.Lock(), str(dump))
    second.serialize(f"{dump}.tmp", RAFT_STATE)
    assert second.wait(0) and not list(tmp_path.glob("snapshot.writing.*"))  # not yet
    os.replace(f"{dump}.tmp", dump)  # pysyncobj, right after serialize returned
    assert finished(second) == SERIALIZER_STATE.SUCCESS
    assert dump.read_bytes() != old
    restored = Store()
    Snapshotter(restored, threading.Lock(), str(dump)).deserialize(str(dump))
    assert restored.snapshot() == store.snapshot()


def test_a_first_dump_that_never_finished_leaves_nothing_to_load(tmp_path, monkeypatch):
    dump = tmp_path / "snapshot"
    monkeypatch.setattr(snapshots, "write_dump", lambda *a: threading.Event().wait(10))
    dump_as_pysyncobj_would(Snapshotter(filled(5), threading.Lock(), str(dump)), dump)
    (tmp_path / "snapshot.writing.1").write_bytes(b"half a dump")  # then the process died
    assert dump.exists() and dump.stat().st_size == 0
    Snapshotter(Store(), threading.Lock(), str(dump)).prepare()
    assert list(tmp_path.iterdir()) == []


def test_a_dump_installed_by_the_leader_wins_over_one_being_written(tmp_path, monkeypatch):
    dump = tmp_path / "snapshot"
    leader_store = filled(50, origin=1)
    leader = Snapshotter(leader_store, threading.Lock(), str(tmp_path / "leader"))
    dump_as_pysyncobj_would(leader, tmp_path / "leader")
    finished(leader)

    release = threading.Event()
    write = snapshots.write_dump
    monkeypatch.setattr(snapshots, "write_dump", lambda *a: (release.wait(10), write(*a)))
    follower_store = filled(3)
    follower = Snapshotter(follower_store, threading.Lock(), str(dump))
    dump_as_pysyncobj_would(follower, dump)
    os.replace(tmp_path / "leader", dump)  # pysyncobj installs what the leader sent
    follower.deserialize(str(dump))
    assert follower.check() == SERIALIZER_STATE.FAILED
    release.set()
    assert follower.wait(10)
    assert not any(p.name.startswith("snapshot.writing") for p in tmp_path.iterdir())
    assert follower_store.snapshot() == leader_store.snapshot()
    restored = Store()
    Snapshotter(restored, threading.Lock(), str(dump)).deserialize(str(dump))
    assert restored.snapshot() == leader_store.snapshot()


def test_a_failed_write_is_reported_and_dumping_goes_on(tmp_path, monkeypatch):
    dump = tmp_path / "snapshot"

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(snapshots, "write_dump", broken)
    snapshotter = Snapshotter(filled(5), threading.Lock(), str(dump))
    dump_as_pysyncobj_would(snapshotter, dump)
    assert finished(snapshotter) == SERIALIZER_STATE.FAILED
    assert not dump.exists()  # no empty stand-in left behind to load
    monkeypatch.undo()
    dump_as_pysyncobj_would(snapshotter, dump)
    assert finished(snapshotter) == SERIALIZER_STATE.SUCCESS


def test_dumps_written_by_pysyncobj_itself_still_load(tmp_path):
    store, dump = filled(12), tmp_path / "snapshot"
    dump.write_bytes(gzip.compress(pickle.dumps(([{}, store.snapshot()], *RAFT_STATE))))
    restored = Store()
    assert Snapshotter(restored, threading.Lock(), str(dump)).deserialize(str(dump)) == RAFT_STATE
    assert restored.snapshot() == store.snapshot()


def test_a_file_that_is_not_a_dump_is_refused(tmp_path):
    path = tmp_path / "snapshot"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a store dump"):
        Snapshotter(Store(), threading.Lock(), str(path)).deserialize(str(path))


def written_dump(tmp_path: Path, n: int = 20) -> Path:
    dump = tmp_path / "snapshot"
    writer = Snapshotter(filled(n), threading.Lock(), str(dump))
    dump_as_pysyncobj_would(writer, dump)
    assert finished(writer) == SERIALIZER_STATE.SUCCESS
    return dump


def test_a_dump_is_restored_before_raft_starts_and_its_first_load_reuses_it(tmp_path):
    dump = written_dump(tmp_path)
    store = Store()
    snapshotter = Snapshotter(store, threading.Lock(), str(dump))
    assert snapshotter.preload() is True
    assert store.revision == filled(20).revision
    assert snapshotter.deserialize(str(dump)) == RAFT_STATE  # pysyncobj's first load
    store.restore(raft_pb2.Snapshot().SerializeToString())
    assert snapshotter.deserialize(str(dump)) == RAFT_STATE  # a later one reads the file
    assert store.revision == filled(20).revision


@pytest.mark.parametrize("damage", ["cut", "garbage", "not_a_dump"])
def test_a_dump_that_cannot_be_read_is_moved_aside_and_the_store_left_empty(tmp_path, damage):
    dump = written_dump(tmp_path)
    data = dump.read_bytes()
    damaged = {"cut": data[:len(data) // 2],
               "garbage": data[:len(MAGIC) + 8] + os.urandom(len(data)),
               "not_a_dump": b"hello"}[damage]
    dump.write_bytes(damaged)
    store = Store()
    snapshotter = Snapshotter(store, threading.Lock(), str(dump))
    assert snapshotter.preload() is False
    assert not dump.exists()
    aside = list(tmp_path.glob("snapshot.unreadable.*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept to investigate
    assert store.snapshot() == Store().snapshot()  # nothing half-restored


# ---------------------------------------------------------------- the dump's format

SNAPSHOT = filled(30).snapshot()


def test_a_format_2_dump_round_trips():
    data = dump_format.encode(RAFT_STATE, SNAPSHOT)
    assert data.startswith(MAGIC)
    assert dump_format.decode(data) == (RAFT_STATE, SNAPSHOT)


def test_a_dump_cut_anywhere_is_refused():
    data = dump_format.encode(RAFT_STATE, SNAPSHOT)
    for length in range(len(data)):  # every cut, including at each protobuf field boundary
        with pytest.raises(DumpCorrupt):
            dump_format.decode(data[:length])


def test_a_dump_with_any_bit_flipped_is_refused():
    data = dump_format.encode(RAFT_STATE, SNAPSHOT)
    for position in range(len(data)):
        for bit in (0x01, 0x80):
            flipped = bytearray(data)
            flipped[position] ^= bit
            with pytest.raises(DumpCorrupt):
                dump_format.decode(bytes(flipped))


def test_a_dump_with_bytes_appended_is_refused():
    with pytest.raises(DumpCorrupt, match="header says"):
        dump_format.decode(dump_format.encode(RAFT_STATE, SNAPSHOT) + b"\0")


def test_format_1_dumps_written_before_the_checksum_still_load():
    state = pickle.dumps(RAFT_STATE)
    data = dump_format.MAGIC_V1 + len(state).to_bytes(8, "big") + state + SNAPSHOT
    assert dump_format.decode(data) == (RAFT_STATE, SNAPSHOT)


def test_a_damaged_pysyncobj_dump_is_refused():
    data = gzip.compress(pickle.dumps(([{}, SNAPSHOT], *RAFT_STATE)))
    for damaged in (data[:len(data) // 2], data[:-1],
                    data[:-12] + bytes([data[-12] ^ 1]) + data[-11:]):
        with pytest.raises(DumpCorrupt):
            dump_format.decode(damaged)


def test_the_written_dump_is_verified_whole(tmp_path):
    dump = written_dump(tmp_path)
    data = dump.read_bytes()
    assert dump_format.decode(data)[0] == RAFT_STATE
    dump.write_bytes(data[:-1])
    with pytest.raises(DumpCorrupt, match="cut short"):
        snapshots.read_dump(dump)


@pytest.mark.parametrize("piece", [1, 7, 100, 1 << 20])
def test_a_dump_checked_as_it_arrives_in_pieces(piece):
    data = dump_format.encode(RAFT_STATE, SNAPSHOT)

    def problem(received: bytes) -> str | None:
        check = dump_format.DumpCheck()
        for start in range(0, len(received), piece):
            check.feed(received[start:start + piece])
        return check.problem()

    assert problem(data) is None
    for cut in (0, 5, dump_format.PAYLOAD_OFFSET - 1, dump_format.PAYLOAD_OFFSET,
                len(data) // 2, len(data) - 1):
        assert problem(data[:cut]) is not None
    middle = len(data) // 2
    assert problem(data[:middle] + bytes([data[middle] ^ 4]) + data[middle + 1:]) \
        == "checksum mismatch"


def transfer(serializer: Serializer, data: bytes, batch: int = 64) -> bool:
    """Feed ``data`` to pysyncobj's receiving side as a leader's transfer arrives."""
    pieces = [data[i:i + batch] for i in range(0, len(data), batch)] + [b""]
    return [serializer.setTransmissionData((p, i == 0, p == b""))
            for i, p in enumerate(pieces)][-1]


def test_a_damaged_dump_from_the_leader_is_not_installed_over_ours(tmp_path):
    """pysyncobj renames a received dump over ours before loading (and acknowledging)
    it; a damaged one must never get that far."""
    dump = tmp_path / "snapshot"
    ours = dump_format.encode(RAFT_STATE, filled(3).snapshot())
    dump.write_bytes(ours)
    serializer = Serializer(str(dump), 64, False, None, None, None)
    snapshots.check_received_dumps(serializer)
    sent = dump_format.encode(RAFT_STATE, SNAPSHOT)
    middle = len(sent) // 2
    for bad in (sent[:middle], sent[:-1], sent[:middle] + b"\xff" + sent[middle + 1:]):
        assert transfer(serializer, bad) is False
        assert dump.read_bytes() == ours
    assert transfer(serializer, sent) is True  # sent again, intact: installed
    assert dump.read_bytes() == sent
