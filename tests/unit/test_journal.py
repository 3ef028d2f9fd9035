"""RaftJournal: pysyncobj's log on real files in a temp dir, reopened as after a crash."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from pysyncobj.journal import FileJournal

from services.store import journal as journal_module
from services.store.disk import Disk
from services.store.journal import (
    HEADER_SIZE,
    MAGIC,
    PREALLOCATE,
    JournalError,
    RaftJournal,
    encode_record,
)


def entries(n: int, first: int = 1, term: int = 1) -> list[tuple[bytes, int, int]]:
    return [(b"cmd-%d-" % i + b"x" * (i % 7), i, term) for i in range(first, first + n)]


def records(items: list[tuple[bytes, int, int]], seed: int = 0) -> bytes:
    """The records of ``items``, chained from ``seed``."""
    out, crc = b"", seed
    for item in items:
        record, crc = encode_record(*item, crc)
        out += record
    return out


def content(path) -> bytes:
    """The journal's header and records, without the preallocated zeros."""
    return path.read_bytes().rstrip(b"\0")


def filled(path, n: int = 5, **kwargs) -> RaftJournal:
    journal = RaftJournal(path, **kwargs)
    for entry in entries(n):
        journal.add(*entry)
    journal.sync()
    return journal


def test_entries_round_trip_through_a_reopen(tmp_path):
    path = tmp_path / "journal"
    journal = filled(path, 5)
    assert list(journal) == entries(5)
    assert journal[1:3] == entries(5)[1:3] and journal[-1] == entries(5)[-1]
    journal._destroy()
    reopened = RaftJournal(path)
    assert list(reopened) == entries(5) and len(reopened) == 5


def test_add_is_only_written_by_sync(tmp_path):
    path = tmp_path / "journal"
    journal = RaftJournal(path)
    journal.add(b"a", 1, 1)
    assert journal.unsynced
    assert path.stat().st_size == HEADER_SIZE  # queued in memory: one write per tick
    assert journal.sync() is True
    assert not journal.unsynced and journal.sync() is False
    assert path.read_bytes()[HEADER_SIZE:].rstrip(b"\0") == records([(b"a", 1, 1)])
    assert path.stat().st_size == PREALLOCATE  # preallocated: syncs write data only


def last_record_bounds() -> tuple[int, int]:
    end = HEADER_SIZE + len(records(entries(5)))
    return end - len(records(entries(5)[-1:])), end


def test_a_torn_last_record_is_cut_at_every_byte(tmp_path):
    """Every length from none to complete-but-one, then zeros or garbage in place of the
    rest; and appends go on from the cut."""
    path = tmp_path / "journal"
    filled(path, 5)._destroy()
    good = path.read_bytes()
    start, end = last_record_bounds()
    for cut in range(start, end):
        for tail in (b"", b"\0" * (end - cut), bytes(range(256))[: end - cut]):
            path.write_bytes(good[:cut] + tail)
            reopened = RaftJournal(path)
            assert list(reopened) == entries(4), (cut, tail)
            assert content(path) == good[:start]  # cut at the last good record
            reopened.add(*entries(5)[-1])
            reopened.sync()
            reopened._destroy()
            assert list(RaftJournal(path)) == entries(5)


def test_a_corrupt_record_in_the_middle_cuts_the_journal_there(tmp_path):
    path = tmp_path / "journal"
    filled(path, 6)._destroy()
    data = bytearray(path.read_bytes())
    third = HEADER_SIZE + len(records(entries(2)))
    data[third + 30] ^= 0xFF  # inside the third record's command
    path.write_bytes(bytes(data))
    assert list(RaftJournal(path)) == entries(2)
    assert content(path) == bytes(data[:third])
    assert path.stat().st_size == len(data)  # the zeros past it stay allocated


def test_a_record_that_does_not_follow_its_predecessor_is_cut(tmp_path):
    path = tmp_path / "journal"
    filled(path, 3)._destroy()
    end = HEADER_SIZE + len(records(entries(3)))
    last_crc = int.from_bytes(path.read_bytes()[end - len(records(entries(3)[-1:])):][:4], "big")
    with open(path, "r+b") as f:
        f.seek(end)
        f.write(records([(b"skip", 7, 1)], last_crc))  # chained right, but index 7 after 3
    assert list(RaftJournal(path)) == entries(3)


def test_a_stale_record_past_a_truncation_does_not_chain(tmp_path):
    """A truncation lost in a crash can leave old records after a newer one: they carry
    valid checksums of their own, but not chained from the newer record."""
    path = tmp_path / "journal"
    filled(path, 5)._destroy()
    old = path.read_bytes()
    journal = RaftJournal(path)
    journal.deleteEntriesFrom(2)
    newer = (b"new-3-yyy", 3, 1)  # as long as the old third: old 4 follows it exactly
    assert len(newer[0]) == len(entries(5)[2][0])
    journal.add(*newer)
    journal.sync()
    journal._destroy()
    new_end = len(content(path))
    assert old[new_end + 4:new_end + 24] == records(entries(5)[3:4])[4:24]  # old 4 is next
    path.write_bytes(content(path) + old[new_end:])
    assert list(RaftJournal(path)) == [*entries(2), newer]


def test_delete_entries_from_truncates_written_and_queued_entries(tmp_path):
    path = tmp_path / "journal"
    journal = filled(path, 5)
    journal.add(*entries(1, first=6)[0])  # queued, not yet written
    journal.deleteEntriesFrom(6)  # nothing past the end
    assert len(journal) == 6
    journal.deleteEntriesFrom(5)  # the queued one
    assert list(journal) == entries(5)
    journal.deleteEntriesFrom(3)  # written ones
    journal.add(b"other", 4, 2)
    journal.sync()
    journal._destroy()
    assert list(RaftJournal(path)) == [*entries(3), (b"other", 4, 2)]


def test_delete_entries_to_compacts_the_file(tmp_path):
    path = tmp_path / "journal"
    journal = filled(path, 10)
    journal.add(*entries(1, first=11)[0])  # queued: kept through the rewrite
    inode = path.stat().st_ino
    journal.deleteEntriesTo(8)
    assert list(journal) == entries(11)[8:]
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal"]
    journal.add(*entries(1, first=12)[0])
    journal.deleteEntriesFrom(3)  # offsets still right after the rewrite
    journal.add(b"twelve", 12, 2)
    journal.sync()
    journal._destroy()
    assert list(RaftJournal(path)) == [*entries(11)[8:], (b"twelve", 12, 2)]


def test_clear_then_add_as_pysyncobj_loads_a_dump(tmp_path):
    path = tmp_path / "journal"
    journal = filled(path, 5)
    journal.clear()
    journal.add(b"d1", 40, 3)
    journal.add(b"d2", 41, 3)
    journal.sync()
    journal._destroy()
    assert list(RaftJournal(path)) == [(b"d1", 40, 3), (b"d2", 41, 3)]


def test_align_drops_entries_below_the_dumps_last_two(tmp_path):
    path = tmp_path / "journal"
    journal = filled(path, 10)
    journal.align(entries(10)[0], entries(10)[1])  # already first: nothing to do
    assert len(journal) == 10
    journal.align((b"other", 6, 1), entries(10)[6])  # not the same entries: untouched
    assert len(journal) == 10
    journal.align(entries(10)[5], entries(10)[6])
    assert list(journal) == entries(10)[5:]
    journal.align(entries(20)[14], entries(20)[15])  # beyond the journal: untouched
    assert list(journal) == entries(10)[5:]


def test_term_and_vote_are_written_by_sync_and_survive_a_reopen(tmp_path):
    path = tmp_path / "journal"
    journal = filled(path, 3)
    journal.setCurrentTerm(4, "127.0.0.1:5000")
    assert journal.unsynced
    assert RaftJournal(path).getCurrentTerm() == 0  # not yet: the tick's sync writes it
    journal.sync()
    reopened = RaftJournal(path)
    assert reopened.getCurrentTerm() == 4
    assert reopened.getVotedForNodeId() == "127.0.0.1:5000"
    reopened.setCurrentTerm(5, None)
    reopened.sync()
    assert (RaftJournal(path).getCurrentTerm(), RaftJournal(path).getVotedForNodeId()) == (5, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal", "journal.meta"]


def test_the_commit_index_is_stored_once_a_second_and_never_past_the_log(tmp_path):
    path = tmp_path / "journal"
    journal = filled(path, 3)
    journal.setRaftCommitIndex(3)
    assert not journal.unsynced  # the commit index alone waits for the one-second timer
    journal.onOneSecondTimer()
    journal.sync()
    assert RaftJournal(path).getRaftCommitIndex() == 3
    # A stored commit index past what survived (a dump installed since) is clamped.
    journal.deleteEntriesFrom(1)
    journal.sync()
    journal._destroy()
    assert RaftJournal(path).getRaftCommitIndex() == 1


def test_the_commit_index_stored_never_covers_entries_not_yet_synced(tmp_path):
    # The meta file is written when a sync job begins, before the job's entries are on
    # disk: a new leader's entries replacing synced ones must not count as committed.
    path = tmp_path / "journal"
    journal = filled(path, 5)
    journal.deleteEntriesFrom(3)  # entries 4 and 5 conflict with the new leader's
    for entry in entries(3, first=4, term=2):
        journal.add(*entry)
    journal.setRaftCommitIndex(6)
    journal.onOneSecondTimer()
    job = journal.begin_sync()
    assert job is not None and job.covers == 6
    # Power lost now, before the job's fdatasync, would leave a commit index of 3.
    assert json.loads(path.with_name("journal.meta").read_bytes()[17:])["commit_index"] == 3
    job.run()
    journal.finish_sync(job)
    journal.onOneSecondTimer()
    journal.sync()  # once the entries are durable, the next job stores it
    journal._destroy()
    assert RaftJournal(path).getRaftCommitIndex() == 6


def test_a_corrupt_meta_file_is_refused_by_name(tmp_path):
    path = tmp_path / "journal"
    journal = filled(path, 1)
    journal.setCurrentTerm(2, None)
    journal.sync()
    meta = tmp_path / "journal.meta"
    meta.write_bytes(meta.read_bytes().replace(b'"term": 2', b'"term": 9'))
    with pytest.raises(JournalError, match=r"journal\.meta: checksum mismatch"):
        RaftJournal(path)


def test_not_a_journal_is_refused(tmp_path):
    path = tmp_path / "journal"
    path.write_bytes(b"something else entirely")
    with pytest.raises(JournalError, match="not a raft journal"):
        RaftJournal(path)


def test_a_torn_header_is_a_new_journal(tmp_path):
    path = tmp_path / "journal"
    for torn in (MAGIC[:5], MAGIC + b"\0"):
        path.write_bytes(torn)
        journal = RaftJournal(path)
        assert len(journal) == 0 and path.read_bytes() == MAGIC + b"\0" * 4


def test_a_pysyncobj_journal_is_rewritten_once_in_this_format(tmp_path):
    path = tmp_path / "journal"
    old = FileJournal(str(path))
    for entry in entries(4):
        old.add(*entry)
    old.setCurrentTerm(3, "127.0.0.1:7000")
    old.setRaftCommitIndex(4)
    old.onOneSecondTimer()
    old._destroy()
    assert path.read_bytes().startswith(b"PYSYNCOBJ")

    journal = RaftJournal(path)
    assert list(journal) == entries(4)
    assert (journal.getCurrentTerm(), journal.getVotedForNodeId()) == (3, "127.0.0.1:7000")
    assert journal.getRaftCommitIndex() == 4
    assert path.read_bytes().startswith(MAGIC)
    assert (tmp_path / "journal.meta").read_bytes().startswith(journal_module.META_MAGIC)
    journal._destroy()
    assert list(RaftJournal(path)) == entries(4)


def test_syncs_are_logged_and_skipped_when_unsafe(tmp_path):
    log = tmp_path / "syncs.log"
    data = tmp_path / "data"
    data.mkdir()
    journal = filled(data / "journal", 2, disk=Disk(sync_log=str(log)))
    journal.setCurrentTerm(1, None)
    journal.sync()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    files = [r for r in records if "file" in r]
    dirs = [r for r in records if "dir" in r]
    journal_syncs = [r for r in files if r["file"] == str(data / "journal")]
    assert journal_syncs[-1]["length"] == len(content(data / "journal"))  # data, not zeros
    assert journal_syncs[-1]["inode"] == (data / "journal").stat().st_ino
    assert dirs[-1]["dir"] == str(data)
    assert dirs[-1]["entries"] == {p.name: p.stat().st_ino for p in data.iterdir()}

    unsafe_log = tmp_path / "unsafe.log"
    unsafe = filled(tmp_path / "other", 2,
                    disk=Disk(unsafe_no_fsync=True, sync_log=str(unsafe_log)))
    unsafe.setCurrentTerm(1, None)
    unsafe.sync()
    assert unsafe_log.read_text() == ""
    assert list(RaftJournal(tmp_path / "other")) == entries(2)  # still written


def test_record_layout_is_checksummed_big_endian_and_chained():
    record, crc = encode_record(b"abc", 7, 2, 99)
    stored, length, index, term = struct.unpack_from(">IIQQ", record)
    assert (length, index, term) == (3, 7, 2) and record.endswith(b"abc")
    assert stored == crc == zlib.crc32(record[4:], 99)
